//! `[[routes]]`: hosts, rules beyond the host, TLS and middlewares; and the
//! check for routes that can never match (shadowed).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::header::HeaderName;
use http::Method;
use toml::Spanned;

use super::file::*;
use super::validate::{resolve, Checker};
use super::{MiddlewareConfig, RouteConfig, TlsMode};
use crate::host::{HostName, HostPattern};
use crate::rules::{PathRule, Pattern, RouteRules, ValueMatch};

/// Largest explicit `priority`.
pub const MAX_PRIORITY: i64 = 1_000_000_000;

/// What a route is checked against.
pub(super) struct RouteContext<'a> {
    /// A pool of this name exists.
    pub(super) has_pool: &'a dyn Fn(&str) -> bool,
    pub(super) middlewares: &'a BTreeMap<String, MiddlewareConfig>,
    /// An `[acme]` section exists.
    pub(super) acme: bool,
    /// `server.https` is set.
    pub(super) https: bool,
    pub(super) base: &'a Path,
}

/// `[[routes]]`: every host (and preview host) routed once per rule, to a
/// pool that exists, with TLS that can be served and middlewares that are
/// declared.
pub(super) fn validate_routes(
    c: &mut Checker<'_>,
    routes: &[Spanned<RouteFile>],
    cx: &RouteContext<'_>,
) -> Vec<RouteConfig> {
    // As many as the file has (a grown Vec kept up to 64 % unused slots of
    // ~360 bytes: 2.3 MB at 10 000 routes).
    let mut out = Vec::with_capacity(routes.len());
    // The rules of every route so far, by host: the same host with the same
    // conditions twice is a mistake. (A map: a list scanned per route made
    // 10 000 routes cost 50 million host comparisons.)
    let mut seen: HashMap<String, Vec<Arc<RouteRules>>> = HashMap::new();
    for r in routes {
        let span = r.span();
        let r = r.get_ref();
        if !(cx.has_pool)(r.pool.get_ref()) {
            c.err(
                r.pool.span(),
                format!(
                    "route names pool {:?}, which is not defined",
                    r.pool.get_ref()
                ),
            );
        }
        let host = match HostPattern::parse(r.host.get_ref()) {
            Ok(h) => h,
            Err(e) => {
                c.err(
                    r.host.span(),
                    format!("route host {:?}: {e}", r.host.get_ref()),
                );
                continue;
            }
        };
        let rules = RouteRules::shared(route_rules(c, r));
        let mut once = |c: &mut Checker<'_>, name: String, at: std::ops::Range<usize>| {
            let same_host = seen.entry(name.clone()).or_default();
            if same_host.iter().any(|other| other.same_conditions(&rules)) {
                let what = if rules.is_empty() {
                    String::new()
                } else {
                    format!(" with the same rule ({})", rules.describe())
                };
                c.err(at, format!("host {name} is routed twice{what}"));
            }
            same_host.push(rules.clone());
        };
        once(c, host.to_string(), r.host.span());
        let tls = route_tls(c, r.tls.as_ref(), &host, cx);
        if tls != TlsMode::None && !cx.https {
            c.err(span.clone(), "a route with tls needs server.https");
        }
        let preview = r.preview.as_ref().and_then(|p| preview_host(c, p));
        if let (Some(p), Some(ps)) = (&preview, &r.preview) {
            once(c, p.to_string(), ps.span());
        }
        let middlewares = route_middlewares(c, r, cx);
        out.push(RouteConfig {
            host,
            pool: r.pool.get_ref().clone(),
            redirect_https: r.redirect_https.unwrap_or(tls != TlsMode::None),
            tls,
            preview,
            rules,
            middlewares,
        });
    }
    out
}

/// Some host (or preview host) is routed twice with the same conditions:
/// what [`validate_routes`] reports, over routes already validated.
pub(super) fn routed_twice(routes: &[RouteConfig]) -> bool {
    let mut seen: HashMap<String, Vec<&RouteRules>> = HashMap::with_capacity(routes.len());
    let hosts = routes.iter().flat_map(|r| {
        let preview = r.preview.as_ref().map(|p| (p.to_string(), &*r.rules));
        std::iter::once((r.host.to_string(), &*r.rules)).chain(preview)
    });
    for (name, rules) in hosts {
        let same_host = seen.entry(name).or_default();
        if same_host.iter().any(|other| other.same_conditions(rules)) {
            return true;
        }
        same_host.push(rules);
    }
    false
}

/// A route's conditions beyond the host.
fn route_rules(c: &mut Checker<'_>, r: &RouteFile) -> RouteRules {
    let mut rules = RouteRules::default();
    let paths = [&r.path, &r.path_prefix, &r.path_regex];
    if paths.iter().filter(|p| p.is_some()).count() > 1 {
        let at = paths
            .iter()
            .find_map(|p| p.as_ref())
            .map_or(0..0, |p| p.span());
        c.err(at, "a route takes one of path, path_prefix and path_regex");
    }
    if let Some(p) = &r.path {
        if starts_with_slash(c, p, "path") {
            rules.path = Some(PathRule::Exact(p.get_ref().as_str().into()));
        }
    } else if let Some(p) = &r.path_prefix {
        if starts_with_slash(c, p, "path_prefix") {
            rules.path = Some(PathRule::Prefix(p.get_ref().as_str().into()));
        }
    } else if let Some(p) = &r.path_regex {
        match Pattern::new(p.get_ref()) {
            Ok(re) => rules.path = Some(PathRule::Regex(re)),
            Err(e) => c.err(p.span(), format!("path_regex: {e}")),
        }
    }
    if let Some(m) = &r.methods {
        for name in m.get_ref() {
            match Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes()) {
                Ok(method) if !rules.methods.contains(&method) => rules.methods.push(method),
                Ok(_) => {}
                Err(_) => c.err(m.span(), format!("methods: {name:?} is not a method")),
            }
        }
        if m.get_ref().is_empty() {
            c.err(m.span(), "methods must name at least one method");
        }
    }
    if let Some(h) = &r.headers {
        for (name, value) in h.get_ref() {
            let n = HeaderName::try_from(name.as_str())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"));
            match (n, ValueMatch::parse(value)) {
                (Ok(n), Ok(v)) => rules.headers.push((n, v)),
                (Err(e), _) | (_, Err(e)) => c.err(h.span(), e),
            }
        }
    }
    if let Some(q) = &r.query {
        for (name, value) in q.get_ref() {
            match ValueMatch::parse(value) {
                Ok(v) if !name.is_empty() => rules.query.push((name.as_str().into(), v)),
                Ok(_) => c.err(q.span(), "query: a parameter name must not be empty"),
                Err(e) => c.err(q.span(), format!("query: {e}")),
            }
        }
    }
    if r.priority.is_some() {
        rules.priority = Some(c.int(&r.priority, "priority", 1..MAX_PRIORITY + 1, 1) as u32);
    }
    rules
}

fn starts_with_slash(c: &mut Checker<'_>, p: &Spanned<String>, key: &str) -> bool {
    if p.get_ref().starts_with('/') {
        true
    } else {
        c.err(p.span(), format!("{key} must start with '/'"));
        false
    }
}

/// A route's `middlewares`: declared, each once.
fn route_middlewares(c: &mut Checker<'_>, r: &RouteFile, cx: &RouteContext<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in r.middlewares.iter().flat_map(|m| m.get_ref()) {
        let name = m.get_ref();
        if !cx.middlewares.contains_key(name) {
            c.err(
                m.span(),
                format!("route names middleware {name:?}, which is not declared in [middlewares]"),
            );
        } else if out.contains(name) {
            c.err(m.span(), format!("middleware {name} is listed twice"));
        } else {
            out.push(name.clone());
        }
    }
    out
}

/// A route's `tls`: `"none"`, `"acme"` (needs `[acme]`, not for wildcards) or
/// `{ cert, key }`.
fn route_tls(
    c: &mut Checker<'_>,
    tls: Option<&Spanned<TlsFile>>,
    host: &HostPattern,
    cx: &RouteContext<'_>,
) -> TlsMode {
    match tls.map(|t| (t.span(), t.get_ref())) {
        None => TlsMode::None,
        Some((_, TlsFile::Word(w))) if w == "none" => TlsMode::None,
        Some((span, TlsFile::Word(w))) if w == "acme" => {
            if !cx.acme {
                c.err(span.clone(), "tls = \"acme\" needs an [acme] section");
            }
            if host.is_wildcard() {
                c.err(span, "a wildcard host needs a DNS-01 challenge, which switchyard does not do: use tls = { cert, key }");
            }
            TlsMode::Acme
        }
        Some((span, TlsFile::Word(w))) => {
            c.err(
                span,
                format!("tls must be \"acme\", \"none\" or {{ cert = ..., key = ... }}, not {w:?}"),
            );
            TlsMode::None
        }
        Some((_, TlsFile::Files(f))) => TlsMode::Files {
            cert: resolve(cx.base, &f.cert),
            key: resolve(cx.base, &f.key),
        },
    }
}

/// A route's `preview` host: a plain name.
fn preview_host(c: &mut Checker<'_>, p: &Spanned<String>) -> Option<HostName> {
    match HostName::parse(p.get_ref()) {
        Ok(h) => Some(h),
        Err(e) => {
            c.err(p.span(), format!("preview host: {e}"));
            None
        }
    }
}

/// Routes that can never match: on the same host, another route ranks
/// before them and matches every request they would.
pub(super) fn shadowed(routes: &[RouteConfig]) -> Vec<String> {
    // (host, route number, rules) per host name, preview hosts included.
    let mut by_host: BTreeMap<String, Vec<(usize, &RouteConfig)>> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        by_host.entry(r.host.to_string()).or_default().push((i, r));
        if let Some(p) = &r.preview {
            by_host.entry(p.to_string()).or_default().push((i, r));
        }
    }
    let mut out = Vec::new();
    for (host, mut list) in by_host {
        // Highest rank first; equal ranks keep the file's order.
        list.sort_by_key(|r| std::cmp::Reverse(r.1.rules.rank(&host)));
        for (j, (jn, later)) in list.iter().enumerate() {
            if let Some((i, earlier)) = list[..j].iter().find(|(_, e)| e.rules.covers(&later.rules))
            {
                out.push(format!(
                    "route #{} ({}) can never match: route #{} ({}) ranks before it and \
                     matches every request it would (set priority to change the order)",
                    jn + 1,
                    later.label(&host),
                    i + 1,
                    earlier.label(&host),
                ));
            }
        }
    }
    out
}
