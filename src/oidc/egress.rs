//! Where the operator may connect on a provider's behalf. Every URL a
//! provider names (its issuer, discovery's endpoints, `spec.endpoints`) is
//! written by whoever may create an IdentityProvider; without a rule, the
//! controller and the broker would fetch, POST to and report on any address
//! the cluster can reach (the API server, the cloud metadata service, a
//! database's admin port). So connections go only to public addresses,
//! checked on the addresses DNS returned (the resolver below is the one the
//! HTTP client connects with, so a name that resolves to a public address
//! for the check and a private one for the connection cannot exist) and on
//! IP literals before the request. The cluster operator allows private
//! ranges explicitly (`--allow-provider-cidrs`, chart
//! `providerEgress.allowCIDRs`), e.g. an in-cluster Keycloak; `dev` allows
//! loopback.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

/// The egress rule: public addresses, and the ranges the cluster operator
/// allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    allowed: Arc<[IpNet]>,
}

/// A connection the egress rule refused. Names the host, never the
/// addresses it resolved to: the message reaches the tenant's status.
#[derive(Debug)]
pub struct EgressDenied {
    pub host: String,
}

impl std::fmt::Display for EgressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is refused by the egress policy: it resolves only to private, loopback, link-local or other non-public addresses, which provider URLs may not use unless the cluster operator allows the range (--allow-provider-cidrs)",
            self.host
        )
    }
}

impl std::error::Error for EgressDenied {}

impl Egress {
    /// Public addresses and `allowed`.
    pub fn allowing(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }

    /// Public addresses and loopback (`dev`, tests against a local OP).
    pub fn with_loopback() -> Self {
        Self::allowing(vec![
            "127.0.0.0/8".parse().expect("valid"),
            "::1/128".parse().expect("valid"),
        ])
    }

    /// The ranges allowed beyond public addresses.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// Refuses a URL whose host is an IP literal the rule refuses (names
    /// are checked when they resolve). A URL that does not parse is left
    /// to the request, which fails on it.
    pub fn check_url(&self, url: &str) -> Result<(), EgressDenied> {
        let Ok(u) = url::Url::parse(url) else {
            return Ok(());
        };
        let ip = match u.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(EgressDenied {
                host: u.host_str().unwrap_or_default().to_string(),
            })
        }
    }

    /// The resolver the HTTP client connects with: the system's, keeping
    /// only the addresses the rule allows.
    pub fn resolver(&self) -> Arc<Resolver> {
        Arc::new(Resolver(self.clone()))
    }
}

/// A DNS resolver that drops the addresses the egress rule refuses.
pub struct Resolver(Egress);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| egress.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                tracing::warn!(host, "provider host refused by the egress policy");
                return Err(Box::new(EgressDenied { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `err`'s chain holds an egress refusal.
pub fn denied_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressDenied> {
    let mut e: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(cur) = e {
        if let Some(d) = cur.downcast_ref::<EgressDenied>() {
            return Some(d);
        }
        e = cur.source();
    }
    None
}

/// IPv4-mapped and NAT64-free IPv6 addresses judged as the IPv4 address
/// they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Globally routable unicast: not private, loopback, link-local, shared
/// (CGNAT, often a cluster's pod range), documentation, benchmarking,
/// multicast, reserved or unspecified.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: reaches IPv4 inside
        || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)) // IPv4-compatible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_cluster_ranges_are_refused() {
        let strict = Egress::default();
        for refused in [
            "10.0.0.1",
            "10.96.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "ff02::1",
        ] {
            assert!(!strict.allows(refused.parse().unwrap()), "{refused}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(strict.allows(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn allowed_ranges_and_loopback_for_dev() {
        let e = Egress::allowing(vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(e.allows("10.20.3.4".parse().unwrap()));
        assert!(!e.allows("10.21.0.1".parse().unwrap()));
        let dev = Egress::with_loopback();
        assert!(dev.allows("127.0.0.1".parse().unwrap()));
        assert!(dev.allows("::1".parse().unwrap()));
        assert!(!dev.allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ip_literals_are_checked_before_any_request() {
        let strict = Egress::default();
        let e = strict
            .check_url("https://169.254.169.254/latest/meta-data")
            .unwrap_err();
        assert_eq!(e.host, "169.254.169.254");
        assert!(strict.check_url("https://[::1]:8443/token").is_err());
        assert!(
            strict.check_url("https://idp.example.com/token").is_ok(),
            "names wait for DNS"
        );
        assert!(strict.check_url("https://8.8.8.8/").is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve as _;
        let strict = Egress::default().resolver();
        let err = match strict.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved to an allowed address"),
            Err(e) => e,
        };
        assert!(denied_in(err.as_ref()).is_some(), "{err}");
        let dev = Egress::with_loopback().resolver();
        let addrs: Vec<SocketAddr> = dev
            .resolve("localhost".parse().unwrap())
            .await
            .map_err(|e| e.to_string())
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
