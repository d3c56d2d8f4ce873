//! The Grid routes' input limits (docs/api.md "Limits"): a request over any of them is refused
//! with Grid's 500 `unknown error` naming the limit, counted in
//! `gridraft_refused_requests_total{limit}`, and nothing is proposed or stored. A body is refused
//! before it is read whole, and before any tree or record as large as the limits allow is built.

mod common;

use std::time::Duration;

use common::grid::{
    add, assert_no_such_session, assert_unknown_error, delete, get, session_json, session_path,
    simple_session, Conn, SingleMember,
};
use gridraft::config::GridSettings;

const NODE: &str = "http://10.0.0.5:5555";
const MIB: usize = 1 << 20;
/// Long enough for any single answer; a refusal that waits for the rest of a body never comes.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `gridraft_refused_requests_total{limit="<limit>"}`, 0 when absent.
async fn refused(m: &SingleMember, limit: &str) -> u64 {
    metric(
        m,
        &format!("gridraft_refused_requests_total{{limit=\"{limit}\"}}"),
    )
    .await
}

/// The last log index: unchanged across a refused request means nothing was proposed.
async fn last_log_index(m: &SingleMember) -> u64 {
    metric(m, "gridraft_raft_last_log_index").await
}

async fn metric(m: &SingleMember, name: &str) -> u64 {
    let text = m.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Asserts a refusal whose message names `setting` and `value`.
fn assert_refused(resp: &common::grid::Response, setting: &str, value: usize) -> String {
    let message = assert_unknown_error(resp);
    assert!(
        message.contains(setting) && message.contains(&value.to_string()),
        "the message names {setting} and {value}: {message}"
    );
    message
}

/// A body of at most `len` bytes, nearly all of it JSON values `0` in one flat array: two bytes per value, the densest JSON.
fn flat_body(id: &str, len: usize) -> String {
    let head = session_json(id, NODE, r#"{"a": []}"#, "{}", "0");
    let zeros = (len - head.len()).div_ceil(2);
    let array = vec!["0"; zeros].join(",");
    let body = session_json(id, NODE, &format!(r#"{{"a": [{array}]}}"#), "{}", "0");
    assert!(body.len() <= len);
    body
}

/// Arrays nested `depth` deep around `n` copies of `value`: small as a body, but every value is
/// indented once per level in Selenium's pretty layout.
fn nested_body(id: &str, depth: usize, n: usize, value: &str) -> String {
    let values = vec![value; n].join(",");
    let caps = format!(
        r#"{{"a": {}{values}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    session_json(id, NODE, &caps, "{}", "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_body_limit_is_refused_without_reading_the_body() {
    let m = SingleMember::start().await;
    let mut conn = Conn::open(m.addr).await.unwrap();
    // Only the head is sent: an answer proves the member did not wait for the body.
    let head = format!(
        "POST /se/grid/session HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        2 * MIB
    );
    conn.write_raw(head.as_bytes()).await.unwrap();
    let resp = tokio::time::timeout(ANSWER_TIMEOUT, conn.receive("POST"))
        .await
        .expect("an answer before the body is sent")
        .unwrap();
    assert_refused(&resp, "grid.max-body-bytes", MIB);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_by_server().await.unwrap());
    assert_eq!(refused(&m, "body").await, 1);
    // The member goes on serving new connections as usual.
    assert_eq!(add(m.addr, simple_session("next", NODE)).await.status, 200);
    assert_eq!(get(m.addr, &session_path("next")).await.status, 200);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_stops_being_read_at_the_limit_and_the_connection_is_closed() {
    let m = SingleMember::start().await;
    let index = last_log_index(&m).await;
    let mut conn = Conn::open(m.addr).await.unwrap();
    conn.write_raw(
        b"POST /se/grid/session HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    // One chunk past the limit, and never the last chunk: only a member that stops reading at
    // the limit answers.
    let chunk = vec![b' '; 64 * 1024];
    for i in 0..=(MIB / chunk.len()) {
        conn.write_raw(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        conn.write_raw(&chunk).await.unwrap();
        if i < MIB / chunk.len() {
            conn.write_raw(b"\r\n").await.unwrap();
        }
    }
    let resp = tokio::time::timeout(ANSWER_TIMEOUT, conn.receive("POST"))
        .await
        .expect("an answer although the body never ends")
        .unwrap();
    assert_refused(&resp, "grid.max-body-bytes", MIB);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_by_server().await.unwrap());
    assert_eq!(refused(&m, "body").await, 1);
    assert_eq!(last_log_index(&m).await, index, "nothing was proposed");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_refused() {
    let limit = 65_536;
    let m = SingleMember::start_with(GridSettings {
        max_body_bytes: limit,
        ..Default::default()
    })
    .await;
    let padded = |id: &str, len: usize| {
        let head = session_json(id, NODE, r#"{"pad": ""}"#, "{}", "0");
        let caps = format!(r#"{{"pad": "{}"}}"#, "x".repeat(len - head.len()));
        let body = session_json(id, NODE, &caps, "{}", "0");
        assert_eq!(body.len(), len);
        body
    };
    assert_eq!(add(m.addr, padded("at", limit)).await.status, 200);
    let resp = add(m.addr, padded("over", limit + 1)).await;
    assert_refused(&resp, "grid.max-body-bytes", limit);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(get(m.addr, &session_path("at")).await.status, 200);
    assert_no_such_session(&get(m.addr, &session_path("over")).await);
    assert_eq!(refused(&m, "body").await, 1);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_over_the_limit_is_refused_on_every_route_and_never_proposed() {
    let m = SingleMember::start().await;
    let at = "i".repeat(1024);
    assert_eq!(add(m.addr, simple_session(&at, NODE)).await.status, 200);
    assert_eq!(get(m.addr, &session_path(&at)).await.status, 200);
    assert_eq!(delete(m.addr, &session_path(&at)).await.status, 200);
    let index = last_log_index(&m).await;
    let over = "o".repeat(1025);
    let path = session_path(&over);
    for resp in [
        add(m.addr, simple_session(&over, NODE)).await,
        get(m.addr, &path).await,
        get(m.addr, &format!("{path}/uri")).await,
        delete(m.addr, &path).await,
    ] {
        let message = assert_refused(&resp, "grid.max-session-id-bytes", 1024);
        assert!(!message.contains(&over), "the id is not echoed: {message}");
    }
    assert_eq!(refused(&m, "session_id").await, 4);
    assert_eq!(last_log_index(&m).await, index, "nothing was proposed");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_uri_over_the_limit_is_refused_and_nothing_is_stored() {
    let m = SingleMember::start().await;
    let uri = |len: usize| {
        let base = "http://node:5555/";
        format!("{base}{}", "p".repeat(len - base.len()))
    };
    assert_eq!(
        add(m.addr, simple_session("at", &uri(4096))).await.status,
        200
    );
    let resp = get(m.addr, &format!("{}/uri", session_path("at"))).await;
    assert_eq!(resp.json()["value"].as_str().map(str::len), Some(4096));
    let index = last_log_index(&m).await;
    let resp = add(m.addr, simple_session("over", &uri(4097))).await;
    assert_refused(&resp, "grid.max-node-uri-bytes", 4096);
    assert_no_such_session(&get(m.addr, &session_path("over")).await);
    assert_eq!(refused(&m, "node_uri").await, 1);
    assert_eq!(last_log_index(&m).await, index, "nothing was proposed");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_would_render_over_the_record_limit_is_refused_and_nothing_is_stored() {
    let m = SingleMember::start().await;
    // 340 KB of 20-deep arrays of 16-digit numbers: each number is indented by 44 spaces when
    // pretty-printed, so the record would be about 1.2 MB.
    let body = nested_body("deep", 20, 20_000, "1000000000000000");
    assert!(body.len() < MIB);
    let index = last_log_index(&m).await;
    let resp = add(m.addr, body).await;
    assert_refused(&resp, "grid.max-record-bytes", MIB);
    assert_no_such_session(&get(m.addr, &session_path("deep")).await);
    assert_eq!(refused(&m, "record").await, 1);
    assert_eq!(last_log_index(&m).await, index, "nothing was proposed");
    // The same shape, smaller, is stored.
    let body = nested_body("shallow", 20, 1_000, "1000000000000000");
    assert_eq!(add(m.addr, body).await.status, 200);
    assert_eq!(get(m.addr, &session_path("shallow")).await.status, 200);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_denser_in_json_values_than_the_parser_allows_is_refused_before_parsing() {
    let m = SingleMember::start().await;
    let index = last_log_index(&m).await;
    // Just under the body limit, half a million values: a tree of them would cost ~45 MB.
    let body = flat_body("dense", MIB - 16);
    let resp = add(m.addr, body).await;
    let message = assert_unknown_error(&resp);
    assert!(message.contains("JSON values"), "{message}");
    assert_no_such_session(&get(m.addr, &session_path("dense")).await);
    assert_eq!(refused(&m, "json").await, 1);
    assert_eq!(last_log_index(&m).await, index, "nothing was proposed");
    // A small body may be as dense as it likes: 4,000 values in 8 KB.
    assert_eq!(add(m.addr, flat_body("small", 8_000)).await.status, 200);
    assert_eq!(get(m.addr, &session_path("small")).await.status, 200);
    m.stop().await;
}
