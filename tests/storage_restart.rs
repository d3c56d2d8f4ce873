//! No sequence of accepted requests leaves a member that cannot start, and a restart keeps
//! every acknowledged write: large entries, and many removals with long node URIs.

mod common;

use std::time::Duration;

use common::{eventually, TestCluster};

/// A session body whose capabilities hold `n` zeros `depth` arrays deep: a few bytes each in
/// the request, but each on its own indented line once rendered, so the record grows far
/// beyond the body.
fn deep_session(id: &str, depth: usize, n: usize) -> String {
    let zeros = vec!["0"; n].join(",");
    let deep = format!("{}{zeros}{}", "[".repeat(depth), "]".repeat(depth));
    format!(
        r#"{{"capabilities": {{"browserName": "chrome", "deep": {deep}}}, "sessionId": "{id}", "start": "2024-05-01T10:20:30.123400Z", "stereotype": {{"browserName": "chrome"}}, "uri": "http://10.0.0.5:5555"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_too_large_for_the_log_is_refused_and_a_restart_keeps_every_acknowledged_session() {
    // The largest body the API may be set to read, so that the body is read and judged whole.
    let mut c = TestCluster::builder(1)
        .tune(|s| s.grid.max_body_bytes = 16 << 20)
        .start()
        .await;
    tracing::info!("phase: a 4 MB body that renders to a record of about 74 MB");
    let big = c
        .http
        .post(c.url(1, "/se/grid/session"))
        .body(deep_session("big", 16, 2_000_000))
        .send()
        .await
        .unwrap();
    let big_status = big.status().as_u16();
    let big_text = big.text().await.unwrap();
    tracing::info!("phase: an ordinary add after it");
    assert_eq!(
        c.add(1, "after", "http://10.0.0.6:5555").await.status(),
        200
    );

    tracing::info!("phase: crash and restart");
    c.kill(1).await;
    c.restart(1).await;
    c.wait_for_leader(Duration::from_secs(20)).await;
    let big_after = c.get_status(1, "big").await;
    let after = c.get_status(1, "after").await;
    assert!(
        big_status != 200 || big_after == 200,
        "the add of the large session was acknowledged but is gone after a restart ({big_after})"
    );
    assert_eq!(after, 200, "an acknowledged add is gone after a restart");
    assert_eq!(
        big_status, 500,
        "a session too large for one log entry is refused: {big_text}"
    );
    assert!(big_text.contains("unknown error"), "{big_text}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarts_with_its_sessions_and_removals_after_churn_with_long_node_uris() {
    let mut c = TestCluster::builder(1)
        .snapshot_after_entries(100)
        .start()
        .await;
    // Under the API's node URI limit (4096 bytes).
    let node = |i: usize| format!("http://node-{i}.example:5555/{}", "p".repeat(4000));
    tracing::info!("phase: 300 add+delete pairs and 20 live sessions with long node URIs");
    for i in 0..300 {
        let id = format!("gone-{i}");
        assert_eq!(c.add(1, &id, &node(i)).await.status(), 200, "add {id}");
        assert_eq!(c.delete(1, &id).await, 200, "delete {id}");
    }
    for i in 0..20 {
        let id = format!("live-{i}");
        assert_eq!(c.add(1, &id, &node(1000 + i)).await.status(), 200);
    }

    tracing::info!("phase: a snapshot of all of it");
    let raft = c.member(1).cluster.raft.clone();
    let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
    raft.trigger().snapshot().await.unwrap();
    eventually(Duration::from_secs(30), "a snapshot of every write", || {
        let raft = raft.clone();
        async move {
            let snapshot = raft.metrics().borrow().snapshot.map(|l| l.index);
            (snapshot >= applied).then_some(())
        }
    })
    .await;
    drop(raft);

    tracing::info!("phase: crash and restart from the snapshot");
    c.kill(1).await;
    c.restart(1).await;
    c.wait_for_leader(Duration::from_secs(20)).await;
    for i in 0..20 {
        let body = c
            .get_text(1, &format!("/se/grid/session/live-{i}/uri"))
            .await;
        assert!(
            body.contains(&format!("node-{}.example", 1000 + i)),
            "live-{i}: {body}"
        );
    }
    for i in [0, 150, 299] {
        let resp = c
            .http
            .get(c.url(1, &format!("/se/grid/session/gone-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let text = resp.text().await.unwrap();
        assert!(
            text.contains("Session was removed at") && text.contains(&format!("node-{i}.example")),
            "gone-{i}: {text}"
        );
    }
    c.shutdown().await;
}
