//! The user's tokens, for AccessPolicies that forward one to the app
//! (`spec.forward.token`): sealed in a cookie of the provider's,
//! `_sso_tok.<namespace>.<name>`, written at login and after each refresh
//! only while some policy of that provider forwards a token. Bound to the
//! session it was issued with (provider and subject), so a token cookie
//! never lends its token to another session.

use serde::{Deserialize, Serialize};

use super::{
    seal::KeyRing,
    session::{self, MAX_SESSION_BYTES, Session},
};

/// Prefix of the token cookies' names.
pub const TOKENS_COOKIE: &str = "_sso_tok";
const PURPOSE: &str = "tokens";

/// The token cookie of `provider`.
pub fn cookie_name(provider: &str) -> String {
    session::slot(TOKENS_COOKIE, provider)
}

/// Which tokens to carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub access: bool,
    pub id: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.access || self.id
    }
}

/// The carried tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    #[serde(rename = "p")]
    pub provider: String,
    #[serde(rename = "s")]
    pub sub: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// When the access token expires, Unix seconds (when the IdP said).
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub access_expires: Option<i64>,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A needed token was left out: it does not fit in a cookie.
    #[serde(rename = "t", default, skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

impl Carried {
    /// What to carry for `s` with `needs`, from the tokens just issued.
    pub fn new(
        s: &Session,
        needs: Needs,
        access: &str,
        expires_in: Option<u64>,
        id: Option<&str>,
        now: i64,
    ) -> Self {
        Carried {
            provider: s.provider.clone(),
            sub: s.sub.clone(),
            access: needs.access.then(|| access.to_string()),
            access_expires: needs
                .access
                .then_some(expires_in)
                .flatten()
                .map(|e| now.saturating_add(i64::try_from(e).unwrap_or(i64::MAX))),
            id: if needs.id {
                id.map(str::to_string)
            } else {
                None
            },
            too_large: false,
        }
    }

    /// Whether it belongs to session `s`.
    pub fn belongs_to(&self, s: &Session) -> bool {
        self.provider == s.provider && self.sub == s.sub
    }
}

/// Seals `c`; a token that does not fit is left out and marked, so the app
/// is told instead of the user being sent to log in again and again.
pub fn seal(ring: &KeyRing, mut c: Carried) -> String {
    let limit =
        MAX_SESSION_BYTES.saturating_sub(cookie_name(&c.provider).len() - TOKENS_COOKIE.len());
    loop {
        let json = serde_json::to_vec(&c).expect("tokens serialize");
        let sealed = ring.seal(PURPOSE, &json);
        if sealed.len() <= limit || (c.access.is_none() && c.id.is_none()) {
            return sealed;
        }
        c.too_large = true;
        if c.id.take().is_none() {
            c.access = None;
            c.access_expires = None;
        }
    }
}

pub fn open(ring: &KeyRing, sealed: &str) -> Option<Carried> {
    let json = ring.open(PURPOSE, sealed).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            provider: "team/corp".into(),
            sub: "u1".into(),
            user: "alice".into(),
            email: None,
            groups: vec![],
            groups_truncated: false,
            issued_at: 0,
            expires_at: 100,
            validated_at: 0,
            refresh_token: None,
            claims: Default::default(),
            claims_looked_for: Vec::new(),
            issuer: String::new(),
            client_id: String::new(),
        }
    }

    #[test]
    fn carries_what_is_needed_bound_to_its_session() {
        let ring = KeyRing::new(&[b"0123456789abcdef0123456789abcdef"]).unwrap();
        let s = session();
        let c = Carried::new(
            &s,
            Needs {
                access: true,
                id: false,
            },
            "at",
            Some(60),
            Some("idt"),
            1000,
        );
        assert_eq!(
            (c.access.as_deref(), c.access_expires, c.id.as_deref()),
            (Some("at"), Some(1060), None)
        );
        let back = open(&ring, &seal(&ring, c.clone())).unwrap();
        assert_eq!(back, c);
        assert!(back.belongs_to(&s));
        let mut other = s.clone();
        other.sub = "u2".into();
        assert!(!back.belongs_to(&other));
        assert_eq!(cookie_name("team/corp"), "_sso_tok.team.corp");
    }

    #[test]
    fn a_token_too_large_for_a_cookie_is_left_out_and_marked() {
        let ring = KeyRing::new(&[b"0123456789abcdef0123456789abcdef"]).unwrap();
        let big = "x".repeat(5000);
        let c = Carried::new(
            &session(),
            Needs {
                access: true,
                id: true,
            },
            &big,
            None,
            Some("idt"),
            0,
        );
        let back = open(&ring, &seal(&ring, c)).unwrap();
        assert!(back.too_large);
        assert_eq!(back.access, None);
    }
}
