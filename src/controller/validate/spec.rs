//! The spec alone, and the spec against what the provider advertises:
//! the `ConfigValid` condition.

use url::Url;

use super::CondResult;
use crate::{
    api::{
        ClientAuthMethod, IdentityProviderSpec, PkceMode, RESERVED_AUTHORIZE_PARAMS,
        conditions::{reasons, types},
    },
    oidc::discovery::{Failure, ProviderEndpoints, check_endpoint_url},
};

/// `ConfigValid`: the spec's own check (computed once, see
/// [`super::Facts`]), then the spec against the provider's discovery
/// document when there is one.
pub fn config_valid(
    spec: &IdentityProviderSpec,
    spec_check: &Result<(), Failure>,
    endpoints: Option<&ProviderEndpoints>,
    client_key_alg: Option<&str>,
) -> CondResult {
    let against_provider = || match endpoints {
        Some(e) => check_against_provider(spec, e, client_key_alg),
        None => Ok(()),
    };
    match spec_check.clone().and_then(|()| against_provider()) {
        Err(f) => CondResult::fail(types::CONFIG_VALID, &f),
        Ok(()) => CondResult::ok(types::CONFIG_VALID, reasons::VALID, "the spec is valid"),
    }
}

/// The callback URL the provider must have registered.
pub fn redirect_uri(public_url: &Url, namespace: &str, name: &str) -> String {
    format!(
        "{}/oauth/callback/{namespace}/{name}",
        public_url.as_str().trim_end_matches('/')
    )
}

/// Scopes to request: `openid` first, then the configured ones, deduplicated.
pub fn effective_scopes(spec: &IdentityProviderSpec) -> Vec<String> {
    let mut out = vec!["openid".to_string()];
    for s in &spec.scopes {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// Checks what the spec alone can tell: the same rules the CRD's CEL
/// expressions enforce at admission, plus what CEL cannot express.
pub fn check_spec(spec: &IdentityProviderSpec) -> Result<(), Failure> {
    check_issuer(&spec.issuer)?;
    check_client_id(spec)?;
    if let Some(k) = spec
        .authorize_params
        .keys()
        .find(|k| RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()))
    {
        return Err(Failure::new(
            reasons::DISALLOWED_PARAMETER,
            format!("spec.authorizeParams sets {k:?}, which the broker sets itself; remove it"),
        ));
    }
    check_auth_method(spec)?;
    if let Some(bad) = spec.scopes.iter().find(|s| {
        s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    }) {
        return Err(Failure::new(
            reasons::INVALID_SCOPES,
            format!("scope {bad:?} is empty or contains whitespace, a quote or a backslash"),
        ));
    }
    if let Some(o) = &spec.endpoints {
        for (name, _, v) in o.entries() {
            if let Some(v) = v {
                check_endpoint_url(&format!("spec.endpoints.{name}"), v)
                    .map_err(|f| Failure::new(reasons::INVALID_ENDPOINT, f.message))?;
            }
        }
    }
    check_tls(spec)
}

fn check_issuer(issuer: &str) -> Result<(), Failure> {
    let invalid = |m: String| Failure::new(reasons::INVALID_ISSUER, m);
    let url = Url::parse(issuer)
        .map_err(|e| invalid(format!("spec.issuer {issuer:?} is not a URL: {e}")))?;
    if issuer.contains('?') || issuer.contains('#') {
        return Err(invalid(
            "spec.issuer must not contain a query or fragment".into(),
        ));
    }
    check_endpoint_url("spec.issuer", issuer).map_err(|f| invalid(f.message))?;
    if url.host().is_none() {
        return Err(invalid("spec.issuer has no host".into()));
    }
    Ok(())
}

fn check_client_id(spec: &IdentityProviderSpec) -> Result<(), Failure> {
    let message = match (&spec.client_id, &spec.client_id_from) {
        (Some(_), Some(_)) => "set exactly one of spec.clientID and spec.clientIDFrom, not both",
        (None, None) => "set one of spec.clientID or spec.clientIDFrom",
        (Some(id), None) if id.trim().is_empty() || id.trim() != id => {
            "spec.clientID is empty or has surrounding whitespace"
        }
        _ => return Ok(()),
    };
    Err(Failure::new(reasons::INVALID_CLIENT_ID, message))
}

fn check_auth_method(spec: &IdentityProviderSpec) -> Result<(), Failure> {
    let message = match spec.client_auth_method {
        ClientAuthMethod::PrivateKeyJwt if spec.client_secret_ref.is_none() => {
            "clientAuthMethod private_key_jwt needs spec.clientSecretRef naming the Secret key that holds the client's PEM private key".to_string()
        }
        ClientAuthMethod::None if spec.pkce != PkceMode::S256 => {
            "clientAuthMethod none (a public client) requires pkce: S256".to_string()
        }
        ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
            if spec.client_secret_ref.is_none() =>
        {
            format!(
                "clientAuthMethod {} needs spec.clientSecretRef; set it, or use clientAuthMethod none for a public client",
                spec.client_auth_method.as_str()
            )
        }
        _ => return Ok(()),
    };
    Err(Failure::new(reasons::UNSUPPORTED_AUTH_METHOD, message))
}

fn check_tls(spec: &IdentityProviderSpec) -> Result<(), Failure> {
    let Some(tls) = &spec.tls else { return Ok(()) };
    let invalid = |m: String| Failure::new(reasons::INVALID_TLS_CONFIG, m);
    match (&tls.ca_bundle, &tls.ca_bundle_secret_ref) {
        (Some(_), Some(_)) => Err(invalid(
            "set at most one of spec.tls.caBundle and spec.tls.caBundleSecretRef".into(),
        )),
        (Some(pem), None) => check_pem(pem).map_err(|m| invalid(format!("spec.tls.caBundle {m}"))),
        _ => Ok(()),
    }
}

/// Checks a PEM CA bundle; the error completes a sentence about the field.
pub(super) fn check_pem(pem: &str) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| format!("is not valid PEM: {e}"))?;
        count += 1;
    }
    // The same parser the HTTP client uses must accept it too.
    match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
        Ok(_) if count > 0 => Ok(()),
        Ok(_) => Err("contains no PEM certificate".into()),
        Err(_) => Err("is not a valid PEM certificate bundle".into()),
    }
}

/// Checks the configured auth method and PKCE against what the provider
/// advertises.
fn check_against_provider(
    spec: &IdentityProviderSpec,
    e: &ProviderEndpoints,
    client_key_alg: Option<&str>,
) -> Result<(), Failure> {
    let method = spec.client_auth_method.as_str();
    // Absent means the spec default, client_secret_basic.
    let supported = e
        .token_endpoint_auth_methods
        .clone()
        .unwrap_or_else(|| vec!["client_secret_basic".into()]);
    if e.discovered && !supported.iter().any(|m| m == method) {
        return Err(Failure::new(
            reasons::UNSUPPORTED_AUTH_METHOD,
            format!(
                "the provider supports token endpoint auth methods [{}], not {method}; set spec.clientAuthMethod to one of them",
                supported.join(", ")
            ),
        ));
    }
    if let (Some(alg), Some(algs)) = (client_key_alg, &e.token_endpoint_auth_signing_algs)
        && !algs.iter().any(|a| a == alg)
    {
        return Err(Failure::new(
            reasons::UNSUPPORTED_AUTH_METHOD,
            format!(
                "the client's private key signs {alg}, but the provider accepts client assertions signed with [{}]; use a key of a type it accepts (RSA signs RS256, EC P-256 signs ES256)",
                algs.join(", ")
            ),
        ));
    }
    if spec.pkce == PkceMode::S256
        && let Some(methods) = &e.code_challenge_methods
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(Failure::new(
            reasons::UNSUPPORTED_PKCE,
            format!(
                "the provider advertises code_challenge_methods_supported [{}] without S256; set spec.pkce: Disabled",
                methods.join(", ")
            ),
        ));
    }
    Ok(())
}
