//! Requests that carry a session: forward-auth and userinfo, with the
//! session refresh when one is due.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse as _, Response},
};
use tracing::{info, warn};

use crate::broker::{
    Broker, Unscoped, claims,
    cookies::{self, SESSION_PATH},
    headers,
    provider::ProviderRuntime,
    refresh::{self, Outcome},
    respond::{Denied, redirect, unauthorized, with_cookies},
    session::{self, Session},
    tokens::{self, Carried},
};
use crate::{
    api::policy::{ForwardToken, Unauthenticated},
    broker::state::PolicyRuntime,
    policy::{
        route::{normalize_host, path_matches},
        rules::Identity,
    },
};

/// A valid session a request carries, its provider (still serving), and
/// the cookie it came in.
pub(super) struct Found<'h> {
    pub session: Session,
    pub provider: Arc<ProviderRuntime>,
    pub cookie: &'h str,
    pub token: &'h str,
}

/// Which of a request's sessions a handler is about.
#[derive(Clone, Copy)]
pub(super) enum Pick<'a> {
    /// The newest, whatever its provider.
    Newest,
    /// The first from one of these providers, in their order.
    From(&'a [String]),
}

/// Every valid session of the request (one per provider's cookie, and a
/// session cookie from before sessions were per provider), or why there
/// is none: the first failure's category, else `no_session`.
pub(super) fn sessions<'h>(
    b: &Broker,
    headers: &'h HeaderMap,
) -> Result<Vec<Found<'h>>, &'static str> {
    let ring = b.ring().ok_or("no_keys")?;
    let table = b.table();
    let now = b.now();
    let mut found = Vec::new();
    let mut failure = None;
    for (cookie, token) in cookies::all(headers) {
        if !session::is_session_cookie(cookie) {
            continue;
        }
        match session::open(&ring, token, now) {
            Ok(s) => match table.providers.get(&s.provider) {
                Some(p)
                    if (!s.issuer.is_empty() && s.issuer != p.cfg.issuer)
                        || (!s.client_id.is_empty() && s.client_id != p.cfg.client_id) =>
                {
                    failure.get_or_insert("provider_changed");
                }
                Some(p) => found.push(Found {
                    provider: p.clone(),
                    session: s,
                    cookie,
                    token,
                }),
                None => {
                    failure.get_or_insert("provider_gone");
                }
            },
            Err(e) => {
                failure.get_or_insert(e.category());
            }
        }
    }
    if found.is_empty() {
        return Err(failure.unwrap_or("no_session"));
    }
    Ok(found)
}

/// The session `pick` chooses; `other_provider` when the request has valid
/// sessions, none from the providers asked for.
pub(super) fn current_session<'h>(
    b: &Broker,
    headers: &'h HeaderMap,
    pick: Pick<'_>,
) -> Result<Found<'h>, &'static str> {
    let all = sessions(b, headers)?;
    match pick {
        Pick::Newest => all
            .into_iter()
            .max_by_key(|f| f.session.issued_at)
            .ok_or("no_session"),
        Pick::From(providers) => {
            let mut all = all;
            providers
                .iter()
                .find_map(|p| {
                    let i = all.iter().position(|f| &f.session.provider == p)?;
                    Some(all.swap_remove(i))
                })
                .ok_or("other_provider")
        }
    }
}

/// A usable session after any refresh: the cookies to set, and the tokens
/// the refresh brought (for policies that forward one).
struct Live {
    session: Session,
    provider: Arc<ProviderRuntime>,
    set: Vec<HeaderValue>,
    tokens: Option<Carried>,
}

async fn live_session(
    b: &Broker,
    headers: &HeaderMap,
    pick: Pick<'_>,
) -> Result<Live, (&'static str, Option<HeaderValue>)> {
    let Found {
        session: s,
        provider,
        cookie,
        token,
    } = current_session(b, headers, pick).map_err(|r| (r, None))?;
    let now = b.now();
    let live = |session, set, tokens| Live {
        session,
        provider: provider.clone(),
        set,
        tokens,
    };
    if !s.refresh_due(b.settings.session_refresh, now) {
        return Ok(live(s, Vec::new(), None));
    }
    let ring = b.ring().ok_or(("no_keys", None))?;
    let outcome = b
        .refresher
        .join(token, || {
            let (provider, ring, s) = (provider.clone(), ring.clone(), s.clone());
            let metrics = b.metrics.clone();
            let claims = b.table().claims_for(&s.provider);
            async move {
                let outcome = refresh::refresh(&provider, &ring, s.clone(), &claims, now).await;
                metrics.refresh_result(&provider.cfg.key(), outcome.result());
                match &outcome {
                    Outcome::Refreshed { .. } => {
                        info!(provider = %s.provider, user = ?s.user, "session refreshed")
                    }
                    Outcome::Kept(r) => warn!(
                        provider = %s.provider,
                        user = ?s.user,
                        reason = r.reason.code(),
                        message = ?r.message,
                        detail = ?r.detail.as_deref().unwrap_or(""),
                        "session refresh deferred, the session keeps serving"
                    ),
                    Outcome::Ended(r) => {
                        metrics.failure(r.reason);
                        warn!(
                            provider = %s.provider,
                            user = ?s.user,
                            reason = r.reason.code(),
                            message = ?r.message,
                            detail = ?r.detail.as_deref().unwrap_or(""),
                            "session ended at refresh"
                        )
                    }
                }
                outcome
            }
        })
        .await;
    // The refreshed session goes back into the cookie it came in.
    match outcome {
        Outcome::Refreshed {
            session,
            sealed,
            tokens,
        } => {
            let max_age = (session.expires_at - now).max(0);
            let mut set = vec![b.cookies.set(cookie, &sealed, SESSION_PATH, max_age)];
            // The tokens policies forward follow the refresh; an ID token
            // the IdP did not renew is kept.
            let needs = b.table().needs(&session.provider);
            let carried = tokens.filter(|_| needs.any()).map(|t| {
                let kept_id = carried_tokens(b, headers, &session).and_then(|c| c.id);
                let id = t.id_token.or(kept_id);
                Carried::new(
                    &session,
                    needs,
                    &t.access_token,
                    t.expires_in,
                    id.as_deref(),
                    now,
                )
            });
            if let Some(c) = &carried
                && let Some(ring) = b.ring()
            {
                set.push(b.cookies.set(
                    &tokens::cookie_name(&session.provider),
                    &tokens::seal(&ring, c.clone()),
                    SESSION_PATH,
                    max_age,
                ));
            }
            Ok(live(session, set, carried))
        }
        Outcome::Kept(_) => Ok(live(s, Vec::new(), None)),
        Outcome::Ended(_) => Err(("ended", Some(b.cookies.clear(cookie, SESSION_PATH)))),
    }
}

/// The tokens the request carries for session `s`, if any and its own.
fn carried_tokens(b: &Broker, headers: &HeaderMap, s: &Session) -> Option<Carried> {
    let ring = b.ring()?;
    let sealed = cookies::get(headers, &tokens::cookie_name(&s.provider))?;
    tokens::open(&ring, sealed).filter(|c| c.belongs_to(s))
}

/// Forward-auth at `/oauth/auth`, no policy named: as the broker's
/// [`Unscoped`] setting says.
pub async fn forward_auth(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let key = match &b.settings.unscoped {
        Unscoped::Deny => {
            return Denied::new(&b, "no_policy", "this broker answers forward-auth per AccessPolicy: ask /oauth/auth/<namespace>/<name> (the policy's status.authURL)").into_response();
        }
        Unscoped::Policy(key) => key.clone(),
        Unscoped::AnyProvider => return any_provider(&b, &headers).await,
    };
    authorize(&b, &key, &headers, None).await
}

/// Any provider's session, as long as that provider's rules admit it.
async fn any_provider(b: &Broker, headers: &HeaderMap) -> Response {
    let Live {
        session: s,
        provider,
        set,
        ..
    } = match live_session(b, headers, Pick::Newest).await {
        Ok(v) => v,
        Err((result, clear)) => {
            b.metrics.forward_auth_result(result);
            return with_cookies(unauthorized(), clear);
        }
    };
    if let Err(r) = claims::provider_admits(&s, &provider.cfg, &b.table().domain_owners) {
        return Denied::new(b, "denied", r.message).into_response();
    }
    b.metrics.forward_auth_result("ok");
    let mut resp = StatusCode::OK.into_response();
    headers::set_identity(resp.headers_mut(), &s);
    with_cookies(resp, set)
}

/// Forward-auth for one access policy: `/oauth/auth/<namespace>/<name>`
/// (and anything after it, which Envoy's path prefix appends).
///
/// Admits a request only when the policy is in force, covers the host and
/// path the proxy says the request is for, and the browser's session comes
/// from one of the policy's providers whose own rules and the policy's
/// rules admit its user. A session from another provider is no session
/// here (401: the login page lets the user sign in with one of this app's
/// providers); a user the rules refuse gets 403.
pub async fn policy_auth(
    State(b): State<Arc<Broker>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{}/{}", params["namespace"], params["name"]);
    authorize(&b, &key, &headers, params.get("rest").map(String::as_str)).await
}

/// `/oauth/auth/<ns>/<name>/`: Envoy asking about the app's root.
pub async fn policy_auth_root(
    State(b): State<Arc<Broker>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{}/{}", params["namespace"], params["name"]);
    authorize(&b, &key, &headers, Some("")).await
}

/// What policy `key` says about a request.
async fn authorize(b: &Broker, key: &str, headers: &HeaderMap, rest: Option<&str>) -> Response {
    let Some(policy) = b.table().policies.get(key).cloned() else {
        let (ns, name) = key.split_once('/').unwrap_or_default();
        let why = format!(
            "access policy {key} is not in force: kubectl describe accesspolicy -n {ns} {name}"
        );
        return Denied::new(b, "no_policy", why).into_response();
    };
    let target = match Target::of(headers, rest) {
        Ok(t) => t,
        Err(bad) => {
            let why = match bad {
                BadTarget::Disagree(what) => format!("the proxy's headers disagree about the request's {what}"),
                BadTarget::Path => "the request path is not acceptable (encoded slash, backslash, ';' or '..' above the root)".to_string(),
            };
            return Denied::new(b, "bad_target", why).into_response();
        }
    };
    let Some(host) = target.host else {
        return Denied::new(b, "no_host", "the proxy did not say which host the request is for (send X-Forwarded-Host, or X-Original-URL)").into_response();
    };
    if !policy.covers_host(host) {
        warn!(policy = %key, host = ?host, "forward-auth for a host the policy does not cover");
        let why = format!("access policy {key} does not cover this host");
        return Denied::new(b, "wrong_host", why).into_response();
    }
    if !policy.cfg.paths.is_empty() {
        match target.path.as_deref() {
            Some(path) if policy.covers_path(path) => {}
            Some(_) => {
                return Denied::new(
                    b,
                    "wrong_path",
                    format!("access policy {key} does not cover this path"),
                )
                .into_response();
            }
            None => {
                return Denied::new(b, "no_path", "the proxy did not say which path the request is for (send X-Forwarded-Uri, X-Original-URI or X-Original-URL)").into_response();
            }
        }
    }
    let Live {
        session: s,
        provider,
        set,
        tokens: fresh,
    } = match live_session(b, headers, Pick::From(&policy.cfg.providers)).await {
        Ok(v) => v,
        Err((result, clear)) => {
            // "other_provider": sessions, none from this app's providers;
            // they are left alone (they serve the apps that accept them)
            // and the user may sign in with one of this app's providers.
            b.metrics.forward_auth_result(result);
            return with_cookies(challenge(b, &policy, headers, &target), clear);
        }
    };
    if !policy.cfg.providers.contains(&s.provider) {
        // Never: the session was picked from the policy's providers.
        b.metrics.forward_auth_result("other_provider");
        return with_cookies(challenge(b, &policy, headers, &target), set);
    }
    if let Err(r) = claims::provider_admits(&s, &provider.cfg, &b.table().domain_owners) {
        return with_cookies(Denied::new(b, "denied", r.message).into_response(), set);
    }
    // A claim the rules name that was not looked for when the session was
    // sealed (the rule is newer): the session cannot be judged; a fresh
    // login looks for it.
    let unknown = policy
        .claim_names
        .iter()
        .any(|n| !s.claims_looked_for.contains(n));
    if unknown {
        b.metrics.forward_auth_result("claims_unknown");
        return with_cookies(challenge(b, &policy, headers, &target), set);
    }
    // Groups dropped to fit the cookie cannot be checked against deny
    // rules: refuse rather than admit someone a deny rule would stop.
    if s.groups_truncated && policy.cfg.rules.deny.iter().any(|r| !r.groups.is_empty()) {
        return with_cookies(Denied::new(b, "denied", format!("access policy {key}: the user's groups did not all fit in the session, so its deny rules cannot be checked")).into_response(), set);
    }
    let decision = policy.cfg.rules.decide(&Identity {
        user: &s.user,
        email: s.email.as_deref(),
        groups: &s.groups,
        claims: &s.claims,
        verified_domains: &provider.cfg.verified_domains,
    });
    if !decision.is_allowed() {
        return with_cookies(
            Denied::new(
                b,
                "denied",
                format!("access policy {key}: {}", decision.explain()),
            )
            .into_response(),
            set,
        );
    }
    let bearer = match policy.cfg.forward.token {
        ForwardToken::None => None,
        kind => {
            let carried = fresh.or_else(|| carried_tokens(b, headers, &s));
            let token = carried.as_ref().and_then(|c| match kind {
                ForwardToken::AccessToken => c
                    .access
                    .as_ref()
                    .filter(|_| c.access_expires.is_none_or(|x| x > b.now()))
                    .cloned(),
                _ => c.id.clone(),
            });
            match (token, carried) {
                (Some(t), _) => Some(t),
                (None, Some(c)) if c.too_large => {
                    return with_cookies(Denied::new(b, "token_too_large", format!("access policy {key} forwards a token that is too large to carry in a cookie")).into_response(), set);
                }
                // No token, or an expired one: a fresh login brings one.
                (None, _) => {
                    b.metrics.forward_auth_result("no_token");
                    return with_cookies(challenge(b, &policy, headers, &target), set);
                }
            }
        }
    };
    b.metrics.forward_auth_result("ok");
    let mut resp = StatusCode::OK.into_response();
    headers::set_identity_only(resp.headers_mut(), &s, &policy.cfg.forward.headers);
    if let Some(t) = bearer
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}"))
    {
        resp.headers_mut()
            .insert(axum::http::header::AUTHORIZATION, v);
    }
    with_cookies(resp, set)
}

/// The answer without a usable session: a redirect to the login page
/// (offering the policy's providers) for a browser's page request through
/// a proxy that passes the answer on, 401 otherwise.
///
/// Traefik and Caddy pass it on and say so by sending `X-Forwarded-Method`
/// and `X-Forwarded-Uri`; nginx's auth_request turns anything but 2xx, 401
/// and 403 into a 500, so without those headers the answer is 401.
fn challenge(
    b: &Broker,
    policy: &PolicyRuntime,
    headers: &HeaderMap,
    target: &Target<'_>,
) -> Response {
    if policy.cfg.unauthenticated != Unauthenticated::Redirect {
        return unauthorized();
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(method), Some(uri), Some(host)) = (
        text("x-forwarded-method"),
        text("x-forwarded-uri"),
        target.host,
    ) else {
        return unauthorized();
    };
    let page = matches!(method, "GET" | "HEAD")
        && text("accept").is_some_and(|a| a.contains("text/html"))
        && headers.get("x-requested-with").is_none()
        && target
            .path
            .as_deref()
            .is_some_and(|p| !policy.cfg.api_paths.iter().any(|api| path_matches(api, p)));
    if !page || !uri.starts_with('/') {
        return unauthorized();
    }
    let scheme = match text("x-forwarded-proto") {
        Some("http") => "http",
        _ => "https",
    };
    let rd = format!("{scheme}://{host}{uri}");
    let location = b.settings.public(&format!(
        "/oauth/start?{}",
        super::encode_query(&[("policy", &policy.cfg.key()), ("rd", &rd)])
    ));
    redirect(&location)
}

/// Which host and path a forward-auth request is about, as the proxy says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Target<'h> {
    host: Option<&'h str>,
    /// Percent-decoded, dot segments resolved; `None` when the proxy sent
    /// none.
    path: Option<String>,
}

/// Why the proxy's account of a request is not usable.
#[derive(Debug, PartialEq, Eq)]
enum BadTarget {
    /// Two headers name different hosts or paths: one of them came from
    /// the client, and the broker cannot tell which.
    Disagree(&'static str),
    /// A path that backends read differently than a prefix match does
    /// (encoded slashes, backslashes, `;`, `..` above the root, invalid
    /// escapes).
    Path,
}

impl<'h> Target<'h> {
    /// Traefik and Caddy send `X-Forwarded-Host` and `X-Forwarded-Uri`;
    /// ingress-nginx `X-Original-URL`; the README's plain nginx recipe
    /// `X-Forwarded-Host`, `X-Forwarded-Uri` and `X-Original-URI`; Envoy
    /// keeps the app's `Host` and appends the app's path to the auth URL
    /// (`rest`). Where several are present they must agree: a proxy that
    /// passes a client's own `X-Forwarded-*` headers on must not let the
    /// client choose the host or path a policy judges.
    fn of(headers: &'h HeaderMap, rest: Option<&'h str>) -> Result<Self, BadTarget> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        // X-Original-URL: scheme://host[:port]/path?query
        let (url_host, url_path) = match text("x-original-url").and_then(|u| u.split_once("://")) {
            Some((_, after)) => match after.find(['/', '?', '#']) {
                Some(i) => (Some(&after[..i]), Some(&after[i..])),
                None => (Some(after), Some("/")),
            },
            None => (None, None),
        };
        let forwarded_host =
            text("x-forwarded-host").map(|h| h.split(',').next().unwrap_or_default().trim());
        if let (Some(a), Some(b)) = (forwarded_host, url_host)
            && normalize_host(a) != normalize_host(b)
        {
            return Err(BadTarget::Disagree("host"));
        }
        let host = forwarded_host
            .or(url_host)
            .or_else(|| text("host"))
            .filter(|h| !h.is_empty());
        fn without_query(p: &str) -> &str {
            p.split(['?', '#']).next().unwrap_or_default()
        }
        let appended = rest.map(|r| format!("/{}", without_query(r)));
        let mut path: Option<String> = None;
        for raw in [
            text("x-forwarded-uri"),
            url_path,
            text("x-original-uri"),
            appended.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            let p = normalize_path(without_query(raw)).ok_or(BadTarget::Path)?;
            match &path {
                Some(seen) if *seen != p => return Err(BadTarget::Disagree("path")),
                Some(_) => {}
                None => path = Some(p),
            }
        }
        Ok(Target { host, path })
    }
}

/// A request path as a prefix match may judge it: percent-decoded, `.`
/// and `..` segments resolved. `None` for what backends read in other
/// ways: an encoded slash or backslash, a backslash, `;` (path
/// parameters), `..` above the root, an escape that is not UTF-8.
fn normalize_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') || raw.contains(['\\', ';']) {
        return None;
    }
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%3b") {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    if decoded.contains(['\\', ';']) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
        // "/a/." and "/a/.." name a directory: keep the trailing slash.
        if i == last && matches!(*seg, "." | "..") {
            out.push("");
        }
    }
    Some(format!("/{}", out.join("/")))
}

pub async fn userinfo(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    match live_session(&b, &headers, Pick::Newest).await {
        Ok(Live {
            session: s, set, ..
        }) => with_cookies(
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
    use crate::broker::session::SESSION_COOKIE;
    use crate::{
        broker::{BrokerSettings, redirect::RedirectPolicy, seal::KeyRing},
        clock::FixedClock,
        config::{BrokerConfig, ProgrammedProvider},
        oidc::discovery::HttpSettings,
    };

    const T0: i64 = 2_000_000_000;

    fn provider() -> ProgrammedProvider {
        ProgrammedProvider::example("http://127.0.0.1:1")
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
                unscoped: Unscoped::AnyProvider,
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
        sealed_at("team/corp", user, email)
    }

    /// The same at `provider`.
    fn sealed_at(provider: &str, user: &str, email: Option<&str>) -> String {
        let session = Session {
            provider: provider.into(),
            sub: "1".into(),
            user: user.into(),
            email: email.map(str::to_string),
            groups: vec![],
            groups_truncated: false,
            issued_at: T0,
            expires_at: T0 + 3600,
            validated_at: T0,
            refresh_token: None,
            claims: Default::default(),
            claims_looked_for: Vec::new(),
            issuer: String::new(),
            client_id: String::new(),
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

    /// `serving` plus tenant B's provider and team's policy `team/app`
    /// (hosts app.example.com, paths /api; providers team/corp only; alice
    /// and mallory allowed, mallory denied).
    fn with_policy(clock: &FixedClock) -> Arc<Broker> {
        let b = serving(clock);
        let applied = b.apply_config(&policy_config());
        assert!(applied.rejected_policies.is_empty());
        b
    }

    fn policy_config() -> BrokerConfig {
        let mut config = BrokerConfig::default();
        config.providers.insert("team/corp".into(), provider());
        let mut evil = provider();
        evil.namespace = "tenant-b".into();
        evil.name = "evil".into();
        config.providers.insert("tenant-b/evil".into(), evil);
        config.policies.insert(
            "team/app".into(),
            serde_json::from_value(serde_json::json!({
                "namespace": "team", "name": "app", "generation": 1,
                "hosts": ["app.example.com"], "paths": ["/api"],
                "providers": ["team/corp"],
                "rules": {"allow": [{"users": ["alice", "mallory"]}], "deny": [{"users": ["mallory"]}]},
            }))
            .unwrap(),
        );
        config
    }

    async fn ask(b: &Arc<Broker>, path: &str, cookie: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(path).header("cookie", format!("{SESSION_COOKIE}={cookie}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        b.router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// The two-tenant attack: tenant B's provider says its user is alice;
    /// team's app accepts only team's provider, so that session is no
    /// session there.
    #[tokio::test]
    async fn a_policy_admits_only_its_providers_and_the_users_its_rules_allow() {
        let b = with_policy(&FixedClock::at(T0));
        let app = [
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/api/v1?q=1"),
        ];
        let at = "/oauth/auth/team/app";

        let ok = ask(&b, at, &sealed("alice", Some("alice@example.com")), &app).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["x-auth-request-user"], "alice");
        assert_eq!(ok.headers()["x-auth-request-provider"], "team/corp");

        let forged = sealed_at("tenant-b/evil", "alice", Some("alice@example.com"));
        let r = ask(&b, at, &forged, &app).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "another tenant's provider"
        );
        assert!(r.headers().get("x-auth-request-user").is_none());
        assert!(
            r.headers().get("set-cookie").is_none(),
            "its session is left alone"
        );
        // The unscoped endpoint still takes any provider's session: it is
        // what a policy replaces.
        assert_eq!(
            ask(&b, "/oauth/auth", &forged, &[]).await.status(),
            StatusCode::OK
        );

        let r = ask(&b, at, &sealed("bob", None), &app).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            body(r).await,
            "access policy team/app: no rule in rules.allow admits this user"
        );
        let r = ask(&b, at, &sealed("mallory", None), &app).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            body(r).await,
            "access policy team/app: denied by rules.deny[0]"
        );

        // No session at all: 401.
        let r = b
            .router()
            .oneshot(
                Request::get(at)
                    .header("x-forwarded-host", "app.example.com")
                    .header("x-forwarded-uri", "/api")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_policy_answers_only_for_its_hosts_and_paths_and_only_when_in_force() {
        let b = with_policy(&FixedClock::at(T0));
        let alice = sealed("alice", None);
        let at = "/oauth/auth/team/app";
        for (headers, path, want, says) in [
            (
                vec![
                    ("x-forwarded-host", "other.example.com"),
                    ("x-forwarded-uri", "/api"),
                ],
                at,
                403,
                "does not cover this host",
            ),
            (
                vec![
                    ("x-forwarded-host", "APP.example.com:443"),
                    ("x-forwarded-uri", "/api"),
                ],
                at,
                200,
                "",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/apix"),
                ],
                at,
                403,
                "does not cover this path",
            ),
            (
                vec![("x-forwarded-host", "app.example.com")],
                at,
                403,
                "did not say which path",
            ),
            (
                vec![("x-forwarded-uri", "/api")],
                at,
                403,
                "did not say which host",
            ),
            // ingress-nginx
            (
                vec![("x-original-url", "https://app.example.com/api/x?y=1")],
                at,
                200,
                "",
            ),
            (
                vec![("x-original-url", "https://app.example.com/apix")],
                at,
                403,
                "does not cover this path",
            ),
            // the README's nginx recipe
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-original-uri", "/api/x"),
                ],
                at,
                200,
                "",
            ),
            // Envoy: the app's Host, its path appended
            (
                vec![("host", "app.example.com")],
                "/oauth/auth/team/app/api/x",
                200,
                "",
            ),
            (
                vec![("host", "app.example.com")],
                "/oauth/auth/team/app/other",
                403,
                "does not cover this path",
            ),
            (
                vec![("host", "evil.example.com")],
                "/oauth/auth/team/app/api",
                403,
                "does not cover this host",
            ),
            // Unknown policies admit nobody.
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api"),
                ],
                "/oauth/auth/team/nope",
                403,
                "access policy team/nope is not in force",
            ),
            (
                vec![("host", "app.example.com")],
                "/oauth/auth/app/api",
                403,
                "access policy app/api is not in force",
            ),
            // A client's own X-Forwarded-* passed on by the proxy beside
            // the proxy's X-Original-URL: refused, whichever says what.
            (
                vec![
                    ("x-original-url", "https://internal.example.com/admin"),
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api"),
                ],
                at,
                403,
                "disagree about the request's host",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api"),
                    ("x-original-uri", "/admin"),
                ],
                at,
                403,
                "disagree about the request's path",
            ),
            // Paths as the backend reads them.
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api/../admin"),
                ],
                at,
                403,
                "does not cover this path",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api/%2e%2e/admin"),
                ],
                at,
                403,
                "does not cover this path",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api%2f..%2fadmin"),
                ],
                at,
                403,
                "not acceptable",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api;x=1/../../admin"),
                ],
                at,
                403,
                "not acceptable",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/../api"),
                ],
                at,
                403,
                "not acceptable",
            ),
            (
                vec![
                    ("x-forwarded-host", "app.example.com"),
                    ("x-forwarded-uri", "/api/./v1"),
                ],
                at,
                200,
                "",
            ),
            (
                vec![("host", "app.example.com")],
                "/oauth/auth/team/app/api%2F..%2Fadmin",
                403,
                "does not cover this path",
            ),
            // Envoy asking about the app's root: judged, not a 404.
            (
                vec![("host", "app.example.com")],
                "/oauth/auth/team/app/",
                403,
                "does not cover this path",
            ),
        ] {
            let r = ask(&b, path, &alice, &headers).await;
            assert_eq!(r.status().as_u16(), want, "{path} {headers:?}");
            assert_eq!(r.headers()["cache-control"], "no-store");
            let text = body(r).await;
            assert!(text.contains(says), "{path} {headers:?}: {text}");
        }
        // A policy taken out of force stops admitting at once.
        b.apply_config(&{
            let mut c = BrokerConfig::default();
            c.providers.insert("team/corp".into(), provider());
            c
        });
        let r = ask(
            &b,
            at,
            &alice,
            &[
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "/api"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    /// Without a session from one of its providers, a browser's page
    /// request through Traefik or Caddy (they pass the answer on and send
    /// X-Forwarded-Method/-Uri) is sent to the login page for this policy;
    /// anything else gets 401.
    #[tokio::test]
    async fn a_browser_without_a_session_is_sent_to_the_policys_login() {
        let b = with_policy(&FixedClock::at(T0));
        let at = "/oauth/auth/team/app";
        let traefik = |extra: &[(&'static str, &'static str)]| {
            let mut h = vec![
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/api/v1?q=1"),
                ("accept", "text/html,application/xhtml+xml"),
            ];
            for (k, v) in extra {
                h.retain(|(hk, _)| hk != k);
                h.push((k, v));
            }
            h
        };
        let want = "https://sso.example.com/oauth/start?policy=team%2Fapp&rd=https%3A%2F%2Fapp.example.com%2Fapi%2Fv1%3Fq%3D1";
        let none = "";
        let r = ask(&b, at, none, &traefik(&[])).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], want);
        // A session from another tenant's provider: the same.
        let forged = sealed_at("tenant-b/evil", "alice", None);
        let r = ask(&b, at, &forged, &traefik(&[])).await;
        assert_eq!(
            (r.status(), r.headers()["location"].to_str().unwrap()),
            (StatusCode::FOUND, want)
        );
        for (why, extra) in [
            ("XHR", vec![("x-requested-with", "XMLHttpRequest")]),
            ("an API client", vec![("accept", "application/json")]),
            ("a POST", vec![("x-forwarded-method", "POST")]),
        ] {
            let r = ask(&b, at, none, &traefik(&extra)).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
        }
        // nginx (no X-Forwarded-Method/-Uri): 401, it redirects itself.
        let nginx = [
            ("host", "app.example.com"),
            ("x-original-uri", "/api"),
            ("accept", "text/html"),
        ];
        assert_eq!(
            ask(&b, at, none, &nginx).await.status(),
            StatusCode::UNAUTHORIZED
        );

        // apiPaths and Deny: 401 for browsers too.
        let mut config = policy_config();
        let p = config.policies.get_mut("team/app").unwrap();
        p.api_paths = vec!["/api/v1".into()];
        b.apply_config(&config);
        assert_eq!(
            ask(&b, at, none, &traefik(&[])).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ask(&b, at, none, &traefik(&[("x-forwarded-uri", "/api/v2")]))
                .await
                .status(),
            StatusCode::FOUND
        );
        let p = config.policies.get_mut("team/app").unwrap();
        p.api_paths.clear();
        p.unauthenticated = crate::api::policy::Unauthenticated::Deny;
        b.apply_config(&config);
        assert_eq!(
            ask(&b, at, none, &traefik(&[])).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// The login page for a policy offers its providers only; the start
    /// goes straight to its only provider.
    #[tokio::test]
    async fn the_login_page_for_a_policy_offers_its_providers_only() {
        let b = with_policy(&FixedClock::at(T0));
        let all = body(request(&b, "/oauth/login", None).await).await;
        assert!(
            all.contains("team/corp") && all.contains("tenant-b/evil"),
            "{all}"
        );
        let scoped = body(request(&b, "/oauth/login?policy=team/app&rd=/x", None).await).await;
        assert!(scoped.contains("team/corp"), "{scoped}");
        assert!(!scoped.contains("tenant-b/evil"), "{scoped}");
        let r = request(&b, "/oauth/start?policy=team/app&rd=/x", None).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("http://127.0.0.1:1/a?")
        );
        // Without a policy, two providers: the chooser.
        let r = request(&b, "/oauth/start?rd=/x", None).await;
        assert_eq!(r.headers()["location"], "/oauth/login?rd=%2Fx");
        let r = request(&b, "/oauth/login?policy=team/nope", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(body(r).await.contains("unknown_policy"));
        let r = request(&b, "/oauth/start?policy=team/nope&rd=/x", None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    /// A browser holds one session per provider: a policy takes the one
    /// from its providers whatever else the browser carries; the home page
    /// lists them all; signing out of one provider leaves the others.
    #[tokio::test]
    async fn one_session_per_provider_side_by_side() {
        let b = with_policy(&FixedClock::at(T0));
        let corp = sealed_at("team/corp", "alice", Some("alice@corp.example"));
        let mut evil_session = session::open(
            &KeyRing::new(&[KEY]).unwrap(),
            &sealed_at("tenant-b/evil", "alice", None),
            T0,
        )
        .unwrap();
        evil_session.issued_at = T0 + 10; // the newer one
        let evil = session::seal(&KeyRing::new(&[KEY]).unwrap(), evil_session, &[]).unwrap();
        let both = format!(
            "{}={corp}; {}={evil}",
            session::cookie_name("team/corp"),
            session::cookie_name("tenant-b/evil")
        );
        assert_eq!(session::cookie_name("team/corp"), "_sso_session.team.corp");
        let send = async |path: &str, extra: &[(&str, &str)]| {
            let mut req = Request::get(path).header("cookie", &both);
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            b.router()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap()
        };
        let app = [
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/api"),
        ];
        let r = send("/oauth/auth/team/app", &app).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-auth-request-provider"], "team/corp");
        let home = body(send("/", &[]).await).await;
        assert!(
            home.contains("data-session=\"team/corp\"")
                && home.contains("data-session=\"tenant-b/evil\""),
            "{home}"
        );
        assert!(
            home.find("tenant-b/evil").unwrap() < home.find("team/corp").unwrap(),
            "newest first"
        );
        let me = body(send("/oauth/userinfo", &[]).await).await;
        assert!(
            me.contains("\"provider\":\"tenant-b/evil\""),
            "the newest: {me}"
        );

        // Logout CSRF: a GET, or a POST from a page of another origin,
        // ends nothing and answers a page whose button POSTs.
        let attempt = async |method: &str, extra: &[(&str, &str)]| {
            let mut req = Request::builder()
                .method(method)
                .uri("/oauth/logout?provider=team%2Fcorp")
                .header("cookie", &both);
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            let r = b
                .router()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let cleared = r.headers().get_all("set-cookie").iter().count();
            (r.status(), cleared, body(r).await)
        };
        for (method, extra) in [
            ("GET", &[][..]),
            ("GET", &[("sec-fetch-site", "same-origin")][..]),
            ("POST", &[("sec-fetch-site", "cross-site")][..]),
            ("POST", &[("sec-fetch-site", "same-site")][..]),
            ("POST", &[("origin", "https://evil.example")][..]),
            ("POST", &[("origin", "null")][..]),
        ] {
            let (status, cleared, html) = attempt(method, extra).await;
            assert_eq!((status, cleared), (StatusCode::OK, 0), "{method} {extra:?}");
            assert!(
                html.contains("data-page=\"confirm-logout\"")
                    && html
                        .contains("method=\"post\" action=\"/oauth/logout?provider=team%2Fcorp\""),
                "{method} {extra:?}: {html}"
            );
        }
        let origin = b.settings.public_url.origin().ascii_serialization();
        for extra in [
            &[("sec-fetch-site", "same-origin")][..],
            &[("origin", origin.as_str())][..],
            &[][..],
        ] {
            let (status, cleared, _) = attempt("POST", extra).await;
            assert!(
                status.is_redirection() && cleared > 0,
                "a same-origin POST signs out: {extra:?} {status}"
            );
        }

        // Sign out of tenant B only: its cookies go, corp's stay.
        let logout = async |path: &str| {
            let r = b
                .router()
                .oneshot(
                    Request::post(path)
                        .header("cookie", &both)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            r.headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<String>>()
        };
        let cleared = logout("/oauth/logout?provider=tenant-b%2Fevil").await;
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with("_sso_session.tenant-b.evil=;")),
            "{cleared:?}"
        );
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with("_sso_idt.tenant-b.evil=;")),
            "{cleared:?}"
        );
        assert!(
            !cleared.iter().any(|c| c.contains("team.corp")),
            "{cleared:?}"
        );
        // Everywhere: both.
        let cleared = logout("/oauth/logout").await;
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with("_sso_session.team.corp=;")),
            "{cleared:?}"
        );
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with("_sso_session.tenant-b.evil=;")),
            "{cleared:?}"
        );
    }

    /// A policy that forwards the access token answers with it as a
    /// Bearer token while it is valid, and sends only the identity headers
    /// it names (the others empty); without the token cookie, or with an
    /// expired token, the user is sent to log in again; a token too large
    /// for a cookie is a clear 403, not a login loop.
    #[tokio::test]
    async fn a_policy_forwards_the_users_token_and_only_the_headers_it_names() {
        use crate::api::policy::{Forward, ForwardToken, IdentityHeader};
        use crate::broker::tokens::{self, Carried, Needs};
        let clock = FixedClock::at(T0);
        let b = serving(&clock);
        let mut config = policy_config();
        let p = config.policies.get_mut("team/app").unwrap();
        p.forward = Forward {
            headers: vec![IdentityHeader::User],
            token: ForwardToken::AccessToken,
        };
        b.apply_config(&config);
        assert_eq!(
            b.table().needs("team/corp"),
            Needs {
                access: true,
                id: false
            }
        );
        assert_eq!(b.table().needs("tenant-b/evil"), Needs::default());

        let ring = KeyRing::new(&[KEY]).unwrap();
        let alice = sealed("alice", Some("alice@example.com"));
        let s = session::open(&ring, &alice, T0).unwrap();
        let carried = Carried::new(
            &s,
            Needs {
                access: true,
                id: false,
            },
            "at-123",
            Some(600),
            None,
            T0,
        );
        let both = format!(
            "{SESSION_COOKIE}={alice}; {}={}",
            tokens::cookie_name("team/corp"),
            tokens::seal(&ring, carried.clone())
        );
        let send = async |cookie: &str| {
            b.router()
                .oneshot(
                    Request::get("/oauth/auth/team/app")
                        .header("cookie", cookie)
                        .header("x-forwarded-host", "app.example.com")
                        .header("x-forwarded-uri", "/api")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
        };
        let r = send(&both).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["authorization"], "Bearer at-123");
        assert_eq!(r.headers()["x-auth-request-user"], "alice");
        assert_eq!(
            r.headers()["x-auth-request-email"],
            "",
            "not named: sent empty"
        );
        assert_eq!(r.headers()["x-auth-request-groups"], "");
        assert_eq!(r.headers()["x-auth-request-provider"], "");

        // No token cookie: log in again.
        let r = send(&format!("{SESSION_COOKIE}={alice}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Another user's token cookie is not lent to this session.
        let mut bob = s.clone();
        bob.sub = "2".into();
        let stolen = Carried::new(
            &bob,
            Needs {
                access: true,
                id: false,
            },
            "bobs",
            None,
            None,
            T0,
        );
        let r = send(&format!(
            "{SESSION_COOKIE}={alice}; {}={}",
            tokens::cookie_name("team/corp"),
            tokens::seal(&ring, stolen)
        ))
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Expired: log in again.
        clock.advance(601);
        assert_eq!(send(&both).await.status(), StatusCode::UNAUTHORIZED);
        // Too large for a cookie: said so.
        let big = Carried::new(
            &s,
            Needs {
                access: true,
                id: false,
            },
            &"x".repeat(5000),
            None,
            None,
            T0,
        );
        let r = send(&format!(
            "{SESSION_COOKIE}={alice}; {}={}",
            tokens::cookie_name("team/corp"),
            tokens::seal(&ring, big)
        ))
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body(r).await.contains("too large"));
    }

    /// Rules apply to live sessions: tightening a policy refuses an
    /// existing session at once; a claim rule judges the claims the
    /// session was sealed with, and a rule naming a claim it was not sealed
    /// with sends the user to sign in again.
    #[tokio::test]
    async fn rule_changes_apply_to_live_sessions() {
        use crate::policy::rules::{ClaimRule, Rule};
        let b = with_policy(&FixedClock::at(T0));
        let app = [
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/api"),
        ];
        let at = "/oauth/auth/team/app";
        let ring = KeyRing::new(&[KEY]).unwrap();
        let mut s = session::open(&ring, &sealed("alice", None), T0).unwrap();
        s.claims.insert("acr".into(), serde_json::json!("mfa"));
        s.claims_looked_for = vec!["acr".into()];
        let alice = session::seal(&ring, s, &[]).unwrap();
        assert_eq!(ask(&b, at, &alice, &app).await.status(), StatusCode::OK);

        let mut config = policy_config();
        let rules = &mut config.policies.get_mut("team/app").unwrap().rules;
        rules.deny.push(Rule {
            users: vec!["alice".into()],
            ..Rule::default()
        });
        b.apply_config(&config);
        let r = ask(&b, at, &alice, &app).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            body(r).await,
            "access policy team/app: denied by rules.deny[1]"
        );

        // Claim rules: allow by acr=mfa only.
        let mut config = policy_config();
        let rules = &mut config.policies.get_mut("team/app").unwrap().rules;
        rules.allow = vec![Rule {
            claims: vec![ClaimRule {
                name: "acr".into(),
                values: vec!["mfa".into()],
            }],
            ..Rule::default()
        }];
        b.apply_config(&config);
        assert_eq!(
            b.table()
                .claims_for("team/corp")
                .into_iter()
                .collect::<Vec<_>>(),
            ["acr"]
        );
        assert_eq!(ask(&b, at, &alice, &app).await.status(), StatusCode::OK);
        // A deny rule on a claim the session was not sealed with.
        config.policies.get_mut("team/app").unwrap().rules.deny = vec![Rule {
            claims: vec![ClaimRule {
                name: "amr".into(),
                values: vec!["pwd".into()],
            }],
            ..Rule::default()
        }];
        b.apply_config(&config);
        assert_eq!(
            ask(&b, at, &alice, &app).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(b.metrics.forward_auth_count("claims_unknown"), 1);
    }

    /// A session is bound to its provider's issuer and client ID: a
    /// provider of the same name now pointing elsewhere, or re-created by
    /// someone else with their own client at the same IdP, does not
    /// inherit it; sessions from before the binding carry none and pass.
    #[tokio::test]
    async fn a_session_does_not_survive_its_providers_issuer() {
        let b = serving(&FixedClock::at(T0));
        let ring = KeyRing::new(&[KEY]).unwrap();
        let mut s = session::open(&ring, &sealed("alice", None), T0).unwrap();
        s.issuer = "http://127.0.0.1:1".into();
        let same = session::seal(&ring, s.clone(), &[]).unwrap();
        assert_eq!(
            request(&b, "/oauth/auth", Some(&same)).await.status(),
            StatusCode::OK
        );
        // The same issuer, the same client: still valid.
        s.client_id = b.table().providers[&s.provider].cfg.client_id.clone();
        let same_client = session::seal(&ring, s.clone(), &[]).unwrap();
        assert_eq!(
            request(&b, "/oauth/auth", Some(&same_client))
                .await
                .status(),
            StatusCode::OK
        );
        // The same issuer, another client (someone else's registration).
        let mut other_client = s.clone();
        other_client.client_id = "someone-elses-client".into();
        let other_client = session::seal(&ring, other_client, &[]).unwrap();
        assert_eq!(
            request(&b, "/oauth/auth", Some(&other_client))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        s.issuer = "https://someone-else.example.com".into();
        let other = session::seal(&ring, s, &[]).unwrap();
        assert_eq!(
            request(&b, "/oauth/auth", Some(&other)).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(b.metrics.forward_auth_count("provider_changed"), 2);
    }

    /// `/oauth/auth` without a policy: nobody by default; a default
    /// policy's answer when one is set; any provider only when asked for.
    #[tokio::test]
    async fn the_unscoped_endpoint_admits_as_configured() {
        let clock = FixedClock::at(T0);
        let app = [
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", "/api"),
        ];
        let forged = sealed_at("tenant-b/evil", "alice", None);
        let alice = sealed("alice", None);
        let with = |unscoped: Unscoped| {
            let mut settings = serving(&clock).settings.clone();
            settings.unscoped = unscoped;
            let b = Broker::with_clock(settings, Arc::new(clock.clone()));
            b.apply_config(&policy_config());
            b.set_keys(KeyRing::new(&[KEY]).unwrap());
            b
        };
        let deny = with(Unscoped::Deny);
        let r = ask(&deny, "/oauth/auth", &alice, &app).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body(r).await.contains("/oauth/auth/<namespace>/<name>"));
        let by_policy = with(Unscoped::Policy("team/app".into()));
        assert_eq!(
            ask(&by_policy, "/oauth/auth", &alice, &app).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            ask(&by_policy, "/oauth/auth", &forged, &app).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let missing = with(Unscoped::Policy("team/gone".into()));
        assert_eq!(
            ask(&missing, "/oauth/auth", &alice, &app).await.status(),
            StatusCode::FORBIDDEN
        );
        let any = with(Unscoped::AnyProvider);
        assert_eq!(
            ask(&any, "/oauth/auth", &forged, &[]).await.status(),
            StatusCode::OK
        );
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
