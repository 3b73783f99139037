//! The programmed provider set (the broker's input) and its writer.
//!
//! Reconciles update entries in memory; one writer task serializes the set
//! into the broker config Secret, only when its content changed, and drops
//! entries whose IdentityProvider no longer exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::reflector::{self, Store},
};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::{
    api::FIELD_MANAGER,
    config::{
        BROKER_CONFIG_KEY, BROKER_CONFIG_PLAIN_KEY, BrokerConfig, ProgrammedPolicy,
        ProgrammedProvider, SECRET_DATA_LIMIT, Unavailable,
    },
    controller::validate::Programming,
    metrics::Metrics,
};

/// An entry as deflated compact JSON: one allocation of a few hundred
/// bytes. The typed form (a struct of some 800 bytes plus a score of
/// strings and lists, in map nodes sized for eleven of them) cost about
/// four times as much (bench/controller-memory.sh); entries are written
/// out as JSON anyway and read back typed only when a provider fails (its
/// last known good).
#[derive(Clone, PartialEq, Eq)]
struct Json(Box<[u8]>);

impl serde::Serialize for Json {
    /// The entry's JSON as it was, inflated as the config is written.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let bytes = crate::api::packed::inflate_bytes(&self.0).map_err(S::Error::custom)?;
        let text = String::from_utf8(bytes).map_err(S::Error::custom)?;
        serde_json::value::RawValue::from_string(text)
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Json {
    Json(crate::api::packed::deflate(v))
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, j: &Json) -> Option<T> {
    let v = crate::api::packed::inflate(&j.0);
    if v.is_none() {
        error!(key, "a programmed entry does not read back");
    }
    v
}

/// Sets (or with `None` removes) `key`; whether its text changed.
fn put(m: &mut BTreeMap<String, Json>, key: &str, v: Option<Json>) -> bool {
    match (v, m.get_mut(key)) {
        (Some(v), Some(old)) if *old == v => false,
        (Some(v), Some(old)) => {
            *old = v;
            true
        }
        (Some(v), None) => {
            m.insert(key.to_string(), v);
            true
        }
        (None, _) => m.remove(key).is_some(),
    }
}

fn same(a: &BTreeMap<String, Json>, b: &BTreeMap<String, Json>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
}

fn typed<T: serde::de::DeserializeOwned>(m: &BTreeMap<String, Json>) -> BTreeMap<String, T> {
    m.iter()
        .filter_map(|(k, j)| Some((k.clone(), from_json(k, j)?)))
        .collect()
}

fn texts<T: serde::Serialize>(m: &BTreeMap<String, T>) -> BTreeMap<String, Json> {
    m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

/// The set of programmed providers, shared by reconciles and the writer.
#[derive(Default)]
pub struct ProgramSet {
    entries: Mutex<BTreeMap<String, Json>>,
    unavailable: Mutex<BTreeMap<String, Json>>,
    policies: Mutex<BTreeMap<String, Json>>,
    changed: Notify,
    /// Counts changes to the three maps (under their locks), so the writer
    /// knows whether the set changed since its last write without keeping
    /// a copy of it.
    version: std::sync::atomic::AtomicU64,
    /// Woken after every provider reconcile and prune (the policy task
    /// re-decides: a provider may have come, gone or changed whom it admits).
    providers_changed: Notify,
}

impl ProgramSet {
    pub fn get(&self, key: &str) -> Option<ProgrammedProvider> {
        from_json(key, self.lock().get(key)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Json>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one provider's programming; wakes the writer on a change.
    /// Returns whether anything changed.
    pub fn set(&self, key: &str, p: &Programming) -> bool {
        let changed = {
            let entry = p.entry().map(to_json);
            let mut m = self.lock();
            let changed = put(&mut m, key, entry);
            self.bump(changed)
        };
        // Every reconcile: a provider's allowedNamespaces may have changed
        // too (the policy task re-decides, debounced).
        self.providers_changed.notify_one();
        changed
    }

    /// A digest of [`Self::serving`], without copying the keys.
    pub fn serving_digest(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::hash::DefaultHasher::new();
        for key in self.lock().keys() {
            key.hash(&mut h);
        }
        h.finish()
    }

    /// Keys of the providers the broker serves logins through.
    pub fn serving(&self) -> BTreeSet<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock_policies(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Json>> {
        self.policies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the policies in force; wakes the writer on a change.
    pub fn set_policies(&self, policies: BTreeMap<String, ProgrammedPolicy>) -> bool {
        let policies = texts(&policies);
        let mut m = self.lock_policies();
        let changed = !same(&m, &policies);
        if changed {
            *m = policies;
        }
        self.bump(changed)
    }

    /// Counts a change and wakes the writer (called under the lock of the
    /// map that changed); returns `changed`.
    fn bump(&self, changed: bool) -> bool {
        if changed {
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.changed.notify_one();
        }
        changed
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The set as the broker config, gzip-compressed, with the version it
    /// is and the number of providers in it.
    /// An entry that does not inflate (only a bug could cause it) fails
    /// the write, not the writer.
    fn gzip(&self) -> Result<(u64, usize, Vec<u8>), serde_json::Error> {
        let providers = self.lock();
        let unavailable = self.lock_unavailable();
        let policies = self.lock_policies();
        let bytes = crate::config::gzip_parts(&providers, &unavailable, &policies)?;
        Ok((self.version(), providers.len(), bytes))
    }

    /// Waits until a provider was reconciled or pruned.
    pub async fn providers_changed(&self) {
        self.providers_changed.notified().await
    }

    fn lock_unavailable(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Json>> {
        self.unavailable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why a provider is not programmed (or clears it), so the
    /// broker can say "disabled" or "not ready" instead of "unknown".
    pub fn set_unavailable(&self, key: &str, entry: Option<Unavailable>) -> bool {
        let entry = entry.as_ref().map(to_json);
        let mut m = self.lock_unavailable();
        let changed = put(&mut m, key, entry);
        self.bump(changed)
    }

    /// Removes entries whose key is not in `keep`; returns whether any went.
    pub fn retain(&self, keep: &BTreeSet<String>) -> bool {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|k, _| keep.contains(k));
        let pruned = self.bump(m.len() != before);
        drop(m);
        if pruned {
            self.providers_changed.notify_one();
        }
        let mut u = self.lock_unavailable();
        let before_u = u.len();
        u.retain(|k, _| keep.contains(k));
        let pruned_u = self.bump(u.len() != before_u);
        pruned || pruned_u
    }

    /// A copy of the set as the broker config (the writer serializes the
    /// set in place instead).
    pub fn snapshot(&self) -> BrokerConfig {
        BrokerConfig {
            providers: typed(&self.lock()),
            unavailable: typed(&self.lock_unavailable()),
            policies: typed(&self.lock_policies()),
        }
    }

    pub fn replace(&self, config: BrokerConfig) {
        *self.lock() = texts(&config.providers);
        *self.lock_unavailable() = texts(&config.unavailable);
        let mut policies = self.lock_policies();
        *policies = texts(&config.policies);
        self.bump(true);
        drop(policies);
        self.providers_changed.notify_one();
    }

    /// Seeds the set from the broker config Secret, so a controller restart
    /// during a provider outage keeps the last known good entries.
    pub async fn load(&self, client: &Client, ns: &str, name: &str) {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        match api.get_opt(name).await {
            Ok(Some(s)) => {
                if let Some(bytes) = s.data.as_ref().and_then(|d| {
                    d.get(BROKER_CONFIG_KEY)
                        .or_else(|| d.get(BROKER_CONFIG_PLAIN_KEY))
                }) {
                    match BrokerConfig::decode(&bytes.0) {
                        Ok(cfg) => {
                            info!(
                                providers = cfg.providers.len(),
                                "loaded the broker config as last known good"
                            );
                            self.replace(cfg);
                        }
                        Err(e) => {
                            warn!(error = %e, "broker config Secret {ns}/{name} is not valid; starting empty")
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot read broker config Secret {ns}/{name}; starting empty")
            }
        }
    }

    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// The server-side apply body for the broker config Secret.
pub fn config_secret(ns: &str, name: &str, config: &BrokerConfig) -> Secret {
    config_secret_from(ns, name, config.to_gzip())
}

/// Fills the broker's session keys Secret when it holds no keys: one
/// random key of 64 URL-safe characters (384 bits). Done here, not in the
/// Helm template, because a template renders anew on every `helm template`
/// (Argo CD's way of installing a chart) and new keys log everyone out.
/// Keys already there are never touched (rotation is the operator's
/// business). Retries every 10 s until the Secret exists and has keys.
pub async fn ensure_session_keys(client: Client, ns: String, name: String) {
    use crate::broker::source::SESSION_KEYS_KEY;
    ensure_key(client, ns, name, SESSION_KEYS_KEY, "session keys").await;
}

/// The key record values of verified domains are made with, in Secret
/// `name` (key `domain-key`): generated once as the session keys are, then
/// read; returns it. A new key changes every record value (every domain
/// goes back to Pending until its record is updated), so it is never
/// replaced here.
pub async fn ensure_domain_key(client: Client, ns: String, name: String) -> Vec<u8> {
    ensure_key(client, ns, name, DOMAIN_KEY_KEY, "domain verification key")
        .await
        .into_bytes()
}

/// The data key of the domain verification key.
pub const DOMAIN_KEY_KEY: &str = "domain-key";

/// Reads `data_key` of Secret `ns/name`, first writing a random value
/// there when it has none; retries every 10 s until it can.
async fn ensure_key(
    client: Client,
    ns: String,
    name: String,
    data_key: &str,
    what: &str,
) -> String {
    let api: Api<Secret> = Api::namespaced(client, &ns);
    loop {
        match api.get_opt(&name).await {
            Ok(Some(s)) => {
                let present = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(data_key))
                    .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
                    .filter(|v| !v.is_empty());
                if let Some(value) = present {
                    info!(secret = %name, "{what} present");
                    return value;
                }
                let key = format!("{}\n", crate::broker::provider::random_token(48));
                let mut data = BTreeMap::new();
                data.insert(data_key.to_string(), ByteString(key.into_bytes()));
                let value = json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": ns},
                    "data": data,
                });
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                match api.patch(&name, &pp, &Patch::Apply(value)).await {
                    // Read back on the next turn: another replica may have
                    // written first, and what is stored is what counts.
                    Ok(_) => {
                        info!(secret = %name, "generated the {what}");
                        continue;
                    }
                    Err(e) => {
                        warn!(secret = %name, error = %e, "cannot write the {what}; retrying")
                    }
                }
            }
            Ok(None) => {
                warn!(secret = %name, "the {what} Secret does not exist yet (the chart creates it); retrying")
            }
            Err(e) => {
                warn!(secret = %name, error = %e, "cannot read the {what} Secret; retrying")
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

fn config_secret_from(ns: &str, name: &str, gzipped: Vec<u8>) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(BROKER_CONFIG_KEY.to_string(), ByteString(gzipped));
    let value = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            // Only what the chart sets to the same value: a label the chart
            // sets differently (app.kubernetes.io/managed-by: Helm), taken
            // over by this forced apply, made every `helm upgrade` (Helm 4
            // applies server-side) fail with a field-manager conflict.
            "labels": {"app.kubernetes.io/component": "broker-config"},
        },
        "type": "Opaque",
        "data": data,
    });
    serde_json::from_value(value).expect("valid Secret")
}

/// Waits until the store has its first complete list.
///
/// `Store::wait_until_ready` wakes only the last of several concurrent
/// waiters (kube-runtime 5's `DelayedInit` keeps one waker in a oneshot
/// channel), and the controller's own applier waits on the same store: a
/// writer that only awaited it once was never woken, and the broker config
/// Secret was never written. Found by the real API server tests; the mock
/// tests build their store by hand and have no second waiter. Polling again
/// every 200 ms sees the memoized result once anyone was woken.
pub async fn wait_until_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(ready) =
            tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await
        {
            return ready;
        }
    }
}

/// Writes the broker config whenever it changes (debounced), and prunes
/// entries of deleted providers.
pub async fn run_writer(
    client: Client,
    programs: Arc<ProgramSet>,
    store: Store<super::cache::CachedProvider>,
    ns: String,
    name: String,
    metrics: Arc<Metrics>,
) {
    let api: Api<Secret> = Api::namespaced(client, &ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if wait_until_ready(&store).await.is_err() {
        return;
    }
    // The version of the set last written (or found too large to write).
    let mut last_written: Option<u64> = None;
    loop {
        let keep: BTreeSet<String> = store.state().iter().map(|i| i.key()).collect();
        programs.retain(&keep);
        if last_written != Some(programs.version()) {
            let (version, providers, gzipped) = match programs.gzip() {
                Ok(g) => g,
                Err(e) => {
                    error!(error = %e, "cannot serialize the broker config; the broker keeps the last one written");
                    let _ = tokio::time::timeout(Duration::from_secs(10), programs.changed()).await;
                    continue;
                }
            };
            if gzipped.len() > SECRET_DATA_LIMIT {
                error!(
                    providers,
                    bytes = gzipped.len(),
                    limit = SECRET_DATA_LIMIT,
                    "the broker config does not fit in one Secret even compressed; the broker keeps the last one written (split providers across operator installations, or shorten them)"
                );
                metrics.broker_config_too_large.inc();
                // Not written, but not retried until the config changes.
                last_written = Some(version);
                let _ = tokio::time::timeout(Duration::from_secs(10), programs.changed()).await;
                continue;
            }
            match api
                .patch(
                    &name,
                    &pp,
                    &Patch::Apply(config_secret_from(&ns, &name, gzipped)),
                )
                .await
            {
                Ok(_) => {
                    info!(providers, "wrote broker config");
                    metrics.broker_config_writes.inc();
                    last_written = Some(version);
                    // The compressed config and the request, built whole.
                    crate::memory::release_freed();
                }
                Err(e) => {
                    warn!(error = %e, "cannot write broker config Secret {ns}/{name}; retrying")
                }
            }
        }
        // Wake on a change, or periodically to prune deleted providers and retry.
        let _ = tokio::time::timeout(Duration::from_secs(10), programs.changed()).await;
        // Debounce bursts (many providers reconciled together).
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::{reflector, watcher};

    use crate::api::IdentityProvider;

    /// Entries kept as JSON text read back as they were set; setting the
    /// same entry again is no change (no write), a different one is; the
    /// set as a broker config is the typed entries.
    #[test]
    fn entries_kept_as_text_round_trip_and_count_only_changes() {
        use crate::{
            config::ProgrammedProvider,
            controller::{program::ProgramSet, validate::Programming},
        };
        let entry = |client: &str| ProgrammedProvider {
            client_id: client.into(),
            authorize_params: [("prompt".to_string(), "login".to_string())].into(),
            id_token_algs: vec!["RS256".into()],
            allowed_groups: vec!["staff".into()],
            ..ProgrammedProvider::example("https://idp.example.com")
        };
        let set = ProgramSet::default();
        let a = entry("c1");
        assert!(set.set("team/corp", &Programming::Program(Box::new(a.clone()))));
        assert_eq!(set.get("team/corp"), Some(a.clone()));
        let version = set.version();
        assert!(!set.set("team/corp", &Programming::Program(Box::new(a.clone()))));
        assert_eq!(set.version(), version, "the same entry again is no change");
        let b = entry("c2");
        assert!(set.set(
            "team/corp",
            &Programming::KeepLastKnownGood(Box::new(b.clone()))
        ));
        assert_eq!(set.get("team/corp"), Some(b.clone()));
        assert_eq!(set.snapshot().providers.get("team/corp"), Some(&b));
        let policy: crate::config::ProgrammedPolicy = serde_json::from_value(serde_json::json!({
            "namespace": "team", "name": "app", "generation": 2, "hosts": ["app.example.com"],
            "providers": ["team/corp"], "rules": {"allow": [{"groups": ["staff"]}]},
        }))
        .unwrap();
        let policies = std::collections::BTreeMap::from([("team/app".to_string(), policy)]);
        assert!(set.set_policies(policies.clone()));
        assert!(
            !set.set_policies(policies.clone()),
            "the same policies again"
        );
        // What the writer sends is the typed set, as JSON.
        let written = crate::config::BrokerConfig::decode(&set.gzip().unwrap().2).unwrap();
        assert_eq!(written.providers.get("team/corp"), Some(&b));
        assert_eq!(written.policies, policies);
        assert_eq!(written, set.snapshot());
        assert!(set.set("team/corp", &Programming::Remove));
        assert_eq!(set.get("team/corp"), None);
        assert!(!set.set("team/corp", &Programming::Remove));
    }

    /// An entry that does not inflate fails the write (logged), not the
    /// writer task (it was an `expect`).
    #[test]
    fn an_entry_that_does_not_read_back_fails_the_write_not_the_writer() {
        let set = super::ProgramSet::default();
        set.lock().insert(
            "team/corp".into(),
            super::Json(vec![1, 2, 3].into_boxed_slice()),
        );
        assert!(set.gzip().is_err());
        assert!(set.get("team/corp").is_none());
    }

    /// Two tasks wait for one store, as the broker config writer and the
    /// controller's applier do: both get through once the store is ready.
    #[tokio::test]
    async fn every_waiter_sees_the_store_ready() {
        let (reader, mut writer) = reflector::store::<IdentityProvider>();
        let ours = tokio::spawn({
            let reader = reader.clone();
            async move { super::wait_until_ready(&reader).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A second waiter registered after ours (the applier, in production).
        let theirs = tokio::spawn(async move { reader.wait_until_ready().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let within = |h| tokio::time::timeout(Duration::from_secs(2), h);
        assert!(within(theirs).await.unwrap().unwrap().is_ok());
        assert!(
            within(ours)
                .await
                .expect("our waiter was woken")
                .unwrap()
                .is_ok()
        );
    }
}
