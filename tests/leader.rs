//! Leader election against the kube-rs mock apiserver: acquire, renew,
//! losing a race on conflict, never taking a live lease, taking over an
//! expired one, and the runner stopping its work when it cannot renew.

use sso_test_support as common;

use std::time::Duration;

use common::apiserver::*;
use http::{Method, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::{Value, json};
use sso_operator::controller::leader::{self, LeaderError, LeaseConfig};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/sso/leases";

fn cfg() -> LeaseConfig {
    LeaseConfig::new("sso", "sso-operator-controller", "pod-a")
}

fn lease_json(holder: &str, renewed: Timestamp, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "sso-operator-controller", "namespace": "sso", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "leaseTransitions": transitions,
        }
    })
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": "the object has been modified"})
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/sso/leases/sso-operator-controller";

/// Answers the Lease GET with `status` and `body`.
async fn on_get(server: &mut ApiServer, status: StatusCode, body: Value) -> Seen {
    server.expect(Method::GET, LEASE, status, body).await
}

/// Answers the Lease PUT with `status` and `body`.
async fn on_put(server: &mut ApiServer, status: StatusCode, body: Value) -> Seen {
    server.expect(Method::PUT, LEASE, status, body).await
}

fn api() -> (Api<Lease>, ApiServer) {
    let (client, server) = mock_client();
    (Api::namespaced(client, "sso"), server)
}

#[tokio::test]
async fn acquires_a_missing_lease_by_creating_it() {
    let (api, mut server) = api();
    let now = Timestamp::now();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    on_get(
        &mut server,
        StatusCode::NOT_FOUND,
        not_found("leases", "sso-operator-controller"),
    )
    .await;
    let seen = server
        .expect(
            Method::POST,
            PATH,
            StatusCode::CREATED,
            lease_json("pod-a", now, 0),
        )
        .await;
    let spec = &seen.body["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert_eq!(seen.body["metadata"]["name"], "sso-operator-controller");
    assert!(round.await.unwrap().unwrap(), "leader after creating");
}

#[tokio::test]
async fn renews_its_own_lease_with_the_resource_version_it_read() {
    let (api, mut server) = api();
    let now = Timestamp::now();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    let earlier = now - jiff::SignedDuration::from_secs(2);
    on_get(&mut server, StatusCode::OK, lease_json("pod-a", earlier, 3)).await;
    let seen = on_put(&mut server, StatusCode::OK, lease_json("pod-a", now, 3)).await;
    assert_eq!(seen.body["metadata"]["resourceVersion"], "42");
    let spec = &seen.body["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(
        spec["acquireTime"], "2026-01-01T00:00:00.000000Z",
        "acquireTime kept on renew"
    );
    assert_eq!(spec["leaseTransitions"], 3, "no transition on renew");
    let renewed: Timestamp = spec["renewTime"].as_str().unwrap().parse().unwrap();
    assert!(renewed > earlier);
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test]
async fn loses_a_race_on_conflict_without_an_error() {
    let (api, mut server) = api();
    let now = Timestamp::now();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    on_get(&mut server, StatusCode::OK, lease_json("pod-a", now, 1)).await;
    on_put(&mut server, StatusCode::CONFLICT, conflict()).await;
    assert!(
        !round.await.unwrap().unwrap(),
        "not leader, and not an error"
    );

    // Same for a create race.
    let (api, mut server) = self::api();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    on_get(&mut server, StatusCode::NOT_FOUND, not_found("leases", "x")).await;
    server
        .expect(Method::POST, PATH, StatusCode::CONFLICT, conflict())
        .await;
    assert!(!round.await.unwrap().unwrap());
}

#[tokio::test]
async fn never_writes_a_live_lease_held_by_another() {
    let (api, mut server) = api();
    let now = Timestamp::now();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    let recent = now - jiff::SignedDuration::from_secs(5);
    on_get(&mut server, StatusCode::OK, lease_json("pod-b", recent, 7)).await;
    assert!(!round.await.unwrap().unwrap());
    server.expect_silence().await;
}

#[tokio::test]
async fn takes_over_an_expired_lease() {
    let (api, mut server) = api();
    let now = Timestamp::now();
    let round = tokio::spawn(async move { leader::try_acquire_or_renew(&api, &cfg(), now).await });
    let stale = now - jiff::SignedDuration::from_secs(20);
    on_get(&mut server, StatusCode::OK, lease_json("pod-b", stale, 7)).await;
    let seen = on_put(&mut server, StatusCode::OK, lease_json("pod-a", now, 8)).await;
    let spec = &seen.body["spec"];
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseTransitions"], 8);
    assert_eq!(spec["acquireTime"], spec["renewTime"], "a new acquisition");
    assert_eq!(seen.body["metadata"]["resourceVersion"], "42");
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test]
async fn the_runner_starts_work_only_when_leading_and_stops_it_when_renewals_fail() {
    let (api, mut server) = api();
    let mut config = cfg();
    config.retry_period = Duration::from_millis(50);
    config.renew_deadline = Duration::from_millis(200);
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let runner = tokio::spawn(leader::run(api, config, leading_tx, async move {
        let _ = started_tx.send(());
        std::future::pending::<()>().await
    }));
    let now = Timestamp::now();
    // Round 1: someone else holds a live lease: no work.
    on_get(&mut server, StatusCode::OK, lease_json("pod-b", now, 0)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(started.try_recv().is_err(), "no work before leading");
    assert!(!*leading.borrow());
    // Round 2: the lease expired: take over, work starts.
    let stale = now - jiff::SignedDuration::from_secs(30);
    on_get(&mut server, StatusCode::OK, lease_json("pod-b", stale, 0)).await;
    on_put(&mut server, StatusCode::OK, lease_json("pod-a", now, 1)).await;
    tokio::time::timeout(Duration::from_secs(2), started.recv())
        .await
        .expect("work started")
        .unwrap();
    assert!(*leading.borrow());
    // Renewals: the apiserver fails every one until the deadline passes.
    let failing = tokio::spawn(async move {
        loop {
            let (seen, send) = server.next().await;
            assert_eq!(seen.method, Method::GET);
            send.send_response(
                http::Response::builder()
                    .status(500)
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd down"})).unwrap(),
                    ))
                    .unwrap(),
            );
        }
    });
    let result = tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("the runner gives up within the renew deadline")
        .unwrap();
    assert_eq!(result, Err(LeaderError::LostLease));
    assert!(!*leading.borrow(), "no longer leading");
    failing.abort();
}
