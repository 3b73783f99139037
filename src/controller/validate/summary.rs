//! The summary of the per-input conditions: `Programmed`, `Ready`, the
//! phase, and whether the broker gets a new entry, keeps the last known
//! good one, or drops the provider.

use super::{CondResult, Env, Programming, Resolved, effective_scopes, redirect_uri};
use crate::{
    api::{
        IdentityProvider, PkceMode,
        conditions::{Status, phases, reasons, types},
    },
    config::ProgrammedProvider,
    oidc::discovery::ProviderEndpoints,
};

/// What [`summarize`] decides.
pub struct Summary {
    pub programming: Programming,
    pub phase: &'static str,
    pub programmed: CondResult,
    pub ready: CondResult,
}

/// kstatus' `Reconciling` and `Stalled`, from the phase and `Ready`:
/// Reconciling while the first check is pending or an outage is retried
/// (phase `Pending`, `Degraded`), Stalled when the provider cannot work
/// until someone changes something (phase `Error`). Each True one takes
/// Ready's reason and message.
pub fn kstatus(phase: &str, ready: &CondResult) -> [CondResult; 2] {
    let (reconciling, stalled) = match phase {
        phases::PENDING | phases::DEGRADED => (true, false),
        phases::ERROR => (false, true),
        _ => (false, false),
    };
    let restate = |type_: &'static str, on: bool, off_reason: &str, off_message: &str| {
        if on {
            CondResult::new(type_, Status::True, &ready.reason, ready.message.clone())
        } else {
            CondResult::new(type_, Status::False, off_reason, off_message)
        }
    };
    [
        restate(
            types::RECONCILING,
            reconciling,
            reasons::RECONCILED,
            "the controller has finished with this generation",
        ),
        restate(
            types::STALLED,
            stalled,
            reasons::NOT_STALLED,
            "nothing stands in the way of this generation",
        ),
    ]
}

/// The per-input facts a summary needs.
pub struct Checked<'a> {
    /// `ConfigValid`, `SecretResolved`, `DiscoverySucceeded`, `JWKSValid`,
    /// in that order.
    pub conditions: [&'a CondResult; 4],
    /// Present when the Secrets resolved.
    pub resolved: Option<&'a Resolved>,
    /// Present when discovery succeeded.
    pub endpoints: Option<&'a ProviderEndpoints>,
    /// The provider answered but failed in a way that may heal by itself.
    pub failed_transiently: bool,
}

pub fn summarize(
    idp: &IdentityProvider,
    checked: &Checked<'_>,
    previous: Option<&ProgrammedProvider>,
    env: &Env,
) -> Summary {
    if !idp.spec.enabled {
        return Summary {
            programming: Programming::Remove,
            phase: phases::DISABLED,
            programmed: CondResult::new(
                types::PROGRAMMED,
                Status::False,
                reasons::DISABLED,
                "spec.enabled is false: the provider is not offered for login",
            ),
            ready: CondResult::new(
                types::READY,
                Status::False,
                reasons::DISABLED,
                "spec.enabled is false: the provider is validated but not offered for login",
            ),
        };
    }
    let first_bad = checked.conditions.iter().find(|c| !c.is_true()).copied();
    let Some(bad) = first_bad else {
        let (Some(r), Some(e)) = (checked.resolved, checked.endpoints) else {
            unreachable!("all checks true implies resolved secrets and endpoints")
        };
        let generation = idp.metadata.generation.unwrap_or_default();
        return Summary {
            programming: Programming::Program(Box::new(program(idp, r, e, env))),
            phase: phases::READY,
            programmed: CondResult::ok(
                types::PROGRAMMED,
                reasons::PROGRAMMED,
                format!("generation {generation} is programmed into the broker"),
            ),
            ready: CondResult::ok(
                types::READY,
                reasons::READY,
                "the provider is validated and offered for login",
            ),
        };
    };
    // Last known good: a provider that worked keeps serving through a
    // transient provider failure, as long as its spec and Secrets are fine.
    // Only what discovery decided (issuer, endpoints, CA, algorithms) is
    // the last good generation's; everything else is the current spec, so
    // an access rule tightened during an outage takes effect at once.
    let [config, secret, ..] = checked.conditions;
    let transient_only = config.is_true() && secret.is_true() && checked.failed_transiently;
    if let (true, Some(prev), Some(r)) = (transient_only, previous, checked.resolved) {
        let mut kept = program(idp, r, &prev.endpoints, env);
        kept.issuer = prev.issuer.clone();
        kept.ca_bundle = prev.ca_bundle.clone();
        kept.generation = prev.generation;
        let generation = idp.metadata.generation.unwrap_or_default();
        return Summary {
            programming: Programming::KeepLastKnownGood(Box::new(kept)),
            phase: phases::DEGRADED,
            programmed: CondResult::ok(
                types::PROGRAMMED,
                reasons::LAST_KNOWN_GOOD,
                format!(
                    "the broker keeps the provider endpoints of generation {} (last known good) while the provider fails; access rules, claims and credentials are generation {generation}'s",
                    prev.generation
                ),
            ),
            ready: CondResult::new(
                types::READY,
                Status::False,
                reasons::DEGRADED,
                format!(
                    "{} is False ({}): {}; logins continue with the last known good configuration",
                    bad.type_, bad.reason, bad.message
                ),
            ),
        };
    }
    if bad.status == Status::Unknown && bad.reason == reasons::NOT_CHECKED {
        return Summary {
            programming: Programming::Remove,
            phase: phases::PENDING,
            programmed: CondResult::new(
                types::PROGRAMMED,
                Status::Unknown,
                reasons::NOT_CHECKED,
                "not programmed: the provider was not checked",
            ),
            ready: CondResult::new(
                types::READY,
                Status::Unknown,
                reasons::NOT_CHECKED,
                bad.message.clone(),
            ),
        };
    }
    Summary {
        programming: Programming::Remove,
        phase: phases::ERROR,
        programmed: CondResult::new(
            types::PROGRAMMED,
            Status::False,
            reasons::NOT_READY,
            format!("not programmed: {} is {}", bad.type_, bad.status),
        ),
        ready: CondResult::new(
            types::READY,
            Status::False,
            &bad.reason,
            format!(
                "{} is {} ({}): {}",
                bad.type_, bad.status, bad.reason, bad.message
            ),
        ),
    }
}

/// Builds the broker entry for a fully validated provider.
fn program(
    idp: &IdentityProvider,
    resolved: &Resolved,
    endpoints: &ProviderEndpoints,
    env: &Env,
) -> ProgrammedProvider {
    let spec = &idp.spec;
    let ns = idp.metadata.namespace.clone().unwrap_or_default();
    let name = idp.metadata.name.clone().unwrap_or_default();
    ProgrammedProvider {
        display_name: spec.display_name.clone().unwrap_or_else(|| name.clone()),
        redirect_uri: redirect_uri(&env.public_url, &ns, &name),
        domains: Vec::new(),
        verified_domains: Vec::new(),
        namespace: ns,
        name,
        generation: idp.metadata.generation.unwrap_or_default(),
        issuer: spec.issuer.clone(),
        client_id: resolved.client_id.clone(),
        client_secret: resolved.client_secret.clone(),
        client_auth_method: spec.client_auth_method,
        scopes: effective_scopes(spec),
        pkce: spec.pkce == PkceMode::S256,
        authorize_params: spec.authorize_params.clone(),
        endpoints: endpoints.clone(),
        id_token_algs: if spec.id_token_signing_algs.is_empty() {
            endpoints.id_token_signing_algs.clone().unwrap_or_default()
        } else {
            let mut algs: Vec<String> = spec
                .id_token_signing_algs
                .iter()
                .map(|a| a.as_str().to_string())
                .collect();
            algs.dedup();
            algs
        },
        ca_bundle: resolved.ca_bundle.clone(),
        claims: spec.claims.clone(),
        require_verified_email: spec.require_verified_email,
        allowed_email_domains: spec.allowed_email_domains.clone(),
        allowed_groups: spec.allowed_groups.clone(),
        allowed_users: spec.allowed_users.clone(),
    }
}
