//! Every cookie the broker reads or writes: reading them from a request,
//! and building `Set-Cookie` values with the attributes every broker cookie
//! shares (`HttpOnly`, `SameSite=Lax`, `Secure` on https, the configured
//! `Domain`). Names and paths are here too, so no handler spells one.

use axum::http::{HeaderMap, HeaderValue, header};

pub use super::session::SESSION_COOKIE;

/// Cookie holding the sealed ID token for the logout `id_token_hint`
/// (before sessions were per provider; now the prefix of
/// [`id_token_cookie`]); its path keeps it off every request but logout.
pub const ID_TOKEN_COOKIE: &str = "_sso_idt";

/// The ID-token cookie of `provider`'s session: `_sso_idt.<ns>.<name>`.
pub fn id_token_cookie(provider: &str) -> String {
    super::session::slot(ID_TOKEN_COOKIE, provider)
}
/// Path of the session cookie: every request.
pub const SESSION_PATH: &str = "/";
/// Path of the login-state cookies: only the callback sees them.
pub const LOGIN_PATH: &str = "/oauth/callback/";
/// Path of the ID-token cookie: only logout sees it.
pub const LOGOUT_PATH: &str = "/oauth/logout";

/// How the broker's cookies are written.
#[derive(Clone, Debug)]
pub struct CookiePolicy {
    /// `Secure`: the broker is served over https.
    pub secure: bool,
    /// `Domain`, to share the session across subdomains.
    pub domain: Option<String>,
}

impl CookiePolicy {
    /// A cookie to set.
    pub fn set(&self, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
        let mut c =
            format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(d) = &self.domain {
            c.push_str("; Domain=");
            c.push_str(d);
        }
        HeaderValue::from_str(&c).expect("cookie values are URL-safe base64")
    }

    /// A cookie to remove (same name, path and domain, expired).
    pub fn clear(&self, name: &str, path: &str) -> HeaderValue {
        self.set(name, "", path, 0)
    }
}

/// The pairs of a request's `Cookie` headers, lazily.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.trim(), v.trim()))
        })
}

/// Every cookie of a request, from every `Cookie` header.
pub fn all(headers: &HeaderMap) -> Vec<(&str, &str)> {
    pairs(headers).collect()
}

/// One cookie's value, without collecting the others (forward-auth's hot
/// path).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pairs(headers).find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b = 2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3;junk;d="));
        assert_eq!(all(&h), [("a", "1"), ("b", "2"), ("c", "3"), ("d", "")]);
        assert_eq!(get(&h, "c"), Some("3"));
        assert_eq!(get(&h, "b"), Some("2"));
        assert_eq!(get(&h, "x"), None);
    }

    #[test]
    fn set_cookie_attributes() {
        let plain = CookiePolicy {
            secure: false,
            domain: None,
        };
        assert_eq!(
            plain.set("n", "v", "/", 60),
            "n=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        let shared = CookiePolicy {
            secure: true,
            domain: Some(".example.com".into()),
        };
        assert_eq!(
            shared.clear("n", LOGOUT_PATH),
            "n=; Path=/oauth/logout; Max-Age=0; HttpOnly; SameSite=Lax; Secure; Domain=.example.com"
        );
    }
}
