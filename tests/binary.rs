//! The `sso-operator` binary's `dev` and `broker` subcommands as a user runs
//! them: `dev` from a manifest folder against the real OP, with a login
//! through it; `broker` from a config file and a key file, reloading both
//! when they change.

use sso_test_support as common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{
    KillOnDrop,
    broker::{OP_PATHS, broker_from_files, browser, config, get, login_at, op_clients, provider},
    free_port,
    op::Op,
};

/// The broker's forward-auth answer for `client`'s session.
async fn forward_auth(client: &reqwest::Client, base: &str) -> reqwest::Response {
    client
        .get(format!("{base}/oauth/auth"))
        .send()
        .await
        .unwrap()
}

fn spawn_args(args: &[String]) -> (KillOnDrop, mpsc::Receiver<String>) {
    spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Starts the binary; returns it and a channel of its stdout lines.
fn spawn(args: &[&str]) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (KillOnDrop(child), rx)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
    }
    panic!(
        "no line containing {needle:?} within 30s; saw:\n{}",
        seen.join("\n")
    );
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn dev_serves_a_browser_login_from_a_manifest_folder() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let op = Op::start(&[("OP_CLIENTS", &op_clients(&base, "default/demo"))]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("demo.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-oidc, namespace: default}}\ntype: sso-operator.dev/client-credentials\nstringData: {{clientSecret: demo-secret}}\n---\n\
             apiVersion: sso-operator.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {{name: demo, namespace: default}}\n\
             spec:\n  displayName: Local demo\n  issuer: {}\n  clientID: demo\n  clientSecretRef: {{name: demo-oidc, key: clientSecret}}\n  scopes: [openid, email, profile, groups]\n---\n\
             apiVersion: sso-operator.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: app, namespace: default}}\n\
             spec:\n  hosts: [127.0.0.1]\n  providers: [{{name: demo}}]\n  rules: {{allow: [{{users: [olga]}}]}}\n",
            op.issuer
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{port}");
    let (mut dev, rx) = spawn(&[
        "dev",
        "-f",
        dir.path().to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    let mut lines = wait_for_line(&rx, "ready: default/demo");
    lines.extend(wait_for_line(&rx, "in force: AccessPolicy default/app"));
    assert!(
        lines.iter().any(|l| l.starts_with("PASS default/demo")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PASS AccessPolicy default/app")),
        "{lines:?}"
    );

    let client = browser();
    let page = get(&client, format!("{base}/")).await.body;
    assert!(page.contains("Sign in with Local demo"), "{page}");
    let landing = login_at(&client, &base, "default/demo", "olga", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    // Forward-auth is per policy; /oauth/auth without one admits nobody.
    assert_eq!(forward_auth(&client, &base).await.status(), 403);
    let r = client
        .get(format!("{base}/oauth/auth/default/app"))
        .header("x-forwarded-host", "127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "olga");
    // Metrics ride on the same port in dev.
    let m = get(&client, format!("{base}/metrics")).await.body;
    assert!(
        m.contains("sso_broker_logins_total{provider=\"default/demo\"} 1"),
        "{m}"
    );

    // Disable the provider in the folder: dev re-validates and the broker
    // stops offering it, saying why.
    let text = std::fs::read_to_string(dir.path().join("demo.yaml")).unwrap();
    std::fs::write(
        dir.path().join("demo.yaml"),
        text.replace(
            "  displayName: Local demo\n",
            "  displayName: Local demo\n  enabled: false\n",
        ),
    )
    .unwrap();
    wait_until("the provider to be disabled", async || {
        let r = client
            .get(format!("{base}/oauth/start?provider=default/demo"))
            .send()
            .await
            .unwrap();
        r.status() == 403
    })
    .await;

    // Ctrl-C or SIGTERM stops dev with exit 0, as --help promises.
    let status = common::terminate(&mut dev.0, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
}

#[tokio::test]
async fn broker_reloads_its_config_and_keys_files_without_a_restart() {
    let port = free_port();
    let metrics_port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("providers.json");
    let keys_path = dir.path().join("keys");
    let one = config(vec![provider(
        "team/one",
        "https://one.example.com",
        &base,
        OP_PATHS,
        "c1",
        Some("s1"),
    )]);
    std::fs::write(&cfg_path, one.to_json()).unwrap();
    std::fs::write(&keys_path, "0123456789abcdef0123456789abcdef-key-1\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let maddr = format!("127.0.0.1:{metrics_port}");
    let (_broker, _rx) = spawn_args(&broker_from_files(
        &listen, &base, &cfg_path, &keys_path, &maddr,
    ));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    wait_until("readiness", async || {
        match client.get(format!("http://{maddr}/readyz")).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    })
    .await;
    let page = get(&client, format!("{base}/oauth/login")).await.body;
    assert!(page.contains("data-provider=\"team/one\""));
    assert!(!page.contains("data-provider=\"team/two\""));

    // Add a provider by rewriting the file.
    let mut two = one.clone();
    let p2 = provider(
        "team/two",
        "https://two.example.com",
        &base,
        OP_PATHS,
        "c2",
        Some("s2"),
    );
    two.providers.insert(p2.key(), p2);
    std::fs::write(&cfg_path, two.to_json()).unwrap();
    wait_until("team/two to appear", async || {
        let page = get(&client, format!("{base}/oauth/login")).await.body;
        page.contains("data-provider=\"team/two\"")
    })
    .await;

    // A broken file keeps the previous providers (and is counted).
    std::fs::write(&cfg_path, "{ not json").unwrap();
    wait_until("the invalid reload to be counted", async || {
        let m = get(&client, format!("http://{maddr}/metrics")).await.body;
        m.contains("sso_broker_config_reloads_total{result=\"invalid\"} 1")
    })
    .await;
    let page = get(&client, format!("{base}/oauth/login")).await.body;
    assert!(
        page.contains("data-provider=\"team/one\"") && page.contains("data-provider=\"team/two\"")
    );

    // Short keys are refused; the old ring keeps serving.
    std::fs::write(&keys_path, "short\n").unwrap();
    wait_until("the invalid keys to be counted", async || {
        let m = get(&client, format!("http://{maddr}/metrics")).await.body;
        m.contains("sso_broker_config_reloads_total{result=\"invalid_keys\"} 1")
    })
    .await;
    let r = client
        .get(format!("{base}/oauth/start?provider=team/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "still serving with the previous keys");
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://one.example.com/auth?")
    );
}

/// `check --live --broker-config` writes what the controller would program,
/// owner-readable only, and `broker --config-file` serves it: a login
/// through the real OP with no cluster and no `dev`.
#[tokio::test]
async fn check_writes_a_broker_config_the_broker_serves() {
    use std::os::unix::fs::PermissionsExt as _;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let op = Op::start(&[("OP_CLIENTS", &op_clients(&base, "default/demo"))]);
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("demo.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-oidc, namespace: default}}\ntype: sso-operator.dev/client-credentials\nstringData: {{clientSecret: demo-secret}}\n---\n\
             apiVersion: sso-operator.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {{name: demo, namespace: default}}\n\
             spec:\n  issuer: {}\n  clientID: demo\n  clientSecretRef: {{name: demo-oidc, key: clientSecret}}\n  scopes: [openid, email, profile, groups]\n",
            op.issuer
        ),
    )
    .unwrap();
    let out = dir.path().join("providers.json");
    let status = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .args(["check", "--live", "--public-url", &base])
        .args(["--allow-provider-cidrs", "127.0.0.0/8", "-f"])
        .arg(&manifests)
        .arg("--broker-config")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "it holds client secrets");
    let cfg: sso_operator::config::BrokerConfig =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let p = &cfg.providers["default/demo"];
    assert_eq!(p.client_secret.as_deref(), Some("demo-secret"));
    assert_eq!(
        p.redirect_uri,
        format!("{base}/oauth/callback/default/demo")
    );
    assert_eq!(
        p.endpoints.token_endpoint,
        format!("{}/token", op.issuer),
        "discovered live"
    );

    // Without --live there is nothing validated to write: refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_sso-operator"))
        .args(["check", "-f"])
        .arg(&manifests)
        .arg("--broker-config")
        .arg(dir.path().join("x.json"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!refused.success());

    let keys = dir.path().join("keys");
    std::fs::write(&keys, "0123456789abcdef0123456789abcdef\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let (_broker, _rx) = spawn_args(&broker_from_files(&listen, &base, &out, &keys, &metrics));
    let client = browser();
    wait_until("the broker is ready", async || {
        client
            .get(format!("http://{metrics}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let landing = login_at(&client, &base, "default/demo", "alice", "/").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    let r = forward_auth(&client, &base).await;
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
}

/// `public-jwk` prints the JWK set to register a `private_key_jwt` client
/// with: public members only, the assertion's `kid`; a key it cannot use
/// is an exit 2 with the reason.
#[test]
fn public_jwk_prints_the_key_to_register() {
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_sso-operator"))
            .args(["public-jwk", "--key-file"])
            .arg(format!(
                "{}/tests/fixtures/{file}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .output()
            .unwrap()
    };
    let out = run("client-key-rsa.pem");
    assert!(out.status.success());
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jwk = &set["keys"][0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");
    // The RFC 7638 thumbprint (checked against the `jose` npm package).
    assert_eq!(jwk["kid"], "b-1qM3PbV9GLPCTKTxNP_arJgc4FNQQiWSk97Pkl4us");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(jwk.get(private).is_none(), "{private} must not be printed");
    }
    let out = run("client-key-ec-sec1.pem");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("openssl pkcs8 -topk8 -nocrypt"));
}

/// `check` reports spec.domains: offline, refused names fail the check and
/// the others are not looked up; with --live and the controller's key
/// (--domain-key-file), each domain's record and its state in a real DNS
/// server (dnsmasq).
#[tokio::test]
async fn check_reports_domain_states() {
    use sso_operator::domains::{Owner, record};
    let op = Op::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("idp.yaml");
    let write = |domains: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-oidc, namespace: default}}\ntype: sso-operator.dev/client-credentials\nstringData: {{clientSecret: demo-secret}}\n---\n\
                 apiVersion: sso-operator.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {{name: demo, namespace: default}}\n\
                 spec:\n  issuer: {}\n  clientID: demo\n  clientSecretRef: {{name: demo-oidc, key: clientSecret}}\n  domains: [{domains}]\n",
                op.issuer
            ),
        )
        .unwrap();
    };
    let key_file = dir.path().join("domain-key");
    std::fs::write(&key_file, "the-cluster-key\n").unwrap();
    let mut dns = sso_test_support::dns::Dnsmasq::new();
    dns.serve(&["host-record=corp.test,127.0.0.2".to_string()]);
    let dns_addr = dns.addr().to_string();
    let check = |live: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sso-operator"));
        c.args(["check", "-f"]).arg(&manifest);
        if live {
            c.args(["--live", "--allow-provider-cidrs", "127.0.0.0/8"])
                .args(["--dns-server", &dns_addr, "--dns-timeout-secs", "1"])
                .arg("--domain-key-file")
                .arg(&key_file);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    write("corp.test, gmail.com");
    let (ok, text) = check(false);
    assert!(!ok, "a free mail domain fails the check:\n{text}");
    assert!(
        text.contains("domain gmail.com") && text.contains("FreeMail"),
        "{text}"
    );
    assert!(
        text.contains("domain corp.test") && text.contains("NotChecked"),
        "{text}"
    );

    write("corp.test");
    let (ok, text) = check(false);
    assert!(ok, "{text}");
    let (ok, text) = check(true);
    assert!(ok, "a pending domain does not fail the check:\n{text}");
    assert!(text.contains("RecordNotFound"), "{text}");
    let owner = Owner {
        namespace: "default",
        name: "demo",
        issuer: &op.issuer,
        client_id: "demo",
    };
    let (name, value) = record(b"the-cluster-key", owner, "corp.test");
    assert!(text.contains(&format!("TXT {name} \"{value}\"")), "{text}");
    dns.serve(&[
        "host-record=corp.test,127.0.0.2".to_string(),
        sso_test_support::dns::txt(&name, &value),
    ]);
    let (ok, text) = check(true);
    assert!(ok, "{text}");
    assert!(text.contains("Verified"), "{text}");
}
