//! Where the broker's configuration and session keys come from: the
//! controller's Secret (watched by name, so RBAC can limit the broker to
//! exactly that Secret) or files (polled; for local use). A bad update is
//! logged and counted, and the previous configuration keeps serving.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tracing::{error, info, warn};

use super::{Broker, seal::KeyRing};
use crate::config::{BROKER_CONFIG_KEY, BROKER_CONFIG_PLAIN_KEY, BrokerConfig};

/// Key of the session-keys Secret holding the keys, one per line.
pub const SESSION_KEYS_KEY: &str = "session-keys";

/// Parses session keys: one per line, newest (sealing) first; blank lines
/// and `#` comments ignored; each at least 32 bytes.
pub fn parse_keys(text: &str) -> Result<KeyRing, String> {
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if keys.is_empty() {
        return Err("no session keys (one key per line, at least 32 bytes each)".into());
    }
    KeyRing::new(&keys).map_err(|e| e.to_string())
}

fn apply_config_bytes(broker: &Broker, bytes: &[u8], origin: &str) {
    apply_config_decoded(broker, bytes, origin);
    // Decoding a config for thousands of providers builds tens of
    // megabytes that are freed at once.
    crate::memory::release_freed();
}

fn apply_config_decoded(broker: &Broker, bytes: &[u8], origin: &str) {
    match BrokerConfig::decode(bytes) {
        Ok(config) => {
            let applied = broker.apply_config(&config);
            info!(
                origin,
                providers = config.providers.len(),
                policies = config.policies.len(),
                added = ?applied.added,
                changed = ?applied.changed,
                removed = ?applied.removed,
                rejected = ?applied.rejected,
                "broker configuration loaded"
            );
            for (policy, why) in &applied.rejected_policies {
                warn!(
                    origin,
                    policy, "access policy not usable, it admits nobody: {why}"
                );
            }
        }
        Err(e) => {
            broker.metrics.reload("invalid");
            error!(origin, error = %e, "broker configuration is not readable; keeping the previous one");
        }
    }
}

fn apply_keys_text(broker: &Broker, text: &str, origin: &str) {
    match parse_keys(text) {
        Ok(ring) => {
            info!(origin, primary = ring.primary_id(), "session keys loaded");
            broker.set_keys(ring);
            broker.metrics.reload("keys");
        }
        Err(e) => {
            broker.metrics.reload("invalid_keys");
            error!(origin, error = %e, "session keys are not usable; keeping the previous ones");
        }
    }
}

/// Reads `path` every `interval` and calls `on_change` when its content
/// changed. Only a digest of the last content is kept: a config file for
/// ten thousand providers is tens of megabytes.
async fn poll_file(path: PathBuf, interval: Duration, mut on_change: impl FnMut(&[u8])) {
    let digest = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    let mut last: Option<Vec<u8>> = None;
    let mut missing_logged = false;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                missing_logged = false;
                let seen = digest(&bytes);
                if last.as_ref() != Some(&seen) {
                    on_change(&bytes);
                    last = Some(seen);
                }
            }
            Err(e) if !missing_logged => {
                warn!(path = %path.display(), error = %e, "cannot read; keeping the previous content");
                missing_logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(interval).await;
    }
}

/// Watches one Secret by name and calls `on_data` with the value of the
/// first of `keys` it has, on every change. Runs until the process ends;
/// API errors back off.
async fn watch_secret(
    client: Client,
    namespace: &str,
    name: &str,
    keys: &'static [&'static str],
    mut on_data: impl FnMut(Option<&[u8]>),
) {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                let data = s
                    .data
                    .as_ref()
                    .and_then(|d| keys.iter().find_map(|k| d.get(*k)))
                    .map(|b| b.0.as_slice());
                on_data(data);
            }
            Ok(watcher::Event::Delete(_)) => {
                warn!(
                    namespace,
                    name, "Secret deleted; keeping the last loaded content"
                );
            }
            Ok(_) => {}
            Err(e) => warn!(namespace, name, error = %e, "watching the Secret failed; retrying"),
        }
    }
}

/// The broker's two inputs.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// The providers and access policies the controller programs.
    Config,
    /// The session keys, newest first.
    Keys,
}

/// Where an input comes from: a file (polled; for local use) or a Secret
/// (watched by name).
pub enum Origin {
    File(PathBuf),
    Secret {
        client: Client,
        namespace: String,
        name: String,
    },
}

impl Input {
    /// The Secret keys that may hold it, first found wins.
    fn secret_keys(self) -> &'static [&'static str] {
        match self {
            Input::Config => &[BROKER_CONFIG_KEY, BROKER_CONFIG_PLAIN_KEY],
            Input::Keys => &[SESSION_KEYS_KEY],
        }
    }

    /// Loads new content; `None` when the Secret has none of the keys.
    fn apply(self, broker: &Broker, data: Option<&[u8]>, origin: &str) {
        match (self, data) {
            (Input::Config, Some(bytes)) => apply_config_bytes(broker, bytes, origin),
            // The chart creates the Secret empty; the controller fills it.
            (Input::Config, None) => apply_config_bytes(broker, b"{\"providers\":{}}", origin),
            (Input::Keys, Some(bytes)) => {
                apply_keys_text(broker, &String::from_utf8_lossy(bytes), origin)
            }
            (Input::Keys, None) => error!(
                origin,
                key = SESSION_KEYS_KEY,
                "the session keys Secret has no such key"
            ),
        }
    }
}

/// Loads `input` from `from` now and on every change, until the process
/// ends. A file is read every `interval`.
pub async fn watch(broker: Arc<Broker>, input: Input, from: Origin, interval: Duration) {
    match from {
        Origin::File(path) => {
            let origin = path.display().to_string();
            poll_file(path, interval, |bytes| {
                input.apply(&broker, Some(bytes), &origin)
            })
            .await
        }
        Origin::Secret {
            client,
            namespace,
            name,
        } => {
            let origin = format!("Secret {namespace}/{name}");
            watch_secret(client, &namespace, &name, input.secret_keys(), |data| {
                input.apply(&broker, data, &origin)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_comments_and_refuse_short_ones() {
        let ring = parse_keys("# newest first\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\nBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n").unwrap();
        let sealed = ring.seal("x", b"hi");
        let old_only = parse_keys("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB").unwrap();
        assert!(
            old_only.open("x", &sealed).is_err(),
            "sealed with the first key"
        );
        assert!(parse_keys("short").is_err());
        assert!(parse_keys("\n# only a comment\n").is_err());
    }
}
