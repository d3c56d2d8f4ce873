//! A member that cannot serve says so at once and comes back: Raft stopping on a member (its
//! disk filled up) takes it out of the balancer, and low disk space is reported before the disk
//! is full.

mod common;

use std::time::Duration;

use common::{eventually, TestCluster};

const NODE: &str = "http://10.0.0.5:5555";

async fn get(c: &TestCluster, id: u64, path: &str) -> (u16, String) {
    let resp = c.http.get(c.url(id, path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Adds `n` sessions through every member in turn; returns their ids (all acknowledged).
async fn add_sessions(c: &TestCluster, via: &[u64], tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let resp = c.add(via[i % via.len()], &id, NODE).await;
        assert_eq!(resp.status(), 200, "add {id}");
        ids.push(id);
    }
    ids
}

/// Waits until Raft on member `id` reports that it stopped.
async fn wait_raft_stopped(c: &TestCluster, id: u64) {
    let mut metrics = c.member(id).cluster.raft.metrics();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if metrics.borrow_and_update().running_state.is_err() {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(stopped.is_ok(), "raft on member {id} did not stop");
}

/// Fills member `victim`'s disk (its next log append fails with ENOSPC) and makes the leader
/// replicate to it; returns once its Raft has stopped.
async fn fill_disk_of(c: &TestCluster, victim: u64, via: u64) -> Vec<String> {
    c.member(victim).inject_disk_full(true);
    let ids = add_sessions(c, &[via], "after-full", 3).await;
    wait_raft_stopped(c, victim).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_disk_fills_up_leaves_the_balancer_at_once() {
    let c = TestCluster::start(3).await;
    tracing::info!("phase 1: sessions acknowledged by a healthy cluster");
    let mut acked = add_sessions(&c, &[1, 2, 3], "before", 30).await;
    let leader = c.leader().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();

    let mut fatal = c.member(victim).fatal();
    assert!(fatal.get().is_none());

    tracing::info!(
        victim,
        "phase 2: the member's disk fills up and its Raft stops"
    );
    acked.extend(fill_disk_of(&c, victim, leader).await);

    tracing::info!("phase 3: it says so at once");
    let (readyz, _) = get(&c, victim, "/readyz").await;
    let (healthz, _) = get(&c, victim, "/healthz").await;
    let (status, body) = get(&c, victim, "/status").await;
    assert_eq!(readyz, 503, "readyz of a member whose raft stopped");
    assert_eq!(healthz, 503, "healthz of a member whose raft stopped");
    assert_eq!(status, 200, "status answers");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["value"]["ready"], false, "status: {body}");
    let message = body["value"]["message"].as_str().unwrap();
    assert!(message.contains("raft has stopped"), "status: {message}");
    let cause = tokio::time::timeout(Duration::from_secs(1), fatal.wait())
        .await
        .expect("the fatal handle resolves");
    assert!(cause.contains("No space left on device"), "cause: {cause}");
    assert!(
        message.contains("No space left on device"),
        "status: {message}"
    );
    let metrics = c.metrics_text(victim).await;
    assert!(
        metrics.contains("gridraft_raft_stopped 1"),
        "gridraft_raft_stopped missing or 0"
    );
    let (lookup, _) = get(&c, victim, &format!("/se/grid/session/{}", acked[0])).await;
    assert_eq!(lookup, 500, "a lookup on the stopped member fails at once");

    tracing::info!("phase 4: the other two members serve every acknowledged session");
    for id in &acked {
        for via in (1..=3).filter(|m| *m != victim) {
            assert_eq!(c.get_status(via, id).await, 200, "{id} via member {via}");
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_restarted_after_its_raft_stopped_has_every_acknowledged_session() {
    let mut c = TestCluster::start(3).await;
    let mut acked = add_sessions(&c, &[1, 2, 3], "before", 20).await;
    let leader = c.leader().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();

    tracing::info!(victim, "phase 1: its disk fills up and its Raft stops");
    c.disk.set_free(&c.members[&victim].dir, 0);
    acked.extend(fill_disk_of(&c, victim, leader).await);
    c.kill(victim).await;

    tracing::info!("phase 2: the others go on acknowledging sessions");
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    acked.extend(add_sessions(&c, &others, "while-down", 20).await);

    tracing::info!("phase 3: restarted with its disk still low, it stays out of the balancer");
    c.restart(victim).await;
    c.wait_caught_up(victim).await;
    for id in &acked {
        assert!(
            matches!(
                c.member(victim).cluster.reader.get(id),
                gridraft::map::Lookup::Found(_)
            ),
            "{id} missing on the restarted member"
        );
    }
    eventually(
        Duration::from_secs(5),
        "the low member to be unready",
        || async { (get(&c, victim, "/readyz").await.0 == 503).then_some(()) },
    )
    .await;
    let (_, status) = get(&c, victim, "/status").await;
    assert!(status.contains("low on free space"), "status: {status}");

    tracing::info!("phase 4: space is freed and it rejoins the balancer");
    c.disk
        .set_free(&c.members[&victim].dir, common::disk::TOTAL / 2);
    eventually(
        Duration::from_secs(5),
        "the member to be ready again",
        || async { (get(&c, victim, "/readyz").await.0 == 204).then_some(()) },
    )
    .await;
    for id in &acked {
        assert_eq!(
            c.get_status(victim, id).await,
            200,
            "{id} via the restarted member"
        );
    }
    c.shutdown().await;
}

/// Sets member `id`'s free space and waits until the replicated alarm set says `low`.
async fn set_low(c: &TestCluster, id: u64, low: bool) {
    let free = if low {
        1 << 20
    } else {
        common::disk::TOTAL / 2
    };
    c.disk.set_free(&c.members[&id].dir, free);
    eventually(
        Duration::from_secs(10),
        "the disk alarm to replicate",
        || async {
            c.running()
                .iter()
                .all(|m| c.member(*m).cluster.reader.low_disk_members().contains(&id) == low)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn low_disk_leaves_the_balancer_and_a_low_quorum_refuses_adds_until_space_returns() {
    let c = TestCluster::start(3).await;
    let acked = add_sessions(&c, &[1, 2, 3], "before", 6).await;

    tracing::info!("phase 1: one low member leaves the balancer, adds go on through the others");
    set_low(&c, 1, true).await;
    eventually(Duration::from_secs(5), "member 1 to be unready", || async {
        (get(&c, 1, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    assert_eq!(get(&c, 2, "/readyz").await.0, 204);
    assert_eq!(get(&c, 3, "/readyz").await.0, 204);
    let more = add_sessions(&c, &[2, 3], "one-low", 4).await;
    assert!(c.metrics_text(1).await.contains("gridraft_disk_low 1"));
    assert!(c.metrics_text(2).await.contains("gridraft_nospace_alarm 0"));

    tracing::info!("phase 2: two low members: adds refused, lookups and removals served");
    set_low(&c, 2, true).await;
    for via in 1..=3 {
        let resp = c.add(via, &format!("refused-{via}"), NODE).await;
        assert_eq!(resp.status(), 500, "add via member {via}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["value"]["error"], "unknown error");
        let message = body["value"]["message"].as_str().unwrap();
        assert!(
            message.contains("low on disk space") && message.contains("members 1, 2"),
            "message: {message}"
        );
        assert_eq!(c.get_status(via, &format!("refused-{via}")).await, 404);
    }
    for id in acked.iter().chain(&more) {
        for via in 1..=3 {
            assert_eq!(c.get_status(via, id).await, 200, "{id} via member {via}");
        }
    }
    assert_eq!(c.delete(1, &acked[0]).await, 200);
    assert_eq!(c.get_status(3, &acked[0]).await, 404);
    eventually(Duration::from_secs(5), "the alarm metric", || async {
        c.metrics_text(3)
            .await
            .contains("gridraft_nospace_alarm 1")
            .then_some(())
    })
    .await;
    // While a quorum is low the low members stay in the balancer: they still serve lookups and
    // removals, which are what frees space.
    assert_eq!(get(&c, 1, "/readyz").await.0, 204);

    tracing::info!("phase 3: space returns and adds are accepted again");
    set_low(&c, 1, false).await;
    set_low(&c, 2, false).await;
    add_sessions(&c, &[1, 2, 3], "after", 3).await;
    for id in 1..=3 {
        eventually(Duration::from_secs(5), "every member ready", || async {
            (get(&c, id, "/readyz").await.0 == 204).then_some(())
        })
        .await;
    }
    c.shutdown().await;
}
