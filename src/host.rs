//! Host names as the router sees them.
//!
//! A request's Host (or HTTP/2 `:authority`) arrives in any case, maybe with a
//! port, maybe with a trailing dot. Routes are configured the same loose way.
//! Both sides are normalized here, once, at the edge:
//!
//! ```text
//! "App.Example.com.:8080" -> strip_port -> lowercase -> drop trailing dot -> "app.example.com"
//! ```
//!
//! The request path uses [`normalize`] into a stack buffer (no allocation); the
//! config uses [`HostName::parse`] and [`HostPattern::parse`].

use std::fmt;

/// Longest host name accepted (DNS allows 253 characters).
pub const MAX_HOST_LEN: usize = 253;

/// Why a host name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host name is empty")]
    Empty,
    #[error("host name is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("host name has an invalid character {0:?}")]
    BadChar(char),
    #[error("host name has an empty label")]
    EmptyLabel,
    #[error("a wildcard must be a leading \"*.\" followed by a name")]
    BadWildcard,
    #[error("a bracketed host must be an IPv6 address, as in [::1]")]
    BadIpv6,
}

/// A normalized host name: lowercase, no port, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(Box<str>);

// === impl HostName ===

impl HostName {
    /// Parses and normalizes a host name, with or without a port.
    pub fn parse(raw: &str) -> Result<HostName, HostError> {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        let name = normalize_checked(raw, &mut buf)?;
        Ok(HostName(name.into()))
    }

    /// Whether [`HostName::parse`] would take `raw`, without keeping the
    /// name (a backend's host is checked, then kept as written).
    pub fn check(raw: &str) -> Result<(), HostError> {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        normalize_checked(raw, &mut buf).map(|_| ())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route's host: an exact name or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(HostName),
    /// `*.example.com`, stored as the suffix `.example.com`. It matches any name
    /// with at least one more label (`a.example.com`, `a.b.example.com`), not
    /// `example.com` itself.
    Wildcard(Box<str>),
}

// === impl HostPattern ===

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        if let Some(rest) = raw.strip_prefix("*.") {
            if rest.contains('*') || rest.contains(':') {
                return Err(HostError::BadWildcard);
            }
            let name = HostName::parse(rest)?;
            Ok(HostPattern::Wildcard(format!(".{name}").into()))
        } else if raw.contains('*') {
            Err(HostError::BadWildcard)
        } else {
            Ok(HostPattern::Exact(HostName::parse(raw)?))
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self, HostPattern::Wildcard(_))
    }

    /// Whether a normalized name matches this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.as_str() == name,
            HostPattern::Wildcard(suffix) => name.len() > suffix.len() && name.ends_with(&**suffix),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => h.fmt(f),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Strips a port from `host:port` or `[v6]:port`; leaves a bare IPv6 literal alone.
pub fn strip_port(raw: &str) -> &str {
    if let Some(rest) = raw.strip_prefix('[') {
        // "[::1]:8080" -> "[::1]"
        return match rest.find(']') {
            // Only a ":port" may follow the bracket.
            Some(end) if rest[end + 1..].is_empty() || rest[end + 1..].starts_with(':') => {
                &raw[..end + 2]
            }
            Some(_) => raw,
            None => raw,
        };
    }
    // One colon: host:port. Several colons without brackets: a bare IPv6
    // literal. One pass over the bytes (this runs for every request).
    let mut colon = None;
    for (i, &b) in raw.as_bytes().iter().enumerate() {
        if b == b':' {
            if colon.is_some() {
                return raw;
            }
            colon = Some(i);
        }
    }
    match colon {
        // A byte index of an ASCII ':' is a char boundary.
        Some(i) => raw.get(..i).unwrap_or(raw),
        None => raw,
    }
}

/// Normalizes a raw Host value into `buf` without allocating. Returns `None` when
/// the value is not a plausible host name; such a request cannot match a route.
pub fn normalize<'a>(raw: &str, buf: &'a mut [u8; MAX_HOST_LEN + 2]) -> Option<&'a str> {
    normalize_checked(raw, buf).ok()
}

/// A host name's bytes (letters, digits, `-`, `.`, `_`) to their lower
/// case; 0 for every other byte.
static HOST_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' {
            t[i] = b.to_ascii_lowercase();
        }
        i += 1;
    }
    t
};

fn normalize_checked<'a>(
    raw: &str,
    buf: &'a mut [u8; MAX_HOST_LEN + 2],
) -> Result<&'a str, HostError> {
    let host = strip_port(raw.trim());
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN + 2 {
        return Err(HostError::TooLong);
    }
    let bracketed = host.starts_with('[');
    if bracketed {
        // Brackets hold an IPv6 address and nothing else.
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if inner
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return Err(HostError::BadIpv6);
        }
    }
    // Empty labels (a leading, trailing or doubled dot), noted on the way.
    let mut empty_label = false;
    let mut after_dot = true;
    for (i, b) in host.bytes().enumerate() {
        let lower = match HOST_BYTE[usize::from(b)] {
            0 if bracketed && (b == b':' || b == b'[' || b == b']') => b,
            0 => {
                let c = host[i..].chars().next().unwrap_or('?');
                return Err(HostError::BadChar(c));
            }
            lower => lower,
        };
        let dot = b == b'.';
        empty_label |= dot && after_dot;
        after_dot = dot;
        buf[i] = lower;
    }
    if !bracketed {
        if host.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong);
        }
        if empty_label || after_dot {
            return Err(HostError::EmptyLabel);
        }
    }
    // Only ASCII bytes were copied, so this cannot fail.
    std::str::from_utf8(&buf[..host.len()]).map_err(|_| HostError::BadChar('?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks as first written (a comparison chain per byte, then a
    /// search for empty labels), to hold the table-driven loop to them.
    fn reference(raw: &str) -> Result<String, HostError> {
        let host = strip_port(raw.trim());
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(HostError::Empty);
        }
        if host.len() > MAX_HOST_LEN + 2 {
            return Err(HostError::TooLong);
        }
        let bracketed = host.starts_with('[');
        if bracketed {
            let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            if inner
                .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
                .is_none()
            {
                return Err(HostError::BadIpv6);
            }
        }
        for (i, b) in host.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric()
                || b == b'-'
                || b == b'.'
                || b == b'_'
                || (bracketed && (b == b':' || b == b'[' || b == b']'));
            if !ok {
                return Err(HostError::BadChar(host[i..].chars().next().unwrap_or('?')));
            }
        }
        if !bracketed {
            if host.len() > MAX_HOST_LEN {
                return Err(HostError::TooLong);
            }
            if host.starts_with('.') || host.ends_with('.') || host.contains("..") {
                return Err(HostError::EmptyLabel);
            }
        }
        Ok(host.to_ascii_lowercase())
    }

    #[test]
    fn normalizing_agrees_with_the_reference_checks() {
        let alphabet = [
            "a", "Z", "7", ".", "-", "_", ":", "[", "]", " ", "/", "é", "::1", "8080",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = inputs
                .iter()
                .flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}")))
                .collect();
            inputs.extend(longer);
        }
        inputs.push("a".repeat(MAX_HOST_LEN));
        inputs.push("a".repeat(MAX_HOST_LEN + 1));
        inputs.push(format!("{}.", "a".repeat(MAX_HOST_LEN + 1)));
        inputs.push(format!("[{}]", "1:".repeat(130)));
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        for raw in &inputs {
            let got = normalize_checked(raw, &mut buf).map(str::to_string);
            assert_eq!(got, reference(raw), "{raw:?}");
            assert_eq!(HostName::check(raw).is_ok(), got.is_ok(), "{raw:?}");
        }
    }

    #[test]
    fn normalizes_case_port_and_trailing_dot() {
        assert_eq!(
            HostName::parse("App.Example.COM").unwrap().as_str(),
            "app.example.com"
        );
        assert_eq!(
            HostName::parse("app.test:5002").unwrap().as_str(),
            "app.test"
        );
        assert_eq!(HostName::parse("app.test.").unwrap().as_str(), "app.test");
        assert_eq!(HostName::parse("[::1]:8080").unwrap().as_str(), "[::1]");
        assert_eq!(
            HostName::parse("127.0.0.1:80").unwrap().as_str(),
            "127.0.0.1"
        );
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(HostName::parse(""), Err(HostError::Empty));
        assert_eq!(HostName::parse(":80"), Err(HostError::Empty));
        assert!(matches!(
            HostName::parse("a b"),
            Err(HostError::BadChar(' '))
        ));
        assert!(matches!(
            HostName::parse("a/b"),
            Err(HostError::BadChar('/'))
        ));
        assert_eq!(HostName::parse("a..b"), Err(HostError::EmptyLabel));
        assert_eq!(
            HostName::parse("A.."),
            Err(HostError::EmptyLabel),
            "one trailing dot is stripped, not two"
        );
        for bad in [
            "[a..",
            "[zz]",
            "[::1",
            "[abc:8080",
            "[::1]x",
            "[....",
            "*.[::1]",
        ] {
            assert!(HostName::parse(bad).is_err(), "{bad}");
        }
        assert!(HostPattern::parse("*.[::1]").is_err());
        assert_eq!(
            HostName::parse("[::FFFF:1.2.3.4]:80").unwrap().as_str(),
            "[::ffff:1.2.3.4]"
        );
        assert_eq!(HostName::parse(&"a".repeat(300)), Err(HostError::TooLong));
        assert!(HostName::parse("é.test").is_err());
    }

    #[test]
    fn strip_port_agrees_with_the_two_searches_it_replaced() {
        fn before(raw: &str) -> &str {
            if raw.starts_with('[') {
                return strip_port(raw);
            }
            match raw.rfind(':') {
                Some(i) if raw[..i].find(':').is_none() => &raw[..i],
                _ => raw,
            }
        }
        for raw in [
            "",
            ":",
            "::",
            "a",
            "a:",
            ":1",
            "a:1",
            "a:1:",
            "a::1",
            "::1",
            "1:2:3",
            "é:1",
            "a.b:é",
            "a:b:c:d",
            "host.test:443",
            "[::1]:1",
        ] {
            assert_eq!(strip_port(raw), before(raw), "{raw:?}");
        }
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a:1"), "a");
        assert_eq!(strip_port("a"), "a");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("[::1]:1"), "[::1]");
        assert_eq!(strip_port("[::1"), "[::1");
    }

    #[test]
    fn wildcard_patterns() {
        let p = HostPattern::parse("*.Example.com").unwrap();
        assert!(p.is_wildcard());
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("aexample.com"));
        assert_eq!(p.to_string(), "*.example.com");
        assert_eq!(HostPattern::parse("a.*.com"), Err(HostError::BadWildcard));
        assert_eq!(HostPattern::parse("*.*.com"), Err(HostError::BadWildcard));
        assert!(HostPattern::parse("app.test").unwrap().matches("app.test"));
    }

    #[test]
    fn normalize_uses_no_allocation_and_agrees_with_parse() {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        assert_eq!(normalize("WWW.A.test:443", &mut buf), Some("www.a.test"));
        assert_eq!(normalize("bad host", &mut buf), None);
    }
}
