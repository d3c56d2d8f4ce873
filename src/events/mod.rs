//! The Selenium Grid event-bus subscriber (docs/compatibility.md#event-bus).
//!
//! Every member connects one ZeroMQ SUB socket to the bus's XPUB (`--publish-events`), turns the
//! three events the session map cares about (`session-closed`, `node-removed`,
//! `node-restarted`) into [`GridEvent`]s and hands them to the caller over a channel. It owns the
//! socket, the receiving rules (docs/compatibility.md#receiving-rules) and the bus metrics; it
//! must not touch Raft or session state: mapping events to commands (and making them idempotent
//! by `event_id`) is the caller's job.
//!
//! Layout:
//! * `frame`: [`decode`], the pure parser of one 4-frame message (tests in `frame_tests.rs`).
//! * `recent`: [`RecentIds`], the recently-seen event ids.
//! * `subscriber`: [`spawn_subscriber`], the blocking thread: poll, decode, forward, track the
//!   connection.
//! * `sockets`: the libzmq SUB socket (heartbeats, reconnect, frame size limit, receive
//!   high-water mark) and its monitor.
//! * `metrics`: [`EventMetrics`], the prometheus series.

mod frame;
mod metrics;
mod recent;
mod sockets;
mod subscriber;

use std::fmt;

use crate::session::RemovalReason;

pub use frame::{decode, Decoded, Rejection};
pub use metrics::EventMetrics;
pub use recent::{RecentIds, RECENT_IDS};
pub use subscriber::spawn_subscriber;

/// Default largest frame accepted from the bus (`[events] max-frame-bytes`). Real events are a
/// few KiB; a `session-closed` carries the session's capabilities, which the Grid's own request
/// limit keeps far below this.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// Default receive high-water mark, in messages (`[events] receive-hwm`).
pub const DEFAULT_RECEIVE_HWM: u32 = 1000;

/// Where the bus is and how its messages are signed. Mirrors Selenium's own flags so an operator
/// can copy them from the other Grid components.
#[derive(Clone, PartialEq, Eq)]
pub struct EventBusSettings {
    /// The bus's XPUB address we connect our SUB socket to, Selenium's `--publish-events`,
    /// e.g. `tcp://127.0.0.1:4442`.
    pub publish_events: String,
    /// Selenium's `--subscribe-events` (the bus's XSUB). Optional and unused: the session map
    /// only receives (docs/compatibility.md#sockets), but operators pass both flags to every
    /// component.
    pub subscribe_events: Option<String>,
    /// Selenium's registration secret; default `""`.
    pub registration_secret: String,
    /// libzmq's `ZMQ_MAXMSGSIZE`: a frame larger than this makes libzmq drop the connection
    /// before the frame is buffered (the subscriber then reconnects).
    pub max_frame_bytes: usize,
    /// libzmq's `ZMQ_RCVHWM`: messages queued for this member before libzmq stops reading
    /// from the bus (the bus then drops what it cannot send us).
    pub receive_hwm: u32,
}

// Hand-written so the registration secret never reaches a log line.
impl fmt::Debug for EventBusSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBusSettings")
            .field("publish_events", &self.publish_events)
            .field("subscribe_events", &self.subscribe_events)
            .field("registration_secret", &"<redacted>")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("receive_hwm", &self.receive_hwm)
            .finish()
    }
}

/// An accepted event as handed to the caller, with the caller's progress mark read when the
/// event was decoded (see [`spawn_subscriber`]); the session map uses its applied log index, so
/// an event acts only on what the member had applied when it heard of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub event: GridEvent,
    pub mark: u64,
}

/// An accepted event, already authenticated and deduplicated against this member's recent ids.
///
/// `event_id` is the bus's UUID; the same event reaches every member, so Raft commands built
/// from it must be idempotent by this id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridEvent {
    SessionClosed {
        event_id: uuid::Uuid,
        session_id: String,
        reason: RemovalReason,
    },
    NodeRemoved {
        event_id: uuid::Uuid,
        node_uri: String,
    },
    NodeRestarted {
        event_id: uuid::Uuid,
        node_uri: String,
    },
}

impl GridEvent {
    /// The bus-assigned id (frame 3).
    pub fn event_id(&self) -> uuid::Uuid {
        match self {
            Self::SessionClosed { event_id, .. }
            | Self::NodeRemoved { event_id, .. }
            | Self::NodeRestarted { event_id, .. } => *event_id,
        }
    }

    /// The wire name (frame 1), also the `kind` label of accepted messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SessionClosed { .. } => frame::SESSION_CLOSED,
            Self::NodeRemoved { .. } => frame::NODE_REMOVED,
            Self::NodeRestarted { .. } => frame::NODE_RESTARTED,
        }
    }
}
