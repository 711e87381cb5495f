//! Leader election through a `coordination.k8s.io` Lease: only the holder runs the
//! controllers. Losing the Lease ends the process (its controllers may have stale work in
//! flight; a restart as a follower is the safe way back), as kube-controller-manager does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::decide::lease::{LeaseAction, LeaseView, lease_action};

/// The Lease's name.
pub const LEASE: &str = "conda-store-operator";

/// One candidate.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity: identity.into(),
            duration,
        }
    }

    /// Tries once to hold the Lease; `Ok(true)` when we hold it afterwards.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(LEASE).await?;
        let view = current.as_ref().map_or(
            LeaseView {
                holder: None,
                renewed: None,
                duration: self.duration,
            },
            |l| {
                let spec = l.spec.clone().unwrap_or_default();
                LeaseView {
                    holder: spec.holder_identity,
                    renewed: spec.renew_time.map(|t| t.0),
                    duration: spec
                        .lease_duration_seconds
                        .map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64)),
                }
            },
        );
        let action = lease_action(&view, &self.identity, now);
        if action == LeaseAction::Follow {
            return Ok(false);
        }
        let spec = |l: Option<&Lease>| {
            let old = l.and_then(|l| l.spec.clone()).unwrap_or_default();
            let acquire = action == LeaseAction::Acquire;
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs() as i32),
                acquire_time: if acquire {
                    Some(MicroTime(now))
                } else {
                    old.acquire_time
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(
                    old.lease_transitions.unwrap_or(0) + i32::from(acquire && l.is_some()),
                ),
                ..Default::default()
            }
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE.into()),
                        ..Default::default()
                    },
                    spec: Some(spec(None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec(Some(&lease)));
                // Carries the resourceVersion read above: two candidates taking an expired
                // Lease at once cannot both succeed.
                self.api
                    .replace(LEASE, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this candidate holds it, so that a standby takes over at its next
    /// try instead of when the Lease expires. A conditional update: a Lease someone else took
    /// meanwhile is left alone.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_hold().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews every `every` until a renewal fails for longer than the lease lasts; returns
    /// then (the caller must stop acting).
    pub async fn keep(&self, every: Duration) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_hold().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("another replica holds the leader Lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader Lease");
                    if last_ok.elapsed() + every >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}
