use openraft::{CommittedLeaderId, LogId};

use super::*;
use crate::session::RemovalReason;

use crate::session::test_session as session;

fn entry(index: u64, op: Op, event: Option<uuid::Uuid>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal {
            at: index as i64,
            event_id: event,
            op,
        }),
    }
}

fn apply_all(map: &mut SessionMap, entries: &[Entry]) {
    for e in entries {
        if let EntryPayload::Normal(p) = &e.payload {
            map.apply(p);
        }
    }
}

#[test]
fn batches_write_the_current_state_so_a_duplicate_event_cannot_remove_a_live_session() {
    let event = uuid::Uuid::new_v4();
    let by_uri = |uri: &str| Op::RemoveByUri {
        uri: uri.into(),
        reason: RemovalReason::NodeRestarted,
    };
    let entries = vec![
        entry(1, Op::add(session("a", "http://n1")), None),
        entry(2, Op::add(session("b", "http://n1")), None),
        entry(3, by_uri("http://n1"), Some(event)),
        entry(4, Op::add(session("a", "http://n1")), None),
        // The same Grid event again: the state machine ignores it, so must the mirror.
        entry(5, by_uri("http://n1"), Some(event)),
        entry(
            6,
            Op::MirrorProgress {
                mirror: "redis".into(),
                index: 2,
            },
            None,
        ),
    ];
    let mut map = SessionMap::default();
    apply_all(&mut map, &entries);
    let mut shadow = UriIndex::default();
    let batch = build_batch(&entries, &mut shadow, &map);
    assert_eq!(batch.upserts, vec![session("a", "http://n1")]);
    assert_eq!(batch.deletes, vec!["b".to_owned()]);
    assert_eq!(
        batch.remove_uris,
        vec!["http://n1".to_owned(), "http://n1".to_owned()]
    );
}

#[test]
fn a_replay_behind_the_map_resolves_removals_from_its_removal_memory() {
    // The leader resumes at progress 0 with a map that already applied everything: the seed
    // must still find `b`, removed by URI, although it is no longer live.
    let entries = vec![
        entry(1, Op::add(session("a", "http://n1")), None),
        entry(2, Op::add(session("b", "http://n2")), None),
    ];
    let later = vec![entry(
        3,
        Op::RemoveByUri {
            uri: "http://n2".into(),
            reason: RemovalReason::NodeRestarted,
        },
        None,
    )];
    let mut map = SessionMap::default();
    apply_all(&mut map, &entries);
    apply_all(&mut map, &later);
    let mut shadow = UriIndex::seed(&map);
    let first = build_batch(&entries, &mut shadow, &map);
    assert_eq!(first.upserts, vec![session("a", "http://n1")]);
    assert_eq!(first.deletes, vec!["b".to_owned()]);
    let second = build_batch(&later, &mut shadow, &map);
    assert!(
        second.upserts.is_empty() && second.deletes.is_empty(),
        "{second:?}"
    );
}

#[test]
fn a_batch_retried_after_a_failed_write_still_removes_what_a_node_restart_removed() {
    let entries = vec![
        entry(1, Op::add(session("a", "http://n1")), None),
        entry(
            2,
            Op::RemoveByUri {
                uri: "http://n1".into(),
                reason: RemovalReason::NodeRestarted,
            },
            None,
        ),
    ];
    let mut map = SessionMap::default();
    apply_all(&mut map, &entries);
    let mut shadow = UriIndex::default();
    let pending = collect(&entries, 2, &mut shadow);
    let first = resolve(&pending, &mut shadow, &map);
    // The write of `first` failed; the same pending batch is resolved again.
    let again = resolve(&pending, &mut shadow, &map);
    assert_eq!(first, again);
    assert_eq!(again.deletes, vec!["a".to_owned()]);
}
