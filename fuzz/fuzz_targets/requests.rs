//! Every broker route with attacker-chosen method, path, query, headers
//! and cookies, optionally carrying a validly sealed login or session
//! cookie with fuzzer-chosen contents (what a lying IdP could make us
//! seal). Checks: no panic, no 500, every redirect stays on allowed
//! hosts, every cookie fits a browser's 4 KB.
#![no_main]

mod common;

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use sso_operator::broker::{login, session};
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
enum Route {
    Root,
    Login,
    Start,
    Callback { namespace: String, name: String },
    CallbackCorp,
    Auth,
    AuthPrefix(String),
    /// The policy the fuzz broker has, with an appended path.
    Policy(String),
    Userinfo,
    Logout,
    LoggedOut,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct FuzzLogin {
    other_provider: bool,
    state: Option<String>,
    nonce: String,
    verifier: Option<String>,
    rd: String,
    age: i16,
    code: String,
}

#[derive(Arbitrary, Debug)]
struct FuzzSession {
    provider: Option<String>,
    sub: String,
    user: String,
    email: Option<String>,
    groups: Vec<String>,
    issued_ago: u16,
    expires_in: i16,
    validated_ago: u16,
    refresh_token: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: Route,
    query: String,
    headers: Vec<(String, String)>,
    login: Option<FuzzLogin>,
    session: Option<FuzzSession>,
}

/// One broker for the whole run (building its provider runtimes costs
/// more than a request); its state carrying over is part of the test.
fn router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let _guard = common::runtime().enter();
        common::broker().router()
    })
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fuzz_target!(|input: Input| {
    let ring = common::ring();
    let now = common::now();
    let method = match input.method % 6 {
        0 | 1 => http::Method::GET,
        2 => http::Method::POST,
        3 => http::Method::HEAD,
        4 => http::Method::OPTIONS,
        _ => http::Method::PUT,
    };
    let path = match &input.route {
        Route::Root => "/".to_string(),
        Route::Login => "/oauth/login".into(),
        Route::Start => "/oauth/start".into(),
        Route::Callback { namespace, name } => {
            format!("/oauth/callback/{}/{}", enc(namespace), enc(name))
        }
        Route::CallbackCorp => "/oauth/callback/sso/corp".into(),
        Route::Auth => "/oauth/auth".into(),
        Route::AuthPrefix(rest) => format!("/oauth/auth/{}", enc(rest)),
        Route::Policy(rest) => format!("/oauth/auth/sso/app/{}", enc(rest)),
        Route::Userinfo => "/oauth/userinfo".into(),
        Route::Logout => "/oauth/logout".into(),
        Route::LoggedOut => "/oauth/logged-out".into(),
        Route::Raw(p) => format!("/{p}"),
    };
    let mut query = input.query.clone();
    let mut cookies: Vec<String> = Vec::new();
    if let Some(l) = &input.login {
        let provider = if l.other_provider {
            "sso/other"
        } else {
            "sso/corp"
        };
        let state = l
            .state
            .clone()
            .unwrap_or_else(|| "AAAAAAAAAAAAAAAAAAAAAA".into());
        let sealed = login::seal(
            ring,
            &login::LoginState {
                provider: provider.into(),
                state: state.clone(),
                nonce: l.nonce.clone(),
                verifier: l.verifier.clone(),
                rd: l.rd.clone(),
                created: now - i64::from(l.age),
            },
        );
        cookies.push(format!("{}={sealed}", login::cookie_name(&state)));
        query = format!("state={}&code={}&{query}", enc(&state), enc(&l.code));
    }
    if let Some(s) = &input.session {
        let sealed = session::seal(
            ring,
            session::Session {
                provider: s.provider.clone().unwrap_or_else(|| "sso/corp".into()),
                sub: s.sub.clone(),
                user: s.user.clone(),
                email: s.email.clone(),
                groups: s.groups.clone(),
                groups_truncated: false,
                issued_at: now - i64::from(s.issued_ago),
                expires_at: now + i64::from(s.expires_in),
                validated_at: now - i64::from(s.validated_ago),
                refresh_token: s.refresh_token.clone(),
                claims: Default::default(),
                claims_looked_for: Vec::new(),
                issuer: String::new(),
                client_id: String::new(),
            },
            &[],
        );
        if let Ok(sealed) = sealed {
            cookies.push(format!("{}={sealed}", session::SESSION_COOKIE));
        }
    }
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    if !cookies.is_empty() {
        let Ok(v) = http::HeaderValue::from_str(&cookies.join("; ")) else {
            return;
        };
        req = req.header(http::header::COOKIE, v);
    }
    let Ok(req) = req.body(Body::empty()) else {
        return;
    };
    let resp = common::runtime().block_on(async { router().clone().oneshot(req).await.unwrap() });
    let status = resp.status();
    assert_ne!(
        status,
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "500 for {input:?}"
    );
    if let Some(loc) = resp.headers().get(http::header::LOCATION) {
        let loc = loc.to_str().expect("Location is visible ASCII");
        assert!(
            common::location_is_safe(loc),
            "redirect to {loc:?} for {input:?}"
        );
    }
    for c in resp.headers().get_all(http::header::SET_COOKIE) {
        assert!(c.len() < 4096, "a {} byte cookie", c.len());
    }
});
