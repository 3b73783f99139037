//! ID-token verification with no network and no clock of its own: parse the
//! compact JWS, pick the key, verify the signature, then every claim check
//! of OpenID Connect Core 3.1.3.7, each refusal with its own reason. The
//! caller passes the keys (see [`super::jwks`]) and `now`.
//!
//! Signature cryptography is openidconnect's (`JsonWebKey::verify_signature`);
//! the header and claim checks are written out here so each refusal carries
//! its own reason, and so one sloppy non-security claim from an IdP (a
//! string where a boolean belongs) cannot make a whole token unparseable.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use openidconnect::{
    JsonWebKey as _, JsonWebKeyAlgorithm, JsonWebKeyId, JsonWebKeyUse as _, JwsSigningAlgorithm,
    core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm},
};
use serde_json::{Map, Value};

use super::discovery::is_allowed_alg;
use crate::broker::error::{Reason, Refusal};

/// Clock skew tolerated on `exp` and `iat`.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Largest ID token accepted.
pub const MAX_ID_TOKEN_LEN: usize = 64 * 1024;

/// What the token must say: who issued it, to whom, for which login.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// The issuer, byte for byte.
    pub issuer: &'a str,
    /// This client's ID.
    pub client_id: &'a str,
    /// The nonce the login sent; `None` for an ID token from a refresh,
    /// which carries no fresh nonce (OpenID Connect Core 12.2).
    pub nonce: Option<&'a str>,
    /// The signature algorithms this provider signs ID tokens with (its
    /// `id_token_signing_alg_values_supported`, or the spec's override);
    /// empty when it names none, and then any allowed asymmetric one.
    pub algs: &'a [String],
}

/// A parsed, not yet verified, compact JWS.
pub struct Jws {
    alg: CoreJwsSigningAlgorithm,
    kid: Option<JsonWebKeyId>,
    signing_input: String,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

fn malformed(msg: impl Into<String>) -> Refusal {
    Refusal::new(Reason::MalformedIdToken, msg)
}

impl Jws {
    /// Parses the header and payload and checks the header: size, three
    /// parts, an allowed asymmetric `alg`, no `crit`, `typ` JWT.
    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        if raw.len() > MAX_ID_TOKEN_LEN {
            return Err(malformed("the ID token is larger than 64 KiB"));
        }
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.len() != 3 {
            return Err(malformed(format!(
                "the ID token has {} parts; a signed JWT has 3 (encrypted ID tokens are not supported)",
                parts.len()
            )));
        }
        let decode = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|_| malformed(format!("the ID token {what} is not base64url")))
        };
        let header: Map<String, Value> = serde_json::from_slice(&decode("header", parts[0])?)
            .map_err(|_| malformed("the ID token header is not a JSON object"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&decode("payload", parts[1])?)
            .map_err(|_| malformed("the ID token payload is not a JSON object"))?;
        let signature = decode("signature", parts[2])?;
        let alg_text = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(Value::String(alg_text.to_string())).map_err(|_| {
                Refusal::new(
                    Reason::DisallowedAlg,
                    format!("the ID token is signed with unknown algorithm {alg_text:?}"),
                )
            })?;
        if !is_allowed_alg(&alg) {
            return Err(Refusal::new(
                Reason::DisallowedAlg,
                format!(
                    "the ID token uses alg {alg_text:?}; only asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted, never \"none\" or HMAC"
                ),
            ));
        }
        if header.contains_key("crit") {
            return Err(malformed("the ID token has critical header parameters"));
        }
        if let Some(typ) = header.get("typ") {
            let ok = typ.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt")
            });
            if !ok {
                return Err(malformed(format!(
                    "the token's typ {typ} is not an ID token"
                )));
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(JsonWebKeyId::new(k.clone())),
            Some(_) => return Err(malformed("the ID token kid is not a string")),
        };
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        Ok(Self {
            alg,
            kid,
            signing_input,
            signature,
            claims,
        })
    }

    /// The payload, not yet trusted until [`Jws::verify`] and
    /// [`check_claims`] passed.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    pub fn into_claims(self) -> Map<String, Value> {
        self.claims
    }

    /// Keys that may verify this token: matching `kid` (when the token has
    /// one), a key type for the alg, signature use, and a compatible alg.
    fn candidates<'a>(&self, keys: &'a CoreJsonWebKeySet) -> Vec<&'a CoreJsonWebKey> {
        keys.keys()
            .iter()
            .filter(|k| self.kid.is_none() || k.key_id() == self.kid.as_ref())
            .filter(|k| k.key_use().is_none_or(|u| u.allows_signature()))
            .filter(|k| self.alg.key_type().as_ref() == Some(k.key_type()))
            .filter(|k| match k.signing_alg() {
                JsonWebKeyAlgorithm::Unspecified => true,
                JsonWebKeyAlgorithm::Algorithm(a) => *a == self.alg,
                JsonWebKeyAlgorithm::Unsupported => false,
            })
            .collect()
    }

    /// The token's `alg` must be one the provider signs ID tokens with: a
    /// key the IdP holds for another purpose cannot sign an ID token it
    /// would not issue.
    pub fn check_alg(&self, algs: &[String]) -> Result<(), Refusal> {
        let alg = alg_name(&self.alg);
        if algs.is_empty() || algs.contains(&alg) {
            return Ok(());
        }
        Err(Refusal::new(
            Reason::DisallowedAlg,
            format!(
                "the ID token is signed with {alg}; this provider signs ID tokens with {} only (id_token_signing_alg_values_supported or spec.idTokenSigningAlgs)",
                algs.join(", ")
            ),
        ))
    }

    /// Picks the one key that fits and verifies the signature with it.
    /// `UnknownKey` tells the caller a JWKS refetch may help.
    pub fn verify(&self, keys: &CoreJsonWebKeySet) -> Result<(), Refusal> {
        let candidates = self.candidates(keys);
        let key = match candidates.as_slice() {
            [] => {
                return Err(Refusal::new(
                    Reason::UnknownKey,
                    match &self.kid {
                        Some(kid) => format!(
                            "no key with kid {:?} for {} in the provider's JWKS, even after refetching it",
                            kid.as_str(),
                            alg_name(&self.alg)
                        ),
                        None => format!(
                            "the ID token names no kid and no {} key in the provider's JWKS fits",
                            alg_name(&self.alg)
                        ),
                    },
                ));
            }
            [one] => *one,
            many => {
                return Err(Refusal::new(
                    Reason::AmbiguousKey,
                    format!(
                        "the ID token names no kid and {} keys in the provider's JWKS fit; refusing to guess",
                        many.len()
                    ),
                ));
            }
        };
        key.verify_signature(&self.alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|e| {
                Refusal::new(
                    Reason::InvalidSignature,
                    format!("the ID token signature does not verify: {e}"),
                )
            })
    }
}

/// The whole ID-token path with no network: parse, verify against `keys`,
/// then every claim check. Returns the token's claims.
pub fn verify(
    raw: &str,
    keys: &CoreJsonWebKeySet,
    expected: &Expected<'_>,
    now: i64,
) -> Result<Map<String, Value>, Refusal> {
    let jws = Jws::parse(raw)?;
    jws.check_alg(expected.algs)?;
    jws.verify(keys)?;
    check_claims(jws.claims(), expected, now)?;
    Ok(jws.into_claims())
}

fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{alg:?}"))
}

fn num(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// The claim checks of OpenID Connect Core 3.1.3.7, in order, each with its
/// own reason.
pub fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
    now: i64,
) -> Result<(), Refusal> {
    let client_id = expected.client_id;
    // iss: exactly the issuer, byte for byte.
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == expected.issuer => {}
        other => {
            return Err(Refusal::new(
                Reason::InvalidIssuer,
                format!(
                    "the ID token's iss is {:?}; expected exactly {:?}",
                    other.unwrap_or("(none)"),
                    expected.issuer
                ),
            ));
        }
    }
    // aud: contains the client ID.
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.contains(&client_id) {
        return Err(Refusal::new(
            Reason::InvalidAudience,
            format!("the ID token is for audience {auds:?}, not this client {client_id:?}"),
        ));
    }
    // azp: required with several audiences, and when present it must be us.
    let azp = claims.get("azp").and_then(Value::as_str);
    if auds.len() > 1 && azp.is_none() {
        return Err(Refusal::new(
            Reason::InvalidAzp,
            format!(
                "the ID token has {} audiences and no azp claim saying it was issued to this client",
                auds.len()
            ),
        ));
    }
    if let Some(azp) = azp
        && azp != client_id
    {
        return Err(Refusal::new(
            Reason::InvalidAzp,
            format!("the ID token was issued to {azp:?} (azp), not this client {client_id:?}"),
        ));
    }
    // exp, iat: bounded skew.
    let Some(exp) = num(claims, "exp") else {
        return Err(malformed("the ID token has no numeric exp claim"));
    };
    // Saturating: `exp` and `iat` are whatever the IdP sent, to i64's ends.
    if now.saturating_sub(CLOCK_SKEW_SECS) >= exp {
        return Err(Refusal::new(
            Reason::TokenExpired,
            format!(
                "the ID token expired {} s ago (clock skew allowed: {CLOCK_SKEW_SECS} s)",
                now.saturating_sub(exp)
            ),
        ));
    }
    let Some(iat) = num(claims, "iat") else {
        return Err(malformed("the ID token has no numeric iat claim"));
    };
    if iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Refusal::new(
            Reason::IssuedInFuture,
            format!(
                "the ID token was issued {} s in the future (clock skew allowed: {CLOCK_SKEW_SECS} s); check the clocks",
                iat.saturating_sub(now)
            ),
        ));
    }
    // nbf, when present: not before, with the same skew.
    if claims.contains_key("nbf") {
        let Some(nbf) = num(claims, "nbf") else {
            return Err(malformed("the ID token's nbf claim is not a number"));
        };
        if nbf > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(Refusal::new(
                Reason::NotYetValid,
                format!(
                    "the ID token is not valid for another {} s (nbf; clock skew allowed: {CLOCK_SKEW_SECS} s); check the clocks",
                    nbf.saturating_sub(now)
                ),
            ));
        }
    }
    // nonce: what this login sent.
    match (expected.nonce, claims.get("nonce").and_then(Value::as_str)) {
        (None, _) => {}
        (Some(sent), Some(n)) if n == sent => {}
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                Reason::InvalidNonce,
                "the ID token's nonce is not the one this login sent (a replayed or injected token)",
            ));
        }
        (Some(_), None) => {
            return Err(Refusal::new(
                Reason::InvalidNonce,
                "the ID token has no nonce; this login sent one",
            ));
        }
    }
    // sub: present.
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(Refusal::new(
            Reason::MissingSub,
            "the ID token has no sub claim",
        )),
    }
}

/// One row per check of the README's "What the callback checks" table that
/// concerns the ID token, each refused and, beside it, the nearest token
/// that passes — so a check that stopped refusing, or started refusing too
/// much, fails here without an IdP, HTTP or a clock.
#[cfg(test)]
mod tests {
    use ring::{
        rand::SystemRandom,
        signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
            RsaKeyPair, RsaPublicKeyComponents,
        },
    };
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const ISSUER: &str = "https://idp.example.com";
    const CLIENT: &str = "client-1";
    const NONCE: &str = "nonce-1";

    struct Keys {
        ec: EcdsaKeyPair,
        other_ec: EcdsaKeyPair,
        ed: Ed25519KeyPair,
        rsa: RsaKeyPair,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let ec = || {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap()
        };
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap();
        // ring makes no RSA keys; the test fixture's 2048-bit one.
        let pem = include_str!("../../tests/fixtures/client-key-rsa.pem");
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let rsa = RsaKeyPair::from_pkcs8(
            &base64::engine::general_purpose::STANDARD
                .decode(der)
                .unwrap(),
        )
        .unwrap();
        Keys {
            ec: ec(),
            other_ec: ec(),
            ed,
            rsa,
        }
    }

    fn ec_jwk(k: &EcdsaKeyPair, extra: Value) -> Value {
        let point = k.public_key().as_ref();
        let mut jwk = json!({"kty": "EC", "crv": "P-256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
        jwk.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        jwk
    }

    /// The provider's JWKS: the EC key as `ec1`, the Ed25519 key as `ed1`
    /// and the RSA key as `rsa1` (any RSA alg).
    fn jwks(k: &Keys) -> CoreJsonWebKeySet {
        let c: RsaPublicKeyComponents<Vec<u8>> = k.rsa.public().into();
        set(vec![
            ec_jwk(&k.ec, json!({"kid": "ec1", "use": "sig", "alg": "ES256"})),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed1",
                   "x": B64.encode(k.ed.public_key().as_ref())}),
            json!({"kty": "RSA", "kid": "rsa1", "use": "sig",
                   "n": B64.encode(c.n.strip_prefix(&[0]).unwrap_or(&c.n)), "e": B64.encode(&c.e)}),
        ])
    }

    fn sign_rsa(k: &Keys, alg: &str, claims: Value) -> String {
        let input = encode(&json!({"alg": alg, "kid": "rsa1"}), &claims);
        let padding: &dyn ring::signature::RsaEncoding = match alg {
            "RS256" => &ring::signature::RSA_PKCS1_SHA256,
            "PS256" => &ring::signature::RSA_PSS_SHA256,
            _ => unreachable!(),
        };
        let mut sig = vec![0; k.rsa.public().modulus_len()];
        k.rsa
            .sign(padding, &SystemRandom::new(), input.as_bytes(), &mut sig)
            .unwrap();
        format!("{input}.{}", B64.encode(sig))
    }

    fn set(keys: Vec<Value>) -> CoreJsonWebKeySet {
        serde_json::from_value(json!({ "keys": keys })).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "alice", "nonce": NONCE,
               "exp": NOW + 300, "iat": NOW})
    }

    fn with(mut v: Value, changes: Value) -> Value {
        for (k, c) in changes.as_object().unwrap() {
            if c.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = c.clone();
            }
        }
        v
    }

    fn encode(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    fn sign_ec(key: &EcdsaKeyPair, header: Value, claims: Value) -> String {
        let input = encode(&header, &claims);
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    fn es256(k: &Keys, claims: Value) -> String {
        sign_ec(
            &k.ec,
            json!({"alg": "ES256", "kid": "ec1", "typ": "JWT"}),
            claims,
        )
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: ISSUER,
            client_id: CLIENT,
            nonce: Some(NONCE),
            algs: &[],
        }
    }

    /// Runs `verify` and returns the refusal reason, or `None` when accepted.
    fn outcome(raw: &str, keys: &CoreJsonWebKeySet, e: &Expected<'_>) -> Option<Reason> {
        match verify(raw, keys, e, NOW) {
            Ok(c) => {
                assert_eq!(c["sub"], "alice", "accepted claims are the token's");
                None
            }
            Err(r) => {
                assert!(!r.message.is_empty(), "{:?} without a message", r.reason);
                Some(r.reason)
            }
        }
    }

    #[test]
    fn each_check_refuses_and_its_neighbour_passes() {
        let k = keys();
        let set = jwks(&k);
        let e = expected();
        let good = es256(&k, claims());
        let unsigned = |header: Value, claims: Value| format!("{}.c2ln", encode(&header, &claims));
        // A character inside the signature (the last one also carries
        // padding bits, which strict base64url refuses first).
        let tampered_sig = {
            let mut b = good.clone().into_bytes();
            let i = b.len() - 10;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let (head, _) = good.rsplit_once('.').unwrap();
        let payload_swapped = format!(
            "{}.{}.{}",
            head.split('.').next().unwrap(),
            B64.encode(with(claims(), json!({"sub": "mallory"})).to_string()),
            good.rsplit('.').next().unwrap()
        );
        let ed_signed = {
            let input = encode(&json!({"alg": "EdDSA", "kid": "ed1"}), &claims());
            format!(
                "{input}.{}",
                B64.encode(k.ed.sign(input.as_bytes()).as_ref())
            )
        };
        let two_ec = self::set(vec![
            ec_jwk(&k.ec, json!({"use": "sig"})),
            ec_jwk(&k.other_ec, json!({"use": "sig"})),
        ]);
        let one_ec = self::set(vec![ec_jwk(&k.ec, json!({}))]);
        let enc_only = self::set(vec![ec_jwk(&k.ec, json!({"kid": "ec1", "use": "enc"}))]);
        let other_alg = self::set(vec![ec_jwk(&k.ec, json!({"kid": "ec1", "alg": "ES384"}))]);
        let no_kid = sign_ec(&k.ec, json!({"alg": "ES256"}), claims());
        let refresh = Expected { nonce: None, ..e };
        let rsa_only = ["RS256".to_string(), "PS256".to_string()];
        let pinned_rsa = Expected {
            algs: &rsa_only,
            ..e
        };
        let es256_only = ["ES256".to_string()];
        let pinned_ec = Expected {
            algs: &es256_only,
            ..e
        };

        #[rustfmt::skip]
        let rows: Vec<(&str, String, &CoreJsonWebKeySet, Expected<'_>, Option<Reason>)> = vec![
            ("a good token passes", good.clone(), &set, e, None),
            // Compact JWS, at most 64 KiB, no crit, typ JWT.
            ("two parts", "a.b".into(), &set, e, Some(Reason::MalformedIdToken)),
            ("five parts (JWE)", "a.b.c.d.e".into(), &set, e, Some(Reason::MalformedIdToken)),
            ("over 64 KiB", format!("{good}{}", "A".repeat(MAX_ID_TOKEN_LEN)), &set, e, Some(Reason::MalformedIdToken)),
            ("header not base64url", format!("!!.{}", good.split_once('.').unwrap().1), &set, e, Some(Reason::MalformedIdToken)),
            ("payload not an object", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ec1"}), json!([1])), &set, e, Some(Reason::MalformedIdToken)),
            ("crit header", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ec1", "crit": ["b64"]}), claims()), &set, e, Some(Reason::MalformedIdToken)),
            ("typ of an access token", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ec1", "typ": "at+jwt"}), claims()), &set, e, Some(Reason::MalformedIdToken)),
            ("typ application/jwt passes", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ec1", "typ": "application/jwt"}), claims()), &set, e, None),
            ("no typ passes", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ec1"}), claims()), &set, e, None),
            ("kid not a string", sign_ec(&k.ec, json!({"alg": "ES256", "kid": 1}), claims()), &set, e, Some(Reason::MalformedIdToken)),
            // alg: asymmetric only.
            ("alg none", unsigned(json!({"alg": "none"}), claims()), &set, e, Some(Reason::DisallowedAlg)),
            ("alg HS256", unsigned(json!({"alg": "HS256", "kid": "ec1"}), claims()), &set, e, Some(Reason::DisallowedAlg)),
            ("alg unknown", unsigned(json!({"alg": "XX512"}), claims()), &set, e, Some(Reason::DisallowedAlg)),
            ("no alg", unsigned(json!({"kid": "ec1"}), claims()), &set, e, Some(Reason::DisallowedAlg)),
            ("EdDSA passes", ed_signed, &set, e, None),
            ("RS256 passes", sign_rsa(&k, "RS256", claims()), &set, e, None),
            ("PS256 passes", sign_rsa(&k, "PS256", claims()), &set, e, None),
            // alg: one the provider signs ID tokens with (discovery or spec).
            ("ES256 where the provider signs RS256 and PS256", good.clone(), &set, pinned_rsa, Some(Reason::DisallowedAlg)),
            ("RS256 where the provider signs RS256 and PS256, passes", sign_rsa(&k, "RS256", claims()), &set, pinned_rsa, None),
            ("RS256 where the provider signs ES256", sign_rsa(&k, "RS256", claims()), &set, pinned_ec, Some(Reason::DisallowedAlg)),
            ("ES256 where the provider signs ES256, passes", good.clone(), &set, pinned_ec, None),
            // Key selection.
            ("unknown kid", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "gone"}), claims()), &set, e, Some(Reason::UnknownKey)),
            ("kid of a key of another type", sign_ec(&k.ec, json!({"alg": "ES256", "kid": "ed1"}), claims()), &set, e, Some(Reason::UnknownKey)),
            ("key for encryption only", good.clone(), &enc_only, e, Some(Reason::UnknownKey)),
            ("key pinned to another alg", good.clone(), &other_alg, e, Some(Reason::UnknownKey)),
            ("no kid, two keys fit", no_kid.clone(), &two_ec, e, Some(Reason::AmbiguousKey)),
            ("no kid, one key fits, passes", no_kid, &one_ec, e, None),
            // Signature.
            ("signature changed", tampered_sig, &set, e, Some(Reason::InvalidSignature)),
            ("payload swapped under a good signature", payload_swapped, &set, e, Some(Reason::InvalidSignature)),
            ("signed by another key under the kid", sign_ec(&k.other_ec, json!({"alg": "ES256", "kid": "ec1"}), claims()), &set, e, Some(Reason::InvalidSignature)),
            // iss, byte for byte.
            ("iss with a trailing slash", es256(&k, with(claims(), json!({"iss": "https://idp.example.com/"}))), &set, e, Some(Reason::InvalidIssuer)),
            ("iss missing", es256(&k, with(claims(), json!({"iss": null}))), &set, e, Some(Reason::InvalidIssuer)),
            // aud and azp.
            ("aud another client", es256(&k, with(claims(), json!({"aud": "client-2"}))), &set, e, Some(Reason::InvalidAudience)),
            ("aud missing", es256(&k, with(claims(), json!({"aud": null}))), &set, e, Some(Reason::InvalidAudience)),
            ("two audiences, no azp", es256(&k, with(claims(), json!({"aud": [CLIENT, "api"]}))), &set, e, Some(Reason::InvalidAzp)),
            ("two audiences, azp this client, passes", es256(&k, with(claims(), json!({"aud": [CLIENT, "api"], "azp": CLIENT}))), &set, e, None),
            ("azp another client", es256(&k, with(claims(), json!({"azp": "client-2"}))), &set, e, Some(Reason::InvalidAzp)),
            // exp and iat, 60 s skew each.
            ("expired beyond the skew", es256(&k, with(claims(), json!({"exp": NOW - CLOCK_SKEW_SECS - 1}))), &set, e, Some(Reason::TokenExpired)),
            ("expired within the skew, passes", es256(&k, with(claims(), json!({"exp": NOW - CLOCK_SKEW_SECS + 1}))), &set, e, None),
            ("exp not a number", es256(&k, with(claims(), json!({"exp": "later"}))), &set, e, Some(Reason::MalformedIdToken)),
            ("issued in the future beyond the skew", es256(&k, with(claims(), json!({"iat": NOW + CLOCK_SKEW_SECS + 1}))), &set, e, Some(Reason::IssuedInFuture)),
            ("issued in the future within the skew, passes", es256(&k, with(claims(), json!({"iat": NOW + CLOCK_SKEW_SECS}))), &set, e, None),
            ("iat missing", es256(&k, with(claims(), json!({"iat": null}))), &set, e, Some(Reason::MalformedIdToken)),
            // nbf, when present: same skew.
            ("not valid yet beyond the skew", es256(&k, with(claims(), json!({"nbf": NOW + CLOCK_SKEW_SECS + 1}))), &set, e, Some(Reason::NotYetValid)),
            ("not valid yet within the skew, passes", es256(&k, with(claims(), json!({"nbf": NOW + CLOCK_SKEW_SECS}))), &set, e, None),
            ("nbf in the past, passes", es256(&k, with(claims(), json!({"nbf": NOW - 10}))), &set, e, None),
            ("nbf not a number", es256(&k, with(claims(), json!({"nbf": "soon"}))), &set, e, Some(Reason::MalformedIdToken)),
            // nonce.
            ("nonce of another login", es256(&k, with(claims(), json!({"nonce": "other"}))), &set, e, Some(Reason::InvalidNonce)),
            ("nonce missing", es256(&k, with(claims(), json!({"nonce": null}))), &set, e, Some(Reason::InvalidNonce)),
            ("refresh: no nonce expected, passes", es256(&k, with(claims(), json!({"nonce": null}))), &set, refresh, None),
            // sub.
            ("sub missing", es256(&k, with(claims(), json!({"sub": null}))), &set, e, Some(Reason::MissingSub)),
            ("sub empty", es256(&k, with(claims(), json!({"sub": ""}))), &set, e, Some(Reason::MissingSub)),
            ("sub not a string", es256(&k, with(claims(), json!({"sub": 7}))), &set, e, Some(Reason::MissingSub)),
        ];
        let mut failures = Vec::new();
        for (name, raw, keys, e, want) in &rows {
            let got =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| outcome(raw, keys, e)));
            match got {
                Ok(got) if got == *want => {}
                Ok(got) => failures.push(format!("{name}: got {got:?}, want {want:?}")),
                Err(_) => failures.push(format!("{name}: panicked")),
            }
        }
        assert!(
            failures.is_empty(),
            "{} row(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// The claim checks run in the table's order: a token wrong in two
    /// ways is refused for the first.
    #[test]
    fn claim_checks_run_in_order() {
        let c = with(
            claims(),
            json!({"iss": "x", "aud": "y", "exp": 0, "nonce": "z", "sub": null}),
        );
        let order = [
            ("iss", Reason::InvalidIssuer),
            ("aud", Reason::InvalidAudience),
            ("exp", Reason::TokenExpired),
            ("nonce", Reason::InvalidNonce),
            ("sub", Reason::MissingSub),
        ];
        let mut c = c.as_object().unwrap().clone();
        let good = claims();
        for (fix, reason) in order {
            let r = check_claims(&c, &expected(), NOW).expect_err("still wrong");
            assert_eq!(r.reason, reason, "before fixing {fix}: {}", r.message);
            if good.get(fix).is_some() {
                c.insert(fix.into(), good[fix].clone());
            }
        }
        c.insert("sub".into(), json!("alice"));
        assert!(check_claims(&c, &expected(), NOW).is_ok());
    }
}
