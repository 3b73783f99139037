//! OpenID Connect pieces shared by the controller and the broker:
//! discovery and JWKS checks ([`discovery`]), the broker's JWKS cache
//! ([`jwks`]), pure ID-token verification ([`verify`]) and client assertions
//! for `private_key_jwt` ([`assertion`]), and bounded reads of a
//! provider's answers ([`http`]).

pub mod assertion;
pub mod discovery;
pub mod egress;
pub mod http;
pub mod jwks;
pub mod verify;
