//! Where the broker may send a browser after login or logout (`rd`): a
//! local path, or an http(s) URL on an allowed domain. Anything else is an
//! open redirect and is refused.

use url::Url;

/// Allowed redirect targets.
#[derive(Clone, Debug, Default)]
pub struct RedirectPolicy {
    /// Domains allowed as targets. `example.com` allows exactly that host;
    /// `.example.com` allows it and every subdomain.
    pub allowed_domains: Vec<String>,
    /// Allow plain http targets (for local development only).
    pub allow_http: bool,
}

impl RedirectPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_domains.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            match d.strip_prefix('.') {
                Some(parent) => host == parent || host.ends_with(&format!(".{parent}")),
                None => host == d,
            }
        })
    }

    /// The target to redirect to, or `None` when `rd` is not allowed.
    /// Local paths are returned as given; absolute URLs normalized.
    pub fn check(&self, rd: &str) -> Option<String> {
        if rd.is_empty() || rd.len() > 2048 || rd.chars().any(|c| c.is_control() || c == '\\') {
            return None;
        }
        if rd.starts_with('/') {
            // "//host" and "/\host" are scheme-relative to browsers.
            if rd.starts_with("//") {
                return None;
            }
            return Some(rd.to_string());
        }
        let url = Url::parse(rd).ok()?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return None,
        }
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?;
        self.host_allowed(host).then(|| url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy {
            allowed_domains: vec![".example.com".into(), "app.other.org".into()],
            allow_http: false,
        }
    }

    #[test]
    fn allowed_targets() {
        let p = policy();
        for (rd, want) in [
            ("/", "/"),
            ("/dashboard?tab=1#x", "/dashboard?tab=1#x"),
            ("https://example.com/", "https://example.com/"),
            (
                "https://app.example.com/path?q=1",
                "https://app.example.com/path?q=1",
            ),
            ("https://APP.Example.COM/x", "https://app.example.com/x"),
            ("https://app.other.org:8443/", "https://app.other.org:8443/"),
        ] {
            assert_eq!(p.check(rd).as_deref(), Some(want), "{rd}");
        }
    }

    #[test]
    fn open_redirects_are_refused() {
        let p = policy();
        for rd in [
            "",
            "//evil.com",
            "//evil.com/path",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com/",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "https://sub.app.other.org/",
            "https://other.org/",
            "http://app.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://user:pass@app.example.com/",
            "https://app.example.com@evil.com/",
            "https:evil.com",
            "/path\nSet-Cookie: x=y",
            "/path\r\nLocation: https://evil.com",
            "evil.com",
            "ftp://app.example.com/",
        ] {
            assert_eq!(p.check(rd), None, "{rd:?} must be refused");
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(p.check(&long), None);
    }

    #[test]
    fn http_only_when_allowed() {
        let mut p = policy();
        p.allow_http = true;
        assert_eq!(
            p.check("http://app.example.com/").as_deref(),
            Some("http://app.example.com/")
        );
        assert_eq!(p.check("http://evil.com/"), None);
    }

    #[test]
    fn empty_policy_allows_local_paths_only() {
        let p = RedirectPolicy::default();
        assert_eq!(p.check("/x").as_deref(), Some("/x"));
        assert_eq!(p.check("https://example.com/"), None);
    }
}
