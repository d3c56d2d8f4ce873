//! The removal history and the reconciler's removals, applied to the map.

use super::*;
use crate::session::test_session as session;

const MS: i64 = 1_000_000;

fn proposal(at_ms: i64, event_id: Option<Uuid>, op: Op) -> Proposal {
    Proposal {
        at: at_ms * MS,
        event_id,
        op,
    }
}

fn add(at_ms: i64, id: &str, uri: &str) -> Proposal {
    proposal(at_ms, None, Op::add(session(id, uri)))
}

fn reconcile(at_ms: i64, id: &str, added: u64, reason: RemovalReason) -> Proposal {
    let removal = ReconcileRemoval {
        id: id.into(),
        added,
        reason,
    };
    proposal(at_ms, None, Op::Reconcile(vec![removal]))
}

fn added_index(m: &SessionMap, id: &str) -> u64 {
    match m.get(id) {
        Lookup::Found(r) => r.added,
        other => panic!("{id} is not live: {other:?}"),
    }
}

#[test]
fn the_history_names_each_removal_s_source_newest_first() {
    let mut m = SessionMap::default();
    for (i, id) in ["deleted", "closed", "lost", "down"].iter().enumerate() {
        m.apply(&add(i as i64, id, "http://n1:5555"));
    }
    m.apply(&proposal(
        10,
        None,
        Op::Remove {
            id: "deleted".into(),
            reason: RemovalReason::QuitCommand,
        },
    ));
    m.apply(&proposal(
        20,
        Some(Uuid::from_u128(1)),
        Op::RemoveAddedBy {
            id: "closed".into(),
            reason: RemovalReason::Timeout,
            added_by: u64::MAX,
        },
    ));
    let lost = added_index(&m, "lost");
    m.apply(&reconcile(30, "lost", lost, RemovalReason::NodeLostSession));
    let down = added_index(&m, "down");
    let unreachable = RemovalReason::NodeUnreachable { for_ms: 310_000 };
    m.apply(&reconcile(40, "down", down, unreachable));

    let history = m.removals(None, None);
    let summary: Vec<_> = history
        .iter()
        .map(|r| (r.session_id.as_str(), r.source, r.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "down",
                RemovalSource::Reconciler,
                "node unreachable for 310 seconds"
            ),
            (
                "lost",
                RemovalSource::Reconciler,
                "node no longer has the session"
            ),
            (
                "closed",
                RemovalSource::Event,
                "session timed out due to inactivity"
            ),
            (
                "deleted",
                RemovalSource::Delete,
                "session closed normally (QUIT command)"
            ),
        ]
    );
    assert_eq!(history[0].removed_at_ms, 40);
    assert_eq!(history[0].removed_at, "1970-01-01T00:00:00.040Z");
    assert_eq!(history[0].node, "http://n1:5555");
    assert_eq!(history[0].reason_code, "NODE_UNREACHABLE");
}

#[test]
fn the_history_filters_by_time_and_by_node() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n1:5555"));
    m.apply(&add(2, "b", "http://n2:5555"));
    m.apply(&add(3, "c", "http://n1:5555"));
    for (at, id) in [(10, "a"), (20, "b"), (30, "c")] {
        let added = added_index(&m, id);
        m.apply(&reconcile(at, id, added, RemovalReason::NodeLostSession));
    }
    let ids = |v: Vec<Removal>| v.into_iter().map(|r| r.session_id).collect::<Vec<_>>();
    assert_eq!(ids(m.removals(Some(20), None)), ["c", "b"]);
    assert_eq!(ids(m.removals(None, Some("http://n1:5555"))), ["c", "a"]);
    assert_eq!(ids(m.removals(Some(11), Some("http://n1:5555"))), ["c"]);
    assert!(m.removals(Some(31), None).is_empty());
}

#[test]
fn a_reconciler_removal_spares_a_session_re_added_since_it_was_judged() {
    let mut m = SessionMap::default();
    m.apply(&add(1, "a", "http://n1:5555"));
    let judged = added_index(&m, "a");
    m.apply(&add(2, "a", "http://n2:5555"));
    let applied = m.apply(&reconcile(3, "a", judged, RemovalReason::NodeLostSession));
    assert_eq!(applied.changed, 0);
    assert!(matches!(m.get("a"), Lookup::Found(r) if &*r.uri == "http://n2:5555"));

    let now = added_index(&m, "a");
    let applied = m.apply(&reconcile(4, "a", now, RemovalReason::NodeLostSession));
    assert_eq!(applied.changed, 1);
    assert!(matches!(
        m.get("a"),
        Lookup::Removed(t) if t.reason == RemovalReason::NodeLostSession
            && t.source == RemovalSource::Reconciler
    ));
}

#[test]
fn a_reconciler_proposal_survives_the_log_encoding() {
    let p = reconcile(5, "a", 7, RemovalReason::NodeUnreachable { for_ms: 12_345 });
    let bytes = bincode::serialize(&p).unwrap();
    let back: Proposal = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back, p);
}
