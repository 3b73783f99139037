//! The `AccessPolicy` custom resource (`sso-operator.dev/v1alpha1`): which
//! providers and which people may reach an app.
//!
//! A proxy asks the broker about a request at the policy's own forward-auth
//! URL (`status.authURL`, `/oauth/auth/<namespace>/<name>`); the broker
//! admits a session only when it comes from one of the policy's providers
//! and the policy's rules allow its user. Everything else is refused: an
//! unknown or unprogrammed policy admits nobody.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Which providers and which people may reach an app behind the sso-operator broker.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sso-operator.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    shortname = "ap",
    category = "sso",
    namespaced,
    cel,
    doc = "Which identity providers and which people may reach an app behind the sso-operator broker. Point the app's proxy at status.authURL; `kubectl get ap` shows whether the policy is in force.",
    status = "AccessPolicyStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Auth URL", type_ = "string", json_path = ".status.authURL"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The app's host names: exact (`grafana.example.com`) or a wildcard
    /// (`*.apps.example.com`: any name under apps.example.com, not
    /// apps.example.com itself). Lowercase, no port. A request whose proxy
    /// says it is for another host is refused. Two policies may not claim
    /// the same host and path: the older one keeps it, the newer one says
    /// so in status and is not in force.
    #[x_kube(
        validation = Rule::new(r"self.all(h, h.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))")
            .message("each host must be a lowercase DNS name (grafana.example.com) or a wildcard (*.example.com), without a port")
            .reason(kube::core::Reason::FieldValueInvalid),
        validation = Rule::new("self.all(h, !h.startsWith('*.') || h.substring(2).contains('.'))")
            .message("a wildcard host must name at least two labels after *. (*.example.com, not *.com)")
            .reason(kube::core::Reason::FieldValueInvalid),
    )]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 253)))]
    pub hosts: Vec<String>,

    /// Path prefixes of the app on those hosts, matched by whole segments
    /// (`/grafana` matches `/grafana` and `/grafana/x`, not `/grafanax`).
    /// Empty means every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(
        validation = Rule::new(r"self.all(p, p.matches('^(/[^/?#]+)*/?$') && !p.matches('/[.][.]?(/|$)'))")
            .message("each path must be an absolute prefix like /app: no query, fragment, empty, . or .. segment")
            .reason(kube::core::Reason::FieldValueInvalid),
    )]
    #[schemars(length(max = 16), inner(length(min = 1, max = 1024)))]
    pub paths: Vec<String>,

    /// The IdentityProviders whose logins this app accepts. A provider in
    /// another namespace serves this policy only when its
    /// `spec.allowedNamespaces` admits this policy's namespace.
    #[schemars(length(min = 1, max = 16))]
    pub providers: Vec<ProviderRef>,

    /// Who may reach the app: deny rules win, then any allow rule admits;
    /// a user no allow rule matches is refused (403).
    pub rules: AccessRules,

    /// What a request without a session from one of the providers gets.
    /// `Redirect` (the default): a browser's page request is sent to the
    /// login page offering this policy's providers, where the proxy passes
    /// the forward-auth answer on to the browser (Traefik, Caddy, Envoy;
    /// nginx's auth_request cannot, so it gets 401 and redirects itself
    /// with error_page or auth-signin). API calls (no text/html in Accept,
    /// X-Requested-With, a method other than GET or HEAD, or a path under
    /// `apiPaths`) get 401. `Deny`: always 401.
    #[serde(default)]
    pub unauthenticated: Unauthenticated,

    /// Path prefixes of the app's API (whole segments): requests there get
    /// 401 without a session, never a redirect to a login page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(
        validation = Rule::new(r"self.all(p, p.matches('^(/[^/?#]+)*/?$') && !p.matches('/[.][.]?(/|$)'))")
            .message("each API path must be an absolute prefix like /api: no query, fragment, empty, . or .. segment")
            .reason(kube::core::Reason::FieldValueInvalid),
    )]
    #[schemars(length(max = 16), inner(length(min = 1, max = 1024)))]
    pub api_paths: Vec<String>,

    /// What reaches the app on an admitted request.
    #[serde(default)]
    pub forward: Forward,
}

/// The identity headers and the token the forward-auth answer carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Identity headers with a value: `user` (X-Auth-Request-User),
    /// `email`, `groups`, `provider`. The others are sent empty, so a
    /// client cannot supply its own through the proxy. Default: all four.
    #[serde(default = "all_headers")]
    #[schemars(length(max = 4))]
    pub headers: Vec<IdentityHeader>,
    /// A token of the user's, as `Authorization: Bearer <token>`: `None`
    /// (the default), `AccessToken` (for an app that calls APIs as the
    /// user) or `IDToken`. Kept current by session refresh; an expired
    /// access token is not forwarded (the user signs in again).
    #[serde(default)]
    pub token: ForwardToken,
}

impl Default for Forward {
    fn default() -> Self {
        Self {
            headers: all_headers(),
            token: ForwardToken::None,
        }
    }
}

fn all_headers() -> Vec<IdentityHeader> {
    vec![
        IdentityHeader::User,
        IdentityHeader::Email,
        IdentityHeader::Groups,
        IdentityHeader::Provider,
    ]
}

/// An identity header.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityHeader {
    User,
    Email,
    Groups,
    Provider,
}

/// The token forwarded to the app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ForwardToken {
    #[default]
    None,
    AccessToken,
    #[serde(rename = "IDToken")]
    IdToken,
}

/// What a request without a usable session gets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Unauthenticated {
    /// Browsers to the login page (where the proxy passes the answer on);
    /// 401 for API calls.
    #[default]
    Redirect,
    /// 401, always.
    Deny,
}

/// An IdentityProvider, by name and optionally namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// Name of the IdentityProvider.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its namespace; the policy's own namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Allow and deny rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRules {
    /// A user any of these rules matches may reach the app (unless a deny
    /// rule matches).
    #[schemars(length(min = 1, max = 64))]
    pub allow: Vec<AccessRule>,
    /// A user any of these rules matches is refused, whatever the allow
    /// rules say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub deny: Vec<AccessRule>,
}

/// One rule. It matches a user when every list it sets has a match (the
/// values within one list are alternatives). A rule must set at least one
/// list.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[x_kube(
    validation = Rule::new("(has(self.users) && size(self.users) > 0) || (has(self.emails) && size(self.emails) > 0) || (has(self.emailDomains) && size(self.emailDomains) > 0) || (has(self.groups) && size(self.groups) > 0) || (has(self.claims) && size(self.claims) > 0)")
        .message("a rule must list at least one of users, emails, emailDomains, groups or claims (an empty rule would match nobody)")
        .reason(kube::core::Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// Usernames, as the provider's claim mapping gives them (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub users: Vec<String>,
    /// Email addresses (compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 3, max = 320)))]
    pub emails: Vec<String>,
    /// Email domains (`example.com`: exactly that domain, not its
    /// subdomains; case-insensitive). A domain matches only when the
    /// session's provider verified it (its spec.domains, proven by DNS),
    /// unless `anyProviderDomain` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub email_domains: Vec<String>,
    /// Let `emailDomains` match an email whatever provider vouches for it,
    /// verified domain or not. Default false: any provider can put any
    /// address in a token, and only the domain's verified provider is
    /// believed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_provider_domain: bool,
    /// Groups, from the provider's groups claim (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub groups: Vec<String>,
    /// Claim values, from the ID token (and userinfo, when the broker
    /// fetches it): each listed claim must have one of its values (a
    /// string claim equal to one, a list claim containing one; booleans
    /// and numbers by their JSON text, `true`, `42`). A dotted name walks
    /// nested objects (`realm_access.roles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub claims: Vec<ClaimValues>,
}

/// A claim and the values that match it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ClaimValues {
    /// The claim's name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Values that match.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 256)))]
    pub values: Vec<String>,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The forward-auth URL to give the app's proxy (nginx `auth-url`,
    /// Traefik `forwardAuth.address`, Caddy `forward_auth`).
    #[serde(default, rename = "authURL", skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: Accepted, ResolvedRefs, Programmed and the Ready summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The controller's cache keeps the status here, deflated
    /// ([`super::packed`]); never serialized.
    #[serde(skip)]
    #[schemars(skip)]
    pub packed: Option<super::packed::Packed>,
}

impl AccessPolicy {
    /// `namespace/name`, the key the broker and metrics use.
    pub fn key(&self) -> String {
        super::key_of(&self.metadata)
    }
}
