//! The storage seam: one sled database per member, and the group-commit flusher that makes
//! writes durable.
//!
//! sled's own `flush` ends in `sync_file_range`, which neither flushes the drive's cache nor the
//! file's metadata (sled issue 1452), so it is not a durability guarantee on its own. Every
//! durable write therefore goes through [`Flusher`]: one thread that takes every flush request
//! waiting at that moment, runs `Db::flush` once, then `fsync`s sled's files once, and only then
//! reports all of them complete. Under load one fsync covers many appends (group commit).
//! The same flush `fdatasync`s the Raft log's segment files written since the last one (see
//! [`super::segment_log`]): sled keeps the vote and the small records, the log is outside it.
//! An append asks for the segments only ([`Flusher::flush_log_then`]); sled is flushed when a
//! request in the group needs it (a vote, a purge point, a snapshot record).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use serde::{Deserialize, Serialize};

use super::segment_log::LogSync;

/// Identity written into a data directory the first time a member starts, and checked on
/// every start, so a member never joins a cluster with foreign state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    pub cluster: String,
    pub node_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("open sled database at {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("data directory {path} belongs to cluster {found:?}, not {expected:?}")]
    ForeignCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("data directory {path} belongs to member {found}, not member {expected}")]
    ForeignMember {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("data directory {path} has an unreadable identity record: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("fsync {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("data directory {path} has an unreadable cluster id record: {detail}")]
    CorruptClusterId { path: PathBuf, detail: String },
}

/// sled key of the cluster id: recorded only in a member seeded by `gridraft restore`. A
/// cluster created by `serve` has none, and its members send and expect none.
const CLUSTER_ID: &[u8] = b"cluster_id";

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// One flush request: `sled` when it needs sled's writes durable too, not only the log's.
struct Request {
    done: Done,
    sled: bool,
}

/// A handle to the group-commit thread. Cloning is cheap.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Request>,
}

impl Flusher {
    fn start(db: sled::Db, dir: PathBuf, log: Arc<LogSync>) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("sled-fsync".into())
            .spawn(move || {
                let mut synced = Synced::default();
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    // Appends need only their segments; sled (the vote, the purge point, the
                    // snapshot record) is flushed when a request in the group asks for it, so a
                    // group of appends costs one fdatasync, not two.
                    let mut result = Ok(());
                    if batch.iter().any(|r| r.sled) {
                        result = sync_changed(&db, &dir, &mut synced);
                        // A file sled removed while it was being listed: list again (bounded).
                        // A persistent error (sled's own) still fails the flush.
                        for _ in 0..3 {
                            match &result {
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                    tracing::warn!(error = %e, "fsync raced with sled removing a file; retrying");
                                    result = sync_changed(&db, &dir, &mut synced);
                                }
                                _ => break,
                            }
                        }
                    }
                    if result.is_ok() {
                        result = log.sync();
                    }
                    for r in batch {
                        (r.done)(clone_result(&result));
                    }
                }
            })
            .expect(
                "spawning a thread at start-up only fails when the process is out of resources",
            );
        Flusher { tx }
    }

    /// Calls `done` once everything written to the database and the log before this call is on
    /// disk.
    pub fn flush_then(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        self.request(Box::new(done), true);
    }

    /// Calls `done` once every log segment written before this call is on disk (sled's own
    /// writes may still be pending).
    pub fn flush_log_then(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        self.request(Box::new(done), false);
    }

    /// Waits, blocking the thread, until everything written before this call is on disk. For
    /// start-up, before any async work runs on this storage.
    pub fn flush_blocking(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        self.flush_then(move |r| {
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("the fsync thread has stopped")))
    }

    fn request(&self, done: Done, sled: bool) {
        if let Err(mpsc::SendError(r)) = self.tx.send(Request { done, sled }) {
            (r.done)(Err(io::Error::other("the fsync thread has stopped")));
        }
    }

    /// Waits until everything written before this call is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush_then(move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the fsync thread has stopped")))
    }
}

fn clone_result(r: &io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

/// `Db::flush` followed by an fsync of every file sled keeps under `dir` and of the
/// directories themselves (so newly created blob files are reachable after a crash).
fn sync(db: &sled::Db, dir: &Path) -> io::Result<()> {
    db.flush().map_err(io::Error::other)?;
    fsync_tree(dir)
}

fn fsync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fsync_tree(&path)?;
        } else {
            ignore_vanished(File::open(&path).and_then(|f| f.sync_all()))?;
        }
    }
    File::open(dir)?.sync_all()
}

/// sled removes obsolete blob and snapshot files at any time; a file that vanished between
/// listing and fsync holds nothing that needs to survive.
fn ignore_vanished(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What the fsync thread has already made durable, so that a flush fsyncs only what changed
/// (docs/decisions/0002-durability-sled.md): sled appends every write to its `db` file, which
/// is fsynced every time; every other file sled creates (blobs for large values, its page-table
/// snapshots, `conf`) is written once, front to back, and never modified, so it is fsynced when
/// it first appears (with its directory, which makes the new name durable) and again only if it
/// has grown since (it was still being written when it was first seen).
#[derive(Default)]
struct Synced {
    db: Option<File>,
    top: HashMap<OsString, u64>,
    blobs: HashMap<OsString, u64>,
}

/// `Db::flush`, then fsync of `db` and of whatever sled created since the last call.
fn sync_changed(db: &sled::Db, dir: &Path, synced: &mut Synced) -> io::Result<()> {
    db.flush().map_err(io::Error::other)?;
    if synced.db.is_none() {
        synced.db = Some(File::open(dir.join("db"))?);
    }
    // `fdatasync` also makes the file's new length durable, which is all an append changes.
    synced.db.as_ref().expect("opened above").sync_data()?;
    let blobs = dir.join("blobs");
    if sync_new_files(&blobs, &mut synced.blobs)? {
        File::open(&blobs)?.sync_all()?;
    }
    if sync_new_files(dir, &mut synced.top)? {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// fsyncs every file in `dir` that is new or longer than at the last call; true if any name
/// appeared. A length is recorded before its fsync, so a write that lands after the fsync makes
/// the file longer and it is fsynced again next time.
fn sync_new_files(dir: &Path, seen: &mut HashMap<OsString, u64>) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut now = HashMap::with_capacity(seen.len());
    let mut appeared = false;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let known = seen.get(&name).copied();
        appeared |= known.is_none();
        if meta.is_file() && known != Some(meta.len()) {
            ignore_vanished(File::open(entry.path()).and_then(|f| f.sync_all()))?;
        }
        now.insert(name, meta.len());
    }
    *seen = now;
    Ok(appeared)
}

/// The member's sled database and its flusher.
#[derive(Clone)]
pub struct Storage {
    pub db: sled::Db,
    pub flusher: Flusher,
    /// The member's data directory (sled lives in `sled/` under it).
    pub dir: PathBuf,
    pub stats: Arc<LogStats>,
    /// The Raft log's segment files due for the next group commit (see `segment_log`).
    pub log_sync: Arc<LogSync>,
}

/// Byte counts that drive snapshots by log size (see `crate::member`): the log written since the
/// last snapshot is disk, and the replay of the next start.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Encoded log bytes appended since start.
    pub appended: AtomicU64,
    /// `appended` when the current snapshot was made current.
    pub appended_at_snapshot: AtomicU64,
    /// Size of the current snapshot file.
    pub snapshot_bytes: AtomicU64,
}

impl LogStats {
    /// Log bytes written since the current snapshot.
    pub fn since_snapshot(&self) -> u64 {
        self.appended
            .load(Ordering::Relaxed)
            .saturating_sub(self.appended_at_snapshot.load(Ordering::Relaxed))
    }
}

/// sled's page cache. sled holds only small records (the vote, the purge point, the snapshot
/// record, the identity): the log is in segment files and the map in memory, so a cache far
/// below sled's default (1 GiB) costs no lookups.
const SLED_CACHE_BYTES: u64 = 64 << 20;
/// sled's segment size. sled writes anything larger than a quarter segment to a file of its own
/// in `blobs/`, which then needs its own fsync and makes every flush list and stat that
/// directory. The records sled keeps, and a tree node holding several of them, are far smaller
/// than a quarter of 8 MiB, so none becomes a blob.
const SLED_SEGMENT_BYTES: usize = 8 << 20;

impl Storage {
    /// Opens (or creates) the database under `dir` and checks, or on first start records, the
    /// member's identity.
    pub fn open(dir: &Path, identity: &DataIdentity) -> Result<Self, OpenError> {
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .segment_size(SLED_SEGMENT_BYTES)
            .open()
            .map_err(|source| OpenError::Sled {
                path: sled_dir.clone(),
                source,
            })?;
        let log_sync = Arc::new(LogSync::default());
        let storage = Storage {
            flusher: Flusher::start(db.clone(), sled_dir.clone(), log_sync.clone()),
            db,
            dir: dir.to_owned(),
            stats: Arc::default(),
            log_sync,
        };
        storage.check_identity(&sled_dir, identity)?;
        Ok(storage)
    }

    /// The cluster id recorded in this data directory, if any (see [`CLUSTER_ID`]).
    pub fn cluster_id(&self) -> Result<Option<String>, OpenError> {
        let path = self.dir.join("sled");
        let raw = self.db.get(CLUSTER_ID).map_err(|source| OpenError::Sled {
            path: path.clone(),
            source,
        })?;
        raw.map(|r| {
            String::from_utf8(r.to_vec()).map_err(|e| OpenError::CorruptClusterId {
                path,
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Records the cluster id of a member seeded by `gridraft restore` (made durable by the
    /// seed's final flush).
    pub fn set_cluster_id(&self, id: &str) -> Result<(), OpenError> {
        self.db
            .insert(CLUSTER_ID, id.as_bytes())
            .map_err(|source| OpenError::Sled {
                path: self.dir.join("sled"),
                source,
            })?;
        Ok(())
    }

    fn check_identity(&self, path: &Path, expected: &DataIdentity) -> Result<(), OpenError> {
        let sled_err = |source| OpenError::Sled {
            path: path.to_owned(),
            source,
        };
        match self.db.get(b"identity").map_err(sled_err)? {
            Some(raw) => {
                let found: DataIdentity =
                    serde_json::from_slice(&raw).map_err(|e| OpenError::Corrupt {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    })?;
                if found.cluster != expected.cluster {
                    return Err(OpenError::ForeignCluster {
                        path: path.to_owned(),
                        found: found.cluster,
                        expected: expected.cluster.clone(),
                    });
                }
                if found.node_id != expected.node_id {
                    return Err(OpenError::ForeignMember {
                        path: path.to_owned(),
                        found: found.node_id,
                        expected: expected.node_id,
                    });
                }
                Ok(())
            }
            None => {
                let raw = serde_json::to_vec(expected).expect("identity always serialises");
                self.db.insert(b"identity", raw).map_err(sled_err)?;
                sync(&self.db, path).map_err(|source| OpenError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}
