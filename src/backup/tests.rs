use std::path::PathBuf;

use super::*;
use crate::map::{Op, Proposal};
use crate::session::test_session;

fn map_of(n: u64) -> SessionMap {
    let mut map = SessionMap::default();
    for i in 1..=n {
        let p = Proposal {
            at: i as i64,
            event_id: None,
            op: Op::add(test_session(&format!("s{i}"), "http://node:5555")),
        };
        map.apply_entry(i + 10, &p);
    }
    map
}

fn header(sessions: u64) -> BackupHeader {
    BackupHeader {
        format_version: FORMAT_VERSION,
        backup_id: "b-1".into(),
        cluster_name: "gridraft".into(),
        cluster_id: None,
        member: 1,
        index: sessions + 10,
        term: 3,
        sessions,
        created: "2026-01-31T12:00:00Z".into(),
    }
}

fn written(dir: &tempfile::TempDir, sessions: u64) -> PathBuf {
    let path = dir.path().join("backup.grb");
    let mut bytes = Vec::new();
    write(&header(sessions), &map_of(sessions), &mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_written_backup_reads_back_with_its_header_and_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 50);
    let (h, map) = read(&path).unwrap();
    assert_eq!(h, header(50));
    assert_eq!(map.len(), 50);
    assert!(matches!(map.get("s17"), crate::map::Lookup::Found(_)));
}

#[test]
fn a_truncated_backup_is_refused_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 50);
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len - 1, len / 2, 20, 5] {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        let e = read(&path).unwrap_err();
        assert!(
            matches!(e, BackupError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
        assert!(e.to_string().contains("is truncated"), "{e}");
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_image_is_refused_as_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(&dir, 50);
    let good = std::fs::read(&path).unwrap();
    let header_end = 14 + u32::from_le_bytes(good[10..14].try_into().unwrap()) as usize;
    for at in [header_end, header_end + 100, good.len() - 30] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let e = read(&path).unwrap_err();
        assert!(matches!(e, BackupError::Checksum { .. }), "byte {at}: {e}");
        assert!(e.to_string().contains("is corrupted"), "{e}");
    }
}

#[test]
fn a_file_that_is_not_a_backup_is_refused_by_its_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"just some text, long enough to hold a header").unwrap();
    let e = read(&path).unwrap_err();
    assert!(matches!(e, BackupError::Magic { .. }), "{e}");
}

#[test]
fn a_header_that_miscounts_the_sessions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.grb");
    let mut bytes = Vec::new();
    write(&header(7), &map_of(5), &mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let e = read(&path).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::Count {
                expected: 7,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
}
