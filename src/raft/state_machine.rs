//! The openraft state machine: applies committed [`Proposal`](super::Proposal)s to the in-memory
//! [`SessionMap`] and keeps its durable image, the latest snapshot, in sled.
//!
//! The map is rebuilt on start from that snapshot plus the log entries after it, which openraft
//! replays. A snapshot is an O(1) clone of the persistent map taken on the apply path; encoding
//! and writing it happen on a blocking thread, off both the apply and the request paths.

use std::io::Cursor;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::durable::Storage;
use super::session_map::{MapImage, SessionMap, SessionMapReader};
use super::{Applied, Entry, LogId, NodeId, StorageError, TypeConfig};

type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

const SNAPSHOT_META: &[u8] = b"snapshot_meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot_data";

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

/// What a snapshot holds besides its openraft metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    map: MapImage,
}

pub struct StateMachine {
    storage: Storage,
    tree: sled::Tree,
    map: SessionMapReader,
    last_applied: Option<LogId>,
    membership: Membership,
    applied_tx: watch::Sender<u64>,
}

impl StateMachine {
    /// Opens the state machine, restoring the latest snapshot if there is one.
    pub fn open(storage: &Storage) -> Result<Self, StorageError> {
        let tree = storage
            .db
            .open_tree("state_machine")
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let (applied_tx, _) = watch::channel(0);
        let mut sm = StateMachine {
            storage: storage.clone(),
            tree,
            map: SessionMapReader::default(),
            last_applied: None,
            membership: Membership::default(),
            applied_tx,
        };
        if let Some((meta, data)) = sm.read_snapshot()? {
            sm.restore(&meta, &data)?;
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

    fn read_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
        let read = |k| self.tree.get(k).map_err(|e| snap_err(ErrorVerb::Read, e));
        let (Some(meta), Some(data)) = (read(SNAPSHOT_META)?, read(SNAPSHOT_DATA)?) else {
            return Ok(None);
        };
        let meta: Meta = bincode::deserialize(&meta).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some((meta, data.to_vec())))
    }

    fn restore(&mut self, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
        let body: SnapshotBody =
            bincode::deserialize(data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let map = SessionMap::from_image(body.map);
        *self.map.inner.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish_applied();
        Ok(())
    }

    fn publish_applied(&self) {
        let index = self.last_applied.map(|l| l.index).unwrap_or(0);
        self.applied_tx.send_replace(index);
    }
}

/// Writes a snapshot into sled and waits until it is on disk.
async fn persist_snapshot(
    storage: &Storage,
    tree: &sled::Tree,
    meta: &Meta,
    data: &[u8],
) -> Result<(), StorageError> {
    let mut batch = sled::Batch::default();
    batch.insert(
        SNAPSHOT_META,
        bincode::serialize(meta).map_err(|e| snap_err(ErrorVerb::Write, e))?,
    );
    batch.insert(SNAPSHOT_DATA, data);
    tree.apply_batch(batch)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    storage
        .flusher
        .flush()
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))
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
                    EntryPayload::Normal(ref proposal) => map.apply(proposal),
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
            storage: self.storage.clone(),
            tree: self.tree.clone(),
            map: self.map.snapshot(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)?;
        persist_snapshot(&self.storage, &self.tree, meta, &data).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot from an O(1) copy of the map taken when openraft asked for it.
pub struct SnapshotBuilder {
    storage: Storage,
    tree: sled::Tree,
    map: SessionMap,
    last_applied: Option<LogId>,
    membership: Membership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let map = std::mem::take(&mut self.map);
        let data = tokio::task::spawn_blocking(move || {
            bincode::serialize(&SnapshotBody {
                map: map.to_image(),
            })
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
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
        persist_snapshot(&self.storage, &self.tree, &meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
