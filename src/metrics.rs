//! Prometheus metrics from one registry, plus the `/metrics`, `/healthz`
//! and `/readyz` HTTP endpoints.
//!
//! Labels carry only stable, bounded values (condition reasons, error
//! categories), never secrets or free text.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<CategoryLabel, Counter>,
    pub duration: Histogram,
    pub broker_config_writes: Counter,
    pub broker_config_too_large: Counter,
    ready: AtomicBool,
}

impl Metrics {
    /// Creates the registry. `discovery_fetches` and `discovery_hits` are
    /// the discovery cache's counters, registered here.
    pub fn new(discovery_fetches: Counter, discovery_hits: Counter) -> Self {
        let mut registry = Registry::with_prefix("sso_operator");
        let reconciles = Counter::default();
        let failures = Family::<CategoryLabel, Counter>::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0]);
        let broker_config_writes = Counter::default();
        let broker_config_too_large = Counter::default();
        registry.register(
            "reconciles",
            "IdentityProvider reconciles",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that ended with a provider not ready or an API error, by reason or error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "discovery_fetches",
            "OpenID discovery and JWKS fetches made",
            discovery_fetches,
        );
        registry.register(
            "discovery_cache_hits",
            "Discovery lookups answered from the cache",
            discovery_hits,
        );
        registry.register(
            "broker_config_writes",
            "Writes of the broker config Secret",
            broker_config_writes.clone(),
        );
        registry.register(
            "broker_config_too_large",
            "Broker configs not written because even compressed they exceed a Secret's 1 MiB",
            broker_config_too_large.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            broker_config_writes,
            broker_config_too_large,
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            metrics: self,
        }
    }

    pub fn reconcile_failed(&self, category: &str) {
        self.failures
            .get_or_create(&CategoryLabel {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer<'a> {
    start: Instant,
    metrics: &'a Metrics,
}

impl ReconcileTimer<'_> {
    pub fn observe(self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// What the health and metrics routes serve: the controller's and the
/// broker's metrics both.
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn exposition(&self) -> String;
    fn ready(&self) -> bool;
}

impl Exposition for Metrics {
    fn exposition(&self) -> String {
        self.encode()
    }
    fn ready(&self) -> bool {
        self.is_ready()
    }
}

/// The health and metrics routes.
pub fn router<E: Exposition>(metrics: Arc<E>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler::<E>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<E>))
        .with_state(metrics)
}

async fn metrics_handler<E: Exposition>(State(m): State<Arc<E>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.exposition(),
    )
}

async fn readyz<E: Exposition>(State(m): State<Arc<E>>) -> impl IntoResponse {
    if m.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves [`router`] on `addr` until the process ends.
pub async fn serve<E: Exposition>(addr: SocketAddr, metrics: Arc<E>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics)).await
}
