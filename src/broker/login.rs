//! The state of one login in flight, bound to the browser by a short-lived
//! sealed cookie named after the login's own `state`
//! (`_sso_login_<state>`), so several logins in one browser (tabs, apps)
//! never clobber each other.

use serde::{Deserialize, Serialize};

use super::seal::KeyRing;

/// Cookie name prefix; the `state` value follows.
pub const LOGIN_COOKIE_PREFIX: &str = "_sso_login_";
/// How long a login may take, from /oauth/start to the callback.
pub const LOGIN_TTL_SECS: i64 = 600;
/// At most this many logins in flight per browser; older ones are dropped.
pub const MAX_LOGINS_IN_FLIGHT: usize = 6;
const PURPOSE: &str = "login";

/// What the callback needs to finish the login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// Provider key, `namespace/name`.
    #[serde(rename = "p")]
    pub provider: String,
    /// The `state` parameter (also in the cookie name; checked twice).
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    /// PKCE code verifier, when PKCE is on.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// Where to go after login (already checked against the policy).
    #[serde(rename = "r")]
    pub rd: String,
    /// Unix seconds.
    #[serde(rename = "c")]
    pub created: i64,
}

/// Why a login cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// No cookie, a cookie that does not open, or one for another state or
    /// provider.
    Mismatch,
    Expired,
}

/// A `state` value is 22 URL-safe characters (128 bits).
pub fn is_valid_state(state: &str) -> bool {
    state.len() == 22
        && state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn cookie_name(state: &str) -> String {
    format!("{LOGIN_COOKIE_PREFIX}{state}")
}

pub fn seal(ring: &KeyRing, login: &LoginState) -> String {
    ring.seal(
        PURPOSE,
        &serde_json::to_vec(login).expect("login state serializes"),
    )
}

/// Opens the login cookie for `state` at `provider`.
pub fn open(
    ring: &KeyRing,
    cookie: &str,
    state: &str,
    provider: &str,
    now: i64,
) -> Result<LoginState, LoginError> {
    let bytes = ring
        .open(PURPOSE, cookie)
        .map_err(|_| LoginError::Mismatch)?;
    let login: LoginState = serde_json::from_slice(&bytes).map_err(|_| LoginError::Mismatch)?;
    if login.state != state || login.provider != provider {
        return Err(LoginError::Mismatch);
    }
    if now.saturating_sub(login.created) > LOGIN_TTL_SECS || login.created > now.saturating_add(60)
    {
        return Err(LoginError::Expired);
    }
    Ok(login)
}

/// Opens a login cookie only to learn its age (for dropping old ones).
pub fn created_at(ring: &KeyRing, cookie: &str) -> Option<i64> {
    let bytes = ring.open(PURPOSE, cookie).ok()?;
    serde_json::from_slice::<LoginState>(&bytes)
        .ok()
        .map(|l| l.created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(&[b"0123456789abcdef0123456789abcdef"]).unwrap()
    }

    fn login() -> LoginState {
        LoginState {
            provider: "ns/a".into(),
            state: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            nonce: "n".into(),
            verifier: Some("v".into()),
            rd: "/".into(),
            created: 1000,
        }
    }

    #[test]
    fn opens_only_for_its_state_provider_and_time() {
        let r = ring();
        let c = seal(&r, &login());
        assert_eq!(
            open(&r, &c, "AAAAAAAAAAAAAAAAAAAAAA", "ns/a", 1100),
            Ok(login())
        );
        assert_eq!(
            open(&r, &c, "BAAAAAAAAAAAAAAAAAAAAA", "ns/a", 1100),
            Err(LoginError::Mismatch)
        );
        assert_eq!(
            open(&r, &c, "AAAAAAAAAAAAAAAAAAAAAA", "ns/b", 1100),
            Err(LoginError::Mismatch)
        );
        assert_eq!(
            open(
                &r,
                &c,
                "AAAAAAAAAAAAAAAAAAAAAA",
                "ns/a",
                1000 + LOGIN_TTL_SECS + 1
            ),
            Err(LoginError::Expired)
        );
        // A session token never opens as a login (purpose binding).
        let other = r.seal("session", &serde_json::to_vec(&login()).unwrap());
        assert_eq!(
            open(&r, &other, "AAAAAAAAAAAAAAAAAAAAAA", "ns/a", 1100),
            Err(LoginError::Mismatch)
        );
    }

    #[test]
    fn state_shape() {
        assert!(is_valid_state("abcdefghijklmnopqrstu_"));
        assert!(!is_valid_state("short"));
        assert!(!is_valid_state("abcdefghijklmnopqrst.;"));
    }
}
