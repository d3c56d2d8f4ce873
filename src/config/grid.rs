//! `[grid]`: how long Grid requests may wait, how reads are served, the queue bounds (these go
//! to [`super::ClusterSettings`]) and the input limits ([`InputLimits`], for the API layer).

use serde::{Deserialize, Serialize};

use crate::session::SessionLimits;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct GridSettings {
    /// How long a write may wait for a leader and a commit before the Grid gets a 500.
    pub write_timeout: String,
    /// How long a read may wait for its ReadIndex round and for this member to catch up.
    pub read_timeout: String,
    /// `follower`: a member answers reads itself once it has applied the leader's read index.
    /// `leader`: a member forwards each read to the leader.
    pub read_mode: String,
    /// How long after losing its leader a member still reports ready (an election is short).
    pub ready_grace: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest accepted session id (in a body or a path), in bytes.
    pub max_session_id_bytes: usize,
    /// Longest accepted node URI, in bytes.
    pub max_node_uri_bytes: usize,
    /// Largest session record (id, node URI, start, capabilities and stereotype as rendered)
    /// that may enter the log, in bytes.
    pub max_record_bytes: usize,

    /// Writes waiting on the leader to join a log entry; more are refused at once.
    pub max_pending_writes: usize,
    /// Reads waiting for a ReadIndex round on a member; more are refused at once.
    pub max_pending_reads: usize,
}

impl Default for GridSettings {
    fn default() -> Self {
        GridSettings {
            write_timeout: "10s".into(),
            read_timeout: "10s".into(),
            read_mode: "follower".into(),
            ready_grace: "5s".into(),
            max_body_bytes: 1 << 20,
            max_session_id_bytes: 1024,
            max_node_uri_bytes: 4096,
            max_record_bytes: 1 << 20,
            max_pending_writes: 10_000,
            max_pending_reads: 100_000,
        }
    }
}

/// The input limits of `[grid]` after validation (docs/api.md "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Largest `POST /se/grid/session` body.
    pub max_body_bytes: usize,
    pub session_limits: SessionLimits,
}

/// `(key, value, lowest, highest)` of each input limit (docs/api.md "Limits"). The record
/// limit's top stays far below what the log reader accepts and what replicates in one request.
fn input_limits(g: &GridSettings) -> [(&'static str, usize, usize, usize); 4] {
    [
        ("grid.max-body-bytes", g.max_body_bytes, 64 << 10, 16 << 20),
        (
            "grid.max-session-id-bytes",
            g.max_session_id_bytes,
            64,
            64 << 10,
        ),
        (
            "grid.max-node-uri-bytes",
            g.max_node_uri_bytes,
            256,
            64 << 10,
        ),
        (
            "grid.max-record-bytes",
            g.max_record_bytes,
            4 << 10,
            8 << 20,
        ),
    ]
}

impl GridSettings {
    pub(super) fn check_limits(&self, problems: &mut Vec<String>) -> InputLimits {
        for (key, value, lowest, highest) in input_limits(self) {
            if !(lowest..=highest).contains(&value) {
                problems.push(format!("{key}: {value} is not within {lowest}..={highest}"));
            }
        }
        InputLimits {
            max_body_bytes: self.max_body_bytes,
            session_limits: SessionLimits {
                max_session_id_bytes: self.max_session_id_bytes,
                max_node_uri_bytes: self.max_node_uri_bytes,
                max_record_bytes: self.max_record_bytes,
            },
        }
    }
}
