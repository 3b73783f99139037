//! What reaches the broker's text log from a provider. A test binary of
//! its own with one test and a global subscriber: tracing caches which
//! log lines are wanted per call site, and a test elsewhere in a shared
//! binary could settle that before a scoped subscriber exists.

use sso_test_support as common;

use common::{
    badop::BadOp,
    broker::{TestBroker, browser, config, login_at, provider},
};

/// A log writer the test reads back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const KEY: &str = "team/bad";
const PATHS: [&str; 5] = ["/authorize", "/token", "/userinfo", "/jwks", "/end_session"];

/// A user name carrying a newline cannot forge a log line in the text
/// format: provider text is logged as quoted, escaped fields.
#[tokio::test]
async fn provider_text_cannot_forge_a_log_line() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let op = BadOp::start().await;
    let issuer = op.issuer.clone();
    let tb = TestBroker::start(move |base| {
        config(vec![provider(
            KEY,
            &issuer,
            base,
            PATHS,
            "client",
            Some("secret"),
        )])
    })
    .await;
    op.set_claim(
        "preferred_username",
        "alice\nINFO forged: admin logged in".into(),
    );
    let landing = login_at(&browser(), &tb.base, KEY, "unused", "/done").await;
    assert_eq!(landing.status, 302, "{landing:?}");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("forged: admin logged in"),
        "the login was logged: {text}"
    );
    for line in text.lines() {
        assert!(!line.starts_with("INFO forged"), "{text}");
    }
}
