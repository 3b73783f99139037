//! Session and login cookies: arbitrary values must open to an error,
//! never a panic; a sealed session must open to what was sealed (after
//! the documented shrinking) and stay under the cookie size limit.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sso_operator::broker::{login, session};

#[derive(Arbitrary, Debug)]
struct Input {
    token: String,
    state: String,
    provider: String,
    sealed: Option<FuzzSession>,
}

#[derive(Arbitrary, Debug)]
struct FuzzSession {
    provider: String,
    sub: String,
    user: String,
    email: Option<String>,
    groups: Vec<String>,
    issued_offset: i16,
    lifetime: u16,
    refresh_token: Option<String>,
}

fuzz_target!(|input: Input| {
    let ring = common::ring();
    let now = common::now();
    // Attacker-chosen cookie values.
    let _ = session::open(ring, &input.token, now);
    let _ = login::open(ring, &input.token, &input.state, &input.provider, now);
    let _ = login::created_at(ring, &input.token);
    let _ = login::is_valid_state(&input.state);

    // Sealing what an IdP could put in a session.
    if let Some(f) = input.sealed {
        let s = session::Session {
            provider: f.provider,
            sub: f.sub,
            user: f.user,
            email: f.email,
            groups: f.groups,
            groups_truncated: false,
            issued_at: now + i64::from(f.issued_offset).min(0),
            expires_at: now + 1 + i64::from(f.lifetime),
            validated_at: now,
            refresh_token: f.refresh_token,
            claims: Default::default(),
            claims_looked_for: Vec::new(),
            issuer: String::new(),
            client_id: String::new(),
        };
        if let Ok(token) = session::seal(ring, s.clone(), &[]) {
            assert!(token.len() <= session::MAX_SESSION_BYTES);
            let back = session::open(ring, &token, now).expect("a sealed session opens");
            assert_eq!(back.provider, s.provider);
            assert_eq!(back.sub, s.sub);
            assert_eq!(back.user, s.user);
            assert_eq!(back.email, s.email);
            assert!(s.groups.starts_with(&back.groups));
            assert_eq!(back.groups_truncated, back.groups.len() < s.groups.len());
            assert!(back.refresh_token.is_none() || back.refresh_token == s.refresh_token);
            // Tampering with any byte of it is refused.
            let mut bytes = token.into_bytes();
            let i = usize::from(f.lifetime) % bytes.len();
            bytes[i] ^= 0x01;
            if let Ok(t) = String::from_utf8(bytes) {
                assert!(
                    session::open(ring, &t, now).is_err(),
                    "a tampered session opened"
                );
            }
        }
    }
});
