//! Middlewares, built from `[middlewares.NAME]` and attached to routes.
//!
//! ```text
//! Config ──Middlewares::build (reads users files; keeps rate buckets whose
//!          config did not change)──> Middlewares (by name, Arc each)
//! RoutingTable::build ──> Route.middlewares: [Arc<Middleware>] in the route's order
//! request path (proxy) ──> request side in order (may answer itself: 401,
//!                          403, 429, 30x), response side in reverse order
//! ```
//!
//! Built when the config is loaded or reloaded, never per table build: a
//! weight change or a health flip keeps the same middlewares (and their
//! buckets and credential caches). What a middleware does to a request is
//! here; the proxy decides when to call it.

pub mod auth;
pub mod compress;
pub mod limit;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use prometheus::IntCounterVec;

use crate::config::{
    CompressConfig, Config, HeadersConfig, IpAllowConfig, MiddlewareConfig, RateKey,
    RedirectRegexConfig,
};
use crate::metrics::Metrics;

/// Every declared middleware, by name.
#[derive(Default)]
pub struct Middlewares {
    by_name: BTreeMap<String, Arc<Middleware>>,
}

/// One middleware, ready for the request path.
pub struct Middleware {
    pub name: Box<str>,
    pub kind: Kind,
    /// What it was built from (to keep state across reloads when unchanged).
    config: MiddlewareConfig,
    /// Requests it answered itself.
    rejected: AtomicU64,
    rejected_metric: IntCounterVec,
}

/// What a middleware does.
pub enum Kind {
    Headers(HeadersConfig),
    BasicAuth(auth::BasicAuth),
    IpAllow(IpAllowConfig),
    RateLimit(limit::RateLimiter),
    Compress(CompressConfig),
    StripPrefix(Vec<String>),
    AddPrefix(String),
    RedirectRegex(RedirectRegexConfig),
}

/// An answer a middleware gives instead of the backend.
pub struct Rejection {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

// === impl Middlewares ===

impl Middlewares {
    /// Builds every middleware of `config`. Users files are read here. A
    /// middleware of `previous` with the same name and config is kept as it
    /// is (rate buckets and credential caches survive a reload) — except
    /// `basic_auth`, which is always built anew so that a changed users
    /// file takes effect. Returns the problems found (files that cannot be
    /// read, lines that cannot be used).
    pub fn build(
        config: &Config,
        previous: Option<&Middlewares>,
        metrics: &Metrics,
    ) -> (Middlewares, Vec<String>) {
        let mut problems = Vec::new();
        let by_name = config
            .middlewares
            .iter()
            .map(|(name, mc)| {
                let kept = previous
                    .and_then(|p| p.by_name.get(name))
                    .filter(|m| m.config == *mc && !matches!(m.kind, Kind::BasicAuth(_)));
                let m = match kept {
                    Some(m) => m.clone(),
                    None => Arc::new(Middleware::build(name, mc, metrics, &mut problems)),
                };
                (name.clone(), m)
            })
            .collect();
        (Middlewares { by_name }, problems)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Middleware>> {
        self.by_name.get(name)
    }
}

impl std::fmt::Debug for Middlewares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

// === impl Middleware ===

impl Middleware {
    fn build(
        name: &str,
        mc: &MiddlewareConfig,
        metrics: &Metrics,
        problems: &mut Vec<String>,
    ) -> Middleware {
        let kind = match mc {
            MiddlewareConfig::Headers(h) => Kind::Headers(h.clone()),
            MiddlewareConfig::BasicAuth(a) => {
                let (auth, p) = auth::BasicAuth::load(a);
                problems.extend(p.into_iter().map(|p| format!("middleware {name}: {p}")));
                Kind::BasicAuth(auth)
            }
            MiddlewareConfig::IpAllow(a) => Kind::IpAllow(a.clone()),
            MiddlewareConfig::RateLimit(r) => Kind::RateLimit(limit::RateLimiter::new(r.clone())),
            MiddlewareConfig::Compress(c) => Kind::Compress(c.clone()),
            MiddlewareConfig::StripPrefix(p) => Kind::StripPrefix(p.clone()),
            MiddlewareConfig::AddPrefix(p) => Kind::AddPrefix(p.clone()),
            MiddlewareConfig::RedirectRegex(r) => Kind::RedirectRegex(r.clone()),
        };
        Middleware {
            name: name.into(),
            kind,
            config: mc.clone(),
            rejected: AtomicU64::new(0),
            rejected_metric: metrics.middleware_rejected.clone(),
        }
    }

    /// `headers`, `basic_auth`, ...
    pub fn kind_name(&self) -> &'static str {
        self.config.kind()
    }

    /// Counts a request this middleware answered itself.
    pub fn count_rejection(&self, status: StatusCode) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_metric
            .with_label_values(&[&self.name, status.as_str()])
            .inc();
    }

    /// Requests it answered itself since it was built.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// What it does, in one line, for `ctl state`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Headers(h) => describe_headers(h),
            Kind::BasicAuth(a) => format!(
                "401 without a valid user: {} ({}){}{}",
                a.source,
                a.challenge.to_str().unwrap_or(""),
                if a.remove_header {
                    "; Authorization removed"
                } else {
                    ""
                },
                a.header_field
                    .as_ref()
                    .map(|h| format!("; user passed in {h}"))
                    .unwrap_or_default()
            ),
            Kind::IpAllow(a) => format!(
                "403 unless the client ({}) is in {}",
                client_source(a.trusted_proxies),
                a.cidrs
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::RateLimit(l) => {
                let c = &l.config;
                format!(
                    "429 past {} per {} (burst {}) per {}; {} key(s) tracked",
                    c.average,
                    humantime::format_duration(c.period),
                    c.burst,
                    match &c.per {
                        RateKey::ClientIp => client_source(c.trusted_proxies),
                        RateKey::Header(h) => format!("header {h}"),
                    },
                    l.tracked()
                )
            }
            Kind::Compress(c) => format!(
                "{} for {} from {} bytes",
                c.encodings
                    .iter()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("/"),
                c.types.join(", "),
                c.min_bytes
            ),
            Kind::StripPrefix(p) => format!("strips {} (X-Forwarded-Prefix set)", p.join(" or ")),
            Kind::AddPrefix(p) => format!("adds {p} before the path"),
            Kind::RedirectRegex(r) => format!(
                "{} when the URL matches {} -> {}",
                if r.permanent { "301/308" } else { "302/307" },
                r.regex.as_str(),
                r.replacement
            ),
        }
    }
}

fn client_source(trusted: u32) -> String {
    match trusted {
        0 => "peer address".into(),
        n => format!("X-Forwarded-For entry {n} from the right"),
    }
}

fn describe_headers(h: &HeadersConfig) -> String {
    let names = |v: &[(HeaderName, HeaderValue)]| {
        v.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = |v: &[HeaderName]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !h.request_set.is_empty() {
        parts.push(format!("request sets {}", names(&h.request_set)));
    }
    if !h.request_remove.is_empty() {
        parts.push(format!("request removes {}", list(&h.request_remove)));
    }
    if !h.response_set.is_empty() {
        parts.push(format!("response sets {}", names(&h.response_set)));
    }
    if !h.response_remove.is_empty() {
        parts.push(format!("response removes {}", list(&h.response_remove)));
    }
    if h.hsts.is_some() {
        parts.push(format!(
            "HSTS{}",
            if h.force_hsts {
                " (also on http)"
            } else {
                " on https"
            }
        ));
    }
    parts.join("; ")
}

// ---------------------------------------------------------------------------
// What the request path calls.

/// The client's address as a middleware sees it: the peer, or with
/// `trusted` proxies in front, the X-Forwarded-For entry `trusted` hops
/// from the right (every X-Forwarded-For field, in order). `None` when the
/// header has fewer entries or the entry is not an address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: u32) -> Option<IpAddr> {
    if trusted == 0 {
        return Some(peer);
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let s = v.to_str().ok()?;
        entries.extend(s.split(',').map(str::trim));
    }
    let i = entries.len().checked_sub(trusted as usize)?;
    parse_forwarded_ip(entries[i])
}

/// An X-Forwarded-For entry: an address, maybe `[v6]`, maybe with a port.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

impl IpAllowConfig {
    /// Whether the client may pass.
    pub fn allows(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let Some(ip) = client_ip(peer, headers, self.trusted_proxies) else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.cidrs.iter().any(|n| n.contains(&ip))
    }
}

impl HeadersConfig {
    /// The request side: fields removed, then set.
    pub fn apply_request(&self, headers: &mut HeaderMap) {
        for n in &self.request_remove {
            headers.remove(n);
        }
        for (n, v) in &self.request_set {
            headers.insert(n.clone(), v.clone());
        }
    }

    /// The response side: fields removed, then set; HSTS on https (or
    /// always with `force_hsts`).
    pub fn apply_response(&self, headers: &mut HeaderMap, https: bool) {
        for n in &self.response_remove {
            headers.remove(n);
        }
        for (n, v) in &self.response_set {
            headers.insert(n.clone(), v.clone());
        }
        if let Some(h) = &self.hsts {
            if https || self.force_hsts {
                headers.insert(http::header::STRICT_TRANSPORT_SECURITY, h.clone());
            }
        }
    }
}

/// `strip_prefix`: the path without the first prefix it starts with (and
/// that prefix), as Traefik does it: a plain string prefix, the rest given
/// a leading `/`.
pub fn strip_prefix<'a>(prefixes: &'a [String], path: &str) -> Option<(String, &'a str)> {
    let p = prefixes.iter().find(|p| path.starts_with(p.as_str()))?;
    let rest = &path[p.len()..];
    let rest = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    Some((rest, p.as_str()))
}

/// `add_prefix`: the prefix before the path.
pub fn add_prefix(prefix: &str, path: &str) -> String {
    let joined = format!("{}{}", prefix.trim_end_matches('/'), path);
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

impl RedirectRegexConfig {
    /// The redirect for a request's URL, if the regex matches it: the
    /// status (301/302, or 308/307 for other methods than GET) and the
    /// location.
    pub fn redirect(&self, method: &Method, url: &str) -> Option<(StatusCode, String)> {
        if !self.regex.is_match(url) {
            return None;
        }
        let location = self
            .regex
            .regex()
            .replace_all(url, self.replacement.as_str())
            .into_owned();
        let status = match (self.permanent, *method == Method::GET) {
            (true, true) => StatusCode::MOVED_PERMANENTLY,
            (true, false) => StatusCode::PERMANENT_REDIRECT,
            (false, true) => StatusCode::FOUND,
            (false, false) => StatusCode::TEMPORARY_REDIRECT,
        };
        Some((status, location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Pattern;

    #[test]
    fn client_ip_from_peer_or_forwarded_for() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(peer, &h, 0), Some(peer));
        assert_eq!(client_ip(peer, &h, 1), None);
        h.append("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        h.append("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(client_ip(peer, &h, 1), "2001:db8::1".parse().ok());
        assert_eq!(client_ip(peer, &h, 2), "2.2.2.2".parse().ok());
        assert_eq!(client_ip(peer, &h, 3), "1.1.1.1".parse().ok());
        assert_eq!(client_ip(peer, &h, 4), None);
    }

    #[test]
    fn ip_allow_checks_cidrs_and_mapped_addresses() {
        let a = IpAllowConfig {
            cidrs: vec![
                "192.168.1.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            trusted_proxies: 0,
        };
        let h = HeaderMap::new();
        assert!(a.allows("192.168.1.7".parse().unwrap(), &h));
        assert!(a.allows("::ffff:192.168.1.7".parse().unwrap(), &h));
        assert!(a.allows("2001:db8:1::5".parse().unwrap(), &h));
        assert!(!a.allows("192.168.2.7".parse().unwrap(), &h));
    }

    #[test]
    fn prefixes_as_traefik_strips_and_adds_them() {
        let p = vec!["/api".to_string(), "/v2".to_string()];
        assert_eq!(
            strip_prefix(&p, "/api/v1/x"),
            Some(("/v1/x".into(), "/api"))
        );
        assert_eq!(strip_prefix(&p, "/api"), Some(("/".into(), "/api")));
        assert_eq!(strip_prefix(&p, "/apix"), Some(("/x".into(), "/api")));
        assert_eq!(strip_prefix(&p, "/other"), None);
        assert_eq!(add_prefix("/app", "/x"), "/app/x");
        assert_eq!(add_prefix("/app/", "/x"), "/app/x");
    }

    #[test]
    fn redirect_regex_expands_groups() {
        let r = RedirectRegexConfig {
            regex: Pattern::new(r"^https?://old\.example\.com/(.*)").unwrap(),
            replacement: "https://example.com/$1".into(),
            permanent: true,
        };
        assert_eq!(
            r.redirect(&Method::GET, "http://old.example.com/a/b?c=1"),
            Some((
                StatusCode::MOVED_PERMANENTLY,
                "https://example.com/a/b?c=1".into()
            ))
        );
        assert_eq!(
            r.redirect(&Method::POST, "http://old.example.com/")
                .map(|r| r.0),
            Some(StatusCode::PERMANENT_REDIRECT)
        );
        assert_eq!(r.redirect(&Method::GET, "http://new.example.com/"), None);
    }
}
