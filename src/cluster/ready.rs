//! Readiness: whether this member can serve linearizable reads and writes now, for `/readyz`,
//! `/status` and `/metrics`.
//!
//! [`Cluster::readiness`] only reads state. The state it reads is kept current by whoever
//! observes it: [`Cluster::watch_leader`] records when this member last served (for the grace
//! period) and probes its quorum as leader; ReadIndex rounds record each quorum confirmation
//! ([`Cluster::note_quorum`]); `super::health` and `super::disk` record a stopped Raft and a
//! low disk.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Cluster, Leader};
use crate::raft::MemberId;

/// Why a member is not ready (the `/status` message says it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("raft has stopped on this member ({0}); it must be restarted")]
    RaftStopped(Arc<str>),
    #[error("this member's data directory is low on free space")]
    DiskLow,
    #[error("no leader can serve linearizable reads and writes")]
    NoLeader,
}

/// Whether this member serves now, leaving out the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    Now,
    /// A leader no quorum confirmed within an election timeout: it can commit nothing and
    /// serve no read, and the members that can will elect another leader. No grace.
    CutOffLeader,
    /// No leader, or a follower far behind. `connected`: it heard from a quorum lately
    /// (counting itself), so an election may soon give it a leader.
    No {
        connected: bool,
    },
}

impl Cluster {
    /// Ready, or why not: Raft runs here, and this member can serve linearizable reads and
    /// writes now, or lost its leader less than the grace period ago (so an election never
    /// empties a load balancer). A member low on disk space leaves the balancer while the
    /// others can carry on, and stays while a quorum is low too, so lookups and removals are
    /// still served (see [`super::disk`]).
    pub fn readiness(&self) -> Result<(), NotReady> {
        if let Some(cause) = self.health.stopped() {
            return Err(NotReady::RaftStopped(cause));
        }
        if self.health.disk_low() && self.nospace_alarm().is_none() {
            return Err(NotReady::DiskLow);
        }
        match self.serving() {
            Serving::Now => Ok(()),
            Serving::No { connected: true } if self.in_grace() => Ok(()),
            _ => Err(NotReady::NoLeader),
        }
    }

    /// [`Cluster::readiness`] is `Ok`.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// This member served (or stopped serving, observed now) less than the grace ago.
    fn in_grace(&self) -> bool {
        let seen = self.leader_seen_ms.load(Ordering::Relaxed);
        seen != u64::MAX
            && self.now_ms().saturating_sub(seen) < self.settings.ready_grace.as_millis() as u64
    }

    fn serving(&self) -> Serving {
        let m = self.raft.metrics();
        let m = m.borrow();
        let voter_ids: Vec<MemberId> = m.membership_config.membership().voter_ids().collect();
        let voters = voter_ids.len();
        match m.current_leader {
            Some(id) if id == self.settings.id => {
                // openraft's own `millis_since_quorum_ack` is only refreshed when its metrics
                // change, so an isolated leader would look healthy forever; our ReadIndex
                // rounds (reads, plus the probe in `watch_leader`) measure it instead.
                let seen = self.quorum_seen_ms.load(Ordering::Relaxed);
                let window = self.settings.election_timeout_max.as_millis() as u64;
                let quorum = voters <= 1
                    || (seen != u64::MAX && self.now_ms().saturating_sub(seen) <= window);
                if quorum {
                    Serving::Now
                } else {
                    Serving::CutOffLeader
                }
            }
            // Not "heard from the leader lately": while openraft still names a leader whose
            // heartbeats stopped, the followers have talked to no one else yet, and making them
            // all unready then would empty the balancer before the election starts.
            Some(_)
                if m.last_log_index
                    .unwrap_or(0)
                    .saturating_sub(m.last_applied.map(|l| l.index).unwrap_or(0))
                    <= 1000 =>
            {
                Serving::Now
            }
            _ => {
                // A member without a leader that has heard from no quorum lately (counting
                // itself) is cut off: it can neither commit nor read, and no election will
                // bring a leader to it soon, so it takes no grace and leaves the balancer at
                // once. Members electing a new leader hear each other's vote requests within
                // the window (`cut_off_after`: the latest an election starts, and its votes).
                let window = self.settings.cut_off_after;
                let others = voter_ids.iter().copied().filter(|id| *id != self.id());
                let heard = self.contacts.heard_within(others, window);
                Serving::No {
                    connected: voters <= 1 || (heard + 1) * 2 > voters,
                }
            }
        }
    }

    /// Records what readiness needs from one observation: when this member last served. The
    /// first observation after it stopped serving counts too, so the grace runs from when the
    /// change was seen. `served`: whether it served at the previous observation.
    fn observe_serving(&self, served: bool) -> bool {
        let serves = self.serving() == Serving::Now;
        if serves || served {
            self.leader_seen_ms.store(self.now_ms(), Ordering::Relaxed);
        }
        serves
    }

    /// Records that a quorum just confirmed this member's leadership.
    pub(crate) fn note_quorum(&self) {
        self.quorum_seen_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Keeps readiness truthful: observes every change of openraft's metrics (and at least
    /// every quarter election timeout), and, as leader, runs a ReadIndex round (shared with any
    /// reads in flight) every quarter election timeout to prove a quorum still follows while
    /// nobody reads.
    pub async fn watch_leader(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut metrics = self.raft.metrics();
        let probe_every = self.settings.election_timeout_max / 4;
        let mut last_probe: Option<Instant> = None;
        let mut led = false;
        let mut served = false;
        loop {
            // Winning an election is a quorum's confirmation too: until its first round, a new
            // leader must not look like one that lost its quorum.
            let leads = self.leader() == Leader::Me;
            if leads && !led {
                self.note_quorum();
            }
            led = leads;
            // Probe on a timer only: a round changes openraft's metrics, so probing on every
            // metrics change would run rounds back to back (measured: half a core at idle).
            let due = last_probe.is_none_or(|t| t.elapsed() >= probe_every)
                && !self.stepping_down.load(Ordering::Relaxed);
            if due && self.leader() == Leader::Me {
                let deadline = Instant::now() + self.settings.election_timeout_max;
                let _ = self.reads.join(deadline).await;
                last_probe = Some(Instant::now());
            }
            served = self.observe_serving(served);
            if self.is_ready() {
                if let Some(refused) = self.no_quorum_log.succeeded() {
                    tracing::info!(refused, "quorum regained: serving reads and writes");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(probe_every) => {}
            }
        }
    }
}
