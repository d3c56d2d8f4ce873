//! ReadIndex batching: one leadership-confirming quorum round serves every read that was
//! waiting when the round started.
//!
//! A read joins the queue ([`ReadBatcher::join`]), then a single task takes everything queued,
//! runs one round, and answers all of them with the same index, or the round's error. Reads
//! that arrive during a round wait for the next one, so each read's round starts after the
//! read itself did: that is what makes the answer linearizable. A round goes through
//! `Cluster::at_leader`: on the leader it is a heartbeat round (`Raft::get_read_log_id`), on
//! a follower `Cluster::ask_read_index`, one request to the leader carrying the follower's
//! vote, which the leader may answer at once ([`Cluster::answer_read_index`]). While followers
//! are reading too, a leader's reads usually need no round at all (`Cluster::read_barrier`,
//! `super::read_proof`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

use super::error::{enqueue, Error, Op, Queue, Stopped};
use super::forward::{Backoff, Deadline};
use super::Cluster;

type Waiter = oneshot::Sender<Result<u64, Error>>;

struct Request {
    deadline: Instant,
    reply: Waiter,
}

pub struct ReadBatcher {
    /// Bounded (`grid.max-pending-reads`): reads that arrive while it is full are refused at
    /// once instead of piling up while rounds fail.
    tx: mpsc::Sender<Request>,
    limit: usize,
    full: IntCounter,
    pub stats: Arc<RoundStats>,
}

/// Counters for `/metrics`: rounds by how leadership was confirmed, and the requests they
/// served. Registered by the node with [`RoundStats::register`].
#[derive(Debug, Clone)]
pub struct RoundStats {
    rounds: IntCounterVec,
    /// Rounds of heartbeats run here as leader.
    pub heartbeats: IntCounter,
    /// Rounds run here as follower by asking the leader.
    pub forwarded: IntCounter,
    /// Followers' requests that confirmed this leader by themselves.
    pub by_request: IntCounter,
    /// Reads here as leader that a follower's later request confirmed, with no round.
    pub by_follower: IntCounter,
    /// Requests answered by rounds run here.
    pub reads: IntCounter,
}

impl RoundStats {
    fn new() -> Self {
        let rounds = IntCounterVec::new(
            Opts::new(
                "gridraft_read_index_rounds_total",
                "ReadIndex rounds: heartbeats (a leader's round), forwarded (a follower asked the \
                 leader), request (a follower's request confirmed the leader by itself), follower \
                 (a read on the leader confirmed by a follower's later request, no round)",
            ),
            &["kind"],
        )
        .expect("static metric options are valid");
        RoundStats {
            heartbeats: rounds.with_label_values(&["heartbeats"]),
            forwarded: rounds.with_label_values(&["forwarded"]),
            by_request: rounds.with_label_values(&["request"]),
            by_follower: rounds.with_label_values(&["follower"]),
            reads: IntCounter::new(
                "gridraft_read_index_reads_total",
                "Reads served by ReadIndex rounds, here or for followers",
            )
            .expect("static metric options are valid"),
            rounds,
        }
    }

    pub fn register(&self, registry: &Registry) {
        for c in [
            Box::new(self.rounds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(self.reads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
    }
}

impl ReadBatcher {
    pub fn spawn(cluster: Weak<Cluster>, limit: usize, full: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(limit);
        let stats = Arc::new(RoundStats::new());
        tokio::spawn(run(cluster, rx, stats.clone()));
        ReadBatcher {
            tx,
            limit,
            full,
            stats,
        }
    }

    /// An index such that every write acknowledged before this call is at or below it.
    pub async fn join(&self, deadline: Instant) -> Result<u64, Error> {
        let (reply, rx) = oneshot::channel();
        enqueue(
            &self.tx,
            Request { deadline, reply },
            Queue::Read,
            self.limit,
            &self.full,
        )?;
        rx.await
            .unwrap_or_else(|_| Err(Error::Stopped(Stopped::Batcher(Queue::Read))))
    }
}

/// Rounds run at once. One: a read that arrives during a round waits for it to end and goes in
/// the next, with everything else that arrived meanwhile. A second round in flight (the next one
/// starting at once) would answer a lone read sooner only while rounds are long; since a
/// follower's request confirms the leader by itself (see `Cluster::answer_read_index`), rounds
/// are short, and a second slot would only make them smaller and more numerous: measured in
/// docs/benchmarks.md.
const ROUNDS_IN_FLIGHT: usize = 1;

async fn run(cluster: Weak<Cluster>, mut rx: mpsc::Receiver<Request>, stats: Arc<RoundStats>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ROUNDS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        // The round may take as long as the most patient read allows.
        let deadline = batch
            .iter()
            .map(|r| r.deadline)
            .max()
            .expect("batch is never empty");
        stats.reads.inc_by(batch.len() as u64);
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = round(&cluster, &stats, deadline).await;
            drop(cluster);
            // Every read gets the round's own outcome, its cause included.
            for r in batch {
                let _ = r.reply.send(result.clone());
            }
        });
    }
}

const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(5),
    max: Duration::from_millis(100),
};

/// One round: a read index confirmed by a quorum, here as leader or by asking the leader.
async fn round(cluster: &Cluster, stats: &RoundStats, deadline: Instant) -> Result<u64, Error> {
    // The most patient read's deadline; each read was given the read timeout.
    let deadline = Deadline {
        at: deadline,
        timeout: cluster.settings.read_timeout,
    };
    cluster
        .at_leader(
            Op::Read,
            deadline,
            BACKOFF,
            |remaining| Box::pin(confirm_leadership(cluster, stats, remaining)),
            |addr, remaining| {
                stats.forwarded.inc();
                Box::pin(cluster.ask_read_index(addr, remaining))
            },
        )
        .await
}

/// A heartbeat round on this member as leader: its commit index once a quorum confirmed it
/// still leads.
async fn confirm_leadership(
    cluster: &Cluster,
    stats: &RoundStats,
    remaining: Duration,
) -> Result<u64, Error> {
    // Every round would fail, and openraft logs each of its failed heartbeats: send none.
    // `at_leader` refuses once the quorum has been gone for an election timeout; until then
    // wait (replication, with its own backoff, finds out when a member answers again).
    if cluster.quorum_unreachable() {
        return Err(Error::NoQuorum);
    }
    stats.heartbeats.inc();
    // Bounded by an election timeout: a leader cut off from its quorum gets no answer to its
    // heartbeats, and once it learns of a newer leader the round it started may never
    // complete. The next attempt looks at who leads again.
    let bound = remaining.min(cluster.settings.election_timeout_max);
    match tokio::time::timeout(bound, cluster.raft.get_read_log_id()).await {
        Ok(Ok((read, _applied))) => {
            cluster.note_quorum();
            Ok(read.map(|l| l.index).unwrap_or(0))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(Error::NotLeader {
                leader: f.leader_id,
            })
        }
        // Not confirmed by a quorum (`QuorumNotEnough`): retried until the deadline.
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(Error::NoQuorum)
        }
        Ok(Err(RaftError::Fatal(e))) => Err(Error::fatal(e)),
        Err(_) => Err(Error::Timeout {
            op: Op::Read,
            after: bound,
            last: None,
        }),
    }
}
