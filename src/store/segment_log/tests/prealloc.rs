//! Preallocated segments (`prealloc.rs`): the roll takes them, a reopen keeps their zeros, a
//! torn write into them is cut, damage in them is still damage, and a log that preallocated
//! opens as well with preallocation off.

use super::*;

const PREALLOC_SEGMENT: u64 = 64 << 10;

fn open_preallocated(dir: &Path, last_purged: Option<u64>) -> io::Result<SegmentLog> {
    open_small(dir, last_purged, true)
}

/// A log of [`PREALLOC_SEGMENT`]-byte segments, preallocating or not.
fn open_small(dir: &Path, last_purged: Option<u64>, preallocate: bool) -> io::Result<SegmentLog> {
    SegmentLog::open_with(
        dir,
        last_purged,
        Vec::new(),
        Arc::default(),
        PREALLOC_SEGMENT,
        preallocate,
    )
}

fn prealloc_ready(log: &SegmentLog) -> bool {
    let inner = log.inner.lock().unwrap();
    inner.prealloc.as_ref().expect("preallocating").is_ready()
}

/// Appends entries of about 4 KiB from `next` on until a preallocated segment is ready, then
/// until the log rolls into it; returns the next index and the new segment's first index.
fn roll_into_preallocated(log: &SegmentLog, dir: &Path, mut next: u64) -> (u64, u64) {
    if segments(dir).is_empty() {
        log.append(vec![big_entry(next, 4000)]).unwrap();
        next += 1;
    }
    let before = segments(dir);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while segments(dir) == before {
        if !prealloc_ready(log)
            && log
                .inner
                .lock()
                .unwrap()
                .prealloc
                .as_ref()
                .unwrap()
                .asked_for()
        {
            // Asked for: wait for the thread rather than roll into an empty segment.
            assert!(
                std::time::Instant::now() < deadline,
                "no segment was preallocated"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        log.append(vec![big_entry(next, 4000)]).unwrap();
        next += 1;
    }
    let first = *segments(dir).last().unwrap();
    assert_eq!(
        fs::metadata(segment_path(dir, first)).unwrap().len(),
        PREALLOC_SEGMENT,
        "the roll took the preallocated segment"
    );
    (next, first)
}

/// A new log that has rolled into a preallocated segment: its directory, the log, the next
/// index and that segment's first index.
fn rolled_into_preallocated() -> (tempfile::TempDir, SegmentLog, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open_preallocated(dir.path(), None).unwrap();
    let (next, first) = roll_into_preallocated(&log, dir.path(), 1);
    (dir, log, next, first)
}

/// [`rolled_into_preallocated`], synced and closed: its directory, the next index, that
/// segment's first index and the size of its records.
fn rolled_and_closed() -> (tempfile::TempDir, u64, u64, u64) {
    let (dir, log, next, first) = rolled_into_preallocated();
    log.sync.sync().unwrap();
    let size = log.inner.lock().unwrap().segments[&first].size;
    drop(log);
    (dir, next, first, size)
}

/// Reopens the log, which must hold `1..next`, with the segment at `path` `len` bytes long.
fn reopened_holds(dir: &Path, next: u64, path: &Path, len: u64) -> SegmentLog {
    let log = open_preallocated(dir, None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..next).collect::<Vec<_>>());
    assert_eq!(fs::metadata(path).unwrap().len(), len, "{}", path.display());
    log
}

/// Appends entry `next` to a log holding `1..next`: it follows the last record, and all of them
/// read back after another reopen.
fn appends_go_on(log: SegmentLog, dir: &Path, next: u64) {
    log.append(vec![big_entry(next, 4000)]).unwrap();
    drop(log);
    let log = open_preallocated(dir, None).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..=next).collect::<Vec<_>>());
}

#[test]
fn the_roll_takes_a_zero_filled_segment_and_a_reopen_keeps_its_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_preallocated(dir.path(), None).unwrap();
    // The first segment is created empty: nothing was asked for before it half filled.
    log.append(vec![big_entry(1, 4000)]).unwrap();
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 1)).unwrap().len(),
        log.inner.lock().unwrap().segments[&1].size
    );
    let (next, first) = roll_into_preallocated(&log, dir.path(), 2);
    let path = segment_path(dir.path(), first);
    assert_eq!(fs::metadata(&path).unwrap().len(), PREALLOC_SEGMENT);
    let size = log.inner.lock().unwrap().segments[&first].size;
    assert!(size > 0 && size < PREALLOC_SEGMENT / 2, "{size}");
    // A log that filled a segment has the next one prepared at once, not at half full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !prealloc_ready(&log) {
        assert!(
            std::time::Instant::now() < deadline,
            "the next segment was not prepared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    log.sync.sync().unwrap();
    drop(log);

    // The zeros after the records are kept.
    let log = reopened_holds(dir.path(), next, &path, PREALLOC_SEGMENT);
    assert_eq!(log.inner.lock().unwrap().segments[&first].size, size);
    appends_go_on(log, dir.path(), next);
}

#[test]
fn a_write_torn_in_a_preallocated_segment_is_cut_and_the_entries_before_it_kept() {
    let (dir, next, first, size) = rolled_and_closed();
    // An append the crash interrupted: its header and the first part of its payload reached
    // the disk, the rest of the file is still zeros.
    let path = segment_path(dir.path(), first);
    let mut torn = Vec::new();
    torn.extend_from_slice(&4000u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.extend_from_slice(&[7; 1000]);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&torn, size)
        .unwrap();
    // Cut at the torn write.
    let log = reopened_holds(dir.path(), next, &path, size);
    appends_go_on(log, dir.path(), next);
}

#[test]
fn damage_in_a_preallocated_segment_is_still_damage() {
    let (dir, log, next, first) = rolled_into_preallocated();
    log.append(vec![big_entry(next, 4000)]).unwrap();
    log.sync.sync().unwrap();
    drop(log);
    // A flipped byte in the segment's first record, with a valid record after it.
    let path = segment_path(dir.path(), first);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, HEADER + 10).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], HEADER + 10).unwrap();
    let err = open_preallocated(dir.path(), None).err().expect("damage");
    assert!(
        err.to_string().contains("damaged record at byte 0"),
        "{err}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        PREALLOC_SEGMENT,
        "nothing was cut"
    );
}

#[test]
fn a_preallocated_segment_left_early_keeps_only_its_records() {
    let (dir, log, next, first) = rolled_into_preallocated();
    let size = log.inner.lock().unwrap().segments[&first].size;
    // A snapshot past the log's end was installed: the log goes on at a new index, in a new
    // segment, and the preallocated one, no longer the last, holds nothing past its records.
    log.purge(next + 99).unwrap();
    log.append(vec![big_entry(next + 100, 4000)]).unwrap();
    assert_eq!(
        fs::metadata(segment_path(dir.path(), first)).unwrap().len(),
        size
    );
    log.sync.sync().unwrap();
    drop(log);
    let log = open_preallocated(dir.path(), Some(next + 99)).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), vec![next + 100]);
}

#[test]
fn a_preallocated_log_reopened_with_preallocation_off_keeps_its_entries_and_drops_the_zeros() {
    let (dir, next, first, size) = rolled_and_closed();
    let log = open_small(dir.path(), None, false).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..next).collect::<Vec<_>>());
    let path = segment_path(dir.path(), first);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        size,
        "cut to its records"
    );
    // Appends go on after the last record, growing the segment again.
    log.append(vec![big_entry(next, 4000)]).unwrap();
    log.sync.sync().unwrap();
    assert!(fs::metadata(&path).unwrap().len() > size);
    drop(log);
    let log = open_small(dir.path(), None, false).unwrap();
    assert_eq!(indexes(&log, 0, u64::MAX), (1..=next).collect::<Vec<_>>());
}

#[test]
fn a_half_written_preallocation_from_an_earlier_process_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(LOG_DIR)).unwrap();
    let leftover = dir.path().join(LOG_DIR).join(super::super::prealloc::NEXT);
    fs::write(&leftover, [0u8; 100]).unwrap();
    let log = open_preallocated(dir.path(), None).unwrap();
    assert!(!leftover.exists());
    log.append(vec![big_entry(1, 10)]).unwrap();
    assert_eq!(segments(dir.path()), vec![1]);
}
