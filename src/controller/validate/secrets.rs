//! The referenced Secrets: client ID, client secret or private key, CA
//! bundle; the `SecretResolved` condition.

use std::collections::BTreeMap;

use super::{CondResult, spec::check_pem};
use crate::{
    api::{
        ClientAuthMethod, IdentityProviderSpec, SecretKeyRef,
        conditions::{reasons, types},
    },
    oidc::{assertion::ClientKey, discovery::Failure},
};

/// Secrets in the provider's namespace that the provider references, by
/// name. A name that is absent was not found.
pub type SecretData = BTreeMap<String, SecretContent>;

/// The Secret `type` that opts a Secret in to being read as an
/// IdentityProvider's client credentials. Only Secrets made for it are
/// read: a team that may create IdentityProviders cannot name the
/// database password beside them as `clientIDFrom` and read it back from
/// the authorization URL, or send it to a token endpoint of its choosing.
/// A type, not a label, because a Secret's type cannot change: opting in
/// means creating the Secret with its value, which only someone who has
/// the value can do, while anyone allowed to patch a Secret could label
/// it without reading it.
pub const CREDENTIALS_SECRET_TYPE: &str = "sso-operator.dev/client-credentials";

/// Types a CA bundle Secret may have: the credentials type, or a TLS
/// Secret (cert-manager writes `ca.crt` there). A CA bundle is only ever
/// used as trust anchors, never shown or sent.
const CA_SECRET_TYPES: &[&str] = &[CREDENTIALS_SECRET_TYPE, "kubernetes.io/tls"];

/// One Secret as the controller read it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretContent {
    /// `type`; `Opaque` when the Secret has none.
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl SecretContent {
    /// A Secret of [`CREDENTIALS_SECRET_TYPE`].
    pub fn credentials(data: BTreeMap<String, Vec<u8>>) -> Self {
        Self::of_type(CREDENTIALS_SECRET_TYPE, data)
    }

    pub fn of_type(type_: &str, data: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            type_: type_.to_string(),
            data,
        }
    }
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

/// `SecretResolved`, from the resolved credentials and CA bundle.
pub fn secret_resolved(
    spec: &IdentityProviderSpec,
    resolved: &Result<Resolved, Failure>,
) -> CondResult {
    if let Err(f) = resolved {
        return CondResult::fail(types::SECRET_RESOLVED, f);
    }
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

/// Joins resolved credentials and an already resolved CA bundle; the
/// credentials' failure comes first, as it names the more basic problem.
pub(super) fn with_ca(
    credentials: Result<Resolved, Failure>,
    ca: Result<Option<String>, Failure>,
) -> Result<Resolved, Failure> {
    let mut r = credentials?;
    r.ca_bundle = ca?;
    Ok(r)
}

/// The client ID and secret (or private key), without the CA bundle.
pub(super) fn resolve_credentials(
    ns: &str,
    spec: &IdentityProviderSpec,
    secrets: &SecretData,
) -> Result<Resolved, Failure> {
    let client_id = match (&spec.client_id, &spec.client_id_from) {
        (Some(id), _) => id.clone(),
        (None, Some(r)) => credential(ns, r, secrets, "spec.clientIDFrom")?,
        (None, None) => String::new(),
    };
    let mut client_key_alg = None;
    let client_secret = match (&spec.client_secret_ref, spec.client_auth_method) {
        (_, ClientAuthMethod::None) | (None, _) => None,
        (Some(r), ClientAuthMethod::PrivateKeyJwt) => {
            let v = secret_value(
                ns,
                r,
                secrets,
                "spec.clientSecretRef",
                &[CREDENTIALS_SECRET_TYPE],
            )?;
            let key = ClientKey::from_pem(&v).map_err(|e| {
                invalid(
                    ns,
                    r,
                    "spec.clientSecretRef",
                    &format!("is not a private key for private_key_jwt: {e}"),
                )
            })?;
            client_key_alg = Some(key.alg());
            Some(v)
        }
        (Some(r), _) => Some(credential(ns, r, secrets, "spec.clientSecretRef")?),
    };
    Ok(Resolved {
        client_id,
        client_secret,
        client_key_alg,
        ca_bundle: None,
    })
}

/// The extra CA bundle (PEM) for talking to the provider, inline or from a
/// Secret. An inline bundle was checked with the spec.
pub(super) fn resolve_ca(
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
            let pem = secret_value(ns, r, secrets, field, CA_SECRET_TYPES)?;
            check_pem(&pem).map_err(|m| invalid(ns, r, field, &m))?;
            Ok(Some(pem))
        }
        (None, None) => Ok(None),
    }
}

/// `SecretInvalid` for key `r` of a Secret; `what` completes the sentence.
fn invalid(ns: &str, r: &SecretKeyRef, field: &str, what: &str) -> Failure {
    Failure::new(
        reasons::SECRET_INVALID,
        format!(
            "key {:?} of Secret {ns}/{} (from {field}) {what}",
            r.key, r.name
        ),
    )
}

/// Reads one key of a referenced Secret as a UTF-8 string, when the
/// Secret is of one of `types`. The type is checked first: of a Secret not
/// made for this, nothing is read and nothing (not even its key names) is
/// told.
fn secret_value(
    ns: &str,
    r: &SecretKeyRef,
    secrets: &SecretData,
    field: &str,
    types: &[&str],
) -> Result<String, Failure> {
    let Some(secret) = secrets.get(&r.name) else {
        return Err(Failure::new(
            reasons::SECRET_NOT_FOUND,
            format!(
                "Secret {ns}/{} (from {field}) not found; create it with key {:?}",
                r.name, r.key
            ),
        ));
    };
    if !types.contains(&secret.type_.as_str()) {
        return Err(Failure::new(
            reasons::SECRET_WRONG_TYPE,
            format!(
                "Secret {ns}/{} (from {field}) has type {}; the controller reads only Secrets of type {} here (create it with --type={}), so that a provider cannot read Secrets that were not made for it",
                r.name,
                secret.type_,
                types.join(" or "),
                CREDENTIALS_SECRET_TYPE
            ),
        ));
    }
    let data = &secret.data;
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
    let text =
        std::str::from_utf8(bytes).map_err(|_| invalid(ns, r, field, "is not UTF-8 text"))?;
    if text.is_empty() {
        return Err(invalid(ns, r, field, "is empty"));
    }
    Ok(text.to_string())
}

/// A client ID or secret. One with surrounding whitespace is almost always
/// `echo` without `-n`; the provider would reject it with an opaque error at
/// login time.
fn credential(
    ns: &str,
    r: &SecretKeyRef,
    secrets: &SecretData,
    field: &str,
) -> Result<String, Failure> {
    let value = secret_value(ns, r, secrets, field, &[CREDENTIALS_SECRET_TYPE])?;
    if value.trim() != value {
        return Err(invalid(
            ns,
            r,
            field,
            "has leading or trailing whitespace (often a newline from echo); store the value without it",
        ));
    }
    Ok(value)
}
