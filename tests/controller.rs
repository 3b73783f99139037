//! Controller I/O against the kube-rs mock apiserver (tower-test): the
//! exact requests reconcile makes — Secret reads, the status patch (URL,
//! field manager, body), Events — and the ones it must not make.

use sso_test_support as common;

use std::{sync::Arc, time::Duration};

use common::{apiserver::*, *};
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{controller::Action, reflector, watcher};
use serde_json::{Value, json};
use sso_operator::{
    api::{IdentityProvider, IdentityProviderStatus},
    config::{BROKER_CONFIG_KEY, BROKER_CONFIG_PLAIN_KEY, BrokerConfig},
    controller::{
        Context, cache::Cached, error_policy, program::ProgramSet, providers_for_secret, reconcile,
        tidy, validate::Env,
    },
    metrics::Metrics,
    oidc::discovery::{CacheTtl, DiscoveryCache, DiscoveryRequest, HttpSettings},
};

fn secret_json() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "corp-oidc", "namespace": "team-a"},
           "type": "sso-operator.dev/client-credentials",
           "data": {"clientSecret": "czNjcjN0LXZhbHVl"}}) // "s3cr3t-value"
}

/// What the apiserver answers to a status patch: the object.
fn idp_json() -> Value {
    serde_json::to_value(idp()).unwrap()
}

fn context() -> (Arc<Context>, ApiServer) {
    let (client, api) = mock_client();
    let discovery = Arc::new(DiscoveryCache::new(
        HttpSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            egress: sso_operator::oidc::egress::Egress::with_loopback(),
        },
        CacheTtl::default(),
    ));
    let metrics = Arc::new(Metrics::new(
        discovery.fetches.clone(),
        discovery.hits.clone(),
    ));
    let ctx = Context::new(
        client,
        metrics,
        discovery,
        Arc::new(ProgramSet::default()),
        env(),
    );
    (Arc::new(ctx), api)
}

/// Reconciles `idp` up to its status write: the Secret is read, the
/// status patched. Returns the reconcile and the patch it sent.
async fn reconcile_to_status_write(
    ctx: &Arc<Context>,
    api: &mut ApiServer,
    idp: &IdentityProvider,
) -> (
    tokio::task::JoinHandle<Result<Action, sso_operator::Error>>,
    Seen,
) {
    let task = tokio::spawn(reconcile(Arc::new(idp.clone()), ctx.clone()));
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret_json())
        .await;
    let patch = api
        .expect(Method::PATCH, STATUS_PATH, StatusCode::OK, idp_json())
        .await;
    (task, patch)
}

/// Answers the reconcile's read of the client Secret with 404.
async fn answer_secret_not_found(api: &mut ApiServer) {
    api.expect(
        Method::GET,
        SECRET_PATH,
        StatusCode::NOT_FOUND,
        not_found("secrets", "corp-oidc"),
    )
    .await;
}

/// `idp()` pointed at the test issuer's good scenario.
async fn live_idp() -> IdentityProvider {
    let base = issuer::serve_http().await;
    let mut i = idp();
    i.spec.issuer = format!("{base}/good");
    i
}

const STATUS_PATH: &str =
    "/apis/sso-operator.dev/v1alpha1/namespaces/team-a/identityproviders/corp/status?";
const SECRET_PATH: &str = "/api/v1/namespaces/team-a/secrets/corp-oidc";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

#[tokio::test]
async fn ready_provider_status_patch_event_and_program() {
    let (ctx, mut api) = context();
    let idp = live_idp().await;
    let (task, patch) = reconcile_to_status_write(&ctx, &mut api, &idp).await;
    // Server-side apply under the controller's field manager, forced.
    assert!(
        patch
            .uri
            .contains("fieldManager=sso-operator.dev%2Fcontroller"),
        "{}",
        patch.uri
    );
    assert!(patch.uri.contains("force=true"), "{}", patch.uri);
    assert_eq!(patch.body["apiVersion"], "sso-operator.dev/v1alpha1");
    assert_eq!(patch.body["kind"], "IdentityProvider");
    assert_eq!(
        patch.body.as_object().unwrap().len(),
        3,
        "only apiVersion, kind and status: {}",
        patch.body
    );
    let status: IdentityProviderStatus =
        serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase.as_deref(), Some("Ready"));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(
        status.redirect_uri.as_deref(),
        Some("https://sso.example.com/oauth/callback/team-a/corp")
    );
    assert_eq!(status.discovered.as_ref().unwrap().jwks_key_count, 2);
    let reasons: Vec<(&str, &str)> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("ConfigValid", "Valid"),
            ("DiscoverySucceeded", "Discovered"),
            ("JWKSValid", "KeysValid"),
            ("Programmed", "Programmed"),
            ("Ready", "Ready"),
            ("Reconciling", "Reconciled"),
            ("SecretResolved", "Resolved"),
            ("Stalled", "NotStalled"),
        ]
    );
    assert!(
        !patch.body.to_string().contains("s3cr3t"),
        "no secret in status"
    );

    let event = api
        .expect(Method::POST, EVENTS_PATH, StatusCode::OK, json!({}))
        .await;
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["reason"], "Ready");
    assert_eq!(event.body["regarding"]["name"], "corp");
    assert_eq!(event.body["regarding"]["kind"], "IdentityProvider");
    assert_eq!(event.body["action"], "Ready");
    assert_eq!(
        event.body["note"],
        "Ready is True: the provider is validated and offered for login"
    );
    assert_eq!(event.body["reportingController"], "sso-operator");

    let action = task.await.unwrap().unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300)),
        "Ready providers are re-validated periodically"
    );
    api.expect_silence().await;

    let programmed = ctx.programs.get("team-a/corp").expect("programmed");
    assert_eq!(programmed.client_secret.as_deref(), Some("s3cr3t-value"));
    assert_eq!(ctx.metrics.reconciles.get(), 1);
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let (ctx, mut api) = context();
    let mut idp = live_idp().await;
    let (task, patch) = reconcile_to_status_write(&ctx, &mut api, &idp).await;
    api.expect(Method::POST, EVENTS_PATH, StatusCode::OK, json!({}))
        .await;
    task.await.unwrap().unwrap();

    // The watch delivers the object with the status we wrote; reconcile again.
    idp.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(idp), ctx.clone()));
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret_json())
        .await;
    api.expect_silence().await; // no PATCH, no Event
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(
        ctx.discovery.fetches.get(),
        1,
        "the second reconcile used the discovery cache"
    );
}

#[tokio::test]
async fn missing_secret_reports_and_backs_off() {
    let (ctx, mut api) = context();
    let idp = live_idp().await;
    let task = tokio::spawn(reconcile(Arc::new(idp.clone()), ctx.clone()));
    answer_secret_not_found(&mut api).await;
    let patch = api
        .expect(Method::PATCH, STATUS_PATH, StatusCode::OK, idp_json())
        .await;
    let status: IdentityProviderStatus =
        serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase.as_deref(), Some("Error"));
    let sr = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SecretResolved")
        .unwrap();
    assert_eq!(
        (sr.status.as_str(), sr.reason.as_str()),
        ("False", "SecretNotFound")
    );
    // Events: the failing condition and the Ready summary, as warnings.
    let mut events = Vec::new();
    for _ in 0..3 {
        let e = api
            .expect(Method::POST, EVENTS_PATH, StatusCode::OK, json!({}))
            .await;
        events.push((
            e.body["type"].as_str().unwrap().to_string(),
            e.body["reason"].as_str().unwrap().to_string(),
        ));
    }
    events.sort();
    assert_eq!(
        events,
        [
            ("Warning".to_string(), "NotReady".to_string()),
            ("Warning".to_string(), "SecretNotFound".to_string()),
            ("Warning".to_string(), "SecretNotFound".to_string()),
        ]
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(10)),
        "first backoff step"
    );
    assert!(ctx.programs.get("team-a/corp").is_none());

    // A second failure doubles the delay (the status is unchanged: no write).
    let mut again = idp.clone();
    again.status = Some(status);
    let task = tokio::spawn(reconcile(Arc::new(again.clone()), ctx.clone()));
    answer_secret_not_found(&mut api).await;
    api.expect_silence().await;
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(20))
    );

    // Success resets the backoff: the Secret appears.
    let task = tokio::spawn(reconcile(Arc::new(again), ctx.clone()));
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret_json())
        .await;
    api.expect(Method::PATCH, STATUS_PATH, StatusCode::OK, idp_json())
        .await;
    for _ in 0..3 {
        api.expect(Method::POST, EVENTS_PATH, StatusCode::OK, json!({}))
            .await;
    }
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(300))
    );
    let failures = ctx.metrics.encode();
    assert!(
        failures.contains("sso_operator_reconcile_failures_total{category=\"SecretNotFound\"} 2"),
        "{failures}"
    );
}

#[tokio::test]
async fn status_patch_after_deletion_is_done() {
    let (ctx, mut api) = context();
    let idp = live_idp().await;
    let task = tokio::spawn(reconcile(Arc::new(idp), ctx.clone()));
    api.expect(Method::GET, SECRET_PATH, StatusCode::OK, secret_json())
        .await;
    api.expect(
        Method::PATCH,
        STATUS_PATH,
        StatusCode::NOT_FOUND,
        not_found("identityproviders", "corp"),
    )
    .await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    api.expect_silence().await;
}

#[tokio::test]
async fn api_errors_back_off_per_object() {
    let (ctx, mut api) = context();
    let idp = Arc::new(live_idp().await);
    let task = tokio::spawn(reconcile(idp.clone(), ctx.clone()));
    let err = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd"});
    api.expect(
        Method::GET,
        SECRET_PATH,
        StatusCode::INTERNAL_SERVER_ERROR,
        err,
    )
    .await;
    let e = task.await.unwrap().unwrap_err();
    assert_eq!(e.category(), "api");
    assert_eq!(
        error_policy(idp.clone(), &e, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        error_policy(idp.clone(), &e, ctx.clone()),
        Action::requeue(Duration::from_secs(20))
    );
    assert_eq!(
        error_policy(idp, &e, ctx.clone()),
        Action::requeue(Duration::from_secs(40))
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("sso_operator_reconcile_failures_total{category=\"api\"} 3")
    );
}

#[test]
fn secret_changes_map_to_the_providers_that_use_them() {
    let a = idp(); // team-a/corp uses corp-oidc
    let mut b = idp();
    b.metadata.name = Some("other".into());
    b.spec.client_secret_ref = Some(secret_ref("other-oidc", "s"));
    let mut c = idp(); // same Secret name, other namespace
    c.metadata.namespace = Some("team-b".into());
    let mut d = idp(); // references it as CA bundle only
    d.metadata.name = Some("ca-user".into());
    d.spec.client_secret_ref = Some(secret_ref("x", "y"));
    d.spec.tls = Some(
        sso_operator::api::TlsConfig {
            ca_bundle: None,
            ca_bundle_secret_ref: Some(secret_ref("corp-oidc", "ca.crt")),
        }
        .into(),
    );
    // As the watch cache keeps them: which Secrets each references is
    // indexed, not read back from the packed spec.
    let all = [a, b, c, d].map(Cached::new);
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<Cached<IdentityProvider>>>| {
        let mut v: Vec<String> = refs
            .iter()
            .map(|r| format!("{}/{}", r.namespace.clone().unwrap(), r.name))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(providers_for_secret(all.iter(), "team-a", "corp-oidc")),
        ["team-a/ca-user", "team-a/corp"]
    );
    assert_eq!(
        names(providers_for_secret(all.iter(), "team-b", "corp-oidc")),
        ["team-b/corp"]
    );
    assert!(providers_for_secret(all.iter(), "team-a", "unrelated").is_empty());
}

#[tokio::test]
async fn broker_config_is_written_once_per_change_and_prunes_deleted_providers() {
    let (client, mut api) = mock_client();
    let programs = Arc::new(ProgramSet::default());

    // Two providers exist; three are programmed (one was deleted meanwhile).
    let (reader, mut writer) = reflector::store::<Cached<IdentityProvider>>();
    let mut other = idp();
    other.metadata.name = Some("other".into());
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(Cached::new(idp())));
    writer.apply_watcher_event(&watcher::Event::InitApply(Cached::new(other.clone())));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let entry = programmed_entry();
    for name in ["corp", "other", "deleted"] {
        let mut e = entry.clone();
        e.name = name.into();
        programs.set(
            &format!("team-a/{name}"),
            &sso_operator::controller::validate::Programming::Program(Box::new(e)),
        );
    }
    let metrics = Arc::new(Metrics::new(Default::default(), Default::default()));
    let task = tokio::spawn(sso_operator::controller::program::run_writer(
        client,
        programs.clone(),
        reader,
        "sso-system".into(),
        "sso-operator-broker-config".into(),
        metrics.clone(),
    ));
    let seen = expect_config_write(&mut api).await;
    assert!(
        seen.uri
            .contains("fieldManager=sso-operator.dev%2Fcontroller")
    );
    assert_eq!(seen.body["kind"], "Secret");
    let cfg = written_config(&seen);
    assert_eq!(
        cfg.providers.keys().collect::<Vec<_>>(),
        ["team-a/corp", "team-a/other"],
        "deleted provider pruned"
    );
    assert_eq!(
        cfg.providers["team-a/corp"].client_secret.as_deref(),
        Some("s3cr3t-value")
    );

    // Setting the same entry again is not a change: no write.
    let mut same = entry.clone();
    same.name = "corp".into();
    assert!(!programs.set(
        "team-a/corp",
        &sso_operator::controller::validate::Programming::Program(Box::new(same))
    ));
    api.expect_silence().await;

    // Removing one is: exactly one more write.
    assert!(programs.set(
        "team-a/other",
        &sso_operator::controller::validate::Programming::Remove
    ));
    let seen = expect_config_write(&mut api).await;
    let cfg = written_config(&seen);
    assert_eq!(cfg.providers.keys().collect::<Vec<_>>(), ["team-a/corp"]);
    api.expect_silence().await;
    assert_eq!(metrics.broker_config_writes.get(), 2);
    task.abort();
}

#[tokio::test]
async fn last_known_good_survives_a_controller_restart() {
    last_known_good_from(BROKER_CONFIG_KEY, |c| c.to_gzip()).await;
}

/// A Secret written by hand (or an older controller) as plain JSON.
#[tokio::test]
async fn last_known_good_reads_a_plain_json_config() {
    last_known_good_from(BROKER_CONFIG_PLAIN_KEY, |c| c.to_json()).await;
}

async fn last_known_good_from(key: &str, encode: fn(&BrokerConfig) -> Vec<u8>) {
    let (client, mut api) = mock_client();
    let mut cfg = BrokerConfig::default();
    cfg.providers
        .insert("team-a/corp".into(), programmed_entry());
    let programs = Arc::new(ProgramSet::default());
    let load = {
        let programs = programs.clone();
        tokio::spawn(async move {
            programs
                .load(&client, "sso-system", "sso-operator-broker-config")
                .await
        })
    };
    let data = base64_encode(&encode(&cfg));
    api.expect(
        Method::GET,
        "/api/v1/namespaces/sso-system/secrets/sso-operator-broker-config",
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sso-operator-broker-config"}, "data": {key: data}}),
    )
    .await;
    load.await.unwrap();
    assert_eq!(programs.get("team-a/corp").unwrap().client_id, "client-1");
}

/// The broker config carried by a Secret apply request.
/// Answers the controller's server-side apply of the broker config Secret.
async fn expect_config_write(api: &mut ApiServer) -> Seen {
    api.expect(
        Method::PATCH,
        "/api/v1/namespaces/sso-system/secrets/sso-operator-broker-config?",
        StatusCode::OK,
        json!({}),
    )
    .await
}

fn written_config(seen: &Seen) -> BrokerConfig {
    let secret: Secret = serde_json::from_value(seen.body.clone()).unwrap();
    BrokerConfig::decode(&secret.data.unwrap()[BROKER_CONFIG_KEY].0).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn env_is_plain_data() {
    let e = Env {
        public_url: "https://sso.example.com/".parse().unwrap(),
    };
    assert_eq!(
        sso_operator::controller::validate::redirect_uri(&e.public_url, "ns", "n"),
        "https://sso.example.com/oauth/callback/ns/n"
    );
}

/// 10,000 providers with distinct issuers, then all but one deleted: the
/// per-provider backoff counts and the discovery results nobody asks for
/// any more are forgotten (before, both maps only grew).
#[tokio::test]
async fn deleted_providers_and_unused_issuers_are_forgotten() {
    let (ctx, _api) = context();
    for i in 0..10_000 {
        let req = DiscoveryRequest {
            issuer: format!("https://10.{}.{}.1", i / 256, i % 256),
            overrides: Default::default(),
            ca_bundle: None,
        };
        // Refused by the egress rule at once: no network needed.
        let o = ctx.discovery.get(&req).await;
        assert_eq!(o.endpoints.as_ref().unwrap_err().reason, "EgressDenied");
        ctx.backoffs.fail(&format!("team/p{i}"));
    }
    assert_eq!((ctx.discovery.len(), ctx.backoffs.len()), (10_000, 10_000));
    let live: std::collections::HashSet<String> = ["team/p7".to_string()].into();
    // Recently used results stay (a provider asks again within minutes).
    tidy(&ctx, &live, Duration::from_secs(900));
    assert_eq!((ctx.discovery.len(), ctx.backoffs.len()), (10_000, 1));
    tidy(&ctx, &live, Duration::ZERO);
    assert_eq!(ctx.discovery.len(), 0);
}
