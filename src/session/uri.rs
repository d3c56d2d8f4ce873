//! Whether a string is accepted by `new java.net.URI(String)` (RFC 2396 with Java's deviations).
//!
//! Selenium stores the node URI as `URI.toString()`, which for a parsed string is the string
//! itself, so gridraft only has to decide acceptance and can then keep the text verbatim. This
//! follows `java.net.URI.Parser`: relative and empty references are fine, an empty authority is
//! allowed before a path, query or fragment, a registry-based authority is the fallback for
//! anything that is not `[userinfo@]host[:port]`, and visible non-ASCII characters ("other") are
//! allowed wherever an escape is.

use std::net::Ipv6Addr;

/// `true` when Java's `URI` constructor would accept `s`.
pub(super) fn is_java_uri(s: &str) -> bool {
    let (main, fragment) = match s.split_once('#') {
        Some((main, fragment)) => (main, Some(fragment)),
        None => (s, None),
    };
    if let Some(fragment) = fragment {
        if !all_of(fragment, is_uric, true) {
            return false;
        }
    }
    // A scheme is present when a `:` comes before any `/` or `?` (a `#` was split off above).
    let scheme_end = main
        .find([':', '/', '?'])
        .filter(|&i| main.as_bytes()[i] == b':');
    match scheme_end {
        Some(0) => false,
        Some(end) => {
            let ssp = &main[end + 1..];
            is_scheme(&main[..end])
                && if ssp.starts_with('/') {
                    is_hierarchical(ssp, fragment.is_some())
                } else {
                    // Opaque: `mailto:x`. Java insists on a non-empty scheme-specific part.
                    !ssp.is_empty() && all_of(ssp, is_uric, true)
                }
        }
        None => is_hierarchical(main, fragment.is_some()),
    }
}

/// `[//authority]path[?query]`; `has_fragment` matters only for an empty authority.
fn is_hierarchical(h: &str, has_fragment: bool) -> bool {
    let mut rest = h;
    if let Some(after) = h.strip_prefix("//") {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        rest = &after[end..];
        // Java deviates from RFC 2396 by allowing `//` with an empty authority, but only when
        // something follows it.
        if authority.is_empty() && rest.is_empty() && !has_fragment {
            return false;
        }
        if !authority.is_empty() && !is_authority(authority) {
            return false;
        }
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    all_of(path, is_path_char, true) && query.is_none_or(|q| all_of(q, is_uric, true))
}

/// Registry-based names accept every server-based authority except IPv6 literals, so those are
/// the only case that needs the server grammar.
fn is_authority(a: &str) -> bool {
    all_of(a, is_reg_name_char, true) || is_ipv6_server(a)
}

/// `[userinfo@][ipv6]` with an optional `:port`.
fn is_ipv6_server(a: &str) -> bool {
    let (userinfo, host_port) = match a.split_once('@') {
        Some((userinfo, host_port)) => (userinfo, host_port),
        None => ("", a),
    };
    let Some((literal, after)) = host_port.strip_prefix('[').and_then(|h| h.split_once(']')) else {
        return false;
    };
    let port_ok = match after.strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => after.is_empty(),
    };
    all_of(userinfo, is_userinfo_char, true) && is_ipv6_literal(literal) && port_ok
}

/// An IPv6 address with an optional `%scope` (alphanumerics, `_` and `.`).
fn is_ipv6_literal(literal: &str) -> bool {
    let (address, scope) = match literal.split_once('%') {
        Some((address, scope)) => (address, Some(scope)),
        None => (literal, None),
    };
    let scope_ok = scope.is_none_or(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    });
    address.parse::<Ipv6Addr>().is_ok() && scope_ok
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// Every character of `s` is in `class`, or (when `escapes`) is a well-formed `%hh` escape or
/// a visible non-ASCII character. A malformed escape is an error anywhere.
fn all_of(s: &str, class: fn(char) -> bool, escapes: bool) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if class(c) {
            continue;
        }
        let ok = escapes
            && if c == '%' {
                chars.next().is_some_and(|h| h.is_ascii_hexdigit())
                    && chars.next().is_some_and(|h| h.is_ascii_hexdigit())
            } else {
                is_other(c)
            };
        if !ok {
            return false;
        }
    }
    true
}

/// Java's "other": not US-ASCII, not a control character, not a Unicode space separator.
fn is_other(c: char) -> bool {
    c > '\u{80}' && !c.is_control() && !is_space_char(c)
}

/// `Character.isSpaceChar`: the Zs, Zl and Zp categories.
fn is_space_char(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)
}

fn is_uric(c: char) -> bool {
    is_unreserved(c) || ";/?:@&=+$,[]".contains(c)
}

fn is_path_char(c: char) -> bool {
    is_unreserved(c) || ":@&=+$,;/".contains(c)
}

fn is_reg_name_char(c: char) -> bool {
    is_unreserved(c) || "$,;:@&=+".contains(c)
}

fn is_userinfo_char(c: char) -> bool {
    is_unreserved(c) || ";:&=+$,".contains(c)
}
