//! From the importer's [`Traefik`] view to switchyard TOML.
//!
//! ```text
//! routers ──rule──> hosts ──> per host: the services that serve it, TLS, redirect
//! hosts with the same services ──> one pool
//! pool's services ──flatten──> versions with exact integer weights
//!      weighted(children w_i)       child gets parent * w_i / sum(w)
//!      loadBalancer(equal weights)  one version per compose service (or one in all)
//!      loadBalancer(mixed weights)  one version per server
//! ```
//!
//! Weights keep Traefik's numbers when they can (100 and 0 stay 100 and 0);
//! otherwise the exact ratios are scaled to the smallest whole numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::model::{
    base_name, provider, AcmeChallenge, Health, Origin, Router, ServiceKind, Traefik,
};
use super::ImportError;
use crate::config::{parse_duration, valid_name, MAX_WEIGHT};
use crate::host::HostPattern;
use crate::providers::rule;

const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One host and what serves it.
struct HostEntry {
    host: String,
    /// Services (base names) whose traffic this host gets.
    members: BTreeSet<String>,
    routers: Vec<String>,
    /// (resolver, router) for each TLS router naming a resolver.
    resolvers: Vec<(String, String)>,
    /// TLS routers without a resolver (Traefik's default or stored certificate).
    tls_without_resolver: Vec<String>,
    /// A plain-HTTP router serves this host without redirecting to HTTPS.
    plain_unredirected: bool,
    origin: Origin,
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
    hosts: Vec<usize>,
    members: Vec<String>,
    versions: Vec<(String, u64, Vec<String>, String)>,
    health: Option<Health>,
    sticky: Option<String>,
}

impl Pool {
    /// A pool for `members` serving `hosts`, named and filled by [`build_pool`].
    fn unnamed(hosts: Vec<usize>, members: Vec<String>) -> Pool {
        Pool {
            name: String::new(),
            hosts,
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
    let mut b = Builder { t };
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
    let mut hosts: Vec<HostEntry> = Vec::new();
    let mut routed: BTreeSet<String> = BTreeSet::new();
    for (rname, r) in &routers {
        if b.off_listeners(rname, r, &[&http_ep, &https_ep]) {
            continue;
        }
        b.add_router(rname, r, &all_eps, &mut hosts, &mut routed)?;
    }

    let mut pools = b.group_pools(&hosts, &routed)?;
    let mut used_pool_names = BTreeSet::new();
    for p in &mut pools {
        build_pool(&mut b, p, &hosts)?;
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
    for p in &pools {
        for &i in &p.hosts {
            let files = b.file_cert_for(&hosts[i]);
            let acme_tls = match files {
                Some(_) => None,
                None => b.host_uses_acme(&hosts[i], acme.is_some(), chosen.as_deref()),
            };
            any_tls |= acme_tls.is_some() || files.is_some();
            write_route(
                &mut routes_text,
                &hosts[i],
                &p.name,
                acme_tls,
                files.as_ref(),
            );
        }
    }

    let mut out = String::new();
    if let (true, Some(note)) = (any_tls, &https_ep.moved) {
        b.t.note(note.clone());
    }
    b.write_head(&mut out, inputs, &http_ep, any_tls.then_some(&https_ep));
    if let Some(a) = &acme {
        out.push_str(a);
    }
    out.push_str(&routes_text);
    for p in &pools {
        write_pool(&mut out, p);
    }
    Ok(out)
}

/// One `[[routes]]` entry. `acme_tls` is `None` for a route without TLS,
/// else whether its host is also served over plain HTTP (no redirect).
fn write_route(
    out: &mut String,
    h: &HostEntry,
    pool: &str,
    acme_tls: Option<bool>,
    files: Option<&(String, String)>,
) {
    let _ = writeln!(
        out,
        "\n[[routes]]  # router{} {} ({})",
        if h.routers.len() > 1 { "s" } else { "" },
        h.routers.join(", "),
        h.origin.file.display()
    );
    let _ = writeln!(out, "host = {}", q(&h.host));
    let _ = writeln!(out, "pool = {}", q(pool));
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
    /// Reads one router: the hosts its rule matches get its service, TLS and
    /// redirect; what cannot be carried over becomes a note.
    fn add_router(
        &mut self,
        rname: &str,
        r: &Router,
        all_eps: &[String],
        hosts: &mut Vec<HostEntry>,
        routed: &mut BTreeSet<String>,
    ) -> Result<(), ImportError> {
        let view = self.router_view(rname, r, all_eps);
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
        let Some(rule_hosts) = self.rule_hosts(rname, r)? else {
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
            routed.insert(s.clone());
            Some(s)
        };
        for h in rule_hosts {
            let i = match hosts.iter().position(|e| e.host == h.host) {
                Some(i) => i,
                None => {
                    hosts.push(HostEntry {
                        host: h.host.clone(),
                        members: BTreeSet::new(),
                        routers: Vec::new(),
                        resolvers: Vec::new(),
                        tls_without_resolver: Vec::new(),
                        plain_unredirected: false,
                        origin: r.origin.clone(),
                    });
                    hosts.len() - 1
                }
            };
            let e = &mut hosts[i];
            e.routers.push(rname.to_string());
            if let Some(s) = &service {
                e.members.insert(s.clone());
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
        }
        Ok(())
    }

    /// The router's entrypoints: all of them when it names none.
    fn router_eps(r: &Router, all_eps: &[String]) -> Vec<String> {
        if r.entrypoints.is_empty() {
            all_eps.to_vec()
        } else {
            r.entrypoints.clone()
        }
    }

    /// What a router serves and whether it redirects; notes the middlewares
    /// that are not carried over.
    fn router_view(&mut self, rname: &str, r: &Router, all_eps: &[String]) -> RouterView {
        let eps = Self::router_eps(r, all_eps);
        let serves_tls = r.tls || eps.iter().any(|e| self.entry_tls(e));
        let serves_plain = !r.tls && (eps.is_empty() || eps.iter().any(|e| !self.entry_tls(e)));
        let resolver = r.certresolver.clone().or_else(|| {
            eps.iter()
                .filter_map(|e| self.t.entrypoints.get(e))
                .find_map(|e| e.tls_resolver.clone())
        });
        let mut redirect = false;
        for m in &r.middlewares {
            match self.t.middlewares.get(m).cloned() {
                Some(mw) if mw.redirects_to_https => redirect = true,
                Some(mw) => self.t.note(format!(
                    "{}: router {rname:?}: middleware {m:?} ({}) is not carried over",
                    r.origin.file.display(),
                    mw.kind
                )),
                None => self.t.note(format!(
                    "{}: router {rname:?}: middleware {m:?} is not defined in the files given; not carried over",
                    r.origin.file.display()
                )),
            }
        }
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

    /// The hosts a router's rule matches; `None` (with a note) when the rule
    /// is missing or matches something other than hosts.
    fn rule_hosts(
        &mut self,
        rname: &str,
        r: &Router,
    ) -> Result<Option<Vec<rule::RuleHost>>, ImportError> {
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
        let rule_hosts = match rule::hosts(&parsed) {
            Ok(h) => h,
            Err(why) => {
                self.t.note(format!(
                    "{}: router {rname:?}: {why}; not carried over",
                    r.origin.file.display()
                ));
                return Ok(None);
            }
        };
        for h in &rule_hosts {
            HostPattern::parse(&h.host).map_err(|e| {
                r.origin
                    .err("rule", format!("host {:?} in {rule_text:?}: {e}", h.host))
            })?;
            if let Some(re) = &h.approximated_from {
                self.t.note(format!(
                    "{}: router {rname:?}: HostRegexp(`{re}`) is carried over as {}",
                    r.origin.file.display(),
                    h.host
                ));
            }
        }
        Ok(Some(rule_hosts))
    }

    /// Pools before naming: hosts served by the same services share one, and
    /// services no router reaches (and no weighted service includes) get one
    /// without a route.
    fn group_pools(
        &mut self,
        hosts: &[HostEntry],
        routed: &BTreeSet<String>,
    ) -> Result<Vec<Pool>, ImportError> {
        let mut pools: Vec<Pool> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            if h.members.is_empty() {
                self.t.note(format!(
                    "host {}: only redirect routers name it; not carried over",
                    h.host
                ));
                continue;
            }
            let members: Vec<String> = h.members.iter().cloned().collect();
            match pools.iter_mut().find(|p| p.members == members) {
                Some(p) => p.hosts.push(i),
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

fn build_pool(b: &mut Builder<'_>, p: &mut Pool, hosts: &[HostEntry]) -> Result<(), ImportError> {
    let origin = p
        .hosts
        .first()
        .map(|&i| hosts[i].origin.clone())
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
            .hosts
            .iter()
            .flat_map(|&i| hosts[i].routers.iter().map(|s| s.as_str()))
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
    name_pool_and_versions(p, &merged, weights, hosts);
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
fn name_pool_and_versions(p: &mut Pool, merged: &[Leaf], weights: Vec<u128>, hosts: &[HostEntry]) {
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
    let first_label = p.hosts.first().map(|&i| {
        hosts[i]
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
