//! Decoding one bus message (docs/compatibility.md#event-bus) into a [`Decoded`] outcome.
//!
//! Pure: no I/O, no logging, no clock. The order of the checks is the contract, because it
//! decides which ids get burned and how much work an unauthenticated message costs: name, secret
//! frame, id frame, recently-seen, secret (a wrongly signed message burns its id and is dropped
//! here, its data never parsed), data JSON, remember the id, then the payload. This is Java's
//! order (`UnboundZmqEventBus.PollingRunnable`) except that Java parses the data before
//! it checks the secret; docs/grid.md lists the two cases where that shows.

use serde_json::Value;
use uuid::Uuid;

use super::{GridEvent, RecentIds};
use crate::session::RemovalReason;

pub(super) const SESSION_CLOSED: &str = "session-closed";
pub(super) const NODE_REMOVED: &str = "node-removed";
pub(super) const NODE_RESTARTED: &str = "node-restarted";

/// Names Selenium 4.48.0 fires that the session map ignores. They become `kind` labels
/// as they are; any other name is counted as `other`, so a noisy or hostile publisher cannot
/// create unbounded metric series.
const KNOWN_IGNORED: &[&str] = &[
    "node-added",
    "node-drain-complete",
    "node-drain-started",
    "node-heartbeat",
    "node-rejected",
    "node-status",
    "session-created",
    "session-event",
    "new-session-response",
    "selenium-rejected-event",
];

/// What one multipart message amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Authenticated, new, well-formed: hand it on.
    Event(GridEvent),
    /// An event the session map does not listen to; carries a bounded label (`other` for
    /// unknown names). Normal traffic, never an error, and its id is not remembered.
    Ignored(&'static str),
    /// A repeat of an id among the recently seen: dropped silently.
    Duplicate(Uuid),
    /// Malformed or wrongly signed: dropped, counted and logged by [`Rejection::kind`].
    Rejected(Rejection),
}

/// Why a message was dropped. `kind()` is the metric label and the log-once key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("message has {0} frames, expected 4")]
    FrameCount(usize),
    #[error("secret frame is not a json string")]
    SecretFrame,
    #[error("event id frame is not a uuid")]
    EventId,
    /// The id is not remembered, so a corrected copy with the same id is still accepted.
    #[error("event data is not json (line {line}, column {column})")]
    DataNotJson { line: usize, column: usize },
    /// The id was remembered first: a correctly signed copy with this id will be a duplicate.
    /// The data frame of such a message is never parsed.
    #[error("message is not signed with our registration secret")]
    SecretMismatch,
    #[error("session-closed data is neither an object nor a string")]
    SessionClosedShape,
    #[error("session-closed data has no string sessionId")]
    SessionId,
    #[error("session-closed data has a missing or unknown reason")]
    Reason,
    #[error("{name} data has no string externalUri")]
    ExternalUri { name: &'static str },
}

impl Rejection {
    /// A short, fixed label: the `kind` of `outcome="rejected"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::FrameCount(_) => "frame_count",
            Self::SecretFrame => "secret_frame",
            Self::EventId => "event_id",
            Self::DataNotJson { .. } => "data_json",
            Self::SecretMismatch => "secret_mismatch",
            Self::SessionClosedShape => "session_closed_shape",
            Self::SessionId => "session_id",
            Self::Reason => "reason",
            Self::ExternalUri { .. } => "external_uri",
        }
    }
}

/// Which handled event a name is; `None` for everything we ignore.
#[derive(Clone, Copy)]
enum Handled {
    SessionClosed,
    NodeRemoved,
    NodeRestarted,
}

/// Parses one multipart message (frames as received, exact count) following the receiving
/// rules of docs/compatibility.md#receiving-rules.
///
/// `seen` is updated as Java does: ids of handled messages are remembered even when the secret
/// is wrong or the payload is unusable, but not when a correctly signed frame 4 is not JSON.
pub fn decode(frames: &[Vec<u8>], secret: &str, seen: &mut RecentIds) -> Decoded {
    let [name, secret_frame, id_frame, data] = frames else {
        return Decoded::Rejected(Rejection::FrameCount(frames.len()));
    };
    let handled = match name.as_slice() {
        b"session-closed" => Handled::SessionClosed,
        b"node-removed" => Handled::NodeRemoved,
        b"node-restarted" => Handled::NodeRestarted,
        other => return Decoded::Ignored(ignored_label(other)),
    };
    let Some(ours) = signed_with(secret_frame, secret) else {
        return Decoded::Rejected(Rejection::SecretFrame);
    };
    let Some(event_id) = parse_event_id(id_frame) else {
        return Decoded::Rejected(Rejection::EventId);
    };
    if seen.contains(&event_id) {
        return Decoded::Duplicate(event_id);
    }
    if !ours {
        // A wrongly signed copy burns the id as in Java, but costs no parse.
        seen.remember(event_id);
        return Decoded::Rejected(Rejection::SecretMismatch);
    }
    let data: Value = match serde_json::from_slice(data) {
        Ok(data) => data,
        Err(e) => {
            return Decoded::Rejected(Rejection::DataNotJson {
                line: e.line(),
                column: e.column(),
            })
        }
    };
    seen.remember(event_id);
    let event = match handled {
        Handled::SessionClosed => session_closed(event_id, data),
        Handled::NodeRemoved => node_uri(NODE_REMOVED, data)
            .map(|node_uri| GridEvent::NodeRemoved { event_id, node_uri }),
        Handled::NodeRestarted => node_uri(NODE_RESTARTED, data)
            .map(|node_uri| GridEvent::NodeRestarted { event_id, node_uri }),
    };
    match event {
        Ok(event) => Decoded::Event(event),
        Err(rejection) => Decoded::Rejected(rejection),
    }
}

/// Whether frame 2, a JSON string, is our secret: `None` when it is not a JSON string at all.
///
/// A plain comparison of the decoded string, as Java's `Secret.matches` does, but bounded: no
/// JSON spelling of our secret is longer than every UTF-16 unit written as a `\uXXXX` escape,
/// so a longer frame (whitespace around it aside) is another secret and is not parsed.
fn signed_with(frame: &[u8], secret: &str) -> Option<bool> {
    let json_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = frame
        .iter()
        .position(|b| !json_space(b))
        .unwrap_or(frame.len());
    let end = frame
        .iter()
        .rposition(|b| !json_space(b))
        .map_or(start, |i| i + 1);
    let longest = 2 + 6 * secret.encode_utf16().count();
    if end - start > longest {
        return Some(false);
    }
    let theirs: String = serde_json::from_slice(&frame[start..end]).ok()?;
    Some(theirs == secret)
}

fn ignored_label(name: &[u8]) -> &'static str {
    KNOWN_IGNORED
        .iter()
        .find(|known| known.as_bytes() == name)
        .copied()
        .unwrap_or("other")
}

/// Java's `UUID.fromString` also accepts odd short forms; the bus only ever sends the canonical
/// hyphenated text, and `Uuid` normalises the forms it accepts so dedup compares values.
fn parse_event_id(frame: &[u8]) -> Option<Uuid> {
    std::str::from_utf8(frame)
        .ok()
        .and_then(|text| Uuid::parse_str(text).ok())
}

/// `SessionClosedData`: an object with `sessionId` and an exact `reason` enum name, or the
/// legacy bare string meaning `QUIT_COMMAND`. Other keys are ignored.
fn session_closed(event_id: Uuid, data: Value) -> Result<GridEvent, Rejection> {
    let (session_id, reason) = match data {
        Value::String(session_id) => (session_id, RemovalReason::QuitCommand),
        Value::Object(mut fields) => {
            let Some(Value::String(session_id)) = fields.remove("sessionId") else {
                return Err(Rejection::SessionId);
            };
            let reason = fields
                .get("reason")
                .and_then(Value::as_str)
                .and_then(RemovalReason::from_name)
                .ok_or(Rejection::Reason)?;
            (session_id, reason)
        }
        _ => return Err(Rejection::SessionClosedShape),
    };
    Ok(GridEvent::SessionClosed {
        event_id,
        session_id,
        reason,
    })
}

/// `NodeStatus`: only `externalUri` matters to the session map, so unlike Java's strict
/// decoder the rest of the object is not validated.
fn node_uri(name: &'static str, data: Value) -> Result<String, Rejection> {
    match data {
        Value::Object(mut fields) => match fields.remove("externalUri") {
            Some(Value::String(uri)) => Ok(uri),
            _ => Err(Rejection::ExternalUri { name }),
        },
        _ => Err(Rejection::ExternalUri { name }),
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
