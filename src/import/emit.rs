//! From the importer's [`Traefik`] view to switchyard TOML.
//!
//! ```text
//! routers ──rule──> alternatives: host + path/methods/headers/query
//!   per host: TLS, redirect;  per (host, conditions): a route with the
//!   services that serve it, its middlewares (chains flattened), its priority
//! routes with the same services ──> one pool
//! pool's services ──flatten──> versions with exact integer weights
//!      weighted(children w_i)       child gets parent * w_i / sum(w)
//!      loadBalancer(equal weights)  one version per compose service (or one in all)
//!      loadBalancer(mixed weights)  one version per server
//! ```
//!
//! Weights keep Traefik's numbers when they can (100 and 0 stay 100 and 0);
//! otherwise the exact ratios are scaled to the smallest whole numbers.
//! Routes of a host that has several get Traefik's priorities (the rule's
//! length unless set), so they are tried in Traefik's order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::model::{
    base_name, middleware_key, provider, AcmeChallenge, Health, MiddlewareSpec, Origin, Router,
    ServiceKind, Traefik,
};
use super::ImportError;
use crate::config::{parse_duration, valid_name, MAX_WEIGHT};
use crate::host::HostPattern;
use crate::providers::rule::{self, RulePath, RuleValue};

const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One host: how it is served (TLS, redirect).
struct HostEntry {
    host: String,
    routers: Vec<String>,
    /// (resolver, router) for each TLS router naming a resolver.
    resolvers: Vec<(String, String)>,
    /// TLS routers without a resolver (Traefik's default or stored certificate).
    tls_without_resolver: Vec<String>,
    /// A plain-HTTP router serves this host without redirecting to HTTPS.
    plain_unredirected: bool,
}

/// A route's conditions beyond its host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conds {
    path: Option<RulePath>,
    methods: Vec<String>,
    headers: Vec<(String, RuleValue)>,
    query: Vec<(String, RuleValue)>,
}

/// One `[[routes]]` entry: a host (index into the hosts) and conditions,
/// and what serves it.
struct RouteEntry {
    host: usize,
    conds: Conds,
    /// Services (base names) whose traffic this route gets.
    members: BTreeSet<String>,
    routers: Vec<String>,
    /// Output middleware names, in order.
    middlewares: Vec<String>,
    /// Traefik's priority: explicit, else the rule's length.
    priority: i64,
    explicit_priority: bool,
    origin: Origin,
}

/// A router's middlewares as its routes get them.
struct Chain {
    names: Vec<String>,
}

/// One version before it is named: a share of the pool, some backends.
#[derive(Debug, Clone)]
struct Leaf {
    name: String,
    weight: Ratio,
    backends: Vec<String>,
}

/// A pool ready to write.
struct Pool {
    name: String,
    /// Indexes into the routes.
    routes: Vec<usize>,
    members: Vec<String>,
    versions: Vec<(String, u64, Vec<String>, String)>,
    health: Option<Health>,
    sticky: Option<String>,
}

impl Pool {
    /// A pool for `members` serving `routes`, named and filled by [`build_pool`].
    fn unnamed(routes: Vec<usize>, members: Vec<String>) -> Pool {
        Pool {
            name: String::new(),
            routes,
            members,
            versions: Vec::new(),
            health: None,
            sticky: None,
        }
    }
}

/// An exact non-negative fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    num: u128,
    den: u128,
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Ratio {
    fn int(n: u128) -> Ratio {
        Ratio { num: n, den: 1 }
    }

    /// self * a / b (b > 0), reduced; `None` on overflow.
    fn scale(self, a: u128, b: u128) -> Option<Ratio> {
        let num = self.num.checked_mul(a)?;
        let den = self.den.checked_mul(b)?;
        let g = gcd(num, den).max(1);
        Some(Ratio {
            num: num / g,
            den: den / g,
        })
    }

    fn add(self, o: Ratio) -> Option<Ratio> {
        let num = self
            .num
            .checked_mul(o.den)?
            .checked_add(o.num.checked_mul(self.den)?)?;
        let den = self.den.checked_mul(o.den)?;
        let g = gcd(num, den).max(1);
        Some(Ratio {
            num: num / g,
            den: den / g,
        })
    }
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        s.to_string()
    } else {
        q(s)
    }
}

/// A pool or version name switchyard accepts.
fn sanitize(raw: &str, fallback: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    let s: String = s.chars().take(64).collect();
    if valid_name(&s) {
        s
    } else {
        fallback.to_string()
    }
}

/// Strips the longest common prefix that ends at a separator (`app-blue`,
/// `app-green` -> `blue`, `green`, prefix `app`), when every name keeps
/// something and the results stay distinct.
fn strip_common_prefix(names: &[String]) -> Option<(String, Vec<String>)> {
    if names.len() < 2 {
        return None;
    }
    let first = &names[0];
    let mut len = first.len();
    for n in &names[1..] {
        len = len.min(
            first
                .bytes()
                .zip(n.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let prefix = &first[..len];
    let cut = prefix.rfind(['-', '_', '.'])? + 1;
    let stripped: Vec<String> = names.iter().map(|n| n[cut..].to_string()).collect();
    let distinct: BTreeSet<&String> = stripped.iter().collect();
    if stripped.iter().any(|s| s.is_empty()) || distinct.len() != stripped.len() {
        return None;
    }
    Some((first[..cut - 1].to_string(), stripped))
}

/// ":443" -> "0.0.0.0:443"; `None` when it is not an IP address and port.
fn listen_addr(raw: &str) -> Option<String> {
    let a = raw.trim();
    let a = a.strip_suffix("/tcp").unwrap_or(a);
    let a = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_string()
    };
    a.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.to_string())
}

struct Builder<'a> {
    t: &'a mut Traefik,
    /// Output names of the middlewares routes use, by `name@provider`.
    mw_names: BTreeMap<String, String>,
}

impl Builder<'_> {
    fn entry_tls(&self, ep: &str) -> bool {
        self.t
            .entrypoints
            .get(ep)
            .is_some_and(|e| e.tls || e.tls_resolver.is_some())
    }

    /// Checks that a service and all it leads to can be carried over: `Ok(None)`
    /// when it can, `Ok(Some(reason))` when it cannot, `Err` when it is broken.
    fn check_service(
        &self,
        name: &str,
        from: &Origin,
        from_key: &str,
        depth: usize,
    ) -> Result<Option<String>, ImportError> {
        if depth > 16 {
            return Err(from.err(
                from_key,
                format!("services reference each other in a loop through {name:?}"),
            ));
        }
        let Some(s) = self.t.services.get(name) else {
            return Err(from.err(
                from_key,
                format!("service {name:?} is not defined in the files given"),
            ));
        };
        match &s.kind {
            ServiceKind::LoadBalancer(_) => Ok(None),
            ServiceKind::Other(kind) => Ok(Some(format!(
                "service {name:?} is a {kind} service, which switchyard does not have"
            ))),
            ServiceKind::Weighted(w) => {
                for c in &w.children {
                    let origin = Origin {
                        file: s.origin.file.clone(),
                        key: c.key.clone(),
                    };
                    if let Some(r) = self.check_service(&c.name, &origin, "", depth + 1)? {
                        return Ok(Some(r));
                    }
                }
                Ok(None)
            }
        }
    }

    /// The weight a service has on its own: the sum of its servers' (or
    /// children's) weights.
    fn natural(&self, name: &str) -> u128 {
        match self.t.services.get(name).map(|s| &s.kind) {
            Some(ServiceKind::LoadBalancer(lb)) => {
                lb.servers.iter().map(|s| u128::from(s.weight)).sum()
            }
            Some(ServiceKind::Weighted(w)) => w.children.iter().map(|c| u128::from(c.weight)).sum(),
            _ => 0,
        }
    }

    fn flatten(
        &self,
        name: &str,
        weight: Ratio,
        out: &mut Vec<Leaf>,
        health: &mut Vec<(String, Health)>,
        sticky: &mut Vec<(String, Option<String>, bool)>,
    ) -> Option<()> {
        match &self.t.services.get(name)?.kind {
            ServiceKind::LoadBalancer(lb) => {
                if let Some(h) = &lb.health {
                    health.push((name.to_string(), h.clone()));
                }
                if let Some(c) = &lb.sticky {
                    sticky.push((name.to_string(), c.clone(), false));
                }
                let total: u128 = lb.servers.iter().map(|s| u128::from(s.weight)).sum();
                let equal = lb.servers.iter().all(|s| s.weight == lb.servers[0].weight);
                if equal {
                    // Servers share equally: one version per group (compose
                    // service), weighted by how many servers it has.
                    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
                    for s in &lb.servers {
                        let g = s.group.clone().unwrap_or_else(|| name.to_string());
                        match groups.iter_mut().find(|(x, _)| *x == g) {
                            Some((_, b)) => b.push(s.addr()),
                            None => groups.push((g, vec![s.addr()])),
                        }
                    }
                    let n = lb.servers.len() as u128;
                    let single = groups.len() == 1;
                    for (g, backends) in groups {
                        let w = if total == 0 {
                            Ratio::int(0)
                        } else {
                            weight.scale(backends.len() as u128, n)?
                        };
                        out.push(Leaf {
                            name: if single { name.to_string() } else { g },
                            weight: w,
                            backends,
                        });
                    }
                } else {
                    for s in &lb.servers {
                        out.push(Leaf {
                            name: s.group.clone().unwrap_or_else(|| s.host.clone()),
                            weight: weight.scale(u128::from(s.weight), total)?,
                            backends: vec![s.addr()],
                        });
                    }
                }
            }
            ServiceKind::Weighted(w) => {
                if let Some(c) = &w.sticky {
                    sticky.push((name.to_string(), c.clone(), true));
                }
                let total: u128 = w.children.iter().map(|c| u128::from(c.weight)).sum();
                for c in &w.children {
                    let cw = if total == 0 {
                        Ratio::int(0)
                    } else {
                        weight.scale(u128::from(c.weight), total)?
                    };
                    self.flatten(&c.name, cw, out, health, sticky)?;
                }
            }
            ServiceKind::Other(_) => return None,
        }
        Some(())
    }
}

/// The provider of a middleware key (`auth@file` -> `file`).
fn key_provider(key: &str) -> String {
    key.rsplit_once('@')
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| "file".into())
}

/// Checks what switchyard's validation will: header names, methods,
/// regexes (Go's syntax read by the regex crate), parameter names.
fn route_conds_ok(alt: &rule::RuleRoute) -> Result<(), String> {
    let regex = |re: &str| crate::rules::Pattern::new(re).map(|_| ());
    match &alt.path {
        Some(RulePath::Regex(re)) => regex(re)?,
        Some(RulePath::Exact(p) | RulePath::Prefix(p)) if p.contains(['?', '#']) => {
            return Err(format!("the path {p:?} has a query or fragment in it"))
        }
        _ => {}
    }
    for m in &alt.methods {
        http::Method::from_bytes(m.as_bytes()).map_err(|_| format!("{m:?} is not a method"))?;
    }
    let values = |pairs: &[(String, RuleValue)]| -> Result<(), String> {
        for (_, v) in pairs {
            if let RuleValue::Regex(re) = v {
                regex(re)?;
            }
        }
        Ok(())
    };
    for (h, _) in &alt.headers {
        http::header::HeaderName::try_from(h.as_str())
            .map_err(|_| format!("{h:?} is not a header name"))?;
    }
    values(&alt.headers)?;
    if alt.query.iter().any(|(k, _)| k.is_empty()) {
        return Err("a query parameter without a name".into());
    }
    values(&alt.query)?;
    Ok(())
}

/// What one router does, from its own settings and its entrypoints'.
struct RouterView {
    serves_tls: bool,
    serves_plain: bool,
    /// The certificate resolver its TLS uses (its own, else an entrypoint's).
    resolver: Option<String>,
    /// Its plain-HTTP side redirects to HTTPS (a middleware or the entrypoint).
    plain_redirected: bool,
    /// A plain router that only redirects: it sends no traffic to its service.
    only_redirects: bool,
}

/// Builds the TOML text; `inputs` are named in its header.
pub(super) fn build(t: &mut Traefik, inputs: &[PathBuf]) -> Result<String, ImportError> {
    let mut b = Builder {
        t,
        mw_names: BTreeMap::new(),
    };
    let all_eps: Vec<String> = b.t.entrypoints.keys().cloned().collect();
    let routers: Vec<(String, Router)> =
        b.t.routers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    // The listeners first: a router on neither of them is not carried over.
    let (tls_eps, plain_eps) = b.entrypoints_by_role(&routers, &all_eps);
    let http_ep = pick_entrypoint(&b, &plain_eps, &["web", "http"], 80, None);
    let https_ep = pick_entrypoint(&b, &tls_eps, &["websecure", "https"], 443, Some(&http_ep));
    let mut found = Found::default();
    for (rname, r) in &routers {
        if b.off_listeners(rname, r, &[&http_ep, &https_ep]) {
            continue;
        }
        b.add_router(rname, r, &all_eps, &mut found)?;
    }
    let Found {
        hosts,
        routes,
        routed,
    } = found;

    let mut pools = b.group_pools(&hosts, &routes, &routed)?;
    let mut used_pool_names = BTreeSet::new();
    for p in &mut pools {
        build_pool(&mut b, p, &hosts, &routes)?;
        let mut name = p.name.clone();
        let mut n = 2;
        while !used_pool_names.insert(name.clone()) {
            name = format!("{}-{n}", p.name);
            n += 1;
        }
        p.name = name;
    }

    let chosen = b.choose_resolver(&hosts);
    let acme = match &chosen {
        Some(name) => acme_section(&mut b, name)?,
        None => None,
    };
    let mut routes_text = String::new();
    let mut any_tls = false;
    // Each host's TLS, decided once (its notes too).
    let mut host_tls: BTreeMap<usize, HostTls> = BTreeMap::new();
    let priorities = b.priorities(&hosts, &routes);
    for p in &pools {
        for &i in &p.routes {
            let route = &routes[i];
            let h = &hosts[route.host];
            let (acme_tls, files) = match host_tls.get(&route.host) {
                Some(x) => x.clone(),
                None => {
                    let files = b.file_cert_for(h);
                    let acme_tls = match files {
                        Some(_) => None,
                        None => b.host_uses_acme(h, acme.is_some(), chosen.as_deref()),
                    };
                    host_tls.insert(route.host, (acme_tls, files.clone()));
                    (acme_tls, files)
                }
            };
            any_tls |= acme_tls.is_some() || files.is_some();
            write_route(
                &mut routes_text,
                h,
                route,
                priorities.get(&i).copied(),
                &p.name,
                acme_tls,
                files.as_ref(),
            );
        }
    }
    let middlewares_text = b.middlewares_text();

    let mut out = String::new();
    if let (true, Some(note)) = (any_tls, &https_ep.moved) {
        b.t.note(note.clone());
    }
    b.write_head(&mut out, inputs, &http_ep, any_tls.then_some(&https_ep));
    if let Some(a) = &acme {
        out.push_str(a);
    }
    out.push_str(&middlewares_text);
    out.push_str(&routes_text);
    for p in &pools {
        write_pool(&mut out, p);
    }
    Ok(out)
}

/// A host's TLS: `tls = "acme"` (and whether plain HTTP stays), or files.
type HostTls = (Option<bool>, Option<(String, String)>);

/// What [`Builder::add_router`] gathers over every router.
#[derive(Default)]
struct Found {
    hosts: Vec<HostEntry>,
    routes: Vec<RouteEntry>,
    /// Services some carried router routes to.
    routed: BTreeSet<String>,
}

/// A header or query value as a route rule writes it: `"~"` for present,
/// `"~REGEX"`, else the exact value (one that starts with `~` as an
/// anchored, escaped regex, so it is not read as one).
fn rule_value(v: &RuleValue) -> String {
    match v {
        RuleValue::Any => "~".into(),
        RuleValue::Exact(e) if e.starts_with('~') => format!("~^{}$", regex::escape(e)),
        RuleValue::Exact(e) => e.clone(),
        RuleValue::Regex(re) => format!("~{re}"),
    }
}

/// A TOML inline value.
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            if t.is_empty() {
                return "{}".into();
            }
            let fields: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        toml::Value::Array(a) => {
            format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// `{ "k" = "v", ... }` of (name, value) pairs.
fn inline_values(pairs: &[(String, RuleValue)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", q(k), q(&rule_value(v))))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

/// One `[[routes]]` entry. `acme_tls` is `None` for a route without TLS,
/// else whether its host is also served over plain HTTP (no redirect).
fn write_route(
    out: &mut String,
    h: &HostEntry,
    route: &RouteEntry,
    priority: Option<(u32, bool)>,
    pool: &str,
    acme_tls: Option<bool>,
    files: Option<&(String, String)>,
) {
    let _ = writeln!(
        out,
        "\n[[routes]]  # router{} {} ({})",
        if route.routers.len() > 1 { "s" } else { "" },
        route.routers.join(", "),
        route.origin.file.display()
    );
    let _ = writeln!(out, "host = {}", q(&h.host));
    let c = &route.conds;
    match &c.path {
        Some(RulePath::Exact(p)) => {
            let _ = writeln!(out, "path = {}", q(p));
        }
        Some(RulePath::Prefix(p)) => {
            let _ = writeln!(out, "path_prefix = {}", q(p));
        }
        Some(RulePath::Regex(p)) => {
            let _ = writeln!(out, "path_regex = {}", q(p));
        }
        None => {}
    }
    if !c.methods.is_empty() {
        let m: Vec<String> = c.methods.iter().map(|m| q(m)).collect();
        let _ = writeln!(out, "methods = [{}]", m.join(", "));
    }
    if !c.headers.is_empty() {
        let _ = writeln!(out, "headers = {}", inline_values(&c.headers));
    }
    if !c.query.is_empty() {
        let _ = writeln!(out, "query = {}", inline_values(&c.query));
    }
    if let Some((p, rescaled)) = priority {
        let why = match (route.explicit_priority, rescaled) {
            (_, true) => format!("Traefik's {} in the same order", route.priority),
            (true, false) => "Traefik's priority".to_string(),
            (false, false) => "Traefik's: the length of the rule".to_string(),
        };
        let _ = writeln!(out, "priority = {p}  # {why}");
    }
    let _ = writeln!(out, "pool = {}", q(pool));
    if !route.middlewares.is_empty() {
        let m: Vec<String> = route.middlewares.iter().map(|m| q(m)).collect();
        let _ = writeln!(out, "middlewares = [{}]", m.join(", "));
    }
    if let Some((cert, key)) = files {
        let _ = writeln!(out, "tls = {{ cert = {}, key = {} }}", q(cert), q(key));
    }
    let redirect_off = match (acme_tls, files) {
        (Some(off), _) => {
            let _ = writeln!(out, "tls = \"acme\"");
            off
        }
        (None, Some(_)) => h.plain_unredirected,
        (None, None) => false,
    };
    if redirect_off {
        let _ = writeln!(
            out,
            "redirect_https = false  # a Traefik router also served it over plain HTTP"
        );
    }
}

impl Builder<'_> {
    /// Reads one router: the hosts its rule matches get its TLS and
    /// redirect, each alternative of its rule a route with its service and
    /// middlewares; what cannot be carried over becomes a note.
    fn add_router(
        &mut self,
        rname: &str,
        r: &Router,
        all_eps: &[String],
        found: &mut Found,
    ) -> Result<(), ImportError> {
        let view = self.router_view(r, all_eps);
        let raw_service = r.service.as_deref();
        let internal = raw_service.and_then(provider) == Some("internal");
        if internal && !view.only_redirects {
            self.t.note(format!(
                "{}: router {rname:?} serves Traefik's own {}; not carried over",
                r.origin.file.display(),
                raw_service.unwrap_or("")
            ));
            return Ok(());
        }
        let Some(alternatives) = self.rule_routes(rname, r)? else {
            return Ok(());
        };
        let service = if view.only_redirects {
            None
        } else {
            let Some(raw) = raw_service else {
                self.t.note(format!(
                    "{}: router {rname:?} names no service; Traefik skips such a router, and so does the import",
                    r.origin
                ));
                return Ok(());
            };
            let s = base_name(raw).to_string();
            if let Some(why) = self.check_service(&s, &r.origin, "service", 0)? {
                self.t.note(format!(
                    "{}: router {rname:?}: {why}; not carried over",
                    r.origin.file.display()
                ));
                return Ok(());
            }
            Some(s)
        };
        let chain = match &service {
            Some(_) => match self.resolve_middlewares(rname, r) {
                Some(c) => Some(c),
                None => return Ok(()),
            },
            None => None,
        };
        if let Some(s) = &service {
            found.routed.insert(s.clone());
        }
        for alt in alternatives {
            let hi = match found.hosts.iter().position(|e| e.host == alt.host.host) {
                Some(i) => i,
                None => {
                    found.hosts.push(HostEntry {
                        host: alt.host.host.clone(),
                        routers: Vec::new(),
                        resolvers: Vec::new(),
                        tls_without_resolver: Vec::new(),
                        plain_unredirected: false,
                    });
                    found.hosts.len() - 1
                }
            };
            let e = &mut found.hosts[hi];
            if !e.routers.iter().any(|x| x == rname) {
                e.routers.push(rname.to_string());
            }
            if view.serves_tls && !view.only_redirects {
                match &view.resolver {
                    Some(res) => e.resolvers.push((res.clone(), rname.to_string())),
                    None => e.tls_without_resolver.push(rname.to_string()),
                }
            }
            if view.serves_plain && !view.plain_redirected {
                e.plain_unredirected = true;
            }
            let (Some(s), Some(chain)) = (&service, &chain) else {
                continue;
            };
            let conds = Conds {
                path: alt.path,
                methods: alt.methods,
                headers: alt.headers,
                query: alt.query,
            };
            self.add_route(found, hi, conds, (s, chain), (rname, r));
        }
        Ok(())
    }

    /// A route for one alternative of a router, or the router joins the
    /// route of another with the same host and conditions.
    fn add_route(
        &mut self,
        found: &mut Found,
        hi: usize,
        conds: Conds,
        (service, chain): (&str, &Chain),
        (rname, r): (&str, &Router),
    ) {
        // Traefik's: the explicit priority, else the rule's length.
        let priority = r.priority.unwrap_or_else(|| {
            i64::try_from(r.rule.as_deref().map_or(0, str::len)).unwrap_or(i64::MAX)
        });
        let existing = found
            .routes
            .iter_mut()
            .find(|x| x.host == hi && x.conds == conds);
        let Some(x) = existing else {
            found.routes.push(RouteEntry {
                host: hi,
                conds,
                members: BTreeSet::from([service.to_string()]),
                routers: vec![rname.to_string()],
                middlewares: chain.names.clone(),
                priority,
                explicit_priority: r.priority.is_some(),
                origin: r.origin.clone(),
            });
            return;
        };
        x.members.insert(service.to_string());
        if !x.routers.iter().any(|n| n == rname) {
            x.routers.push(rname.to_string());
        }
        if x.middlewares != chain.names {
            let theirs = if x.middlewares.is_empty() {
                "none".to_string()
            } else {
                x.middlewares.join(", ")
            };
            self.t.note(format!(
                "host {}: routers {} share a rule but not their middlewares; the route uses {:?}'s ({theirs})",
                found.hosts[hi].host,
                x.routers.join(", "),
                x.routers[0],
            ));
        }
        x.priority = x.priority.max(priority);
        x.explicit_priority |= r.priority.is_some();
    }

    /// Traefik's order for the routes of each host that has several: the
    /// route index -> (priority to write, whether it had to be rescaled to
    /// switchyard's 1..=1000000000, keeping the order).
    fn priorities(
        &mut self,
        hosts: &[HostEntry],
        routes: &[RouteEntry],
    ) -> BTreeMap<usize, (u32, bool)> {
        let mut out = BTreeMap::new();
        for (hi, h) in hosts.iter().enumerate() {
            let mine: Vec<usize> = (0..routes.len())
                .filter(|&i| routes[i].host == hi)
                .collect();
            if mine.len() < 2 {
                continue;
            }
            let max = crate::config::MAX_PRIORITY;
            let fits = mine
                .iter()
                .all(|&i| (1..=max).contains(&routes[i].priority));
            if fits {
                for &i in &mine {
                    out.insert(i, (routes[i].priority as u32, false));
                }
                continue;
            }
            let mut distinct: Vec<i64> = mine.iter().map(|&i| routes[i].priority).collect();
            distinct.sort_unstable();
            distinct.dedup();
            for &i in &mine {
                let rank = distinct.partition_point(|p| *p < routes[i].priority) + 1;
                out.insert(i, (rank as u32, true));
            }
            self.t.note(format!(
                "host {}: Traefik's priorities are outside switchyard's 1 to {max}; the routes keep their order with priorities 1 to {}",
                h.host,
                distinct.len()
            ));
        }
        out
    }

    /// Whether a router's middlewares redirect plain HTTP to HTTPS (a
    /// redirectScheme, maybe in a chain).
    fn redirects_to_https(&self, r: &Router) -> bool {
        let mut stack: Vec<(String, usize)> = r
            .middlewares
            .iter()
            .map(|m| (middleware_key(m, r.provider), 0))
            .collect();
        while let Some((key, depth)) = stack.pop() {
            match self.t.middlewares.get(&key).map(|m| &m.spec) {
                Some(MiddlewareSpec::RedirectHttps) => return true,
                Some(MiddlewareSpec::Chain(list)) if depth < 16 => {
                    let p = key_provider(&key);
                    stack.extend(list.iter().map(|c| (middleware_key(c, &p), depth + 1)));
                }
                _ => {}
            }
        }
        false
    }

    /// A router's middlewares, chains flattened, as output names (declared
    /// by [`Builder::middlewares_text`]); `None`, with a note, when the
    /// router cannot be carried over: a middleware is missing (Traefik would
    /// not serve the router either) or one that restricts who may pass
    /// cannot be carried (served without it, the route would be open).
    fn resolve_middlewares(&mut self, rname: &str, r: &Router) -> Option<Chain> {
        let mut chain = Chain { names: Vec::new() };
        let at = r.origin.file.display().to_string();
        for m in &r.middlewares {
            let key = middleware_key(m, r.provider);
            if let Err(why) = self.walk_middleware(&key, m, 0, &mut chain, rname, &at) {
                self.t.note(format!(
                    "{at}: router {rname:?}: {why}; the router is not carried over"
                ));
                return None;
            }
        }
        Some(chain)
    }

    fn walk_middleware(
        &mut self,
        key: &str,
        shown: &str,
        depth: usize,
        chain: &mut Chain,
        rname: &str,
        at: &str,
    ) -> Result<(), String> {
        if depth > 16 {
            return Err(format!(
                "middleware chains nest too deeply at {shown:?} (a loop?)"
            ));
        }
        let Some(m) = self.t.middlewares.get(key).cloned() else {
            let name = base_name(key);
            let elsewhere: Vec<String> = self
                .t
                .middlewares
                .keys()
                .filter(|k| base_name(k) == name)
                .cloned()
                .collect();
            let hint = if elsewhere.is_empty() {
                String::new()
            } else {
                format!(
                    "; Traefik looks for it in provider {}, the files define {}: name it so",
                    key_provider(key),
                    elsewhere.join(", ")
                )
            };
            return Err(format!(
                "middleware {shown:?} is not defined in the files given (Traefik would not serve the router either){hint}"
            ));
        };
        let used = |b: &mut Self| {
            for d in &m.dropped {
                b.t.note(d.clone());
            }
        };
        match &m.spec {
            MiddlewareSpec::RedirectHttps => used(self),
            MiddlewareSpec::Chain(list) => {
                used(self);
                let p = key_provider(key);
                for c in list {
                    self.walk_middleware(&middleware_key(c, &p), c, depth + 1, chain, rname, at)?;
                }
            }
            MiddlewareSpec::Carried { .. } => {
                used(self);
                let name = self.mw_name(key);
                if chain.names.contains(&name) {
                    self.t.note(format!(
                        "{at}: router {rname:?}: middleware {shown:?} is attached twice (through a chain); switchyard applies it once"
                    ));
                } else {
                    chain.names.push(name);
                }
            }
            MiddlewareSpec::NotCarried {
                reason,
                guard: true,
            } => {
                return Err(format!(
                    "middleware {shown:?} ({}) cannot be carried over: {reason}; without it the route would be open to everyone",
                    m.kind
                ))
            }
            MiddlewareSpec::NotCarried {
                reason,
                guard: false,
            } => {
                used(self);
                self.t.note(format!(
                    "{at}: router {rname:?}: middleware {shown:?} ({}) is not carried over: {reason}",
                    m.kind
                ));
            }
        }
        Ok(())
    }

    /// The output name of a middleware: its Traefik name made valid, with
    /// the provider added when two providers use the same name.
    fn mw_name(&mut self, key: &str) -> String {
        if let Some(n) = self.mw_names.get(key) {
            return n.clone();
        }
        let base = sanitize(base_name(key), "middleware");
        let mut name = base.clone();
        if self.mw_names.values().any(|n| *n == name) {
            name = sanitize(&format!("{base}-{}", key_provider(key)), "middleware");
        }
        let stem = name.clone();
        let mut n = 2;
        while self.mw_names.values().any(|x| *x == name) {
            name = format!("{stem}-{n}");
            n += 1;
        }
        self.mw_names.insert(key.to_string(), name.clone());
        name
    }

    /// `[middlewares.NAME]` for every middleware a route uses.
    fn middlewares_text(&self) -> String {
        let mut out = String::new();
        let mut named: Vec<(&String, &String)> = self.mw_names.iter().collect();
        named.sort_by(|a, b| a.1.cmp(b.1));
        for (traefik_key, name) in named {
            let Some(m) = self.t.middlewares.get(traefik_key) else {
                continue;
            };
            let MiddlewareSpec::Carried { key: kind, value } = &m.spec else {
                continue;
            };
            let _ = writeln!(
                out,
                "\n[middlewares.{}]  # Traefik middleware {traefik_key} ({})",
                key(name),
                m.origin
            );
            let _ = writeln!(out, "{kind} = {}", inline(value));
        }
        out
    }

    /// The router's entrypoints: all of them when it names none.
    fn router_eps(r: &Router, all_eps: &[String]) -> Vec<String> {
        if r.entrypoints.is_empty() {
            all_eps.to_vec()
        } else {
            r.entrypoints.clone()
        }
    }

    /// What a router serves and whether it redirects.
    fn router_view(&mut self, r: &Router, all_eps: &[String]) -> RouterView {
        let eps = Self::router_eps(r, all_eps);
        let serves_tls = r.tls || eps.iter().any(|e| self.entry_tls(e));
        let serves_plain = !r.tls && (eps.is_empty() || eps.iter().any(|e| !self.entry_tls(e)));
        let resolver = r.certresolver.clone().or_else(|| {
            eps.iter()
                .filter_map(|e| self.t.entrypoints.get(e))
                .find_map(|e| e.tls_resolver.clone())
        });
        let redirect = self.redirects_to_https(r);
        let plain_eps: Vec<&String> = eps.iter().filter(|e| !self.entry_tls(e)).collect();
        let plain_redirected = redirect
            || (!plain_eps.is_empty()
                && plain_eps.iter().all(|e| {
                    self.t
                        .entrypoints
                        .get(e.as_str())
                        .is_some_and(|x| x.redirect_to.is_some())
                }));
        RouterView {
            serves_tls,
            serves_plain,
            resolver,
            plain_redirected,
            only_redirects: serves_plain && plain_redirected && !serves_tls,
        }
    }

    /// The alternatives of a router's rule that routes can carry, each a
    /// host and conditions; `None` (with a note) when there is none. An
    /// alternative a route cannot carry is a note.
    fn rule_routes(
        &mut self,
        rname: &str,
        r: &Router,
    ) -> Result<Option<Vec<rule::RuleRoute>>, ImportError> {
        let Some(rule_text) = r.rule.clone() else {
            self.t.note(format!(
                "{}: router {rname:?} has no rule (Traefik's defaultRule would apply); not carried over",
                r.origin
            ));
            return Ok(None);
        };
        let parsed = rule::parse(&rule_text).map_err(|e| {
            r.origin
                .err("rule", format!("cannot parse {rule_text:?}: {e}"))
        })?;
        let file = r.origin.file.display().to_string();
        let found = match rule::routes(&parsed) {
            Ok(f) => f,
            Err(why) => {
                self.t.note(format!("{file}: router {rname:?}: {why}"));
                return Ok(None);
            }
        };
        for why in &found.dropped {
            self.t.note(format!(
                "{file}: router {rname:?}: {why}; this alternative is not carried over"
            ));
        }
        let mut kept = Vec::new();
        for alt in found.routes {
            HostPattern::parse(&alt.host.host).map_err(|e| {
                r.origin.err(
                    "rule",
                    format!("host {:?} in {rule_text:?}: {e}", alt.host.host),
                )
            })?;
            if let Err(why) = route_conds_ok(&alt) {
                self.t.note(format!(
                    "{file}: router {rname:?}: {why}; this alternative is not carried over"
                ));
                continue;
            }
            if let Some(re) = &alt.host.approximated_from {
                self.t.note(format!(
                    "{file}: router {rname:?}: HostRegexp(`{re}`) is carried over as {}",
                    alt.host.host
                ));
            }
            kept.push(alt);
        }
        if kept.is_empty() {
            if found.dropped.is_empty() {
                self.t.note(format!(
                    "{file}: router {rname:?}: nothing of its rule can be carried over"
                ));
            }
            return Ok(None);
        }
        Ok(Some(kept))
    }

    /// Pools before naming: hosts served by the same services share one, and
    /// services no router reaches (and no weighted service includes) get one
    /// without a route.
    fn group_pools(
        &mut self,
        hosts: &[HostEntry],
        routes: &[RouteEntry],
        routed: &BTreeSet<String>,
    ) -> Result<Vec<Pool>, ImportError> {
        let mut pools: Vec<Pool> = Vec::new();
        for (hi, h) in hosts.iter().enumerate() {
            if !routes.iter().any(|r| r.host == hi) {
                self.t.note(format!(
                    "host {}: only redirect routers name it; not carried over",
                    h.host
                ));
            }
        }
        for (i, r) in routes.iter().enumerate() {
            let members: Vec<String> = r.members.iter().cloned().collect();
            match pools.iter_mut().find(|p| p.members == members) {
                Some(p) => p.routes.push(i),
                None => pools.push(Pool::unnamed(vec![i], members)),
            }
        }
        let children: BTreeSet<String> = self
            .t
            .services
            .values()
            .filter_map(|s| match &s.kind {
                ServiceKind::Weighted(w) => Some(w.children.iter().map(|c| c.name.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        let roots: Vec<(String, Origin)> = self
            .t
            .services
            .iter()
            .filter(|(n, _)| !routed.contains(*n) && !children.contains(*n))
            .map(|(n, s)| (n.clone(), s.origin.clone()))
            .collect();
        for (name, origin) in roots {
            if let Some(why) = self.check_service(&name, &origin, "", 0)? {
                self.t.note(format!("{origin}: {why}; not carried over"));
                continue;
            }
            self.t.note(format!(
                "{origin}: no router routes to service {name:?}: its pool has no [[routes]] entry; add one with its host"
            ));
            pools.push(Pool::unnamed(Vec::new(), vec![name]));
        }
        Ok(pools)
    }

    /// The ACME account: the resolver most routes use, else the first defined.
    fn choose_resolver(&self, hosts: &[HostEntry]) -> Option<String> {
        let mut uses: BTreeMap<String, usize> = BTreeMap::new();
        for h in hosts {
            for (r, _) in &h.resolvers {
                *uses.entry(r.clone()).or_default() += 1;
            }
        }
        let defined_uses: Vec<(&String, &usize)> = uses
            .iter()
            .filter(|(r, _)| self.t.resolvers.contains_key(*r))
            .collect();
        defined_uses
            .iter()
            .max_by_key(|(r, n)| (**n, std::cmp::Reverse((*r).clone())))
            .map(|(r, _)| (*r).clone())
            .or_else(|| self.t.resolvers.keys().next().cloned())
    }

    /// The entrypoints routers use, (TLS ones, plain ones), in first-use order.
    /// Each entrypoint has its own role: a TLS router on `web,websecure`
    /// serves HTTPS on websecure, and its plain side is web.
    fn entrypoints_by_role(
        &self,
        routers: &[(String, Router)],
        all_eps: &[String],
    ) -> (Vec<String>, Vec<String>) {
        let mut tls_eps: Vec<String> = Vec::new();
        let mut plain_eps: Vec<String> = Vec::new();
        for (_, r) in routers {
            let eps = Self::router_eps(r, all_eps);
            let tls_router = r.tls || eps.iter().any(|e| self.entry_tls(e));
            let any_https = eps.iter().any(|e| self.looks_https(e));
            for e in eps {
                let to_tls = if tls_router {
                    self.looks_https(&e) || !any_https
                } else {
                    self.entry_tls(&e)
                };
                let list = if to_tls { &mut tls_eps } else { &mut plain_eps };
                if !list.contains(&e) {
                    list.push(e);
                }
            }
        }
        (tls_eps, plain_eps)
    }

    /// An entrypoint for HTTPS: TLS on it, port 443, or named so.
    fn looks_https(&self, name: &str) -> bool {
        self.entry_tls(name)
            || matches!(name.to_ascii_lowercase().as_str(), "websecure" | "https")
            || self.ep_addr(name).is_some_and(|a| a.ends_with(":443"))
    }

    fn ep_addr(&self, name: &str) -> Option<String> {
        self.t
            .entrypoints
            .get(name)
            .and_then(|e| e.address.as_deref())
            .and_then(listen_addr)
    }

    /// A router whose entrypoints are all defined elsewhere than switchyard's
    /// two listeners: it is not carried over (a note says so), so that
    /// routers of one host on other ports are not merged into its pool.
    fn off_listeners(&mut self, rname: &str, r: &Router, listeners: &[&Listener]) -> bool {
        if r.entrypoints.is_empty() {
            return false;
        }
        let on = |e: &String| {
            listeners.iter().any(|l| {
                l.name.as_deref() == Some(e.as_str())
                    || self.ep_addr(e).is_some_and(|a| a == l.addr)
            })
        };
        let known = r.entrypoints.iter().all(|e| self.ep_addr(e).is_some());
        if !known || r.entrypoints.iter().any(on) {
            return false;
        }
        let eps: Vec<String> = r
            .entrypoints
            .iter()
            .map(|e| format!("{e} ({})", self.ep_addr(e).unwrap_or_default()))
            .collect();
        self.t.note(format!(
            "{}: router {rname:?} is on entrypoint(s) {}, not on switchyard's HTTP or HTTPS listener; not carried over (switchyard listens on one HTTP and one HTTPS address)",
            r.origin,
            eps.join(", ")
        ));
        true
    }

    /// A certificate of Traefik's file store for a host whose router uses
    /// TLS without a resolver: the one whose file name names the host, else
    /// the only one there is (with a note either way).
    fn file_cert_for(&mut self, h: &HostEntry) -> Option<(String, String)> {
        if !h.resolvers.is_empty()
            || h.tls_without_resolver.is_empty()
            || self.t.file_certs.is_empty()
        {
            return None;
        }
        let bare = h.host.trim_start_matches("*.");
        let named = self.t.file_certs.iter().find(|(cert, _, _)| {
            std::path::Path::new(cert)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.contains(bare))
        });
        let chosen = match (named, self.t.file_certs.as_slice()) {
            (Some(c), _) => c.clone(),
            (None, [only]) => only.clone(),
            (None, _) => {
                self.t.note(format!(
                    "host {}: Traefik's store has several certificates and none is named after the host; give the route tls = {{ cert, key }} with the right one",
                    h.host
                ));
                return None;
            }
        };
        self.t.note(format!(
            "host {}: served with {} / {} from Traefik's certificates ({}); switchyard reads these files at start and on every reload: check the paths on this machine",
            h.host, chosen.0, chosen.1, chosen.2
        ));
        Some((chosen.0, chosen.1))
    }

    /// Whether a host's route gets `tls = "acme"`: `Some(redirect_off)` when
    /// it does, `None` (with a note saying why, when it had TLS) when not.
    fn host_uses_acme(&mut self, h: &HostEntry, acme: bool, chosen: Option<&str>) -> Option<bool> {
        let Some((res, router)) = h.resolvers.first() else {
            if let Some(router) = h.tls_without_resolver.first() {
                self.t.note(format!(
                    "host {}: router {router:?} uses TLS with a certificate from Traefik's store; served without TLS: give the route tls = {{ cert = \"...\", key = \"...\" }}",
                    h.host
                ));
            }
            return None;
        };
        if h.host.starts_with("*.") {
            self.t.note(format!(
                "host {}: a wildcard certificate needs DNS-01, which switchyard does not do; served without TLS: give the route tls = {{ cert, key }}",
                h.host
            ));
            return None;
        }
        if !self.t.resolvers.contains_key(res) {
            self.t.note(format!(
                "host {}: router {router:?} uses certificate resolver {res:?}, which is not in the files given (add Traefik's static configuration to the command); served without TLS",
                h.host
            ));
            return None;
        }
        if !acme {
            self.t.note(format!(
                "host {}: its certificate resolver could not be carried over (see above); served without TLS",
                h.host
            ));
            return None;
        }
        if chosen != Some(res.as_str()) {
            self.t.note(format!(
                "host {}: resolver {res:?} is served by the one ACME account switchyard has ({:?})",
                h.host,
                chosen.unwrap_or("")
            ));
        }
        Some(h.plain_unredirected)
    }

    /// The comment header (inputs, notes), `[server]` and `[metrics]`.
    fn write_head(
        &self,
        out: &mut String,
        inputs: &[PathBuf],
        http_ep: &Listener,
        https_ep: Option<&Listener>,
    ) {
        let _ = writeln!(
            out,
            "# switchyard configuration imported from Traefik by `switchyard import traefik`"
        );
        let _ = writeln!(
            out,
            "# from: {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(out, "# Check it with `switchyard check -c FILE`.");
        if !self.t.notes.is_empty() {
            let _ = writeln!(out, "#\n# Not carried over, or changed on the way:");
            for n in &self.t.notes {
                let _ = writeln!(out, "#   - {n}");
            }
        }
        let _ = writeln!(out, "\n[server]");
        let _ = writeln!(out, "http = {}  # {}", q(&http_ep.addr), http_ep.why);
        if let Some(https_ep) = https_ep {
            let _ = writeln!(out, "https = {}  # {}", q(&https_ep.addr), https_ep.why);
        }
        let _ = writeln!(
            out,
            "# The admin socket and state file keep their defaults: /run/switchyard/admin.sock, /var/lib/switchyard/state.json"
        );
        if let Some(m) = &self.t.metrics {
            let _ = writeln!(
                out,
                "\n[metrics]  # Traefik had Prometheus metrics ({m}); switchyard's series are switchyard_*"
            );
            let _ = writeln!(out, "listen = \"127.0.0.1:9100\"");
        }
        if let Some((format, path, at)) = &self.t.access_log {
            let _ = writeln!(out, "\n[access_log]  # Traefik's access log ({at})");
            let _ = writeln!(out, "format = {}", q(format));
            let _ = writeln!(out, "path = {}", q(path.as_deref().unwrap_or("stdout")));
        }
    }
}

/// A listener of the output: its address, the comment saying where it came
/// from, the entrypoint's name, and a note when it had to move.
struct Listener {
    addr: String,
    why: String,
    name: Option<String>,
    moved: Option<String>,
}

/// The listen address for a role: a used entrypoint with that role (the
/// usual names and port first), else one of the usual names, else the
/// default port; never the address `taken` by the other listener.
fn pick_entrypoint(
    b: &Builder<'_>,
    used: &[String],
    usual: &[&str],
    port: u16,
    taken: Option<&Listener>,
) -> Listener {
    let preferred = |name: &str| {
        usual.contains(&name.to_ascii_lowercase().as_str())
            || b.ep_addr(name)
                .is_some_and(|a| a.ends_with(&format!(":{port}")))
    };
    let mut candidates: Vec<&str> = used
        .iter()
        .map(String::as_str)
        .filter(|n| preferred(n))
        .collect();
    candidates.extend(used.iter().map(String::as_str).filter(|n| !preferred(n)));
    candidates.extend(usual.iter().copied());
    let mut clash = None;
    for name in candidates {
        let Some(ep) = b.t.entrypoints.get(name) else {
            continue;
        };
        let Some(addr) = ep.address.as_deref().and_then(listen_addr) else {
            continue;
        };
        if taken.is_some_and(|t| t.addr == addr) {
            clash.get_or_insert(name);
            continue;
        }
        return Listener {
            why: format!(
                "entrypoint {name} ({:?})",
                ep.address.as_deref().unwrap_or("")
            ),
            addr,
            name: Some(name.to_string()),
            moved: None,
        };
    }
    let addr = format!("0.0.0.0:{port}");
    let moved = clash.map(|name| {
        format!("entrypoint {name} has the address of the HTTP listener; two listeners cannot share one, so HTTPS listens on {addr}")
    });
    Listener {
        why: match used.first() {
            Some(e) if clash.is_none() => {
                format!("entrypoint {e} (address not in the files given)")
            }
            _ => "Traefik's usual port".to_string(),
        },
        addr,
        name: None,
        moved,
    }
}

/// What flattening a pool's services gives: its versions before naming, and
/// the health checks and sticky settings met on the way, by service.
#[derive(Default)]
struct Flat {
    leaves: Vec<Leaf>,
    health: Vec<(String, Health)>,
    /// (service, cookie name, from a weighted service).
    sticky: Vec<(String, Option<String>, bool)>,
}

fn build_pool(
    b: &mut Builder<'_>,
    p: &mut Pool,
    hosts: &[HostEntry],
    routes: &[RouteEntry],
) -> Result<(), ImportError> {
    let origin = p
        .routes
        .first()
        .map(|&i| routes[i].origin.clone())
        .or_else(|| b.t.services.get(&p.members[0]).map(|s| s.origin.clone()))
        .unwrap_or(Origin {
            file: PathBuf::new(),
            key: String::new(),
        });
    let overflow = || origin.err("", "the weights are too large to carry over exactly");
    let mut flat = Flat::default();
    for m in &p.members {
        let natural = b.natural(m);
        b.flatten(
            m,
            Ratio::int(natural),
            &mut flat.leaves,
            &mut flat.health,
            &mut flat.sticky,
        )
        .ok_or_else(overflow)?;
    }
    if p.members.len() > 1 {
        let routers: Vec<&str> = p
            .routes
            .iter()
            .flat_map(|&i| routes[i].routers.iter().map(|s| s.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        b.t.note(format!(
            "routers {} route the same host to services {}: Traefik serves a host from one router, switchyard splits it between those services by their servers' weights (1 when not given)",
            routers.join(", "),
            p.members.join(", ")
        ));
    }
    let merged = merge_leaves(std::mem::take(&mut flat.leaves)).ok_or_else(overflow)?;
    let weights = whole_weights(&merged).ok_or_else(overflow)?;
    if let Some(max) = weights.iter().max() {
        if *max > u128::from(MAX_WEIGHT) {
            return Err(origin.err(
                "",
                format!(
                    "the weights of services {} come to {max}, above switchyard's {MAX_WEIGHT}; scale them down in Traefik first",
                    p.members.join(", ")
                ),
            ));
        }
    }
    name_pool_and_versions(p, &merged, weights, hosts, routes);
    pool_health(b, p, &flat.health);
    pool_sticky(b, p, &flat.sticky);
    Ok(())
}

/// The same name twice: merged when it is the same backends, else renamed.
/// `None` when the weights overflow.
fn merge_leaves(leaves: Vec<Leaf>) -> Option<Vec<Leaf>> {
    let mut merged: Vec<Leaf> = Vec::new();
    for l in leaves {
        if let Some(m) = merged
            .iter_mut()
            .find(|m| m.name == l.name && m.backends == l.backends)
        {
            m.weight = m.weight.add(l.weight)?;
            continue;
        }
        let mut l = l;
        let base = l.name.clone();
        let mut n = 2;
        while merged.iter().any(|m| m.name == l.name) {
            l.name = format!("{base}-{n}");
            n += 1;
        }
        merged.push(l);
    }
    Some(merged)
}

/// Whole-number weights: Traefik's own when they are whole, else the
/// smallest exact ones. `None` when they overflow.
fn whole_weights(leaves: &[Leaf]) -> Option<Vec<u128>> {
    let lcm = leaves.iter().try_fold(1u128, |acc, l| {
        let g = gcd(acc, l.weight.den).max(1);
        (acc / g).checked_mul(l.weight.den)
    })?;
    let mut weights: Vec<u128> = leaves
        .iter()
        .map(|l| l.weight.num.checked_mul(lcm / l.weight.den))
        .collect::<Option<_>>()?;
    if lcm > 1 {
        let g = weights.iter().fold(0, |a, &w| gcd(a, w)).max(1);
        weights.iter_mut().for_each(|w| *w /= g);
    }
    Some(weights)
}

/// Versions named after their services without the common prefix, the pool
/// after that prefix (app-blue, app-green -> app: blue, green); else the
/// pool after its one service, else after its first host's first label.
fn name_pool_and_versions(
    p: &mut Pool,
    merged: &[Leaf],
    weights: Vec<u128>,
    hosts: &[HostEntry],
    routes: &[RouteEntry],
) {
    let raw: Vec<String> = merged.iter().map(|l| sanitize(&l.name, "v")).collect();
    let (prefix, names) = match strip_common_prefix(&raw) {
        Some((prefix, names)) => (Some(prefix), names),
        None => (None, raw.clone()),
    };
    let mut names = names;
    for i in 0..names.len() {
        let base = names[i].clone();
        let mut n = 2;
        while names[..i].contains(&names[i]) {
            names[i] = format!("{base}-{n}");
            n += 1;
        }
    }
    let first_label = p.routes.first().map(|&i| {
        hosts[routes[i].host]
            .host
            .trim_start_matches("*.")
            .split('.')
            .next()
            .unwrap_or("")
            .to_string()
    });
    p.name = match (prefix, p.members.as_slice()) {
        (Some(prefix), _) if valid_name(&prefix) => prefix,
        (_, [one]) => sanitize(one, "pool"),
        _ => sanitize(first_label.as_deref().unwrap_or("pool"), "pool"),
    };
    p.versions = merged
        .iter()
        .zip(names)
        .zip(weights)
        .map(|((l, name), w)| (name, w as u64, l.backends.clone(), l.name.clone()))
        .collect();
}

/// The pool's health check: the first service's (a note when others differ).
fn pool_health(b: &mut Builder<'_>, p: &mut Pool, health: &[(String, Health)]) {
    let Some((svc, h)) = health.first() else {
        return;
    };
    for (other, oh) in &health[1..] {
        if oh != h {
            b.t.note(format!(
                "pool {}: service {other:?} has another health check; switchyard has one per pool and uses {svc:?}'s",
                p.name
            ));
        }
    }
    p.health = Some(h.clone());
}

/// The pool's sticky cookie, from the first service that has one: Traefik
/// keeps a user on a server, switchyard on a version.
fn pool_sticky(b: &mut Builder<'_>, p: &mut Pool, sticky: &[(String, Option<String>, bool)]) {
    let Some((svc, cookie, from_weighted)) = sticky.first() else {
        return;
    };
    let name = cookie.clone().filter(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
    });
    if !from_weighted && p.versions.len() < 2 {
        b.t.note(format!(
            "pool {}: service {svc:?} keeps a user on one server (sticky); switchyard keeps a user on one version, and this pool has one",
            p.name
        ));
        return;
    }
    if !from_weighted {
        b.t.note(format!(
            "pool {}: service {svc:?} keeps a user on one server; switchyard keeps a user on one version",
            p.name
        ));
    }
    if name.is_none() {
        b.t.note(format!(
            "pool {}: Traefik generated the sticky cookie's name; switchyard's is sy_ver",
            p.name
        ));
    }
    p.sticky = Some(name.unwrap_or_else(|| "sy_ver".into()));
}

fn write_pool(out: &mut String, p: &Pool) {
    let _ = writeln!(
        out,
        "\n[pools.{}]  # Traefik service{} {}",
        key(&p.name),
        if p.members.len() > 1 { "s" } else { "" },
        p.members.join(", ")
    );
    if let Some(h) = &p.health {
        let interval = h.interval.clone().unwrap_or_else(|| "30s".into());
        let mut timeout = h.timeout.clone().unwrap_or_else(|| "5s".into());
        let d = |s: &str| parse_duration(s).unwrap_or(Duration::ZERO);
        if d(&timeout) > d(&interval) {
            timeout = interval.clone();
        }
        let _ = writeln!(
            out,
            "# Traefik's health check: one failed probe takes a backend out, one good probe brings it back (rise = 1, fall = 1)."
        );
        let mut fields = vec![
            format!("path = {}", q(&h.path)),
            format!("interval = {}", q(&interval)),
            format!("timeout = {}", q(&timeout)),
            "rise = 1".to_string(),
            "fall = 1".to_string(),
        ];
        if let Some(host) = &h.hostname {
            fields.push(format!("host = {}", q(host)));
        }
        if let Some(p) = h.port {
            fields.push(format!("port = {p}"));
        }
        if let Some(s) = h.status {
            fields.push(format!("status = {s}"));
        }
        let _ = writeln!(out, "health = {{ {} }}", fields.join(", "));
    }
    if let Some(c) = &p.sticky {
        let _ = writeln!(out, "sticky = {{ cookie = {} }}", q(c));
    }
    for (name, weight, backends, from) in &p.versions {
        let _ = writeln!(
            out,
            "\n[pools.{}.versions.{}]  # from {from}",
            key(&p.name),
            key(name)
        );
        let _ = writeln!(out, "weight = {weight}");
        let _ = writeln!(
            out,
            "backends = [{}]",
            backends.iter().map(|b| q(b)).collect::<Vec<_>>().join(", ")
        );
    }
}

/// The `[acme]` section for a resolver, or `None` (with a note) when it
/// cannot be one.
fn acme_section(b: &mut Builder<'_>, name: &str) -> Result<Option<String>, ImportError> {
    let Some(r) = b.t.resolvers.get(name).cloned() else {
        return Ok(None);
    };
    let others: Vec<String> =
        b.t.resolvers
            .keys()
            .filter(|k| *k != name)
            .cloned()
            .collect();
    if !others.is_empty() {
        b.t.note(format!(
            "certificate resolvers {}: switchyard has one ACME account and uses {name:?}",
            others.join(", ")
        ));
    }
    let Some(email) = r.email.clone().filter(|e| e.contains('@')) else {
        b.t.note(format!(
            "{}: resolver {name:?} has no e-mail address, which switchyard's [acme] needs; no ACME section written",
            r.origin
        ));
        return Ok(None);
    };
    let directory = match r.ca_server.as_deref().map(str::trim) {
        None | Some(LETSENCRYPT) => "letsencrypt".to_string(),
        Some(LETSENCRYPT_STAGING) => "letsencrypt-staging".to_string(),
        Some(url) if url.starts_with("https://") => url.to_string(),
        Some(url) => {
            return Err(r.origin.err(
                "caServer",
                format!("{url:?}: switchyard needs an https:// ACME directory"),
            ))
        }
    };
    let challenge = match &r.challenge {
        Some(AcmeChallenge::Tls) => "tls-alpn-01",
        Some(AcmeChallenge::Http) => "http-01",
        Some(AcmeChallenge::Dns(provider)) => {
            b.t.note(format!(
                "{}: resolver {name:?} uses DNS-01 ({provider}), which switchyard does not do: it answers http-01 on port 80 instead",
                r.origin
            ));
            "http-01"
        }
        None => {
            b.t.note(format!(
                "{}: resolver {name:?} names no challenge; switchyard uses http-01",
                r.origin
            ));
            "http-01"
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n[acme]  # certificate resolver {name:?} ({})",
        r.origin
    );
    let _ = writeln!(s, "email = {}", q(&email));
    let _ = writeln!(s, "directory = {}", q(&directory));
    if let Some(st) = &r.storage {
        let _ = writeln!(
            s,
            "# Traefik kept its account and certificates in {st:?}; switchyard does not read that file and orders its own on first start."
        );
    }
    let _ = writeln!(s, "storage = \"/var/lib/switchyard/acme\"");
    let _ = writeln!(s, "challenge = {}", q(challenge));
    if let Some(ca) = r.ca_certificates.first() {
        let _ = writeln!(s, "ca_file = {}", q(ca));
        if r.ca_certificates.len() > 1 {
            b.t.note(format!(
                "{}: resolver {name:?}: only the first of caCertificates is carried over",
                r.origin
            ));
        }
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefixes() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            strip_common_prefix(&v(&["app-blue", "app-green"])),
            Some(("app".into(), v(&["blue", "green"])))
        );
        assert_eq!(
            strip_common_prefix(&v(&["shop_v1", "shop_v2"])),
            Some(("shop".into(), v(&["v1", "v2"])))
        );
        // "app-b" / "app-bb" share "app-b" but the cut is at the separator.
        assert_eq!(
            strip_common_prefix(&v(&["app-b", "app-bb"])),
            Some(("app".into(), v(&["b", "bb"])))
        );
        assert_eq!(strip_common_prefix(&v(&["blue", "green"])), None);
        assert_eq!(strip_common_prefix(&v(&["app", "app-x"])), None);
        assert_eq!(strip_common_prefix(&v(&["one"])), None);
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(sanitize("app@docker", "x"), "app-docker");
        assert_eq!(sanitize("v1.4.2", "x"), "v1.4.2");
        assert_eq!(sanitize("***", "x"), "x");
        assert_eq!(key("blue"), "blue");
        assert_eq!(key("v1.4.2"), "\"v1.4.2\"");
        assert_eq!(listen_addr(":80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_addr("[::]:443/tcp").as_deref(), Some("[::]:443"));
        assert_eq!(listen_addr("localhost:80"), None);
    }

    #[test]
    fn ratios() {
        let r = Ratio::int(3).scale(1, 6).unwrap();
        assert_eq!(r, Ratio { num: 1, den: 2 });
        assert_eq!(r.add(r).unwrap(), Ratio::int(1));
        assert!(Ratio::int(u128::MAX).scale(2, 1).is_none());
    }
}
