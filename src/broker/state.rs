//! The broker's state: settings fixed at start, the provider table and the
//! session key ring (each behind a `watch` channel, swapped in one step on
//! a reload; requests in flight finish with what they started with), the
//! clock, metrics, and the lookups handlers share (which provider, which
//! redirect target).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use url::Url;

use super::{
    cookies::CookiePolicy,
    error::{Reason, Refusal},
    metrics::BrokerMetrics,
    provider::{HttpClients, ProviderRuntime},
    redirect::RedirectPolicy,
    refresh::Refresher,
    seal::KeyRing,
    tokens::Needs,
};
use crate::{
    api::conditions::reasons,
    api::policy::ForwardToken,
    clock::{Clock, SystemClock},
    config::{BrokerConfig, ProgrammedPolicy, Unavailable},
    oidc::discovery::HttpSettings,
    policy::route::{HostPattern, check_path_prefix, normalize_host, path_matches},
};

/// Broker settings that do not change at run time.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// The public base URL; redirect URIs hang off it.
    pub public_url: Url,
    /// `Domain` of the session cookie (for forward-auth across subdomains).
    pub cookie_domain: Option<String>,
    /// Session lifetime in seconds (absolute; refresh does not extend it).
    pub session_lifetime: i64,
    /// Re-validate a session at the IdP with its refresh token once its
    /// last validation is this many seconds old; 0 = off (sessions then
    /// last their lifetime without asking the IdP again).
    pub session_refresh: i64,
    pub redirect: RedirectPolicy,
    pub http: HttpSettings,
    /// What `/oauth/auth` (no policy named) answers.
    pub unscoped: Unscoped,
}

/// What forward-auth at `/oauth/auth`, without a policy in the path,
/// admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Unscoped {
    /// Nobody (403 naming the per-policy URL): on a broker several
    /// providers share, a session from any of them must not open every app.
    #[default]
    Deny,
    /// What the AccessPolicy `namespace/name` admits.
    Policy(String),
    /// Any programmed provider's session whose provider rules admit it (the
    /// behaviour before access policies; safe only with one provider, or
    /// providers all trusted for every app).
    AnyProvider,
}

impl BrokerSettings {
    /// An absolute URL on the broker.
    pub fn public(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.as_str().trim_end_matches('/'))
    }

    /// How long a refresh result is handed to requests still carrying the
    /// old cookie: the refresh interval, between 1 and 5 minutes.
    fn refresh_memory(&self) -> Duration {
        Duration::from_secs(self.session_refresh.clamp(60, 300) as u64)
    }
}

/// The providers serving logins right now, and the access policies in
/// force.
#[derive(Default)]
pub struct ProviderTable {
    pub providers: BTreeMap<String, Arc<ProviderRuntime>>,
    pub unavailable: BTreeMap<String, Unavailable>,
    pub policies: BTreeMap<String, Arc<PolicyRuntime>>,
    /// Per provider, the tokens some policy of it forwards (absent: none).
    pub token_needs: BTreeMap<String, Needs>,
    /// Per provider, the claims some policy's rules look at.
    pub claim_needs: BTreeMap<String, BTreeSet<String>>,
    /// Each verified email domain and the namespace whose provider
    /// verified it: only that namespace's providers vouch for its
    /// addresses.
    pub domain_owners: BTreeMap<String, String>,
}

impl ProviderTable {
    /// The tokens to carry for `provider`'s sessions.
    pub fn needs(&self, provider: &str) -> Needs {
        self.token_needs.get(provider).copied().unwrap_or_default()
    }

    /// The claims `provider`'s sessions keep for policy rules.
    pub fn claims_for(&self, provider: &str) -> BTreeSet<String> {
        self.claim_needs.get(provider).cloned().unwrap_or_default()
    }
}

/// An access policy as the broker enforces it: its entry with the host
/// patterns parsed.
#[derive(Debug)]
pub struct PolicyRuntime {
    pub cfg: ProgrammedPolicy,
    pub hosts: Vec<HostPattern>,
    /// The claims its rules name (allow and deny).
    pub claim_names: BTreeSet<String>,
}

impl PolicyRuntime {
    pub fn new(cfg: ProgrammedPolicy) -> Result<Self, String> {
        let hosts = cfg
            .hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err("no hosts".into());
        }
        for p in &cfg.paths {
            check_path_prefix(p)?;
        }
        let claim_names = cfg
            .rules
            .allow
            .iter()
            .chain(&cfg.rules.deny)
            .flat_map(|r| r.claims.iter().map(|c| c.name.clone()))
            .collect();
        Ok(Self {
            cfg,
            hosts,
            claim_names,
        })
    }

    /// Whether the policy covers `host` (as the proxy sent it).
    pub fn covers_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.iter().any(|h| h.matches(&host))
    }

    /// Whether the policy covers `path` (no paths: every path).
    pub fn covers_path(&self, path: &str) -> bool {
        self.cfg.paths.is_empty() || self.cfg.paths.iter().any(|p| path_matches(p, path))
    }
}

/// The broker: settings, the swappable provider table and key ring, the
/// clock and metrics.
pub struct Broker {
    pub settings: BrokerSettings,
    pub cookies: CookiePolicy,
    table: watch::Sender<Arc<ProviderTable>>,
    keys: watch::Sender<Option<Arc<KeyRing>>>,
    config_loaded: AtomicBool,
    pub metrics: Arc<BrokerMetrics>,
    pub(super) refresher: Refresher,
    /// Login states whose callback already ran here.
    pub(super) used_states: super::replay::UsedStates,
    clock: Arc<dyn Clock>,
}

/// What a config load changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Providers whose entry could not be used (with why).
    pub rejected: Vec<(String, String)>,
    /// Policies whose entry could not be used (with why): they admit
    /// nobody.
    pub rejected_policies: Vec<(String, String)>,
}

impl Broker {
    pub fn new(settings: BrokerSettings) -> Arc<Self> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// A broker whose sessions, logins and token checks use `clock`.
    pub fn with_clock(settings: BrokerSettings, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            cookies: CookiePolicy {
                secure: settings.public_url.scheme() == "https",
                domain: settings.cookie_domain.clone(),
            },
            table: watch::Sender::new(Arc::new(ProviderTable::default())),
            keys: watch::Sender::new(None),
            config_loaded: AtomicBool::new(false),
            metrics: Arc::new(BrokerMetrics::new()),
            refresher: Refresher::new(settings.refresh_memory()),
            used_states: super::replay::UsedStates::new(super::replay::USED_STATES_CAP),
            clock,
            settings,
        })
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.clock.unix()
    }

    pub fn table(&self) -> Arc<ProviderTable> {
        self.table.borrow().clone()
    }

    /// The session key ring, once one was installed.
    pub fn ring(&self) -> Option<Arc<KeyRing>> {
        self.keys.borrow().clone()
    }

    /// The key ring, or the refusal a login gets before keys arrive.
    pub fn ring_or_refuse(&self) -> Result<Arc<KeyRing>, Refusal> {
        self.ring().ok_or_else(|| {
            Refusal::new(
                Reason::ProviderNotReady,
                "the broker has no session keys yet",
            )
        })
    }

    /// Installs a new session key ring (first key seals, all open).
    pub fn set_keys(&self, ring: KeyRing) {
        self.keys.send_replace(Some(Arc::new(ring)));
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.keys.borrow().is_some() && self.config_loaded.load(Ordering::Relaxed);
        self.metrics.set_ready(ready);
    }

    /// Builds a provider table from `config` and swaps it in. Unchanged
    /// providers keep their runtime (and JWKS cache); providers whose
    /// signing-key source is unchanged keep their JWKS cache.
    pub fn apply_config(&self, config: &BrokerConfig) -> Applied {
        let old = self.table();
        let mut applied = Applied::default();
        let mut providers = BTreeMap::new();
        let mut unavailable = config.unavailable.clone();
        let mut clients = HttpClients::default();
        for p in old.providers.values() {
            clients.keep(p);
        }
        for (key, cfg) in &config.providers {
            let previous = old.providers.get(key);
            if let Some(p) = previous
                && &p.cfg == cfg
            {
                providers.insert(key.clone(), p.clone());
                continue;
            }
            match ProviderRuntime::new(
                cfg.clone(),
                &self.settings.http,
                previous.map(|p| &**p),
                &mut clients,
            ) {
                Ok(rt) => {
                    if previous.is_some() {
                        applied.changed.push(key.clone());
                    } else {
                        applied.added.push(key.clone());
                    }
                    providers.insert(key.clone(), Arc::new(rt));
                }
                Err(why) => {
                    unavailable.insert(
                        key.clone(),
                        Unavailable {
                            display_name: cfg.display_name.clone(),
                            disabled: false,
                            reason: reasons::INVALID_TLS_CONFIG.into(),
                            message: why.clone(),
                        },
                    );
                    applied.rejected.push((key.clone(), why));
                }
            }
        }
        applied.removed = old
            .providers
            .keys()
            .filter(|k| !providers.contains_key(*k))
            .cloned()
            .collect();
        let mut policies = BTreeMap::new();
        for (key, cfg) in &config.policies {
            if let Some(p) = old.policies.get(key)
                && &p.cfg == cfg
            {
                policies.insert(key.clone(), p.clone());
                continue;
            }
            match PolicyRuntime::new(cfg.clone()) {
                Ok(p) => {
                    policies.insert(key.clone(), Arc::new(p));
                }
                Err(why) => applied.rejected_policies.push((key.clone(), why)),
            }
        }
        // Per provider, what its sessions must carry for its policies.
        let mut token_needs: BTreeMap<String, Needs> = BTreeMap::new();
        let mut claim_needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in policies.values() {
            let kind = p.cfg.forward.token;
            for key in &p.cfg.providers {
                if !p.claim_names.is_empty() {
                    claim_needs
                        .entry(key.clone())
                        .or_default()
                        .extend(p.claim_names.iter().cloned());
                }
                if kind != ForwardToken::None {
                    let n = token_needs.entry(key.clone()).or_default();
                    n.access |= kind == ForwardToken::AccessToken;
                    n.id |= kind == ForwardToken::IdToken;
                }
            }
        }
        self.metrics.providers.set(providers.len() as i64);
        // Two namespaces both verified (for the few minutes until the
        // later one's next check says ClaimedElsewhere): the first by key,
        // as home-realm discovery picks.
        let mut domain_owners = BTreeMap::new();
        for p in providers.values() {
            for d in &p.cfg.verified_domains {
                domain_owners
                    .entry(d.clone())
                    .or_insert_with(|| p.cfg.namespace.clone());
            }
        }
        self.table.send_replace(Arc::new(ProviderTable {
            providers,
            unavailable,
            policies,
            token_needs,
            claim_needs,
            domain_owners,
        }));
        self.config_loaded.store(true, Ordering::Relaxed);
        self.update_ready();
        self.metrics.reload("applied");
        applied
    }

    /// Checks where to send the browser after login: a local path, the
    /// broker's own origin, or an allowed redirect domain.
    pub fn check_rd(&self, rd: Option<&str>) -> Result<String, Refusal> {
        match rd {
            None | Some("") => Ok("/".to_string()),
            Some(rd) => {
                if let Ok(u) = Url::parse(rd) {
                    // Absolute URLs on the broker's own origin are fine.
                    if u.origin() == self.settings.public_url.origin() {
                        return Ok(rd.to_string());
                    }
                }
                self.settings.redirect.check(rd).ok_or_else(|| {
                    Refusal::new(
                        Reason::InvalidRedirect,
                        format!("{rd:?} is not an allowed redirect target (local paths and the allowed redirect domains only)"),
                    )
                })
            }
        }
    }
}

impl ProviderTable {
    /// Resolves `provider` (`ns/name`, or a bare name that is unique) to a
    /// serving provider, or the refusal that says why not.
    pub fn resolve(&self, requested: &str) -> Result<Arc<ProviderRuntime>, Refusal> {
        let key = if requested.contains('/') {
            requested.to_string()
        } else {
            let matches: Vec<&String> = self
                .providers
                .keys()
                .chain(self.unavailable.keys())
                .filter(|k| k.rsplit_once('/').is_some_and(|(_, n)| n == requested))
                .collect();
            match matches.as_slice() {
                [one] => (*one).clone(),
                [] => requested.to_string(),
                _ => {
                    return Err(Refusal::new(
                        Reason::UnknownProvider,
                        format!("several providers are named {requested:?}; use namespace/name"),
                    ));
                }
            }
        };
        if let Some(p) = self.providers.get(&key) {
            return Ok(p.clone());
        }
        if let Some(u) = self.unavailable.get(&key) {
            return Err(if u.disabled {
                Refusal::new(
                    Reason::ProviderDisabled,
                    format!(
                        "{} ({key}) is disabled by its administrator",
                        u.display_name
                    ),
                )
            } else {
                Refusal::new(
                    Reason::ProviderNotReady,
                    format!(
                        "{} ({key}) is not ready ({}); its administrator sees why in the IdentityProvider's status",
                        u.display_name, u.reason
                    ),
                )
                .with_detail(u.message.clone())
            });
        }
        Err(Refusal::new(
            Reason::UnknownProvider,
            format!("no identity provider {key:?} is configured"),
        ))
    }
}
