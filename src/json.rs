//! Selenium's `Json` writer (`org.openqa.selenium.json.JsonOutput`), byte for byte.
//!
//! The Java Grid stores capabilities in Redis and Postgres as the exact text its writer produces,
//! and gridraft mirrors into those stores, so this module reproduces that text
//! (docs/compatibility.md#seleniums-json-text): the pretty and compact layouts, Java's string
//! escaping and Java's number text.
//!
//! A document is written either from a `serde_json::Value` or straight from its own text, indexed
//! by [`tape::Tape`] (the add path: no tree is built). A `Value`'s numbers are normalised once,
//! when it is parsed ([`normalise_numbers`]); the writers then print each number's stored text
//! (spelling only the exponent Java's way), which is why a `Value` handed to a writer must have
//! been normalised first. From a tape, each number is put in Java's form as it is written. This
//! module owns no I/O and knows nothing about sessions.

mod number;
pub mod tape;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde_json::{Number, Value};

pub use number::{java_double_to_string, normalise_number};
use tape::{Kind, Node};

/// A JSON document that Selenium's reader would reject or could not represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// An integer literal outside the signed 64-bit range (Java reads numbers as `Long`).
    #[error("integer out of the 64-bit range: {0}")]
    IntegerOutOfRange(String),
    /// A non-integer literal that is not a finite `double`.
    #[error("number out of the double range: {0}")]
    DoubleOutOfRange(String),
    /// Text that is not a JSON number at all (only reachable through [`normalise_number`]).
    #[error("not a JSON number: {0}")]
    NotANumber(String),
}

/// Java's line separator in `JsonOutput`; fixed, not the platform's.
const NEWLINE: char = '\n';
/// Java indents two spaces per nesting level.
const INDENT: &str = "  ";

/// Rewrites every number in `value`, at any depth, into the text Java would print for it.
///
/// Doing this once at parse time keeps the writers trivial and makes a stored document print the
/// same way on every member. Object key order is kept.
pub fn normalise_numbers(mut value: Value) -> Result<Value, JsonError> {
    normalise_numbers_in_place(&mut value)?;
    Ok(value)
}

/// [`normalise_numbers`] without moving the document: only the numbers are replaced, so no
/// object is rebuilt (and no key hashed again).
pub fn normalise_numbers_in_place(value: &mut Value) -> Result<(), JsonError> {
    match value {
        Value::Number(n) => *n = normalise_number(n)?,
        Value::Array(items) => {
            for item in items {
                normalise_numbers_in_place(item)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                normalise_numbers_in_place(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A rendering that would pass the byte limit it was given; nothing past the limit was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rendered JSON would be larger than {0} bytes")]
pub struct TooLarge(pub usize);

/// Appends `value` in Java's pretty layout, as if it started at nesting level `indent`.
///
/// The first line is not indented (the caller has already written the `"name": ` or the
/// indentation in front of it); nested lines and the closing bracket are.
pub fn write_pretty(value: &Value, indent: usize, out: &mut String) {
    Writer::unlimited(out)
        .value(value, Some(indent))
        .expect("an unlimited writer never refuses");
}

/// Appends `value` in Java's compact layout: no newlines, but still `": "` after names.
pub fn write_compact(value: &Value, out: &mut String) {
    Writer::unlimited(out)
        .value(value, None)
        .expect("an unlimited writer never refuses");
}

/// `value` in the pretty layout at nesting level 0, as `new Json().toJson(value)` returns it.
pub fn to_pretty_string(value: &Value) -> String {
    let mut out = String::new();
    write_pretty(value, 0, &mut out);
    out
}

/// [`to_pretty_string`], refused as soon as the text would pass `limit` bytes.
///
/// Pretty-printing can multiply a document's size (every nested value is indented once per
/// level, every `/` becomes six bytes), so the limit is checked before each piece is appended:
/// the text never grows past `limit`, whatever the document.
pub fn to_pretty_string_within(value: &Value, limit: usize) -> Result<String, TooLarge> {
    let mut out = String::new();
    Writer {
        out: &mut out,
        limit,
    }
    .value(value, Some(0))?;
    Ok(out)
}

/// Why a document read from its text (a [`tape::Tape`]) could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// A number Java could not hold: found while writing, as [`normalise_numbers`] finds it
    /// when a `Value` is parsed.
    #[error(transparent)]
    Number(#[from] JsonError),
}

/// An object given as its members in order, in the pretty layout at nesting level 0, written
/// from its text with every number in Java's form: what [`normalise_numbers`] then
/// [`to_pretty_string_within`] give for the same object as a `Value`. Refused as soon as the
/// text would pass `limit` bytes, or at the first number Java could not hold.
pub fn members_to_pretty_string_within(
    members: &[(Cow<'_, str>, Node<'_, '_>)],
    limit: usize,
) -> Result<String, RenderError> {
    // Room for the members' text as it came plus a quarter (the indentation and escapes the
    // layout adds to a compact document), so that most documents are written without the
    // string growing; a pretty document takes less than its text.
    let text: usize = members
        .iter()
        .map(|(k, v)| k.len() + v.text().len() + 8)
        .sum();
    let mut out = String::with_capacity(text.saturating_add(text / 4).min(limit));
    Writer {
        out: &mut out,
        limit,
    }
    .container(
        ('{', '}'),
        members.iter().map(|(k, v)| (Some(k.as_ref()), *v)),
        Some(0),
        Writer::node,
    )?;
    Ok(out)
}

/// Appends `s` as a JSON string literal with Java's escaping
/// (docs/compatibility.md#seleniums-json-text).
///
/// `/`, `<` and `&` are escaped because Selenium guards against HTML/script injection; U+2028 is
/// escaped because JavaScript treats it as a line break, but U+2029 is not (Selenium's table
/// simply lacks it), and neither is U+007F.
pub fn write_string(s: &str, out: &mut String) {
    Writer::unlimited(out)
        .string(s)
        .expect("an unlimited writer never refuses");
}

/// The length of `s` as [`write_string`] writes it, quotes included, so a large string can be
/// written into a buffer allocated once.
pub fn escaped_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut len = 2;
    let mut i = 0;
    while i < bytes.len() {
        len += match bytes[i] {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            b'/' | b'<' | b'&' => 6,
            0xE2 if bytes[i..].starts_with("\u{2028}".as_bytes()) => {
                i += 2;
                6
            }
            c if c < b' ' => 6,
            _ => 1,
        };
        i += 1;
    }
    len
}

/// The bytes [`Writer::string`] looks at: every byte below a space, the escaped ASCII
/// characters, and 0xE2 (the first byte of U+2028). Every other byte is copied as it is.
const MAY_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'/' as usize] = true;
    table[b'<' as usize] = true;
    table[b'&' as usize] = true;
    table[0xE2] = true;
    table
};

/// The index of the first byte at or after `from` that [`MAY_ESCAPE`] marks, or `bytes.len()`.
///
/// Eight bytes are tested at a time, as one `u64`, for a byte below a space or equal to one of
/// the others (the classic "has a zero byte" test on the word XORed with each); a word that
/// holds one is looked at byte by byte.
fn next_may_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    // Nonzero exactly when some byte of `w` is zero.
    fn has_zero(w: u64) -> u64 {
        w.wrapping_sub(ONES) & !w & HIGHS
    }
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        // A byte below 0x20: subtracting 0x20 borrows into its high bit, which was clear.
        let below_space = w.wrapping_sub(splat(0x20)) & !w & HIGHS;
        let hit = below_space
            | has_zero(w ^ splat(b'"'))
            | has_zero(w ^ splat(b'\\'))
            | has_zero(w ^ splat(b'/'))
            | has_zero(w ^ splat(b'<'))
            | has_zero(w ^ splat(b'&'))
            | has_zero(w ^ splat(0xE2));
        if hit != 0 {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !MAY_ESCAPE[usize::from(bytes[i])] {
        i += 1;
    }
    i
}

/// Appends to `out`, refusing any piece that would take it past `limit` bytes.
struct Writer<'a> {
    out: &'a mut String,
    limit: usize,
}

impl Writer<'_> {
    fn unlimited(out: &mut String) -> Writer<'_> {
        Writer {
            out,
            limit: usize::MAX,
        }
    }

    fn push_str(&mut self, s: &str) -> Result<(), TooLarge> {
        if self.out.len().saturating_add(s.len()) > self.limit {
            return Err(TooLarge(self.limit));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn push(&mut self, c: char) -> Result<(), TooLarge> {
        self.push_str(c.encode_utf8(&mut [0; 4]))
    }

    /// `level` is `None` for the compact layout.
    fn value(&mut self, value: &Value, level: Option<usize>) -> Result<(), TooLarge> {
        match value {
            Value::Null => self.push_str("null"),
            Value::Bool(b) => self.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => self.container(
                ('[', ']'),
                items.iter().map(|v| (None, v)),
                level,
                Self::value,
            ),
            Value::Object(map) => self.container(
                ('{', '}'),
                map.iter().map(|(k, v)| (Some(k.as_str()), v)),
                level,
                Self::value,
            ),
        }
    }

    /// [`Writer::value`] of a value read from its text: the same layout, numbers put in Java's
    /// form as they are written, and an object's duplicate keys resolved as a `Value` parse
    /// resolves them (the first one's place, the last one's value).
    fn node(&mut self, node: Node<'_, '_>, level: Option<usize>) -> Result<(), RenderError> {
        match node.kind() {
            Kind::Object => {
                let members = without_duplicates(node.members().into_iter().flatten().collect());
                self.container(
                    ('{', '}'),
                    members.iter().map(|(k, v)| (Some(k.as_ref()), *v)),
                    level,
                    Self::node,
                )
            }
            Kind::Array => self.container(
                ('[', ']'),
                node.items().into_iter().flatten().map(|v| (None, v)),
                level,
                Self::node,
            ),
            Kind::String => Ok(self.string(&node.as_str().unwrap_or_default())?),
            Kind::Number => Ok(self.push_str(&number::java_number_text(node.text())?)?),
            Kind::Literal => Ok(self.push_str(node.text())?),
        }
    }

    /// Objects and arrays share one layout; array members simply have no name.
    fn container<'k, V, E: From<TooLarge>>(
        &mut self,
        (open, close): (char, char),
        members: impl Iterator<Item = (Option<&'k str>, V)>,
        level: Option<usize>,
        mut write: impl FnMut(&mut Self, V, Option<usize>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.push(open)?;
        let inner = level.map(|l| l + 1);
        for (i, (name, value)) in members.enumerate() {
            if i > 0 {
                self.push(',')?;
            }
            self.line_break(inner)?;
            if let Some(name) = name {
                self.string(name)?;
                self.push_str(": ")?;
            }
            write(self, value, inner)?;
        }
        // Java breaks the line before the closing bracket even when the container is empty,
        // which is where `"args": [\n    ]` comes from.
        self.line_break(level)?;
        Ok(self.push(close)?)
    }

    /// A newline plus indentation to `level` in the pretty layout; nothing in the compact one.
    fn line_break(&mut self, level: Option<usize>) -> Result<(), TooLarge> {
        if let Some(level) = level {
            self.push(NEWLINE)?;
            for _ in 0..level {
                self.push_str(INDENT)?;
            }
        }
        Ok(())
    }

    /// Prints the stored text: [`normalise_numbers`] has already turned it into Java's form,
    /// except for the exponent, which serde_json's parser always stores as `e+` or `e-` while
    /// Java's `Double.toString` writes `E` or `E-`. A normalised number has no other letter or
    /// `+`.
    fn number(&mut self, n: &Number) -> Result<(), TooLarge> {
        let text = n.as_str();
        match text.split_once('e') {
            Some((mantissa, exponent)) => {
                self.push_str(mantissa)?;
                self.push('E')?;
                self.push_str(exponent.strip_prefix('+').unwrap_or(exponent))
            }
            None => self.push_str(text),
        }
    }

    /// See [`write_string`].
    fn string(&mut self, s: &str) -> Result<(), TooLarge> {
        let bytes = s.as_bytes();
        let mut i = next_may_escape(bytes, 0);
        // Most strings (keys, versions, names) need no escape: checked against the limit once
        // and copied whole.
        if i == bytes.len() {
            if self.out.len().saturating_add(s.len()).saturating_add(2) > self.limit {
                return Err(TooLarge(self.limit));
            }
            self.out.reserve(s.len() + 2);
            self.out.push('"');
            self.out.push_str(s);
            self.out.push('"');
            return Ok(());
        }
        let room = self.limit.saturating_sub(self.out.len());
        self.out.reserve(s.len().saturating_add(2).min(room));
        self.push('"')?;
        // Runs of bytes that need no escape are copied whole. Every byte that may need one is
        // ASCII or 0xE2 (the first byte of U+2028), so each run ends on a character boundary.
        let mut run = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'/' => "\\u002f",
                b'<' => "\\u003c",
                b'&' => "\\u0026",
                0x08 => "\\b",
                0x0c => "\\f",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0xE2 if bytes[i..].starts_with("\u{2028}".as_bytes()) => "\\u2028",
                c if c < b' ' => {
                    self.push_str(&s[run..i])?;
                    self.unicode_escape(char::from(c))?;
                    run = i + 1;
                    i = next_may_escape(bytes, run);
                    continue;
                }
                _ => {
                    i = next_may_escape(bytes, i + 1);
                    continue;
                }
            };
            self.push_str(&s[run..i])?;
            self.push_str(escape)?;
            run = i + if b == 0xE2 { 3 } else { 1 };
            i = next_may_escape(bytes, run);
        }
        self.push_str(&s[run..])?;
        self.push('"')
    }

    /// `\u00xx` with lower-case hex, as Java's `String.format("\\u%04x", ...)` gives.
    fn unicode_escape(&mut self, c: char) -> Result<(), TooLarge> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let code = c as u32;
        let mut text = *b"\\u0000";
        for (i, shift) in [12, 8, 4, 0].into_iter().enumerate() {
            text[2 + i] = HEX[((code >> shift) & 0xf) as usize];
        }
        self.push_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

/// Whether every number of `node` that [`members_to_pretty_string_within`] would write is one
/// Java can hold (a duplicate key's earlier values are not written, so not checked), without
/// writing anything: why a rendering refused for its size may still be an unparsable one.
pub fn check_numbers(node: Node<'_, '_>) -> Result<(), JsonError> {
    match node.kind() {
        Kind::Object => without_duplicates(node.members().into_iter().flatten().collect())
            .into_iter()
            .try_for_each(|(_, value)| check_numbers(value)),
        Kind::Array => node
            .items()
            .into_iter()
            .flatten()
            .try_for_each(check_numbers),
        Kind::Number => number::java_number_text(node.text()).map(drop),
        Kind::String | Kind::Literal => Ok(()),
    }
}

/// An object's members with each key once, where its first occurrence was, holding its last
/// occurrence's value: what serde_json's order-keeping map makes of duplicate keys.
fn without_duplicates<'a, V>(members: Vec<(Cow<'a, str>, V)>) -> Vec<(Cow<'a, str>, V)> {
    let duplicated = if members.len() <= 16 {
        members
            .iter()
            .enumerate()
            .any(|(i, (k, _))| members[..i].iter().any(|(earlier, _)| earlier == k))
    } else {
        let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        keys.windows(2).any(|pair| pair[0] == pair[1])
    };
    if !duplicated {
        return members;
    }
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<(Cow<'a, str>, V)> = Vec::with_capacity(members.len());
    for (key, value) in members {
        match first.get(key.as_ref()) {
            Some(&at) => out[at].1 = value,
            None => {
                first.insert(key.to_string(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}
