//! The broker configuration: every programmed provider, with resolved
//! credentials and endpoints. The controller is its only writer (one Secret
//! in the operator's namespace); the broker reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    api::{ClaimMapping, ClientAuthMethod},
    oidc::discovery::ProviderEndpoints,
};

/// Key under which the broker config Secret stores [`BrokerConfig`] as JSON.
pub const BROKER_CONFIG_KEY: &str = "providers.json";

/// One provider as the broker serves it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgrammedProvider {
    pub namespace: String,
    pub name: String,
    pub display_name: String,
    /// The IdentityProvider generation this entry was validated from.
    pub generation: i64,
    pub issuer: String,
    pub client_id: String,
    /// Absent for public clients (`clientAuthMethod: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_auth_method: ClientAuthMethod,
    /// Scopes to request, `openid` first.
    pub scopes: Vec<String>,
    pub pkce: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
    pub endpoints: ProviderEndpoints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    pub claims: ClaimMapping,
    pub require_verified_email: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_email_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_users: Vec<String>,
    pub redirect_uri: String,
}

impl ProgrammedProvider {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

// Debug without the client secret, so a stray `{:?}` cannot leak it.
impl std::fmt::Debug for ProgrammedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgrammedProvider")
            .field("key", &self.key())
            .field("generation", &self.generation)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A provider that exists but is not programmed: the login page lists it
/// greyed out and `/oauth/start` names why, instead of "unknown provider".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unavailable {
    pub display_name: String,
    /// `spec.enabled: false`.
    pub disabled: bool,
    /// The Ready condition's reason.
    pub reason: String,
    pub message: String,
}

/// The whole broker configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    /// Providers by `namespace/name`.
    pub providers: BTreeMap<String, ProgrammedProvider>,
    /// Providers that exist but cannot serve logins, by `namespace/name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, Unavailable>,
}

impl BrokerConfig {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("broker config serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
