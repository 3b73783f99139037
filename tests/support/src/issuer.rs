//! A misbehaving OpenID issuer the tests serve themselves, one scenario per
//! path prefix: issuer `{base}/{scenario}`. Plain http on 127.0.0.1, or https
//! on `localhost` with a private CA the tests control.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

/// A public RSA signing key in JWK form.
pub fn rsa_jwk(kid: &str) -> Value {
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "e": "AQAB",
        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
    })
}

#[derive(Clone)]
struct Shared {
    base: String,
}

/// A well-formed discovery document for `issuer`, endpoints under `base`.
pub fn document(issuer: &str, endpoint_base: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{endpoint_base}/auth"),
        "token_endpoint": format!("{endpoint_base}/token"),
        "userinfo_endpoint": format!("{endpoint_base}/me"),
        "jwks_uri": format!("{endpoint_base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    })
}

fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn discovery(State(s): State<Arc<Shared>>, Path(scenario): Path<String>) -> Response {
    let issuer = format!("{}/{scenario}", s.base);
    let mut doc = document(&issuer, &issuer);
    match scenario.as_str() {
        "status500" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "status404" => return StatusCode::NOT_FOUND.into_response(),
        "badjson" => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                "{\"issuer\": ",
            )
                .into_response();
        }
        "notobject" => return json_response(json!(["a"])),
        "redirect" => {
            return (
                StatusCode::FOUND,
                [(header::LOCATION, "https://elsewhere.example/")],
            )
                .into_response();
        }
        "mismatch" => doc["issuer"] = json!("https://elsewhere.example"),
        "trailingslash" => doc["issuer"] = json!(format!("{issuer}/")),
        "noauthz" => {
            doc.as_object_mut()
                .unwrap()
                .remove("authorization_endpoint");
        }
        "notoken" => {
            doc.as_object_mut().unwrap().remove("token_endpoint");
        }
        "insecure" => doc["token_endpoint"] = json!("http://idp.example.com/token"),
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "huge" => doc["padding"] = json!("x".repeat(2 * 1024 * 1024)),
        _ => {}
    }
    json_response(doc)
}

async fn jwks(Path(scenario): Path<String>) -> Response {
    match scenario.as_str() {
        "jwks404" => StatusCode::NOT_FOUND.into_response(),
        "jwks500" => StatusCode::BAD_GATEWAY.into_response(),
        "jwksbad" => json_response(json!({"kees": []})),
        "nokeys" => json_response(json!({"keys": [
            {"kty": "RSA", "use": "enc", "kid": "e", "e": "AQAB", "n": "sXch"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0", "alg": "HS256"},
        ]})),
        "jwksslow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_response(json!({"keys": [rsa_jwk("a")]}))
        }
        _ => json_response(json!({"keys": [rsa_jwk("a"), rsa_jwk("b")]})),
    }
}

fn router(base: String) -> Router {
    Router::new()
        .route(
            "/{scenario}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{scenario}/jwks", get(jwks))
        .with_state(Arc::new(Shared { base }))
}

/// Serves the scenarios over http on 127.0.0.1; returns the base URL.
pub async fn serve_http() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(base.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A private CA and a server certificate for `localhost` it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

pub fn pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sso-operator test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_der: cert.der().clone(),
        key_der: leaf_key.serialize_der(),
    }
}

/// Serves the scenarios over https at `https://localhost:PORT`.
pub async fn serve_https(pki: &TestPki) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert_der.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let app = router(base.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    base
}
