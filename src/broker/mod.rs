//! The broker: the HTTP server every login goes through (login page,
//! authorization redirect, callback, sessions, forward-auth). Built up
//! across sessions: so far its cookie cryptography, the session model and
//! the redirect policy.

pub mod redirect;
pub mod seal;
pub mod session;
