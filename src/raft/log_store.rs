//! The Raft log: entries in segment files ([`SegmentLog`]), the vote, the commit index and the
//! purge point in sled.
//!
//! An append is reported to openraft only after the [`Flusher`](super::durable::Flusher) has
//! fsynced it, and a vote is saved the same way before `save_vote` returns.
//!
//! A data directory written before decision 0004 holds its entries in a sled tree, `raft_log`
//! (keys big-endian indexes); opening it moves them into segments and empties the tree.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote,
};

use super::durable::Storage;
use super::{Entry, LogId, MemberId, StorageError, TypeConfig};
use crate::store::segment_log::SegmentLog;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Upper bound on the entries' bytes in one replication request. openraft 0.9 gives an
/// `AppendEntries` request one heartbeat interval (100 ms by default) to be sent, written and
/// fsynced by the follower, and sends up to 300 entries at once; batched entries are up to
/// 96 KiB, so a follower catching up was sent up to 28 MiB per request, which timed out again
/// and again and never caught up. 1 MiB is a few milliseconds on a gigabit link.
pub const MAX_APPEND_BYTES: u64 = 1 << 20;

#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    log: SegmentLog,
    meta: sled::Tree,
}

fn io(
    subject: ErrorSubject<MemberId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}

fn read_logs(e: impl std::error::Error + 'static) -> StorageError {
    io(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_logs(e: impl std::error::Error + 'static) -> StorageError {
    io(ErrorSubject::Logs, ErrorVerb::Write, e)
}

#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    #[error("{0}")]
    Sled(#[from] sled::Error),
    #[error("Raft log: {0}")]
    Io(#[from] std::io::Error),
    #[error("Raft log: {0}")]
    Decode(#[from] bincode::Error),
}

impl LogStore {
    pub fn open(storage: &Storage, preallocate: bool) -> Result<Self, LogOpenError> {
        let meta = storage.db.open_tree("raft_meta")?;
        let last_purged: Option<LogId> = match meta.get(LAST_PURGED)? {
            Some(raw) => Some(bincode::deserialize(&raw)?),
            None => None,
        };
        let legacy_tree = storage.db.open_tree("raft_log")?;
        let legacy = legacy_tree
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let moved = legacy.len();
        let log = SegmentLog::open(
            &storage.dir,
            last_purged.map(|l| l.index),
            legacy,
            storage.log_sync.clone(),
            preallocate,
        )?;
        if moved > 0 {
            // The segments are durable; only now may the tree go, durably: a tree that came
            // back after a crash would replace the segments, and any entry appended since.
            legacy_tree.clear()?;
            storage.flusher.flush_blocking()?;
            tracing::info!(
                entries = moved,
                "Raft log moved from sled into segment files"
            );
        }
        Ok(LogStore {
            log,
            meta,
            storage: storage.clone(),
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let Some(raw) = self.meta.get(key).map_err(read_logs)? else {
            return Ok(None);
        };
        bincode::deserialize(&raw).map(Some).map_err(read_logs)
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let raw = bincode::serialize(value).map_err(write_logs)?;
        self.meta.insert(key, raw).map_err(write_logs)?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<MemberId>) -> Result<(), StorageError> {
        self.storage
            .flusher
            .flush()
            .await
            .map_err(|e| io(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.log.read(start, end).map_err(read_logs)
    }

    /// What replication sends in one request: at most [`MAX_APPEND_BYTES`] of entries (and at
    /// least one).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.log
            .read_limited(start, end, MAX_APPEND_BYTES)
            .map_err(read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.log.last_log_id().or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
            .map_err(|e| io(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed here: a lost commit index is recomputed by the next leader.
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let bytes = self.log.append(entries).map_err(write_logs)?;
        self.storage
            .stats
            .appended
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.storage
            .flusher
            .flush_log_then(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Durable when it returns: the segment is cut and synced in place.
        self.log.truncate(log_id.index).map_err(write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is recorded first, so a crash half-way leaves a consistent state:
        // entries at or below it are ignored on the next open.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flush(ErrorSubject::Logs).await?;
        self.log.purge(log_id.index).map_err(write_logs)
    }
}
