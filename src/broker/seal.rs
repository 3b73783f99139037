//! Authenticated encryption for the broker's cookies (sessions and login
//! state), from a key ring: the first key seals, every key opens, so a new
//! key can be added in front without logging anyone out and the old one
//! removed once its cookies have expired.
//!
//! Token format: `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, with
//! AES-256-GCM. The key id is the first 6 bytes of SHA-256 of the key,
//! so a token names the key that opens it. The purpose (the cookie's name
//! family) is the associated data: a login-state cookie never opens as a
//! session, nor the other way round.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
};

/// Tokens longer than this are refused before any decoding (a browser
/// cookie is at most 4096 bytes).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Key length: 32 bytes (AES-256). Longer secrets are hashed down.
pub const KEY_LEN: usize = 32;

/// Why a token did not open. Callers treat every variant as "no valid
/// cookie"; the variants exist for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("token too large")]
    TooLarge,
    #[error("token malformed")]
    Malformed,
    #[error("token sealed with an unknown key")]
    UnknownKey,
    #[error("token failed authentication (tampered, or sealed for another purpose)")]
    Tampered,
}

impl OpenError {
    /// Stable label for metrics.
    pub fn category(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Tampered => "tampered",
        }
    }
}

/// A key secret that is too short to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session key {index} is {len} bytes; keys must be at least {KEY_LEN} random bytes")]
pub struct WeakKey {
    pub index: usize,
    pub len: usize,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The key ring.
pub struct KeyRing {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Builds a ring from secrets, newest (sealing) first. Each secret must
    /// be at least 32 bytes; secrets of another length are hashed to 32.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Self, WeakKey> {
        if secrets.is_empty() {
            return Err(WeakKey { index: 0, len: 0 });
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            if secret.len() < KEY_LEN {
                return Err(WeakKey {
                    index,
                    len: secret.len(),
                });
            }
            let material = digest::digest(&digest::SHA256, secret);
            let key_bytes: &[u8] = if secret.len() == KEY_LEN {
                secret
            } else {
                material.as_ref()
            };
            let id_hash = digest::digest(&digest::SHA256, key_bytes);
            let id = B64.encode(&id_hash.as_ref()[..6]);
            let unbound = UnboundKey::new(&AES_256_GCM, key_bytes).expect("32-byte AES-256 key");
            keys.push(Key {
                id,
                key: LessSafeKey::new(unbound),
            });
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random key, for development and tests.
    pub fn generate_secret() -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut k).expect("system randomness");
        k
    }

    /// The id of the sealing key.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Encrypts and authenticates `plaintext` for `purpose`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut buf = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .expect("sealing cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        format!("v1.{}.{}", key.id, B64.encode(out))
    }

    /// Opens a token sealed for `purpose` by any key of the ring.
    pub fn open(&self, purpose: &str, token: &str) -> Result<Vec<u8>, OpenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OpenError::TooLarge);
        }
        let mut parts = token.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(OpenError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(OpenError::UnknownKey)?;
        let mut raw = B64.decode(body).map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| OpenError::Tampered)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&[u8]]) -> KeyRing {
        KeyRing::new(secrets).unwrap()
    }

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"another key, also thirty-two+ bytes long";

    #[test]
    fn round_trip_and_fresh_nonces() {
        let r = ring(&[A]);
        let t1 = r.seal("session", b"hello");
        let t2 = r.seal("session", b"hello");
        assert_ne!(t1, t2, "a fresh nonce per seal");
        assert_eq!(r.open("session", &t1).unwrap(), b"hello");
        assert!(t1.starts_with(&format!("v1.{}.", r.primary_id())));
    }

    #[test]
    fn purpose_is_bound() {
        let r = ring(&[A]);
        let t = r.seal("state", b"x");
        assert_eq!(r.open("session", &t), Err(OpenError::Tampered));
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let r = ring(&[A]);
        let t = r.seal("session", b"{\"sub\":\"alice\"}");
        let prefix = t.rfind('.').unwrap() + 1;
        for i in prefix..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            let got = r.open("session", &tampered);
            assert!(
                matches!(got, Err(OpenError::Tampered | OpenError::Malformed)),
                "byte {i}: {got:?}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_key_is_dropped() {
        let old = ring(&[A]);
        let token = old.seal("session", b"s");
        let rotated = ring(&[B, A]);
        assert_eq!(
            rotated.open("session", &token).unwrap(),
            b"s",
            "old key still opens"
        );
        let new_token = rotated.seal("session", b"t");
        assert!(new_token.contains(rotated.primary_id()));
        assert_eq!(old.open("session", &new_token), Err(OpenError::UnknownKey));
        let dropped = ring(&[B]);
        assert_eq!(dropped.open("session", &token), Err(OpenError::UnknownKey));
    }

    #[test]
    fn a_different_key_with_a_forged_id_is_refused() {
        let a = ring(&[A]);
        let b = ring(&[B]);
        let t = b.seal("session", b"s");
        let forged = t.replacen(b.primary_id(), a.primary_id(), 1);
        assert_eq!(a.open("session", &forged), Err(OpenError::Tampered));
    }

    #[test]
    fn malformed_and_oversized_input() {
        let r = ring(&[A]);
        for bad in [
            "",
            "v1",
            "v1.x",
            "v2.abc.def",
            "v1..",
            "garbage",
            "v1.id.!!!",
        ] {
            assert!(r.open("session", bad).is_err(), "{bad:?}");
        }
        let short = format!("v1.{}.{}", r.primary_id(), B64.encode([0u8; 5]));
        assert_eq!(r.open("session", &short), Err(OpenError::Malformed));
        let huge = format!("v1.{}.{}", r.primary_id(), "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(r.open("session", &huge), Err(OpenError::TooLarge));
    }

    #[test]
    fn weak_keys_are_refused() {
        assert_eq!(
            KeyRing::new(&[b"short".as_slice()]).unwrap_err(),
            WeakKey { index: 0, len: 5 }
        );
        assert!(KeyRing::new::<&[u8]>(&[]).is_err());
        let long = [7u8; 64];
        let r = KeyRing::new(&[long.as_slice()]).unwrap();
        assert_eq!(r.open("p", &r.seal("p", b"ok")).unwrap(), b"ok");
        assert!(
            !format!("{r:?}").contains("7, 7"),
            "Debug shows key ids only"
        );
    }
}
