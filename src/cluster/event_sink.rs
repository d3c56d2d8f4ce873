//! Turns Grid events into idempotent Raft proposals.
//!
//! Every member subscribes to the bus and proposes every event it receives, each carrying the
//! event's id; `apply()` skips an id it has already applied, so an event seen by three members
//! takes effect once, and still takes effect while the leader is down or changing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Cluster;
use crate::events::GridEvent;
use crate::raft::{now_nanos, Op, Proposal};
use crate::session::RemovalReason;

/// How long an event keeps being retried when no leader can commit it.
const EVENT_DEADLINE: Duration = Duration::from_secs(300);
/// Events proposed concurrently (Selenium's own listeners also run on a pool).
const IN_FLIGHT: usize = 64;

pub fn proposal(event: &GridEvent) -> Proposal {
    let (event_id, op) = match event {
        GridEvent::SessionClosed {
            event_id,
            session_id,
            reason,
        } => (
            *event_id,
            Op::Remove {
                id: session_id.clone(),
                reason: *reason,
            },
        ),
        GridEvent::NodeRemoved { event_id, node_uri } => (
            *event_id,
            Op::RemoveByUri {
                uri: node_uri.clone(),
                reason: RemovalReason::NodeRemoved,
            },
        ),
        GridEvent::NodeRestarted { event_id, node_uri } => (
            *event_id,
            Op::RemoveByUri {
                uri: node_uri.clone(),
                reason: RemovalReason::NodeRestarted,
            },
        ),
    };
    Proposal {
        at: now_nanos(),
        event_id: Some(event_id),
        op,
    }
}

/// Proposes each received event until it is committed (or the deadline passes).
pub async fn run(
    cluster: Arc<Cluster>,
    mut rx: mpsc::Receiver<GridEvent>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let cluster = cluster.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                let p = proposal(&event);
                let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
                loop {
                    match cluster.write(p.clone()).await {
                        Ok(applied) => {
                            tracing::debug!(event = event.name(), id = %event.event_id(), changed = applied.changed, duplicate = applied.duplicate, "event applied");
                            return;
                        }
                        Err(e @ super::ProxyError::TooLarge { .. }) => {
                            tracing::error!(event = event.name(), id = %event.event_id(), error = %e, "event dropped: too large for the log");
                            return;
                        }
                        Err(e) if tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() => {
                            tracing::warn!(event = event.name(), id = %event.event_id(), error = %e, "event not committed yet; retrying");
                        }
                        Err(e) => {
                            tracing::error!(event = event.name(), id = %event.event_id(), error = %e, "event dropped: no leader committed it");
                            return;
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }
}
