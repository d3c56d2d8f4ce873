//! The commands that change the session map: what a member proposes and Raft replicates, and
//! what applying one did.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::raft::MemberId;
use crate::session::{RemovalReason, Session};

/// One replicated change to the session map.
///
/// Log entries are bincode, which names a variant by its position: new variants go at the end,
/// and no variant or field may change, or entries already in users' logs stop decoding.
///
/// `at` is the proposing member's wall clock in nanoseconds since the Unix epoch. It is the only
/// notion of time `apply()` has: removal timestamps and tombstone expiry are derived from it, so
/// every member applies exactly the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub at: i64,
    /// The Grid event this proposal came from. Every member proposes the events it receives;
    /// `apply()` remembers the ids it has applied (see `map` for what a repeat does).
    pub event_id: Option<Uuid>,
    pub op: Op,
}

/// Largest proposal, in its encoded form, that `cluster` puts in the log. A quarter of the log's
/// record limit ([`crate::store::segment_log::MAX_RECORD`]), so that a batch of writes (about 96 KiB plus one
/// write) with its entry's framing always fits: the log refuses a larger record, and a refused
/// append stops Raft on the leader. The API's own limits on a session are far lower.
impl Op {
    /// [`Op::Add`] of `session`.
    pub fn add(session: Session) -> Op {
        Op::Add(Arc::new(session))
    }
}

pub const MAX_PROPOSAL_BYTES: u64 = crate::store::segment_log::MAX_RECORD as u64 / 4;

/// The encoded size of `p` if it is over [`MAX_PROPOSAL_BYTES`].
pub fn oversized(p: &Proposal) -> Option<u64> {
    let bytes = bincode::serialized_size(p).unwrap_or(u64::MAX);
    (bytes > MAX_PROPOSAL_BYTES).then_some(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace a session (a re-add replaces the whole record). Shared, so that the
    /// copies of an entry the log hands to the state machine and to each follower's replication
    /// share its session (`Arc<T>` encodes as `T`: the log's and the wire's bytes are the same).
    Add(Arc<Session>),
    /// Remove one session if present.
    Remove { id: String, reason: RemovalReason },
    /// Remove every session whose node URI equals `uri` exactly.
    RemoveByUri { uri: String, reason: RemovalReason },
    /// The leader has written every entry up to `index` to the mirror named `mirror`
    /// (`postgres`, `redis`). Replicated so that a new leader resumes mirroring there; it
    /// changes no session.
    MirrorProgress { mirror: String, index: u64 },
    /// Several Grid writes committed as one log entry, applied in order (group commit: openraft
    /// 0.9 waits for each append's fsync before it takes the next, so one entry per write would
    /// cost one fsync per write; see `cluster::write_batch`). Never nested.
    Batch(Vec<Proposal>),
    /// A Grid event's `Remove`: removes the session only if it was added by the entry at log
    /// index `added_by` or earlier. The proposing member sets `added_by` to its applied index
    /// when it received the event, so no copy of the event, however late, removes a session
    /// added after that (see `map`).
    RemoveAddedBy {
        id: String,
        reason: RemovalReason,
        added_by: u64,
    },
    /// A Grid event's `RemoveByUri`, bounded like [`Op::RemoveAddedBy`].
    RemoveByUriAddedBy {
        uri: String,
        reason: RemovalReason,
        added_by: u64,
    },
    /// Member `member`'s data directory went below (`low`) or back above its free-space
    /// threshold (see `cluster::disk`). The set of low members is replicated state: while a
    /// quorum of voters is in it, the cluster refuses adds. Appended last: bincode numbers the
    /// variants, so the entries already in logs keep decoding.
    DiskAlarm { member: MemberId, low: bool },
    /// The reconciler's removals (see `cluster::reconcile`): sessions their node no longer
    /// holds, or whose node has been unreachable too long. Each removes its session only if the
    /// session is still the one judged (added by the same entry). Appended last, like
    /// `DiskAlarm`; a member of an older version cannot decode it (docs/operations.md).
    Reconcile(Vec<ReconcileRemoval>),
}

/// One session the reconciler removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileRemoval {
    pub id: String,
    /// The log index of the entry that added the session as the reconciler saw it.
    pub added: u64,
    /// [`RemovalReason::NodeLostSession`] or [`RemovalReason::NodeUnreachable`].
    pub reason: RemovalReason,
}

impl Op {
    /// Whether this is an event removal bounded by a log index, which a repeat of its event id
    /// still applies (see `map`).
    pub fn is_bounded(&self) -> bool {
        matches!(
            self,
            Op::RemoveAddedBy { .. } | Op::RemoveByUriAddedBy { .. }
        )
    }
}

/// What applying a [`Proposal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Sessions added, replaced or removed.
    pub changed: u32,
    /// The proposal carried an event id that was already applied. An unbounded removal then
    /// changed nothing; a bounded one may still have removed what earlier copies could not.
    pub duplicate: bool,
}

/// Nanoseconds since the Unix epoch, as stamped into proposals.
pub fn now_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
