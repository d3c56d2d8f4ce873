//! Differential tests: the same requests go to the real Selenium 4.48.0 `sessions` server
//! (Java `LocalSessionMap`) and to an in-process gridraft member; status line, body and the
//! headers the contract cares about (content-type, cache-control, connection, content-length)
//! must agree. Every test collects all its differences and reports them together.
//!
//! Normalisations, kept minimal, all in [`compare`] and [`normalise_message`]:
//! 1. W3C error bodies (any non-200 answer whose body is `{"value": {"error": ..}}`): compared
//!    as JSON, because Java builds them with `Map.of`, whose iteration order changes from one
//!    JVM run to the next (observed: `stacktrace, error, message` in one run, `message, error,
//!    stacktrace` in another). `stacktrace` is not compared (Java sends a Java stack trace, the
//!    contract allows `""`), and `content-length` is compared only when Java's stacktrace is
//!    empty (`unknown command`); the key set, `error` and `message` are compared.
//! 2. In an error `message`, Java's `\nBuild info: ...\nSystem info: ...\nDriver info: ...`
//!    suffix is cut (the contract lets gridraft omit it).
//! 3. In a removal message, the removal instant and the `(<n> seconds ago)` age are replaced by
//!    placeholders after checking that each side is a valid `Instant.toString()` and a valid age
//!    (the two servers remove at different instants).
//! 4. `/status` bodies are compared as JSON values, not bytes, for the same `Map.of` reason
//!    (content-length is still compared). Session bodies (sorted keys in Java) are compared
//!    byte for byte.
//! 5. A bare 405: Java sends no `content-length` (the body ends at `connection: close`); an
//!    absent `content-length` with an empty body is treated as `content-length: 0`.
//!
//! `HEAD /readyz` is not compared: hyper adds `content-length: 0` to a HEAD answer of 204 where
//! Java sends none; harmless, and not something the Grid ever sends.

mod common;

use std::net::SocketAddr;

use common::grid::{
    session_json, session_path, simple_session, with_h2c_offer, Request, Response, SingleMember,
    EXAMPLE_BODY, EXAMPLE_ID,
};
use common::java::JavaServer;
use gridraft::session::{format_instant_nanos, parse_start};
use serde_json::Value;

const NODE: &str = "http://10.0.0.5:5555";

/// The headers whose presence and value must agree.
const COMPARED_HEADERS: [&str; 3] = ["content-type", "cache-control", "connection"];

fn post(body: impl Into<Vec<u8>>) -> Request {
    with_h2c_offer(Request::new("POST", "/se/grid/session").body(body))
}

fn get(path: &str) -> Request {
    Request::new("GET", path)
}

fn uri(id: &str) -> String {
    format!("{}/uri", session_path(id))
}

/// Sends every request, in order, to both servers and returns all differences.
async fn run(java: SocketAddr, gridraft: SocketAddr, requests: &[Request]) -> Vec<String> {
    let mut diffs = Vec::new();
    for req in requests {
        let j = common::grid::send(java, req).await;
        let g = common::grid::send(gridraft, req).await;
        let body_text = req
            .body
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let what = format!("{} {} {:.120}", req.method, req.path, body_text);
        for d in compare(&j, &g) {
            diffs.push(format!("{what}\n    {d}"));
        }
    }
    diffs
}

/// Differences between Java's answer `j` and gridraft's `g`, after the normalisations listed in
/// the module documentation.
fn compare(j: &Response, g: &Response) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut same = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
        if a != b {
            diffs.push(format!("{what}: java {a} / gridraft {b}"));
        }
    };
    same(
        "status line",
        &(&j.version, j.status),
        &(&g.version, g.status),
    );
    for h in COMPARED_HEADERS {
        same(h, &j.header(h), &g.header(h));
    }
    let length = |r: &Response| match r.header("content-length") {
        None if r.status == 405 && r.body.is_empty() => Some("0".to_owned()),
        other => other.map(str::to_owned),
    };
    if let Some((java_error, java_stacktrace)) = error_parts(j) {
        if java_stacktrace.is_empty() {
            same("content-length", &length(j), &length(g));
        }
        same(
            "error body",
            &Some(java_error),
            &error_parts(g).map(|(e, _)| e),
        );
    } else if j.status == 200 && j.header("content-type").is_some() {
        same("content-length", &length(j), &length(g));
        same("json body", &json(j), &json(g));
    } else {
        // A HEAD answer carries the GET's content-length: for an error that includes Java's
        // stacktrace (normalisation 1).
        let head_of_error =
            j.body.is_empty() && j.status >= 400 && j.header("content-type").is_some();
        if !head_of_error {
            same("content-length", &length(j), &length(g));
        }
        same(
            "body",
            &String::from_utf8_lossy(&j.body),
            &String::from_utf8_lossy(&g.body),
        );
    }
    diffs
}

/// The body as JSON with every object's keys sorted, so that key order does not count.
fn json(r: &Response) -> Option<Value> {
    fn sorted(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    serde_json::from_slice(&r.body).ok().map(sorted)
}

/// A W3C error body as compared (the sorted keys of `value`, `error`, the normalised
/// `message`), and its stacktrace, which only decides whether content-length is comparable.
type ErrorParts = (Vec<String>, Value, String);

fn error_parts(r: &Response) -> Option<(ErrorParts, String)> {
    if r.status == 200 {
        return None;
    }
    let v = json(r)?;
    let inner = v.get("value")?.as_object()?;
    let message = inner.get("message")?.as_str()?;
    let mut keys: Vec<String> = inner.keys().cloned().collect();
    keys.sort();
    let stacktrace = inner.get("stacktrace")?.as_str()?.to_owned();
    Some((
        (keys, inner["error"].clone(), normalise_message(message)),
        stacktrace,
    ))
}

/// Cuts Java's build-info suffix and replaces the removal instant and age (see module docs).
fn normalise_message(message: &str) -> String {
    let message = message.split("\nBuild info: ").next().unwrap_or_default();
    const AT: &str = "Session was removed at ";
    let Some(start) = message.find(AT).map(|i| i + AT.len()) else {
        return message.to_owned();
    };
    let rest = &message[start..];
    let Some((instant, after)) = rest.split_once(" (") else {
        return format!("{message} [no age found]");
    };
    let Some((age, tail)) = after.split_once(')') else {
        return format!("{message} [unterminated age]");
    };
    let instant_ok =
        parse_start(&Value::from(instant)).is_some_and(|t| format_instant_nanos(t) == instant);
    let age_ok = age == "1 second ago"
        || age
            .strip_suffix(" seconds ago")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n != "1");
    format!(
        "{}{} ({}){tail}",
        &message[..start],
        if instant_ok { "<instant>" } else { instant },
        if age_ok { "<n> seconds ago" } else { age }
    )
}

async fn assert_same(requests: Vec<Request>) {
    let Some(jar) = common::deps::java() else {
        return;
    };
    let java = JavaServer::shared(&jar).await;
    let member = SingleMember::start().await;
    let diffs = run(java.addr, member.addr, &requests).await;
    member.stop().await;
    assert!(
        diffs.is_empty(),
        "{} of {} requests answered differently (Java log: {}):\n{}",
        diffs.len(),
        requests.len(),
        java.log.display(),
        diffs.join("\n")
    );
}

/// Adds `(id, body)` then reads it back with GET, GET /uri and HEAD.
fn add_and_read(id: &str, body: String) -> Vec<Request> {
    vec![
        post(body),
        get(&session_path(id)),
        get(&uri(id)),
        Request::new("HEAD", &session_path(id)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_sessions_are_stored_and_returned_identically_by_java_and_gridraft() {
    let chrome = r#"{"browserName": "chrome"}"#;
    let t0 = r#""2024-05-01T10:20:30.123400Z""#;
    let mut reqs = Vec::new();
    reqs.extend(add_and_read(EXAMPLE_ID, EXAMPLE_BODY.into()));
    let numbers = r#"{"n01": 1.0, "n02": 1e2, "n03": 0.1, "n04": 1.0E-7, "n05": 9223372036854775807, "n06": -9223372036854775808, "n07": -0.0, "n08": 2.50, "n09": 1234.56, "n10": 1e300, "n11": 9007199254740993, "n12": 123456789.123, "n13": 1e7, "n14": 0.001, "n15": 1e-4, "n16": 1e21, "n17": 4.9e-324, "n18": [1.0, -1.5, 0, 3e0], "n19": {"deep": 0.30000000000000004}}"#;
    reqs.extend(add_and_read(
        "diff-numbers",
        session_json(
            "diff-numbers",
            NODE,
            numbers,
            r#"{"max": 1.7976931348623157e308}"#,
            t0,
        ),
    ));
    let strings = r#"{"s": "a/b<c>&d'e\"f\\g\u2028h\u2029i\u0001j\tk\n\u007f😀ü", "ws:url": "ws://172.17.0.1:4444/session/x/se/cdp", "nested": {"k/ey": "<&>", "e": ""}}"#;
    reqs.extend(add_and_read(
        "diff-strings",
        session_json("diff-strings", NODE, strings, chrome, t0),
    ));
    let sorting = r#"{"b": 1, "a": 2, "Z": 3, "é": 4, "😀": 5, "\uE000": 6, "a:b": 7, "A": 8, "_": 9, "nested": {"z": 1, "a": 2}}"#;
    reqs.extend(add_and_read(
        "diff-sorting",
        session_json("diff-sorting", NODE, sorting, chrome, t0),
    ));
    let nulls = r#"{"top": null, "kept": {"inner": null, "list": [null, 1, {"x": null}]}, "alsoTop": null}"#;
    reqs.extend(add_and_read(
        "diff-nulls",
        session_json("diff-nulls", NODE, nulls, r#"{"only": null}"#, t0),
    ));
    let nesting =
        r#"{"a": {"b": {"c": [{"d": [[]]}, {}, [], true, false]}}, "empty": {}, "list": []}"#;
    reqs.extend(add_and_read(
        "diff-nesting",
        session_json("diff-nesting", NODE, nesting, "{}", t0),
    ));
    reqs.extend(add_and_read(
        "diff-empty",
        session_json("diff-empty", NODE, "{}", "{}", t0),
    ));
    let starts = [
        r#""2024-05-01T10:20:30.1Z""#,
        r#""2024-05-01T10:20:30.000Z""#,
        r#""2024-05-01T10:20:30.123456789Z""#,
        r#""2024-05-01T10:20:30+02:00""#,
        "1714558830123",
        r#""1714558830123""#,
        "1714558830123.7",
        "0",
        "-1",
    ];
    for (i, start) in starts.iter().enumerate() {
        let id = format!("diff-start-{i}");
        reqs.push(post(session_json(&id, NODE, chrome, chrome, start)));
        reqs.push(get(&session_path(&id)));
    }
    for (i, node) in [
        "relative/path",
        "",
        "http://n:5555/",
        "HTTP://Node:5555/a?b=c#d",
    ]
    .iter()
    .enumerate()
    {
        reqs.extend(add_and_read(
            &format!("diff-uri-{i}"),
            simple_session(&format!("diff-uri-{i}"), node),
        ));
    }
    let extra = r#"{"capabilities": {}, "sessionId": "diff-extra", "sessionId": "diff-dup", "start": 0, "stereotype": {}, "uri": "http://n:1", "extra": [1, 2]}"#;
    reqs.push(post(extra));
    reqs.extend([
        get(&session_path("diff-extra")),
        get(&session_path("diff-dup")),
    ]);
    let typed = Request::new("POST", "/se/grid/session")
        .header("Content-Type", "application/json; charset=utf-8")
        .body(simple_session("diff-typed", NODE));
    reqs.extend([typed, get(&session_path("diff-typed"))]);
    assert_same(reqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_are_refused_identically_by_java_and_gridraft() {
    let chrome = r#"{"browserName": "chrome"}"#;
    let t0 = r#""2024-05-01T10:20:30Z""#;
    let mut bodies: Vec<String> = [
        "null",
        "[]",
        "\"str\"",
        "42",
        "{}",
        "",
        "nope",
        "{\"sessionId\": \"x\"",
        "true",
        " null ",
    ]
    .map(String::from)
    .to_vec();
    let with = |id: &str, node: &str, caps: &str, stereo: &str, start: &str| {
        session_json(id, node, caps, stereo, start)
    };
    bodies.extend([
        with("inv-uri-space", "http://a b", chrome, chrome, t0),
        with("inv-start-zone", NODE, chrome, chrome, r#""2024-05-01T10:20:30""#),
        with("inv-start-true", NODE, chrome, chrome, "true"),
        with("inv-start-null", NODE, chrome, chrome, "null"),
        with("inv-start-text", NODE, chrome, chrome, r#""yesterday""#),
        with("inv-caps-null", NODE, "null", chrome, t0),
        with("inv-caps-array", NODE, "[]", chrome, t0),
        with("inv-stereo-string", NODE, chrome, "\"x\"", t0),
        with("inv-int-overflow", NODE, r#"{"n": 9223372036854775808}"#, chrome, t0),
        with("inv-double-overflow", NODE, r#"{"n": 1e400}"#, chrome, t0),
        r#"{"capabilities": {}, "sessionId": 7, "start": 0, "stereotype": {}, "uri": "http://n"}"#.into(),
        r#"{"capabilities": {}, "sessionId": null, "start": 0, "stereotype": {}, "uri": "http://n"}"#.into(),
        r#"{"capabilities": {}, "sessionId": "inv-uri-num", "start": 0, "stereotype": {}, "uri": 5}"#.into(),
    ]);
    for field in ["capabilities", "sessionId", "start", "stereotype", "uri"] {
        let mut v: Value =
            serde_json::from_str(&simple_session(&format!("inv-missing-{field}"), NODE)).unwrap();
        v.as_object_mut().unwrap().remove(field);
        bodies.push(v.to_string());
    }
    let mut reqs: Vec<Request> = bodies.into_iter().map(post).collect();
    for id in [
        "inv-uri-space",
        "inv-start-zone",
        "inv-caps-null",
        "inv-int-overflow",
        "inv-uri-num",
        "inv-missing-uri",
    ] {
        reqs.push(get(&session_path(id)));
    }
    assert_same(reqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_and_re_adds_answer_identically_on_java_and_gridraft() {
    let id = "rm-278aa973601789e976058180a7df0873";
    let reqs = vec![
        post(simple_session(id, "http://localhost:17555")),
        get(&session_path(id)),
        Request::new("DELETE", &session_path(id)),
        get(&session_path(id)),
        get(&uri(id)),
        Request::new("HEAD", &session_path(id)),
        Request::new("DELETE", &session_path(id)),
        Request::new("DELETE", &session_path("rm-never-seen")),
        get(&session_path("rm-never-seen")),
        get(&uri("rm-never-seen")),
        post(simple_session(id, "http://other:4444")),
        get(&session_path(id)),
        get(&uri(id)),
        Request::new("DELETE", &session_path(id)),
        get(&session_path(id)),
        post(simple_session("rm-relative", "relative/x")),
        Request::new("DELETE", &session_path("rm-relative")),
        get(&uri("rm-relative")),
        post(simple_session("rm ü+:x", NODE)),
        Request::new("DELETE", "/se/grid/session/rm%20%C3%BC%2B%3Ax"),
        get("/se/grid/session/rm%20%C3%BC+:x"),
    ];
    assert_same(reqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_answers_identically_on_java_and_gridraft() {
    let mut reqs = Vec::new();
    for id in [
        "route a b",
        "route ü",
        "+",
        "route+b",
        "route:x",
        "Route-Case",
        "route%bc",
        "route/slash",
        "",
    ] {
        reqs.push(post(simple_session(id, NODE)));
    }
    for path in [
        "/se/grid/session/route%20b",
        "/se/grid/session/route%20a%20b",
        "/se/grid/session/route+a+b",
        "/se/grid/session/route%20%C3%BC",
        "/se/grid/session/%2B",
        "/se/grid/session/+",
        "/se/grid/session/route+b",
        "/se/grid/session/route%2Bb",
        "/se/grid/session/route%3Ax",
        "/se/grid/session/route-case",
        "/se/grid/session/Route-Case",
        "/se/grid/session/route%bc",
        "/se/grid/session/route%2Fslash",
        "/se/grid/session/route%2Fslash/uri",
        "/se/grid/session/",
        "/se/grid/session//uri",
        "/se/grid/session/Route-Case?foo=bar",
        "/se/grid/session/Route-Case/uri?x=1",
        "/se/grid/session/x/%75ri",
        "/se/grid/session/x/uri/",
        "/se/grid/nope",
        "/se/grid/nope%20x?q=1",
        "/STATUS",
        "/status/",
        "/se/grid/session",
        "/se/grid//session/x",
        "/",
        "/status",
        "/status?x=1",
        "/readyz",
        "/readyz?x=1",
    ] {
        reqs.push(get(path));
    }
    for (method, path) in [
        ("POST", "/se/grid/session/x"),
        ("DELETE", "/status"),
        ("POST", "/status"),
        ("DELETE", "/se/grid/session"),
        ("DELETE", "/se/grid/session/"),
        ("DELETE", "/se/grid/session/x/uri"),
        ("OPTIONS", "/status"),
        ("OPTIONS", "/se/grid/session/x"),
        ("HEAD", "/status"),
        ("HEAD", "/se/grid/session/unknown"),
        ("HEAD", "/se/grid/session/Route-Case"),
        ("HEAD", "/se/grid/nope"),
        ("HEAD", "/se/grid/session/Route-Case/uri"),
        ("PUT", "/status"),
        ("PUT", "/se/grid/session"),
        ("PATCH", "/se/grid/session/x"),
        ("TRACE", "/nope"),
        ("PATCH", "/readyz"),
    ] {
        reqs.push(Request::new(method, path));
    }
    assert_same(reqs).await;
}
