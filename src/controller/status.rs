//! Turning a [`Validation`] into `status`: timestamps kept unless a
//! condition flips, conditions sorted, and a comparison that ignores time so
//! an unchanged provider is never rewritten.

use jiff::Timestamp;

use crate::{
    api::{Condition, IdentityProviderStatus, conditions::Status, packed::Packable as _},
    controller::validate::{CondResult, Programming, Validation},
};

/// Merges freshly computed conditions with the previous ones.
/// `lastTransitionTime` is kept unless the status flips; output is sorted by type.
pub fn merge_conditions(
    old: &[Condition],
    new: &[CondResult],
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = new
        .iter()
        .map(|c| {
            let last_transition_time = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
                .map_or(now, |o| o.last_transition_time);
            Condition {
                type_: c.type_.to_string(),
                status: c.status.to_string(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                observed_generation: Some(generation),
                last_transition_time,
            }
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Builds the new status from the old one and a validation result.
pub fn build_status(
    old: Option<&IdentityProviderStatus>,
    v: &Validation,
    generation: i64,
    now: Timestamp,
) -> IdentityProviderStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut discovered = v.discovered.clone().map(Box::new);
    // While serving the last known good entry, report the endpoints in use.
    if discovered.is_none() && matches!(v.programming, Programming::KeepLastKnownGood(_)) {
        discovered = old.and_then(|s| s.discovered.clone());
    }
    // A check that found the same thing keeps its old timestamp: time alone
    // never causes a write.
    if let (Some(new), Some(old)) = (discovered.as_mut(), old.and_then(|s| s.discovered.as_ref())) {
        let mut same = new.clone();
        same.last_checked = old.last_checked;
        if same == *old {
            new.last_checked = old.last_checked;
        }
    }
    IdentityProviderStatus {
        phase: Some(v.phase.to_string()),
        redirect_uri: Some(v.redirect_uri.clone()),
        discovered,
        observed_generation: Some(generation),
        conditions: merge_conditions(old_conditions, &v.conditions, generation, now),
        // Verified by the reconcile's DNS step, which fills them in.
        domains: Vec::new(),
        packed: None,
    }
}

/// Whether writing `new` over `old` (as cached, packed, or as read)
/// changes anything but timestamps.
pub fn needs_write(old: Option<&IdentityProviderStatus>, new: &IdentityProviderStatus) -> bool {
    old.is_none_or(|old| old.differs(new))
}

pub use crate::api::packed::strip_condition_times;

/// A condition change worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Warning when the condition is not True.
    pub warning: bool,
}

/// Conditions whose status or reason changed. A condition appearing for the
/// first time as True is not news, except the Ready summary.
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    use crate::api::conditions::types::RESTATING_READY;
    new.iter()
        .filter(|n| !RESTATING_READY.contains(&n.type_.as_str()))
        .filter(|n| match old.iter().find(|o| o.type_ == n.type_) {
            Some(o) => o.status != n.status || o.reason != n.reason,
            None => n.status != Status::True || n.type_ == crate::api::conditions::types::READY,
        })
        .map(|n| Transition {
            type_: n.type_.clone(),
            status: n.status.clone(),
            reason: n.reason.clone(),
            message: n.message.clone(),
            warning: n.status != Status::True,
        })
        .collect()
}
