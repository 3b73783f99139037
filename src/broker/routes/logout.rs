//! Logout, the logged-out page and the 404 page.

use std::sync::Arc;

use axum::{extract::State, http::HeaderMap, http::StatusCode, response::Response};
use tracing::info;

use super::auth::current_session;
use crate::broker::{
    Broker,
    cookies::{self, ID_TOKEN_COOKIE, LOGOUT_PATH, SESSION_COOKIE, SESSION_PATH},
    error::{Reason, Refusal},
    pages,
    provider::random_token,
    respond::{page, redirect, with_cookies},
    routes::login::ID_TOKEN_PURPOSE,
};

/// Clears the session and, when the provider has an `end_session_endpoint`,
/// sends the browser there (RP-initiated logout) with the ID-token hint.
pub async fn logout(State(b): State<Arc<Broker>>, headers: HeaderMap) -> Response {
    let cleared = [
        b.cookies.clear(SESSION_COOKIE, SESSION_PATH),
        b.cookies.clear(ID_TOKEN_COOKIE, LOGOUT_PATH),
    ];
    let Ok((s, provider, _)) = current_session(&b, &headers) else {
        return with_cookies(redirect("/oauth/logged-out"), cleared);
    };
    let hint = b.ring().and_then(|ring| {
        let sealed = cookies::get(&headers, ID_TOKEN_COOKIE)?;
        let raw = ring.open(ID_TOKEN_PURPOSE, sealed).ok()?;
        String::from_utf8(raw).ok()
    });
    info!(provider = %s.provider, user = %s.user, "logout");
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
