//! Status merge: timestamps kept unless a condition flips, sorted
//! conditions, no write when only time changed, Events on transitions.

use sso_test_support as common;

use common::*;
use sso_operator::{
    api::conditions::{reasons as r, types as t},
    controller::{
        status::{build_status, needs_write, transitions},
        validate::validate,
    },
    oidc::discovery::{DiscoveryOutcome, Failure},
};

fn later() -> jiff::Timestamp {
    "2026-11-23T11:30:00Z".parse().unwrap()
}

#[test]
fn first_status_is_complete_and_sorted() {
    let i = idp();
    let v = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let s = build_status(None, &v, 3, fixed_time());
    assert_eq!(s.phase.as_deref(), Some("Ready"));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        s.redirect_uri.as_deref(),
        Some("https://sso.example.com/oauth/callback/team-a/corp")
    );
    let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "ConfigValid",
            "DiscoverySucceeded",
            "JWKSValid",
            "Programmed",
            "Ready",
            "Reconciling",
            "SecretResolved",
            "Stalled"
        ]
    );
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(3) && c.last_transition_time == fixed_time())
    );
    let d = s.discovered.unwrap();
    assert_eq!(
        (d.jwks_key_count, d.token_endpoint.as_deref()),
        (2, Some("https://idp.example.com/token"))
    );
    assert!(needs_write(None, &build_status(None, &v, 3, fixed_time())));
}

#[test]
fn unchanged_provider_is_not_rewritten() {
    let i = idp();
    let v = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let first = build_status(None, &v, 3, fixed_time());
    // Re-validated later: a fresh discovery timestamp and a later clock.
    let mut d = discovery();
    d.fetched_at = later();
    let v2 = validate(&i, &secrets(), Some(&d), None, &env());
    let second = build_status(Some(&first), &v2, 3, later());
    assert!(!needs_write(Some(&first), &second), "only time changed");
    assert_eq!(
        second, first,
        "timestamps are carried over, so even a forced write would be identical"
    );
}

#[test]
fn transition_time_moves_only_when_status_flips() {
    let i = idp();
    let good = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let s1 = build_status(None, &good, 3, fixed_time());
    let down = DiscoveryOutcome {
        endpoints: Err(Failure::new(r::UNREACHABLE, "refused")),
        jwks: None,
        fetched_at: later(),
    };
    let bad = validate(&i, &secrets(), Some(&down), None, &env());
    let s2 = build_status(Some(&s1), &bad, 3, later());
    assert!(needs_write(Some(&s1), &s2));
    let get = |s: &sso_operator::api::IdentityProviderStatus, ty: &str| {
        s.conditions.iter().find(|c| c.type_ == ty).unwrap().clone()
    };
    assert_eq!(
        get(&s2, t::CONFIG_VALID).last_transition_time,
        fixed_time(),
        "ConfigValid stayed True"
    );
    assert_eq!(
        get(&s2, t::DISCOVERY_SUCCEEDED).last_transition_time,
        later()
    );
    assert_eq!(get(&s2, t::READY).last_transition_time, later());
    // The endpoints in use are no longer known and not programmed.
    assert_eq!(s2.discovered, None);
    assert_eq!(s2.phase.as_deref(), Some("Error"));

    let ev = transitions(&s1.conditions, &s2.conditions);
    let summary: Vec<(&str, &str, &str, bool)> = ev
        .iter()
        .map(|e| {
            (
                e.type_.as_str(),
                e.status.as_str(),
                e.reason.as_str(),
                e.warning,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("DiscoverySucceeded", "False", "Unreachable", true),
            ("JWKSValid", "Unknown", "UnableToValidate", true),
            ("Programmed", "False", "NotReady", true),
            ("Ready", "False", "Unreachable", true),
        ]
    );
}

#[test]
fn first_events_are_ready_and_failures_only() {
    let i = idp();
    let good = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let s = build_status(None, &good, 3, fixed_time());
    let ev = transitions(&[], &s.conditions);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].type_.as_str(), ev[0].reason.as_str(), ev[0].warning),
        ("Ready", "Ready", false)
    );
    // No transition, no event.
    assert!(transitions(&s.conditions, &s.conditions).is_empty());
}

#[test]
fn new_generation_is_a_write() {
    let mut i = idp();
    let v = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let s1 = build_status(None, &v, 3, fixed_time());
    i.metadata.generation = Some(4);
    let v2 = validate(&i, &secrets(), Some(&discovery()), None, &env());
    let s2 = build_status(Some(&s1), &v2, 4, later());
    assert!(needs_write(Some(&s1), &s2));
    assert!(
        s2.conditions
            .iter()
            .all(|c| c.observed_generation == Some(4) && c.last_transition_time == fixed_time())
    );
}
