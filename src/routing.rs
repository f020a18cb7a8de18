//! The routing table: one immutable snapshot that every request reads.
//!
//! ```text
//! effective Config (file + runtime overrides) + BackendRegistry
//!     --RoutingTable::build_and_sync--> RoutingTable --ArcSwap::store--> next request
//! ```
//!
//! A request calls `table.load()` once and uses that snapshot to the end, so it
//! never sees half a change. Building cannot fail (every check happened when
//! the config, or the admin change, was validated) but it is not pure:
//! [`RoutingTable::build_and_sync`] also drops unused backends from the
//! registry and sets the weight and backend-up gauges. Live state (health,
//! pooled connections, counters) is not in the table but behind `Arc`s that
//! successive tables share.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::{RoundRobin, Schedule, Schedules, StickyRanges};
use crate::config::{
    Config, OnAllDown, PassiveConfig, PoolConfig, RouteConfig, Sticky, TlsMode, VersionConfig,
};
use crate::host::{self, HostPattern, MAX_HOST_LEN};
use crate::metrics::{GaugeSource, Metrics, RequestMetrics};
use crate::middleware::{Middleware, Middlewares};
use crate::rules::{RequestView, RouteRules, VersionRule};
use crate::upstream::{Backend, BackendKey, BackendRegistry, BackendSet};

/// Per-request limits that a reload may change.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The snapshot.
pub struct RoutingTable {
    /// Host -> its routes, highest rank first.
    exact: HashMap<Arc<str>, RouteList>,
    /// (suffix, routes highest rank first), longest suffix first.
    wildcards: Vec<(Box<str>, RouteList)>,
    routes: Vec<Route>,
    /// The routes `routes` were made from (see [`RoutingTable::build_from`]).
    route_configs: Arc<Vec<RouteConfig>>,
    pub pools: BTreeMap<Arc<str>, Arc<Pool>>,
    pub limits: Limits,
    /// HTTPS port for redirects (when an https entrypoint exists).
    pub https_port: Option<u16>,
    /// Series for requests that matched no route (`route=""`).
    pub unmatched: RequestMetrics,
}

/// A table build's map from each previous pool (by address) to the pool of
/// its name in the new table.
type PoolSuccessors = HashMap<usize, Arc<Pool>, foldhash::fast::RandomState>;

/// A host's route.
#[derive(Clone)]
pub struct Route {
    /// The host as configured (`app.example.com`, `*.example.com`); the
    /// host map's key and a host-only route's label are this same string.
    pub host: Arc<str>,
    /// The route's name in metrics and logs: the host, plus the rule when
    /// there is one ([`RouteConfig::label`]); its metric handles share it.
    pub label: Arc<str>,
    /// Conditions beyond the host; `None` for a host-only route (nothing
    /// to check on the request path).
    pub rules: Option<Arc<RouteRules>>,
    /// Applied in this order on the request, in reverse on the response.
    pub middlewares: Box<[Arc<Middleware>]>,
    /// Position in `RoutingTable::routes`.
    pub index: usize,
    pub pool: Arc<Pool>,
    pub tls: TlsMode,
    pub redirect_https: bool,
    /// This entry is a route's `preview` host: it reaches the canary (or the
    /// version with weight 0) instead of the weighted split.
    pub preview: bool,
    /// Series per version of the pool (same index as `pool.versions`):
    /// shared with the routes a later table takes over unchanged.
    pub metrics: Arc<[RequestMetrics]>,
    /// Series for answers given before a version was chosen (`version=""`).
    pub unpicked: RequestMetrics,
}

/// A pool of versions sharing traffic by weight.
pub struct Pool {
    /// Shared with the routes' metric handles and the backends' keys.
    pub name: Arc<str>,
    /// What the pool was built from: a later build whose pool is equal (and
    /// whose canary and backends' availability are unchanged) keeps this
    /// `Arc<Pool>` whole instead of building it again.
    config: Arc<PoolConfig>,
    canary: Option<usize>,
    pub versions: Vec<Version>,
    /// Smooth WRR over effective weights (a version without an available
    /// backend counts 0 when the table is built; one that loses its backends
    /// later is skipped at pick time until the rebuild that health asks for).
    schedule: Schedule,
    /// The effective weights `schedule` was built from.
    scheduled: Box<[u32]>,
    /// Smooth WRR over configured weights, ignoring health (fail-open).
    configured: Schedule,
    sticky: Option<(Sticky, StickyRanges)>,
    /// Version rules with the index of the version each sends to.
    matches: Vec<(VersionRule, usize)>,
    pub pin_header: Option<http::HeaderName>,
    pub version_header: bool,
    pub retry: u32,
    pub on_all_down: OnAllDown,
    pub passive: PassiveConfig,
    /// `max_connections_per_backend` (0: no cap) and `queue_timeout`.
    pub max_conns: u32,
    pub queue_timeout: Option<std::time::Duration>,
    /// The version a preview host reaches: the rollout's canary, else the
    /// first version with weight 0.
    preview: Option<usize>,
}

/// One version of a pool.
pub struct Version {
    /// Shared with the routes' metric handles and the backends' keys.
    pub name: Arc<str>,
    /// The name as an `x-served-by` value, made once.
    pub header: http::HeaderValue,
    /// Configured weight (after runtime overrides).
    pub weight: u32,
    pub backends: Vec<Arc<Backend>>,
    rr: RoundRobin,
}

/// What the request path gets back from [`Pool::pick`].
pub enum Pick<'a> {
    /// Chosen by the split (or a sticky user's bucket).
    Version(usize, &'a Version),
    /// Named by the pin header or reached by a preview host, and available:
    /// the request stays on this version, retries included.
    Named(usize, &'a Version),
    /// Named by the pin header or a preview host, with no available backend:
    /// 503 naming it, never another version's answer.
    NamedDown(&'a Version),
    /// The pin header names no version of the pool: 404.
    UnknownPin,
    /// A preview host, but the pool has no version to preview (no rollout
    /// canary and no version at weight 0): 503.
    NoPreview,
    /// No version has an available backend.
    AllDown,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// Builds a table with its own metrics registry (tests, benches,
    /// fuzzing). Like [`RoutingTable::build_and_sync`], it drops from
    /// `registry` the backends the table does not use.
    pub fn build(
        config: &Config,
        registry: &BackendRegistry,
        canaries: &HashMap<String, String>,
    ) -> RoutingTable {
        let metrics = Metrics::new();
        let (middlewares, _) = Middlewares::build(config, None, &metrics);
        Self::build_and_sync(config, registry, canaries, &metrics, &middlewares)
    }

    /// Builds a table and brings the shared state in line with it: backends
    /// the table no longer uses are dropped from `registry` (the ones it uses
    /// are taken from there, or added), and the weight and backend-up gauges
    /// of `metrics` are set. `canaries` maps a pool to its rollout canary,
    /// which goes first in the sticky layout and is what preview hosts reach.
    /// Routes take their middlewares from `middlewares` (built with the
    /// config, see [`Middlewares::build`]). Metric handles are resolved
    /// here, once.
    pub fn build_and_sync(
        config: &Config,
        registry: &BackendRegistry,
        canaries: &HashMap<String, String>,
        metrics: &Metrics,
        middlewares: &Middlewares,
    ) -> RoutingTable {
        Self::build_from(None, config, registry, canaries, metrics, middlewares)
    }

    /// [`RoutingTable::build_and_sync`], keeping the pools of `previous`
    /// that nothing changed: same [`PoolConfig`] (by content), same canary,
    /// and every version's backends as available as when it was built. A
    /// kept pool is the same `Arc<Pool>` (its schedules, round robins and
    /// backends go on as they were); a reload of a big file that changes a
    /// few pools builds only those.
    pub fn build_from(
        previous: Option<&RoutingTable>,
        config: &Config,
        registry: &BackendRegistry,
        canaries: &HashMap<String, String>,
        metrics: &Metrics,
        middlewares: &Middlewares,
    ) -> RoutingTable {
        let backends: usize = config
            .pools
            .values()
            .flat_map(|p| p.versions.values())
            .map(|v| v.backends.len())
            .sum();
        let mut used = BackendSet::with_capacity_and_hasher(backends, Default::default());
        let mut schedules = Schedules::default();
        // Both maps are in name order: the previous pool of a name is found
        // by walking the two together, not by a lookup per pool.
        let mut before = previous.map(|t| t.pools.iter().peekable());
        // The same routes (by identity): they are renewed (see
        // `RouteIndex::renew`), unless a pool the walk below finds new (no
        // pool of its name before) is one a route names.
        let mut renewing = previous.is_some_and(|t| Arc::ptr_eq(&t.route_configs, &config.routes));
        let mut added: Vec<&str> = Vec::new();
        // Each previous pool's successor, by the old pool's address: what a
        // renewal looks its routes' pools up in.
        let mut successors: PoolSuccessors = HashMap::with_capacity_and_hasher(
            if renewing { config.pools.len() } else { 0 },
            Default::default(),
        );
        let pools: BTreeMap<Arc<str>, Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, pc)| {
                let canary = canaries.get(&**name).map(String::as_str);
                // One comparison of the names per step.
                let old = before.as_mut().and_then(|it| loop {
                    match (**it.peek()?.0).cmp(&**name) {
                        std::cmp::Ordering::Less => _ = it.next(),
                        std::cmp::Ordering::Equal => break it.next().map(|(_, p)| p),
                        std::cmp::Ordering::Greater => break None,
                    }
                });
                if renewing && old.is_none() {
                    added.push(name);
                }
                let pool = match old.filter(|p| p.unchanged(pc, canary)) {
                    Some(p) => {
                        p.note_backends(&mut used);
                        p.clone()
                    }
                    None => Arc::new(Pool::build(
                        name,
                        pc,
                        canary,
                        registry,
                        &mut used,
                        old.map(|p| &**p),
                        &mut schedules,
                    )),
                };
                if let Some(old) = old.filter(|_| renewing) {
                    successors.insert(Arc::as_ptr(old) as usize, pool.clone());
                }
                (name.clone(), pool)
            })
            .collect();
        // `added` is in name order (the map's): searched, not scanned.
        if !added.is_empty() {
            renewing &= !config
                .routes
                .iter()
                .any(|r| added.binary_search(&r.pool.as_str()).is_ok());
        }
        registry.retain(&used);
        metrics.set_gauge_source(Box::new(PoolGauges(pools.values().cloned().collect())));
        // The same routes, and no pool new to them: the host index is the
        // previous one, and only the routes whose pool or middlewares
        // changed are made again.
        let same_routes = previous.filter(|_| renewing);
        let RouteIndex {
            exact,
            wildcards,
            routes,
        } = match same_routes {
            Some(t) => RouteIndex::renew(t, config, &pools, &successors, metrics, middlewares),
            None => RouteIndex::build(config, &pools, metrics, middlewares),
        };
        RoutingTable {
            exact,
            wildcards,
            routes,
            route_configs: config.routes.clone(),
            pools,
            limits: Limits {
                connect_timeout: config.server.connect_timeout,
                request_timeout: config.server.request_timeout,
                idle_timeout: config.server.idle_timeout,
            },
            https_port: config.server.https.map(|a| a.port()),
            unmatched: metrics.request_handles("", "", ""),
        }
    }

    /// The route for a raw Host value (any case, maybe with a port) and a
    /// `GET /` without headers: what a host-only lookup finds.
    #[inline]
    pub fn route(&self, raw_host: &str) -> Option<&Route> {
        static NO_HEADERS: std::sync::LazyLock<http::HeaderMap> =
            std::sync::LazyLock::new(http::HeaderMap::new);
        let view = RequestView {
            method: &http::Method::GET,
            path: "/",
            query: None,
            headers: &NO_HEADERS,
        };
        self.route_for(raw_host, &view)
    }

    /// The route for a request: the host's routes (exact name first, then
    /// each wildcard covering it, longest first), and among a host's
    /// routes the first by rank whose rule the request meets. No
    /// allocation; a host-only route checks nothing beyond the host.
    #[inline]
    pub fn route_for(&self, raw_host: &str, req: &RequestView<'_>) -> Option<&Route> {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        let name = host::normalize(raw_host, &mut buf)?;
        self.route_for_name(name, req)
    }

    /// [`route_for`](Self::route_for) for a name [`host::normalize`]
    /// returned.
    #[inline]
    pub fn route_for_name(&self, name: &str, req: &RequestView<'_>) -> Option<&Route> {
        if let Some(list) = self.exact.get(name) {
            if let Some(r) = self.first_match(list.as_slice(), req) {
                return Some(r);
            }
        }
        self.wildcards
            .iter()
            .filter(|(suffix, _)| name.len() > suffix.len() && name.ends_with(&**suffix))
            .find_map(|(_, list)| self.first_match(list.as_slice(), req))
    }

    #[inline]
    fn first_match(&self, list: &[usize], req: &RequestView<'_>) -> Option<&Route> {
        list.iter()
            .filter_map(|&i| self.routes.get(i))
            .find(|r| r.rules.as_ref().is_none_or(|rules| rules.matches(req)))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The table's pools as the source of the weight and backend-up gauges:
/// read at each scrape, nothing copied at the build.
struct PoolGauges(Box<[Arc<Pool>]>);

impl GaugeSource for PoolGauges {
    fn weights(&self, weight: &mut dyn FnMut(&str, &str, i64)) {
        for pool in self.0.iter() {
            for (v, w) in pool.versions.iter().zip(pool.effective_weights()) {
                weight(&pool.name, &v.name, i64::from(w));
            }
        }
    }

    fn backends(&self, backend: &mut dyn FnMut(&str, &str, &str, bool)) {
        for pool in self.0.iter() {
            for v in &pool.versions {
                for b in &v.backends {
                    backend(&pool.name, &v.name, b.key.addr.as_str(), b.is_available());
                }
            }
        }
    }
}

/// A route's middlewares, in its order (names `middlewares` lacks are
/// skipped: validation refuses them).
fn chain_of(rc: &RouteConfig, middlewares: &Middlewares) -> Box<[Arc<Middleware>]> {
    rc.middlewares
        .iter()
        .filter_map(|m| middlewares.get(m).cloned())
        .collect()
}

/// The host lookup part of a table.
struct RouteIndex {
    exact: HashMap<Arc<str>, RouteList>,
    wildcards: Vec<(Box<str>, RouteList)>,
    routes: Vec<Route>,
}

/// A host's routes (indexes into the table's), highest rank first: most
/// hosts have one, kept without an allocation of its own.
#[derive(Clone)]
enum RouteList {
    One([usize; 1]),
    Many(Box<[usize]>),
}

impl RouteList {
    fn new(list: Vec<usize>) -> RouteList {
        match list[..] {
            [one] => RouteList::One([one]),
            _ => RouteList::Many(list.into()),
        }
    }

    #[inline]
    fn as_slice(&self) -> &[usize] {
        match self {
            RouteList::One(one) => one,
            RouteList::Many(many) => many,
        }
    }
}

impl RouteIndex {
    /// One route per configured host, one more per preview host; routes whose
    /// pool is missing are skipped (validation refuses them). A host's
    /// routes are ordered by rank ([`RouteRules::rank`]), the file's order
    /// between equals.
    fn build(
        config: &Config,
        pools: &BTreeMap<Arc<str>, Arc<Pool>>,
        metrics: &Metrics,
        middlewares: &Middlewares,
    ) -> Self {
        let previews = config.routes.iter().filter(|r| r.preview.is_some()).count();
        let mut ix = RouteIndex {
            exact: HashMap::new(),
            wildcards: Vec::new(),
            routes: Vec::with_capacity(config.routes.len() + previews),
        };
        let mut exact: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        let mut wild: BTreeMap<Box<str>, Vec<usize>> = BTreeMap::new();
        for rc in config.routes.iter() {
            let Some(pool) = pools.get(rc.pool.as_str()) else {
                continue;
            };
            let chain = chain_of(rc, middlewares);
            let host: Arc<str> = match &rc.host {
                HostPattern::Exact(h) => exact
                    .get_key_value(h.as_str())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| h.as_str().into()),
                HostPattern::Wildcard(_) => rc.host.to_string().into(),
            };
            let idx = ix.push(metrics, &host, pool, rc, &chain, false);
            match &rc.host {
                HostPattern::Exact(_) => exact.entry(host).or_default().push(idx),
                HostPattern::Wildcard(suffix) => wild.entry(suffix.clone()).or_default().push(idx),
            }
            if let Some(p) = &rc.preview {
                let preview: Arc<str> = exact
                    .get_key_value(p.as_str())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| p.as_str().into());
                let pidx = ix.push(metrics, &preview, pool, rc, &chain, true);
                exact.entry(preview).or_default().push(pidx);
            }
        }
        let routes = &ix.routes;
        let ranked = |host: &str, mut list: Vec<usize>| -> RouteList {
            list.sort_by_key(|&i| {
                let rank = match routes[i].rules.as_deref() {
                    Some(r) => r.rank(host),
                    None => RouteRules::default().rank(host),
                };
                std::cmp::Reverse(rank)
            });
            RouteList::new(list)
        };
        ix.exact = exact
            .into_iter()
            .map(|(h, l)| {
                let l = ranked(&h, l);
                (h, l)
            })
            .collect();
        ix.wildcards = wild
            .into_iter()
            .map(|(s, l)| {
                let l = ranked(&format!("*{s}"), l);
                (s, l)
            })
            .collect();
        ix.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        ix
    }

    /// [`RouteIndex::build`] for the same routes (the same `Arc`) as
    /// `previous`'s, with no pool a route names new (pools may have come
    /// that no route names, or gone): its host index is taken as it is,
    /// and so is each route, metric handles and all, given its pool and
    /// middlewares as they are now; only a route whose pool's versions
    /// changed (names or order) is made again, with new handles.
    fn renew(
        previous: &RoutingTable,
        config: &Config,
        pools: &BTreeMap<Arc<str>, Arc<Pool>>,
        successors: &PoolSuccessors,
        metrics: &Metrics,
        middlewares: &Middlewares,
    ) -> Self {
        let mut ix = RouteIndex {
            exact: previous.exact.clone(),
            wildcards: previous.wildcards.clone(),
            routes: Vec::with_capacity(previous.routes.len()),
        };
        // The same walk as `build`'s: a route per configured route whose
        // pool exists, then one for its preview host. No pool a route
        // names is new, so a configured route has entries now only if it
        // had: then the next previous entry is its own and names that pool
        // (a missing pool is no route's), and the pool now is that one's
        // successor (no lookup by name). A pool gone has none: the index
        // is built whole.
        let mut old = previous.routes.iter().peekable();
        for rc in config.routes.iter() {
            if old.peek().is_none_or(|r| *r.pool.name != *rc.pool) {
                continue;
            }
            let chain = chain_of(rc, middlewares);
            for preview in [false, true] {
                if preview && rc.preview.is_none() {
                    continue;
                }
                let next = old.next().and_then(|before| {
                    let pool = successors.get(&(Arc::as_ptr(&before.pool) as usize))?;
                    Some((before, pool))
                });
                let Some((before, pool)) = next else {
                    // A route's pool gone: a full build.
                    return RouteIndex::build(config, pools, metrics, middlewares);
                };
                let same_chain = before.middlewares.len() == chain.len()
                    && before
                        .middlewares
                        .iter()
                        .zip(&chain)
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                // A route's series are named by its label, pool and
                // versions: with the same versions, in the same order, the
                // handles are the ones it has.
                let same_series = Arc::ptr_eq(&before.pool, pool)
                    || (before.pool.versions.len() == pool.versions.len()
                        && before
                            .pool
                            .versions
                            .iter()
                            .zip(&pool.versions)
                            .all(|(a, b)| a.name == b.name));
                if same_series {
                    let mut route = before.clone();
                    route.pool = pool.clone();
                    if !same_chain {
                        route.middlewares = chain.clone();
                    }
                    ix.routes.push(route);
                } else {
                    let host = before.host.clone();
                    ix.push(metrics, &host, pool, rc, &chain, preview);
                }
            }
        }
        ix
    }

    /// Adds a route for `host` with its metric handles; returns its index.
    fn push(
        &mut self,
        metrics: &Metrics,
        host: &Arc<str>,
        pool: &Arc<Pool>,
        rc: &RouteConfig,
        chain: &[Arc<Middleware>],
        preview: bool,
    ) -> usize {
        static NO_VERSION: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "".into());
        let index = self.routes.len();
        let has_rules = !rc.rules.is_empty() || rc.rules.priority.is_some();
        // A host-only route's label is its host ([`RouteConfig::label`]).
        let label: Arc<str> = if has_rules {
            rc.label(host).into()
        } else {
            host.clone()
        };
        let per = pool
            .versions
            .iter()
            .map(|v| metrics.request_handles_shared(&label, &pool.name, &v.name))
            .collect();
        let unpicked = metrics.request_handles_shared(&label, &pool.name, &NO_VERSION);
        self.routes.push(Route {
            index,
            host: host.clone(),
            label,
            rules: has_rules.then(|| rc.rules.clone()),
            middlewares: chain.into(),
            pool: pool.clone(),
            tls: rc.tls.clone(),
            redirect_https: rc.redirect_https,
            preview,
            metrics: per,
            unpicked,
        });
        index
    }
}

// === impl Pool ===

impl Pool {
    /// A pool's versions with their backends (taken from `registry`, each
    /// noted in `used`), schedules (from `schedules`) and sticky layout.
    ///
    /// `old` is the previous table's pool of this name, if any: its names,
    /// `x-served-by` values and backends are taken where the config did not
    /// change them (a weight change in every pool of a big config then
    /// makes only schedules), and so are its schedules' cycles.
    fn build(
        name: &str,
        pc: &Arc<PoolConfig>,
        canary: Option<&str>,
        registry: &BackendRegistry,
        used: &mut BackendSet,
        old: Option<&Pool>,
        schedules: &mut Schedules,
    ) -> Pool {
        let name: Arc<str> = match old {
            Some(o) => o.name.clone(),
            None => name.into(),
        };
        let versions: Vec<Version> = pc
            .versions
            .iter()
            .map(|(vname, vc)| {
                let before = old.and_then(|o| o.versions.iter().find(|v| &*v.name == vname));
                Version::build(&name, vname, vc, registry, used, before)
            })
            .collect();
        let weights: Vec<u32> = versions.iter().map(|v| v.weight).collect();
        let effective: Vec<u32> = versions
            .iter()
            .map(|v| if v.has_available() { v.weight } else { 0 })
            .collect();
        let canary = canary.and_then(|c| versions.iter().position(|v| &*v.name == c));
        let sticky = pc.sticky.clone().map(|s| {
            // Canary first, then the others in name order.
            let mut order: Vec<(usize, u32)> = Vec::new();
            if let Some(c) = canary {
                order.push((c, weights[c]));
            }
            order.extend(
                weights
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| Some(i) != canary)
                    .map(|(i, &w)| (i, w)),
            );
            (s, StickyRanges::new(&order))
        });
        let preview = canary.or_else(|| versions.iter().position(|v| v.weight == 0));
        let matches = pc
            .matches
            .iter()
            .filter_map(|m| {
                let i = versions.iter().position(|v| *v.name == *m.version)?;
                Some((m.clone(), i))
            })
            .collect();
        let schedule = match old {
            Some(o) if *o.scheduled == *effective => o.schedule.share(),
            _ => schedules.get(&effective),
        };
        Pool {
            matches,
            name,
            config: pc.clone(),
            canary,
            configured: match old {
                Some(o)
                    if o.versions
                        .iter()
                        .map(|v| v.weight)
                        .eq(weights.iter().copied()) =>
                {
                    o.configured.share()
                }
                _ if weights == effective => schedule.share(),
                _ => schedules.get(&weights),
            },
            schedule,
            scheduled: effective.into(),
            versions,
            sticky,
            pin_header: pc.pin_header.clone(),
            version_header: pc.version_header,
            retry: pc.retry,
            on_all_down: pc.on_all_down,
            passive: pc.passive.clone(),
            max_conns: pc.max_connections_per_backend,
            queue_timeout: pc.queue_timeout,
            preview,
        }
    }
    /// Whether a build from `pc` with `canary` would make this very pool:
    /// the same config (the same `Arc`, or an equal one), the same canary,
    /// and every version as available as when its schedule was made.
    fn unchanged(&self, pc: &Arc<PoolConfig>, canary: Option<&str>) -> bool {
        // A canary the pool does not have is ignored by a build.
        let canary = canary.and_then(|c| self.versions.iter().position(|v| &*v.name == c));
        (Arc::ptr_eq(&self.config, pc) || *self.config == **pc)
            && canary == self.canary
            && self
                .versions
                .iter()
                .zip(self.scheduled.iter())
                .all(|(v, &w)| w == if v.has_available() { v.weight } else { 0 })
    }

    /// Adds this pool's backends to `used` (a kept pool's backends stay in
    /// the registry).
    fn note_backends(&self, used: &mut BackendSet) {
        for v in &self.versions {
            for b in &v.backends {
                used.insert(Arc::as_ptr(b));
            }
        }
    }

    /// [`Pool::pick_with`] without a version rule's choice.
    #[inline]
    pub fn pick(
        &self,
        pinned: Option<&[u8]>,
        preview: bool,
        sticky_bucket: Option<u32>,
    ) -> Pick<'_> {
        self.pick_with(pinned, preview, None, sticky_bucket)
    }

    /// The version the pool's version rules send a request to (the first
    /// rule that matches), if any.
    #[inline]
    pub fn match_version(&self, headers: &http::HeaderMap, query: Option<&str>) -> Option<usize> {
        self.matches
            .iter()
            .find(|(rule, _)| rule.matches(headers, query))
            .map(|&(_, i)| i)
    }

    /// The pool's version rules, in order.
    pub fn version_rules(&self) -> impl Iterator<Item = &VersionRule> {
        self.matches.iter().map(|(r, _)| r)
    }

    /// Chooses a version for a request: a pinned version, the preview
    /// version, the version a version rule chose (`matched`), the sticky
    /// user's version, or the weighted schedule over versions that have an
    /// available backend. A pin or a preview is strict: the version it
    /// names, or a refusal ([`Pick::NamedDown`], [`Pick::UnknownPin`],
    /// [`Pick::NoPreview`]), never the split; the later steps are skipped
    /// when their version has no available backend.
    #[inline]
    pub fn pick_with(
        &self,
        pinned: Option<&[u8]>,
        preview: bool,
        matched: Option<usize>,
        sticky_bucket: Option<u32>,
    ) -> Pick<'_> {
        if let Some(name) = pinned {
            return match self
                .versions
                .iter()
                .enumerate()
                .find(|(_, v)| v.name.as_bytes() == name)
            {
                Some((i, v)) if v.has_available() => Pick::Named(i, v),
                Some((_, v)) => Pick::NamedDown(v),
                None => Pick::UnknownPin,
            };
        }
        if preview {
            return match self.preview.map(|i| (i, &self.versions[i])) {
                Some((i, v)) if v.has_available() => Pick::Named(i, v),
                Some((_, v)) => Pick::NamedDown(v),
                None => Pick::NoPreview,
            };
        }
        if let Some(v) = matched.and_then(|i| self.versions.get(i).map(|v| (i, v))) {
            if v.1.has_available() {
                return Pick::Version(v.0, v.1);
            }
        }
        if let (Some(bucket), Some((_, ranges))) = (sticky_bucket, &self.sticky) {
            if let Some(i) = ranges.entry(bucket) {
                if self.versions[i].has_available() {
                    return Pick::Version(i, &self.versions[i]);
                }
            }
        }
        match self.schedule.pick(|i| self.versions[i].has_available()) {
            Some(i) => Pick::Version(i, &self.versions[i]),
            None => Pick::AllDown,
        }
    }

    /// For `on_all_down = "fail_open"`: the weighted choice ignoring health.
    pub fn pick_ignoring_health(&self) -> Option<(usize, &Version)> {
        self.configured
            .pick(|_| true)
            .map(|i| (i, &self.versions[i]))
    }

    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref().map(|(s, _)| s)
    }

    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| &*v.name == name)
    }

    /// Effective weight of each version, as the split applies it now: the
    /// weight the schedule was built with while the version has an available
    /// backend, else 0. A version that comes back counts once the rebuild
    /// that health asks for has swapped in a table built with it.
    pub fn effective_weights(&self) -> Vec<u32> {
        self.versions
            .iter()
            .zip(self.scheduled.iter())
            .map(|(v, &w)| if v.has_available() { w } else { 0 })
            .collect()
    }
}

// === impl Version ===

impl Version {
    /// A version with its backends, each noted in `used`. `old` is the
    /// previous table's version of this name in this pool: its name and
    /// header are shared, and its backends taken as they are when the
    /// config lists the same addresses in the same order (the registry
    /// holds every backend of the previous table, so a lookup would give
    /// these very backends).
    fn build(
        pool: &Arc<str>,
        name: &str,
        vc: &VersionConfig,
        registry: &BackendRegistry,
        used: &mut BackendSet,
        old: Option<&Version>,
    ) -> Version {
        let (name, header) = match old {
            Some(o) => (o.name.clone(), o.header.clone()),
            None => {
                let name: Arc<str> = name.into();
                // Names are validated ASCII; an empty value cannot happen.
                let header = http::HeaderValue::from_str(&name)
                    .unwrap_or(http::HeaderValue::from_static(""));
                (name, header)
            }
        };
        let same_backends = old.is_some_and(|o| {
            o.backends.len() == vc.backends.len()
                && o.backends
                    .iter()
                    .zip(&vc.backends)
                    .all(|(b, a)| b.key.addr == *a)
        });
        let backends = match old {
            Some(o) if same_backends => o
                .backends
                .iter()
                .inspect(|b| {
                    used.insert(Arc::as_ptr(b));
                })
                .cloned()
                .collect(),
            _ => vc
                .backends
                .iter()
                .map(|addr| {
                    let key = BackendKey {
                        pool: pool.clone(),
                        version: name.clone(),
                        addr: addr.clone(),
                    };
                    let b = registry.get_or_create(key);
                    used.insert(Arc::as_ptr(&b));
                    b
                })
                .collect(),
        };
        Version {
            header,
            name,
            weight: vc.weight,
            backends,
            rr: RoundRobin::default(),
        }
    }

    #[inline]
    pub fn has_available(&self) -> bool {
        self.backends.iter().any(|b| b.is_available())
    }

    /// Round robin over available backends.
    #[inline]
    pub fn pick_backend(&self) -> Option<&Arc<Backend>> {
        self.rr
            .pick(self.backends.len(), |i| self.backends[i].is_available())
            .map(|i| &self.backends[i])
    }

    /// Round robin ignoring health (fail-open).
    pub fn pick_any_backend(&self) -> Option<&Arc<Backend>> {
        self.rr
            .pick(self.backends.len(), |_| true)
            .map(|i| &self.backends[i])
    }

    /// Another available backend than `not`, for a retry.
    pub fn pick_backend_except(&self, not: &Backend) -> Option<&Arc<Backend>> {
        self.rr
            .pick(self.backends.len(), |i| {
                self.backends[i].is_available() && !std::ptr::eq(&*self.backends[i], not)
            })
            .map(|i| &self.backends[i])
    }

    pub fn in_flight(&self) -> usize {
        self.backends
            .iter()
            .map(|b| b.in_flight.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> (RoutingTable, BackendRegistry) {
        let config = Config::from_toml_str(text).unwrap();
        let reg = BackendRegistry::default();
        (RoutingTable::build(&config, &reg, &HashMap::new()), reg)
    }

    const TEXT: &str = r#"
[[routes]]
host = "app.test"
pool = "app"
preview = "next.app.test"
[[routes]]
host = "*.test"
pool = "other"
[[routes]]
host = "*.deep.test"
pool = "app"
[pools.app.versions.blue]
weight = 3
backends = ["127.0.0.1:1", "127.0.0.1:2"]
[pools.app.versions.green]
weight = 1
backends = ["127.0.0.1:3"]
[pools.app.versions.grey]
weight = 0
backends = ["127.0.0.1:4"]
[pools.other.versions.v1]
weight = 1
backends = ["127.0.0.1:5"]
"#;

    #[test]
    fn host_lookup_exact_beats_wildcard_longest_wildcard_wins() {
        let (t, _) = table(TEXT);
        assert_eq!(&*t.route("APP.test:8080").unwrap().pool.name, "app");
        assert_eq!(&*t.route("x.test").unwrap().pool.name, "other");
        assert_eq!(&*t.route("x.deep.test").unwrap().pool.name, "app");
        assert!(t.route("test").is_none());
        assert!(t.route("nope.example").is_none());
        assert!(t.route("bad host").is_none());
        assert!(t.route("next.app.test").unwrap().preview);
    }

    #[test]
    fn pick_follows_weights_and_skips_down_versions() {
        let (t, reg) = table(TEXT);
        let pool = &t.pools["app"];
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let Pick::Version(_, v) = pool.pick(None, false, None) else {
                panic!("all down")
            };
            *counts.entry(v.name.to_string()).or_insert(0) += 1;
        }
        assert_eq!(counts["blue"], 300);
        assert_eq!(counts["green"], 100);
        assert!(!counts.contains_key("grey"));

        for b in reg.all().iter().filter(|b| &*b.key.version == "blue") {
            b.set_healthy(false);
        }
        for _ in 0..10 {
            let Pick::Version(_, v) = pool.pick(None, false, None) else {
                panic!()
            };
            assert_eq!(&*v.name, "green");
        }
        assert_eq!(pool.effective_weights(), vec![0, 1, 0]);
        for b in reg.all() {
            b.set_healthy(false);
        }
        assert!(matches!(pool.pick(None, false, None), Pick::AllDown));
        assert!(pool.pick_ignoring_health().is_some());
    }

    #[test]
    fn pin_and_preview_reach_weight_zero() {
        let (t, _) = table(TEXT);
        let pool = &t.pools["app"];
        let Pick::Named(_, v) = pool.pick(Some(b"grey"), false, None) else {
            panic!()
        };
        assert_eq!(&*v.name, "grey");
        let Pick::Named(_, v) = pool.pick(None, true, None) else {
            panic!()
        };
        assert_eq!(&*v.name, "grey");
        // An unknown pin is refused, never the split.
        assert!(matches!(
            pool.pick(Some(b"nope"), false, None),
            Pick::UnknownPin
        ));
        assert!(matches!(
            pool.pick(Some(b""), false, None),
            Pick::UnknownPin
        ));
    }

    #[test]
    fn a_pin_or_preview_of_a_version_without_backends_is_refused() {
        let (t, _) = table(TEXT);
        let pool = &t.pools["app"];
        for b in &pool.version("grey").unwrap().backends {
            b.set_healthy(false);
        }
        let Pick::NamedDown(v) = pool.pick(Some(b"grey"), false, None) else {
            panic!("a pin of a down version must not fall back")
        };
        assert_eq!(&*v.name, "grey");
        assert!(matches!(pool.pick(None, true, None), Pick::NamedDown(_)));
        // The split is unaffected.
        assert!(matches!(pool.pick(None, false, None), Pick::Version(..)));
    }

    #[test]
    fn a_build_keeps_the_pools_nothing_changed() {
        let config = Config::from_toml_str(TEXT).unwrap();
        let reg = BackendRegistry::default();
        let metrics = Metrics::new();
        let (mw, _) = Middlewares::build(&config, None, &metrics);
        let none = HashMap::new();
        let build =
            |prev: Option<&RoutingTable>, c: &Config, canaries: &HashMap<String, String>| {
                RoutingTable::build_from(prev, c, &reg, canaries, &metrics, &mw)
            };
        let t1 = build(None, &config, &none);
        // The same file read again: equal pools, other Arcs.
        let again = Config::from_toml_str(TEXT).unwrap();
        let t2 = build(Some(&t1), &again, &none);
        for name in ["app", "other"] {
            assert!(Arc::ptr_eq(&t1.pools[name], &t2.pools[name]), "{name}");
        }
        // The routes point at the kept pools.
        assert!(Arc::ptr_eq(
            &t2.route("app.test").unwrap().pool,
            &t2.pools["app"]
        ));
        // A changed weight rebuilds that pool only.
        let changed = Config::from_toml_str(&TEXT.replace("weight = 3\n", "weight = 4\n")).unwrap();
        let t3 = build(Some(&t2), &changed, &none);
        assert!(!Arc::ptr_eq(&t2.pools["app"], &t3.pools["app"]));
        assert_eq!(t3.pools["app"].version("blue").unwrap().weight, 4);
        assert!(Arc::ptr_eq(&t2.pools["other"], &t3.pools["other"]));
        // The backends are the registry's, kept or not.
        assert!(Arc::ptr_eq(
            &t2.pools["app"].version("green").unwrap().backends[0],
            &t3.pools["app"].version("green").unwrap().backends[0]
        ));
        assert_eq!(reg.all().len(), 5);
        // A canary, or a version losing its backends, rebuilds the pool.
        let canaries = HashMap::from([("app".to_string(), "green".to_string())]);
        let t4 = build(Some(&t3), &changed, &canaries);
        assert!(!Arc::ptr_eq(&t3.pools["app"], &t4.pools["app"]));
        let t5 = build(Some(&t4), &changed, &canaries);
        assert!(Arc::ptr_eq(&t4.pools["app"], &t5.pools["app"]));
        t5.pools["other"].versions[0].backends[0].set_healthy(false);
        let t6 = build(Some(&t5), &changed, &canaries);
        assert!(!Arc::ptr_eq(&t5.pools["other"], &t6.pools["other"]));
        assert_eq!(t6.pools["other"].effective_weights(), vec![0]);
        assert!(Arc::ptr_eq(&t5.pools["app"], &t6.pools["app"]));
        // A pool gone from the config is gone from the registry.
        let fewer =
            Config::from_toml_str(&TEXT.replace("pool = \"other\"", "pool = \"app\"").replace(
                "[pools.other.versions.v1]\nweight = 1\nbackends = [\"127.0.0.1:5\"]\n",
                "",
            ))
            .unwrap();
        let t7 = build(Some(&t6), &fewer, &canaries);
        assert!(!t7.pools.contains_key("other"));
        assert_eq!(reg.all().len(), 4);
    }

    #[test]
    fn a_changed_pool_takes_what_did_not_change_from_the_old_one() {
        let config = Config::from_toml_str(TEXT).unwrap();
        let reg = BackendRegistry::default();
        let metrics = Metrics::new();
        let (mw, _) = Middlewares::build(&config, None, &metrics);
        let none = HashMap::new();
        let t1 = RoutingTable::build_from(None, &config, &reg, &none, &metrics, &mw);
        let seq = |s: &Schedule| s.sequence().as_ptr();

        // A weight changes: the same versions and backends, new schedules.
        let weights = Config::from_toml_str(&TEXT.replace("weight = 3\n", "weight = 5\n")).unwrap();
        let t2 = RoutingTable::build_from(Some(&t1), &weights, &reg, &none, &metrics, &mw);
        let (a, b) = (&t1.pools["app"], &t2.pools["app"]);
        assert!(!Arc::ptr_eq(a, b));
        assert!(Arc::ptr_eq(&a.name, &b.name));
        for (va, vb) in a.versions.iter().zip(&b.versions) {
            assert!(Arc::ptr_eq(&va.name, &vb.name));
            assert_eq!(va.header, vb.header);
            assert_eq!(va.backends.len(), vb.backends.len());
            for (ba, bb) in va.backends.iter().zip(&vb.backends) {
                assert!(Arc::ptr_eq(ba, bb));
            }
        }
        assert_eq!(b.version("blue").unwrap().weight, 5);
        assert_ne!(seq(&a.schedule), seq(&b.schedule));
        assert_eq!(
            b.schedule.sequence(),
            Schedule::new(&[5, 1, 0]).sequence(),
            "the new weights' cycle"
        );
        // Every backend up: the configured schedule is the same cycle.
        assert_eq!(seq(&b.schedule), seq(&b.configured));
        // The routes of the changed pool point at it, with series for the
        // same versions, as a full build would make them.
        let full = RoutingTable::build_from(None, &weights, &reg, &none, &metrics, &mw);
        for h in ["app.test", "next.app.test", "x.deep.test"] {
            let (r, f) = (t2.route(h).unwrap(), full.route(h).unwrap());
            assert!(Arc::ptr_eq(&r.pool, b), "{h}");
            assert_eq!(
                (&r.label, r.index, r.metrics.len()),
                (&f.label, f.index, f.metrics.len())
            );
        }
        assert_eq!(reg.all().len(), 5);

        // A pool whose weights did not change keeps its cycle when rebuilt
        // for another reason (a backend added to a version).
        let more = Config::from_toml_str(&TEXT.replace(
            "backends = [\"127.0.0.1:3\"]",
            "backends = [\"127.0.0.1:3\", \"127.0.0.1:6\"]",
        ))
        .unwrap();
        let t3 = RoutingTable::build_from(Some(&t1), &more, &reg, &none, &metrics, &mw);
        let c = &t3.pools["app"];
        assert_eq!(seq(&a.schedule), seq(&c.schedule));
        // The changed version's backends are the registry's: the kept
        // address keeps its backend, the new one is new.
        let (ga, gc) = (a.version("green").unwrap(), c.version("green").unwrap());
        assert!(Arc::ptr_eq(&ga.backends[0], &gc.backends[0]));
        assert_eq!(gc.backends[1].key.addr.to_string(), "127.0.0.1:6");
        assert_eq!(reg.all().len(), 6);
        // The unchanged versions still share theirs.
        assert!(Arc::ptr_eq(
            &a.version("blue").unwrap().backends[1],
            &c.version("blue").unwrap().backends[1]
        ));

        // A version renamed: the route's series follow the new names.
        let renamed =
            Config::from_toml_str(&TEXT.replace("versions.grey]", "versions.gray]")).unwrap();
        let t4 = RoutingTable::build_from(Some(&t1), &renamed, &reg, &none, &metrics, &mw);
        let full = RoutingTable::build_from(None, &renamed, &reg, &none, &metrics, &mw);
        let names = |t: &RoutingTable| -> Vec<String> {
            t.pools["app"]
                .versions
                .iter()
                .map(|v| v.name.to_string())
                .collect()
        };
        assert_eq!(names(&t4), names(&full));
        assert!(t4.pools["app"].version("gray").is_some());
        let series = |t: &RoutingTable| -> Vec<[String; 3]> {
            t.route("app.test")
                .unwrap()
                .metrics
                .iter()
                .map(|m| m.labels().map(str::to_string))
                .collect()
        };
        assert_eq!(series(&t4), series(&full));
        assert!(series(&t4).iter().any(|l| l[2] == "gray"));
        // And with the same names, the series a weight change keeps.
        assert_eq!(series(&t2), series(&t1));
    }

    #[test]
    fn a_build_with_the_same_routes_keeps_their_index_and_remakes_the_changed_ones() {
        let text = format!(
            "{TEXT}[[routes]]\nhost = \"mw.test\"\npool = \"other\"\nmiddlewares = [\"h\"]\n\
             [middlewares.h.headers]\nframe_deny = true\n"
        );
        let config = Config::from_toml_str(&text).unwrap();
        let reg = BackendRegistry::default();
        let metrics = Metrics::new();
        let (mw, _) = Middlewares::build(&config, None, &metrics);
        let none = HashMap::new();
        let t1 = RoutingTable::build_from(None, &config, &reg, &none, &metrics, &mw);
        let host = |t: &RoutingTable, h: &str| t.route(h).unwrap().host.clone();

        // Pool "app" changes; the routes are the same Arc.
        let mut changed = config.clone();
        let mut app = PoolConfig::clone(&config.pools["app"]);
        app.versions.get_mut("blue").unwrap().weight = 9;
        changed.pools.insert("app".into(), Arc::new(app));
        let t2 = RoutingTable::build_from(Some(&t1), &changed, &reg, &none, &metrics, &mw);
        // The host index is the previous one (its keys are the same Arcs).
        for h in ["app.test", "next.app.test", "x.test", "mw.test"] {
            assert!(Arc::ptr_eq(&host(&t1, h), &host(&t2, h)), "{h}");
        }
        // Routes of the changed pool point at the new pool, the others at
        // the kept one, and every lookup finds what a full build finds.
        let full = RoutingTable::build_from(None, &changed, &reg, &none, &metrics, &mw);
        for h in [
            "app.test",
            "next.app.test",
            "x.test",
            "x.deep.test",
            "mw.test",
        ] {
            let (r, f) = (t2.route(h).unwrap(), full.route(h).unwrap());
            assert!(Arc::ptr_eq(&r.pool, &t2.pools[&*r.pool.name]), "{h}");
            assert_eq!(
                (&r.label, &r.pool.name, r.preview, r.index, r.metrics.len()),
                (&f.label, &f.pool.name, f.preview, f.index, f.metrics.len()),
                "{h}"
            );
        }
        assert!(!Arc::ptr_eq(&t1.pools["app"], &t2.pools["app"]));
        assert!(Arc::ptr_eq(&t1.pools["other"], &t2.pools["other"]));
        assert_eq!(
            t2.route("app.test")
                .unwrap()
                .pool
                .version("blue")
                .unwrap()
                .weight,
            9
        );
        assert_eq!(t2.routes().len(), t1.routes().len());

        // A changed middleware is picked up by its route.
        let mw2_text = text.replace(
            "frame_deny = true",
            "frame_deny = false\ncontent_type_nosniff = true",
        );
        let mut mw_changed = changed.clone();
        mw_changed.middlewares = Config::from_toml_str(&mw2_text).unwrap().middlewares;
        let (mw2, _) = Middlewares::build(&mw_changed, Some(&mw), &metrics);
        let t3 = RoutingTable::build_from(Some(&t2), &mw_changed, &reg, &none, &metrics, &mw2);
        let chain = &t3.route("mw.test").unwrap().middlewares;
        assert_eq!(chain.len(), 1);
        assert!(Arc::ptr_eq(&chain[0], mw2.get("h").unwrap()));
        assert!(!Arc::ptr_eq(&chain[0], mw.get("h").unwrap()));

        // Other routes (another Arc): a full build, new index.
        let other = Config::from_toml_str(&text).unwrap();
        let t4 = RoutingTable::build_from(Some(&t3), &other, &reg, &none, &metrics, &mw2);
        assert!(!Arc::ptr_eq(&host(&t3, "x.test"), &host(&t4, "x.test")));

        // A pool no route names comes, then goes: the index is kept.
        let mut more = mw_changed.clone();
        let spare = PoolConfig::clone(&mw_changed.pools["app"]);
        more.pools.insert("spare".into(), Arc::new(spare));
        let t5 = RoutingTable::build_from(Some(&t3), &more, &reg, &none, &metrics, &mw2);
        let t6 = RoutingTable::build_from(Some(&t5), &mw_changed, &reg, &none, &metrics, &mw2);
        for h in ["app.test", "x.test", "mw.test"] {
            assert!(Arc::ptr_eq(&host(&t3, h), &host(&t5, h)), "{h}");
            assert!(Arc::ptr_eq(&host(&t3, h), &host(&t6, h)), "{h}");
        }
        assert!(t5.pools.contains_key("spare") && !t6.pools.contains_key("spare"));
        assert_eq!(t5.routes().len(), t3.routes().len());
        assert_eq!(t6.routes().len(), t3.routes().len());

        // A pool routes name, gone (the effective config may lack it) and
        // back with the same routes: their entries come back, a new index.
        let mut without = mw_changed.clone();
        without.pools.remove("other");
        let t7 = RoutingTable::build_from(Some(&t3), &without, &reg, &none, &metrics, &mw2);
        assert!(t7.route("mw.test").is_none() && t7.route("app.test").is_some());
        let t8 = RoutingTable::build_from(Some(&t7), &mw_changed, &reg, &none, &metrics, &mw2);
        let full = RoutingTable::build_from(None, &mw_changed, &reg, &none, &metrics, &mw2);
        for h in ["app.test", "next.app.test", "x.test", "mw.test"] {
            let (r, f) = (t8.route(h).unwrap(), full.route(h).unwrap());
            assert_eq!(
                (&r.label, &r.pool.name, r.preview, r.index),
                (&f.label, &f.pool.name, f.preview, f.index),
                "{h}"
            );
        }
        assert_eq!(t8.routes().len(), t3.routes().len());
    }

    #[test]
    fn backends_round_robin_and_registry_keeps_state_across_builds() {
        let (t, reg) = table(TEXT);
        let v = t.pools["app"].version("blue").unwrap();
        let a = v.pick_backend().unwrap().key.addr.to_string();
        let b = v.pick_backend().unwrap().key.addr.to_string();
        assert_ne!(a, b);
        v.backends[0].set_healthy(false);
        let config = Config::from_toml_str(TEXT).unwrap();
        let t2 = RoutingTable::build(&config, &reg, &HashMap::new());
        assert!(!t2.pools["app"].version("blue").unwrap().backends[0].is_healthy());
        assert!(Arc::ptr_eq(
            &v.backends[0],
            &t2.pools["app"].version("blue").unwrap().backends[0]
        ));
    }
}
