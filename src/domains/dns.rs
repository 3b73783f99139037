//! Looking up a domain's verification record, through hickory-resolver.
//!
//! No cache: a record is looked up only when its recheck is due (see
//! [`super::due`]), and an answer cached by us could outlive a record's
//! removal. Names are queried fully qualified, so the cluster's search
//! domains (`ndots:5`) do not multiply the queries.

use std::{net::SocketAddr, time::Duration};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{NetError, runtime::TokioRuntimeProvider},
    proto::rr::RData,
};

use super::{Lookup, RECORD_LABEL};

/// Where and how long to ask.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The DNS server (UDP, then TCP for a truncated answer); `None`: the
    /// system's (`/etc/resolv.conf`: the cluster DNS in a pod).
    pub server: Option<SocketAddr>,
    /// How long one query may take before the lookup fails with a timeout.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: None,
            timeout: Duration::from_secs(5),
        }
    }
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match settings.server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![server]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(Self { inner })
    }

    /// The TXT values at `_sso-operator.<domain>`; when there are none,
    /// whether `domain` itself exists (a second query, only then).
    pub async fn lookup(&self, domain: &str) -> Lookup {
        let name = format!("{RECORD_LABEL}.{domain}.");
        match self.inner.txt_lookup(name.as_str()).await {
            Ok(found) => Lookup::Values(
                found
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        // A value may be split in 255-byte strings: joined.
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) if e.is_no_records_found() => {
                match self.inner.txt_lookup(format!("{domain}.").as_str()).await {
                    Err(e) if e.is_nx_domain() => Lookup::NoDomain,
                    Ok(_) => Lookup::NoRecord,
                    Err(e) if e.is_no_records_found() => Lookup::NoRecord,
                    Err(e) => failed(&e),
                }
            }
            Err(e) => failed(&e),
        }
    }
}

fn failed(e: &NetError) -> Lookup {
    Lookup::Failed {
        timeout: matches!(e, NetError::Timeout),
        detail: e.to_string(),
    }
}

/// A domain to verify: its record and its status before, if any.
pub struct Wanted<'a> {
    pub domain: &'a str,
    pub record: (String, String),
    pub prev: Option<&'a super::DomainStatus>,
}

/// Looks up the domains whose recheck is due (16 at a time) and returns
/// every domain's status, the others' as they were.
///
/// Lookups not started by `deadline` wait for the next pass (their
/// statuses as they were, or Queued): a provider listing a thousand
/// domains in a zone whose server never answers holds a reconcile for the
/// deadline, not for the thousand timeouts.
pub async fn refresh(
    resolver: Result<&Resolver, &str>,
    wanted: &[Wanted<'_>],
    now: jiff::Timestamp,
    grace: jiff::SignedDuration,
    deadline: Option<tokio::time::Instant>,
) -> Vec<super::DomainStatus> {
    use futures::StreamExt as _;
    // The futures built first, not by a closure inside the stream: with
    // one there, the reconcile future is not Send for every lifetime
    // (rustc's higher-ranked closure limits), and kube's Controller needs
    // it to be.
    let mut lookups = Vec::with_capacity(wanted.len());
    for w in wanted {
        lookups.push(one(resolver, w, now, grace, deadline));
    }
    futures::stream::iter(lookups).buffered(16).collect().await
}

async fn one(
    resolver: Result<&Resolver, &str>,
    w: &Wanted<'_>,
    now: jiff::Timestamp,
    grace: jiff::SignedDuration,
    deadline: Option<tokio::time::Instant>,
) -> super::DomainStatus {
    let (name, value) = (&w.record.0, &w.record.1);
    let late = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
    match w.prev {
        Some(p) if !super::due(Some(p), value, now) => p.clone(),
        Some(p) if late && p.record_value == *value => p.clone(),
        _ if late => super::DomainStatus {
            record_name: name.clone(),
            record_value: value.clone(),
            ..super::DomainStatus::unlooked(
                w.domain,
                super::states::PENDING,
                super::reasons::QUEUED,
                "not looked up yet: the next pass will",
            )
        },
        prev => {
            let found = match resolver {
                Ok(r) => r.lookup(w.domain).await,
                Err(why) => Lookup::Failed {
                    timeout: false,
                    detail: format!("no DNS resolver: {why}"),
                },
            };
            super::next(prev, w.domain, (name, value), &found, now, grace)
        }
    }
}
