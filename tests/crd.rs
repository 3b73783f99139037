//! The CRD: the committed file matches the Rust types, every CEL rule
//! accepts and rejects what it should (run by kube's own CEL interpreter),
//! and the schema is structural enough to catch typos.

use std::collections::BTreeSet;

use kube::CustomResourceExt;
use serde_json::{Value, json};
use sso_operator::{
    api::{IdentityProvider, policy::AccessPolicy},
    manifest,
};
use sso_test_support::crd_cases::{self, base, object, with};

#[test]
fn committed_crds_match_the_types() {
    for (crd, file, committed) in [
        (
            IdentityProvider::crd(),
            "identityprovider",
            include_str!("../crds/identityprovider.yaml"),
        ),
        (
            AccessPolicy::crd(),
            "accesspolicy",
            include_str!("../crds/accesspolicy.yaml"),
        ),
    ] {
        let plural = &crd.spec.names.plural;
        assert!(
            serde_yaml::to_string(&crd).unwrap() == committed,
            "crds/{file}.yaml is stale: run `cargo run -- crd {plural} > crds/{file}.yaml` and commit it"
        );
    }
}

#[test]
fn crd_names_and_columns() {
    let crd = IdentityProvider::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("identityproviders.sso-operator.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["idp".to_string()][..])
    );
    assert_eq!(
        crd.spec.names.categories.as_deref(),
        Some(&["sso".to_string()][..])
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let cols: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Ready", "Phase", "Issuer", "Redirect URI", "Age"]);
}

/// Every `description` is present on spec fields: `kubectl explain` shows them.
#[test]
fn every_spec_field_is_described() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                let p = format!("{path}.{k}");
                if s.get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(p.clone());
                }
                walk(&p, s, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for kind in ["IdentityProvider", "AccessPolicy"] {
        let schema = manifest::crd_schema_for(kind).unwrap();
        walk(
            &format!("{kind}.spec"),
            &schema["properties"]["spec"],
            &mut missing,
        );
        walk(
            &format!("{kind}.status"),
            &schema["properties"]["status"],
            &mut missing,
        );
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

fn all_rules(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(m) => {
            if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                for r in rules {
                    out.insert(r["rule"].as_str().unwrap().to_string());
                }
            }
            m.values().for_each(|v| all_rules(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| all_rules(v, out)),
        _ => {}
    }
}

/// The CEL rules an object violates (evaluated by kube's CEL interpreter
/// against its kind's schema).
fn failing_rules(object: &Value) -> Vec<(String, String)> {
    let schema = manifest::crd_schema_for(object["kind"].as_str().unwrap()).unwrap();
    match kube::core::cel::Validator::new().validate(&schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errs) => errs
            .iter()
            .map(|e| (e.rule.clone(), e.message.clone()))
            .collect(),
    }
}

#[test]
fn every_cel_rule_accepts_and_rejects() {
    let accepted = crd_cases::accepted();
    for object in accepted {
        let f = failing_rules(&object);
        assert!(f.is_empty(), "{object} should be accepted, failed {f:?}");
        let schema = manifest::crd_schema_for(object["kind"].as_str().unwrap()).unwrap();
        let structural = manifest::admission_errors(&schema, &object);
        assert!(structural.is_empty(), "{object}: {structural:?}");
    }
    let rejected = crd_cases::rejected();
    let mut covered = BTreeSet::new();
    for (object, fragment) in rejected {
        let f = failing_rules(&object);
        let hit = f.iter().find(|(_, m)| m.contains(fragment));
        assert!(
            hit.is_some(),
            "{object} should be rejected by the rule saying {fragment:?}; failures: {f:?}"
        );
        covered.insert(hit.unwrap().0.clone());
    }
    let mut rules = BTreeSet::new();
    for kind in ["IdentityProvider", "AccessPolicy"] {
        all_rules(&manifest::crd_schema_for(kind).unwrap(), &mut rules);
    }
    let untested: Vec<_> = rules.difference(&covered).collect();
    assert!(
        untested.is_empty(),
        "CEL rules without a rejected example: {untested:?}"
    );
}

#[test]
fn derived_validate_cel_runs_the_same_rules() {
    let mut idp: IdentityProvider = serde_json::from_value(object(base())).unwrap();
    assert!(idp.validate_cel().is_ok());
    idp.spec.issuer = "http://idp.example.com".into();
    let errs = idp.validate_cel().unwrap_err();
    assert!(
        errs.iter().any(|e| e.message.contains("https URL")),
        "{errs:?}"
    );
}

#[test]
fn structural_schema_rejects_typos_and_wrong_types() {
    let schema = manifest::crd_schema();
    let cases = [
        (
            with(json!({"scope": ["openid"]})),
            "spec.scope: unknown field",
        ),
        (
            with(json!({"pkce": "s256"})),
            "spec.pkce: Unsupported value: \"s256\"",
        ),
        (
            with(json!({"clientAuthMethod": "basic"})),
            "spec.clientAuthMethod: Unsupported value",
        ),
        (
            with(json!({"enabled": "yes"})),
            "spec.enabled: Invalid value: \"yes\": must be of type boolean",
        ),
        (
            with(json!({"scopes": "openid email"})),
            "spec.scopes: Invalid value",
        ),
        (
            with(json!({"clientSecretRef": {"name": "s"}})),
            "spec.clientSecretRef.key: Required value",
        ),
        (with(json!({"issuer": null})), "spec.issuer: Required value"),
        (
            with(json!({"displayName": "x".repeat(65)})),
            "spec.displayName: Too long",
        ),
    ];
    for (spec, want) in cases {
        let errors = manifest::admission_errors(&schema, &object(spec.clone()));
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{spec}: want {want:?}, got {errors:?}"
        );
    }
    assert!(manifest::admission_errors(&schema, &object(base())).is_empty());

    // AccessPolicy: empty hosts, oversized lists, unknown enums.
    let ap = manifest::crd_schema_for("AccessPolicy").unwrap();
    let many_rules: Vec<Value> = (0..65)
        .map(|i| json!({"users": [format!("u{i}")]}))
        .collect();
    for (spec, want) in [
        (
            crd_cases::policy_with(json!({"hosts": []})),
            "spec.hosts: Invalid value",
        ),
        (
            crd_cases::policy_with(json!({"providers": []})),
            "spec.providers: Invalid value",
        ),
        (
            crd_cases::policy_with(json!({"rules": {"allow": many_rules}})),
            "spec.rules.allow: Too many",
        ),
        (
            crd_cases::policy_with(json!({"unauthenticated": "Login"})),
            "spec.unauthenticated: Unsupported value",
        ),
        (
            crd_cases::policy_with(json!({"forward": {"token": "Cookie"}})),
            "spec.forward.token: Unsupported value",
        ),
        (
            crd_cases::policy_with(json!({"rules": null})),
            "spec.rules: Required value",
        ),
    ] {
        let errors = manifest::admission_errors(&ap, &crd_cases::policy(spec.clone()));
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{spec}: want {want:?}, got {errors:?}"
        );
    }
}

#[test]
fn examples_pass_the_generated_schema_and_cel_rules() {
    let docs = manifest::load(&[concat!(env!("CARGO_MANIFEST_DIR"), "/examples").into()]).unwrap();
    let schema = manifest::crd_schema();
    let providers: Vec<_> = docs
        .iter()
        .filter(|d| d.kind() == "IdentityProvider")
        .collect();
    assert!(
        providers.len() >= 8,
        "seven providers and the local demo, found {}",
        providers.len()
    );
    for d in providers {
        let errors = manifest::admission_errors(&schema, &d.value);
        assert!(errors.is_empty(), "{}: {errors:?}", d.source);
        let idp: IdentityProvider = serde_json::from_value(d.value.clone()).unwrap();
        assert!(idp.validate_cel().is_ok(), "{}", d.source);
    }
}
