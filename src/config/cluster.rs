//! The cluster layer's settings (see `crate::cluster`, which re-exports them): this member's
//! place in the member list, and the `[grid]` timeouts, read mode and queue bounds every request
//! handler obeys.

use std::time::Duration;

use crate::raft::MemberId;

/// What `crate::cluster::Cluster` needs, validated; built once by [`super::Settings::validate`].
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub id: MemberId,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
    pub read_from_leader: bool,
    pub ready_grace: Duration,
    pub election_timeout_max: Duration,
    /// The static member list (peer addresses); empty for a single member.
    pub members: std::collections::BTreeMap<MemberId, String>,
    /// This member's own peer address.
    pub advertise_peer: String,
    /// Writes waiting to join a batch on the leader (`grid.max-pending-writes`).
    pub max_pending_writes: usize,
    /// Reads waiting for a ReadIndex round (`grid.max-pending-reads`).
    pub max_pending_reads: usize,
}
