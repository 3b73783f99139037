//! The broker: the HTTP server every login goes through (login page,
//! authorization redirect, callback, sessions, forward-auth). Built up
//! across sessions: so far its cookie cryptography and the session model.

pub mod seal;
pub mod session;
