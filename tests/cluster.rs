//! The operator against a real Kubernetes API server: etcd and
//! kube-apiserver built from their Go modules (tests/controlplane, built by
//! scripts/controlplane.sh) and started on 127.0.0.1 for this test binary.
//! No kubelet or scheduler: the controller runs as a local process of the
//! real binary, as it would in its pod.
//!
//! Each test works in namespaces of its own.

use sso_test_support as common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{cluster, crd_cases, free_port, issuer};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde::Deserialize as _;
use serde_json::{Value, json};
use sso_operator::{
    api::{IdentityProvider, conditions::types, policy::AccessPolicy},
    config::{BROKER_CONFIG_KEY, BrokerConfig},
    controller::validate::{CREDENTIALS_SECRET_TYPE, Env, SecretContent, SecretData, validate},
    manifest,
    oidc::discovery::{CacheTtl, DiscoveryCache, DiscoveryRequest, HttpSettings},
};

const PUBLIC_URL: &str = "https://sso.example.com";
const CONFIG_SECRET: &str = "sso-operator-broker-config";

/// Creates `object` in `ns` with server-side dry run: nothing is stored.
async fn dry_run_create(client: &Client, ns: &str, mut object: Value) -> Result<(), String> {
    object["metadata"]["namespace"] = json!(ns);
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let result = match kind.as_str() {
        "IdentityProvider" => {
            let idp: IdentityProvider =
                serde_json::from_value(object).map_err(|e| format!("does not parse: {e}"))?;
            Api::<IdentityProvider>::namespaced(client.clone(), ns)
                .create(&pp, &idp)
                .await
                .map(|_| ())
        }
        "AccessPolicy" => {
            let ap: AccessPolicy =
                serde_json::from_value(object).map_err(|e| format!("does not parse: {e}"))?;
            Api::<AccessPolicy>::namespaced(client.clone(), ns)
                .create(&pp, &ap)
                .await
                .map(|_| ())
        }
        "Secret" => {
            let s: Secret = serde_json::from_value(object).map_err(|e| e.to_string())?;
            Api::<Secret>::namespaced(client.clone(), ns)
                .create(&pp, &s)
                .await
                .map(|_| ())
        }
        other => return Err(format!("no dry run for kind {other}")),
    };
    result.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_crd_and_every_rule_and_example_on_a_real_api_server() {
    let cp = cluster::shared();
    let client = cp.client().await;
    let crd = cluster::install_crds(&client).await;
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True"),
        "{conditions:?}"
    );
    let ns = cp.namespace("crd").await;

    for object in crd_cases::accepted() {
        let r = dry_run_create(&client, &ns, object.clone()).await;
        assert!(r.is_ok(), "{object} should be admitted: {r:?}");
    }
    // The real CEL evaluation refuses each rejected example with the
    // message the README promises.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let promised: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| ") && l.matches('`').count() == 2)
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    for (object, fragment) in crd_cases::rejected() {
        let message = promised
            .iter()
            .find(|m| m.contains(fragment))
            .unwrap_or_else(|| panic!("the README promises no message with {fragment:?}"));
        match dry_run_create(&client, &ns, object.clone()).await {
            Ok(()) => panic!("{object} was admitted; expected {fragment:?}"),
            Err(e) => assert!(e.contains(message), "{object}: {e} lacks {message:?}"),
        }
    }
    // Every example manifest, as a user would apply it.
    let docs = manifest::load(&[concat!(env!("CARGO_MANIFEST_DIR"), "/examples").into()]).unwrap();
    let mut applied = 0;
    for d in &docs {
        if let Err(e) = dry_run_create(&client, &ns, d.value.clone()).await {
            panic!("{} ({}): {e}", d.source, d.kind());
        }
        applied += 1;
    }
    // Every document of every example file was found: as many as the
    // files have top-level `kind:` lines.
    let mut files = vec![];
    for dir in ["examples", "examples/local"] {
        for e in std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "yaml") {
                files.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let kinds: usize = files
        .iter()
        .map(|t| t.lines().filter(|l| l.starts_with("kind: ")).count())
        .sum();
    assert!(files.len() >= 9, "{} example files", files.len());
    assert_eq!(applied, kinds, "every example document was applied");
}

/// A process of the real binary, killed if the test ends without
/// [`Running::terminate`].
struct Running(Option<Child>);

impl Running {
    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let mut child = self.0.take().unwrap();
        common::terminate(&mut child, Duration::from_secs(20))
            .expect("the process did not stop within 20 s of SIGTERM")
            .code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An append-only log file for processes of namespace `ns`.
fn log_file(cp: &cluster::ControlPlane, ns: &str) -> std::fs::File {
    let path = cp.dir.path().join(format!("{ns}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// The real binary with `args`, as `kubeconfig`'s identity, logging beside
/// the control plane's log (kept when a test fails).
fn spawn_sso(
    cp: &cluster::ControlPlane,
    ns: &str,
    kubeconfig: &std::path::Path,
    args: &[String],
    env: &[(&str, String)],
) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file(cp, ns))
        .stderr(log_file(cp, ns))
        .spawn()
        .unwrap();
    Running(Some(child))
}

/// `sso-operator controller` as a process with the admin kubeconfig,
/// reconciling namespace `ns` and writing the broker config there.
fn controller(cp: &cluster::ControlPlane, ns: &str, extra: &[&str]) -> Running {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "controller",
        "--public-url",
        PUBLIC_URL,
        "--namespace",
        ns,
        "--watch-namespace",
        ns,
        "--metrics-addr",
        &metrics,
        "--provider-timeout",
        "5",
        "--allow-provider-cidrs",
        "127.0.0.0/8",
    ]
    .map(str::to_string)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    spawn_sso(cp, ns, &cp.kubeconfig, &args, &[])
}

async fn wait_for<T, F>(what: &str, mut f: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after 30 s waiting for {what}");
}

/// A fresh namespace for providers, with the CRDs installed, the test
/// issuer's URL and the client Secret `corp-oidc` (value `v1`).
async fn provider_namespace(
    cp: &cluster::ControlPlane,
    prefix: &str,
) -> (Client, String, String, Api<Secret>, Api<IdentityProvider>) {
    let client = cp.client().await;
    cluster::install_crds(&client).await;
    let ns = cp.namespace(prefix).await;
    let issuer = format!("{}/good", issuer::serve_http().await);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "v1"),
        )
        .await
        .unwrap();
    (client, ns, issuer, secrets, idps)
}

/// Waits until provider `name`'s condition `type_` says `reason`.
async fn wait_for_reason(
    idps: &Api<IdentityProvider>,
    name: &str,
    type_: &str,
    reason: &str,
) -> sso_operator::api::Condition {
    wait_for(&format!("{name}: {type_} {reason}"), async || {
        let i = idps.get(name).await.ok()?;
        let c = i
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)?;
        (c.reason == reason).then_some(c)
    })
    .await
}

/// A client-credentials Secret (the type a provider may read).
fn secret(name: &str, key: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "type": CREDENTIALS_SECRET_TYPE,
        "stringData": {key: value},
    }))
    .unwrap()
}

fn provider(name: &str, issuer: &str) -> IdentityProvider {
    serde_json::from_value(json!({
        "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
        "metadata": {"name": name},
        "spec": {"issuer": issuer, "clientID": "c",
                 "clientSecretRef": {"name": "corp-oidc", "key": "clientSecret"}}
    }))
    .unwrap()
}

fn phase(i: &IdentityProvider) -> Option<&str> {
    i.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The broker config the controller wrote into `ns`, if any.
async fn broker_config(secrets: &Api<Secret>) -> Option<BrokerConfig> {
    broker_config_named(secrets, CONFIG_SECRET).await
}

/// Waits until the config in Secret `name` holds `value` as the client
/// secret of provider `key`.
async fn client_secret_in_config(secrets: &Api<Secret>, name: &str, key: &str, value: &str) {
    wait_for(
        &format!("{key}'s client secret {value:?} in {name}"),
        async || {
            broker_config_named(secrets, name)
                .await?
                .providers
                .get(key)
                .filter(|p| p.client_secret.as_deref() == Some(value))
                .map(|_| ())
        },
    )
    .await;
}

/// Rotates the client secret in Secret `corp-oidc`.
async fn set_client_secret(secrets: &Api<Secret>, value: &str) {
    secrets
        .patch(
            "corp-oidc",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"clientSecret": value}})),
        )
        .await
        .unwrap();
}

/// Events about `name`, by reason.
async fn events_by_reason(client: &Client, ns: &str, name: &str) -> BTreeMap<String, i32> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for e in events.list(&ListParams::default()).await.unwrap() {
        if e.involved_object.name.as_deref() == Some(name) {
            // A repeated event is counted in its series (events.k8s.io/v1).
            let n = e
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1);
            *out.entry(e.reason.unwrap_or_default()).or_insert(0) += n;
        }
    }
    out
}

#[tokio::test]
async fn the_controller_process_programs_a_provider_through_the_real_api_server() {
    let cp = cluster::shared();
    let (client, ns, issuer, secrets, idps) = provider_namespace(cp, "ctl").await;
    let run = controller(cp, &ns, &[]);
    idps.create(&PostParams::default(), &provider("corp", &issuer))
        .await
        .unwrap();
    let ready = wait_for("corp to be Ready", async || {
        let i = idps.get("corp").await.ok()?;
        (phase(&i) == Some("Ready")).then_some(i)
    })
    .await;

    // The same conditions the pure core computes from the same inputs.
    let discovery = DiscoveryCache::new(
        HttpSettings {
            egress: sso_operator::oidc::egress::Egress::with_loopback(),
            ..Default::default()
        },
        CacheTtl::default(),
    )
    .get(&DiscoveryRequest {
        issuer: issuer.clone(),
        overrides: Default::default(),
        ca_bundle: None,
    })
    .await;
    let mut inputs = ready.clone();
    inputs.status = None;
    let secret_data: SecretData = [(
        "corp-oidc".to_string(),
        SecretContent::credentials([("clientSecret".to_string(), b"v1".to_vec())].into()),
    )]
    .into();
    let env = Env {
        public_url: PUBLIC_URL.parse().unwrap(),
    };
    let core = validate(&inputs, &secret_data, Some(&discovery), None, &env);
    let status = ready.status.clone().unwrap();
    // (type, status, reason, message) of each, sorted by type.
    let gist = |cs: &[sso_operator::api::Condition]| -> Vec<[String; 4]> {
        cs.iter()
            .map(|c| {
                [
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect()
    };
    let want = sso_operator::controller::status::merge_conditions(
        &[],
        &core.conditions,
        ready.metadata.generation.unwrap_or_default(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    assert_eq!(gist(&status.conditions), gist(&want));
    assert_eq!(
        status.redirect_uri.as_deref(),
        Some(format!("{PUBLIC_URL}/oauth/callback/{ns}/corp").as_str())
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == ready.metadata.generation)
    );

    // One Event per transition: Ready once.
    let events = wait_for("the Ready event", async || {
        let e = events_by_reason(&client, &ns, "corp").await;
        e.contains_key("Ready").then_some(e)
    })
    .await;
    assert_eq!(events["Ready"], 1, "{events:?}");

    // A reconcile that changes nothing writes nothing: touch the object
    // (a label, which triggers a reconcile but no generation), then the
    // resourceVersion stays the one the label write produced.
    let touched = idps
        .patch(
            "corp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = idps.get("corp").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, touched.metadata.resource_version,
        "no status write for an unchanged status"
    );
    assert_eq!(events_by_reason(&client, &ns, "corp").await, events);

    // The broker config carries the resolved secret; a rotation follows.
    client_secret_in_config(&secrets, CONFIG_SECRET, &format!("{ns}/corp"), "v1").await;
    set_client_secret(&secrets, "v2").await;
    client_secret_in_config(&secrets, CONFIG_SECRET, &format!("{ns}/corp"), "v2").await;

    // A missing Secret is reported precisely.
    secrets
        .delete("corp-oidc", &DeleteParams::default())
        .await
        .unwrap();
    let failed = wait_for_reason(&idps, "corp", types::SECRET_RESOLVED, "SecretNotFound").await;
    assert_eq!(failed.status, "False");

    // A Secret of another type (here the Opaque one a team keeps its
    // database password in) is refused unread, through the real server.
    let mut opaque = secret("db", "password", "db-secret");
    opaque.type_ = Some("Opaque".into());
    secrets
        .create(&PostParams::default(), &opaque)
        .await
        .unwrap();
    let mut thief = provider("thief", &issuer);
    thief.spec.client_id = None;
    thief.spec.client_id_from = Some(sso_operator::api::SecretKeyRef {
        name: "db".into(),
        key: "password".into(),
    });
    idps.create(&PostParams::default(), &thief).await.unwrap();
    let refused = wait_for_reason(&idps, "thief", types::SECRET_RESOLVED, "SecretWrongType").await;
    assert!(
        refused.message.contains("has type Opaque") && !refused.message.contains("db-secret"),
        "{}",
        refused.message
    );
    idps.delete("thief", &DeleteParams::default())
        .await
        .unwrap();

    // Deleting the provider prunes it from the broker config.
    idps.create(&PostParams::default(), &provider("other", &issuer))
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "v3"),
        )
        .await
        .unwrap();
    wait_for("both providers programmed", async || {
        let cfg = broker_config(&secrets).await?;
        (cfg.providers.len() == 2).then_some(())
    })
    .await;
    idps.delete("corp", &DeleteParams::default()).await.unwrap();
    let cfg = wait_for("corp pruned", async || {
        let cfg = broker_config(&secrets).await?;
        (cfg.providers.len() == 1).then_some(cfg)
    })
    .await;
    assert!(cfg.providers.contains_key(&format!("{ns}/other")));

    assert_eq!(run.terminate(), Some(0), "a clean stop on SIGTERM");
}

/// `--max-providers-per-namespace 2`: a team's third provider is not
/// programmed and says why (Stalled, so GitOps tools fail it); when one of
/// the first two goes, it takes the free place.
#[tokio::test]
async fn a_namespace_gets_no_more_providers_than_the_limit() {
    let cp = cluster::shared();
    let (_, ns, issuer, secrets, idps) = provider_namespace(cp, "limit").await;
    let run = controller(cp, &ns, &["--max-providers-per-namespace", "2"]);
    for name in ["first", "second", "third"] {
        idps.create(&PostParams::default(), &provider(name, &issuer))
            .await
            .unwrap();
        // Distinct creation seconds: the order is the API server's.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let refused = wait_for_reason(&idps, "third", types::READY, "NamespaceLimitReached").await;
    assert!(
        refused.message.contains("allows per namespace"),
        "{}",
        refused.message
    );
    let stalled = wait_for_reason(&idps, "third", types::STALLED, "NamespaceLimitReached").await;
    assert_eq!(stalled.status, "True");
    let cfg = wait_for("two programmed", async || {
        let cfg = broker_config(&secrets).await?;
        (cfg.providers.len() == 2).then_some(cfg)
    })
    .await;
    assert!(!cfg.providers.contains_key(&format!("{ns}/third")));

    idps.delete("first", &DeleteParams::default())
        .await
        .unwrap();
    // The third is retried on its backoff (10 s after its first refusal).
    let mut programmed = false;
    for _ in 0..60 {
        let cfg = broker_config(&secrets).await;
        if cfg.is_some_and(|c| c.providers.contains_key(&format!("{ns}/third"))) {
            programmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(programmed, "the third took the free place");
    assert_eq!(run.terminate(), Some(0));
}

/// Provider `name`'s status of `domain`, once it says `reason`; polls up
/// to `secs` seconds (rechecks back off from 30 s).
async fn wait_for_domain(
    idps: &Api<IdentityProvider>,
    name: &str,
    domain: &str,
    reason: &str,
    secs: u64,
) -> sso_operator::domains::DomainStatus {
    for _ in 0..secs * 5 {
        if let Some(d) = idps.get(name).await.ok().and_then(|i| {
            i.status?
                .domains
                .into_iter()
                .find(|d| d.domain == domain && d.reason == reason)
        }) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = idps.get(name).await.ok().and_then(|i| i.status);
    panic!("{name}: {domain} not {reason} in {secs} s; status: {now:?}");
}

#[tokio::test]
async fn domains_verified_through_a_real_dns_server() {
    use sso_operator::domains::{Owner, record};
    let cp = cluster::shared();
    let (client, ns, issuer, secrets, idps) = provider_namespace(cp, "dom").await;
    // The key's Secret, empty, as the chart creates it.
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "domain-key"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut dns = common::dns::Dnsmasq::new();
    let exists = "host-record=corp.test,127.0.0.2".to_string();
    dns.serve(std::slice::from_ref(&exists));
    let server = dns.addr().to_string();
    let run = controller(
        cp,
        &ns,
        &[
            "--dns-server",
            &server,
            "--dns-timeout-secs",
            "1",
            "--domain-key-secret",
            "domain-key",
        ],
    );
    let mut idp = provider("corp", &issuer);
    idp.spec.domains = vec!["corp.test".into(), "Gmail.com".into(), "co.uk".into()];
    idps.create(&PostParams::default(), &idp).await.unwrap();

    let pending = wait_for_domain(&idps, "corp", "corp.test", "RecordNotFound", 30).await;
    assert_eq!(pending.state, "Pending");
    assert_eq!(pending.record_name, "_sso-operator.corp.test");
    // The value is the HMAC under the key the controller generated into
    // its Secret, of this provider: anyone holding the key computes it.
    let key = wait_for("the generated key", async || {
        let s = secrets.get("domain-key").await.ok()?;
        Some(String::from_utf8(s.data?.get("domain-key")?.0.clone()).unwrap())
    })
    .await;
    let owner = Owner {
        namespace: &ns,
        name: "corp",
        issuer: &issuer,
        client_id: "c",
    };
    let (name, value) = record(key.trim().as_bytes(), owner, "corp.test");
    assert_eq!(pending.record_value, value);
    let free = wait_for_domain(&idps, "corp", "Gmail.com", "FreeMail", 5).await;
    assert_eq!(free.state, "Error");
    wait_for_domain(&idps, "corp", "co.uk", "PublicSuffix", 5).await;
    let summary = wait_for_reason(&idps, "corp", types::DOMAINS_VERIFIED, "PublicSuffix").await;
    assert_eq!(summary.status, "False");
    // Domains are not part of Ready: the provider serves its other users.
    wait_for_reason(&idps, "corp", types::READY, "Ready").await;

    // The team creates the record: verified at the next recheck (30 s
    // after the first miss).
    dns.serve(&[exists.clone(), common::dns::txt(&name, &value)]);
    let verified = wait_for_domain(&idps, "corp", "corp.test", "Verified", 60).await;
    assert!(verified.last_verified.is_some());
    // The broker learns it: the refused domains are not the provider's.
    let key_of = format!("{ns}/corp");
    wait_for("the broker entry's verified domain", async || {
        let cfg = broker_config(&secrets).await?;
        let entry = cfg.providers.get(&key_of)?;
        (entry.domains == ["corp.test"] && entry.verified_domains == ["corp.test"]).then_some(())
    })
    .await;
    // The refused domains removed from the spec: all verified, without a
    // new lookup (the verified domain is not due).
    let queries = dns.txt_queries();
    idps.patch(
        "corp",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"domains": ["corp.test"]}})),
    )
    .await
    .unwrap();
    let all = wait_for_reason(&idps, "corp", types::DOMAINS_VERIFIED, "AllVerified").await;
    assert_eq!(all.status, "True");
    // Each transition of DomainsVerified is an Event.
    let events = wait_for("the DomainsVerified events", async || {
        let e = events_by_reason(&client, &ns, "corp").await;
        (e.contains_key("PublicSuffix") && e.contains_key("AllVerified")).then_some(e)
    })
    .await;
    assert_eq!(events["AllVerified"], 1, "{events:?}");
    assert_eq!(
        dns.txt_queries(),
        queries,
        "no lookup before the recheck is due"
    );

    // A new client ID: a new record value, Pending at once.
    idps.patch(
        "corp",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"clientID": "c2"}})),
    )
    .await
    .unwrap();
    let moved = wait_for_domain(&idps, "corp", "corp.test", "RecordMismatch", 30).await;
    assert_eq!(moved.state, "Pending");
    let owner2 = Owner {
        client_id: "c2",
        ..owner
    };
    assert_eq!(
        moved.record_value,
        record(key.trim().as_bytes(), owner2, "corp.test").1
    );
    assert_eq!(run.terminate(), Some(0));
}

#[tokio::test]
async fn two_controller_processes_elect_one_leader_and_hand_over() {
    let cp = cluster::shared();
    let client = cp.client().await;
    cluster::install_crds(&client).await;
    let ns = cp.namespace("lease").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = async || -> Option<String> {
        leases
            .get("sso-operator-controller")
            .await
            .ok()?
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let a = controller(cp, &ns, &["--leader-election", "--identity", "replica-a"]);
    let first = wait_for("a leader", async || holder().await).await;
    assert_eq!(first, "replica-a");
    let b = controller(cp, &ns, &["--leader-election", "--identity", "replica-b"]);
    // The second waits while the first renews.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    // The leader stops: it releases the Lease and the other takes over.
    assert_eq!(a.terminate(), Some(0));
    let next = wait_for("the hand-over", async || {
        holder().await.filter(|h| h == "replica-b")
    })
    .await;
    assert_eq!(next, "replica-b");
    let lease = leases.get("sso-operator-controller").await.unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 1);
    assert_eq!(b.terminate(), Some(0));
}

/// The real `helm` (scripts/helm-deps.sh) with the control plane's admin
/// kubeconfig.
fn helm(cp: &cluster::ControlPlane, args: &[&str]) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(format!("{root}/.tools/bin/helm"))
        .args(args)
        .current_dir(root)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CACHE_HOME", cp.dir.path().join("helm-cache"))
        .env("HELM_CONFIG_HOME", cp.dir.path().join("helm-config"))
        .env("HELM_DATA_HOME", cp.dir.path().join("helm-data"))
        .output()
        .unwrap()
}

/// `helm install|upgrade rel charts/sso-operator -n ns --set ...`. The
/// test OPs listen on loopback: `providerEgress.allowCIDRs` lets the
/// processes reach them (without it they refuse, EgressDenied).
fn chart(cp: &cluster::ControlPlane, verb: &str, ns: &str, sets: &[&str]) {
    let mut args = vec![verb, "rel", "charts/sso-operator", "-n", ns];
    args.extend(["--set", "providerEgress.allowCIDRs={127.0.0.0/8}"]);
    for s in sets {
        args.extend(["--set", s]);
    }
    helm_ok(cp, &args);
}

fn helm_ok(cp: &cluster::ControlPlane, args: &[&str]) -> String {
    let out = helm(cp, args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The arguments and environment of the chart's Deployment `name`, as its
/// pod would run them, with the listening addresses moved to free loopback
/// ports (nothing is scheduled here: the test runs the binary itself).
async fn deployment_command(client: &Client, ns: &str, name: &str) -> (Vec<String>, u16, u16) {
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), ns);
    let d = deploys.get(name).await.unwrap();
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    let port = free_port();
    let metrics = free_port();
    let args = c
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a != "--log-json")
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{metrics}")
            } else if a.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    (args, port, metrics)
}

/// Runs the binary with `args` as the chart's ServiceAccount `sa` would
/// (impersonated), with the pod's downward-API environment.
fn run_as(cp: &cluster::ControlPlane, ns: &str, sa: &str, args: &[String]) -> Running {
    let env = [
        ("POD_NAMESPACE", ns.to_string()),
        ("POD_NAME", format!("{sa}-pod")),
    ];
    spawn_sso(
        cp,
        ns,
        &cp.kubeconfig_for_service_account(ns, sa),
        args,
        &env,
    )
}

/// The chart installed, used, upgraded, uninstalled and installed again
/// with the real helm; the controller and the broker run with the chart's
/// arguments and exactly the permissions of its ServiceAccounts; a user
/// logs in through a provider in another namespace.
#[tokio::test]
async fn the_chart_through_its_lifecycle_with_its_own_service_accounts() {
    use common::{
        broker::{browser, get, login_at, op_clients},
        op::Op,
    };
    // A control plane of its own: the chart owns the cluster-scoped CRD,
    // and Helm refuses to adopt one another test applied without it.
    let own = cluster::ControlPlane::start();
    let cp = &own;
    let client = cp.client().await;
    let ns = cp.namespace("sso").await;
    let team = cp.namespace("team").await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    // The login and session checks below ask /oauth/auth; the policy's
    // own URL is checked where the policy is made.
    let set_url = format!("publicURL={public}");
    let any = "broker.anyProviderAuth=true";
    chart(cp, "install", &ns, &[&set_url, any]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // The chart generates no session keys (a template cannot keep them:
    // Argo CD renders it anew on every sync); the controller does.
    assert!(
        secrets
            .get("rel-session-keys")
            .await
            .unwrap()
            .data
            .is_none(),
        "the chart's session keys Secret starts empty"
    );

    // The controller, as its Deployment runs it, as its ServiceAccount.
    let (ctl_args, _, _) = deployment_command(&client, &ns, "rel-controller").await;
    let ctl = run_as(cp, &ns, "rel-controller", &ctl_args);
    let generated = wait_for("the controller to generate session keys", async || {
        let s = secrets.get("rel-session-keys").await.ok()?;
        let v = s.data?.get("session-keys")?.0.clone();
        (!v.is_empty()).then_some(String::from_utf8(v).unwrap())
    })
    .await;
    assert!(
        sso_operator::broker::source::parse_keys(&generated).is_ok(),
        "a usable key: {generated:?}"
    );

    // A team's provider at a real OP, with its client secret.
    let key = format!("{team}/corp");
    let op = Op::start(&[("OP_CLIENTS", &op_clients(&public, &key))]);
    Api::<Secret>::namespaced(client.clone(), &team)
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "demo-secret"),
        )
        .await
        .unwrap();
    let mut idp = provider("corp", &op.issuer);
    idp.spec.client_id = Some("demo".into());
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &team);
    idps.create(&PostParams::default(), &idp).await.unwrap();
    wait_for("corp Ready under the chart's RBAC", async || {
        let i = idps.get("corp").await.ok()?;
        (phase(&i) == Some("Ready")).then_some(())
    })
    .await;

    // The broker, as its Deployment runs it, as its ServiceAccount: it
    // watches the config and keys Secrets by name.
    // Listening on the public URL's port.
    let broker_command = async || {
        let (mut args, _, metrics) = deployment_command(&client, &ns, "rel-broker").await;
        for a in &mut args {
            if a.starts_with("--listen=") {
                *a = format!("--listen=127.0.0.1:{port}");
            }
        }
        (args, metrics)
    };
    let (broker_args, broker_metrics) = broker_command().await;
    let broker = run_as(cp, &ns, "rel-broker", &broker_args);
    let b = browser();
    wait_for("the broker to offer corp", async || {
        let page = b.get(format!("{public}/oauth/login")).send().await.ok()?;
        page.text().await.ok()?.contains(&key).then_some(())
    })
    .await;
    let landing = login_at(&b, &public, &key, "alice", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let auth = b.get(format!("{public}/oauth/auth")).send().await.unwrap();
    assert_eq!(auth.status(), 200);
    assert_eq!(auth.headers()["x-auth-request-user"], "alice");

    // An app's AccessPolicy, put in force by the chart's controller; its
    // auth URL is the chart's broker Service.
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &team);
    policies
        .create(
            &PostParams::default(),
            &access_policy(
                "app",
                json!({
                    "hosts": ["app.example.com"], "providers": [{"name": "corp"}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    let app = wait_for("the policy Ready under the chart's RBAC", async || {
        let p = policies.get("app").await.ok()?;
        (policy_condition(&p, "Ready")?.0 == "True").then_some(p)
    })
    .await;
    assert_eq!(
        app.status.unwrap().auth_url.unwrap(),
        format!("http://rel-broker.{ns}.svc.cluster.local:80/oauth/auth/{team}/app")
    );
    wait_for("the broker to enforce the policy", async || {
        let r = b
            .get(format!("{public}/oauth/auth/{team}/app"))
            .header("x-original-url", "https://app.example.com/x")
            .send()
            .await
            .ok()?;
        (r.status() == 200 && r.headers()["x-auth-request-user"] == "alice").then_some(())
    })
    .await;

    // Logins go on while the provider table is swapped: a second provider
    // is created and deleted, so the controller rewrites the config Secret
    // and the broker reloads it twice. Not one login may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = tokio::spawn({
        let (stop, public, key) = (stop.clone(), public.clone(), key.clone());
        async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = browser();
                let l = login_at(&c, &public, &key, "loop", "/").await;
                if l.status == 302 && get(&c, format!("{public}/oauth/auth")).await.status == 200 {
                    ok += 1;
                } else {
                    failed.push(format!("{l:?}"));
                }
            }
            (ok, failed)
        }
    });
    let cfg_secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut other = provider("other", &op.issuer);
    other.spec.client_id = Some("demo".into());
    idps.create(&PostParams::default(), &other).await.unwrap();
    wait_for("other programmed", async || {
        let c = broker_config_named(&cfg_secrets, "rel-broker-config").await?;
        c.providers
            .contains_key(&format!("{team}/other"))
            .then_some(())
    })
    .await;
    wait_for("the broker to offer other", async || {
        let page = get(&b, format!("{public}/oauth/login")).await.body;
        page.contains(&format!("{team}/other")).then_some(())
    })
    .await;
    idps.delete("other", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the broker to drop other", async || {
        let page = get(&b, format!("{public}/oauth/login")).await.body;
        (!page.contains(&format!("{team}/other"))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = logins.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} logins failed: {failed:#?}",
        failed.len()
    );
    assert!(ok >= 2, "only {ok} logins ran across the swaps");

    // Session keys rotate through their Secret: a new key first keeps the
    // session; dropping the old key ends it, and a new login works.
    let old_keys = String::from_utf8(
        secrets.get("rel-session-keys").await.unwrap().data.unwrap()["session-keys"]
            .0
            .clone(),
    )
    .unwrap();
    let new_key = "0123456789abcdef0123456789abcdef-rotated";
    let set_keys = async |text: String| {
        secrets
            .patch(
                "rel-session-keys",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"session-keys": text}})),
            )
            .await
            .unwrap();
    };
    // The broker counts each key ring it loads: the first, then this one.
    let keys_loaded = async |n: u32| {
        let m = get(&b, format!("http://127.0.0.1:{broker_metrics}/metrics"))
            .await
            .body;
        m.contains(&format!(
            "sso_broker_config_reloads_total{{result=\"keys\"}} {n}"
        ))
        .then_some(())
    };
    keys_loaded(1)
        .await
        .expect("the first key ring was counted");
    set_keys(format!("{new_key}\n{old_keys}")).await;
    wait_for("the rotated key ring", async || keys_loaded(2).await).await;
    let fresh = browser();
    let l = login_at(&fresh, &public, &key, "rotated", "/").await;
    assert_eq!(l.status, 302, "{l:?}");
    assert_eq!(
        get(&b, format!("{public}/oauth/auth")).await.status,
        200,
        "old session kept"
    );
    set_keys(format!("{new_key}\n")).await;
    wait_for("the old key dropped", async || {
        (get(&b, format!("{public}/oauth/auth")).await.status == 401).then_some(())
    })
    .await;
    assert_eq!(
        get(&fresh, format!("{public}/oauth/auth")).await.status,
        200
    );
    let landing = login_at(&b, &public, &key, "alice", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let keys_before = secrets.get("rel-session-keys").await.unwrap().data;

    // The provider flaps (its Secret goes and comes back): a second Ready
    // Event, which the recorder counts in the first one's series.
    let team_secrets: Api<Secret> = Api::namespaced(client.clone(), &team);
    team_secrets
        .delete("corp-oidc", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("corp in Error", async || {
        let i = idps.get("corp").await.ok()?;
        (phase(&i) == Some("Error")).then_some(())
    })
    .await;
    team_secrets
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "demo-secret"),
        )
        .await
        .unwrap();
    let events = wait_for("the second Ready event", async || {
        let e = events_by_reason(&client, &team, "corp").await;
        (e.get("Ready") == Some(&2)).then_some(e)
    })
    .await;
    // One Event per condition transition: Ready appears (1), SecretResolved
    // and Ready turn False (SecretNotFound twice) with Programmed
    // (NotReady), then all three back (Resolved, Programmed, Ready 2).
    let want: BTreeMap<String, i32> = [
        ("Ready", 2),
        ("SecretNotFound", 2),
        ("NotReady", 1),
        ("Resolved", 1),
        ("Programmed", 1),
    ]
    .map(|(r, n)| (r.to_string(), n))
    .into();
    assert_eq!(events, want);

    // Every permission the chart grants its ServiceAccounts was used, and
    // none of their requests was refused: take any grant away and the
    // request that used it is refused, which fails this test.
    let unused = unused_permissions(cp, &client, &ns, &["rel-controller", "rel-broker"]).await;
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
    for sa in ["rel-controller", "rel-broker"] {
        let denied = requests_of(cp, &format!("system:serviceaccount:{ns}:{sa}"), Some(403));
        assert!(denied.is_empty(), "{sa} was refused: {denied:#?}");
    }

    // Upgrade with changed values: the controller-written config and the
    // session keys survive; the session stays valid.
    chart(
        cp,
        "upgrade",
        &ns,
        &[&set_url, any, "broker.sessionLifetimeSeconds=7200"],
    );
    assert_eq!(
        secrets.get("rel-session-keys").await.unwrap().data,
        keys_before
    );
    let cfg = broker_config_named(&secrets, "rel-broker-config").await;
    assert!(
        cfg.is_some_and(|c| c.providers.contains_key(&key)),
        "config survived the upgrade"
    );
    assert_eq!(get(&b, format!("{public}/oauth/auth")).await.status, 200);
    // The pods roll with the new values: the broker restarts with the
    // upgraded Deployment's arguments, the session survives the restart,
    // and a new login gets the new lifetime.
    let (upgraded_args, _) = broker_command().await;
    assert!(
        upgraded_args.contains(&"--session-lifetime=7200".to_string()),
        "{upgraded_args:?}"
    );
    assert_eq!(broker.terminate(), Some(0));
    let broker = run_as(cp, &ns, "rel-broker", &upgraded_args);
    wait_for("the upgraded broker", async || {
        let r = b.get(format!("{public}/oauth/auth")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let fresh = browser();
    let landing = login_at(&fresh, &public, &key, "after-upgrade", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let me: serde_json::Value = fresh
        .get(format!("{public}/oauth/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let left = me["expiresAt"].as_i64().unwrap() - jiff::Timestamp::now().as_second();
    assert!(
        (7000..=7200).contains(&left),
        "the upgraded session lifetime (7200 s): {me}"
    );

    // Uninstall keeps both Secrets (resource-policy keep); a reinstall
    // adopts them and everything works again.
    assert_eq!(broker.terminate(), Some(0));
    assert_eq!(ctl.terminate(), Some(0));
    helm_ok(cp, &["uninstall", "rel", "-n", &ns]);
    assert!(
        secrets.get("rel-broker-config").await.is_ok(),
        "kept on uninstall"
    );
    assert_eq!(
        secrets.get("rel-session-keys").await.unwrap().data,
        keys_before
    );
    chart(cp, "install", &ns, &[&set_url, any]);
    assert_eq!(
        secrets.get("rel-session-keys").await.unwrap().data,
        keys_before,
        "a reinstall reuses the session keys: nobody is logged out"
    );
    // The reinstalled Deployments' own arguments.
    let (ctl_args, _, _) = deployment_command(&client, &ns, "rel-controller").await;
    let (broker_args, _) = broker_command().await;
    let ctl = run_as(cp, &ns, "rel-controller", &ctl_args);
    let broker = run_as(cp, &ns, "rel-broker", &broker_args);
    wait_for("the broker after the reinstall", async || {
        let r = b.get(format!("{public}/oauth/auth")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(broker.terminate(), Some(0));
    assert_eq!(ctl.terminate(), Some(0));
}

/// The broker config in Secret `name`, if written.
async fn broker_config_named(secrets: &Api<Secret>, name: &str) -> Option<BrokerConfig> {
    let s = secrets.get(name).await.ok()?;
    BrokerConfig::decode(&s.data?.get(BROKER_CONFIG_KEY)?.0).ok()
}

type Permission = (String, String, String);

/// (API group, resource, verb) of the requests `user` made and was allowed,
/// from the control plane's audit log.
fn used_by(cp: &cluster::ControlPlane, user: &str) -> std::collections::BTreeSet<Permission> {
    requests_of(cp, user, None)
}

/// (API group, resource, verb) of `user`'s requests: those answered with
/// `code`, or all but the refused ones (403) when `None`.
fn requests_of(
    cp: &cluster::ControlPlane,
    user: &str,
    code: Option<u64>,
) -> std::collections::BTreeSet<Permission> {
    let log = std::fs::read_to_string(cp.dir.path().join("audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["impersonatedUser"]["username"] == user)
        .filter(|e| {
            let got = e["responseStatus"]["code"].as_u64();
            match code {
                Some(c) => got == Some(c),
                None => got.is_some_and(|c| c != 403),
            }
        })
        .map(|e| {
            let r = &e["objectRef"];
            let resource = match r["subresource"].as_str() {
                Some(sub) => format!("{}/{sub}", r["resource"].as_str().unwrap_or("")),
                None => r["resource"].as_str().unwrap_or("").to_string(),
            };
            (
                r["apiGroup"].as_str().unwrap_or("").to_string(),
                resource,
                e["verb"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Each (group, resource, verb) the chart's Roles and ClusterRoles grant a
/// ServiceAccount that the ServiceAccount never used, by rule.
async fn unused_permissions(
    cp: &cluster::ControlPlane,
    client: &Client,
    ns: &str,
    sas: &[&str],
) -> Vec<String> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
    // Give the audit log a moment to be flushed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let is = |subjects: &Option<Vec<Subject>>, sa: &str| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        })
    };
    let mut unused = Vec::new();
    for sa in sas {
        let used = used_by(cp, &format!("system:serviceaccount:{ns}:{sa}"));
        // Every rule bound to the ServiceAccount, in any namespace.
        let mut rules = Vec::new();
        for b in Api::<ClusterRoleBinding>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            if is(&b.subjects, sa) {
                let r = Api::<ClusterRole>::all(client.clone())
                    .get(&b.role_ref.name)
                    .await
                    .unwrap();
                rules.extend(r.rules.unwrap_or_default());
            }
        }
        for b in Api::<RoleBinding>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            if is(&b.subjects, sa) {
                let at = b.metadata.namespace.clone().unwrap_or_default();
                let r = if b.role_ref.kind == "Role" {
                    Api::<Role>::namespaced(client.clone(), &at)
                        .get(&b.role_ref.name)
                        .await
                        .unwrap()
                        .rules
                } else {
                    Api::<ClusterRole>::all(client.clone())
                        .get(&b.role_ref.name)
                        .await
                        .unwrap()
                        .rules
                };
                rules.extend(r.unwrap_or_default());
            }
        }
        assert!(!rules.is_empty(), "no rules for {sa}");
        for rule in rules {
            for group in rule.api_groups.clone().unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        let p = (group.clone(), resource.clone(), verb.clone());
                        if !used.contains(&p) {
                            unused.push(format!("{sa}: {group}/{resource} {verb}"));
                        }
                    }
                }
            }
        }
    }
    unused
}

/// With `rbac.secretNamespaces`, the chart grants Secret reads only in
/// those namespaces: the controller watches Secrets there only (a
/// cluster-wide watch would be refused), reads its own config Secret with
/// the grant made for that case, and follows a rotation.
#[tokio::test]
async fn the_chart_with_secret_namespaces_reads_secrets_only_there() {
    let own = cluster::ControlPlane::start();
    let cp = &own;
    let client = cp.client().await;
    let ns = cp.namespace("sso").await;
    let team = cp.namespace("team").await;
    let set_ns = format!("rbac.secretNamespaces={{{team}}}");
    chart(
        cp,
        "install",
        &ns,
        &["publicURL=https://sso.example.com", &set_ns],
    );
    let (ctl_args, _, _) = deployment_command(&client, &ns, "rel-controller").await;
    let ctl = run_as(cp, &ns, "rel-controller", &ctl_args);
    let base = issuer::serve_http().await;
    let team_secrets: Api<Secret> = Api::namespaced(client.clone(), &team);
    team_secrets
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "v1"),
        )
        .await
        .unwrap();
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &team);
    idps.create(
        &PostParams::default(),
        &provider("corp", &format!("{base}/good")),
    )
    .await
    .unwrap();
    wait_for("corp Ready", async || {
        let i = idps.get("corp").await.ok()?;
        (phase(&i) == Some("Ready")).then_some(())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    set_client_secret(&team_secrets, "v2").await;
    // Followed through the namespaced Secret watch.
    client_secret_in_config(&secrets, "rel-broker-config", &format!("{team}/corp"), "v2").await;
    let unused = unused_permissions(cp, &client, &ns, &["rel-controller"]).await;
    // A repeated Event's patch and a policy's status are exercised by the
    // lifecycle test.
    let unused: Vec<_> = unused
        .into_iter()
        .filter(|u| {
            u != "rel-controller: events.k8s.io/events patch"
                && u != "rel-controller: sso-operator.dev/accesspolicies/status patch"
        })
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
    let denied = requests_of(
        cp,
        &format!("system:serviceaccount:{ns}:rel-controller"),
        Some(403),
    );
    assert!(denied.is_empty(), "the controller was refused: {denied:#?}");
    assert_eq!(ctl.terminate(), Some(0));
}

/// The team Role the README gives, applied as written (its namespace
/// swapped for the test's): its members manage IdentityProviders and read
/// their status, and cannot read a Secret.
#[tokio::test]
async fn the_readme_team_role_manages_providers_and_reads_no_secret() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let cp = cluster::shared();
    let admin = cp.client().await;
    cluster::install_crds(&admin).await;
    let ns = cp.namespace("tenant").await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("name: identityprovider-editor"))
        .expect("the README's team Role");
    let yaml = block.replace("namespace: team-a", &format!("namespace: {ns}"));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(docs[0].clone()).unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(docs[1].clone()).unwrap(),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &secret("corp-oidc", "clientSecret", "s3cr3t"),
        )
        .await
        .unwrap();

    let dev = cp
        .client_with(&cp.kubeconfig_as("team-dev", "dev-1", &["team-a-developers"]))
        .await;
    let idps: Api<IdentityProvider> = Api::namespaced(dev.clone(), &ns);
    idps.create(
        &PostParams::default(),
        &provider("corp", "https://idp.example.com"),
    )
    .await
    .expect("the team creates a provider");
    assert!(
        idps.get_status("corp").await.is_ok(),
        "and reads its status"
    );
    let forbidden =
        |r: Result<Secret, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let secrets: Api<Secret> = Api::namespaced(dev.clone(), &ns);
    assert!(forbidden(secrets.get("corp-oidc").await), "no Secret read");
    assert!(
        matches!(secrets.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 403),
        "no Secret list"
    );
    // Nor the operator's own Secrets elsewhere.
    let elsewhere: Api<Secret> = Api::namespaced(dev, "default");
    assert!(forbidden(elsewhere.get("sso-operator-broker-config").await));
}

/// The condition `type_` of an AccessPolicy: (status, reason, message).
fn policy_condition(p: &AccessPolicy, type_: &str) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn access_policy(name: &str, spec: Value) -> AccessPolicy {
    serde_json::from_value(json!({
        "apiVersion": "sso-operator.dev/v1alpha1", "kind": "AccessPolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Issue 14's two-tenant attack, end to end on a real API server: corp's
/// app accepts corp's provider only; tenant B's provider (its own OP) says
/// its user is alice and gets nothing at corp's app. Tenant B cannot point
/// a policy at corp's provider until corp's provider admits tenant B's
/// namespace (by label, followed through the Namespace watch), and loses a
/// host corp's older policy claims.
#[tokio::test]
async fn access_policies_bind_apps_to_their_providers_across_namespaces() {
    use common::{
        broker::{browser, login_at, op_clients},
        op::Op,
    };
    use k8s_openapi::api::core::v1::Namespace;
    // All namespaces are watched: a control plane of its own, so no other
    // test's providers are reconciled by this controller.
    let own = cluster::ControlPlane::start();
    let cp = &own;
    let client = cp.client().await;
    cluster::install_crds(&client).await;
    let sso = cp.namespace("sso").await;
    let corp = cp.namespace("corp").await;
    let tenant = cp.namespace("tenantb").await;
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");

    // Two OPs: corp's and tenant B's, each with its client secret.
    let corp_key = format!("{corp}/corp");
    let evil_key = format!("{tenant}/evil");
    let corp_op = Op::start(&[("OP_CLIENTS", &op_clients(&public, &corp_key))]);
    let evil_op = Op::start(&[("OP_CLIENTS", &op_clients(&public, &evil_key))]);
    for (ns, name, op) in [(&corp, "corp", &corp_op), (&tenant, "evil", &evil_op)] {
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(
                &PostParams::default(),
                &secret("corp-oidc", "clientSecret", "demo-secret"),
            )
            .await
            .unwrap();
        let mut idp = provider(name, &op.issuer);
        idp.spec.client_id = Some("demo".into());
        Api::<IdentityProvider>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &idp)
            .await
            .unwrap();
    }
    Api::<Secret>::namespaced(client.clone(), &sso)
        .create(
            &PostParams::default(),
            &secret(
                "sso-operator-session-keys",
                "session-keys",
                "0123456789abcdef0123456789abcdef-policies",
            ),
        )
        .await
        .unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let auth_base = "http://sso-broker.sso.svc.cluster.local/oauth/auth";
    let ctl_args: Vec<String> = [
        "controller",
        "--public-url",
        &public,
        "--namespace",
        &sso,
        "--metrics-addr",
        &metrics,
        "--provider-timeout",
        "5",
        "--allow-provider-cidrs",
        "127.0.0.0/8",
        "--auth-url-base",
        auth_base,
    ]
    .map(str::to_string)
    .to_vec();
    let _ctl = spawn_sso(cp, &sso, &cp.kubeconfig, &ctl_args, &[]);
    let broker_metrics = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{port}");
    let broker_args: Vec<String> = [
        "broker",
        "--public-url",
        &public,
        "--namespace",
        &sso,
        "--listen",
        &listen,
        "--metrics-addr",
        &broker_metrics,
        "--allow-provider-cidrs",
        "127.0.0.0/8",
    ]
    .map(str::to_string)
    .to_vec();
    let _broker = spawn_sso(cp, &sso, &cp.kubeconfig, &broker_args, &[]);

    // corp's app: corp's provider, alice only.
    let corp_policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &corp);
    let tenant_policies: Api<AccessPolicy> = Api::namespaced(client.clone(), &tenant);
    corp_policies
        .create(
            &PostParams::default(),
            &access_policy(
                "app",
                json!({
                    "hosts": ["app.corp.example.com"],
                    "providers": [{"name": "corp"}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    let app = wait_for("corp/app Ready", async || {
        let p = corp_policies.get("app").await.ok()?;
        (policy_condition(&p, "Ready")?.0 == "True").then_some(p)
    })
    .await;
    assert_eq!(
        app.status.as_ref().unwrap().auth_url.as_deref(),
        Some(format!("{auth_base}/{corp}/app").as_str())
    );
    let (_, reason, message) = policy_condition(&app, "ResolvedRefs").unwrap();
    assert_eq!(
        (reason.as_str(), message),
        ("ResolvedRefs", format!("providers: {corp_key}"))
    );

    // Tenant B points a policy at corp's provider: refused, and says why.
    tenant_policies
        .create(
            &PostParams::default(),
            &access_policy(
                "steal",
                json!({
                    "hosts": ["steal.tenantb.example.com"],
                    "providers": [{"name": "corp", "namespace": corp}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    let steal = wait_for("tenant B's policy refused", async || {
        let p = tenant_policies.get("steal").await.ok()?;
        let (status, reason, message) = policy_condition(&p, "ResolvedRefs")?;
        (status == "False").then_some((reason, message))
    })
    .await;
    assert_eq!(steal.0, "RefNotPermitted");
    assert!(
        steal.1.contains(&format!(
            "IdentityProvider {corp_key} does not admit namespace {tenant}"
        )),
        "{}",
        steal.1
    );

    // Wait for the broker to serve both providers and corp's policy.
    let b = browser();
    let ask = async |c: &reqwest::Client, path: &str, host: &str| {
        c.get(format!("{public}{path}"))
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", "/")
            .send()
            .await
            .unwrap()
    };
    wait_for("the broker to enforce corp/app", async || {
        let r = ask(
            &b,
            &format!("/oauth/auth/{corp}/app"),
            "app.corp.example.com",
        )
        .await;
        (r.status() == 401).then_some(())
    })
    .await;
    wait_for("the broker to offer both providers", async || {
        let page = b
            .get(format!("{public}/oauth/login"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (page.contains(&corp_key) && page.contains(&evil_key)).then_some(())
    })
    .await;

    // The attack: tenant B's IdP says "alice".
    let mallory = browser();
    let l = login_at(&mallory, &public, &evil_key, "alice", "/").await;
    assert_eq!(l.status, 302, "{l:?}");
    let r = ask(
        &mallory,
        &format!("/oauth/auth/{corp}/app"),
        "app.corp.example.com",
    )
    .await;
    assert_eq!(r.status(), 401, "tenant B's alice at corp's app");
    assert!(r.headers().get("x-auth-request-user").is_none());
    let r = ask(
        &mallory,
        &format!("/oauth/auth/{tenant}/steal"),
        "steal.tenantb.example.com",
    )
    .await;
    assert_eq!(r.status(), 403, "a policy not in force admits nobody");

    // corp's alice gets in; corp's bob is refused by the rules.
    let alice = browser();
    assert_eq!(
        login_at(&alice, &public, &corp_key, "alice", "/")
            .await
            .status,
        302
    );
    let r = ask(
        &alice,
        &format!("/oauth/auth/{corp}/app"),
        "app.corp.example.com",
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
    assert_eq!(r.headers()["x-auth-request-provider"], corp_key.as_str());
    let bob = browser();
    assert_eq!(
        login_at(&bob, &public, &corp_key, "bob", "/").await.status,
        302
    );
    assert_eq!(
        ask(
            &bob,
            &format!("/oauth/auth/{corp}/app"),
            "app.corp.example.com"
        )
        .await
        .status(),
        403
    );

    // corp's provider admits namespaces labelled sso=corp; labelling
    // tenant B's namespace puts its policy in force (the Namespace watch),
    // removing the label takes it out again.
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &corp);
    idps.patch(
        "corp",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"sso": "corp"}}}}})),
    )
    .await
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let label = async |value: Value| {
        namespaces
            .patch(
                &tenant,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"sso": value}}})),
            )
            .await
            .unwrap();
    };
    label(json!("corp")).await;
    wait_for("tenant B's policy in force once admitted", async || {
        let p = tenant_policies.get("steal").await.ok()?;
        (policy_condition(&p, "Ready")?.0 == "True").then_some(())
    })
    .await;
    wait_for(
        "the broker to admit corp's alice at tenant B's app",
        async || {
            let r = ask(
                &alice,
                &format!("/oauth/auth/{tenant}/steal"),
                "steal.tenantb.example.com",
            )
            .await;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    label(Value::Null).await;
    wait_for(
        "tenant B's policy out of force once the label is gone",
        async || {
            let p = tenant_policies.get("steal").await.ok()?;
            (policy_condition(&p, "ResolvedRefs")?.1 == "RefNotPermitted").then_some(())
        },
    )
    .await;
    wait_for("the broker to refuse again", async || {
        let r = ask(
            &alice,
            &format!("/oauth/auth/{tenant}/steal"),
            "steal.tenantb.example.com",
        )
        .await;
        (r.status() == 403).then_some(())
    })
    .await;

    // A newer policy claiming corp's host loses it, and names the owner.
    tenant_policies
        .create(
            &PostParams::default(),
            &access_policy(
                "squat",
                json!({
                    "hosts": ["app.corp.example.com"],
                    "providers": [{"name": "evil"}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    let (status, reason, message) = wait_for("the squatter refused", async || {
        let p = tenant_policies.get("squat").await.ok()?;
        policy_condition(&p, "Accepted")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "HostConflict")
    );
    assert!(
        message.contains(&format!(
            "already claimed by the older AccessPolicy {corp}/app"
        )),
        "{message}"
    );
    // The owner is told too.
    wait_for("corp/app told of the squatter", async || {
        let p = corp_policies.get("app").await.ok()?;
        let (status, _, message) = policy_condition(&p, "Accepted")?;
        let told = message.contains(&format!(
            "the newer AccessPolicy {tenant}/squat also claims"
        ));
        (status == "True" && told).then_some(())
    })
    .await;
    assert_eq!(
        ask(
            &mallory,
            &format!("/oauth/auth/{tenant}/squat"),
            "app.corp.example.com"
        )
        .await
        .status(),
        403
    );

    // One Warning Event per transition of tenant B's policy; and a status
    // that changes nothing is not written again.
    // Refused twice (ResolvedRefs, Programmed and Ready each time), in
    // force once in between.
    let events = events_by_reason(&client, &tenant, "steal").await;
    let want: BTreeMap<String, i32> = [
        ("RefNotPermitted", 6),
        ("ResolvedRefs", 1),
        ("Programmed", 1),
        ("Ready", 1),
    ]
    .map(|(r, n)| (r.to_string(), n))
    .into();
    assert_eq!(events, want);
    let before = corp_policies
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        corp_policies
            .get("app")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );

    // Host ownership: the cluster administrator lists corp's hosts on its
    // Namespace. Tenant B can no longer claim one first (the squat on a
    // host corp has no policy for yet is refused as HostNotOwned), and
    // corp's own policies may claim only what the list holds.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &corp,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "sso-operator.dev/hosts": "*.corp.example.com"
            }}})),
        )
        .await
        .unwrap();
    tenant_policies
        .create(
            &PostParams::default(),
            &access_policy(
                "early",
                json!({
                    "hosts": ["wiki.corp.example.com"],
                    "providers": [{"name": "evil"}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    let (_, _, message) = wait_for("the early squat refused", async || {
        let p = tenant_policies.get("early").await.ok()?;
        let c = policy_condition(&p, "Accepted")?;
        (c.1 == "HostNotOwned").then_some(c)
    })
    .await;
    assert!(
        message.contains(&format!("belongs to namespace {corp}")),
        "{message}"
    );
    corp_policies
        .create(
            &PostParams::default(),
            &access_policy(
                "elsewhere",
                json!({
                    "hosts": ["app.example.org"],
                    "providers": [{"name": "corp"}],
                    "rules": {"allow": [{"users": ["alice"]}]},
                }),
            ),
        )
        .await
        .unwrap();
    wait_for("corp's unlisted host refused", async || {
        let p = corp_policies.get("elsewhere").await.ok()?;
        let c = policy_condition(&p, "Accepted")?;
        (c.1 == "HostNotOwned").then_some(())
    })
    .await;
}
