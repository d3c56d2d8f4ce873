use std::io::{BufReader, BufWriter, Seek, Write};

use super::*;
use crate::map::{Lookup, RemovalSource};
use crate::session::RemovalReason;

/// A map holding only the given tombstones, oldest first, inserted directly (past any cap that
/// `apply` keeps), so that the snapshot form alone is tested.
fn with_tombstones(tombstones: Vec<(String, Tombstone)>) -> SessionMap {
    let mut m = SessionMap::default();
    for (id, t) in tombstones {
        let id: Arc<str> = Arc::from(id);
        m.tombstone_order.push_back((t.removed_at, id.clone()));
        m.tombstones.insert(id, t);
    }
    m
}

fn tombstone(at: i64, node: String) -> Tombstone {
    Tombstone {
        removed_at: at,
        reason: RemovalReason::QuitCommand,
        node,
        source: RemovalSource::Unknown,
    }
}

fn sorted(m: &SessionMap) -> Vec<(String, Tombstone)> {
    let mut v: Vec<_> = m
        .tombstones()
        .map(|(id, t)| (id.to_owned(), t.clone()))
        .collect();
    v.sort_by_key(|(_, t)| t.removed_at);
    v
}

#[test]
fn many_large_tombstones_survive_a_snapshot() {
    // More node URI bytes in all than any one snapshot field may hold.
    let each = 90 << 20;
    let m = with_tombstones(
        (0..3)
            .map(|i| {
                (
                    format!("s{i}"),
                    tombstone(i, char::from(b'a' + i as u8).to_string().repeat(each)),
                )
            })
            .collect(),
    );
    let mut file = tempfile::tempfile().unwrap();
    {
        let mut w = BufWriter::new(&mut file);
        m.encode(&mut w).unwrap();
        w.flush().unwrap();
    }
    file.rewind().unwrap();
    let back = SessionMap::decode(BufReader::new(file)).unwrap();
    assert_eq!(sorted(&back), sorted(&m));
    assert!(matches!(back.get("s2"), Lookup::Removed(t) if t.node.len() == each));
}

#[test]
fn encoding_refuses_what_decoding_would_refuse() {
    let m = with_tombstones(vec![(
        "s".into(),
        tombstone(1, "n".repeat(MAX_FIELD as usize + 1)),
    )]);
    let err = m
        .encode(io::sink())
        .expect_err("a tombstone over the field limit");
    assert!(err.to_string().contains(&MAX_FIELD.to_string()), "{err}");

    let mut m = SessionMap::default();
    let body = vec![b' '; MAX_FIELD as usize + 1];
    let empty = Span { start: 0, end: 0 };
    m.insert_record(
        Record::from_parts("s".into(), "u".into(), "t".into(), body, empty, empty).unwrap(),
    );
    assert!(
        m.encode(io::sink()).is_err(),
        "a session body over the field limit"
    );
}

/// `testdata/format-v1.snap` was written by the version 1 encoder from live-1 (a Chrome
/// session), live-2, gone-1 (removed at 14), gone-2 (removed at 15 by a node-restarted event
/// 0x1234) and the redis mirror's progress 42.
#[test]
fn a_snapshot_in_the_previous_format_still_decodes() {
    let v1 = include_bytes!("../testdata/format-v1.snap");
    let m = SessionMap::decode(&v1[..]).unwrap();
    check_fixture(&m);
    // And the map written again in the current format reads back the same.
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), VERSION);
    check_fixture(&SessionMap::decode(bytes.as_slice()).unwrap());
}

/// `testdata/format-v2.snap` was written by the version 2 encoder from the version 1 fixture
/// above: the same map, with add indexes and sections, and removals without a source.
#[test]
fn a_snapshot_in_format_version_2_still_decodes() {
    let v2 = include_bytes!("../testdata/format-v2.snap");
    assert_eq!(u16::from_le_bytes([v2[6], v2[7]]), 2);
    let m = SessionMap::decode(&v2[..]).unwrap();
    check_fixture(&m);
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    check_fixture(&SessionMap::decode(bytes.as_slice()).unwrap());
}

#[test]
fn the_reconciler_reasons_and_every_source_survive_a_snapshot() {
    let removal = |at, reason, source| Tombstone {
        removed_at: at,
        reason,
        node: "http://n:5555".into(),
        source,
    };
    let m = with_tombstones(vec![
        (
            "lost".into(),
            removal(1, RemovalReason::NodeLostSession, RemovalSource::Reconciler),
        ),
        (
            "down".into(),
            removal(
                2,
                RemovalReason::NodeUnreachable { for_ms: 301_500 },
                RemovalSource::Reconciler,
            ),
        ),
        (
            "deleted".into(),
            removal(3, RemovalReason::QuitCommand, RemovalSource::Delete),
        ),
        (
            "closed".into(),
            removal(4, RemovalReason::Timeout, RemovalSource::Event),
        ),
    ]);
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    let back = SessionMap::decode(bytes.as_slice()).unwrap();
    assert_eq!(sorted(&back), sorted(&m));
}

fn check_fixture(m: &SessionMap) {
    assert_eq!(m.len(), 2);
    assert_eq!(m.clock, 16);
    assert!(
        matches!(m.get("live-1"), Lookup::Found(r) if r.session().capabilities.contains("goog:chromeOptions"))
    );
    assert!(matches!(m.get("live-2"), Lookup::Found(r) if &*r.uri == "http://n2:5555"));
    assert_eq!(
        sorted(m),
        vec![
            ("gone-1".to_owned(), tombstone(14, "http://n3:5555".into())),
            (
                "gone-2".to_owned(),
                Tombstone {
                    removed_at: 15,
                    reason: RemovalReason::NodeRestarted,
                    node: "http://n4:5555".into(),
                    source: RemovalSource::Unknown,
                }
            ),
        ]
    );
    assert!(m.events.contains_key(&Uuid::from_u128(0x1234)));
    assert_eq!(m.mirror_progress("redis"), 42);
}
