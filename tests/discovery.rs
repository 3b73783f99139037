//! Discovery and JWKS against a misbehaving issuer the tests serve
//! themselves: each way of being wrong must yield its own reason.

use sso_test_support as common;

use std::{sync::Arc, time::Duration};

use common::issuer;
use sso_operator::{
    api::{EndpointOverrides, conditions::reasons as r},
    oidc::discovery::{
        CacheTtl, DiscoveryCache, DiscoveryOutcome, DiscoveryRequest, HttpSettings, fetch,
    },
};

fn settings() -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_millis(800),
        egress: sso_operator::oidc::egress::Egress::with_loopback(),
    }
}

fn req(issuer: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        issuer: issuer.to_string(),
        overrides: EndpointOverrides::default(),
        ca_bundle: None,
    }
}

async fn outcome(issuer: &str) -> DiscoveryOutcome {
    fetch(&req(issuer), &settings()).await
}

/// (discovery reason or "ok", JWKS reason or "ok"/"-", message fragment).
fn summary(o: &DiscoveryOutcome) -> (String, String, String) {
    let d = match &o.endpoints {
        Ok(_) => "ok".to_string(),
        Err(f) => f.reason.clone(),
    };
    let (j, jm) = match &o.jwks {
        None => ("-".to_string(), String::new()),
        Some(Ok(_)) => ("ok".to_string(), String::new()),
        Some(Err(f)) => (f.reason.clone(), f.message.clone()),
    };
    let msg = match &o.endpoints {
        Err(f) => f.message.clone(),
        Ok(_) => jm,
    };
    (d, j, msg)
}

#[tokio::test]
async fn each_misbehaviour_has_its_reason() {
    let base = issuer::serve_http().await;
    let cases: &[(&str, &str, &str, &str)] = &[
        ("good", "ok", "ok", ""),
        ("status500", r::UNREACHABLE, "-", "HTTP 500"),
        ("status404", r::INVALID_RESPONSE, "-", "HTTP 404"),
        ("badjson", r::INVALID_RESPONSE, "-", "not valid JSON"),
        ("notobject", r::INVALID_RESPONSE, "-", "not a JSON object"),
        ("redirect", r::INVALID_RESPONSE, "-", "redirected"),
        (
            "mismatch",
            r::ISSUER_MISMATCH,
            "-",
            "reports issuer \"https://elsewhere.example\"",
        ),
        (
            "noauthz",
            r::MISSING_ENDPOINT,
            "-",
            "has no authorization_endpoint",
        ),
        ("notoken", r::MISSING_ENDPOINT, "-", "has no token_endpoint"),
        (
            "insecure",
            r::INSECURE_ENDPOINT,
            "-",
            "http://idp.example.com/token uses http",
        ),
        ("slow", r::UNREACHABLE, "-", "did not answer within 0.8s"),
        ("huge", r::INVALID_RESPONSE, "-", "larger than 1024 KiB"),
        ("jwks404", "ok", r::INVALID_RESPONSE, "HTTP 404"),
        ("jwks500", "ok", r::UNREACHABLE, "HTTP 502"),
        ("jwksbad", "ok", r::INVALID_RESPONSE, "no \"keys\" array"),
        (
            "nokeys",
            "ok",
            r::NO_USABLE_KEYS,
            "2 key(s) but none can verify",
        ),
        ("jwksslow", "ok", r::UNREACHABLE, "did not answer within"),
    ];
    let mut failures = Vec::new();
    for (scenario, want_d, want_j, fragment) in cases {
        let o = outcome(&format!("{base}/{scenario}")).await;
        let (d, j, msg) = summary(&o);
        if (d.as_str(), j.as_str()) != (*want_d, *want_j) || !msg.contains(fragment) {
            failures.push(format!(
                "{scenario}: got ({d}, {j}, {msg:?}), want ({want_d}, {want_j}, ..{fragment:?}..)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn good_issuer_endpoints_and_keys() {
    let base = issuer::serve_http().await;
    let o = outcome(&format!("{base}/good")).await;
    let e = o.endpoints.unwrap();
    assert_eq!(e.issuer, format!("{base}/good"));
    assert_eq!(e.token_endpoint, format!("{base}/good/token"));
    assert_eq!(e.jwks_uri, format!("{base}/good/jwks"));
    assert!(e.discovered);
    let j = o.jwks.unwrap().unwrap();
    assert_eq!((j.usable_keys, j.total_keys), (2, 2));
}

#[tokio::test]
async fn trailing_slash_must_match_exactly() {
    let base = issuer::serve_http().await;
    // The provider reports "{base}/trailingslash/"; configured without the slash:
    let o = outcome(&format!("{base}/trailingslash")).await;
    let f = o.endpoints.unwrap_err();
    assert_eq!(f.reason, r::ISSUER_MISMATCH);
    assert!(
        f.message
            .contains(&format!("set spec.issuer to \"{base}/trailingslash/\"")),
        "{}",
        f.message
    );
    // Configured with it, discovery is fetched from the slash-less path and matches.
    let o = outcome(&format!("{base}/trailingslash/")).await;
    assert!(o.endpoints.is_ok(), "{:?}", o.endpoints);
}

#[tokio::test]
async fn unreachable_issuer() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let o = outcome(&format!("http://127.0.0.1:{port}")).await;
    let f = o.endpoints.unwrap_err();
    assert_eq!(f.reason, r::UNREACHABLE);
    assert!(f.message.contains("is unreachable"), "{}", f.message);
    assert!(f.is_transient());
}

#[tokio::test]
async fn overrides_skip_discovery_entirely() {
    let base = issuer::serve_http().await;
    // The discovery document of "status500" is broken, but with every
    // required endpoint configured it is never fetched.
    let issuer = format!("{base}/status500");
    let mut r = req(&issuer);
    r.overrides = EndpointOverrides {
        authorization: Some(format!("{base}/good/auth")),
        token: Some(format!("{base}/good/token")),
        jwks: Some(format!("{base}/good/jwks")),
        ..Default::default()
    };
    let o = fetch(&r, &settings()).await;
    let e = o.endpoints.unwrap();
    assert!(!e.discovered);
    assert_eq!(e.issuer, issuer);
    assert_eq!(o.jwks.unwrap().unwrap().usable_keys, 2);
    // A partial override still discovers and fills in the rest.
    let mut r = req(&format!("{base}/notoken"));
    r.overrides = EndpointOverrides {
        token: Some(format!("{base}/good/token")),
        ..Default::default()
    };
    let e = fetch(&r, &settings()).await.endpoints.unwrap();
    assert_eq!(
        (e.discovered, e.token_endpoint),
        (true, format!("{base}/good/token"))
    );
}

#[tokio::test]
async fn private_ca_is_honoured_and_required() {
    let pki = issuer::pki();
    let base = issuer::serve_https(&pki).await;
    // Without the CA: TLS failure, named as such.
    let o = outcome(&format!("{base}/good")).await;
    let f = o.endpoints.unwrap_err();
    assert_eq!(f.reason, r::TLS_INVALID, "{}", f.message);
    assert!(f.message.contains("spec.tls.caBundle"), "{}", f.message);
    // With it: discovered over https.
    let mut with_ca = req(&format!("{base}/good"));
    with_ca.ca_bundle = Some(pki.ca_pem.clone());
    let o = fetch(&with_ca, &settings()).await;
    assert!(o.endpoints.is_ok(), "{:?}", o.endpoints);
    assert_eq!(o.jwks.unwrap().unwrap().usable_keys, 2);
    // An https issuer whose document points at a plain-http, non-loopback endpoint.
    let mut insecure = req(&format!("{base}/insecure"));
    insecure.ca_bundle = Some(pki.ca_pem.clone());
    let f = fetch(&insecure, &settings()).await.endpoints.unwrap_err();
    assert_eq!(f.reason, r::INSECURE_ENDPOINT);
    // A CA bundle that is not PEM.
    let mut garbage = req(&format!("{base}/good"));
    garbage.ca_bundle =
        Some("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into());
    assert_eq!(
        fetch(&garbage, &settings())
            .await
            .endpoints
            .unwrap_err()
            .reason,
        r::TLS_INVALID
    );
}

#[tokio::test]
async fn cache_shares_one_fetch_per_issuer() {
    let base = issuer::serve_http().await;
    let cache = Arc::new(DiscoveryCache::new(settings(), CacheTtl::default()));
    // 100 providers on two issuers, reconciled concurrently.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cache = cache.clone();
        let issuer = if i % 2 == 0 {
            format!("{base}/good")
        } else {
            format!("{base}/nokeys")
        };
        tasks.push(tokio::spawn(async move { cache.get(&req(&issuer)).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cache.fetches.get(), 2, "one fetch per issuer");
    assert_eq!(cache.hits.get(), 98);
    // A different CA bundle is a different answer, so a different entry.
    let mut other = req(&format!("{base}/good"));
    other.ca_bundle = Some(issuer::pki().ca_pem);
    cache.get(&other).await;
    assert_eq!(cache.fetches.get(), 3);
    assert_eq!(cache.len(), 3);
}

#[tokio::test]
async fn cache_expires_success_and_failure_separately() {
    let base = issuer::serve_http().await;
    let ttl = CacheTtl {
        success: Duration::from_millis(400),
        failure: Duration::from_millis(100),
    };
    let cache = DiscoveryCache::new(settings(), ttl);
    let good = req(&format!("{base}/good"));
    let bad = req(&format!("{base}/status500"));
    cache.get(&good).await;
    cache.get(&bad).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cache.get(&good).await; // still fresh
    cache.get(&bad).await; // failure expired: fetched again
    assert_eq!((cache.fetches.get(), cache.hits.get()), (3, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    cache.get(&good).await;
    assert_eq!(cache.fetches.get(), 4);
    cache.prune(Duration::from_millis(50));
    assert!(
        cache.is_empty() || cache.len() == 1,
        "entries older than max_age are pruned"
    );
}

/// Provider URLs reach public addresses only unless the cluster operator
/// allows a range: a tenant's issuer, discovery document or endpoint
/// override naming loopback, the cloud metadata address or a cluster
/// address is refused (EgressDenied, not transient), whether written as an
/// IP or as a name that resolves there, and the status message names the
/// host but not the address it resolved to.
#[tokio::test]
async fn provider_urls_reach_public_addresses_only() {
    let base = issuer::serve_http().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let strict = HttpSettings {
        egress: sso_operator::oidc::egress::Egress::default(),
        ..settings()
    };
    for issuer in [
        format!("http://127.0.0.1:{port}/good"),
        format!("http://localhost:{port}/good"),
    ] {
        let o = fetch(&req(&issuer), &strict).await;
        let f = o.endpoints.unwrap_err();
        assert_eq!(f.reason, r::EGRESS_DENIED, "{issuer}: {}", f.message);
        assert!(!f.is_transient(), "a refusal is not an outage");
        assert!(
            f.message.contains("--allow-provider-cidrs"),
            "{}",
            f.message
        );
        if issuer.contains("localhost") {
            assert!(
                !f.message.contains("127.0.0.1"),
                "no resolved address: {}",
                f.message
            );
        }
    }
    // An allowed issuer whose overrides point into the cluster or at the
    // metadata service: refused before any connection.
    for jwks in [
        "https://169.254.169.254/latest/meta-data",
        "https://10.96.0.1:443/jwks",
    ] {
        let mut r = req(&format!("{base}/good"));
        r.overrides = EndpointOverrides {
            jwks: Some(jwks.into()),
            ..Default::default()
        };
        let o = fetch(&r, &settings()).await;
        let f = o.jwks.unwrap().unwrap_err();
        assert_eq!(f.reason, r::EGRESS_DENIED, "{jwks}: {}", f.message);
    }
    // The operator allows the range: the same issuer passes.
    let allowed = HttpSettings {
        egress: sso_operator::oidc::egress::Egress::allowing(vec!["127.0.0.0/8".parse().unwrap()]),
        ..settings()
    };
    let o = fetch(&req(&format!("http://localhost:{port}/good")), &allowed).await;
    // It connected and read the document (which names 127.0.0.1).
    assert_eq!(o.endpoints.unwrap_err().reason, r::ISSUER_MISMATCH);
    let o = fetch(&req(&format!("http://127.0.0.1:{port}/good")), &allowed).await;
    assert!(o.endpoints.is_ok(), "{:?}", o.endpoints);
}
