//! The add body read from its text (`json::tape`) against the same body parsed into a `Value`,
//! the way it was parsed before: the two must agree on every body, result and error alike.

use proptest::prelude::*;
use serde_json::Value;

use super::super::uri::is_java_uri;
use super::*;

/// The add path written with `serde_json::Value`, as it was before the body was read from its
/// text: the reference [`parse_add_body_within`] must agree with on every body.
fn parse_by_value(body: &[u8], limits: &SessionLimits) -> Result<Session, AddError> {
    let budget = json_value_budget(body.len());
    if count_json_values(body, budget) > budget {
        return Err(Refused {
            limit: Limit::Json,
            value: budget,
        }
        .into());
    }
    let text = std::str::from_utf8(body).map_err(|_| AddError::Unparsable)?;
    let mut fields = match serde_json::from_str(text).map_err(|_| AddError::Unparsable)? {
        Value::Object(fields) => fields,
        Value::Null => return Err(AddError::NullBody),
        _ => return Err(AddError::Unparsable),
    };
    let mut take_string = |name: &str| match fields.remove(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(AddError::Unparsable),
    };
    let id = take_string("sessionId")?;
    limits.check_id(&id)?;
    let uri = take_string("uri")?;
    limits.check_uri(&uri)?;
    if !is_java_uri(&uri) {
        return Err(AddError::Unparsable);
    }
    let start = fields
        .get("start")
        .and_then(parse_start)
        .ok_or(AddError::Unparsable)?;
    let start = format_instant_nanos(start);
    let over = Refused {
        limit: Limit::Record,
        value: limits.max_record_bytes,
    };
    let mut room = limits
        .max_record_bytes
        .checked_sub(id.len() + uri.len() + start.len())
        .ok_or(over)?;
    let capabilities = render_by_value(fields.remove("capabilities"), room, over)?;
    room -= capabilities.len();
    let stereotype = render_by_value(fields.remove("stereotype"), room, over)?;
    Ok(Session {
        id,
        uri,
        start,
        capabilities,
        stereotype,
    })
}

fn render_by_value(value: Option<Value>, room: usize, over: Refused) -> Result<String, AddError> {
    let Some(Value::Object(map)) = value else {
        return Err(AddError::Unparsable);
    };
    let mut entries: Vec<(String, Value)> = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
    entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    for (_, value) in &mut entries {
        json::normalise_numbers_in_place(value).map_err(|_| AddError::Unparsable)?;
    }
    let object = Value::Object(entries.into_iter().collect());
    json::to_pretty_string_within(&object, room).map_err(|_| over.into())
}

fn assert_parsed_as_by_value(body: &str, limits: &SessionLimits) {
    assert_eq!(
        parse_add_body_within(body.as_bytes(), limits),
        parse_by_value(body.as_bytes(), limits),
        "body: {body}"
    );
}

/// Strings as JSON text: escapes of every kind, `/` escaped as Selenium writes it, surrogate
/// pairs, halves of pairs (which make the body unparsable), characters whose UTF-16 order
/// differs from their byte order.
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        40 => prop::sample::select(vec![
            "a", "session", "/", "\\/", "\\u002f", "\\u00e9", "é", "\\ud83d\\ude00", "😀", "\\n",
            "\\\"", "\\\\", "\\u0000", "<&", "\\u2028", "\u{e000}", "\\t", " ",
        ]),
        1 => prop::sample::select(vec!["\\ud800", "\\udc00", "\\ud800\\u0041"]),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Keys from a small set, so that objects often repeat one, also spelt with escapes.
fn json_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "\"a\"",
        "\"\\u0061\"",
        "\"b\"",
        "\"k/\"",
        "\"k\\/\"",
        "\"😀\"",
        "\"\\ud83d\\ude00\"",
        "\"\u{e000}\"",
        "\"z\"",
        "\"\"",
    ])
    .prop_map(str::to_owned)
}

fn json_number() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => any::<i64>().prop_map(|i| i.to_string()),
        8 => any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(|d| format!("{d:e}")),
        8 => any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(|d| format!("{d:?}")),
        8 => prop::sample::select(vec![
            "-0", "0.0", "-1e-400", "1.5E+3", "12e-2", "1e7", "123456789.125", "2.5e-3",
            "-9223372036854775808", "1.0",
        ])
        .prop_map(str::to_owned),
        // Numbers Java cannot hold: the body is unparsable where they are rendered.
        1 => prop::sample::select(vec!["1e400", "99999999999999999999", "9223372036854775808"])
            .prop_map(str::to_owned),
    ]
}

/// Any JSON value as text, up to a few levels deep, with varied whitespace.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        json_number(),
        json_string(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let gap = prop::sample::select(vec!["", " ", "\n  ", "\t"]);
        prop_oneof![
            (
                prop::collection::vec((json_key(), inner.clone()), 0..6),
                gap.clone()
            )
                .prop_map(|(members, gap)| {
                    let members: Vec<String> = members
                        .iter()
                        .map(|(k, v)| format!("{k}:{gap}{v}"))
                        .collect();
                    format!("{{{gap}{}{gap}}}", members.join(&format!(",{gap}")))
                }),
            (prop::collection::vec(inner, 0..5), gap)
                .prop_map(|(items, gap)| format!("[{gap}{}{gap}]", items.join(&format!(",{gap}")))),
        ]
    })
}

/// Mostly an object, as capabilities are; now and then any other value.
fn json_object() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => (prop::collection::vec((json_key(), json_text()), 0..8)).prop_map(|members| {
            let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", members.join(", "))
        }),
        1 => json_text(),
    ]
}

/// An add body: the five fields (each now and then missing, repeated or of the wrong kind) and
/// an ignored one, in any order.
fn add_body() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        20 => Just("\"4c1b6d2e-0000-4000-8000-00000000a001\"".to_owned()),
        4 => json_string(),
        1 => json_number(),
    ];
    let uri = prop_oneof![
        20 => prop::sample::select(vec![
            "\"http://10.0.0.5:5555\"",
            "\"http:\\u002f\\u002f10.0.0.5:5555\"",
            "\"http:\\/\\/node:1\"",
        ]),
        1 => prop::sample::select(vec!["\"not a uri\"", "1"]),
    ]
    .prop_map(str::to_owned);
    let start = prop_oneof![
        20 => prop::sample::select(vec![
            "\"2024-05-01T10:20:30.123400Z\"",
            "1714558830123",
            "1.7145588301235e12",
            "\"1714558830123\"",
        ]),
        1 => prop::sample::select(vec!["\"x\"", "null"]),
    ]
    .prop_map(str::to_owned);
    let field = |name: &'static str, value: BoxedStrategy<String>| {
        prop::option::weighted(0.95, value).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    let extra = prop::collection::vec(
        (
            prop::sample::select(vec!["extra", "capabilities", "stereotype", "sessionId"]),
            json_text(),
        ),
        0..3,
    );
    (
        field("sessionId", id.boxed()),
        field("uri", uri.boxed()),
        field("start", start.boxed()),
        field("capabilities", json_object().boxed()),
        field("stereotype", json_object().boxed()),
        extra,
    )
        .prop_flat_map(|(a, b, c, d, e, extra)| {
            let mut fields: Vec<(String, String)> = [a, b, c, d, e].into_iter().flatten().collect();
            fields.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            Just(fields).prop_shuffle()
        })
        .prop_map(|fields| {
            let members: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!("{{{}}}", members.join(", "))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn any_add_body_is_read_from_its_text_as_a_value_parse_reads_it(
        body in add_body(),
        max_record_bytes in prop_oneof![Just(usize::MAX), 80usize..1200, 80usize..400],
    ) {
        let limits = SessionLimits { max_record_bytes, ..SessionLimits::NONE };
        prop_assert_eq!(
            parse_add_body_within(body.as_bytes(), &limits),
            parse_by_value(body.as_bytes(), &limits),
            "body: {}", body
        );
    }
}

#[test]
fn bodies_that_are_not_sessions_are_read_as_a_value_parse_reads_them() {
    let valid = EXAMPLE_POST;
    for body in [
        "null",
        "  null\n",
        "[]",
        "1",
        "\"s\"",
        "{}",
        "",
        "{",
        "nul",
        "{} x",
        &valid.replace("\"chrome\"}", "\"chrome\",}"),
        &valid.replace("300000", "0300000"),
        &valid.replace("300000", "1e999"),
        &valid.replace("300000", "99999999999999999999"),
        &valid.replace("\"chrome\"", "\"\\ud800\""),
        &valid.replace("\"chrome\"", "\"\\x\""),
        &valid.replace("\"chrome\"", "\"a\u{1}b\""),
        &valid.replace("\"extra\": {\"ignored\": 1e999}", "\"extra\": \"\\udc00\""),
    ] {
        assert_parsed_as_by_value(body, &SessionLimits::NONE);
    }
}

#[test]
fn nesting_is_refused_at_the_depth_a_value_parse_refuses() {
    for depth in [125, 126, 127, 128, 129] {
        // The body's own object is the first level; capabilities' the second.
        let nested = format!("{}{}", "[".repeat(depth - 2), "]".repeat(depth - 2));
        let in_capabilities = EXAMPLE_POST.replace("\"args\": []", &format!("\"args\": {nested}"));
        assert_parsed_as_by_value(&in_capabilities, &SessionLimits::NONE);
        let nested = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        let in_an_ignored_field = EXAMPLE_POST.replace("{\"ignored\": 1e999}", &nested);
        assert_parsed_as_by_value(&in_an_ignored_field, &SessionLimits::NONE);
    }
    let at_the_limit = format!("{}{}", "[".repeat(127), "]".repeat(127));
    assert!(serde_json::from_str::<Value>(&at_the_limit).is_ok());
    let past_it = format!("{}{}", "[".repeat(128), "]".repeat(128));
    assert!(serde_json::from_str::<Value>(&past_it).is_err());
}

#[test]
fn a_number_java_cannot_hold_makes_a_body_unparsable_even_when_it_is_also_too_large() {
    let body = EXAMPLE_POST.replace("300000", "1e999");
    let limits = SessionLimits {
        max_record_bytes: 120,
        ..SessionLimits::NONE
    };
    assert_eq!(
        parse_add_body_within(body.as_bytes(), &limits),
        Err(AddError::Unparsable)
    );
    assert_parsed_as_by_value(&body, &limits);
    assert!(matches!(
        parse_add_body_within(EXAMPLE_POST.as_bytes(), &limits),
        Err(AddError::Refused(_))
    ));
}

#[test]
fn a_value_a_later_duplicate_key_replaces_is_neither_written_nor_checked() {
    let body = EXAMPLE_POST.replace(
        "\"pageLoad\": 300000",
        "\"pageLoad\": 1e999, \"script\": 1, \"pageLoad\": null",
    );
    let session = parse_add_body(body.as_bytes()).unwrap();
    assert!(
        session
            .capabilities
            .contains("\"timeouts\": {\n    \"pageLoad\": null,\n    \"script\": 1\n  }"),
        "{}",
        session.capabilities
    );
    assert_parsed_as_by_value(&body, &SessionLimits::NONE);
    let limits = SessionLimits {
        max_record_bytes: 120,
        ..SessionLimits::NONE
    };
    assert!(matches!(
        parse_add_body_within(body.as_bytes(), &limits),
        Err(AddError::Refused(_))
    ));
    assert_parsed_as_by_value(&body, &limits);
}
