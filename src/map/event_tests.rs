//! Grid events against the map: a copy of an event removes only sessions added by its bound,
//! and the log entries and snapshot images of the version before bounds still decode.

use super::*;

const NODE: &str = "http://n1:5555";

use crate::session::test_session as session;

fn add(id: &str, uri: &str) -> Proposal {
    Proposal {
        at: 1,
        event_id: None,
        op: Op::add(session(id, uri)),
    }
}

fn restarted(event: Uuid, added_by: u64) -> Proposal {
    Proposal {
        at: 2,
        event_id: Some(event),
        op: Op::RemoveByUriAddedBy {
            uri: NODE.to_owned(),
            reason: RemovalReason::NodeRestarted,
            added_by,
        },
    }
}

/// Applies `n` `session-closed` copies of other events at `at`, from entry 4 on: more than the
/// de-duplication window, so earlier event ids leave it.
fn other_events(m: &mut SessionMap, at: i64, n: u64) {
    for i in 0..n {
        let closed = Proposal {
            at,
            event_id: Some(Uuid::new_v4()),
            op: Op::RemoveAddedBy {
                id: format!("other-{i}"),
                reason: RemovalReason::QuitCommand,
                added_by: 3 + i,
            },
        };
        m.apply_entry(4 + i, &closed);
    }
}

fn live(m: &SessionMap, id: &str) -> bool {
    matches!(m.get(id), Lookup::Found(_))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_late_duplicate_node_restarted_spares_a_session_added_since() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("old", NODE));
    let event = Uuid::new_v4();
    // Received by a member that had applied entry 1; the copy is proposed and applied.
    let copy = restarted(event, 1);
    assert_eq!(m.apply_entry(2, &copy).changed, 1);
    m.apply_entry(3, &add("new", NODE));
    // More events than the map remembers, so the event id is forgotten.
    other_events(&mut m, 3, MAX_EVENT_IDS as u64 + 10);
    assert!(!m.events.contains_key(&event));
    let late = m.apply_entry(5000, &copy);
    assert_eq!((late.changed, late.duplicate), (0, false));
    assert!(live(&m, "new"));
}

#[test]
fn the_bus_delivering_an_event_again_after_many_others_spares_sessions_added_since() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("old", NODE));
    let event = Uuid::new_v4();
    assert_eq!(m.apply_entry(2, &restarted(event, 1)).changed, 1);
    m.apply_entry(3, &add("new", NODE));
    other_events(&mut m, 3, MAX_EVENT_IDS as u64 + 100);
    // Received again as if new, long after: its member had applied everything, "new" included.
    let redelivered = m.apply_entry(5000, &restarted(event, 4999));
    assert_eq!(redelivered.changed, 0);
    assert!(live(&m, "new"));
    // The bound survives a snapshot.
    let mut back = Vec::new();
    m.encode(&mut back).unwrap();
    let mut back = SessionMap::decode(back.as_slice()).unwrap();
    assert_eq!(back.apply_entry(5001, &restarted(event, 5000)).changed, 0);
    assert!(live(&back, "new"));
}

#[test]
fn an_event_bound_is_forgotten_after_its_time() {
    let mut m = SessionMap::default();
    let event = Uuid::new_v4();
    m.apply_entry(1, &restarted(event, 0));
    m.apply_entry(2, &add("new", NODE));
    let later = |at: i64, added_by: u64| Proposal {
        at,
        ..restarted(event, added_by)
    };
    // Within the hour the first copy's bound holds; after it, a copy is a new event.
    assert_eq!(
        m.apply_entry(3, &later(EVENT_BOUND_TTL_NANOS, 2)).changed,
        0
    );
    // An hour later, and past the de-duplication window too, a copy is a new event.
    let after = EVENT_BOUND_TTL_NANOS + 10;
    other_events(&mut m, after, MAX_EVENT_IDS as u64 + 10);
    assert!(!m.event_bounds.contains_key(&event));
    assert_eq!(m.apply_entry(5000, &later(after, 4999)).changed, 1);
}

#[test]
fn a_copy_removes_every_session_added_by_its_bound() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("a", NODE));
    m.apply_entry(2, &add("b", NODE));
    m.apply_entry(3, &add("elsewhere", "http://n2:5555"));
    let applied = m.apply_entry(4, &restarted(Uuid::new_v4(), 3));
    assert_eq!((applied.changed, applied.duplicate), (2, false));
    assert!(matches!(m.get("a"), Lookup::Removed(t) if t.reason == RemovalReason::NodeRestarted));
    assert!(!live(&m, "b") && live(&m, "elsewhere"));
}

#[test]
fn a_re_added_session_counts_from_its_re_add() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("a", NODE));
    m.apply_entry(5, &add("a", NODE));
    let close = |added_by| Proposal {
        at: 3,
        event_id: Some(Uuid::new_v4()),
        op: Op::RemoveAddedBy {
            id: "a".to_owned(),
            reason: RemovalReason::QuitCommand,
            added_by,
        },
    };
    assert_eq!(m.apply_entry(6, &close(4)).changed, 0);
    assert_eq!(m.apply_entry(7, &close(5)).changed, 1);
}

#[test]
fn a_later_copy_is_bounded_by_the_first_copy_of_its_event() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("a", NODE));
    let event = Uuid::new_v4();
    m.apply_entry(2, &restarted(event, 1));
    m.apply_entry(3, &add("b", NODE));
    // A copy stamped after b's add (the bus delivered the event again) still spares b.
    let again = m.apply_entry(4, &restarted(event, 3));
    assert_eq!((again.changed, again.duplicate), (0, true));
    assert!(live(&m, "b"));
}

#[test]
fn old_unbounded_removals_keep_their_meaning() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("a", NODE));
    let event = Uuid::new_v4();
    let legacy = Proposal {
        at: 2,
        event_id: Some(event),
        op: Op::RemoveByUri {
            uri: NODE.to_owned(),
            reason: RemovalReason::NodeRestarted,
        },
    };
    m.apply_entry(2, &add("b", NODE));
    assert_eq!(m.apply_entry(3, &legacy).changed, 2);
    m.apply_entry(4, &add("c", NODE));
    let again = m.apply_entry(5, &legacy);
    assert_eq!((again.changed, again.duplicate), (0, true));
    assert!(live(&m, "c"));
}

#[test]
fn the_image_keeps_add_and_event_indexes() {
    let mut m = SessionMap::default();
    m.apply_entry(1, &add("a", NODE));
    let event = Uuid::new_v4();
    m.apply_entry(2, &restarted(event, 1));
    m.apply_entry(3, &add("b", NODE));
    m.apply_entry(4, &add("c", NODE));
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    let mut back = SessionMap::decode(bytes.as_slice()).unwrap();
    let Lookup::Found(b) = back.get("b") else {
        panic!("b lost");
    };
    assert_eq!(b.added, 3);
    // Bound 3 would take b, but the event's first copy (entry 2) bounds it.
    assert_eq!(back.apply_entry(5, &restarted(event, 3)).changed, 0);
    assert_eq!(
        back.apply_entry(6, &restarted(Uuid::new_v4(), 3)).changed,
        1
    );
    assert!(live(&back, "c"));
}

/// A log entry as the version before bounded removals wrote it (bincode of an `Entry` holding a
/// batch of every variant it had): an add, a `RemoveByUri` with an event id, a `Remove` and a
/// `MirrorProgress`.
const OLD_ENTRY: &str = "\
    030000000000000001000000000000002a0000000000000001000000d204000000000000011000000000000000b8eccc\
    16fda140498511f57d79147632040000000400000000000000050000000000000000000000000100000000000000610d\
    00000000000000687474703a2f2f6e3a353535351400000000000000323032342d30352d30315431303a32303a33305a\
    03000000000000007b0a7d03000000000000007b0a7d0600000000000000011000000000000000b8eccc16fda1404985\
    11f57d79147632020000000d00000000000000687474703a2f2f6e3a3535353503000000070000000000000000010000\
    000100000000000000610000000008000000000000000003000000050000000000000072656469730900000000000000";

#[test]
fn log_entries_written_before_bounded_removals_still_decode() {
    let event = Uuid::parse_str("b8eccc16-fda1-4049-8511-f57d79147632").unwrap();
    let bytes = hex(OLD_ENTRY);
    let entry: crate::raft::Entry = bincode::deserialize(&bytes).unwrap();
    assert_eq!(entry.log_id.index, 42);
    let openraft::EntryPayload::Normal(p) = &entry.payload else {
        panic!("not a normal entry");
    };
    let expected = Proposal {
        at: 1234,
        event_id: Some(event),
        op: Op::Batch(vec![
            Proposal {
                at: 5,
                ..add("a", "http://n:5555")
            },
            Proposal {
                at: 6,
                event_id: Some(event),
                op: Op::RemoveByUri {
                    uri: "http://n:5555".to_owned(),
                    reason: RemovalReason::NodeRestarted,
                },
            },
            Proposal {
                at: 7,
                event_id: None,
                op: Op::Remove {
                    id: "a".to_owned(),
                    reason: RemovalReason::QuitCommand,
                },
            },
            Proposal {
                at: 8,
                event_id: None,
                op: Op::MirrorProgress {
                    mirror: "redis".to_owned(),
                    index: 9,
                },
            },
        ]),
    };
    assert_eq!(p, &expected);
    // And those variants are written back to the same bytes.
    assert_eq!(bincode::serialize(&entry).unwrap(), bytes);
}

/// A version 1 snapshot image: session `a` on n1, `b` removed from n2, one remembered event.
const OLD_IMAGE: &str = "\
    4752534e415001006b000000040000000000000001000000000000000100000000000000620300000000000000000000\
    000e00000000000000687474703a2f2f6e323a3535353501000000000000001000000000000000b8eccc16fda1404985\
    11f57d791476320000000000000000010000000000000001000000610e000000687474703a2f2f6e313a353535351400\
    0000323032342d30352d30315431303a32303a33305aad0000007b0a20202276616c7565223a207b0a20202020226361\
    706162696c6974696573223a207b0a202020207d2c0a202020202273657373696f6e4964223a202261222c0a20202020\
    227374617274223a2022323032342d30352d30315431303a32303a33305a222c0a202020202273746572656f74797065\
    223a207b0a202020207d2c0a2020202022757269223a2022687474703a5c75303032665c75303032666e313a35353535\
    220a20207d0a7d230000002a0000007900000080000000f68d5ea9";

#[test]
fn images_written_before_add_indexes_still_decode_with_index_0() {
    let event = Uuid::parse_str("b8eccc16-fda1-4049-8511-f57d79147632").unwrap();
    let mut m = SessionMap::decode(hex(OLD_IMAGE).as_slice()).unwrap();
    let Lookup::Found(a) = m.get("a") else {
        panic!("a lost");
    };
    assert_eq!((&*a.uri, a.added), (NODE, 0));
    assert!(matches!(m.get("b"), Lookup::Removed(t) if t.node == "http://n2:5555"));
    // The remembered event's first index is unknown (0): its copies take only old sessions.
    m.apply_entry(10, &add("new", NODE));
    assert_eq!(m.apply_entry(11, &restarted(event, 10)).changed, 1);
    assert!(!live(&m, "a") && live(&m, "new"));
}
