//! Fixtures shared by the integration tests.

pub mod apiserver;
pub mod badop;
pub mod broker;
pub mod caddy;
pub mod cluster;
pub mod crd_cases;
pub mod dns;
pub mod faultproxy;
pub mod issuer;
pub mod nginx;
pub mod op;

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use sso_operator::{
    api::{IdentityProvider, IdentityProviderSpec, SecretKeyRef},
    config::ProgrammedProvider,
    controller::validate::{Env, SecretContent, SecretData, validate},
    oidc::discovery::{DiscoveryOutcome, JwksSummary, ProviderEndpoints},
};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for the start of the next wall-clock second. Sessions count in
/// whole seconds: with a refresh due every second, requests that must not
/// refresh run early in one second, or a boundary crossed between them
/// makes the later one due (a real refresh, not the one the test means).
pub async fn early_in_a_second() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(1000 - ms) + 5)).await;
}

/// A process's resident size in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// A `/proc/<pid>/status` figure in KiB: `VmRSS`, `VmHWM` (the peak
/// resident size), `RssAnon` (heap and stacks), `RssFile` (the binary's
/// and libraries' pages); 0 when absent.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit; its
/// exit status, or `None` when it had to be killed.
pub fn terminate(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A child process killed when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub const ISSUER: &str = "https://idp.example.com";

/// A valid provider `team-a/corp` with a client secret in Secret `corp-oidc`.
pub fn idp() -> IdentityProvider {
    let spec: IdentityProviderSpec = serde_json::from_value(serde_json::json!({
        "issuer": ISSUER,
        "clientID": "client-1",
        "clientSecretRef": {"name": "corp-oidc", "key": "clientSecret"},
    }))
    .unwrap();
    IdentityProvider {
        metadata: ObjectMeta {
            name: Some("corp".into()),
            namespace: Some("team-a".into()),
            generation: Some(3),
            uid: Some("2f0b7f9e-1111-4c1a-9d7e-000000000001".into()),
            resource_version: Some("100".into()),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

pub fn secret_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

/// The Secrets `idp()` needs.
pub fn secrets() -> SecretData {
    let mut s = SecretData::new();
    s.insert(
        "corp-oidc".into(),
        SecretContent::credentials(BTreeMap::from([(
            "clientSecret".to_string(),
            b"s3cr3t-value".to_vec(),
        )])),
    );
    s
}

pub fn endpoints() -> ProviderEndpoints {
    ProviderEndpoints {
        issuer: ISSUER.into(),
        authorization_endpoint: format!("{ISSUER}/authorize"),
        token_endpoint: format!("{ISSUER}/token"),
        userinfo_endpoint: Some(format!("{ISSUER}/userinfo")),
        jwks_uri: format!("{ISSUER}/jwks"),
        end_session_endpoint: Some(format!("{ISSUER}/logout")),
        token_endpoint_auth_methods: Some(vec![
            "client_secret_basic".into(),
            "client_secret_post".into(),
        ]),
        token_endpoint_auth_signing_algs: None,
        code_challenge_methods: Some(vec!["S256".into()]),
        id_token_signing_algs: Some(vec!["RS256".into(), "ES256".into()]),
        discovered: true,
    }
}

pub fn fixed_time() -> jiff::Timestamp {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

/// A successful discovery for `idp()`.
pub fn discovery() -> DiscoveryOutcome {
    DiscoveryOutcome {
        endpoints: Ok(endpoints()),
        jwks: Some(Ok(JwksSummary {
            usable_keys: 2,
            total_keys: 2,
        })),
        fetched_at: fixed_time(),
    }
}

pub fn env() -> Env {
    Env {
        public_url: "https://sso.example.com".parse().unwrap(),
    }
}

/// The broker entry the core programs for `idp()` with its Secrets and a
/// good discovery.
pub fn programmed_entry() -> ProgrammedProvider {
    validate(&idp(), &secrets(), Some(&discovery()), None, &env())
        .programming
        .entry()
        .expect("good inputs program")
        .clone()
}
