//! Whether this member can serve at all, apart from leadership: its Raft still runs, and its
//! data directory has room. Readiness ([`Cluster::readiness`](super::Cluster::readiness)),
//! `/healthz` and the process's exit decision read it.
//!
//! This module only observes and records; it never stops or exits anything. A stopped Raft is
//! reported through [`FatalHandle`], and `main` decides to exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{IntGauge, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// What this member knows about its own ability to serve.
pub struct Health {
    /// Why Raft stopped on this member, once it has.
    stopped: watch::Sender<Option<Arc<str>>>,
    /// This member's data directory is below its free-space threshold (see `super::disk`).
    disk_low: AtomicBool,
    pub(super) metrics: HealthMetrics,
}

/// The gauges of this module and of the disk watcher.
#[derive(Clone)]
pub(super) struct HealthMetrics {
    pub raft_stopped: IntGauge,
    pub disk_free_bytes: IntGauge,
    pub disk_low: IntGauge,
    pub nospace_alarm: IntGauge,
}

impl Default for Health {
    fn default() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        Health {
            stopped: watch::Sender::new(None),
            disk_low: AtomicBool::new(false),
            metrics: HealthMetrics {
                raft_stopped: gauge(
                    "gridraft_raft_stopped",
                    "1 once Raft has stopped on this member (it then leaves the balancer)",
                ),
                disk_free_bytes: gauge(
                    "gridraft_disk_free_bytes",
                    "Free bytes in this member's data directory's filesystem",
                ),
                disk_low: gauge(
                    "gridraft_disk_low",
                    "1 while this member's data directory is below its free-space threshold",
                ),
                nospace_alarm: gauge(
                    "gridraft_nospace_alarm",
                    "1 while a quorum of voters is low on disk and the cluster refuses adds",
                ),
            },
        }
    }
}

impl Health {
    /// Why Raft stopped on this member, or `None` while it runs.
    pub fn stopped(&self) -> Option<Arc<str>> {
        self.stopped.borrow().clone()
    }

    /// True while this member's data directory is low on free space.
    pub fn disk_low(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }

    pub(super) fn set_disk_low(&self, low: bool) {
        self.disk_low.store(low, Ordering::Relaxed);
        self.metrics.disk_low.set(i64::from(low));
    }

    /// Records that Raft stopped, once (only [`watch_raft`] calls it). Logged before the
    /// handles are woken, so the cause comes first in the log, before anything they do.
    fn raft_stopped(&self, cause: String) {
        if self.stopped.borrow().is_some() {
            return;
        }
        tracing::error!(
            cause = %cause,
            "raft has stopped on this member: it leaves the load balancer and must be restarted"
        );
        self.metrics.raft_stopped.set(1);
        self.stopped.send_replace(Some(Arc::from(cause)));
    }

    /// A handle that resolves once Raft has stopped on this member.
    pub fn fatal(&self) -> FatalHandle {
        FatalHandle(self.stopped.subscribe())
    }

    /// Registers the gauges on `/metrics`.
    pub fn register(&self, registry: &Registry) {
        let m = &self.metrics;
        for g in [
            &m.raft_stopped,
            &m.disk_free_bytes,
            &m.disk_low,
            &m.nospace_alarm,
        ] {
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
        }
    }
}

/// Resolves once Raft has stopped on the member it came from (see [`Health::fatal`]).
#[derive(Clone)]
pub struct FatalHandle(watch::Receiver<Option<Arc<str>>>);

impl FatalHandle {
    /// Why Raft stopped, if it has.
    pub fn get(&self) -> Option<Arc<str>> {
        self.0.borrow().clone()
    }

    /// Waits until Raft has stopped and returns why. Never resolves while it runs.
    pub async fn wait(&mut self) -> Arc<str> {
        match self.0.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone().expect("waited for Some"),
            // The member itself is gone (dropped after an orderly stop): nothing to report.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Watches openraft's metrics until Raft stops on this member, then records why. An orderly
/// stop cancels `stop` before shutting Raft down, so it is never taken for a failure.
pub async fn watch_raft(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut metrics = cluster.raft.metrics();
    let cause = loop {
        let state = metrics.borrow_and_update().running_state.clone();
        if let Err(fatal) = state {
            break match fatal {
                openraft::error::Fatal::StorageError(e) => format!("storage error: {e}"),
                openraft::error::Fatal::Panicked => "the raft core panicked".to_owned(),
                openraft::error::Fatal::Stopped => "raft stopped without a shutdown".to_owned(),
            };
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() {
                // The core task ended without a last metrics update: it panicked.
                break "the raft core task ended (panicked)".to_owned();
            },
        }
    };
    if !stop.is_cancelled() {
        cluster.health.raft_stopped(cause);
    }
}
