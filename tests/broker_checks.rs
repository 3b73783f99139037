//! Every ID-token, state, PKCE, userinfo and email check of the broker,
//! one misbehaving-provider fault at a time: each is refused for its own
//! stated reason (status, `data-reason`, metric), and the good case logs in.

use sso_test_support as common;

use common::{
    badop::{BadOp, Fault},
    broker::{Landing, TestBroker, browser, config, login_at, provider},
};
use sso_operator::{
    api::ClientAuthMethod,
    broker::error::Reason,
    config::{BrokerConfig, ProgrammedProvider},
};

const KEY: &str = "team/bad";
const PATHS: [&str; 5] = ["/authorize", "/token", "/userinfo", "/jwks", "/end_session"];

fn bad_provider(op: &BadOp, base: &str) -> ProgrammedProvider {
    provider(KEY, &op.issuer, base, PATHS, "client", Some("secret"))
}

async fn setup_with(edit: impl FnOnce(&mut ProgrammedProvider)) -> (BadOp, TestBroker) {
    let op = BadOp::start().await;
    let op2 = op.clone();
    let tb = TestBroker::start(move |base| {
        let mut p = bad_provider(&op2, base);
        edit(&mut p);
        config(vec![p])
    })
    .await;
    (op, tb)
}

async fn login(tb: &TestBroker) -> (reqwest::Client, Landing) {
    let client = browser();
    let landing = login_at(&client, &tb.base, KEY, "unused", "/done").await;
    (client, landing)
}

async fn assert_refused(fault: Fault, reason: Reason, prepare: impl FnOnce(&BadOp)) {
    let (op, tb) = setup_with(|_| {}).await;
    prepare(&op);
    op.set_fault(fault);
    let (client, landing) = login(&tb).await;
    assert_eq!(
        landing.reason(),
        Some(reason.code()),
        "{fault:?} must be refused as {}: {landing:?}",
        reason.code()
    );
    assert_eq!(landing.status, reason.status().as_u16(), "{fault:?}");
    assert_eq!(
        tb.broker.metrics.failures(reason),
        1,
        "{fault:?} counted once"
    );
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 401, "{fault:?}: no session");
}

#[tokio::test]
async fn the_good_provider_logs_in_with_pkce_and_basic_auth() {
    let (op, tb) = setup_with(|_| {}).await;
    let (client, landing) = login(&tb).await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(landing.location.as_deref(), Some(tb.url("/done").as_str()));
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
    assert_eq!(r.headers()["x-auth-request-groups"], "staff");
    let rec = op.recorded();
    let authz = &rec.authorize[0];
    assert_eq!(authz["code_challenge_method"], "S256");
    assert!(authz.contains_key("nonce") && authz.contains_key("state"));
    // The OP checked BASE64URL(SHA256(verifier)) == challenge, or it would
    // have answered invalid_grant.
    assert!(rec.token[0].contains_key("code_verifier"));
    assert!(
        rec.token_auth[0]
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic "))
    );
    assert!(!rec.token[0].contains_key("client_secret"));
    assert_eq!(rec.userinfo_calls, 0, "the ID token had every mapped claim");
}

#[tokio::test]
async fn client_secret_post_public_clients_and_pkce_off() {
    // client_secret_post: the secret in the form, no Authorization header.
    let (op, tb) = setup_with(|p| p.client_auth_method = ClientAuthMethod::ClientSecretPost).await;
    assert_eq!(login(&tb).await.1.status, 302);
    let rec = op.recorded();
    assert_eq!(rec.token[0]["client_secret"], "secret");
    assert_eq!(rec.token_auth[0], None);

    // A public client: no secret at all.
    let (op, tb) = setup_with(|p| {
        p.client_auth_method = ClientAuthMethod::None;
        p.client_secret = None;
    })
    .await;
    op.set_secrets(&[""]);
    assert_eq!(login(&tb).await.1.status, 302);
    let rec = op.recorded();
    assert_eq!(rec.token[0]["client_id"], "client");
    assert!(!rec.token[0].contains_key("client_secret"));

    // PKCE off: no challenge and no verifier.
    let (op, tb) = setup_with(|p| p.pkce = false).await;
    assert_eq!(login(&tb).await.1.status, 302);
    let rec = op.recorded();
    assert!(!rec.authorize[0].contains_key("code_challenge"));
    assert!(!rec.token[0].contains_key("code_verifier"));
}

#[tokio::test]
async fn signature_and_key_checks() {
    assert_refused(Fault::BadSignature, Reason::InvalidSignature, |_| {}).await;
    assert_refused(Fault::UnknownKid, Reason::UnknownKey, |_| {}).await;
    assert_refused(Fault::NoKidTwoKeys, Reason::AmbiguousKey, |_| {}).await;
    assert_refused(Fault::AlgNone, Reason::DisallowedAlg, |_| {}).await;
    assert_refused(Fault::Hs256ClientSecret, Reason::DisallowedAlg, |_| {}).await;
    assert_refused(Fault::Hs256PublicKey, Reason::DisallowedAlg, |_| {}).await;
    assert_refused(Fault::MalformedIdToken, Reason::MalformedIdToken, |_| {}).await;

    // A provider that signs ID tokens with RS256 only (discovery or
    // spec.idTokenSigningAlgs): an ES256 token under a key it publishes is
    // refused.
    let (_op, tb) = setup_with(|p| p.id_token_algs = vec!["RS256".into()]).await;
    let (_c, landing) = login(&tb).await;
    assert_eq!(
        landing.reason(),
        Some(Reason::DisallowedAlg.code()),
        "{landing:?}"
    );
    let (_op, tb) = setup_with(|p| p.id_token_algs = vec!["ES256".into()]).await;
    assert_eq!(login(&tb).await.1.status, 302, "ES256 pinned, ES256 signed");
}

#[tokio::test]
async fn claim_checks() {
    assert_refused(Fault::WrongIssuer, Reason::InvalidIssuer, |_| {}).await;
    assert_refused(Fault::IssuerTrailingSlash, Reason::InvalidIssuer, |_| {}).await;
    assert_refused(
        Fault::AudienceMissingClient,
        Reason::InvalidAudience,
        |_| {},
    )
    .await;
    assert_refused(Fault::MultipleAudNoAzp, Reason::InvalidAzp, |_| {}).await;
    assert_refused(Fault::MultipleAudWrongAzp, Reason::InvalidAzp, |_| {}).await;
    assert_refused(Fault::WrongAzp, Reason::InvalidAzp, |_| {}).await;
    assert_refused(Fault::Expired, Reason::TokenExpired, |_| {}).await;
    assert_refused(Fault::IssuedInFuture, Reason::IssuedInFuture, |_| {}).await;
    assert_refused(Fault::NotYetValid, Reason::NotYetValid, |_| {}).await;
    assert_refused(Fault::NonceMismatch, Reason::InvalidNonce, |_| {}).await;
    assert_refused(Fault::NonceMissing, Reason::InvalidNonce, |_| {}).await;
    assert_refused(Fault::SubMissing, Reason::MissingSub, |_| {}).await;
}

#[tokio::test]
async fn email_and_userinfo_checks() {
    assert_refused(Fault::EmailUnverified, Reason::UnverifiedEmail, |_| {}).await;
    assert_refused(Fault::EmailVerifiedAbsent, Reason::UnverifiedEmail, |_| {}).await;
    assert_refused(Fault::EmailVerifiedString, Reason::UnverifiedEmail, |_| {}).await;
    // Userinfo is called when the ID token lacks a mapped claim; its sub
    // must be the ID token's.
    assert_refused(
        Fault::UserinfoSubMismatch,
        Reason::UserinfoSubMismatch,
        |op| op.omit_from_id_token(&["groups"]),
    )
    .await;

    // The same gap with an honest userinfo: claims come from it.
    let (op, tb) = setup_with(|_| {}).await;
    op.omit_from_id_token(&["email", "groups"]);
    let (client, landing) = login(&tb).await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(op.recorded().userinfo_calls, 1);
    let r = client.get(tb.url("/oauth/auth")).send().await.unwrap();
    assert_eq!(r.headers()["x-auth-request-email"], "alice@example.com");
    assert_eq!(r.headers()["x-auth-request-groups"], "staff");

    // requireVerifiedEmail: false lets an unverified address through.
    let (op, tb) = setup_with(|p| p.require_verified_email = false).await;
    op.set_fault(Fault::EmailUnverified);
    assert_eq!(login(&tb).await.1.status, 302);
}

#[tokio::test]
async fn token_endpoint_and_authorization_response_checks() {
    assert_refused(Fault::TokenEndpointError, Reason::TokenError, |_| {}).await;
    assert_refused(
        Fault::TokenEndpointServerError,
        Reason::TokenInvalidResponse,
        |_| {},
    )
    .await;
    assert_refused(
        Fault::TokenResponseNotJson,
        Reason::TokenInvalidResponse,
        |_| {},
    )
    .await;
    assert_refused(Fault::NoIdToken, Reason::MissingIdToken, |_| {}).await;
    assert_refused(Fault::AuthorizeError, Reason::IdpError, |_| {}).await;
    assert_refused(Fault::AuthorizeWrongIssuer, Reason::IssuerMismatch, |_| {}).await;
    // A client secret the provider does not accept.
    assert_refused(Fault::None, Reason::TokenError, |op| {
        op.set_secrets(&["rotated"])
    })
    .await;
}

/// A token endpoint or userinfo streaming without end costs the broker one
/// megabyte: it stops reading there and hangs up, so the provider gets only
/// that much (plus what the sockets buffer) out of the gigabyte it offers.
#[tokio::test]
async fn endless_answers_are_cut_at_one_megabyte() {
    for (fault, reason, omit) in [
        (
            Fault::TokenEndpointEndless,
            Reason::TokenInvalidResponse,
            &[][..],
        ),
        (
            Fault::UserinfoEndless,
            Reason::UserinfoError,
            &["groups"][..],
        ),
    ] {
        let (op, tb) = setup_with(|_| {}).await;
        op.omit_from_id_token(omit);
        op.set_fault(fault);
        let (_c, landing) = login(&tb).await;
        assert_eq!(
            landing.reason(),
            Some(reason.code()),
            "{fault:?}: {landing:?}"
        );
        assert!(
            landing.body.contains("larger than 1024 KiB"),
            "{fault:?} says why: {}",
            landing.body
        );
        let sent = op
            .recorded()
            .endless_sent
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            sent > 1 << 20 && sent < 16 << 20,
            "{fault:?}: the provider got {sent} bytes out; the broker must stop at 1 MiB"
        );
    }
}

#[tokio::test]
async fn the_idp_error_and_description_reach_the_page() {
    let (op, tb) = setup_with(|_| {}).await;
    op.set_fault(Fault::AuthorizeError);
    let (_c, landing) = login(&tb).await;
    assert!(landing.body.contains("access_denied"));
    assert!(landing.body.contains("User cancelled the login"));
    let (op, tb) = setup_with(|_| {}).await;
    op.set_fault(Fault::TokenEndpointError);
    let (_c, landing) = login(&tb).await;
    assert!(
        landing.body.contains("invalid_grant")
            && landing.body.contains("The code was already used")
    );
    assert!(!landing.body.contains("secret"), "no secret on the page");
}

/// What a provider's endpoints answered is for the operator's log: a
/// tenant pointing `token_endpoint` at an internal service must not read
/// that service's answers, or its address, off the login page.
#[tokio::test]
async fn the_page_shows_no_endpoint_and_no_answer() {
    for (fault, reason, leak) in [
        (
            Fault::TokenResponseNotJson,
            Reason::TokenInvalidResponse,
            "this is not json",
        ),
        (
            Fault::TokenEndpointServerError,
            Reason::TokenInvalidResponse,
            "Internal error",
        ),
    ] {
        let (op, tb) = setup_with(|_| {}).await;
        op.set_fault(fault);
        let (_c, landing) = login(&tb).await;
        assert_eq!(landing.reason(), Some(reason.code()), "{fault:?}");
        assert!(!landing.body.contains(leak), "{fault:?}: {}", landing.body);
        assert!(
            !landing.body.contains(&op.addr.to_string()),
            "{fault:?}: {}",
            landing.body
        );
    }
    // Userinfo answering an error: the same.
    let (op, tb) =
        setup_with(|p| p.endpoints.userinfo_endpoint = Some(format!("{}/nowhere", p.issuer))).await;
    op.omit_from_id_token(&["groups"]);
    let (_c, landing) = login(&tb).await;
    assert_eq!(landing.reason(), Some(Reason::UserinfoError.code()));
    assert!(
        !landing.body.contains("/nowhere") && !landing.body.contains("404"),
        "{}",
        landing.body
    );
}

#[tokio::test]
async fn key_rotation_refetches_the_jwks_once_and_rate_limits_refetches() {
    // The IdP rotates: the token's kid appears in the JWKS only on the
    // second fetch. One refetch, then success.
    let (op, tb) = setup_with(|_| {}).await;
    op.set_fault(Fault::UnknownKidPublishedOnRefetch);
    let (_c, landing) = login(&tb).await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(op.recorded().jwks_fetches, 2, "first fetch + one refetch");

    // A token with no kid and exactly one key in the JWKS: accepted.
    let (op, tb) = setup_with(|_| {}).await;
    op.set_fault(Fault::NoKidOneKey);
    assert_eq!(login(&tb).await.1.status, 302);

    // Unknown kids again and again: at most one refetch per interval.
    let (op, tb) = setup_with(|_| {}).await;
    op.set_fault(Fault::UnknownKid);
    for _ in 0..5 {
        assert_eq!(login(&tb).await.1.reason(), Some("unknown_key"));
    }
    assert_eq!(
        op.recorded().jwks_fetches,
        2,
        "first fetch + one refetch, then rate-limited"
    );
}

#[tokio::test]
async fn concurrent_logins_in_one_browser_do_not_clobber_each_other() {
    let (_op, tb) = setup_with(|_| {}).await;
    let client = browser();
    // Start three logins (three tabs), then finish them in reverse order.
    let mut callbacks = Vec::new();
    for rd in ["/one", "/two", "/three"] {
        let r = client
            .get(tb.url(&format!("/oauth/start?provider={KEY}&rd={rd}")))
            .send()
            .await
            .unwrap();
        let authz = r.headers()["location"].to_str().unwrap().to_string();
        let r = client.get(&authz).send().await.unwrap();
        callbacks.push((rd, r.headers()["location"].to_str().unwrap().to_string()));
    }
    for (rd, cb) in callbacks.into_iter().rev() {
        let r = client.get(&cb).send().await.unwrap();
        assert_eq!(r.status(), 302, "{rd}");
        assert_eq!(r.headers()["location"], rd);
    }
}

#[tokio::test]
async fn rotating_the_client_secret_and_adding_removing_providers_under_a_login_loop() {
    let op = BadOp::start().await;
    let op_for_cfg = op.clone();
    let tb = TestBroker::start(move |base| config(vec![bad_provider(&op_for_cfg, base)])).await;
    let tb = std::sync::Arc::new(tb);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let tb = tb.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (client, landing) = login(&tb).await;
                let auth = client
                    .get(tb.url("/oauth/auth"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                if landing.status == 302 && auth == 200 {
                    ok += 1;
                } else {
                    failed.push(format!(
                        "{} {:?} auth={auth}",
                        landing.status,
                        landing.reason()
                    ));
                }
            }
            (ok, failed)
        }));
    }
    let base = tb.base.clone();
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
    pause().await;
    // The IdP accepts the old and the new secret during the rotation.
    op.set_secrets(&["secret", "secret-2"]);
    let mut p = bad_provider(&op, &base);
    p.client_secret = Some("secret-2".into());
    tb.broker.apply_config(&config(vec![p.clone()]));
    pause().await;
    // The old secret is revoked: logins keep working, so the new one is used.
    op.set_secrets(&["secret-2"]);
    let tokens_before = op.recorded().token.len();
    pause().await;
    // Add a provider, then remove it, while the loop runs.
    let mut other = bad_provider(&op, &base);
    other.name = "other".into();
    other.redirect_uri = format!("{base}/oauth/callback/team/other");
    let with_other: BrokerConfig = config(vec![p.clone(), other]);
    tb.broker.apply_config(&with_other);
    let page = reqwest::get(tb.url("/oauth/login"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-provider=\"team/other\""));
    pause().await;
    tb.broker.apply_config(&config(vec![p]));
    pause().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        let (ok, failed) = l.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed logins during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total >= 20, "the loop ran ({total} logins)");
    let rec = op.recorded();
    assert!(
        rec.token.len() > tokens_before,
        "logins continued after the old secret was revoked"
    );
    let r = browser()
        .get(tb.url("/oauth/start?provider=team/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the removed provider is gone");
}

/// A captured callback replayed with its login cookie: the first opening
/// logs in, every replay is refused before the broker asks the IdP, so
/// the IdP sees one token request however often it is replayed.
#[tokio::test]
async fn a_replayed_callback_is_refused_without_a_token_request() {
    let (op, tb) = setup_with(|_| {}).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(tb.url(&format!("/oauth/start?provider={KEY}&rd=/done")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let r = plain.get(&authorize).send().await.unwrap();
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let open = async || {
        plain
            .get(&callback)
            .header("cookie", &login_cookie)
            .send()
            .await
            .unwrap()
    };
    let first = open().await;
    assert_eq!(first.status(), 302, "the first opening logs in");
    for _ in 0..5 {
        let again = open().await;
        assert_eq!(again.status(), 400);
        let body = again.text().await.unwrap();
        assert!(body.contains("data-reason=\"state_mismatch\""), "{body}");
        assert!(body.contains("already finished"), "{body}");
    }
    assert_eq!(op.recorded().token.len(), 1, "one token request");
}

/// The broker's own requests obey the egress rule too: a programmed token
/// or userinfo endpoint at the cloud metadata address or a cluster address
/// is never asked (these brokers allow loopback only, where the test OP
/// listens), and the page says only that it could not be reached.
#[tokio::test]
async fn token_and_userinfo_endpoints_outside_the_egress_rule_are_never_asked() {
    let (op, tb) = setup_with(|p| {
        p.endpoints.token_endpoint = "https://169.254.169.254/latest/meta-data/iam".into()
    })
    .await;
    let (_c, landing) = login(&tb).await;
    assert_eq!(
        landing.reason(),
        Some(Reason::TokenUnreachable.code()),
        "{landing:?}"
    );
    assert!(!landing.body.contains("169.254"), "{}", landing.body);
    assert!(op.recorded().token.is_empty());

    let (op, tb) = setup_with(|p| {
        p.endpoints.userinfo_endpoint = Some("https://10.96.0.1/api/v1/secrets".into())
    })
    .await;
    op.omit_from_id_token(&["groups"]);
    let (_c, landing) = login(&tb).await;
    assert_eq!(
        landing.reason(),
        Some(Reason::UserinfoError.code()),
        "{landing:?}"
    );
    assert!(!landing.body.contains("10.96"), "{}", landing.body);
}
