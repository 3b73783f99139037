//! The broker's metrics. Labels are bounded: refusal reason codes, provider
//! keys (as many as IdentityProviders), fixed result names.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::error::Reason;
use crate::metrics::Exposition;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderResultLabel {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct BrokerMetrics {
    registry: Registry,
    pub logins_started: Family<ProviderLabel, Counter>,
    pub logins: Family<ProviderLabel, Counter>,
    pub login_failures: Family<ReasonLabel, Counter>,
    pub callback_duration: Histogram,
    pub forward_auth: Family<ResultLabel, Counter>,
    /// `forward_auth{result="ok"}`, held so the hot path neither allocates
    /// a label nor hashes one.
    forward_auth_ok: Counter,
    pub refreshes: Family<ProviderResultLabel, Counter>,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub providers: Gauge,
    ready: AtomicBool,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sso_broker");
        let logins_started = Family::<ProviderLabel, Counter>::default();
        let logins = Family::<ProviderLabel, Counter>::default();
        let login_failures = Family::<ReasonLabel, Counter>::default();
        let callback_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let forward_auth = Family::<ResultLabel, Counter>::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        let refreshes = Family::<ProviderResultLabel, Counter>::default();
        let providers = Gauge::default();
        registry.register(
            "logins_started",
            "Logins sent to an identity provider",
            logins_started.clone(),
        );
        registry.register(
            "logins",
            "Completed logins (session issued)",
            logins.clone(),
        );
        registry.register(
            "login_failures",
            "Refused logins and requests, by reason",
            login_failures.clone(),
        );
        registry.register(
            "callback_duration_seconds",
            "Time to handle a callback, token exchange and verification included",
            callback_duration.clone(),
        );
        registry.register(
            "forward_auth",
            "Forward-auth answers, by result",
            forward_auth.clone(),
        );
        registry.register(
            "session_refreshes",
            "Session refreshes with the refresh token, by provider and result (refreshed, kept: the IdP could not vouch and the session keeps serving, ended)",
            refreshes.clone(),
        );
        registry.register(
            "config_reloads",
            "Broker configuration loads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "providers",
            "Providers currently serving logins",
            providers.clone(),
        );
        // Pre-create every reason so dashboards see zeros, not gaps.
        for r in Reason::ALL {
            let _ = login_failures.get_or_create(&ReasonLabel {
                reason: r.code().to_string(),
            });
        }
        let forward_auth_ok = forward_auth
            .get_or_create(&ResultLabel {
                result: "ok".to_string(),
            })
            .clone();
        Self {
            registry,
            forward_auth_ok,
            logins_started,
            logins,
            login_failures,
            callback_duration,
            forward_auth,
            refreshes,
            config_reloads,
            providers,
            ready: AtomicBool::new(false),
        }
    }

    pub fn failure(&self, reason: Reason) {
        self.login_failures
            .get_or_create(&ReasonLabel {
                reason: reason.code().to_string(),
            })
            .inc();
    }

    pub fn failures(&self, reason: Reason) -> u64 {
        self.login_failures
            .get_or_create(&ReasonLabel {
                reason: reason.code().to_string(),
            })
            .get()
    }

    pub fn forward_auth_result(&self, result: &str) {
        if result == "ok" {
            self.forward_auth_ok.inc();
            return;
        }
        self.forward_auth
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Forward-auth answers counted for a result other than `ok`.
    pub fn forward_auth_count(&self, result: &str) -> u64 {
        self.forward_auth
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .get()
    }

    pub fn refresh_result(&self, provider: &str, result: &str) {
        self.refreshes
            .get_or_create(&ProviderResultLabel {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Refreshes counted for a provider and result.
    pub fn refreshes(&self, provider: &str, result: &str) -> u64 {
        self.refreshes
            .get_or_create(&ProviderResultLabel {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .get()
    }

    pub fn reload(&self, result: &str) {
        self.config_reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

impl Exposition for BrokerMetrics {
    fn exposition(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
