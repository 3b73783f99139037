//! A provider's signing keys as the broker holds them: fetched on demand,
//! refreshed when older than [`JWKS_MAX_AGE`], refetched (rate-limited) for
//! an unknown `kid`, and kept through a failed refresh. Shared across config
//! reloads while the JWKS URL and CA stay the same.

use std::time::{Duration, Instant};

use openidconnect::core::CoreJsonWebKeySet;
use tokio::sync::Mutex;

use super::discovery::{self, HttpSettings};
use crate::broker::error::{Reason, Refusal};

/// Keys are refetched at least this often even when every `kid` is known,
/// so a key the IdP retired stops verifying.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// At most one refetch for an unknown `kid` per provider in this interval,
/// so forged tokens with random `kid`s cannot make the broker hammer the
/// IdP.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct JwksState {
    keys: Option<CoreJsonWebKeySet>,
    fetched_at: Option<Instant>,
    /// Last refetch forced by an unknown `kid`.
    last_forced: Option<Instant>,
    fetches: u64,
}

/// How to reach the JWKS: the HTTP client (with the provider's CA), its
/// settings, and the provider's key for log lines.
pub struct Fetch<'a> {
    pub http: &'a reqwest::Client,
    pub settings: &'a HttpSettings,
    pub provider: &'a str,
}

/// The provider's signing keys.
pub struct JwksCache {
    uri: String,
    state: Mutex<JwksState>,
}

impl JwksCache {
    pub fn new(uri: String) -> Self {
        Self {
            uri,
            state: Mutex::new(JwksState::default()),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// How many times the JWKS was fetched.
    pub async fn fetches(&self) -> u64 {
        self.state.lock().await.fetches
    }

    async fn fetch(&self, f: &Fetch<'_>) -> Result<CoreJsonWebKeySet, Refusal> {
        let doc = discovery::get_json(f.http, "JWKS", &self.uri, f.settings)
            .await
            .map_err(|e| Refusal::new(Reason::JwksUnavailable, e.message))?;
        serde_json::from_value(doc).map_err(|e| {
            Refusal::new(
                Reason::JwksUnavailable,
                format!("JWKS at {} is not a valid key set: {e}", self.uri),
            )
        })
    }

    /// The current keys; fetched when absent or older than
    /// [`JWKS_MAX_AGE`]. A failed periodic refresh keeps the old keys.
    pub async fn keys(&self, f: &Fetch<'_>) -> Result<CoreJsonWebKeySet, Refusal> {
        let mut st = self.state.lock().await;
        let stale = st.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        if stale {
            st.fetches += 1;
            match self.fetch(f).await {
                Ok(keys) => {
                    st.keys = Some(keys);
                    st.fetched_at = Some(Instant::now());
                }
                Err(e) if st.keys.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(provider = %f.provider, error = %e, "JWKS refresh failed; keeping the previous keys")
                }
            }
        }
        Ok(st.keys.clone().expect("keys present"))
    }

    /// Refetches for an unknown `kid`, at most once per
    /// [`JWKS_REFETCH_INTERVAL`]. Returns the new keys when it refetched.
    pub async fn refetch_for_unknown_kid(&self, f: &Fetch<'_>) -> Option<CoreJsonWebKeySet> {
        let mut st = self.state.lock().await;
        if st
            .last_forced
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            return None;
        }
        st.last_forced = Some(Instant::now());
        st.fetches += 1;
        match self.fetch(f).await {
            Ok(keys) => {
                st.keys = Some(keys.clone());
                st.fetched_at = Some(Instant::now());
                Some(keys)
            }
            Err(e) => {
                tracing::warn!(provider = %f.provider, error = %e, "JWKS refetch for an unknown kid failed");
                None
            }
        }
    }
}
