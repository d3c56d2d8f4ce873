//! What a member knows about its quorum, so that a member that cannot serve refuses reads and
//! writes at once instead of holding them for the whole read or write timeout, and stops
//! sending ReadIndex rounds to members that cannot answer.
//!
//! "At once" means: a leader refuses once no quorum has confirmed it for an election timeout
//! (`raft.election-timeout-max`, the same test that takes it out of the balancer); a member
//! without a leader refuses once it has heard from no quorum (counting itself) for longer than
//! the latest an election can begin after its leader died, with room for the vote requests
//! (`config::cluster::cut_off_after`, about three election timeouts). During an election the
//! members hear each other's vote requests, so neither holds: requests wait for the new leader.

use std::sync::atomic::Ordering;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::Cluster;
use crate::raft::MemberId;

impl Cluster {
    /// This member leads, no quorum has confirmed it within an election timeout, and the last
    /// requests to a majority of the other voters failed. Both: a leader just elected has not
    /// run a round yet, and one whose rounds are merely slow still reaches its followers.
    pub fn quorum_lost(&self) -> bool {
        let seen = self.quorum_seen_ms.load(Ordering::Relaxed);
        let now_ms = self.started.elapsed().as_millis() as u64;
        let window = self.settings.election_timeout_max.as_millis() as u64;
        let stale = seen == u64::MAX || now_ms.saturating_sub(seen) > window;
        stale && self.quorum_unreachable()
    }

    /// This member has heard from no quorum (counting itself) within `cut_off_after` (about
    /// three election timeouts): no election that could give it a leader is under way.
    pub fn cut_off(&self) -> bool {
        let peers = self.voter_peers();
        let window = self.settings.cut_off_after;
        let heard = self.contacts.heard_within(peers.iter().copied(), window);
        !peers.is_empty() && (heard + 1) * 2 <= peers.len() + 1
    }

    /// So many of the other voters are unreachable (see `Contacts::unreachable`) that the rest,
    /// with this member, make no quorum: a ReadIndex round now would only fail (and openraft logs every such
    /// attempt). Replication keeps trying them with its backoff, and their first answer or
    /// request clears this.
    pub fn quorum_unreachable(&self) -> bool {
        let peers = self.voter_peers();
        let failing = self.contacts.unreachable(peers.iter().copied());
        let reachable = peers.len() - failing;
        !peers.is_empty() && (reachable + 1) * 2 <= peers.len() + 1
    }

    /// The voters other than this member.
    fn voter_peers(&self) -> Vec<MemberId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.settings.id)
            .collect()
    }
}

/// `gridraft_queue_full_total{queue}`: requests refused because a queue was full.
#[derive(Debug, Clone)]
pub struct QueueFullCounters {
    all: IntCounterVec,
    pub write: IntCounter,
    pub read: IntCounter,
}

impl QueueFullCounters {
    pub fn new() -> Self {
        let all = IntCounterVec::new(
            Opts::new(
                "gridraft_queue_full_total",
                "Requests refused because the write or read queue was full",
            ),
            &["queue"],
        )
        .expect("static metric options are valid");
        QueueFullCounters {
            write: all.with_label_values(&["write"]),
            read: all.with_label_values(&["read"]),
            all,
        }
    }

    pub fn register(&self, registry: &Registry) {
        registry
            .register(Box::new(self.all.clone()))
            .expect("metric names are unique");
    }
}

impl Default for QueueFullCounters {
    fn default() -> Self {
        Self::new()
    }
}
