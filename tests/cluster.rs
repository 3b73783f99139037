//! Tests against a real cluster, for anyone with a kubeconfig pointing at a
//! throw-away cluster (kind, k3d). Ignored by default:
//!
//! ```sh
//! kind create cluster
//! cargo test --test cluster -- --ignored --test-threads=1
//! ```
//!
//! Each test works in its own temporary namespace and deletes it after.
//! The controller runs in the test process, so the test issuer on
//! 127.0.0.1 is reachable from it.

use sso_test_support as common;

use std::{sync::Arc, time::Duration};

use common::issuer;
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sso_operator::{
    api::IdentityProvider,
    config::{BROKER_CONFIG_KEY, BrokerConfig},
    controller::{self, Context, Settings, program::ProgramSet, validate::Env},
    metrics::Metrics,
    oidc::discovery::{CacheTtl, DiscoveryCache, HttpSettings},
};

async fn setup() -> (Client, String) {
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for a throw-away cluster");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "identityproviders.sso-operator.dev",
        &PatchParams::apply("sso-operator-tests").force(),
        &Patch::Apply(IdentityProvider::crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // CRD established
    let ns = format!("sso-test-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    (client, ns)
}

async fn teardown(client: &Client, ns: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(ns, &DeleteParams::default()).await;
}

async fn wait_for<F: Fn(&IdentityProvider) -> bool>(
    api: &Api<IdentityProvider>,
    name: &str,
    f: F,
) -> IdentityProvider {
    for _ in 0..60 {
        if let Ok(idp) = api.get(name).await
            && f(&idp)
        {
            return idp;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!(
        "{name} did not reach the expected state in 60s: {:?}",
        api.get(name).await.ok().and_then(|i| i.status)
    );
}

fn phase(i: &IdentityProvider) -> Option<&str> {
    i.status.as_ref().and_then(|s| s.phase.as_deref())
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn cluster_provider_becomes_ready_and_follows_its_secret() {
    let (client, ns) = setup().await;
    let base = issuer::serve_http().await;
    let discovery = Arc::new(DiscoveryCache::new(
        HttpSettings::default(),
        CacheTtl::default(),
    ));
    let metrics = Arc::new(Metrics::new(
        discovery.fetches.clone(),
        discovery.hits.clone(),
    ));
    let env = Env {
        public_url: "https://sso.example.com".parse().unwrap(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        discovery,
        Arc::new(ProgramSet::default()),
        env,
    ));
    let settings = Settings {
        namespace: ns.clone(),
        broker_config_secret: "sso-operator-broker-config".into(),
        watch_namespace: Some(ns.clone()),
        secret_label_selector: None,
    };
    let run = tokio::spawn(controller::run(client.clone(), ctx, settings));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "corp-oidc"}, "stringData": {"clientSecret": "v1"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let idp: IdentityProvider = serde_json::from_value(json!({
        "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
        "metadata": {"name": "corp"},
        "spec": {"issuer": format!("{base}/good"), "clientID": "c", "clientSecretRef": {"name": "corp-oidc", "key": "clientSecret"}}
    }))
    .unwrap();
    idps.create(&PostParams::default(), &idp).await.unwrap();
    let ready = wait_for(&idps, "corp", |i| phase(i) == Some("Ready")).await;
    assert_eq!(
        ready.status.unwrap().redirect_uri.as_deref(),
        Some(format!("https://sso.example.com/oauth/callback/{ns}/corp").as_str())
    );

    // The broker config carries the resolved secret; rotation follows.
    secrets
        .patch(
            "corp-oidc",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"clientSecret": "v2"}})),
        )
        .await
        .unwrap();
    let mut rotated = false;
    for _ in 0..30 {
        if let Ok(s) = secrets.get("sso-operator-broker-config").await {
            let cfg = BrokerConfig::decode(&s.data.unwrap()[BROKER_CONFIG_KEY].0).unwrap();
            if cfg
                .providers
                .get(&format!("{ns}/corp"))
                .and_then(|p| p.client_secret.as_deref())
                == Some("v2")
            {
                rotated = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        rotated,
        "the rotated client secret reached the broker config"
    );

    // Deleting the Secret is reported precisely.
    secrets
        .delete("corp-oidc", &DeleteParams::default())
        .await
        .unwrap();
    let failed = wait_for(&idps, "corp", |i| phase(i) == Some("Error")).await;
    let cond = failed
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "SecretResolved")
        .unwrap();
    assert_eq!(cond.reason, "SecretNotFound");

    run.abort();
    teardown(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn cluster_apiserver_enforces_the_cel_rules() {
    let (client, ns) = setup().await;
    let idps: Api<IdentityProvider> = Api::namespaced(client.clone(), &ns);
    let bad: IdentityProvider = serde_json::from_value(json!({
        "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
        "metadata": {"name": "bad"},
        "spec": {"issuer": "http://idp.example.com", "clientID": "c", "clientSecretRef": {"name": "s", "key": "k"},
                 "authorizeParams": {"nonce": "x"}}
    }))
    .unwrap();
    let err = idps
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("issuer must be an https URL"), "{err}");
    assert!(err.contains("authorizeParams must not set"), "{err}");
    teardown(&client, &ns).await;
}
