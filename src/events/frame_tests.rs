//! Unit tests of `decode`: every receiving rule and event payload of docs/compatibility.md
//! ("Event bus").

use super::*;

const SECRET: &str = "s3cr3t";
const ID: &str = "b8eccc16-fda1-4049-8511-f57d79147632";

fn id() -> Uuid {
    Uuid::parse_str(ID).unwrap()
}

fn frames(name: &str, secret: &str, id: &str, data: &str) -> Vec<Vec<u8>> {
    vec![
        name.as_bytes().to_vec(),
        secret.as_bytes().to_vec(),
        id.as_bytes().to_vec(),
        data.as_bytes().to_vec(),
    ]
}

/// A correctly signed message with the test id.
fn signed(name: &str, data: &str) -> Vec<Vec<u8>> {
    frames(name, "\"s3cr3t\"", ID, data)
}

fn decode_fresh(frames: &[Vec<u8>]) -> Decoded {
    decode(frames, SECRET, &mut RecentIds::default())
}

fn rejected(frames: &[Vec<u8>]) -> Rejection {
    match decode_fresh(frames) {
        Decoded::Rejected(rejection) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const CAPTURED_SESSION_CLOSED: &str = r#"{"capabilities": {"acceptInsecureCerts": false,"browserName": "chrome","timeouts": {"implicit": 0,"pageLoad": 300000,"script": 30000}},"endTime": "2026-11-23T15:50:13.721713058Z","nodeId": "af914115-8f90-482f-8113-04d1a6cf3bb6","nodeUri": "http:\u002f\u002flocalhost:17555","reason": "QUIT_COMMAND","sessionId": "278aa973601789e976058180a7df0873","startTime": "2026-11-23T15:50:11.868964213Z"}"#;

const CAPTURED_NODE_STATUS: &str = r#"{"availability": "UP","externalUri": "http:\u002f\u002flocalhost:17555","heartbeatPeriod": 60000,"maxSessions": 2,"nodeId": "af914115-8f90-482f-8113-04d1a6cf3bb6","osInfo": {"version": "6.18.44-fc-v669","name": "Linux","arch": "amd64"},"sessionTimeout": 300000,"slots": [{"id": {"hostId": "af914115-8f90-482f-8113-04d1a6cf3bb6","id": "8372cc56-6ac6-4da9-b71d-e5f7be2b7c68"},"lastStarted": "2026-11-23T16:07:31.330985143Z","session": {"capabilities": {"browserName": "chrome"},"sessionId": "b289d7d7f40304cead017e21afe49e59","start": "2026-11-23T16:07:31.330985143Z","stereotype": {"browserName": "chrome"},"uri": "http:\u002f\u002flocalhost:26483"},"stereotype": {"browserName": "chrome"}}],"version": "4.48.0 (revision 27f5213)"}"#;

#[test]
fn captured_session_closed_object_is_accepted() {
    assert_eq!(
        decode_fresh(&signed("session-closed", CAPTURED_SESSION_CLOSED)),
        Decoded::Event(GridEvent::SessionClosed {
            event_id: id(),
            session_id: "278aa973601789e976058180a7df0873".into(),
            reason: RemovalReason::QuitCommand,
        })
    );
}

#[test]
fn every_reason_enum_name_is_accepted() {
    for (name, reason) in [
        ("QUIT_COMMAND", RemovalReason::QuitCommand),
        ("TIMEOUT", RemovalReason::Timeout),
        ("NODE_REMOVED", RemovalReason::NodeRemoved),
        ("NODE_RESTARTED", RemovalReason::NodeRestarted),
    ] {
        let data = format!(r#"{{"sessionId": "abc", "reason": "{name}", "extra": [1, 2]}}"#);
        assert_eq!(
            decode_fresh(&signed("session-closed", &data)),
            Decoded::Event(GridEvent::SessionClosed {
                event_id: id(),
                session_id: "abc".into(),
                reason,
            })
        );
    }
}

#[test]
fn legacy_session_closed_string_means_quit_command() {
    assert_eq!(
        decode_fresh(&signed(
            "session-closed",
            "\"278aa973601789e976058180a7df0873\""
        )),
        Decoded::Event(GridEvent::SessionClosed {
            event_id: id(),
            session_id: "278aa973601789e976058180a7df0873".into(),
            reason: RemovalReason::QuitCommand,
        })
    );
}

#[test]
fn session_closed_without_a_valid_reason_is_rejected() {
    for data in [
        r#"{"sessionId": "abc"}"#,
        r#"{"sessionId": "abc", "reason": "quit"}"#,
        r#"{"sessionId": "abc", "reason": "quit_command"}"#,
        r#"{"sessionId": "abc", "reason": null}"#,
        r#"{"sessionId": "abc", "reason": 1}"#,
    ] {
        assert_eq!(
            rejected(&signed("session-closed", data)),
            Rejection::Reason,
            "{data}"
        );
    }
}

#[test]
fn session_closed_without_a_string_session_id_is_rejected() {
    for data in [
        r#"{"reason": "TIMEOUT"}"#,
        r#"{"sessionId": 42, "reason": "TIMEOUT"}"#,
        r#"{"sessionId": null, "reason": "TIMEOUT"}"#,
        r#"{"sessionId": {"id": "abc"}, "reason": "TIMEOUT"}"#,
    ] {
        assert_eq!(
            rejected(&signed("session-closed", data)),
            Rejection::SessionId,
            "{data}"
        );
    }
}

#[test]
fn session_closed_of_another_json_shape_is_rejected() {
    for data in ["42", "null", "true", "[\"abc\"]"] {
        assert_eq!(
            rejected(&signed("session-closed", data)),
            Rejection::SessionClosedShape,
            "{data}"
        );
    }
}

#[test]
fn captured_node_status_gives_its_external_uri() {
    assert_eq!(
        decode_fresh(&signed("node-removed", CAPTURED_NODE_STATUS)),
        Decoded::Event(GridEvent::NodeRemoved {
            event_id: id(),
            node_uri: "http://localhost:17555".into(),
        })
    );
    assert_eq!(
        decode_fresh(&signed("node-restarted", CAPTURED_NODE_STATUS)),
        Decoded::Event(GridEvent::NodeRestarted {
            event_id: id(),
            node_uri: "http://localhost:17555".into(),
        })
    );
}

#[test]
fn node_status_is_read_leniently_and_the_uri_kept_verbatim() {
    // Java would drop this (no nodeId, slots, ...); we only need externalUri, trailing `/` kept.
    assert_eq!(
        decode_fresh(&signed(
            "node-restarted",
            r#"{"externalUri": "http://n:5555/", "slots": [{"id": {"hostId": "h"}}]}"#
        )),
        Decoded::Event(GridEvent::NodeRestarted {
            event_id: id(),
            node_uri: "http://n:5555/".into(),
        })
    );
}

#[test]
fn node_status_without_a_string_external_uri_is_rejected() {
    for data in [
        r#"{"nodeId": "af914115-8f90-482f-8113-04d1a6cf3bb6"}"#,
        r#"{"externalUri": null}"#,
        r#"{"externalUri": 5555}"#,
        r#""http://n:5555""#,
        "[]",
    ] {
        for name in ["node-removed", "node-restarted"] {
            let rejection = rejected(&signed(name, data));
            assert_eq!(rejection.kind(), "external_uri", "{name} {data}");
        }
    }
}

#[test]
fn events_nobody_listens_to_are_ignored_by_bounded_label() {
    for (name, label) in [
        ("node-status", "node-status"),
        ("node-heartbeat", "node-heartbeat"),
        ("node-added", "node-added"),
        ("session-created", "session-created"),
        ("made-up-event", "other"),
        ("", "other"),
        ("SESSION-CLOSED", "other"),
    ] {
        let mut seen = RecentIds::default();
        let decoded = decode(&signed(name, "{}"), SECRET, &mut seen);
        assert_eq!(decoded, Decoded::Ignored(label), "{name}");
        assert!(seen.is_empty(), "ignored events do not use up ids");
    }
}

#[test]
fn ignored_events_are_not_checked_further() {
    // Java skips the message before reading frame 2, so garbage there is no rejection.
    let decoded = decode_fresh(&frames("node-status", "not json", "nope", "{"));
    assert_eq!(decoded, Decoded::Ignored("node-status"));
}

#[test]
fn a_name_that_is_not_utf8_is_ignored() {
    let mut message = signed("session-closed", "\"abc\"");
    message[0] = vec![0xff, 0xfe, b's'];
    assert_eq!(decode_fresh(&message), Decoded::Ignored("other"));
}

#[test]
fn wrong_frame_counts_are_rejected() {
    let four = signed("session-closed", "\"abc\"");
    for count in [0, 1, 2, 3, 5, 9] {
        let message: Vec<Vec<u8>> = four.iter().cycle().take(count).cloned().collect();
        assert_eq!(rejected(&message), Rejection::FrameCount(count));
    }
}

#[test]
fn a_secret_frame_that_is_not_a_json_string_is_rejected() {
    for secret in [
        "s3cr3t",
        "",
        "null",
        "42",
        "[\"s3cr3t\"]",
        "\"s3cr3t",
        "\"s3cr3t\" x",
    ] {
        let message = frames("session-closed", secret, ID, "\"abc\"");
        assert_eq!(rejected(&message), Rejection::SecretFrame, "{secret}");
    }
    let mut message = signed("session-closed", "\"abc\"");
    message[1] = vec![b'"', 0xff, b'"'];
    assert_eq!(rejected(&message), Rejection::SecretFrame);
}

#[test]
fn an_event_id_that_is_not_a_uuid_is_rejected_without_burning_anything() {
    let mut seen = RecentIds::default();
    for bad in ["", "nope", "b8eccc16-fda1-4049-8511", &format!("{ID} ")] {
        let message = frames("session-closed", "\"s3cr3t\"", bad, "\"abc\"");
        assert_eq!(
            decode(&message, SECRET, &mut seen),
            Decoded::Rejected(Rejection::EventId),
            "{bad:?}"
        );
    }
    let mut message = signed("session-closed", "\"abc\"");
    message[2] = vec![0xff; 36];
    assert_eq!(
        decode(&message, SECRET, &mut seen),
        Decoded::Rejected(Rejection::EventId)
    );
    assert!(seen.is_empty());
}

#[test]
fn the_same_id_is_accepted_once_then_dropped_silently() {
    let mut seen = RecentIds::default();
    let message = signed("session-closed", "\"abc\"");
    assert!(matches!(
        decode(&message, SECRET, &mut seen),
        Decoded::Event(_)
    ));
    assert_eq!(
        decode(&message, SECRET, &mut seen),
        Decoded::Duplicate(id())
    );
    // Dedup is by id alone, whatever the name or payload of the later copy.
    let other = signed("node-removed", r#"{"externalUri": "http://n:5555"}"#);
    assert_eq!(decode(&other, SECRET, &mut seen), Decoded::Duplicate(id()));
}

#[test]
fn the_id_is_compared_as_a_uuid_not_as_text() {
    let mut seen = RecentIds::default();
    decode(&signed("session-closed", "\"abc\""), SECRET, &mut seen);
    let upper = frames(
        "session-closed",
        "\"s3cr3t\"",
        &ID.to_uppercase(),
        "\"abc\"",
    );
    assert_eq!(decode(&upper, SECRET, &mut seen), Decoded::Duplicate(id()));
}

#[test]
fn ids_older_than_the_window_are_accepted_again() {
    let mut seen = RecentIds::new(128);
    let first = signed("session-closed", "\"abc\"");
    assert!(matches!(
        decode(&first, SECRET, &mut seen),
        Decoded::Event(_)
    ));
    for _ in 0..128 {
        let id = Uuid::new_v4().to_string();
        let message = frames("session-closed", "\"s3cr3t\"", &id, "\"abc\"");
        assert!(matches!(
            decode(&message, SECRET, &mut seen),
            Decoded::Event(_)
        ));
    }
    assert!(matches!(
        decode(&first, SECRET, &mut seen),
        Decoded::Event(_)
    ));
}

#[test]
fn a_wrongly_signed_copy_burns_the_id() {
    let mut seen = RecentIds::default();
    let forged = frames("session-closed", "\"wrong\"", ID, "\"abc\"");
    assert_eq!(
        decode(&forged, SECRET, &mut seen),
        Decoded::Rejected(Rejection::SecretMismatch)
    );
    let genuine = signed("session-closed", "\"abc\"");
    assert_eq!(
        decode(&genuine, SECRET, &mut seen),
        Decoded::Duplicate(id())
    );
}

#[test]
fn the_secret_is_compared_exactly_after_json_decoding() {
    // `"s3\u0063r3t"` decodes to s3cr3t; the escaped form is the same secret.
    let escaped = frames("session-closed", r#""s3\u0063r3t""#, ID, "\"abc\"");
    assert!(matches!(decode_fresh(&escaped), Decoded::Event(_)));
    for wrong in [r#""S3CR3T""#, r#"" s3cr3t""#, r#""s3cr3t ""#, r#""""#] {
        let message = frames("session-closed", wrong, ID, "\"abc\"");
        assert_eq!(rejected(&message), Rejection::SecretMismatch, "{wrong}");
    }
}

#[test]
fn a_secret_frame_longer_than_any_spelling_of_the_secret_is_not_parsed() {
    // Each character of "s3cr3t" as a \uXXXX escape is the longest spelling: 38 bytes.
    let longest: String = "s3cr3t"
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let longest = format!("\"{longest}\"");
    assert_eq!(longest.len(), 2 + 6 * 6);
    let message = frames("session-closed", &longest, ID, "\"abc\"");
    assert!(matches!(decode_fresh(&message), Decoded::Event(_)));
    // Whitespace around the string is JSON too, and does not count.
    let padded = format!("{}{longest}{}", " ".repeat(1000), "\n".repeat(1000));
    let message = frames("session-closed", &padded, ID, "\"abc\"");
    assert!(matches!(decode_fresh(&message), Decoded::Event(_)));
    // One byte more cannot be our secret: a mismatch, even though it is not JSON.
    for long in [format!("\"{}\"", "s".repeat(37)), "x".repeat(1 << 20)] {
        let message = frames("session-closed", &long, ID, "\"abc\"");
        assert_eq!(rejected(&message), Rejection::SecretMismatch);
    }
}

#[test]
fn the_default_secret_is_an_empty_json_string() {
    let message = frames("session-closed", "\"\"", ID, "\"abc\"");
    assert!(matches!(
        decode(&message, "", &mut RecentIds::default()),
        Decoded::Event(_)
    ));
    let signed = signed("session-closed", "\"abc\"");
    assert_eq!(
        decode(&signed, "", &mut RecentIds::default()),
        Decoded::Rejected(Rejection::SecretMismatch)
    );
}

#[test]
fn data_that_is_not_json_is_rejected_and_the_id_not_remembered() {
    let mut seen = RecentIds::default();
    for data in [
        "",
        "{",
        "abc",
        "{\"sessionId\": \"abc\",}",
        "\"abc\" \"def\"",
    ] {
        let decoded = decode(&signed("session-closed", data), SECRET, &mut seen);
        assert!(
            matches!(decoded, Decoded::Rejected(Rejection::DataNotJson { .. })),
            "{data:?}: {decoded:?}"
        );
    }
    assert!(seen.is_empty());
    // So a corrected copy with the same id still gets through.
    let fixed = signed("session-closed", "\"abc\"");
    assert!(matches!(
        decode(&fixed, SECRET, &mut seen),
        Decoded::Event(_)
    ));
}

#[test]
fn data_that_is_not_utf8_is_rejected_as_not_json() {
    let mut message = signed("session-closed", "");
    message[3] = b"\"ab\xffc\"".to_vec();
    assert_eq!(rejected(&message).kind(), "data_json");
}

#[test]
fn a_wrongly_signed_message_is_rejected_before_its_data_is_parsed() {
    // Data that is not JSON, or hostile JSON: with a wrong secret, none of it is looked at.
    let deep = "[".repeat(100_000);
    for data in ["{", "not json", deep.as_str()] {
        let mut seen = RecentIds::default();
        let forged = frames("session-closed", "\"wrong\"", ID, data);
        assert_eq!(
            decode(&forged, SECRET, &mut seen),
            Decoded::Rejected(Rejection::SecretMismatch),
            "{}",
            &data[..data.len().min(16)]
        );
        // Counted like any wrongly signed copy: the id is used up.
        assert!(seen.contains(&id()));
    }
}

#[test]
fn an_unusable_payload_still_burns_the_id() {
    // Java remembers the id before its listener fails to decode the payload.
    let mut seen = RecentIds::default();
    let bad = signed(
        "session-closed",
        r#"{"sessionId": "abc", "reason": "quit"}"#,
    );
    assert_eq!(
        decode(&bad, SECRET, &mut seen),
        Decoded::Rejected(Rejection::Reason)
    );
    let good = signed("session-closed", "\"abc\"");
    assert_eq!(decode(&good, SECRET, &mut seen), Decoded::Duplicate(id()));
}

#[test]
fn hostile_json_does_not_panic() {
    let deep_array = "[".repeat(100_000);
    let deep_object = "{\"a\":".repeat(100_000);
    let huge_number = format!(
        r#"{{"externalUri": "u", "maxSessions": 1{}}}"#,
        "0".repeat(10_000)
    );
    let long_string = format!("\"{}\"", "x".repeat(4 << 20));
    for (name, data) in [
        ("node-removed", deep_array.as_str()),
        ("node-removed", deep_object.as_str()),
        ("session-closed", deep_array.as_str()),
        ("node-restarted", huge_number.as_str()),
        ("session-closed", long_string.as_str()),
    ] {
        let _ = decode_fresh(&signed(name, data));
    }
    assert!(matches!(
        decode_fresh(&signed("node-restarted", &huge_number)),
        Decoded::Event(_)
    ));
}

#[test]
fn rejection_kinds_are_distinct_labels() {
    let all = [
        Rejection::FrameCount(3),
        Rejection::SecretFrame,
        Rejection::EventId,
        Rejection::DataNotJson { line: 1, column: 1 },
        Rejection::SecretMismatch,
        Rejection::SessionClosedShape,
        Rejection::SessionId,
        Rejection::Reason,
        Rejection::ExternalUri {
            name: "node-removed",
        },
    ];
    let kinds: std::collections::HashSet<_> = all.iter().map(Rejection::kind).collect();
    assert_eq!(kinds.len(), all.len());
}
