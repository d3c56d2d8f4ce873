//! Everything openraft: the type configuration, the replicated commands, the log store (entries
//! in segment files, the vote and purge point in sled), the state machine with its snapshot
//! files, and the HTTP network between members.
//!
//! Nothing outside this module touches sled or the log's files. The rest of the crate sees
//! [`Proposal`] to write and [`SessionMapReader`] to read.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::session::{RemovalReason, Session};

pub mod durable;
pub mod log_store;
pub mod network;
pub mod segment_log;
pub mod session_map;
pub mod snapshot_file;
pub mod state_machine;

pub use session_map::{Lookup, SessionMapReader};

/// Member ids are small integers chosen by the operator.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// gridraft's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

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
    /// `apply()` remembers the ids it has applied (see `session_map` for what a repeat does).
    pub event_id: Option<Uuid>,
    pub op: Op,
}

/// Largest proposal, in its encoded form, that `cluster` puts in the log. A quarter of the log's
/// record limit ([`segment_log::MAX_RECORD`]), so that a batch of writes (about 96 KiB plus one
/// write) with its entry's framing always fits: the log refuses a larger record, and a refused
/// append stops Raft on the leader. The API's own limits on a session are far lower.
pub const MAX_PROPOSAL_BYTES: u64 = segment_log::MAX_RECORD as u64 / 4;

/// The encoded size of `p` if it is over [`MAX_PROPOSAL_BYTES`].
pub fn oversized(p: &Proposal) -> Option<u64> {
    let bytes = bincode::serialized_size(p).unwrap_or(u64::MAX);
    (bytes > MAX_PROPOSAL_BYTES).then_some(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace a session (a re-add replaces the whole record).
    Add(Session),
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
    /// added after that (see `session_map`).
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
    DiskAlarm { member: NodeId, low: bool },
}

impl Op {
    /// Whether this is an event removal bounded by a log index, which a repeat of its event id
    /// still applies (see `session_map`).
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

/// Opens a member's storage under `dir`: the identity check, the log store and the state
/// machine (restored from its latest snapshot).
pub fn open_storage(
    dir: &std::path::Path,
    identity: &durable::DataIdentity,
) -> Result<
    (
        durable::Storage,
        log_store::LogStore,
        state_machine::StateMachine,
    ),
    OpenStorageError,
> {
    // Decoding the snapshot (seconds for a million sessions) overlaps sled's own start.
    let prefetch = state_machine::Prefetch::start(dir);
    let storage = durable::Storage::open(dir, identity)?;
    let log = log_store::LogStore::open(&storage).map_err(|source| OpenStorageError::Log {
        path: dir.to_owned(),
        source,
    })?;
    let sm =
        state_machine::StateMachine::open(&storage, prefetch).map_err(OpenStorageError::Restore)?;
    Ok((storage, log, sm))
}

#[derive(Debug, thiserror::Error)]
pub enum OpenStorageError {
    #[error(transparent)]
    Open(#[from] durable::OpenError),
    #[error("restore the state machine from its snapshot: {0}")]
    Restore(StorageError),
    #[error("open the Raft log in {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        source: log_store::LogOpenError,
    },
}
