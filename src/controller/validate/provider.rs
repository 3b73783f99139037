//! The live provider: discovery and the JWKS, the `DiscoverySucceeded` and
//! `JWKSValid` conditions, and what status reports as discovered.

use super::CondResult;
use crate::{
    api::{
        DiscoveredStatus,
        conditions::{Status, reasons, types},
    },
    oidc::discovery::{DiscoveryOutcome, discovery_url},
};

/// Why discovery was not run, when it was not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRun {
    /// The spec is invalid (see `ConfigValid`).
    InvalidSpec,
    /// The CA bundle Secret does not resolve (see `SecretResolved`).
    NoCaBundle,
    /// It could have run but was not asked for (`check` without `--live`).
    Offline,
}

/// `DiscoverySucceeded` and `JWKSValid`.
pub fn provider_conditions(
    issuer: &str,
    discovery: Result<&DiscoveryOutcome, NotRun>,
) -> (CondResult, CondResult) {
    let d = match discovery {
        Ok(d) => d,
        Err(NotRun::InvalidSpec) => {
            return unable_both("not checked until the spec is valid (see ConfigValid)");
        }
        Err(NotRun::NoCaBundle) => {
            return unable_both(
                "not checked until the CA bundle Secret resolves (see SecretResolved)",
            );
        }
        Err(NotRun::Offline) => {
            return (
                not_checked(
                    types::DISCOVERY_SUCCEEDED,
                    "discovery was not checked (offline)",
                ),
                not_checked(types::JWKS_VALID, "the JWKS was not checked (offline)"),
            );
        }
    };
    let discovery_cond = match &d.endpoints {
        Ok(e) if e.discovered => CondResult::ok(
            types::DISCOVERY_SUCCEEDED,
            reasons::DISCOVERED,
            format!("discovered {} at {}", e.issuer, discovery_url(issuer)),
        ),
        Ok(_) => CondResult::ok(
            types::DISCOVERY_SUCCEEDED,
            reasons::ENDPOINTS_CONFIGURED,
            "discovery skipped: authorization, token and jwks endpoints are configured in spec.endpoints",
        ),
        Err(f) => CondResult::fail(types::DISCOVERY_SUCCEEDED, f),
    };
    let jwks_cond = match &d.jwks {
        Some(Ok(j)) => CondResult::ok(
            types::JWKS_VALID,
            reasons::KEYS_VALID,
            format!(
                "{} usable signing key(s) of {}",
                j.usable_keys, j.total_keys
            ),
        ),
        Some(Err(f)) => CondResult::fail(types::JWKS_VALID, f),
        None => CondResult::unknown(
            types::JWKS_VALID,
            "not checked until discovery succeeds (see DiscoverySucceeded)",
        ),
    };
    (discovery_cond, jwks_cond)
}

fn unable_both(message: &str) -> (CondResult, CondResult) {
    (
        CondResult::unknown(types::DISCOVERY_SUCCEEDED, message),
        CondResult::unknown(types::JWKS_VALID, message),
    )
}

fn not_checked(type_: &'static str, message: &str) -> CondResult {
    CondResult::new(type_, Status::Unknown, reasons::NOT_CHECKED, message)
}

/// Whether the provider's failure may heal by itself (an outage rather than
/// a wrong configuration): only then is a last known good entry kept.
pub fn failed_transiently(d: &DiscoveryOutcome) -> bool {
    match &d.endpoints {
        Err(f) => f.is_transient(),
        Ok(_) => matches!(&d.jwks, Some(Err(f)) if f.is_transient()),
    }
}

/// The endpoints and key count status reports, when discovery succeeded.
pub fn discovered_status(d: &DiscoveryOutcome) -> Option<DiscoveredStatus> {
    let e = d.endpoints.as_ref().ok()?;
    Some(DiscoveredStatus {
        issuer: e.issuer.clone(),
        authorization_endpoint: Some(e.authorization_endpoint.clone()),
        token_endpoint: Some(e.token_endpoint.clone()),
        userinfo_endpoint: e.userinfo_endpoint.clone(),
        jwks_uri: Some(e.jwks_uri.clone()),
        end_session_endpoint: e.end_session_endpoint.clone(),
        jwks_key_count: d
            .jwks
            .as_ref()
            .and_then(|j| j.as_ref().ok())
            .map_or(0, |j| j.usable_keys as i32),
        last_checked: Some(d.fetched_at),
    })
}
