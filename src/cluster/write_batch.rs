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

use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use super::Cluster;
use crate::client::Reject;
use crate::raft::{Applied, Op, Proposal};

/// Batches proposed at once; two let one batch be appended while the previous one replicates.
pub const IN_FLIGHT: usize = 2;
/// Upper bound on writes in one entry (a few MiB with real sessions).
pub const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<Applied, Reject>>;

pub struct WriteBatcher {
    tx: mpsc::UnboundedSender<(Proposal, Reply)>,
}

impl WriteBatcher {
    pub fn spawn(cluster: Weak<Cluster>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(cluster, rx).in_current_span());
        WriteBatcher { tx }
    }

    /// Whether `p` may share a log entry with other writes.
    pub fn accepts(p: &Proposal) -> bool {
        p.event_id.is_none() && matches!(p.op, Op::Add(_) | Op::Remove { .. })
    }

    /// Commits `p` together with every other write waiting now. The result is the batch's.
    pub async fn submit(&self, p: Proposal) -> Result<Applied, Reject> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((p, reply))
            .map_err(|_| Reject::Failed("write batcher stopped".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(Reject::Failed("write batcher stopped".into())))
    }
}

async fn run(cluster: Weak<Cluster>, mut rx: mpsc::UnboundedReceiver<(Proposal, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(
            async move {
                let _slot = slot;
                commit(&cluster, batch).await;
            }
            .in_current_span(),
        );
    }
}

async fn commit(cluster: &Cluster, batch: Vec<(Proposal, Reply)>) {
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
        .propose(proposal, cluster.settings.write_timeout)
        .await;
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}
