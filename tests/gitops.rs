//! What GitOps tools make of a provider's status: kstatus' `Reconciling`
//! and `Stalled` (Flux and `kstatus` read them), and the chart's Argo CD
//! health script (`charts/sso-operator/files/argocd-health.lua`) run by a
//! real Lua 5.1 interpreter (Argo CD runs gopher-lua, a Lua 5.1) on the
//! statuses the pure core computes for each phase.

use sso_test_support as common;

use common::{discovery, env, fixed_time, idp, programmed_entry, secrets};
use mlua::{Lua, LuaSerdeExt as _};
use sso_operator::{
    api::{IdentityProvider, conditions::phases},
    controller::{
        status::build_status,
        validate::{SecretData, validate},
    },
    oidc::discovery::{DiscoveryOutcome, Failure},
};

const SCRIPT: &str = include_str!("../charts/sso-operator/files/argocd-health.lua");

/// The provider with the status the controller would write for these
/// inputs (as the cluster returns it: conditions with times).
fn with_status(
    mut i: IdentityProvider,
    secrets: &SecretData,
    discovery: Option<&DiscoveryOutcome>,
    previous: bool,
) -> (IdentityProvider, &'static str) {
    let prev = previous.then(programmed_entry);
    let v = validate(&i, secrets, discovery, prev.as_ref(), &env());
    let generation = i.metadata.generation.unwrap_or_default();
    i.status = Some(build_status(None, &v, generation, fixed_time()));
    (i, v.phase)
}

fn outage() -> DiscoveryOutcome {
    DiscoveryOutcome {
        endpoints: Err(Failure::new("Unreachable", "the issuer did not answer")),
        jwks: None,
        fetched_at: fixed_time(),
    }
}

/// Argo CD's verdict: the script's returned `status` and `message`.
fn argo(obj: &IdentityProvider) -> (String, String) {
    let lua = Lua::new();
    let value = lua.to_value(obj).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: mlua::Table = lua.load(SCRIPT).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn condition<'a>(obj: &'a IdentityProvider, type_: &str) -> (&'a str, &'a str) {
    let c = obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_}"));
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn each_phase_reads_right_in_kstatus_and_argo_cd() {
    let no_secret = SecretData::new();
    let mut disabled = idp();
    disabled.spec.enabled = false;
    // (case, provider and phase, Reconciling, Stalled, Argo CD)
    type Row = (
        &'static str,
        (IdentityProvider, &'static str),
        &'static str,
        &'static str,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            "ready",
            with_status(idp(), &secrets(), Some(&discovery()), false),
            "False",
            "False",
            "Healthy",
        ),
        (
            "first check pending",
            with_status(idp(), &secrets(), None, false),
            "True",
            "False",
            "Progressing",
        ),
        (
            "Secret missing",
            with_status(idp(), &no_secret, Some(&discovery()), false),
            "False",
            "True",
            "Degraded",
        ),
        (
            "IdP down, never worked",
            with_status(idp(), &secrets(), Some(&outage()), false),
            "False",
            "True",
            "Degraded",
        ),
        (
            "IdP down, last known good",
            with_status(idp(), &secrets(), Some(&outage()), true),
            "True",
            "False",
            "Degraded",
        ),
        (
            "disabled",
            with_status(disabled, &secrets(), Some(&discovery()), false),
            "False",
            "False",
            "Suspended",
        ),
    ];
    let mut failures = Vec::new();
    for (case, (obj, phase), reconciling, stalled, health) in &rows {
        let got = (
            condition(obj, "Reconciling").0,
            condition(obj, "Stalled").0,
            argo(obj).0,
        );
        if got != (*reconciling, *stalled, health.to_string()) {
            failures.push(format!(
                "{case} (phase {phase}): got Reconciling={} Stalled={} Argo={}, want {reconciling} {stalled} {health}",
                got.0, got.1, got.2
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A True one carries Ready's reason: Flux prints it.
    let (obj, phase) = &rows[2].1;
    assert_eq!(*phase, phases::ERROR);
    assert_eq!(condition(obj, "Stalled"), ("True", "SecretNotFound"));
    let (status, message) = argo(obj);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("SecretNotFound: "), "{message}");
}

#[test]
fn argo_cd_waits_for_the_controller_to_see_the_current_generation() {
    let (mut obj, _) = with_status(idp(), &secrets(), Some(&discovery()), false);
    assert_eq!(argo(&obj).0, "Healthy");
    // A new generation applied, not yet reconciled.
    obj.metadata.generation = Some(obj.metadata.generation.unwrap_or_default() + 1);
    assert_eq!(argo(&obj).0, "Progressing");
    // No status at all yet.
    obj.status = None;
    assert_eq!(argo(&obj).0, "Progressing");
}
