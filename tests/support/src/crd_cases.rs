//! IdentityProvider and AccessPolicy objects for the CRDs' admission
//! rules: objects every rule accepts, and for each CEL rule objects it
//! rejects with the message fragment the README promises. Run client-side by kube's CEL interpreter
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

/// Objects every rule accepts.
pub fn accepted() -> Vec<Value> {
    let providers = vec![
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
        with(json!({"allowedNamespaces": {"from": "All"}})),
        with(json!({"allowedNamespaces": {"from": "Same"}})),
        with(json!({"allowedNamespaces": {}})),
        with(
            json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"sso": "corp"}}}}),
        ),
    ];
    let policies = vec![
        policy_base(),
        policy_with(json!({"hosts": ["*.apps.example.com", "a-1.example.com", "localhost"]})),
        policy_with(json!({"paths": ["/", "/app", "/app/", "/a/b.c/.well-known"]})),
        policy_with(json!({"unauthenticated": "Deny", "apiPaths": ["/api", "/v1/"]})),
        policy_with(
            json!({"providers": [{"name": "corp"}, {"name": "okta", "namespace": "platform"}]}),
        ),
        policy_with(json!({"rules": {
            "allow": [{"groups": ["g"], "emailDomains": ["example.com"]}, {"emails": ["a@example.com"]}],
            "deny": [{"users": ["mallory"]}],
        }})),
    ];
    providers
        .into_iter()
        .map(object)
        .chain(policies.into_iter().map(policy))
        .collect()
}

/// A whole AccessPolicy object `team-a/app` with `spec`.
pub fn policy(spec: Value) -> Value {
    json!({
        "apiVersion": "sso-operator.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "app", "namespace": "team-a"},
        "spec": spec,
    })
}

/// An AccessPolicy spec every rule accepts.
pub fn policy_base() -> Value {
    json!({
        "hosts": ["app.example.com"],
        "providers": [{"name": "corp"}],
        "rules": {"allow": [{"users": ["alice"]}]},
    })
}

/// `policy_base()` with `patch` applied (a null removes the field).
pub fn policy_with(patch: Value) -> Value {
    let mut s = policy_base();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    s
}

/// Objects some rule rejects, with a fragment of that rule's message.
pub fn rejected() -> Vec<(Value, &'static str)> {
    let providers = vec![
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
        (
            with(json!({"allowedNamespaces": {"from": "Selector"}})),
            "set selector exactly when from is Selector",
        ),
        (
            with(
                json!({"allowedNamespaces": {"from": "All", "selector": {"matchLabels": {"a": "b"}}}}),
            ),
            "set selector exactly when from is Selector",
        ),
    ];
    let policies = vec![
        (
            policy_with(json!({"hosts": ["App.example.com"]})),
            "each host must be a lowercase DNS name",
        ),
        (
            policy_with(json!({"hosts": ["app.example.com:443"]})),
            "each host must be a lowercase DNS name",
        ),
        (
            policy_with(json!({"hosts": ["*example.com"]})),
            "each host must be a lowercase DNS name",
        ),
        (
            policy_with(json!({"hosts": ["*.com"]})),
            "a wildcard host must name at least two labels",
        ),
        (
            policy_with(json!({"paths": ["app"]})),
            "each path must be an absolute prefix",
        ),
        (
            policy_with(json!({"paths": ["/a//b"]})),
            "each path must be an absolute prefix",
        ),
        (
            policy_with(json!({"paths": ["/a/../b"]})),
            "each path must be an absolute prefix",
        ),
        (
            policy_with(json!({"paths": ["/a?x=1"]})),
            "each path must be an absolute prefix",
        ),
        (
            policy_with(json!({"apiPaths": ["api"]})),
            "each API path must be an absolute prefix",
        ),
        (
            policy_with(json!({"rules": {"allow": [{}]}})),
            "a rule must list at least one of users",
        ),
        (
            policy_with(json!({"rules": {"allow": [{"users": []}]}})),
            "a rule must list at least one of users",
        ),
        (
            policy_with(json!({"rules": {"allow": [{"users": ["a"]}], "deny": [{"groups": []}]}})),
            "a rule must list at least one of users",
        ),
    ];
    providers
        .into_iter()
        .map(|(s, m)| (object(s), m))
        .chain(policies.into_iter().map(|(s, m)| (policy(s), m)))
        .collect()
}
