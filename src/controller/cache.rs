//! Objects as the controller's watch caches keep them.
//!
//! kube's reflector keeps every watched object whole for as long as it
//! exists. With 10,000 providers and 10,000 policies, their specs as
//! structs (each field inline, each string and list its own allocation)
//! were about a third of the controller's heap (heaptrack,
//! bench/controller-memory.sh). A [`Cached`] object keeps its metadata as
//! [`super::slim_for_cache`] leaves it, its spec as deflated JSON, its
//! status packed ([`crate::api::packed`]), and a small index of what is
//! read across all objects at once (which Secrets a provider references,
//! which namespaces may use it). The one object a reconcile works on is
//! expanded back to its kind with [`Cached::expand`].

use std::{borrow::Cow, fmt, sync::Arc};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, runtime::watcher};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

use crate::api::{
    AllowedNamespaces, IdentityProvider, IdentityProviderSpec, IdentityProviderStatus,
    packed::{Packable, deflate, inflate},
    policy::{AccessPolicy, AccessPolicySpec, AccessPolicyStatus},
};

/// A kind whose objects the controller caches as [`Cached`].
pub trait Compact:
    Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static
{
    type Spec: Serialize + DeserializeOwned;
    type Status: Packable + fmt::Debug + Send + Sync + 'static;
    /// What stays unpacked: read across every cached object at once.
    type Index: Clone + fmt::Debug + Send + Sync + 'static;

    fn into_parts(self) -> (ObjectMeta, Self::Spec, Option<Self::Status>);
    fn from_parts(metadata: ObjectMeta, spec: Self::Spec, status: Option<Self::Status>) -> Self;
    fn index(spec: &Self::Spec) -> Self::Index;
}

/// An object of kind `K` as a watch cache keeps it (see the module).
pub struct Cached<K: Compact> {
    pub metadata: ObjectMeta,
    /// The spec, deflated JSON.
    spec: Box<[u8]>,
    /// The status, packed.
    pub status: Option<K::Status>,
    pub index: K::Index,
}

/// The spec of a cached object did not read back (a bug: it was written
/// from a spec just read).
#[derive(Debug, thiserror::Error)]
#[error("the cached spec of {0} does not read back")]
pub struct Unreadable(pub String);

impl<K: Compact> Cached<K> {
    pub fn new(object: K) -> Self {
        let (mut metadata, spec, status) = object.into_parts();
        super::slim_meta(&mut metadata);
        let status = status.map(|mut s| {
            s.pack();
            s
        });
        Self {
            metadata,
            index: K::index(&spec),
            spec: deflate(&spec),
            status,
        }
    }

    /// The spec, read back.
    pub fn spec(&self) -> Result<K::Spec, Unreadable> {
        inflate(&self.spec).ok_or_else(|| Unreadable(self.key()))
    }

    /// The object whole: metadata and spec as they were, the status
    /// still packed (read it with [`Packable::unpacked`]).
    pub fn expand(&self) -> Result<K, Unreadable> {
        Ok(K::from_parts(
            self.metadata.clone(),
            self.spec()?,
            self.status.clone(),
        ))
    }

    /// `namespace/name`, as the broker and metrics name objects.
    pub fn key(&self) -> String {
        crate::api::key_of(&self.metadata)
    }
}

impl<K: Compact> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status.clone(),
            index: self.index.clone(),
        }
    }
}

impl<K: Compact> fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("metadata", &self.metadata)
            .field("spec_bytes", &self.spec.len())
            .field("status", &self.status)
            .field("index", &self.index)
            .finish()
    }
}

/// Read as `K` is, then packed: what kube's watcher and API calls give the
/// controller becomes a cached object directly.
impl<'de, K: Compact> Deserialize<'de> for Cached<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(d).map(Self::new)
    }
}

impl<K: Compact> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A watch event of `K` as one of its cached form.
pub fn cached<K: Compact>(event: watcher::Event<K>) -> watcher::Event<Cached<K>> {
    use watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(Cached::new(o)),
        Event::Delete(o) => Event::Delete(Cached::new(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(Cached::new(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// What the controller reads across every cached provider.
#[derive(Clone, Debug, Default)]
pub struct ProviderIndex {
    /// The Secrets the spec references (a Secret's change requeues it).
    pub secrets: Box<[String]>,
    /// Which other namespaces' AccessPolicies may use it.
    pub allowed_namespaces: Option<Box<AllowedNamespaces>>,
}

impl Compact for IdentityProvider {
    type Spec = IdentityProviderSpec;
    type Status = IdentityProviderStatus;
    type Index = ProviderIndex;

    fn into_parts(self) -> (ObjectMeta, Self::Spec, Option<Self::Status>) {
        (self.metadata, self.spec, self.status)
    }
    fn from_parts(metadata: ObjectMeta, spec: Self::Spec, status: Option<Self::Status>) -> Self {
        Self {
            metadata,
            spec,
            status,
        }
    }
    fn index(spec: &Self::Spec) -> Self::Index {
        ProviderIndex {
            secrets: super::referenced_secrets(spec).into_boxed_slice(),
            allowed_namespaces: spec.allowed_namespaces.clone(),
        }
    }
}

impl Compact for AccessPolicy {
    type Spec = AccessPolicySpec;
    type Status = AccessPolicyStatus;
    type Index = ();

    fn into_parts(self) -> (ObjectMeta, Self::Spec, Option<Self::Status>) {
        (self.metadata, self.spec, self.status)
    }
    fn from_parts(metadata: ObjectMeta, spec: Self::Spec, status: Option<Self::Status>) -> Self {
        Self {
            metadata,
            spec,
            status,
        }
    }
    fn index(_: &Self::Spec) {}
}

/// A provider as cached.
pub type CachedProvider = Cached<IdentityProvider>;
/// A policy as cached.
pub type CachedPolicy = Cached<AccessPolicy>;

/// Expands each of `objects` (the ones whose spec does not read back are
/// left out, logged).
pub fn expand_all<K: Compact>(objects: &[Arc<Cached<K>>]) -> Vec<K> {
    objects
        .iter()
        .filter_map(|o| {
            o.expand()
                .map_err(|e| tracing::error!(error = %e, "left out"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> IdentityProvider {
        serde_json::from_value(json!({
            "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
            "metadata": {
                "name": "corp", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                "generation": 3,
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {
                "issuer": "https://idp.example.com", "clientIDFrom": {"name": "ids", "key": "id"},
                "clientSecretRef": {"name": "oidc", "key": "secret"},
                "allowedGroups": ["admins"], "domains": ["corp.example"],
                "allowedNamespaces": {"from": "All"},
            },
            "status": {
                "phase": "Ready", "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Valid",
                                "message": "works", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "domains": [{"domain": "corp.example", "state": "Verified", "reason": "RecordFound",
                             "message": "", "record": "_sso.corp.example", "value": "v"}],
            },
        }))
        .unwrap()
    }

    /// What a reconcile expands is the object as read, but for what the
    /// cache drops (managedFields, the last-applied copy) and the status
    /// left packed, which unpacks to the status as read.
    #[test]
    fn a_cached_provider_expands_to_what_was_read() {
        let read = provider();
        let c = Cached::new(read.clone());
        assert!(c.metadata.managed_fields.is_none());
        assert_eq!(c.metadata.annotations.as_ref().unwrap().len(), 1);
        let back = c.expand().unwrap();
        assert_eq!(back.spec, read.spec);
        assert_eq!(back.metadata.name, read.metadata.name);
        assert_eq!(back.metadata.generation, Some(3));
        let status = back.status.as_ref().unwrap();
        assert!(status.packed().is_some(), "kept packed");
        let unpacked = status.unpacked();
        let original = read.status.as_ref().unwrap();
        assert_eq!(unpacked.phase, original.phase);
        assert_eq!(unpacked.domains, original.domains);
        assert_eq!(unpacked.conditions[0].reason, "Valid");
        // Domains are read across providers: kept unpacked in the cache.
        assert_eq!(c.status.as_ref().unwrap().domains, original.domains);
        // The index: both Secrets, and who may use it.
        let mut secrets = c.index.secrets.to_vec();
        secrets.sort();
        assert_eq!(secrets, ["ids", "oidc"]);
        assert!(c.index.allowed_namespaces.is_some());
        assert_eq!(c.key(), "team-a/corp");
    }

    /// kube reads objects into the cache through `Deserialize`: the same
    /// as `Cached::new` of the object read as its kind; and the cached
    /// type names the kind's API, so API calls made with it go there.
    #[test]
    fn read_straight_into_the_cached_form() {
        let value = serde_json::to_value(provider()).unwrap();
        let c: CachedProvider = serde_json::from_value(value).unwrap();
        assert_eq!(c.expand().unwrap().spec, provider().spec);
        assert_eq!(CachedProvider::kind(&()), "IdentityProvider");
        assert_eq!(
            CachedProvider::api_version(&()),
            "sso-operator.dev/v1alpha1"
        );
        assert_eq!(CachedProvider::plural(&()), "identityproviders");
        assert_eq!(
            CachedProvider::url_path(&(), Some("team-a")),
            IdentityProvider::url_path(&(), Some("team-a"))
        );
        assert!(
            serde_json::from_value::<CachedPolicy>(json!({"metadata": {"name": "x"}, "spec": 7}))
                .is_err(),
            "a malformed object is an error, as it would be for the kind"
        );
    }

    /// A damaged spec is an error naming the object, not a panic or a
    /// default spec.
    #[test]
    fn a_damaged_spec_is_an_error() {
        let mut c = Cached::new(provider());
        c.spec = Box::new([1, 2, 3]);
        let e = c.expand().unwrap_err();
        assert!(e.to_string().contains("team-a/corp"), "{e}");
        assert!(expand_all(&[Arc::new(c)]).is_empty());
    }
}
