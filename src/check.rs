//! `sso-operator check`: validates IdentityProvider and AccessPolicy
//! manifests from files the way the cluster would (schema, CEL, the
//! controller's own validation and policy decisions) and prints the
//! conditions the controller would write. Made for GitOps
//! pull-request checks: the exit code is non-zero on any failure.

use std::{fmt::Write as _, path::PathBuf, sync::Arc};

use jiff::Timestamp;
use url::Url;

use crate::{
    Error,
    api::{
        Condition, IdentityProvider,
        conditions::{Status, reasons, types},
    },
    controller::{
        status::merge_conditions,
        validate::{Env, Facts, SecretData, Validation, validate_with},
    },
    manifest::{self, Document},
    oidc::discovery::{CacheTtl, DiscoveryCache, HttpSettings},
};

/// Options of one check run.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub paths: Vec<PathBuf>,
    /// Run discovery and the JWKS check against the live issuers.
    pub live: bool,
    /// Namespace for manifests that do not set one.
    pub namespace: String,
    pub public_url: Url,
    pub http: HttpSettings,
    /// Verifies providers' spec.domains with --live (its key, if any, makes
    /// the records); without it, or offline, domains are only checked as
    /// names.
    pub domains: Option<Arc<crate::controller::domains::Verifier>>,
}

/// The result for one IdentityProvider document.
#[derive(Clone, Debug)]
pub struct ProviderReport {
    pub source: String,
    pub key: String,
    /// Admission errors (schema, CEL, unparseable spec); when present, the
    /// cluster would reject the manifest and there are no conditions.
    pub admission_errors: Vec<String>,
    pub validation: Option<Validation>,
    pub conditions: Vec<Condition>,
    /// Why the broker would not offer it (None when programmed).
    pub unavailable: Option<crate::config::Unavailable>,
    /// spec.domains: refused ones, and with --live their DNS state.
    pub domains: Vec<crate::domains::DomainStatus>,
}

impl ProviderReport {
    /// Passes when admitted and no condition is False or Unknown, except
    /// the discovery checks an offline run skips (kstatus' `Reconciling`
    /// and `Stalled` restate `Ready`, which is judged itself).
    pub fn passed(&self) -> bool {
        use crate::domains::reasons as r;
        let refused = |d: &crate::domains::DomainStatus| {
            [r::INVALID_DOMAIN, r::PUBLIC_SUFFIX, r::FREE_MAIL].contains(&d.reason.as_str())
        };
        self.admission_errors.is_empty()
            && self.validation.is_some()
            && !self.domains.iter().any(refused)
            && self
                .conditions
                .iter()
                .filter(|c| !types::RESTATING_READY.contains(&c.type_.as_str()))
                .all(|c| {
                    c.status == Status::True
                        || c.reason == reasons::NOT_CHECKED
                        || c.reason == reasons::DISABLED
                })
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The result for one AccessPolicy document, decided against the
/// IdentityProviders (and Namespaces, for label selectors) in the same
/// manifests, as the controller would decide it in a cluster holding
/// just those.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    pub source: String,
    pub key: String,
    pub admission_errors: Vec<String>,
    pub auth_url: Option<String>,
    pub conditions: Vec<Condition>,
    /// What the broker would enforce, when the policy is in force.
    pub entry: Option<crate::config::ProgrammedPolicy>,
}

impl PolicyReport {
    /// Passes when admitted and in force (a provider that does not pass
    /// its own check is reported there).
    pub fn passed(&self) -> bool {
        self.admission_errors.is_empty()
            && !self.conditions.is_empty()
            && self
                .conditions
                .iter()
                .all(|c| c.status == Status::True || c.reason == reasons::NO_PROVIDER_READY)
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The result of a check run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub providers: Vec<ProviderReport>,
    pub policies: Vec<PolicyReport>,
    /// Problems with the files themselves.
    pub file_errors: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.file_errors.is_empty()
            && !(self.providers.is_empty() && self.policies.is_empty())
            && self.providers.iter().all(ProviderReport::passed)
            && self.policies.iter().all(PolicyReport::passed)
    }

    pub fn policy(&self, key: &str) -> Option<&PolicyReport> {
        self.policies.iter().find(|p| p.key == key)
    }

    pub fn provider(&self, key: &str) -> Option<&ProviderReport> {
        self.providers.iter().find(|p| p.key == key)
    }

    /// Human-readable output, one block per provider.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.file_errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        for p in &self.providers {
            let verdict = if p.passed() { "PASS" } else { "FAIL" };
            let phase = p.validation.as_ref().map_or("Rejected", |v| v.phase);
            let _ = writeln!(out, "{verdict} {} ({}) phase={phase}", p.key, p.source);
            for e in &p.admission_errors {
                let _ = writeln!(out, "  rejected at admission: {e}");
            }
            if let Some(v) = &p.validation {
                let _ = writeln!(out, "  redirectURI: {}", v.redirect_uri);
            }
            for c in &p.conditions {
                let _ = writeln!(
                    out,
                    "  {:<18} {:<7} {:<22} {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
            for d in &p.domains {
                let _ = writeln!(
                    out,
                    "  domain {:<11} {:<7} {:<22} {}",
                    d.domain, d.state, d.reason, d.message
                );
                if !d.record_value.is_empty() {
                    let _ = writeln!(out, "    TXT {} \"{}\"", d.record_name, d.record_value);
                }
            }
        }
        for p in &self.policies {
            let verdict = if p.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{verdict} AccessPolicy {} ({})", p.key, p.source);
            for e in &p.admission_errors {
                let _ = writeln!(out, "  rejected at admission: {e}");
            }
            if let Some(u) = &p.auth_url {
                let _ = writeln!(out, "  authURL: {u}");
            }
            for c in &p.conditions {
                let _ = writeln!(
                    out,
                    "  {:<18} {:<7} {:<22} {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
        if self.providers.is_empty() && self.policies.is_empty() && self.file_errors.is_empty() {
            let _ = writeln!(
                out,
                "ERROR no IdentityProvider or AccessPolicy manifests found"
            );
        }
        let passed = self.providers.iter().filter(|p| p.passed()).count()
            + self.policies.iter().filter(|p| p.passed()).count();
        let _ = writeln!(
            out,
            "{passed} passed, {} failed",
            self.providers.len() + self.policies.len() - passed
        );
        out
    }
}

/// Runs a check over the given files.
pub async fn run(opts: &CheckOptions) -> Result<Report, Error> {
    let docs = manifest::load(&opts.paths)?;
    let secrets = manifest::secrets(&docs, &opts.namespace)?;
    let cache = Arc::new(DiscoveryCache::new(opts.http.clone(), CacheTtl::default()));
    let schema = manifest::crd_schema();
    let env = Env {
        public_url: opts.public_url.clone(),
    };
    let now = Timestamp::now();
    let mut report = Report::default();
    for doc in docs.iter().filter(|d| d.kind() == "IdentityProvider") {
        report
            .providers
            .push(check_one(doc, &schema, &secrets, opts, &cache, &env, now).await);
    }
    report.policies = check_policies(&docs, &report.providers, opts, now);
    for doc in docs
        .iter()
        .filter(|d| !matches!(d.kind(), "IdentityProvider" | "AccessPolicy" | "Secret"))
    {
        // Other kinds are allowed beside providers (kustomize folders), but
        // an IdentityProvider with a wrong apiVersion is worth flagging.
        if doc.kind().is_empty() {
            report
                .file_errors
                .push(format!("{}: not a Kubernetes object (no kind)", doc.source));
        }
    }
    Ok(report)
}

/// The error for a document of ours at an apiVersion the CRDs do not serve.
fn unserved_version(doc: &Document) -> Option<String> {
    let expected = format!("{}/v1alpha1", crate::api::GROUP);
    (doc.api_version() != expected).then(|| {
        format!(
            "apiVersion {:?} is not served; use {expected}",
            doc.api_version()
        )
    })
}

/// Decides the AccessPolicies in `docs` as the controller would, with the
/// providers and Namespaces of the same manifests as the cluster.
fn check_policies(
    docs: &[Document],
    providers: &[ProviderReport],
    opts: &CheckOptions,
    now: Timestamp,
) -> Vec<PolicyReport> {
    use crate::{
        api::policy::AccessPolicy,
        controller::access::{self, PolicyInput, World},
    };
    let schema = manifest::crd_schema_for("AccessPolicy").expect("the AccessPolicy CRD");
    let mut world = World {
        auth_base: format!(
            "{}/oauth/auth",
            opts.public_url.as_str().trim_end_matches('/')
        ),
        ..World::default()
    };
    for doc in docs.iter().filter(|d| d.kind() == "IdentityProvider") {
        let key = format!("{}/{}", doc.namespace(&opts.namespace), doc.name());
        let Ok(idp) = serde_json::from_value::<IdentityProvider>(doc.value.clone()) else {
            continue;
        };
        let allowed = idp
            .spec
            .allowed_namespaces
            .as_ref()
            .map(|a| a.to_policy())
            .unwrap_or_default();
        world.providers.insert(key.clone(), allowed);
        // Offline, a provider that passes counts as serving (its issuer
        // was not asked); a disabled one does not.
        let serving = |p: &ProviderReport| {
            p.key == key && p.passed() && !p.unavailable.as_ref().is_some_and(|u| u.disabled)
        };
        if providers.iter().any(serving) {
            world.serving.insert(key);
        }
    }
    for doc in docs.iter().filter(|d| d.kind() == "Namespace") {
        let labels: std::collections::BTreeMap<String, String> = doc.value["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        world
            .namespace_labels
            .insert(doc.name().to_string(), labels);
        // Hosts the Namespace lists, as the controller reads them.
        if let Some(listed) =
            doc.value["metadata"]["annotations"][access::HOSTS_ANNOTATION].as_str()
        {
            world
                .namespace_hosts
                .insert(doc.name().to_string(), access::namespace_hosts(listed).0);
        }
    }
    let mut reports = Vec::new();
    let mut parsed = Vec::new();
    for doc in docs.iter().filter(|d| d.kind() == "AccessPolicy") {
        let ns = doc.namespace(&opts.namespace).to_string();
        let mut report = PolicyReport {
            source: doc.source.clone(),
            key: format!("{ns}/{}", doc.name()),
            admission_errors: manifest::admission_errors(&schema, &doc.value),
            auth_url: None,
            conditions: Vec::new(),
            entry: None,
        };
        report.admission_errors.extend(unserved_version(doc));
        if report.admission_errors.is_empty() {
            match serde_json::from_value::<AccessPolicy>(doc.value.clone()) {
                Ok(p) => parsed.push((reports.len(), ns, doc.name().to_string(), p)),
                Err(e) => report
                    .admission_errors
                    .push(format!("spec does not parse: {e}")),
            }
        }
        reports.push(report);
    }
    // In file order: the first manifest counts as the oldest.
    let inputs: Vec<PolicyInput<'_>> = parsed
        .iter()
        .enumerate()
        .map(|(i, (_, ns, name, p))| PolicyInput {
            namespace: ns,
            name,
            generation: 1,
            created: i as i64,
            spec: &p.spec,
        })
        .collect();
    let outcomes = access::program(&inputs, &world);
    for (i, ns, name, _) in &parsed {
        if let Some(o) = outcomes.get(&format!("{ns}/{name}")) {
            reports[*i].auth_url = Some(o.auth_url.clone());
            reports[*i].conditions = merge_conditions(&[], &o.conditions, 1, now);
            reports[*i].entry = o.entry.clone();
        }
    }
    reports
}

async fn check_one(
    doc: &Document,
    schema: &serde_json::Value,
    secrets: &std::collections::BTreeMap<String, SecretData>,
    opts: &CheckOptions,
    cache: &DiscoveryCache,
    env: &Env,
    now: Timestamp,
) -> ProviderReport {
    let ns = doc.namespace(&opts.namespace).to_string();
    let key = format!("{ns}/{}", doc.name());
    let mut report = ProviderReport {
        source: doc.source.clone(),
        key,
        admission_errors: Vec::new(),
        validation: None,
        conditions: Vec::new(),
        unavailable: None,
        domains: Vec::new(),
    };
    if let Some(e) = unserved_version(doc) {
        report.admission_errors.push(e);
        return report;
    }
    report.admission_errors = manifest::admission_errors(schema, &doc.value);
    if !report.admission_errors.is_empty() {
        return report;
    }
    let mut idp: IdentityProvider = match serde_json::from_value(doc.value.clone()) {
        Ok(i) => i,
        Err(e) => {
            report
                .admission_errors
                .push(format!("spec does not parse: {e}"));
            return report;
        }
    };
    idp.metadata.namespace = Some(ns.clone());
    idp.metadata.generation.get_or_insert(1);
    let empty = SecretData::new();
    let ns_secrets = secrets.get(&ns).unwrap_or(&empty);
    let facts = Facts::new(&idp.spec, &ns, ns_secrets);
    let discovery = match (opts.live, facts.discovery_request()) {
        (true, Some(req)) => Some(cache.get(req).await),
        _ => None,
    };
    let mut v = validate_with(&idp, &facts, discovery.as_deref(), None, env);
    report.domains = match (&opts.domains, opts.live) {
        (Some(verifier), true) => verifier.verify(&idp, facts.client_id(), &[], now).await,
        _ => offline_domains(&idp),
    };
    v.programming
        .set_domains(&report.domains, &idp.spec.issuer, facts.client_id());
    report.conditions = merge_conditions(
        &[],
        &v.conditions,
        idp.metadata.generation.unwrap_or(1),
        now,
    );
    report.unavailable = crate::controller::validate::unavailable_entry(&idp, &v);
    report.validation = Some(v);
    report
}

/// spec.domains checked as names only: refused ones with their reason,
/// the others not looked up.
fn offline_domains(idp: &IdentityProvider) -> Vec<crate::domains::DomainStatus> {
    use crate::domains::{self, DomainStatus, states};
    let (valid, mut out) = domains::partition(&idp.spec.domains);
    out.extend(valid.iter().map(|d| {
        DomainStatus::unlooked(
            d,
            states::PENDING,
            reasons::NOT_CHECKED,
            "not looked up: --live checks the DNS record",
        )
    }));
    // The order the controller's status.domains has.
    out.sort_by_cached_key(|d| d.domain.to_ascii_lowercase());
    out
}
