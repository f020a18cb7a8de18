//! `[middlewares.NAME]`: declared once, attached to routes by name
//! (`middlewares = ["auth", "gzip"]`), applied in the route's order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use toml::Spanned;

use super::file::*;
use super::validate::{resolve, Checker};
use crate::rules::Pattern;

/// One declared middleware.
#[derive(Debug, Clone, PartialEq)]
pub enum MiddlewareConfig {
    Headers(HeadersConfig),
    BasicAuth(BasicAuthConfig),
    IpAllow(IpAllowConfig),
    RateLimit(RateLimitConfig),
    Compress(CompressConfig),
    /// The first of these prefixes the path starts with is removed.
    StripPrefix(Vec<String>),
    AddPrefix(String),
    RedirectRegex(RedirectRegexConfig),
}

impl MiddlewareConfig {
    /// The key that declared it (`headers`, `basic_auth`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            MiddlewareConfig::Headers(_) => "headers",
            MiddlewareConfig::BasicAuth(_) => "basic_auth",
            MiddlewareConfig::IpAllow(_) => "ip_allow",
            MiddlewareConfig::RateLimit(_) => "rate_limit",
            MiddlewareConfig::Compress(_) => "compress",
            MiddlewareConfig::StripPrefix(_) => "strip_prefix",
            MiddlewareConfig::AddPrefix(_) => "add_prefix",
            MiddlewareConfig::RedirectRegex(_) => "redirect_regex",
        }
    }
}

/// `headers`: fields set or removed on the request and the response, and
/// the usual security fields (folded into `response_set`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeadersConfig {
    pub request_set: Vec<(HeaderName, HeaderValue)>,
    pub request_remove: Vec<HeaderName>,
    pub response_set: Vec<(HeaderName, HeaderValue)>,
    pub response_remove: Vec<HeaderName>,
    /// `Strict-Transport-Security`, sent on HTTPS answers (and on plain
    /// HTTP too with `force_hsts`).
    pub hsts: Option<HeaderValue>,
    pub force_hsts: bool,
}

/// `basic_auth`: users from an htpasswd file and/or inline `user:hash` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuthConfig {
    pub users_file: Option<PathBuf>,
    pub users: Vec<String>,
    pub realm: String,
    /// Remove `Authorization` before the request goes to the backend.
    pub remove_header: bool,
    /// Pass the authenticated user's name to the backend in this field.
    pub header_field: Option<HeaderName>,
}

/// `ip_allow`: only clients in these networks.
#[derive(Debug, Clone, PartialEq)]
pub struct IpAllowConfig {
    pub cidrs: Vec<IpNet>,
    /// 0: the connection's peer decides. N: the X-Forwarded-For entry N
    /// hops from the right (the N proxies in front are trusted).
    pub trusted_proxies: u32,
}

/// `rate_limit`: a token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per `period`, sustained.
    pub average: u32,
    pub period: Duration,
    /// Requests allowed at once (the bucket's size).
    pub burst: u32,
    pub per: RateKey,
    /// As `ip_allow.trusted_proxies`, for `per = "client_ip"`.
    pub trusted_proxies: u32,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    ClientIp,
    Header(HeaderName),
}

/// `compress`: streaming compression of matching responses.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressConfig {
    /// Media types (`text/*`, `application/json`) worth compressing.
    pub types: Vec<String>,
    /// Responses known to be smaller are sent as they are.
    pub min_bytes: u64,
    /// Offered in this order of preference when the client accepts several
    /// equally.
    pub encodings: Vec<Encoding>,
}

/// A content coding switchyard can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Zstd,
    Br,
    Gzip,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    fn parse(s: &str) -> Option<Encoding> {
        match s {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Br),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// The media types compressed when `types` is not given.
pub const DEFAULT_COMPRESS_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
];

/// `redirect_regex`: the request's URL (`scheme://host/path?query`) matching
/// `regex` is redirected to `replacement` (`$1`, `${name}` expanded).
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectRegexConfig {
    pub regex: Pattern,
    pub replacement: String,
    pub permanent: bool,
}

/// Every `[middlewares.NAME]`.
pub(super) fn validate_middlewares(
    c: &mut Checker<'_>,
    file: &BTreeMap<Spanned<String>, Spanned<MiddlewareFile>>,
    base: &Path,
) -> BTreeMap<String, MiddlewareConfig> {
    let mut out = BTreeMap::new();
    for (name, m) in file {
        if !super::valid_name(name.get_ref()) {
            c.err(
                name.span(),
                format!(
                    "bad middleware name {:?}: use letters, digits, '.', '_', '-'",
                    name.get_ref()
                ),
            );
        }
        if let Some(v) = validate_one(c, m, base) {
            out.insert(name.get_ref().clone(), v);
        }
    }
    out
}

/// One middleware: exactly one kind, valid.
fn validate_one(
    c: &mut Checker<'_>,
    m: &Spanned<MiddlewareFile>,
    base: &Path,
) -> Option<MiddlewareConfig> {
    let f = m.get_ref();
    let set = [
        f.headers.is_some(),
        f.basic_auth.is_some(),
        f.ip_allow.is_some(),
        f.rate_limit.is_some(),
        f.compress.is_some(),
        f.strip_prefix.is_some(),
        f.add_prefix.is_some(),
        f.redirect_regex.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        c.err(
            m.span(),
            "a middleware takes exactly one of headers, basic_auth, ip_allow, rate_limit, \
             compress, strip_prefix, add_prefix, redirect_regex",
        );
        return None;
    }
    if let Some(h) = &f.headers {
        return Some(MiddlewareConfig::Headers(headers(c, h)));
    }
    if let Some(a) = &f.basic_auth {
        return basic_auth(c, a, base).map(MiddlewareConfig::BasicAuth);
    }
    if let Some(a) = &f.ip_allow {
        return ip_allow(c, a).map(MiddlewareConfig::IpAllow);
    }
    if let Some(r) = &f.rate_limit {
        return Some(MiddlewareConfig::RateLimit(rate_limit(c, r)));
    }
    if let Some(z) = &f.compress {
        return Some(MiddlewareConfig::Compress(compress(c, z)));
    }
    if let Some(p) = &f.strip_prefix {
        if p.get_ref().is_empty() || p.get_ref().iter().any(|x| !x.starts_with('/')) {
            c.err(
                p.span(),
                "strip_prefix takes a list of paths starting with '/'",
            );
        }
        return Some(MiddlewareConfig::StripPrefix(p.get_ref().clone()));
    }
    if let Some(p) = &f.add_prefix {
        if !p.get_ref().starts_with('/') || p.get_ref().contains(['?', '#', ' ']) {
            c.err(p.span(), "add_prefix must be a path starting with '/'");
        }
        return Some(MiddlewareConfig::AddPrefix(p.get_ref().clone()));
    }
    f.redirect_regex
        .as_ref()
        .and_then(|r| redirect_regex(c, r))
        .map(MiddlewareConfig::RedirectRegex)
}

/// A header name, or a diagnostic at `span`.
fn header_name(
    c: &mut Checker<'_>,
    span: std::ops::Range<usize>,
    name: &str,
) -> Option<HeaderName> {
    match HeaderName::try_from(name) {
        Ok(n) => Some(n),
        Err(_) => {
            c.err(span, format!("{name:?} is not a valid header name"));
            None
        }
    }
}

/// A header value, or a diagnostic at `span`.
fn header_value(
    c: &mut Checker<'_>,
    span: std::ops::Range<usize>,
    what: &str,
    v: &str,
) -> Option<HeaderValue> {
    match HeaderValue::try_from(v) {
        Ok(v) => Some(v),
        Err(_) => {
            c.err(span, format!("{what}: {v:?} is not a valid header value"));
            None
        }
    }
}

/// `request = { set, remove }` / `response = ...`.
fn header_ops(
    c: &mut Checker<'_>,
    ops: &Spanned<HeaderOpsFile>,
) -> (Vec<(HeaderName, HeaderValue)>, Vec<HeaderName>) {
    let span = ops.span();
    let o = ops.get_ref();
    let mut set = Vec::new();
    for (k, v) in &o.set {
        let n = header_name(c, span.clone(), k);
        let v = header_value(c, span.clone(), k, v);
        if let (Some(n), Some(v)) = (n, v) {
            set.push((n, v));
        }
    }
    let remove = o
        .remove
        .iter()
        .filter_map(|k| header_name(c, span.clone(), k))
        .collect();
    (set, remove)
}

fn headers(c: &mut Checker<'_>, h: &Spanned<HeadersFile>) -> HeadersConfig {
    let f = h.get_ref();
    let mut out = HeadersConfig::default();
    if let Some(r) = &f.request {
        (out.request_set, out.request_remove) = header_ops(c, r);
    }
    if let Some(r) = &f.response {
        (out.response_set, out.response_remove) = header_ops(c, r);
    }
    let mut fixed = |name: &'static str, value: Option<&Spanned<String>>| {
        if let Some(v) = value {
            if let Some(v) = header_value(c, v.span(), name, v.get_ref()) {
                out.response_set.push((HeaderName::from_static(name), v));
            }
        }
    };
    fixed("referrer-policy", f.referrer_policy.as_ref());
    fixed(
        "content-security-policy",
        f.content_security_policy.as_ref(),
    );
    fixed("permissions-policy", f.permissions_policy.as_ref());
    fixed("x-frame-options", f.custom_frame_options.as_ref());
    let mut flag = |on: Option<bool>, name: &'static str, value: &'static str| {
        if on == Some(true) && !out.response_set.iter().any(|(n, _)| n == name) {
            out.response_set.push((
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            ));
        }
    };
    flag(f.frame_deny, "x-frame-options", "DENY");
    flag(f.content_type_nosniff, "x-content-type-options", "nosniff");
    flag(f.browser_xss_filter, "x-xss-protection", "1; mode=block");
    out.hsts = f
        .hsts
        .as_ref()
        .and_then(|v| header_value(c, v.span(), "hsts", v.get_ref()));
    out.force_hsts = f.force_hsts.unwrap_or(false);
    out
}

fn basic_auth(
    c: &mut Checker<'_>,
    a: &Spanned<BasicAuthFile>,
    base: &Path,
) -> Option<BasicAuthConfig> {
    let f = a.get_ref();
    if f.users_file.is_none() && f.users.is_none() {
        c.err(
            a.span(),
            "basic_auth needs users_file (an htpasswd file) or users",
        );
        return None;
    }
    let users: Vec<String> = f
        .users
        .as_ref()
        .map(|u| u.get_ref().clone())
        .unwrap_or_default();
    if let Some(u) = &f.users {
        if users.iter().any(|l| !l.contains(':')) {
            c.err(
                u.span(),
                "basic_auth.users are \"user:hash\" lines, as htpasswd writes them",
            );
        }
    }
    let realm = f
        .realm
        .as_ref()
        .map(|r| r.get_ref().clone())
        .unwrap_or_else(|| "switchyard".into());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        let span = f.realm.as_ref().map(|r| r.span()).unwrap_or(a.span());
        c.err(
            span,
            "basic_auth.realm must not contain quotes, backslashes or control characters",
        );
    }
    let header_field = f
        .header_field
        .as_ref()
        .and_then(|h| header_name(c, h.span(), h.get_ref()));
    Some(BasicAuthConfig {
        users_file: f.users_file.as_ref().map(|p| resolve(base, p.get_ref())),
        users,
        realm,
        remove_header: f.remove_header.unwrap_or(false),
        header_field,
    })
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not an address or a CIDR (10.0.0.0/8, 2001:db8::/32)"))
}

fn ip_allow(c: &mut Checker<'_>, a: &Spanned<IpAllowFile>) -> Option<IpAllowConfig> {
    let f = a.get_ref();
    let mut cidrs = Vec::new();
    for s in &f.cidrs {
        match parse_cidr(s.get_ref()) {
            Ok(n) => cidrs.push(n),
            Err(e) => c.err(s.span(), format!("ip_allow.cidrs: {e}")),
        }
    }
    if f.cidrs.is_empty() {
        c.err(a.span(), "ip_allow.cidrs must name at least one network");
    }
    Some(IpAllowConfig {
        cidrs,
        trusted_proxies: c.int(&f.trusted_proxies, "trusted_proxies", 0..33, 0) as u32,
    })
}

fn rate_limit(c: &mut Checker<'_>, r: &Spanned<RateLimitFile>) -> RateLimitConfig {
    let f = r.get_ref();
    let average = c.int(
        &Some(f.average.clone()),
        "rate_limit.average",
        1..1_000_001,
        1,
    ) as u32;
    let per = match f.per.as_ref().map(|p| (p.span(), p.get_ref().as_str())) {
        None | Some((_, "client_ip")) => RateKey::ClientIp,
        Some((span, p)) => match p.strip_prefix("header:") {
            Some(h) => header_name(c, span, h.trim())
                .map(RateKey::Header)
                .unwrap_or(RateKey::ClientIp),
            None => {
                c.err(
                    span,
                    "rate_limit.per must be \"client_ip\" or \"header:NAME\"",
                );
                RateKey::ClientIp
            }
        },
    };
    RateLimitConfig {
        average,
        period: c.duration(&f.period, "rate_limit.period", Duration::from_secs(1)),
        burst: c.int(
            &f.burst,
            "rate_limit.burst",
            1..10_000_001,
            i64::from(average),
        ) as u32,
        per,
        trusted_proxies: c.int(&f.trusted_proxies, "trusted_proxies", 0..33, 0) as u32,
    }
}

fn compress(c: &mut Checker<'_>, z: &Spanned<CompressFile>) -> CompressConfig {
    let f = z.get_ref();
    let types = match &f.types {
        None => DEFAULT_COMPRESS_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(t) => {
            let ok = t.get_ref().iter().all(|m| {
                let m = m.trim();
                m == "*/*"
                    || m.split_once('/')
                        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            });
            if !ok || t.get_ref().is_empty() {
                c.err(
                    t.span(),
                    "compress.types are media types (\"text/*\", \"application/json\")",
                );
            }
            t.get_ref()
                .iter()
                .map(|m| m.trim().to_ascii_lowercase())
                .collect()
        }
    };
    let encodings = match &f.encodings {
        None => vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
        Some(e) => {
            let parsed: Vec<Encoding> = e
                .get_ref()
                .iter()
                .filter_map(|s| Encoding::parse(s))
                .collect();
            if parsed.len() != e.get_ref().len() || parsed.is_empty() {
                c.err(
                    e.span(),
                    "compress.encodings takes \"zstd\", \"br\" and \"gzip\"",
                );
            }
            parsed
        }
    };
    CompressConfig {
        types,
        min_bytes: c.int(&f.min_bytes, "compress.min_bytes", 0..1 << 40, 1024) as u64,
        encodings,
    }
}

fn redirect_regex(
    c: &mut Checker<'_>,
    r: &Spanned<RedirectRegexFile>,
) -> Option<RedirectRegexConfig> {
    let f = r.get_ref();
    match Pattern::new(f.regex.get_ref()) {
        Ok(regex) => Some(RedirectRegexConfig {
            regex,
            replacement: f.replacement.get_ref().clone(),
            permanent: f.permanent.unwrap_or(false),
        }),
        Err(e) => {
            c.err(f.regex.span(), format!("redirect_regex: {e}"));
            None
        }
    }
}
