//! Verified email domains: which domains a provider may speak for, the DNS
//! TXT record that proves it, and the verification state machine. Pure:
//! the DNS lookups are in [`dns`], the clock is an argument.
//!
//! A provider lists its domains; for each the controller publishes a TXT
//! record to create at `_sso-operator.<domain>`, whose value is an
//! HMAC-SHA256, under a key only the controller holds, of the provider's
//! namespace, name, issuer and client ID and of the domain. So the value
//! proves that whoever controls the domain's DNS chose this provider: it
//! cannot be computed ahead by anyone (the key), cannot be copied from
//! another provider's status to vouch for a third (it names the provider
//! it is for), and changes when the issuer or client ID changes (a record
//! made for the old client says nothing about the new one).

pub mod dns;

use std::{collections::BTreeSet, time::Duration};

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label under a domain that holds its verification record.
pub const RECORD_LABEL: &str = "_sso-operator";
/// What every record value starts with.
pub const VALUE_PREFIX: &str = "sso-operator-domain-verification=";

/// Domains no organisation owns: anyone may hold an address there, so no
/// provider may speak for them. (Public suffixes are refused through the
/// public suffix list.)
const FREE_MAIL: &[&str] = &[
    "126.com",
    "163.com",
    "aol.com",
    "fastmail.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hey.com",
    "hotmail.com",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "pm.me",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "tutanota.com",
    "web.de",
    "yahoo.com",
    "yandex.com",
    "yandex.ru",
    "ymail.com",
    "zoho.com",
];

/// Why a listed domain is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(
        "{0:?} is not an ASCII domain name: write an internationalized domain in its xn-- (punycode) form"
    )]
    NotAscii(String),
    #[error(
        "{0:?} is not a domain name (labels of letters, digits and inner hyphens, at least two, 253 characters at most)"
    )]
    Invalid(String),
    #[error(
        "{0:?} is a public suffix: anyone can register names under it, so no provider can speak for all of it"
    )]
    PublicSuffix(String),
    #[error(
        "{0:?} is a free mail domain: its addresses belong to anyone who signs up, so no provider can speak for it"
    )]
    FreeMail(String),
}

/// `domain` in canonical form (lower case, no trailing dot), or why no
/// provider may list it.
pub fn check_domain(domain: &str) -> Result<String, DomainError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !d.is_ascii() {
        return Err(DomainError::NotAscii(domain.to_string()));
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels: Vec<&str> = d.split('.').collect();
    if d.len() > 253 || !labels.iter().all(|l| label_ok(l)) {
        return Err(DomainError::Invalid(domain.to_string()));
    }
    // The list's ICANN and private sections both: `com`, `co.uk`,
    // `github.io`.
    if psl::suffix(d.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == d.as_bytes()) {
        return Err(DomainError::PublicSuffix(d));
    }
    if labels.len() < 2
        || labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(DomainError::Invalid(domain.to_string()));
    }
    let registrable = psl::domain(d.as_bytes()).map_or(d.as_bytes(), |r| r.as_bytes());
    if FREE_MAIL.iter().any(|f| f.as_bytes() == registrable) {
        return Err(DomainError::FreeMail(d));
    }
    Ok(d)
}

/// The domain of an email address as the controller writes domains: lower
/// case, no trailing dot; `None` without an `@`.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Whose record it is: what the record value is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
}

/// The TXT record that verifies `domain` for `owner`: its name and value.
pub fn record(key: &[u8], owner: Owner<'_>, domain: &str) -> (String, String) {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&mac);
    // Length-prefixed parts: no two different tuples give the same input.
    for part in [
        "v1",
        owner.namespace,
        owner.name,
        owner.issuer,
        owner.client_id,
        domain,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let tag = ctx.sign();
    let value = format!(
        "{VALUE_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    );
    (format!("{RECORD_LABEL}.{domain}"), value)
}

/// The state of one domain, as shown in the provider's status.
pub mod states {
    pub const PENDING: &str = "Pending";
    pub const VERIFIED: &str = "Verified";
    pub const ERROR: &str = "Error";
}

/// Why a domain is in its state.
pub mod reasons {
    pub const VERIFIED: &str = "Verified";
    pub const RECORD_NOT_FOUND: &str = "RecordNotFound";
    pub const RECORD_MISMATCH: &str = "RecordMismatch";
    pub const DOMAIN_NOT_FOUND: &str = "DomainNotFound";
    pub const LOOKUP_TIMEOUT: &str = "LookupTimeout";
    pub const LOOKUP_FAILED: &str = "LookupFailed";
    /// Verified before, failing now, within the grace period.
    pub const RECHECK_FAILING: &str = "RecheckFailing";
    pub const INVALID_DOMAIN: &str = "InvalidDomain";
    pub const PUBLIC_SUFFIX: &str = "PublicSuffix";
    pub const FREE_MAIL: &str = "FreeMail";
    pub const KEY_NOT_READY: &str = "KeyNotReady";
    /// Not looked up yet: the reconcile's time for DNS ran out first.
    pub const QUEUED: &str = "Queued";
    /// Verified by another namespace's provider first.
    pub const CLAIMED_ELSEWHERE: &str = "ClaimedElsewhere";
    /// The DomainsVerified condition's, while some are pending.
    pub const DOMAINS_PENDING: &str = "DomainsPending";
    pub const ALL_VERIFIED: &str = "AllVerified";
}

impl DomainError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAscii(_) | Self::Invalid(_) => reasons::INVALID_DOMAIN,
            Self::PublicSuffix(_) => reasons::PUBLIC_SUFFIX,
            Self::FreeMail(_) => reasons::FREE_MAIL,
        }
    }
}

impl DomainStatus {
    /// The end of the grace period after the record was last seen, while
    /// `now` is within it; `None` once it is over (or never seen).
    pub fn verified_until(&self, now: Timestamp, grace: SignedDuration) -> Option<Timestamp> {
        self.last_verified
            .and_then(|t| t.checked_add(grace).ok())
            .filter(|until| now < *until)
    }

    /// A domain never looked up: in `state` for `reason`, no record yet.
    pub fn unlooked(domain: &str, state: &str, reason: &str, message: &str) -> Self {
        Self {
            domain: domain.to_string(),
            state: state.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            record_name: String::new(),
            record_value: String::new(),
            last_checked: None,
            last_verified: None,
            verified_since: None,
            failures: 0,
        }
    }
}

/// A provider's listed domains: the accepted ones in canonical form (each
/// once, sorted), and the refused ones as their statuses (each listed
/// string once: status.domains is a map by domain, and a duplicate key
/// would fail every write).
pub fn partition(listed: &[String]) -> (BTreeSet<String>, Vec<DomainStatus>) {
    let mut valid = BTreeSet::new();
    let mut refused_ones: Vec<DomainStatus> = Vec::new();
    for l in listed {
        match check_domain(l) {
            Ok(d) => {
                valid.insert(d);
            }
            Err(e) if !refused_ones.iter().any(|d| d.domain == *l) => {
                refused_ones.push(refused(l, &e))
            }
            Err(_) => {}
        }
    }
    (valid, refused_ones)
}

/// A listed domain no provider may speak for, as its status.
pub fn refused(listed: &str, e: &DomainError) -> DomainStatus {
    DomainStatus::unlooked(listed, states::ERROR, e.reason(), &e.to_string())
}

/// Whether a provider of another namespace has `mine.domain`: verified
/// before this one was (or at all, when this one is not verified), ties
/// going to the first by `namespace/name`. `others` are every provider's
/// `(namespace, name, domain status)`. Returns that provider's
/// `namespace/name` and since when it has the domain.
pub fn owner_elsewhere<'a>(
    mine: &DomainStatus,
    me: (&str, &str),
    others: impl IntoIterator<Item = (&'a str, &'a str, &'a DomainStatus)>,
    now: Timestamp,
    grace: SignedDuration,
) -> Option<(String, Timestamp)> {
    let rank = |since: Option<Timestamp>, ns: &str, name: &str| {
        (since.unwrap_or(Timestamp::MAX), format!("{ns}/{name}"))
    };
    let verified = mine.state == states::VERIFIED;
    let my_rank = rank(mine.verified_since.filter(|_| verified), me.0, me.1);
    others
        .into_iter()
        .filter(|(ns, _, d)| {
            // A status nobody has refreshed within the grace period (its
            // provider stuck, or its status writes failing) holds nothing.
            *ns != me.0
                && d.domain == mine.domain
                && d.state == states::VERIFIED
                && d.verified_until(now, grace).is_some()
        })
        .filter_map(|(ns, name, d)| {
            let since = d.verified_since?;
            let r = rank(Some(since), ns, name);
            (r < my_rank).then_some((r, since))
        })
        .min()
        .map(|((_, key), since)| (key, since))
}

/// A domain's last status, kept while it cannot be looked up (no key, no
/// client ID): a Verified one only for the grace period after its record
/// was last seen, Pending (`reason`, `message`) after it. Nothing stays
/// verified because its provider stopped being checkable.
pub fn unchecked(
    prev: &DomainStatus,
    now: Timestamp,
    grace: SignedDuration,
    reason: &str,
    message: &str,
) -> DomainStatus {
    if prev.state != states::VERIFIED || prev.verified_until(now, grace).is_some() {
        return prev.clone();
    }
    DomainStatus {
        state: states::PENDING.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        verified_since: None,
        ..prev.clone()
    }
}

/// `mine` taken by the provider `owner` of another namespace (see
/// [`owner_elsewhere`]): Error, ClaimedElsewhere. The lookup state is kept
/// (the record, when it was seen): should the owner let go, the next
/// check decides afresh.
pub fn claimed_elsewhere(mine: &DomainStatus, owner: &str, since: Timestamp) -> DomainStatus {
    let ns = owner.split_once('/').map_or(owner, |(ns, _)| ns);
    DomainStatus {
        state: states::ERROR.to_string(),
        reason: reasons::CLAIMED_ELSEWHERE.to_string(),
        message: format!(
            "{} is verified by provider {owner} of namespace {ns} since {since}, before this one: an email domain belongs to one namespace (remove it here, or there)",
            mine.domain
        ),
        verified_since: None,
        ..mine.clone()
    }
}

/// The DomainsVerified condition over a provider's domains: True when all
/// are verified; else the first Error's reason, or DomainsPending.
pub fn summary(domains: &[DomainStatus]) -> (bool, &str, String) {
    let verified = domains
        .iter()
        .filter(|d| d.state == states::VERIFIED)
        .count();
    if verified == domains.len() {
        return (
            true,
            reasons::ALL_VERIFIED,
            format!("{verified} of {verified} domain(s) verified"),
        );
    }
    let message = format!(
        "{verified} of {} domain(s) verified; status.domains says what each needs",
        domains.len()
    );
    match domains.iter().find(|d| d.state == states::ERROR) {
        Some(e) => (
            false,
            e.reason.as_str(),
            format!("{message} ({}: {})", e.domain, e.message),
        ),
        None => (false, reasons::DOMAINS_PENDING, message),
    }
}

/// One domain's verification, as kept in the provider's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainStatus {
    /// The domain, as listed in spec.domains (lower case once accepted).
    pub domain: String,
    /// Pending, Verified or Error.
    pub state: String,
    /// Why, in one word: Verified, RecordNotFound, RecordMismatch,
    /// DomainNotFound, LookupTimeout, LookupFailed, RecheckFailing;
    /// InvalidDomain, PublicSuffix, FreeMail for a domain refused; KeyNotReady
    /// before the controller has its verification key; ClaimedElsewhere
    /// when another namespace's provider verified it first.
    pub reason: String,
    /// What was found, and what to do about it.
    pub message: String,
    /// The TXT record to create: its name ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub record_name: String,
    /// ... and its value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub record_value: String,
    /// When the controller last looked the record up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_checked: Option<Timestamp>,
    /// When the record was last seen with its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_verified: Option<Timestamp>,
    /// Since when the domain is verified without a break (grace periods
    /// included): of two namespaces' providers verifying one domain, the
    /// earlier has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub verified_since: Option<Timestamp>,
    /// Lookups in a row that did not find the record (for the backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    // As int32: a `minimum: 0` in the CRD comes out of Helm's template
    // rendering as 0.0, which the chart test (rightly) calls a change.
    #[schemars(with = "i32")]
    pub failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one lookup of a domain's record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The TXT values at the record's name (possibly none of them ours).
    Values(Vec<String>),
    /// The domain exists; the record's name has no TXT record.
    NoRecord,
    /// The domain does not exist (NXDOMAIN).
    NoDomain,
    /// The lookup itself failed.
    Failed { timeout: bool, detail: String },
}

/// How often a domain is looked up again: a verified one every ten
/// minutes; one not (yet) found after 30 s, doubling up to ten minutes.
pub fn recheck_after(s: &DomainStatus) -> Duration {
    const MAX: Duration = Duration::from_secs(600);
    if s.failures == 0 && s.state == states::VERIFIED || s.reason == reasons::CLAIMED_ELSEWHERE {
        return MAX;
    }
    Duration::from_secs(30)
        .saturating_mul(1 << s.failures.saturating_sub(1).min(5))
        .min(MAX)
}

/// Whether `domain` must be looked up now: never checked, its record
/// changed (a new issuer or client ID), or its recheck is due.
pub fn due(prev: Option<&DomainStatus>, record_value: &str, now: Timestamp) -> bool {
    let Some(p) = prev.filter(|p| p.record_value == record_value) else {
        return true;
    };
    let Some(last) = p.last_checked else {
        return true;
    };
    let after = SignedDuration::try_from(recheck_after(p)).unwrap_or(SignedDuration::MAX);
    now >= last.saturating_add(after).unwrap_or(Timestamp::MAX)
}

/// The status a domain moves to after `lookup`, from `prev` (its status
/// before, if any). A domain verified before keeps Verified for `grace`
/// after the record was last seen, whatever the lookups say meanwhile (a
/// DNS outage or a botched zone edit must not lock its users out at once);
/// a new record value starts over at Pending, the old record proving
/// nothing about the new issuer or client.
pub fn next(
    prev: Option<&DomainStatus>,
    domain: &str,
    (record_name, record_value): (&str, &str),
    lookup: &Lookup,
    now: Timestamp,
    grace: SignedDuration,
) -> DomainStatus {
    let prev = prev.filter(|p| p.record_value == record_value);
    let status = |state: &str, reason: &str, message: String| DomainStatus {
        domain: domain.to_string(),
        state: state.to_string(),
        reason: reason.to_string(),
        message,
        record_name: record_name.to_string(),
        record_value: record_value.to_string(),
        last_checked: Some(now),
        last_verified: prev.and_then(|p| p.last_verified),
        verified_since: None,
        failures: prev.map_or(0, |p| p.failures).saturating_add(1),
    };
    let since = prev
        .filter(|p| p.state == states::VERIFIED)
        .and_then(|p| p.verified_since);
    let (state, reason, message) = match lookup {
        Lookup::Values(v) if v.iter().any(|x| x == record_value) => {
            return DomainStatus {
                last_verified: Some(now),
                verified_since: since.or(Some(now)),
                failures: 0,
                ..status(
                    states::VERIFIED,
                    reasons::VERIFIED,
                    format!("TXT record {record_name} found with the expected value"),
                )
            };
        }
        Lookup::Values(v) => (
            states::PENDING,
            reasons::RECORD_MISMATCH,
            format!(
                "TXT record {record_name} has {} value(s), none the one in recordValue (create it with exactly that value)",
                v.len()
            ),
        ),
        Lookup::NoRecord => (
            states::PENDING,
            reasons::RECORD_NOT_FOUND,
            format!("no TXT record {record_name} yet: create it with the value in recordValue"),
        ),
        Lookup::NoDomain => (
            states::ERROR,
            reasons::DOMAIN_NOT_FOUND,
            format!("{domain} does not exist in DNS (NXDOMAIN)"),
        ),
        Lookup::Failed { timeout, detail } => (
            states::ERROR,
            if *timeout {
                reasons::LOOKUP_TIMEOUT
            } else {
                reasons::LOOKUP_FAILED
            },
            format!("looking up {record_name} failed: {detail}"),
        ),
    };
    match prev.and_then(|p| p.verified_until(now, grace)) {
        Some(until) => DomainStatus {
            verified_since: since,
            ..status(
                states::VERIFIED,
                reasons::RECHECK_FAILING,
                format!("{message}; stays verified until {until} unless the record is seen again"),
            )
        },
        None => status(state, reason, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_refused_with_the_reason() {
        assert_eq!(
            check_domain("Corp.Example.COM.").unwrap(),
            "corp.example.com"
        );
        assert_eq!(check_domain("corp.test").unwrap(), "corp.test");
        for (d, want) in [
            ("com", "PublicSuffix"),
            ("co.uk", "PublicSuffix"),
            ("github.io", "PublicSuffix"),
            ("gmail.com", "FreeMail"),
            ("mail.yahoo.com", "FreeMail"),
            ("bücher.example", "NotAscii"),
            ("corp", "Invalid"),
            ("-corp.com", "Invalid"),
            ("corp_.com", "Invalid"),
            ("corp..com", "Invalid"),
            ("10.0.0.1", "Invalid"),
            ("", "Invalid"),
        ] {
            let e = check_domain(d).expect_err(d);
            assert!(format!("{e:?}").starts_with(want), "{d}: {e:?}");
        }
        assert!(check_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    fn owner() -> Owner<'static> {
        Owner {
            namespace: "corp",
            name: "okta",
            issuer: "https://corp.okta.com",
            client_id: "abc",
        }
    }

    #[test]
    fn the_record_is_bound_to_the_key_the_provider_and_the_domain() {
        let (name, value) = record(b"k1", owner(), "corp.com");
        assert_eq!(name, "_sso-operator.corp.com");
        assert!(value.starts_with(VALUE_PREFIX));
        assert_eq!(value, record(b"k1", owner(), "corp.com").1);
        let differs = |key: &[u8], o: Owner<'_>, d| assert_ne!(value, record(key, o, d).1);
        differs(b"k2", owner(), "corp.com");
        differs(b"k1", owner(), "corp.org");
        differs(
            b"k1",
            Owner {
                namespace: "other",
                ..owner()
            },
            "corp.com",
        );
        differs(
            b"k1",
            Owner {
                name: "okta2",
                ..owner()
            },
            "corp.com",
        );
        differs(
            b"k1",
            Owner {
                issuer: "https://evil",
                ..owner()
            },
            "corp.com",
        );
        differs(
            b"k1",
            Owner {
                client_id: "abd",
                ..owner()
            },
            "corp.com",
        );
        // Parts cannot run into each other.
        differs(
            b"k1",
            Owner {
                namespace: "cor",
                name: "pokta",
                ..owner()
            },
            "corp.com",
        );
    }

    const GRACE: SignedDuration = SignedDuration::from_hours(1);

    fn step(prev: Option<&DomainStatus>, value: &str, l: Lookup, now: Timestamp) -> DomainStatus {
        next(
            prev,
            "corp.com",
            ("_sso-operator.corp.com", value),
            &l,
            now,
            GRACE,
        )
    }

    #[test]
    fn states_and_transitions() {
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let at = |mins: i64| t0 + SignedDuration::from_mins(mins);
        let pending = step(None, "v", Lookup::NoRecord, t0);
        assert_eq!(
            (pending.state.as_str(), pending.reason.as_str()),
            ("Pending", "RecordNotFound")
        );
        assert_eq!(pending.failures, 1);
        let wrong = step(Some(&pending), "v", Lookup::Values(vec!["x".into()]), at(1));
        assert_eq!(
            (wrong.state.as_str(), wrong.reason.as_str()),
            ("Pending", "RecordMismatch")
        );
        assert_eq!(wrong.failures, 2);
        let nx = step(None, "v", Lookup::NoDomain, t0);
        assert_eq!(
            (nx.state.as_str(), nx.reason.as_str()),
            ("Error", "DomainNotFound")
        );
        let slow = step(
            None,
            "v",
            Lookup::Failed {
                timeout: true,
                detail: "timed out".into(),
            },
            t0,
        );
        assert_eq!(
            (slow.state.as_str(), slow.reason.as_str()),
            ("Error", "LookupTimeout")
        );

        let ok = step(
            Some(&wrong),
            "v",
            Lookup::Values(vec!["x".into(), "v".into()]),
            at(2),
        );
        assert_eq!(
            (ok.state.as_str(), ok.failures, ok.last_verified),
            ("Verified", 0, Some(at(2)))
        );
        // The server goes down: verified for the grace period, then Error.
        let down = Lookup::Failed {
            timeout: true,
            detail: "timed out".into(),
        };
        let kept = step(Some(&ok), "v", down.clone(), at(30));
        assert_eq!(
            (kept.state.as_str(), kept.reason.as_str()),
            ("Verified", "RecheckFailing")
        );
        assert_eq!(kept.last_verified, Some(at(2)));
        let lost = step(Some(&kept), "v", down, at(63));
        assert_eq!(
            (lost.state.as_str(), lost.reason.as_str()),
            ("Error", "LookupTimeout")
        );
        // The record removed: the same, ending at Pending.
        let removed = step(Some(&ok), "v", Lookup::NoRecord, at(63));
        assert_eq!(removed.state, "Pending");
        // A new client ID: a new value, Pending at once, no grace.
        let moved = step(Some(&ok), "w", Lookup::Values(vec!["v".into()]), at(3));
        assert_eq!(
            (moved.state.as_str(), moved.reason.as_str()),
            ("Pending", "RecordMismatch")
        );
        assert_eq!(moved.last_verified, None);
    }

    #[test]
    fn a_domain_belongs_to_the_namespace_that_verified_it_first() {
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let at = |mins: i64| t0 + SignedDuration::from_mins(mins);
        let ok = |when| step(None, "v", Lookup::Values(vec!["v".into()]), when);
        let (a, b) = (ok(at(0)), ok(at(5)));
        assert_eq!(a.verified_since, Some(at(0)));
        // Still verified later: the streak keeps its start; through the
        // grace period too.
        let a2 = step(Some(&a), "v", Lookup::Values(vec!["v".into()]), at(20));
        assert_eq!(a2.verified_since, Some(at(0)));
        let a3 = step(Some(&a2), "v", Lookup::NoRecord, at(30));
        assert_eq!(
            (a3.state.as_str(), a3.verified_since),
            ("Verified", Some(at(0)))
        );

        let others = [("team-a", "okta", &a3), ("team-b", "evil", &b)];
        assert_eq!(
            owner_elsewhere(&b, ("team-b", "evil"), others, at(40), GRACE),
            Some(("team-a/okta".to_string(), at(0)))
        );
        assert_eq!(
            owner_elsewhere(&a3, ("team-a", "okta"), others, at(40), GRACE),
            None
        );
        // A status nobody refreshed within the grace period holds nothing
        // (a provider stuck Verified in status cannot keep the domain).
        assert_eq!(
            owner_elsewhere(&b, ("team-b", "evil"), others, at(81), GRACE),
            None
        );
        let stuck = unchecked(&a3, at(81), GRACE, "KeyNotReady", "no key");
        assert_eq!(
            (stuck.state.as_str(), stuck.verified_since),
            ("Pending", None)
        );
        assert_eq!(unchecked(&a3, at(79), GRACE, "KeyNotReady", "no key"), a3);
        // The same namespace's providers do not take it from each other.
        assert_eq!(
            owner_elsewhere(&b, ("team-a", "second"), others, at(40), GRACE),
            None
        );
        // Not verified here at all: the other namespace has it.
        let pending = step(None, "v", Lookup::NoRecord, at(6));
        assert!(owner_elsewhere(&pending, ("team-b", "evil"), others, at(40), GRACE).is_some());
        // Only verified domains count: a's lost, b keeps it.
        let lost = step(Some(&a3), "v", Lookup::NoRecord, at(85));
        assert_eq!(lost.state, "Pending");
        let others = [("team-a", "okta", &lost), ("team-b", "evil", &b)];
        assert_eq!(
            owner_elsewhere(&b, ("team-b", "evil"), others, at(40), GRACE),
            None
        );

        let taken = claimed_elsewhere(&b, "team-a/okta", at(0));
        assert_eq!(
            (taken.state.as_str(), taken.reason.as_str()),
            ("Error", "ClaimedElsewhere")
        );
        assert!(
            taken.message.contains("namespace team-a"),
            "{}",
            taken.message
        );
        assert_eq!(taken.record_value, b.record_value);
        assert_eq!(recheck_after(&taken), Duration::from_secs(600));
    }

    #[test]
    fn rechecks_back_off_and_verified_ones_wait_ten_minutes() {
        let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let secs = |s: i64| t0 + SignedDuration::from_secs(s);
        assert!(due(None, "v", t0));
        let mut s = step(None, "v", Lookup::NoRecord, t0);
        let mut waits = vec![];
        for _ in 0..7 {
            waits.push(recheck_after(&s).as_secs());
            s = step(Some(&s), "v", Lookup::NoRecord, t0);
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        let ok = step(None, "v", Lookup::Values(vec!["v".into()]), t0);
        assert!(!due(Some(&ok), "v", secs(599)));
        assert!(due(Some(&ok), "v", secs(600)));
        // A changed value is due at once.
        assert!(due(Some(&ok), "w", secs(1)));
    }
}
