//! The properties the fuzz targets assert, one function per target.
//!
//! Shared, not copied: every `fuzz_targets/*.rs` and `tests/fuzz_seeds.rs`
//! take this file in with `#[path = ".../checks.rs"] mod checks;`, so a seed
//! replayed by `cargo test` on stable meets exactly the checks libFuzzer runs.
//!
//! ```text
//! bytes --check_config--> Config::from_toml_str --Ok--> RoutingTable::build
//! bytes --check_config_reparse (old NUL new)--> ConfigSource::reparse,
//!        held to Config::from_toml_str of the new text
//! bytes --check_config_plain--> config::read_as_toml (the plain reader),
//!        held to toml::from_str
//! bytes --check_host----> HostName / HostPattern::parse, strip_port, normalize
//! bytes --check_admin_cmd (split at the first three NULs)--> AdminCommand::parse
//! bytes --check_h1_response ("HEAD\n" prefix: HEAD, else GET)--> h1::parse_head,
//!        then the body after the head --> Framing::decode
//! bytes --check_request_head--> httparse --> http::Request --> proxy::request::vet,
//!        join_cookies, host::normalize
//! bytes --check_h1_chunked--> Framing::decode (the bytes as a chunked body, and
//!        a valid chunked encoding of the bytes)
//! ```
//!
//! Each check returns normally for any input the library handles correctly
//! (including a refusal); a panic, from the library or from an `assert!`
//! here, is a finding.

// Each fuzz target uses one of these functions; the test uses all of them.
#![allow(dead_code)]

use std::collections::HashMap;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use switchyard::upstream::h1::{self, Chunk, Decoded, ExchangeError, Framing};

use switchyard::admin::AdminCommand;
use switchyard::config::{Config, ConfigSource, MAX_WEIGHT};
use switchyard::host::{self, HostName, HostPattern, MAX_HOST_LEN};
use switchyard::routing::RoutingTable;
use switchyard::upstream::BackendRegistry;

/// A reload read by parts (region, walk, the match of the rest, whole by
/// sections) never panics, and whatever it takes is the full parse's
/// config: the bytes are an old text and a new one, split at the first NUL;
/// an old text that does not parse is not a running config and is skipped.
pub fn check_config_reparse(data: &[u8]) {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(old), Ok(new)) = (
        std::str::from_utf8(&data[..nul]),
        std::str::from_utf8(&data[nul + 1..]),
    ) else {
        return;
    };
    let Ok(running) = Config::from_toml_str(old) else {
        return;
    };
    let source = ConfigSource::index(old.to_owned(), std::path::Path::new(""));
    match source.reparse(&running, new.to_owned()) {
        Ok((config, next)) => {
            let full = Config::from_toml_str(new)
                .unwrap_or_else(|d| panic!("read by parts, refused whole: {d:?}"));
            assert_eq!(config, full, "read by parts differs from the full parse");
            assert_eq!(next.text(), new);
        }
        Err(back) => assert_eq!(back, new, "the text given back is not the new one"),
    }
}

/// The plain reader of config sections never panics, and whatever it
/// reads, toml reads the same: the reader's tree, given to toml's `Table`,
/// equals `toml::from_str`'s.
pub fn check_config_plain(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(plain) = switchyard::config::read_as_toml(text) {
        let full: toml::Table = toml::from_str(text)
            .unwrap_or_else(|e| panic!("read by the plain reader, refused by toml: {e}"));
        assert_eq!(plain, full, "the plain reader differs from toml");
    }
}

/// Config text never panics the parser; a config that parses also builds a
/// routing table, passes the runtime pool check, and routes each of its own
/// hosts to itself. Every refusal has a located, non-empty diagnostic.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::from_toml_str(text) {
        Ok(cfg) => cfg,
        Err(diags) => {
            assert!(!diags.is_empty(), "a refused config must say why");
            let lines = text.matches('\n').count() + 1;
            for d in &diags {
                assert!(
                    d.line >= 1 && d.line <= lines && d.col >= 1,
                    "diagnostic {d} is outside the text ({lines} lines)"
                );
                assert!(
                    !d.message.trim().is_empty(),
                    "diagnostic at {}:{} has no message",
                    d.line,
                    d.col
                );
            }
            return;
        }
    };
    for (name, pool) in &cfg.pools {
        if let Err(e) = Config::check_pool(pool) {
            panic!("pool {name:?} passed the file validation but not Config::check_pool: {e}");
        }
    }
    let table = RoutingTable::build(&cfg, &BackendRegistry::default(), &HashMap::new());
    let previews = cfg.routes.iter().filter(|r| r.preview.is_some()).count();
    assert_eq!(
        table.routes().len(),
        cfg.routes.len() + previews,
        "every route (and preview host) is in the table"
    );
    for r in cfg.routes.iter() {
        if let HostPattern::Exact(h) = &r.host {
            let got = table
                .route(h.as_str())
                .map(|route| (&*route.host, route.preview));
            assert_eq!(
                got,
                Some((h.as_str(), false)),
                "route host {h} does not route to itself"
            );
        }
        if let Some(p) = &r.preview {
            let got = table
                .route(p.as_str())
                .map(|route| (&*route.host, route.preview));
            assert_eq!(
                got,
                Some((p.as_str(), true)),
                "preview host {p} does not route to itself"
            );
        }
    }
}

/// Host parsing never panics; a parsed `HostName` is lowercase ASCII with no
/// port and no trailing dot, re-parses to itself, and `normalize` agrees
/// with `HostName::parse`. A `HostPattern` survives a Display round trip and
/// matches what it claims to.
pub fn check_host(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();

    let stripped = host::strip_port(raw);
    assert!(
        raw.starts_with(stripped),
        "strip_port({raw:?}) = {stripped:?} is not a prefix"
    );
    assert_eq!(
        host::strip_port(stripped),
        stripped,
        "strip_port is not idempotent on {raw:?}"
    );

    let parsed = HostName::parse(raw);
    let mut buf = [0u8; MAX_HOST_LEN + 2];
    let normalized = host::normalize(raw, &mut buf);
    assert_eq!(
        normalized,
        parsed.as_ref().ok().map(HostName::as_str),
        "normalize and HostName::parse disagree on {raw:?}"
    );

    if let Ok(h) = &parsed {
        let s = h.as_str();
        assert!(
            !s.is_empty() && s.len() <= MAX_HOST_LEN + 2,
            "{raw:?} -> {s:?}: bad length"
        );
        assert!(
            s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()),
            "{raw:?} -> {s:?}: not lowercase ASCII"
        );
        assert_eq!(host::strip_port(s), s, "{raw:?} -> {s:?}: still has a port");
        assert!(!s.ends_with('.'), "{raw:?} -> {s:?}: trailing dot");
        assert_eq!(
            HostName::parse(s).as_ref(),
            Ok(h),
            "{raw:?} -> {s:?} does not re-parse to itself"
        );
    }

    if let Ok(p) = HostPattern::parse(raw) {
        let shown = p.to_string();
        assert_eq!(
            HostPattern::parse(&shown).as_ref(),
            Ok(&p),
            "{raw:?} -> {shown:?} does not re-parse to itself"
        );
        match &p {
            HostPattern::Exact(h) => {
                assert_eq!(
                    parsed.as_ref(),
                    Ok(h),
                    "exact pattern {raw:?} differs from HostName::parse"
                );
                assert!(
                    p.matches(h.as_str()),
                    "pattern {shown:?} does not match its own name"
                );
            }
            HostPattern::Wildcard(suffix) => {
                assert!(
                    suffix.starts_with('.'),
                    "wildcard {raw:?} has suffix {suffix:?}"
                );
                assert!(
                    p.matches(&format!("a{suffix}")),
                    "wildcard {shown:?} does not match a{suffix}"
                );
                assert!(
                    !p.matches(&suffix[1..]),
                    "wildcard {shown:?} matches its bare suffix"
                );
            }
        }
    }
}

/// Splits an admin_cmd input: `method NUL path NUL query NUL body`. Missing
/// parts are empty; an empty query is `None`.
pub fn split_admin_input(data: &[u8]) -> (String, String, Option<String>, &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, query, body) = (next(), next(), next(), next());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let query = if query.is_empty() {
        None
    } else {
        Some(text(query))
    };
    (text(method), text(path), query, body)
}

/// `AdminCommand::parse` never panics, is deterministic, refuses only with
/// 400 or 404, and what it accepts is consistent: reads are GETs, weights
/// are within bounds, names come from single path segments.
pub fn check_admin_cmd(data: &[u8]) {
    let (method, path, query, body) = split_admin_input(data);
    let result = AdminCommand::parse(&method, &path, query.as_deref(), body);
    assert_eq!(
        result,
        AdminCommand::parse(&method, &path, query.as_deref(), body),
        "parse is not deterministic"
    );
    let cmd = match result {
        Ok(cmd) => cmd,
        Err(e) => {
            let status = e.status().as_u16();
            assert!(
                status == 400 || status == 404,
                "parse refused {method} {path} with {status}: {e}"
            );
            return;
        }
    };
    assert_eq!(
        cmd.is_change(),
        method != "GET",
        "{method} {path} -> {cmd:?}: is_change disagrees with the method"
    );
    let segment = |s: &str| {
        assert!(
            !s.contains('/'),
            "{method} {path} -> {cmd:?}: name {s:?} spans path segments"
        )
    };
    match &cmd {
        AdminCommand::SetWeights { pool, weights, .. } => {
            segment(pool);
            assert!(
                weights.values().all(|&w| w <= MAX_WEIGHT),
                "{cmd:?}: weight above {MAX_WEIGHT}"
            );
        }
        AdminCommand::PutVersion {
            pool,
            version,
            weight,
            ..
        } => {
            segment(pool);
            segment(version);
            assert!(
                !matches!(weight, Some(w) if *w > MAX_WEIGHT),
                "{cmd:?}: weight above {MAX_WEIGHT}"
            );
        }
        AdminCommand::DeleteVersion { pool, version } => {
            segment(pool);
            segment(version);
        }
        AdminCommand::RolloutStart { pool, request } => {
            segment(pool);
            // The typed request round-trips: nothing unknown slipped in.
            let again: switchyard::model::api::RolloutRequest =
                serde_json::from_value(serde_json::to_value(request).unwrap()).unwrap();
            assert_eq!(
                &again, &**request,
                "{cmd:?}: rollout request does not round-trip"
            );
        }
        AdminCommand::RolloutStatus { pool } | AdminCommand::RolloutAction { pool, .. } => {
            segment(pool)
        }
        // The rest carry no names or weights (and new commands land here).
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// h1: the direct HTTP/1.1 exchange's response-head parser and body decoder.
//
// Both are checked against a reference written here for clarity rather than
// speed (whole input in hand, indexes), and fed in one piece, byte by byte
// and at pseudo-random split points: the result must not depend on how the
// bytes arrived.

/// src/upstream/h1.rs's limits (MAX_HEAD, MAX_HEADERS, MAX_LINE, MAX_TRAILERS,
/// MAX_NAMED): the reference refuses at the same sizes.
const H1_MAX_HEAD: usize = 64 * 1024;
const H1_MAX_HEADERS: usize = 128;
const H1_MAX_LINE: usize = 4096;
const H1_MAX_TRAILERS: usize = 16 * 1024;
const H1_MAX_NAMED: usize = 8;

/// How a body is delimited, as a parsed head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
    Eof,
}

impl BodyFraming {
    fn decoder(self) -> Framing {
        match self {
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Chunk::Size),
            BodyFraming::Eof => Framing::Eof,
        }
    }
}

/// What a response head parse comes to.
#[derive(Debug, PartialEq)]
pub enum HeadOutcome {
    Head {
        /// Bytes taken from the stream: interim 1xx heads and the final head.
        consumed: usize,
        status: u16,
        headers: HeaderMap,
        framing: BodyFraming,
        keep_alive: bool,
    },
    /// No complete final head yet (the stream may go on).
    Incomplete,
    Invalid,
}

/// What decoding a body comes to once the stream has ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyOutcome {
    /// The body, and how many bytes followed its end.
    Complete {
        body: Vec<u8>,
        rest: usize,
    },
    /// The stream ended inside the body.
    Truncated,
    Invalid,
}

/// FNV-1a: a seed for the split points and the generated encodings, so that
/// every check is a function of its input alone.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*, seeded from the input.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// In `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Ways to cut `data` into pieces, as reads from a socket would: one byte
/// at a time when `data` is at most `bytewise` long, and a few pseudo-random
/// cuts (2 to 64 pieces).
fn splits(data: &[u8], bytewise: usize) -> Vec<Vec<&[u8]>> {
    let mut out = Vec::new();
    if data.len() < 2 {
        return out;
    }
    if data.len() <= bytewise {
        out.push(data.chunks(1).collect());
    }
    let mut rng = Rng::new(fnv(data));
    for _ in 0..4 {
        let n = 1 + rng.below(data.len().min(64) - 1);
        let mut cuts: Vec<usize> = (0..n).map(|_| 1 + rng.below(data.len() - 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(&data[at..c]);
            at = c;
        }
        pieces.push(&data[at..]);
        out.push(pieces);
    }
    out
}

/// Feeds `pieces` to `h1::parse_head` the way `RawConn::exchange` does:
/// append a read, parse, until a head, a refusal or the end of the stream.
/// Both forms of the fields (a map; lines for the direct server's writer)
/// must give the same outcome, and the same map.
fn h1_head(pieces: &[&[u8]], method: &Method) -> HeadOutcome {
    let map = h1_head_as(pieces, method, false);
    let lines = h1_head_as(pieces, method, true);
    assert_eq!(map, lines, "the two forms of a head's fields differ");
    map
}

fn h1_head_as(pieces: &[&[u8]], method: &Method, lines: bool) -> HeadOutcome {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed += piece.len();
        match h1::parse_head(&mut buf, method, lines) {
            Ok(Some(h)) => {
                let framing = match h.framing {
                    Framing::Length(n) => BodyFraming::Length(n),
                    Framing::Chunked(Chunk::Size) => BodyFraming::Chunked,
                    Framing::Eof => BodyFraming::Eof,
                    _ => panic!("a new head's body framing is mid-body or done"),
                };
                // A line the map refuses is a refused head, as the map form
                // refuses it.
                let Ok(headers) = h.fields.into_map() else {
                    return HeadOutcome::Invalid;
                };
                return HeadOutcome::Head {
                    consumed: fed - buf.len(),
                    status: h.status.as_u16(),
                    headers,
                    framing,
                    keep_alive: h.keep_alive,
                };
            }
            Ok(None) => {}
            Err(ExchangeError::Invalid(_)) => return HeadOutcome::Invalid,
            Err(e) => panic!("parse_head refused with {e:?}, not as Invalid"),
        }
    }
    HeadOutcome::Incomplete
}

/// Fields about one connection (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The reference: what the final response head in `stream` says, per RFC
/// 9112 (section 6.3 for the body length) and h1's limits.
fn reference_head(stream: &[u8], method: &Method) -> HeadOutcome {
    let mut off = 0;
    loop {
        let rest = &stream[off..];
        let mut slots = [httparse::EMPTY_HEADER; H1_MAX_HEADERS];
        let mut r = httparse::Response::new(&mut slots);
        let len = match r.parse(rest) {
            Ok(httparse::Status::Complete(n)) if n <= H1_MAX_HEAD => n,
            Ok(httparse::Status::Partial) if rest.len() <= H1_MAX_HEAD => {
                return HeadOutcome::Incomplete
            }
            _ => return HeadOutcome::Invalid,
        };
        let code = r.code.unwrap_or(0);
        if !(100..=999).contains(&code) || code == 101 {
            return HeadOutcome::Invalid;
        }
        if code < 200 {
            off += len;
            continue;
        }
        let http11 = r.version == Some(1);
        let fields = &*r.headers;
        let named_is = |h: &httparse::Header<'_>, n: &str| h.name.eq_ignore_ascii_case(n);
        let te = fields.iter().rfind(|h| named_is(h, "transfer-encoding"));
        let has_length = fields.iter().any(|h| named_is(h, "content-length"));
        let mut close = false;
        let mut named: Vec<&[u8]> = Vec::new();
        for h in fields.iter().filter(|h| named_is(h, "connection")) {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
        }
        let no_body = *method == Method::HEAD || code == 204 || code == 304;
        let framing = if no_body {
            BodyFraming::Length(0)
        } else if let Some(te) = te {
            if !http11 {
                return HeadOutcome::Invalid;
            }
            let last = te.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                BodyFraming::Chunked
            } else {
                BodyFraming::Eof
            }
        } else if has_length {
            let mut length = None;
            for h in fields.iter().filter(|h| named_is(h, "content-length")) {
                for part in h.value.split(|&b| b == b',') {
                    let part = trim_ows(part);
                    let n = match std::str::from_utf8(part) {
                        Ok(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                            p.parse::<u64>().ok()
                        }
                        _ => None,
                    };
                    match (n, length) {
                        (Some(n), None) => length = Some(n),
                        (Some(n), Some(l)) if n == l => {}
                        _ => return HeadOutcome::Invalid,
                    }
                }
            }
            match length {
                Some(n) => BodyFraming::Length(n),
                None => return HeadOutcome::Invalid,
            }
        } else {
            BodyFraming::Eof
        };
        let keep_alive =
            http11 && !close && !(te.is_some() && has_length) && framing != BodyFraming::Eof;
        let overflow = named.len() > H1_MAX_NAMED;
        let mut headers = HeaderMap::new();
        for h in fields {
            let dropped = if overflow && named_is(h, "connection") {
                false
            } else {
                HOP_BY_HOP.iter().any(|n| named_is(h, n))
                    || (te.is_some() && named_is(h, "content-length"))
                    || named
                        .iter()
                        .take(H1_MAX_NAMED)
                        .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
            };
            if dropped {
                continue;
            }
            match (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                _ => return HeadOutcome::Invalid,
            }
        }
        return HeadOutcome::Head {
            consumed: off + len,
            status: code,
            headers,
            framing,
            keep_alive,
        };
    }
}

/// Without leading and trailing SP and HTAB (RFC 9110's OWS).
fn trim_ows(b: &[u8]) -> &[u8] {
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !ows(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ows(c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// Runs h1's body decoder over `pieces` the way `RawBody` does (decode,
/// read more at `More`, `at_eof` at the end of the stream), checking that
/// it always makes progress: every call yields bytes, ends, or asks for more
/// and then asks again if nothing came.
fn h1_body(mut framing: Framing, pieces: &[&[u8]]) -> BodyOutcome {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::new();
    let (mut next, mut fed, mut calls) = (0, 0, 0);
    let mut body = Vec::new();
    loop {
        calls += 1;
        assert!(
            calls <= total + pieces.len() + 2,
            "decode was called {calls} times for {total} bytes in {} pieces",
            pieces.len()
        );
        match framing.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "decode returned empty data");
                body.extend_from_slice(&d);
            }
            Ok(Decoded::End) => {
                assert!(
                    matches!(framing.decode(&mut buf), Ok(Decoded::End)),
                    "a finished body decoded further"
                );
                return BodyOutcome::Complete {
                    body,
                    rest: buf.len() + total - fed,
                };
            }
            Ok(Decoded::More) => {
                let before = buf.len();
                assert!(
                    matches!(framing.decode(&mut buf), Ok(Decoded::More)) && buf.len() == before,
                    "decode asked for more, then went on without it"
                );
                match pieces.get(next) {
                    Some(p) => {
                        buf.extend_from_slice(p);
                        fed += p.len();
                        next += 1;
                    }
                    None => {
                        return match framing.at_eof() {
                            Ok(()) => {
                                assert!(buf.is_empty(), "a clean end left bytes unread");
                                BodyOutcome::Complete { body, rest: 0 }
                            }
                            Err(ExchangeError::Io(e))
                                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                            {
                                BodyOutcome::Truncated
                            }
                            Err(e) => panic!("at_eof failed with {e:?}"),
                        }
                    }
                }
            }
            Err(ExchangeError::Invalid(_)) => return BodyOutcome::Invalid,
            Err(e) => panic!("decode refused with {e:?}, not as Invalid"),
        }
    }
}

/// Whether `b` is a control character other than HTAB.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// RFC 9110 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reference chunked decoder (RFC 9112 section 7.1) over a whole
/// stream: chunk-size = 1 to 15 hex digits, then optional blanks, then
/// nothing or `;` and extensions free of control characters; CRLF line
/// ends only; lines up to h1's MAX_LINE; trailer lines `token ":" value`
/// up to MAX_TRAILERS bytes in all.
fn reference_chunked(input: &[u8]) -> BodyOutcome {
    // The line at `at`, without its CRLF, and where the next one starts.
    let line = |at: usize| -> Result<(&[u8], usize), BodyOutcome> {
        let rest = &input[at..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) if p <= H1_MAX_LINE => {
                if p == 0 || rest[p - 1] != b'\r' {
                    Err(BodyOutcome::Invalid)
                } else {
                    Ok((&rest[..p - 1], at + p + 1))
                }
            }
            Some(_) => Err(BodyOutcome::Invalid),
            None if rest.len() > H1_MAX_LINE => Err(BodyOutcome::Invalid),
            None => Err(BodyOutcome::Truncated),
        }
    };
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let (l, next) = match line(at) {
            Ok(x) => x,
            Err(o) => return o,
        };
        at = next;
        let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let after = &l[digits..];
        let ext = &after[after
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()..];
        if digits == 0
            || digits > 15
            || !(ext.is_empty() || ext[0] == b';')
            || ext.iter().any(|&b| is_ctl(b))
        {
            return BodyOutcome::Invalid;
        }
        let Some(size) = std::str::from_utf8(&l[..digits])
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return BodyOutcome::Invalid;
        };
        if size == 0 {
            break;
        }
        // The data, then its CRLF (whose two bytes are judged together).
        if ((input.len() - at) as u64) < size + 2 {
            return BodyOutcome::Truncated;
        }
        let size = size as usize;
        body.extend_from_slice(&input[at..at + size]);
        at += size;
        if &input[at..at + 2] != b"\r\n" {
            return BodyOutcome::Invalid;
        }
        at += 2;
    }
    let mut seen = 0;
    loop {
        let (l, next) = match line(at) {
            Ok(x) => x,
            Err(o) => return o,
        };
        at = next;
        if l.is_empty() {
            return BodyOutcome::Complete {
                body,
                rest: input.len() - at,
            };
        }
        let name = l.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 || l.get(name) != Some(&b':') || l[name + 1..].iter().any(|&b| is_ctl(b)) {
            return BodyOutcome::Invalid;
        }
        seen += l.len() + 2;
        if seen > H1_MAX_TRAILERS {
            return BodyOutcome::Invalid;
        }
    }
}

/// A valid chunked encoding of `payload`, chunk sizes, hex case, leading
/// zeros, blanks, extensions and trailers picked from the payload's hash,
/// and some bytes after it (the next response). Returns the encoding and
/// how many bytes follow the body.
fn encode_chunked(payload: &[u8]) -> (Vec<u8>, usize) {
    let mut rng = Rng::new(fnv(payload) ^ 0x5eed);
    const EXTS: [&[u8]; 6] = [
        b"",
        b";a",
        b";name=value",
        b" ;q=\"quoted; \\\" value\"",
        b"\t; a = 1 ;b",
        b";x=\x80\xff\t!",
    ];
    // One-byte chunks only for short payloads (each costs ~20 bytes).
    let max_chunk = match rng.below(5) {
        0 if payload.len() <= 256 => 1,
        0 | 1 => 7,
        2 => 64,
        3 => 1000,
        _ => usize::MAX,
    };
    let mut out = Vec::with_capacity(payload.len() * 2 + 64);
    let size_line = |out: &mut Vec<u8>, rng: &mut Rng, size: usize| {
        let hex = if rng.below(2) == 0 {
            format!("{size:x}")
        } else {
            format!("{size:X}")
        };
        let zeros = rng.below(16 - hex.len());
        out.extend(std::iter::repeat_n(b'0', zeros));
        out.extend_from_slice(hex.as_bytes());
        out.extend_from_slice(EXTS[rng.below(EXTS.len())]);
        out.extend_from_slice(b"\r\n");
    };
    let mut at = 0;
    while at < payload.len() {
        let size = (1 + rng.below(payload.len() - at)).min(max_chunk);
        size_line(&mut out, &mut rng, size);
        out.extend_from_slice(&payload[at..at + size]);
        out.extend_from_slice(b"\r\n");
        at += size;
    }
    size_line(&mut out, &mut rng, 0);
    for i in 0..rng.below(4) {
        out.extend_from_slice(format!("X-Trailer-{i}:\t v{i} \x7e").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let rest: &[u8] = [&b""[..], b"H", b"HTTP/1.1 200 OK\r\n\r\n"][rng.below(3)];
    out.extend_from_slice(rest);
    (out, rest.len())
}

/// h1's response-head parser agrees with the reference (status, the fields
/// kept, body framing, reuse), however the stream is split into reads; a
/// head never extends past its input; the body after it decodes to what its
/// framing says (Content-Length: exactly that many bytes; chunked: as the
/// reference chunked decoder; close-delimited: everything).
///
/// Input: the bytes a backend sends; a leading `HEAD\n` makes the request
/// a HEAD (else GET).
pub fn check_h1_response(data: &[u8]) {
    let (method, stream) = match data.strip_prefix(b"HEAD\n") {
        Some(rest) => (Method::HEAD, rest),
        None => (Method::GET, data),
    };
    let whole = h1_head(&[stream], &method);
    assert_eq!(
        whole,
        reference_head(stream, &method),
        "h1 and the reference disagree"
    );
    // httparse re-parses from the start at every read: byte by byte is
    // quadratic, so only for short streams.
    for pieces in splits(stream, 512) {
        assert_eq!(
            h1_head(&pieces, &method),
            whole,
            "split into {} reads, the head parses differently",
            pieces.len()
        );
    }
    let HeadOutcome::Head {
        consumed,
        status,
        headers,
        framing,
        keep_alive,
    } = whole
    else {
        return;
    };
    assert!(
        consumed > 0 && consumed <= stream.len() && stream[..consumed].ends_with(b"\n"),
        "a head of {consumed} bytes in a stream of {}",
        stream.len()
    );
    assert!((200..=999).contains(&status), "final status {status}");
    for name in HOP_BY_HOP.iter().filter(|&&n| n != "connection") {
        assert!(!headers.contains_key(*name), "hop-by-hop {name} kept");
    }
    let no_body = method == Method::HEAD || status == 204 || status == 304;
    match framing {
        BodyFraming::Length(n) => {
            if no_body {
                assert_eq!(n, 0, "a response without a body has a length");
            } else {
                for v in headers.get_all(header::CONTENT_LENGTH) {
                    for part in v.as_bytes().split(|&b| b == b',') {
                        let part = std::str::from_utf8(trim_ows(part)).unwrap_or("");
                        assert_eq!(
                            part.parse::<u64>().ok(),
                            Some(n),
                            "Content-Length vs framing"
                        );
                    }
                }
            }
        }
        BodyFraming::Chunked => assert!(
            !headers.contains_key(header::CONTENT_LENGTH),
            "Content-Length kept beside chunked framing"
        ),
        BodyFraming::Eof => assert!(!keep_alive, "a close-delimited body with reuse"),
    }

    let body = &stream[consumed..];
    let expected = match framing {
        BodyFraming::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= body.len() => BodyOutcome::Complete {
                body: body[..n].to_vec(),
                rest: body.len() - n,
            },
            _ => BodyOutcome::Truncated,
        },
        BodyFraming::Chunked => reference_chunked(body),
        BodyFraming::Eof => BodyOutcome::Complete {
            body: body.to_vec(),
            rest: 0,
        },
    };
    assert_eq!(
        h1_body(framing.decoder(), &[body]),
        expected,
        "body framing {framing:?}"
    );
    for pieces in splits(body, 1024) {
        assert_eq!(
            h1_body(framing.decoder(), &pieces),
            expected,
            "body framing {framing:?}, split"
        );
    }
}

/// h1's chunked decoder equals the reference decoder (body, bytes left
/// after it, or truncated, or refused), fed in one piece, byte by byte and
/// at pseudo-random splits, never looping; and a valid chunked encoding of
/// the input (with extensions, trailers, bytes after) decodes back to it.
pub fn check_h1_chunked(data: &[u8]) {
    let chunked = || Framing::Chunked(Chunk::Size);
    let expected = reference_chunked(data);
    assert_eq!(
        h1_body(chunked(), &[data]),
        expected,
        "h1 and the reference disagree"
    );
    for pieces in splits(data, 1024) {
        assert_eq!(
            h1_body(chunked(), &pieces),
            expected,
            "split into {} reads",
            pieces.len()
        );
    }

    let (encoded, rest) = encode_chunked(data);
    let want = BodyOutcome::Complete {
        body: data.to_vec(),
        rest,
    };
    assert_eq!(
        reference_chunked(&encoded),
        want,
        "the reference misreads a valid encoding"
    );
    assert_eq!(
        h1_body(chunked(), &[&encoded]),
        want,
        "h1 misreads a valid encoding"
    );
    for pieces in splits(&encoded, 1024) {
        assert_eq!(
            h1_body(chunked(), &pieces),
            want,
            "valid encoding split into {} reads",
            pieces.len()
        );
    }
}

/// A client's request head, parsed by httparse (hyper's HTTP/1.1 parser)
/// into the `Request` hyper would hand the proxy, then vetted as the proxy
/// does before routing (`proxy::request::vet`, `join_cookies`, the routing
/// key from `host::normalize`). Never panics; an accepted request is not
/// CONNECT, had at most one Host field, and its host is the target's
/// authority when the target has one (else the Host field); `*` only with
/// OPTIONS; after `join_cookies` at most one Cookie field, with every
/// original value in order.
pub fn check_request_head(data: &[u8]) {
    use switchyard::proxy::request::{join_cookies, vet};
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(method.as_bytes()),
        path.parse::<http::Uri>(),
    ) else {
        return;
    };
    let mut b = http::Request::builder().method(method).uri(uri);
    let mut hosts = 0;
    for f in parsed.headers.iter() {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            return;
        };
        hosts += usize::from(n == header::HOST);
        b = b.header(n, v);
    }
    let Ok(mut req) = b.body(()) else {
        return;
    };
    if let Ok(host) = vet(&req) {
        assert!(hosts <= 1, "accepted with {hosts} Host fields");
        assert_ne!(req.method(), Method::CONNECT);
        if req.uri().path() == "*" {
            assert_eq!(req.method(), Method::OPTIONS);
        }
        match req.uri().authority() {
            Some(a) => assert!(host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes())),
            None => assert_eq!(Some(&host), req.headers().get(header::HOST)),
        }
        let text = host.to_str().expect("an accepted host is visible ASCII");
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        let _ = host::normalize(text, &mut buf);
    }
    let before: Vec<Vec<u8>> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    join_cookies(req.headers_mut());
    let after: Vec<&HeaderValue> = req.headers().get_all(header::COOKIE).iter().collect();
    assert_eq!(after.len(), before.len().min(1));
    if let Some(joined) = after.first() {
        assert_eq!(joined.as_bytes(), before.join(&b"; "[..]).as_slice());
    }
}
