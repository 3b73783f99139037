//! Session refresh with the refresh token, against the misbehaving OP:
//! a due session is re-validated once (however many requests carry it),
//! picks up the IdP's current claims, ends when the IdP revokes the grant or
//! the new identity fails a check, and keeps serving when the IdP is down,
//! slow or answers garbage.

use sso_test_support as common;

use std::{sync::Arc, time::Duration};

use common::{
    badop::{BadOp, Fault},
    broker::{KEY_A, TestBroker, config, login_at, provider},
    nginx::{Nginx, echo_upstream},
};
use reqwest::cookie::{CookieStore as _, Jar};
use serde_json::json;
use sso_operator::{
    broker::{error::Reason, seal::KeyRing, session},
    config::{BrokerConfig, ProgrammedProvider},
};

const KEY: &str = "team/bad";
const PATHS: [&str; 5] = ["/authorize", "/token", "/userinfo", "/jwks", "/end_session"];
/// Sessions are re-validated after one second.
const EVERY: i64 = 1;
/// Long enough for a session validated now to be due (whole seconds).
const DUE: Duration = Duration::from_millis(1100);

/// The broker config with one provider, `KEY`, at the misbehaving OP.
fn bad_op_config(
    issuer: &str,
    base: &str,
    edit: impl FnOnce(&mut ProgrammedProvider),
) -> BrokerConfig {
    let mut p = provider(KEY, issuer, base, PATHS, "client", Some("secret"));
    edit(&mut p);
    config(vec![p])
}

async fn setup_with(edit: impl FnOnce(&mut ProgrammedProvider)) -> (BadOp, TestBroker) {
    let op = BadOp::start().await;
    let op2 = op.clone();
    let tb =
        TestBroker::start_refreshing(0, EVERY, move |base| bad_op_config(&op2.issuer, base, edit))
            .await;
    (op, tb)
}

struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new() -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// The session cookie's value as the browser holds it.
    fn session(&self, tb: &TestBroker) -> String {
        let url = tb.url("/").parse().unwrap();
        let cookies = self.jar.cookies(&url).expect("cookies");
        cookies
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| {
                c.strip_prefix("_sso_session.")?
                    .split_once('=')
                    .map(|(_, v)| v)
            })
            .expect("a session cookie")
            .to_string()
    }

    async fn auth(&self, tb: &TestBroker) -> reqwest::Response {
        self.client.get(tb.url("/oauth/auth")).send().await.unwrap()
    }
}

async fn login(tb: &TestBroker) -> Browser {
    let b = Browser::new();
    let landing = login_at(&b.client, &tb.base, KEY, "unused", "/done").await;
    assert_eq!(landing.status, 302, "login: {landing:?}");
    b
}

fn open(sealed: &str) -> session::Session {
    let ring = KeyRing::new(&[KEY_A]).unwrap();
    session::open(&ring, sealed, jiff::Timestamp::now().as_second()).unwrap()
}

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("_sso_session=") || v.starts_with("_sso_session."))
        .map(str::to_string)
}

#[tokio::test]
async fn a_due_session_is_refreshed_once_and_picks_up_the_current_claims() {
    let (op, tb) = setup_with(|_| {}).await;
    let b = login(&tb).await;
    let first = open(&b.session(&tb));
    assert!(first.refresh_token.is_some(), "the refresh token is kept");

    // Not due yet: no token request, no new cookie.
    let r = b.auth(&tb).await;
    assert_eq!(r.status(), 200);
    assert_eq!(set_cookie(&r), None);
    assert_eq!(op.refresh_calls(), 0);

    // The IdP now puts alice in another group too.
    op.set_claim("groups", json!(["staff", "ops"]));
    tokio::time::sleep(DUE).await;
    let r = b.auth(&tb).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-groups"], "staff,ops");
    let c = set_cookie(&r).expect("the refreshed session is set");
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
    assert_eq!(op.refresh_calls(), 1);
    let rec = op.recorded();
    let form = rec.token.last().unwrap();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form.get("refresh_token"), first.refresh_token.as_ref());
    assert!(
        rec.token_auth
            .last()
            .unwrap()
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "the client authenticates as at login"
    );
    let second = open(&b.session(&tb));
    assert!(second.validated_at > first.validated_at);
    assert_eq!(second.issued_at, first.issued_at);
    assert_eq!(
        second.expires_at, first.expires_at,
        "refresh never extends the session"
    );
    assert_eq!(tb.broker.metrics.refreshes(KEY, "refreshed"), 1);

    // The new cookie is fresh: the next requests do not refresh.
    for _ in 0..3 {
        let r = b.auth(&tb).await;
        assert_eq!(r.status(), 200);
        assert_eq!(set_cookie(&r), None);
    }
    assert_eq!(op.refresh_calls(), 1);

    // /oauth/userinfo refreshes too and says when the IdP last vouched.
    tokio::time::sleep(DUE).await;
    let r = b
        .client
        .get(tb.url("/oauth/userinfo"))
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r).is_some());
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["refreshable"], true);
    assert!(info["validatedAt"].as_i64().unwrap() > second.validated_at);
    assert_eq!(op.refresh_calls(), 2);
}

#[tokio::test]
async fn a_revoked_grant_ends_the_session() {
    let (op, tb) = setup_with(|_| {}).await;
    let b = login(&tb).await;
    op.revoke_refresh_tokens();
    tokio::time::sleep(DUE).await;
    let r = b.auth(&tb).await;
    assert_eq!(r.status(), 401);
    let c = set_cookie(&r).expect("the session cookie is cleared");
    assert!(c.contains("Max-Age=0"), "{c}");
    assert_eq!(tb.broker.metrics.failures(Reason::SessionRevoked), 1);
    assert_eq!(tb.broker.metrics.refreshes(KEY, "ended"), 1);
    // The browser dropped the cookie: still 401, no further token request.
    let r = b.auth(&tb).await;
    assert_eq!(r.status(), 401);
    assert_eq!(op.refresh_calls(), 1);
}

#[tokio::test]
async fn the_new_identity_goes_through_every_check_again() {
    type Prepare = fn(&BadOp);
    let cases: [(Prepare, Reason, fn(&mut ProgrammedProvider)); 6] = [
        (
            |op| op.set_claim("sub", json!("mallory")),
            Reason::InvalidSubject,
            |_| {},
        ),
        (
            |op| op.set_claim("email_verified", json!(false)),
            Reason::UnverifiedEmail,
            |_| {},
        ),
        (
            |op| op.set_fault(Fault::BadSignature),
            Reason::InvalidSignature,
            |_| {},
        ),
        (
            |op| op.set_fault(Fault::WrongIssuer),
            Reason::InvalidIssuer,
            |_| {},
        ),
        (
            |op| op.set_fault(Fault::Expired),
            Reason::TokenExpired,
            |_| {},
        ),
        (
            // Removed from the only allowed group at the IdP.
            |op| op.set_claim("groups", json!(["contractors"])),
            Reason::AccessDenied,
            |p| p.allowed_groups = vec!["staff".into()],
        ),
    ];
    for (prepare, reason, edit) in cases {
        let (op, tb) = setup_with(edit).await;
        let b = login(&tb).await;
        assert_eq!(b.auth(&tb).await.status(), 200);
        prepare(&op);
        tokio::time::sleep(DUE).await;
        let r = b.auth(&tb).await;
        assert_eq!(r.status(), 401, "{}", reason.code());
        assert!(set_cookie(&r).is_some_and(|c| c.contains("Max-Age=0")));
        assert_eq!(
            tb.broker.metrics.failures(reason),
            1,
            "ended for {}",
            reason.code()
        );
        assert_eq!(tb.broker.metrics.refreshes(KEY, "ended"), 1);
    }
}

#[tokio::test]
async fn an_idp_that_is_down_slow_or_lying_never_logs_anyone_out() {
    for fault in [
        Fault::TokenEndpointServerError,
        Fault::TokenResponseNotJson,
        Fault::TokenEndpointSlow,
    ] {
        let (op, tb) = setup_with(|_| {}).await;
        let b = login(&tb).await;
        op.set_fault(fault);
        tokio::time::sleep(DUE).await;
        for i in 0..10 {
            let r = b.auth(&tb).await;
            assert_eq!(r.status(), 200, "{fault:?} request {i}");
            assert_eq!(r.headers()["x-auth-request-user"], "alice");
            assert_eq!(set_cookie(&r), None, "{fault:?}: the old session stays");
        }
        assert_eq!(
            op.refresh_calls(),
            1,
            "{fault:?}: one token request, then the provider backs off"
        );
        assert!(tb.broker.metrics.refreshes(KEY, "kept") >= 1);
        assert_eq!(tb.broker.metrics.refreshes(KEY, "ended"), 0);
    }
}

#[tokio::test]
async fn many_requests_with_one_due_cookie_share_one_refresh_of_a_rotating_token() {
    let (op, tb) = setup_with(|_| {}).await;
    op.rotate_refresh_tokens(true);
    let b = login(&tb).await;
    let old = b.session(&tb);
    tokio::time::sleep(DUE).await;
    let raw = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (raw, url, old) = (raw.clone(), tb.url("/oauth/auth"), old.clone());
        tasks.push(tokio::spawn(async move {
            raw.get(url)
                .header("cookie", format!("_sso_session={old}"))
                .send()
                .await
                .unwrap()
        }));
    }
    let mut cookies = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status(), 200);
        cookies.insert(set_cookie(&r).expect("each answer carries the new session"));
    }
    assert_eq!(op.refresh_calls(), 1, "one refresh for 24 requests");
    assert_eq!(cookies.len(), 1, "all got the same new session");
    let new = cookies.into_iter().next().unwrap();
    let new = new.split_once('=').unwrap().1.split(';').next().unwrap();
    assert_ne!(
        open(new).refresh_token,
        open(&old).refresh_token,
        "the rotated token is kept"
    );
    // A late request with the old cookie gets the same result, not a second
    // redemption of the spent token.
    let r = raw
        .get(tb.url("/oauth/auth"))
        .header("cookie", format!("_sso_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(op.refresh_calls(), 1);
    // The rotated token works at the next refresh.
    tokio::time::sleep(DUE).await;
    let r = raw
        .get(tb.url("/oauth/auth"))
        .header("cookie", format!("_sso_session={new}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(set_cookie(&r).is_some());
    assert_eq!(op.refresh_calls(), 2);
    assert_eq!(tb.broker.metrics.refreshes(KEY, "refreshed"), 2);
}

#[tokio::test]
async fn a_refresh_without_an_id_token_keeps_the_identity() {
    let (op, tb) = setup_with(|_| {}).await;
    let b = login(&tb).await;
    let before = open(&b.session(&tb));
    op.set_fault(Fault::RefreshWithoutIdToken);
    op.set_claim("groups", json!(["changed"]));
    tokio::time::sleep(DUE).await;
    let r = b.auth(&tb).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-auth-request-groups"],
        "staff",
        "no signed claims, no change"
    );
    assert!(set_cookie(&r).is_some());
    let after = open(&b.session(&tb));
    assert!(after.validated_at > before.validated_at);
    assert_eq!(op.refresh_calls(), 1);
}

#[tokio::test]
async fn refresh_off_keeps_no_refresh_token_and_never_asks() {
    let op = BadOp::start().await;
    let op2 = op.clone();
    let tb = TestBroker::start(move |base| bad_op_config(&op2.issuer, base, |_| {})).await;
    let b = login(&tb).await;
    assert_eq!(open(&b.session(&tb)).refresh_token, None);
    tokio::time::sleep(DUE).await;
    assert_eq!(b.auth(&tb).await.status(), 200);
    assert_eq!(op.refresh_calls(), 0);
}

/// Through a real nginx `auth_request`: the refreshed session reaches the
/// browser on the protected page's answer, and the app sees the new claims.
#[tokio::test]
async fn the_refreshed_cookie_reaches_the_browser_through_nginx() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let op = BadOp::start().await;
    let op2 = op.clone();
    let tb = TestBroker::start_refreshing_behind(&public, EVERY, move |base| {
        bad_op_config(&op2.issuer, base, |_| {})
    })
    .await;
    let app = echo_upstream().await;
    let nginx = Nginx::start(port, tb.addr, app);
    let b = Browser::new();
    common::early_in_a_second().await;
    let landing = login_at(&b.client, &public, KEY, "unused", "/app/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let page = |b: &Browser| {
        let url = format!("{public}/app/page");
        let c = b.client.clone();
        async move { c.get(url).send().await.unwrap() }
    };
    let r = page(&b).await;
    assert_eq!(r.status(), 200, "{}", nginx.error_log());
    assert_eq!(set_cookie(&r), None);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-request-groups"], "staff");

    op.set_claim("groups", json!(["staff", "ops"]));
    tokio::time::sleep(DUE).await;
    common::early_in_a_second().await;
    let r = page(&b).await;
    assert_eq!(r.status(), 200);
    assert!(
        set_cookie(&r).is_some(),
        "nginx passed the refreshed session on"
    );
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-auth-request-groups"], "staff,ops");
    // The browser now holds the new cookie: no second refresh.
    for _ in 0..3 {
        let r = page(&b).await;
        assert_eq!(r.status(), 200);
        assert_eq!(set_cookie(&r), None);
    }
    assert_eq!(op.refresh_calls(), 1);
}
