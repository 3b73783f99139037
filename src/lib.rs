//! sso-operator: a Kubernetes operator that manages OpenID Connect identity
//! providers as `IdentityProvider` resources and programs a login broker.
//!
//! - [`api`]: the custom resource and its condition vocabulary.
//! - [`controller`]: the reconcile wrapper around the pure validation core.
//! - [`oidc`]: discovery and JWKS, shared with the broker.
//! - [`policy`]: access policies' pure core (routes, rules, tenancy).
//! - [`check`]: `sso-operator check`, the same validation from files.
//! - [`config`]: the broker configuration the controller writes.
//! - [`cli`]: the `sso-operator` command line, one module per subcommand.

pub mod api;
pub mod broker;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod dev;
pub mod domains;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod telemetry;

/// Errors of the controller and the commands. `category()` is stable and
/// used as a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Startup(String),
    #[error("{0}")]
    Manifest(String),
    #[error("{0}")]
    Cache(#[from] controller::cache::Unreadable),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube_client",
            Error::Json(_) => "serialization",
            Error::Io(_) => "io",
            Error::Startup(_) => "startup",
            Error::Manifest(_) => "manifest",
            Error::Cache(_) => "cache",
        }
    }
}
