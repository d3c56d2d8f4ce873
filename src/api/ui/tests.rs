//! The status page's gathering: what it takes from the map and from the members' status
//! documents, and the bounds on both.

use serde_json::json;

use super::*;
use crate::map::{Op, Proposal};
use crate::session::{test_session, RemovalReason};

fn apply(map: &mut SessionMap, at: i64, op: Op) {
    map.apply(&Proposal {
        at,
        event_id: None,
        op,
    });
}

#[test]
fn sessions_are_grouped_per_node_newest_first_and_capped() {
    let mut map = SessionMap::default();
    for n in 0..MAX_NODES + 5 {
        apply(
            &mut map,
            1,
            Op::add(test_session(&format!("s{n}"), &format!("http://n{n:03}"))),
        );
    }
    for i in 0..SESSIONS_PER_NODE * 3 {
        apply(
            &mut map,
            1,
            Op::add(test_session(&format!("busy-{i:02}"), "http://n000")),
        );
    }
    let view = sessions_view(&map);
    assert_eq!(view.total, MAX_NODES + 5 + SESSIONS_PER_NODE * 3);
    assert_eq!((view.nodes.len(), view.nodes_left_out), (MAX_NODES, 5));
    let busy = &view.nodes[0];
    assert_eq!(
        (busy.uri.as_str(), busy.count),
        ("http://n000", SESSIONS_PER_NODE * 3 + 1)
    );
    let ids: Vec<&str> = busy.sessions.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), SESSIONS_PER_NODE);
    assert_eq!(ids[0], format!("busy-{:02}", SESSIONS_PER_NODE * 3 - 1));
    assert_eq!(busy.sessions[0].1, "2024-05-01T10:20:30Z");
}

#[test]
fn removals_are_the_newest_first_with_the_rest_counted() {
    let mut map = SessionMap::default();
    for n in 0..MAX_REMOVALS + 7 {
        let id = format!("r{n:03}");
        apply(&mut map, 1, Op::add(test_session(&id, "http://node")));
        let reason = RemovalReason::Timeout;
        apply(&mut map, 1_000 + n as i64, Op::Remove { id, reason });
    }
    let (rows, left_out) = removals(&map);
    assert_eq!((rows.len(), left_out), (MAX_REMOVALS, 7));
    assert_eq!(rows[0].session_id, format!("r{:03}", MAX_REMOVALS + 6));
    assert_eq!(rows[MAX_REMOVALS - 1].session_id, "r007");
    assert_eq!(rows[0].node, "http://node");
    assert_eq!(rows[0].reason, "session timed out due to inactivity");
    assert_eq!(rows[0].removed_at, format_instant_nanos(1_056));
}

#[test]
fn members_show_lag_behind_the_leader_and_what_a_down_member_last_received() {
    let leader = json!({
        "state": "Leader", "term": 4, "last_applied": 20, "last_log_index": 21,
        "ready": true, "replication": {"1": 21, "2": 15, "3": 9},
        "event_bus": {"configured": true, "connected": true, "reconnects": 2,
                      "last_message_unix_ms": now_nanos() / 1_000_000 - 3_000},
    });
    let follower = json!({
        "state": "Follower", "term": 4, "last_applied": 15, "ready": false,
        "not_ready": "no leader", "event_bus": {"configured": false},
    });
    let statuses = vec![
        (1, "a:1".to_owned(), Ok(leader.clone())),
        (2, "a:2".to_owned(), Ok(follower)),
        (3, "a:3".to_owned(), Err("refused".to_owned())),
    ];
    let rows = member_rows(&statuses, Some(&leader));
    let MemberState::Up(l) = &rows[0].state else {
        panic!("leader shown down")
    };
    assert_eq!(
        (l.role.as_str(), l.term, l.applied, l.lag),
        ("Leader", 4, 20, Some(1))
    );
    assert!(matches!(
        l.event_bus,
        EventBusView::Configured {
            connected: true,
            reconnects: 2,
            last_message_age_s: Some(2..=4)
        }
    ));
    let MemberState::Up(f) = &rows[1].state else {
        panic!("follower shown down")
    };
    assert_eq!(
        (f.lag, f.ready, f.not_ready.as_deref()),
        (Some(6), false, Some("no leader"))
    );
    assert!(matches!(f.event_bus, EventBusView::NotConfigured));
    assert!(matches!(
        &rows[2].state,
        MemberState::Down { why, matched: Some(9) } if why == "refused"
    ));
}

#[test]
fn mirror_rows_come_from_the_status_document() {
    let status = json!({"mirrors": {"postgres": {
        "url": "postgres://u:***@db/grid", "mode": "write-through", "state": "down",
        "state_for_seconds": 12, "error": "connection refused", "mirrored_index": 40,
        "lag_entries": 3, "lag_seconds": 1.5,
    }}});
    let rows = mirror_rows(&status);
    assert_eq!(rows.len(), 1);
    let m = &rows[0];
    assert_eq!(
        (m.name.as_str(), m.url.as_str(), m.state.as_str()),
        ("postgres", "postgres://u:***@db/grid", "down")
    );
    assert_eq!(
        (m.mirrored_index, m.lag_entries, m.lag_seconds),
        (40, 3, Some(1.5))
    );
    assert_eq!(m.error.as_deref(), Some("connection refused"));
    assert!(mirror_rows(&json!({})).is_empty());
}
