//! The broker's HTTP routes and its swappable state.
//!
//! - `GET /`, `GET /oauth/login`: the provider chooser
//! - `GET /oauth/start?provider=<ns>/<name>|<name>&rd=<url>`: state, nonce,
//!   PKCE, 302 to the IdP
//! - `GET /oauth/callback/<ns>/<name>`: code exchange, ID-token checks,
//!   userinfo, claim mapping, access rules, session cookie, 302 to `rd`
//! - `/oauth/auth` (any method, also `/oauth/auth/<path>` for Envoy's path
//!   prefix): 200 with `X-Auth-Request-*` headers, or 401
//! - `GET /oauth/userinfo`: the session as JSON
//! - `GET|POST /oauth/logout`, `GET /oauth/logged-out`
//!
//! The provider table and the session key ring are each behind a
//! `watch` channel: a reload builds a new table and swaps it in one step;
//! requests in flight finish with the table they started with.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

use super::{
    claims,
    error::{Reason, Refusal},
    login::{self, LoginError, LoginState},
    metrics::BrokerMetrics,
    pages,
    provider::{ProviderRuntime, random_token},
    redirect::RedirectPolicy,
    refresh::{self, Outcome, Refresher},
    seal::KeyRing,
    session::{self, SESSION_COOKIE, Session},
};
use crate::{
    config::{BrokerConfig, Unavailable},
    oidc::discovery::HttpSettings,
};

/// Cookie holding the sealed ID token for the logout `id_token_hint`; its
/// path keeps it off every request but logout.
pub const ID_TOKEN_COOKIE: &str = "_sso_idt";
const ID_TOKEN_PURPOSE: &str = "id_token_hint";
const LOGOUT_PATH: &str = "/oauth/logout";

/// Broker settings that do not change at run time.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// The public base URL; redirect URIs hang off it.
    pub public_url: Url,
    /// `Domain` of the session cookie (for forward-auth across subdomains).
    pub cookie_domain: Option<String>,
    /// Session lifetime in seconds (absolute; refresh does not extend it).
    pub session_lifetime: i64,
    /// Re-validate a session at the IdP with its refresh token once its
    /// last validation is this many seconds old; 0 = off (sessions then
    /// last their lifetime without asking the IdP again).
    pub session_refresh: i64,
    pub redirect: RedirectPolicy,
    pub http: HttpSettings,
}

/// How long a refresh result is handed to requests still carrying the old
/// cookie: the refresh interval, between 1 and 5 minutes.
fn settings_refresh_memory(s: &BrokerSettings) -> u64 {
    s.session_refresh.clamp(60, 300) as u64
}

impl BrokerSettings {
    fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    fn public(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// The providers serving logins right now.
#[derive(Default)]
pub struct ProviderTable {
    pub providers: BTreeMap<String, Arc<ProviderRuntime>>,
    pub unavailable: BTreeMap<String, Unavailable>,
}

/// The broker: settings, the swappable provider table and key ring, and
/// metrics.
pub struct Broker {
    pub settings: BrokerSettings,
    table: watch::Sender<Arc<ProviderTable>>,
    keys: watch::Sender<Option<Arc<KeyRing>>>,
    config_loaded: std::sync::atomic::AtomicBool,
    pub metrics: Arc<BrokerMetrics>,
    refresher: Refresher,
}

/// What a config load changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Providers whose entry could not be used (with why).
    pub rejected: Vec<(String, String)>,
}

impl Broker {
    pub fn new(settings: BrokerSettings) -> Arc<Self> {
        Arc::new(Self {
            table: watch::Sender::new(Arc::new(ProviderTable::default())),
            keys: watch::Sender::new(None),
            config_loaded: std::sync::atomic::AtomicBool::new(false),
            metrics: Arc::new(BrokerMetrics::new()),
            refresher: Refresher::new(Duration::from_secs(settings_refresh_memory(&settings))),
            settings,
        })
    }

    pub fn table(&self) -> Arc<ProviderTable> {
        self.table.borrow().clone()
    }

    fn ring(&self) -> Option<Arc<KeyRing>> {
        self.keys.borrow().clone()
    }

    /// Installs a new session key ring (first key seals, all open).
    pub fn set_keys(&self, ring: KeyRing) {
        self.keys.send_replace(Some(Arc::new(ring)));
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.keys.borrow().is_some()
            && self
                .config_loaded
                .load(std::sync::atomic::Ordering::Relaxed);
        self.metrics.set_ready(ready);
    }

    /// Builds a provider table from `config` and swaps it in. Unchanged
    /// providers keep their runtime (and JWKS cache); providers whose
    /// signing-key source is unchanged keep their JWKS cache.
    pub fn apply_config(&self, config: &BrokerConfig) -> Applied {
        let old = self.table();
        let mut applied = Applied::default();
        let mut providers = BTreeMap::new();
        let mut unavailable = config.unavailable.clone();
        for (key, cfg) in &config.providers {
            let previous = old.providers.get(key);
            if let Some(p) = previous
                && &p.cfg == cfg
            {
                providers.insert(key.clone(), p.clone());
                continue;
            }
            match ProviderRuntime::new(cfg.clone(), &self.settings.http, previous.map(|p| &**p)) {
                Ok(rt) => {
                    if previous.is_some() {
                        applied.changed.push(key.clone());
                    } else {
                        applied.added.push(key.clone());
                    }
                    providers.insert(key.clone(), Arc::new(rt));
                }
                Err(why) => {
                    unavailable.insert(
                        key.clone(),
                        Unavailable {
                            display_name: cfg.display_name.clone(),
                            disabled: false,
                            reason: "InvalidTLSConfig".into(),
                            message: why.clone(),
                        },
                    );
                    applied.rejected.push((key.clone(), why));
                }
            }
        }
        applied.removed = old
            .providers
            .keys()
            .filter(|k| !providers.contains_key(*k))
            .cloned()
            .collect();
        self.metrics.providers.set(providers.len() as i64);
        self.table.send_replace(Arc::new(ProviderTable {
            providers,
            unavailable,
        }));
        self.config_loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.update_ready();
        self.metrics.reload("applied");
        applied
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(login_page))
            .route("/oauth/login", get(login_page))
            .route("/oauth/start", get(start))
            .route("/oauth/callback/{namespace}/{name}", get(callback))
            .route("/oauth/auth", any(forward_auth))
            .route("/oauth/auth/{*rest}", any(forward_auth))
            .route("/oauth/userinfo", get(userinfo))
            .route(LOGOUT_PATH, get(logout).post(logout))
            .route("/oauth/logged-out", get(logged_out))
            .fallback(not_found)
            .with_state(self.clone())
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    /// Logs and counts a refusal; the page to show.
    fn refuse(&self, refusal: Refusal, provider: Option<&str>, retry: Option<&str>) -> Response {
        self.metrics.failure(refusal.reason);
        warn!(
            reason = refusal.reason.code(),
            provider = provider.unwrap_or(""),
            "{}",
            refusal.message
        );
        page_response(
            refusal.reason.status(),
            pages::error_page(&refusal, retry),
            Vec::new(),
        )
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
        let mut c =
            format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.settings.secure_cookies() {
            c.push_str("; Secure");
        }
        if let Some(d) = &self.settings.cookie_domain {
            c.push_str("; Domain=");
            c.push_str(d);
        }
        HeaderValue::from_str(&c).expect("cookie values are URL-safe base64")
    }

    fn clear_cookie(&self, name: &str, path: &str) -> HeaderValue {
        self.cookie(name, "", path, 0)
    }

    /// Resolves `provider` (`ns/name`, or a bare name that is unique) to a
    /// serving provider, or the refusal that says why not.
    fn resolve(
        &self,
        table: &ProviderTable,
        requested: &str,
    ) -> Result<Arc<ProviderRuntime>, Refusal> {
        let key = if requested.contains('/') {
            requested.to_string()
        } else {
            let matches: Vec<&String> = table
                .providers
                .keys()
                .chain(table.unavailable.keys())
                .filter(|k| k.rsplit_once('/').is_some_and(|(_, n)| n == requested))
                .collect();
            match matches.as_slice() {
                [one] => (*one).clone(),
                [] => requested.to_string(),
                _ => {
                    return Err(Refusal::new(
                        Reason::UnknownProvider,
                        format!("several providers are named {requested:?}; use namespace/name"),
                    ));
                }
            }
        };
        if let Some(p) = table.providers.get(&key) {
            return Ok(p.clone());
        }
        if let Some(u) = table.unavailable.get(&key) {
            return Err(if u.disabled {
                Refusal::new(
                    Reason::ProviderDisabled,
                    format!(
                        "{} ({key}) is disabled by its administrator",
                        u.display_name
                    ),
                )
            } else {
                Refusal::new(
                    Reason::ProviderNotReady,
                    format!(
                        "{} ({key}) is not ready: {} — {}",
                        u.display_name, u.reason, u.message
                    ),
                )
            });
        }
        Err(Refusal::new(
            Reason::UnknownProvider,
            format!("no identity provider {key:?} is configured"),
        ))
    }

    fn check_rd(&self, rd: Option<&str>) -> Result<String, Refusal> {
        match rd {
            None | Some("") => Ok("/".to_string()),
            Some(rd) => {
                if let Ok(u) = Url::parse(rd) {
                    // Absolute URLs on the broker's own origin are fine.
                    if u.origin() == self.settings.public_url.origin() {
                        return Ok(rd.to_string());
                    }
                }
                self.settings.redirect.check(rd).ok_or_else(|| {
                    Refusal::new(
                        Reason::InvalidRedirect,
                        format!("{rd:?} is not an allowed redirect target (local paths and the allowed redirect domains only)"),
                    )
                })
            }
        }
    }
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn page_response(status: StatusCode, html: String, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => {
            h.insert(header::LOCATION, HeaderValue::from_static("/"));
        }
    }
    security_headers(h);
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

/// Cookies of a request, from every `Cookie` header.
fn cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.trim(), v.trim()))
        })
        .collect()
}

/// One cookie's value, without collecting the others (forward-auth's hot
/// path).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

fn encode_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[derive(Deserialize)]
struct RdQuery {
    rd: Option<String>,
}

async fn login_page(State(b): State<Arc<Broker>>, Query(q): Query<RdQuery>) -> Response {
    let rd = match b.check_rd(q.rd.as_deref()) {
        Ok(rd) => rd,
        Err(r) => return b.refuse(r, None, Some("/oauth/login")),
    };
    let table = b.table();
    let mut choices: Vec<pages::Choice> = table
        .providers
        .iter()
        .map(|(key, p)| pages::Choice {
            key: key.clone(),
            display_name: p.cfg.display_name.clone(),
            href: format!(
                "/oauth/start?{}",
                encode_query(&[("provider", key), ("rd", &rd)])
            ),
        })
        .collect();
    choices.sort_by(|a, b| a.display_name.cmp(&b.display_name).then(a.key.cmp(&b.key)));
    let unavailable: Vec<(String, String)> = table
        .unavailable
        .values()
        .map(|u| {
            (
                u.display_name.clone(),
                if u.disabled {
                    "disabled".to_string()
                } else {
                    format!("not ready ({})", u.reason)
                },
            )
        })
        .collect();
    page_response(
        StatusCode::OK,
        pages::login_page(&choices, &unavailable),
        Vec::new(),
    )
}

#[derive(Deserialize)]
struct StartQuery {
    provider: Option<String>,
    rd: Option<String>,
}

async fn start(
    State(b): State<Arc<Broker>>,
    Query(q): Query<StartQuery>,
    headers: HeaderMap,
) -> Response {
    let rd = match b.check_rd(q.rd.as_deref()) {
        Ok(rd) => rd,
        Err(r) => return b.refuse(r, q.provider.as_deref(), Some("/oauth/login")),
    };
    let table = b.table();
    let requested = match q.provider.as_deref() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => {
            // One provider: go straight there; several: let the user choose.
            if table.providers.len() == 1 && table.unavailable.is_empty() {
                table.providers.keys().next().cloned().unwrap_or_default()
            } else {
                return redirect(
                    &format!("/oauth/login?{}", encode_query(&[("rd", &rd)])),
                    Vec::new(),
                );
            }
        }
    };
    let retry = format!("/oauth/login?{}", encode_query(&[("rd", &rd)]));
    let provider = match b.resolve(&table, &requested) {
        Ok(p) => p,
        Err(r) => return b.refuse(r, Some(&requested), Some(&retry)),
    };
    let Some(ring) = b.ring() else {
        return b.refuse(
            Refusal::new(
                Reason::ProviderNotReady,
                "the broker has no session keys yet",
            ),
            Some(&requested),
            Some(&retry),
        );
    };
    let state = random_token(16);
    let nonce = random_token(16);
    let (challenge, verifier) = if provider.cfg.pkce {
        let (c, v) = oauth2::PkceCodeChallenge::new_random_sha256();
        (Some(c.as_str().to_string()), Some(v.secret().clone()))
    } else {
        (None, None)
    };
    let now = Broker::now();
    let login_state = LoginState {
        provider: provider.cfg.key(),
        state: state.clone(),
        nonce: nonce.clone(),
        verifier,
        rd,
        created: now,
    };
    let mut set = vec![b.cookie(
        &login::cookie_name(&state),
        &login::seal(&ring, &login_state),
        "/oauth/callback/",
        login::LOGIN_TTL_SECS,
    )];
    // Drop the oldest logins in flight beyond the limit (abandoned tabs).
    let mut in_flight: Vec<(i64, &str)> = cookies(&headers)
        .into_iter()
        .filter(|(k, _)| k.starts_with(login::LOGIN_COOKIE_PREFIX))
        .map(|(k, v)| (login::created_at(&ring, v).unwrap_or(0), k))
        .collect();
    if in_flight.len() >= login::MAX_LOGINS_IN_FLIGHT {
        in_flight.sort();
        let excess = in_flight.len() + 1 - login::MAX_LOGINS_IN_FLIGHT;
        for (_, name) in in_flight.into_iter().take(excess) {
            set.push(b.clear_cookie(name, "/oauth/callback/"));
        }
    }
    b.metrics
        .logins_started
        .get_or_create(&super::metrics::ProviderLabel {
            provider: provider.cfg.key(),
        })
        .inc();
    let url = provider.authorize_url(&state, &nonce, challenge.as_deref());
    redirect(url.as_str(), set)
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

async fn callback(
    State(b): State<Arc<Broker>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let key = format!("{namespace}/{name}");
    let retry = format!("/oauth/start?{}", encode_query(&[("provider", &key)]));
    let mut set = Vec::new();
    let result = finish_login(&b, &key, &q, &headers, &mut set).await;
    b.metrics
        .callback_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok((location, user)) => {
            b.metrics
                .logins
                .get_or_create(&super::metrics::ProviderLabel {
                    provider: key.clone(),
                })
                .inc();
            info!(provider = %key, user = %user, "login");
            redirect(&location, set)
        }
        Err(refusal) => {
            let mut resp = b.refuse(refusal, Some(&key), Some(&retry));
            for c in set {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
    }
}

/// The callback's work. Cookies to set go to `set` whatever the outcome
/// (the login cookie is always cleared). Returns the redirect target and
/// the user.
async fn finish_login(
    b: &Broker,
    key: &str,
    q: &CallbackQuery,
    headers: &HeaderMap,
    set: &mut Vec<HeaderValue>,
) -> Result<(String, String), Refusal> {
    let Some(ring) = b.ring() else {
        return Err(Refusal::new(
            Reason::ProviderNotReady,
            "the broker has no session keys yet",
        ));
    };
    let now = Broker::now();
    let state = q.state.as_deref().unwrap_or("");
    if !login::is_valid_state(state) {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "the callback has no valid state parameter; start the login again",
        ));
    }
    let cookie_name = login::cookie_name(state);
    let Some(sealed) = cookie(headers, &cookie_name) else {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "this browser has no login in progress for this state: the login already finished, cookies are blocked, or the link did not come from this browser's login",
        ));
    };
    set.push(b.clear_cookie(&cookie_name, "/oauth/callback/"));
    let login_state = login::open(&ring, sealed, state, key, now).map_err(|e| match e {
        LoginError::Mismatch => Refusal::new(
            Reason::StateMismatch,
            "the login cookie does not match this state and provider",
        ),
        LoginError::Expired => Refusal::new(
            Reason::LoginExpired,
            format!(
                "the login took longer than {} minutes; start again",
                login::LOGIN_TTL_SECS / 60
            ),
        ),
    })?;
    let table = b.table();
    let provider = b.resolve(&table, key)?;
    if let Some(error) = &q.error {
        return Err(Refusal::new(
            Reason::IdpError,
            format!(
                "{} answered error \"{}\"{}",
                provider.cfg.display_name,
                error,
                q.error_description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(iss) = &q.iss
        && iss != &provider.cfg.issuer
    {
        return Err(Refusal::new(
            Reason::IssuerMismatch,
            format!(
                "the authorization response came from issuer {iss:?}, not {:?} (mix-up defence, RFC 9207)",
                provider.cfg.issuer
            ),
        ));
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(Refusal::new(
            Reason::InvalidRequest,
            "the callback has neither a code nor an error",
        ));
    };
    let tokens = provider
        .exchange(code, login_state.verifier.clone())
        .await?;
    let identity = provider
        .identity(
            &tokens.id_token,
            &tokens.access_token,
            Some(&login_state.nonce),
            None,
            now,
        )
        .await?;
    let lifetime = b.settings.session_lifetime;
    let sess = Session {
        provider: key.to_string(),
        sub: identity.sub.clone(),
        user: identity.user.clone(),
        email: identity.email.clone(),
        groups: identity.groups.clone(),
        groups_truncated: false,
        issued_at: now,
        expires_at: now + lifetime,
        validated_at: now,
        refresh_token: tokens
            .refresh_token
            .filter(|_| b.settings.session_refresh > 0),
    };
    let sealed = session::seal(&ring, sess, &provider.cfg.allowed_groups).map_err(|_| {
        Refusal::new(
            Reason::SessionTooLarge,
            "the identity does not fit in a session cookie even without groups",
        )
    })?;
    set.push(b.cookie(SESSION_COOKIE, &sealed, "/", lifetime));
    // The ID token for the logout hint, when it fits; only sent to logout.
    let hint = ring.seal(ID_TOKEN_PURPOSE, tokens.id_token.as_bytes());
    if hint.len() <= session::MAX_SESSION_BYTES {
        set.push(b.cookie(ID_TOKEN_COOKIE, &hint, LOGOUT_PATH, lifetime));
    }
    Ok((login_state.rd, identity.user))
}

/// The session from the request, if valid and its provider still serves,
/// with the cookie value it came from.
fn current_session<'h>(
    b: &Broker,
    headers: &'h HeaderMap,
) -> Result<(Session, Arc<ProviderRuntime>, &'h str), &'static str> {
    let ring = b.ring().ok_or("no_keys")?;
    let token = cookie(headers, SESSION_COOKIE).ok_or("no_session")?;
    let s = session::open(&ring, token, Broker::now()).map_err(|e| e.category())?;
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
    let now = Broker::now();
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
            let set = b.cookie(SESSION_COOKIE, &sealed, "/", max_age);
            Ok((session, provider, Some(set)))
        }
        Outcome::Kept(_) => Ok((s, provider, None)),
        Outcome::Ended(_) => Err(("ended", Some(b.clear_cookie(SESSION_COOKIE, "/")))),
    }
}

async fn forward_auth(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let (s, provider, set) = match live_session(&b, &headers).await {
        Ok(v) => v,
        Err((result, clear)) => {
            b.metrics.forward_auth_result(result);
            let mut resp = unauthorized();
            if let Some(c) = clear {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            return resp;
        }
    };
    // Access rules are re-checked on every request: a tightened rule
    // applies to existing sessions at once.
    if let Err(r) = claims::check_access(&s.user, s.email.as_deref(), &s.groups, &provider.cfg) {
        b.metrics.forward_auth_result("denied");
        let mut resp = (StatusCode::FORBIDDEN, r.message).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    b.metrics.forward_auth_result("ok");
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    let put = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put(h, "x-auth-request-user", &s.user);
    if let Some(e) = &s.email {
        put(h, "x-auth-request-email", e);
    }
    put(h, "x-auth-request-groups", &s.groups.join(","));
    put(h, "x-auth-request-provider", &s.provider);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = set {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

fn unauthorized() -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn userinfo(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    match live_session(&b, &headers).await {
        Ok((s, _, set)) => {
            let mut resp = Json(serde_json::json!({
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
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(c) = set {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Err((_, clear)) => {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "no valid session"})),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(c) = clear {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
    }
}

async fn logout(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let cleared = vec![
        b.clear_cookie(SESSION_COOKIE, "/"),
        b.clear_cookie(ID_TOKEN_COOKIE, LOGOUT_PATH),
    ];
    let done = b.settings.public("/oauth/logged-out");
    let Ok((s, provider, _)) = current_session(&b, &headers) else {
        return redirect("/oauth/logged-out", cleared);
    };
    let hint = b.ring().and_then(|ring| {
        let sealed = cookie(&headers, ID_TOKEN_COOKIE)?;
        let raw = ring.open(ID_TOKEN_PURPOSE, sealed).ok()?;
        String::from_utf8(raw).ok()
    });
    info!(provider = %s.provider, user = %s.user, "logout");
    match provider.end_session_url(hint.as_deref(), &done, &random_token(16)) {
        Some(url) => redirect(url.as_str(), cleared),
        None => redirect("/oauth/logged-out", cleared),
    }
}

async fn logged_out() -> Response {
    page_response(
        StatusCode::OK,
        pages::logged_out_page("/oauth/login"),
        Vec::new(),
    )
}

async fn not_found() -> Response {
    page_response(
        StatusCode::NOT_FOUND,
        pages::error_page(
            &Refusal::new(Reason::InvalidRequest, "there is nothing at this address"),
            Some("/oauth/login"),
        ),
        Vec::new(),
    )
}
