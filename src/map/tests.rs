use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

use crate::session::test_session as session;

fn add(at: i64, id: &str, uri: &str) -> Proposal {
    Proposal {
        at,
        event_id: None,
        op: Op::add(session(id, uri)),
    }
}

fn remove(at: i64, id: &str) -> Proposal {
    Proposal {
        at,
        event_id: None,
        op: Op::Remove {
            id: id.to_owned(),
            reason: RemovalReason::QuitCommand,
        },
    }
}

fn remove_by_uri(at: i64, uri: &str, event_id: Option<Uuid>) -> Proposal {
    Proposal {
        at,
        event_id,
        op: Op::RemoveByUri {
            uri: uri.to_owned(),
            reason: RemovalReason::NodeRestarted,
        },
    }
}

#[test]
fn re_add_replaces_and_moves_to_the_new_node() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n1:5555"));
    m.apply(&add(2, "a", "http://n2:5555"));
    assert_eq!(m.len(), 1);
    assert_eq!(
        m.apply(&remove_by_uri(3, "http://n1:5555", None)).changed,
        0
    );
    assert!(matches!(m.get("a"), Lookup::Found(r) if &*r.uri == "http://n2:5555"));
    assert_eq!(
        m.apply(&remove_by_uri(4, "http://n2:5555", None)).changed,
        1
    );
    assert!(matches!(m.get("a"), Lookup::Removed(t) if t.node == "http://n2:5555"));
}

#[test]
fn remove_by_uri_matches_exactly() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n:5555"));
    m.apply(&add(1, "b", "http://n:5555/"));
    m.apply(&add(1, "c", "http://n:5555"));
    assert_eq!(m.apply(&remove_by_uri(2, "http://n:5555", None)).changed, 2);
    assert!(matches!(m.get("b"), Lookup::Found(_)));
}

#[test]
fn removal_is_remembered_with_time_reason_and_node_then_expires_by_log_time() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n:5555"));
    m.apply(&remove(10, "a"));
    match m.get("a") {
        Lookup::Removed(t) => {
            assert_eq!(t.removed_at, 10);
            assert_eq!(t.reason, RemovalReason::QuitCommand);
            assert_eq!(t.node, "http://n:5555");
        }
        other => panic!("expected a tombstone, got {other:?}"),
    }
    // Removing an unknown id records nothing.
    m.apply(&remove(11, "never"));
    assert!(matches!(m.get("never"), Lookup::Missing));
    // Only a later log entry moves the clock past the expiry.
    m.apply(&remove(10 + TOMBSTONE_TTL_NANOS + 1, "x"));
    assert!(matches!(m.get("a"), Lookup::Missing));
}

#[test]
fn re_add_after_removal_is_found_again() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "u"));
    m.apply(&remove(2, "a"));
    m.apply(&add(3, "a", "u"));
    assert!(matches!(m.get("a"), Lookup::Found(_)));
}

#[test]
fn the_same_event_applies_once() {
    let mut m = SessionMap::default();
    let event = Uuid::new_v4();
    m.apply(&add(1, "a", "u"));
    let first = m.apply(&remove_by_uri(2, "u", Some(event)));
    assert_eq!((first.changed, first.duplicate), (1, false));
    m.apply(&add(3, "a", "u"));
    let again = m.apply(&remove_by_uri(4, "u", Some(event)));
    assert!(again.duplicate);
    assert!(matches!(m.get("a"), Lookup::Found(_)));
}

#[test]
fn event_memory_and_tombstones_are_bounded() {
    let mut m = SessionMap::default();
    for i in 0..(MAX_EVENT_IDS + 10) {
        m.apply(&remove_by_uri(i as i64, "u", Some(Uuid::new_v4())));
    }
    assert_eq!(m.events.len(), MAX_EVENT_IDS);
    assert_eq!(m.event_order.len(), MAX_EVENT_IDS);
    for i in 0..(MAX_TOMBSTONES + 5) {
        let id = format!("s{i}");
        m.apply(&add(1, &id, "u"));
        m.apply(&remove(1, &id));
    }
    assert!(m.tombstones.len() <= MAX_TOMBSTONES);
    assert!(m.tombstone_order.len() <= MAX_TOMBSTONES);
}

#[test]
fn image_round_trip_keeps_everything() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "u1"));
    m.apply(&add(2, "b", "u2"));
    m.apply(&remove(3, "a"));
    let e = Uuid::new_v4();
    m.apply(&remove_by_uri(4, "none", Some(e)));
    let mut back = round_trip(&m);
    assert!(matches!(back.get("a"), Lookup::Removed(_)));
    assert!(matches!(back.get("b"), Lookup::Found(_)));
    assert!(back.apply(&remove_by_uri(5, "none", Some(e))).duplicate);
    assert_eq!(back.apply(&remove_by_uri(6, "u2", None)).changed, 1);
}

#[derive(Debug, Clone)]
enum ModelOp {
    Add(u8, u8),
    Remove(u8),
    RemoveByUri(u8),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0u8..16, 0u8..4).prop_map(|(i, u)| ModelOp::Add(i, u)),
        (0u8..16).prop_map(ModelOp::Remove),
        (0u8..4).prop_map(ModelOp::RemoveByUri),
    ]
}

proptest! {
    /// The map behaves like a `BTreeMap<id, uri>`, and a snapshot image restores the same map.
    #[test]
    fn behaves_like_a_btreemap(ops in proptest::collection::vec(model_op(), 0..200)) {
        let mut m = SessionMap::default();
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        for (t, op) in ops.iter().enumerate() {
            let at = t as i64;
            match op {
                ModelOp::Add(i, u) => {
                    let (id, uri) = (format!("s{i}"), format!("http://n{u}"));
                    m.apply(&add(at, &id, &uri));
                    model.insert(id, uri);
                }
                ModelOp::Remove(i) => {
                    let id = format!("s{i}");
                    let changed = m.apply(&remove(at, &id)).changed;
                    prop_assert_eq!(changed == 1, model.remove(&id).is_some());
                }
                ModelOp::RemoveByUri(u) => {
                    let uri = format!("http://n{u}");
                    let before = model.len();
                    model.retain(|_, v| *v != uri);
                    let changed = m.apply(&remove_by_uri(at, &uri, None)).changed;
                    prop_assert_eq!(changed as usize, before - model.len());
                }
            }
        }
        let restored = round_trip(&m);
        for map in [&m, &restored] {
            prop_assert_eq!(map.len(), model.len());
            for i in 0..16u8 {
                let id = format!("s{i}");
                match (map.get(&id), model.get(&id)) {
                    (Lookup::Found(r), Some(uri)) => prop_assert_eq!(&*r.uri, uri.as_str()),
                    (Lookup::Found(_), None) => prop_assert!(false, "{} should be gone", id),
                    (_, Some(_)) => prop_assert!(false, "{} should be present", id),
                    (_, None) => {}
                }
            }
        }
    }
}

#[test]
fn mirror_progress_only_moves_forward_survives_snapshots_and_changes_no_session() {
    let progress = |index| Proposal {
        at: 5,
        event_id: None,
        op: Op::MirrorProgress {
            mirror: "redis".to_owned(),
            index,
        },
    };
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n1:5555"));
    assert_eq!(m.apply(&progress(7)).changed, 0);
    m.apply(&progress(3));
    assert_eq!(m.mirror_progress("redis"), 7);
    assert_eq!(m.mirror_progress("postgres"), 0);
    let restored = round_trip(&m);
    assert_eq!(restored.mirror_progress("redis"), 7);
    assert_eq!(restored.len(), 1);
}

fn round_trip(m: &SessionMap) -> SessionMap {
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    SessionMap::decode(bytes.as_slice()).unwrap()
}

fn chrome_session(id: &str) -> Session {
    Session {
        id: id.to_owned(),
        uri: "http://10.0.0.5:5555".to_owned(),
        start: "2024-05-01T10:20:30.123400Z".to_owned(),
        capabilities: "{\n  \"browserName\": \"chrome\",\n  \"goog:chromeOptions\": {\n    \
                       \"args\": [\n      \"--line\\nbreak\",\n      \"    spaced\"\n    ]\n  \
                       },\n  \"se:cdp\": \"ws:\\u002f\\u002fx\"\n}"
            .to_owned(),
        stereotype: "{\n  \"browserName\": \"chrome\"\n}".to_owned(),
    }
}

#[test]
fn a_record_serves_the_rendered_bodies_and_gives_the_session_back() {
    let s = chrome_session("a");
    let record = Record::new(&s);
    assert_eq!(&record.get_body[..], s.render_get_body().as_bytes());
    assert_eq!(&record.uri_body[..], s.render_uri_body().as_bytes());
    assert_eq!(record.session(), s);
}

#[test]
fn snapshot_form_keeps_bodies_byte_for_byte() {
    let mut m = SessionMap::default();
    for i in 0..50 {
        m.apply(&Proposal {
            at: i,
            event_id: None,
            op: Op::add(chrome_session(&format!("s{i}"))),
        });
    }
    m.apply(&remove(60, "s7"));
    let back = round_trip(&m);
    assert_eq!(back.len(), 49);
    assert_eq!(back.clock, m.clock);
    for i in (0..50).filter(|i| *i != 7) {
        let id = format!("s{i}");
        let (Lookup::Found(a), Lookup::Found(b)) = (m.get(&id), back.get(&id)) else {
            panic!("{id} lost");
        };
        assert_eq!(a.get_body, b.get_body);
        assert_eq!(a.uri_body, b.uri_body);
        assert_eq!(b.session(), chrome_session(&id));
    }
    assert!(matches!(back.get("s7"), Lookup::Removed(t) if t.removed_at == 60));
}

#[test]
fn a_damaged_snapshot_is_refused_whole() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n1:5555"));
    m.apply(&add(2, "b", "http://n2:5555"));
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();

    let truncated = &bytes[..bytes.len() - 10];
    assert!(SessionMap::decode(truncated).is_err());

    let mut flipped = bytes.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x40;
    assert!(SessionMap::decode(flipped.as_slice()).is_err());

    let mut foreign = bytes.clone();
    foreign[0] = b'X';
    assert!(matches!(
        SessionMap::decode(foreign.as_slice()),
        Err(ImageError::Magic)
    ));
    assert!(SessionMap::decode(&[][..]).is_err());
    assert_eq!(SessionMap::decode(bytes.as_slice()).unwrap().len(), 2);
}

fn disk_alarm(at: i64, member: u64, low: bool) -> Proposal {
    Proposal {
        at,
        event_id: None,
        op: Op::DiskAlarm { member, low },
    }
}

#[test]
fn the_members_low_on_disk_are_state_and_survive_a_snapshot() {
    let mut m = SessionMap::default();
    m.apply(&disk_alarm(1, 2, true));
    m.apply(&disk_alarm(2, 3, true));
    m.apply(&disk_alarm(3, 3, true));
    m.apply(&disk_alarm(4, 1, false));
    assert_eq!(m.low_disk_members(), vec![2, 3]);
    let mut back = round_trip(&m);
    assert_eq!(back.low_disk_members(), vec![2, 3]);
    back.apply(&disk_alarm(5, 2, false));
    assert_eq!(back.low_disk_members(), vec![3]);
}

#[test]
fn tombstones_are_bounded_in_bytes_oldest_evicted_first() {
    let cap = MAX_TOMBSTONE_BYTES;
    let uri = |i: u64| format!("http://node-{i:04}/{}", "p".repeat(1 << 20));
    let mut m = SessionMap::default();
    for i in 0..100u64 {
        m.apply(&add(2 * i as i64, &format!("s{i:04}"), &uri(i)));
        m.apply(&remove(2 * i as i64 + 1, &format!("s{i:04}")));
    }
    let kept: usize = m.tombstones().map(|(id, t)| id.len() + t.node.len()).sum();
    assert!(kept <= cap, "{kept} bytes of tombstones kept, over {cap}");
    // The newest removals are the ones remembered.
    assert!(matches!(m.get("s0099"), Lookup::Removed(t) if t.node == uri(99)));
    assert!(matches!(m.get("s0000"), Lookup::Missing));
    assert!(
        m.tombstones().count() >= 60,
        "only what exceeds the cap goes"
    );
    // A restore gives the same map: apply() on every member stays the same.
    let back = round_trip(&m);
    let mut a: Vec<_> = m.tombstones().map(|(id, _)| id.to_owned()).collect();
    let mut b: Vec<_> = back.tombstones().map(|(id, _)| id.to_owned()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn an_add_encodes_as_before_its_session_was_shared() {
    // Earlier versions held the `Session` itself in `Op::Add`: the variant's number, then the
    // session. Logs, snapshots and peers of those versions read the same bytes.
    let s = session("a", "http://n1");
    let shared = bincode::serialize(&Op::add(s.clone())).unwrap();
    assert_eq!(shared, bincode::serialize(&(0u32, &s)).unwrap());
    assert_eq!(bincode::deserialize::<Op>(&shared).unwrap(), Op::add(s));
}
