//! The reconciler: the leader periodically asks each Grid node that holds sessions (by the node
//! URI the map records) which sessions it holds, and proposes the removal of every session the
//! node answers without, and of every session of a node that has answered nothing for
//! `node-down-after`. A session it has known for less than `grace` is never touched (the
//! distributor adds a session after the node created it, and a restarted node answers with no
//! sessions before its `node-restarted` event arrives).
//!
//! Exactly one member reconciles: the leader. A member that stops leading forgets what it
//! observed, so a new leader starts its own clocks (the grace and the node's downtime run from
//! its first observation). Before it reads the map, and again before it proposes, the leader
//! passes a read barrier, which needs a quorum: an isolated leader checks and removes nothing.
//! Removals go through Raft like a `DELETE` (`Op::Reconcile`), so every member's map and the
//! mirrors see them, and each removes its session only if it is still the one judged. The
//! decision itself is pure ([`decide`]); this file does the I/O around it.

pub mod decide;
pub mod metrics;
pub mod node;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::config::ReconcileConfig;
use crate::map::{now_nanos, Op, Proposal, ReconcileRemoval};
use crate::telemetry::repeat::{RepeatState, REPEAT_EVERY};
use decide::{Known, Limits, NodeState, NodeView};
pub use metrics::ReconcileMetrics;
use node::Check;

/// Nodes asked at the same time.
pub const MAX_CONCURRENT_CHECKS: usize = 16;
/// The longest one node may take to answer (shorter when the interval is).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Removals per proposal; far below the proposal size limit even with 1 KiB ids.
const REMOVALS_PER_PROPOSAL: usize = 1_000;

/// The reconciler of one member: idle while it follows.
pub struct Reconciler {
    cluster: Arc<Cluster>,
    cfg: ReconcileConfig,
    http: reqwest::Client,
    metrics: ReconcileMetrics,
    /// The origin of the reconciler's monotonic milliseconds.
    origin: Instant,
    /// Sessions seen while leading: id → the add index and when first seen with it.
    seen: HashMap<Arc<str>, Known>,
    /// Nodes with sessions → when they last answered this leader.
    last_answer: HashMap<Arc<str>, u64>,
    /// Nodes that have not answered this leader at all → their first failed check.
    down_since: HashMap<Arc<str>, u64>,
    /// Dry run: ids already logged as "would remove", so each is logged once.
    reported: HashSet<Arc<str>>,
    leading: bool,
    /// Runs skipped for want of a quorum, logged once then every 30 s.
    no_quorum: RepeatState,
    /// Node failures by node, logged once per node then every 30 s.
    failing: HashMap<Arc<str>, RepeatState>,
}

/// Runs the reconciler until `stop`.
pub async fn run(
    cluster: Arc<Cluster>,
    cfg: ReconcileConfig,
    metrics: ReconcileMetrics,
    stop: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "reconciler not started: no HTTP client");
            return;
        }
    };
    tracing::info!(
        interval = ?cfg.interval,
        grace = ?cfg.grace,
        node_down_after = ?cfg.node_down_after,
        dry_run = cfg.dry_run,
        "reconciler configured; it runs on the leader"
    );
    let mut r = Reconciler {
        cluster,
        http,
        metrics,
        origin: Instant::now(),
        seen: HashMap::new(),
        last_answer: HashMap::new(),
        down_since: HashMap::new(),
        reported: HashSet::new(),
        leading: false,
        no_quorum: RepeatState::default(),
        failing: HashMap::new(),
        cfg,
    };
    let mut tick = tokio::time::interval(r.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let leads = r.cluster.check_leader().is_ok() && r.cluster.health.stopped().is_none();
        if leads != r.leading {
            tracing::info!(
                leading = leads,
                "reconciler {}",
                if leads {
                    "started: this member leads"
                } else {
                    "paused: this member no longer leads"
                }
            );
            r.forget();
            r.leading = leads;
        }
        if leads {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = r.run_once() => {}
            }
        }
    }
}

impl Reconciler {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets every observation: a new term of leadership starts its own clocks.
    fn forget(&mut self) {
        self.seen.clear();
        self.last_answer.clear();
        self.down_since.clear();
        self.reported.clear();
        self.failing.clear();
        self.metrics.would_remove(0, 0);
    }

    /// One run: a read barrier, the map's sessions by node, every node asked, the plan, and
    /// its proposal after a second read barrier.
    async fn run_once(&mut self) {
        if !self.quorum().await {
            return;
        }
        let nodes = self.sessions_by_node();
        let timeout = NODE_TIMEOUT.min(self.cfg.interval);
        let secret = self.cfg.registration_secret.clone();
        let http = self.http.clone();
        let checks: Vec<(Arc<str>, Check)> = futures::stream::iter(nodes.keys().cloned())
            .map(|uri| {
                let (http, secret) = (http.clone(), secret.clone());
                async move {
                    let check = node::check(&http, &uri, &secret, timeout).await;
                    (uri, check)
                }
            })
            .buffer_unordered(MAX_CONCURRENT_CHECKS)
            .collect()
            .await;
        let now = self.now_ms();
        let mut views = Vec::with_capacity(checks.len());
        for (uri, check) in checks {
            self.metrics.checked(check.outcome());
            let state = self.node_state(&uri, check, now);
            let sessions = nodes.get(&uri).cloned().unwrap_or_default();
            views.push(NodeView {
                node: uri,
                sessions,
                state,
            });
        }
        let limits = Limits {
            grace_ms: millis(self.cfg.grace),
            node_down_after_ms: millis(self.cfg.node_down_after),
        };
        let plan = decide::plan(&views, now, limits, self.cfg.dry_run);
        if self.cfg.dry_run {
            self.report_dry_run(&plan.would_remove);
        }
        if plan.remove.is_empty() {
            self.finished("done");
            return;
        }
        if !self.quorum().await {
            return;
        }
        if self.cluster.check_leader().is_err() {
            // Lost the leadership during the run: the next tick pauses the reconciler.
            return;
        }
        let outcome = self.propose(plan.remove).await;
        self.finished(outcome);
    }

    /// Passes a read barrier (the leader still leads and reaches a quorum, and its map holds
    /// every acknowledged write). Logs a run of failures once, then every 30 s.
    async fn quorum(&mut self) -> bool {
        match self.cluster.read_barrier().await {
            Ok(()) => {
                if let Some(n) = self.no_quorum.succeeded() {
                    tracing::info!(
                        skipped = n,
                        "reconciler resumed: the leader reaches a quorum"
                    );
                }
                true
            }
            Err(e) => {
                self.metrics.run("no_quorum");
                if let Some(n) = self.no_quorum.failed(Instant::now(), REPEAT_EVERY) {
                    tracing::warn!(error = %e, skipped = n, "reconciler skipped a run: no read barrier (quorum); nothing removed");
                }
                false
            }
        }
    }

    /// The map's sessions grouped by node, each with when this leader first saw it.
    fn sessions_by_node(&mut self) -> BTreeMap<Arc<str>, Vec<Known>> {
        let map = self.cluster.reader.snapshot();
        let now = self.now_ms();
        let mut nodes: BTreeMap<Arc<str>, Vec<Known>> = BTreeMap::new();
        let mut live = HashSet::with_capacity(map.len());
        for record in map.records() {
            let known = self
                .seen
                .entry(record.id.clone())
                .and_modify(|k| {
                    if k.added != record.added {
                        // Re-added: another session under the same id.
                        *k = Known {
                            id: record.id.clone(),
                            added: record.added,
                            first_seen_ms: now,
                        };
                    }
                })
                .or_insert_with(|| Known {
                    id: record.id.clone(),
                    added: record.added,
                    first_seen_ms: now,
                });
            nodes
                .entry(record.uri.clone())
                .or_default()
                .push(known.clone());
            live.insert(record.id.clone());
        }
        // Bounded by the map: forget what it no longer holds.
        self.seen.retain(|id, _| live.contains(id));
        self.reported.retain(|id| live.contains(id));
        self.last_answer.retain(|uri, _| nodes.contains_key(uri));
        self.down_since.retain(|uri, _| nodes.contains_key(uri));
        self.failing.retain(|uri, _| nodes.contains_key(uri));
        nodes
    }

    /// Records what a check found about `uri` and what that makes the node's state.
    fn node_state(&mut self, uri: &Arc<str>, check: Check, now: u64) -> NodeState {
        let failing = self.failing.entry(uri.clone()).or_default();
        match check {
            Check::Holds(held) => {
                self.last_answer.insert(uri.clone(), now);
                self.down_since.remove(uri);
                if let Some(n) = failing.succeeded() {
                    tracing::info!(node = %uri, failed_checks = n, "reconciler: node answers again");
                }
                NodeState::Answered(held)
            }
            Check::Skipped => NodeState::Unchecked,
            Check::Unreachable(why) | Check::BadAnswer(why) => {
                if let Some(n) = failing.failed(Instant::now(), REPEAT_EVERY) {
                    tracing::warn!(node = %uri, error = %why, failed_checks = n, "reconciler: node status request failed");
                }
                // Unreachable since its last answer; a node that never answered this leader,
                // since the first failed check.
                let since = match self.last_answer.get(uri) {
                    Some(at) => *at,
                    None => *self.down_since.entry(uri.clone()).or_insert(now),
                };
                NodeState::Unreachable { since_ms: since }
            }
        }
    }

    fn report_dry_run(&mut self, would_remove: &[(Arc<str>, ReconcileRemoval)]) {
        let unreachable = would_remove
            .iter()
            .filter(|(_, r)| metrics::reason_label(&r.reason) == "node_unreachable")
            .count();
        let lost = would_remove.len() - unreachable;
        self.metrics.would_remove(to_i64(lost), to_i64(unreachable));
        for (node, r) in would_remove {
            if self.reported.insert(Arc::from(r.id.as_str())) {
                tracing::info!(session = %r.id, node = %node, reason = %r.reason.text(), "reconciler dry run: would remove session");
            }
        }
    }

    /// Proposes the removals, in chunks of one reason each (so each chunk's count is the
    /// reason's); returns the run's outcome.
    async fn propose(&mut self, remove: Vec<(Arc<str>, ReconcileRemoval)>) -> &'static str {
        for (node, r) in &remove {
            tracing::info!(session = %r.id, node = %node, reason = %r.reason.text(), "reconciler removes session");
        }
        let (unreachable, lost): (Vec<_>, Vec<_>) = remove
            .into_iter()
            .map(|(_, r)| r)
            .partition(|r| metrics::reason_label(&r.reason) == "node_unreachable");
        let timeout = self.cluster.settings.write_timeout;
        for group in [lost, unreachable] {
            for chunk in group.chunks(REMOVALS_PER_PROPOSAL) {
                let Some(reason) = chunk.first().map(|r| r.reason) else {
                    continue;
                };
                let p = Proposal {
                    at: now_nanos(),
                    event_id: None,
                    op: Op::Reconcile(chunk.to_vec()),
                };
                match self.cluster.commit(p, timeout).await {
                    Ok(applied) => self.metrics.removed(&reason, u64::from(applied.changed)),
                    Err(e) => {
                        tracing::warn!(error = %e, sessions = chunk.len(), "reconciler removal not committed; the next run decides again");
                        return "failed";
                    }
                }
            }
        }
        "done"
    }

    fn finished(&self, outcome: &'static str) {
        self.metrics.run(outcome);
        if outcome == "done" {
            self.metrics
                .finished_at(now_nanos().div_euclid(1_000_000_000));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
