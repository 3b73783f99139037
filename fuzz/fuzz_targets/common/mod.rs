//! What the fuzz targets share: a key ring, a provider whose IdP is a
//! closed loopback port (any network call fails at once), and a broker
//! serving it.
#![allow(dead_code)]

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sso_operator::{
    api::{ClaimMapping, ClientAuthMethod},
    broker::{Broker, BrokerSettings, Unscoped, redirect::RedirectPolicy, seal::KeyRing},
    config::{BrokerConfig, ProgrammedProvider},
    oidc::discovery::{HttpSettings, ProviderEndpoints},
};

pub const PUBLIC: &str = "https://sso.example.com";
/// Port 1 on loopback: nothing listens, connections are refused at once.
pub const ISSUER: &str = "http://127.0.0.1:1";
pub const KEY: &[u8] = b"fuzz-session-key-0123456789abcdef";
pub const ALLOWED_DOMAIN: &str = ".app.example.com";

/// One current-thread runtime for a whole fuzzing run.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn new_ring() -> KeyRing {
    KeyRing::new(&[KEY]).expect("fuzz key is long enough")
}

pub fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(new_ring)
}

pub fn provider(namespace: &str, name: &str) -> ProgrammedProvider {
    ProgrammedProvider {
        namespace: namespace.into(),
        name: name.into(),
        display_name: format!("Provider {name}"),
        generation: 1,
        issuer: ISSUER.into(),
        client_id: "fuzz-client".into(),
        client_secret: Some("fuzz-secret".into()),
        client_auth_method: ClientAuthMethod::ClientSecretBasic,
        scopes: vec!["openid".into(), "email".into()],
        pkce: true,
        authorize_params: Default::default(),
        endpoints: ProviderEndpoints {
            issuer: ISSUER.into(),
            authorization_endpoint: format!("{ISSUER}/auth"),
            token_endpoint: format!("{ISSUER}/token"),
            userinfo_endpoint: Some(format!("{ISSUER}/me")),
            jwks_uri: format!("{ISSUER}/jwks"),
            end_session_endpoint: Some(format!("{ISSUER}/session/end")),
            token_endpoint_auth_methods: None,
            token_endpoint_auth_signing_algs: None,
            code_challenge_methods: Some(vec!["S256".into()]),
            id_token_signing_algs: None,
            discovered: true,
        },
        id_token_algs: vec![],
        ca_bundle: None,
        claims: serde_json::from_str::<ClaimMapping>("{}").expect("claim mapping defaults"),
        require_verified_email: true,
        allowed_email_domains: vec![],
        allowed_groups: vec!["admins".into()],
        allowed_users: vec![],
        redirect_uri: format!("{PUBLIC}/oauth/callback/{namespace}/{name}"),
        domains: Vec::new(),
        verified_domains: Vec::new(),
    }
}

pub fn config() -> BrokerConfig {
    let providers = [provider("sso", "corp"), provider("sso", "other")];
    let policy: sso_operator::config::ProgrammedPolicy = serde_json::from_value(serde_json::json!({
        "namespace": "sso", "name": "app", "generation": 1,
        "hosts": ["app.example.com", "*.example.org"], "paths": ["/app"],
        "providers": ["sso/corp"],
        "rules": {"allow": [{"users": ["alice"]}, {"emailDomains": ["example.com"]}], "deny": [{"groups": ["banned"]}]},
    }))
    .expect("a valid policy");
    BrokerConfig {
        providers: providers.into_iter().map(|p| (p.key(), p)).collect(),
        policies: [(policy.key(), policy)].into(),
        ..BrokerConfig::default()
    }
}

pub fn broker() -> Arc<Broker> {
    let broker = Broker::new(BrokerSettings {
        public_url: PUBLIC.parse().expect("public URL"),
        cookie_domain: None,
        session_lifetime: 3600,
        session_refresh: 300,
        redirect: redirect_policy(),
        http: HttpSettings {
            connect_timeout: Duration::from_millis(200),
            timeout: Duration::from_millis(500),
            egress: Default::default(),
        },
        unscoped: Unscoped::Policy("sso/app".into()),
    });
    broker.set_keys(new_ring());
    broker.apply_config(&config());
    broker
}

pub fn redirect_policy() -> RedirectPolicy {
    RedirectPolicy {
        allowed_domains: vec![ALLOWED_DOMAIN.into(), "exact.example.org".into()],
        allow_http: false,
    }
}

/// Whether a browser at `PUBLIC` told to go to `location` would stay on
/// hosts the broker may send it to: its own, an allowed domain, or the
/// IdP.
pub fn location_is_safe(location: &str) -> bool {
    let Ok(base) = url::Url::parse(PUBLIC) else {
        return false;
    };
    let Ok(target) = base.join(location) else {
        // A browser would not follow it either.
        return true;
    };
    let Some(host) = target.host_str() else {
        return false;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "sso.example.com"
        || host == "app.example.com"
        || host.ends_with(".app.example.com")
        || host == "exact.example.org"
        || host == "127.0.0.1"
}
