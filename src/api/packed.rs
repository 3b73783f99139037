//! Statuses as the controller's watch caches keep them: a digest and
//! deflated JSON.
//!
//! The controller reads a cached object's status to compare what it
//! computed with what is written (a digest does that), to keep condition
//! transition times and to announce changes (type, status, reason), and
//! to report the endpoints in use while serving a last known good entry.
//! As a struct, an IdentityProvider's status (eight conditions, each four
//! strings, and the discovered endpoints) was most of the 3.6 KB each
//! cached provider cost (bench/controller-memory.sh). Packed, it is a
//! digest and one allocation of a few hundred bytes. The packed form is
//! never serialized: the API never sees it.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use super::{IdentityProviderStatus, policy::AccessPolicyStatus};

/// What every value the controller keeps deflated is compressed against:
/// JSON of each kind it keeps (a provider's and a policy's spec, status
/// and broker entry), as the types serialize it. These values are a few
/// hundred bytes each, too small for deflate to find much to repeat
/// within one; most of each (field names, condition types and reasons,
/// endpoint paths) is in here instead. A process-local format: nothing
/// deflated with it is written anywhere.
const DICTIONARY: &[u8] = include_bytes!("deflate-dictionary.jsonl");

/// Reused per thread: a deflate state is some hundreds of kilobytes,
/// allocated and cleared for every value otherwise.
struct Codec {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
}

thread_local! {
    static CODEC: std::cell::RefCell<Codec> = std::cell::RefCell::new(Codec {
        compress: flate2::Compress::new(flate2::Compression::default(), false),
        decompress: flate2::Decompress::new(false),
    });
}

/// `value` as deflated JSON.
pub(crate) fn deflate<T: Serialize>(value: &T) -> Box<[u8]> {
    let json = serde_json::to_vec(value).expect("a status serializes to memory");
    CODEC.with_borrow_mut(|c| {
        let z = &mut c.compress;
        z.reset();
        z.set_dictionary(DICTIONARY)
            .expect("a deflate dictionary is accepted before any input");
        let mut out = Vec::with_capacity(json.len() / 2 + 64);
        loop {
            let done = z.total_in() as usize;
            let status = z
                .compress_vec(&json[done..], &mut out, flate2::FlushCompress::Finish)
                .expect("deflating to memory");
            if status == flate2::Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        out.into_boxed_slice()
    })
}

/// The JSON [`deflate`] made, inflated.
pub(crate) fn inflate_bytes(bytes: &[u8]) -> Result<Vec<u8>, String> {
    CODEC.with_borrow_mut(|c| {
        let z = &mut c.decompress;
        z.reset(false);
        z.set_dictionary(DICTIONARY).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(bytes.len() * 4 + 64);
        loop {
            let done = z.total_in() as usize;
            let before = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(&bytes[done..], &mut out, flate2::FlushDecompress::Finish)
                .map_err(|e| e.to_string())?;
            match status {
                flate2::Status::StreamEnd => return Ok(out),
                // No progress with room to spare: the stream is cut short.
                _ if (z.total_in(), z.total_out()) == before && out.len() < out.capacity() => {
                    return Err("deflated data ends early".into());
                }
                _ => out.reserve(out.capacity().max(256)),
            }
        }
    })
}

/// What [`deflate`] made; `None` (logged) if it does not read back, which
/// only a bug could cause (a cached status then reads as one without
/// conditions: transition times restart, their Events repeat).
pub(crate) fn inflate<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    inflate_bytes(bytes)
        .and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string()))
        .map_err(|e| tracing::error!(error = %e, "deflated JSON kept in memory does not read back"))
        .ok()
}

/// A digest of `value` that is the same for equal values within this
/// process (fixed keys): what the controller compares instead of keeping
/// a copy.
pub(crate) fn hash_of<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::BuildHasher as _;
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(value)
}

/// A status as the cache keeps it: a digest of the whole (what a write
/// would be compared with) and the rest deflated, condition messages left
/// out (the digest covers them; nothing else reads old messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    digest: u64,
    bytes: Box<[u8]>,
}

/// Conditions as compared for a write: transition times zeroed, sorted by
/// type (so time alone, or order, never causes a write).
pub fn strip_condition_times(conditions: &mut [super::Condition]) {
    for c in conditions.iter_mut() {
        c.last_transition_time = jiff::Timestamp::UNIX_EPOCH;
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// A status that can be kept packed in a cache.
pub trait Packable: Sized + Clone + Default + PartialEq + Serialize + DeserializeOwned {
    /// This status as compared for a write: without times (of a status
    /// not packed).
    fn comparable(&self) -> Self;

    fn packed(&self) -> Option<&Packed>;

    fn set_packed(&mut self, packed: Packed);

    /// A digest of [`Self::comparable`].
    fn digest(&self) -> u64 {
        hash_of(&serde_json::to_vec(&self.comparable()).expect("a status serializes"))
    }

    /// Packs this status in place (a packed one stays as it is).
    fn pack(&mut self) {
        if self.packed().is_some() {
            return;
        }
        let digest = self.digest();
        let mut rest = std::mem::take(self);
        let kept = rest.keep_unpacked();
        rest.drop_messages();
        *self = kept;
        self.set_packed(Packed {
            digest,
            bytes: deflate(&rest),
        });
    }

    /// Takes out what stays unpacked in the cache (nothing by default).
    fn keep_unpacked(&mut self) -> Self {
        Self::default()
    }

    fn conditions_mut(&mut self) -> &mut Vec<super::Condition>;

    /// Clears the condition messages (kept only as part of the digest).
    fn drop_messages(&mut self) {
        for c in self.conditions_mut() {
            c.message = String::new();
        }
    }

    /// The status as written, but for condition messages when it was
    /// packed; itself when not.
    fn unpacked(&self) -> Cow<'_, Self> {
        let Some(p) = self.packed() else {
            return Cow::Borrowed(self);
        };
        let mut full: Self = inflate(&p.bytes).unwrap_or_default();
        full.restore_unpacked(self);
        Cow::Owned(full)
    }

    /// Puts back what [`Self::keep_unpacked`] kept, from the cached form.
    fn restore_unpacked(&mut self, _cached: &Self) {}

    /// Whether writing `new` over this status (cached packed, or as read)
    /// changes anything but times.
    fn differs(&self, new: &Self) -> bool {
        match self.packed() {
            Some(p) => p.digest != new.digest(),
            None => self.comparable() != new.comparable(),
        }
    }
}

impl Packable for IdentityProviderStatus {
    fn comparable(&self) -> Self {
        let mut s = self.clone();
        if let Some(d) = s.discovered.as_mut() {
            d.last_checked = None;
        }
        strip_condition_times(&mut s.conditions);
        s
    }

    fn packed(&self) -> Option<&Packed> {
        self.packed.as_ref()
    }

    fn set_packed(&mut self, packed: Packed) {
        self.packed = Some(packed);
    }

    /// `domains`, which the controller reads across all providers (who
    /// verified a domain first) and which is empty for most.
    fn keep_unpacked(&mut self) -> Self {
        Self {
            domains: std::mem::take(&mut self.domains),
            ..Self::default()
        }
    }

    fn conditions_mut(&mut self) -> &mut Vec<super::Condition> {
        &mut self.conditions
    }

    fn restore_unpacked(&mut self, cached: &Self) {
        self.domains = cached.domains.clone();
    }
}

impl Packable for AccessPolicyStatus {
    fn comparable(&self) -> Self {
        let mut s = self.clone();
        strip_condition_times(&mut s.conditions);
        s
    }

    fn packed(&self) -> Option<&Packed> {
        self.packed.as_ref()
    }

    fn set_packed(&mut self, packed: Packed) {
        self.packed = Some(packed);
    }

    fn conditions_mut(&mut self) -> &mut Vec<super::Condition> {
        &mut self.conditions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, DiscoveredStatus};

    /// The dictionary is JSON as the types serialize it now: each line
    /// reads as its kind and writes back the same (a field renamed or
    /// added shows here, and the line is then refreshed).
    #[test]
    fn the_dictionary_is_what_the_types_write() {
        fn same<T: Serialize + DeserializeOwned>(line: &str) {
            let v: T = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), line);
        }
        let text = std::str::from_utf8(DICTIONARY).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6);
        same::<crate::api::policy::AccessPolicySpec>(lines[0]);
        same::<crate::config::ProgrammedPolicy>(lines[1]);
        same::<crate::api::IdentityProviderSpec>(lines[2]);
        same::<crate::config::ProgrammedProvider>(lines[3]);
        same::<AccessPolicyStatus>(lines[4]);
        same::<IdentityProviderStatus>(lines[5]);
    }

    /// Each kind of value reads back, and deflated against the dictionary
    /// takes a fraction of what plain deflate makes of it.
    #[test]
    fn deflated_against_the_dictionary_reads_back_smaller() {
        fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(line: &str) {
            use std::io::Write as _;
            // Another object of the kind: other names, the same shape.
            let other = line.replace("team-a", "payments").replace("corp", "okta");
            let value: T = serde_json::from_str(&other).unwrap();
            let packed = deflate(&value);
            assert_eq!(inflate::<T>(&packed).unwrap(), value);
            let mut plain =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            plain
                .write_all(&serde_json::to_vec(&value).unwrap())
                .unwrap();
            let plain = plain.finish().unwrap();
            assert!(
                packed.len() * 3 < plain.len(),
                "{} bytes with the dictionary, {} without: {other}",
                packed.len(),
                plain.len()
            );
        }
        let text = std::str::from_utf8(DICTIONARY).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        check::<crate::api::policy::AccessPolicySpec>(lines[0]);
        check::<crate::config::ProgrammedPolicy>(lines[1]);
        check::<crate::api::IdentityProviderSpec>(lines[2]);
        check::<crate::config::ProgrammedProvider>(lines[3]);
        check::<AccessPolicyStatus>(lines[4]);
        check::<IdentityProviderStatus>(lines[5]);
    }

    /// Damaged or cut short, deflated bytes are an error, not a panic or
    /// a loop.
    #[test]
    fn damaged_deflate_is_an_error() {
        let packed = deflate(&serde_json::json!({"issuer": "https://idp.example.com"}));
        assert!(inflate_bytes(&packed[..packed.len() / 2]).is_err());
        assert!(inflate_bytes(&[]).is_err());
        assert!(inflate_bytes(&[0xff; 40]).is_err());
        assert!(
            inflate::<serde_json::Value>(&[0x03, 0x00]).is_none(),
            "empty stream, no JSON"
        );
    }

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

    /// A packed status reads back as it was but for condition messages,
    /// domains included, and takes less room than its JSON; packing twice
    /// changes nothing; a write is needed exactly when something but time
    /// changed, a message included.
    #[test]
    fn packed_statuses_read_back_and_compare_by_digest() {
        let full = IdentityProviderStatus {
            phase: Some("Ready".into()),
            redirect_uri: Some("https://sso.example.com/oauth/callback/team/corp".into()),
            discovered: Some(Box::new(DiscoveredStatus {
                issuer: "https://idp.example.com".into(),
                token_endpoint: Some("https://idp.example.com/token".into()),
                jwks_key_count: 2,
                last_checked: Some(jiff::Timestamp::from_second(1_700_000_100).unwrap()),
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
        let bytes = cached.packed.as_ref().unwrap().bytes.len();
        assert!(
            bytes < serde_json::to_vec(&full).unwrap().len() / 3,
            "{bytes} bytes"
        );
        let mut without_messages = full.clone();
        without_messages.drop_messages();
        assert_eq!(cached.unpacked().as_ref(), &without_messages);
        let again = cached.clone();
        cached.pack();
        assert_eq!(cached, again);
        assert!(matches!(full.unpacked(), Cow::Borrowed(_)));

        // Compared with what is cached: time alone is no change...
        let mut later = full.clone();
        for c in &mut later.conditions {
            c.last_transition_time = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        }
        later.discovered.as_mut().unwrap().last_checked = None;
        later.conditions.reverse();
        assert!(!cached.differs(&later));
        assert!(!full.differs(&later));
        // ...a message is, though the cache does not keep it.
        later.conditions[0].message = "now something else".into();
        assert!(cached.differs(&later));
        assert!(full.differs(&later));

        let policy = AccessPolicyStatus {
            auth_url: Some("http://sso-broker.sso.svc/oauth/auth/team/app".into()),
            observed_generation: Some(2),
            conditions: vec![condition("Accepted", "ok")],
            packed: None,
        };
        let mut p = policy.clone();
        p.pack();
        assert!(p.auth_url.is_none());
        assert_eq!(p.unpacked().auth_url, policy.auth_url);
        assert!(!p.differs(&policy));
    }

    /// Bytes that are not a packed status read back as an empty status,
    /// not a panic.
    #[test]
    fn a_damaged_pack_reads_as_an_empty_status() {
        let s = AccessPolicyStatus {
            packed: Some(Packed {
                digest: 1,
                bytes: vec![1, 2, 3].into_boxed_slice(),
            }),
            ..Default::default()
        };
        assert_eq!(s.unpacked().as_ref(), &AccessPolicyStatus::default());
    }
}
