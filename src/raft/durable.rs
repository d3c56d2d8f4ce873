//! The storage seam: one sled database per member, and the group-commit flusher that makes
//! writes durable.
//!
//! sled's own `flush` ends in `sync_file_range`, which neither flushes the drive's cache nor the
//! file's metadata (sled issue 1452), so it is not a durability guarantee on its own. Every
//! durable write therefore goes through [`Flusher`]: one thread that takes every flush request
//! waiting at that moment, runs `Db::flush` once, then `fsync`s sled's files once, and only then
//! reports all of them complete. Under load one fsync covers many appends (group commit).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use serde::{Deserialize, Serialize};

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
    ForeignCluster { path: PathBuf, found: String, expected: String },
    #[error("data directory {path} belongs to member {found}, not member {expected}")]
    ForeignMember { path: PathBuf, found: u64, expected: u64 },
    #[error("data directory {path} has an unreadable identity record: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("fsync {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// A handle to the group-commit thread. Cloning is cheap.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Done>,
}

impl Flusher {
    fn start(db: sled::Db, dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel::<Done>();
        thread::Builder::new()
            .name("sled-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = sync(&db, &dir);
                    for done in batch {
                        done(clone_result(&result));
                    }
                }
            })
            .expect("spawning a thread at start-up only fails when the process is out of resources");
        Flusher { tx }
    }

    /// Calls `done` once everything written to the database before this call is on disk.
    pub fn flush_then(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.tx.send(Box::new(done)) {
            done(Err(io::Error::other("the fsync thread has stopped")));
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
            File::open(&path)?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// The member's sled database and its flusher.
#[derive(Clone)]
pub struct Storage {
    pub db: sled::Db,
    pub flusher: Flusher,
}

impl Storage {
    /// Opens (or creates) the database under `dir` and checks, or on first start records, the
    /// member's identity.
    pub fn open(dir: &Path, identity: &DataIdentity) -> Result<Self, OpenError> {
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .open()
            .map_err(|source| OpenError::Sled {
                path: sled_dir.clone(),
                source,
            })?;
        let storage = Storage {
            flusher: Flusher::start(db.clone(), sled_dir.clone()),
            db,
        };
        storage.check_identity(&sled_dir, identity)?;
        Ok(storage)
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
