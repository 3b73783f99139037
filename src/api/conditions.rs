//! Condition types and reasons: the stable vocabulary of `status.conditions`.
//!
//! Every string the controller writes into a condition comes from here, so a
//! reason is typed once and a test can name it exactly.

/// A condition's `status`: the three values Kubernetes conditions allow.
/// Typed so no code spells `"True"` by hand; it still compares equal to the
/// string it serializes as, which is what `status.conditions[].status` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// Whether a condition's status string is `True`.
    pub fn is_true(status: &str) -> bool {
        status == Status::True.as_str()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Status> for &str {
    fn eq(&self, other: &Status) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Status> for String {
    fn eq(&self, other: &Status) -> bool {
        self == other.as_str()
    }
}

/// Condition types, in the order they are evaluated.
pub mod types {
    pub const CONFIG_VALID: &str = "ConfigValid";
    pub const SECRET_RESOLVED: &str = "SecretResolved";
    pub const DISCOVERY_SUCCEEDED: &str = "DiscoverySucceeded";
    pub const JWKS_VALID: &str = "JWKSValid";
    pub const PROGRAMMED: &str = "Programmed";
    pub const READY: &str = "Ready";
    /// kstatus: True while the controller has not finished with the
    /// current generation (first check pending, or retrying an outage).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the provider cannot work until someone changes
    /// something (phase `Error`), so Flux and kstatus report a failure
    /// instead of waiting for a timeout.
    pub const STALLED: &str = "Stalled";

    /// Whether every domain in spec.domains is verified (only on
    /// providers that list domains; not part of Ready: a provider serves
    /// its other users while a domain is pending).
    pub const DOMAINS_VERIFIED: &str = "DomainsVerified";

    /// All condition types the controller owns (and DomainsVerified).
    pub const ALL: [&str; 8] = [
        CONFIG_VALID,
        SECRET_RESOLVED,
        DISCOVERY_SUCCEEDED,
        JWKS_VALID,
        PROGRAMMED,
        READY,
        RECONCILING,
        STALLED,
    ];

    /// Types that restate `Ready` for kstatus; their transitions raise no
    /// Event of their own (Ready's says it).
    pub const RESTATING_READY: [&str; 2] = [RECONCILING, STALLED];
}

/// AccessPolicy condition types (with [`types::PROGRAMMED`] and
/// [`types::READY`]), as Gateway API names a route's.
pub mod policy_types {
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
}

/// Condition reasons. `True` conditions use a positive reason; `False` and
/// `Unknown` ones say what failed.
pub mod reasons {
    // ConfigValid
    pub const VALID: &str = "Valid";
    pub const INVALID_ISSUER: &str = "InvalidIssuer";
    pub const INVALID_CLIENT_ID: &str = "InvalidClientID";
    pub const DISALLOWED_PARAMETER: &str = "DisallowedParameter";
    pub const UNSUPPORTED_AUTH_METHOD: &str = "UnsupportedAuthMethod";
    pub const UNSUPPORTED_PKCE: &str = "UnsupportedPKCE";
    pub const INVALID_ENDPOINT: &str = "InvalidEndpoint";
    pub const INVALID_SCOPES: &str = "InvalidScopes";
    pub const INVALID_TLS_CONFIG: &str = "InvalidTLSConfig";

    // SecretResolved
    pub const RESOLVED: &str = "Resolved";
    pub const NOT_REQUIRED: &str = "NotRequired";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    /// A provider URL resolves only to addresses the egress policy refuses.
    pub const EGRESS_DENIED: &str = "EgressDenied";
    /// The Secret exists but is not of a type the provider may read.
    pub const SECRET_WRONG_TYPE: &str = "SecretWrongType";

    // DiscoverySucceeded / JWKSValid
    pub const DISCOVERED: &str = "Discovered";
    pub const ENDPOINTS_CONFIGURED: &str = "EndpointsConfigured";
    pub const UNREACHABLE: &str = "Unreachable";
    pub const INVALID_RESPONSE: &str = "InvalidResponse";
    pub const ISSUER_MISMATCH: &str = "IssuerMismatch";
    pub const INSECURE_ENDPOINT: &str = "InsecureEndpoint";
    pub const MISSING_ENDPOINT: &str = "MissingEndpoint";
    pub const TLS_INVALID: &str = "TLSInvalid";
    pub const KEYS_VALID: &str = "KeysValid";
    pub const NO_USABLE_KEYS: &str = "NoUsableKeys";

    // Programmed
    pub const PROGRAMMED: &str = "Programmed";
    pub const LAST_KNOWN_GOOD: &str = "LastKnownGood";
    pub const NOT_READY: &str = "NotReady";
    pub const DISABLED: &str = "Disabled";

    // Ready
    pub const READY: &str = "Ready";
    pub const DEGRADED: &str = "Degraded";

    // Programmed, Ready: the namespace holds more providers than the
    // cluster allows per namespace.
    pub const NAMESPACE_LIMIT: &str = "NamespaceLimitReached";

    // Reconciling and Stalled when False (True takes Ready's reason).
    pub const RECONCILED: &str = "Reconciled";
    pub const NOT_STALLED: &str = "NotStalled";

    // AccessPolicy: Accepted
    pub const ACCEPTED: &str = "Accepted";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const HOST_CONFLICT: &str = "HostConflict";
    /// A host another namespace owns (its `sso-operator.dev/hosts`
    /// annotation), or one outside the policy's own namespace's list.
    pub const HOST_NOT_OWNED: &str = "HostNotOwned";
    // AccessPolicy: ResolvedRefs
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    // AccessPolicy: Ready
    pub const NO_PROVIDER_READY: &str = "NoProviderReady";

    // `sso-operator check` without `--live`.
    pub const NOT_CHECKED: &str = "NotChecked";

    // Any condition whose prerequisite failed.
    pub const UNABLE_TO_VALIDATE: &str = "UnableToValidate";
}

/// `status.phase` values.
pub mod phases {
    pub const PENDING: &str = "Pending";
    pub const READY: &str = "Ready";
    pub const DEGRADED: &str = "Degraded";
    pub const ERROR: &str = "Error";
    pub const DISABLED: &str = "Disabled";
}
