//! openraft's own storage test suite, run against the log store (segment files and sled) and
//! the state machine, and what the suite does not do: closing the store and opening it again.

use gridraft::raft::log_store::LogStore;
use gridraft::raft::state_machine::StateMachine;
use gridraft::raft::{open_storage, StorageError, TypeConfig};
use gridraft::store::durable::DataIdentity;
use openraft::testing::{StoreBuilder, Suite};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let identity = DataIdentity {
            cluster: "suite".into(),
            node_id: 0,
        };
        let (_storage, log, sm) = open_storage(dir.path(), &identity, true).expect("open storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_the_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}

fn blank(term: u64, index: u64) -> gridraft::raft::Entry {
    gridraft::raft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
        payload: openraft::EntryPayload::Blank,
    }
}

fn identity() -> DataIdentity {
    DataIdentity {
        cluster: "reopen".into(),
        node_id: 0,
    }
}

/// Opens the storage again once the previous instance's fsync thread has let go of sled.
async fn reopen(
    dir: &std::path::Path,
) -> (gridraft::store::durable::Storage, LogStore, StateMachine) {
    for _ in 0..250 {
        match open_storage(dir, &identity(), true) {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    open_storage(dir, &identity(), true).expect("reopen the storage")
}

/// What openraft's suite does not do: close the store and open it again.
#[tokio::test]
async fn the_log_reopens_with_its_entries_vote_and_purge_point() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::RaftLogReader;

    let dir = tempfile::tempdir().unwrap();
    {
        let (_storage, mut log, _sm) = open_storage(dir.path(), &identity(), true).unwrap();
        log.blocking_append((1..=50).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.save_vote(&openraft::Vote::new_committed(2, 1))
            .await
            .unwrap();
        log.truncate(blank(1, 41).log_id).await.unwrap();
        log.blocking_append((41..=45).map(|i| blank(2, i)))
            .await
            .unwrap();
        log.purge(blank(1, 30).log_id).await.unwrap();
    }
    let (_storage, mut log, _sm) = reopen(dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(blank(1, 30).log_id));
    assert_eq!(state.last_log_id, Some(blank(2, 45).log_id));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(2, 1))
    );
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let ids: Vec<_> = entries.iter().map(|e| e.log_id).collect();
    let want: Vec<_> = (31..=40)
        .map(|i| blank(1, i).log_id)
        .chain((41..=45).map(|i| blank(2, i).log_id))
        .collect();
    assert_eq!(ids, want);
}

/// A data directory written by a version that kept the log in sled opens with the same log.
#[tokio::test]
async fn a_log_kept_in_sled_is_moved_into_segment_files() {
    use openraft::storage::RaftLogStorage;
    use openraft::RaftLogReader;

    let dir = tempfile::tempdir().unwrap();
    {
        let (storage, _log, _sm) = open_storage(dir.path(), &identity(), true).unwrap();
        let tree = storage.db.open_tree("raft_log").unwrap();
        for i in 5..=9u64 {
            tree.insert(i.to_be_bytes(), bincode::serialize(&blank(1, i)).unwrap())
                .unwrap();
        }
        let meta = storage.db.open_tree("raft_meta").unwrap();
        meta.insert(
            "last_purged",
            bincode::serialize(&blank(1, 4).log_id).unwrap(),
        )
        .unwrap();
        storage.db.flush().unwrap();
    }
    for _ in 0..2 {
        let (storage, mut log, _sm) = reopen(dir.path()).await;
        assert!(storage.db.open_tree("raft_log").unwrap().is_empty());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(blank(1, 9).log_id));
        let entries = log.try_get_log_entries(5..=9).await.unwrap();
        assert_eq!(entries.len(), 5);
    }
}

/// An entry carrying one session whose capabilities take `bytes`.
fn big(index: u64, bytes: usize) -> gridraft::raft::Entry {
    let session = gridraft::session::Session {
        id: format!("s{index}"),
        uri: "http://10.0.0.5:5555".into(),
        start: "2024-05-01T10:20:30.123400Z".into(),
        capabilities: format!("{{\n  \"x\": \"{}\"\n}}", "p".repeat(bytes)),
        stereotype: "{\n}".into(),
    };
    gridraft::raft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: openraft::EntryPayload::Normal(gridraft::map::Proposal {
            at: 0,
            event_id: None,
            op: gridraft::map::Op::add(session),
        }),
    }
}

/// What replication asks for: at most `MAX_APPEND_BYTES` of entries per request, and never
/// nothing (openraft's contract), however far behind the follower is.
#[tokio::test]
async fn replication_reads_at_most_a_megabyte_of_entries_per_request() {
    use gridraft::raft::log_store::MAX_APPEND_BYTES;
    use openraft::storage::RaftLogStorageExt;
    use openraft::RaftLogReader;

    let dir = tempfile::tempdir().unwrap();
    let (_storage, mut log, _sm) = open_storage(dir.path(), &identity(), true).unwrap();
    log.blocking_append((1..=20).map(|i| big(i, 300 * 1024)))
        .await
        .unwrap();
    log.blocking_append((21..=22).map(|i| big(i, 3 << 20)))
        .await
        .unwrap();
    let size = |entries: &[gridraft::raft::Entry]| -> u64 {
        entries
            .iter()
            .map(|e| bincode::serialized_size(e).unwrap())
            .sum()
    };
    let first = log.limited_get_log_entries(1, 23).await.unwrap();
    assert_eq!(
        first.len(),
        3,
        "three 300 KiB entries fit in 1 MiB, four do not"
    );
    assert!(size(&first) <= MAX_APPEND_BYTES);
    let last = log.limited_get_log_entries(19, 23).await.unwrap();
    let indexes: Vec<u64> = last.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![19, 20], "stops before the 3 MiB entry");
    let huge = log.limited_get_log_entries(21, 23).await.unwrap();
    assert_eq!(
        huge.len(),
        1,
        "an entry larger than the limit still goes, alone"
    );
    assert_eq!(log.try_get_log_entries(1..23).await.unwrap().len(), 22);
}

/// `raft.preallocate-log-segments`: with it, a log past half its first 64 MiB segment gets the
/// next one zero-filled (`log/next.prealloc`), and rolls into it; without it, the next segment
/// starts empty.
#[tokio::test]
async fn the_next_log_segment_is_zero_filled_only_when_configured() {
    use openraft::storage::RaftLogStorageExt;

    const SEGMENT: u64 = 64 << 20;
    for preallocate in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (_storage, mut log, _sm) = open_storage(dir.path(), &identity(), preallocate).unwrap();
        // 36 MiB: past half the first segment.
        for i in 1..=36 {
            log.blocking_append([big(i, 1 << 20)]).await.unwrap();
        }
        let next = dir.path().join("log").join("next.prealloc");
        if preallocate {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::fs::metadata(&next).map(|m| m.len()).unwrap_or(0) != SEGMENT {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no zero-filled segment"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        // 30 MiB more: the first segment is full and the log rolls.
        for i in 37..=66 {
            log.blocking_append([big(i, 1 << 20)]).await.unwrap();
        }
        let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        assert_eq!(segments.len(), 2, "{segments:?}");
        let len = std::fs::metadata(&segments[1]).unwrap().len();
        if preallocate {
            assert_eq!(len, SEGMENT, "the roll took the zero-filled segment");
        } else {
            assert!(
                len < 8 << 20,
                "an empty segment grown by its entries: {len}"
            );
            assert!(!next.exists());
        }
    }
}
