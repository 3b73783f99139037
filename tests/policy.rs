//! Access policies through a real nginx `auth_request`, with two real
//! OpenID providers: issue 14's two-tenant attack as a user would try it.
//!
//! corp's app (`/app/` behind nginx, asking the broker at corp's policy)
//! accepts corp's provider only, alice only. Tenant B runs its own OP on
//! the same broker; its user calls himself alice. nginx must send him to
//! the login page, never to the app with `X-Auth-Request-User: alice`.

use sso_test_support as common;

use common::{
    broker::{OP_PATHS, TestBroker, browser, config, get, login_at, op_clients, provider},
    nginx::{Nginx, echo_upstream},
    op::Op,
};
use serde_json::json;

#[tokio::test]
async fn another_tenants_provider_never_reaches_corps_app_through_nginx() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let corp_op = Op::start(&[("OP_CLIENTS", &op_clients(&public, "corp/corp"))]);
    let evil_op = Op::start(&[("OP_CLIENTS", &op_clients(&public, "tenant-b/evil"))]);
    let (corp_issuer, evil_issuer) = (corp_op.issuer.clone(), evil_op.issuer.clone());
    let tb = TestBroker::start_behind(&public, |base| {
        let corp = provider(
            "corp/corp",
            &corp_issuer,
            base,
            OP_PATHS,
            "demo",
            Some("demo-secret"),
        );
        let evil = provider(
            "tenant-b/evil",
            &evil_issuer,
            base,
            OP_PATHS,
            "demo",
            Some("demo-secret"),
        );
        let mut c = config(vec![corp, evil]);
        c.policies.insert(
            "corp/app".into(),
            serde_json::from_value(json!({
                "namespace": "corp", "name": "app", "generation": 1,
                "hosts": ["127.0.0.1"], "paths": ["/app"],
                "providers": ["corp/corp"],
                "rules": {"allow": [{"users": ["alice"]}]},
            }))
            .unwrap(),
        );
        c
    })
    .await;
    let app = echo_upstream().await;
    let nginx = Nginx::start_for(port, tb.addr, app, "/oauth/auth/corp/app");
    let base = nginx.base();

    // Tenant B's user, who says he is alice.
    let mallory = browser();
    let l = login_at(&mallory, &base, "tenant-b/evil", "alice", "/app/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let r = get(&mallory, format!("{base}/app/")).await;
    assert_eq!(r.status, 302, "{r:?}\n{}", nginx.error_log());
    assert!(
        r.location
            .as_deref()
            .is_some_and(|l| l.contains("/oauth/login?rd=/app/")),
        "sent to the login page: {r:?}"
    );
    assert!(!r.body.contains("x-auth-request-user"), "{}", r.body);
    // The unscoped endpoint, asked directly, would have let him in: the
    // policy URL is what closes it.
    let r = get(&mallory, format!("http://{}/oauth/auth", tb.addr)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // corp's alice reaches the app with her identity.
    let alice = browser();
    let l = login_at(&alice, &base, "corp/corp", "alice", "/app/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let r = get(&alice, format!("{base}/app/x")).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["headers"]["x-auth-request-user"], "alice");
    assert_eq!(seen["headers"]["x-auth-request-provider"], "corp/corp");

    // corp's bob is refused by the policy's rules: 403, not the login page.
    let bob = browser();
    assert_eq!(
        login_at(&bob, &base, "corp/corp", "bob", "/app/")
            .await
            .status,
        302
    );
    let r = get(&bob, format!("{base}/app/")).await;
    assert_eq!(r.status, 403, "{r:?}");
}
