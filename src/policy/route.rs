//! Which policy a request is for: hosts and path prefixes.
//!
//! A host pattern is a DNS name (`grafana.example.com`) or a wildcard
//! (`*.example.com`, which matches any name under example.com, not
//! example.com itself). Hosts compare case-insensitively, without a port or
//! a trailing dot. A path prefix matches whole segments: `/app` matches
//! `/app` and `/app/x`, not `/apple`. No paths means `/`.
//!
//! The most specific claim wins: an exact host before a wildcard, a longer
//! wildcard suffix before a shorter one, then the longest path prefix. Two
//! policies claiming the same host pattern and path prefix conflict: the
//! older one (by creation time, then namespace/name) keeps it and both are
//! told, as Gateway API settles route conflicts.

use std::collections::BTreeMap;

/// A parsed host pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.suffix`: the suffix, without the `*.`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a pattern; `Err` says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host name or a wildcard like *.example.com"
            ));
        }
        if wild && !name.contains('.') {
            return Err(format!(
                "{s:?} would match every name under a top-level domain; name at least two labels after *."
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether `host` (already normalized) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// Whether every host `other` matches, this pattern matches too.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(_), HostPattern::Wildcard(_)) => false,
            (HostPattern::Wildcard(_), HostPattern::Exact(h)) => self.matches(h),
            (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => a == b || self.matches(b),
        }
    }

    /// Higher is more specific.
    fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (1, h.len()),
            HostPattern::Wildcard(s) => (0, s.len()),
        }
    }
}

/// A request's host as compared: lowercase, no port, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = match host.rsplit_once(':') {
        // Not an IPv6 literal's colons: only strip a numeric port.
        Some((h, p))
            if !h.ends_with(']') && !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            h
        }
        Some((h, p)) if h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks a path prefix: absolute, no query, fragment, `..` or `//`.
pub fn check_path_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/')
        || p.contains(['?', '#'])
        || p.contains("//")
        || p.split('/').any(|seg| seg == ".." || seg == ".")
    {
        return Err(format!(
            "{p:?} is not an absolute path prefix (no query, fragment, empty, . or .. segments)"
        ));
    }
    Ok(())
}

/// Whether `prefix` matches `path` by whole segments.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One policy's claim on the URL space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name` of the policy.
    pub key: String,
    /// Creation time (seconds), for settling conflicts.
    pub created: i64,
    pub hosts: Vec<HostPattern>,
    /// Empty means `/`.
    pub paths: Vec<String>,
}

/// A host pattern and path prefix claimed twice: who keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub host: HostPattern,
    pub path: String,
    pub winner: String,
    pub loser: String,
}

/// The URL space: who serves which host and path.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// Most specific first.
    entries: Vec<(HostPattern, String, String)>,
    pub conflicts: Vec<Conflict>,
}

impl Routes {
    /// Builds the table, settling conflicts (older wins, then key order).
    pub fn build(claims: &[Claim]) -> Routes {
        let mut ordered: Vec<&Claim> = claims.iter().collect();
        ordered.sort_by(|a, b| a.created.cmp(&b.created).then(a.key.cmp(&b.key)));
        let mut owner: BTreeMap<(HostPattern, String), String> = BTreeMap::new();
        let mut conflicts = Vec::new();
        for c in ordered {
            let paths: Vec<String> = if c.paths.is_empty() {
                vec!["/".into()]
            } else {
                c.paths.clone()
            };
            for h in &c.hosts {
                for p in &paths {
                    let p = normalize_prefix(p);
                    match owner.get(&(h.clone(), p.clone())) {
                        Some(winner) if *winner != c.key => conflicts.push(Conflict {
                            host: h.clone(),
                            path: p,
                            winner: winner.clone(),
                            loser: c.key.clone(),
                        }),
                        Some(_) => {}
                        None => {
                            owner.insert((h.clone(), p), c.key.clone());
                        }
                    }
                }
            }
        }
        let mut entries: Vec<(HostPattern, String, String)> =
            owner.into_iter().map(|((h, p), k)| (h, p, k)).collect();
        entries.sort_by(|a, b| {
            b.0.specificity()
                .cmp(&a.0.specificity())
                .then(a.0.cmp(&b.0))
                .then(b.1.len().cmp(&a.1.len()))
        });
        Routes { entries, conflicts }
    }

    /// The policy serving `host` (as the proxy sent it) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&str> {
        let host = normalize_host(host);
        // Entries of one host pattern are contiguous, most specific host
        // first: the first host that matches decides, so a more specific
        // host's narrower paths never fall through to a wildcard.
        let mut chosen: Option<&HostPattern> = None;
        for (h, p, key) in &self.entries {
            match chosen {
                Some(c) if c != h => break,
                Some(_) => {}
                None if h.matches(&host) => chosen = Some(h),
                None => continue,
            }
            if path_matches(p, path) {
                return Some(key);
            }
        }
        None
    }
}

fn normalize_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    fn claim(key: &str, created: i64, hosts: &[&str], paths: &[&str]) -> Claim {
        Claim {
            key: key.into(),
            created,
            hosts: hosts.iter().map(|h| host(h)).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn host_patterns() {
        assert!(host("Grafana.Example.com").matches("grafana.example.com"));
        assert!(host("*.example.com").matches("a.example.com"));
        assert!(host("*.example.com").matches("a.b.example.com"));
        assert!(!host("*.example.com").matches("example.com"));
        assert!(!host("*.example.com").matches("badexample.com"));
        assert!(!host("*.example.com").matches(".example.com"));
        for bad in [
            "",
            "*",
            "*.com",
            "a..b",
            "-a.com",
            "a_b.com",
            "a.com/x",
            "*.*.a.com",
            "a b.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_host("App.Example.com:8443"), "app.example.com");
        assert_eq!(normalize_host("app.example.com."), "app.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        assert!(path_matches("/app", "/app"));
        assert!(path_matches("/app", "/app/x"));
        assert!(path_matches("/app/", "/app/x"));
        assert!(!path_matches("/app", "/apple"));
        assert!(path_matches("/", "/anything"));
        for bad in ["app", "/a?b", "/a#b", "/a//b", "/a/../b", "/./a"] {
            assert!(check_path_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_path_prefix("/api/v1").is_ok());
    }

    #[test]
    fn the_most_specific_claim_wins() {
        let r = Routes::build(&[
            claim("a/wild", 1, &["*.example.com"], &[]),
            claim("a/grafana", 2, &["grafana.example.com"], &[]),
            claim("b/grafana-api", 3, &["grafana.example.com"], &["/api"]),
            claim("c/deep-wild", 4, &["*.team.example.com"], &[]),
        ]);
        assert!(r.conflicts.is_empty());
        assert_eq!(r.lookup("grafana.example.com", "/"), Some("a/grafana"));
        assert_eq!(
            r.lookup("grafana.example.com:443", "/api/x"),
            Some("b/grafana-api")
        );
        assert_eq!(r.lookup("GRAFANA.example.com", "/apix"), Some("a/grafana"));
        assert_eq!(r.lookup("other.example.com", "/"), Some("a/wild"));
        assert_eq!(r.lookup("x.team.example.com", "/"), Some("c/deep-wild"));
        assert_eq!(r.lookup("example.com", "/"), None);
        assert_eq!(r.lookup("evil.com", "/"), None);
        // An exact host with paths only: other paths of that host are not
        // handed to a wildcard that also matches it.
        let r = Routes::build(&[
            claim("a/wild", 1, &["*.example.com"], &[]),
            claim("b/api-only", 2, &["api.example.com"], &["/v1"]),
        ]);
        assert_eq!(r.lookup("api.example.com", "/v1/x"), Some("b/api-only"));
        assert_eq!(r.lookup("api.example.com", "/admin"), None);
    }

    #[test]
    fn the_older_claim_keeps_a_contested_host_and_both_are_told() {
        let r = Routes::build(&[
            claim("tenant-b/evil", 20, &["grafana.corp.example.com"], &["/"]),
            claim("corp/grafana", 10, &["grafana.corp.example.com"], &[]),
        ]);
        assert_eq!(
            r.lookup("grafana.corp.example.com", "/"),
            Some("corp/grafana")
        );
        assert_eq!(
            r.conflicts,
            [Conflict {
                host: host("grafana.corp.example.com"),
                path: "/".into(),
                winner: "corp/grafana".into(),
                loser: "tenant-b/evil".into(),
            }]
        );
        // Same age: namespace/name order decides, stably.
        let r = Routes::build(&[
            claim("b/x", 5, &["h.example.com"], &["/p"]),
            claim("a/x", 5, &["h.example.com"], &["/p/"]),
        ]);
        assert_eq!(r.lookup("h.example.com", "/p"), Some("a/x"));
        assert_eq!(r.conflicts.len(), 1);
    }
}
