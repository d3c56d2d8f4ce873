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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::{Cluster, Leader, ProxyError};

type Waiter = oneshot::Sender<Result<u64, ProxyError>>;

struct Request {
    deadline: Instant,
    reply: Waiter,
}

pub struct ReadIndexBatcher {
    tx: mpsc::UnboundedSender<Request>,
    pub stats: Arc<RoundStats>,
}

/// Counts for `/metrics`: rounds by how leadership was confirmed, and the requests they served.
#[derive(Debug, Default)]
pub struct RoundStats {
    /// Rounds of heartbeats run here as leader.
    pub heartbeats: AtomicU64,
    /// Rounds run here as follower by asking the leader.
    pub forwarded: AtomicU64,
    /// Followers' requests that confirmed this leader by themselves.
    pub by_request: AtomicU64,
    /// Requests answered by rounds run here.
    pub reads: AtomicU64,
}

impl ReadIndexBatcher {
    pub fn spawn(cluster: Weak<Cluster>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(RoundStats::default());
        tokio::spawn(run(cluster, rx, stats.clone()));
        ReadIndexBatcher { tx, stats }
    }

    /// An index such that every write acknowledged before this call is at or below it.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64, ProxyError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { deadline, reply })
            .map_err(|_| ProxyError::Stopped("read batcher stopped".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(ProxyError::Stopped("read batcher stopped".into())))
    }
}

/// Rounds run at once. One: a read that arrives during a round waits for it to end and goes in
/// the next, with everything else that arrived meanwhile. Two in flight (the next round starting
/// at once) answered a lone read sooner when an earlier build kept the CPU idle between rounds,
/// but once a follower's request confirms the leader by itself (see
/// `Cluster::follower_read_index`) rounds are short, and the second slot only made them smaller
/// and more numerous: measured in docs/benchmarks.md.
const ROUNDS_IN_FLIGHT: usize = 1;

async fn run(
    cluster: Weak<Cluster>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<RoundStats>,
) {
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
        stats.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = round(&cluster, &stats, deadline).await;
            drop(cluster);
            for r in batch {
                let answer = match &result {
                    Ok(i) => Ok(*i),
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
            Leader::Me => {
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
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
            }
            Leader::Other { id, addr } => {
                // Read after every read in this batch arrived (see `follower_read_index`).
                let from = cluster.read_index_from().await;
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
                let call = cluster.peers.read_index(&addr, from.as_ref(), remaining);
                match cluster.unless_leader_changes(id, call).await {
                    Some(Ok(index)) => return Ok(index),
                    Some(Err(e)) => {
                        tracing::debug!(leader = id, error = %e, "read index from leader failed")
                    }
                    None => tracing::debug!(leader = id, "leader changed; asking the new one"),
                }
            }
            Leader::Unknown => {}
        }
        cluster.pause(backoff, deadline).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}
