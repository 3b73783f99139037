//! The broker: the HTTP server every login goes through (login page,
//! authorization redirect, callback, sessions, forward-auth, logout).

pub mod claims;
pub mod error;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod provider;
pub mod redirect;
pub mod refresh;
pub mod seal;
pub mod server;
pub mod session;
pub mod source;

pub use server::{Applied, Broker, BrokerSettings};
