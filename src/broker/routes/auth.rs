//! Requests that carry a session: forward-auth and userinfo, with the
//! session refresh when one is due.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse as _, Response},
};
use tracing::{info, warn};

use crate::broker::{
    Broker, claims,
    cookies::{self, SESSION_COOKIE, SESSION_PATH},
    headers,
    provider::ProviderRuntime,
    refresh::{self, Outcome},
    respond::{unauthorized, with_cookies},
    session::{self, Session},
};

/// The session from the request, if valid and its provider still serves,
/// with the cookie value it came from.
pub(super) fn current_session<'h>(
    b: &Broker,
    headers: &'h HeaderMap,
) -> Result<(Session, Arc<ProviderRuntime>, &'h str), &'static str> {
    let ring = b.ring().ok_or("no_keys")?;
    let token = cookies::get(headers, SESSION_COOKIE).ok_or("no_session")?;
    let s = session::open(&ring, token, b.now()).map_err(|e| e.category())?;
    let table = b.table();
    let provider = table
        .providers
        .get(&s.provider)
        .cloned()
        .ok_or("provider_gone")?;
    Ok((s, provider, token))
}

/// A request's session after a refresh when one is due: the session, its
/// provider and the cookie to set (after a refresh), or why there is none
/// and the cookie to clear.
async fn live_session(
    b: &Broker,
    headers: &HeaderMap,
) -> Result<(Session, Arc<ProviderRuntime>, Option<HeaderValue>), (&'static str, Option<HeaderValue>)>
{
    let (s, provider, token) = current_session(b, headers).map_err(|r| (r, None))?;
    let now = b.now();
    if !s.refresh_due(b.settings.session_refresh, now) {
        return Ok((s, provider, None));
    }
    let ring = b.ring().ok_or(("no_keys", None))?;
    let outcome = b
        .refresher
        .join(token, || {
            let (provider, ring, s) = (provider.clone(), ring.clone(), s.clone());
            let metrics = b.metrics.clone();
            async move {
                let outcome = refresh::refresh(&provider, &ring, s.clone(), now).await;
                metrics.refresh_result(&provider.cfg.key(), outcome.result());
                match &outcome {
                    Outcome::Refreshed { .. } => {
                        info!(provider = %s.provider, user = %s.user, "session refreshed")
                    }
                    Outcome::Kept(r) => warn!(
                        provider = %s.provider,
                        user = %s.user,
                        reason = r.reason.code(),
                        "session refresh deferred, the session keeps serving: {}",
                        r.message
                    ),
                    Outcome::Ended(r) => {
                        metrics.failure(r.reason);
                        warn!(
                            provider = %s.provider,
                            user = %s.user,
                            reason = r.reason.code(),
                            "session ended at refresh: {}",
                            r.message
                        )
                    }
                }
                outcome
            }
        })
        .await;
    match outcome {
        Outcome::Refreshed { session, sealed } => {
            let max_age = (session.expires_at - now).max(0);
            let set = b
                .cookies
                .set(SESSION_COOKIE, &sealed, SESSION_PATH, max_age);
            Ok((session, provider, Some(set)))
        }
        Outcome::Kept(_) => Ok((s, provider, None)),
        Outcome::Ended(_) => Err(("ended", Some(b.cookies.clear(SESSION_COOKIE, SESSION_PATH)))),
    }
}

pub async fn forward_auth(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let (s, provider, set) = match live_session(&b, &headers).await {
        Ok(v) => v,
        Err((result, clear)) => {
            b.metrics.forward_auth_result(result);
            return with_cookies(unauthorized(), clear);
        }
    };
    // Access rules are re-checked on every request: a tightened rule
    // applies to existing sessions at once.
    if let Err(r) = claims::check_access(&s.user, s.email.as_deref(), &s.groups, &provider.cfg) {
        b.metrics.forward_auth_result("denied");
        return (StatusCode::FORBIDDEN, r.message).into_response();
    }
    b.metrics.forward_auth_result("ok");
    let mut resp = StatusCode::OK.into_response();
    headers::set_identity(resp.headers_mut(), &s);
    with_cookies(resp, set)
}

pub async fn userinfo(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    match live_session(&b, &headers).await {
        Ok((s, _, set)) => with_cookies(
            Json(serde_json::json!({
                "user": s.user,
                "email": s.email,
                "groups": s.groups,
                "groupsTruncated": s.groups_truncated,
                "provider": s.provider,
                "sub": s.sub,
                "expiresAt": s.expires_at,
                "validatedAt": s.validated_at.max(s.issued_at),
                "refreshable": s.refresh_token.is_some(),
            }))
            .into_response(),
            set,
        ),
        Err((_, clear)) => with_cookies(
            (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "no valid session"})),
            )
                .into_response(),
            clear,
        ),
    }
}

/// The broker runs on the clock it is given: a session passes until that
/// clock reaches its expiry, whatever the wall clock says.
#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt as _;

    use super::*;
    use crate::{
        api::ClientAuthMethod,
        broker::{BrokerSettings, redirect::RedirectPolicy, seal::KeyRing},
        clock::FixedClock,
        config::{BrokerConfig, ProgrammedProvider},
        oidc::discovery::{HttpSettings, ProviderEndpoints},
    };

    const T0: i64 = 2_000_000_000;

    fn provider() -> ProgrammedProvider {
        let issuer = "http://127.0.0.1:1";
        ProgrammedProvider {
            namespace: "team".into(),
            name: "corp".into(),
            display_name: "Corp".into(),
            redirect_uri: "https://sso.example.com/oauth/callback/team/corp".into(),
            generation: 1,
            issuer: issuer.into(),
            client_id: "c".into(),
            client_secret: Some("s".into()),
            client_auth_method: ClientAuthMethod::ClientSecretBasic,
            scopes: vec!["openid".into()],
            pkce: true,
            authorize_params: Default::default(),
            endpoints: ProviderEndpoints {
                issuer: issuer.into(),
                authorization_endpoint: format!("{issuer}/a"),
                token_endpoint: format!("{issuer}/t"),
                jwks_uri: format!("{issuer}/j"),
                ..Default::default()
            },
            ca_bundle: None,
            claims: Default::default(),
            require_verified_email: true,
            allowed_email_domains: vec![],
            allowed_groups: vec![],
            allowed_users: vec![],
        }
    }

    const KEY: &[u8] = b"clock-test-key-0123456789abcdefgh";

    /// GET `path`, with the session cookie `cookie` when given.
    async fn request(b: &Arc<Broker>, path: &str, cookie: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
        }
        b.router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// A broker on `clock` serving provider `team/corp`, with session keys.
    fn serving(clock: &FixedClock) -> Arc<Broker> {
        let b = Broker::with_clock(
            BrokerSettings {
                public_url: "https://sso.example.com".parse().unwrap(),
                cookie_domain: None,
                session_lifetime: 3600,
                session_refresh: 0,
                redirect: RedirectPolicy {
                    allowed_domains: vec![],
                    allow_http: false,
                },
                http: HttpSettings::default(),
            },
            Arc::new(clock.clone()),
        );
        let mut config = BrokerConfig::default();
        config.providers.insert("team/corp".into(), provider());
        b.apply_config(&config);
        b.set_keys(KeyRing::new(&[KEY]).unwrap());
        b
    }

    /// A session cookie for `user` at `team/corp`, issued at T0 for an hour.
    fn sealed(user: &str, email: Option<&str>) -> String {
        let session = Session {
            provider: "team/corp".into(),
            sub: "1".into(),
            user: user.into(),
            email: email.map(str::to_string),
            groups: vec![],
            groups_truncated: false,
            issued_at: T0,
            expires_at: T0 + 3600,
            validated_at: T0,
            refresh_token: None,
        };
        session::seal(&KeyRing::new(&[KEY]).unwrap(), session, &[]).unwrap()
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Every kind of answer is `no-store`, from the one layer: pages,
    /// redirects, refusals, the 404 fallback, JSON and forward-auth.
    #[tokio::test]
    async fn every_answer_is_no_store() {
        let b = serving(&FixedClock::at(T0));
        for (path, status) in [
            ("/", StatusCode::OK),
            ("/oauth/start?provider=team/corp", StatusCode::FOUND),
            ("/oauth/start?provider=team/nope", StatusCode::NOT_FOUND),
            (
                "/oauth/start?rd=https://evil.example.com/",
                StatusCode::BAD_REQUEST,
            ),
            ("/nothing/here", StatusCode::NOT_FOUND),
            ("/oauth/userinfo", StatusCode::UNAUTHORIZED),
            ("/oauth/auth", StatusCode::UNAUTHORIZED),
            ("/oauth/logged-out", StatusCode::OK),
        ] {
            let r = request(&b, path, None).await;
            assert_eq!(r.status(), status, "{path}");
            assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        }
    }

    /// `/` shows a signed-in browser who it is and lets it sign out; a
    /// browser without a session gets the sign-in page.
    #[tokio::test]
    async fn home_shows_who_is_signed_in() {
        let b = serving(&FixedClock::at(T0));
        let anonymous = body(request(&b, "/", None).await).await;
        assert!(anonymous.contains("data-page=\"login\""), "{anonymous}");
        let cookie = sealed("<b>alice</b>", Some("alice@example.com"));
        let home = request(&b, "/", Some(&cookie)).await;
        assert_eq!(home.status(), StatusCode::OK);
        let html = body(home).await;
        assert!(html.contains("data-page=\"signed-in\""), "{html}");
        assert!(
            html.contains("&lt;b&gt;alice&lt;/b&gt;"),
            "the user is escaped: {html}"
        );
        assert!(!html.contains("<b>alice"), "{html}");
        assert!(
            html.contains("alice@example.com") && html.contains("Corp"),
            "{html}"
        );
        assert!(html.contains("action=\"/oauth/logout\""), "{html}");
        // /oauth/login still offers the providers.
        let login = body(request(&b, "/oauth/login", None).await).await;
        assert!(login.contains("data-page=\"login\""));
    }

    #[tokio::test]
    async fn sessions_expire_on_the_brokers_clock() {
        let clock = FixedClock::at(T0);
        let b = serving(&clock);
        let sealed = sealed("alice", None);
        let auth = async |cookie: &str| request(&b, "/oauth/auth", Some(cookie)).await;

        let ok = auth(&sealed).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["x-auth-request-user"], "alice");
        assert_eq!(ok.headers()["cache-control"], "no-store");

        clock.advance(3599);
        assert_eq!(auth(&sealed).await.status(), StatusCode::OK);
        clock.advance(2);
        let expired = auth(&sealed).await;
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(expired.headers()["cache-control"], "no-store");
    }
}
