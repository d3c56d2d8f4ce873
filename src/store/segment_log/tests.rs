use std::fs;
use std::path::Path;
use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

fn entries(term: u64, range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

/// Small segments, so a few entries span several files.
fn open(dir: &Path, last_purged: Option<u64>) -> io::Result<SegmentLog> {
    SegmentLog::open_with(dir, last_purged, Vec::new(), Arc::default(), 200, false)
}

/// A log of entries 1..=n appended one at a time, so they spread over several segments.
fn filled(dir: &Path, n: u64) -> SegmentLog {
    let log = open(dir, None).unwrap();
    for i in 1..=n {
        log.append(vec![entry(1, i)]).unwrap();
    }
    log
}

fn segment_path(dir: &Path, first: u64) -> std::path::PathBuf {
    dir.join(LOG_DIR).join(segment_name(first))
}

/// Cuts the segment starting at `first` to `len` bytes, as a crash can leave it.
fn cut(dir: &Path, first: u64, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir, first))
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn ids(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn indexes(log: &SegmentLog, start: u64, end: u64) -> Vec<u64> {
    ids(&log.read(start, end).unwrap())
}

fn segments(dir: &Path) -> Vec<u64> {
    list(&dir.join(LOG_DIR))
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect()
}

#[test]
fn entries_survive_a_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    log.sync.sync().unwrap();
    assert!(segments(dir.path()).len() > 2, "small segments roll");
    drop(log);
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..=30).collect::<Vec<_>>());
    assert_eq!(indexes(&log, 10, 13), vec![10, 11, 12]);
    assert_eq!(log.last_log_id().unwrap().index, 30);
    log.append(entries(2, 31..33)).unwrap();
    assert_eq!(log.last_log_id().unwrap(), entry(2, 32).log_id);
}

#[test]
fn an_append_that_does_not_follow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), None).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    assert!(log.append(vec![entry(1, 5)]).is_err());
    assert!(log.append(vec![entry(1, 3)]).is_err());
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), None).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    drop(log);
    let last = *segments(dir.path()).last().unwrap();
    let len = fs::metadata(segment_path(dir.path(), last)).unwrap().len();
    // Half of the last record reached the disk.
    cut(dir.path(), last, len - 5);
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2]);
    log.append(vec![entry(1, 3)]).unwrap();
    drop(log);
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
}

#[test]
fn a_flipped_byte_in_the_last_record_cuts_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), None).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    drop(log);
    let last = *segments(dir.path()).last().unwrap();
    let path = segment_path(dir.path(), last);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2]);
}

#[test]
fn damage_before_the_last_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    drop(log);
    let first = segments(dir.path())[0];
    let path = segment_path(dir.path(), first);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let err = open(dir.path(), None).err().expect("damage is an error");
    assert!(err.to_string().contains("damaged record"), "{err}");
}

#[test]
fn truncate_removes_the_tail_durably() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    log.truncate(12).unwrap();
    assert_eq!(log.last_log_id().unwrap().index, 11);
    log.append(entries(2, 12..15)).unwrap();
    drop(log);
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..15).collect::<Vec<_>>());
    let terms: Vec<u64> = log
        .read(10, 15)
        .unwrap()
        .iter()
        .map(|e| e.log_id.leader_id.term)
        .collect();
    assert_eq!(terms, vec![1, 1, 2, 2, 2]);
}

#[test]
fn a_truncation_interrupted_by_a_crash_ends_the_log_at_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    // The crash came after the second segment was cut to its first entry, before the later
    // segments were deleted.
    let second = segs[1];
    let loc = {
        let inner = log.inner.lock().unwrap();
        inner.locs[(second + 1 - inner.first) as usize]
    };
    drop(log);
    cut(dir.path(), second, loc.offset);
    let log = open(dir.path(), None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..=second).collect::<Vec<_>>());
    assert_eq!(segments(dir.path()), vec![segs[0], second]);
    log.append(vec![entry(2, second + 1)]).unwrap();
    assert_eq!(log.last_log_id().unwrap().index, second + 1);
}

#[test]
fn purge_deletes_whole_segments_and_a_reopen_skips_purged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    let before = segments(dir.path());
    log.purge(20).unwrap();
    let after = segments(dir.path());
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(after[0] <= 21, "the segment holding 21 stays: {after:?}");
    assert_eq!(indexes(&log, 0, u64::MAX), (21..=30).collect::<Vec<_>>());
    // The dead segments left the log by a rename; the reaper deletes them soon after.
    let doomed = || {
        fs::read_dir(dir.path().join(LOG_DIR))
            .unwrap()
            .filter(|e| reap::is_doomed(&e.as_ref().unwrap().path()))
            .count()
    };
    assert!(
        reap::eventually(|| doomed() == 0),
        "{} purged segments still waiting",
        doomed()
    );
    drop(log);
    let log = open(dir.path(), Some(20)).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (21..=30).collect::<Vec<_>>());
}

#[test]
fn after_a_snapshot_past_its_end_the_log_restarts_at_the_new_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), None).unwrap();
    log.append(entries(1, 1..6)).unwrap();
    // A snapshot up to 100 was installed: everything is purged, the log goes on at 101.
    log.purge(100).unwrap();
    assert_eq!(log.last_log_id(), None);
    assert!(log.inner.lock().unwrap().recent.is_empty());
    log.append(entries(3, 101..104)).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![101, 102, 103]);
    drop(log);
    let log = open(dir.path(), Some(100)).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![101, 102, 103]);
}

#[test]
fn a_log_kept_in_sled_moves_into_segments() {
    let dir = tempfile::tempdir().unwrap();
    // A partial move interrupted by a crash: stale segments are replaced.
    let stale = open(dir.path(), None).unwrap();
    stale.append(entries(1, 1..3)).unwrap();
    drop(stale);
    let legacy: Vec<Vec<u8>> = entries(1, 5..9)
        .iter()
        .map(|e| bincode::serialize(e).unwrap())
        .collect();
    let log =
        SegmentLog::open_with(dir.path(), Some(4), legacy, Arc::default(), 200, false).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![5, 6, 7, 8]);
    drop(log);
    let log = open(dir.path(), Some(4)).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![5, 6, 7, 8]);
}

#[test]
fn sync_covers_every_segment_written_and_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 30);
    {
        let st = log.sync.state.lock().unwrap();
        assert_eq!(st.files.len(), segments(dir.path()).len());
        assert!(st.dir.is_some());
    }
    log.sync.sync().unwrap();
    let st = log.sync.state.lock().unwrap();
    assert!(st.files.is_empty() && st.dir.is_none());
}

#[test]
fn a_limited_read_stops_at_the_byte_budget_but_returns_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 10);
    let one = log.read(1, 2).unwrap();
    let record = bincode::serialized_size(&one[0]).unwrap();
    assert_eq!(
        ids(&log.read_limited(1, 11, 3 * record).unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(&log.read_limited(4, 11, 3 * record + 1).unwrap()),
        vec![4, 5, 6]
    );
    assert_eq!(ids(&log.read_limited(5, 11, 1).unwrap()), vec![5]);
    assert_eq!(
        ids(&log.read_limited(9, 11, u64::MAX).unwrap()),
        vec![9, 10]
    );
    assert!(log.read_limited(11, 20, u64::MAX).unwrap().is_empty());
}

/// Opens with segments large enough that a few entries share one file.
fn open_large(dir: &Path) -> io::Result<SegmentLog> {
    SegmentLog::open_with(dir, None, Vec::new(), Arc::default(), 1 << 20, false)
}

/// The only segment's path and bytes, with the offset of each record in it.
fn one_segment(dir: &Path) -> (std::path::PathBuf, Vec<u8>, Vec<u64>) {
    let segs = segments(dir);
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    let path = segment_path(dir, segs[0]);
    let bytes = fs::read(&path).unwrap();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        at += HEADER as usize + len as usize;
    }
    (path, bytes, offsets)
}

fn big_entry(index: u64, bytes: usize) -> Entry {
    let session = crate::session::Session {
        id: format!("s{index}"),
        uri: "http://node:5555".into(),
        start: "2024-01-01T00:00:00Z".into(),
        capabilities: "x".repeat(bytes),
        stereotype: "{}".into(),
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(crate::map::Proposal {
            at: 1,
            event_id: None,
            op: crate::map::Op::add(session),
        }),
    }
}

#[test]
fn an_append_the_reader_could_not_read_back_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..3)).unwrap();
    let before = fs::read(segment_path(dir.path(), 1)).unwrap();
    let huge = big_entry(3, MAX_RECORD as usize);
    assert!(
        log.append(vec![huge]).is_err(),
        "an append of a record over {MAX_RECORD} bytes is refused"
    );
    assert_eq!(fs::read(segment_path(dir.path(), 1)).unwrap(), before);
    assert_eq!(log.last_log_id().unwrap().index, 2);
    log.append(vec![entry(1, 3)]).unwrap();
    drop(log);
    let log = open_large(dir.path()).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
}

#[test]
fn an_oversized_length_in_the_middle_of_the_last_segment_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    drop(log);
    let (path, mut bytes, offsets) = one_segment(dir.path());
    let at = offsets[1] as usize;
    bytes[at..at + 4].copy_from_slice(&(MAX_RECORD + 1).to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = open_large(dir.path())
        .err()
        .expect("an oversized length mid-log fails the open");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(&format!("byte {at}")),
        "{msg}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_bad_checksum_followed_by_valid_records_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    drop(log);
    let (path, mut bytes, offsets) = one_segment(dir.path());
    let at = offsets[1] as usize + HEADER as usize + 2;
    bytes[at] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = open_large(dir.path())
        .err()
        .expect("a bad record with a valid one after it fails the open");
    assert!(
        err.to_string()
            .contains(&format!("damaged record at byte {}", offsets[1])),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_bad_last_record_before_the_flushed_end_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..4)).unwrap();
    // The group commit made all three durable: they may have been acknowledged.
    log.sync.sync().unwrap();
    drop(log);
    let (path, mut bytes, offsets) = one_segment(dir.path());
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = open_large(dir.path())
        .err()
        .expect("damage below the flushed end fails the open");
    assert!(
        err.to_string()
            .contains(&format!("damaged record at byte {}", offsets[2])),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_torn_write_after_the_flushed_end_is_still_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..3)).unwrap();
    log.sync.sync().unwrap();
    // Written but never synced (so never acknowledged), then cut short by the crash.
    log.append(entries(1, 3..5)).unwrap();
    drop(log);
    let (path, bytes, offsets) = one_segment(dir.path());
    cut(dir.path(), 1, offsets[3] + 5);
    let log = open_large(dir.path()).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
    assert_eq!(fs::metadata(&path).unwrap().len(), offsets[3]);
    assert!(bytes.len() as u64 > offsets[3]);
}

#[test]
fn a_zero_filled_tail_left_by_a_power_loss_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..3)).unwrap();
    drop(log);
    let (path, mut bytes, _) = one_segment(dir.path());
    let end = bytes.len() as u64;
    // The file grew but the blocks holding the new records never reached the disk.
    bytes.extend_from_slice(&[0; 300]);
    fs::write(&path, &bytes).unwrap();
    let log = open_large(dir.path()).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2]);
    assert_eq!(fs::metadata(&path).unwrap().len(), end);
}

#[test]
fn a_truncation_lowers_the_flushed_end_so_a_later_torn_write_is_still_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_large(dir.path()).unwrap();
    log.append(entries(1, 1..6)).unwrap();
    log.sync.sync().unwrap();
    log.truncate(3).unwrap();
    // New entries where the removed ones were, never synced, the last one cut short.
    log.append(entries(2, 3..5)).unwrap();
    drop(log);
    let (_, _, offsets) = one_segment(dir.path());
    cut(dir.path(), 1, offsets[3] + 3);
    let log = open_large(dir.path()).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
}

#[test]
fn a_whole_record_over_the_limit_written_by_an_earlier_version_is_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(LOG_DIR)).unwrap();
    let big = big_entry(1, MAX_RECORD as usize);
    let payload = bincode::serialize(&big).unwrap();
    assert!(payload.len() > MAX_RECORD as usize);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    drop(payload);
    fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
    drop(bytes);
    let log = open_large(dir.path()).unwrap();
    assert_eq!(log.read(1, 2).unwrap(), vec![big]);
    log.append(vec![entry(1, 2)]).unwrap();
}

fn log_ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.index, e.log_id.leader_id.term))
        .collect()
}

/// Appends, truncations and purges with the recent entries held up to `limit` bytes; what is
/// read back must be what a reopened log (which holds none in memory) reads from its files.
fn truncate_and_purge_with_recent_limit(limit: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), None).unwrap();
    log.inner.lock().unwrap().recent_limit = limit;
    log.append(entries(1, 1..6)).unwrap();
    log.append(entries(1, 6..11)).unwrap();
    log.truncate(7).unwrap();
    log.append(entries(2, 7..9)).unwrap();
    log.truncate(8).unwrap();
    log.append(entries(3, 8..10)).unwrap();
    log.purge(3).unwrap();
    let expected = vec![(4, 1), (5, 1), (6, 1), (7, 2), (8, 3), (9, 3)];
    assert_eq!(log_ids(&log.read(0, u64::MAX).unwrap()), expected);
    assert_eq!(log_ids(&log.read_limited(5, 9, 0).unwrap()), vec![(5, 1)]);
    {
        let inner = log.inner.lock().unwrap();
        assert!(inner.recent.len() <= inner.locs.len());
        let held: u64 = inner.recent.iter().map(|(_, len)| u64::from(*len)).sum();
        assert_eq!(held, inner.recent_bytes);
        assert!(held <= limit || inner.recent.len() == 1, "{held} > {limit}");
    }
    log.sync.sync().unwrap();
    drop(log);
    let log = open(dir.path(), Some(3)).unwrap();
    assert_eq!(log_ids(&log.read(0, u64::MAX).unwrap()), expected);
}

#[test]
fn entries_read_from_memory_are_the_log_after_truncations_and_purges() {
    truncate_and_purge_with_recent_limit(u64::MAX);
}

#[test]
fn entries_read_partly_from_memory_and_partly_from_files_are_the_log() {
    // Room for about two records: reads cross from the files to the recent entries.
    let one = bincode::serialized_size(&entry(1, 1)).unwrap();
    truncate_and_purge_with_recent_limit(2 * one);
}

#[test]
fn a_batch_of_entries_is_encoded_into_one_buffer_of_its_exact_size() {
    let batch: Vec<Entry> = (1..=50)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(crate::map::Proposal {
                at: 0,
                event_id: None,
                op: crate::map::Op::Remove {
                    id: "x".repeat(3000),
                    reason: crate::session::RemovalReason::QuitCommand,
                },
            }),
        })
        .collect();
    let (buf, records) = encode(&batch).unwrap();
    assert_eq!(buf.capacity(), buf.len());
    assert_eq!(records.len(), 50);
    let last = records.last().unwrap();
    assert_eq!(last.start + HEADER + u64::from(last.len), buf.len() as u64);
}

mod prealloc;
