//! The broker: the HTTP server every login goes through (login page,
//! authorization redirect, callback, sessions, forward-auth). Built up
//! across sessions; this module starts with its cookie cryptography.

pub mod seal;
