//! Grid events through the event sink of a running three-member cluster, fed directly (no bus)
//! so that a copy of an event can be proposed as late as a member that could not commit it
//! would propose it: it must not remove a session added after the event was received.

mod common;

use std::time::Duration;

use common::*;
use gridraft::cluster::event_sink;
use gridraft::events::{GridEvent, Received};
use gridraft::session::RemovalReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events the replicated state remembers the ids of is 1024; this many more forget any id.
const OTHER_EVENTS: usize = 1100;

fn applied(cluster: &TestCluster, id: u64) -> u64 {
    let metrics = cluster.member(id).cluster.raft.metrics();
    let applied = metrics.borrow().last_applied.map_or(0, |l| l.index);
    applied
}

async fn wait_status(cluster: &TestCluster, session: &str, want: u16) {
    for id in cluster.running() {
        eventually(
            Duration::from_secs(30),
            &format!("{session} to answer {want} on member {id}"),
            || async { (cluster.get_status(id, session).await == want).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_node_restarted_spares_a_session_added_since_on_every_member() {
    let cluster = TestCluster::start(3).await;
    let node = "http://10.9.0.1:5555";
    let leader = cluster.leader().await;
    let receiver = if leader == 1 { 2 } else { 1 };
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel(64);
    let sink = cluster.member(receiver).cluster.clone();
    tokio::spawn(event_sink::run(sink, rx, stop.clone()));

    println!("phase 1: a session on the node, then the node restarts");
    assert_eq!(cluster.add(leader, "old", node).await.status(), 200);
    cluster.wait_caught_up(receiver).await;
    // What the subscriber of the receiving member stamps the event with.
    let restarted = Received {
        event: GridEvent::NodeRestarted {
            event_id: Uuid::new_v4(),
            node_uri: node.into(),
        },
        mark: applied(&cluster, receiver),
    };
    tx.send(restarted.clone()).await.unwrap();
    wait_status(&cluster, "old", 404).await;

    tracing::info!(
        "phase 2: a new session on the restarted node, then {OTHER_EVENTS} other events"
    );
    assert_eq!(cluster.add(leader, "new", node).await.status(), 200);
    // One log entry per event (events are never batched), so this index says they all are.
    let target = applied(&cluster, leader) + OTHER_EVENTS as u64;
    for i in 0..OTHER_EVENTS {
        let closed = Received {
            event: GridEvent::SessionClosed {
                event_id: Uuid::new_v4(),
                session_id: format!("other-{i}"),
                reason: RemovalReason::QuitCommand,
            },
            mark: applied(&cluster, receiver),
        };
        tx.send(closed).await.unwrap();
    }
    eventually(
        Duration::from_secs(120),
        "the other events to be applied",
        || async { (applied(&cluster, leader) >= target).then_some(()) },
    )
    .await;
    println!("phase 3: the same copy of node-restarted, proposed again");
    let before = applied(&cluster, leader);
    tx.send(restarted).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the late copy to be applied",
        || async { (applied(&cluster, leader) > before).then_some(()) },
    )
    .await;
    for id in cluster.running() {
        cluster.wait_caught_up(id).await;
    }
    wait_status(&cluster, "new", 200).await;
    wait_status(&cluster, "old", 404).await;
    stop.cancel();
    cluster.shutdown().await;
}
