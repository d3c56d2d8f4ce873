use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The Java text of a number literal, through the public normaliser.
fn java(literal: &str) -> String {
    let value = normalise_numbers(parse(literal)).unwrap();
    let mut out = String::new();
    write_compact(&value, &mut out);
    out
}

fn escaped(s: &str) -> String {
    let mut out = String::new();
    write_string(s, &mut out);
    out
}

#[test]
fn integers_in_i64_range_round_trip_exactly() {
    for text in [
        "0",
        "7",
        "-1",
        "300000",
        "9223372036854775807",
        "-9223372036854775808",
        "9007199254740993",
    ] {
        assert_eq!(java(text), text);
    }
    assert_eq!(java("-0"), "0");
}

#[test]
fn integers_beyond_i64_are_rejected() {
    for text in [
        "9223372036854775808",
        "-9223372036854775809",
        "1".repeat(40).as_str(),
    ] {
        let err = normalise_numbers(parse(text)).unwrap_err();
        assert!(
            matches!(err, JsonError::IntegerOutOfRange(_)),
            "{text}: {err}"
        );
    }
}

#[test]
fn integral_doubles_print_as_integers() {
    for (text, expected) in [
        ("1.0", "1"),
        ("1e2", "100"),
        ("1E2", "100"),
        ("-0.0", "0"),
        ("0.0", "0"),
        ("2.0e0", "2"),
        ("-3.000", "-3"),
        ("1.2345E10", "12345000000"),
        ("1e18", "1000000000000000000"),
        ("-9.223372036854775808e18", "-9223372036854775808"),
    ] {
        assert_eq!(java(text), expected, "{text}");
    }
}

#[test]
fn non_integral_doubles_use_double_to_string() {
    for (text, expected) in [
        ("1.5", "1.5"),
        ("0.1", "0.1"),
        ("1234.56", "1234.56"),
        ("2.50", "2.5"),
        ("2.5", "2.5"),
        ("-1.5", "-1.5"),
        ("0.001", "0.001"),
        ("0.00123", "0.00123"),
        ("1e-7", "1.0E-7"),
        ("1.0e-7", "1.0E-7"),
        ("-1e-7", "-1.0E-7"),
        ("0.0009999", "9.999E-4"),
        ("9999999.5", "9999999.5"),
        ("12345678.9", "1.23456789E7"),
        ("1e300", "1.0E300"),
        ("1e19", "1.0E19"),
        ("-2.5e19", "-2.5E19"),
        ("9.223372036854775808e18", "9.223372036854776E18"),
        ("4.9e-324", "4.9E-324"),
        ("1.7976931348623157e308", "1.7976931348623157E308"),
    ] {
        assert_eq!(java(text), expected, "{text}");
    }
}

#[test]
fn doubles_beyond_range_are_rejected() {
    for text in ["1e400", "-1e400", "1.5E309"] {
        let err = normalise_numbers(parse(text)).unwrap_err();
        assert!(
            matches!(err, JsonError::DoubleOutOfRange(_)),
            "{text}: {err}"
        );
    }
}

#[test]
fn double_to_string_layout_matches_java() {
    for (d, expected) in [
        (1.2345e10, "1.2345E10"),
        (1e7, "1.0E7"),
        (100.0, "100.0"),
        (1.0, "1.0"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1e-3, "0.001"),
        (1e-4, "1.0E-4"),
        (123456.0, "123456.0"),
        (5e-324, "4.9E-324"),
        (2e-323, "2.0E-323"),
        (0.02, "0.02"),
        (3e10, "3.0E10"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
    ] {
        assert_eq!(java_double_to_string(d), expected);
    }
}

#[test]
fn normalisation_reaches_every_depth_and_keeps_order() {
    let value = parse(r#"{"z": [1.0, {"b": 1e-7, "a": 2}], "a": 3.50}"#);
    let value = normalise_numbers(value).unwrap();
    let mut out = String::new();
    write_compact(&value, &mut out);
    assert_eq!(out, r#"{"z": [1,{"b": 1.0E-7,"a": 2}],"a": 3.5}"#);
}

#[test]
fn every_special_character_is_escaped_like_java() {
    assert_eq!(escaped(r#"a"b"#), r#""a\"b""#);
    assert_eq!(escaped(r"a\b"), r#""a\\b""#);
    assert_eq!(escaped("/"), r#""\u002f""#);
    assert_eq!(escaped("<"), r#""\u003c""#);
    assert_eq!(escaped("&"), r#""\u0026""#);
    assert_eq!(escaped("\u{2028}"), r#""\u2028""#);
    assert_eq!(escaped("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
    assert_eq!(escaped("\u{0}"), r#""\u0000""#);
    assert_eq!(escaped("\u{1}\u{1b}\u{1f}"), r#""\u0001\u001b\u001f""#);
    assert_eq!(escaped("\u{b}"), r#""\u000b""#);
}

#[test]
fn other_characters_are_written_raw() {
    for s in [
        ">", "'", "\u{7f}", "\u{2029}", "ü", "日本", "😀", " ", "=+:;%#?",
    ] {
        assert_eq!(escaped(s), format!("\"{s}\""));
    }
    assert_eq!(escaped(""), r#""""#);
}

#[test]
fn url_is_escaped_like_the_redis_example() {
    assert_eq!(
        escaped("http://10.0.0.5:5555"),
        r#""http:\u002f\u002f10.0.0.5:5555""#
    );
}

#[test]
fn pretty_matches_the_redis_capabilities_value() {
    let value = parse(
        r#"{"browserName": "chrome", "goog:chromeOptions": {"args": [], "x": null},
            "timeouts": {"pageLoad": 300000}}"#,
    );
    assert_eq!(
        to_pretty_string(&value),
        "{\n  \"browserName\": \"chrome\",\n  \"goog:chromeOptions\": {\n    \"args\": [\n    ],\n    \"x\": null\n  },\n  \"timeouts\": {\n    \"pageLoad\": 300000\n  }\n}"
    );
}

#[test]
fn pretty_empty_containers_and_scalars() {
    assert_eq!(to_pretty_string(&json!({})), "{\n}");
    assert_eq!(to_pretty_string(&json!([])), "[\n]");
    assert_eq!(to_pretty_string(&json!(true)), "true");
    assert_eq!(to_pretty_string(&Value::Null), "null");
    let mut out = String::new();
    write_pretty(&json!({}), 2, &mut out);
    assert_eq!(out, "{\n    }");
}

#[test]
fn pretty_arrays_and_nesting_levels() {
    let value = parse(r#"[1, [true, "a/b"], {"k": []}]"#);
    let mut out = String::new();
    write_pretty(&value, 1, &mut out);
    assert_eq!(
        out,
        "[\n    1,\n    [\n      true,\n      \"a\\u002fb\"\n    ],\n    {\n      \"k\": [\n      ]\n    }\n  ]"
    );
}

#[test]
fn compact_keeps_the_space_after_names() {
    let value = parse(
        r#"{"availability": "UP", "externalUri": "http://localhost:17555", "a": [], "o": {}}"#,
    );
    let mut out = String::new();
    write_compact(&value, &mut out);
    assert_eq!(
        out,
        r#"{"availability": "UP","externalUri": "http:\u002f\u002flocalhost:17555","a": [],"o": {}}"#
    );
}

#[test]
fn keys_are_escaped_too() {
    let value = parse(r#"{"a/b": 1}"#);
    let mut out = String::new();
    write_compact(&value, &mut out);
    assert_eq!(out, r#"{"a\u002fb": 1}"#);
}

proptest! {
    #[test]
    fn any_string_round_trips_through_write_string(s in any::<String>()) {
        let text = escaped(&s);
        let back: String = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, s);
        let inner = &text[1..text.len() - 1];
        let needs_escape = |c: char| c < ' ' || ['/', '<', '&', '\u{2028}'].contains(&c);
        prop_assert!(!inner.chars().any(needs_escape), "unescaped character in {}", text);
    }

    #[test]
    fn any_finite_double_prints_a_number_that_reads_back(d in any::<f64>()) {
        prop_assume!(d.is_finite());
        let text = java_double_to_string(d);
        let back: f64 = text.parse().unwrap();
        prop_assert_eq!(back, d);
        prop_assert!(text.contains('.'));
    }

    #[test]
    fn any_double_literal_normalises_and_prints_like_java(d in any::<f64>()) {
        prop_assume!(d.is_finite());
        let expected = if d.fract() == 0.0 && d.abs() < 9.2e18 {
            format!("{}", d as i64)
        } else {
            java_double_to_string(d)
        };
        prop_assert_eq!(java(&format!("{d:e}")), expected.clone());
        prop_assert_eq!(java(&format!("{d:E}")), expected);
    }

    #[test]
    fn pretty_output_parses_back_to_the_same_value(
        keys in proptest::collection::vec("[a-z/<&\"]{0,4}", 0..6),
        n in any::<i64>(),
    ) {
        let mut map = serde_json::Map::new();
        for (i, k) in keys.iter().enumerate() {
            map.insert(k.clone(), if i % 2 == 0 { json!(n) } else { json!([k, {}]) });
        }
        let value = Value::Object(map);
        let back: Value = serde_json::from_str(&to_pretty_string(&value)).unwrap();
        prop_assert_eq!(back, value);
    }
}

/// The escaper as first written (one character at a time), to check the run-copying one against.
fn write_string_by_char(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\u002f"),
            '<' => out.push_str("\\u003c"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn strings_are_escaped_as_java_does_whatever_the_runs_between_escapes() {
    let pieces = [
        "",
        "a",
        "plain text",
        "\"",
        "\\",
        "/",
        "<",
        "&",
        "\u{8}",
        "\u{c}",
        "\n",
        "\r",
        "\t",
        "\u{0}",
        "\u{1f}",
        "\u{7f}",
        "é",
        "€",
        "\u{2027}",
        "\u{2028}",
        "\u{2029}",
        "\u{e000}",
        "😀",
        "\u{e2}",
        "â\u{80}",
        "http://10.0.0.5:5555/wd/hub",
    ];
    let mut cases: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
    for a in pieces {
        for b in pieces {
            cases.push(format!("{a}{b}"));
            cases.push(format!("x{a}yy{b}z"));
        }
    }
    for case in cases {
        let mut out = String::new();
        write_string(&case, &mut out);
        assert_eq!(out, write_string_by_char(&case), "escaping {case:?}");
    }
}

proptest! {
    #[test]
    fn any_string_is_escaped_as_by_char(s in "\\PC*|[\\x00-\\x1f\"\\\\/<&\u{2028}\u{2029}a]*") {
        let mut out = String::new();
        write_string(&s, &mut out);
        prop_assert_eq!(out, write_string_by_char(&s));
    }
}

#[test]
fn a_bounded_rendering_is_the_same_text_or_refused_before_passing_its_limit() {
    let value = normalise_numbers(parse(
        r#"{"a": [[1, 2.50, "/<&\u2028\u0001"]], "b": {}, "c": null, "d": true}"#,
    ))
    .unwrap();
    let full = to_pretty_string(&value);
    assert_eq!(
        to_pretty_string_within(&value, full.len()),
        Ok(full.clone())
    );
    for limit in [0, 1, full.len() / 2, full.len() - 1] {
        assert_eq!(
            to_pretty_string_within(&value, limit),
            Err(TooLarge(limit)),
            "limit {limit}"
        );
    }
    // Six bytes out for every `/` in: the limit holds inside a single string too.
    let slashes = Value::String("/".repeat(1000));
    assert_eq!(to_pretty_string_within(&slashes, 6001), Err(TooLarge(6001)));
    assert_eq!(
        to_pretty_string_within(&slashes, 6002).map(|s| s.len()),
        Ok(6002)
    );
}

#[test]
fn escaped_len_is_the_length_write_string_writes() {
    for s in [
        "",
        "plain",
        "\"\\/<&>\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}",
        "\u{2028}\u{2029}\u{e2}😀",
    ] {
        assert_eq!(escaped_len(s), escaped(s).len(), "{s:?}");
    }
}

proptest! {
    #[test]
    fn escaped_len_matches_for_any_string(s in any::<String>()) {
        prop_assert_eq!(escaped_len(&s), escaped(&s).len());
    }
}

/// The word-at-a-time scan finds the first byte the escape table marks, wherever it sits
/// (every position of a word and of the tail, after plain bytes of every kind), and nothing
/// else.
#[test]
fn scan_for_escapes_finds_exactly_the_marked_bytes() {
    let plain: Vec<u8> = (0u8..=255)
        .filter(|b| !MAY_ESCAPE[usize::from(*b)])
        .collect();
    for len in 0..24 {
        for at in 0..len {
            for b in 0u8..=255 {
                // Filler of different plain bytes, so no word is all one value.
                let mut bytes: Vec<u8> = (0..len)
                    .map(|i| plain[(i * 7 + at) % plain.len()])
                    .collect();
                bytes[at] = b;
                let want = if MAY_ESCAPE[usize::from(b)] { at } else { len };
                assert_eq!(
                    next_may_escape(&bytes, 0),
                    want,
                    "byte {b:#04x} at {at} of {len}"
                );
                assert_eq!(
                    next_may_escape(&bytes, at),
                    want,
                    "from {at}, byte {b:#04x}"
                );
            }
        }
        let clean: Vec<u8> = (0..len).map(|i| plain[i % plain.len()]).collect();
        assert_eq!(next_may_escape(&clean, 0), len);
    }
}
