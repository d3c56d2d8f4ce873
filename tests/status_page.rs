//! The status page `/ui` on a three-member cluster: it names the leader, counts sessions per
//! Grid node, lists removals, never shows capabilities, escapes what came from the network, and
//! shows a killed member as down within a few seconds without being slowed down by it.

mod common;

use std::time::{Duration, Instant};

use common::grid::session_json;
use common::{eventually, TestCluster};

const NODE_A: &str = "http://node-a:5555";
const NODE_B: &str = "http://node-b:5555/a&b";
const SECRET_CAP: &str = "hunter2-do-not-show";
const SCRIPT_ID: &str = "<script>alert(1)</script>";

async fn ui(c: &TestCluster, via: u64) -> String {
    let resp = c.http.get(c.url(via, "/ui")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    resp.text().await.unwrap()
}

async fn add_raw(c: &TestCluster, via: u64, body: String) -> u16 {
    let url = c.url(via, "/se/grid/session");
    let resp = c.http.post(url).body(body).send().await.unwrap();
    resp.status().as_u16()
}

/// The first member that is not `leader` and not `but`.
fn follower(c: &TestCluster, leader: u64, but: u64) -> u64 {
    c.running()
        .into_iter()
        .find(|id| *id != leader && *id != but)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_shows_members_sessions_and_removals_without_capabilities() {
    let c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let viewer = follower(&c, leader, 0);

    tracing::info!("phase: sessions on two nodes, one with a secret capability, one removed");
    for id in ["a-1", "a-2", "a-3"] {
        assert_eq!(c.add(leader, id, NODE_A).await.status(), 200);
    }
    let caps = format!(r#"{{"browserName": "chrome", "se:token": "{SECRET_CAP}"}}"#);
    let body = session_json(
        SCRIPT_ID,
        NODE_B,
        &caps,
        r#"{"browserName": "chrome"}"#,
        r#""2024-05-01T10:20:30Z""#,
    );
    assert_eq!(add_raw(&c, viewer, body).await, 200);
    assert_eq!(c.add(viewer, "gone-1", NODE_A).await.status(), 200);
    assert_eq!(c.delete(viewer, "gone-1").await, 200);
    // A node URI with markup is refused by the Grid's contract (Java's URI parser): the page
    // can only ever see escaped-safe URIs from the map, and it escapes them anyway.
    let markup_node = session_json(
        "x",
        "http://n/<script>",
        "{}",
        "{}",
        r#""2024-05-01T10:20:30Z""#,
    );
    assert_ne!(add_raw(&c, viewer, markup_node).await, 200);
    c.wait_caught_up(viewer).await;

    tracing::info!("phase: the page on a follower");
    let page = ui(&c, viewer).await;
    assert!(
        page.contains(&format!(
            "Leader: <span class=\"lead\">member {leader}</span>"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td>{leader} (leader)</td>")),
        "{page}"
    );
    for id in 1..=3 {
        let row = format!("<tr id=\"member-{id}\">");
        let start = page.find(&row).unwrap_or_else(|| panic!("no row {row}"));
        assert!(page[start..].contains("<td class=\"up\">up</td>"), "{page}");
    }
    assert!(page.contains("4 live sessions on 2 Grid nodes."), "{page}");
    assert!(
        page.contains("<td><code>http://node-a:5555</code></td><td>3</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td><code>http://node-b:5555/a&amp;b</code></td><td>1</td>"),
        "{page}"
    );
    assert!(page.contains("<code>a-2</code> 2024-05-01T10:20:30.123400Z"));
    assert!(
        page.contains("<code>gone-1</code>"),
        "removal history: {page}"
    );
    assert!(
        page.contains("session closed normally (QUIT command)</td><td>delete</td>"),
        "a DELETE's removal names its source: {page}"
    );
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));

    tracing::info!("phase: no capability, no markup from the network");
    assert!(!page.contains(SECRET_CAP), "a capability leaked: {page}");
    assert!(!page.contains("se:token") && !page.contains("browserName"));
    assert!(!page.contains("<script"), "unescaped markup: {page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_shows_a_killed_member_down_within_seconds() {
    let mut c = TestCluster::start(3).await;
    let leader = c.leader().await;
    let viewer = follower(&c, leader, 0);
    let victim = follower(&c, leader, viewer);
    let row = format!("<tr id=\"member-{victim}\">");
    let page = ui(&c, viewer).await;
    let at = page.find(&row).unwrap();
    assert!(page[at..].starts_with(&format!("{row}<td>{victim}</td>")));

    tracing::info!(victim, "phase: kill a follower, watch the page");
    c.kill(victim).await;
    let killed = Instant::now();
    let down = format!("{row}<td>{victim}</td><td><code>");
    eventually(
        Duration::from_secs(5),
        "the page to show the member down",
        || {
            let c = &c;
            let down = &down;
            async move {
                let asked = Instant::now();
                let page = ui(c, viewer).await;
                // Never delayed by more than one peer timeout (1 s), plus a margin for debug builds.
                assert!(asked.elapsed() < Duration::from_secs(2), "slow page");
                let at = page.find(down.as_str())?;
                page[at..]
                    .split("</tr>")
                    .next()
                    .filter(|r| r.contains("<td class=\"down\">down</td>"))
                    .map(|_| ())
            }
        },
    )
    .await;
    tracing::info!(after = ?killed.elapsed(), "the page shows the member down");
    let page = ui(&c, viewer).await;
    assert!(page.contains(&format!("member {leader}</span>")), "{page}");
    c.shutdown().await;
}

#[tokio::test]
async fn status_page_turned_off_is_an_unknown_path() {
    let c = TestCluster::builder(1)
        .tune(|s| s.ui.enabled = false)
        .start()
        .await;
    let resp = c.http.get(c.url(1, "/ui")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(body.contains("unknown command"), "{body}");
    assert!(
        body.contains(r"Unable to find handler for (GET) \u002fui"),
        "{body}"
    );
    c.shutdown().await;
}
