//! Events (`events.k8s.io/v1`) for condition transitions, a repeat within
//! six minutes counted in the first one's series.
//!
//! kube-runtime's `Recorder` does the same but keeps every Event it sent
//! (about 2 KB each) for the series: with 10,000 providers and 10,000
//! policies coming up together that was the controller's largest cache
//! (13 MB of 50 at 3,000 of each, heap-profiled). This keeps what a
//! repeat needs: a hash of the series key, the Event's name, its count and
//! when it was last seen.

use std::{
    collections::HashMap,
    hash::BuildHasher as _,
    sync::{Arc, Mutex},
};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// A repeat later than this after the last one starts a new Event (the
/// window kube-runtime's recorder and client-go's use).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// How often series past the window are dropped from memory.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// What one Event says about one object.
pub struct Note<'a> {
    pub warning: bool,
    /// The condition type: one series per condition.
    pub action: &'a str,
    pub reason: &'a str,
    pub note: &'a str,
}

struct Series {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// The series, and when those past the window were last dropped.
#[derive(Default)]
struct Table {
    series: HashMap<u64, Series>,
    pruned: Option<Timestamp>,
}

/// Publishes Events; cheap to clone (one shared series table).
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: Arc<str>,
    instance: Arc<str>,
    table: Arc<Mutex<Table>>,
    hasher: std::hash::RandomState,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: instance.as_deref().unwrap_or(controller).into(),
            table: Arc::default(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn key(&self, object: &ObjectReference, n: &Note<'_>) -> u64 {
        self.hasher.hash_one((
            (&object.kind, &object.namespace, &object.name, &object.uid),
            n.warning,
            n.action,
            n.reason,
        ))
    }

    /// Publishes `n` about `object`: a new Event, or the next count of the
    /// series the same condition and reason started within the window.
    pub async fn publish(&self, object: &ObjectReference, n: &Note<'_>) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = self.key(object, n);
        let repeat = {
            let mut t = self.lock();
            // Series past the window are dropped once a minute, not on
            // every publish (a walk of the whole table, which holds one
            // entry per object that changed: thousands at start).
            if t.pruned.is_none_or(|p| p + PRUNE_EVERY <= now) {
                t.series.retain(|_, s| s.last + SERIES_WINDOW > now);
                t.pruned = Some(now);
            }
            t.series
                .get(&key)
                .filter(|s| s.last + SERIES_WINDOW > now)
                .map(|s| (s.name.clone(), s.count + 1))
        };
        let ns = object.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        if let Some((name, count)) = repeat {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, name, count, now);
                    return Ok(());
                }
                // Gone (the API server's event TTL): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            action: Some(n.action.to_string()),
            reason: Some(n.reason.to_string()),
            note: Some(n.note.to_string()),
            type_: Some(if n.warning { "Warning" } else { "Normal" }.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(object.clone()),
            reporting_controller: Some(self.controller.to_string()),
            reporting_instance: Some(self.instance.to_string()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, name.into(), 1, now);
        Ok(())
    }

    fn remember(&self, key: u64, name: Box<str>, count: i32, last: Timestamp) {
        self.lock().series.insert(key, Series { name, count, last });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    /// The key ignores the note (a repeat with a new message joins the
    /// series, as the recorder's did) but not the reason or the object.
    #[tokio::test]
    async fn series_key() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let events = super::Events::new(client, "sso-operator", None);
        let obj = |name: &str| k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("IdentityProvider".into()),
            namespace: Some("corp".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        };
        let note = |reason, note| super::Note {
            warning: true,
            action: "Ready",
            reason,
            note,
        };
        let k = events.key(&obj("a"), &note("SecretMissing", "one"));
        assert_eq!(k, events.key(&obj("a"), &note("SecretMissing", "two")));
        assert_ne!(k, events.key(&obj("a"), &note("DiscoveryFailed", "one")));
        assert_ne!(k, events.key(&obj("b"), &note("SecretMissing", "one")));
    }
}
