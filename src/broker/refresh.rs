//! Session refresh with the refresh token.
//!
//! A session whose last validation is older than the refresh interval is
//! re-validated at the IdP on its next forward-auth (or userinfo) request:
//! the refresh token is redeemed, a new ID token (when the IdP sends one)
//! goes through the same checks as at login except the nonce, its `sub`
//! must be the session's, and the claims, verified-email rule and access
//! rules are applied again. The session's absolute expiry never moves.
//!
//! - the IdP refuses the grant (`invalid_grant`: revoked, user disabled) or
//!   the new identity fails a check: the session ends (401, cookie cleared);
//! - the IdP is down, slow or answers garbage: the session keeps serving
//!   until its own expiry (an IdP hiccup never logs anyone out) and the
//!   provider backs off before trying again;
//! - a browser firing many requests with the same due cookie causes one
//!   refresh: requests are joined by a hash of the cookie, and the result
//!   is kept for a while so that later requests still carrying the old
//!   cookie get the new one instead of redeeming a refresh token the IdP
//!   may have rotated (a reused rotated token makes careful IdPs revoke the
//!   whole grant).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::OnceCell;

use super::{
    error::Refusal,
    provider::{ProviderRuntime, RefreshFailure},
    seal::KeyRing,
    session::{self, Session},
};

/// Joined refreshes remembered at most (each holds one sealed cookie).
pub const MAX_REMEMBERED: usize = 4096;

/// What a refresh came to.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A new session and its sealed cookie value, with the tokens the
    /// refresh returned (for policies that forward one).
    Refreshed {
        session: Session,
        sealed: String,
        tokens: Option<Fresh>,
    },
    /// The IdP could not vouch right now; the session keeps serving.
    Kept(Refusal),
    /// The session is over.
    Ended(Refusal),
}

impl Outcome {
    /// The metric label.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Refreshed { .. } => "refreshed",
            Self::Kept(_) => "kept",
            Self::Ended(_) => "ended",
        }
    }
}

/// Tokens a refresh returned.
#[derive(Clone, Debug)]
pub struct Fresh {
    pub access_token: String,
    /// Absent when the IdP issued no new ID token.
    pub id_token: Option<String>,
    pub expires_in: Option<u64>,
}

type Slot = Arc<OnceCell<Outcome>>;

/// Joins concurrent refreshes of the same cookie and remembers results.
pub struct Refresher {
    slots: Mutex<HashMap<[u8; 32], (Instant, Slot)>>,
    remember: Duration,
}

impl Refresher {
    /// `remember`: how long a result is handed to requests that still carry
    /// the old cookie.
    pub fn new(remember: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            remember,
        }
    }

    /// Runs `work` once for this cookie value; concurrent and later callers
    /// with the same value (within `remember`) get the same outcome.
    pub async fn join<F, Fut>(&self, cookie: &str, work: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let slot = {
            let mut slots = self.slots.lock().expect("not poisoned");
            if let Some((at, slot)) = slots.get(&key) {
                if at.elapsed() < self.remember {
                    Some(slot.clone())
                } else {
                    None
                }
            } else {
                None
            }
            .unwrap_or_else(|| {
                if slots.len() >= MAX_REMEMBERED {
                    let remember = self.remember;
                    slots.retain(|_, (at, _)| at.elapsed() < remember);
                    if slots.len() >= MAX_REMEMBERED {
                        // Only under a flood of distinct due sessions: forget
                        // the results, joining of in-flight work is kept
                        // by the callers' own Arc.
                        slots.clear();
                    }
                }
                let slot = Slot::default();
                slots.insert(key, (Instant::now(), slot.clone()));
                slot
            })
        };
        let outcome = slot.get_or_init(work).await.clone();
        // A kept session is retried after the provider's back-off, not held
        // for `remember`.
        if matches!(outcome, Outcome::Kept(_)) {
            let mut slots = self.slots.lock().expect("not poisoned");
            if slots.get(&key).is_some_and(|(_, s)| Arc::ptr_eq(s, &slot)) {
                slots.remove(&key);
            }
        }
        outcome
    }

    /// Results remembered right now.
    pub fn remembered(&self) -> usize {
        self.slots.lock().expect("not poisoned").len()
    }
}

/// Refreshes `s` at `provider`. Never fails: every path is an outcome.
/// `claims`: the claims the provider's policies look at now.
pub async fn refresh(
    provider: &ProviderRuntime,
    ring: &KeyRing,
    s: Session,
    claims: &std::collections::BTreeSet<String>,
    now: i64,
) -> Outcome {
    let Some(refresh_token) = s.refresh_token.clone() else {
        return Outcome::Kept(Refusal::new(
            super::error::Reason::InvalidRequest,
            "the session has no refresh token",
        ));
    };
    let tokens = match provider.refresh(&refresh_token, now).await {
        Ok(t) => t,
        Err(RefreshFailure::Revoked(r)) => return Outcome::Ended(r),
        Err(RefreshFailure::Unavailable(r)) => return Outcome::Kept(r),
    };
    let mut next = s.clone();
    // A rotated refresh token must be kept whatever happens next: the old
    // one is spent.
    if let Some(rt) = tokens.refresh_token {
        next.refresh_token = Some(rt);
    }
    match &tokens.id_token {
        // No new ID token: the grant is alive, the identity stands.
        None => next.validated_at = now,
        Some(id_token) => {
            match provider
                .identity(id_token, &tokens.access_token, None, Some(&s.sub), now)
                .await
            {
                Ok(id) => {
                    next.claims = id.select(claims);
                    next.claims_looked_for = claims.iter().cloned().collect();
                    next.user = id.user;
                    next.email = id.email;
                    next.groups = id.groups;
                    next.groups_truncated = false;
                    next.validated_at = now;
                }
                Err(r) if is_transient(&r) => {
                    // Keys or userinfo unreachable: keep the identity and
                    // the new refresh token, try again after the back-off.
                    provider.note_refresh_unavailable();
                    if next.refresh_token == s.refresh_token {
                        return Outcome::Kept(r);
                    }
                }
                Err(r) => return Outcome::Ended(r),
            }
        }
    }
    let fresh = Fresh {
        access_token: tokens.access_token.clone(),
        id_token: tokens.id_token.clone(),
        expires_in: tokens.expires_in,
    };
    match session::seal(ring, next.clone(), &provider.cfg.allowed_groups) {
        Ok(sealed) => Outcome::Refreshed {
            session: session::open(ring, &sealed, now).unwrap_or(next),
            sealed,
            tokens: Some(fresh),
        },
        Err(_) => Outcome::Ended(Refusal::new(
            super::error::Reason::SessionTooLarge,
            "the refreshed identity does not fit in a session cookie",
        )),
    }
}

/// Failures that say nothing about the user, only about reaching the IdP.
fn is_transient(r: &Refusal) -> bool {
    use super::error::Reason::*;
    matches!(
        r.reason,
        JwksUnavailable | UserinfoError | TokenUnreachable | TokenInvalidResponse
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::error::Reason;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn refreshed(user: &str) -> Outcome {
        Outcome::Refreshed {
            session: Session {
                provider: "sso/corp".into(),
                sub: "1".into(),
                user: user.into(),
                email: None,
                groups: vec![],
                groups_truncated: false,
                issued_at: 1,
                expires_at: 2,
                validated_at: 1,
                refresh_token: None,
                claims: Default::default(),
                claims_looked_for: Vec::new(),
                issuer: String::new(),
                client_id: String::new(),
            },
            sealed: format!("sealed-{user}"),
            tokens: None,
        }
    }

    #[tokio::test]
    async fn concurrent_callers_with_one_cookie_share_one_refresh() {
        let r = Arc::new(Refresher::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (r, runs) = (r.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                r.join("cookie-a", || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    refreshed("alice")
                })
                .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Outcome::Refreshed { .. }));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A later caller with the old cookie gets the remembered result.
        let again = r.join("cookie-a", || async { refreshed("bob") }).await;
        match again {
            Outcome::Refreshed { sealed, .. } => assert_eq!(sealed, "sealed-alice"),
            other => panic!("{other:?}"),
        }
        // Another cookie is another refresh.
        let other = r.join("cookie-b", || async { refreshed("bob") }).await;
        match other {
            Outcome::Refreshed { sealed, .. } => assert_eq!(sealed, "sealed-bob"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn kept_is_not_remembered_and_results_expire() {
        let r = Refresher::new(Duration::from_millis(30));
        let kept = r
            .join("c", || async {
                Outcome::Kept(Refusal::new(Reason::TokenUnreachable, "down"))
            })
            .await;
        assert!(matches!(kept, Outcome::Kept(_)));
        assert_eq!(r.remembered(), 0);
        let first = r.join("c", || async { refreshed("a") }).await;
        assert!(matches!(first, Outcome::Refreshed { .. }));
        tokio::time::sleep(Duration::from_millis(40)).await;
        match r.join("c", || async { refreshed("b") }).await {
            Outcome::Refreshed { sealed, .. } => assert_eq!(sealed, "sealed-b"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let r = Refresher::new(Duration::from_secs(600));
        for i in 0..(MAX_REMEMBERED + 10) {
            r.join(&format!("c{i}"), || async { refreshed("a") }).await;
        }
        assert!(r.remembered() <= MAX_REMEMBERED, "{}", r.remembered());
    }
}
