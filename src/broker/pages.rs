//! The few HTML pages the broker shows: the provider chooser, error pages
//! naming the reason, and the logged-out page. Everything interpolated is
//! escaped; no scripts.

use std::fmt::Write as _;

use super::error::Refusal;

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}\
main{max-width:26rem;margin:4rem auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 3px #0002}\
h1{font-size:1.3rem;margin-top:0}a.provider{display:block;margin:.6rem 0;padding:.7rem 1rem;border:1px solid #ccd;border-radius:6px;color:#123;text-decoration:none}\
a.provider:hover{background:#eef}p.detail{color:#555;word-break:break-word}code{background:#f0f0f3;padding:0 .2rem}\
li.unavailable{color:#888}form[data-form=email] input[type=email]{display:block;width:100%;box-sizing:border-box;margin:.4rem 0;padding:.6rem}";

fn page(title: &str, main_attrs: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>{STYLE}</style></head>\
<body><main {main_attrs}>{body}</main></body></html>",
        escape(title)
    )
}

/// One entry on the login page.
pub struct Choice {
    pub key: String,
    pub display_name: String,
    pub href: String,
}

/// Home-realm discovery on the login page: an email field that sends the
/// user to the provider of its domain.
pub struct EmailForm {
    pub rd: String,
    pub policy: Option<String>,
    /// The domain of an address no offered provider has verified.
    pub unknown_domain: Option<String>,
}

/// The login page: the email form (when a provider has verified domains),
/// one button per provider; providers that exist but cannot serve right
/// now are listed greyed out with why.
pub fn login_page(
    choices: &[Choice],
    unavailable: &[(String, String)],
    email: Option<&EmailForm>,
) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(f) = email {
        if let Some(d) = &f.unknown_domain {
            let _ = write!(
                body,
                "<p class=\"detail\" data-notice=\"unknown-domain\">No sign-in is set up for {}: choose your provider below.</p>",
                escape(d)
            );
        }
        let policy = f
            .policy
            .as_deref()
            .map(|p| {
                format!(
                    "<input type=\"hidden\" name=\"policy\" value=\"{}\">",
                    escape(p)
                )
            })
            .unwrap_or_default();
        let _ = write!(
            body,
            "<form method=\"get\" action=\"/oauth/start\" data-form=\"email\">\
<label for=\"login_hint\">Sign in with your work email</label>\
<input type=\"email\" id=\"login_hint\" name=\"login_hint\" required autocomplete=\"email\" maxlength=\"320\">\
<input type=\"hidden\" name=\"rd\" value=\"{}\">{policy}<button type=\"submit\">Continue</button></form><p>or</p>",
            escape(&f.rd)
        );
    }
    if choices.is_empty() {
        body.push_str(
            "<p class=\"detail\">No identity provider is ready. An administrator can see why with <code>kubectl get idp -A</code>.</p>",
        );
    }
    for c in choices {
        let _ = write!(
            body,
            "<a class=\"provider\" data-provider=\"{}\" href=\"{}\">Sign in with {}</a>",
            escape(&c.key),
            escape(&c.href),
            escape(&c.display_name)
        );
    }
    if !unavailable.is_empty() {
        body.push_str("<ul>");
        for (name, why) in unavailable {
            let _ = write!(
                body,
                "<li class=\"unavailable\">{}: {}</li>",
                escape(name),
                escape(why)
            );
        }
        body.push_str("</ul>");
    }
    page("Sign in", "data-page=\"login\"", &body)
}

/// An error page naming the reason.
pub fn error_page(refusal: &Refusal, retry_href: Option<&str>) -> String {
    let mut body = format!(
        "<h1>{}</h1><p class=\"detail\">{}</p><p><small>Reason: <code>{}</code></small></p>",
        escape(refusal.reason.title()),
        escape(&refusal.message),
        escape(refusal.reason.code())
    );
    if let Some(href) = retry_href {
        let _ = write!(body, "<p><a href=\"{}\">Try again</a></p>", escape(href));
    }
    page(
        refusal.reason.title(),
        &format!("data-reason=\"{}\"", escape(refusal.reason.code())),
        &body,
    )
}

/// The broker's home page for a browser with valid sessions: who it is
/// through each provider (a browser holds one session per provider), a
/// sign-out button for each and for all, and a way to sign in with another
/// provider.
pub fn signed_in_page(sessions: &[SignedIn<'_>], login_href: &str) -> String {
    let rows: String = sessions
        .iter()
        .map(|s| {
            let email = s
                .email
                .map(|e| format!(" <span class=\"detail\">({})</span>", escape(e)))
                .unwrap_or_default();
            let out = format!(
                "/oauth/logout?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("provider", s.key)
                    .finish()
            );
            format!(
                "<li data-session=\"{}\">as <strong data-user>{}</strong>{email} through <strong data-provider>{}</strong> \
<form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out of {}</button></form></li>",
                escape(s.key),
                escape(s.user),
                escape(s.provider),
                escape(&out),
                escape(s.provider),
            )
        })
        .collect();
    page(
        "Signed in",
        "data-page=\"signed-in\"",
        &format!(
            "<h1>You are signed in</h1><ul class=\"sessions\">{rows}</ul>\
<form method=\"post\" action=\"/oauth/logout\"><button type=\"submit\" name=\"signout\">Sign out everywhere</button></form>\
<p><a href=\"{}\">Sign in with another provider</a></p>",
            escape(login_href)
        ),
    )
}

/// One session on the signed-in page.
pub struct SignedIn<'a> {
    pub user: &'a str,
    pub email: Option<&'a str>,
    /// The provider's display name.
    pub provider: &'a str,
    /// The provider's `namespace/name`.
    pub key: &'a str,
}

/// Shown after logout.
/// Asks before signing out (of one provider, or of all).
pub fn confirm_logout_page(provider: Option<&str>) -> String {
    let (what, action) = match provider {
        Some(p) => (
            format!("Sign out of {}?", escape(p)),
            format!(
                "/oauth/logout?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("provider", p)
                    .finish()
            ),
        ),
        None => (
            "Sign out everywhere?".to_string(),
            "/oauth/logout".to_string(),
        ),
    };
    page(
        "Sign out",
        "data-page=\"confirm-logout\"",
        &format!(
            "<h1>{what}</h1><form method=\"post\" action=\"{}\"><button type=\"submit\" name=\"signout\">Sign out</button></form>\
<p><a href=\"/\">Stay signed in</a></p>",
            escape(&action)
        ),
    )
}

pub fn logged_out_page(login_href: &str) -> String {
    page(
        "Signed out",
        "data-page=\"logged-out\"",
        &format!(
            "<h1>You are signed out</h1><p><a href=\"{}\">Sign in again</a></p>",
            escape(login_href)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::error::Reason;

    #[test]
    fn escapes_everything_interpolated() {
        let html = error_page(
            &Refusal::new(Reason::IdpError, "<script>alert(1)</script> \"x\""),
            Some("/oauth/login?rd=\"><script>"),
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("data-reason=\"idp_error\""));
        let html = login_page(
            &[Choice {
                key: "a/b".into(),
                display_name: "<b>Corp</b>".into(),
                href: "/oauth/start?provider=a%2Fb".into(),
            }],
            &[],
            Some(&EmailForm {
                rd: "/\"><script>".into(),
                policy: Some("<p>/x".into()),
                unknown_domain: Some("<img src=x>.example".into()),
            }),
        );
        assert!(html.contains("Sign in with &lt;b&gt;Corp&lt;/b&gt;"));
        assert!(html.contains("data-provider=\"a/b\""));
        assert!(!html.contains("<script>") && !html.contains("<img") && !html.contains("<p>/x"));
        assert!(html.contains("No sign-in is set up for &lt;img src=x&gt;.example"));
    }
}
