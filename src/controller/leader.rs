//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's
//! semantics: the holder renews every `retry_period`; others take over once
//! `renewTime + leaseDurationSeconds` has passed; every write carries the
//! `resourceVersion` it read, so two candidates cannot both win (the loser
//! gets 409 Conflict and waits).
//!
//! A leader that cannot renew for `renew_deadline` stops its work and
//! [`run`] returns [`LeaderError::LostLease`]; the binary then exits
//! non-zero and Kubernetes restarts the pod as a candidate. Exiting is what
//! client-go users do: it is the only way to be sure no reconcile of the old
//! leader is still running when the new one starts.

use std::{future::Future, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Where and how to hold the lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder's lease expired: take it.
    TakeOver,
    /// Someone else holds a live lease.
    Wait { holder: String },
}

/// Decides from the lease as read, at `now`. Pure.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match spec.renew_time.or(spec.acquire_time) {
        // A renew time in the future (clock skew) counts as live until it
        // plus the duration has passed, like any other.
        Some(MicroTime(renewed)) => renewed
            .checked_add(duration)
            .map(|until| until <= now)
            .unwrap_or(true),
        None => true,
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Wait { holder }
    }
}

/// The lease spec to write for `decision` (`Create`, `Renew`, `TakeOver`).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let mut spec = current.cloned().unwrap_or_default();
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(cfg.lease_duration.as_secs().try_into().unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    match decision {
        Decision::Create => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(0);
        }
        Decision::TakeOver => {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(transitions + 1);
        }
        Decision::Renew | Decision::Wait { .. } => {}
    }
    spec
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One election round: read, decide, write. `Ok(true)` when we hold the
/// lease afterwards; a lost race (409) is `Ok(false)`, not an error.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let decision = decide(current.as_ref(), &cfg.identity, now);
    match (&decision, current) {
        (Decision::Wait { holder }, _) => {
            debug!(%holder, "lease held by another candidate");
            Ok(false)
        }
        (Decision::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_spec(None, &decision, cfg, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
        (_, Some(mut lease)) => {
            lease.spec = Some(next_spec(lease.spec.as_ref(), &decision, cfg, now));
            // replace() sends the resourceVersion we read: optimistic
            // concurrency decides between racing candidates.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
        (_, None) => Ok(false),
    }
}

/// Gives the lease up (best effort) so another candidate takes over at
/// once instead of after the lease duration.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => info!("released the lease"),
        Err(e) => warn!(error = %e, "could not release the lease; it expires on its own"),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderError {
    #[error("lost the leader lease (could not renew within the renew deadline)")]
    LostLease,
}

/// Waits for the lease, runs `work` while holding it, renews it meanwhile.
/// `leading` reports the state (for readiness and metrics).
pub async fn run<F: Future>(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    work: F,
) -> Result<F::Output, LeaderError> {
    loop {
        match try_acquire_or_renew(&api, &cfg, Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election: cannot reach the lease"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
    info!(identity = %cfg.identity, lease = %cfg.name, "acquired the leader lease");
    leading.send_replace(true);
    let renew = async {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.retry_period).await;
            match try_acquire_or_renew(&api, &cfg, Timestamp::now()).await {
                Ok(true) => {
                    debug!("renewed the leader lease");
                    last_ok = tokio::time::Instant::now();
                }
                Ok(false) => warn!("another candidate holds the lease"),
                Err(e) => warn!(error = %e, "cannot renew the leader lease"),
            }
            if last_ok.elapsed() >= cfg.renew_deadline {
                return;
            }
        }
    };
    tokio::pin!(work);
    let result = tokio::select! {
        out = &mut work => {
            release(&api, &cfg).await;
            Ok(out)
        }
        () = renew => {
            warn!("lost the leader lease; stopping");
            Err(LeaderError::LostLease)
        }
    };
    leading.send_replace(false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                lease_duration_seconds: duration,
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decision_table() {
        let me = "pod-a";
        assert_eq!(decide(None, me, at(0)), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some(me), Some(-100), Some(15))), me, at(0)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(None, Some(0), Some(15))), me, at(0)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), Some(0), Some(15))), me, at(0)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), Some(-5), Some(15))), me, at(0)),
            Decision::Wait {
                holder: "pod-b".into()
            }
        );
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), Some(-15), Some(15))), me, at(0)),
            Decision::TakeOver,
            "expires exactly at renewTime + duration"
        );
        // Renewed "in the future" (skewed clock): still live.
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), Some(30), Some(15))), me, at(0)),
            Decision::Wait {
                holder: "pod-b".into()
            }
        );
        // Missing times or duration: nothing proves it is live.
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), None, Some(15))), me, at(0)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), Some(-1), None)), me, at(0)),
            Decision::TakeOver
        );
        let empty = Lease::default();
        assert_eq!(decide(Some(&empty), me, at(0)), Decision::TakeOver);
    }

    #[test]
    fn next_spec_keeps_acquire_on_renew_and_counts_transitions() {
        let cfg = LeaseConfig::new("ns", "l", "pod-a");
        let mut current = lease(Some("pod-a"), Some(-2), Some(15)).spec.unwrap();
        current.acquire_time = Some(MicroTime(at(-60)));
        let renewed = next_spec(Some(&current), &Decision::Renew, &cfg, at(0));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(-60))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.lease_transitions, Some(3));
        let taken = next_spec(Some(&current), &Decision::TakeOver, &cfg, at(0));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let created = next_spec(None, &Decision::Create, &cfg, at(0));
        assert_eq!(created.lease_transitions, Some(0));
    }
}
