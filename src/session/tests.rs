use proptest::prelude::*;
use serde_json::{json, Value};

use super::instant::parse_iso_instant;
use super::uri::is_java_uri;
use super::*;

mod by_value;

/// The body behind the GET example of docs/compatibility.md: POSTed with an extra top-level
/// null capability, unsorted.
const EXAMPLE_POST: &str = r#"{
  "uri": "http:\u002f\u002f10.0.0.5:5555",
  "stereotype": {"se:noVncPort": 7900, "browserName": "chrome"},
  "start": "2024-05-01T10:20:30.123400Z",
  "sessionId": "4c1b6d2e-0000-4000-8000-00000000a001",
  "capabilities": {
    "timeouts": {"pageLoad": 300000},
    "goog:chromeOptions": {"args": [], "x": null},
    "acceptInsecureCerts": null,
    "browserName": "chrome"
  },
  "extra": {"ignored": 1e999}
}"#;

/// The GET example of docs/compatibility.md ("Reading a session"), byte for byte
/// (content-length 451).
const EXAMPLE_GET: &str = "{\n  \"value\": {\n    \"capabilities\": {\n      \"browserName\": \"chrome\",\n      \"goog:chromeOptions\": {\n        \"args\": [\n        ],\n        \"x\": null\n      },\n      \"timeouts\": {\n        \"pageLoad\": 300000\n      }\n    },\n    \"sessionId\": \"4c1b6d2e-0000-4000-8000-00000000a001\",\n    \"start\": \"2024-05-01T10:20:30.123400Z\",\n    \"stereotype\": {\n      \"browserName\": \"chrome\",\n      \"se:noVncPort\": 7900\n    },\n    \"uri\": \"http:\\u002f\\u002f10.0.0.5:5555\"\n  }\n}";

fn example() -> Session {
    parse_add_body(EXAMPLE_POST.as_bytes()).unwrap()
}

/// A valid body with one field replaced (or removed when `value` is `None`).
fn body_with(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut body: Value = serde_json::from_str(EXAMPLE_POST).unwrap();
    let map = body.as_object_mut().unwrap();
    match value {
        Some(v) => map.insert(field.to_owned(), v),
        None => map.remove(field),
    };
    serde_json::to_vec(&body).unwrap()
}

fn stored_start(v: Value) -> Option<String> {
    parse_start(&v).map(format_instant_nanos)
}

const MS_2024: i128 = 1_714_558_830_123;

#[test]
fn get_body_matches_section_2_5_exactly() {
    let body = example().render_get_body();
    assert_eq!(body, EXAMPLE_GET);
    assert_eq!(body.len(), 451);
}

#[test]
fn uri_body_matches_section_2_6_exactly() {
    let body = example().render_uri_body();
    assert_eq!(
        body,
        "{\n  \"value\": \"http:\\u002f\\u002f10.0.0.5:5555\"\n}"
    );
    assert_eq!(body.len(), 47);
}

#[test]
fn stored_fields_match_the_redis_layout() {
    let s = example();
    assert_eq!(s.id, "4c1b6d2e-0000-4000-8000-00000000a001");
    assert_eq!(s.uri, "http://10.0.0.5:5555");
    assert_eq!(
        s.capabilities,
        "{\n  \"browserName\": \"chrome\",\n  \"goog:chromeOptions\": {\n    \"args\": [\n    ],\n    \"x\": null\n  },\n  \"timeouts\": {\n    \"pageLoad\": 300000\n  }\n}"
    );
    assert_eq!(
        s.stereotype,
        "{\n  \"browserName\": \"chrome\",\n  \"se:noVncPort\": 7900\n}"
    );
    assert_eq!(s.start_json(), "\"2024-05-01T10:20:30.123400Z\"");
}

#[test]
fn w3c_error_body_matches_section_2_9_exactly() {
    let body = w3c_error_body(
        "unknown command",
        "Unable to find handler for (GET) /se/grid/nope",
    );
    assert_eq!(
        body,
        "{\n  \"value\": {\n    \"stacktrace\": \"\",\n    \"error\": \"unknown command\",\n    \"message\": \"Unable to find handler for (GET) \\u002fse\\u002fgrid\\u002fnope\"\n  }\n}"
    );
    assert_eq!(body.len(), 153);
}

#[test]
fn null_body_is_its_own_error() {
    assert_eq!(parse_add_body(b"null"), Err(AddError::NullBody));
    assert_eq!(parse_add_body(b" null\n"), Err(AddError::NullBody));
    assert_eq!(
        AddError::NullBody.message(b"null"),
        "Session to add must be set"
    );
}

#[test]
fn bodies_that_are_not_a_session_object_are_unparsable() {
    for body in [
        &b""[..],
        b"{}",
        b"[]",
        b"\"str\"",
        b"42",
        b"true",
        b"{",
        b"not json",
        b"{\"sessionId\": \"\xff\"}",
    ] {
        assert_eq!(parse_add_body(body), Err(AddError::Unparsable), "{body:?}");
    }
    assert_eq!(AddError::Unparsable.message(b"[]"), "Unable to parse: []");
}

#[test]
fn every_field_is_required_and_must_not_be_null() {
    for field in ["sessionId", "uri", "start", "capabilities", "stereotype"] {
        for value in [None, Some(Value::Null)] {
            let body = body_with(field, value.clone());
            assert_eq!(
                parse_add_body(&body),
                Err(AddError::Unparsable),
                "{field} {value:?}"
            );
        }
    }
}

#[test]
fn wrong_json_types_are_unparsable() {
    for (field, value) in [
        ("sessionId", json!(42)),
        ("sessionId", json!({})),
        ("uri", json!(5)),
        ("uri", json!(["http://a"])),
        ("capabilities", json!([])),
        ("capabilities", json!("x")),
        ("stereotype", json!(1)),
        ("start", json!(true)),
        ("start", json!([])),
        ("start", json!({})),
    ] {
        let body = body_with(field, Some(value.clone()));
        assert_eq!(
            parse_add_body(&body),
            Err(AddError::Unparsable),
            "{field} {value}"
        );
    }
}

#[test]
fn any_session_id_string_is_kept_verbatim() {
    for id in ["", "a b+c", "ü/😀", "x:y"] {
        let s = parse_add_body(&body_with("sessionId", Some(json!(id)))).unwrap();
        assert_eq!(s.id, id);
    }
}

#[test]
fn empty_capabilities_are_valid() {
    let s = parse_add_body(&body_with("capabilities", Some(json!({})))).unwrap();
    assert_eq!(s.capabilities, "{\n}");
    let s = parse_add_body(&body_with("stereotype", Some(json!({"a": null})))).unwrap();
    assert_eq!(s.stereotype, "{\n}");
}

#[test]
fn capability_numbers_are_normalised_and_range_checked() {
    let body = br#"{"sessionId": "s", "uri": "u", "start": 0, "stereotype": {},
        "capabilities": {"b": [1.0, 2.50, 1e-7], "a": {"big": 9223372036854775807, "e": 1e2}}}"#;
    let s = parse_add_body(body).unwrap();
    assert_eq!(
        s.capabilities,
        "{\n  \"a\": {\n    \"big\": 9223372036854775807,\n    \"e\": 100\n  },\n  \"b\": [\n    1,\n    2.5,\n    1.0E-7\n  ]\n}"
    );
    for bad in [
        json!({"n": 9223372036854775808u64}),
        serde_json::from_str(r#"{"n": [1e999]}"#).unwrap(),
    ] {
        let body = body_with("capabilities", Some(bad.clone()));
        assert_eq!(parse_add_body(&body), Err(AddError::Unparsable), "{bad}");
        let body = body_with("stereotype", Some(bad));
        assert_eq!(parse_add_body(&body), Err(AddError::Unparsable));
    }
}

#[test]
fn top_level_keys_sort_by_utf16_code_units() {
    // U+FF21 sorts before U+1F600 by code point (Rust's `str` order) but after it in UTF-16,
    // where U+1F600 is the surrogate pair D83D DE00.
    let caps = json!({"\u{1F600}": 1, "\u{FF21}": 2, "b": 3, "B": 4, "a": {"z": 1, "y": 2}});
    let s = parse_add_body(&body_with("capabilities", Some(caps))).unwrap();
    let order: Vec<String> =
        serde_json::from_str::<serde_json::Map<String, Value>>(&s.capabilities)
            .unwrap()
            .keys()
            .cloned()
            .collect();
    assert_eq!(order, ["B", "a", "b", "\u{1F600}", "\u{FF21}"]);
    assert!(
        s.capabilities.contains("\"z\": 1,\n    \"y\": 2"),
        "nested order kept"
    );
}

#[test]
fn start_table_of_section_2_3() {
    for (input, expected) in [
        (
            json!("2024-05-01T10:20:30.123400Z"),
            "2024-05-01T10:20:30.123400Z",
        ),
        (json!("2024-05-01T10:20:30.1Z"), "2024-05-01T10:20:30.100Z"),
        (json!("2024-05-01T10:20:30.000Z"), "2024-05-01T10:20:30Z"),
        (
            json!("2024-05-01T10:20:30.123456789Z"),
            "2024-05-01T10:20:30.123456789Z",
        ),
        (json!("2024-05-01T10:20:30+02:00"), "2024-05-01T08:20:30Z"),
        (json!(1_714_558_830_123i64), "2024-05-01T10:20:30.123Z"),
        (json!("1714558830123"), "2024-05-01T10:20:30.123Z"),
        (
            serde_json::from_str("1714558830123.7").unwrap(),
            "2024-05-01T10:20:30.123Z",
        ),
        (json!(0), "1970-01-01T00:00:00Z"),
        (json!(-1), "1969-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(
            stored_start(input.clone()).as_deref(),
            Some(expected),
            "{input}"
        );
    }
    for input in [json!("2024-05-01T10:20:30"), json!(true), Value::Null] {
        assert_eq!(stored_start(input.clone()), None, "{input}");
    }
}

#[test]
fn start_table_through_the_post_body() {
    let s = parse_add_body(&body_with(
        "start",
        Some(json!("2024-05-01T10:20:30+02:00")),
    ))
    .unwrap();
    assert_eq!(s.start, "2024-05-01T08:20:30Z");
    let s = parse_add_body(&body_with("start", Some(json!(-1)))).unwrap();
    assert_eq!(s.start, "1969-12-31T23:59:59.999Z");
    let body = body_with("start", Some(json!("2024-05-01T10:20:30")));
    assert_eq!(parse_add_body(&body), Err(AddError::Unparsable));
}

#[test]
fn start_numbers_and_digit_strings_are_epoch_millis() {
    let ms = |v: Value| parse_start(&v).map(|n| n / 1_000_000);
    assert_eq!(ms(json!("+1714558830123")), Some(MS_2024));
    assert_eq!(ms(json!("-1")), Some(-1));
    assert_eq!(
        ms(serde_json::from_str("-1.9").unwrap()),
        Some(-1),
        "toward zero"
    );
    assert_eq!(ms(serde_json::from_str("1.5e3").unwrap()), Some(1500));
    assert_eq!(ms(json!(i64::MAX)), Some(i128::from(i64::MAX)));
    assert_eq!(
        ms(serde_json::from_str("1e30").unwrap()),
        Some(i128::from(i64::MAX))
    );
    for bad in ["", "+", "12a", " 1", "1.5", "0x10", "9223372036854775808"] {
        assert_eq!(ms(json!(bad)), None, "{bad}");
    }
    assert_eq!(
        ms(serde_json::from_str("9223372036854775808").unwrap()),
        None
    );
}

#[test]
fn iso_instants_follow_java_iso_instant() {
    let iso = |s: &str| parse_iso_instant(s).map(format_instant_nanos);
    for (input, expected) in [
        ("2024-05-01t10:20:30z", "2024-05-01T10:20:30Z"),
        ("2024-05-01T10:20:30-01:30", "2024-05-01T11:50:30Z"),
        ("2024-05-01T10:20:30+01:00:15", "2024-05-01T09:20:15Z"),
        ("2024-05-01T10:20:30.5+00:00", "2024-05-01T10:20:30.500Z"),
        ("2024-05-01T10:20:30.Z", "2024-05-01T10:20:30Z"),
        ("2024-05-01T10:20:30.000001Z", "2024-05-01T10:20:30.000001Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
        ("2024-05-01T24:00:00Z", "2024-05-02T00:00:00Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
        ("+12024-05-01T10:20:30Z", "+12024-05-01T10:20:30Z"),
        ("-0001-01-01T00:00:00Z", "-0001-01-01T00:00:00Z"),
        ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
    ] {
        assert_eq!(iso(input).as_deref(), Some(expected), "{input}");
    }
    for bad in [
        "2024-05-01T10:20Z",
        "2024-05-01 10:20:30Z",
        "2024-5-01T10:20:30Z",
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-05-00T00:00:00Z",
        "2024-05-01T25:00:00Z",
        "2024-05-01T24:00:01Z",
        "2024-05-01T10:60:00Z",
        "2024-05-01T10:20:30.1234567891Z",
        "2024-05-01T10:20:30+02",
        "2024-05-01T10:20:30+24:00",
        "2024-05-01T10:20:30Zx",
        "+2024-05-01T10:20:30Z",
        "12024-05-01T10:20:30Z",
        "-0000-05-01T10:20:30Z",
        "+1000000001-01-01T00:00:00Z",
    ] {
        assert_eq!(iso(bad), None, "{bad}");
    }
}

#[test]
fn instant_to_string_layout() {
    let at = |s: i128, n: i128| format_instant_nanos(s * 1_000_000_000 + n);
    assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
    assert_eq!(at(0, 1), "1970-01-01T00:00:00.000000001Z");
    assert_eq!(at(0, 1_000), "1970-01-01T00:00:00.000001Z");
    assert_eq!(at(0, 120_000_000), "1970-01-01T00:00:00.120Z");
    assert_eq!(at(-1, 0), "1969-12-31T23:59:59Z");
    assert_eq!(at(253_402_300_800, 0), "+10000-01-01T00:00:00Z");
    assert_eq!(at(-62_167_219_200, 0), "0000-01-01T00:00:00Z");
    assert_eq!(at(-62_167_219_201, 0), "-0001-12-31T23:59:59Z");
    assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
    assert_eq!(at(-377_736_739_200, 0), "-10000-01-01T00:00:00Z");
    assert_eq!(at(1, 999_999_999), "1970-01-01T00:00:01.999999999Z");
    assert_eq!(at(1_700_000_000, 5_000_000), "2023-11-14T22:13:20.005Z");
    // A year past what a `u64` holds is still written whole.
    let far = format_instant_nanos(i128::MAX / 4);
    assert!(far.starts_with('+') && far.ends_with('Z'), "{far}");
    assert!(far.split('-').next().unwrap().len() > 20, "{far}");
}

#[test]
fn node_uris_are_checked_like_java_net_uri() {
    for ok in [
        "http://10.0.0.5:5555",
        "http://localhost:17555/",
        "relative/path",
        "",
        "#",
        "?q",
        "http:///path",
        "http://#f",
        "mailto:a@b",
        "http://user:pw@host:1/p;x?q=1&r=[2]#frag",
        "http://[::1]:4444",
        "http://u@[fe80::1%eth0]/",
        "http://host_with_underscore:x:y",
        "http://h/%20ok",
        "http://h/über",
        "urn:isbn:096139210x",
        "a+b.c-d:rest",
    ] {
        assert!(is_java_uri(ok), "{ok}");
    }
    for bad in [
        "http://a b",
        "http://",
        "//",
        "http:",
        ":foo",
        "1http://x",
        "ht_tp://x",
        "http://h/a b",
        "http://h/%zz",
        "http://h/%2",
        "http://h/\"",
        "http://h/<x>",
        "http://h/a{b}",
        "http://h/a|b",
        "http://h/a\\b",
        "http://h/a^b",
        "http://h/`",
        "http://h/a#b#c",
        "http://h/\u{a0}",
        "http://h/\u{7f}",
        "http://h/\t",
        "http://[::1",
        "http://[zz::1]/",
        "http://[::1]x",
        "http://h/p?q=a b",
        "mailto:#x",
    ] {
        assert!(!is_java_uri(bad), "{bad}");
    }
}

#[test]
fn invalid_uri_in_body_is_unparsable_and_valid_ones_are_verbatim() {
    let body = body_with("uri", Some(json!("http://a b")));
    assert_eq!(parse_add_body(&body), Err(AddError::Unparsable));
    for uri in ["", "relative/path", "http://n:5555/"] {
        let s = parse_add_body(&body_with("uri", Some(json!(uri)))).unwrap();
        assert_eq!(s.uri, uri);
    }
}

#[test]
fn removal_reasons_have_java_names_and_texts() {
    for (name, text) in [
        ("QUIT_COMMAND", "session closed normally (QUIT command)"),
        ("TIMEOUT", "session timed out due to inactivity"),
        ("NODE_REMOVED", "node was removed from the grid"),
        ("NODE_RESTARTED", "node was restarted"),
    ] {
        let reason = RemovalReason::from_name(name).unwrap();
        assert_eq!(reason.text(), text);
        assert_eq!(reason.name(), name);
        assert_eq!(
            serde_json::to_string(&reason).unwrap(),
            format!("\"{name}\"")
        );
    }
    assert_eq!(RemovalReason::from_name("quit_command"), None);
    assert_eq!(RemovalReason::from_name("QuitCommand"), None);
}

#[test]
fn not_found_messages() {
    assert_eq!(
        not_found_message("never-seen", None, 0),
        "Unable to find session with ID: never-seen"
    );
    let removed = 1_795_449_013_787_071_276i128; // 2026-11-23T15:50:13.787071276Z
    let node = "http://localhost:17555";
    let msg = |now: i128| {
        not_found_message(
            "278aa973601789e976058180a7df0873",
            Some((&removed, RemovalReason::QuitCommand, node)),
            now,
        )
    };
    assert_eq!(
        msg(removed + 2_500_000_000),
        "Unable to find session with ID: 278aa973601789e976058180a7df0873. Session was removed at 2026-11-23T15:50:13.787071276Z (2 seconds ago), reason: session closed normally (QUIT command), node: http://localhost:17555"
    );
    assert!(msg(removed + 1_999_999_999).contains("(1 second ago)"));
    assert!(msg(removed + 999_999_999).contains("(0 seconds ago)"));
    assert!(
        msg(removed - 5_000_000_000).contains("(0 seconds ago)"),
        "clock skew"
    );
}

#[test]
fn session_survives_a_serde_round_trip() {
    let s = example();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Session>(&text).unwrap(), s);
}

proptest! {
    #[test]
    fn epoch_millis_round_trip_through_instant_to_string(ms in any::<i64>()) {
        let nanos = i128::from(ms) * 1_000_000;
        let text = format_instant_nanos(nanos);
        prop_assert_eq!(parse_iso_instant(&text), Some(nanos));
    }

    #[test]
    fn get_body_is_valid_json_with_the_stored_values(
        id in any::<String>(),
        key in any::<String>(),
        text in any::<String>(),
    ) {
        let body = json!({
            "sessionId": id, "uri": "http://n:1", "start": 0,
            "capabilities": {key.clone(): [text.clone(), {}]}, "stereotype": {},
        });
        let s = parse_add_body(&serde_json::to_vec(&body).unwrap()).unwrap();
        let got: Value = serde_json::from_str(&s.render_get_body()).unwrap();
        prop_assert_eq!(&got["value"]["sessionId"], &json!(id));
        prop_assert_eq!(&got["value"]["capabilities"][&key], &json!([text, {}]));
    }
}

#[test]
fn the_record_limit_counts_every_stored_field_and_is_checked_while_rendering() {
    let s = example();
    let record =
        s.id.len() + s.uri.len() + s.start.len() + s.capabilities.len() + s.stereotype.len();
    let within = |max_record_bytes| {
        parse_add_body_within(
            EXAMPLE_POST.as_bytes(),
            &SessionLimits {
                max_record_bytes,
                ..SessionLimits::NONE
            },
        )
    };
    assert_eq!(within(record), Ok(s));
    let over = Refused {
        limit: Limit::Record,
        value: record - 1,
    };
    assert_eq!(within(record - 1), Err(AddError::Refused(over)));
    // Refused before the capabilities, when the id, URI and start alone do not fit.
    assert!(matches!(within(10), Err(AddError::Refused(r)) if r.limit == Limit::Record));
}

#[test]
fn id_and_uri_limits_are_inclusive() {
    let limits = SessionLimits {
        max_session_id_bytes: 36,
        max_node_uri_bytes: 20,
        ..SessionLimits::NONE
    };
    assert!(parse_add_body_within(EXAMPLE_POST.as_bytes(), &limits).is_ok());
    for (limits, limit) in [
        (
            SessionLimits {
                max_session_id_bytes: 35,
                ..limits
            },
            Limit::SessionId,
        ),
        (
            SessionLimits {
                max_node_uri_bytes: 19,
                ..limits
            },
            Limit::NodeUri,
        ),
    ] {
        let refused = parse_add_body_within(EXAMPLE_POST.as_bytes(), &limits);
        assert!(
            matches!(refused, Err(AddError::Refused(r)) if r.limit == limit),
            "{refused:?}"
        );
    }
}

#[test]
fn a_body_denser_than_its_json_value_budget_is_refused_before_parsing() {
    let values = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
    let budget = json_value_budget(2 * 200_000);
    let body = body_with("capabilities", None);
    let dense = String::from_utf8(body).unwrap().replacen(
        '{',
        &format!("{{\"capabilities\": {{\"a\": {}}},", values(200_000)),
        1,
    );
    assert_eq!(
        parse_add_body(dense.as_bytes()),
        Err(AddError::Refused(Refused {
            limit: Limit::Json,
            value: json_value_budget(dense.len()),
        }))
    );
    assert!(budget < 200_000);
    // The same shape with fewer values is parsed as usual.
    let body = String::from_utf8(body_with("capabilities", None))
        .unwrap()
        .replacen(
            '{',
            &format!("{{\"capabilities\": {{\"a\": {}}},", values(100)),
            1,
        );
    assert!(parse_add_body(body.as_bytes()).is_ok());
}

/// `push_nested` as it was first written (line by line through `str::split`): the reference
/// the faster one must match.
fn push_nested_by_lines(level0: &str, out: &mut String) {
    for (i, line) in level0.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\n    ");
        }
        out.push_str(line);
    }
}

proptest! {
    #[test]
    fn a_nested_document_is_written_as_line_by_line_indenting_writes_it(
        text in "(\n|\n\n|[a-z\"{}: ]{0,12}|é|\u{1F600}){0,40}",
    ) {
        let mut expected = String::from("prefix");
        push_nested_by_lines(&text, &mut expected);
        let mut written = String::from("prefix");
        push_nested(&text, &mut written);
        prop_assert_eq!(&written, &expected);
        prop_assert_eq!(written.len() - "prefix".len(), nested_len(&text));
        prop_assert_eq!(unnest(&written["prefix".len()..]), text);
    }
}

#[test]
fn the_get_body_is_allocated_once_at_its_exact_size() {
    // Many lines (each one four bytes longer nested) and strings that need escapes.
    let args: Vec<String> = (0..200).map(|i| format!("--arg-{i}=\"x\"")).collect();
    let body = format!(
        r#"{{"uri": "http://10.0.0.5:5555/\u00e9", "stereotype": {{"a": 1}}, "start": "2024-05-01T10:20:30.123400Z", "sessionId": "id\"{}", "capabilities": {{"args": {}}}}}"#,
        "\\u0001",
        serde_json::to_string(&args).unwrap()
    );
    let long = parse_add_body(body.as_bytes()).unwrap();
    for session in [example(), long] {
        let rendered = session.render_get_body_parts();
        assert_eq!(rendered.body.capacity(), rendered.body.len());
        let value: Value = serde_json::from_str(&rendered.body).unwrap();
        assert_eq!(value["value"]["sessionId"], json!(session.id));
    }
    assert_eq!(example().render_get_body(), EXAMPLE_GET);
}
