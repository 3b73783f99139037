//! AccessPolicies: which are in force, and what their status says.
//!
//! [`program`] is pure: from every policy, every IdentityProvider's
//! `allowedNamespaces`, the providers the broker serves and the namespaces'
//! labels, it decides each policy's conditions and the entries the broker
//! enforces. [`run`] feeds it from watches and writes the results (the
//! broker config through the [`ProgramSet`], statuses by server-side apply,
//! Events on transitions).
//!
//! A policy is in force only when its spec is valid, it loses no host and
//! path to an older policy, and every provider it names exists and admits
//! its namespace. Otherwise it is left out of the broker config, and the
//! broker refuses every request at its auth URL. There is no last known
//! good for a policy: what makes one fail is a decision someone took
//! (deleting a provider, withdrawing a namespace's admission), which must
//! take effect, not an IdP hiccup (a provider that fails validation keeps
//! serving its last good configuration and so keeps its policies).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::packed::Packable as _,
    api::{
        conditions::{Status, policy_types, reasons, types},
        policy::{AccessPolicy, AccessPolicySpec, AccessPolicyStatus, AccessRule},
    },
    config::ProgrammedPolicy,
    controller::{
        cache::{CachedPolicy, CachedProvider},
        program::ProgramSet,
        status,
        validate::CondResult,
    },
    policy::{
        route::{Claim, HostPattern, Routes, check_path_prefix},
        rules::{ClaimRule, Rule, Rules},
        tenancy::{self, AllowedNamespaces},
    },
};

/// One policy as [`program`] sees it.
#[derive(Clone, Debug)]
pub struct PolicyInput<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub generation: i64,
    /// Creation time, Unix seconds (the older policy keeps a contested host).
    pub created: i64,
    pub spec: &'a AccessPolicySpec,
}

impl PolicyInput<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the cluster says around the policies.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Every IdentityProvider by `namespace/name`, with whom it admits.
    pub providers: BTreeMap<String, AllowedNamespaces>,
    /// Providers the broker serves logins through (programmed, perhaps as
    /// last known good).
    pub serving: BTreeSet<String>,
    /// Namespace labels, for providers that admit by selector.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The hosts each namespace owns: its `sso-operator.dev/hosts`
    /// annotation, which cluster administrators set (teams usually may not
    /// edit their Namespace).
    pub namespace_hosts: BTreeMap<String, Vec<HostPattern>>,
    /// Base of the auth URLs: `<base>/<namespace>/<name>`.
    pub auth_base: String,
}

/// What one policy comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub conditions: Vec<CondResult>,
    pub auth_url: String,
    /// The broker's entry, when the policy is in force.
    pub entry: Option<ProgrammedPolicy>,
}

/// Decides every policy at once (host conflicts are between policies).
pub fn program(policies: &[PolicyInput<'_>], world: &World) -> BTreeMap<String, Outcome> {
    // Specs first: a policy whose hosts or paths do not parse claims
    // nothing; nor does one whose providers do not resolve (a policy that
    // cannot be in force must not take a host from one that can).
    let checked: Vec<(&PolicyInput<'_>, Result<Vec<HostPattern>, String>, Resolved)> = policies
        .iter()
        .map(|p| (p, check_spec(p.spec), resolve(p, world)))
        .collect();
    // Hosts owned by another namespace are not claimed either.
    let not_owned: BTreeMap<String, String> = checked
        .iter()
        .filter_map(|(p, hosts, _)| {
            let why = check_ownership(p.namespace, hosts.as_ref().ok()?, world).err()?;
            Some((p.key(), why))
        })
        .collect();
    let claims: Vec<Claim> = checked
        .iter()
        .filter(|(_, _, (_, failure))| failure.is_none())
        .filter(|(p, _, _)| !not_owned.contains_key(&p.key()))
        .filter_map(|(p, hosts, _)| {
            Some(Claim {
                key: p.key(),
                created: p.created,
                hosts: hosts.as_ref().ok()?.clone(),
                paths: p.spec.paths.clone(),
            })
        })
        .collect();
    let routes = Routes::build(&claims);
    let mut lost: BTreeMap<String, String> = BTreeMap::new();
    // Winners are told too: someone else wants their host.
    let mut contested: BTreeMap<String, String> = BTreeMap::new();
    for c in &routes.conflicts {
        let host = match &c.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
        };
        lost.entry(c.loser.clone()).or_insert_with(|| {
            format!(
                "host {host} path {} is already claimed by the older AccessPolicy {}; this policy is not in force until one of them changes",
                c.path, c.winner
            )
        });
        contested.entry(c.winner.clone()).or_insert_with(|| {
            format!(
                "hosts and paths are this policy's; the newer AccessPolicy {} also claims host {host} path {} and is not in force",
                c.loser, c.path
            )
        });
    }

    checked
        .into_iter()
        .map(|(p, hosts, resolved)| {
            let key = p.key();
            let refused = not_owned
                .get(&key)
                .map(|why| (reasons::HOST_NOT_OWNED, why))
                .or_else(|| lost.get(&key).map(|why| (reasons::HOST_CONFLICT, why)));
            let mut outcome = decide(p, hosts, resolved, refused, world);
            if let Some(note) = contested.get(&key)
                && let Some(accepted) = outcome
                    .conditions
                    .iter_mut()
                    .find(|c| c.type_ == policy_types::ACCEPTED && c.status == Status::True)
            {
                accepted.message = note.clone();
            }
            (key, outcome)
        })
        .collect()
}

/// The policy's providers that exist and admit its namespace, and the
/// first reason one does not (with its message).
type Resolved = (Vec<String>, Option<(&'static str, String)>);

/// Resolves the policy's provider references.
fn resolve(p: &PolicyInput<'_>, world: &World) -> Resolved {
    let mut refs = Vec::new();
    let mut failure: Option<(&'static str, String)> = None;
    let no_labels = BTreeMap::new();
    for r in &p.spec.providers {
        let ns = r.namespace.as_deref().unwrap_or(p.namespace);
        let key = format!("{ns}/{}", r.name);
        match world.providers.get(&key) {
            None => {
                failure.get_or_insert((
                    reasons::PROVIDER_NOT_FOUND,
                    format!("IdentityProvider {key} does not exist"),
                ));
            }
            Some(allowed) => {
                let labels = world
                    .namespace_labels
                    .get(p.namespace)
                    .unwrap_or(&no_labels);
                match tenancy::admits(allowed, ns, p.namespace, labels) {
                    Ok(()) => refs.push(key),
                    Err(tenancy::NotAdmitted(why)) => {
                        failure.get_or_insert((
                            reasons::REF_NOT_PERMITTED,
                            format!(
                                "IdentityProvider {key} does not admit namespace {}: {why}",
                                p.namespace
                            ),
                        ));
                    }
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    refs.retain(|k| seen.insert(k.clone()));
    (refs, failure)
}

/// Host ownership: a namespace that lists its hosts (annotation
/// `sso-operator.dev/hosts`) claims only those, and no namespace claims a
/// host another lists, nor a wildcard that would take in one. Hosts nobody
/// lists stay first come, first served.
fn check_ownership(ns: &str, hosts: &[HostPattern], world: &World) -> Result<(), String> {
    let show = |h: &HostPattern| match h {
        HostPattern::Exact(e) => e.clone(),
        HostPattern::Wildcard(s) => format!("*.{s}"),
    };
    let own = world.namespace_hosts.get(ns);
    for h in hosts {
        if let Some(own) = own {
            if !own.iter().any(|o| o.covers(h)) {
                return Err(format!(
                    "host {} is not among the hosts namespace {ns} owns ({}: {}); ask the cluster administrator to add it",
                    show(h),
                    HOSTS_ANNOTATION,
                    own.iter().map(show).collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        }
        for (other, theirs) in &world.namespace_hosts {
            if other == ns {
                continue;
            }
            if let Some(t) = theirs.iter().find(|t| t.covers(h) || h.covers(t)) {
                return Err(format!(
                    "host {} belongs to namespace {other} (its {HOSTS_ANNOTATION} annotation lists {}); a policy in namespace {ns} cannot claim it",
                    show(h),
                    show(t)
                ));
            }
        }
    }
    Ok(())
}

/// The Namespace annotation listing the hosts (comma-separated, exact or
/// `*.suffix`) that AccessPolicies in the namespace may claim.
pub const HOSTS_ANNOTATION: &str = "sso-operator.dev/hosts";

/// The hosts a Namespace's annotation lists; entries that do not parse are
/// left out (and logged by the caller).
pub fn namespace_hosts(annotation: &str) -> (Vec<HostPattern>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for entry in annotation
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match HostPattern::parse(entry) {
            Ok(h) => ok.push(h),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

fn decide(
    p: &PolicyInput<'_>,
    hosts: Result<Vec<HostPattern>, String>,
    (refs, failure): Resolved,
    refused: Option<(&'static str, &String)>,
    world: &World,
) -> Outcome {
    let auth_url = format!(
        "{}/{}/{}",
        world.auth_base.trim_end_matches('/'),
        p.namespace,
        p.name
    );
    let accepted = match (&hosts, refused) {
        (Err(e), _) => CondResult::new(
            policy_types::ACCEPTED,
            Status::False,
            reasons::INVALID_SPEC,
            e.clone(),
        ),
        (Ok(_), Some((reason, why))) => {
            CondResult::new(policy_types::ACCEPTED, Status::False, reason, why.clone())
        }
        (Ok(_), None) => CondResult::ok(
            policy_types::ACCEPTED,
            reasons::ACCEPTED,
            "hosts and paths are this policy's",
        ),
    };

    let resolved = match &failure {
        Some((reason, message)) => CondResult::new(
            policy_types::RESOLVED_REFS,
            Status::False,
            reason,
            message.clone(),
        ),
        None => CondResult::ok(
            policy_types::RESOLVED_REFS,
            reasons::RESOLVED_REFS,
            format!("providers: {}", refs.join(", ")),
        ),
    };

    let in_force = accepted.status == Status::True && resolved.status == Status::True;
    let (programmed, ready, entry) = if in_force {
        let entry = ProgrammedPolicy {
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
            generation: p.generation,
            hosts: p
                .spec
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            paths: p.spec.paths.clone(),
            providers: refs.clone(),
            rules: rules_of(p.spec),
            unauthenticated: p.spec.unauthenticated,
            api_paths: p.spec.api_paths.clone(),
            forward: p.spec.forward.clone(),
        };
        let serving: Vec<&String> = refs.iter().filter(|k| world.serving.contains(*k)).collect();
        let programmed = CondResult::ok(
            types::PROGRAMMED,
            reasons::PROGRAMMED,
            format!("in force at {auth_url}"),
        );
        let ready = if serving.is_empty() {
            CondResult::new(
                types::READY,
                Status::False,
                reasons::NO_PROVIDER_READY,
                format!(
                    "in force, but none of its providers ({}) serves logins yet: see kubectl get idp; until one does, nobody can sign in to this app",
                    refs.join(", ")
                ),
            )
        } else if serving.len() < refs.len() {
            let waiting: Vec<&String> = refs
                .iter()
                .filter(|k| !world.serving.contains(*k))
                .collect();
            CondResult::ok(
                types::READY,
                reasons::READY,
                format!(
                    "in force; logins through {} (not yet through {})",
                    join(&serving),
                    join(&waiting)
                ),
            )
        } else {
            CondResult::ok(
                types::READY,
                reasons::READY,
                format!("in force; logins through {}", refs.join(", ")),
            )
        };
        (programmed, ready, Some(entry))
    } else {
        let (reason, message) = [&accepted, &resolved]
            .into_iter()
            .find(|c| c.status != Status::True)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_default();
        let message =
            format!("not in force, the broker refuses every request at {auth_url}: {message}");
        (
            CondResult::new(types::PROGRAMMED, Status::False, &reason, message.clone()),
            CondResult::new(types::READY, Status::False, &reason, message),
            None,
        )
    };
    Outcome {
        conditions: vec![accepted, resolved, programmed, ready],
        auth_url,
        entry,
    }
}

fn join(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What admission cannot fully say: hosts and paths as the broker parses
/// them.
fn check_spec(spec: &AccessPolicySpec) -> Result<Vec<HostPattern>, String> {
    let hosts = spec
        .hosts
        .iter()
        .map(|h| HostPattern::parse(h).map_err(|e| format!("spec.hosts: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for p in &spec.paths {
        check_path_prefix(p).map_err(|e| format!("spec.paths: {e}"))?;
    }
    for p in &spec.api_paths {
        check_path_prefix(p).map_err(|e| format!("spec.apiPaths: {e}"))?;
    }
    if spec.rules.allow.is_empty() {
        return Err("spec.rules.allow is empty: nobody could reach the app".into());
    }
    if let Some(i) = spec.rules.allow.iter().position(is_empty) {
        return Err(format!(
            "spec.rules.allow[{i}] lists nothing and would match nobody"
        ));
    }
    if let Some(i) = spec.rules.deny.iter().position(is_empty) {
        return Err(format!(
            "spec.rules.deny[{i}] lists nothing and would match nobody"
        ));
    }
    Ok(hosts)
}

fn is_empty(r: &AccessRule) -> bool {
    r.users.is_empty()
        && r.emails.is_empty()
        && r.email_domains.is_empty()
        && r.groups.is_empty()
        && r.claims.is_empty()
}

fn rules_of(spec: &AccessPolicySpec) -> Rules {
    let rule = |r: &AccessRule| Rule {
        users: r.users.clone(),
        emails: r.emails.clone(),
        email_domains: r.email_domains.clone(),
        any_provider_domain: r.any_provider_domain,
        groups: r.groups.clone(),
        claims: r
            .claims
            .iter()
            .map(|c| ClaimRule {
                name: c.name.clone(),
                values: c.values.clone(),
            })
            .collect(),
    };
    Rules {
        allow: spec.rules.allow.iter().map(rule).collect(),
        deny: spec.rules.deny.iter().map(rule).collect(),
    }
}

/// The status for `outcome`, keeping transition times of unchanged
/// conditions.
pub fn build_status(
    old: Option<&AccessPolicyStatus>,
    outcome: &Outcome,
    generation: i64,
    now: Timestamp,
) -> AccessPolicyStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    AccessPolicyStatus {
        auth_url: Some(outcome.auth_url.clone()),
        observed_generation: Some(generation),
        conditions: status::merge_conditions(old_conditions, &outcome.conditions, generation, now),
        packed: None,
    }
}

/// Whether writing `new` over `old` changes anything but timestamps.
pub fn needs_write(old: Option<&AccessPolicyStatus>, new: &AccessPolicyStatus) -> bool {
    old.is_none_or(|old| old.differs(new))
}

/// Settings of the policy task.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Only policies (and providers) in this namespace; all when `None`.
    pub watch_namespace: Option<String>,
    pub auth_base: String,
}

/// Watches AccessPolicies (and Namespaces, for label selectors), and on
/// every change decides them all again: writes the policies in force into
/// `programs` and each changed status.
pub async fn run(
    client: Client,
    programs: Arc<ProgramSet>,
    providers: Store<CachedProvider>,
    events: super::events::Events,
    clock: Arc<dyn crate::clock::Clock>,
    settings: Settings,
) {
    let policies_api: Api<AccessPolicy> =
        super::watched_api(&client, settings.watch_namespace.as_deref());
    let (policies, policy_writer) = reflector::store::<CachedPolicy>();
    let changed = Arc::new(tokio::sync::Notify::new());
    // Cached without managedFields, which nothing here reads.
    let policy_stream = watcher(policies_api.clone(), watcher::Config::default())
        .default_backoff()
        .map_ok(super::cache::cached)
        .reflect(policy_writer)
        .touched_objects();
    tokio::spawn(wake_on(policy_stream, changed.clone(), "AccessPolicy"));
    // Namespace labels matter only across namespaces; one namespace needs
    // no cluster-wide read.
    let (namespaces, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    if settings.watch_namespace.is_none() {
        let ns_stream = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(super::slim_for_cache)
        .reflect(ns_writer)
        .touched_objects();
        tokio::spawn(wake_on(ns_stream, changed.clone(), "Namespace"));
    } else {
        drop(ns_writer);
    }
    // The policies loaded from the broker config at start stay in force
    // while the watches sync; if they do not within two minutes (no RBAC,
    // an API server refusing), every policy goes out of force rather than
    // staying as it was: a policy deleted or an admission withdrawn in the
    // meantime must not live on.
    let synced = async {
        let ok = super::program::wait_until_ready(&providers).await.is_ok()
            && super::program::wait_until_ready(&policies).await.is_ok();
        ok && (settings.watch_namespace.is_some()
            || super::program::wait_until_ready(&namespaces).await.is_ok())
    };
    let mut synced = std::pin::pin!(synced);
    let ready = match tokio::time::timeout(Duration::from_secs(120), &mut synced).await {
        Ok(ready) => ready,
        Err(_) => {
            tracing::error!(
                "the AccessPolicy, IdentityProvider or Namespace watch has not synced in 2 minutes: every AccessPolicy is out of force until it does (check the controller's RBAC and the CRDs)"
            );
            programs.set_policies(BTreeMap::new());
            synced.await
        }
    };
    if !ready {
        return;
    }
    // What was last written per policy, as a hash of its conditions (the
    // conditions themselves are in the store).
    let mut previous: BTreeMap<String, u64> = BTreeMap::new();
    let digest = crate::api::packed::hash_of::<[crate::api::Condition]>;
    let mut unparsable: BTreeSet<String> = BTreeSet::new();
    // What the last pass decided from, and when to retry writes of it that
    // failed (not on every wake: a write refused for good, say by RBAC,
    // must not bring back a pass per provider reconcile).
    let mut decided_from: Option<u64> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        // Nothing a pass reads changed and nothing is to retry: no pass
        // (every provider reconcile wakes this task; with thousands of
        // providers it would otherwise decide every policy several times
        // a second, allocating the whole world each time).
        let now_from = inputs_digest(
            &policies,
            &providers,
            &namespaces,
            programs.serving_digest(),
        );
        let retry = retry_at.is_some_and(|t| tokio::time::Instant::now() >= t);
        if decided_from != Some(now_from) || retry {
            decided_from = Some(now_from);
            tracing::debug!(retry, "deciding every access policy");
            // What a pass builds (every policy's outcome, the world) is
            // dropped before the wait, not kept through it.
            let world = World {
                providers: providers
                    .state()
                    .iter()
                    .map(|i| {
                        let allowed = i
                            .index
                            .allowed_namespaces
                            .as_ref()
                            .map(|a| a.to_policy())
                            .unwrap_or_default();
                        (i.key(), allowed)
                    })
                    .collect(),
                serving: programs.serving(),
                namespace_labels: namespaces
                    .state()
                    .iter()
                    .map(|n| (n.name_any(), n.labels().clone()))
                    .collect(),
                namespace_hosts: namespaces
                    .state()
                    .iter()
                    .filter_map(|n| {
                        let listed = n.annotations().get(HOSTS_ANNOTATION)?;
                        let (hosts, bad) = namespace_hosts(listed);
                        for e in bad {
                            // Once per bad entry, not on every pass.
                            if unparsable.insert(format!("{}: {e}", n.name_any())) {
                                warn!(namespace = %n.name_any(), "{HOSTS_ANNOTATION}: {e}");
                            }
                        }
                        Some((n.name_any(), hosts))
                    })
                    .collect(),
                auth_base: settings.auth_base.clone(),
            };
            let all = policies.state();
            // Each policy's spec read back for this pass only.
            let specs: Vec<Option<AccessPolicySpec>> = all
                .iter()
                .map(|p| {
                    p.spec()
                        .map_err(|e| tracing::error!(error = %e, "policy left out of this pass"))
                        .ok()
                })
                .collect();
            let inputs: Vec<PolicyInput<'_>> = all
                .iter()
                .zip(&specs)
                .filter_map(|(p, spec)| Some((p, spec.as_ref()?)))
                .map(|(p, spec)| PolicyInput {
                    namespace: p.metadata.namespace.as_deref().unwrap_or_default(),
                    name: p.metadata.name.as_deref().unwrap_or_default(),
                    generation: p.metadata.generation.unwrap_or_default(),
                    created: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(0, |t| t.0.as_second()),
                    spec,
                })
                .collect();
            let mut outcomes = program(&inputs, &world);
            drop((inputs, world));
            // Taken, not copied: the statuses below need only the conditions.
            let in_force: BTreeMap<String, ProgrammedPolicy> = outcomes
                .iter_mut()
                .filter_map(|(k, o)| Some((k.clone(), o.entry.take()?)))
                .collect();
            let in_force_count = in_force.len();
            if programs.set_policies(in_force) {
                info!(
                    policies = all.len(),
                    in_force = in_force_count,
                    "access policies decided"
                );
            }
            // What to write, decided before any write, each new status
            // deflated: every policy's outcome (conditions, messages) is not
            // kept through thousands of requests.
            let mut to_write: Vec<(Arc<CachedPolicy>, u64, Box<[u8]>)> = Vec::new();
            for p in all.iter() {
                let key = p.key();
                let Some(outcome) = outcomes.get(&key) else {
                    continue;
                };
                let generation = p.metadata.generation.unwrap_or_default();
                // Cached packed (cache::Cached): read for this one policy; the
                // comparison is with the cached digest.
                let cached = p.status.as_ref();
                let old = cached.map(|s| s.unpacked());
                let old = old.as_deref();
                let new = build_status(old, outcome, generation, clock.now());
                if !needs_write(cached, &new) {
                    continue;
                }
                // The store may lag behind our own last write: do not write
                // (or announce) the same thing twice.
                let written = digest(&new.conditions);
                if previous.get(&key) == Some(&written) {
                    continue;
                }
                to_write.push((p.clone(), written, crate::api::packed::deflate(&new)));
            }
            previous.retain(|k, _| outcomes.contains_key(k));
            drop(outcomes);
            drop((specs, all));
            let results: Vec<(String, u64, bool)> = futures::stream::iter(to_write)
                .map(|(p, written, new)| write_one(client.clone(), events.clone(), p, written, new))
                .buffer_unordered(STATUS_WRITES_AT_ONCE)
                .collect()
                .await;
            retry_at = None;
            for (key, written, ok) in results {
                if ok {
                    previous.insert(key, written);
                } else {
                    retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                }
            }
            crate::memory::release_freed();
        }
        // Wake on any change: a policy, a namespace, a provider's entry
        // coming or going; or every 30 s (providers created or edited, and
        // a retry of failed writes).
        tokio::select! {
            () = changed.notified() => {}
            () = programs.providers_changed() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // Debounce bursts (a Git sync applying many policies).
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Status writes of the policy task in flight at once.
const STATUS_WRITES_AT_ONCE: usize = 8;

/// Writes one policy's new status (deflated until now); its key, the
/// conditions' digest and whether the write went through (a policy deleted
/// meanwhile counts as through: nothing to retry).
async fn write_one(
    client: Client,
    events: super::events::Events,
    p: Arc<CachedPolicy>,
    written: u64,
    new: Box<[u8]>,
) -> (String, u64, bool) {
    let key = p.key();
    let Some(new) = crate::api::packed::inflate::<AccessPolicyStatus>(&new) else {
        return (key, written, false);
    };
    let old = p.status.as_ref().map(|s| s.unpacked());
    let old_conditions = old
        .as_deref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match super::write_status(&client, &events, &*p, &new, old_conditions, &new.conditions).await {
        Ok(_) => (key, written, true),
        Err(e) => {
            warn!(policy = %key, error = %e, "cannot write AccessPolicy status; retrying");
            (key, written, false)
        }
    }
}

/// A digest of what a policy pass decides from: every policy, provider and
/// namespace as of its resourceVersion (any change to one changes it), and
/// the providers the broker serves. Independent of the caches' order.
fn inputs_digest(
    policies: &Store<CachedPolicy>,
    providers: &Store<CachedProvider>,
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    serving: u64,
) -> u64 {
    use crate::api::packed::hash_of;
    fn versions<K: kube::Resource>(what: u8, items: &[Arc<K>]) -> u64 {
        items
            .iter()
            .map(|o| {
                let m = o.meta();
                hash_of(&(
                    what,
                    m.namespace.as_deref(),
                    m.name.as_deref(),
                    m.resource_version.as_deref(),
                ))
            })
            .fold(hash_of(&(what, items.len())), u64::wrapping_add)
    }
    versions(0, &policies.state())
        .wrapping_add(versions(1, &providers.state()))
        .wrapping_add(versions(2, &namespaces.state()))
        .wrapping_add(hash_of(&serving))
}

async fn wake_on<S, K>(stream: S, changed: Arc<tokio::sync::Notify>, what: &'static str)
where
    S: futures::Stream<Item = Result<K, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => changed.notify_one(),
            Err(e) => warn!(error = %e, "{what} watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tenancy::From;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> AccessPolicySpec {
        serde_json::from_value(v).unwrap()
    }

    fn basic(hosts: &[&str], providers: serde_json::Value) -> AccessPolicySpec {
        spec(json!({
            "hosts": hosts,
            "providers": providers,
            "rules": {"allow": [{"users": ["alice"]}], "deny": [{"emails": ["m@example.com"]}]},
        }))
    }

    fn world() -> World {
        let mut w = World {
            auth_base: "http://sso-broker.sso.svc/oauth/auth/".into(),
            ..World::default()
        };
        w.providers
            .insert("corp/corp".into(), AllowedNamespaces::default());
        w.providers
            .insert("tenant-b/evil".into(), AllowedNamespaces::default());
        w.providers.insert(
            "platform/shared".into(),
            AllowedNamespaces {
                from: From::Selector,
                selector: serde_json::from_value(json!({"matchLabels": {"sso": "shared"}}))
                    .unwrap(),
            },
        );
        w.providers.insert(
            "platform/open".into(),
            AllowedNamespaces {
                from: From::All,
                selector: None,
            },
        );
        w.serving.insert("corp/corp".into());
        w.serving.insert("platform/shared".into());
        w.namespace_labels.insert(
            "corp".into(),
            [("sso".to_string(), "shared".to_string())].into(),
        );
        w
    }

    fn one(ns: &str, s: &AccessPolicySpec, w: &World) -> Outcome {
        let p = PolicyInput {
            namespace: ns,
            name: "app",
            generation: 3,
            created: 10,
            spec: s,
        };
        program(&[p], w).remove(&format!("{ns}/app")).unwrap()
    }

    fn cond<'a>(o: &'a Outcome, t: &str) -> &'a CondResult {
        o.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    /// Namespaces that list their hosts own them: a policy elsewhere cannot
    /// claim one of them (even first, even by a wider wildcard), and a
    /// listing namespace claims only what it lists; unlisted hosts stay
    /// first come, first served.
    #[test]
    fn hosts_a_namespace_lists_are_its_own() {
        let mut w = world();
        w.namespace_hosts.insert(
            "corp".into(),
            namespace_hosts("*.corp.example.com, portal.example.com").0,
        );
        let corp_provider = json!([{"name": "corp"}]);
        let evil_provider = json!([{"name": "evil"}]);
        let accepted = |ns: &str, hosts: &[&str], providers: &serde_json::Value| {
            let o = one(ns, &basic(hosts, providers.clone()), &w);
            let c = cond(&o, policy_types::ACCEPTED).clone();
            (c.reason, c.message, o.entry.is_some())
        };
        // The owner claims what it lists.
        for hosts in [
            &["app.corp.example.com"][..],
            &["portal.example.com"],
            &["*.x.corp.example.com"],
        ] {
            let (reason, msg, in_force) = accepted("corp", hosts, &corp_provider);
            assert_eq!(
                (reason.as_str(), in_force),
                (reasons::ACCEPTED, true),
                "{hosts:?}: {msg}"
            );
        }
        // ...and nothing else.
        let (reason, msg, in_force) = accepted("corp", &["other.example.com"], &corp_provider);
        assert_eq!(
            (reason.as_str(), in_force),
            (reasons::HOST_NOT_OWNED, false)
        );
        assert!(
            msg.contains("not among the hosts namespace corp owns"),
            "{msg}"
        );
        // Another namespace cannot take the owner's hosts, even first.
        for hosts in [
            &["app.corp.example.com"][..],
            &["portal.example.com"],
            &["*.corp.example.com"],
            &["*.example.com"],
        ] {
            let (reason, msg, in_force) = accepted("tenant-b", hosts, &evil_provider);
            assert_eq!(
                (reason.as_str(), in_force),
                (reasons::HOST_NOT_OWNED, false),
                "{hosts:?}"
            );
            assert!(msg.contains("belongs to namespace corp"), "{msg}");
        }
        // Hosts nobody lists: first come, as before.
        let (reason, _, in_force) = accepted("tenant-b", &["b.example.org"], &evil_provider);
        assert_eq!((reason.as_str(), in_force), (reasons::ACCEPTED, true));
        // A refused policy claims nothing: the owner, newer, still wins.
        let squat = basic(&["app.corp.example.com"], evil_provider.clone());
        let real = basic(&["app.corp.example.com"], corp_provider.clone());
        let out = program(
            &[
                PolicyInput {
                    namespace: "tenant-b",
                    name: "app",
                    generation: 1,
                    created: 1,
                    spec: &squat,
                },
                PolicyInput {
                    namespace: "corp",
                    name: "app",
                    generation: 1,
                    created: 99,
                    spec: &real,
                },
            ],
            &w,
        );
        assert!(
            out["corp/app"].entry.is_some(),
            "the owner's newer policy is in force"
        );
        assert!(out["tenant-b/app"].entry.is_none());
    }

    #[test]
    fn the_hosts_annotation_parses_what_it_can() {
        let (ok, bad) = namespace_hosts(" a.example.com,, *.b.example.com ,*.com, bad_host ");
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn a_policy_with_its_own_namespaces_provider_is_in_force() {
        let s = basic(&["Grafana.Corp.example.com"], json!([{"name": "corp"}]));
        let o = one("corp", &s, &world());
        assert_eq!(o.auth_url, "http://sso-broker.sso.svc/oauth/auth/corp/app");
        let e = o.entry.as_ref().expect("in force");
        assert_eq!(e.providers, ["corp/corp"]);
        assert_eq!(e.hosts, ["grafana.corp.example.com"]);
        assert_eq!(e.generation, 3);
        assert_eq!(e.rules.allow[0].users, ["alice"]);
        assert_eq!(e.rules.deny[0].emails, ["m@example.com"]);
        for t in [
            policy_types::ACCEPTED,
            policy_types::RESOLVED_REFS,
            types::PROGRAMMED,
            types::READY,
        ] {
            assert_eq!(cond(&o, t).status, Status::True, "{t}: {:?}", cond(&o, t));
        }
    }

    #[test]
    fn another_namespaces_provider_serves_only_when_it_admits_the_namespace() {
        let w = world();
        // tenant-b's provider admits only tenant-b: corp cannot use it...
        let o = one(
            "corp",
            &basic(
                &["a.example.com"],
                json!([{"name": "evil", "namespace": "tenant-b"}]),
            ),
            &w,
        );
        assert!(o.entry.is_none());
        let r = cond(&o, policy_types::RESOLVED_REFS);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Status::False, reasons::REF_NOT_PERMITTED)
        );
        assert!(
            r.message
                .contains("tenant-b/evil does not admit namespace corp"),
            "{}",
            r.message
        );
        let ready = cond(&o, types::READY);
        assert_eq!(ready.reason, reasons::REF_NOT_PERMITTED);
        assert!(
            ready
                .message
                .contains("refuses every request at http://sso-broker.sso.svc/oauth/auth/corp/app")
        );
        // ...and one bad reference among good ones keeps the policy out.
        let o = one(
            "corp",
            &basic(
                &["a.example.com"],
                json!([{"name": "corp"}, {"name": "evil", "namespace": "tenant-b"}]),
            ),
            &w,
        );
        assert!(o.entry.is_none());
        // A selector admits the labelled namespace and no other.
        let shared = json!([{"name": "shared", "namespace": "platform"}]);
        assert!(
            one("corp", &basic(&["a.example.com"], shared.clone()), &w)
                .entry
                .is_some()
        );
        let o = one("tenant-b", &basic(&["b.example.com"], shared), &w);
        assert!(o.entry.is_none());
        assert!(
            cond(&o, policy_types::RESOLVED_REFS)
                .message
                .contains("does not match")
        );
        // All admits everyone; its namespace in the reference is required.
        let open = json!([{"name": "open", "namespace": "platform"}]);
        let o = one("tenant-b", &basic(&["b.example.com"], open), &w);
        assert_eq!(o.entry.as_ref().unwrap().providers, ["platform/open"]);
        // Not serving logins yet: in force, but not Ready, and says why.
        let ready = cond(&o, types::READY);
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (Status::False, reasons::NO_PROVIDER_READY)
        );
    }

    #[test]
    fn a_missing_provider_is_named() {
        let o = one(
            "corp",
            &basic(&["a.example.com"], json!([{"name": "gone"}])),
            &world(),
        );
        assert!(o.entry.is_none());
        let r = cond(&o, policy_types::RESOLVED_REFS);
        assert_eq!(r.reason, reasons::PROVIDER_NOT_FOUND);
        assert_eq!(r.message, "IdentityProvider corp/gone does not exist");
        assert_eq!(
            cond(&o, types::PROGRAMMED).reason,
            reasons::PROVIDER_NOT_FOUND
        );
    }

    #[test]
    fn the_older_policy_keeps_a_contested_host_and_the_newer_says_who_has_it() {
        let w = world();
        let a = basic(&["app.example.com"], json!([{"name": "corp"}]));
        let b = basic(
            &["app.example.com", "other.example.com"],
            json!([{"name": "corp"}]),
        );
        let c = spec(json!({"hosts": ["app.example.com"], "paths": ["/api"],
            "providers": [{"name": "corp"}], "rules": {"allow": [{"groups": ["g"]}]}}));
        let policies = [
            PolicyInput {
                namespace: "corp",
                name: "new",
                generation: 1,
                created: 20,
                spec: &b,
            },
            PolicyInput {
                namespace: "corp",
                name: "old",
                generation: 1,
                created: 10,
                spec: &a,
            },
            PolicyInput {
                namespace: "corp",
                name: "api",
                generation: 1,
                created: 30,
                spec: &c,
            },
        ];
        let out = program(&policies, &w);
        assert!(out["corp/old"].entry.is_some());
        assert!(
            out["corp/api"].entry.is_some(),
            "another path on the same host is no conflict"
        );
        let new = &out["corp/new"];
        assert!(new.entry.is_none());
        // A policy that cannot be in force (its provider does not exist)
        // takes no host, however old.
        let ghost = basic(&["app.example.com"], json!([{"name": "nobody"}]));
        let mut with_ghost = policies.to_vec();
        with_ghost.push(PolicyInput {
            namespace: "tenant-b",
            name: "ghost",
            generation: 1,
            created: 1,
            spec: &ghost,
        });
        let out2 = program(&with_ghost, &w);
        assert!(
            out2["corp/old"].entry.is_some(),
            "the ghost took corp/old's host"
        );
        assert_eq!(
            cond(&out2["tenant-b/ghost"], policy_types::ACCEPTED).status,
            Status::True
        );
        let old = cond(&out["corp/old"], policy_types::ACCEPTED);
        assert_eq!(old.status, Status::True);
        assert!(
            old.message.contains(
                "the newer AccessPolicy corp/new also claims host app.example.com path /"
            ),
            "{}",
            old.message
        );
        let acc = cond(new, policy_types::ACCEPTED);
        assert_eq!(acc.reason, reasons::HOST_CONFLICT);
        assert!(
            acc.message.contains(
                "host app.example.com path / is already claimed by the older AccessPolicy corp/old"
            ),
            "{}",
            acc.message
        );
    }

    #[test]
    fn what_admission_would_refuse_is_refused_here_too() {
        let w = world();
        for (s, want) in [
            (basic(&["*.com"], json!([{"name": "corp"}])), "spec.hosts"),
            (
                spec(
                    json!({"hosts": ["a.example.com"], "paths": ["/a/../b"], "providers": [{"name": "corp"}],
                "rules": {"allow": [{"users": ["a"]}]}}),
                ),
                "spec.paths",
            ),
            (
                spec(
                    json!({"hosts": ["a.example.com"], "providers": [{"name": "corp"}],
                "rules": {"allow": [{}]}}),
                ),
                "spec.rules.allow[0]",
            ),
            (
                spec(
                    json!({"hosts": ["a.example.com"], "providers": [{"name": "corp"}],
                "rules": {"allow": []}}),
                ),
                "spec.rules.allow is empty",
            ),
        ] {
            let o = one("corp", &s, &w);
            assert!(o.entry.is_none());
            let acc = cond(&o, policy_types::ACCEPTED);
            assert_eq!(acc.reason, reasons::INVALID_SPEC);
            assert!(acc.message.contains(want), "{}", acc.message);
        }
    }

    #[test]
    fn statuses_are_rewritten_only_when_something_but_time_changed() {
        let w = world();
        let s = basic(&["a.example.com"], json!([{"name": "corp"}]));
        let o = one("corp", &s, &w);
        let t0 = Timestamp::from_second(1_000).unwrap();
        let first = build_status(None, &o, 3, t0);
        assert!(needs_write(None, &first));
        let again = build_status(Some(&first), &o, 3, Timestamp::from_second(2_000).unwrap());
        assert_eq!(again, first, "transition times kept");
        assert!(!needs_write(Some(&first), &again));
        let mut w2 = w.clone();
        w2.serving.clear();
        let o2 = one("corp", &s, &w2);
        let changed = build_status(Some(&first), &o2, 3, Timestamp::from_second(3_000).unwrap());
        assert!(needs_write(Some(&first), &changed));
        let ready = changed
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .unwrap();
        assert_eq!(ready.last_transition_time.as_second(), 3_000);
    }
}
