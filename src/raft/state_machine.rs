//! The openraft state machine: applies committed [`Proposal`](super::Proposal)s to the in-memory
//! [`SessionMap`] and keeps its durable image, the latest snapshot, as a file (see
//! [`snapshot_file`]) recorded in sled.
//!
//! The map is rebuilt on start from that snapshot plus the log entries after it, which openraft
//! replays. A snapshot is an O(1) clone of the persistent map taken on the apply path; encoding
//! and writing it happen on a blocking thread, off both the apply and the request paths.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::background;
use super::durable::Storage;
use super::snapshot_file::{self, SnapshotFile, SNAPSHOT_DIR};
use super::{Applied, Entry, LogId, MemberId, StorageError, TypeConfig};
use crate::map::{SessionMap, SessionMapReader};

type Membership = StoredMembership<MemberId, BasicNode>;
type Meta = SnapshotMeta<MemberId, BasicNode>;

/// sled tree of the state machine's records.
pub(super) const TREE: &str = "state_machine";
/// sled key of the current snapshot's [`SnapshotRecord`].
pub(super) const CURRENT_SNAPSHOT: &[u8] = b"current_snapshot";

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)),
    }
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::new(&e)),
    }
}

/// What sled records about the current snapshot: openraft's metadata and the file holding it.
#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotRecord {
    pub(super) meta: Meta,
    pub(super) file: String,
}

/// The snapshot directory and the lock that orders its updates: a snapshot built here and one
/// received from the leader may finish at the same time; the newer one must stay current.
#[derive(Clone)]
struct Snapshots {
    storage: Storage,
    tree: sled::Tree,
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Snapshots {
    fn current(&self) -> Result<Option<(SnapshotRecord, PathBuf)>, StorageError> {
        let Some(raw) = self
            .tree
            .get(CURRENT_SNAPSHOT)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let record: SnapshotRecord =
            bincode::deserialize(&raw).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let path = self.dir.join(&record.file);
        Ok(Some((record, path)))
    }

    /// Makes the file `name` (already durable in the directory) the current snapshot, unless
    /// the current one is newer, then deletes every other file. Returns whether it was taken.
    async fn make_current(&self, meta: &Meta, name: &str) -> Result<bool, StorageError> {
        let _guard = self.lock.lock().await;
        if let Some((current, _)) = self.current()? {
            if current.meta.last_log_id > meta.last_log_id {
                let stale = self.dir.join(name);
                let _ = std::fs::remove_file(stale);
                return Ok(false);
            }
        }
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: name.to_owned(),
        };
        let raw = bincode::serialize(&record).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.tree
            .insert(CURRENT_SNAPSHOT, raw)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.storage
            .flusher
            .flush()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        snapshot_file::remove_others(&self.dir, Some(name), false)
            .map_err(|e| snap_err(ErrorVerb::Delete, e))?;
        self.note_size(name);
        Ok(true)
    }

    fn note_size(&self, name: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.storage.stats;
        let size = std::fs::metadata(self.dir.join(name)).map_or(0, |m| m.len());
        stats.snapshot_bytes.store(size, Relaxed);
        stats
            .appended_at_snapshot
            .store(stats.appended.load(Relaxed), Relaxed);
    }
}

/// Decodes a snapshot file, on a blocking thread when called from async code.
fn read_map(path: &Path) -> Result<SessionMap, StorageError> {
    let file = std::fs::File::open(path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    SessionMap::decode(BufReader::with_capacity(snapshot_file::FILE_BUFFER, file))
        .map_err(|e| snap_err(ErrorVerb::Read, e))
}

/// The snapshot file decoded on a thread of its own while sled opens. The file is the only
/// complete snapshot in the directory, which is the current one unless a crash came between
/// writing a newer file and recording it; `StateMachine::open` checks the name against sled's
/// record and decodes the recorded file itself if they differ.
pub struct Prefetch {
    name: String,
    decoded: std::thread::JoinHandle<Result<SessionMap, StorageError>>,
}

impl Prefetch {
    pub fn start(data_dir: &Path) -> Option<Prefetch> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        let mut complete = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| snapshot_file::is_complete(n));
        let name = complete.next()?;
        if complete.next().is_some() {
            return None;
        }
        let path = dir.join(&name);
        let decoded = std::thread::Builder::new()
            .name("snapshot-load".into())
            .spawn(move || read_map(&path))
            .ok()?;
        Some(Prefetch { name, decoded })
    }
}

pub struct StateMachine {
    snapshots: Snapshots,
    map: SessionMapReader,
    last_applied: Option<LogId>,
    membership: Membership,
    applied_tx: watch::Sender<u64>,
}

impl StateMachine {
    /// Opens the state machine, restoring the latest snapshot if there is one.
    pub fn open(storage: &Storage, prefetch: Option<Prefetch>) -> Result<Self, StorageError> {
        let tree = storage
            .db
            .open_tree(TREE)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let dir = storage.dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (applied_tx, _) = watch::channel(0);
        let mut sm = StateMachine {
            snapshots: Snapshots {
                storage: storage.clone(),
                tree,
                dir,
                lock: Arc::new(Mutex::new(())),
            },
            map: SessionMapReader::default(),
            last_applied: None,
            membership: Membership::default(),
            applied_tx,
        };
        let current = sm.snapshots.current()?;
        // Files left by a crash mid-write, or by a snapshot replaced just before one.
        snapshot_file::remove_others(
            &sm.snapshots.dir,
            current.as_ref().map(|(r, _)| r.file.as_str()),
            true,
        )
        .map_err(|e| snap_err(ErrorVerb::Delete, e))?;
        if let Some((record, path)) = current {
            sm.snapshots.note_size(&record.file);
            let map = match prefetch {
                Some(p) if p.name == record.file => p.decoded.join().map_err(|_| {
                    snap_err(
                        ErrorVerb::Read,
                        std::io::Error::other("snapshot loader panicked"),
                    )
                })??,
                _ => read_map(&path)?,
            };
            sm.restore(&record.meta, map);
        }
        Ok(sm)
    }

    /// Read access to the applied map, for the API.
    pub fn reader(&self) -> SessionMapReader {
        self.map.clone()
    }

    /// The index of the last applied entry, updated after every applied batch.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn restore(&mut self, meta: &Meta, map: SessionMap) {
        *self.map.inner.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish_applied();
    }

    fn publish_applied(&self) {
        let index = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.applied_tx.send_replace(index);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut results = Vec::new();
        {
            let mut map = self.map.inner.write().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                let applied = match entry.payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(ref proposal) => {
                        map.apply_entry(entry.log_id.index, proposal)
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        Applied::default()
                    }
                };
                results.push(applied);
            }
        }
        self.publish_applied();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            snapshots: self.snapshots.clone(),
            map: self.map.snapshot(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let file = SnapshotFile::create_incoming(&self.snapshots.dir)
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let received = snapshot
            .finish()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let dir = self.snapshots.dir.clone();
        let name = snapshot_file::file_name(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        let file_name = name.clone();
        let map = tokio::task::spawn_blocking(move || {
            let map = read_map(&received)?;
            snapshot_file::install(&received, &dir, &file_name)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok::<_, StorageError>(map)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        self.restore(meta, map);
        self.snapshots.make_current(meta, &name).await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let _guard = self.snapshots.lock.lock().await;
        let Some((record, path)) = self.snapshots.current()? else {
            return Ok(None);
        };
        let file = SnapshotFile::open(path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(file),
        }))
    }
}

/// Builds a snapshot from an O(1) copy of the map taken when openraft asked for it.
pub struct SnapshotBuilder {
    snapshots: Snapshots,
    map: SessionMap,
    last_applied: Option<LogId>,
    membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let map = std::mem::take(&mut self.map);
        let index = self.last_applied.map(|l| l.index).unwrap_or(0);
        let name = snapshot_file::file_name(index);
        let dir = self.snapshots.dir.clone();
        let file_name = name.clone();
        // Written at a lower priority than the requests the member serves meanwhile.
        let path = background::run("snapshot", move || -> std::io::Result<PathBuf> {
            let tmp = dir.join(format!("{file_name}.tmp"));
            let written = snapshot_file::write_new(&tmp, |w| map.encode(w));
            drop(map);
            if let Err(e) = written {
                // Not installed: the current snapshot and the log it lets go of stay as they are.
                if let Err(rm) = std::fs::remove_file(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %rm, "unfinished snapshot file not removed");
                }
                return Err(e);
            }
            snapshot_file::install(&tmp, &dir, &file_name)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, uuid::Uuid::new_v4()),
            None => format!("empty-{}", uuid::Uuid::new_v4()),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let (meta, path) = if self.snapshots.make_current(&meta, &name).await? {
            (meta, path)
        } else {
            // A newer snapshot, received from the leader, became current meanwhile.
            let (record, path) = self.snapshots.current()?.ok_or_else(|| {
                snap_err(
                    ErrorVerb::Read,
                    std::io::Error::other("current snapshot record vanished"),
                )
            })?;
            (record.meta, path)
        };
        let file = SnapshotFile::open(path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}
