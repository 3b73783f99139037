//! Why a login or a request was refused. Every refusal has a stable reason
//! code (shown on the error page as `data-reason`, used as the metric label
//! and in the one log line per failure), an HTTP status, and a message a
//! user or operator can act on. Messages never carry secrets or tokens.
//!
//! The message is shown to whoever asked, who may be anonymous; what only
//! an operator should see (endpoint URLs, connection errors, a provider's
//! answer, a Ready message naming Secrets) goes in `detail`, which reaches
//! the log line and never a page: a tenant's provider pointed at an
//! internal service must not turn the login page into a port scanner.

use axum::http::StatusCode;

/// A refusal, with the reason and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// For the user: what happened and what to do.
    pub message: String,
    /// For the operator's log only.
    pub detail: Option<String>,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds what only the log may show.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// For log lines: the message and the detail.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

macro_rules! reasons {
    ($($variant:ident => ($code:literal, $status:ident, $title:literal),)*) => {
        /// Stable refusal reasons.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason { $($variant,)* }

        impl Reason {
            /// All reasons, for documentation and metric pre-registration.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable code (snake_case).
            pub fn code(self) -> &'static str {
                match self { $(Reason::$variant => $code,)* }
            }

            pub fn status(self) -> StatusCode {
                match self { $(Reason::$variant => StatusCode::$status,)* }
            }

            /// A short page title.
            pub fn title(self) -> &'static str {
                match self { $(Reason::$variant => $title,)* }
            }
        }
    };
}

reasons! {
    // Choosing a provider.
    UnknownProvider => ("unknown_provider", NOT_FOUND, "Unknown identity provider"),
    UnknownPolicy => ("unknown_policy", NOT_FOUND, "Unknown access policy"),
    ProviderDisabled => ("provider_disabled", FORBIDDEN, "Identity provider disabled"),
    ProviderNotReady => ("provider_not_ready", SERVICE_UNAVAILABLE, "Identity provider not ready"),
    NoProviders => ("no_providers", SERVICE_UNAVAILABLE, "No identity provider configured"),
    InvalidRequest => ("invalid_request", BAD_REQUEST, "Invalid request"),
    InvalidRedirect => ("invalid_redirect", BAD_REQUEST, "Redirect target not allowed"),
    // The callback and its state.
    StateMismatch => ("state_mismatch", BAD_REQUEST, "Login state does not match"),
    LoginExpired => ("login_expired", BAD_REQUEST, "Login took too long"),
    IdpError => ("idp_error", UNAUTHORIZED, "The identity provider refused the login"),
    IssuerMismatch => ("issuer_mismatch", BAD_REQUEST, "Response from the wrong identity provider"),
    // The token endpoint.
    TokenError => ("token_error", BAD_GATEWAY, "The identity provider refused the code"),
    TokenUnreachable => ("token_unreachable", BAD_GATEWAY, "The identity provider is unreachable"),
    TokenInvalidResponse => ("token_invalid_response", BAD_GATEWAY, "Invalid answer from the identity provider"),
    MissingIdToken => ("missing_id_token", BAD_GATEWAY, "No ID token from the identity provider"),
    // The ID token.
    MalformedIdToken => ("malformed_id_token", UNAUTHORIZED, "Malformed ID token"),
    JwksUnavailable => ("jwks_unavailable", BAD_GATEWAY, "Signing keys unavailable"),
    UnknownKey => ("unknown_key", UNAUTHORIZED, "ID token signed with an unknown key"),
    AmbiguousKey => ("ambiguous_key", UNAUTHORIZED, "ID token names no key and several fit"),
    DisallowedAlg => ("disallowed_alg", UNAUTHORIZED, "ID token signature algorithm not allowed"),
    InvalidSignature => ("invalid_signature", UNAUTHORIZED, "ID token signature is invalid"),
    InvalidIssuer => ("invalid_issuer", UNAUTHORIZED, "ID token from the wrong issuer"),
    InvalidAudience => ("invalid_audience", UNAUTHORIZED, "ID token for another client"),
    InvalidAzp => ("invalid_azp", UNAUTHORIZED, "ID token authorized for another party"),
    TokenExpired => ("token_expired", UNAUTHORIZED, "ID token expired"),
    IssuedInFuture => ("issued_in_future", UNAUTHORIZED, "ID token issued in the future"),
    NotYetValid => ("token_not_yet_valid", UNAUTHORIZED, "ID token not valid yet"),
    InvalidNonce => ("invalid_nonce", UNAUTHORIZED, "ID token nonce does not match"),
    MissingSub => ("missing_sub", UNAUTHORIZED, "ID token has no subject"),
    InvalidSubject => ("invalid_subject", UNAUTHORIZED, "Refreshed ID token is for another user"),
    // Userinfo.
    UserinfoError => ("userinfo_error", BAD_GATEWAY, "User info unavailable"),
    UserinfoSubMismatch => ("userinfo_sub_mismatch", UNAUTHORIZED, "User info is for another user"),
    // The user.
    UnverifiedEmail => ("unverified_email", FORBIDDEN, "Email address not verified"),
    UnverifiedDomain => ("unverified_domain", FORBIDDEN, "Email domain not verified"),
    AccessDenied => ("access_denied", FORBIDDEN, "Access denied"),
    SessionTooLarge => ("session_too_large", INTERNAL_SERVER_ERROR, "Session too large"),
    // Refresh.
    SessionRevoked => ("session_revoked", UNAUTHORIZED, "Session ended by the identity provider"),
}
