//! The Raft log and vote in sled.
//!
//! Keys of the `raft_log` tree are big-endian indexes, so sled's order is log order. An append is
//! reported to openraft only after the [`Flusher`](super::durable::Flusher) has fsynced it, and a
//! vote is saved the same way before `save_vote` returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote,
};

use super::durable::Storage;
use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    log: sled::Tree,
    meta: sled::Tree,
}

fn io(
    subject: ErrorSubject<NodeId>,
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

impl LogStore {
    pub fn open(storage: &Storage) -> Result<Self, sled::Error> {
        Ok(LogStore {
            log: storage.db.open_tree("raft_log")?,
            meta: storage.db.open_tree("raft_meta")?,
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

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(read_logs)? {
            Some((_, raw)) => {
                let entry: Entry = bincode::deserialize(&raw).map_err(read_logs)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.storage
            .flusher
            .flush()
            .await
            .map_err(|e| io(subject, ErrorVerb::Write, e))
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(*i)),
            Bound::Excluded(i) => Bound::Excluded(key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range::<[u8; 8], _>((start, end))
            .map(|item| {
                let (_, raw) = item.map_err(read_logs)?;
                bincode::deserialize(&raw).map_err(read_logs)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
            .map_err(|e| io(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
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
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for entry in entries {
            let raw = bincode::serialize(&entry).map_err(write_logs)?;
            bytes += raw.len() as u64;
            batch.insert(&key(entry.log_id.index), raw);
        }
        self.log.apply_batch(batch).map_err(write_logs)?;
        self.storage
            .stats
            .appended
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.storage
            .flusher
            .flush_then(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(key(log_id.index)..) {
            let (k, _) = item.map_err(write_logs)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_logs)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge point is recorded first, so a crash half-way leaves a consistent state.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flush(ErrorSubject::Logs).await?;
        // Keys are computed, not iterated: iterating would read every purged entry (each up to
        // a batch of 96 KiB) back from disk only to drop it, and did, at the cost of most of a
        // leader's CPU while a snapshot was purged under writes (perf, docs/benchmarks.md).
        let Some((first, _)) = self.log.first().map_err(read_logs)? else {
            return Ok(());
        };
        let first = u64::from_be_bytes(
            first
                .as_ref()
                .try_into()
                .map_err(|_| read_logs(std::io::Error::other("a log key is not eight bytes")))?,
        );
        let mut batch = sled::Batch::default();
        for index in first..=log_id.index {
            batch.remove(&key(index));
        }
        self.log.apply_batch(batch).map_err(write_logs)?;
        Ok(())
    }
}
