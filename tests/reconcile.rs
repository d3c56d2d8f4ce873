//! The reconciler in an in-process cluster against a fake Grid node (a small axum server that
//! answers `/se/grid/node/status` with the sessions a test says it holds) and a node that does
//! not answer (a closed port): sessions the node no longer holds leave after the grace with the
//! reconciler's 404 text, an unreachable node's sessions leave after `node-down-after`, young
//! sessions stay, dry-run removes nothing, only the leader asks, and nothing is removed while
//! the leader has no quorum.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use common::{eventually, TestCluster, SECRET};
use gridraft::config::Settings;
use gridraft::map::Lookup;

const REGISTRATION_SECRET: &str = "reconcile-registration-secret";
const WAIT: Duration = Duration::from_secs(20);

/// What the fake node holds, and the secret headers it was sent.
#[derive(Default)]
struct NodeState {
    held: HashSet<String>,
    secrets: Vec<Option<String>>,
}

/// A fake Grid node on 127.0.0.1; its URI is what sessions on it record.
struct FakeNode {
    uri: String,
    state: Arc<Mutex<NodeState>>,
}

impl FakeNode {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(NodeState::default()));
        let app = Router::new()
            .route("/se/grid/node/status", get(status))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeNode { uri, state }
    }

    fn hold(&self, ids: &[&str]) {
        self.state.lock().unwrap().held = ids.iter().map(|s| s.to_string()).collect();
    }

    fn secrets_seen(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().secrets.clone()
    }
}

/// A 4.48 node's `NodeStatus`, abridged to what the reconciler reads and one idle slot.
async fn status(
    State(state): State<Arc<Mutex<NodeState>>>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    let mut state = state.lock().unwrap();
    let secret = headers
        .get("x-registration-secret")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.secrets.push(secret);
    let mut slots: Vec<_> = state
        .held
        .iter()
        .map(|id| serde_json::json!({"session": {"sessionId": id, "uri": "http://localhost:1"}}))
        .collect();
    slots.push(serde_json::json!({"session": null, "lastStarted": "1970-01-01T00:00:00Z"}));
    Json(serde_json::json!({"availability": "UP", "slots": slots}))
}

/// A node URI nothing listens on: connections are refused.
fn dead_node() -> String {
    format!("http://127.0.0.1:{}", common::free_port())
}

/// Fast reconciler settings, switched on by an event bus (nothing listens there).
fn fast(s: &mut Settings) {
    s.events.publish_events = Some(format!("tcp://127.0.0.1:{}", common::free_port()));
    s.events.registration_secret = Some(REGISTRATION_SECRET.into());
    s.reconcile.interval = "200ms".into();
    s.reconcile.grace = "2s".into();
    s.reconcile.node_down_after = "2s".into();
}

fn fast_dry_run(s: &mut Settings) {
    fast(s);
    s.reconcile.dry_run = true;
}

/// The value of the series `series` (name and labels exactly as printed) in `text`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The value of the reconciler family `gridraft_reconcile_<family>` with its one label.
fn reconcile_metric(text: &str, family: &str, label: &str, value: &str) -> f64 {
    metric(
        text,
        &format!("gridraft_reconcile_{family}{{{label}=\"{value}\"}}"),
    )
}

fn removed(text: &str, reason: &str) -> f64 {
    reconcile_metric(text, "removals_total", "reason", reason)
}

fn runs(text: &str, outcome: &str) -> f64 {
    reconcile_metric(text, "runs_total", "outcome", outcome)
}

async fn removals(c: &TestCluster, id: u64, query: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}/admin/removals{query}", c.members[&id].peer);
    let resp = c.http.get(url).bearer_auth(SECRET).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Waits until `id` answers 404 on member `via`; the 404's message.
async fn wait_gone(c: &TestCluster, via: u64, id: &str) -> String {
    eventually(WAIT, &format!("{id} removed"), || async {
        (c.get_status(via, id).await == 404).then_some(())
    })
    .await;
    let body = c.get_text(via, &format!("/se/grid/session/{id}")).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    body["value"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_its_node_no_longer_holds_leaves_after_the_grace_and_only_the_leader_asks() {
    common::init_tracing();
    let node = FakeNode::start().await;
    node.hold(&["kept"]);
    let c = TestCluster::builder(3).tune(fast).start().await;
    let leader = c.leader().await;
    println!("phase: two sessions on the node, which holds one");
    let added = Instant::now();
    assert_eq!(c.add(1, "kept", &node.uri).await.status(), 200);
    assert_eq!(c.add(2, "lost", &node.uri).await.status(), 200);

    let body = wait_gone(&c, 3, "lost").await;
    let took = added.elapsed();
    println!("phase: removed after {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "removed within the grace: {took:?}"
    );
    assert!(
        body.contains("reason: node no longer has the session"),
        "{body}"
    );
    assert!(body.contains(&format!("node: {}", node.uri)), "{body}");
    assert_eq!(c.get_status(1, "kept").await, 200);

    println!("phase: the removal history on every member");
    for id in [1, 2, 3] {
        c.wait_caught_up(id).await;
        let (code, history) = removals(&c, id, "").await;
        assert_eq!(code, 200);
        assert_eq!(history["count"], 1, "{history}");
        let r = &history["removals"][0];
        assert_eq!(r["session_id"], "lost");
        assert_eq!(r["source"], "reconciler");
        assert_eq!(r["reason_code"], "NODE_LOST_SESSION");
        assert_eq!(r["node"], node.uri.as_str());
    }
    let query = format!("?node={}&since=0", node.uri.replace(':', "%3A"));
    assert_eq!(removals(&c, 1, &query).await.1["count"], 1);
    assert_eq!(removals(&c, 1, "?node=http://other:1").await.1["count"], 0);
    assert_eq!(
        removals(&c, 1, "?since=2001-02-03T04:05:06Z").await.1["count"],
        1
    );
    assert_eq!(
        removals(&c, 1, "?since=2999-01-01T00:00:00%2B02:00")
            .await
            .1["count"],
        0
    );
    let (code, bad) = removals(&c, 1, "?since=yesterday").await;
    assert_eq!(code, 400);
    assert!(bad["error"].as_str().unwrap().contains("since"), "{bad}");

    println!("phase: only the leader asked, with the registration secret");
    for id in [1, 2, 3] {
        let text = c.metrics_text(id).await;
        let answered = reconcile_metric(&text, "node_checks_total", "outcome", "answered");
        let removed = removed(&text, "node_lost_session");
        if id == leader {
            assert!(answered >= 2.0, "leader {id} checked {answered} times");
            assert_eq!(removed, 1.0);
            assert!(metric(&text, "gridraft_reconcile_last_run_timestamp_seconds") > 0.0);
        } else {
            assert_eq!((answered, removed), (0.0, 0.0), "follower {id} reconciled");
        }
    }
    let secrets = node.secrets_seen();
    assert!(!secrets.is_empty());
    assert!(secrets
        .iter()
        .all(|s| s.as_deref() == Some(REGISTRATION_SECRET)));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_node_loses_its_sessions_after_node_down_after_and_a_young_session_stays() {
    common::init_tracing();
    let c = TestCluster::builder(3).tune(fast).start().await;
    let dead = dead_node();
    let node = FakeNode::start().await;
    let added = Instant::now();
    assert_eq!(c.add(1, "on-dead-node", &dead).await.status(), 200);

    let body = wait_gone(&c, 2, "on-dead-node").await;
    let took = added.elapsed();
    println!("phase: the dead node's session removed after {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "removed too early: {took:?}"
    );
    assert!(body.contains("reason: node unreachable for "), "{body}");
    let (_, history) = removals(&c, 2, "").await;
    assert_eq!(history["removals"][0]["reason_code"], "NODE_UNREACHABLE");

    println!("phase: a session the node does not hold stays while young");
    assert_eq!(c.add(1, "young", &node.uri).await.status(), 200);
    let seen = Instant::now();
    let leader = c.leader().await;
    let before = runs(&c.metrics_text(leader).await, "done");
    eventually(WAIT, "three more runs", || async {
        (runs(&c.metrics_text(leader).await, "done") >= before + 3.0).then_some(())
    })
    .await;
    if seen.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            c.get_status(1, "young").await,
            200,
            "a young session was removed"
        );
    }
    wait_gone(&c, 1, "young").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_counts_what_it_would_remove_and_removes_nothing() {
    common::init_tracing();
    let node = FakeNode::start().await;
    let c = TestCluster::builder(3).tune(fast_dry_run).start().await;
    let leader = c.leader().await;
    assert_eq!(c.add(1, "lost", &node.uri).await.status(), 200);
    assert_eq!(c.add(1, "down", &dead_node()).await.status(), 200);
    eventually(WAIT, "both counted as would-remove", || async {
        let text = c.metrics_text(leader).await;
        let lost = reconcile_metric(&text, "would_remove", "reason", "node_lost_session");
        let down = reconcile_metric(&text, "would_remove", "reason", "node_unreachable");
        (lost == 1.0 && down == 1.0).then_some(())
    })
    .await;
    assert_eq!(c.get_status(2, "lost").await, 200);
    assert_eq!(c.get_status(2, "down").await, 200);
    let text = c.metrics_text(leader).await;
    assert_eq!(removed(&text, "node_lost_session"), 0.0);
    assert_eq!(removals(&c, leader, "").await.1["count"], 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_a_quorum_removes_nothing_and_resumes_after_the_heal() {
    common::init_tracing();
    let node = FakeNode::start().await;
    let c = TestCluster::builder(3).tune(fast).start().await;
    let leader = c.leader().await;
    assert_eq!(c.add(leader, "lost", &node.uri).await.status(), 200);
    for id in [1, 2, 3] {
        c.wait_caught_up(id).await;
    }

    println!("phase: both followers cut off; no member can reach a quorum");
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    for f in &followers {
        c.isolate(*f);
    }
    eventually(WAIT, "runs skipped for want of a quorum", || async {
        (runs(&c.metrics_text(leader).await, "no_quorum") >= 3.0).then_some(())
    })
    .await;
    // Past the grace by now (three skipped runs take over 2 s with the barrier's timeouts);
    // wait past it anyway, so only the quorum keeps the session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in [1, 2, 3] {
        let map = &c.member(id).cluster.reader;
        assert!(
            matches!(map.get("lost"), Lookup::Found(_)),
            "member {id} removed it"
        );
    }
    let text = c.metrics_text(leader).await;
    assert_eq!(removed(&text, "node_lost_session"), 0.0);

    println!("phase: healed; the session leaves");
    for f in &followers {
        c.heal(*f);
    }
    let via = c.leader().await;
    wait_gone(&c, via, "lost").await;
    c.shutdown().await;
}
