//! IdentityProvider manifests for the CRD's admission rules: specs every
//! rule accepts, and for each CEL rule specs it rejects with the message
//! fragment the README promises. Run client-side by kube's CEL interpreter
//! (tests/crd.rs) and by a real API server (tests/cluster.rs).

use serde_json::{Value, json};

/// A whole IdentityProvider object `team-a/corp` with `spec`.
pub fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "sso-operator.dev/v1alpha1",
        "kind": "IdentityProvider",
        "metadata": {"name": "corp", "namespace": "team-a"},
        "spec": spec,
    })
}

/// A spec every rule accepts.
pub fn base() -> Value {
    json!({
        "issuer": "https://idp.example.com",
        "clientID": "c",
        "clientSecretRef": {"name": "s", "key": "k"},
    })
}

/// `base()` with `patch` applied (a null removes the field).
pub fn with(patch: Value) -> Value {
    let mut s = base();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    s
}

/// Specs every rule accepts.
pub fn accepted() -> Vec<Value> {
    vec![
        base(),
        with(json!({"issuer": "http://127.0.0.1:9000/realms/x"})),
        with(json!({"issuer": "http://localhost:8080"})),
        with(json!({"issuer": "http://[::1]:8080"})),
        with(json!({"issuer": "http://127.0.0.1"})),
        with(json!({"issuer": "https://login.example.com/tenant/v2.0"})),
        with(json!({"clientID": null, "clientIDFrom": {"name": "s", "key": "id"}})),
        with(json!({"clientAuthMethod": "none", "clientSecretRef": null})),
        with(json!({"clientAuthMethod": "none", "clientSecretRef": null, "pkce": "S256"})),
        with(json!({"authorizeParams": {"prompt": "login", "hd": "example.com"}})),
        with(json!({"tls": {"caBundle": "pem"}})),
        with(json!({"tls": {"caBundleSecretRef": {"name": "ca", "key": "ca.crt"}}})),
    ]
}

/// Specs some rule rejects, with a fragment of that rule's message.
pub fn rejected() -> Vec<(Value, &'static str)> {
    vec![
        (
            with(json!({"issuer": "http://idp.example.com"})),
            "issuer must be an https URL",
        ),
        (
            with(json!({"issuer": "ftp://idp.example.com"})),
            "issuer must be an https URL",
        ),
        (
            with(json!({"issuer": "http://127.0.0.1.nip.example"})),
            "issuer must be an https URL",
        ),
        (
            with(json!({"issuer": "http://localhost.evil.example/"})),
            "issuer must be an https URL",
        ),
        (
            with(json!({"issuer": "not a url"})),
            "issuer must be an https URL",
        ),
        (
            with(json!({"issuer": "https://idp.example.com/?x=1"})),
            "must not contain a query or fragment",
        ),
        (
            with(json!({"issuer": "https://idp.example.com/#f"})),
            "must not contain a query or fragment",
        ),
        (
            with(json!({"clientIDFrom": {"name": "s", "key": "id"}})),
            "exactly one of clientID and clientIDFrom",
        ),
        (
            with(json!({"clientID": null})),
            "exactly one of clientID and clientIDFrom",
        ),
        (
            with(json!({"clientSecretRef": null})),
            "clientSecretRef is required unless clientAuthMethod is none",
        ),
        (
            with(json!({"clientAuthMethod": "none", "clientSecretRef": null, "pkce": "Disabled"})),
            "requires pkce S256",
        ),
        (
            with(json!({"authorizeParams": {"state": "x"}})),
            "authorizeParams must not set",
        ),
        (
            with(json!({"authorizeParams": {"redirect_uri": "https://evil"}})),
            "authorizeParams must not set",
        ),
        (
            with(
                json!({"tls": {"caBundle": "x", "caBundleSecretRef": {"name": "ca", "key": "k"}}}),
            ),
            "at most one of caBundle",
        ),
    ]
}
