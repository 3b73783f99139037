//! The pure validation core:
//! `(spec, secrets, discovery outcome, last programmed entry, env) -> (conditions, programming)`.
//!
//! No I/O and no clock reads: the controller, `sso-operator check` and
//! `sso-operator dev` all call [`validate`] with inputs they fetched.
//! Each input gets its own checking function returning one condition, as
//! Pinniped's upstream watcher does.

use std::collections::BTreeMap;

use url::Url;

use crate::{
    api::{
        ClientAuthMethod, DiscoveredStatus, IdentityProvider, IdentityProviderSpec, PkceMode,
        RESERVED_AUTHORIZE_PARAMS, SecretKeyRef,
        conditions::{phases, reasons, types},
    },
    config::{ProgrammedProvider, Unavailable},
    oidc::{
        assertion::ClientKey,
        discovery::{
            DiscoveryOutcome, DiscoveryRequest, Failure, ProviderEndpoints, check_endpoint_url,
        },
    },
};

/// Secrets in the provider's namespace that the provider references, by
/// name. A name that is absent was not found.
pub type SecretData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// A condition before the status merge adds timestamps and generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondResult {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl CondResult {
    fn new(
        type_: &'static str,
        status: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, "True", reason, message)
    }
    fn fail(type_: &'static str, f: &Failure) -> Self {
        Self::new(type_, "False", &f.reason, f.message.clone())
    }
    fn unknown(type_: &'static str, message: impl Into<String>) -> Self {
        Self::new(type_, "Unknown", reasons::UNABLE_TO_VALIDATE, message)
    }
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// What the broker config should hold for this provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Programming {
    /// Program (or replace with) this entry.
    Program(Box<ProgrammedProvider>),
    /// Keep serving this last known good entry (credentials refreshed).
    KeepLastKnownGood(Box<ProgrammedProvider>),
    /// Not in the broker config.
    Remove,
}

impl Programming {
    pub fn entry(&self) -> Option<&ProgrammedProvider> {
        match self {
            Self::Program(p) | Self::KeepLastKnownGood(p) => Some(p),
            Self::Remove => None,
        }
    }
}

/// Why a provider that is not programmed cannot serve, for the broker's
/// login page and error page; `None` when it is programmed.
pub fn unavailable_entry(idp: &IdentityProvider, v: &Validation) -> Option<Unavailable> {
    if v.programming.entry().is_some() {
        return None;
    }
    let ready = v.condition(types::READY);
    Some(Unavailable {
        display_name: idp
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(idp)),
        disabled: !idp.spec.enabled,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
    })
}

/// The outcome of validating one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// One per type in [`types::ALL`], in that order.
    pub conditions: Vec<CondResult>,
    pub phase: &'static str,
    pub programming: Programming,
    pub redirect_uri: String,
    pub discovered: Option<DiscoveredStatus>,
}

impl Validation {
    pub fn condition(&self, type_: &str) -> &CondResult {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("every condition type is present")
    }
}

/// Facts about the environment the core needs.
#[derive(Clone, Debug)]
pub struct Env {
    /// The broker's public base URL, e.g. `https://sso.example.com`.
    pub public_url: Url,
}

/// Values resolved from Secrets.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// The JWS algorithm of the `private_key_jwt` key in `client_secret`.
    pub client_key_alg: Option<&'static str>,
    pub ca_bundle: Option<String>,
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
    let issuer = Url::parse(&spec.issuer).map_err(|e| {
        Failure::new(
            reasons::INVALID_ISSUER,
            format!("spec.issuer {:?} is not a URL: {e}", spec.issuer),
        )
    })?;
    if spec.issuer.contains('?') || spec.issuer.contains('#') {
        return Err(Failure::new(
            reasons::INVALID_ISSUER,
            "spec.issuer must not contain a query or fragment",
        ));
    }
    check_endpoint_url("spec.issuer", &spec.issuer)
        .map_err(|f| Failure::new(reasons::INVALID_ISSUER, f.message))?;
    if issuer.host().is_none() {
        return Err(Failure::new(
            reasons::INVALID_ISSUER,
            "spec.issuer has no host",
        ));
    }
    match (&spec.client_id, &spec.client_id_from) {
        (Some(_), Some(_)) => {
            return Err(Failure::new(
                reasons::INVALID_CLIENT_ID,
                "set exactly one of spec.clientID and spec.clientIDFrom, not both",
            ));
        }
        (None, None) => {
            return Err(Failure::new(
                reasons::INVALID_CLIENT_ID,
                "set one of spec.clientID or spec.clientIDFrom",
            ));
        }
        (Some(id), None) if id.trim().is_empty() || id.trim() != id => {
            return Err(Failure::new(
                reasons::INVALID_CLIENT_ID,
                "spec.clientID is empty or has surrounding whitespace",
            ));
        }
        _ => {}
    }
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
    match spec.client_auth_method {
        ClientAuthMethod::PrivateKeyJwt if spec.client_secret_ref.is_none() => {
            return Err(Failure::new(
                reasons::UNSUPPORTED_AUTH_METHOD,
                "clientAuthMethod private_key_jwt needs spec.clientSecretRef naming the Secret key that holds the client's PEM private key",
            ));
        }
        ClientAuthMethod::None if spec.pkce != PkceMode::S256 => {
            return Err(Failure::new(
                reasons::UNSUPPORTED_AUTH_METHOD,
                "clientAuthMethod none (a public client) requires pkce: S256",
            ));
        }
        ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
            if spec.client_secret_ref.is_none() =>
        {
            return Err(Failure::new(
                reasons::UNSUPPORTED_AUTH_METHOD,
                format!(
                    "clientAuthMethod {} needs spec.clientSecretRef; set it, or use clientAuthMethod none for a public client",
                    spec.client_auth_method.as_str()
                ),
            ));
        }
        _ => {}
    }
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
    if let Some(tls) = &spec.tls {
        match (&tls.ca_bundle, &tls.ca_bundle_secret_ref) {
            (Some(_), Some(_)) => {
                return Err(Failure::new(
                    reasons::INVALID_TLS_CONFIG,
                    "set at most one of spec.tls.caBundle and spec.tls.caBundleSecretRef",
                ));
            }
            (Some(pem), None) => check_pem(pem).map_err(|m| {
                Failure::new(
                    reasons::INVALID_TLS_CONFIG,
                    format!("spec.tls.caBundle {m}"),
                )
            })?,
            _ => {}
        }
    }
    Ok(())
}

fn check_pem(pem: &str) -> Result<(), String> {
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

/// Reads one key of a referenced Secret as a UTF-8 string.
fn secret_value(
    ns: &str,
    r: &SecretKeyRef,
    secrets: &SecretData,
    field: &str,
) -> Result<String, Failure> {
    let Some(data) = secrets.get(&r.name) else {
        return Err(Failure::new(
            reasons::SECRET_NOT_FOUND,
            format!(
                "Secret {ns}/{} (from {field}) not found; create it with key {:?}",
                r.name, r.key
            ),
        ));
    };
    let Some(bytes) = data.get(&r.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(Failure::new(
            reasons::SECRET_KEY_MISSING,
            format!(
                "Secret {ns}/{} (from {field}) has no key {:?}; it has [{}]",
                r.name,
                r.key,
                keys.join(", ")
            ),
        ));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Failure::new(
            reasons::SECRET_INVALID,
            format!(
                "key {:?} of Secret {ns}/{} (from {field}) is not UTF-8 text",
                r.key, r.name
            ),
        )
    })?;
    if text.is_empty() {
        return Err(Failure::new(
            reasons::SECRET_INVALID,
            format!(
                "key {:?} of Secret {ns}/{} (from {field}) is empty",
                r.key, r.name
            ),
        ));
    }
    Ok(text.to_string())
}

/// A credential with surrounding whitespace is almost always `echo` without
/// `-n`; the provider would reject it with an opaque error at login time.
fn check_credential(ns: &str, r: &SecretKeyRef, field: &str, value: &str) -> Result<(), Failure> {
    if value.trim() != value {
        return Err(Failure::new(
            reasons::SECRET_INVALID,
            format!(
                "key {:?} of Secret {ns}/{} (from {field}) has leading or trailing whitespace (often a newline from echo); store the value without it",
                r.key, r.name
            ),
        ));
    }
    Ok(())
}

/// Resolves the client ID, client secret and CA bundle from Secrets.
pub fn resolve_secrets(
    ns: &str,
    spec: &IdentityProviderSpec,
    secrets: &SecretData,
) -> Result<Resolved, Failure> {
    let client_id = match (&spec.client_id, &spec.client_id_from) {
        (Some(id), _) => id.clone(),
        (None, Some(r)) => {
            let v = secret_value(ns, r, secrets, "spec.clientIDFrom")?;
            check_credential(ns, r, "spec.clientIDFrom", &v)?;
            v
        }
        (None, None) => String::new(),
    };
    let mut client_key_alg = None;
    let client_secret = match (&spec.client_secret_ref, spec.client_auth_method) {
        (_, ClientAuthMethod::None) | (None, _) => None,
        (Some(r), ClientAuthMethod::PrivateKeyJwt) => {
            let v = secret_value(ns, r, secrets, "spec.clientSecretRef")?;
            let key = ClientKey::from_pem(&v).map_err(|e| {
                Failure::new(
                    reasons::SECRET_INVALID,
                    format!(
                        "key {:?} of Secret {ns}/{} (from spec.clientSecretRef) is not a private key for private_key_jwt: {e}",
                        r.key, r.name
                    ),
                )
            })?;
            client_key_alg = Some(key.alg());
            Some(v)
        }
        (Some(r), _) => {
            let v = secret_value(ns, r, secrets, "spec.clientSecretRef")?;
            check_credential(ns, r, "spec.clientSecretRef", &v)?;
            Some(v)
        }
    };
    let ca_bundle = resolve_ca(ns, spec, secrets)?;
    Ok(Resolved {
        client_id,
        client_secret,
        client_key_alg,
        ca_bundle,
    })
}

/// The Secret names a provider references, for the controller's Secret watch.
pub fn referenced_secrets(spec: &IdentityProviderSpec) -> Vec<String> {
    let mut names: Vec<String> = [
        spec.client_id_from.as_ref(),
        spec.client_secret_ref.as_ref(),
        spec.tls
            .as_ref()
            .and_then(|t| t.ca_bundle_secret_ref.as_ref()),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.clone())
    .collect();
    names.sort();
    names.dedup();
    names
}

/// What to ask the discovery cache, or `None` when the spec or the CA
/// bundle is not usable yet.
pub fn discovery_request(
    spec: &IdentityProviderSpec,
    ns: &str,
    secrets: &SecretData,
) -> Option<DiscoveryRequest> {
    check_spec(spec).ok()?;
    // The CA bundle resolves independently of the client credentials.
    let ca_bundle = resolve_ca(ns, spec, secrets).ok()?;
    Some(DiscoveryRequest {
        issuer: spec.issuer.clone(),
        overrides: spec.endpoints.clone().unwrap_or_default(),
        ca_bundle,
    })
}

/// The extra CA bundle (PEM) for talking to the provider, inline or from a
/// Secret.
fn resolve_ca(
    ns: &str,
    spec: &IdentityProviderSpec,
    secrets: &SecretData,
) -> Result<Option<String>, Failure> {
    let Some(t) = spec.tls.as_ref() else {
        return Ok(None);
    };
    match (&t.ca_bundle, &t.ca_bundle_secret_ref) {
        (Some(pem), _) => Ok(Some(pem.clone())),
        (None, Some(r)) => {
            let field = "spec.tls.caBundleSecretRef";
            let pem = secret_value(ns, r, secrets, field)?;
            check_pem(&pem).map_err(|m| {
                Failure::new(
                    reasons::SECRET_INVALID,
                    format!(
                        "key {:?} of Secret {ns}/{} (from {field}) {m}",
                        r.key, r.name
                    ),
                )
            })?;
            Ok(Some(pem))
        }
        (None, None) => Ok(None),
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

/// Builds the broker entry for a fully validated provider.
fn program(
    idp: &IdentityProvider,
    resolved: &Resolved,
    endpoints: &ProviderEndpoints,
    env: &Env,
) -> ProgrammedProvider {
    let spec = &idp.spec;
    let ns = idp.metadata.namespace.clone().unwrap_or_default();
    let name = idp.metadata.name.clone().unwrap_or_default();
    ProgrammedProvider {
        display_name: spec.display_name.clone().unwrap_or_else(|| name.clone()),
        redirect_uri: redirect_uri(&env.public_url, &ns, &name),
        namespace: ns,
        name,
        generation: idp.metadata.generation.unwrap_or_default(),
        issuer: spec.issuer.clone(),
        client_id: resolved.client_id.clone(),
        client_secret: resolved.client_secret.clone(),
        client_auth_method: spec.client_auth_method,
        scopes: effective_scopes(spec),
        pkce: spec.pkce == PkceMode::S256,
        authorize_params: spec.authorize_params.clone(),
        endpoints: endpoints.clone(),
        ca_bundle: resolved.ca_bundle.clone(),
        claims: spec.claims.clone(),
        require_verified_email: spec.require_verified_email,
        allowed_email_domains: spec.allowed_email_domains.clone(),
        allowed_groups: spec.allowed_groups.clone(),
        allowed_users: spec.allowed_users.clone(),
    }
}

/// Validates one provider. `discovery` is `None` when it was not run
/// (invalid spec, unresolvable CA bundle, or `check` without `--live`);
/// `previous` is the provider's entry in the broker config, if any.
pub fn validate(
    idp: &IdentityProvider,
    secrets: &SecretData,
    discovery: Option<&DiscoveryOutcome>,
    previous: Option<&ProgrammedProvider>,
    env: &Env,
) -> Validation {
    let spec = &idp.spec;
    let ns = idp.metadata.namespace.as_deref().unwrap_or_default();
    let name = idp.metadata.name.as_deref().unwrap_or_default();
    let generation = idp.metadata.generation.unwrap_or_default();

    let spec_check = check_spec(spec);
    let resolved = resolve_secrets(ns, spec, secrets);
    // An outcome is only meaningful for a request the spec can make.
    let discovery = discovery.filter(|_| discovery_request(spec, ns, secrets).is_some());

    // SecretResolved
    let secret_cond = match &resolved {
        Ok(_) => {
            let refs = referenced_secrets(spec);
            if refs.is_empty() {
                CondResult::ok(
                    types::SECRET_RESOLVED,
                    reasons::NOT_REQUIRED,
                    "the provider references no Secret",
                )
            } else {
                CondResult::ok(
                    types::SECRET_RESOLVED,
                    reasons::RESOLVED,
                    format!("resolved from Secret {}", refs.join(", ")),
                )
            }
        }
        Err(f) => CondResult::fail(types::SECRET_RESOLVED, f),
    };

    // DiscoverySucceeded and JWKSValid
    let (discovery_cond, jwks_cond) = match discovery {
        None if spec_check.is_err() => (
            CondResult::unknown(
                types::DISCOVERY_SUCCEEDED,
                "not checked until the spec is valid (see ConfigValid)",
            ),
            CondResult::unknown(
                types::JWKS_VALID,
                "not checked until the spec is valid (see ConfigValid)",
            ),
        ),
        None if discovery_request(spec, ns, secrets).is_none() => (
            CondResult::unknown(
                types::DISCOVERY_SUCCEEDED,
                "not checked until the CA bundle Secret resolves (see SecretResolved)",
            ),
            CondResult::unknown(
                types::JWKS_VALID,
                "not checked until the CA bundle Secret resolves (see SecretResolved)",
            ),
        ),
        None => (
            CondResult::new(
                types::DISCOVERY_SUCCEEDED,
                "Unknown",
                reasons::NOT_CHECKED,
                "discovery was not checked (offline)",
            ),
            CondResult::new(
                types::JWKS_VALID,
                "Unknown",
                reasons::NOT_CHECKED,
                "the JWKS was not checked (offline)",
            ),
        ),
        Some(d) => {
            let dc = match &d.endpoints {
                Ok(e) if e.discovered => CondResult::ok(
                    types::DISCOVERY_SUCCEEDED,
                    reasons::DISCOVERED,
                    format!(
                        "discovered {} at {}",
                        e.issuer,
                        crate::oidc::discovery::discovery_url(&spec.issuer)
                    ),
                ),
                Ok(_) => CondResult::ok(
                    types::DISCOVERY_SUCCEEDED,
                    reasons::ENDPOINTS_CONFIGURED,
                    "discovery skipped: authorization, token and jwks endpoints are configured in spec.endpoints",
                ),
                Err(f) => CondResult::fail(types::DISCOVERY_SUCCEEDED, f),
            };
            let jc = match &d.jwks {
                Some(Ok(j)) => CondResult::ok(
                    types::JWKS_VALID,
                    reasons::KEYS_VALID,
                    format!(
                        "{} usable signing key(s) of {}",
                        j.usable_keys, j.total_keys
                    ),
                ),
                Some(Err(f)) => CondResult::fail(types::JWKS_VALID, f),
                None => CondResult::unknown(
                    types::JWKS_VALID,
                    "not checked until discovery succeeds (see DiscoverySucceeded)",
                ),
            };
            (dc, jc)
        }
    };

    // ConfigValid: the spec, then the spec against what the provider supports.
    let endpoints = discovery.and_then(|d| d.endpoints.as_ref().ok());
    let config_cond = match spec_check.as_ref().map(|_| {
        let alg = resolved.as_ref().ok().and_then(|r| r.client_key_alg);
        endpoints.map(|e| check_against_provider(spec, e, alg))
    }) {
        Err(f) => CondResult::fail(types::CONFIG_VALID, f),
        Ok(Some(Err(f))) => CondResult::fail(types::CONFIG_VALID, &f),
        Ok(_) => CondResult::ok(types::CONFIG_VALID, reasons::VALID, "the spec is valid"),
    };

    let checks = [&config_cond, &secret_cond, &discovery_cond, &jwks_cond];
    let all_true = checks.iter().all(|c| c.is_true());
    let first_bad = checks.iter().find(|c| !c.is_true()).copied();

    // Last known good: a provider that worked keeps serving through a
    // transient provider failure, as long as its spec and Secrets are fine.
    let transient_only = config_cond.is_true()
        && secret_cond.is_true()
        && discovery.is_some_and(|d| {
            d.endpoints
                .as_ref()
                .err()
                .is_some_and(Failure::is_transient)
                || (d.endpoints.is_ok()
                    && d.jwks
                        .as_ref()
                        .is_some_and(|j| j.as_ref().err().is_some_and(Failure::is_transient)))
        });

    let redirect = redirect_uri(&env.public_url, ns, name);
    let (programming, phase, programmed_cond, ready_cond) = if !spec.enabled {
        (
            Programming::Remove,
            phases::DISABLED,
            CondResult::new(
                types::PROGRAMMED,
                "False",
                reasons::DISABLED,
                "spec.enabled is false: the provider is not offered for login",
            ),
            CondResult::new(
                types::READY,
                "False",
                reasons::DISABLED,
                "spec.enabled is false: the provider is validated but not offered for login",
            ),
        )
    } else if all_true {
        let (Ok(r), Some(e)) = (&resolved, endpoints) else {
            unreachable!("all checks true implies resolved secrets and endpoints")
        };
        (
            Programming::Program(Box::new(program(idp, r, e, env))),
            phases::READY,
            CondResult::ok(
                types::PROGRAMMED,
                reasons::PROGRAMMED,
                format!("generation {generation} is programmed into the broker"),
            ),
            CondResult::ok(
                types::READY,
                reasons::READY,
                "the provider is validated and offered for login",
            ),
        )
    } else if let (true, Some(prev), Ok(r)) = (transient_only, previous, &resolved) {
        let mut kept = prev.clone();
        kept.client_id = r.client_id.clone();
        kept.client_secret = r.client_secret.clone();
        let bad = first_bad.expect("not all true");
        (
            Programming::KeepLastKnownGood(Box::new(kept)),
            phases::DEGRADED,
            CondResult::ok(
                types::PROGRAMMED,
                reasons::LAST_KNOWN_GOOD,
                format!(
                    "the broker keeps serving generation {} (last known good) while the provider fails",
                    prev.generation
                ),
            ),
            CondResult::new(
                types::READY,
                "False",
                reasons::DEGRADED,
                format!(
                    "{} is False ({}): {}; logins continue with the last known good configuration",
                    bad.type_, bad.reason, bad.message
                ),
            ),
        )
    } else {
        let bad = first_bad.expect("not all true");
        let pending = bad.status == "Unknown" && bad.reason == reasons::NOT_CHECKED;
        let (phase, ready) = if pending {
            (
                phases::PENDING,
                CondResult::new(
                    types::READY,
                    "Unknown",
                    reasons::NOT_CHECKED,
                    bad.message.clone(),
                ),
            )
        } else {
            (
                phases::ERROR,
                CondResult::new(
                    types::READY,
                    "False",
                    &bad.reason,
                    format!(
                        "{} is {} ({}): {}",
                        bad.type_, bad.status, bad.reason, bad.message
                    ),
                ),
            )
        };
        let programmed = if pending {
            CondResult::new(
                types::PROGRAMMED,
                "Unknown",
                reasons::NOT_CHECKED,
                "not programmed: the provider was not checked",
            )
        } else {
            CondResult::new(
                types::PROGRAMMED,
                "False",
                reasons::NOT_READY,
                format!("not programmed: {} is {}", bad.type_, bad.status),
            )
        };
        (Programming::Remove, phase, programmed, ready)
    };

    let discovered = discovery.and_then(|d| {
        let e = d.endpoints.as_ref().ok()?;
        Some(DiscoveredStatus {
            issuer: e.issuer.clone(),
            authorization_endpoint: Some(e.authorization_endpoint.clone()),
            token_endpoint: Some(e.token_endpoint.clone()),
            userinfo_endpoint: e.userinfo_endpoint.clone(),
            jwks_uri: Some(e.jwks_uri.clone()),
            end_session_endpoint: e.end_session_endpoint.clone(),
            jwks_key_count: d
                .jwks
                .as_ref()
                .and_then(|j| j.as_ref().ok())
                .map_or(0, |j| j.usable_keys as i32),
            last_checked: Some(d.fetched_at),
        })
    });

    Validation {
        conditions: vec![
            config_cond,
            secret_cond,
            discovery_cond,
            jwks_cond,
            programmed_cond,
            ready_cond,
        ],
        phase,
        programming,
        redirect_uri: redirect,
        discovered,
    }
}
