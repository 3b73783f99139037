//! Discovery, JWKS and `check --live` against a real, certified OpenID
//! provider (npm `oidc-provider`) started on 127.0.0.1.

use sso_test_support as common;

use std::{process::Command, time::Duration};

use common::op::Op;
use sso_operator::{
    api::EndpointOverrides,
    oidc::discovery::{DiscoveryRequest, HttpSettings, fetch},
};

fn settings() -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        egress: sso_operator::oidc::egress::Egress::with_loopback(),
    }
}

#[tokio::test]
async fn discovers_the_real_provider() {
    let op = Op::start(&[]);
    let req = DiscoveryRequest {
        issuer: op.issuer.clone(),
        overrides: EndpointOverrides::default(),
        ca_bundle: None,
    };
    let o = fetch(&req, &settings()).await;
    let e = o.endpoints.expect("discovery succeeds");
    assert_eq!(e.issuer, op.issuer);
    assert_eq!(e.authorization_endpoint, format!("{}/auth", op.issuer));
    assert_eq!(e.token_endpoint, format!("{}/token", op.issuer));
    assert_eq!(
        e.userinfo_endpoint.as_deref(),
        Some(format!("{}/me", op.issuer).as_str())
    );
    assert_eq!(
        e.end_session_endpoint.as_deref(),
        Some(format!("{}/session/end", op.issuer).as_str())
    );
    assert!(
        e.code_challenge_methods
            .unwrap()
            .contains(&"S256".to_string())
    );
    assert!(
        e.token_endpoint_auth_methods
            .unwrap()
            .contains(&"client_secret_basic".to_string())
    );
    let j = o.jwks.unwrap().expect("JWKS valid");
    assert_eq!(
        (j.usable_keys, j.total_keys),
        (2, 2),
        "one RSA and one EC signing key"
    );
}

#[tokio::test]
async fn issuer_with_a_path_and_a_wrong_trailing_slash() {
    let op = Op::start(&[("OP_ISSUER_PATH", "/realms/demo")]);
    assert!(op.issuer.ends_with("/realms/demo"));
    let ok = fetch(
        &DiscoveryRequest {
            issuer: op.issuer.clone(),
            overrides: Default::default(),
            ca_bundle: None,
        },
        &settings(),
    )
    .await;
    assert!(ok.endpoints.is_ok(), "{:?}", ok.endpoints);
    // With a trailing slash the discovery URL is the same, but the issuer differs.
    let slash = format!("{}/", op.issuer);
    let bad = fetch(
        &DiscoveryRequest {
            issuer: slash,
            overrides: Default::default(),
            ca_bundle: None,
        },
        &settings(),
    )
    .await;
    let f = bad.endpoints.unwrap_err();
    assert_eq!(f.reason, "IssuerMismatch");
    assert!(
        f.message
            .contains(&format!("set spec.issuer to \"{}\"", op.issuer)),
        "{}",
        f.message
    );
}

#[test]
fn check_live_reports_ready_against_the_real_provider() {
    let op = Op::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: demo-oidc}}
type: sso-operator.dev/client-credentials
stringData: {{clientSecret: demo-secret}}
---
apiVersion: sso-operator.dev/v1alpha1
kind: IdentityProvider
metadata: {{name: demo}}
spec:
  displayName: Local demo
  issuer: {issuer}
  clientID: demo
  clientSecretRef: {{name: demo-oidc, key: clientSecret}}
  scopes: [openid, email, profile, groups]
---
apiVersion: sso-operator.dev/v1alpha1
kind: IdentityProvider
metadata: {{name: wrong-issuer}}
spec:
  issuer: {issuer}/
  clientID: demo
  clientSecretRef: {{name: demo-oidc, key: clientSecret}}
"#,
        issuer = op.issuer
    );
    std::fs::write(dir.path().join("idp.yaml"), manifest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .args([
            "check",
            "--live",
            "--allow-provider-cidrs",
            "127.0.0.0/8",
            "-f",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the broken provider fails the run:\n{text}"
    );
    assert!(text.contains("PASS default/demo"), "{text}");
    assert!(text.contains("Ready              True    Ready"), "{text}");
    assert!(
        text.contains(
            "JWKSValid          True    KeysValid              2 usable signing key(s) of 2"
        ),
        "{text}"
    );
    assert!(text.contains("FAIL default/wrong-issuer"), "{text}");
    assert!(
        text.contains("DiscoverySucceeded False   IssuerMismatch"),
        "{text}"
    );
}
