//! The whole path a user takes, with real parts only: headless Chromium
//! (Debian's), a real nginx using `auth_request` against the broker, the
//! real certified OpenID provider, and an app that echoes the identity
//! headers nginx passed it. Login page (two providers, one of them down)
//! → provider → login form → callback →
//! protected page; then logout, and the protected page asks for login
//! again. Screenshots land in `test-output/browser/`.

use sso_test_support as common;

use std::process::Command;

use common::{
    broker::{OP_PATHS, TestBroker, alice_only, config, op_clients, provider, two_tenants_behind},
    nginx::{Nginx, echo_upstream},
    op::Op,
};

#[tokio::test]
async fn chromium_logs_in_through_nginx_auth_request_and_logs_out() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!(
            "{root}/tests/browser/node_modules/playwright-core"
        ))
        .exists(),
        "the browser driver is not installed: run scripts/test.sh (or scripts/browser-deps.sh) first"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: run scripts/test.sh (or scripts/browser-deps.sh) first"
    );
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let op = Op::start(&[("OP_CLIENTS", &op_clients(&public, "default/demo"))]);
    let issuer = op.issuer.clone();
    // A second provider whose IdP is down: the chooser offers both, the
    // healthy one keeps working.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_issuer = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let tb = TestBroker::start_behind(&public, |base| {
        let mut p = provider(
            "default/demo",
            &issuer,
            base,
            OP_PATHS,
            "demo",
            Some("demo-secret"),
        );
        p.display_name = "Local demo".into();
        let mut down = provider("default/down", &dead_issuer, base, OP_PATHS, "x", Some("y"));
        down.display_name = "Broken IdP".into();
        config(vec![p, down])
    })
    .await;
    let app = echo_upstream().await;
    let nginx = Nginx::start(port, tb.addr, app);

    let result = run_script(
        "login.mjs",
        &[
            ("BASE", nginx.base()),
            ("APP_PATH", "/app/".into()),
            ("PROVIDER", "default/demo".into()),
            ("LOGIN", "admin-alice".into()),
        ],
        || format!("nginx:\n{}", nginx.error_log()),
    )
    .await;

    assert_eq!(
        result["providers"],
        serde_json::json!(["default/down", "default/demo"]),
        "the chooser lists both providers, by display name"
    );

    // nginx passed the broker's identity headers to the app.
    let headers = &result["protected"]["headers"];
    assert_eq!(result["protected"]["path"], "/app/");
    assert_eq!(headers["x-auth-request-user"], "admin-alice");
    assert_eq!(headers["x-auth-request-email"], "admin-alice@example.com");
    assert_eq!(headers["x-auth-request-provider"], "default/demo");
    let groups = headers["x-auth-request-groups"].as_str().unwrap();
    assert!(groups.split(',').any(|g| g == "admins"), "{groups}");

    // After logout the protected page sends the browser to the login page.
    let after = result["afterLogout"].as_str().unwrap();
    assert!(
        after.starts_with(&format!("{public}/oauth/login?rd=")),
        "{after}"
    );

    // The login page screenshot is kept.
    let shot = std::path::Path::new(SHOTS).join("login-page.png");
    let png = std::fs::read(&shot).expect("login page screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 2000,
        "a real PNG at {}",
        shot.display()
    );
    println!("login page screenshot: {}", shot.display());
}

/// One browser, two apps behind one nginx, each with its own AccessPolicy
/// and its own provider (two real OPs): signed in to both at once, both
/// sessions on the home page, signing out of one provider leaves the other
/// app open.
#[tokio::test]
async fn chromium_signs_in_to_two_apps_with_two_providers_and_out_of_one() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (corp_op, evil_op, tb) = two_tenants_behind(&public, |c| {
        for p in [
            alice_only("corp", "a", "/a", "corp/corp"),
            alice_only("tenant-b", "b", "/b", "tenant-b/evil"),
        ] {
            c.policies.insert(p.key(), p);
        }
    })
    .await;
    let app = echo_upstream().await;
    let nginx = Nginx::start_apps(
        port,
        tb.addr,
        app,
        &[
            ("/a/", "/oauth/auth/corp/a"),
            ("/b/", "/oauth/auth/tenant-b/b"),
        ],
    );
    let r = run_script(
        "two_apps.mjs",
        &[
            ("BASE", nginx.base()),
            ("APP_A", "/a/".into()),
            ("APP_B", "/b/".into()),
            ("PROVIDER_A", "corp/corp".into()),
            ("PROVIDER_B", "tenant-b/evil".into()),
            ("LOGIN", "alice".into()),
        ],
        || format!("nginx:\n{}", nginx.error_log()),
    )
    .await;
    assert_eq!(r["a"]["x-auth-request-provider"], "corp/corp");
    assert_eq!(r["b"]["x-auth-request-provider"], "tenant-b/evil");
    assert_eq!(
        r["aAgain"]["x-auth-request-provider"], "corp/corp",
        "signing in to B kept A's session"
    );
    let sessions: Vec<&str> = r["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        sessions.contains(&"corp/corp") && sessions.contains(&"tenant-b/evil"),
        "{sessions:?}"
    );
    assert_eq!(
        r["aAfter"]["x-auth-request-provider"], "corp/corp",
        "signing out of B left A open"
    );
    let b_after = r["bAfter"]["redirectedTo"].as_str().unwrap_or_default();
    assert!(
        b_after.starts_with(&evil_op.issuer),
        "B asks for a login at its provider again: {b_after}"
    );
    drop(corp_op);
}

/// Home-realm discovery: a shared app offering both tenants' providers;
/// corp's provider verified corp.test. Typing alice@corp.test on the login
/// page goes to corp's OP (with the address as login_hint) and back to the
/// app signed in through corp; an address of another domain brings the
/// page back saying no sign-in is set up for it.
#[tokio::test]
async fn chromium_is_sent_to_the_provider_of_its_email_domain() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (corp_op, evil_op, tb) = two_tenants_behind(&public, |c| {
        let corp = c.providers.get_mut("corp/corp").unwrap();
        corp.domains = vec!["corp.test".into()];
        corp.verified_domains = vec!["corp.test".into()];
        let shared: sso_operator::config::ProgrammedPolicy =
            serde_json::from_value(serde_json::json!({
                "namespace": "platform", "name": "app", "generation": 1,
                "hosts": ["127.0.0.1"], "paths": ["/app"],
                "providers": ["corp/corp", "tenant-b/evil"],
                "rules": {"allow": [{"users": ["alice"]}]},
            }))
            .unwrap();
        c.policies.insert(shared.key(), shared);
    })
    .await;
    let app = echo_upstream().await;
    let nginx = Nginx::start_apps(port, tb.addr, app, &[("/app/", "/oauth/auth/platform/app")]);
    let r = run_script(
        "realm.mjs",
        &[
            ("BASE", nginx.base()),
            ("APP", "/app/".into()),
            ("UNKNOWN_EMAIL", "alice@elsewhere.test".into()),
            ("EMAIL", "alice@corp.test".into()),
            ("LOGIN", "alice".into()),
        ],
        || format!("nginx:\n{}", nginx.error_log()),
    )
    .await;
    assert!(
        r["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("elsewhere.test"),
        "{r:#}"
    );
    let at = r["providerUrl"].as_str().unwrap_or_default();
    assert!(at.starts_with(&corp_op.issuer), "sent to corp's OP: {at}");
    assert_eq!(r["app"]["x-auth-request-provider"], "corp/corp");
    assert_eq!(r["app"]["x-auth-request-user"], "alice");
    drop(evil_op);
}

/// Where the scripts' screenshots land.
const SHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test-output/browser");

/// Runs `tests/browser/<script>` under node with `env` (and SHOT_DIR) and
/// returns the JSON result it prints last, which must say `ok`; a failure
/// shows its output, or its result, and `context()`.
async fn run_script(
    script: &'static str,
    env: &[(&'static str, String)],
    context: impl Fn() -> String,
) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut env = env.to_vec();
    env.push(("SHOT_DIR", SHOTS.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(format!("{root}/tests/browser"))
            .envs(env)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        panic!(
            "no result from {script}; stdout:\n{stdout}\nstderr:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            context()
        )
    };
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(r["ok"], true, "browser flow failed: {r:#}\n{}", context());
    r
}
