//! ID tokens from a lying IdP: any string must be refused with a reason,
//! never a panic, and never accepted: the keys below have no private half
//! the fuzzer could sign with, so an accepted token would be a forgery
//! (alg confusion, "none", a skipped check).
#![no_main]

mod common;

use std::sync::OnceLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use libfuzzer_sys::fuzz_target;
use openidconnect::core::CoreJsonWebKeySet;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair},
};
use sso_operator::oidc::verify::{check_claims, verify};

/// An EC P-256 key, an Ed25519 key and an RSA key (random modulus), each
/// public only, the kind of JWKS a provider publishes.
fn keys() -> &'static CoreJsonWebKeySet {
    static KEYS: OnceLock<CoreJsonWebKeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref(),
            &rng,
        )
        .unwrap();
        let point = ec.public_key().as_ref();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap();
        let mut modulus = [0u8; 256];
        ring::rand::SecureRandom::fill(&rng, &mut modulus).unwrap();
        modulus[0] |= 0x80;
        modulus[255] |= 1;
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed1",
             "x": B64.encode(ed.public_key().as_ref())},
            {"kty": "RSA", "kid": "rsa1", "use": "sig",
             "n": B64.encode(modulus), "e": "AQAB"},
        ]});
        serde_json::from_value(jwks).expect("JWKS parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let cfg = common::provider("sso", "corp");
    let now = common::now();
    if let Ok(raw) = std::str::from_utf8(data) {
        let result = verify(raw, keys(), &cfg.expected(Some("fuzz-nonce")), now);
        assert!(
            result.is_err(),
            "a token no key signed was accepted: {raw:?}"
        );
    }
    // The claim checks alone, on any JSON object an IdP could sign.
    if let Ok(claims) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) {
        if check_claims(&claims, &cfg.expected(Some("fuzz-nonce")), now).is_ok() {
            assert_eq!(
                claims.get("iss").and_then(|v| v.as_str()),
                Some(common::ISSUER)
            );
            assert_eq!(
                claims.get("nonce").and_then(|v| v.as_str()),
                Some("fuzz-nonce")
            );
            assert!(
                claims
                    .get("sub")
                    .and_then(|v| v.as_str())
                    .is_some_and(|s| !s.is_empty())
            );
        }
    }
});
