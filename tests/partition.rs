//! Network partitions inside one process (`TestCluster::isolate` and `heal`, which make the
//! members' peer requests to each other fail as refused connections): a cut-off leader or
//! follower refuses reads and writes with the Grid's error instead of hanging or answering
//! stale, the majority keeps serving, and after the heal the cut-off member catches up and no
//! acknowledged write is lost. The docker compose suite tests the same with real networks.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, session_body, TestCluster};

const NODE: &str = "http://10.0.0.5:5555";
/// The harness's `grid.write-timeout` and `grid.read-timeout`.
const GRID_TIMEOUT: Duration = Duration::from_secs(15);
/// How fast a member that knows it has no quorum refuses.
const PROMPT: Duration = Duration::from_secs(2);

/// Status, body and duration of a request.
async fn timed(req: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap(), started.elapsed())
}

async fn add(c: &TestCluster, via: u64, id: &str) -> (u16, String, Duration) {
    let req = c.http.post(c.url(via, "/se/grid/session"));
    timed(req.body(session_body(id, NODE))).await
}

async fn get(c: &TestCluster, via: u64, id: &str) -> (u16, String, Duration) {
    timed(c.http.get(c.url(via, &format!("/se/grid/session/{id}")))).await
}

/// A refusal as the Grid expects it: 500 `unknown error` naming the missing quorum.
fn assert_refused_for_quorum((code, body, took): &(u16, String, Duration), what: &str) {
    assert_eq!(*code, 500, "{what}: {body}");
    assert!(
        body.contains("\"error\": \"unknown error\""),
        "{what}: {body}"
    );
    assert!(body.contains("quorum"), "{what} names the cause: {body}");
    assert!(*took < PROMPT, "{what} took {took:?}: {body}");
}

/// Waits until member `id`'s `/readyz` answers `status`.
async fn wait_readyz(c: &TestCluster, id: u64, status: u16) {
    eventually(
        Duration::from_secs(10),
        &format!("member {id}'s /readyz to answer {status}"),
        || async {
            let resp = c.http.get(c.url(id, "/readyz")).send().await.ok()?;
            (resp.status().as_u16() == status).then_some(())
        },
    )
    .await;
}

/// Waits until member `via` answers 200 for session `id` (a linearizable read).
async fn wait_serves(c: &TestCluster, via: u64, id: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("member {via} to serve {id}"),
        || async { (get(c, via, id).await.0 == 200).then_some(()) },
    )
    .await;
}

fn others(c: &TestCluster, id: u64) -> Vec<u64> {
    c.members.keys().copied().filter(|m| *m != id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_refuses_while_the_majority_elects_and_writes_and_it_catches_up_after_heal(
) {
    let c = TestCluster::start(3).await;
    let old = c.leader().await;
    assert_eq!(add(&c, old, "before").await.0, 200);

    tracing::info!("phase: isolate the leader");
    c.isolate(old);
    let majority = others(&c, old);
    let new = c.leader_among(&majority, Duration::from_secs(30)).await;
    assert_ne!(new, old, "the majority elects one of its own");

    tracing::info!("phase: the majority accepts writes");
    for (i, via) in majority.iter().enumerate() {
        let (code, body, _) = add(&c, *via, &format!("during-{i}")).await;
        assert_eq!(code, 200, "a write through member {via}: {body}");
    }
    for via in &majority {
        assert_eq!(get(&c, *via, "during-0").await.0, 200);
    }

    tracing::info!("phase: the old leader refuses, within the write timeout, then at once");
    let first = add(&c, old, "refused").await;
    assert_eq!(first.0, 500, "a write to the cut-off leader: {}", first.1);
    assert!(first.2 < GRID_TIMEOUT + Duration::from_secs(2), "{first:?}");
    let read = get(&c, old, "during-0").await;
    assert_eq!(
        read.0, 500,
        "no stale 404 from the cut-off leader: {}",
        read.1
    );
    assert!(read.2 < GRID_TIMEOUT + Duration::from_secs(2), "{read:?}");
    wait_readyz(&c, old, 503).await;
    assert_refused_for_quorum(&add(&c, old, "refused-2").await, "a write");
    assert_refused_for_quorum(&get(&c, old, "during-0").await, "a read of a new session");
    assert_refused_for_quorum(&get(&c, old, "before").await, "a read of an old session");

    tracing::info!("phase: heal; the old leader rejoins and catches up");
    c.heal(old);
    c.leader().await;
    c.wait_caught_up(old).await;
    wait_readyz(&c, old, 204).await;
    wait_serves(&c, old, "during-0").await;
    for id in ["before", "during-0", "during-1"] {
        for via in c.running() {
            assert_eq!(get(&c, via, id).await.0, 200, "{id} via member {via}");
        }
    }
    for id in ["refused", "refused-2"] {
        assert_eq!(get(&c, new, id).await.0, 404, "{id} was never acknowledged");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_follower_refuses_reads_while_writes_go_on_and_serves_them_after_heal() {
    let c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let follower = others(&c, leader)[0];
    let third = others(&c, leader)[1];
    assert_eq!(add(&c, leader, "before").await.0, 200);
    c.wait_caught_up(follower).await;

    tracing::info!("phase: isolate a follower; writes go on through the majority");
    c.isolate(follower);
    for i in 0..6 {
        let via = if i % 2 == 0 { leader } else { third };
        let (code, body, _) = add(&c, via, &format!("w-{i}")).await;
        assert_eq!(code, 200, "a write through member {via}: {body}");
    }

    tracing::info!("phase: the cut-off follower refuses reads and writes at once");
    wait_readyz(&c, follower, 503).await;
    assert_refused_for_quorum(&get(&c, follower, "w-5").await, "a read of a new session");
    assert_refused_for_quorum(
        &get(&c, follower, "before").await,
        "a read of an old session",
    );
    assert_refused_for_quorum(&add(&c, follower, "refused").await, "a write");

    tracing::info!("phase: heal; the follower serves the latest writes");
    c.heal(follower);
    c.leader().await;
    c.wait_caught_up(follower).await;
    wait_readyz(&c, follower, 204).await;
    for i in 0..6 {
        wait_serves(&c, follower, &format!("w-{i}")).await;
    }
    assert_eq!(get(&c, follower, "before").await.0, 200);
    let leader = c.leader().await;
    assert_eq!(
        get(&c, leader, "refused").await.0,
        404,
        "never acknowledged"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_acknowledged_during_a_partition_survives_the_heal_and_a_second_partition() {
    let c = TestCluster::start(3).await;
    let old = c.leader().await;

    tracing::info!("phase: isolate the leader; write through the majority, and to the old leader");
    c.isolate(old);
    let majority = others(&c, old);
    let new = c.leader_among(&majority, Duration::from_secs(30)).await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let id = format!("ack-{i}");
        let (code, body, _) = add(&c, majority[i % 2], &id).await;
        assert_eq!(code, 200, "a write through the majority: {body}");
        acknowledged.push(id);
    }
    let (code, body, _) = add(&c, old, "cut-off").await;
    assert_ne!(code, 200, "the cut-off leader acknowledged a write: {body}");

    tracing::info!("phase: heal, then at once cut off the new leader");
    // The old leader, with its stale log, and the third member now form the majority: the
    // election must pick a log that holds every acknowledged write.
    c.heal(old);
    c.isolate(new);
    let rest = others(&c, new);
    let third = c.leader_among(&rest, Duration::from_secs(30)).await;
    tracing::info!(leader = third, "phase: every acknowledged write is there");
    for id in &acknowledged {
        for via in &rest {
            wait_serves(&c, *via, id).await;
        }
    }
    assert_eq!(get(&c, third, "cut-off").await.0, 404, "never acknowledged");

    tracing::info!("phase: heal everything; every member has every acknowledged write");
    c.heal(new);
    c.leader().await;
    for via in c.running() {
        c.wait_caught_up(via).await;
        for id in &acknowledged {
            assert_eq!(get(&c, via, id).await.0, 200, "{id} via member {via}");
        }
    }
    c.shutdown().await;
}

/// A leader that loses its quorum for a moment (its one reachable follower misses a few
/// heartbeats) must not put off replication to a member that has been down for a while: the
/// returning member is caught up and serves reads at once, not a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_back_after_a_long_absence_is_caught_up_at_once_though_the_quorum_blinked() {
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let (away, other) = (others(&c, leader)[0], others(&c, leader)[1]);
    c.stop(away).await;
    for i in 0..5 {
        assert_eq!(add(&c, leader, &format!("a-{i}")).await.0, 200);
    }
    tracing::info!("phase: a long run of failed attempts to the stopped member");
    tokio::time::sleep(Duration::from_secs(3)).await;

    tracing::info!(
        "phase: the other follower is cut off three times, each shorter than an election timeout"
    );
    for _ in 0..3 {
        c.isolate(other);
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.heal(other);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(c.leader().await, leader, "the blinks cost no election");
    assert_eq!(add(&c, leader, "last").await.0, 200);

    tracing::info!("phase: the stopped member comes back and serves the latest write");
    c.restart(away).await;
    let read = get(&c, away, "last").await;
    assert_eq!(
        read.0, 200,
        "a read through the returning member: {}",
        read.1
    );
    c.shutdown().await;
}
