//! The session a browser carries: a sealed cookie holding only what access
//! rules and forward-auth headers need, with a fixed lifetime, and the
//! refresh token when the IdP issued one and refresh is on. No server
//! store, so any number of broker replicas can serve it.

use serde::{Deserialize, Serialize};

use super::seal::{KeyRing, OpenError};

/// Cookie name of a session from before sessions were per provider, and
/// the prefix of every session cookie's name.
pub const SESSION_COOKIE: &str = "_sso_session";

/// The session cookie of `provider` (`namespace/name`):
/// `_sso_session.<namespace>.<name>`. A browser holds one session per
/// provider, so signing in through one provider never ends another's
/// session. Characters a cookie name cannot carry become `_` (the sealed
/// session says which provider it is from; the name is only its slot).
pub fn cookie_name(provider: &str) -> String {
    slot(SESSION_COOKIE, provider)
}

/// `<prefix>.<namespace>.<name>` for `provider`, as a cookie name.
pub fn slot(prefix: &str, provider: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + 1 + provider.len());
    name.push_str(prefix);
    name.push('.');
    name.extend(provider.chars().map(|c| match c {
        '/' => '.',
        c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
        _ => '_',
    }));
    name
}

/// Whether `name` is a session cookie's (this version's or the old one).
pub fn is_session_cookie(name: &str) -> bool {
    name == SESSION_COOKIE || in_slot(SESSION_COOKIE, name)
}

/// Whether `name` is one of the per-provider cookies [`slot`] names under
/// `prefix`.
pub fn in_slot(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.'))
}
/// Purpose (associated data) the session is sealed for.
const PURPOSE: &str = "session";
/// Largest sealed session value. With the name and attributes (`Path`,
/// `Secure`, `HttpOnly`, `SameSite`, `Max-Age`) it stays under the 4096
/// bytes browsers and proxies accept for one cookie.
pub const MAX_SESSION_BYTES: usize = 3800;
/// Clock skew tolerated between broker replicas.
pub const MAX_SKEW_SECS: i64 = 60;

/// Who is logged in, through which provider, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Provider key, `namespace/name`.
    #[serde(rename = "p")]
    pub provider: String,
    #[serde(rename = "s")]
    pub sub: String,
    /// The mapped username (`X-Auth-Request-User`).
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Set when groups had to be dropped to fit the cookie.
    #[serde(rename = "t", default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_truncated: bool,
    /// Issued at, Unix seconds.
    #[serde(rename = "i")]
    pub issued_at: i64,
    /// Expires at, Unix seconds. A refresh does not extend it.
    #[serde(rename = "x")]
    pub expires_at: i64,
    /// Last time the IdP vouched for this user (login or refresh), Unix
    /// seconds; 0 in sessions sealed before refresh existed.
    #[serde(rename = "v", default, skip_serializing_if = "is_zero")]
    pub validated_at: i64,
    /// The refresh token, when the IdP issued one and refresh is on.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Claims that AccessPolicy rules of this provider look at, by the
    /// name the rules use (never dropped to fit: a deny rule must see them).
    #[serde(
        rename = "c",
        default,
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The claim names looked for when the session was sealed (present or
    /// not): a policy whose rules name another claim cannot judge this
    /// session and sends the user to sign in again.
    #[serde(rename = "k", default, skip_serializing_if = "Vec::is_empty")]
    pub claims_looked_for: Vec<String>,
    /// The provider's issuer at login: a provider of the same
    /// `namespace/name` with another issuer (the namespace deleted and
    /// made again by someone else, or the provider pointed elsewhere) does
    /// not inherit the session. Empty in sessions from before.
    #[serde(rename = "o", default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// The provider's client ID at login: the same issuer with another
    /// client (someone else's registration at a shared IdP, under a
    /// provider re-created with the same name) does not inherit the
    /// session either. Bound to the client rather than the object's UID,
    /// so re-creating an unchanged provider (a GitOps prune and re-apply)
    /// logs nobody out. Empty in sessions from before.
    #[serde(rename = "a", default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Session {
    /// Whether a refresh is due at `now` with refresh interval `every`
    /// seconds (0 = refresh off).
    pub fn refresh_due(&self, every: i64, now: i64) -> bool {
        every > 0
            && self.refresh_token.is_some()
            && now >= self.validated_at.max(self.issued_at) + every
    }
}

/// Why a session cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("session payload is not valid")]
    Invalid,
    #[error("session expired")]
    Expired,
    #[error("session issued in the future")]
    NotYetValid,
}

impl SessionError {
    pub fn category(self) -> &'static str {
        match self {
            Self::Open(e) => e.category(),
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
        }
    }
}

/// Even with no groups at all the session does not fit (an absurdly long
/// username or email).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session does not fit in a cookie")]
pub struct TooLarge;

/// Seals a session. Groups not named by `allowed_groups` (when that list is
/// set) are dropped first, since no access rule can use them; if the
/// cookie is still too large, the refresh token goes next (the session
/// then simply lasts its fixed lifetime), and then groups from the end,
/// and the session says so.
pub fn seal(
    ring: &KeyRing,
    mut session: Session,
    allowed_groups: &[String],
) -> Result<String, TooLarge> {
    if !allowed_groups.is_empty() {
        session.groups.retain(|g| allowed_groups.contains(g));
    }
    // The cookie's name counts against the browser's 4 KB as well.
    let limit = MAX_SESSION_BYTES
        .saturating_sub(cookie_name(&session.provider).len() - SESSION_COOKIE.len());
    loop {
        let json = serde_json::to_vec(&session).expect("session serializes");
        let token = ring.seal(PURPOSE, &json);
        if token.len() <= limit {
            return Ok(token);
        }
        if session.refresh_token.take().is_some() {
            tracing::warn!(
                provider = %session.provider,
                user = ?session.user,
                "the refresh token does not fit in the session cookie; this session will not be refreshed"
            );
            continue;
        }
        if session.groups.is_empty() {
            return Err(TooLarge);
        }
        // Shrink by the overshoot's share, at least one group.
        let over = token.len() - limit;
        let avg = (json.len() / (session.groups.len() + 4)).max(1);
        let drop = (over * 3 / 4 / avg).max(1).min(session.groups.len());
        session.groups.truncate(session.groups.len() - drop);
        session.groups_truncated = true;
    }
}

/// Opens and checks a session cookie value at time `now` (Unix seconds).
pub fn open(ring: &KeyRing, token: &str, now: i64) -> Result<Session, SessionError> {
    let json = ring.open(PURPOSE, token)?;
    let s: Session = serde_json::from_slice(&json).map_err(|_| SessionError::Invalid)?;
    if s.issued_at > now + MAX_SKEW_SECS {
        return Err(SessionError::NotYetValid);
    }
    if now >= s.expires_at {
        return Err(SessionError::Expired);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn ring() -> KeyRing {
        KeyRing::new(&[b"0123456789abcdef0123456789abcdef"]).unwrap()
    }

    fn session(groups: Vec<String>) -> Session {
        Session {
            provider: "sso/corp".into(),
            sub: "248289761001".into(),
            user: "alice".into(),
            email: Some("alice@example.com".into()),
            groups,
            groups_truncated: false,
            issued_at: NOW,
            expires_at: NOW + 8 * 3600,
            validated_at: NOW,
            refresh_token: None,
            claims: Default::default(),
            claims_looked_for: Vec::new(),
            issuer: String::new(),
            client_id: String::new(),
        }
    }

    #[test]
    fn round_trip() {
        let r = ring();
        let mut s = session(vec!["admins".into(), "users".into()]);
        s.issuer = "https://idp.example.com".into();
        s.client_id = "client-1".into();
        let token = seal(&r, s.clone(), &[]).unwrap();
        assert_eq!(open(&r, &token, NOW + 10).unwrap(), s);
    }

    #[test]
    fn expiry_and_future_issue() {
        let r = ring();
        let token = seal(&r, session(vec![]), &[]).unwrap();
        assert_eq!(open(&r, &token, NOW + 8 * 3600), Err(SessionError::Expired));
        assert_eq!(
            open(&r, &token, NOW - MAX_SKEW_SECS - 1),
            Err(SessionError::NotYetValid)
        );
        assert!(
            open(&r, &token, NOW - MAX_SKEW_SECS).is_ok(),
            "skew within bounds"
        );
    }

    #[test]
    fn two_hundred_groups_fit_under_4k() {
        let r = ring();
        let groups: Vec<String> = (0..200).map(|i| format!("group-{i:03}")).collect();
        let token = seal(&r, session(groups.clone()), &[]).unwrap();
        assert!(token.len() <= MAX_SESSION_BYTES, "{}", token.len());
        let s = open(&r, &token, NOW).unwrap();
        assert_eq!(s.groups, groups, "short names: all 200 kept");
        assert!(!s.groups_truncated);
    }

    #[test]
    fn long_group_ids_keep_what_access_rules_need() {
        let r = ring();
        // Entra ID style: 200 object IDs of 36 characters.
        let groups: Vec<String> = (0..200)
            .map(|i| format!("{i:08}-1111-2222-3333-444444444444"))
            .collect();
        let allowed = vec![groups[150].clone(), groups[3].clone()];
        let s = open(
            &r,
            &seal(&r, session(groups.clone()), &allowed).unwrap(),
            NOW,
        )
        .unwrap();
        assert_eq!(s.groups, [groups[3].clone(), groups[150].clone()]);
        assert!(!s.groups_truncated);
        // With no allow-list, as many as fit, flagged as truncated.
        let token = seal(&r, session(groups), &[]).unwrap();
        assert!(token.len() <= MAX_SESSION_BYTES);
        let s = open(&r, &token, NOW).unwrap();
        assert!(s.groups_truncated);
        assert!(
            s.groups.len() > 40 && s.groups.len() < 200,
            "{}",
            s.groups.len()
        );
    }

    #[test]
    fn absurd_identity_does_not_fit() {
        let mut s = session(vec![]);
        s.user = "u".repeat(4000);
        assert_eq!(seal(&ring(), s, &[]), Err(TooLarge));
    }

    #[test]
    fn a_state_cookie_is_not_a_session() {
        let r = ring();
        let state = r.seal("state", &serde_json::to_vec(&session(vec![])).unwrap());
        assert_eq!(
            open(&r, &state, NOW),
            Err(SessionError::Open(OpenError::Tampered))
        );
        let garbage = r.seal(PURPOSE, b"{\"not\":\"a session\"}");
        assert_eq!(open(&r, &garbage, NOW), Err(SessionError::Invalid));
    }

    #[test]
    fn refresh_token_travels_sealed_and_is_dropped_before_groups() {
        let r = ring();
        let mut s = session(vec!["admins".into()]);
        s.refresh_token = Some("rt-opaque-43-characters-of-random-base64url".into());
        let token = seal(&r, s.clone(), &[]).unwrap();
        assert!(!token.contains("rt-opaque"), "sealed, not readable");
        assert_eq!(open(&r, &token, NOW).unwrap(), s);
        // An Entra-sized refresh token with 200 long groups: the token goes,
        // the groups (which rules and headers need) stay.
        let groups: Vec<String> = (0..60)
            .map(|i| format!("{i:08}-1111-2222-3333-444444444444"))
            .collect();
        let mut big = session(groups.clone());
        big.refresh_token = Some("x".repeat(1800));
        let opened = open(&r, &seal(&r, big, &[]).unwrap(), NOW).unwrap();
        assert_eq!(opened.refresh_token, None);
        assert_eq!(opened.groups, groups);
        assert!(!opened.groups_truncated);
    }

    #[test]
    fn refresh_is_due_after_the_interval_only_with_a_token() {
        let mut s = session(vec![]);
        assert!(!s.refresh_due(300, NOW + 301), "no refresh token");
        s.refresh_token = Some("rt".into());
        assert!(!s.refresh_due(0, NOW + 10_000), "refresh off");
        assert!(!s.refresh_due(300, NOW + 299));
        assert!(s.refresh_due(300, NOW + 300));
        s.validated_at = NOW + 300;
        assert!(!s.refresh_due(300, NOW + 301), "validated again");
        // Sessions sealed before refresh existed count from issued_at.
        s.validated_at = 0;
        assert!(s.refresh_due(300, NOW + 300));
        assert!(!s.refresh_due(300, NOW + 299));
    }
}
