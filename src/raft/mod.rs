//! The openraft adapters: the type configuration, the log store over the segment log, the state
//! machine over the session map with its snapshot files, and the HTTP network between members.
//!
//! openraft's storage and network traits are implemented here and nowhere else; the storage
//! engine is [`crate::store`], the domain is [`crate::map`]. [`internals`] is the one place that
//! reads openraft's internal state. The rest of the crate sees
//! [`crate::map::Proposal`] to write and [`crate::map::SessionMapReader`] to read.

pub mod internals;
pub mod log_store;
pub mod network;
pub mod seed;
pub mod state_machine;

use crate::map::{Applied, Proposal};
use crate::store::{background, durable, snapshot_file};

/// Member ids are small integers chosen by the operator.
pub type MemberId = u64;

openraft::declare_raft_types!(
    /// gridraft's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = MemberId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_file::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<MemberId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<MemberId>;

/// Opens a member's storage under `dir`: the identity check, the log store and the state
/// machine (restored from its latest snapshot).
pub fn open_storage(
    dir: &std::path::Path,
    identity: &durable::DataIdentity,
    preallocate_log_segments: bool,
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
    let log = log_store::LogStore::open(&storage, preallocate_log_segments).map_err(|source| {
        OpenStorageError::Log {
            path: dir.to_owned(),
            source,
        }
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
