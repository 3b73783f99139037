//! The broker: the HTTP server every login goes through (login page,
//! authorization redirect, callback, sessions, forward-auth, logout).
//!
//! - [`state`]: settings, the hot-swapped provider table and key ring, the
//!   clock, and the lookups handlers share
//! - [`routes`]: the handlers, one module per group of routes
//! - [`cookies`] and [`respond`]: every cookie read or written, every kind
//!   of answer (pages, redirects, refusals, `no-store`)
//! - [`provider`]: the OAuth client of one programmed provider; the
//!   ID-token checks are [`crate::oidc::verify`]
//! - [`login`], [`session`], [`seal`], [`refresh`], [`claims`]: what the
//!   cookies hold and how a session is checked and renewed

pub mod claims;
pub mod cookies;
pub mod error;
pub mod headers;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod provider;
pub mod redirect;
pub mod refresh;
pub mod replay;
pub mod respond;
mod routes;
pub mod seal;
pub mod session;
pub mod source;
pub mod state;
pub mod tokens;

pub use state::{Applied, Broker, BrokerSettings, ProviderTable, Unscoped};
