//! The limits a session must fit before it may enter the Raft log, and the refusal that names
//! the one it broke.
//!
//! Every limit is checked before the work it bounds: the JSON value count before any tree is
//! built ([`count_json_values`] is a byte scan that allocates nothing), the id and node URI
//! before anything is rendered, and the record while it is rendered. This module knows nothing
//! about HTTP: the API layer turns a [`Refused`] into Grid's 500 and counts it.

/// A JSON value costs about 90 bytes once parsed (serde_json's `Value` with ordered maps and
/// number text), and the densest body spends two bytes on one (`0,`). A body may hold one value
/// per this many bytes, so its parsed tree stays within a few times its own size.
const BYTES_PER_JSON_VALUE: usize = 16;
/// Values every body may hold whatever its size: a few KiB of dense capabilities cost little.
const FREE_JSON_VALUES: usize = 4096;

/// The request limits, each named as its setting is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `grid.max-body-bytes`: the request body.
    Body,
    /// `grid.max-session-id-bytes`: the session id, in a body or a path.
    SessionId,
    /// `grid.max-node-uri-bytes`: the node URI.
    NodeUri,
    /// `grid.max-record-bytes`: the rendered session record that enters the log.
    Record,
    /// The JSON values a body of its length may hold ([`json_value_budget`]).
    Json,
}

impl Limit {
    /// The `limit` label of `gridraft_refused_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Body => "body",
            Limit::SessionId => "session_id",
            Limit::NodeUri => "node_uri",
            Limit::Record => "record",
            Limit::Json => "json",
        }
    }
}

/// A request over one of the limits; `value` is that limit as configured (or, for
/// [`Limit::Json`], as derived from the body's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Refused {
    pub limit: Limit,
    pub value: usize,
}

impl Refused {
    /// The W3C `message`: what was too large, the setting and its value. Never the input itself,
    /// which may be megabytes.
    pub fn message(&self) -> String {
        let v = self.value;
        match self.limit {
            Limit::Body => {
                format!("Request refused: the body is larger than grid.max-body-bytes ({v} bytes)")
            }
            Limit::SessionId => format!(
                "Request refused: the session id is longer than grid.max-session-id-bytes ({v} bytes)"
            ),
            Limit::NodeUri => format!(
                "Request refused: the node URI is longer than grid.max-node-uri-bytes ({v} bytes)"
            ),
            Limit::Record => format!(
                "Request refused: the session record would be larger than grid.max-record-bytes ({v} bytes)"
            ),
            Limit::Json => format!(
                "Request refused: the body holds more than {v} JSON values (a body may hold \
                 {FREE_JSON_VALUES} plus one per {BYTES_PER_JSON_VALUE} bytes)"
            ),
        }
    }
}

/// The limits a session added through the Grid must fit (`[grid]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_session_id_bytes: usize,
    pub max_node_uri_bytes: usize,
    /// Id, node URI, start, capabilities and stereotype as stored, together.
    pub max_record_bytes: usize,
}

impl SessionLimits {
    /// No limit but the JSON value budget: for sessions that were accepted once already (a
    /// migration from a Java Grid's store).
    pub const NONE: SessionLimits = SessionLimits {
        max_session_id_bytes: usize::MAX,
        max_node_uri_bytes: usize::MAX,
        max_record_bytes: usize::MAX,
    };

    /// Refuses an id over `max-session-id-bytes`.
    pub fn check_id(&self, id: &str) -> Result<(), Refused> {
        check(id.len(), self.max_session_id_bytes, Limit::SessionId)
    }

    /// Refuses a node URI over `max-node-uri-bytes`.
    pub fn check_uri(&self, uri: &str) -> Result<(), Refused> {
        check(uri.len(), self.max_node_uri_bytes, Limit::NodeUri)
    }
}

fn check(len: usize, max: usize, limit: Limit) -> Result<(), Refused> {
    if len > max {
        return Err(Refused { limit, value: max });
    }
    Ok(())
}

/// The JSON values (keys included) a body of `len` bytes may hold.
pub fn json_value_budget(len: usize) -> usize {
    len / BYTES_PER_JSON_VALUE + FREE_JSON_VALUES
}

/// Counts the JSON values and object keys in `body` with one pass over its bytes, stopping as
/// soon as the count passes `stop_after`.
///
/// Every string, number, literal and container is one; the scan does not validate (the parser
/// does that next), it only makes sure the parser is never handed more values than it may build.
pub fn count_json_values(body: &[u8], stop_after: usize) -> usize {
    let mut count = 0;
    let mut in_bare = false;
    let mut i = 0;
    while i < body.len() {
        let starts = match body[i] {
            b'"' => {
                // A string's contents are skipped whole: most of a body is strings.
                i = string_end(body, i + 1);
                in_bare = false;
                true
            }
            b'{' | b'[' => {
                in_bare = false;
                true
            }
            // Numbers, `true`, `false` and `null`: one per run of such bytes.
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'+' | b'.' => {
                !std::mem::replace(&mut in_bare, true)
            }
            _ => {
                in_bare = false;
                false
            }
        };
        i += 1;
        if starts {
            count += 1;
            if count > stop_after {
                break;
            }
        }
    }
    count
}

/// The index of the quote that closes the string whose contents start at `from` (the length
/// of `body` if none does); a quote after a backslash is not one.
fn string_end(body: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(found) = memchr::memchr2(b'"', b'\\', body.get(i..).unwrap_or_default()) {
        if body[i + found] == b'"' {
            return i + found;
        }
        i += found + 2;
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_and_key_counts_once() {
        for (body, n) in [
            ("", 0),
            ("null", 1),
            ("[0,1,-2.5e+3,true,false,null]", 7),
            (r#"{"a": "x,y\"[{", "b": [{}], "c": 12}"#, 8),
            (r#"  [ 1 , 2 ]  "#, 3),
            (r#""\\" 5"#, 2),
        ] {
            assert_eq!(count_json_values(body.as_bytes(), usize::MAX), n, "{body}");
        }
    }

    /// The count as it was first written, one byte at a time: the reference for the one that
    /// skips strings whole.
    fn count_by_byte(body: &[u8]) -> usize {
        let (mut count, mut in_string, mut escaped, mut in_bare) = (0, false, false, false);
        for &b in body {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            count += usize::from(match b {
                b'"' => {
                    in_string = true;
                    in_bare = false;
                    true
                }
                b'{' | b'[' => {
                    in_bare = false;
                    true
                }
                b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'+' | b'.' => {
                    !std::mem::replace(&mut in_bare, true)
                }
                _ => {
                    in_bare = false;
                    false
                }
            });
        }
        count
    }

    proptest::proptest! {
        #[test]
        fn strings_skipped_whole_count_as_byte_by_byte(
            body in proptest::collection::vec(
                proptest::sample::select(b"\"\\{}[]:, 0a-eE.x\xe2\x80".to_vec()),
                0..64,
            )
        ) {
            proptest::prop_assert_eq!(count_json_values(&body, usize::MAX), count_by_byte(&body));
        }
    }

    #[test]
    fn counting_stops_just_past_the_budget() {
        let body = format!("[{}0]", "0,".repeat(1000));
        assert_eq!(count_json_values(body.as_bytes(), 10), 11);
    }

    #[test]
    fn messages_name_the_setting_and_its_value_but_not_the_input() {
        let m = Refused {
            limit: Limit::SessionId,
            value: 1024,
        }
        .to_string();
        assert!(m.contains("grid.max-session-id-bytes (1024 bytes)"), "{m}");
        let m = Refused {
            limit: Limit::Json,
            value: json_value_budget(1 << 20),
        }
        .to_string();
        assert!(m.contains("more than 69632 JSON values"), "{m}");
    }
}
