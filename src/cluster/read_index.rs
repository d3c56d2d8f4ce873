//! ReadIndex batching: one leadership-confirming quorum round serves every read that was
//! waiting when the round started.
//!
//! A read joins the queue, then a single task takes everything queued, runs one round, and
//! answers all of them with the same index. Reads that arrive during a round wait for the next
//! one, so each read's round starts after the read itself did: that is what makes the answer
//! linearizable. On the leader a round is `Raft::get_read_log_id` (heartbeats to a quorum); on
//! a follower it is one request to the leader, carrying the follower's vote. When leader and
//! follower make a quorum the leader answers it at once (`Cluster::follower_read_index`);
//! otherwise it batches the request with its own reads.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

use super::{Cluster, Leader, ProxyError};

type Waiter = oneshot::Sender<Result<u64, ProxyError>>;

struct Request {
    deadline: Instant,
    reply: Waiter,
}

pub struct ReadIndexBatcher {
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
    /// Requests answered by rounds run here.
    pub reads: IntCounter,
}

impl RoundStats {
    fn new() -> Self {
        let rounds = IntCounterVec::new(
            Opts::new(
                "gridraft_read_index_rounds_total",
                "ReadIndex rounds: heartbeats (a leader's round), forwarded (a follower asked the \
                 leader), request (a follower's request confirmed the leader by itself)",
            ),
            &["kind"],
        )
        .expect("static metric options are valid");
        RoundStats {
            heartbeats: rounds.with_label_values(&["heartbeats"]),
            forwarded: rounds.with_label_values(&["forwarded"]),
            by_request: rounds.with_label_values(&["request"]),
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

impl ReadIndexBatcher {
    pub fn spawn(cluster: Weak<Cluster>, limit: usize, full: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(limit);
        let stats = Arc::new(RoundStats::new());
        tokio::spawn(run(cluster, rx, stats.clone()));
        ReadIndexBatcher {
            tx,
            limit,
            full,
            stats,
        }
    }

    /// An index such that every write acknowledged before this call is at or below it.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, ProxyError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request { deadline, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.full.inc();
                    ProxyError::QueueFull {
                        queue: "read",
                        key: "grid.max-pending-reads",
                        limit: self.limit,
                    }
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ProxyError::Stopped("read batcher stopped".into())
                }
            })?;
        rx.await
            .unwrap_or_else(|_| Err(ProxyError::Stopped("read batcher stopped".into())))
    }
}

/// Rounds run at once. One: a read that arrives during a round waits for it to end and goes in
/// the next, with everything else that arrived meanwhile. A second round in flight (the next one
/// starting at once) would answer a lone read sooner only while rounds are long; since a
/// follower's request confirms the leader by itself (see `Cluster::follower_read_index`), rounds
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
            for r in batch {
                let answer = match &result {
                    Ok(i) => Ok(*i),
                    Err(ProxyError::NoQuorum) => Err(ProxyError::NoQuorum),
                    Err(ProxyError::Stopped(e)) => Err(ProxyError::Stopped(e.clone())),
                    Err(_) => Err(ProxyError::ReadTimeout(
                        r.deadline.saturating_duration_since(Instant::now()),
                    )),
                };
                let _ = r.reply.send(answer);
            }
        });
    }
}

async fn round(
    cluster: &Cluster,
    stats: &RoundStats,
    deadline: Instant,
) -> Result<u64, ProxyError> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ProxyError::ReadTimeout(cluster.settings.read_timeout));
        }
        match cluster.leader() {
            // Bounded by an election timeout: a leader cut off from its quorum gets no answer
            // to its heartbeats, and once it learns of a newer leader the round it started may
            // never complete. The next attempt looks at who leads again.
            // Every round would fail, and openraft logs each of its failed heartbeats: send
            // none. Refuse once the quorum has been gone for an election timeout; until then
            // wait (replication, with its own backoff, finds out when a member answers again).
            Leader::Me if cluster.quorum_unreachable() => {
                if cluster.quorum_lost() {
                    return Err(ProxyError::NoQuorum);
                }
            }
            Leader::Me => {
                stats.heartbeats.inc();
                let confirmed = tokio::time::timeout(
                    remaining.min(cluster.settings.election_timeout_max),
                    cluster.raft.get_read_log_id(),
                )
                .await;
                match confirmed {
                    Ok(Ok((read, _applied))) => {
                        cluster.note_quorum();
                        return Ok(read.map(|l| l.index).unwrap_or(0));
                    }
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {}
                    Ok(Err(RaftError::APIError(e))) => {
                        tracing::debug!(error = %e, "leadership not confirmed")
                    }
                    Ok(Err(RaftError::Fatal(e))) => return Err(ProxyError::Stopped(e.to_string())),
                    Err(_) => {
                        tracing::debug!("leadership not confirmed within an election timeout")
                    }
                }
                if cluster.quorum_lost() {
                    return Err(ProxyError::NoQuorum);
                }
            }
            Leader::Other { id, addr } => {
                // Read after every read in this batch arrived (see `follower_read_index`).
                let from = cluster.read_index_from().await;
                stats.forwarded.inc();
                let call = cluster.peers.read_index(&addr, from.as_ref(), remaining);
                match cluster.unless_leader_changes(id, call).await {
                    Some(Ok(index)) => return Ok(index),
                    Some(Err(e)) => {
                        tracing::debug!(leader = id, error = %e, "read index from leader failed")
                    }
                    None => tracing::debug!(leader = id, "leader changed; asking the new one"),
                }
            }
            Leader::Unknown if cluster.cut_off() => {
                return Err(ProxyError::NoQuorum);
            }
            Leader::Unknown => {}
        }
        cluster.pause(backoff, deadline).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}
