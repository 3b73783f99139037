//! `sso-operator check`, run as the binary a CI pipeline would run.

use sso_test_support as common;

use std::{path::Path, process::Command};

use common::issuer;

fn check(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .arg("check")
        // The test issuers listen on loopback.
        .args(["--allow-provider-cidrs", "127.0.0.0/8"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: corp-oidc, namespace: team-a}
type: sso-operator.dev/client-credentials
stringData: {clientSecret: s3cr3t}
"#;

fn provider(issuer: &str) -> String {
    format!(
        r#"apiVersion: sso-operator.dev/v1alpha1
kind: IdentityProvider
metadata: {{name: corp, namespace: team-a}}
spec:
  issuer: {issuer}
  clientID: client-1
  clientSecretRef: {{name: corp-oidc, key: clientSecret}}
"#
    )
}

#[test]
fn offline_pass_with_the_secret_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "idp.yaml",
        &format!("{}---\n{SECRET}", provider("https://idp.example.com")),
    );
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("PASS team-a/corp"), "{out}");
    assert!(out.contains("phase=Pending"), "{out}");
    assert!(
        out.contains("DiscoverySucceeded Unknown NotChecked"),
        "{out}"
    );
    assert!(
        out.contains("redirectURI: http://127.0.0.1:4180/oauth/callback/team-a/corp"),
        "{out}"
    );
    assert!(out.contains("1 passed, 0 failed"), "{out}");
    assert!(!out.contains("s3cr3t"), "the secret is never printed");
}

#[test]
fn missing_secret_fails_as_in_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.yaml", &provider("https://idp.example.com"));
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL team-a/corp"), "{out}");
    assert!(
        out.contains("SecretResolved     False   SecretNotFound"),
        "{out}"
    );
}

#[test]
fn admission_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let bad_cel = provider("http://idp.example.com");
    let typo = format!("{}  scope: [openid]\n", provider("https://idp.example.com"))
        .replace("name: corp,", "name: typo,");
    let reserved = format!(
        "{}  authorizeParams: {{nonce: fixed}}\n",
        provider("https://idp.example.com")
    )
    .replace("name: corp,", "name: reserved,");
    write(dir.path(), "a.yaml", &bad_cel);
    write(dir.path(), "b.yaml", &typo);
    write(dir.path(), "c.yml", &reserved);
    write(
        dir.path(),
        "secret.json",
        &serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(SECRET).unwrap())
            .unwrap(),
    );
    write(dir.path(), "notes.txt", "ignored: not a manifest");
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("rejected at admission: spec.issuer: issuer must be an https URL"),
        "{out}"
    );
    assert!(
        out.contains("rejected at admission: spec.scope: unknown field \"scope\""),
        "{out}"
    );
    assert!(
        out.contains("rejected at admission: spec.authorizeParams: authorizeParams must not set"),
        "{out}"
    );
    assert!(out.contains("0 passed, 3 failed"), "{out}");
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let (ok, out) = check(&["-f", "/nonexistent/idp.yaml"]);
    assert!(!ok);
    assert!(
        out.contains("error: /nonexistent/idp.yaml: No such file"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "broken.yaml", "spec: [unclosed");
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("invalid YAML"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_reports_ready_and_the_exact_failure() {
    let base = issuer::serve_http().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.yaml",
        &format!("{}---\n{SECRET}", provider(&format!("{base}/good"))),
    );
    write(
        dir.path(),
        "bad.yaml",
        &provider(&format!("{base}/mismatch")).replace("name: corp,", "name: wrong,"),
    );
    let path = dir.path().to_str().unwrap().to_string();
    let (ok, out) =
        tokio::task::spawn_blocking(move || check(&["-f", &path, "--live", "--timeout", "3"]))
            .await
            .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("PASS team-a/corp"), "{out}");
    assert!(out.contains("phase=Ready"), "{out}");
    assert!(
        out.contains("JWKSValid          True    KeysValid"),
        "{out}"
    );
    assert!(out.contains("FAIL team-a/wrong"), "{out}");
    assert!(
        out.contains("DiscoverySucceeded False   IssuerMismatch"),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
}

#[test]
fn examples_pass_offline() {
    let (ok, out) = check(&["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/examples")]);
    assert!(ok, "{out}");
    for name in [
        "google", "entra-id", "auth0", "okta", "keycloak", "cognito", "gitlab",
    ] {
        assert!(out.contains(&format!("PASS sso/{name} ")), "{name}: {out}");
    }
    assert!(out.contains("PASS AccessPolicy sso/grafana "), "{out}");
    assert!(out.contains("PASS AccessPolicy default/demo-app "), "{out}");
    assert!(out.contains("10 passed, 0 failed"), "{out}");
    assert!(
        !out.contains("REPLACE_WITH_CLIENT_SECRET"),
        "secret values are never printed"
    );
}

/// AccessPolicies are decided against the providers and Namespaces of the
/// same manifests: another namespace's provider serves a policy only when
/// it admits the policy's namespace.
#[test]
fn access_policies_are_decided_with_the_providers_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "idp.yaml",
        &format!("{}---\n{SECRET}", provider("https://idp.example.com")),
    );
    let policy = r#"apiVersion: sso-operator.dev/v1alpha1
kind: AccessPolicy
metadata: {name: app, namespace: team-b}
spec:
  hosts: [app.team-b.example.com]
  providers: [{name: corp, namespace: team-a}]
  rules: {allow: [{groups: [devs]}]}
"#;
    write(dir.path(), "policy.yaml", policy);
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL AccessPolicy team-b/app"), "{out}");
    assert!(
        out.contains("ResolvedRefs       False   RefNotPermitted        IdentityProvider team-a/corp does not admit namespace team-b"),
        "{out}"
    );
    assert!(
        out.contains("authURL: http://127.0.0.1:4180/oauth/auth/team-b/app"),
        "{out}"
    );

    // The provider admits labelled namespaces; team-b's manifest has the label.
    let admitting = provider("https://idp.example.com").replace(
        "  clientID: client-1\n",
        "  clientID: client-1\n  allowedNamespaces: {from: Selector, selector: {matchLabels: {corp-sso: \"yes\"}}}\n",
    );
    write(dir.path(), "idp.yaml", &format!("{admitting}---\n{SECRET}"));
    write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b, labels: {corp-sso: \"yes\"}}\n",
    );
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("PASS AccessPolicy team-b/app"), "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // A rule admission refuses is reported as such.
    write(
        dir.path(),
        "policy.yaml",
        &policy.replace("{groups: [devs]}", "{}"),
    );
    let (ok, out) = check(&["-f", dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("rejected at admission"), "{out}");
    assert!(
        out.contains("a rule must list at least one of users"),
        "{out}"
    );
}
