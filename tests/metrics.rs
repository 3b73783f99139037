//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use sso_operator::metrics::{Metrics, router};
use tower::ServiceExt;

async fn get(m: &Arc<Metrics>, path: &str) -> (StatusCode, String) {
    let resp = router(m.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let fetches = prometheus_client::metrics::counter::Counter::default();
    let hits = prometheus_client::metrics::counter::Counter::default();
    let m = Arc::new(Metrics::new(fetches.clone(), hits.clone()));
    assert_eq!(get(&m, "/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        get(&m, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before the controller starts"
    );
    m.set_ready(true);
    assert_eq!(get(&m, "/readyz").await.0, StatusCode::OK);

    m.reconcile_timer().observe();
    m.reconcile_failed("IssuerMismatch");
    fetches.inc();
    hits.inc();
    hits.inc();
    let (status, text) = get(&m, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "sso_operator_reconciles_total 1",
        "sso_operator_reconcile_failures_total{category=\"IssuerMismatch\"} 1",
        "sso_operator_reconcile_duration_seconds_count 1",
        "sso_operator_discovery_fetches_total 1",
        "sso_operator_discovery_cache_hits_total 2",
        "sso_operator_broker_config_writes_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
