//! Runs the broker in-process on a free loopback port, and an HTTP client
//! that walks a login through it like a browser would (cookie jar, one
//! redirect at a time), filling in the real OP's login and consent forms.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sso_operator::{
    api::{ClaimMapping, ClientAuthMethod},
    broker::{Broker, BrokerSettings, Unscoped, redirect::RedirectPolicy, seal::KeyRing},
    config::{BrokerConfig, ProgrammedPolicy, ProgrammedProvider},
    oidc::discovery::{HttpSettings, ProviderEndpoints},
};

pub const KEY_A: &[u8] = b"test-session-key-A-0123456789abcdef";
pub const KEY_B: &[u8] = b"test-session-key-B-0123456789abcdef";

pub struct TestBroker {
    pub broker: Arc<Broker>,
    pub addr: SocketAddr,
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBroker {
    /// Binds a port, then builds the config from the broker's base URL
    /// (redirect URIs depend on it) and serves.
    pub async fn start(config: impl FnOnce(&str) -> BrokerConfig) -> TestBroker {
        Self::start_at(0, config).await
    }

    /// Like [`start`](Self::start) on a given port (0 = any).
    pub async fn start_at(port: u16, config: impl FnOnce(&str) -> BrokerConfig) -> TestBroker {
        Self::start_full(port, None, 0, config).await
    }

    /// Like [`start_at`](Self::start_at) with session refresh after
    /// `every` seconds.
    pub async fn start_refreshing(
        port: u16,
        every: i64,
        config: impl FnOnce(&str) -> BrokerConfig,
    ) -> TestBroker {
        Self::start_full(port, None, every, config).await
    }

    /// Behind a proxy at `public`, with session refresh after `every` s.
    pub async fn start_refreshing_behind(
        public: &str,
        every: i64,
        config: impl FnOnce(&str) -> BrokerConfig,
    ) -> TestBroker {
        Self::start_full(0, Some(public), every, config).await
    }

    /// Serves on any port, with a public URL in front of it (a proxy).
    pub async fn start_behind(
        public: &str,
        config: impl FnOnce(&str) -> BrokerConfig,
    ) -> TestBroker {
        Self::start_full(0, Some(public), 0, config).await
    }

    async fn start_full(
        port: u16,
        public: Option<&str>,
        session_refresh: i64,
        config: impl FnOnce(&str) -> BrokerConfig,
    ) -> TestBroker {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let base = public.map_or_else(|| format!("http://{addr}"), str::to_string);
        let broker = Broker::new(BrokerSettings {
            public_url: base.parse().unwrap(),
            cookie_domain: None,
            session_lifetime: 3600,
            session_refresh,
            redirect: RedirectPolicy {
                allowed_domains: vec!["app.example.com".into()],
                allow_http: false,
            },
            // The test OPs listen on loopback.
            http: HttpSettings {
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(3),
                egress: sso_operator::oidc::egress::Egress::with_loopback(),
            },
            // These brokers test logins and sessions; tests/policy.rs and
            // the broker's own tests cover policies and the default.
            unscoped: Unscoped::AnyProvider,
        });
        broker.set_keys(KeyRing::new(&[KEY_A]).unwrap());
        broker.apply_config(&config(&base));
        let app = broker.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestBroker {
            broker,
            addr,
            base,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A programmed provider with endpoints at the given paths of `issuer`.
pub fn provider(
    key: &str,
    issuer: &str,
    base: &str,
    paths: [&str; 5],
    client_id: &str,
    secret: Option<&str>,
) -> ProgrammedProvider {
    let (namespace, name) = key.split_once('/').unwrap();
    let [authz, token, userinfo, jwks, end] = paths;
    ProgrammedProvider {
        namespace: namespace.into(),
        name: name.into(),
        display_name: format!("Provider {name}"),
        generation: 1,
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret: secret.map(str::to_string),
        client_auth_method: if secret.is_some() {
            ClientAuthMethod::ClientSecretBasic
        } else {
            ClientAuthMethod::None
        },
        scopes: vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "groups".into(),
        ],
        pkce: true,
        authorize_params: Default::default(),
        endpoints: ProviderEndpoints {
            issuer: issuer.into(),
            authorization_endpoint: format!("{issuer}{authz}"),
            token_endpoint: format!("{issuer}{token}"),
            userinfo_endpoint: Some(format!("{issuer}{userinfo}")),
            jwks_uri: format!("{issuer}{jwks}"),
            end_session_endpoint: Some(format!("{issuer}{end}")),
            token_endpoint_auth_methods: None,
            token_endpoint_auth_signing_algs: None,
            code_challenge_methods: Some(vec!["S256".into()]),
            id_token_signing_algs: None,
            discovered: true,
        },
        id_token_algs: vec![],
        ca_bundle: None,
        claims: ClaimMapping::default(),
        require_verified_email: true,
        allowed_email_domains: vec![],
        allowed_groups: vec![],
        allowed_users: vec![],
        redirect_uri: format!("{base}/oauth/callback/{namespace}/{name}"),
        domains: Vec::new(),
        verified_domains: Vec::new(),
    }
}

/// The two tenants' providers of the multi-tenant tests, at real OPs:
/// corp's `corp/corp` ("Corp") and tenant B's `tenant-b/evil`
/// ("Tenant B"), both client `demo`/`demo-secret`.
pub fn two_tenant_config(base: &str, corp_issuer: &str, evil_issuer: &str) -> BrokerConfig {
    let named = |key: &str, issuer: &str, display: &str| {
        let mut p = provider(key, issuer, base, OP_PATHS, "demo", Some("demo-secret"));
        p.display_name = display.into();
        p
    };
    config(vec![
        named("corp/corp", corp_issuer, "Corp"),
        named("tenant-b/evil", evil_issuer, "Tenant B"),
    ])
}

/// Two real OPs, corp's and tenant B's (each with a client for a broker at
/// `public`), and that broker serving both providers
/// ([`two_tenant_config`]), its config then changed by `edit`.
pub async fn two_tenants_behind(
    public: &str,
    edit: impl FnOnce(&mut BrokerConfig),
) -> (crate::op::Op, crate::op::Op, TestBroker) {
    let corp_op = crate::op::Op::start(&[("OP_CLIENTS", &op_clients(public, "corp/corp"))]);
    let evil_op = crate::op::Op::start(&[("OP_CLIENTS", &op_clients(public, "tenant-b/evil"))]);
    let tb = TestBroker::start_behind(public, |base| {
        let mut c = two_tenant_config(base, &corp_op.issuer, &evil_op.issuer);
        edit(&mut c);
        c
    })
    .await;
    (corp_op, evil_op, tb)
}

/// Policy `ns/name` for host 127.0.0.1 and path `prefix`, through
/// `provider`, alice only.
pub fn alice_only(ns: &str, name: &str, prefix: &str, provider: &str) -> ProgrammedPolicy {
    serde_json::from_value(serde_json::json!({
        "namespace": ns, "name": name, "generation": 1,
        "hosts": ["127.0.0.1"], "paths": [prefix], "providers": [provider],
        "rules": {"allow": [{"users": ["alice"]}]},
    }))
    .unwrap()
}

/// Endpoint paths of the npm oidc-provider harness.
pub const OP_PATHS: [&str; 5] = ["/auth", "/token", "/me", "/jwks", "/session/end"];

pub fn config(providers: Vec<ProgrammedProvider>) -> BrokerConfig {
    BrokerConfig {
        providers: providers.into_iter().map(|p| (p.key(), p)).collect(),
        ..BrokerConfig::default()
    }
}

/// `OP_CLIENTS` for the real OP: client `demo` registered for this broker.
pub fn op_clients(base: &str, key: &str) -> String {
    serde_json::json!([{
        "client_id": "demo",
        "client_secret": "demo-secret",
        "redirect_uris": [format!("{base}/oauth/callback/{key}")],
        "post_logout_redirect_uris": [format!("{base}/oauth/logged-out")],
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }])
    .to_string()
}

/// Arguments of `sso-operator broker` serving from a config file and a
/// session-keys file, without a cluster.
pub fn broker_from_files(
    listen: &str,
    public_url: &str,
    config: &std::path::Path,
    keys: &std::path::Path,
    metrics: &str,
) -> Vec<String> {
    [
        "broker",
        // The test OPs listen on loopback.
        "--allow-provider-cidrs",
        "127.0.0.0/8",
        "--listen",
        listen,
        "--public-url",
        public_url,
        "--config-file",
        config.to_str().unwrap(),
        "--session-keys-file",
        keys.to_str().unwrap(),
        "--metrics-addr",
        metrics,
        // Logins and reloads are under test here, not policies.
        "--any-provider-auth",
    ]
    .map(str::to_string)
    .to_vec()
}

/// A client like a browser: cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn location(resp: &reqwest::Response, current: &str) -> Option<String> {
    let loc = resp.headers().get("location")?.to_str().ok()?;
    Some(url::Url::parse(current).ok()?.join(loc).ok()?.to_string())
}

fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let rest = &html[start..];
    let a = rest.find("action=\"")? + 8;
    let end = rest[a..].find('"')?;
    Some(rest[a..a + end].replace("&amp;", "&"))
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input type=\"hidden\"") {
        let tag_end = rest[i..].find('>').map_or(rest.len(), |e| i + e);
        let tag = &rest[i..tag_end];
        let attr = |name: &str| {
            let k = format!("{name}=\"");
            let s = tag.find(&k)? + k.len();
            let e = tag[s..].find('"')?;
            Some(tag[s..s + e].to_string())
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
        rest = &rest[tag_end..];
    }
    out
}

/// The end of a walk: the last response's status, URL and body.
#[derive(Debug)]
pub struct Landing {
    pub status: u16,
    pub url: String,
    /// Where the last response redirected to, if it did.
    pub location: Option<String>,
    pub body: String,
}

impl Landing {
    /// The `data-reason` of a broker error page.
    pub fn reason(&self) -> Option<&str> {
        let i = self.body.find("data-reason=\"")? + 13;
        let e = self.body[i..].find('"')?;
        Some(&self.body[i..i + e])
    }
}

/// One GET, redirects not followed: its status, `Location` and body.
pub async fn get(client: &reqwest::Client, url: impl AsRef<str>) -> Landing {
    let url = url.as_ref();
    let resp = client.get(url).send().await.unwrap();
    Landing {
        status: resp.status().as_u16(),
        location: location(&resp, url),
        url: url.to_string(),
        body: resp.text().await.unwrap_or_default(),
    }
}

/// Walks from `url` through redirects and the real OP's login and consent
/// forms (logging in as `login`) until the broker's callback has answered.
/// Stops at the first response of `stop_prefix` (normally the broker
/// callback) and returns it.
pub async fn walk(client: &reqwest::Client, url: &str, login: &str, stop_prefix: &str) -> Landing {
    let mut url = url.to_string();
    let mut form: Option<(String, Vec<(String, String)>)> = None;
    for _ in 0..20 {
        let resp = match form.take() {
            Some((action, fields)) => {
                let r = client.post(&action).form(&fields).send().await.unwrap();
                url = action;
                r
            }
            None => client.get(&url).send().await.unwrap(),
        };
        let status = resp.status().as_u16();
        let next = location(&resp, &url);
        if url.starts_with(stop_prefix) {
            let body = resp.text().await.unwrap_or_default();
            return Landing {
                status,
                url,
                location: next,
                body,
            };
        }
        if let Some(next) = next {
            url = next;
            continue;
        }
        let body = resp.text().await.unwrap_or_default();
        if status == 200 && body.contains("name=\"login\"") {
            let action = form_action(&body).expect("login form has an action");
            form = Some((
                action,
                vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "any".into()),
                ],
            ));
            continue;
        }
        if status == 200 && body.contains("name=\"prompt\" value=\"consent\"") {
            let action = form_action(&body).expect("consent form has an action");
            form = Some((action, vec![("prompt".into(), "consent".into())]));
            continue;
        }
        return Landing {
            status,
            url,
            location: None,
            body,
        };
    }
    panic!("too many redirects, last at {url}");
}

/// A full login at the broker at `base` as `user` through `provider`,
/// asking to land on `rd`: the broker's answer to the callback.
pub async fn login_at(
    client: &reqwest::Client,
    base: &str,
    provider: &str,
    user: &str,
    rd: &str,
) -> Landing {
    walk(
        client,
        &format!("{base}/oauth/start?provider={provider}&rd={rd}"),
        user,
        &format!("{base}/oauth/callback/"),
    )
    .await
}

/// Posts the OP's logout confirmation page found at `url`.
pub async fn confirm_op_logout(client: &reqwest::Client, url: &str) -> Landing {
    let page = get(client, url).await.body;
    let action = form_action(&page).expect("logout form");
    let mut fields = hidden_inputs(&page);
    fields.push(("logout".into(), "yes".into()));
    let resp = client.post(&action).form(&fields).send().await.unwrap();
    Landing {
        status: resp.status().as_u16(),
        location: location(&resp, &action),
        url: action,
        body: String::new(),
    }
}
