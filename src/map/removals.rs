//! The removal history: what removed each remembered session (the tombstones the 404 message
//! quotes), as plain values for `/admin/removals` and the status page. Reads only; the history
//! is exactly the tombstones [`SessionMap`] keeps (60 minutes, at most `MAX_TOMBSTONES`).

use serde::{Deserialize, Serialize};

use super::SessionMap;
use crate::session::format_instant_nanos;

/// What removed a session. Derived from the command when it is applied: a Grid event
/// (`session-closed`, `node-removed`, `node-restarted`), the Grid's `DELETE`, or the reconciler.
/// `Unknown` only for removals restored from a snapshot written before sources were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovalSource {
    Event,
    Delete,
    Reconciler,
    Unknown,
}

impl RemovalSource {
    /// The name in the history and in snapshots.
    pub fn name(&self) -> &'static str {
        match self {
            RemovalSource::Event => "event",
            RemovalSource::Delete => "delete",
            RemovalSource::Reconciler => "reconciler",
            RemovalSource::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            RemovalSource::Event,
            RemovalSource::Delete,
            RemovalSource::Reconciler,
            RemovalSource::Unknown,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// One entry of the removal history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub session_id: String,
    /// The Grid node the session was on (its URI as the map held it).
    pub node: String,
    /// The reason text of the Grid's 404 message, e.g. `node no longer has the session`.
    pub reason: String,
    /// The reason's name, e.g. `QUIT_COMMAND`, `NODE_LOST_SESSION`, `NODE_UNREACHABLE`.
    pub reason_code: &'static str,
    pub source: RemovalSource,
    /// When it was removed, as `Instant.toString()` prints it (UTC, RFC 3339).
    pub removed_at: String,
    /// The same time in milliseconds since the Unix epoch.
    pub removed_at_ms: i64,
}

impl SessionMap {
    /// The remembered removals, newest first, removed at or after `since_ms` (milliseconds since
    /// the Unix epoch) and on the node `node` (exact URI) when given.
    pub fn removals(&self, since_ms: Option<i64>, node: Option<&str>) -> Vec<Removal> {
        self.tombstone_order
            .iter()
            .rev()
            .filter_map(|(at, id)| {
                let t = self.tombstones.get(id)?;
                // An older entry of an id removed again since is not the id's current removal.
                (t.removed_at == *at).then_some((id, t))
            })
            .filter(|(_, t)| since_ms.is_none_or(|s| t.removed_at.div_euclid(1_000_000) >= s))
            .filter(|(_, t)| node.is_none_or(|n| t.node == n))
            .map(|(id, t)| Removal {
                session_id: id.to_string(),
                node: t.node.clone(),
                reason: t.reason.text(),
                reason_code: t.reason.name(),
                source: t.source,
                removed_at: format_instant_nanos(i128::from(t.removed_at)),
                removed_at_ms: t.removed_at.div_euclid(1_000_000),
            })
            .collect()
    }
}
