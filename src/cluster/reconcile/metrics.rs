//! Prometheus series of the reconciler. Owns names and labels only; deciding what to count is
//! the reconciler's job.
//!
//! * `gridraft_reconcile_removals_total{reason}`: sessions removed, `reason` one of
//!   `node_lost_session`, `node_unreachable`.
//! * `gridraft_reconcile_would_remove{reason}`: in dry-run mode, the sessions the last run would
//!   have removed (0 otherwise).
//! * `gridraft_reconcile_node_checks_total{outcome}`: status requests to Grid nodes, `outcome`
//!   one of `answered`, `unreachable`, `bad_answer`, `skipped` (a URI that is not `http://`).
//! * `gridraft_reconcile_runs_total{outcome}`: runs on the leader, `outcome` one of `done`,
//!   `no_quorum` (nothing checked or removed), `failed` (a removal was not committed).
//! * `gridraft_reconcile_last_run_timestamp_seconds`: when the last complete run ended (Unix
//!   time; 0 if none on this member).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::session::RemovalReason;

/// The reconciler's series; cheap to clone (the series are shared).
#[derive(Clone)]
pub struct ReconcileMetrics {
    removals: IntCounterVec,
    would_remove: IntGaugeVec,
    checks: IntCounterVec,
    runs: IntCounterVec,
    last_run: IntGauge,
}

/// The label of a reconciler reason.
pub fn reason_label(reason: &RemovalReason) -> &'static str {
    match reason {
        RemovalReason::NodeUnreachable { .. } => "node_unreachable",
        _ => "node_lost_session",
    }
}

impl ReconcileMetrics {
    /// Creates the series and registers them (a registry that already holds them keeps the
    /// first set, as for the event-bus series).
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric options")
        };
        let removals = counter(
            "gridraft_reconcile_removals_total",
            "Sessions the reconciler removed, by reason.",
            "reason",
        );
        let would_remove = IntGaugeVec::new(
            Opts::new(
                "gridraft_reconcile_would_remove",
                "Dry-run mode: sessions the last reconciler run would have removed, by reason.",
            ),
            &["reason"],
        )
        .expect("static metric options");
        let checks = counter(
            "gridraft_reconcile_node_checks_total",
            "Status requests the reconciler sent to Grid nodes, by outcome.",
            "outcome",
        );
        let runs = counter(
            "gridraft_reconcile_runs_total",
            "Reconciler runs on the leader, by outcome.",
            "outcome",
        );
        let last_run = IntGauge::new(
            "gridraft_reconcile_last_run_timestamp_seconds",
            "Unix time when the last complete reconciler run ended.",
        )
        .expect("static metric options");
        // Every series exists from the start, at 0, so rates and alerts see the first count.
        for reason in ["node_lost_session", "node_unreachable"] {
            removals.with_label_values(&[reason]);
            would_remove.with_label_values(&[reason]);
        }
        for outcome in ["answered", "unreachable", "bad_answer", "skipped"] {
            checks.with_label_values(&[outcome]);
        }
        for outcome in ["done", "no_quorum", "failed"] {
            runs.with_label_values(&[outcome]);
        }
        for collector in [
            Box::new(removals.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(would_remove.clone()),
            Box::new(checks.clone()),
            Box::new(runs.clone()),
            Box::new(last_run.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "reconciler metric not registered");
            }
        }
        ReconcileMetrics {
            removals,
            would_remove,
            checks,
            runs,
            last_run,
        }
    }

    pub(super) fn removed(&self, reason: &RemovalReason, n: u64) {
        self.removals
            .with_label_values(&[reason_label(reason)])
            .inc_by(n);
    }

    /// Sets the dry-run gauges to the last run's counts.
    pub(super) fn would_remove(&self, lost: i64, unreachable: i64) {
        self.would_remove
            .with_label_values(&["node_lost_session"])
            .set(lost);
        self.would_remove
            .with_label_values(&["node_unreachable"])
            .set(unreachable);
    }

    pub(super) fn checked(&self, outcome: &'static str) {
        self.checks.with_label_values(&[outcome]).inc();
    }

    pub(super) fn run(&self, outcome: &'static str) {
        self.runs.with_label_values(&[outcome]).inc();
    }

    pub(super) fn finished_at(&self, unix_seconds: i64) {
        self.last_run.set(unix_seconds);
    }
}
