//! Logout, the logged-out page and the 404 page.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use tracing::info;

use super::auth::{Found, sessions};
use crate::broker::{
    Broker,
    cookies::{self, ID_TOKEN_COOKIE, LOGOUT_PATH, SESSION_PATH},
    error::{Reason, Refusal},
    pages,
    provider::random_token,
    respond::{page, page_with_form_targets, redirect, with_cookies},
    routes::login::{ID_TOKEN_PURPOSE, end_session_origins},
    session, tokens,
};

#[derive(Deserialize)]
pub struct LogoutQuery {
    /// End only this provider's session (`namespace/name`).
    provider: Option<String>,
}

/// Whether a request comes from a page of another origin: `Sec-Fetch-Site`
/// when the browser sends it, else `Origin`. A request with neither (curl,
/// a script) is not a browser's cross-site request.
fn from_another_origin(b: &Broker, headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match text("origin") {
        None => false,
        Some(origin) => origin != b.settings.public_url.origin().ascii_serialization(),
    }
}

/// `GET /oauth/logout`: a page asking to confirm, whose button POSTs. A
/// GET changes nothing, so no other site can sign a user out (and out of
/// the IdP) with an image or a link.
pub async fn confirm(
    State(b): State<Arc<Broker>>,
    Query(q): Query<LogoutQuery>,
    headers: HeaderMap,
) -> Response {
    let only = q.provider.as_deref().filter(|p| !p.is_empty());
    let found = sessions(&b, &headers).unwrap_or_default();
    let origins = end_session_origins(
        found
            .iter()
            .filter(|f| only.is_none_or(|p| f.session.provider == p)),
    );
    page_with_form_targets(StatusCode::OK, pages::confirm_logout_page(only), &origins)
}

/// `POST /oauth/logout`: ends the browser's sessions (with `provider=`,
/// only that provider's) and, when the provider of the newest session
/// ended has an `end_session_endpoint`, sends the browser there
/// (RP-initiated logout) with the ID-token hint. A POST from a page of
/// another origin gets the confirm page instead (logout CSRF).
pub async fn logout(
    State(b): State<Arc<Broker>>,
    Query(q): Query<LogoutQuery>,
    headers: HeaderMap,
) -> Response {
    if from_another_origin(&b, &headers) {
        return confirm(State(b), Query(q), headers).await;
    }
    let only = q.provider.as_deref().filter(|p| !p.is_empty());
    let found = sessions(&b, &headers).unwrap_or_default();
    let ending: Vec<&Found<'_>> = found
        .iter()
        .filter(|f| only.is_none_or(|p| f.session.provider == p))
        .collect();
    // The cookies to clear: the ended sessions' and their ID tokens; when
    // ending everything, every session and ID-token cookie the browser
    // sent, valid or not.
    let mut names: Vec<String> = Vec::new();
    match only {
        Some(p) => {
            names.push(session::cookie_name(p));
            names.push(tokens::cookie_name(p));
            names.extend(ending.iter().map(|f| f.cookie.to_string()));
        }
        None => names.extend(
            cookies::all(&headers)
                .into_iter()
                .filter(|(k, _)| {
                    session::is_session_cookie(k) || session::in_slot(tokens::TOKENS_COOKIE, k)
                })
                .map(|(k, _)| k.to_string()),
        ),
    }
    names.sort();
    names.dedup();
    let mut cleared: Vec<_> = names
        .iter()
        .map(|n| b.cookies.clear(n, SESSION_PATH))
        .collect();
    let mut hints: Vec<String> = match only {
        Some(p) => vec![cookies::id_token_cookie(p)],
        None => cookies::all(&headers)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| *k == ID_TOKEN_COOKIE || session::in_slot(ID_TOKEN_COOKIE, k))
            .map(str::to_string)
            .collect(),
    };
    hints.sort();
    hints.dedup();
    cleared.extend(hints.iter().map(|n| b.cookies.clear(n, LOGOUT_PATH)));
    let Some(newest) = ending.iter().max_by_key(|f| f.session.issued_at) else {
        return with_cookies(redirect("/oauth/logged-out"), cleared);
    };
    let (s, provider) = (&newest.session, &newest.provider);
    let hint = b.ring().and_then(|ring| {
        let sealed = cookies::get(&headers, &cookies::id_token_cookie(&s.provider))
            .or_else(|| cookies::get(&headers, ID_TOKEN_COOKIE))?;
        let raw = ring.open(ID_TOKEN_PURPOSE, sealed).ok()?;
        String::from_utf8(raw).ok()
    });
    info!(provider = %s.provider, user = ?s.user, ended = ending.len(), "logout");
    let done = b.settings.public("/oauth/logged-out");
    let to = match provider.end_session_url(hint.as_deref(), &done, &random_token(16)) {
        Some(url) => redirect(url.as_str()),
        None => redirect("/oauth/logged-out"),
    };
    with_cookies(to, cleared)
}

pub async fn logged_out() -> Response {
    page(StatusCode::OK, pages::logged_out_page("/oauth/login"))
}

pub async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::error_page(
            &Refusal::new(Reason::InvalidRequest, "there is nothing at this address"),
            Some("/oauth/login"),
        ),
    )
}
