//! The pure validation core:
//! `(spec, secrets, discovery outcome, last programmed entry, env) -> (conditions, programming)`.
//!
//! No I/O and no clock reads: the controller, `sso-operator check` and
//! `sso-operator dev` all call it with inputs they fetched. One checking
//! function per input returns that input's condition, as Pinniped's
//! upstream watcher does:
//!
//! | input | module | condition |
//! |---|---|---|
//! | the spec (and the spec against the provider) | [`spec`] | `ConfigValid` |
//! | the referenced Secrets | [`secrets`] | `SecretResolved` |
//! | the live provider | [`provider`] | `DiscoverySucceeded`, `JWKSValid` |
//! | all of the above, the last programmed entry | [`summary`] | `Programmed`, `Ready`, phase |
//!
//! What the spec and the Secrets tell is computed once per reconcile in
//! [`Facts`] (the controller asks it what to discover, then validates with
//! the same facts).

pub mod provider;
pub mod secrets;
pub mod spec;
pub mod summary;

use url::Url;

pub use provider::NotRun;
pub use secrets::{
    CREDENTIALS_SECRET_TYPE, Resolved, SecretContent, SecretData, referenced_secrets,
};
pub use spec::{check_spec, effective_scopes, redirect_uri};

use crate::{
    api::{
        DiscoveredStatus, IdentityProvider, IdentityProviderSpec,
        conditions::{Status, phases, reasons, types},
    },
    config::{ProgrammedProvider, Unavailable},
    oidc::discovery::{DiscoveryOutcome, DiscoveryRequest, Failure},
};

/// A condition before the status merge adds timestamps and generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondResult {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl CondResult {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::True, reason, message)
    }
    pub fn fail(type_: &'static str, f: &Failure) -> Self {
        Self::new(type_, Status::False, &f.reason, f.message.clone())
    }
    /// A condition that could not be evaluated because a prerequisite failed.
    pub fn unknown(type_: &'static str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::Unknown, reasons::UNABLE_TO_VALIDATE, message)
    }
    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

/// What the broker config should hold for this provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Programming {
    /// Program (or replace with) this entry.
    Program(Box<ProgrammedProvider>),
    /// Keep serving this last known good entry (credentials refreshed).
    KeepLastKnownGood(Box<ProgrammedProvider>),
    /// Not in the broker config.
    Remove,
}

impl Programming {
    pub fn entry(&self) -> Option<&ProgrammedProvider> {
        match self {
            Self::Program(p) | Self::KeepLastKnownGood(p) => Some(p),
            Self::Remove => None,
        }
    }

    /// Sets the entry's listed and verified domains (from the current
    /// generation and the latest DNS checks, last known good or not).
    /// The records prove domains for `issuer` and `client_id` (the spec's):
    /// an entry serving another issuer or client (last known good while
    /// the new one fails) gets no verified domain, or a record made for
    /// the new issuer would vouch for the old one.
    pub fn set_domains(
        &mut self,
        statuses: &[crate::domains::DomainStatus],
        issuer: &str,
        client_id: Option<&str>,
    ) {
        let (Self::Program(p) | Self::KeepLastKnownGood(p)) = self else {
            return;
        };
        let bound = p.issuer == issuer && Some(p.client_id.as_str()) == client_id;
        let accepted = statuses.iter().filter(|d| {
            !d.record_value.is_empty() || d.reason == crate::domains::reasons::KEY_NOT_READY
        });
        p.domains = accepted.clone().map(|d| d.domain.clone()).collect();
        p.verified_domains = accepted
            .filter(|d| bound && d.state == crate::domains::states::VERIFIED)
            .map(|d| d.domain.clone())
            .collect();
    }
}

/// Why a provider that is not programmed cannot serve, for the broker's
/// login page and error page; `None` when it is programmed.
pub fn unavailable_entry(idp: &IdentityProvider, v: &Validation) -> Option<Unavailable> {
    if v.programming.entry().is_some() {
        return None;
    }
    let ready = v.condition(types::READY);
    Some(Unavailable {
        display_name: idp
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(idp)),
        disabled: !idp.spec.enabled,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
    })
}

/// The outcome of validating one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// One per type in [`types::ALL`], in that order.
    pub conditions: Vec<CondResult>,
    pub phase: &'static str,
    pub programming: Programming,
    pub redirect_uri: String,
    pub discovered: Option<DiscoveredStatus>,
}

impl Validation {
    /// Takes the provider out of the broker when it is not among the
    /// `max` oldest of its namespace (`position` counts from 0, oldest
    /// first; `max` 0 means no limit): one team's ten thousand providers
    /// cannot take the shared broker's memory from the others. The checks
    /// stay as they were; Programmed, Ready and Stalled say why.
    pub fn limit_per_namespace(&mut self, ns: &str, position: usize, max: usize) {
        if max == 0 || position < max {
            return;
        }
        let why = format!(
            "namespace {ns} holds more IdentityProviders than the {max} the cluster allows per namespace (--max-providers-per-namespace); this one is number {} by age, so it is not offered for login: delete one, or ask the cluster administrator",
            position + 1
        );
        self.programming = Programming::Remove;
        self.phase = phases::ERROR;
        let set = |c: &mut CondResult, status: Status, reason: &str, message: &str| {
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
        };
        for c in &mut self.conditions {
            match c.type_ {
                types::PROGRAMMED | types::READY => {
                    set(c, Status::False, reasons::NAMESPACE_LIMIT, &why)
                }
                types::STALLED => set(c, Status::True, reasons::NAMESPACE_LIMIT, &why),
                types::RECONCILING => set(
                    c,
                    Status::False,
                    reasons::RECONCILED,
                    "the controller has finished with this generation",
                ),
                _ => {}
            }
        }
    }

    pub fn condition(&self, type_: &str) -> &CondResult {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("every condition type is present")
    }
}

/// Facts about the environment the core needs.
#[derive(Clone, Debug)]
pub struct Env {
    /// The broker's public base URL, e.g. `https://sso.example.com`.
    pub public_url: Url,
}

/// What the spec and the Secrets tell, computed once per reconcile: the
/// spec check, the CA bundle (parsed once) and the credentials.
pub struct Facts {
    spec: Result<(), Failure>,
    ca: Result<Option<String>, Failure>,
    resolved: Result<Resolved, Failure>,
    request: Option<DiscoveryRequest>,
}

impl Facts {
    pub fn new(spec: &IdentityProviderSpec, ns: &str, secrets: &SecretData) -> Self {
        let spec_check = check_spec(spec);
        let ca = secrets::resolve_ca(ns, spec, secrets);
        let resolved =
            secrets::with_ca(secrets::resolve_credentials(ns, spec, secrets), ca.clone());
        // The CA bundle resolves independently of the client credentials:
        // a missing client secret does not stop discovery.
        let request = match (&spec_check, &ca) {
            (Ok(()), Ok(ca_bundle)) => Some(DiscoveryRequest {
                issuer: spec.issuer.clone(),
                overrides: spec.endpoints.as_deref().cloned().unwrap_or_default(),
                ca_bundle: ca_bundle.clone(),
            }),
            _ => None,
        };
        Self {
            spec: spec_check,
            ca,
            resolved,
            request,
        }
    }

    /// What to ask the discovery cache, or `None` when the spec or the CA
    /// bundle is not usable yet.
    pub fn discovery_request(&self) -> Option<&DiscoveryRequest> {
        self.request.as_ref()
    }

    /// The client ID, once the credentials resolve.
    pub fn client_id(&self) -> Option<&str> {
        self.resolved.as_ref().ok().map(|r| r.client_id.as_str())
    }

    fn not_run(&self) -> NotRun {
        match (&self.spec, &self.ca) {
            (Err(_), _) => NotRun::InvalidSpec,
            (Ok(()), Err(_)) => NotRun::NoCaBundle,
            (Ok(()), Ok(_)) => NotRun::Offline,
        }
    }
}

/// What to ask the discovery cache, or `None` when the spec or the CA
/// bundle is not usable yet.
pub fn discovery_request(
    spec: &IdentityProviderSpec,
    ns: &str,
    secrets: &SecretData,
) -> Option<DiscoveryRequest> {
    Facts::new(spec, ns, secrets).request
}

/// Validates one provider. `discovery` is `None` when it was not run
/// (invalid spec, unresolvable CA bundle, or `check` without `--live`);
/// `previous` is the provider's entry in the broker config, if any.
pub fn validate(
    idp: &IdentityProvider,
    secrets: &SecretData,
    discovery: Option<&DiscoveryOutcome>,
    previous: Option<&ProgrammedProvider>,
    env: &Env,
) -> Validation {
    let ns = idp.metadata.namespace.as_deref().unwrap_or_default();
    let facts = Facts::new(&idp.spec, ns, secrets);
    validate_with(idp, &facts, discovery, previous, env)
}

/// [`validate`] with facts already computed (by the caller that used them
/// to decide what to discover).
pub fn validate_with(
    idp: &IdentityProvider,
    facts: &Facts,
    discovery: Option<&DiscoveryOutcome>,
    previous: Option<&ProgrammedProvider>,
    env: &Env,
) -> Validation {
    let spec = &idp.spec;
    // An outcome is only meaningful for a request the spec can make.
    let discovery = match (facts.request.is_some(), discovery) {
        (true, Some(d)) => Ok(d),
        _ => Err(facts.not_run()),
    };
    let endpoints = discovery.ok().and_then(|d| d.endpoints.as_ref().ok());
    let resolved = facts.resolved.as_ref().ok();

    let config = spec::config_valid(
        spec,
        &facts.spec,
        endpoints,
        resolved.and_then(|r| r.client_key_alg),
    );
    let secret = secrets::secret_resolved(spec, &facts.resolved);
    let (disc, jwks) = provider::provider_conditions(&spec.issuer, discovery);
    let summary = summary::summarize(
        idp,
        &summary::Checked {
            conditions: [&config, &secret, &disc, &jwks],
            resolved,
            endpoints,
            failed_transiently: discovery.is_ok_and(provider::failed_transiently),
        },
        previous,
        env,
    );

    let ns = idp.metadata.namespace.as_deref().unwrap_or_default();
    let name = idp.metadata.name.as_deref().unwrap_or_default();
    let [reconciling, stalled] = summary::kstatus(summary.phase, &summary.ready);
    Validation {
        conditions: vec![
            config,
            secret,
            disc,
            jwks,
            summary.programmed,
            summary.ready,
            reconciling,
            stalled,
        ],
        phase: summary.phase,
        programming: summary.programming,
        redirect_uri: redirect_uri(&env.public_url, ns, name),
        discovered: discovery.ok().and_then(provider::discovered_status),
    }
}
