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
    broker::{OP_PATHS, TestBroker, config, op_clients, provider},
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

    let shots = format!("{root}/test-output/browser");
    let out = tokio::task::spawn_blocking({
        let base = nginx.base();
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg("login.mjs")
                .current_dir(format!("{root}/tests/browser"))
                .env("BASE", base)
                .env("APP_PATH", "/app/")
                .env("PROVIDER", "default/demo")
                .env("LOGIN", "admin-alice")
                .env("SHOT_DIR", shots)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no result from login.mjs; stdout:\n{stdout}\nstderr:\n{}\nnginx:\n{}",
                String::from_utf8_lossy(&out.stderr),
                nginx.error_log()
            )
        });
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        result["ok"],
        true,
        "browser flow failed: {result:#}\nnginx:\n{}",
        nginx.error_log()
    );

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
    let shot = std::path::Path::new(&shots).join("login-page.png");
    let png = std::fs::read(&shot).expect("login page screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 2000,
        "a real PNG at {}",
        shot.display()
    );
    println!("login page screenshot: {}", shot.display());
}
