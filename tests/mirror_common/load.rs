//! A deterministic mixed load (adds, re-adds on another node, deletes, removals by node URI,
//! duplicated Grid events) sent through several members at once, with a model of the outcome.
//! Each writer owns its ids and node URIs, so the final state is predictable despite the
//! concurrency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gridraft::map::SessionMap;
use gridraft::map::{now_nanos, Op, Proposal};
use gridraft::session::RemovalReason;

use crate::common::TestCluster;

/// Session bodies with the escapes and numbers Selenium's writer is particular about.
pub fn body(id: &str, uri: &str, variant: u64) -> String {
    format!(
        r#"{{"capabilities": {{"browserName": "chrome", "acceptInsecureCerts": null, "se:cdp": "ws://10.0.0.5:4444/session/{id}/se/cdp", "goog:chromeOptions": {{"args": [], "x": null}}, "timeouts": {{"pageLoad": 300000, "script": {variant}}}, "zoom": 1.5e-7, "note": "<a&b> \u2028 ü 🦀"}}, "sessionId": "{id}", "start": "2024-05-01T10:20:30.{variant:03}4Z", "stereotype": {{"browserName": "chrome", "se:noVncPort": 7900, "max": {variant}.0}}, "uri": "{uri}"}}"#
    )
}

/// What the cluster should hold: id → node URI.
pub type Model = BTreeMap<String, String>;

/// A tiny deterministic generator (no external crate needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The slowest Grid write observed, so tests can check a mirror outage never slows the Grid.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub writes: usize,
    pub slowest: Duration,
}

/// Runs `ops` operations from writer `writer`, spreading them over `via` members.
pub async fn run_writer(
    c: &TestCluster,
    writer: u64,
    via: &[u64],
    ops: usize,
    round: u64,
    model: &mut Model,
) -> LoadReport {
    let mut rng = Rng(writer * 7919 + round * 104729 + 17);
    let mut report = LoadReport::default();
    let mut events: Vec<Proposal> = Vec::new();
    for i in 0..ops {
        let member = via[i % via.len()];
        let id = format!("w{writer}-s{}", rng.next(24));
        let uri = format!("http://node-{writer}-{}:5555", rng.next(3));
        let started = Instant::now();
        match rng.next(10) {
            0..=4 => {
                let variant = rng.next(1000);
                let resp = c
                    .http
                    .post(c.url(member, "/se/grid/session"))
                    .body(body(&id, &uri, variant))
                    .send()
                    .await
                    .expect("POST reaches the member");
                assert_eq!(resp.status(), 200, "add {id} via member {member}");
                model.insert(id, uri);
            }
            5..=6 => {
                let resp = c
                    .http
                    .delete(c.url(member, &format!("/se/grid/session/{id}")))
                    .send()
                    .await
                    .expect("DELETE reaches the member");
                assert_eq!(resp.status(), 200, "delete {id} via member {member}");
                model.remove(&id);
            }
            7..=8 => {
                // node-restarted: every session on `uri` goes; the event id makes it one-shot.
                let p = Proposal {
                    at: now_nanos(),
                    event_id: Some(uuid::Uuid::new_v4()),
                    op: Op::RemoveByUri {
                        uri: uri.clone(),
                        reason: RemovalReason::NodeRestarted,
                    },
                };
                c.member(member)
                    .cluster
                    .propose(p.clone())
                    .await
                    .expect("remove by uri commits");
                model.retain(|_, u| *u != uri);
                events.push(p);
            }
            _ => {
                // A duplicated event (every member proposes what it receives): no effect.
                if let Some(p) = events.get(rng.next(events.len().max(1) as u64) as usize) {
                    let mut again = p.clone();
                    again.at = now_nanos();
                    let applied = c
                        .member(member)
                        .cluster
                        .propose(again)
                        .await
                        .expect("duplicate commits");
                    assert!(applied.duplicate, "a repeated event id is ignored");
                }
            }
        }
        report.writes += 1;
        report.slowest = report.slowest.max(started.elapsed());
    }
    report
}

/// Runs one writer per entry of `via_sets` concurrently and merges their models.
pub async fn mixed_load(
    c: &TestCluster,
    via_sets: &[Vec<u64>],
    ops: usize,
    round: u64,
    model: &mut Model,
) -> LoadReport {
    let futures = via_sets.iter().enumerate().map(|(w, via)| {
        let mut own: Model = model
            .iter()
            .filter(|(id, _)| id.starts_with(&format!("w{w}-")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        async move {
            let r = run_writer(c, w as u64, via, ops, round, &mut own).await;
            (w, own, r)
        }
    });
    let results = futures::future::join_all(futures).await;
    let mut total = LoadReport::default();
    for (w, own, r) in results {
        model.retain(|id, _| !id.starts_with(&format!("w{w}-")));
        model.extend(own);
        total.writes += r.writes;
        total.slowest = total.slowest.max(r.slowest);
    }
    total
}

/// The load of the equality tests: 120 writes per writer, each writer through two members;
/// returns the Raft state after it, checked against the model.
pub async fn load_through_every_member(c: &TestCluster) -> SessionMap {
    let mut model = Model::new();
    mixed_load(c, &[vec![1, 2], vec![2, 3], vec![3, 1]], 120, 0, &mut model).await;
    let truth = c.truth().await;
    assert_matches_model(&truth, &model);
    truth
}

/// The load of the outage tests while the store is down: 80 writes per writer, each writer
/// through two members; every write still answers within 2 s (the mirror is asynchronous).
pub async fn load_during_outage(c: &TestCluster, model: &mut Model) {
    let report = mixed_load(c, &[vec![1, 2], vec![2, 3], vec![3, 1]], 80, 1, model).await;
    assert!(
        report.slowest < Duration::from_secs(2),
        "a write took {:?} during the outage",
        report.slowest
    );
}

/// Waits until the leader reports the mirror `name` down (and, with `lagging`, behind).
pub async fn wait_mirror_down(c: &TestCluster, name: &str, lagging: bool) -> u64 {
    let leader = c.leader().await;
    crate::common::eventually(
        Duration::from_secs(30),
        "the mirror to be reported down",
        || async {
            let s = &c.status(leader).await["mirrors"][name];
            (s["state"] == "down" && (!lagging || s["lag_entries"].as_u64() > Some(0)))
                .then_some(())
        },
    )
    .await;
    leader
}

/// The Raft state holds exactly what the model says: nothing lost, nothing resurrected.
pub fn assert_matches_model(map: &SessionMap, model: &Model) {
    let live: Model = map
        .sessions()
        .map(|s| (s.id.clone(), s.uri.clone()))
        .collect();
    assert_eq!(
        &live, model,
        "the Raft state differs from the model of the load"
    );
}
