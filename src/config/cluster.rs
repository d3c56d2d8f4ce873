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
    /// How long a member without a leader goes without hearing from a quorum before it counts
    /// as cut off (see [`cut_off_after`]).
    pub cut_off_after: Duration,
    /// The static member list (peer addresses); empty for a single member.
    pub members: std::collections::BTreeMap<MemberId, String>,
    /// This member's own peer address.
    pub advertise_peer: String,
    /// Writes waiting to join a batch on the leader (`grid.max-pending-writes`).
    pub max_pending_writes: usize,
    /// Reads waiting for a ReadIndex round (`grid.max-pending-reads`).
    pub max_pending_reads: usize,
}

/// The longest a member without a leader can go without hearing from a quorum while an election
/// that would give it one has yet to begin, plus room for that election's vote requests to
/// arrive. openraft starts an election once the leader lease (`election-timeout-max`) and a
/// random election timeout (below `election-timeout-max`) have passed since the member last heard
/// from its leader, looking every 1.5 heartbeat intervals: up to 2 × max + 1.5 × heartbeat after
/// the leader died. One more `election-timeout-max` covers the vote requests under load (a new
/// connection, a TLS handshake, a busy machine). Past this, no election is under way that could
/// reach this member: it is cut off.
pub fn cut_off_after(heartbeat_interval: Duration, election_timeout_max: Duration) -> Duration {
    election_timeout_max * 3 + heartbeat_interval * 3 / 2
}
