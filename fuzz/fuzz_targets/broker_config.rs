//! The broker configuration (the Secret the controller writes, or a file)
//! and the session keys text: anything must be refused or applied, never
//! panic; the login page then renders every provider name escaped.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use sso_operator::{broker::source::parse_keys, config::BrokerConfig};
use tower::ServiceExt;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_keys(text);
    }
    let Ok(config) = BrokerConfig::from_json(data) else {
        return;
    };
    let broker = common::broker();
    let _ = broker.apply_config(&config);
    let page = common::runtime().block_on(async {
        let resp = broker
            .router()
            .oneshot(
                http::Request::get("/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(
            !resp.status().is_server_error(),
            "login page answered {}",
            resp.status()
        );
        axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap()
    });
    let page = String::from_utf8_lossy(&page);
    assert!(
        !page.contains("<script"),
        "unescaped markup on the login page"
    );
    // The config serializes back to what it parsed from.
    let again = BrokerConfig::from_json(&config.to_json()).expect("round trip");
    assert!(again == config);
});
