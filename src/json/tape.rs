//! A JSON text that serde_json has already checked, indexed as a flat list of tokens (a tape),
//! so that a document can be read and written again without building a `serde_json::Value`,
//! whose every string, map and number text is an allocation of its own.
//!
//! The add path uses it (`crate::session::parse_add_body_within`): serde_json checks the body
//! without building anything, [`Tape::new`] indexes it in one pass, and the capabilities are
//! written in Java's layout straight from the text (`super::Writer::node`).
//!
//! serde_json's check lets through two things its `Value` parser refuses, and [`Tape::new`]
//! refuses both, so that a body is accepted exactly when a `Value` parse would accept it:
//! nesting deeper than [`MAX_DEPTH`], and a `\u` escape of half a surrogate pair.

use std::borrow::Cow;

/// The deepest nesting a `Value` parse accepts: serde_json's recursion limit of 128 refuses the
/// 128th container opened inside the others.
pub const MAX_DEPTH: usize = 127;

/// What a value is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    /// `true`, `false` or `null`.
    Literal,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    /// A string with at least one escape in it.
    escaped: bool,
    /// The value's text is `text[start..end]`, quotes and brackets included.
    start: usize,
    end: usize,
    /// The index of the first token after this value and everything inside it.
    next: usize,
}

/// A text the `Value` parser would refuse although serde_json's check passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TapeError {
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a \\u escape of half a surrogate pair")]
    LoneSurrogate,
}

/// One JSON value's text and its tokens, in document order: a container comes before what it
/// holds, an object's members as a key token then the value's tokens.
pub struct Tape<'a> {
    text: &'a str,
    tokens: Vec<Token>,
}

impl<'a> Tape<'a> {
    /// Indexes `text`, which must be exactly one JSON value that serde_json accepts (checked by
    /// deserialising it as `serde::de::IgnoredAny`, say). Anything else may panic or give a
    /// meaningless tape.
    ///
    /// `tokens` is room made at once for that many tokens: one per value and per object key,
    /// what [`crate::session::count_json_values`] counts.
    pub fn new(text: &'a str, tokens: usize) -> Result<Tape<'a>, TapeError> {
        let bytes = text.as_bytes();
        let mut tokens: Vec<Token> = Vec::with_capacity(tokens);
        // The tokens of the containers open at `i`.
        let mut open: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            let kind = match bytes[i] {
                b'{' | b'[' => {
                    if open.len() == MAX_DEPTH {
                        return Err(TapeError::TooDeep);
                    }
                    open.push(tokens.len());
                    let kind = if bytes[i] == b'{' {
                        Kind::Object
                    } else {
                        Kind::Array
                    };
                    tokens.push(Token {
                        kind,
                        escaped: false,
                        start,
                        end: start,
                        next: 0,
                    });
                    i += 1;
                    continue;
                }
                b'}' | b']' => {
                    let at = open.pop().expect("a checked text closes what it opens");
                    let next = tokens.len();
                    let token = &mut tokens[at];
                    token.end = i + 1;
                    token.next = next;
                    i += 1;
                    continue;
                }
                b'"' => {
                    let mut escaped = false;
                    i += 1;
                    loop {
                        let at = i + memchr::memchr2(b'"', b'\\', &bytes[i..])
                            .expect("a checked text closes its strings");
                        if bytes[at] == b'"' {
                            i = at + 1;
                            break;
                        }
                        escaped = true;
                        // The escaped character; a `\u` escape's hex digits hold no quote.
                        i = at + 2;
                    }
                    if escaped {
                        unescape_into(&text[start + 1..i - 1], None)?;
                    }
                    tokens.push(Token {
                        kind: Kind::String,
                        escaped,
                        start,
                        end: i,
                        next: tokens.len() + 1,
                    });
                    continue;
                }
                b't' | b'n' => {
                    i += 4;
                    Kind::Literal
                }
                b'f' => {
                    i += 5;
                    Kind::Literal
                }
                b'-' | b'0'..=b'9' => {
                    i += 1;
                    while i < bytes.len()
                        && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                    {
                        i += 1;
                    }
                    Kind::Number
                }
                // Whitespace, `:` and `,`.
                _ => {
                    i += 1;
                    continue;
                }
            };
            tokens.push(Token {
                kind,
                escaped: false,
                start,
                end: i,
                next: tokens.len() + 1,
            });
        }
        debug_assert!(open.is_empty() && !tokens.is_empty());
        Ok(Tape { text, tokens })
    }

    /// The document's value.
    pub fn root(&self) -> Node<'_, 'a> {
        Node { tape: self, at: 0 }
    }
}

/// One value of a [`Tape`].
#[derive(Clone, Copy)]
pub struct Node<'t, 'a> {
    tape: &'t Tape<'a>,
    at: usize,
}

impl<'t, 'a> Node<'t, 'a> {
    fn token(&self) -> &'t Token {
        &self.tape.tokens[self.at]
    }

    pub fn kind(&self) -> Kind {
        self.token().kind
    }

    /// The value as it is written in the document.
    pub fn text(&self) -> &'a str {
        let t = self.token();
        &self.tape.text[t.start..t.end]
    }

    pub fn is_null(&self) -> bool {
        self.kind() == Kind::Literal && self.text() == "null"
    }

    /// A string's value, with its escapes undone; `None` for anything but a string.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let t = self.token();
        if t.kind != Kind::String {
            return None;
        }
        let raw = &self.tape.text[t.start + 1..t.end - 1];
        if !t.escaped {
            return Some(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        unescape_into(raw, Some(&mut out)).expect("escapes were checked by Tape::new");
        Some(Cow::Owned(out))
    }

    /// An object's members in document order, duplicates included; `None` for anything else.
    pub fn members(&self) -> Option<impl Iterator<Item = (Cow<'a, str>, Node<'t, 'a>)>> {
        let t = self.token();
        (t.kind == Kind::Object).then(|| {
            let tape = self.tape;
            let mut at = self.at + 1;
            std::iter::from_fn(move || {
                (at < t.next).then(|| {
                    let key = Node { tape, at }.as_str().expect("object keys are strings");
                    let value = Node { tape, at: at + 1 };
                    at = value.token().next;
                    (key, value)
                })
            })
        })
    }

    /// An array's items in order; `None` for anything else.
    pub fn items(&self) -> Option<impl Iterator<Item = Node<'t, 'a>>> {
        let t = self.token();
        (t.kind == Kind::Array).then(|| {
            let tape = self.tape;
            let mut at = self.at + 1;
            std::iter::from_fn(move || {
                (at < t.next).then(|| {
                    let item = Node { tape, at };
                    at = item.token().next;
                    item
                })
            })
        })
    }
}

/// Undoes the escapes of a checked string's contents `raw` into `out`, or (without `out`) only
/// checks that every `\u` surrogate is half of a pair, as serde_json's `Value` parser does.
fn unescape_into(raw: &str, mut out: Option<&mut String>) -> Result<(), TapeError> {
    let bytes = raw.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while let Some(found) = memchr::memchr(b'\\', &bytes[i..]) {
        let at = i + found;
        if let Some(out) = out.as_deref_mut() {
            out.push_str(&raw[run..at]);
        }
        let c = match bytes[at + 1] {
            b'u' => {
                let unit = hex4(&bytes[at + 2..at + 6]);
                i = at + 6;
                match unit {
                    0xD800..=0xDBFF => {
                        if bytes.get(i..i + 2) != Some(b"\\u") {
                            return Err(TapeError::LoneSurrogate);
                        }
                        let low = hex4(&bytes[i + 2..i + 6]);
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(TapeError::LoneSurrogate);
                        }
                        i += 6;
                        let code = 0x1_0000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).expect("a surrogate pair is a scalar value")
                    }
                    0xDC00..=0xDFFF => return Err(TapeError::LoneSurrogate),
                    _ => char::from_u32(unit).expect("outside the surrogates"),
                }
            }
            escaped => {
                i = at + 2;
                match escaped {
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    // `"`, `\` and `/` stand for themselves.
                    other => char::from(other),
                }
            }
        };
        if let Some(out) = out.as_deref_mut() {
            out.push(c);
        }
        run = i;
    }
    if let Some(out) = out {
        out.push_str(&raw[run..]);
    }
    Ok(())
}

/// Four checked hex digits.
fn hex4(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |acc, &d| {
        acc * 16 + char::from(d).to_digit(16).expect("checked hex digit")
    })
}
