//! The broker's HTTP routes:
//!
//! - `GET /`: who you are when signed in, else the provider chooser;
//!   `GET /oauth/login`: the provider chooser ([`login`])
//! - `GET /oauth/start?provider=<ns>/<name>|<name>&rd=<url>`: state, nonce,
//!   PKCE, 302 to the IdP ([`login`])
//! - `GET /oauth/callback/<ns>/<name>`: code exchange, ID-token checks,
//!   userinfo, claim mapping, access rules, session cookie, 302 to `rd`
//!   ([`login`])
//! - `/oauth/auth/<ns>/<name>` (any method, also with the app's path
//!   appended, as Envoy's path prefix does): forward-auth for one
//!   AccessPolicy: 200 with `X-Auth-Request-*` headers, 401 without a
//!   session from one of its providers, 403 when it refuses ([`auth`])
//! - `/oauth/auth` (any method): forward-auth without a policy, any
//!   provider's session ([`auth`])
//! - `GET /oauth/userinfo`: the session as JSON ([`auth`])
//! - `POST /oauth/logout` (a `GET` shows a confirm page), `GET
//!   /oauth/logged-out` ([`logout`])
//!
//! Every answer passes through [`respond::no_store`].

mod auth;
mod login;
mod logout;

use std::sync::Arc;

use axum::{
    Router,
    routing::{any, get},
};

use super::{Broker, cookies::LOGOUT_PATH, respond};

impl Broker {
    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(login::home))
            .route("/oauth/login", get(login::login_page))
            .route("/oauth/start", get(login::start))
            .route("/oauth/callback/{namespace}/{name}", get(login::callback))
            .route("/oauth/auth", any(auth::forward_auth))
            .route("/oauth/auth/{namespace}/{name}", any(auth::policy_auth))
            // Envoy asking about the app's root appends "/".
            .route(
                "/oauth/auth/{namespace}/{name}/",
                any(auth::policy_auth_root),
            )
            .route(
                "/oauth/auth/{namespace}/{name}/{*rest}",
                any(auth::policy_auth),
            )
            .route("/oauth/userinfo", get(auth::userinfo))
            .route(LOGOUT_PATH, get(logout::confirm).post(logout::logout))
            .route("/oauth/logged-out", get(logout::logged_out))
            .fallback(logout::not_found)
            .layer(axum::middleware::map_response(respond::no_store))
            .with_state(self.clone())
    }
}

/// `application/x-www-form-urlencoded` query text.
fn encode_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
