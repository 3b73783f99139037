//! Statuses as the controller's watch caches keep them: deflated JSON.
//!
//! The controller reads a cached object's status only to compare what it
//! computed with what is written (and to keep condition transition
//! times), so the cache needs it whole but not spread over a score of
//! allocations: as a struct, an IdentityProvider's status (eight
//! conditions, each four strings, and the discovered endpoints) was most
//! of the 3.6 KB each cached provider cost (bench/controller-memory.sh).
//! Deflated, the same status is a single allocation of a few hundred
//! bytes. The packed form is never serialized: the API never sees it.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use super::{IdentityProviderStatus, policy::AccessPolicyStatus};

/// `value` as deflated JSON.
pub(crate) fn deflate<T: Serialize>(value: &T) -> Box<[u8]> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    serde_json::to_writer(&mut enc, value).expect("a status serializes to memory");
    enc.finish().expect("writing to memory").into_boxed_slice()
}

/// What [`deflate`] made; `None` (logged) if it does not read back, which
/// only a bug could cause (a status then reads as none: the controller
/// writes it anew).
pub(crate) fn inflate<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_reader(flate2::read::DeflateDecoder::new(bytes))
        .map_err(|e| tracing::error!(error = %e, "deflated JSON kept in memory does not read back"))
        .ok()
}

/// A status that can be kept packed in a cache.
pub trait Packable: Sized + Clone + Default + Serialize + DeserializeOwned {
    fn packed_part(&self) -> Option<&[u8]>;

    /// Packs this status in place (a packed one stays as it is).
    fn pack(&mut self);

    /// The status as written: itself when not packed.
    fn unpacked(&self) -> Cow<'_, Self> {
        match self.packed_part() {
            None => Cow::Borrowed(self),
            Some(bytes) => Cow::Owned(inflate(bytes).unwrap_or_default()),
        }
    }
}

impl Packable for IdentityProviderStatus {
    fn packed_part(&self) -> Option<&[u8]> {
        self.packed.as_deref()
    }

    /// Everything but `domains`, which the controller reads across all
    /// providers (who verified a domain first) and which is empty for most.
    fn pack(&mut self) {
        if self.packed.is_some() {
            return;
        }
        let domains = std::mem::take(&mut self.domains);
        let packed = deflate(&*self);
        *self = Self {
            packed: Some(packed),
            domains,
            ..Self::default()
        };
    }

    fn unpacked(&self) -> Cow<'_, Self> {
        match self.packed.as_deref() {
            None => Cow::Borrowed(self),
            Some(bytes) => {
                let mut full: Self = inflate(bytes).unwrap_or_default();
                full.domains = self.domains.clone();
                Cow::Owned(full)
            }
        }
    }
}

impl Packable for AccessPolicyStatus {
    fn packed_part(&self) -> Option<&[u8]> {
        self.packed.as_deref()
    }

    fn pack(&mut self) {
        if self.packed.is_none() {
            *self = Self {
                packed: Some(deflate(&*self)),
                ..Self::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, DiscoveredStatus};

    fn condition(type_: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Fine".into(),
            message: message.into(),
            observed_generation: Some(4),
            last_transition_time: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        }
    }

    /// A packed status reads back exactly as it was, domains included,
    /// and takes less room than its JSON; packing twice changes nothing.
    #[test]
    fn packed_statuses_read_back_whole() {
        let full = IdentityProviderStatus {
            phase: Some("Ready".into()),
            redirect_uri: Some("https://sso.example.com/oauth/callback/team/corp".into()),
            discovered: Some(Box::new(DiscoveredStatus {
                issuer: "https://idp.example.com".into(),
                token_endpoint: Some("https://idp.example.com/token".into()),
                jwks_key_count: 2,
                ..Default::default()
            })),
            observed_generation: Some(4),
            conditions: ["ConfigValid", "DiscoverySucceeded", "JWKSValid", "Ready"]
                .iter()
                .map(|t| condition(t, "the provider answered as it should, every key usable"))
                .collect(),
            domains: vec![crate::domains::DomainStatus::unlooked(
                "example.com",
                "Pending",
                "NotFound",
                "no record yet",
            )],
            packed: None,
        };
        let mut cached = full.clone();
        cached.pack();
        assert!(cached.conditions.is_empty() && cached.discovered.is_none());
        assert_eq!(
            cached.domains, full.domains,
            "domains stay readable as they are"
        );
        let bytes = cached.packed.as_ref().unwrap().len();
        assert!(
            bytes < serde_json::to_vec(&full).unwrap().len() / 2,
            "{bytes} bytes"
        );
        assert_eq!(cached.unpacked().as_ref(), &full);
        let again = cached.clone();
        cached.pack();
        assert_eq!(cached, again);
        assert!(matches!(full.unpacked(), Cow::Borrowed(_)));

        let policy = AccessPolicyStatus {
            auth_url: Some("http://sso-broker.sso.svc/oauth/auth/team/app".into()),
            observed_generation: Some(2),
            conditions: vec![condition("Accepted", "ok")],
            packed: None,
        };
        let mut p = policy.clone();
        p.pack();
        assert!(p.auth_url.is_none());
        assert_eq!(p.unpacked().as_ref(), &policy);
    }

    /// Bytes that are not a packed status read back as no status (the
    /// controller then writes the status anew), not a panic.
    #[test]
    fn a_damaged_pack_reads_as_no_status() {
        let s = AccessPolicyStatus {
            packed: Some(vec![1, 2, 3].into_boxed_slice()),
            ..Default::default()
        };
        assert_eq!(s.unpacked().as_ref(), &AccessPolicyStatus::default());
    }
}
