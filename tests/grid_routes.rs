//! Contract tests of the public Grid routes against one in-process member, over raw HTTP/1.1 so
//! that status lines, headers and body bytes are checked exactly as docs/compatibility.md states
//! them.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::grid::{
    add, assert_no_such_session, assert_unknown_error, assert_untorn, delete, get, head, now_nanos,
    send, session_json, session_path, simple_session, tagged_session, with_h2c_offer, Conn,
    Request, SingleMember, ADDED, EXAMPLE_BODY, EXAMPLE_GET, EXAMPLE_ID, JSON_UTF8,
};
use gridraft::config::GridSettings;
use gridraft::session::{format_instant_nanos, parse_start};

const NODE: &str = "http://10.0.0.5:5555";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_content_type_is_answered_200_value_true_without_content_type() {
    let m = SingleMember::start().await;
    let resp = add(m.addr, simple_session("s1", NODE)).await;
    assert_eq!(resp.version, "HTTP/1.1");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), ADDED);
    assert_eq!(resp.header("content-length"), Some("19"));
    assert_eq!(resp.header("content-type"), None);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributors_post_with_an_h2c_upgrade_offer_is_answered_in_http_1_1_on_a_kept_alive_connection(
) {
    let m = SingleMember::start().await;
    let mut conn = Conn::open(m.addr).await.unwrap();
    let post = conn
        .send(&with_h2c_offer(
            Request::new("POST", "/se/grid/session").body(EXAMPLE_BODY),
        ))
        .await;
    assert_eq!((post.version.as_str(), post.status), ("HTTP/1.1", 200));
    assert_eq!(post.header("upgrade"), None);
    assert_eq!(post.text(), ADDED);
    let got = conn
        .send(&with_h2c_offer(Request::new(
            "GET",
            &session_path(EXAMPLE_ID),
        )))
        .await;
    assert_eq!((got.version.as_str(), got.status), ("HTTP/1.1", 200));
    assert_eq!(got.text(), EXAMPLE_GET);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_the_exact_bytes_of_the_protocol_example_without_content_type() {
    let m = SingleMember::start().await;
    assert_eq!(add(m.addr, EXAMPLE_BODY).await.status, 200);
    let resp = get(m.addr, &session_path(EXAMPLE_ID)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), EXAMPLE_GET);
    assert_eq!(resp.header("content-length"), Some("451"));
    assert_eq!(resp.header("content-type"), None);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uri_route_returns_the_node_uri_exactly() {
    let m = SingleMember::start().await;
    assert_eq!(add(m.addr, EXAMPLE_BODY).await.status, 200);
    let resp = get(m.addr, &format!("{}/uri", session_path(EXAMPLE_ID))).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "{\n  \"value\": \"http:\\u002f\\u002f10.0.0.5:5555\"\n}"
    );
    assert_eq!(resp.header("content-length"), Some("47"));
    assert_eq!(resp.header("content-type"), None);
    // Relative and empty URIs are valid `java.net.URI`s and come back verbatim.
    for (id, node) in [("relative", "relative/path"), ("empty", "")] {
        assert_eq!(add(m.addr, simple_session(id, node)).await.status, 200);
        let resp = get(m.addr, &format!("{}/uri", session_path(id))).await;
        assert_eq!(resp.json()["value"], node);
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_200_with_an_empty_body_for_known_and_unknown_ids() {
    let m = SingleMember::start().await;
    assert_eq!(add(m.addr, simple_session("known", NODE)).await.status, 200);
    for id in ["known", "known", "never-seen"] {
        let resp = delete(m.addr, &session_path(id)).await;
        assert_eq!(resp.status, 200, "DELETE {id}");
        assert!(resp.body.is_empty());
        assert_eq!(resp.header("content-length"), Some("0"));
        assert_eq!(resp.header("content-type"), None);
    }
    assert_no_such_session(&get(m.addr, &session_path("known")).await);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_seen_id_is_a_404_invalid_session_id_with_the_plain_message() {
    let m = SingleMember::start().await;
    for path in [
        "/se/grid/session/never-seen",
        "/se/grid/session/never-seen/uri",
    ] {
        let resp = get(m.addr, path).await;
        let message = assert_no_such_session(&resp);
        assert_eq!(
            message, "Unable to find session with ID: never-seen",
            "GET {path}"
        );
    }
    // Deleting an unknown id records nothing: the message stays plain.
    delete(m.addr, "/se/grid/session/never-seen").await;
    let message = assert_no_such_session(&get(m.addr, "/se/grid/session/never-seen").await);
    assert_eq!(message, "Unable to find session with ID: never-seen");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_delete_the_404_message_gives_the_removal_time_reason_and_node() {
    let m = SingleMember::start().await;
    let id = "278aa973601789e976058180a7df0873";
    assert_eq!(
        add(m.addr, simple_session(id, "http://localhost:17555"))
            .await
            .status,
        200
    );
    let before = now_nanos();
    assert_eq!(delete(m.addr, &session_path(id)).await.status, 200);
    let after = now_nanos();
    let prefix = format!("Unable to find session with ID: {id}. Session was removed at ");
    let suffix = "), reason: session closed normally (QUIT command), node: http://localhost:17555";
    let parse = |message: &str| -> (i128, String) {
        let rest = message
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("unexpected removal message {message:?}"));
        let (instant, ago) = rest.split_once(" (").expect("an age in parentheses");
        let at = parse_start(&serde_json::Value::from(instant)).expect("an ISO instant");
        assert_eq!(format_instant_nanos(at), instant, "Instant.toString() form");
        (at, ago.to_owned())
    };
    for path in [session_path(id), format!("{}/uri", session_path(id))] {
        let message = assert_no_such_session(&get(m.addr, &path).await);
        let (at, ago) = parse(&message);
        assert!(
            before <= at && at <= after,
            "removal time {at} outside [{before}, {after}]"
        );
        assert!(
            ago == "0 seconds ago" || ago == "1 second ago",
            "age {ago:?}"
        );
    }
    // One whole second later the age is singular: "1 second ago".
    eventually(
        Duration::from_secs(5),
        "the age to read \"1 second ago\"",
        || async {
            let message = assert_no_such_session(&get(m.addr, &session_path(id)).await);
            (parse(&message).1 == "1 second ago").then_some(())
        },
    )
    .await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_session_that_is_added_again_is_found_again() {
    let m = SingleMember::start().await;
    let body = simple_session("again", NODE);
    assert_eq!(add(m.addr, body.clone()).await.status, 200);
    delete(m.addr, &session_path("again")).await;
    assert_no_such_session(&get(m.addr, &session_path("again")).await);
    assert_eq!(add(m.addr, body).await.status, 200);
    let resp = get(m.addr, &session_path("again")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["value"]["sessionId"], "again");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_existing_id_again_replaces_the_whole_record() {
    let m = SingleMember::start().await;
    let first = session_json(
        "re",
        NODE,
        r#"{"a": 1, "b": 2}"#,
        r#"{"s": 1}"#,
        r#""2024-05-01T10:20:30Z""#,
    );
    let second = session_json("re", "http://other:4444", r#"{"c": 3}"#, r#"{"t": 2}"#, "0");
    assert_eq!(add(m.addr, first).await.status, 200);
    assert_eq!(add(m.addr, second).await.status, 200);
    let expected = serde_json::json!({"value": {
        "capabilities": {"c": 3}, "sessionId": "re", "start": "1970-01-01T00:00:00Z",
        "stereotype": {"t": 2}, "uri": "http://other:4444"}});
    assert_eq!(get(m.addr, &session_path("re")).await.json(), expected);
    let uri = get(m.addr, &format!("{}/uri", session_path("re"))).await;
    assert_eq!(uri.json()["value"], "http://other:4444");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_body_is_a_500_saying_the_session_to_add_must_be_set() {
    let m = SingleMember::start().await;
    let message = assert_unknown_error(&add(m.addr, "null").await);
    assert_eq!(message, "Session to add must be set");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_body_is_a_500_quoting_the_raw_body_and_stores_nothing() {
    let m = SingleMember::start().await;
    let caps = r#"{"browserName": "chrome"}"#;
    let start = r#""2024-05-01T10:20:30Z""#;
    let with = |id: &str, uri: &str, caps: &str, stereo: &str, start: &str| {
        session_json(id, uri, caps, stereo, start)
    };
    let mut bodies: Vec<String> = [
        "[]",
        "\"str\"",
        "42",
        "{}",
        "",
        "not json",
        "{\"sessionId\": \"bad\"",
        "true",
    ]
    .map(String::from)
    .to_vec();
    bodies.extend([
        with("bad-uri", "http://a b", caps, caps, start),
        with("bad-start-zone", NODE, caps, caps, r#""2024-05-01T10:20:30""#),
        with("bad-start-bool", NODE, caps, caps, "true"),
        with("bad-start-null", NODE, caps, caps, "null"),
        with("bad-caps-null", NODE, "null", caps, start),
        with("bad-caps-array", NODE, "[]", caps, start),
        with("bad-stereo-string", NODE, caps, "\"x\"", start),
        with("bad-too-big-int", NODE, r#"{"n": 9223372036854775808}"#, caps, start),
        with("bad-too-big-double", NODE, r#"{"n": 1e400}"#, caps, start),
        r#"{"capabilities": {}, "sessionId": 7, "start": 0, "stereotype": {}, "uri": "http://n"}"#.into(),
        r#"{"capabilities": {}, "sessionId": null, "start": 0, "stereotype": {}, "uri": "http://n"}"#.into(),
        r#"{"capabilities": {}, "sessionId": "bad-uri-number", "start": 0, "stereotype": {}, "uri": 5}"#.into(),
        r#"{"capabilities": {}, "sessionId": "bad-uri-null", "start": 0, "stereotype": {}, "uri": null}"#.into(),
    ]);
    for field in ["capabilities", "start", "stereotype", "uri"] {
        let mut v: serde_json::Value =
            serde_json::from_str(&simple_session(&format!("bad-missing-{field}"), NODE)).unwrap();
        v.as_object_mut().unwrap().remove(field);
        bodies.push(v.to_string());
    }
    for body in &bodies {
        let message = assert_unknown_error(&add(m.addr, body.clone()).await);
        assert_eq!(message, format!("Unable to parse: {body}"), "body {body}");
    }
    for id in [
        "bad-uri",
        "bad-start-zone",
        "bad-caps-null",
        "bad-too-big-int",
        "bad-missing-uri",
        "bad-uri-number",
    ] {
        assert_no_such_session(&get(m.addr, &session_path(id)).await);
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_start_form_is_stored_as_java_instant_to_string() {
    let m = SingleMember::start().await;
    let rows = [
        (
            r#""2024-05-01T10:20:30.123400Z""#,
            "2024-05-01T10:20:30.123400Z",
        ),
        (r#""2024-05-01T10:20:30.1Z""#, "2024-05-01T10:20:30.100Z"),
        (r#""2024-05-01T10:20:30.000Z""#, "2024-05-01T10:20:30Z"),
        (
            r#""2024-05-01T10:20:30.123456789Z""#,
            "2024-05-01T10:20:30.123456789Z",
        ),
        (r#""2024-05-01T10:20:30+02:00""#, "2024-05-01T08:20:30Z"),
        ("1714558830123", "2024-05-01T10:20:30.123Z"),
        (r#""1714558830123""#, "2024-05-01T10:20:30.123Z"),
        ("1714558830123.7", "2024-05-01T10:20:30.123Z"),
        ("0", "1970-01-01T00:00:00Z"),
        ("-1", "1969-12-31T23:59:59.999Z"),
    ];
    for (i, (input, stored)) in rows.iter().enumerate() {
        let id = format!("start-{i}");
        let body = session_json(&id, NODE, "{}", "{}", input);
        assert_eq!(add(m.addr, body).await.status, 200, "start {input}");
        let resp = get(m.addr, &session_path(&id)).await;
        assert_eq!(resp.json()["value"]["start"], *stored, "start {input}");
    }
    for input in [r#""2024-05-01T10:20:30""#, "true", "null"] {
        let body = session_json("start-bad", NODE, "{}", "{}", input);
        assert_unknown_error(&add(m.addr, body).await);
    }
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_drop_top_level_nulls_sort_top_level_keys_and_print_numbers_as_java() {
    let m = SingleMember::start().await;
    let caps = r#"{"zeta": 1.0, "acceptInsecureCerts": null, "alpha": {"z": null, "a": 1e2}, "mid": [0.1, 1e-7, 2.50, -0.0, 1e300, 1234.56, 1.5, 9223372036854775807, 9007199254740993], "s": "/<&>'\u2028\u2029😀"}"#;
    let stereo = r#"{"b": null, "a": {"x": null}}"#;
    let body = session_json("caps", NODE, caps, stereo, "0");
    assert_eq!(add(m.addr, body).await.status, 200);
    let text = get(m.addr, &session_path("caps")).await.text();
    let expected_caps = "\"capabilities\": {\n      \"alpha\": {\n        \"z\": null,\n        \"a\": 100\n      },\n      \"mid\": [\n        0.1,\n        1.0E-7,\n        2.5,\n        0,\n        1.0E300,\n        1234.56,\n        1.5,\n        9223372036854775807,\n        9007199254740993\n      ],\n      \"s\": \"\\u002f\\u003c\\u0026>'\\u2028\u{2029}😀\",\n      \"zeta\": 1\n    },";
    assert!(
        text.contains(expected_caps),
        "capabilities rendered as\n{text}"
    );
    let expected_stereo = "\"stereotype\": {\n      \"a\": {\n        \"x\": null\n      }\n    },";
    assert!(
        text.contains(expected_stereo),
        "stereotype rendered as\n{text}"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ids_are_percent_decoded_and_a_literal_plus_stays_a_plus() {
    let m = SingleMember::start().await;
    for id in ["a b", "ü", "+", "a+b", "x:y"] {
        assert_eq!(
            add(m.addr, simple_session(id, NODE)).await.status,
            200,
            "add {id:?}"
        );
    }
    for (path, id) in [
        ("a%20b", "a b"),
        ("%C3%BC", "ü"),
        ("%2B", "+"),
        ("a+b", "a+b"),
        ("a%2Bb", "a+b"),
        ("x%3Ay", "x:y"),
        ("x:y", "x:y"),
    ] {
        let resp = get(m.addr, &format!("/se/grid/session/{path}")).await;
        assert_eq!(resp.status, 200, "GET {path}");
        assert_eq!(resp.json()["value"]["sessionId"], id, "GET {path}");
        let uri = get(m.addr, &format!("/se/grid/session/{path}/uri")).await;
        assert_eq!(uri.json()["value"], NODE, "GET {path}/uri");
    }
    // No form decoding: `+` is not a space. Ids are case-sensitive.
    assert_eq!(add(m.addr, simple_session("c d", NODE)).await.status, 200);
    assert_no_such_session(&get(m.addr, "/se/grid/session/c+d").await);
    assert_no_such_session(&get(m.addr, "/se/grid/session/A%20B").await);
    // A malformed escape does not match the stored id.
    assert_eq!(add(m.addr, simple_session("a%bc", NODE)).await.status, 200);
    assert_no_such_session(&get(m.addr, "/se/grid/session/a%bc").await);
    // `%2F` is decoded before routing: the id is unreachable.
    assert_eq!(add(m.addr, simple_session("p/q", NODE)).await.status, 200);
    let resp = get(m.addr, "/se/grid/session/p%2Fq").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.w3c_error().0, "unknown command");
    // An empty id is stored but no path reaches it.
    assert_eq!(add(m.addr, simple_session("", NODE)).await.status, 200);
    assert_eq!(
        get(m.addr, "/se/grid/session/").await.w3c_error().0,
        "unknown command"
    );
    assert_eq!(delete(m.addr, "/se/grid/session/a%20b").await.status, 200);
    assert_no_such_session(&get(m.addr, &session_path("a b")).await);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_string_is_ignored_when_routing() {
    let m = SingleMember::start().await;
    let post = send(
        m.addr,
        &Request::new("POST", "/se/grid/session?x=1").body(simple_session("q", NODE)),
    )
    .await;
    assert_eq!(post.status, 200);
    assert_eq!(get(m.addr, "/se/grid/session/q?foo=bar").await.status, 200);
    assert_eq!(
        get(m.addr, "/se/grid/session/q/uri?foo=bar").await.status,
        200
    );
    assert_eq!(get(m.addr, "/readyz?x=1").await.status, 204);
    assert_eq!(get(m.addr, "/status?x=1").await.status, 200);
    assert_eq!(delete(m.addr, "/se/grid/session/q?x=y").await.status, 200);
    assert_no_such_session(&get(m.addr, "/se/grid/session/q").await);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods_are_404_unknown_command_without_content_type() {
    let m = SingleMember::start().await;
    let cases = [
        ("GET", "/se/grid/nope", "/se/grid/nope"),
        ("GET", "/STATUS", "/STATUS"),
        ("GET", "/status/", "/status/"),
        ("GET", "/se/grid/session/", "/se/grid/session/"),
        ("DELETE", "/se/grid/session/", "/se/grid/session/"),
        ("GET", "/se/grid/session//uri", "/se/grid/session//uri"),
        ("GET", "/se/grid/session", "/se/grid/session"),
        ("GET", "/se/grid//session/x", "/se/grid//session/x"),
        ("GET", "/se/grid/session/x/uri/", "/se/grid/session/x/uri/"),
        ("GET", "/se/grid/session/a%2Fb", "/se/grid/session/a/b"),
        ("GET", "/se/grid/nope%20x?q=1", "/se/grid/nope x"),
        ("POST", "/se/grid/session/x", "/se/grid/session/x"),
        ("DELETE", "/status", "/status"),
        ("POST", "/status", "/status"),
        ("DELETE", "/se/grid/session", "/se/grid/session"),
        ("DELETE", "/se/grid/session/x/uri", "/se/grid/session/x/uri"),
        ("OPTIONS", "/status", "/status"),
        ("OPTIONS", "/se/grid/session/x", "/se/grid/session/x"),
    ];
    for (method, path, shown) in cases {
        let resp = send(m.addr, &Request::new(method, path)).await;
        assert_eq!(resp.status, 404, "{method} {path}");
        assert_eq!(resp.header("content-type"), None, "{method} {path}");
        assert_eq!(resp.header("cache-control"), None, "{method} {path}");
        let (error, message) = resp.w3c_error();
        assert_eq!(error, "unknown command");
        assert_eq!(
            message,
            format!("Unable to find handler for ({method}) {shown}")
        );
        assert!(
            resp.text().contains("\\u002f"),
            "slashes are escaped: {}",
            resp.text()
        );
    }
    // HEAD is routed as GET: same status and headers as the GET, no body.
    let (g, h) = (
        get(m.addr, "/se/grid/nope").await,
        head(m.addr, "/se/grid/nope").await,
    );
    assert_eq!(
        (h.status, h.header("content-length")),
        (404, g.header("content-length"))
    );
    assert!(h.body.is_empty());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_patch_and_trace_are_a_bare_405_with_connection_close_on_any_path() {
    let m = SingleMember::start().await;
    for method in ["PUT", "PATCH", "TRACE"] {
        for path in ["/status", "/se/grid/session", "/se/grid/session/x", "/nope"] {
            let resp = send(m.addr, &Request::new(method, path)).await;
            assert_eq!(resp.status, 405, "{method} {path}");
            assert_eq!(resp.header("connection"), Some("close"), "{method} {path}");
            assert_eq!(resp.header("content-type"), None, "{method} {path}");
            assert!(resp.body.is_empty(), "{method} {path}");
        }
    }
    let put = send(
        m.addr,
        &Request::new("PUT", "/se/grid/session").body(simple_session("put", NODE)),
    )
    .await;
    assert_eq!(put.status, 405);
    assert_no_such_session(&get(m.addr, "/se/grid/session/put").await);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_with_the_status_and_headers_of_get_and_no_body() {
    let m = SingleMember::start().await;
    assert_eq!(add(m.addr, EXAMPLE_BODY).await.status, 200);
    let status = head(m.addr, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some(JSON_UTF8));
    assert_eq!(status.header("content-length"), Some("78"));
    assert!(status.body.is_empty());
    let unknown = head(m.addr, "/se/grid/session/unknown").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("content-type"), Some(JSON_UTF8));
    assert_eq!(unknown.header("cache-control"), Some("none"));
    let unknown_get = get(m.addr, "/se/grid/session/unknown").await;
    assert_eq!(
        unknown.header("content-length"),
        unknown_get.header("content-length")
    );
    assert!(unknown.body.is_empty());
    let known = head(m.addr, &session_path(EXAMPLE_ID)).await;
    assert_eq!(known.status, 200);
    assert_eq!(known.header("content-length"), Some("451"));
    assert_eq!(known.header("content-type"), None);
    assert!(known.body.is_empty());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_readyz_and_healthz_answer_their_constant_shapes() {
    let m = SingleMember::start().await;
    let status = get(m.addr, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some(JSON_UTF8));
    assert_eq!(
        status.text(),
        "{\n  \"value\": {\n    \"message\": \"Session map is ready.\",\n    \"ready\": true\n  }\n}"
    );
    assert_eq!(status.header("content-length"), Some("78"));
    let readyz = get(m.addr, "/readyz").await;
    assert_eq!(readyz.status, 204);
    assert!(readyz.body.is_empty());
    assert_eq!(readyz.header("content-type"), None);
    let healthz = get(m.addr, "/healthz").await;
    assert_eq!(healthz.status, 200);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_configured_limit_is_a_500_unknown_error_and_nothing_is_stored() {
    let limit = 65_536;
    let m = SingleMember::start_with(GridSettings {
        max_body_bytes: limit,
        ..Default::default()
    })
    .await;
    let padded = |id: &str, pad: usize| {
        let caps = format!(r#"{{"pad": "{}"}}"#, "x".repeat(pad));
        session_json(id, NODE, &caps, "{}", "0")
    };
    let under = padded("under", limit - 200);
    assert!(under.len() <= limit);
    assert_eq!(add(m.addr, under).await.status, 200);
    let over = padded("over", 100_000);
    assert!(over.len() > limit);
    assert_unknown_error(&add(m.addr, over).await);
    assert_no_such_session(&get(m.addr, "/se/grid/session/over").await);
    assert_eq!(get(m.addr, "/se/grid/session/under").await.status, 200);
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_several_mebibytes_is_accepted_when_the_limits_allow_it() {
    let m = SingleMember::start_with(GridSettings {
        max_body_bytes: 8 << 20,
        max_record_bytes: 8 << 20,
        ..Default::default()
    })
    .await;
    let caps = format!(r#"{{"blob": "{}"}}"#, "y".repeat(4 << 20));
    assert_eq!(
        add(m.addr, session_json("big", NODE, &caps, "{}", "0"))
            .await
            .status,
        200
    );
    let resp = get(m.addr, "/se/grid/session/big").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json()["value"]["capabilities"]["blob"]
            .as_str()
            .map(str::len),
        Some(4 << 20)
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overwrites_of_one_id_never_produce_a_torn_read() {
    let m = SingleMember::start().await;
    let url = format!("http://{}/se/grid/session/contended", m.addr);
    let http = reqwest::Client::new();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let (http, addr) = (http.clone(), m.addr);
            tokio::spawn(async move {
                for i in 0..25u64 {
                    let resp = http
                        .post(format!("http://{addr}/se/grid/session"))
                        .body(tagged_session(w, i))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, done) = (http.clone(), url.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = 0u32;
                while !done.load(Ordering::Relaxed) {
                    let resp = http.get(&url).send().await.unwrap();
                    if resp.status() == 404 {
                        continue;
                    }
                    assert_untorn(&resp.json().await.unwrap());
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 0, "the readers saw no record");
    m.stop().await;
}
