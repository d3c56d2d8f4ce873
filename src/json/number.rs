//! Java's number text: what Selenium's reader turns a JSON number into, and how `Long.toString`
//! and `Double.toString` then print it (docs/compatibility.md, "The session record").
//!
//! Selenium reads an integer literal as a `Long` and anything with a fraction or exponent as a
//! `Double`, but prints a double with an integral value as an integer. The digits come from
//! Rust's shortest round-trip formatting (with Java's two-digit rule); the layout is Java's.

use serde_json::Number;

use super::JsonError;

/// `Double.toString` switches to scientific notation outside `[1e-3, 1e7)`.
const PLAIN_MIN: f64 = 1e-3;
const PLAIN_MAX: f64 = 1e7;
/// 2^63: the first double above the `i64` range (every double below it and at least -2^63 fits).
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// The number Java would print for the JSON number `n`, or why Java could not hold it.
pub fn normalise_number(n: &Number) -> Result<Number, JsonError> {
    let text = n.as_str();
    let normal = java_number_text(text)?;
    if normal == text {
        return Ok(n.clone());
    }
    // Parsing is the only public way to build a `Number` that keeps exact text under
    // `arbitrary_precision`; `normal` is always valid JSON number syntax.
    serde_json::from_str::<Number>(&normal).map_err(|_| JsonError::NotANumber(normal))
}

/// The Java text of one JSON number literal, as Java prints it (`E` before an exponent).
pub(super) fn java_number_text(text: &str) -> Result<String, JsonError> {
    if !text.contains(['.', 'e', 'E']) {
        return text
            .parse::<i64>()
            .map(|i| i.to_string())
            .map_err(|_| JsonError::IntegerOutOfRange(text.to_owned()));
    }
    let d: f64 = text
        .parse()
        .map_err(|_| JsonError::NotANumber(text.to_owned()))?;
    if !d.is_finite() {
        return Err(JsonError::DoubleOutOfRange(text.to_owned()));
    }
    Ok(match integral_i64(d) {
        Some(i) => i.to_string(),
        None => java_double_to_string(d),
    })
}

/// `d` as an `i64` when it has no fraction and fits; `-0.0` becomes `0`.
fn integral_i64(d: f64) -> Option<i64> {
    if d.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&d) {
        // In range and integral, so the cast is exact.
        Some(d as i64)
    } else {
        None
    }
}

/// Java's `Double.toString(d)`: plain decimal for `1e-3 <= |d| < 1e7`, otherwise computerized
/// scientific notation `d.dddE[-]n`; always at least one digit after the point.
pub fn java_double_to_string(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_owned();
    }
    let sign = if d.is_sign_negative() { "-" } else { "" };
    if d.is_infinite() {
        return format!("{sign}Infinity");
    }
    if d == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, exp) = java_digits(d.abs());
    let magnitude = d.abs();
    let body = if (PLAIN_MIN..PLAIN_MAX).contains(&magnitude) {
        plain_layout(&digits, exp)
    } else {
        scientific_layout(&digits, exp)
    };
    format!("{sign}{body}")
}

/// The significant digits Java prints for a positive finite `d`, and the decimal exponent of the
/// first digit (`d ≈ d1.d2d3... * 10^exp`).
///
/// Java's rule is Rust's shortest round-trip digits with one exception: because at least two
/// digits are printed anyway, a one-digit shortest result is replaced by the two-digit decimal
/// closest to `d` (`Double.MIN_VALUE` is `4.9E-324`, not `5.0E-324`).
fn java_digits(d: f64) -> (String, i32) {
    let shortest = split_scientific(&format!("{d:e}"));
    if shortest.0.len() > 1 {
        return shortest;
    }
    let two = format!("{d:.1e}");
    if two.parse::<f64>() != Ok(d) {
        return shortest;
    }
    let (digits, exp) = split_scientific(&two);
    let trimmed = digits.trim_end_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    (trimmed.to_owned(), exp)
}

/// Digits and exponent of Rust's `{:e}` output, e.g. `1.2345e10` or `1e-7`.
fn split_scientific(formatted: &str) -> (String, i32) {
    let (mantissa, exp) = formatted.split_once('e').unwrap_or((formatted, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// `ddd.ddd` for exponents in `-3..=6`.
fn plain_layout(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("0.{zeros}{digits}");
    }
    let point = exp as usize + 1;
    if digits.len() > point {
        format!("{}.{}", &digits[..point], &digits[point..])
    } else {
        let zeros = "0".repeat(point - digits.len());
        format!("{digits}{zeros}.0")
    }
}

/// `d.dddEn`.
fn scientific_layout(digits: &str, exp: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let rest = if rest.is_empty() { "0" } else { rest };
    format!("{first}.{rest}E{exp}")
}
