//! The broker against the real certified OpenID provider (npm
//! oidc-provider), driven over HTTP like a browser: login, forward-auth,
//! userinfo, logout, the email and group rules, and every way a cookie or a
//! callback can be wrong.

use sso_test_support as common;

use common::{
    broker::{
        KEY_A, KEY_B, OP_PATHS, TestBroker, browser, config, confirm_op_logout, get, login_at,
        op_clients, provider,
    },
    free_port,
    op::Op,
};
use sso_operator::{
    broker::{
        seal::KeyRing,
        session::{self, Session},
    },
    config::BrokerConfig,
};

const KEY: &str = "default/demo";

/// One provider, `KEY`, at the real OP's client `demo`.
fn demo(issuer: &str, base: &str) -> BrokerConfig {
    config(vec![provider(
        KEY,
        issuer,
        base,
        OP_PATHS,
        "demo",
        Some("demo-secret"),
    )])
}

/// A broker whose one provider is the real OP (client `demo`).
async fn setup(op_env: &[(&str, &str)]) -> (Op, TestBroker) {
    // The OP must know the broker's redirect URI before it starts, and the
    // broker the OP's issuer: reserve the broker's port first.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let clients = op_clients(&base, KEY);
    let mut env: Vec<(&str, &str)> = vec![("OP_CLIENTS", &clients)];
    env.extend_from_slice(op_env);
    let op = Op::start(&env);
    let issuer = op.issuer.clone();
    let tb = start_on(port, move |base| demo(&issuer, base)).await;
    (op, tb)
}

async fn start_on(
    port: u16,
    cfg: impl FnOnce(&str) -> sso_operator::config::BrokerConfig,
) -> TestBroker {
    TestBroker::start_at(port, cfg).await
}

async fn login(
    tb: &TestBroker,
    client: &reqwest::Client,
    name: &str,
    rd: &str,
) -> common::broker::Landing {
    login_at(client, &tb.base, KEY, name, rd).await
}

/// Starts a login at `provider` (the browser gets its login cookie) and
/// returns the `state` sent to the provider.
async fn start_login(client: &reqwest::Client, tb: &TestBroker, provider: &str) -> String {
    let r = client
        .get(tb.url(&format!("/oauth/start?provider={provider}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = loc.query_pairs().find(|(k, _)| k == "state").unwrap().1;
    state.into_owned()
}

#[tokio::test]
async fn login_forward_auth_userinfo_and_logout_with_the_real_op() {
    let (op, tb) = setup(&[]).await;
    let client = browser();

    // Not logged in: forward-auth says 401.
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The start redirect carries state, nonce, PKCE S256 and the scopes.
    let r = client
        .get(tb.url(&format!("/oauth/start?provider={KEY}&rd=/app/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc.as_str().starts_with(&format!("{}/auth?", op.issuer)));
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "demo");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["scope"], "openid email profile groups");
    assert_eq!(q["state"].len(), 22);
    assert!(q["nonce"].len() >= 22);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("_sso_login_{}=", q["state"])),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));

    // A full login as alice (admin* logins get the admin group).
    let landing = login(&tb, &client, "admin-alice", "/app/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(landing.location.as_deref(), Some(tb.url("/app/").as_str()));

    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["x-auth-request-user"], "admin-alice");
    assert_eq!(h["x-auth-request-email"], "admin-alice@example.com");
    assert!(
        h["x-auth-request-groups"]
            .to_str()
            .unwrap()
            .split(',')
            .any(|g| g == "admins")
    );
    assert_eq!(h["x-auth-request-provider"], KEY);

    let info: serde_json::Value = client
        .get(tb.url("/oauth/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user"], "admin-alice");
    assert_eq!(info["sub"], "admin-alice");

    // Logout: the session cookie is cleared and the browser goes to the
    // OP's end_session endpoint with id_token_hint and the logged-out page.
    let r = client.get(tb.url("/oauth/logout")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a GET asks first");
    let r = client.post(tb.url("/oauth/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let end = r.headers()["location"].to_str().unwrap().to_string();
    let endu = url::Url::parse(&end).unwrap();
    let q: std::collections::HashMap<_, _> = endu.query_pairs().into_owned().collect();
    assert!(
        end.starts_with(&format!("{}/session/end?", op.issuer)),
        "{end}"
    );
    assert_eq!(q["post_logout_redirect_uri"], tb.url("/oauth/logged-out"));
    assert_eq!(q["id_token_hint"].split('.').count(), 3, "an ID token");
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 401, "session cleared at the broker");
    let done = confirm_op_logout(&client, &end).await;
    assert!(
        done.location
            .as_deref()
            .is_some_and(|l| l.starts_with(&tb.url("/oauth/logged-out"))),
        "{done:?}"
    );
    // The OP session is gone too: a new login shows the login form again
    // (walk would fail to reach the callback without filling it).
    let again = login(&tb, &client, "bob", "/").await;
    assert_eq!(again.status, 302);
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.headers()["x-auth-request-user"], "bob");
}

#[tokio::test]
async fn claims_only_at_userinfo_are_fetched_from_userinfo() {
    // OP_CONFORM=1: email and profile claims are not in the ID token.
    let (_op, tb) = setup(&[("OP_CONFORM", "1")]).await;
    let client = browser();
    let landing = login(&tb, &client, "carol", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-email"], "carol@example.com");
}

#[tokio::test]
async fn unverified_or_unstated_email_is_refused_with_its_reason() {
    let (_op, tb) = setup(&[]).await;
    for name in ["unverified-dave", "noemailverified-erin"] {
        let client = browser();
        let landing = login(&tb, &client, name, "/").await;
        assert_eq!(landing.status, 403, "{name}: {landing:?}");
        assert_eq!(landing.reason(), Some("unverified_email"), "{name}");
        let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}: no session after a refused login");
    }
    assert_eq!(
        tb.broker
            .metrics
            .failures(sso_operator::broker::error::Reason::UnverifiedEmail),
        2
    );
}

/// A provider that lists a domain signs its users in only while the
/// domain is verified; users of domains it does not list are not this
/// rule's business.
#[tokio::test]
async fn a_listed_domain_admits_its_users_only_once_verified() {
    let (op, tb) = setup(&[]).await;
    let mut cfg = demo(&op.issuer, &tb.base);
    let entry = cfg.providers.get_mut(KEY).unwrap();
    entry.domains = vec!["example.com".into()];
    tb.broker.apply_config(&cfg);
    let client = browser();
    let landing = login(&tb, &client, "carol", "/").await;
    assert_eq!(landing.status, 403, "{landing:?}");
    assert_eq!(landing.reason(), Some("unverified_domain"));
    assert!(
        landing.body.contains("has not verified it"),
        "the user is told why: {}",
        landing.body
    );
    assert_eq!(get(&client, tb.url("/oauth/auth")).await.status, 401);

    cfg.providers.get_mut(KEY).unwrap().verified_domains = vec!["example.com".into()];
    tb.broker.apply_config(&cfg);
    let landing = login(&tb, &browser(), "carol", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");

    // Another domain listed (and not verified): example.com users pass.
    let entry = cfg.providers.get_mut(KEY).unwrap();
    entry.domains = vec!["corp.test".into()];
    entry.verified_domains = vec![];
    tb.broker.apply_config(&cfg);
    let landing = login(&tb, &browser(), "carol", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(
        tb.broker
            .metrics
            .failures(sso_operator::broker::error::Reason::UnverifiedDomain),
        1
    );
}

/// Home-realm discovery at the HTTP level: `/oauth/start?login_hint=`
/// goes to the provider that verified the address's domain, with the
/// address as `login_hint`; another domain goes back to the login page,
/// which says so; a hint that is no address is a 400.
#[tokio::test]
async fn login_hint_routes_to_the_provider_of_the_verified_domain() {
    let (op, tb) = setup(&[]).await;
    let mut cfg = demo(&op.issuer, &tb.base);
    let entry = cfg.providers.get_mut(KEY).unwrap();
    entry.domains = vec!["corp.test".into()];
    entry.verified_domains = vec!["corp.test".into()];
    entry.authorize_params = [("login_hint".to_string(), "fixed@corp.test".to_string())].into();
    tb.broker.apply_config(&cfg);
    let client = browser();
    let r = get(
        &client,
        tb.url("/oauth/start?login_hint=Alice%40Corp.Test&rd=/x"),
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    let to = url::Url::parse(r.location.as_deref().unwrap()).unwrap();
    assert!(to.as_str().starts_with(&op.issuer), "{to}");
    let hints: Vec<String> = to
        .query_pairs()
        .filter(|(k, _)| k == "login_hint")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(hints, ["Alice@Corp.Test"], "the typed address, once");
    // The real OP takes the request (to its login form).
    assert_eq!(get(&client, to.as_str()).await.status, 303);

    let r = get(
        &client,
        tb.url("/oauth/start?login_hint=bob%40elsewhere.test&rd=/x"),
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
    let back = r.location.unwrap();
    assert!(
        back.contains("/oauth/login?") && back.contains("unknown_domain=elsewhere.test"),
        "{back}"
    );
    let page = get(&client, &back).await;
    assert!(
        page.body
            .contains("No sign-in is set up for elsewhere.test"),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-form=\"email\""));
    // What the page says is a domain name, or nothing: the query is
    // anyone's to write.
    let forged = get(
        &client,
        tb.url("/oauth/login?rd=/x&unknown_domain=corp.test.%20Our%20SSO%20moved%20to%20https://evil.example"),
    )
    .await;
    assert!(!forged.body.contains("moved"), "{}", forged.body);
    assert!(!forged.body.contains("data-notice"), "{}", forged.body);
    // The form leads (through the broker's redirect) to the provider: the
    // page's CSP lets it.
    let csp = client.get(&back).send().await.unwrap().headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let op_origin = url::Url::parse(&op.issuer)
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        csp.contains(&format!("form-action 'self' {op_origin}")),
        "{csp}"
    );

    let r = get(
        &client,
        tb.url("/oauth/start?login_hint=not-an-address&rd=/x"),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.reason(), Some("invalid_request"));
}

#[tokio::test]
async fn two_hundred_groups_keep_the_cookie_under_4kb() {
    let (_op, tb) = setup(&[]).await;
    let client = browser();
    let r = get(
        &client,
        tb.url(&format!("/oauth/start?provider={KEY}&rd=/")),
    )
    .await;
    drop(r);
    let landing = login(&tb, &client, "manygroups-frank", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let r = client.get(tb.url("/oauth/userinfo")).send().await.unwrap();
    let info: serde_json::Value = r.json().await.unwrap();
    let groups = info["groups"].as_array().unwrap().len();
    assert!(groups > 20, "kept {groups} groups");
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn group_and_domain_rules_decide_access_and_apply_to_live_sessions() {
    let (op, tb) = setup(&[]).await;
    let client = browser();
    let landing = login(&tb, &client, "gina", "/").await;
    assert_eq!(landing.status, 302);
    assert_eq!(get(&client, tb.url("/oauth/auth")).await.status, 200);

    // Tighten the rule: only the admin group. The live session loses access
    // at once; a new login as a non-admin is refused; an admin gets in.
    let mut cfg = demo(&op.issuer, &tb.base);
    cfg.providers.get_mut(KEY).unwrap().allowed_groups = vec!["admins".into()];
    tb.broker.apply_config(&cfg);
    assert_eq!(get(&client, tb.url("/oauth/auth")).await.status, 403);
    let fresh = browser();
    let landing = login(&tb, &fresh, "henry", "/").await;
    assert_eq!(landing.status, 403);
    assert_eq!(landing.reason(), Some("access_denied"));
    let admin = browser();
    let landing = login(&tb, &admin, "admin-ivy", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");

    // Email domain rule.
    cfg.providers.get_mut(KEY).unwrap().allowed_groups = vec![];
    cfg.providers.get_mut(KEY).unwrap().allowed_email_domains = vec!["corp.example".into()];
    tb.broker.apply_config(&cfg);
    let landing = login(&tb, &browser(), "jack", "/").await;
    assert_eq!(landing.reason(), Some("access_denied"));
    assert!(
        landing.body.contains("jack@example.com"),
        "the page names the address"
    );
}

#[tokio::test]
async fn forged_replayed_and_tampered_requests_are_refused_without_panic() {
    let (_op, tb) = setup(&[]).await;
    let client = browser();

    // A callback with no login in progress (forged, or a link from another
    // browser).
    let r = get(
        &client,
        tb.url(&format!(
            "/oauth/callback/{KEY}?code=abc&state=AAAAAAAAAAAAAAAAAAAAAA"
        )),
    )
    .await;
    assert_eq!((r.status, r.reason()), (400, Some("state_mismatch")));
    // Malformed state.
    let r = get(
        &client,
        tb.url(&format!("/oauth/callback/{KEY}?code=abc&state=../../etc")),
    )
    .await;
    assert_eq!(r.status, 400);

    // Replay: a completed callback URL used again.
    let landing = login(&tb, &client, "kim", "/").await;
    assert_eq!(landing.status, 302);
    let r = client.get(&landing.url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state_mismatch"));

    // The callback for a state started at another provider path.
    let state = start_login(&client, &tb, KEY).await;
    let r = get(
        &client,
        tb.url(&format!(
            "/oauth/callback/default/other?code=x&state={state}"
        )),
    )
    .await;
    assert_eq!(r.status, 400, "the login cookie is scoped to its provider");

    // The IdP's error is shown with its description.
    let state = start_login(&client, &tb, KEY).await;
    let r = get(&client, tb.url(&format!(
            "/oauth/callback/{KEY}?error=access_denied&error_description=User%20said%20no&state={state}"
        ))).await;
    assert_eq!(r.status, 401);
    let body = r.body;
    assert!(
        body.contains("idp_error")
            && body.contains("User said no")
            && body.contains("access_denied")
    );

    // Session cookies: tampered, wrong key, expired, oversized, garbage.
    let raw = reqwest::Client::new();
    let auth = |cookie: String| {
        let raw = raw.clone();
        let url = tb.url("/oauth/auth");
        async move {
            raw.get(url)
                .header("cookie", format!("_sso_session={cookie}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let sess = |iat: i64, exp: i64| Session {
        provider: KEY.into(),
        sub: "mallory".into(),
        user: "mallory".into(),
        email: None,
        groups: vec!["admin".into()],
        groups_truncated: false,
        issued_at: iat,
        expires_at: exp,
        validated_at: iat,
        refresh_token: None,
        claims: Default::default(),
        claims_looked_for: Vec::new(),
        issuer: String::new(),
        client_id: String::new(),
    };
    let ring_a = KeyRing::new(&[KEY_A]).unwrap();
    let good = session::seal(&ring_a, sess(now, now + 600), &[]).unwrap();
    assert_eq!(
        auth(good.clone()).await,
        200,
        "control: a well-sealed session passes"
    );
    let mut tampered = good.into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(auth(String::from_utf8(tampered).unwrap()).await, 401);
    let ring_b = KeyRing::new(&[KEY_B]).unwrap();
    assert_eq!(
        auth(session::seal(&ring_b, sess(now, now + 600), &[]).unwrap()).await,
        401
    );
    assert_eq!(
        auth(session::seal(&ring_a, sess(now - 7200, now - 10), &[]).unwrap()).await,
        401
    );
    assert_eq!(
        auth(session::seal(&ring_a, sess(now + 3600, now + 7200), &[]).unwrap()).await,
        401
    );
    assert_eq!(auth("A".repeat(5000)).await, 401);
    assert_eq!(auth("v1.x.%%%".into()).await, 401);
    assert_eq!(auth(String::new()).await, 401);

    // Oversized query input and a bad redirect target.
    let r = client
        .get(tb.url(&format!("/oauth/start?provider={}", "x".repeat(10_000))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for rd in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let r = client
            .get(tb.url("/oauth/start"))
            .query(&[("provider", KEY), ("rd", rd)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "rd {rd}");
        assert!(r.text().await.unwrap().contains("invalid_redirect"));
    }
    let r = client
        .get(tb.url("/oauth/start"))
        .query(&[("provider", KEY), ("rd", "https://app.example.com/x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "an allowed domain passes");
}

#[tokio::test]
async fn key_rotation_keeps_sessions_until_the_old_key_is_dropped() {
    let (_op, tb) = setup(&[]).await;
    let client = browser();
    assert_eq!(login(&tb, &client, "lena", "/").await.status, 302);
    // New key first, old key still accepted.
    tb.broker.set_keys(KeyRing::new(&[KEY_B, KEY_A]).unwrap());
    assert_eq!(get(&client, tb.url("/oauth/auth")).await.status, 200);
    // Old key removed: the old session no longer opens.
    tb.broker.set_keys(KeyRing::new(&[KEY_B]).unwrap());
    assert_eq!(get(&client, tb.url("/oauth/auth")).await.status, 401);
}

#[tokio::test]
async fn two_providers_one_broken_the_healthy_one_keeps_working() {
    let port = free_port();
    // A port nothing listens on: the "down" provider's IdP.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_issuer = format!("http://{}", dead.local_addr().unwrap());
    let down_host = dead.local_addr().unwrap().to_string();
    drop(dead);
    let base = format!("http://127.0.0.1:{port}");
    let clients = op_clients(&base, KEY);
    let op = Op::start(&[("OP_CLIENTS", &clients)]);
    let issuer = op.issuer.clone();
    let tb = start_on(port, move |base| {
        let mut cfg = config(vec![
            provider(KEY, &issuer, base, OP_PATHS, "demo", Some("demo-secret")),
            provider("default/down", &dead_issuer, base, OP_PATHS, "x", Some("y")),
        ]);
        cfg.unavailable.insert(
            "default/off".into(),
            sso_operator::config::Unavailable {
                display_name: "Switched off".into(),
                disabled: true,
                reason: "Disabled".into(),
                message: "spec.enabled is false".into(),
            },
        );
        cfg.unavailable.insert(
            "default/bad".into(),
            sso_operator::config::Unavailable {
                display_name: "Misconfigured".into(),
                disabled: false,
                reason: "SecretNotFound".into(),
                message: "Secret bad-oidc not found".into(),
            },
        );
        cfg
    })
    .await;
    let client = browser();

    // The chooser lists the programmed providers as links and the others
    // greyed out with why.
    let page = get(&client, tb.url("/oauth/login?rd=/x")).await.body;
    assert!(page.contains("data-provider=\"default/demo\""));
    assert!(page.contains("data-provider=\"default/down\""));
    assert!(!page.contains("data-provider=\"default/off\""));
    assert!(page.contains("Switched off: disabled"));
    assert!(page.contains("Misconfigured: not ready (SecretNotFound)"));
    // Without a provider, /oauth/start sends the browser to the chooser.
    let r = client
        .get(tb.url("/oauth/start?rd=/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/oauth/login?rd=%2Fx");

    // Each unusable provider says why, with its own status.
    for (p, status, reason) in [
        ("default/off", 403, "provider_disabled"),
        ("default/bad", 503, "provider_not_ready"),
        ("default/nope", 404, "unknown_provider"),
    ] {
        let r = get(&client, tb.url(&format!("/oauth/start?provider={p}"))).await;
        assert_eq!(r.status, status, "{p}");
        assert!(r.body.contains(&format!("data-reason=\"{reason}\"")), "{p}");
        // An anonymous visitor learns the reason, never the status message
        // (Secret names, internal hosts, TLS errors).
        assert!(!r.body.contains("bad-oidc"), "{p}: {}", r.body);
    }
    let r = get(&client, tb.url("/oauth/start?provider=default/bad")).await;
    assert!(r.body.contains("not ready (SecretNotFound)"), "{}", r.body);

    // The down provider: the callback's code exchange cannot reach it.
    let state = start_login(&client, &tb, "default/down").await;
    let r = get(
        &client,
        tb.url(&format!(
            "/oauth/callback/default/down?code=c&state={state}"
        )),
    )
    .await;
    assert_eq!((r.status, r.reason()), (502, Some("token_unreachable")));
    assert!(
        !r.body.contains(&down_host),
        "the page names no endpoint: {}",
        r.body
    );

    // The healthy one, chosen by its bare name, logs in.
    let landing = login_at(&client, &tb.base, "demo", "nora", "/x").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.headers()["x-auth-request-user"], "nora");
}

/// The real OP: a due session is refreshed with its refresh token (a
/// confidential client), and revoking the token at the OP ends it.
#[tokio::test]
async fn sessions_refresh_at_the_real_op_and_end_when_the_op_revokes() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let clients = op_clients(&base, KEY);
    let op = Op::start(&[("OP_CLIENTS", &clients)]);
    let issuer = op.issuer.clone();
    let tb = TestBroker::start_refreshing(port, 1, move |base| demo(&issuer, base)).await;
    let client = browser();
    assert_eq!(login(&tb, &client, "alice", "/").await.status, 302);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    // The session comes back in its provider's cookie.
    let name = format!("{}=", sso_operator::broker::session::cookie_name(KEY));
    assert!(set.starts_with(&name), "{set}");
    assert_eq!(tb.broker.metrics.refreshes(KEY, "refreshed"), 1);
    // The refresh token (sealed in the cookie) revoked at the OP.
    let sealed = set[name.len()..].split(';').next().unwrap();
    let ring = KeyRing::new(&[KEY_A]).unwrap();
    let s = session::open(&ring, sealed, jiff::Timestamp::now().as_second()).unwrap();
    let rt = s.refresh_token.expect("the OP issued a refresh token");
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", op.issuer))
        .basic_auth("demo", Some("demo-secret"))
        .form(&[("token", rt.as_str()), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "the OP said invalid_grant: the session ended"
    );
    assert_eq!(
        tb.broker
            .metrics
            .failures(sso_operator::broker::error::Reason::SessionRevoked),
        1
    );
}

/// The real OP rotates a public client's refresh tokens and revokes the
/// whole grant when a spent one is presented again: many requests with one
/// due cookie must cause exactly one refresh, and the next refresh (with
/// the rotated token) must still work.
#[tokio::test]
async fn a_burst_with_one_due_cookie_refreshes_once_at_a_rotating_op() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let clients = serde_json::json!([{
        "client_id": "spa",
        "redirect_uris": [format!("{base}/oauth/callback/{KEY}")],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }])
    .to_string();
    let op = Op::start(&[("OP_CLIENTS", &clients)]);
    let issuer = op.issuer.clone();
    let tb = TestBroker::start_refreshing(port, 1, move |base| {
        config(vec![provider(KEY, &issuer, base, OP_PATHS, "spa", None)])
    })
    .await;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The login and the first request early in one second: with a refresh
    // due every second, a boundary between them makes the first request
    // refresh already, and the burst's the second.
    common::early_in_a_second().await;
    let landing = login(&tb, &client, "alice", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let first = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Every request of the burst carries the same (due) cookie, as a page
    // loading its assets does; taken from the jar once, so a slow machine
    // crossing a second boundary mid-burst cannot make a later request
    // carry the refreshed cookie and be due again.
    use reqwest::cookie::CookieStore as _;
    let cookie = jar
        .cookies(&tb.url("/").parse().unwrap())
        .expect("the session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let raw = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (c, url, cookie) = (raw.clone(), tb.url("/oauth/auth"), cookie.clone());
        tasks.push(tokio::spawn(async move {
            c.get(url).header("cookie", cookie).send().await.unwrap()
        }));
    }
    let mut refreshed = None;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), 200);
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if v.starts_with("_sso_session") {
                refreshed = Some(v.split(';').next().unwrap().to_string());
            }
        }
    }
    assert_eq!(tb.broker.metrics.refreshes(KEY, "refreshed"), 1);
    assert_eq!(tb.broker.metrics.refreshes(KEY, "ended"), 0);
    // Next round with the rotated token: the grant is still alive.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = raw
        .get(tb.url("/oauth/auth"))
        .header(
            "cookie",
            refreshed.expect("the burst carried the refreshed cookie"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tb.broker.metrics.refreshes(KEY, "refreshed"), 2);
    assert_eq!(tb.broker.metrics.refreshes(KEY, "ended"), 0);
}

/// `private_key_jwt` at the real OP: each client is registered there with
/// only its public JWK (as `sso-operator public-jwk` prints it); the broker
/// signs client assertions with the private key, RSA (PKCS#1 PEM) or EC
/// P-256 (PKCS#8 PEM), for the code exchange and for the refresh. A key the
/// OP does not have for the client is refused at the token endpoint.
#[tokio::test]
async fn private_key_jwt_logs_in_and_refreshes_at_the_real_op() {
    use sso_operator::{api::ClientAuthMethod, oidc::assertion::ClientKey};
    const RSA: &str = include_str!("fixtures/client-key-rsa-pkcs1.pem");
    const EC: &str = include_str!("fixtures/client-key-ec.pem");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let jwk = |pem: &str| ClientKey::from_pem(pem).unwrap().public_jwk();
    // (provider key, client at the OP, the key the OP knows, the key the broker holds)
    let cases = [
        ("default/rsa", "pkj-rsa", RSA, RSA),
        ("default/ec", "pkj-ec", EC, EC),
        ("default/wrong", "pkj-wrong", EC, RSA),
    ];
    let clients: Vec<serde_json::Value> = cases
        .iter()
        .map(|(key, id, known, _)| {
            serde_json::json!({
                "client_id": id,
                "redirect_uris": [format!("{base}/oauth/callback/{key}")],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [jwk(known)]},
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            })
        })
        .collect();
    let clients = serde_json::Value::from(clients).to_string();
    let op = Op::start(&[("OP_CLIENTS", &clients)]);
    let issuer = op.issuer.clone();
    let tb = TestBroker::start_refreshing(port, 1, move |base| {
        config(
            cases
                .iter()
                .map(|(key, id, _, held)| {
                    let mut p = provider(key, &issuer, base, OP_PATHS, id, Some(held));
                    p.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
                    p
                })
                .collect(),
        )
    })
    .await;

    for key in ["default/rsa", "default/ec"] {
        let client = browser();
        let landing = login_at(&client, &tb.base, key, "alice", "/ok").await;
        assert_eq!(
            (landing.status, landing.location.clone()),
            (302, Some(tb.url("/ok"))),
            "{key}: {:?}",
            landing.reason()
        );
        // Due for refresh after a second: the refresh signs a new assertion.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}");
        assert!(r.headers().contains_key("set-cookie"), "{key}: refreshed");
        assert_eq!(tb.broker.metrics.refreshes(key, "refreshed"), 1, "{key}");
    }
    let landing = login_at(&browser(), &tb.base, "default/wrong", "alice", "/ok").await;
    assert_ne!(
        landing.status, 302,
        "a key the OP does not know logs nobody in"
    );
    assert_eq!(landing.reason(), Some("token_error"), "{landing:?}");
}
