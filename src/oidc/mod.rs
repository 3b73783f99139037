//! OpenID Connect pieces shared by the controller and the broker.

pub mod assertion;
pub mod discovery;
