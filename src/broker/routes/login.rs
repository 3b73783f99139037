//! The login: the provider chooser, the start (state, nonce, PKCE, 302 to
//! the IdP) and the callback (every check, then the session cookie).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;
use tracing::info;

use super::encode_query;
use crate::broker::{
    Broker,
    cookies::{self, LOGIN_PATH, LOGOUT_PATH, SESSION_PATH},
    error::{Reason, Refusal},
    login::{self, LoginError, LoginState},
    metrics::ProviderLabel,
    pages,
    provider::{clip, random_token},
    respond::{Refused, page_with_form_targets, redirect, with_cookies},
    session::{self, Session},
    tokens::{self, Carried},
};

/// Purpose under which the ID token for the logout hint is sealed.
pub(super) const ID_TOKEN_PURPOSE: &str = "id_token_hint";

#[derive(Deserialize)]
pub struct RdQuery {
    rd: Option<String>,
    /// An AccessPolicy (`namespace/name`): offer only its providers.
    policy: Option<String>,
    /// Set by home-realm discovery when no provider has verified the
    /// domain of the address typed: the page says so.
    unknown_domain: Option<String>,
}

/// The domain of `hint` when it looks like one email address (lower case),
/// or `None`.
fn hint_domain(hint: &str) -> Option<String> {
    let (local, _) = hint.rsplit_once('@')?;
    if local.is_empty()
        || hint.len() > 320
        || hint.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    crate::domains::email_domain(hint).filter(|d| d.contains('.'))
}

/// The providers a login may use: the policy's when one is named (a
/// refusal when it is not in force), else every programmed one.
fn offered(b: &Broker, policy: Option<&str>) -> Result<Option<Vec<String>>, Refusal> {
    let Some(key) = policy.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    match b.table().policies.get(key) {
        Some(p) => Ok(Some(p.cfg.providers.clone())),
        None => Err(Refusal::new(
            Reason::UnknownPolicy,
            format!("no access policy {key:?} is in force here"),
        )),
    }
}

fn refused<'a>(
    b: &'a Broker,
    refusal: Refusal,
    provider: Option<&'a str>,
    retry: &'a str,
) -> Response {
    Refused {
        refusal,
        metrics: &b.metrics,
        provider,
        retry: Some(retry),
    }
    .into_response()
}

/// `GET /`: who you are when signed in (a login that just finished lands
/// here and must not look like it failed), the sign-in page otherwise.
pub async fn home(
    State(b): State<Arc<Broker>>,
    query: Query<RdQuery>,
    headers: HeaderMap,
) -> Response {
    if let Ok(mut found) = super::auth::sessions(&b, &headers) {
        found.sort_by_key(|f| std::cmp::Reverse(f.session.issued_at));
        let shown: Vec<pages::SignedIn<'_>> = found
            .iter()
            .map(|f| pages::SignedIn {
                user: &f.session.user,
                email: f.session.email.as_deref(),
                provider: &f.provider.cfg.display_name,
                key: &f.session.provider,
            })
            .collect();
        return page_with_form_targets(
            StatusCode::OK,
            pages::signed_in_page(&shown, "/oauth/login"),
            &end_session_origins(found.iter()),
        );
    }
    login_page(State(b), query).await
}

/// The origins of these sessions' end-session endpoints: signing out
/// redirects there, and CSP `form-action` governs that redirect too.
pub fn end_session_origins<'a>(
    found: impl Iterator<Item = &'a super::auth::Found<'a>>,
) -> Vec<String> {
    origins(found.filter_map(|f| f.provider.cfg.endpoints.end_session_endpoint.as_deref()))
}

/// The origins of `urls`, sorted and once each, for CSP `form-action`.
fn origins<'a>(urls: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut origins: Vec<String> = urls
        .filter_map(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .collect();
    origins.sort();
    origins.dedup();
    origins
}

pub async fn login_page(State(b): State<Arc<Broker>>, Query(q): Query<RdQuery>) -> Response {
    let rd = match b.check_rd(q.rd.as_deref()) {
        Ok(rd) => rd,
        Err(r) => return refused(&b, r, None, "/oauth/login"),
    };
    let only = match offered(&b, q.policy.as_deref()) {
        Ok(only) => only,
        Err(r) => return refused(&b, r, None, "/oauth/login"),
    };
    let shown = |key: &String| only.as_ref().is_none_or(|keys| keys.contains(key));
    let table = b.table();
    let mut choices: Vec<pages::Choice> = table
        .providers
        .iter()
        .filter(|(key, _)| shown(key))
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
        .iter()
        .filter(|(key, _)| shown(key))
        .map(|(_, u)| {
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
    // "Sign in with your work email" when a provider offered here speaks
    // for a verified domain.
    let realms: Vec<&str> = table
        .providers
        .iter()
        .filter(|(key, p)| shown(key) && !p.cfg.verified_domains.is_empty())
        .map(|(_, p)| p.cfg.endpoints.authorization_endpoint.as_str())
        .collect();
    let discovery = (!realms.is_empty()).then(|| pages::EmailForm {
        rd: rd.clone(),
        policy: q.policy.clone().filter(|p| !p.is_empty()),
        // Shown only when it is a domain name: the query is anyone's
        // to write, and the page must not say what they please.
        unknown_domain: q.unknown_domain.clone().filter(|d| {
            d.len() <= 253
                && d.contains('.')
                && d.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        }),
    });
    // The email form goes to /oauth/start, which redirects to one of
    // these providers: CSP form-action governs that redirect too (headless
    // Chromium refused it with form-action 'self' alone).
    page_with_form_targets(
        StatusCode::OK,
        pages::login_page(&choices, &unavailable, discovery.as_ref()),
        &origins(realms.into_iter()),
    )
}

#[derive(Deserialize)]
pub struct StartQuery {
    provider: Option<String>,
    rd: Option<String>,
    /// An AccessPolicy (`namespace/name`): without `provider`, its only
    /// provider, or the login page offering its providers.
    policy: Option<String>,
    /// The user's email (home-realm discovery): without `provider`, the
    /// provider that verified its domain; passed on to the provider.
    login_hint: Option<String>,
}

pub async fn start(
    State(b): State<Arc<Broker>>,
    Query(q): Query<StartQuery>,
    headers: HeaderMap,
) -> Response {
    let rd = match b.check_rd(q.rd.as_deref()) {
        Ok(rd) => rd,
        Err(r) => return refused(&b, r, q.provider.as_deref(), "/oauth/login"),
    };
    let table = b.table();
    let policy = q.policy.as_deref().filter(|p| !p.is_empty());
    let chooser = match policy {
        Some(p) => format!(
            "/oauth/login?{}",
            encode_query(&[("policy", p), ("rd", &rd)])
        ),
        None => format!("/oauth/login?{}", encode_query(&[("rd", &rd)])),
    };
    let hint = q
        .login_hint
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let hint_domain = match hint.map(|h| (h, hint_domain(h))) {
        None => None,
        Some((_, Some(d))) => Some(d),
        Some((h, None)) => {
            let r = Refusal::new(
                Reason::InvalidRequest,
                format!(
                    "{:?} is not an email address",
                    crate::broker::provider::clip(h, 80)
                ),
            );
            return refused(&b, r, None, &chooser);
        }
    };
    let requested = match q.provider.as_deref() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ if hint_domain.is_some() => {
            let domain = hint_domain.as_deref().unwrap_or_default();
            let only = match offered(&b, policy) {
                Ok(only) => only,
                Err(r) => return refused(&b, r, None, "/oauth/login"),
            };
            // The provider that verified the domain (the first by key when
            // one namespace has several), among those offered here.
            let owner = table
                .providers
                .iter()
                .filter(|(k, _)| only.as_ref().is_none_or(|keys| keys.contains(*k)))
                .find(|(_, p)| p.cfg.verified_domains.iter().any(|d| d == domain))
                .map(|(k, _)| k.clone());
            match owner {
                Some(k) => k,
                None => {
                    return redirect(&format!(
                        "{chooser}&{}",
                        encode_query(&[("unknown_domain", domain)])
                    ));
                }
            }
        }
        _ => {
            let only = match offered(&b, policy) {
                Ok(only) => only,
                Err(r) => return refused(&b, r, None, "/oauth/login"),
            };
            let candidates: Vec<&String> = match &only {
                Some(keys) => keys
                    .iter()
                    .filter(|k| {
                        table.providers.contains_key(*k) || table.unavailable.contains_key(*k)
                    })
                    .collect(),
                None => table
                    .providers
                    .keys()
                    .chain(table.unavailable.keys())
                    .collect(),
            };
            // One provider: go straight there; several: let the user choose.
            match candidates.as_slice() {
                [one] if table.providers.contains_key(*one) => (*one).clone(),
                _ => return redirect(&chooser),
            }
        }
    };
    let retry = chooser;
    let provider = match table.resolve(&requested) {
        Ok(p) => p,
        Err(r) => return refused(&b, r, Some(&requested), &retry),
    };
    let ring = match b.ring_or_refuse() {
        Ok(ring) => ring,
        Err(r) => return refused(&b, r, Some(&requested), &retry),
    };
    let state = random_token(16);
    let nonce = random_token(16);
    let (challenge, verifier) = if provider.cfg.pkce {
        let (c, v) = oauth2::PkceCodeChallenge::new_random_sha256();
        (Some(c.as_str().to_string()), Some(v.secret().clone()))
    } else {
        (None, None)
    };
    let login_state = LoginState {
        provider: provider.cfg.key(),
        state: state.clone(),
        nonce: nonce.clone(),
        verifier,
        rd,
        created: b.now(),
    };
    let mut set = vec![b.cookies.set(
        &login::cookie_name(&state),
        &login::seal(&ring, &login_state),
        LOGIN_PATH,
        login::LOGIN_TTL_SECS,
    )];
    // Drop the oldest logins in flight beyond the limit (abandoned tabs).
    let mut in_flight: Vec<(i64, &str)> = cookies::all(&headers)
        .into_iter()
        .filter(|(k, _)| k.starts_with(login::LOGIN_COOKIE_PREFIX))
        .map(|(k, v)| (login::created_at(&ring, v).unwrap_or(0), k))
        .collect();
    if in_flight.len() >= login::MAX_LOGINS_IN_FLIGHT {
        in_flight.sort();
        let excess = in_flight.len() + 1 - login::MAX_LOGINS_IN_FLIGHT;
        for (_, name) in in_flight.into_iter().take(excess) {
            set.push(b.cookies.clear(name, LOGIN_PATH));
        }
    }
    b.metrics
        .logins_started
        .get_or_create(&ProviderLabel {
            provider: provider.cfg.key(),
        })
        .inc();
    let url = provider.authorize_url(&state, &nonce, challenge.as_deref(), hint);
    with_cookies(redirect(url.as_str()), set)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

pub async fn callback(
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
    let resp = match result {
        Ok((location, user)) => {
            b.metrics
                .logins
                .get_or_create(&ProviderLabel {
                    provider: key.clone(),
                })
                .inc();
            info!(provider = %key, user = ?user, "login");
            redirect(&location)
        }
        Err(refusal) => refused(&b, refusal, Some(&key), &retry),
    };
    with_cookies(resp, set)
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
    let ring = b.ring_or_refuse()?;
    let now = b.now();
    let state = q.state.as_deref().unwrap_or("");
    if !login::is_valid_state(state) {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "the callback has no valid state parameter; start the login again",
        ));
    }
    let cookie_name = login::cookie_name(state);
    let Some(sealed) = cookies::get(headers, &cookie_name) else {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "this browser has no login in progress for this state: the login already finished, cookies are blocked, or the link did not come from this browser's login",
        ));
    };
    set.push(b.cookies.clear(&cookie_name, LOGIN_PATH));
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
    if !b
        .used_states
        .first_use(state, now + login::LOGIN_TTL_SECS, now)
    {
        return Err(Refusal::new(
            Reason::StateMismatch,
            "this login already finished (the callback was opened again); start a new login",
        ));
    }
    let provider = b.table().resolve(key)?;
    if let Some(error) = &q.error {
        return Err(Refusal::new(
            Reason::IdpError,
            format!(
                "{} answered error \"{}\"{}",
                provider.cfg.display_name,
                clip(error, 64),
                q.error_description
                    .as_deref()
                    .map(|d| format!(": {}", clip(d, 300)))
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
        .exchange(code, login_state.verifier.clone(), now)
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
    crate::broker::claims::check_domain(
        identity.email.as_deref(),
        &provider.cfg,
        &b.table().domain_owners,
    )?;
    let lifetime = b.settings.session_lifetime;
    let looked_for = b.table().claims_for(key);
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
        claims: identity.select(&looked_for),
        claims_looked_for: looked_for.into_iter().collect(),
        issuer: provider.cfg.issuer.clone(),
        client_id: provider.cfg.client_id.clone(),
    };
    // The tokens some policy of this provider forwards to its apps.
    let needs = b.table().needs(key);
    let carried = needs.any().then(|| {
        Carried::new(
            &sess,
            needs,
            &tokens.access_token,
            tokens.expires_in,
            Some(&tokens.id_token),
            now,
        )
    });
    let sealed = session::seal(&ring, sess, &provider.cfg.allowed_groups).map_err(|_| {
        Refusal::new(
            Reason::SessionTooLarge,
            "the identity does not fit in a session cookie even without groups",
        )
    })?;
    // This provider's session; sessions from other providers stay.
    set.push(
        b.cookies
            .set(&session::cookie_name(key), &sealed, SESSION_PATH, lifetime),
    );
    if let Some(c) = carried {
        set.push(b.cookies.set(
            &tokens::cookie_name(key),
            &tokens::seal(&ring, c),
            SESSION_PATH,
            lifetime,
        ));
    }
    // The ID token for the logout hint, when it fits; only sent to logout.
    let hint = ring.seal(ID_TOKEN_PURPOSE, tokens.id_token.as_bytes());
    if hint.len() <= session::MAX_SESSION_BYTES {
        set.push(
            b.cookies
                .set(&cookies::id_token_cookie(key), &hint, LOGOUT_PATH, lifetime),
        );
    }
    Ok((login_state.rd, identity.user))
}
