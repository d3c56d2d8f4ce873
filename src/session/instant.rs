//! `java.time.Instant` as Selenium reads and prints it: `Instant.toString()` and the `start`
//! coercion of `grid.data.Session` (docs/compatibility.md#the-session-record, the `start` table).
//!
//! Times are nanoseconds since the Unix epoch in an `i128`, which holds Java's whole `Instant`
//! range. Only the proleptic Gregorian calendar in UTC is needed; no time-zone database.

use serde_json::Value;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
const SECONDS_PER_DAY: i128 = 86_400;
/// `Instant.MIN` and `Instant.MAX` in epoch seconds; `Instant.parse` rejects anything outside.
const INSTANT_MIN_SECOND: i128 = -31_557_014_167_219_200;
const INSTANT_MAX_SECOND: i128 = 31_556_889_864_403_199;

/// `Instant.toString()` of a time given as nanoseconds since the Unix epoch (may be negative).
///
/// UTC with `Z`; seconds always printed; the fraction in groups of three digits and left out
/// when zero; years past 9999 get a `+`, years before 0 a `-` (ISO-8601 expanded years).
pub fn format_instant_nanos(nanos: i128) -> String {
    let seconds = nanos.div_euclid(NANOS_PER_SECOND);
    let nano = nanos.rem_euclid(NANOS_PER_SECOND);
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    );
    // Written into one string: this runs for every session added, and three `format!`s (three
    // allocations) cost more than the rest of the date arithmetic.
    let mut out = String::with_capacity(32);
    if year > 9999 {
        out.push('+');
    } else if year < 0 {
        out.push('-');
    }
    push_digits(&mut out, year.unsigned_abs(), 4);
    for (separator, value) in [
        ('-', month),
        ('-', day),
        ('T', hour),
        (':', minute),
        (':', second),
    ] {
        out.push(separator);
        push_digits(&mut out, value.unsigned_abs(), 2);
    }
    push_fraction(&mut out, nano);
    out.push('Z');
    out
}

/// `.ddd`, `.dddddd` or `.ddddddddd`: the shortest group of three that is exact; nothing when
/// `nano` is zero.
fn push_fraction(out: &mut String, nano: i128) {
    let nano = nano.unsigned_abs();
    let (value, width) = match nano {
        0 => return,
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    out.push('.');
    push_digits(out, value, width);
}

/// `value` in decimal, padded with zeros on the left to at least `width` digits.
fn push_digits(out: &mut String, value: u128, width: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{value:0width$}");
}

/// Reads a `start` value as Selenium's `Instant` coercion does, into nanoseconds since the epoch.
///
/// A JSON number is epoch milliseconds (a fraction is dropped toward zero, as Java's
/// `Double.longValue()` does); a string is first tried as `Instant.parse` and then as
/// `Long.parseLong` epoch milliseconds. Anything else is `None`.
pub fn parse_start(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => millis_of_number(n.as_str()).map(|ms| i128::from(ms) * NANOS_PER_MILLI),
        Value::String(s) => parse_iso_instant(s).or_else(|| {
            // `i64::from_str` takes an optional sign and ASCII digits, like `Long.parseLong`.
            let ms: i64 = s.parse().ok()?;
            Some(i128::from(ms) * NANOS_PER_MILLI)
        }),
        _ => None,
    }
}

fn millis_of_number(text: &str) -> Option<i64> {
    if !text.contains(['.', 'e', 'E']) {
        return text.parse().ok();
    }
    let d: f64 = text.parse().ok()?;
    // `as` truncates toward zero and saturates, exactly Java's `(long) double`.
    d.is_finite().then_some(d as i64)
}

/// `Instant.parse` (`DateTimeFormatter.ISO_INSTANT`, Java 17): `yyyy-MM-ddTHH:mm:ss[.f{0,9}]`
/// then `Z` or an offset `±HH:MM[:SS]`. Case-insensitive `T`/`Z`, `24:00:00` is the next midnight
/// and a `23:59:60` leap second reads as `23:59:59`, as in Java.
pub(super) fn parse_iso_instant(s: &str) -> Option<i128> {
    let mut c = Cursor { rest: s.as_bytes() };
    let year = c.year()?;
    let month = c.literal(b'-')?.fixed(2)?;
    let day = c.literal(b'-')?.fixed(2)?;
    let hour = c.literal_ci(b'T')?.fixed(2)?;
    let minute = c.literal(b':')?.fixed(2)?;
    let second = c.literal(b':')?.fixed(2)?;
    let nano = c.fraction()?;
    let offset = c.offset()?;
    if !c.rest.is_empty() || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (hour, second, extra_days) = match (hour, minute, second) {
        (24, 0, 0) if nano == 0 => (0, 0, 1),
        (23, 59, 60) => (23, 59, 0),
        (h, m, s) if h <= 23 && m <= 59 && s <= 59 => (h, s, 0),
        _ => return None,
    };
    let days = days_from_civil(year, month, day) + extra_days;
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset;
    (INSTANT_MIN_SECOND..=INSTANT_MAX_SECOND)
        .contains(&seconds)
        .then_some(seconds * NANOS_PER_SECOND + nano)
}

/// A forward-only reader over ASCII; every step returns `None` on a mismatch.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn literal(&mut self, b: u8) -> Option<&mut Self> {
        let (first, rest) = self.rest.split_first()?;
        (*first == b).then_some(())?;
        self.rest = rest;
        Some(self)
    }

    /// The formatter is case-insensitive, so `t` and `z` are accepted too.
    fn literal_ci(&mut self, b: u8) -> Option<&mut Self> {
        let (first, rest) = self.rest.split_first()?;
        first.eq_ignore_ascii_case(&b).then_some(())?;
        self.rest = rest;
        Some(self)
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Up to `max` leading ASCII digits as a number, with how many there were.
    fn digits(&mut self, max: usize) -> (i128, usize) {
        let count = self
            .rest
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        let value = self.rest[..count]
            .iter()
            .fold(0, |acc, b| acc * 10 + i128::from(b - b'0'));
        self.rest = &self.rest[count..];
        (value, count)
    }

    fn fixed(&mut self, width: usize) -> Option<i128> {
        let (value, count) = self.digits(width);
        (count == width).then_some(value)
    }

    /// Java's strict `EXCEEDS_PAD` year: four digits unsigned, more than four only after `+`,
    /// and a `-` year of at least four digits that is not zero.
    fn year(&mut self) -> Option<i128> {
        let sign = match self.peek() {
            Some(b @ (b'+' | b'-')) => {
                self.rest = &self.rest[1..];
                Some(b)
            }
            _ => None,
        };
        let (value, count) = self.digits(10);
        match sign {
            None if count == 4 => Some(value),
            Some(b'+') if (5..=10).contains(&count) => Some(value),
            Some(b'-') if (4..=10).contains(&count) && value != 0 => Some(-value),
            _ => None,
        }
    }

    /// Nanoseconds of an optional `.` and up to nine digits (zero digits is accepted, as Java's
    /// lenient-width fraction parser does).
    fn fraction(&mut self) -> Option<i128> {
        if self.peek() != Some(b'.') {
            return Some(0);
        }
        self.rest = &self.rest[1..];
        let (value, count) = self.digits(9);
        let scale = 10i128.pow(9 - count as u32);
        Some(value * scale)
    }

    /// Offset seconds east of UTC: `Z` or `±HH:MM[:SS]`.
    fn offset(&mut self) -> Option<i128> {
        let sign = match self.peek()? {
            b'Z' | b'z' => {
                self.rest = &self.rest[1..];
                return Some(0);
            }
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.rest = &self.rest[1..];
        let hours = self.fixed(2)?;
        let minutes = self.literal(b':')?.fixed(2)?;
        let seconds = if self.rest.len() >= 3 && self.rest[0] == b':' {
            self.literal(b':')?.fixed(2)?
        } else {
            0
        };
        (hours <= 23 && minutes <= 59 && seconds <= 59)
            .then_some(sign * (hours * 3600 + minutes * 60 + seconds))
    }
}

fn is_leap(year: i128) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i128, month: i128) -> i128 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}
