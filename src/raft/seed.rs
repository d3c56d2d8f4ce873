//! Seeding a new member's data directory from a backup (`gridraft restore`): the map becomes
//! the member's current snapshot, at the backup's log index, with the new cluster's member
//! list as its membership. On its first start the member finds itself initialised at that
//! index (openraft purges the empty log up to the snapshot), so the members seeded from one
//! backup form a cluster holding exactly that map, with no leader needed to copy it.
//!
//! The index is kept, not restarted at 1: sessions carry the index of the entry that added
//! them, and a Grid event may remove only sessions added at or below the applied index it was
//! stamped with. The term is 0, as for a freshly initialised group, so the first election of
//! the new cluster (term 1) appends after it. This file writes a directory; it never opens Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, Membership, SnapshotMeta, StoredMembership};

use super::state_machine::{SnapshotRecord, CURRENT_SNAPSHOT, TREE};
use super::{LogId, MemberId};
use crate::map::SessionMap;
use crate::store::durable::{DataIdentity, OpenError, Storage};
use crate::store::snapshot_file::{self, SNAPSHOT_DIR};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("write the snapshot into {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("record the snapshot in sled: {0}")]
    Record(String),
}

/// What a seeded member starts from.
pub struct Seed<'a> {
    pub identity: DataIdentity,
    pub cluster_id: &'a str,
    /// The log index the map is at (the backup's).
    pub index: u64,
    /// The new cluster's voters and their peer addresses.
    pub members: &'a BTreeMap<MemberId, String>,
}

/// Writes `map` into the empty data directory `dir` as the current snapshot of `seed`'s member.
pub fn seed(dir: &Path, seed: &Seed<'_>, map: &SessionMap) -> Result<(), SeedError> {
    let storage = Storage::open(dir, &seed.identity)?;
    storage.set_cluster_id(seed.cluster_id)?;
    let snapshots = dir.join(SNAPSHOT_DIR);
    let write_err = |source| SeedError::Write {
        path: snapshots.clone(),
        source,
    };
    std::fs::create_dir_all(&snapshots).map_err(write_err)?;
    let name = snapshot_file::file_name(seed.index);
    let tmp = snapshots.join(format!("{name}.tmp"));
    let written = (|| {
        snapshot_file::write_new(&tmp, |w| map.encode(w))?;
        snapshot_file::install(&tmp, &snapshots, &name)
    })();
    written.map_err(write_err)?;

    let log_id = LogId::new(CommittedLeaderId::new(0, 0), seed.index);
    let voters: BTreeSet<MemberId> = seed.members.keys().copied().collect();
    let nodes: BTreeMap<MemberId, BasicNode> = seed
        .members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    let record = SnapshotRecord {
        meta: SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![voters], nodes),
            ),
            snapshot_id: format!("restored-{}-{}", seed.cluster_id, seed.index),
        },
        file: name,
    };
    let raw = bincode::serialize(&record).map_err(|e| SeedError::Record(e.to_string()))?;
    storage
        .db
        .open_tree(TREE)
        .and_then(|t| t.insert(CURRENT_SNAPSHOT, raw))
        .map_err(|e| SeedError::Record(e.to_string()))?;
    storage.flusher.flush_blocking().map_err(write_err)?;
    Ok(())
}
