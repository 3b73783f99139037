//! A provider's signing keys as the broker holds them: fetched on demand,
//! refreshed when older than [`JWKS_MAX_AGE`], refetched (rate-limited) for
//! an unknown `kid`, and kept through a failed refresh. Shared across config
//! reloads while the JWKS URL and CA stay the same.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use openidconnect::core::CoreJsonWebKeySet;

use super::discovery::{self, HttpSettings};
use crate::broker::error::{Reason, Refusal};

/// Keys are refetched at least this often even when every `kid` is known,
/// so a key the IdP retired stops verifying.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// At most one refetch for an unknown `kid` per provider in this interval,
/// so forged tokens with random `kid`s cannot make the broker hammer the
/// IdP. A failed periodic refresh waits as long before the next try.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct JwksState {
    keys: Option<Arc<CoreJsonWebKeySet>>,
    fetched_at: Option<Instant>,
    /// Last refetch forced by an unknown `kid`.
    last_forced: Option<Instant>,
    /// Last periodic refresh that failed while older keys were kept.
    refresh_failed_at: Option<Instant>,
    fetches: u64,
}

/// How to reach the JWKS: the HTTP client (with the provider's CA), its
/// settings, and the provider's key for log lines.
pub struct Fetch<'a> {
    pub http: &'a reqwest::Client,
    pub settings: &'a HttpSettings,
    pub provider: &'a str,
}

/// The provider's signing keys. Logins read them under a short lock; one
/// fetch runs at a time, and while a refresh of keys the broker already
/// holds is under way (or failed moments ago) logins go on with those
/// keys instead of queueing behind the IdP.
pub struct JwksCache {
    uri: String,
    max_age: Duration,
    state: Mutex<JwksState>,
    /// Held by the one task fetching.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(uri: String) -> Self {
        Self::with_max_age(uri, JWKS_MAX_AGE)
    }

    /// A cache whose keys are refreshed when older than `max_age`.
    pub fn with_max_age(uri: String, max_age: Duration) -> Self {
        Self {
            uri,
            max_age,
            state: Mutex::new(JwksState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JwksState> {
        self.state.lock().expect("not poisoned")
    }

    /// How many times the JWKS was fetched.
    pub async fn fetches(&self) -> u64 {
        self.state().fetches
    }

    /// Fetches the keys and, when that worked, keeps them.
    async fn fetch_and_keep(&self, f: &Fetch<'_>) -> Result<Arc<CoreJsonWebKeySet>, Refusal> {
        let keys = Arc::new(self.fetch(f).await?);
        let mut st = self.state();
        st.keys = Some(keys.clone());
        st.fetched_at = Some(Instant::now());
        st.refresh_failed_at = None;
        Ok(keys)
    }

    async fn fetch(&self, f: &Fetch<'_>) -> Result<CoreJsonWebKeySet, Refusal> {
        self.state().fetches += 1;
        let doc = discovery::get_json(f.http, "JWKS", &self.uri, f.settings)
            .await
            .map_err(|e| {
                Refusal::new(
                    Reason::JwksUnavailable,
                    "the provider's signing keys could not be fetched",
                )
                .with_detail(e.message)
            })?;
        serde_json::from_value(discovery::verify_keys_only(&doc)).map_err(|e| {
            Refusal::new(
                Reason::JwksUnavailable,
                "the provider's signing keys are not a valid key set",
            )
            .with_detail(format!("JWKS at {}: {e}", self.uri))
        })
    }

    /// The keys in hand when they can serve without a fetch: fresh, or
    /// stale while a refresh runs or failed less than
    /// [`JWKS_REFETCH_INTERVAL`] ago.
    fn usable(&self, refresh_running: bool) -> Option<Arc<CoreJsonWebKeySet>> {
        let st = self.state();
        let keys = st.keys.clone()?;
        let fresh = st.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
        let backing_off = st
            .refresh_failed_at
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL);
        (fresh || backing_off || refresh_running).then_some(keys)
    }

    /// The current keys; fetched when absent or older than the maximum
    /// age. A failed periodic refresh keeps the old keys and is retried
    /// after [`JWKS_REFETCH_INTERVAL`], by one login, not by every one.
    pub async fn keys(&self, f: &Fetch<'_>) -> Result<Arc<CoreJsonWebKeySet>, Refusal> {
        if let Some(keys) = self.usable(false) {
            return Ok(keys);
        }
        let _fetching = match self.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(keys) = self.usable(true) {
                    return Ok(keys);
                }
                // No keys yet: wait for the fetch under way, then use
                // what it brought or try again.
                let guard = self.fetching.lock().await;
                if let Some(keys) = self.usable(false) {
                    return Ok(keys);
                }
                guard
            }
        };
        match self.fetch_and_keep(f).await {
            Ok(keys) => Ok(keys),
            Err(e) => {
                let mut st = self.state();
                match st.keys.clone() {
                    None => Err(e),
                    Some(old) => {
                        st.refresh_failed_at = Some(Instant::now());
                        tracing::warn!(provider = %f.provider, error = %e, "JWKS refresh failed; keeping the previous keys");
                        Ok(old)
                    }
                }
            }
        }
    }

    /// Refetches for an unknown `kid`, at most once per
    /// [`JWKS_REFETCH_INTERVAL`]. Returns the new keys when it refetched.
    pub async fn refetch_for_unknown_kid(&self, f: &Fetch<'_>) -> Option<Arc<CoreJsonWebKeySet>> {
        {
            let mut st = self.state();
            if st
                .last_forced
                .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL)
            {
                return None;
            }
            st.last_forced = Some(Instant::now());
        }
        let _fetching = self.fetching.lock().await;
        match self.fetch_and_keep(f).await {
            Ok(keys) => Some(keys),
            Err(e) => {
                tracing::warn!(provider = %f.provider, error = %e, "JWKS refetch for an unknown kid failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering};

    use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};

    use super::*;

    const GOOD: u8 = 0;
    const FAIL: u8 = 1;
    const HANG: u8 = 2;

    /// A JWKS endpoint that serves keys, answers 500 or hangs, as told.
    async fn endpoint(mode: Arc<AtomicU8>) -> String {
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let mode = mode.clone();
                async move {
                    match mode.load(Ordering::SeqCst) {
                        GOOD => (
                            [("content-type", "application/json")],
                            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
                        )
                            .into_response(),
                        FAIL => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        _ => {
                            tokio::time::sleep(Duration::from_secs(4)).await;
                            StatusCode::OK.into_response()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks")
    }

    fn settings() -> HttpSettings {
        HttpSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            egress: crate::oidc::egress::Egress::with_loopback(),
        }
    }

    #[tokio::test]
    async fn no_keys_and_a_failing_endpoint_is_jwks_unavailable() {
        let mode = Arc::new(AtomicU8::new(FAIL));
        let cache = JwksCache::new(endpoint(mode).await);
        let (http, settings) = (reqwest::Client::new(), settings());
        let f = Fetch {
            http: &http,
            settings: &settings,
            provider: "t/p",
        };
        let e = cache.keys(&f).await.unwrap_err();
        assert_eq!(e.reason, Reason::JwksUnavailable);
        let detail = e.detail.unwrap_or_default();
        assert!(detail.contains("HTTP 500"), "{detail}");
        assert!(!e.message.contains("127.0.0.1"), "{}", e.message);
    }

    /// A refresh of keys the broker holds, against an endpoint that hangs:
    /// one login waits for it, the others go on with the old keys at once,
    /// and once it failed nobody asks again for the back-off interval.
    #[tokio::test]
    async fn a_hanging_refresh_blocks_no_login_and_is_not_retried_by_each() {
        let mode = Arc::new(AtomicU8::new(GOOD));
        let cache = Arc::new(JwksCache::with_max_age(
            endpoint(mode.clone()).await,
            Duration::ZERO,
        ));
        let (http, settings) = (reqwest::Client::new(), settings());
        let f = Fetch {
            http: &http,
            settings: &settings,
            provider: "t/p",
        };
        let first = cache.keys(&f).await.unwrap();
        assert_eq!(cache.fetches().await, 1);

        mode.store(HANG, Ordering::SeqCst);
        let refresher = {
            let (cache, http, settings) = (cache.clone(), http.clone(), settings.clone());
            tokio::spawn(async move {
                let f = Fetch {
                    http: &http,
                    settings: &settings,
                    provider: "t/p",
                };
                cache.keys(&f).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        for _ in 0..20 {
            let keys = cache.keys(&f).await.unwrap();
            assert_eq!(keys, first, "the held keys serve during the refresh");
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "logins did not queue behind the hanging refresh: {:?}",
            started.elapsed()
        );
        assert_eq!(
            refresher.await.unwrap().unwrap(),
            first,
            "the failed refresh keeps the old keys"
        );
        assert_eq!(cache.fetches().await, 2, "one refresh, not one per login");

        // Failed moments ago: not retried, even though the keys are stale.
        for _ in 0..20 {
            cache.keys(&f).await.unwrap();
        }
        assert_eq!(cache.fetches().await, 2);
    }
}
