//! Group commit for Grid writes on the leader: every add and remove waiting at one moment is
//! proposed as a single log entry ([`Op::Batch`]), so one fsync on each member covers all of
//! them.
//!
//! Why here and not in the log store: openraft 0.9's core awaits each append's flush callback
//! before it handles the next request (`RaftCore::append_to_log`), so entries proposed one by one
//! are fsynced one by one, however many writers wait. A writer joins the queue; a single task
//! takes everything queued (once one of the [`IN_FLIGHT`] slots is free, so that a batch grows
//! while the previous one is on disk) and proposes it. Only Grid adds and removes without an
//! event id are batched: their callers need no per-write result beyond success, and every
//! operation is idempotent, so a batch retried after an unknown outcome is harmless.

use std::sync::{Arc, Weak};

use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use super::error::{enqueue, Error, Queue, Stopped};
use super::Cluster;
use crate::map::{Applied, Op, Proposal};

/// Batches proposed at once; two let one batch be appended while the previous one replicates.
pub const IN_FLIGHT: usize = 2;
/// Upper bound on writes in one entry.
pub const MAX_BATCH: usize = 512;
/// Upper bound on a batch's (estimated) encoded size: a batch stops growing once it passes this,
/// so it is at most this plus one write. What must hold is that a batch fits one log record:
/// `cluster` refuses a proposal over `map::MAX_PROPOSAL_BYTES` (16 MiB, a quarter of the
/// segment log's `MAX_RECORD`), and one write is at most `grid.max-record-bytes` (8 MiB at
/// most). Kept far below that, a batch is also a small part of a replication request (at most
/// 1 MiB of entries, `raft::log_store::MAX_APPEND_BYTES`), so a request carries several.
pub const MAX_BATCH_BYTES: usize = 96 * 1024;

type Reply = oneshot::Sender<Result<Applied, Error>>;

pub struct WriteBatcher {
    /// Bounded (`grid.max-pending-writes`): writes that arrive while it is full are refused at
    /// once. At most `IN_FLIGHT` batches of `MAX_BATCH` writes are taken out of it at a time.
    tx: mpsc::Sender<(Proposal, Reply)>,
    limit: usize,
    full: IntCounter,
}

impl WriteBatcher {
    pub fn spawn(cluster: Weak<Cluster>, limit: usize, full: IntCounter) -> Self {
        let (tx, rx) = mpsc::channel(limit);
        tokio::spawn(run(cluster, rx).in_current_span());
        WriteBatcher { tx, limit, full }
    }

    /// Whether `p` may share a log entry with other writes.
    pub fn accepts(p: &Proposal) -> bool {
        p.event_id.is_none() && matches!(p.op, Op::Add(_) | Op::Remove { .. })
    }

    /// Commits `p` together with every other write waiting now. The result is the batch's.
    pub async fn join(&self, p: Proposal) -> Result<Applied, Error> {
        let (reply, rx) = oneshot::channel();
        enqueue(&self.tx, (p, reply), Queue::Write, self.limit, &self.full)?;
        rx.await
            .unwrap_or_else(|_| Err(Error::Stopped(Stopped::Batcher(Queue::Write))))
    }
}

async fn run(cluster: Weak<Cluster>, mut rx: mpsc::Receiver<(Proposal, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut bytes = encoded_size(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    bytes += encoded_size(&more.0);
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(
            async move {
                let _slot = slot;
                commit_batch(&cluster, batch).await;
            }
            .in_current_span(),
        );
    }
}

/// About the size of `p` in the log (bincode writes strings as length plus bytes).
fn encoded_size(p: &Proposal) -> usize {
    match &p.op {
        Op::Add(s) => {
            64 + s.id.len()
                + s.uri.len()
                + s.start.len()
                + s.capabilities.len()
                + s.stereotype.len()
        }
        Op::Remove { id, .. } => 48 + id.len(),
        _ => 64,
    }
}

async fn commit_batch(cluster: &Cluster, batch: Vec<(Proposal, Reply)>) {
    let (mut proposals, replies): (Vec<Proposal>, Vec<Reply>) = batch.into_iter().unzip();
    let proposal = if proposals.len() == 1 {
        proposals.pop().expect("one proposal")
    } else {
        Proposal {
            at: proposals.iter().map(|p| p.at).max().unwrap_or_default(),
            event_id: None,
            op: Op::Batch(proposals),
        }
    };
    let result = cluster
        .client_write(proposal, cluster.settings.write_timeout)
        .await;
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}
