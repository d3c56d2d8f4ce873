//! The session record of the session map and everything about its wire form: parsing the body
//! of `POST /se/grid/session`, normalising it the way the Java `LocalSessionMap` does, and
//! rendering the exact bytes Java answers with (docs/compatibility.md: "The session record",
//! "Routes", "Errors").
//!
//! A [`Session`] is stored already rendered: capabilities and stereotype as Selenium's pretty
//! JSON text, `start` as `Instant.toString()`. That makes the Raft log entry small and
//! deterministic, makes the hot `GET` a string concatenation, and gives the Redis and Postgres
//! mirrors their values for free. This module is pure: no I/O, no clock, no HTTP status codes.

mod instant;
mod limits;
mod uri;

#[cfg(test)]
mod tests;

/// A session on `uri` with empty capabilities and stereotype, for unit tests of the map and
/// the mirrors.
#[cfg(test)]
pub(crate) fn test_session(id: &str, uri: &str) -> Session {
    Session {
        id: id.to_owned(),
        uri: uri.to_owned(),
        start: "2024-05-01T10:20:30Z".to_owned(),
        capabilities: "{\n}".to_owned(),
        stereotype: "{\n}".to_owned(),
    }
}

use std::borrow::Cow;

use serde_json::Value;

use crate::json::{self, tape::Node, tape::Tape, RenderError};

pub use instant::{format_instant_nanos, parse_start};
pub use limits::{count_json_values, json_value_budget, Limit, Refused, SessionLimits};

/// A session as stored, already normalised. All fields are strings so the type is
/// cheap to encode with bincode in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: String,
    /// `URI.toString()` of the node's external URI, raw (not JSON).
    pub uri: String,
    /// `Instant.toString()` form, e.g. `2024-05-01T10:20:30.123400Z`.
    pub start: String,
    /// Capabilities rendered in Selenium's pretty JSON at indent level 0, top-level keys sorted
    /// (Java String order = UTF-16 code unit order), top-level nulls dropped, nested order kept.
    pub capabilities: String,
    /// Stereotype, same normalisation and rendering.
    pub stereotype: String,
}

/// Why a `POST /se/grid/session` body was refused; all are 500 `unknown error` in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The body is the JSON literal `null`.
    #[error("Session to add must be set")]
    NullBody,
    /// Anything else that is not a valid session; the API message quotes the raw body.
    #[error("Unable to parse")]
    Unparsable,
    /// Over one of the input limits; the message names it.
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl AddError {
    /// The exact W3C `message` Java gives for this error and request body.
    pub fn message(&self, body: &[u8]) -> String {
        match self {
            AddError::NullBody => "Session to add must be set".to_owned(),
            AddError::Unparsable => format!("Unable to parse: {}", String::from_utf8_lossy(body)),
            AddError::Refused(refused) => refused.message(),
        }
    }
}

/// Parses and normalises the body of `POST /se/grid/session`, with no limit but the JSON value
/// budget (see [`parse_add_body_within`]).
pub fn parse_add_body(body: &[u8]) -> Result<Session, AddError> {
    parse_add_body_within(body, &SessionLimits::NONE)
}

/// Parses and normalises the body of `POST /se/grid/session`, refusing it as soon as it breaks
/// a limit: the JSON values are counted before anything is parsed, the id and the node URI are
/// checked before anything is rendered, and the record is measured while it is rendered.
///
/// All five fields are required and other top-level keys are ignored; duplicate keys keep the
/// last value, as Java's streaming reader does.
pub fn parse_add_body_within(body: &[u8], limits: &SessionLimits) -> Result<Session, AddError> {
    let budget = json_value_budget(body.len());
    let values = count_json_values(body, budget);
    if values > budget {
        return Err(Refused {
            limit: Limit::Json,
            value: budget,
        }
        .into());
    }
    // One check of the whole body's UTF-8 (fast on ASCII), one check of its JSON by serde_json
    // that builds nothing, then one pass that indexes it: the fields are read, and the
    // capabilities written again, from the body's own text.
    let text = std::str::from_utf8(body).map_err(|_| AddError::Unparsable)?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| AddError::Unparsable)?;
    let tape = Tape::new(text, values).map_err(|_| AddError::Unparsable)?;
    let root = tape.root();
    if root.is_null() {
        return Err(AddError::NullBody);
    }
    let fields = AddFields::of(root).ok_or(AddError::Unparsable)?;
    let id = string_field(fields.id)?;
    limits.check_id(&id)?;
    let uri = string_field(fields.uri)?;
    limits.check_uri(&uri)?;
    if !uri::is_java_uri(&uri) {
        return Err(AddError::Unparsable);
    }
    let start = fields
        .start
        .and_then(|node| serde_json::from_str::<Value>(node.text()).ok())
        .and_then(|value| parse_start(&value))
        .ok_or(AddError::Unparsable)?;
    let start = format_instant_nanos(start);
    let over_record = Refused {
        limit: Limit::Record,
        value: limits.max_record_bytes,
    };
    let mut room = limits
        .max_record_bytes
        .checked_sub(id.len() + uri.len() + start.len())
        .ok_or(over_record)?;
    let capabilities = render_capabilities(fields.capabilities, room, over_record)?;
    room -= capabilities.len();
    let stereotype = render_capabilities(fields.stereotype, room, over_record)?;
    Ok(Session {
        id,
        uri,
        start,
        capabilities,
        stereotype,
    })
}

/// The add body's five fields, each the last of its name (as Java's streaming reader keeps
/// it); other keys are ignored.
#[derive(Default)]
struct AddFields<'t, 'a> {
    id: Option<Node<'t, 'a>>,
    uri: Option<Node<'t, 'a>>,
    start: Option<Node<'t, 'a>>,
    capabilities: Option<Node<'t, 'a>>,
    stereotype: Option<Node<'t, 'a>>,
}

impl<'t, 'a> AddFields<'t, 'a> {
    /// `None` when the body is not an object.
    fn of(body: Node<'t, 'a>) -> Option<Self> {
        let mut fields = AddFields::default();
        for (key, value) in body.members()? {
            let slot = match key.as_ref() {
                "sessionId" => &mut fields.id,
                "uri" => &mut fields.uri,
                "start" => &mut fields.start,
                "capabilities" => &mut fields.capabilities,
                "stereotype" => &mut fields.stereotype,
                _ => continue,
            };
            *slot = Some(value);
        }
        Some(fields)
    }
}

fn string_field(node: Option<Node<'_, '_>>) -> Result<String, AddError> {
    node.and_then(|n| n.as_str())
        .map(|s| s.into_owned())
        .ok_or(AddError::Unparsable)
}

/// Java copies capabilities into an `ImmutableCapabilities` (a `TreeMap` without null values),
/// so only the top level is sorted and stripped of nulls; nested maps keep their parse order.
/// The rendering is refused with `over` once it would pass `room` bytes (the record's limit),
/// unless a number in it is one Java could not hold: that makes the body unparsable, whatever
/// its size.
fn render_capabilities(
    node: Option<Node<'_, '_>>,
    room: usize,
    over: Refused,
) -> Result<String, AddError> {
    let Some(members) = node.and_then(|n| n.members()) else {
        return Err(AddError::Unparsable);
    };
    let mut entries: Vec<_> = members.collect();
    // Java compares strings by UTF-16 code units, which differs from Rust's byte order for
    // characters at and above U+E000 versus supplementary-plane characters. The sort is
    // stable, so of the members with one key the last is last: it is the one kept.
    entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    let mut kept: Vec<(Cow<'_, str>, Node<'_, '_>)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match kept.last_mut() {
            Some(last) if last.0 == key => last.1 = value,
            _ => kept.push((key, value)),
        }
    }
    kept.retain(|(_, value)| !value.is_null());
    match json::members_to_pretty_string_within(&kept, room) {
        Ok(text) => Ok(text),
        Err(RenderError::Number(_)) => Err(AddError::Unparsable),
        Err(RenderError::TooLarge(_)) => {
            if kept
                .iter()
                .all(|(_, value)| json::check_numbers(*value).is_ok())
            {
                Err(over.into())
            } else {
                Err(AddError::Unparsable)
            }
        }
    }
}

impl Session {
    /// The complete body of a 200 answer to GET /se/grid/session/{id}: `{"value": {...}}`,
    /// pretty, byte-identical to Java.
    pub fn render_get_body(&self) -> String {
        self.render_get_body_parts().body
    }

    /// The `GET` body with where the capabilities and the stereotype sit inside it.
    pub fn render_get_body_parts(&self) -> RenderedGet {
        const HEAD: &str = "{\n  \"value\": {\n    \"capabilities\": ";
        const SESSION_ID: &str = ",\n    \"sessionId\": ";
        const START: &str = ",\n    \"start\": ";
        const STEREOTYPE: &str = ",\n    \"stereotype\": ";
        const URI: &str = ",\n    \"uri\": ";
        const TAIL: &str = "\n  }\n}";
        // Rendered on every member for every session added: allocated once at its exact size,
        // which is also the size the map keeps (`Record::new`).
        let len = HEAD.len()
            + nested_len(&self.capabilities)
            + SESSION_ID.len()
            + json::escaped_len(&self.id)
            + START.len()
            + json::escaped_len(&self.start)
            + STEREOTYPE.len()
            + nested_len(&self.stereotype)
            + URI.len()
            + json::escaped_len(&self.uri)
            + TAIL.len();
        let mut out = String::with_capacity(len);
        out.push_str(HEAD);
        let caps_start = out.len();
        push_nested(&self.capabilities, &mut out);
        let capabilities = caps_start..out.len();
        out.push_str(SESSION_ID);
        json::write_string(&self.id, &mut out);
        out.push_str(START);
        json::write_string(&self.start, &mut out);
        out.push_str(STEREOTYPE);
        let stereo_start = out.len();
        push_nested(&self.stereotype, &mut out);
        let stereotype = stereo_start..out.len();
        out.push_str(URI);
        json::write_string(&self.uri, &mut out);
        out.push_str(TAIL);
        debug_assert_eq!(out.len(), len);
        RenderedGet {
            body: out,
            capabilities,
            stereotype,
        }
    }

    /// The complete body of a 200 answer to GET /se/grid/session/{id}/uri.
    pub fn render_uri_body(&self) -> String {
        render_uri_body(&self.uri)
    }

    /// `"` + start + `"`: the stored form Selenium writes to Redis `session:<id>:start` and
    /// Postgres `session_start`.
    pub fn start_json(&self) -> String {
        let mut out = String::with_capacity(self.start.len() + 2);
        json::write_string(&self.start, &mut out);
        out
    }
}

/// A rendered `GET` body and the byte ranges of the nested documents inside it.
pub struct RenderedGet {
    pub body: String,
    pub capabilities: std::ops::Range<usize>,
    pub stereotype: std::ops::Range<usize>,
}

/// The complete body of a 200 answer to GET /se/grid/session/{id}/uri for a node URI.
pub fn render_uri_body(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len() + 32);
    out.push_str("{\n  \"value\": ");
    json::write_string(uri, &mut out);
    out.push_str("\n}");
    out
}

/// The inverse of `push_nested`: a document embedded two levels deep, back at level 0.
pub fn unnest(nested: &str) -> String {
    nested.replace("\n    ", "\n")
}

/// Embeds a document rendered at level 0 two levels deeper. The pretty writer escapes every
/// newline inside strings, so each raw `\n` is a line break that only needs more indentation.
fn push_nested(level0: &str, out: &mut String) {
    let mut line_start = 0;
    for newline in memchr::memchr_iter(b'\n', level0.as_bytes()) {
        // `newline` is the index of an ASCII byte, so both slices end on character boundaries.
        out.push_str(&level0[line_start..=newline]);
        out.push_str(NESTED_INDENT);
        line_start = newline + 1;
    }
    out.push_str(&level0[line_start..]);
}

/// What `push_nested` adds after each line break: two levels of Java's two-space indent.
const NESTED_INDENT: &str = "    ";

/// The length of `level0` once `push_nested` has written it.
fn nested_len(level0: &str) -> usize {
    level0.len() + NESTED_INDENT.len() * memchr::memchr_iter(b'\n', level0.as_bytes()).count()
}

/// The pretty W3C error body with keys in Java's order:
/// `{"value": {"stacktrace": "", "error": .., "message": ..}}`.
///
/// Written directly into one buffer of the exact size: the message of an unparsable body quotes
/// the whole body (as Java's does), and escaping can make that six times the body's size.
pub fn w3c_error_body(error: &str, message: &str) -> String {
    const HEAD: &str = "{\n  \"value\": {\n    \"stacktrace\": \"\",\n    \"error\": ";
    const MIDDLE: &str = ",\n    \"message\": ";
    const TAIL: &str = "\n  }\n}";
    let len = HEAD.len()
        + json::escaped_len(error)
        + MIDDLE.len()
        + json::escaped_len(message)
        + TAIL.len();
    let mut out = String::with_capacity(len);
    out.push_str(HEAD);
    json::write_string(error, &mut out);
    out.push_str(MIDDLE);
    json::write_string(message, &mut out);
    out.push_str(TAIL);
    debug_assert_eq!(out.len(), len);
    out
}

/// Why a session was removed: Selenium's `SessionClosedReason`, then gridraft's own reasons
/// (the reconciler's), which no Grid event carries. Serialised with the Java enum names so that
/// log entries and events read the same as on the Java side. New variants go at the end:
/// bincode numbers them, and log entries already written must keep decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemovalReason {
    QuitCommand,
    Timeout,
    NodeRemoved,
    NodeRestarted,
    /// The reconciler asked the session's node, which answered without the session.
    NodeLostSession,
    /// The reconciler could not reach the session's node for `for_ms` milliseconds.
    NodeUnreachable {
        for_ms: u64,
    },
}

impl RemovalReason {
    /// The reason text shown in the 404 message after removal (docs/compatibility.md#errors).
    pub fn text(&self) -> String {
        match self {
            RemovalReason::QuitCommand => "session closed normally (QUIT command)".into(),
            RemovalReason::Timeout => "session timed out due to inactivity".into(),
            RemovalReason::NodeRemoved => "node was removed from the grid".into(),
            RemovalReason::NodeRestarted => "node was restarted".into(),
            RemovalReason::NodeLostSession => "node no longer has the session".into(),
            RemovalReason::NodeUnreachable { for_ms } => {
                format!("node unreachable for {} seconds", for_ms / 1000)
            }
        }
    }

    /// The Java enum name, e.g. `QUIT_COMMAND` (gridraft's own reasons have names in the same
    /// style, which no Grid event carries).
    pub fn name(&self) -> &'static str {
        match self {
            RemovalReason::QuitCommand => "QUIT_COMMAND",
            RemovalReason::Timeout => "TIMEOUT",
            RemovalReason::NodeRemoved => "NODE_REMOVED",
            RemovalReason::NodeRestarted => "NODE_RESTARTED",
            RemovalReason::NodeLostSession => "NODE_LOST_SESSION",
            RemovalReason::NodeUnreachable { .. } => "NODE_UNREACHABLE",
        }
    }

    /// How long the node was unreachable, for [`RemovalReason::NodeUnreachable`]; else 0.
    pub fn detail_ms(&self) -> u64 {
        match self {
            RemovalReason::NodeUnreachable { for_ms } => *for_ms,
            _ => 0,
        }
    }

    /// Parses a name written by [`RemovalReason::name`] with its [`RemovalReason::detail_ms`]
    /// (a snapshot's removal record). Unlike [`RemovalReason::from_name`], it knows gridraft's
    /// own reasons.
    pub fn from_stored(name: &str, detail_ms: u64) -> Option<Self> {
        match name {
            "NODE_LOST_SESSION" => Some(RemovalReason::NodeLostSession),
            "NODE_UNREACHABLE" => Some(RemovalReason::NodeUnreachable { for_ms: detail_ms }),
            other => RemovalReason::from_name(other),
        }
    }

    /// Parses an exact Java enum name (case-sensitive, as `Enum.valueOf`); gridraft's own
    /// reasons are not Java's and never come from the event bus.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            RemovalReason::QuitCommand,
            RemovalReason::Timeout,
            RemovalReason::NodeRemoved,
            RemovalReason::NodeRestarted,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }
}

/// The 404 message for an id, with or without removal info (docs/compatibility.md#errors):
/// `Unable to find session with ID: <id>` or `Unable to find session with ID: <id>. Session was
/// removed at <instant> (<n> seconds ago), reason: <text>, node: <uri>` ("1 second ago" when
/// n == 1).
///
/// The removal time comes from the Raft leader's clock and `now_nanos` from this member's, so a
/// removal that appears to lie in the future (clock skew) is reported as `0 seconds ago` rather
/// than a negative age.
pub fn not_found_message(
    id: &str,
    removal: Option<(&i128, RemovalReason, &str)>,
    now_nanos: i128,
) -> String {
    let Some((removed_at, reason, node)) = removal else {
        return format!("Unable to find session with ID: {id}");
    };
    let seconds = now_nanos
        .saturating_sub(*removed_at)
        .div_euclid(1_000_000_000)
        .max(0);
    let ago = if seconds == 1 {
        "1 second ago".to_owned()
    } else {
        format!("{seconds} seconds ago")
    };
    format!(
        "Unable to find session with ID: {id}. Session was removed at {} ({ago}), reason: {}, node: {node}",
        format_instant_nanos(*removed_at),
        reason.text(),
    )
}
