//! Table-driven tests of the pure validation core: every condition reason
//! reached by a real input, asserted by exact type, status and reason.

use sso_test_support as common;

use std::collections::BTreeMap;

use common::*;
use sso_operator::{
    api::{
        ClientAuthMethod, EndpointOverrides, IdTokenAlg, IdentityProvider, PkceMode, TlsConfig,
        conditions::{phases, reasons as r, types as t},
    },
    config::ProgrammedProvider,
    controller::validate::{
        CREDENTIALS_SECRET_TYPE, Programming, SecretContent, SecretData, discovery_request,
        unavailable_entry, validate,
    },
    oidc::discovery::{DiscoveryOutcome, Failure, JwksSummary},
};

/// Inputs of one case, starting from a provider that validates.
struct Inputs {
    idp: IdentityProvider,
    secrets: SecretData,
    discovery: Option<DiscoveryOutcome>,
    previous: Option<ProgrammedProvider>,
}

impl Inputs {
    fn good() -> Self {
        Self {
            idp: idp(),
            secrets: secrets(),
            discovery: Some(discovery()),
            previous: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Prog {
    Program,
    Keep,
    Remove,
}

struct Case {
    name: &'static str,
    setup: fn(&mut Inputs),
    /// (type, status, reason) that must hold; other conditions unchecked.
    expect: &'static [(&'static str, &'static str, &'static str)],
    phase: &'static str,
    prog: Prog,
    /// A fragment the failing condition's message must contain.
    message: Option<&'static str>,
}

fn fail(reason: &str, message: &str) -> Failure {
    Failure::new(reason, message)
}

/// Discovery succeeded; the JWKS fetch failed.
fn jwks_fails(i: &mut Inputs, reason: &str, message: &str) {
    i.discovery = Some(DiscoveryOutcome {
        endpoints: Ok(endpoints()),
        jwks: Some(Err(fail(reason, message))),
        fetched_at: fixed_time(),
    });
}

/// Discovery answered with a failure before any JWKS was fetched.
fn discovery_fails(i: &mut Inputs, reason: &str, message: &str) {
    i.discovery = Some(DiscoveryOutcome {
        endpoints: Err(fail(reason, message)),
        jwks: None,
        fetched_at: fixed_time(),
    });
}

const RSA_KEY: &str = include_str!("fixtures/client-key-rsa.pem");
const EC_KEY: &str = include_str!("fixtures/client-key-ec.pem");
const TEST_CA_PEM: &str = include_str!("fixtures/test-ca.pem");

/// Puts a PEM private key where `clientSecretRef` points.
fn put_client_key(i: &mut Inputs, pem: &str) {
    i.secrets
        .get_mut("corp-oidc")
        .unwrap()
        .data
        .insert("clientSecret".into(), pem.as_bytes().to_vec());
}

/// Points `spec.tls.caBundleSecretRef` at key `ca.crt` of Secret
/// `corp-ca`, and creates that Secret with this type and value (or not).
fn ca_from_secret(i: &mut Inputs, secret: Option<(&str, &[u8])>) {
    i.idp.spec.tls = Some(
        TlsConfig {
            ca_bundle: None,
            ca_bundle_secret_ref: Some(secret_ref("corp-ca", "ca.crt")),
        }
        .into(),
    );
    if let Some((type_, pem)) = secret {
        let data = BTreeMap::from([("ca.crt".to_string(), pem.to_vec())]);
        i.secrets
            .insert("corp-ca".into(), SecretContent::of_type(type_, data));
    }
}

/// Makes the discovered provider accept `private_key_jwt` with `algs`.
fn accept_private_key_jwt(i: &mut Inputs, algs: &[&str]) {
    let mut e = endpoints();
    e.token_endpoint_auth_methods =
        Some(vec!["client_secret_basic".into(), "private_key_jwt".into()]);
    e.token_endpoint_auth_signing_algs = Some(algs.iter().map(|a| a.to_string()).collect());
    i.discovery.as_mut().unwrap().endpoints = Ok(e);
}

/// A previously programmed entry for `idp()` at generation 2.
fn previous() -> ProgrammedProvider {
    let mut i = Inputs::good();
    i.idp.metadata.generation = Some(2);
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    v.programming.entry().cloned().expect("good inputs program")
}

const CASES: &[Case] = &[
    Case {
        name: "all good",
        setup: |_| {},
        expect: &[
            (t::CONFIG_VALID, "True", r::VALID),
            (t::SECRET_RESOLVED, "True", r::RESOLVED),
            (t::DISCOVERY_SUCCEEDED, "True", r::DISCOVERED),
            (t::JWKS_VALID, "True", r::KEYS_VALID),
            (t::PROGRAMMED, "True", r::PROGRAMMED),
            (t::READY, "True", r::READY),
        ],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    // --- ConfigValid
    Case {
        name: "issuer with a query",
        setup: |i| i.idp.spec.issuer = "https://idp.example.com/?tenant=a".into(),
        expect: &[
            (t::CONFIG_VALID, "False", r::INVALID_ISSUER),
            (t::DISCOVERY_SUCCEEDED, "Unknown", r::UNABLE_TO_VALIDATE),
            (t::JWKS_VALID, "Unknown", r::UNABLE_TO_VALIDATE),
            (t::PROGRAMMED, "False", r::NOT_READY),
            (t::READY, "False", r::INVALID_ISSUER),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("query or fragment"),
    },
    Case {
        name: "http issuer on a public host",
        setup: |i| i.idp.spec.issuer = "http://idp.example.com".into(),
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_ISSUER)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("only https is allowed"),
    },
    Case {
        name: "issuer not a URL",
        setup: |i| i.idp.spec.issuer = "idp.example.com".into(),
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_ISSUER)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("is not a URL"),
    },
    Case {
        name: "both client ID sources",
        setup: |i| i.idp.spec.client_id_from = Some(secret_ref("corp-oidc", "clientID")),
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_CLIENT_ID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not both"),
    },
    Case {
        name: "no client ID source",
        setup: |i| i.idp.spec.client_id = None,
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_CLIENT_ID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("set one of spec.clientID"),
    },
    Case {
        name: "reserved authorize parameter",
        setup: |i| {
            i.idp
                .spec
                .authorize_params
                .insert("redirect_uri".into(), "https://evil.example".into());
        },
        expect: &[(t::CONFIG_VALID, "False", r::DISALLOWED_PARAMETER)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("\"redirect_uri\""),
    },
    Case {
        name: "private_key_jwt at a provider that does not list it",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
            put_client_key(i, RSA_KEY);
        },
        expect: &[
            (t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD),
            (t::SECRET_RESOLVED, "True", r::RESOLVED),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not private_key_jwt"),
    },
    Case {
        name: "private_key_jwt with an RSA key",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
            put_client_key(i, RSA_KEY);
            accept_private_key_jwt(i, &["RS256", "ES256"]);
        },
        expect: &[
            (t::CONFIG_VALID, "True", r::VALID),
            (t::SECRET_RESOLVED, "True", r::RESOLVED),
            (t::READY, "True", r::READY),
        ],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "private_key_jwt with a client secret instead of a key",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
            accept_private_key_jwt(i, &["RS256"]);
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("is not a private key for private_key_jwt: not a PEM private key"),
    },
    Case {
        name: "private_key_jwt with a key type the provider does not accept",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
            put_client_key(i, EC_KEY);
            accept_private_key_jwt(i, &["RS256", "PS256"]);
        },
        expect: &[(t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some(
            "signs ES256, but the provider accepts client assertions signed with [RS256, PS256]",
        ),
    },
    Case {
        name: "private_key_jwt without clientSecretRef",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::PrivateKeyJwt;
            i.idp.spec.client_secret_ref = None;
        },
        expect: &[(t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("private_key_jwt needs spec.clientSecretRef"),
    },
    Case {
        name: "public client without PKCE",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::None;
            i.idp.spec.pkce = PkceMode::Disabled;
        },
        expect: &[(t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("requires pkce: S256"),
    },
    Case {
        name: "confidential client without a secret",
        setup: |i| i.idp.spec.client_secret_ref = None,
        expect: &[
            (t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD),
            (t::SECRET_RESOLVED, "True", r::NOT_REQUIRED),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("needs spec.clientSecretRef"),
    },
    Case {
        name: "client_secret_post where the provider supports it",
        setup: |i| i.idp.spec.client_auth_method = ClientAuthMethod::ClientSecretPost,
        expect: &[(t::CONFIG_VALID, "True", r::VALID)],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "auth method not advertised",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::ClientSecretPost;
            let mut d = discovery();
            d.endpoints.as_mut().unwrap().token_endpoint_auth_methods =
                Some(vec!["client_secret_basic".into()]);
            i.discovery = Some(d);
        },
        expect: &[
            (t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD),
            (t::DISCOVERY_SUCCEEDED, "True", r::DISCOVERED),
            (t::READY, "False", r::UNSUPPORTED_AUTH_METHOD),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not client_secret_post"),
    },
    Case {
        name: "no token_endpoint_auth_methods_supported means client_secret_basic only",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::ClientSecretPost;
            let mut d = discovery();
            d.endpoints.as_mut().unwrap().token_endpoint_auth_methods = None;
            i.discovery = Some(d);
        },
        expect: &[(t::CONFIG_VALID, "False", r::UNSUPPORTED_AUTH_METHOD)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("[client_secret_basic]"),
    },
    Case {
        name: "provider without S256",
        setup: |i| {
            let mut d = discovery();
            d.endpoints.as_mut().unwrap().code_challenge_methods = Some(vec!["plain".into()]);
            i.discovery = Some(d);
        },
        expect: &[(t::CONFIG_VALID, "False", r::UNSUPPORTED_PKCE)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("set spec.pkce: Disabled"),
    },
    Case {
        name: "PKCE disabled for a provider without S256",
        setup: |i| {
            i.idp.spec.pkce = PkceMode::Disabled;
            let mut d = discovery();
            d.endpoints.as_mut().unwrap().code_challenge_methods = Some(vec!["plain".into()]);
            i.discovery = Some(d);
        },
        expect: &[(t::CONFIG_VALID, "True", r::VALID)],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "insecure endpoint override",
        setup: |i| {
            i.idp.spec.endpoints = Some(
                EndpointOverrides {
                    token: Some("http://idp.example.com/token".into()),
                    ..Default::default()
                }
                .into(),
            )
        },
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_ENDPOINT)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("spec.endpoints.token"),
    },
    Case {
        name: "scope with a space",
        setup: |i| i.idp.spec.scopes = vec!["openid email".into()],
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_SCOPES)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("whitespace"),
    },
    Case {
        name: "inline CA bundle that is not PEM",
        setup: |i| {
            i.idp.spec.tls = Some(
                TlsConfig {
                    ca_bundle: Some("not a certificate".into()),
                    ca_bundle_secret_ref: None,
                }
                .into(),
            )
        },
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_TLS_CONFIG)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("caBundle"),
    },
    Case {
        name: "both CA bundle sources",
        setup: |i| {
            i.idp.spec.tls = Some(
                TlsConfig {
                    ca_bundle: Some("x".into()),
                    ca_bundle_secret_ref: Some(secret_ref("ca", "ca.crt")),
                }
                .into(),
            )
        },
        expect: &[(t::CONFIG_VALID, "False", r::INVALID_TLS_CONFIG)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("at most one"),
    },
    // --- SecretResolved
    Case {
        name: "Secret missing",
        setup: |i| i.secrets.clear(),
        expect: &[
            (t::CONFIG_VALID, "True", r::VALID),
            (t::SECRET_RESOLVED, "False", r::SECRET_NOT_FOUND),
            (t::DISCOVERY_SUCCEEDED, "True", r::DISCOVERED),
            (t::PROGRAMMED, "False", r::NOT_READY),
            (t::READY, "False", r::SECRET_NOT_FOUND),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("Secret team-a/corp-oidc (from spec.clientSecretRef) not found"),
    },
    Case {
        name: "Secret of another type (not made for a provider)",
        setup: |i| {
            i.secrets.insert(
                "corp-oidc".into(),
                SecretContent::of_type(
                    "Opaque",
                    BTreeMap::from([("password".to_string(), b"db-secret".to_vec())]),
                ),
            );
        },
        expect: &[
            (t::SECRET_RESOLVED, "False", r::SECRET_WRONG_TYPE),
            (t::READY, "False", r::SECRET_WRONG_TYPE),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some(
            "has type Opaque; the controller reads only Secrets of type sso-operator.dev/client-credentials here (create it with --type=sso-operator.dev/client-credentials)",
        ),
    },
    Case {
        name: "clientIDFrom naming a Secret of another type",
        setup: |i| {
            i.idp.spec.client_id = None;
            i.idp.spec.client_id_from = Some(secret_ref("db", "password"));
            i.secrets.insert(
                "db".into(),
                SecretContent::of_type(
                    "Opaque",
                    BTreeMap::from([("password".to_string(), b"db-secret".to_vec())]),
                ),
            );
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_WRONG_TYPE)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("Secret team-a/db (from spec.clientIDFrom) has type Opaque"),
    },
    Case {
        name: "CA bundle from a TLS Secret",
        setup: |i| {
            ca_from_secret(i, Some(("kubernetes.io/tls", TEST_CA_PEM.as_bytes())));
        },
        expect: &[(t::SECRET_RESOLVED, "True", r::RESOLVED)],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "CA bundle from an Opaque Secret",
        setup: |i| {
            ca_from_secret(i, Some(("Opaque", TEST_CA_PEM.as_bytes())));
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_WRONG_TYPE)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("of type sso-operator.dev/client-credentials or kubernetes.io/tls"),
    },
    Case {
        name: "Secret key missing",
        setup: |i| {
            i.secrets.insert(
                "corp-oidc".into(),
                SecretContent::credentials(BTreeMap::from([("secret".to_string(), b"x".to_vec())])),
            );
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_KEY_MISSING)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("has no key \"clientSecret\"; it has [secret]"),
    },
    Case {
        name: "secret value with a trailing newline",
        setup: |i| {
            i.secrets.insert(
                "corp-oidc".into(),
                SecretContent::credentials(BTreeMap::from([(
                    "clientSecret".to_string(),
                    b"s3cr3t\n".to_vec(),
                )])),
            );
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("trailing whitespace"),
    },
    Case {
        name: "secret value empty",
        setup: |i| {
            i.secrets.insert(
                "corp-oidc".into(),
                SecretContent::credentials(BTreeMap::from([(
                    "clientSecret".to_string(),
                    Vec::new(),
                )])),
            );
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("is empty"),
    },
    Case {
        name: "secret value not UTF-8",
        setup: |i| {
            i.secrets.insert(
                "corp-oidc".into(),
                SecretContent::credentials(BTreeMap::from([(
                    "clientSecret".to_string(),
                    vec![0xff, 0xfe],
                )])),
            );
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not UTF-8"),
    },
    Case {
        name: "client ID from a Secret",
        setup: |i| {
            i.idp.spec.client_id = None;
            i.idp.spec.client_id_from = Some(secret_ref("corp-oidc", "clientID"));
            i.secrets
                .get_mut("corp-oidc")
                .unwrap()
                .data
                .insert("clientID".into(), b"from-secret".to_vec());
        },
        expect: &[
            (t::SECRET_RESOLVED, "True", r::RESOLVED),
            (t::READY, "True", r::READY),
        ],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "public client needs no Secret",
        setup: |i| {
            i.idp.spec.client_auth_method = ClientAuthMethod::None;
            i.idp.spec.client_secret_ref = None;
            let mut d = discovery();
            d.endpoints.as_mut().unwrap().token_endpoint_auth_methods = Some(vec!["none".into()]);
            i.discovery = Some(d);
        },
        expect: &[
            (t::SECRET_RESOLVED, "True", r::NOT_REQUIRED),
            (t::READY, "True", r::READY),
        ],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "CA bundle Secret missing blocks discovery",
        setup: |i| {
            ca_from_secret(i, None);
            i.discovery = None;
        },
        expect: &[
            (t::SECRET_RESOLVED, "False", r::SECRET_NOT_FOUND),
            (t::DISCOVERY_SUCCEEDED, "Unknown", r::UNABLE_TO_VALIDATE),
            (t::JWKS_VALID, "Unknown", r::UNABLE_TO_VALIDATE),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("spec.tls.caBundleSecretRef"),
    },
    Case {
        name: "CA bundle Secret not PEM",
        setup: |i| {
            ca_from_secret(i, Some((CREDENTIALS_SECRET_TYPE, b"garbage")));
            i.discovery = None;
        },
        expect: &[(t::SECRET_RESOLVED, "False", r::SECRET_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("ca.crt"),
    },
    // --- DiscoverySucceeded
    Case {
        name: "discovery unreachable, never programmed",
        setup: |i| discovery_fails(i, r::UNREACHABLE, "connection refused"),
        expect: &[
            (t::DISCOVERY_SUCCEEDED, "False", r::UNREACHABLE),
            (t::JWKS_VALID, "Unknown", r::UNABLE_TO_VALIDATE),
            (t::PROGRAMMED, "False", r::NOT_READY),
            (t::READY, "False", r::UNREACHABLE),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("connection refused"),
    },
    Case {
        name: "discovery unreachable keeps the last known good entry",
        setup: |i| {
            discovery_fails(i, r::UNREACHABLE, "HTTP 503");
            i.previous = Some(previous());
        },
        expect: &[
            (t::DISCOVERY_SUCCEEDED, "False", r::UNREACHABLE),
            (t::PROGRAMMED, "True", r::LAST_KNOWN_GOOD),
            (t::READY, "False", r::DEGRADED),
        ],
        phase: phases::DEGRADED,
        prog: Prog::Keep,
        message: Some("HTTP 503"),
    },
    Case {
        name: "JWKS unreachable keeps the last known good entry",
        setup: |i| {
            jwks_fails(i, r::UNREACHABLE, "timed out");
            i.previous = Some(previous());
        },
        expect: &[
            (t::JWKS_VALID, "False", r::UNREACHABLE),
            (t::PROGRAMMED, "True", r::LAST_KNOWN_GOOD),
            (t::READY, "False", r::DEGRADED),
        ],
        phase: phases::DEGRADED,
        prog: Prog::Keep,
        message: Some("timed out"),
    },
    Case {
        name: "issuer mismatch is not transient: the entry is removed",
        setup: |i| {
            discovery_fails(i, r::ISSUER_MISMATCH, "reports issuer \"https://other\"");
            i.previous = Some(previous());
        },
        expect: &[
            (t::DISCOVERY_SUCCEEDED, "False", r::ISSUER_MISMATCH),
            (t::PROGRAMMED, "False", r::NOT_READY),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("reports issuer"),
    },
    Case {
        name: "a broken Secret is not papered over by last known good",
        setup: |i| {
            discovery_fails(i, r::UNREACHABLE, "HTTP 503");
            i.previous = Some(previous());
            i.secrets.clear();
        },
        expect: &[
            (t::SECRET_RESOLVED, "False", r::SECRET_NOT_FOUND),
            (t::PROGRAMMED, "False", r::NOT_READY),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not found"),
    },
    Case {
        name: "invalid discovery response",
        setup: |i| discovery_fails(i, r::INVALID_RESPONSE, "not valid JSON"),
        expect: &[
            (t::DISCOVERY_SUCCEEDED, "False", r::INVALID_RESPONSE),
            (t::READY, "False", r::INVALID_RESPONSE),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("not valid JSON"),
    },
    Case {
        name: "insecure discovered endpoint",
        setup: |i| discovery_fails(i, r::INSECURE_ENDPOINT, "uses http"),
        expect: &[(t::DISCOVERY_SUCCEEDED, "False", r::INSECURE_ENDPOINT)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: None,
    },
    Case {
        name: "missing endpoint",
        setup: |i| discovery_fails(i, r::MISSING_ENDPOINT, "has no token_endpoint"),
        expect: &[(t::DISCOVERY_SUCCEEDED, "False", r::MISSING_ENDPOINT)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: None,
    },
    Case {
        name: "TLS failure",
        setup: |i| discovery_fails(i, r::TLS_INVALID, "UnknownIssuer"),
        expect: &[(t::DISCOVERY_SUCCEEDED, "False", r::TLS_INVALID)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: None,
    },
    Case {
        name: "endpoints configured, discovery skipped",
        setup: |i| {
            let mut e = endpoints();
            e.discovered = false;
            e.token_endpoint_auth_methods = None;
            e.code_challenge_methods = None;
            i.discovery = Some(DiscoveryOutcome {
                endpoints: Ok(e),
                ..discovery()
            });
        },
        expect: &[
            (t::DISCOVERY_SUCCEEDED, "True", r::ENDPOINTS_CONFIGURED),
            (t::READY, "True", r::READY),
        ],
        phase: phases::READY,
        prog: Prog::Program,
        message: None,
    },
    Case {
        name: "offline check",
        setup: |i| i.discovery = None,
        expect: &[
            (t::CONFIG_VALID, "True", r::VALID),
            (t::SECRET_RESOLVED, "True", r::RESOLVED),
            (t::DISCOVERY_SUCCEEDED, "Unknown", r::NOT_CHECKED),
            (t::JWKS_VALID, "Unknown", r::NOT_CHECKED),
            (t::PROGRAMMED, "Unknown", r::NOT_CHECKED),
            (t::READY, "Unknown", r::NOT_CHECKED),
        ],
        phase: phases::PENDING,
        prog: Prog::Remove,
        message: None,
    },
    // --- JWKSValid
    Case {
        name: "no usable keys",
        setup: |i| {
            i.discovery = Some(DiscoveryOutcome {
                jwks: Some(Err(fail(r::NO_USABLE_KEYS, "1 key(s) but none can verify"))),
                ..discovery()
            });
            i.previous = Some(previous());
        },
        expect: &[
            (t::JWKS_VALID, "False", r::NO_USABLE_KEYS),
            (t::PROGRAMMED, "False", r::NOT_READY),
            (t::READY, "False", r::NO_USABLE_KEYS),
        ],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("none can verify"),
    },
    Case {
        name: "JWKS not found",
        setup: |i| {
            i.discovery = Some(DiscoveryOutcome {
                jwks: Some(Err(fail(
                    r::INVALID_RESPONSE,
                    "answered HTTP 404 Not Found",
                ))),
                ..discovery()
            })
        },
        expect: &[(t::JWKS_VALID, "False", r::INVALID_RESPONSE)],
        phase: phases::ERROR,
        prog: Prog::Remove,
        message: Some("404"),
    },
    // --- Disabled
    Case {
        name: "disabled provider is validated but not programmed",
        setup: |i| {
            i.idp.spec.enabled = false;
            i.previous = Some(previous());
        },
        expect: &[
            (t::CONFIG_VALID, "True", r::VALID),
            (t::DISCOVERY_SUCCEEDED, "True", r::DISCOVERED),
            (t::PROGRAMMED, "False", r::DISABLED),
            (t::READY, "False", r::DISABLED),
        ],
        phase: phases::DISABLED,
        prog: Prog::Remove,
        message: None,
    },
];

#[test]
fn every_case() {
    let mut failures = Vec::new();
    for case in CASES {
        let mut i = Inputs::good();
        (case.setup)(&mut i);
        let v = validate(
            &i.idp,
            &i.secrets,
            i.discovery.as_ref(),
            i.previous.as_ref(),
            &env(),
        );
        let got_prog = match v.programming {
            Programming::Program(_) => Prog::Program,
            Programming::KeepLastKnownGood(_) => Prog::Keep,
            Programming::Remove => Prog::Remove,
        };
        if v.phase != case.phase || got_prog != case.prog {
            failures.push(format!(
                "{}: phase {} / {:?}, want {} / {:?}",
                case.name, v.phase, got_prog, case.phase, case.prog
            ));
        }
        for (ty, status, reason) in case.expect {
            let c = v.condition(ty);
            if (c.status.as_str(), c.reason.as_str()) != (*status, *reason) {
                failures.push(format!(
                    "{}: {ty} is {} {} ({}), want {status} {reason}",
                    case.name, c.status, c.reason, c.message
                ));
            }
        }
        if let Some(fragment) = case.message {
            let bad = v
                .conditions
                .iter()
                .find(|c| c.status != "True")
                .expect("a failing case has a failing condition");
            if !bad.message.contains(fragment) {
                failures.push(format!(
                    "{}: message {:?} lacks {fragment:?}",
                    case.name, bad.message
                ));
            }
        }
        // Every condition type is always present, in a fixed order.
        let types: Vec<&str> = v.conditions.iter().map(|c| c.type_).collect();
        assert_eq!(types, t::ALL, "{}", case.name);
        // Secrets never leak into messages.
        for c in &v.conditions {
            assert!(
                !c.message.contains("s3cr3t"),
                "{}: secret in {} message",
                case.name,
                c.type_
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn programmed_entry_carries_resolved_credentials_and_endpoints() {
    let i = Inputs::good();
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    let p = v.programming.entry().unwrap();
    assert_eq!(p.key(), "team-a/corp");
    assert_eq!(p.client_id, "client-1");
    assert_eq!(p.client_secret.as_deref(), Some("s3cr3t-value"));
    assert_eq!(p.scopes, ["openid", "email", "profile"]);
    assert_eq!(
        p.redirect_uri,
        "https://sso.example.com/oauth/callback/team-a/corp"
    );
    assert_eq!(v.redirect_uri, p.redirect_uri);
    assert_eq!(p.endpoints.token_endpoint, "https://idp.example.com/token");
    assert_eq!(p.generation, 3);
    assert!(p.pkce);
    assert!(
        !format!("{p:?}").contains("s3cr3t"),
        "Debug redacts the client secret"
    );
}

/// The algorithms ID tokens must use: what discovery advertised, unless
/// the spec pins its own.
#[test]
fn id_token_algs_come_from_discovery_or_the_spec() {
    let i = Inputs::good();
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    assert_eq!(
        v.programming.entry().unwrap().id_token_algs,
        ["RS256", "ES256"]
    );
    let mut i = Inputs::good();
    i.idp.spec.id_token_signing_algs = vec![IdTokenAlg::PS256, IdTokenAlg::PS256];
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    assert_eq!(v.programming.entry().unwrap().id_token_algs, ["PS256"]);
}

#[test]
fn openid_scope_is_always_first_and_unique() {
    let mut i = Inputs::good();
    i.idp.spec.scopes = vec![
        "email".into(),
        "openid".into(),
        "groups".into(),
        "email".into(),
    ];
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    assert_eq!(
        v.programming.entry().unwrap().scopes,
        ["openid", "email", "groups"]
    );
}

#[test]
fn last_known_good_takes_a_rotated_secret() {
    let mut i = Inputs::good();
    discovery_fails(&mut i, r::UNREACHABLE, "down");
    i.secrets
        .get_mut("corp-oidc")
        .unwrap()
        .data
        .insert("clientSecret".into(), b"rotated".to_vec());
    let prev = previous();
    let v = validate(
        &i.idp,
        &i.secrets,
        i.discovery.as_ref(),
        Some(&prev),
        &env(),
    );
    let Programming::KeepLastKnownGood(kept) = &v.programming else {
        panic!("expected last known good, got {:?}", v.programming)
    };
    assert_eq!(kept.client_secret.as_deref(), Some("rotated"));
    assert_eq!(
        kept.generation, 2,
        "endpoints and settings stay those of the last good generation"
    );
    assert_eq!(kept.endpoints, prev.endpoints);
    assert!(v.condition(t::PROGRAMMED).message.contains("generation 2"));
}

/// An admin locking out a compromised account while the IdP is down: the
/// rule change reaches the broker although discovery fails, and so do
/// claim mapping and the verified-email rule.
#[test]
fn last_known_good_takes_the_current_access_rules() {
    let mut i = Inputs::good();
    discovery_fails(&mut i, r::UNREACHABLE, "down");
    i.idp.metadata.generation = Some(3);
    i.idp.spec.allowed_users = vec!["bob".into()];
    i.idp.spec.allowed_groups = vec!["admins".into()];
    i.idp.spec.require_verified_email = false;
    i.idp.spec.claims.username = "email".into();
    let prev = previous();
    assert!(prev.allowed_users.is_empty() && prev.require_verified_email);
    let v = validate(
        &i.idp,
        &i.secrets,
        i.discovery.as_ref(),
        Some(&prev),
        &env(),
    );
    let Programming::KeepLastKnownGood(kept) = &v.programming else {
        panic!("expected last known good, got {:?}", v.programming)
    };
    assert_eq!(kept.allowed_users, ["bob"]);
    assert_eq!(kept.allowed_groups, ["admins"]);
    assert!(!kept.require_verified_email);
    assert_eq!(kept.claims.username, "email");
    assert_eq!(
        kept.endpoints, prev.endpoints,
        "what discovery decided stays"
    );
    assert_eq!(kept.issuer, prev.issuer);
    assert!(
        v.condition(t::PROGRAMMED)
            .message
            .contains("access rules, claims and credentials are generation 3's"),
        "{}",
        v.condition(t::PROGRAMMED).message
    );
}

#[test]
fn discovery_request_needs_a_valid_spec_and_ca() {
    let i = Inputs::good();
    let req = discovery_request(&i.idp.spec, "team-a", &i.secrets).unwrap();
    assert_eq!(req.issuer, ISSUER);
    assert_eq!(req.ca_bundle, None);
    // A missing client secret does not stop discovery...
    assert!(discovery_request(&i.idp.spec, "team-a", &SecretData::new()).is_some());
    // ...an invalid spec does.
    let mut bad = i.idp.spec.clone();
    bad.issuer = "ftp://x".into();
    assert!(discovery_request(&bad, "team-a", &i.secrets).is_none());
    let _ = JwksSummary::default();
}

#[test]
fn unprogrammed_providers_tell_the_broker_why() {
    let i = Inputs::good();
    let v = validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    assert_eq!(
        unavailable_entry(&i.idp, &v),
        None,
        "programmed: nothing to say"
    );

    let mut disabled = Inputs::good();
    disabled.idp.spec.enabled = false;
    disabled.idp.spec.display_name = Some("Corp SSO".into());
    let v = validate(
        &disabled.idp,
        &disabled.secrets,
        disabled.discovery.as_ref(),
        None,
        &env(),
    );
    let u = unavailable_entry(&disabled.idp, &v).expect("disabled is unavailable");
    assert!(u.disabled);
    assert_eq!(u.display_name, "Corp SSO");

    let broken = Inputs::good();
    let v = validate(
        &broken.idp,
        &SecretData::new(),
        broken.discovery.as_ref(),
        None,
        &env(),
    );
    let u = unavailable_entry(&broken.idp, &v).expect("a missing secret is unavailable");
    assert!(!u.disabled);
    assert_eq!(u.reason, r::SECRET_NOT_FOUND);
    assert_eq!(u.display_name, "corp", "falls back to the name");
}

/// The per-namespace limit: the oldest `max` keep their place; the others
/// are taken out of the broker with NamespaceLimitReached and Stalled.
#[test]
fn providers_beyond_the_namespace_limit_are_not_programmed() {
    let i = Inputs::good();
    let good = || validate(&i.idp, &i.secrets, i.discovery.as_ref(), None, &env());
    for (position, max) in [(0, 0), (5, 0), (0, 2), (1, 2)] {
        let mut v = good();
        v.limit_per_namespace("team-a", position, max);
        assert_eq!(v.phase, phases::READY, "{position}/{max}");
        assert!(v.programming.entry().is_some());
    }
    let mut v = good();
    v.limit_per_namespace("team-a", 2, 2);
    assert_eq!(v.phase, phases::ERROR);
    assert!(v.programming.entry().is_none(), "taken out of the broker");
    for (t, status) in [
        (t::PROGRAMMED, "False"),
        (t::READY, "False"),
        (t::STALLED, "True"),
    ] {
        let c = v.condition(t);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (status, r::NAMESPACE_LIMIT),
            "{t}"
        );
    }
    assert!(v.condition(t::READY).message.contains("number 3 by age"));
    assert_eq!(
        v.condition(t::CONFIG_VALID).status.as_str(),
        "True",
        "the checks stay"
    );
}

/// A record proves a domain for the spec's issuer and client: an entry
/// kept as last known good for another issuer (the new one failing) gets
/// no verified domain from it.
#[test]
fn verified_domains_only_for_the_issuer_and_client_the_record_names() {
    let verified = sso_operator::domains::DomainStatus {
        domain: "corp.test".into(),
        state: "Verified".into(),
        reason: "Verified".into(),
        message: String::new(),
        record_name: "_sso-operator.corp.test".into(),
        record_value: "sso-operator-domain-verification=x".into(),
        last_checked: None,
        last_verified: None,
        verified_since: None,
        failures: 0,
    };
    let entry = previous();
    let (issuer, client) = (entry.issuer.clone(), entry.client_id.clone());
    for (programming, spec_issuer, spec_client, want) in [
        (
            Programming::Program(Box::new(entry.clone())),
            issuer.as_str(),
            Some(client.as_str()),
            true,
        ),
        (
            Programming::KeepLastKnownGood(Box::new(entry.clone())),
            issuer.as_str(),
            Some(client.as_str()),
            true,
        ),
        (
            Programming::KeepLastKnownGood(Box::new(entry.clone())),
            "https://idp.corp.test",
            Some(client.as_str()),
            false,
        ),
        (
            Programming::KeepLastKnownGood(Box::new(entry.clone())),
            issuer.as_str(),
            Some("another"),
            false,
        ),
        (
            Programming::KeepLastKnownGood(Box::new(entry.clone())),
            issuer.as_str(),
            None,
            false,
        ),
    ] {
        let mut p = programming;
        p.set_domains(std::slice::from_ref(&verified), spec_issuer, spec_client);
        let e = p.entry().unwrap();
        assert_eq!(e.domains, ["corp.test"], "listed either way");
        assert_eq!(
            !e.verified_domains.is_empty(),
            want,
            "{spec_issuer} {spec_client:?}"
        );
    }
}
