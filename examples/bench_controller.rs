//! Controller scale: the reconcile core (Secret resolution, discovery
//! through the shared per-issuer cache, validation, status, the broker
//! config) for N providers spread over a few issuers served on loopback,
//! without a Kubernetes API. Reports wall time for all statuses, discovery
//! and JWKS requests the issuers actually received, memory, and the size
//! of the broker config Secret.
//!
//!   cargo run --release --example bench_controller -- [--issuers 10] 1 100 1000 10000
//!
//! Prints one JSON object per line, one per N.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::get};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use sso_operator::{
    api::{IdentityProvider, IdentityProviderSpec},
    controller::{
        program::{ProgramSet, config_secret},
        status,
        validate::{self, Env, SecretContent, SecretData},
    },
    oidc::discovery::{CacheTtl, DiscoveryCache, HttpSettings},
};

#[derive(Default)]
struct Hits {
    discovery: AtomicU64,
    jwks: AtomicU64,
}

/// One issuer on loopback: a discovery document and a JWKS, counting
/// requests.
async fn serve_issuer(hits: Arc<Hits>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = base.clone();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move |State(h): State<Arc<Hits>>| {
                let issuer = issuer.clone();
                async move {
                    h.discovery.fetch_add(1, Ordering::Relaxed);
                    Json(json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/auth"),
                        "token_endpoint": format!("{issuer}/token"),
                        "userinfo_endpoint": format!("{issuer}/me"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "end_session_endpoint": format!("{issuer}/session/end"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "code_challenge_methods_supported": ["S256"],
                    }))
                }
            }),
        )
        .route(
            "/jwks",
            get(|State(h): State<Arc<Hits>>| async move {
                h.jwks.fetch_add(1, Ordering::Relaxed);
                Json(json!({"keys": [{
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "e": "AQAB",
                    "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
                }]}))
            }),
        )
        .with_state(hits);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// (discovery, JWKS) requests all issuers have received so far.
fn received(hits: &[Arc<Hits>]) -> (u64, u64) {
    hits.iter().fold((0, 0), |(d, j), h| {
        (
            d + h.discovery.load(Ordering::Relaxed),
            j + h.jwks.load(Ordering::Relaxed),
        )
    })
}

fn provider(i: usize, issuer: &str) -> IdentityProvider {
    let spec: IdentityProviderSpec = serde_json::from_value(json!({
        "issuer": issuer,
        "clientID": format!("client-{i}"),
        "clientSecretRef": {"name": "oidc", "key": format!("p{i}")},
        "allowedEmailDomains": ["example.com"],
    }))
    .expect("spec");
    IdentityProvider {
        metadata: ObjectMeta {
            name: Some(format!("p{i}")),
            namespace: Some(format!("team-{}", i % 100)),
            generation: Some(1),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// 32 random bytes, base64url: a client secret as IdPs issue them, so the
/// compressed config size is not flattered by repetition.
fn random_secret() -> Vec<u8> {
    use base64::Engine;
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(b)
        .into_bytes()
}

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Round {
    wall: Duration,
    ready: usize,
    status_writes: usize,
}

/// Reconciles every provider once, concurrently (the controller runs
/// reconciles without a concurrency limit), as `reconcile` does minus the
/// API calls: status is computed, not written.
async fn round(
    idps: &Arc<Vec<IdentityProvider>>,
    secrets: &Arc<BTreeMap<String, SecretData>>,
    cache: &Arc<DiscoveryCache>,
    programs: &Arc<ProgramSet>,
    env: &Env,
) -> (Round, Vec<IdentityProvider>) {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(idps.len());
    for i in 0..idps.len() {
        let (idps, secrets, cache, programs, env) = (
            idps.clone(),
            secrets.clone(),
            cache.clone(),
            programs.clone(),
            env.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let idp = &idps[i];
            let ns = idp.metadata.namespace.as_deref().unwrap_or_default();
            let key = format!("{ns}/{}", idp.metadata.name.as_deref().unwrap_or_default());
            let secrets = &secrets[ns];
            let facts = validate::Facts::new(&idp.spec, ns, secrets);
            let discovery = match facts.discovery_request() {
                Some(req) => Some(cache.get(req).await),
                None => None,
            };
            let previous = programs.get(&key);
            let v =
                validate::validate_with(idp, &facts, discovery.as_deref(), previous.as_ref(), &env);
            programs.set(&key, &v.programming);
            programs.set_unavailable(&key, validate::unavailable_entry(idp, &v));
            let new = status::build_status(idp.status.as_ref(), &v, 1, jiff::Timestamp::now());
            let write = status::needs_write(idp.status.as_ref(), &new);
            let mut updated = idp.clone();
            updated.status = Some(new);
            (v.phase == "Ready", write, updated)
        }));
    }
    let mut ready = 0;
    let mut writes = 0;
    let mut updated = Vec::with_capacity(idps.len());
    for t in tasks {
        let (r, w, idp) = t.await.expect("reconcile task");
        ready += usize::from(r);
        writes += usize::from(w);
        updated.push(idp);
    }
    (
        Round {
            wall: start.elapsed(),
            ready,
            status_writes: writes,
        },
        updated,
    )
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut issuers_n = 10;
    if let Some(i) = args.iter().position(|a| a == "--issuers") {
        issuers_n = args[i + 1].parse().expect("--issuers N");
        args.drain(i..=i + 1);
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1, 100, 1000, 10000]
    } else {
        args.iter()
            .map(|a| a.parse().expect("a provider count"))
            .collect()
    };
    let hits: Vec<Arc<Hits>> = (0..issuers_n).map(|_| Arc::new(Hits::default())).collect();
    let mut issuers = Vec::new();
    for h in &hits {
        issuers.push(serve_issuer(h.clone()).await);
    }
    let env = Env {
        public_url: "https://sso.example.com".parse().unwrap(),
    };
    for n in sizes {
        for h in &hits {
            h.discovery.store(0, Ordering::Relaxed);
            h.jwks.store(0, Ordering::Relaxed);
        }
        let rss_before = kib("VmRSS:");
        let idps: Arc<Vec<IdentityProvider>> = Arc::new(
            (0..n)
                .map(|i| provider(i, &issuers[i % issuers.len()]))
                .collect(),
        );
        let mut secrets: BTreeMap<String, SecretData> = BTreeMap::new();
        for (i, idp) in idps.iter().enumerate() {
            let ns = idp.metadata.namespace.clone().unwrap_or_default();
            secrets
                .entry(ns)
                .or_default()
                .entry("oidc".into())
                .or_insert_with(|| SecretContent::credentials(Default::default()))
                .data
                .insert(format!("p{i}"), random_secret());
        }
        let secrets = Arc::new(secrets);
        // The issuers listen on loopback.
        let cache = Arc::new(DiscoveryCache::new(
            HttpSettings {
                egress: sso_operator::oidc::egress::Egress::with_loopback(),
                ..HttpSettings::default()
            },
            CacheTtl::default(),
        ));
        let programs = Arc::new(ProgramSet::default());

        // First pass: cold cache, no status yet (a fresh install).
        let (cold, updated) = round(&idps, &secrets, &cache, &programs, &env).await;
        let fetches_cold = received(&hits);
        // Second pass: the periodic revalidation, warm cache, statuses in
        // place (nothing changed, so nothing should be written).
        let idps2 = Arc::new(updated);
        let (warm, _) = round(&idps2, &secrets, &cache, &programs, &env).await;
        let fetches_total = received(&hits);
        // The broker config the controller writes.
        let t = Instant::now();
        let config = programs.snapshot();
        let secret = config_secret("sso-system", "sso-broker-config", &config);
        let secret_bytes = serde_json::to_vec(&secret).unwrap().len();
        let config_ms = t.elapsed().as_secs_f64() * 1000.0;
        let json_bytes = config.to_json().len();
        let rss_after = kib("VmRSS:");
        let out: Value = json!({
            "providers": n,
            "issuers": issuers.len(),
            "ready": cold.ready,
            "cold_ms": cold.wall.as_secs_f64() * 1000.0,
            "warm_ms": warm.wall.as_secs_f64() * 1000.0,
            "warm_ready": warm.ready,
            "status_writes_cold": cold.status_writes,
            "status_writes_warm": warm.status_writes,
            "discovery_fetches_cold": fetches_cold.0,
            "jwks_fetches_cold": fetches_cold.1,
            "discovery_fetches_after_warm": fetches_total.0,
            "jwks_fetches_after_warm": fetches_total.1,
            "cache_fetches_counter": cache.fetches.get(),
            "cache_hits_counter": cache.hits.get(),
            "broker_config_json_bytes": json_bytes,
            "broker_config_secret_bytes": secret_bytes,
            "broker_config_build_ms": config_ms,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_growth_kib": rss_after.saturating_sub(rss_before),
            "peak_rss_kib": kib("VmHWM:"),
        });
        println!("{out}");
        drop((idps, idps2, secrets, cache, programs, config, secret));
    }
}
