//! The ceiling for the authenticated-request benchmark: a bare axum server
//! (same runtime, same HTTP stack as the broker) answering every request
//! with 200 and one header, doing nothing else. Used by `bench/bench.py`.
//!
//! Usage: `bench_ceiling 127.0.0.1:9504`

use axum::{
    Router,
    http::{HeaderValue, StatusCode},
    response::IntoResponse,
};

async fn ok() -> impl IntoResponse {
    (
        StatusCode::OK,
        [("x-auth-request-user", HeaderValue::from_static("alice"))],
    )
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9504".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind the ceiling server");
    axum::serve(listener, Router::new().fallback(ok))
        .await
        .expect("serve");
}
