//! Access policies through a real nginx `auth_request` and a real Caddy
//! `forward_auth`, with two real OpenID providers: issue 14's two-tenant
//! attack as a user would try it.
//!
//! corp's app (`/app/` behind nginx, asking the broker at corp's policy)
//! accepts corp's provider only, alice only. Tenant B runs its own OP on
//! the same broker; its user calls himself alice. nginx must send him to
//! the login page, never to the app with `X-Auth-Request-User: alice`.

use sso_test_support as common;

use common::{
    broker::{
        OP_PATHS, TestBroker, alice_only, browser, config, get, login_at, op_clients, provider,
        two_tenant_config, two_tenants_behind, walk,
    },
    caddy::Caddy,
    nginx::{Nginx, echo_upstream},
    op::Op,
};
use serde_json::json;
use sso_operator::config::BrokerConfig;

/// Two real OPs (corp's and tenant B's) and a broker at `public` with
/// both providers, corp's policy `corp/app` and tenant B's `tenant-b/app`
/// (host 127.0.0.1, path /app, each its own provider, alice only).
async fn two_tenants(public: &str) -> (Op, Op, TestBroker) {
    two_tenants_behind(public, |c| {
        let corp_app = alice_only("corp", "app", "/app", "corp/corp");
        // Tenant B's own app, with its own provider.
        let tenant_app = alice_only("tenant-b", "app", "/app", "tenant-b/evil");
        for p in [corp_app, tenant_app] {
            c.policies.insert(p.key(), p);
        }
    })
    .await
}

#[tokio::test]
async fn another_tenants_provider_never_reaches_corps_app_through_nginx() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (_corp_op, _evil_op, tb) = two_tenants(&public).await;
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
            .is_some_and(|l| l.ends_with("/oauth/start?policy=corp/app&rd=/app/")),
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

    // Tenant B's own app, behind a second nginx (same host, other port, so
    // the browser sends it the same cookies), accepts tenant B's provider:
    // his "alice" gets in there, and still not at corp's app; corp's alice,
    // signed in through corp, does not get into tenant B's app.
    let port_b = common::free_port();
    let nginx_b = Nginx::start_for(port_b, tb.addr, app, "/oauth/auth/tenant-b/app");
    let base_b = nginx_b.base();
    let r = get(&mallory, format!("{base_b}/app/")).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx_b.error_log());
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["headers"]["x-auth-request-provider"], "tenant-b/evil");
    assert_eq!(get(&mallory, format!("{base}/app/")).await.status, 302);
    let r = get(&alice, format!("{base_b}/app/")).await;
    assert_eq!(r.status, 302, "corp's alice at tenant B's app: {r:?}");

    // One browser, both sessions: alice signs in through tenant B as well
    // and keeps her corp session; each app takes its own provider's.
    // (The broker's public URL is the first nginx: logins go through it.)
    let l = login_at(&alice, &base, "tenant-b/evil", "alice", "/app/").await;
    assert_eq!(l.status, 302, "{l:?}");
    for (at, provider) in [(&base, "corp/corp"), (&base_b, "tenant-b/evil")] {
        let r = get(&alice, format!("{at}/app/")).await;
        assert_eq!(r.status, 200, "{at}: {r:?}");
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(seen["headers"]["x-auth-request-provider"], provider);
    }
}

/// Caddy passes the broker's answer on: a browser without a session is
/// redirected to the login for corp's policy and comes back to the page it
/// asked for; an API call gets 401; tenant B's "alice" is sent to log in
/// with corp's provider; corp's bob gets 403.
#[tokio::test]
async fn caddy_sends_browsers_to_the_policys_login_and_back() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (_corp_op, _evil_op, tb) = two_tenants(&public).await;
    let app = echo_upstream().await;
    let caddy = Caddy::start(port, tb.addr, app, "/oauth/auth/corp/app");
    let base = caddy.base();
    let page = async |c: &reqwest::Client, path: &str, accept: &str| {
        let r = c
            .get(format!("{base}{path}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (
            r.status().as_u16(),
            location,
            r.text().await.unwrap_or_default(),
        )
    };
    const HTML: &str = "text/html,application/xhtml+xml";

    let alice = browser();
    let (status, location, _) = page(&alice, "/app/page?x=1", HTML).await;
    assert_eq!(status, 302);
    let location = location.unwrap();
    let rd = format!("{base}/app/page?x=1");
    let want = format!(
        "{base}/oauth/start?policy=corp%2Fapp&rd={}",
        url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
    );
    assert_eq!(location, want);
    let (status, _, _) = page(&alice, "/app/api", "application/json").await;
    assert_eq!(status, 401, "an API call is not redirected");

    // The login the redirect starts offers corp's provider only and lands
    // back on the page.
    let landing = walk(
        &alice,
        &location,
        "alice",
        &format!("{base}/oauth/callback/"),
    )
    .await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(landing.location.as_deref(), Some(rd.as_str()));
    let (status, _, body) = page(&alice, "/app/page?x=1", HTML).await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-auth-request-user"], "alice");
    assert_eq!(seen["headers"]["x-auth-request-provider"], "corp/corp");

    let mallory = browser();
    let l = login_at(&mallory, &base, "tenant-b/evil", "alice", "/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let (status, location, body) = page(&mallory, "/app/page", HTML).await;
    assert_eq!(status, 302, "{body}");
    assert!(location.unwrap().contains("/oauth/start?policy=corp%2Fapp"));

    let bob = browser();
    assert_eq!(
        login_at(&bob, &base, "corp/corp", "bob", "/").await.status,
        302
    );
    assert_eq!(page(&bob, "/app/page", HTML).await.0, 403);
}

/// A policy forwarding the access token: the app gets the real OP's access
/// token as a Bearer token, usable at the OP's userinfo endpoint, and after
/// a session refresh the new one.
#[tokio::test]
async fn the_access_token_reaches_the_app_and_follows_refreshes() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let op = Op::start(&[("OP_CLIENTS", &op_clients(&public, "corp/corp"))]);
    let issuer = op.issuer.clone();
    let tb = TestBroker::start_refreshing(port, 1, |base| {
        let corp = provider(
            "corp/corp",
            &issuer,
            base,
            OP_PATHS,
            "demo",
            Some("demo-secret"),
        );
        let mut c = config(vec![corp]);
        c.policies.insert(
            "corp/api".into(),
            serde_json::from_value(json!({
                "namespace": "corp", "name": "api", "generation": 1,
                "hosts": ["127.0.0.1"], "providers": ["corp/corp"],
                "rules": {"allow": [{"groups": ["users"]}]},
                "forward": {"headers": ["user"], "token": "AccessToken"},
            }))
            .unwrap(),
        );
        c
    })
    .await;
    let alice = browser();
    assert_eq!(
        login_at(&alice, &tb.base, "corp/corp", "alice", "/")
            .await
            .status,
        302
    );
    let bearer = async || {
        let r = alice
            .get(tb.url("/oauth/auth/corp/api"))
            .header("x-forwarded-host", "127.0.0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-auth-request-email"],
            "",
            "only the user header is forwarded"
        );
        r.headers()["authorization"].to_str().unwrap().to_string()
    };
    let userinfo = async |authorization: &str| {
        let r = reqwest::Client::new()
            .get(format!("{}/me", op.issuer))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let first = bearer().await;
    assert!(first.starts_with("Bearer "), "{first}");
    let (status, me) = userinfo(&first).await;
    assert_eq!(status, 200, "{me}");
    assert!(me.contains("\"sub\":\"alice\""), "{me}");

    // Due for refresh: the OP issues a new access token, which is what the
    // app gets from then on.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = bearer().await;
    assert_ne!(second, first, "the refreshed access token");
    assert_eq!(userinfo(&second).await.0, 200);
    assert_eq!(
        bearer().await,
        second,
        "the cookie now carries the new token"
    );
}

/// A shared app that admits an email domain, through both tenants'
/// providers: only the provider that verified the domain is believed.
/// Tenant B's IdP says its user is alice@example.com. Through a real nginx
/// and two real OPs.
#[tokio::test]
async fn an_email_domain_rule_believes_only_the_provider_that_verified_it() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    // corp lists example.com, verified or not; the rule believes the
    // verified provider only, or any provider.
    let shared_app = |c: &mut BrokerConfig, any_provider: bool, corp_verified: bool| {
        let corp = c.providers.get_mut("corp/corp").unwrap();
        corp.domains = vec!["example.com".into()];
        if corp_verified {
            corp.verified_domains = vec!["example.com".into()];
        }
        let p: sso_operator::config::ProgrammedPolicy = serde_json::from_value(json!({
            "namespace": "platform", "name": "app", "generation": 1,
            "hosts": ["127.0.0.1"], "paths": ["/app"],
            "providers": ["corp/corp", "tenant-b/evil"],
            "rules": {"allow": [{"emailDomains": ["example.com"], "anyProviderDomain": any_provider}]},
        }))
        .unwrap();
        c.policies.insert(p.key(), p);
    };
    let (corp_op, evil_op, tb) = two_tenants_behind(&public, |c| shared_app(c, false, true)).await;
    let config = |any_provider: bool, corp_verified: bool| {
        let mut c = two_tenant_config(&public, &corp_op.issuer, &evil_op.issuer);
        shared_app(&mut c, any_provider, corp_verified);
        c
    };
    let app = echo_upstream().await;
    let nginx = Nginx::start_for(port, tb.addr, app, "/oauth/auth/platform/app");
    let base = nginx.base();

    // corp verified example.com: its alice gets in.
    let alice = browser();
    let l = login_at(&alice, &base, "corp/corp", "alice", "/app/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let r = get(&alice, format!("{base}/app/")).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.error_log());
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(seen["headers"]["x-auth-request-email"], "alice@example.com");

    // Tenant B's IdP vouching for an example.com address: refused at the
    // login (the domain is corp's namespace's), whatever the rules say.
    let mallory = browser();
    let l = login_at(&mallory, &base, "tenant-b/evil", "alice", "/app/").await;
    assert_eq!(l.status, 403, "{l:?}");
    assert_eq!(l.reason(), Some("unverified_domain"));

    // Nobody has verified example.com (corp lists it, unverified): tenant
    // B's user signs in, and the rule does not believe him ...
    tb.broker.apply_config(&config(false, false));
    let l = login_at(&mallory, &base, "tenant-b/evil", "alice", "/app/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let r = get(&mallory, format!("{base}/app/")).await;
    assert_eq!(r.status, 403, "tenant B's word for example.com: {r:?}");
    // ... unless it believes any provider (the operator's choice).
    tb.broker.apply_config(&config(true, false));
    let r = get(&mallory, format!("{base}/app/")).await;
    assert_eq!(r.status, 200, "{r:?}");
    // corp's alice, signed in while corp had the domain verified, is
    // refused now (corp lists it unverified: the provider's own domain
    // check applies to live sessions too, whatever the rule), and a new
    // login is refused unverified_domain.
    assert_eq!(get(&alice, format!("{base}/app/")).await.status, 403);
    let l = login_at(&browser(), &base, "corp/corp", "alice", "/app/").await;
    assert_eq!(l.status, 403, "{l:?}");
    assert_eq!(l.reason(), Some("unverified_domain"));
}
