//! How the broker answers: HTML pages with security headers, redirects,
//! refusals (an [`IntoResponse`] that logs, counts and renders the error
//! page), and the one layer that marks every answer `no-store`.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{error::Refusal, metrics::BrokerMetrics, pages};

/// Sets `Cache-Control: no-store` on every response: logins, sessions and
/// forward-auth answers are per user and must never be cached by a proxy.
pub async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Appends `Set-Cookie` headers.
pub fn with_cookies(
    mut resp: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    let h = resp.headers_mut();
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

/// The pages' Content-Security-Policy, in two halves so a page whose forms
/// lead elsewhere can name those origins in `form-action` between them.
macro_rules! csp {
    ($($origins:expr)?) => {
        concat!("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'", $($origins,)? "; frame-ancestors 'none'")
    };
}

fn page_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp!()),
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

/// An HTML page.
pub fn page(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    page_headers(h);
    resp
}

/// An HTML page whose forms may also lead to `origins` (a sign-out form
/// posts to the broker, which redirects to the provider's end-session
/// endpoint; CSP `form-action` governs that redirect too).
pub fn page_with_form_targets(status: StatusCode, html: String, origins: &[String]) -> Response {
    let mut resp = page(status, html);
    let extra: Vec<&str> = origins
        .iter()
        .map(String::as_str)
        // Only what a CSP source can carry: scheme://host[:port].
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
        })
        .collect();
    if !extra.is_empty() {
        let policy = csp!("{}").replace("{}", &format!(" {}", extra.join(" ")));
        if let Ok(v) = HeaderValue::from_str(&policy) {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

/// A `302 Found` to `location` (to `/` when it cannot be a header value).
pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    let to = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    h.insert(header::LOCATION, to);
    page_headers(h);
    resp
}

/// `401` for forward-auth and API requests without a valid session.
pub fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "unauthorized").into_response()
}

/// A forward-auth refusal: 403 with why, for the proxy's log, counted
/// under its forward-auth result label.
pub struct Denied<'a> {
    metrics: &'a BrokerMetrics,
    result: &'static str,
    why: String,
}

impl<'a> Denied<'a> {
    pub fn new(b: &'a super::Broker, result: &'static str, why: impl Into<String>) -> Self {
        Self {
            metrics: &b.metrics,
            result,
            why: why.into(),
        }
    }
}

impl IntoResponse for Denied<'_> {
    fn into_response(self) -> Response {
        self.metrics.forward_auth_result(self.result);
        (StatusCode::FORBIDDEN, self.why).into_response()
    }
}

/// A refusal shown to the user: logged once, counted by reason, rendered
/// as the error page with a link to try again.
pub struct Refused<'a> {
    pub refusal: Refusal,
    pub metrics: &'a BrokerMetrics,
    /// The provider the request was for, for the log line.
    pub provider: Option<&'a str>,
    /// Where "try again" leads.
    pub retry: Option<&'a str>,
}

impl IntoResponse for Refused<'_> {
    fn into_response(self) -> Response {
        let r = self.refusal;
        self.metrics.failure(r.reason);
        // Debug-formatted fields: a provider's text (an error description,
        // a user name) cannot start a new log line.
        tracing::warn!(
            reason = r.reason.code(),
            provider = self.provider.unwrap_or(""),
            message = ?r.message,
            detail = ?r.detail.as_deref().unwrap_or(""),
            "request refused"
        );
        page(r.reason.status(), pages::error_page(&r, self.retry))
    }
}
