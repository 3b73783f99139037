//! The controller's memory as a process against a real API server (the
//! test control plane: etcd + kube-apiserver, `scripts/controlplane.sh`),
//! with N IdentityProviders in one namespace and then an AccessPolicy for
//! each: the release binary's resident size once the broker config holds
//! them all. Run through `bench/controller-memory.sh`.
//!
//!   bench_controller_process [N]   (default 10000)

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::json;
use sso_operator::{
    api::{IdentityProvider, policy::AccessPolicy},
    config::{BROKER_CONFIG_KEY, BrokerConfig},
};
use sso_test_support::{
    cluster::{ControlPlane, install_crds},
    free_port, issuer, proc_status_kib,
};

async fn config(secrets: &Api<Secret>) -> Option<BrokerConfig> {
    let s = secrets.get("sso-operator-broker-config").await.ok()?;
    BrokerConfig::decode(&s.data?.get(BROKER_CONFIG_KEY)?.0).ok()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N"))
        .unwrap_or(10_000);
    let cp = ControlPlane::start();
    let client = cp.client().await;
    install_crds(&client).await;
    let ns = cp.namespace("bench").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "oidc"},
                "type": "sso-operator.dev/client-credentials",
                "stringData": {"clientSecret": "bench-secret"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let base = issuer::serve_http().await;
    let issuer = format!("{base}/good");

    let started = Instant::now();
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &ns);
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let idps = idps.clone();
            let issuer = issuer.clone();
            async move {
                let idp: IdentityProvider = serde_json::from_value(json!({
                    "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
                    "metadata": {"name": format!("p{i}")},
                    "spec": {"issuer": issuer, "clientID": format!("client-{i}"),
                             "clientSecretRef": {"name": "oidc", "key": "clientSecret"}},
                }))
                .unwrap();
                idps.create(&PostParams::default(), &idp).await.unwrap();
            }
        })
        .await;
    eprintln!("{n} providers created in {:?}", started.elapsed());

    // SSO_BIN: another build to compare (an older commit's binary).
    // SSO_WRAP: a program to run it under, e.g. `heaptrack` for a heap
    // profile (the resident size printed is then the wrapper's).
    let bin = std::env::var("SSO_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/sso-operator").to_string()
    });
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut command = match std::env::var("SSO_WRAP") {
        Ok(wrap) => {
            let mut c = Command::new(wrap);
            c.arg(&bin);
            c
        }
        Err(_) => Command::new(&bin),
    };
    let mut child = command
        .args(["controller", "--public-url", "https://sso.example.com"])
        .args(["--namespace", &ns, "--watch-namespace", &ns])
        .args([
            "--metrics-addr",
            &metrics,
            "--allow-provider-cidrs",
            "127.0.0.0/8",
        ])
        .env("KUBECONFIG", &cp.kubeconfig)
        // SSO_LOG: the controller's log filter (its log is then shown).
        .env(
            "RUST_LOG",
            std::env::var("SSO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(match std::env::var_os("SSO_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        })
        .spawn()
        .expect("target/release/sso-operator (bench/controller-memory.sh builds it)");
    let pid = child.id();
    let wait_until = async |what: &str, f: &dyn Fn(&BrokerConfig) -> bool| {
        let t = Instant::now();
        loop {
            if config(&secrets).await.is_some_and(|c| f(&c)) {
                eprintln!("{what} in {:?}", t.elapsed());
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(900), "{what}: timed out");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    wait_until("all providers programmed", &|c| c.providers.len() == n).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mem_providers = Memory::of(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("open files after the providers: {fds}");

    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &ns);
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let policies = policies.clone();
            async move {
                let p: AccessPolicy = serde_json::from_value(json!({
                    "apiVersion": "sso-operator.dev/v1alpha1", "kind": "AccessPolicy",
                    "metadata": {"name": format!("app{i}")},
                    "spec": {"hosts": [format!("app{i}.example.com")],
                             "providers": [{"name": format!("p{i}")}],
                             "rules": {"allow": [{"groups": ["users"]}]}},
                }))
                .unwrap();
                policies.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .await;
    wait_until("all policies in force", &|c| c.policies.len() == n).await;
    // And every policy's status written (the controller's steady state).
    let t = Instant::now();
    loop {
        let listed = policies.list(&Default::default()).await.unwrap();
        let written = listed
            .items
            .iter()
            .filter(|p| p.status.as_ref().is_some_and(|s| s.auth_url.is_some()))
            .count();
        if written == n {
            eprintln!("all policy statuses written in {:?}", t.elapsed());
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "policy statuses: timed out"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mem_both = Memory::of(pid);
    if std::env::var_os("SSO_WRAP").is_some() {
        // Killed, not stopped: the profile then shows what was live here.
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &pid.to_string()])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "controller process, {n} IdentityProviders: {mem_providers}; with {n} AccessPolicies too: {mem_both}"
    );
}

/// The process's resident size, split, and its peak so far.
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    peak: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let kib = |f| proc_status_kib(pid, f);
        Self {
            rss: kib("VmRSS"),
            anon: kib("RssAnon"),
            file: kib("RssFile"),
            peak: kib("VmHWM"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {} MiB (anonymous {}, file {}; peak so far {})",
            self.rss / 1024,
            self.anon / 1024,
            self.file / 1024,
            self.peak / 1024
        )
    }
}
