//! `private_key_jwt` client authentication (OpenID Connect Core 9, RFC
//! 7523): the broker proves it holds the client's private key by sending a
//! short-lived JWT it signed, instead of a shared secret.
//!
//! The key is a PEM private key from the Secret that `clientSecretRef`
//! names: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or EC P-256) or PKCS#1 (`BEGIN
//! RSA PRIVATE KEY`). RSA keys sign RS256, P-256 keys ES256. The JWT header
//! carries `kid`, the key's RFC 7638 thumbprint, which is also the `kid` of
//! the public JWK that `sso-operator public-jwk` prints for registering the
//! client at the provider.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use serde_json::json;

/// The `client_assertion_type` value for a JWT assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: long enough for one token request.
const LIFETIME_SECS: i64 = 60;

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key the broker signs client assertions with.
pub struct ClientKey {
    pair: Pair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({}, kid {})", self.alg(), self.kid)
    }
}

impl ClientKey {
    /// Reads a PEM private key. The error says what was wrong and how to
    /// fix it, without repeating any of the key.
    pub fn from_pem(text: &str) -> Result<ClientKey, String> {
        let block = pem::parse(text.trim()).map_err(|e| {
            format!("not a PEM private key ({e}); store the key as PEM text, e.g. -----BEGIN PRIVATE KEY-----")
        })?;
        let rng = SystemRandom::new();
        let pair = match block.tag() {
            "PRIVATE KEY" => match RsaKeyPair::from_pkcs8(block.contents()) {
                Ok(k) => Pair::Rsa(k),
                Err(rsa) => EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    block.contents(),
                    &rng,
                )
                .map(Pair::Ec)
                .map_err(|ec| {
                    format!(
                        "the PKCS#8 key is neither a usable RSA key ({rsa}) nor an EC P-256 key ({ec}); use RSA of at least 2048 bits or EC P-256"
                    )
                })?,
            },
            "RSA PRIVATE KEY" => Pair::Rsa(
                RsaKeyPair::from_der(block.contents())
                    .map_err(|e| format!("the PKCS#1 RSA key is not usable: {e}"))?,
            ),
            "EC PRIVATE KEY" => {
                return Err("SEC1 EC keys (BEGIN EC PRIVATE KEY) are not read; convert to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`".into());
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err("the key is encrypted; store it unencrypted (the Secret protects it)".into());
            }
            other => {
                return Err(format!(
                    "the PEM block is {other:?}, not a private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)"
                ));
            }
        };
        let mut key = ClientKey {
            pair,
            kid: String::new(),
            rng,
        };
        key.kid = key.thumbprint();
        Ok(key)
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Ec(_) => "ES256",
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public members of the key's JWK, in RFC 7638's order.
    fn public_members(&self) -> serde_json::Value {
        match &self.pair {
            Pair::Rsa(k) => {
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                rsa_members(&c.n, &c.e)
            }
            Pair::Ec(k) => {
                // Uncompressed point: 0x04 || X || Y.
                let point = k.public_key().as_ref();
                json!({
                    "crv": "P-256",
                    "kty": "EC",
                    "x": B64.encode(&point[1..33]),
                    "y": B64.encode(&point[33..65]),
                })
            }
        }
    }

    fn thumbprint(&self) -> String {
        thumbprint(&self.public_members())
    }

    /// The public JWK to register at the provider (`jwks` of the client).
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut jwk = self.public_members();
        let o = jwk.as_object_mut().expect("an object");
        o.insert("kid".into(), self.kid.clone().into());
        o.insert("alg".into(), self.alg().into());
        o.insert("use".into(), "sig".into());
        jwk
    }

    /// A signed client assertion for `client_id`, addressed to `audience`
    /// (the token endpoint), valid from `now` for a minute, with a fresh
    /// `jti` so the provider can refuse a replay.
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, String> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| "no randomness for the assertion's jti".to_string())?;
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": B64.encode(jti),
            "iat": now,
            "exp": now.saturating_add(LIFETIME_SECS),
        });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = match &self.pair {
            Pair::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| "RSA signing failed".to_string())?;
                sig
            }
            Pair::Ec(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| "ECDSA signing failed".to_string())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }
}

fn rsa_members(n: &[u8], e: &[u8]) -> serde_json::Value {
    // JWK integers are unsigned big-endian without leading zero bytes.
    let trim = |b: &[u8]| {
        let first = b
            .iter()
            .position(|&x| x != 0)
            .unwrap_or(b.len().saturating_sub(1));
        B64.encode(&b[first..])
    };
    json!({"e": trim(e), "kty": "RSA", "n": trim(n)})
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) of the required members,
/// which are written in lexicographic order without whitespace.
fn thumbprint(members: &serde_json::Value) -> String {
    let o = members.as_object().expect("an object");
    let mut keys: Vec<&String> = o.keys().collect();
    keys.sort();
    let body: Vec<String> = keys
        .into_iter()
        .map(|k| format!("{}:{}", json!(k), o[k]))
        .collect();
    let canonical = format!("{{{}}}", body.join(","));
    B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSA_PKCS8: &str = include_str!("../../tests/fixtures/client-key-rsa.pem");
    pub(crate) const RSA_PKCS1: &str =
        include_str!("../../tests/fixtures/client-key-rsa-pkcs1.pem");
    pub(crate) const EC_PKCS8: &str = include_str!("../../tests/fixtures/client-key-ec.pem");
    const EC_SEC1: &str = include_str!("../../tests/fixtures/client-key-ec-sec1.pem");

    fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3);
        let h = serde_json::from_slice(&B64.decode(p[0]).unwrap()).unwrap();
        let c = serde_json::from_slice(&B64.decode(p[1]).unwrap()).unwrap();
        (
            h,
            c,
            B64.decode(p[2]).unwrap(),
            format!("{}.{}", p[0], p[1]),
        )
    }

    fn verify(key: &ClientKey, jwt: &str) {
        let (_, _, sig, input) = parts(jwt);
        let jwk = key.public_jwk();
        let d = |k: &str| B64.decode(jwk[k].as_str().unwrap()).unwrap();
        let verifies = |msg: &[u8]| match key.alg() {
            "RS256" => signature::RsaPublicKeyComponents {
                n: d("n"),
                e: d("e"),
            }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, &sig)
            .is_ok(),
            _ => {
                let point = [vec![4u8], d("x"), d("y")].concat();
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, &sig)
                    .is_ok()
            }
        };
        assert!(
            verifies(input.as_bytes()),
            "the signature verifies with the published JWK"
        );
        // A changed claim no longer verifies.
        let mut forged = input.into_bytes();
        let n = forged.len() - 2;
        forged[n] ^= 1;
        assert!(!verifies(&forged));
    }

    #[test]
    fn signs_assertions_the_published_jwk_verifies() {
        for (pem, alg) in [
            (RSA_PKCS8, "RS256"),
            (RSA_PKCS1, "RS256"),
            (EC_PKCS8, "ES256"),
        ] {
            let key = ClientKey::from_pem(pem).unwrap();
            assert_eq!(key.alg(), alg);
            let jwt = key
                .assertion("client-1", "https://idp.example/token", 1_700_000_000)
                .unwrap();
            let (h, c, _, _) = parts(&jwt);
            assert_eq!(h["alg"], alg);
            assert_eq!(h["kid"], key.kid());
            assert_eq!(c["iss"], "client-1");
            assert_eq!(c["sub"], "client-1");
            assert_eq!(c["aud"], "https://idp.example/token");
            assert_eq!(c["iat"], 1_700_000_000);
            assert_eq!(c["exp"], 1_700_000_060);
            verify(&key, &jwt);
            // Every assertion has its own jti.
            let again = key.assertion("client-1", "a", 1).unwrap();
            assert_ne!(parts(&again).1["jti"], c["jti"]);
            let jwk = key.public_jwk();
            assert_eq!(jwk["kid"], key.kid());
            assert!(
                jwk.get("d").is_none(),
                "no private member in the public JWK"
            );
        }
        // PKCS#1 and PKCS#8 encodings of one RSA key are the same key.
        assert_eq!(
            ClientKey::from_pem(RSA_PKCS8).unwrap().kid(),
            ClientKey::from_pem(RSA_PKCS1).unwrap().kid()
        );
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638, section 3.1: the example RSA key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members = rsa_members(&B64.decode(n).unwrap(), &B64.decode("AQAB").unwrap());
        assert_eq!(
            thumbprint(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn unusable_keys_are_refused_with_a_reason() {
        let cases = [
            ("", "not a PEM private key"),
            ("my-client-secret", "not a PEM private key"),
            (EC_SEC1, "SEC1 EC keys"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "\"CERTIFICATE\", not a private key",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "neither a usable RSA key",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
        ];
        for (pem, want) in cases {
            let err = ClientKey::from_pem(pem).unwrap_err();
            assert!(err.contains(want), "{pem:?}: {err}");
        }
    }
}
