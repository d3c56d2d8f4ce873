//! Turns Grid events into idempotent Raft proposals.
//!
//! Every member subscribes to the bus and proposes every event it receives, so an event still
//! takes effect while the leader is down or changing. Each proposal carries the event's id and
//! this member's applied log index when the subscriber received the event; `apply()` removes
//! only sessions added by then, so the up to three copies of an event, and any retry however
//! late, remove what the event meant and never a session added after it (`map`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Cluster;
use crate::events::{GridEvent, Received};
use crate::map::{now_nanos, Op, Proposal};
use crate::session::RemovalReason;
use crate::telemetry::repeat::Repeated;

/// How long an event keeps being retried when no leader can commit it.
const EVENT_DEADLINE: Duration = Duration::from_secs(300);
/// Events proposed concurrently (Selenium's own listeners also run on a pool).
const IN_FLIGHT: usize = 64;
/// The first pause before an event's proposal is tried again, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The proposal for `event`, received when this member had applied the log up to `applied`.
pub fn proposal(event: &GridEvent, applied: u64) -> Proposal {
    let by_uri = |uri: &String, reason| Op::RemoveByUriAddedBy {
        uri: uri.clone(),
        reason,
        added_by: applied,
    };
    let (event_id, op) = match event {
        GridEvent::SessionClosed {
            event_id,
            session_id,
            reason,
        } => (
            *event_id,
            Op::RemoveAddedBy {
                id: session_id.clone(),
                reason: *reason,
                added_by: applied,
            },
        ),
        GridEvent::NodeRemoved { event_id, node_uri } => {
            (*event_id, by_uri(node_uri, RemovalReason::NodeRemoved))
        }
        GridEvent::NodeRestarted { event_id, node_uri } => {
            (*event_id, by_uri(node_uri, RemovalReason::NodeRestarted))
        }
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
    mut rx: mpsc::Receiver<Received>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    // One record of failed attempts for every event in flight: an outage is logged once, then
    // every `REPEAT_EVERY` with a count, not once per event and attempt.
    let failures = Arc::new(Repeated::default());
    loop {
        let Received { event, mark } = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let cluster = cluster.clone();
        let shutdown = shutdown.clone();
        let failures = failures.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                commit(&cluster, &event, mark, &failures, &shutdown).await;
            }
            .in_current_span(),
        );
    }
}

/// Proposes one event until it commits, backing off between attempts (a member without a
/// quorum refuses at once, so retrying without a pause would spin), for at most
/// [`EVENT_DEADLINE`].
async fn commit(
    cluster: &Cluster,
    event: &GridEvent,
    mark: u64,
    failures: &Repeated,
    shutdown: &CancellationToken,
) {
    let p = proposal(event, mark);
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    let mut backoff = RETRY_FIRST;
    loop {
        match cluster.propose(p.clone()).await {
            Ok(applied) => {
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(failed, "events commit again");
                }
                tracing::debug!(event = event.name(), id = %event.event_id(), changed = applied.changed, duplicate = applied.duplicate, "event applied");
                return;
            }
            Err(e @ super::Error::TooLarge { .. }) => {
                tracing::error!(event = event.name(), id = %event.event_id(), error = %e, "event dropped: too large for the log");
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() => {
                if let Some(failures) = failures.failed() {
                    tracing::warn!(failures, error = %e, "events not committed yet; retrying with backoff");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(event = event.name(), id = %event.event_id(), error = %e, "event dropped: no leader committed it");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Lookup, SessionMap};
    use crate::session::Session;

    /// A map fed one log entry at a time, as the state machine does.
    #[derive(Default)]
    struct Log {
        map: SessionMap,
        index: u64,
    }

    impl Log {
        fn append(&mut self, p: &Proposal) -> u32 {
            self.index += 1;
            self.map.apply_entry(self.index, p).changed
        }

        fn add(&mut self, id: &str, uri: &str) {
            self.append(&Proposal {
                at: 1,
                event_id: None,
                op: Op::add(Session {
                    id: id.into(),
                    uri: uri.into(),
                    start: "2024-05-01T10:20:30Z".into(),
                    capabilities: "{\n}".into(),
                    stereotype: "{\n}".into(),
                }),
            });
        }

        fn live(&self, id: &str) -> bool {
            matches!(self.map.get(id), Lookup::Found(_))
        }
    }

    fn node_restarted(uri: &str) -> GridEvent {
        GridEvent::NodeRestarted {
            event_id: uuid::Uuid::new_v4(),
            node_uri: uri.into(),
        }
    }

    #[test]
    fn a_late_copy_of_node_restarted_spares_sessions_added_since() {
        let node = "http://u:5555";
        let mut log = Log::default();
        log.add("old", node);
        let restarted = node_restarted(node);
        // Received now: the copy a member proposes, and may propose again much later.
        let copy = proposal(&restarted, log.index);
        assert_eq!(log.append(&copy), 1);
        log.add("new", node);
        for i in 0..1100 {
            let closed = GridEvent::SessionClosed {
                event_id: uuid::Uuid::new_v4(),
                session_id: format!("other-{i}"),
                reason: RemovalReason::QuitCommand,
            };
            log.append(&proposal(&closed, log.index));
        }
        // The same event proposed again, much later (a member's retry, or a slow member).
        log.append(&copy);
        assert!(
            log.live("new"),
            "a session added after the event was removed by a late copy of it"
        );
    }

    #[test]
    fn a_bus_duplicate_received_after_a_new_session_spares_it() {
        // The bus delivers the same event id again after the session was added (a member that
        // had forgotten the id, or a publisher firing twice): the first copy bounds it.
        let node = "http://u:5555";
        let mut log = Log::default();
        log.add("old", node);
        let restarted = node_restarted(node);
        assert_eq!(log.append(&proposal(&restarted, log.index)), 1);
        log.add("new", node);
        assert_eq!(log.append(&proposal(&restarted, log.index)), 0);
        assert!(log.live("new"));
    }

    #[test]
    fn each_copy_removes_what_its_member_had_applied_when_it_heard_the_event() {
        let node = "http://u:5555";
        let mut log = Log::default();
        log.add("a", node);
        // Member 2 receives the event before it has applied the add of `b`, which is
        // committed already; member 1 has applied it.
        let member_2_applied = log.index;
        log.add("b", node);
        let member_1_applied = log.index;
        let restarted = node_restarted(node);
        assert_eq!(log.append(&proposal(&restarted, member_2_applied)), 1);
        assert!(log.live("b"), "member 2's copy cannot know of b");
        // Member 1's copy of the same event, applied next, covers it.
        assert_eq!(log.append(&proposal(&restarted, member_1_applied)), 1);
        assert!(!log.live("b"));
    }

    #[test]
    fn session_closed_spares_a_session_re_added_after_it() {
        let mut log = Log::default();
        log.add("s", "http://u:5555");
        let closed = GridEvent::SessionClosed {
            event_id: uuid::Uuid::new_v4(),
            session_id: "s".into(),
            reason: RemovalReason::Timeout,
        };
        let copy = proposal(&closed, log.index);
        assert_eq!(log.append(&copy), 1);
        log.add("s", "http://v:5555");
        assert_eq!(log.append(&copy), 0);
        assert!(log.live("s"));
    }
}
