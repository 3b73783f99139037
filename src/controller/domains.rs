//! The reconcile's DNS step: verifies an IdentityProvider's domains (see
//! [`crate::domains`]) with the controller's key and resolver.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use jiff::{SignedDuration, Timestamp};

use crate::{
    api::IdentityProvider,
    domains::{
        self, DomainStatus, Owner,
        dns::{self, Resolver, Wanted},
        reasons, states,
    },
};

/// How long a verified domain stays verified after its record was last
/// seen, while lookups fail or the record is gone: an hour rides out a DNS
/// outage or a botched zone edit without locking the domain's users out,
/// and still revokes a domain whose record was removed (or that changed
/// hands) within the hour (plus one recheck, ten minutes).
pub const GRACE: SignedDuration = SignedDuration::from_hours(1);

/// How long one reconcile may spend starting DNS lookups; the rest wait
/// for the next pass (Queued), so a provider with many domains in a zone
/// that never answers cannot hold a reconcile for minutes.
pub const DNS_BUDGET: Duration = Duration::from_secs(5);

/// The verification key, the resolver, built on first use.
pub struct Verifier {
    /// The per-cluster key record values are made with (from the domain
    /// key Secret, or generated for `dev`).
    pub key: OnceLock<Vec<u8>>,
    /// Where the key comes from, for the KeyNotReady message.
    pub key_hint: &'static str,
    settings: dns::Settings,
    resolver: OnceLock<Result<Resolver, String>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Verifier")
            .field("has_key", &self.key.get().is_some())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Verifier {
    pub fn new(settings: dns::Settings) -> Self {
        Self {
            key: OnceLock::new(),
            key_hint: "its Secret, --domain-key-secret",
            settings,
            resolver: OnceLock::new(),
        }
    }

    fn resolver(&self) -> Result<&Resolver, &str> {
        self.resolver
            .get_or_init(|| {
                Resolver::new(&self.settings).inspect_err(|e| {
                    tracing::error!(error = %e, "no DNS resolver: domains cannot be verified");
                })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The status of each of `idp`'s domains (sorted by domain, case aside): the ones
    /// due looked up now, the others as they were. Before the key or the
    /// client ID is known, a domain keeps its last status (a new one waits,
    /// KeyNotReady). A domain that a provider of another namespace (among
    /// `others`) verified first is ClaimedElsewhere.
    pub async fn verify(
        &self,
        idp: &IdentityProvider,
        client_id: Option<&str>,
        others: &[std::sync::Arc<super::cache::CachedProvider>],
        now: Timestamp,
    ) -> Vec<DomainStatus> {
        if idp.spec.domains.is_empty() {
            return Vec::new();
        }
        let prev: HashMap<&str, &DomainStatus> = idp
            .status
            .iter()
            .flat_map(|s| &s.domains)
            .map(|d| (d.domain.as_str(), d))
            .collect();
        let find = |d: &str| prev.get(d).copied();
        let (valid, mut out) = domains::partition(&idp.spec.domains);
        match (self.key.get(), client_id) {
            (Some(key), Some(client_id)) => {
                let owner = Owner {
                    namespace: idp.metadata.namespace.as_deref().unwrap_or_default(),
                    name: idp.metadata.name.as_deref().unwrap_or_default(),
                    issuer: &idp.spec.issuer,
                    client_id,
                };
                let wanted: Vec<Wanted<'_>> = valid
                    .iter()
                    .map(|d| Wanted {
                        domain: d,
                        record: domains::record(key, owner, d),
                        prev: find(d),
                    })
                    .collect();
                let deadline = tokio::time::Instant::now() + DNS_BUDGET;
                out.extend(
                    dns::refresh(self.resolver(), &wanted, now, GRACE, Some(deadline)).await,
                );
            }
            (key, _) => {
                let why = if key.is_none() {
                    format!(
                        "no domain verification key yet ({}): the record cannot be computed",
                        self.key_hint
                    )
                } else {
                    "the record is made from the client ID, which does not resolve yet".to_string()
                };
                out.extend(valid.iter().map(|d| {
                    find(d)
                        .map(|p| domains::unchecked(p, now, GRACE, reasons::KEY_NOT_READY, &why))
                        .unwrap_or_else(|| {
                            DomainStatus::unlooked(d, states::PENDING, reasons::KEY_NOT_READY, &why)
                        })
                }));
            }
        }
        // A domain another namespace's provider verified first is its.
        let me = (
            idp.metadata.namespace.as_deref().unwrap_or_default(),
            idp.metadata.name.as_deref().unwrap_or_default(),
        );
        // Other providers' statuses of these domains, gathered once (the
        // store may hold thousands of providers).
        let statuses: Vec<(&str, &str, &DomainStatus)> = others
            .iter()
            .flat_map(|o| {
                let ns = o.metadata.namespace.as_deref().unwrap_or_default();
                let name = o.metadata.name.as_deref().unwrap_or_default();
                o.status
                    .iter()
                    .flat_map(|s| &s.domains)
                    .map(move |d| (ns, name, d))
            })
            .filter(|(_, _, d)| valid.contains(&d.domain))
            .collect();
        for d in &mut out {
            if let Some((owner, since)) =
                domains::owner_elsewhere(d, me, statuses.iter().copied(), now, GRACE)
            {
                *d = domains::claimed_elsewhere(d, &owner, since);
            }
        }
        out.sort_by_cached_key(|d| d.domain.to_ascii_lowercase());
        out
    }
}

/// When the next of `statuses` is due for a lookup (at least a second
/// from now); `None` when none will be. Domains waiting for the key are
/// tried again in ten seconds. A status still due after the pass was not
/// looked up in it (the DNS budget ran out, or no key or client ID for a
/// domain seen before): a minute, as for queued ones, not at once.
pub fn next_check(statuses: &[DomainStatus], now: Timestamp) -> Option<Duration> {
    statuses
        .iter()
        .filter_map(|s| {
            if s.reason == reasons::KEY_NOT_READY {
                return Some(Duration::from_secs(10));
            }
            // A pass that ran out of DNS time waits a minute: a provider
            // whose thousand domains never answer then holds a reconcile
            // slot 5 s in 65, not most of the time.
            if s.reason == reasons::QUEUED {
                return Some(Duration::from_secs(60));
            }
            let last = s.last_checked?;
            let at = last
                .checked_add(SignedDuration::try_from(domains::recheck_after(s)).ok()?)
                .ok()?;
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            Some(if wait.is_zero() {
                Duration::from_secs(60)
            } else {
                wait
            })
        })
        .min()
        .map(|d| d.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_check_is_the_soonest_due() {
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let st = |reason: &str, checked: Option<Timestamp>| DomainStatus {
            last_checked: checked,
            ..DomainStatus::unlooked("corp.test", states::PENDING, reason, "")
        };
        assert_eq!(next_check(&[], t0), None);
        // Refused names are never looked up.
        assert_eq!(next_check(&[st(reasons::FREE_MAIL, None)], t0), None);
        assert_eq!(
            next_check(&[st(reasons::QUEUED, None)], t0),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            next_check(
                &[st(reasons::QUEUED, None), st(reasons::KEY_NOT_READY, None)],
                t0
            ),
            Some(Duration::from_secs(10))
        );
        // A miss 10 s ago (failures 1): due 30 s after it.
        let miss = DomainStatus {
            failures: 1,
            ..st(
                reasons::RECORD_NOT_FOUND,
                Some(t0 - SignedDuration::from_secs(10)),
            )
        };
        assert_eq!(
            next_check(std::slice::from_ref(&miss), t0),
            Some(Duration::from_secs(20))
        );
        // Still due after the pass (not looked up in it): a minute, not a
        // requeue every second while the key or client ID is missing.
        let late = DomainStatus {
            last_checked: Some(t0 - SignedDuration::from_mins(5)),
            ..miss.clone()
        };
        assert_eq!(next_check(&[late], t0), Some(Duration::from_secs(60)));
        // Due in half a second: a second from now, never zero.
        let soon = DomainStatus {
            last_checked: Some(t0 - SignedDuration::from_millis(29_500)),
            ..miss
        };
        assert_eq!(next_check(&[soon], t0), Some(Duration::from_secs(1)));
    }
}
