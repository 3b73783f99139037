//! OpenID Connect discovery and JWKS checks, with a per-issuer cache.
//!
//! [`fetch`] does the I/O and turns every way a provider can be wrong into a
//! [`Failure`] carrying a stable condition reason; the pure validation core
//! only ever sees the resulting [`DiscoveryOutcome`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use openidconnect::JsonWebKeyUse;
use openidconnect::{
    JsonWebKey, JsonWebKeyAlgorithm,
    core::{CoreJsonWebKeySet, CoreJsonWebKeyType, CoreJwsSigningAlgorithm, CoreProviderMetadata},
};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use super::{egress::Egress, http::BodyError};
use crate::api::{EndpointOverrides, conditions::reasons};

pub use super::http::MAX_BODY_BYTES;

/// What to discover: the issuer plus anything that changes the answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiscoveryRequest {
    pub issuer: String,
    pub overrides: EndpointOverrides,
    /// Extra trusted CA certificates (PEM), when the provider uses a private CA.
    pub ca_bundle: Option<String>,
}

impl DiscoveryRequest {
    /// Discovery is skipped when authorization, token and JWKS endpoints are all given.
    pub fn skips_discovery(&self) -> bool {
        let o = &self.overrides;
        o.authorization.is_some() && o.token.is_some() && o.jwks.is_some()
    }
}

/// Why a fetch or a check failed: a stable condition reason and a message
/// that says what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// Failures that may heal by themselves (network, provider outage), as
    /// opposed to a provider that answers but is configured wrong. Only
    /// transient failures keep a provider's last known good configuration.
    pub fn is_transient(&self) -> bool {
        self.reason == reasons::UNREACHABLE
    }
}

/// Endpoints the broker needs, after discovery and overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProviderEndpoints {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    /// `token_endpoint_auth_methods_supported`; `None` when not advertised
    /// (the spec default is `client_secret_basic`).
    pub token_endpoint_auth_methods: Option<Vec<String>>,
    /// `token_endpoint_auth_signing_alg_values_supported` (for
    /// `private_key_jwt`); `None` when not advertised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_algs: Option<Vec<String>>,
    /// `code_challenge_methods_supported`; `None` when not advertised.
    pub code_challenge_methods: Option<Vec<String>>,
    /// `id_token_signing_alg_values_supported`, keeping the algorithms the
    /// broker accepts; `None` when not advertised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signing_algs: Option<Vec<String>>,
    /// Whether the endpoints came from a discovery document (false when all
    /// required endpoints were configured by hand).
    pub discovered: bool,
}

/// A summary of the provider's signing keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JwksSummary {
    /// Keys that can verify an ID token signature (asymmetric, signing use,
    /// a supported algorithm).
    pub usable_keys: usize,
    /// All keys in the document.
    pub total_keys: usize,
}

/// Everything discovery learned, or why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOutcome {
    pub endpoints: Result<ProviderEndpoints, Failure>,
    /// `None` when discovery failed before a JWKS URL was known.
    pub jwks: Option<Result<JwksSummary, Failure>>,
    /// When this outcome was fetched.
    pub fetched_at: jiff::Timestamp,
}

/// HTTP settings for talking to providers.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Which addresses provider URLs may reach.
    pub egress: Egress,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            egress: Egress::default(),
        }
    }
}

/// Whether `host` is a loopback host, where plain http is allowed.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks that `value` is an absolute https URL (http only on loopback).
/// `what` names the endpoint in the message.
pub fn check_endpoint_url(what: &str, value: &str) -> Result<Url, Failure> {
    let url = Url::parse(value).map_err(|e| {
        Failure::new(
            reasons::INVALID_RESPONSE,
            format!("{what} {value:?} is not a valid URL: {e}"),
        )
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        scheme => Err(Failure::new(
            reasons::INSECURE_ENDPOINT,
            format!(
                "{what} {value} uses {scheme}; only https is allowed (http only for loopback hosts)"
            ),
        )),
    }
}

/// The discovery document URL for an issuer: the issuer with any trailing
/// slash removed, then `/.well-known/openid-configuration` (OpenID Connect
/// Discovery 1.0, section 4), so issuers with a path keep it.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Builds the HTTP client for one request: bounded timeouts, no redirects
/// (a provider that redirects its discovery document is misconfigured, and
/// following redirects invites SSRF), optional extra CA roots.
pub fn http_client(
    settings: &HttpSettings,
    ca_bundle: Option<&str>,
) -> Result<reqwest::Client, Failure> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Connections go where the egress rule allows, judged on the
        // addresses this resolver hands the connector. (Through an
        // HTTPS_PROXY the proxy resolves names: filtering is then its job.)
        .dns_resolver(settings.egress.resolver())
        .user_agent(concat!("sso-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_bundle {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            Failure::new(
                reasons::TLS_INVALID,
                format!("caBundle is not valid PEM: {e}"),
            )
        })?;
        if certs.is_empty() {
            return Err(Failure::new(
                reasons::TLS_INVALID,
                "caBundle contains no PEM certificates",
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| {
        Failure::new(
            reasons::TLS_INVALID,
            format!("cannot build an HTTP client with this TLS configuration: {e}"),
        )
    })
}

/// GETs a JSON document, classifying failures. `what` names it in messages.
pub async fn get_json(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    settings: &HttpSettings,
) -> Result<serde_json::Value, Failure> {
    if let Err(denied) = settings.egress.check_url(url) {
        return Err(Failure::new(
            reasons::EGRESS_DENIED,
            format!("{what} at {url}: {denied}"),
        ));
    }
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| classify_request_error(what, url, &e, settings))?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        return Err(Failure::new(
            reasons::INVALID_RESPONSE,
            format!(
                "{what} at {url} redirected ({status}) to {location}; configure the URL it redirects to"
            ),
        ));
    }
    if !status.is_success() {
        // A 5xx is an outage that may heal; a 4xx means the URL is wrong.
        let reason = if status.is_server_error() {
            reasons::UNREACHABLE
        } else {
            reasons::INVALID_RESPONSE
        };
        return Err(Failure::new(
            reason,
            format!("{what} at {url} answered HTTP {status}"),
        ));
    }
    let body = match super::http::read_body(response, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge) => {
            return Err(Failure::new(
                reasons::INVALID_RESPONSE,
                format!("{what} at {url} is {e}"),
            ));
        }
        Err(BodyError::Read(e)) => return Err(classify_request_error(what, url, &e, settings)),
    };
    serde_json::from_slice(&body).map_err(|e| {
        Failure::new(
            reasons::INVALID_RESPONSE,
            format!("{what} at {url} is not valid JSON: {e}"),
        )
    })
}

fn classify_request_error(
    what: &str,
    url: &str,
    err: &reqwest::Error,
    settings: &HttpSettings,
) -> Failure {
    if let Some(denied) = super::egress::denied_in(err) {
        return Failure::new(reasons::EGRESS_DENIED, format!("{what} at {url}: {denied}"));
    }
    if err.is_timeout() {
        return Failure::new(
            reasons::UNREACHABLE,
            format!(
                "{what} at {url} did not answer within {}s",
                settings.timeout.as_secs_f32()
            ),
        );
    }
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("tls handshake")
        || lower.contains("unknownissuer")
    {
        return Failure::new(
            reasons::TLS_INVALID,
            format!(
                "TLS to {url} failed: {chain}; if the provider uses a private CA, set spec.tls.caBundle"
            ),
        );
    }
    Failure::new(
        reasons::UNREACHABLE,
        format!("{what} at {url} is unreachable: {chain}"),
    )
}

/// The error and its sources, joined, without Debug noise.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Reads the endpoints out of a discovery document and checks them.
pub fn endpoints_from_document(
    configured_issuer: &str,
    doc: &serde_json::Value,
    overrides: &EndpointOverrides,
) -> Result<ProviderEndpoints, Failure> {
    let url = discovery_url(configured_issuer);
    let Some(obj) = doc.as_object() else {
        return Err(Failure::new(
            reasons::INVALID_RESPONSE,
            format!("discovery document at {url} is not a JSON object"),
        ));
    };
    let string = |field: &str| obj.get(field).and_then(|v| v.as_str()).map(str::to_string);
    let Some(issuer) = string("issuer") else {
        return Err(Failure::new(
            reasons::INVALID_RESPONSE,
            format!("discovery document at {url} has no issuer"),
        ));
    };
    if issuer != configured_issuer {
        return Err(Failure::new(
            reasons::ISSUER_MISMATCH,
            format!(
                "the provider reports issuer {issuer:?} but spec.issuer is {configured_issuer:?}; they must match exactly (a trailing slash counts): set spec.issuer to {issuer:?}"
            ),
        ));
    }
    // Conformance of the whole document (with the configured overrides in
    // place), by the OpenID library the broker uses.
    let mut patched = obj.clone();
    for (_, field, value) in overrides.entries() {
        if let Some(v) = value {
            patched.insert(field.to_string(), serde_json::Value::String(v.clone()));
        }
    }
    if let Err(e) =
        serde_json::from_value::<CoreProviderMetadata>(serde_json::Value::Object(patched.clone()))
    {
        // Name a missing endpoint precisely before falling back to the parser's words.
        for field in ["authorization_endpoint", "jwks_uri"] {
            if !patched.get(field).is_some_and(|v| v.is_string()) {
                return Err(Failure::new(
                    reasons::MISSING_ENDPOINT,
                    format!(
                        "discovery document at {url} has no {field}; set it under spec.endpoints"
                    ),
                ));
            }
        }
        return Err(Failure::new(
            reasons::INVALID_RESPONSE,
            format!(
                "discovery document at {url} is not a valid OpenID provider configuration: {e}"
            ),
        ));
    }
    let pick = |field: &str, o: &Option<String>| o.clone().or_else(|| string(field));
    let required = |field: &str, o: &Option<String>, name: &str| -> Result<String, Failure> {
        let value = pick(field, o).ok_or_else(|| {
            Failure::new(
                reasons::MISSING_ENDPOINT,
                format!("discovery document at {url} has no {field}; set spec.endpoints.{name}"),
            )
        })?;
        check_endpoint_url(field, &value)?;
        Ok(value)
    };
    let optional = |field: &str, o: &Option<String>| -> Result<Option<String>, Failure> {
        match pick(field, o) {
            Some(value) => {
                check_endpoint_url(field, &value)?;
                Ok(Some(value))
            }
            None => Ok(None),
        }
    };
    let list = |field: &str| -> Option<Vec<String>> {
        obj.get(field).and_then(|v| v.as_array()).map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    };
    // The algorithms the provider signs ID tokens with, of those the broker
    // accepts. Advertising only others (HS256, none) makes it unusable.
    let id_token_signing_algs = match list("id_token_signing_alg_values_supported") {
        None => None,
        Some(advertised) => {
            let usable: Vec<String> = advertised
                .iter()
                .filter(|a| {
                    serde_json::from_value::<CoreJwsSigningAlgorithm>(serde_json::json!(a))
                        .is_ok_and(|alg| is_allowed_alg(&alg))
                })
                .cloned()
                .collect();
            if usable.is_empty() && !advertised.is_empty() {
                return Err(Failure::new(
                    reasons::INVALID_RESPONSE,
                    format!(
                        "the provider signs ID tokens with {} only (id_token_signing_alg_values_supported); the broker accepts asymmetric signatures (RS*, PS*, ES*, EdDSA), never \"none\" or HMAC",
                        advertised.join(", ")
                    ),
                ));
            }
            Some(usable)
        }
    };
    Ok(ProviderEndpoints {
        issuer,
        authorization_endpoint: required(
            "authorization_endpoint",
            &overrides.authorization,
            "authorization",
        )?,
        token_endpoint: required("token_endpoint", &overrides.token, "token")?,
        userinfo_endpoint: optional("userinfo_endpoint", &overrides.userinfo)?,
        jwks_uri: required("jwks_uri", &overrides.jwks, "jwks")?,
        end_session_endpoint: optional("end_session_endpoint", &overrides.end_session)?,
        token_endpoint_auth_methods: list("token_endpoint_auth_methods_supported"),
        token_endpoint_auth_signing_algs: list("token_endpoint_auth_signing_alg_values_supported"),
        code_challenge_methods: list("code_challenge_methods_supported"),
        id_token_signing_algs,
        discovered: true,
    })
}

/// Endpoints taken wholly from `spec.endpoints`, when discovery is skipped.
pub fn endpoints_from_overrides(
    issuer: &str,
    o: &EndpointOverrides,
) -> Result<ProviderEndpoints, Failure> {
    let need = |name: &str, v: &Option<String>| -> Result<String, Failure> {
        let v = v.clone().ok_or_else(|| {
            Failure::new(
                reasons::MISSING_ENDPOINT,
                format!("spec.endpoints.{name} is required"),
            )
        })?;
        check_endpoint_url(&format!("spec.endpoints.{name}"), &v)?;
        Ok(v)
    };
    let opt = |name: &str, v: &Option<String>| -> Result<Option<String>, Failure> {
        v.as_ref()
            .map(|v| check_endpoint_url(&format!("spec.endpoints.{name}"), v).map(|_| v.clone()))
            .transpose()
    };
    Ok(ProviderEndpoints {
        issuer: issuer.to_string(),
        authorization_endpoint: need("authorization", &o.authorization)?,
        token_endpoint: need("token", &o.token)?,
        userinfo_endpoint: opt("userinfo", &o.userinfo)?,
        jwks_uri: need("jwks", &o.jwks)?,
        end_session_endpoint: opt("endSession", &o.end_session)?,
        token_endpoint_auth_methods: None,
        token_endpoint_auth_signing_algs: None,
        code_challenge_methods: None,
        id_token_signing_algs: None,
        discovered: false,
    })
}

/// The JWKS document without keys whose `key_ops` (RFC 7517 4.3) is
/// present and does not include `verify`: a key the IdP marked for
/// encryption or signing only never verifies an ID token. (`use` and `alg`
/// are checked on the parsed keys; openidconnect does not keep `key_ops`.)
pub fn verify_keys_only(doc: &serde_json::Value) -> serde_json::Value {
    let mut doc = doc.clone();
    if let Some(keys) = doc.get_mut("keys").and_then(|k| k.as_array_mut()) {
        keys.retain(|k| match k.get("key_ops") {
            None => true,
            Some(ops) => ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o == "verify")),
        });
    }
    doc
}

/// Counts the keys in a JWKS document that can verify an ID token.
pub fn summarize_jwks(url: &str, doc: &serde_json::Value) -> Result<JwksSummary, Failure> {
    let total_keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .map(Vec::len)
        .ok_or_else(|| {
            Failure::new(
                reasons::INVALID_RESPONSE,
                format!("JWKS at {url} has no \"keys\" array"),
            )
        })?;
    let set: CoreJsonWebKeySet = serde_json::from_value(verify_keys_only(doc)).map_err(|e| {
        Failure::new(
            reasons::INVALID_RESPONSE,
            format!("JWKS at {url} is not a valid JSON Web Key Set: {e}"),
        )
    })?;
    let usable_keys = set
        .keys()
        .iter()
        .filter(|k| is_usable_signing_key(k))
        .count();
    if usable_keys == 0 {
        return Err(Failure::new(
            reasons::NO_USABLE_KEYS,
            format!(
                "JWKS at {url} has {total_keys} key(s) but none can verify an ID token (need an RSA, EC or OKP key with use \"sig\" or no use, and a supported signing alg)"
            ),
        ));
    }
    Ok(JwksSummary {
        usable_keys,
        total_keys,
    })
}

/// An asymmetric key usable for signatures with an algorithm we accept.
pub fn is_usable_signing_key(key: &openidconnect::core::CoreJsonWebKey) -> bool {
    if let Some(use_) = key.key_use()
        && !use_.allows_signature()
    {
        return false;
    }
    if matches!(key.key_type(), CoreJsonWebKeyType::Symmetric) {
        return false;
    }
    match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Unsupported => false,
        JsonWebKeyAlgorithm::Algorithm(alg) => is_allowed_alg(alg),
    }
}

/// The ID token signature algorithms the broker accepts: asymmetric only,
/// never `none`, never HMAC.
pub fn is_allowed_alg(alg: &CoreJwsSigningAlgorithm) -> bool {
    use CoreJwsSigningAlgorithm as A;
    matches!(
        alg,
        A::RsaSsaPkcs1V15Sha256
            | A::RsaSsaPkcs1V15Sha384
            | A::RsaSsaPkcs1V15Sha512
            | A::RsaSsaPssSha256
            | A::RsaSsaPssSha384
            | A::RsaSsaPssSha512
            | A::EcdsaP256Sha256
            | A::EcdsaP384Sha384
            | A::EdDsa
    )
}

/// Runs discovery and the JWKS check for one request. Never panics; every
/// failure is a [`Failure`] with a reason.
pub async fn fetch(req: &DiscoveryRequest, settings: &HttpSettings) -> DiscoveryOutcome {
    let fetched_at = jiff::Timestamp::now();
    let client = match http_client(settings, req.ca_bundle.as_deref()) {
        Ok(c) => c,
        Err(f) => {
            return DiscoveryOutcome {
                endpoints: Err(f),
                jwks: None,
                fetched_at,
            };
        }
    };
    let endpoints = if req.skips_discovery() {
        endpoints_from_overrides(&req.issuer, &req.overrides)
    } else {
        match get_json(
            &client,
            "discovery document",
            &discovery_url(&req.issuer),
            settings,
        )
        .await
        {
            Ok(doc) => endpoints_from_document(&req.issuer, &doc, &req.overrides),
            Err(f) => Err(f),
        }
    };
    let jwks = match &endpoints {
        Ok(e) => Some(
            match get_json(&client, "JWKS", &e.jwks_uri, settings).await {
                Ok(doc) => summarize_jwks(&e.jwks_uri, &doc),
                Err(f) => Err(f),
            },
        ),
        Err(_) => None,
    };
    DiscoveryOutcome {
        endpoints,
        jwks,
        fetched_at,
    }
}

/// How long a result is reused.
#[derive(Clone, Debug)]
pub struct CacheTtl {
    pub success: Duration,
    pub failure: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        Self {
            success: Duration::from_secs(300),
            failure: Duration::from_secs(20),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<DiscoveryOutcome>)>>>;

/// Discovery results cached per issuer, overrides and CA bundle: a hundred
/// providers on one issuer cost one fetch per cache period, and concurrent
/// reconciles of them wait for the one fetch in flight.
pub struct DiscoveryCache {
    slots: Mutex<HashMap<DiscoveryRequest, Slot>>,
    pub settings: HttpSettings,
    pub ttl: CacheTtl,
    pub fetches: Counter,
    pub hits: Counter,
}

impl DiscoveryCache {
    pub fn new(settings: HttpSettings, ttl: CacheTtl) -> Self {
        Self {
            slots: Mutex::default(),
            settings,
            ttl,
            fetches: Counter::default(),
            hits: Counter::default(),
        }
    }

    /// The cached outcome for `req`, fetching it when absent or expired.
    pub async fn get(&self, req: &DiscoveryRequest) -> Arc<DiscoveryOutcome> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(req.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some((at, outcome)) = guard.as_ref() {
            let ok = outcome.endpoints.is_ok() && matches!(outcome.jwks, Some(Ok(_)));
            let ttl = if ok {
                self.ttl.success
            } else {
                self.ttl.failure
            };
            if at.elapsed() < ttl {
                self.hits.inc();
                return outcome.clone();
            }
        }
        self.fetches.inc();
        let outcome = Arc::new(fetch(req, &self.settings).await);
        *guard = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Forgets entries no provider asked for within `max_age`, so a cache
    /// does not grow with every issuer ever configured.
    pub fn prune(&self, max_age: Duration) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(g) => g.as_ref().is_some_and(|(at, _)| at.elapsed() < max_age),
            Err(_) => true, // a fetch is in flight
        });
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_url_keeps_issuer_path() {
        assert_eq!(
            discovery_url("https://a.example/realms/x"),
            "https://a.example/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://a.example/realms/x/"),
            "https://a.example/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://a.example"),
            "https://a.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "http://localhost:1/",
            "http://127.0.0.1/",
            "http://127.8.0.1/",
            "http://[::1]:8080/",
        ] {
            assert!(is_loopback_host(&Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "http://idp.example/",
            "http://10.0.0.1/",
            "http://localhost.evil.example/",
        ] {
            assert!(!is_loopback_host(&Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn jwks_usable_keys() {
        let rsa = json!({"kty":"RSA","use":"sig","alg":"RS256","kid":"a","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"});
        let enc = json!({"kty":"RSA","use":"enc","kid":"b","n":"sXch","e":"AQAB"});
        let hmac = json!({"kty":"oct","kid":"c","k":"c2VjcmV0"});
        let none_alg = json!({"kty":"RSA","alg":"none","kid":"d","n":"sXch","e":"AQAB"});
        let ok = summarize_jwks("u", &json!({"keys":[rsa, enc.clone()]})).unwrap();
        assert_eq!(
            ok,
            JwksSummary {
                usable_keys: 1,
                total_keys: 2
            }
        );
        let err = summarize_jwks("u", &json!({"keys":[enc, hmac, none_alg]})).unwrap_err();
        assert_eq!(err.reason, reasons::NO_USABLE_KEYS);
        assert_eq!(
            summarize_jwks("u", &json!({"nokeys":1}))
                .unwrap_err()
                .reason,
            reasons::INVALID_RESPONSE
        );
        assert_eq!(
            summarize_jwks("u", &json!({"keys":[]})).unwrap_err().reason,
            reasons::NO_USABLE_KEYS
        );
        // key_ops without "verify" (or not a list) rules a key out.
        let with_ops = |ops: serde_json::Value| {
            let mut k = rsa.clone();
            k["key_ops"] = ops;
            summarize_jwks("u", &json!({ "keys": [k] })).map(|s| s.usable_keys)
        };
        assert_eq!(with_ops(json!(["verify"])), Ok(1));
        assert_eq!(with_ops(json!(["sign", "verify"])), Ok(1));
        for ops in [
            json!(["encrypt"]),
            json!(["sign"]),
            json!([]),
            json!("verify"),
        ] {
            assert_eq!(
                with_ops(ops.clone()).unwrap_err().reason,
                reasons::NO_USABLE_KEYS,
                "{ops}"
            );
        }
    }

    #[test]
    fn id_token_algs_keep_the_allowed_advertised_ones() {
        let base = doc("https://idp.example.com");
        let algs = |advertised: serde_json::Value| {
            let mut d = base.clone();
            d["id_token_signing_alg_values_supported"] = advertised;
            endpoints_from_document("https://idp.example.com", &d, &EndpointOverrides::default())
                .map(|e| e.id_token_signing_algs)
        };
        assert_eq!(
            algs(json!(["RS256", "HS256", "none", "ES256"])),
            Ok(Some(vec!["RS256".into(), "ES256".into()]))
        );
        let only_hmac = algs(json!(["HS256", "none"])).unwrap_err();
        assert_eq!(only_hmac.reason, reasons::INVALID_RESPONSE);
        assert!(
            only_hmac.message.contains("HS256, none only"),
            "{}",
            only_hmac.message
        );
        // The field is required by OpenID Connect Discovery: a document
        // without it is refused before this check.
        let mut silent = base.clone();
        silent
            .as_object_mut()
            .unwrap()
            .remove("id_token_signing_alg_values_supported");
        assert!(
            endpoints_from_document(
                "https://idp.example.com",
                &silent,
                &EndpointOverrides::default()
            )
            .is_err()
        );
    }

    fn doc(issuer: &str) -> serde_json::Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "userinfo_endpoint": format!("{issuer}/me"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        })
    }

    #[test]
    fn document_checks() {
        let none = EndpointOverrides::default();
        let e = endpoints_from_document("https://idp.example", &doc("https://idp.example"), &none)
            .unwrap();
        assert_eq!(e.token_endpoint, "https://idp.example/token");
        assert_eq!(
            e.code_challenge_methods.as_deref(),
            Some(&["S256".to_string()][..])
        );

        let f = endpoints_from_document("https://idp.example/", &doc("https://idp.example"), &none)
            .unwrap_err();
        assert_eq!(f.reason, reasons::ISSUER_MISMATCH);
        assert!(
            f.message
                .contains("set spec.issuer to \"https://idp.example\""),
            "{}",
            f.message
        );

        let mut d = doc("https://idp.example");
        d["token_endpoint"] = json!("http://idp.example/token");
        let f = endpoints_from_document("https://idp.example", &d, &none).unwrap_err();
        assert_eq!(f.reason, reasons::INSECURE_ENDPOINT);

        let mut d = doc("https://idp.example");
        d.as_object_mut().unwrap().remove("jwks_uri");
        let f = endpoints_from_document("https://idp.example", &d, &none).unwrap_err();
        assert_eq!(
            (f.reason.as_str(), f.message.contains("jwks_uri")),
            (reasons::MISSING_ENDPOINT, true)
        );
        // ... unless the override supplies it.
        let o = EndpointOverrides {
            jwks: Some("https://idp.example/keys".into()),
            ..Default::default()
        };
        assert_eq!(
            endpoints_from_document("https://idp.example", &d, &o)
                .unwrap()
                .jwks_uri,
            "https://idp.example/keys"
        );

        let mut d = doc("https://idp.example");
        d.as_object_mut().unwrap().remove("token_endpoint");
        let f = endpoints_from_document("https://idp.example", &d, &none).unwrap_err();
        assert_eq!(
            (f.reason.as_str(), f.message.contains("token_endpoint")),
            (reasons::MISSING_ENDPOINT, true)
        );
        let o = EndpointOverrides {
            token: Some("https://idp.example/t".into()),
            ..Default::default()
        };
        assert_eq!(
            endpoints_from_document("https://idp.example", &d, &o)
                .unwrap()
                .token_endpoint,
            "https://idp.example/t"
        );
    }
}
