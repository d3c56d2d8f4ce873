//! The read path: [`Cluster::read_barrier`] and the lookups behind it.
//!
//! A read waits for a read index (every write acknowledged before the read is at or below
//! it), confirmed by a quorum, then for the local state machine to apply it. The names:
//! [`Cluster::read_index`] joins this member's batch of reads (`super::read_batch`), whose
//! round confirms the leadership here as leader or calls [`Cluster::ask_read_index`] as
//! follower; the leader's `/peer/read-index` handler calls [`Cluster::answer_read_index`].

use std::time::{Duration, Instant};

use super::error::{Error, Op, Stopped};
use super::forward::{Backoff, Deadline};
use super::Cluster;
use crate::map::{Lookup, SessionMap};
use crate::peer::{LookupKind, PeerLookup, ReadIndexFrom, ReadIndexStamp};
use crate::raft::internals;

/// Leader-mode lookups retry at a steady pace: the lookup itself is cheap to repeat.
const LOOKUP_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(25),
    max: Duration::from_millis(25),
};

impl Cluster {
    /// A linearizable lookup, answered by this member or (read mode `leader`) by the leader.
    pub async fn lookup(&self, id: &str, kind: LookupKind) -> Result<PeerLookup, Error> {
        self.check_running()?;
        if self.settings.read_from_leader {
            let forwarded = self
                .at_leader(
                    Op::Read,
                    Deadline::after(self.settings.read_timeout),
                    LOOKUP_BACKOFF,
                    // This member leads: read here, below.
                    |_| Box::pin(async { Ok(None) }),
                    |addr, remaining| {
                        Box::pin(async move {
                            self.peers
                                .lookup(&addr, id, kind, remaining)
                                .await
                                .map(Some)
                        })
                    },
                )
                .await?;
            if let Some(found) = forwarded {
                return Ok(found);
            }
        }
        self.read_barrier().await?;
        Ok(self.lookup_here(id, kind))
    }

    /// Reads the local state machine; the caller has passed a read barrier.
    pub fn lookup_here(&self, id: &str, kind: LookupKind) -> PeerLookup {
        match self.reader.get(id) {
            Lookup::Found(record) => PeerLookup::Found(match kind {
                LookupKind::Session => record.get_body.clone(),
                LookupKind::Uri => record.uri_body.clone(),
            }),
            Lookup::Removed(t) => PeerLookup::Removed(t.into()),
            Lookup::Missing => PeerLookup::Missing,
        }
    }

    /// Waits until this member's state machine reflects every write acknowledged before the
    /// call: one ReadIndex round (shared with every other read waiting at that moment), or on a
    /// leader a follower's later request, then the local apply catching up to it.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let timeout = self.settings.read_timeout;
        let deadline = Instant::now() + timeout;
        // As leader, while followers are reading too: a follower's request sent after this read
        // arrived confirms it, with no round (see `super::read_proof`).
        let index = match self.proofs.confirmed_after(self.proofs.mark()).await {
            Some(index) => {
                self.reads.stats.by_follower.inc();
                self.reads.stats.reads.inc();
                self.note_quorum();
                index
            }
            None => self.reads.join(deadline).await?,
        };
        // Under a steady read load the state machine has almost always applied the index
        // already: no watcher, timer or clock reading then.
        if *self.applied.borrow() >= index {
            return Ok(());
        }
        let mut applied = self.applied.clone();
        let caught_up = tokio::time::timeout_at(deadline.into(), applied.wait_for(|a| *a >= index))
            .await
            .map(|r| r.is_ok());
        match caught_up {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Stopped(Stopped::StateMachine)),
            Err(_) => Err(Error::Timeout {
                op: Op::Apply,
                after: timeout,
                last: None,
            }),
        }
    }

    /// A read index confirmed by a quorum, batched with this member's other reads. On the
    /// leader (the only caller besides reads: followers' requests and the readiness probe).
    pub async fn read_index(&self) -> Result<u64, Error> {
        self.reads
            .join(Instant::now() + self.settings.read_timeout)
            .await
    }

    /// The leader's answer to a follower's ReadIndex request, and the stamp to send with it.
    /// With the follower's vote (`from`), the request may confirm this leader by itself (see
    /// [`internals::read_index_by_vote`] for why that is safe), and then also this member's own
    /// reads waiting for a request stamped after they arrived (see [`super::read_proof`]);
    /// otherwise, and for a request without a vote (a member of an earlier version), a full
    /// round batched with this member's own reads.
    pub async fn answer_read_index(
        &self,
        from: Option<ReadIndexFrom>,
    ) -> Result<(u64, ReadIndexStamp), Error> {
        let index = match from {
            Some(from) => {
                let confirmed =
                    internals::read_index_by_vote(&self.raft, self.id(), from.id, from.vote)
                        .await
                        .map_err(Error::fatal)?;
                match confirmed {
                    Some(index) => {
                        self.note_quorum();
                        self.reads.stats.by_request.inc();
                        self.reads.stats.reads.inc();
                        if let Some(seen) = from.seen {
                            self.proofs.confirmed(seen, index);
                        }
                        index
                    }
                    None => self.read_index().await?,
                }
            }
            None => self.read_index().await?,
        };
        // Stamped after the index was found: a request carrying this stamp was built later.
        Ok((index, self.proofs.stamp()))
    }

    /// A follower's ReadIndex round: one request to the leader at `addr`, carrying this
    /// member's vote read now, after every read in the batch arrived.
    pub(crate) async fn ask_read_index(
        &self,
        addr: String,
        remaining: Duration,
    ) -> Result<u64, crate::peer::ClientError> {
        let from = self.read_index_request().await;
        let (index, stamp) = self
            .peers
            .ask_read_index(&addr, from.as_ref(), remaining)
            .await?;
        if let Some(stamp) = stamp {
            self.proofs.saw(stamp);
        }
        Ok(index)
    }

    /// This member's id and current vote, for a ReadIndex request to the leader, with the
    /// latest stamp it received, read before the vote.
    pub async fn read_index_request(&self) -> Option<ReadIndexFrom> {
        let seen = self.proofs.seen();
        let vote = internals::vote(&self.raft).await.ok()?;
        Some(ReadIndexFrom {
            id: self.id(),
            vote,
            seen,
        })
    }

    /// As leader: the mark a follower's request must be stamped above to confirm reads that
    /// arrived before this call, and the wait for one (see [`super::read_proof`]). For tests;
    /// [`Cluster::read_barrier`] uses them.
    pub fn proof_mark(&self) -> u64 {
        self.proofs.mark()
    }

    pub async fn confirmed_by_follower(&self, mark: u64) -> Option<u64> {
        self.proofs.confirmed_after(mark).await
    }

    /// A consistent image of the whole map, for a backup: taken after a read barrier, so it
    /// holds every write acknowledged before the call. Also the log index it holds at least
    /// (every session in it was added at or below it) and this member's current term.
    pub async fn backup_image(&self) -> Result<(SessionMap, u64, u64), Error> {
        self.read_barrier().await?;
        let floor = *self.applied.borrow();
        let map = self.reader.snapshot();
        let term = self.raft.metrics().borrow().current_term;
        let index = floor.max(map.index());
        Ok((map, index, term))
    }

    /// Counters of ReadIndex rounds, for `/metrics`.
    pub fn read_stats(&self) -> &super::read_batch::RoundStats {
        &self.reads.stats
    }
}
