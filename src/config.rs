//! The broker configuration: every programmed provider, with resolved
//! credentials and endpoints. The controller is its only writer (one Secret
//! in the operator's namespace); the broker reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    api::{ClaimMapping, ClientAuthMethod},
    oidc::discovery::ProviderEndpoints,
};

/// Key under which the broker config Secret stores [`BrokerConfig`]:
/// gzip-compressed JSON. Compressed, ten thousand providers fit in one
/// Secret (Kubernetes caps a Secret's data at 1 MiB; as plain JSON about
/// 600 providers did). Measured by `examples/bench_controller.rs`.
pub const BROKER_CONFIG_KEY: &str = "providers.json.gz";
/// Plain-JSON key, read when the gzip key is absent (hand-written Secrets).
pub const BROKER_CONFIG_PLAIN_KEY: &str = "providers.json";
/// Kubernetes' limit on the data of one Secret.
pub const SECRET_DATA_LIMIT: usize = 1 << 20;
/// Largest decompressed configuration accepted (guards against a gzip bomb).
pub const MAX_CONFIG_BYTES: u64 = 256 << 20;

/// Why a broker configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error("decompresses to more than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

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
    /// The algorithms ID tokens must be signed with; empty: any allowed
    /// asymmetric one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_token_algs: Vec<String>,
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
    /// The email domains the provider lists (spec.domains, accepted ones):
    /// a user whose email is in one signs in only while it is verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Those of `domains` verified now (DNS TXT record seen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_domains: Vec<String>,
    pub redirect_uri: String,
}

#[cfg(test)]
impl ProgrammedProvider {
    /// `team/corp` at `issuer`, client `c`, endpoints `<issuer>/a`, `/t`,
    /// `/j`, no rules: what unit tests start from.
    pub(crate) fn example(issuer: &str) -> Self {
        Self {
            namespace: "team".into(),
            name: "corp".into(),
            display_name: "Corp".into(),
            redirect_uri: "https://sso.example.com/oauth/callback/team/corp".into(),
            domains: Vec::new(),
            verified_domains: Vec::new(),
            generation: 1,
            issuer: issuer.into(),
            client_id: "c".into(),
            client_secret: Some("s".into()),
            client_auth_method: crate::api::ClientAuthMethod::ClientSecretBasic,
            scopes: vec!["openid".into()],
            pkce: true,
            authorize_params: Default::default(),
            endpoints: crate::oidc::discovery::ProviderEndpoints {
                issuer: issuer.into(),
                authorization_endpoint: format!("{issuer}/a"),
                token_endpoint: format!("{issuer}/t"),
                jwks_uri: format!("{issuer}/j"),
                ..Default::default()
            },
            id_token_algs: vec![],
            ca_bundle: None,
            claims: Default::default(),
            require_verified_email: true,
            allowed_email_domains: vec![],
            allowed_groups: vec![],
            allowed_users: vec![],
        }
    }
}

impl ProgrammedProvider {
    /// What this provider's ID tokens must say, for a login that sent
    /// `nonce` (`None` on a refresh).
    pub fn expected<'a>(&'a self, nonce: Option<&'a str>) -> crate::oidc::verify::Expected<'a> {
        crate::oidc::verify::Expected {
            issuer: &self.issuer,
            client_id: &self.client_id,
            nonce,
            algs: &self.id_token_algs,
        }
    }

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

/// One AccessPolicy as the broker enforces it at
/// `/oauth/auth/<namespace>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgrammedPolicy {
    pub namespace: String,
    pub name: String,
    /// The AccessPolicy generation this entry was programmed from.
    pub generation: i64,
    /// Host patterns (exact or `*.suffix`), lowercase.
    pub hosts: Vec<String>,
    /// Path prefixes; empty means every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Providers whose sessions this policy accepts, as `namespace/name`;
    /// each admitted the policy's namespace when programmed.
    pub providers: Vec<String>,
    pub rules: crate::policy::rules::Rules,
    /// What a request without a usable session gets.
    #[serde(default)]
    pub unauthenticated: crate::api::policy::Unauthenticated,
    /// Path prefixes that always get 401 without a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_paths: Vec<String>,
    /// Identity headers and the token that reach the app.
    #[serde(default)]
    pub forward: crate::api::policy::Forward,
}

impl ProgrammedPolicy {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
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
    /// Access policies in force, by `namespace/name`. A policy not here
    /// admits nobody.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, ProgrammedPolicy>,
}

/// A [`BrokerConfig`] of borrowed parts: serializes to the same JSON.
/// Each part is a map from key to entry, the entry typed or already JSON
/// (the controller keeps its entries as compact JSON text).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigParts<'a, P, U, Q> {
    providers: &'a BTreeMap<String, P>,
    #[serde(skip_serializing_if = "is_empty")]
    unavailable: &'a BTreeMap<String, U>,
    #[serde(skip_serializing_if = "is_empty")]
    policies: &'a BTreeMap<String, Q>,
}

fn is_empty<V>(m: &&BTreeMap<String, V>) -> bool {
    m.is_empty()
}

/// The broker config from its parts, compact JSON gzip-compressed as it
/// is serialized: no copy of the parts and no JSON text in memory (with
/// 10,000 providers the text is megabytes; the compressed form, of
/// entries much alike, a small fraction).
pub fn gzip_parts<P: Serialize, U: Serialize, Q: Serialize>(
    providers: &BTreeMap<String, P>,
    unavailable: &BTreeMap<String, U>,
    policies: &BTreeMap<String, Q>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let parts = ConfigParts {
        providers,
        unavailable,
        policies,
    };
    serde_json::to_writer(&mut enc, &parts)?;
    Ok(enc.finish().expect("writing to memory"))
}

impl BrokerConfig {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("broker config serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Compact JSON, gzip-compressed: what the controller writes.
    pub fn to_gzip(&self) -> Vec<u8> {
        gzip_parts(&self.providers, &self.unavailable, &self.policies)
            .expect("a typed broker config serializes")
    }

    /// Reads a configuration, gzip-compressed (by its magic bytes) or plain
    /// JSON.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfigError> {
        use std::io::Read;
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            return Ok(Self::from_json(bytes)?);
        }
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(ConfigError::Gzip)?;
        if json.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        Ok(Self::from_json(&json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        let mut c = BrokerConfig::default();
        c.unavailable.insert(
            "team-a/down".into(),
            Unavailable {
                display_name: "Down".into(),
                disabled: false,
                reason: "DiscoveryFailed".into(),
                message: "connection refused".into(),
            },
        );
        c
    }

    #[test]
    fn gzip_and_plain_json_both_decode() {
        let c = config();
        let gz = c.to_gzip();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(BrokerConfig::decode(&gz).unwrap(), c);
        assert_eq!(BrokerConfig::decode(&c.to_json()).unwrap(), c);
    }

    /// What the controller writes from its parts is the JSON of the whole
    /// config, byte for byte (empty parts left out the same way).
    #[test]
    fn gzip_of_the_parts_is_the_configs_json() {
        use std::io::Read;
        for c in [BrokerConfig::default(), config()] {
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(&c.to_gzip()[..])
                .read_to_end(&mut json)
                .unwrap();
            assert_eq!(
                String::from_utf8(json).unwrap(),
                serde_json::to_string(&c).unwrap()
            );
        }
    }

    #[test]
    fn broken_gzip_and_json_are_errors() {
        let gz = config().to_gzip();
        assert!(matches!(
            BrokerConfig::decode(&gz[..gz.len() / 2]),
            Err(ConfigError::Gzip(_))
        ));
        assert!(matches!(
            BrokerConfig::decode(b"{\"providers\": "),
            Err(ConfigError::Json(_))
        ));
    }
}
