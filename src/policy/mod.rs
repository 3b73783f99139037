//! Access policies, the pure part (issue 14's core; not yet wired to a
//! custom resource, the controller or the broker):
//!
//! - [`route`]: which app a request is for — hosts (exact or `*.suffix`)
//!   and path prefixes, the most specific claim winning, and who wins when
//!   two policies claim the same host and path.
//! - [`rules`]: whether a session's identity is admitted — allow and deny
//!   rules over users, emails, email domains, groups and claim values;
//!   deny wins; no matching allow is a refusal.
//! - [`tenancy`]: whether a provider in one namespace may serve a policy in
//!   another (Gateway API listener style: `Same`, `All`, or a namespace
//!   label selector).
//!
//! No I/O, no clock: the controller will decide with these what to
//! program, and the broker what to answer.

pub mod route;
pub mod rules;
pub mod tenancy;
