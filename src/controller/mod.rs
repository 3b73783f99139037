//! The IdentityProvider controller: a thin async wrapper (tracing span,
//! metrics, fetch inputs, write outputs) around the pure [`validate`] core.

pub mod access;
pub mod cache;
pub mod domains;
pub mod events;
pub mod leader;
pub mod program;
pub mod status;
pub mod validate;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    runtime::{Controller, WatchStreamExt as _, controller::Action, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::{
    Error,
    api::packed::Packable as _,
    api::{FIELD_MANAGER, IdentityProvider, conditions::phases},
    controller::{
        cache::CachedProvider,
        program::ProgramSet,
        validate::{Env, Facts, SecretContent, SecretData, referenced_secrets, validate_with},
    },
    metrics::Metrics,
    oidc::discovery::DiscoveryCache,
};

/// Timing policy: periodic re-validation of healthy providers and
/// per-object exponential backoff for failing ones.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How often a Ready provider is re-validated (so a JWKS or issuer that
    /// breaks later is noticed).
    pub revalidate: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            revalidate: Duration::from_secs(300),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl Timing {
    /// The delay after the `attempt`-th consecutive failure (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Per-object failure counts for exponential backoff.
#[derive(Default)]
pub struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    /// Records a failure and returns the attempt number.
    pub fn fail(&self, key: &str) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }
    pub fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Forgets providers that no longer exist (a deleted provider never
    /// reconciles again to reset its count).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reconciles run at once.
pub const RECONCILE_CONCURRENCY: u16 = 16;

/// How often the controller forgets what deleted providers left behind,
/// and how long a discovery result nobody asked for again is kept.
pub const TIDY_EVERY: Duration = Duration::from_secs(60);
pub const DISCOVERY_UNUSED_FOR: Duration = Duration::from_secs(900);

/// Drops the backoff counts of deleted providers and the discovery results
/// of issuers (or CA bundles) no provider asked about lately, so memory
/// follows the providers that exist, not every one that ever did.
pub fn tidy(ctx: &Context, live: &std::collections::HashSet<String>, unused_for: Duration) {
    ctx.backoffs.retain(live);
    ctx.discovery.prune(unused_for);
}

pub use crate::clock::{Clock, SystemClock};

/// Everything reconcile needs, built once.
pub struct Context {
    pub client: Client,
    pub events: events::Events,
    pub metrics: Arc<Metrics>,
    pub discovery: Arc<DiscoveryCache>,
    pub programs: Arc<ProgramSet>,
    pub env: Env,
    pub timing: Timing,
    pub backoffs: Backoffs,
    pub clock: Box<dyn Clock>,
    /// Most providers programmed per namespace (0: no limit), and the
    /// controller's view of all providers to rank them by age.
    pub max_per_namespace: usize,
    pub providers: std::sync::OnceLock<kube::runtime::reflector::Store<CachedProvider>>,
    /// Verifies the domains providers list (key and DNS resolver).
    pub domains: domains::Verifier,
}

/// `idp`'s place by age among the providers of its namespace in `store`
/// (0 = oldest; ties by name).
pub fn position_in_namespace(
    store: &kube::runtime::reflector::Store<CachedProvider>,
    idp: &IdentityProvider,
) -> usize {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    fn age(m: &ObjectMeta) -> (Option<&jiff::Timestamp>, &str) {
        (
            m.creation_timestamp.as_ref().map(|t| &t.0),
            m.name.as_deref().unwrap_or_default(),
        )
    }
    let mine = age(&idp.metadata);
    store
        .state()
        .iter()
        .filter(|i| i.metadata.namespace == idp.metadata.namespace)
        .filter(|i| age(&i.metadata) < mine)
        .count()
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        discovery: Arc<DiscoveryCache>,
        programs: Arc<ProgramSet>,
        env: Env,
    ) -> Self {
        Self {
            events: events::Events::new(
                client.clone(),
                "sso-operator",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            metrics,
            discovery,
            programs,
            env,
            timing: Timing::default(),
            backoffs: Backoffs::default(),
            clock: Box::new(SystemClock),
            max_per_namespace: 0,
            providers: std::sync::OnceLock::new(),
            domains: domains::Verifier::new(crate::domains::dns::Settings::default()),
        }
    }
}

/// Reads the referenced Secrets; a Secret that does not exist is left out.
async fn fetch_secrets(client: &Client, ns: &str, names: &[String]) -> Result<SecretData, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = SecretData::new();
    for name in names {
        if let Some(secret) = api.get_opt(name).await? {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            // stringData is write-only in the API, but honour it if a client left it.
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            let type_ = secret.type_.unwrap_or_else(|| "Opaque".into());
            out.insert(name.clone(), SecretContent { type_, data });
        }
    }
    Ok(out)
}

/// The status patch: server-side apply of `status` only, with apiVersion
/// and kind, under the controller's field manager.
fn status_patch<K: Resource<DynamicType = ()>>(
    status: &impl serde::Serialize,
) -> serde_json::Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

/// Writes `obj`'s status and announces each condition that changed from
/// `old` to `new` with an Event. `Ok(false)` when the object is gone (it
/// was deleted while the controller worked: nothing left to report on).
pub(crate) async fn write_status<K>(
    client: &Client,
    events: &events::Events,
    obj: &K,
    status: &impl serde::Serialize,
    old: &[crate::api::Condition],
    new: &[crate::api::Condition],
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(
            &obj.name_any(),
            &pp,
            &Patch::Apply(status_patch::<K>(status)),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(e),
    }
    publish_transitions(events, &obj.object_ref(&()), old, new).await;
    Ok(true)
}

/// What the watch caches drop from every object before keeping it:
/// managedFields and kubectl's last-applied-configuration annotation (a
/// copy of the whole object as last applied: with `kubectl apply`, often
/// the largest part of it). Nothing here reads either.
pub(crate) fn slim_for_cache<K: Resource>(o: &mut K) {
    slim_meta(o.meta_mut());
}

/// [`slim_for_cache`] of an object's metadata.
pub(crate) fn slim_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The API for a kind the controller watches: one namespace's, or all.
pub(crate) fn watched_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles one IdentityProvider, as the watch cache keeps it.
pub async fn reconcile_cached(
    cached: Arc<CachedProvider>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let idp = cached.expand()?;
    reconcile(Arc::new(idp), ctx).await
}

/// Errors of [`reconcile_cached`]: back off per object.
pub fn error_policy_cached(cached: Arc<CachedProvider>, err: &Error, ctx: Arc<Context>) -> Action {
    backoff_after(&cached.metadata, err, &ctx)
}

/// Reconciles one IdentityProvider.
pub async fn reconcile(idp: Arc<IdentityProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = idp.namespace().unwrap_or_default();
    let name = idp.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    async move {
        let timer = ctx.metrics.reconcile_timer();
        let key = idp.key();
        let generation = idp.metadata.generation.unwrap_or_default();

        let secrets = fetch_secrets(&ctx.client, &ns, &referenced_secrets(&idp.spec)).await?;
        let facts = Facts::new(&idp.spec, &ns, &secrets);
        let discovery = match facts.discovery_request() {
            Some(req) => Some(ctx.discovery.get(req).await),
            None => None,
        };
        let previous = ctx.programs.get(&key);
        let mut v = validate_with(&idp, &facts, discovery.as_deref(), previous.as_ref(), &ctx.env);
        // Ranking walks every cached provider: only when a limit is set.
        if ctx.max_per_namespace > 0
            && let Some(store) = ctx.providers.get()
        {
            v.limit_per_namespace(&ns, position_in_namespace(store, &idp), ctx.max_per_namespace);
        }
        let now = ctx.clock.now();
        let others = match ctx.providers.get() {
            Some(store) if !idp.spec.domains.is_empty() => store.state(),
            _ => Vec::new(),
        };
        let domains = ctx.domains.verify(&idp, facts.client_id(), &others, now).await;
        drop(others);
        if !domains.is_empty() {
            let (ok, reason, message) = crate::domains::summary(&domains);
            use crate::api::conditions::Status;
            let status = if ok { Status::True } else { Status::False };
            v.conditions.push(validate::CondResult::new(
                crate::api::conditions::types::DOMAINS_VERIFIED,
                status,
                reason,
                message,
            ));
        }
        v.programming
            .set_domains(&domains, &idp.spec.issuer, facts.client_id());
        let recheck = domains::next_check(&domains, now);
        ctx.programs.set(&key, &v.programming);
        ctx.programs
            .set_unavailable(&key, validate::unavailable_entry(&idp, &v));

        // Cached packed (cache::Cached): read for this one reconcile; the
        // comparison is with the cached digest.
        let cached = idp.status.as_ref();
        let old = cached.map(|s| s.unpacked());
        let old = old.as_deref();
        let mut new = status::build_status(old, &v, generation, now);
        new.domains = domains;
        if status::needs_write(cached, &new) {
            let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
            let written =
                write_status(&ctx.client, &ctx.events, &*idp, &new, old_conditions, &new.conditions)
                    .await?;
            if !written {
                return Ok(Action::await_change());
            }
        }
        timer.observe();

        let action = match v.phase {
            phases::READY | phases::DISABLED => {
                ctx.backoffs.reset(&key);
                Action::requeue(recheck.map_or(ctx.timing.revalidate, |r| r.min(ctx.timing.revalidate)))
            }
            _ => {
                let bad = v.conditions.iter().find(|c| !c.is_true()).map_or("Unknown", |c| c.reason.as_str());
                ctx.metrics.reconcile_failed(bad);
                let attempt = ctx.backoffs.fail(&key);
                let delay = ctx.timing.backoff(attempt);
                info!(phase = v.phase, reason = bad, attempt, retry_in = ?delay, "provider not ready");
                Action::requeue(recheck.map_or(delay, |r| r.min(delay)))
            }
        };
        Ok(action)
    }
    .instrument(span)
    .await
}

/// One Event per condition transition from `old` to `new` (Warning when
/// the condition is not True), on `object`.
pub(crate) async fn publish_transitions(
    events: &events::Events,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    old: &[crate::api::Condition],
    new: &[crate::api::Condition],
) {
    for t in status::transitions(old, new) {
        let note = truncate(&format!("{} is {}: {}", t.type_, t.status, t.message), 1000);
        let n = events::Note {
            warning: t.warning,
            action: &t.type_,
            reason: &t.reason,
            note: &note,
        };
        if let Err(e) = events.publish(object, &n).await {
            warn!(error = %e, "could not publish event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Errors talking to the API: back off per object.
pub fn error_policy(idp: Arc<IdentityProvider>, err: &Error, ctx: Arc<Context>) -> Action {
    backoff_after(&idp.metadata, err, &ctx)
}

fn backoff_after(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    err: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_failed(err.category());
    let attempt = ctx.backoffs.fail(&crate::api::key_of(meta));
    let delay = ctx.timing.backoff(attempt);
    let (namespace, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    warn!(namespace, name, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The providers in `idps` that reference Secret `ns/name`.
pub fn providers_for_secret<'a>(
    idps: impl IntoIterator<Item = &'a CachedProvider>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<CachedProvider>> {
    idps.into_iter()
        .filter(|idp| idp.metadata.namespace.as_deref() == Some(ns))
        .filter(|idp| idp.index.secrets.iter().any(|s| s == name))
        .map(ObjectRef::from)
        .collect()
}

/// Controller settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the broker config Secret (the operator's namespace).
    pub namespace: String,
    pub broker_config_secret: String,
    /// Only watch IdentityProviders in this namespace; all when `None`.
    pub watch_namespace: Option<String>,
    /// Label selector narrowing the Secret metadata watch.
    pub secret_label_selector: Option<String>,
    /// Watch Secrets only in these namespaces (when the controller may read
    /// Secrets only there); all namespaces when empty.
    pub secret_namespaces: Vec<String>,
    /// Base of AccessPolicy auth URLs (`<base>/<namespace>/<name>`).
    pub auth_base: String,
    /// The broker's session keys Secret (in `namespace`), filled with a
    /// generated key when it has none; `None` when keys are brought.
    pub session_keys_secret: Option<String>,
    /// The domain verification key's Secret (in `namespace`), generated
    /// when empty; `None`: domains wait (KeyNotReady) unless the key is
    /// set otherwise (`dev`).
    pub domain_key_secret: Option<String>,
}

/// Runs the controller until shutdown.
pub async fn run(client: Client, ctx: Arc<Context>, settings: Settings) -> Result<(), Error> {
    let idps: Api<IdentityProvider> = watched_api(&client, settings.watch_namespace.as_deref());
    // Secret changes, metadata only (values never enter the cache), mapped
    // to the providers that reference them.
    // Where Secrets are watched: the namespaces the controller may read
    // Secrets in, when narrowed (a cluster-wide watch would be refused).
    let secret_apis: Vec<Api<PartialObjectMeta<Secret>>> = match (
        &settings.watch_namespace,
        settings.secret_namespaces.as_slice(),
    ) {
        (Some(ns), _) => vec![Api::namespaced(client.clone(), ns)],
        (None, []) => vec![Api::all(client.clone())],
        (None, namespaces) => namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
    };
    // Fail fast with a clear message when the CRD is not installed.
    if let Err(e) = idps.list(&kube::api::ListParams::default().limit(1)).await {
        return Err(Error::Startup(format!(
            "cannot list IdentityProviders ({e}); is the CRD installed (sso-operator crd | kubectl apply -f -)?"
        )));
    }

    // Last known good across restarts: start from what the broker serves.
    ctx.programs
        .load(&client, &settings.namespace, &settings.broker_config_secret)
        .await;

    let mut secret_config = watcher::Config::default();
    if let Some(sel) = &settings.secret_label_selector {
        secret_config = secret_config.labels(sel);
    }
    // The providers as the controller keeps them: without managedFields,
    // which nothing here reads and which made each cached object several
    // kilobytes larger (bench/controller-memory.sh).
    let (reader, writer) = kube::runtime::reflector::store();
    let trigger = watcher(idps, watcher::Config::default())
        .default_backoff()
        .map_ok(cache::cached)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(trigger, reader.clone());
    let _ = ctx.providers.set(reader.clone());
    let store_for_secrets = reader.clone();

    let domain_key_task = settings.domain_key_secret.clone().map(|name| {
        let (client, ns, ctx) = (client.clone(), settings.namespace.clone(), ctx.clone());
        tokio::spawn(async move {
            let key = program::ensure_domain_key(client, ns, name).await;
            let _ = ctx.domains.key.set(key);
        })
    });
    let keys_task = settings.session_keys_secret.clone().map(|name| {
        tokio::spawn(program::ensure_session_keys(
            client.clone(),
            settings.namespace.clone(),
            name,
        ))
    });

    let writer_task = tokio::spawn(program::run_writer(
        client.clone(),
        ctx.programs.clone(),
        reader.clone(),
        settings.namespace.clone(),
        settings.broker_config_secret.clone(),
        ctx.metrics.clone(),
    ));

    let tidy_task = tokio::spawn({
        let (ctx, reader) = (ctx.clone(), reader.clone());
        async move {
            let mut every = tokio::time::interval(TIDY_EVERY);
            loop {
                every.tick().await;
                let live = reader.state().iter().map(|i| i.key()).collect();
                tidy(&ctx, &live, DISCOVERY_UNUSED_FOR);
            }
        }
    });

    let access_task = tokio::spawn(access::run(
        client.clone(),
        ctx.programs.clone(),
        reader.clone(),
        ctx.events.clone(),
        Arc::new(SystemClock),
        access::Settings {
            watch_namespace: settings.watch_namespace.clone(),
            auth_base: settings.auth_base.clone(),
        },
    ));

    ctx.metrics.set_ready(true);
    // At most this many reconciles at once. Unbounded (kube's default),
    // 2,000 providers at start meant 2,000 API requests in flight and as
    // many pooled TLS connections to the API server: about 70 KB of
    // resident memory per provider (bench/controller-memory.sh).
    let mut controller = controller.with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    for secrets in secret_apis {
        let store = store_for_secrets.clone();
        controller = controller.watches(secrets, secret_config.clone(), move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            let state = store.state();
            providers_for_secret(state.iter().map(|a| a.as_ref()), &ns, &secret.name_any())
        });
    }
    controller
        .shutdown_on_signal()
        .run(reconcile_cached, error_policy_cached, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    e => warn!(error = %e, "controller stream error"),
                }
            }
        })
        .await;
    writer_task.abort();
    access_task.abort();
    tidy_task.abort();
    if let Some(t) = keys_task {
        t.abort();
    }
    if let Some(t) = domain_key_task {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod cache_tests {
    /// The cached copy loses managedFields and the last-applied copy,
    /// keeps every other annotation (a Namespace's hosts, for one).
    #[test]
    fn slim_for_cache_drops_what_nothing_reads() {
        let mut ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "team-a",
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a very\": \"long copy\"}",
                    "sso-operator.dev/hosts": "*.team-a.example.com",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            }
        }))
        .unwrap();
        super::slim_for_cache(&mut ns);
        assert!(ns.metadata.managed_fields.is_none());
        let a = ns.metadata.annotations.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a["sso-operator.dev/hosts"], "*.team-a.example.com");
        let mut bare: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}
        }))
        .unwrap();
        super::slim_for_cache(&mut bare);
        assert!(bare.metadata.annotations.is_none());
    }
}
