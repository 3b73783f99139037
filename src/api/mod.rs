//! The `IdentityProvider` custom resource (`sso-operator.dev/v1alpha1`).
//!
//! Doc comments on the spec fields become the schema descriptions that
//! `kubectl explain identityprovider.spec` shows: they are written for the
//! platform engineer filling in a manifest.

pub mod conditions;
pub mod packed;
pub mod policy;

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every sso-operator resource.
pub const GROUP: &str = "sso-operator.dev";
/// Field manager for every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "sso-operator.dev/controller";

/// Authorization request parameters the broker sets itself; `authorizeParams`
/// may not override them.
pub const RESERVED_AUTHORIZE_PARAMS: [&str; 9] = [
    "state",
    "nonce",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "client_id",
    "response_type",
    "scope",
    "request",
];

/// An OpenID Connect identity provider that the sso-operator broker offers for login.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sso-operator.dev",
    version = "v1alpha1",
    kind = "IdentityProvider",
    plural = "identityproviders",
    shortname = "idp",
    category = "sso",
    namespaced,
    cel,
    doc = "An OpenID Connect identity provider offered for login by the sso-operator broker. `kubectl get idp` shows whether it works; status.conditions say exactly why not.",
    status = "IdentityProviderStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Issuer", type_ = "string", json_path = ".spec.issuer"),
    printcolumn(
        name = "Redirect URI",
        type_ = "string",
        json_path = ".status.redirectURI"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.clientID) != has(self.clientIDFrom)")
        .message("set exactly one of clientID and clientIDFrom")
        .reason(kube::core::Reason::FieldValueInvalid),
    validation = Rule::new("(has(self.clientAuthMethod) && self.clientAuthMethod == 'none') || has(self.clientSecretRef)")
        .message("clientSecretRef is required unless clientAuthMethod is none")
        .reason(kube::core::Reason::FieldValueRequired),
    validation = Rule::new("!has(self.clientAuthMethod) || self.clientAuthMethod != 'none' || !has(self.pkce) || self.pkce == 'S256'")
        .message("clientAuthMethod none (a public client) requires pkce S256")
        .reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderSpec {
    /// Name shown on the login page button. Defaults to the resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub display_name: Option<String>,

    /// Offer this provider for login. A disabled provider is still validated
    /// but is not offered and not programmed into the broker.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// The OpenID Connect issuer URL, exactly as the provider reports it in
    /// its discovery document (a trailing slash matters). Must be https; http
    /// is accepted only for loopback hosts (localhost, 127.0.0.1, ::1) for
    /// local development. No query or fragment.
    #[x_kube(
        // `matches` rather than url().getScheme(): kube-cel answers "" for the
        // scheme of http://localhost (its stand-in for absolute paths) where
        // the apiserver answers "http", and the rule must mean the same in both.
        validation = Rule::new(r"isURL(self) && (self.matches('^https://[^/?#]+') || self.matches('^http://(localhost|127([.][0-9]{1,3}){3}|\\[::1\\])(:[0-9]+)?(/[^?#]*)?$'))")
            .message("issuer must be an https URL (http only for localhost, 127.x.x.x or [::1])")
            .reason(kube::core::Reason::FieldValueInvalid),
        validation = Rule::new("!self.contains('?') && !self.contains('#')")
            .message("issuer must not contain a query or fragment")
            .reason(kube::core::Reason::FieldValueInvalid),
    )]
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: String,

    /// The OAuth 2.0 client ID registered at the provider. Set this or
    /// `clientIDFrom`, not both.
    #[serde(default, rename = "clientID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub client_id: Option<String>,

    /// Read the client ID from a key of a Secret in the same namespace. Set
    /// this or `clientID`, not both.
    #[serde(
        default,
        rename = "clientIDFrom",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_id_from: Option<SecretKeyRef>,

    /// The client secret: a key of a Secret in the same namespace (for
    /// `private_key_jwt`, the PEM private key). Required unless
    /// `clientAuthMethod` is `none`. Rotating the Secret's value takes
    /// effect in the broker within seconds, with no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,

    /// How the broker authenticates to the token endpoint.
    #[serde(default)]
    pub client_auth_method: ClientAuthMethod,

    /// Scopes to request. `openid` is always sent, whether listed or not.
    #[serde(default = "default_scopes")]
    #[schemars(length(max = 32))]
    pub scopes: Vec<String>,

    /// Proof Key for Code Exchange. `S256` (default) protects the
    /// authorization code; disable only for a provider that rejects it.
    #[serde(default)]
    pub pkce: PkceMode,

    /// Extra parameters added to the authorization request, such as
    /// `prompt`, `hd`, `domain_hint` or `acr_values`. Parameters the broker
    /// sets itself (state, nonce, redirect_uri, code_challenge,
    /// code_challenge_method, client_id, response_type, scope, request) are
    /// rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(
        validation = Rule::new("!self.exists(k, k in ['state', 'nonce', 'redirect_uri', 'code_challenge', 'code_challenge_method', 'client_id', 'response_type', 'scope', 'request'])")
            .message("authorizeParams must not set state, nonce, redirect_uri, code_challenge, code_challenge_method, client_id, response_type, scope or request: the broker sets them")
            .reason(kube::core::Reason::FieldValueForbidden),
    )]
    #[schemars(extend("maxProperties" = 32))]
    pub authorize_params: BTreeMap<String, String>,

    /// Endpoint overrides, for providers without discovery or to pin an
    /// endpoint. When authorization, token and jwks are all set, discovery
    /// is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Box<EndpointOverrides>>,

    /// The algorithms the provider signs ID tokens with. A token signed
    /// otherwise is refused (`disallowed_alg`). Default: what discovery
    /// advertises in `id_token_signing_alg_values_supported`; set it for a
    /// provider configured without discovery, or to pin one algorithm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub id_token_signing_algs: Vec<IdTokenAlg>,

    /// TLS settings for talking to the provider (discovery, JWKS, token and
    /// userinfo endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsConfig>>,

    /// Which ID token or userinfo claims carry the user's identity.
    #[serde(default)]
    pub claims: ClaimMapping,

    /// Refuse logins whose `email_verified` claim is absent or false (error
    /// `unverified_email`). Default true.
    #[serde(default = "default_true")]
    pub require_verified_email: bool,

    /// Allow only users whose email is in one of these domains (for example
    /// `example.com`). Empty allows any domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_email_domains: Vec<String>,

    /// Allow only users in at least one of these groups (from the `groups`
    /// claim). Empty allows any group membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_groups: Vec<String>,

    /// Allow only these users, by username or email. Empty allows anyone
    /// the other rules allow. When several access lists are set, a user must
    /// pass every one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub allowed_users: Vec<String>,

    /// Which namespaces' AccessPolicies may use this provider. Policies in
    /// the provider's own namespace always may; others only as this says
    /// (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<Box<AllowedNamespaces>>,

    /// Email domains this provider speaks for (for example `corp.com`).
    /// Each is verified by a DNS TXT record whose name and value
    /// `status.domains` shows; a user whose email is in a listed domain
    /// may sign in through this provider only while the domain is
    /// verified. Public suffixes and free mail domains are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub domains: Vec<String>,
}

/// Namespaces whose AccessPolicies may use a provider, as a Gateway API
/// listener says which namespaces may attach routes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(
    validation = Rule::new("has(self.selector) == (has(self.from) && self.from == 'Selector')")
        .message("set selector exactly when from is Selector")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// `Same` (the default): only the provider's own namespace. `All`: every
    /// namespace. `Selector`: namespaces whose labels match `selector`.
    #[serde(default)]
    pub from: FromNamespaces,
    /// With `from: Selector`, the labels a namespace must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// See [`AllowedNamespaces::from`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum FromNamespaces {
    #[default]
    Same,
    All,
    Selector,
}

impl AllowedNamespaces {
    /// The form the pure tenancy check takes.
    pub fn to_policy(&self) -> crate::policy::tenancy::AllowedNamespaces {
        use crate::policy::tenancy::From;
        crate::policy::tenancy::AllowedNamespaces {
            from: match self.from {
                FromNamespaces::Same => From::Same,
                FromNamespaces::All => From::All,
                FromNamespaces::Selector => From::Selector,
            },
            selector: self.selector.clone(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// The default scopes: `openid email profile`.
pub fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// A key of a Secret in the IdentityProvider's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the IdentityProvider.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Token endpoint client authentication.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ClientAuthMethod {
    /// HTTP Basic authentication with the client ID and secret (the default).
    #[default]
    #[serde(rename = "client_secret_basic")]
    ClientSecretBasic,
    /// Client ID and secret in the token request body.
    #[serde(rename = "client_secret_post")]
    ClientSecretPost,
    /// A JWT signed with a private key held in the client secret's Secret key
    /// (PEM: PKCS#8 RSA or EC P-256, or PKCS#1 RSA; RS256 or ES256). Register
    /// the public key that `sso-operator public-jwk` prints at the provider.
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
    /// A public client: no client secret, PKCE required.
    #[serde(rename = "none")]
    None,
}

impl ClientAuthMethod {
    /// The name the OpenID Connect discovery document uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::None => "none",
        }
    }
}

/// An ID token signature algorithm the broker accepts: asymmetric only.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IdTokenAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl IdTokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            IdTokenAlg::RS256 => "RS256",
            IdTokenAlg::RS384 => "RS384",
            IdTokenAlg::RS512 => "RS512",
            IdTokenAlg::PS256 => "PS256",
            IdTokenAlg::PS384 => "PS384",
            IdTokenAlg::PS512 => "PS512",
            IdTokenAlg::ES256 => "ES256",
            IdTokenAlg::ES384 => "ES384",
            IdTokenAlg::EdDSA => "EdDSA",
        }
    }
}

/// Proof Key for Code Exchange mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PkceMode {
    /// SHA-256 code challenge (the default).
    #[default]
    S256,
    /// No PKCE.
    Disabled,
}

/// Endpoint overrides. Each must be https (http only for loopback hosts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOverrides {
    /// Authorization endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// Token endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Userinfo endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo: Option<String>,
    /// JSON Web Key Set URL with the provider's ID token signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// RP-initiated logout endpoint (`end_session_endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session: Option<String>,
}

impl EndpointOverrides {
    /// Each override as (name under `spec.endpoints`, discovery document
    /// field, value).
    pub fn entries(&self) -> [(&'static str, &'static str, &Option<String>); 5] {
        [
            (
                "authorization",
                "authorization_endpoint",
                &self.authorization,
            ),
            ("token", "token_endpoint", &self.token),
            ("userinfo", "userinfo_endpoint", &self.userinfo),
            ("jwks", "jwks_uri", &self.jwks),
            ("endSession", "end_session_endpoint", &self.end_session),
        ]
    }
}

/// TLS settings for the provider's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(has(self.caBundle) && has(self.caBundleSecretRef))")
        .message("set at most one of caBundle and caBundleSecretRef")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// PEM-encoded CA certificates trusted for the provider, in addition to
    /// the system roots. Use for a provider with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The same, read from a key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
}

/// Claim names that carry the user's identity. Defaults follow OpenID
/// Connect's standard claims.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMapping {
    /// Claim used as the username (`X-Auth-Request-User`). Falls back to
    /// `sub` when the claim is absent.
    #[serde(default = "claim_username")]
    pub username: ClaimName,
    /// Claim holding the email address.
    #[serde(default = "claim_email")]
    pub email: ClaimName,
    /// Claim holding the display name.
    #[serde(default = "claim_name")]
    pub name: ClaimName,
    /// Claim holding the given name.
    #[serde(default = "claim_given_name")]
    pub given_name: ClaimName,
    /// Claim holding the family name.
    #[serde(default = "claim_family_name")]
    pub family_name: ClaimName,
    /// Claim holding the user's groups (a list of strings, or one string).
    #[serde(default = "claim_groups")]
    pub groups: ClaimName,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            username: claim_username(),
            email: claim_email(),
            name: claim_name(),
            given_name: claim_given_name(),
            family_name: claim_family_name(),
            groups: claim_groups(),
        }
    }
}

/// A claim name: the defaults are borrowed, not allocated for each of
/// thousands of providers that keep them.
pub type ClaimName = std::borrow::Cow<'static, str>;

fn claim_username() -> ClaimName {
    ClaimName::Borrowed("preferred_username")
}
fn claim_email() -> ClaimName {
    ClaimName::Borrowed("email")
}
fn claim_name() -> ClaimName {
    ClaimName::Borrowed("name")
}
fn claim_given_name() -> ClaimName {
    ClaimName::Borrowed("given_name")
}
fn claim_family_name() -> ClaimName {
    ClaimName::Borrowed("family_name")
}
fn claim_groups() -> ClaimName {
    ClaimName::Borrowed("groups")
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderStatus {
    /// Summary: Pending, Ready, Degraded (serving the last good
    /// configuration while the provider fails), Error or Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The exact callback URL to register at the provider.
    #[serde(
        default,
        rename = "redirectURI",
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_uri: Option<String>,
    /// What discovery found at the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Box<DiscoveredStatus>>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: ConfigValid, SecretResolved, DiscoverySucceeded,
    /// JWKSValid, Programmed and the Ready summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Each of spec.domains: the TXT record that verifies it and its
    /// state (Pending, Verified, Error), with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["domain"]))]
    pub domains: Vec<crate::domains::DomainStatus>,
    /// The controller's cache keeps the rest of the status here, deflated
    /// ([`packed`]); never serialized.
    #[serde(skip)]
    #[schemars(skip)]
    pub packed: Option<packed::Packed>,
}

/// What the controller found at the issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredStatus {
    /// Issuer as reported by the provider.
    pub issuer: String,
    /// Authorization endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// Userinfo endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// JWKS URL in use.
    #[serde(default, rename = "jwksURI", skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// RP-initiated logout endpoint, when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
    /// Number of usable ID token signing keys in the JWKS.
    #[serde(default)]
    pub jwks_key_count: i32,
    /// When discovery and the JWKS were last fetched successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_checked: Option<Timestamp>,
}

/// A status condition, as in metav1.Condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, such as Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Machine-readable reason, stable across versions.
    pub reason: String,
    /// Human-readable explanation and what to do about it.
    pub message: String,
    /// The metadata.generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub last_transition_time: Timestamp,
}

impl IdentityProvider {
    /// `namespace/name`, the key the broker and metrics use.
    pub fn key(&self) -> String {
        key_of(&self.metadata)
    }
}

/// `namespace/name` of an object, the key the broker and metrics use.
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}
