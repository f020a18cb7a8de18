//! Prometheus metrics: per-version RED series, backend and weight gauges, and
//! the windowed reader the rollout controller judges from.
//!
//! ```text
//! RoutingTable::build ─> Metrics::request_handles(route, pool, version)  (label lookup once)
//! request end         ─> RequestMetrics::record(status, elapsed)         (atomics only)
//! GET /metrics        ─> TextEncoder over the registry
//! rollout controller  ─> Metrics::sample(pool, version) twice ─> Window (count, 5xx rate, quantiles)
//! ```
//!
//! Metric names are the constants in [`names`]; nothing else spells them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric name switchyard exports.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
    pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
    pub const RESPONSE_DURATION: &str = "switchyard_response_duration_seconds";
    pub const UPSTREAM_ERRORS_TOTAL: &str = "switchyard_upstream_errors_total";
    pub const BACKEND_UP: &str = "switchyard_backend_up";
    pub const VERSION_WEIGHT: &str = "switchyard_version_weight";
    pub const ROLLOUT_CANARY_PERCENT: &str = "switchyard_rollout_canary_percent";
    pub const ROLLOUT_STATE: &str = "switchyard_rollout_state";
    pub const CERTIFICATE_EXPIRY: &str = "switchyard_certificate_expiry_timestamp_seconds";
    pub const CONFIG_RELOADS_TOTAL: &str = "switchyard_config_reloads_total";
    pub const ACCESS_LOG_DROPPED_TOTAL: &str = "switchyard_access_log_dropped_total";
    pub const PROVIDER_UP: &str = "switchyard_provider_up";
    pub const MIDDLEWARE_REJECTED_TOTAL: &str = "switchyard_middleware_rejected_total";
    pub const CLUSTER_CONNECTED: &str = "switchyard_cluster_connected";
}

pub mod window;

pub use window::{FleetSample, Sample, Window, BUCKETS};

/// Status codes whose counters are resolved ahead; others on first use.
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 308, 400, 401, 403, 404, 421, 500, 502, 503, 504,
];

/// The registry and every metric family.
pub struct Metrics {
    pub registry: Registry,
    /// Requests, durations to the head and to the end, by route, pool
    /// and version: shared with every [`RequestMetrics`].
    families: Arc<Families>,
    upstream_errors: IntCounterVec,
    /// `switchyard_version_weight` and `switchyard_backend_up`, rendered
    /// from the last table's rows at each scrape.
    table_gauges: TableGauges,
    pub rollout_canary_percent: IntGaugeVec,
    pub rollout_state: IntGaugeVec,
    pub certificate_expiry: GaugeVec,
    config_reloads: IntCounterVec,
    /// Access log lines dropped because the writer was behind.
    pub access_log_dropped: IntCounter,
    /// 1 while a discovery provider (`docker`) is reachable and followed.
    pub provider_up: IntGaugeVec,
    /// Requests a middleware answered itself (401, 403, 429, redirects),
    /// by middleware and status code.
    pub middleware_rejected: IntCounterVec,
}

/// The weight of every version and the state of every backend of the
/// current table, read from the table's own pools only when scraped. Gauge
/// series kept in a `GaugeVec` cost ~450 bytes each (label pairs, a hash
/// entry, an atomic in an `Arc`) plus the bookkeeping to remove stale ones:
/// ~18 MB at 10 000 pools of two versions; rows copied out of each table
/// cost 100 000 small allocations a build. The source is replaced whole at
/// every build, so a version or backend that is gone is simply not in the
/// next scrape.
#[derive(Clone)]
struct TableGauges {
    rows: Arc<ArcSwap<Box<dyn GaugeSource>>>,
    descs: Arc<[Desc; 2]>,
}

/// Where the weight and backend gauges are read from at a scrape: the
/// routing table's pools (see [`Metrics::set_gauge_source`]).
pub trait GaugeSource: Send + Sync {
    /// Calls `weight(pool, version, effective weight)` for every version.
    fn weights(&self, weight: &mut dyn FnMut(&str, &str, i64));
    /// Calls `backend(pool, version, address, in rotation)` for every
    /// backend.
    fn backends(&self, backend: &mut dyn FnMut(&str, &str, &str, bool));
}

/// Rows given as they are ([`Metrics::set_gauges`]).
#[derive(Default)]
struct GaugeRows {
    weights: Vec<WeightRow>,
    backends: Vec<BackendRow>,
}

/// (pool, version, effective weight)
type WeightRow = (Box<str>, Box<str>, i64);
/// (pool, version, backend, in rotation)
type BackendRow = (Box<str>, Box<str>, Box<str>, bool);

impl GaugeSource for GaugeRows {
    fn weights(&self, weight: &mut dyn FnMut(&str, &str, i64)) {
        for (p, v, w) in &self.weights {
            weight(p, v, *w);
        }
    }

    fn backends(&self, backend: &mut dyn FnMut(&str, &str, &str, bool)) {
        for (p, v, b, up) in &self.backends {
            backend(p, v, b, *up);
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn gauge_metric(labels: Vec<LabelPair>, value: i64) -> Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    let mut m = Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

fn gauge_family(desc: &Desc, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(desc.fq_name.clone());
    mf.set_help(desc.help.clone());
    mf.set_field_type(MetricType::GAUGE);
    mf.set_metric(metrics);
    mf
}

impl TableGauges {
    fn new() -> TableGauges {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("valid metric definition")
        };
        TableGauges {
            rows: Arc::new(ArcSwap::from_pointee(Box::new(GaugeRows::default()))),
            descs: Arc::new([
                desc(
                    names::VERSION_WEIGHT,
                    "Effective weight of a version (0 without an available backend)",
                    &["pool", "version"],
                ),
                desc(
                    names::BACKEND_UP,
                    "1 when the backend is in rotation (healthy, not ejected)",
                    &["pool", "version", "backend"],
                ),
            ]),
        }
    }

    fn set(&self, rows: Box<dyn GaugeSource>) {
        self.rows.store(Arc::new(rows));
    }
}

impl Collector for TableGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A scrape never holds up a build, nor a build a scrape.
        let rows = self.rows.load_full();
        let mut weights = Vec::new();
        rows.weights(&mut |p, v, w| {
            weights.push(gauge_metric(vec![label("pool", p), label("version", v)], w))
        });
        let mut backends = Vec::new();
        rows.backends(&mut |p, v, b, up| {
            let labels = vec![label("backend", b), label("pool", p), label("version", v)];
            backends.push(gauge_metric(labels, i64::from(up)))
        });
        vec![
            gauge_family(&self.descs[0], weights),
            gauge_family(&self.descs[1], backends),
        ]
    }
}

/// Handles for one (route, pool, version). Each series is resolved on its
/// first use and kept for the table's life (and the next table's, for a
/// route it takes over unchanged), so a table build costs no label
/// lookups and a route that is never requested exports nothing: memory and
/// `/metrics` grow with what is used, not with the config.
///
/// A handle that was never used is 72 bytes (three shared label strings, the
/// families, an empty cell); the counters and histograms of a used one live
/// in a [`Series`] boxed on its first answer. At 10 000 routes of two
/// versions (three handles a route) that is ~2 MB instead of ~14 MB.
#[derive(Clone)]
pub struct RequestMetrics {
    route: Arc<str>,
    pool: Arc<str>,
    version: Arc<str>,
    families: Arc<Families>,
    series: OnceLock<Box<Series>>,
}

/// The request families every handle resolves its series in.
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    response: HistogramVec,
}

/// The resolved series of a used handle.
#[derive(Clone)]
struct Series {
    codes: [OnceLock<IntCounter>; COMMON_CODES.len()],
    duration: OnceLock<Histogram>,
    response: OnceLock<Histogram>,
}

// The definitions are constant: `expect` can only fire on a typo in a name
// here, which every test run would show at once.

fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn histograms(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric definition")
}

fn provider_gauge() -> IntGaugeVec {
    gauges(
        names::PROVIDER_UP,
        "1 while a discovery provider is reachable and its events followed",
        &["provider"],
    )
}

fn middleware_counters() -> IntCounterVec {
    counters(
        names::MIDDLEWARE_REJECTED_TOTAL,
        "Requests a middleware answered itself (basic_auth 401, ip_allow 403, \
         rate_limit 429, redirect_regex 30x), by middleware and status code",
        &["middleware", "code"],
    )
}

// === impl Metrics ===

impl Metrics {
    /// A registry with every family registered, plus process metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let route_labels = &["route", "pool", "version"];
        let requests = counters(
            names::REQUESTS_TOTAL,
            "Requests answered, by route, pool, version and status code",
            &["route", "pool", "version", "code"],
        );
        let duration = histograms(
            names::REQUEST_DURATION,
            "From the request's arrival to the end of the response head",
            route_labels,
        );
        let response = histograms(
            names::RESPONSE_DURATION,
            "From the request's arrival to the end of the response body",
            route_labels,
        );
        let upstream_errors = counters(
            names::UPSTREAM_ERRORS_TOTAL,
            "Failed attempts to get an answer from a backend, by kind",
            &["pool", "version", "backend", "kind"],
        );
        let table_gauges = TableGauges::new();
        let rollout_canary_percent = gauges(
            names::ROLLOUT_CANARY_PERCENT,
            "Canary traffic percent of an active rollout",
            &["pool", "canary"],
        );
        let rollout_state = gauges(
            names::ROLLOUT_STATE,
            "1 for the rollout's current state (running, paused, promoted, rolled_back)",
            &["pool", "canary", "state"],
        );
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                names::CERTIFICATE_EXPIRY,
                "Not-after of the served certificate, Unix seconds",
            ),
            &["domain"],
        )
        .expect("valid metric definition");
        let config_reloads = counters(
            names::CONFIG_RELOADS_TOTAL,
            "Config reloads by result (success, failure)",
            &["result"],
        );
        let access_log_dropped = IntCounter::new(
            names::ACCESS_LOG_DROPPED_TOTAL,
            "Access log lines dropped because the writer was behind",
        )
        .expect("valid metric definition");
        let (provider_up, middleware_rejected) = (provider_gauge(), middleware_counters());
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(provider_up.clone()),
            Box::new(middleware_rejected.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(response.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(table_gauges.clone()),
            Box::new(rollout_canary_percent.clone()),
            Box::new(rollout_state.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(config_reloads.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        for r in ["success", "failure"] {
            config_reloads.with_label_values(&[r]);
        }
        Metrics {
            registry,
            families: Arc::new(Families {
                requests,
                duration,
                response,
            }),
            upstream_errors,
            table_gauges,
            rollout_canary_percent,
            rollout_state,
            certificate_expiry,
            config_reloads,
            access_log_dropped,
            provider_up,
            middleware_rejected,
        }
    }

    /// Handles for one series set; called at table build, never per
    /// request. Nothing is resolved yet (see [`RequestMetrics`]).
    pub fn request_handles(&self, route: &str, pool: &str, version: &str) -> RequestMetrics {
        self.request_handles_shared(&route.into(), &pool.into(), &version.into())
    }

    /// [`Metrics::request_handles`] with label strings shared by the
    /// handles of a table (a route's label, a pool's and a version's name).
    pub fn request_handles_shared(
        &self,
        route: &Arc<str>,
        pool: &Arc<str>,
        version: &Arc<str>,
    ) -> RequestMetrics {
        RequestMetrics {
            route: route.clone(),
            pool: pool.clone(),
            version: version.clone(),
            families: self.families.clone(),
            series: OnceLock::new(),
        }
    }

    /// Counts one failed upstream attempt.
    pub fn upstream_error(&self, pool: &str, version: &str, backend: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[pool, version, backend, kind])
            .inc();
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// The weight and backend gauges are read from `source` from now on
    /// (a freshly built table's pools); the series of versions and backends
    /// that are gone go with the old source.
    pub fn set_gauge_source(&self, source: Box<dyn GaugeSource>) {
        self.table_gauges.set(source);
    }

    /// Sets the weight and backend gauges to fixed rows.
    pub fn set_gauges(&self, weights: &[(&str, &str, i64)], backends: &[(&str, &str, &str, bool)]) {
        self.table_gauges.set(Box::new(GaugeRows {
            weights: weights
                .iter()
                .map(|&(p, v, w)| (p.into(), v.into(), w))
                .collect(),
            backends: backends
                .iter()
                .map(|&(p, v, b, up)| (p.into(), v.into(), b.into(), up))
                .collect(),
        }));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Cumulative counts for one version of a pool, summed over routes: the
    /// input of [`Window::between`].
    /// `switchyard_cluster_connected`, registered only by an instance with
    /// `[cluster]` (a single instance exports no cluster series).
    pub fn cluster_connected(&self) -> IntGauge {
        let g = IntGauge::new(
            names::CLUSTER_CONNECTED,
            "1 while this instance reaches etcd ([cluster]), else 0",
        )
        .expect("the metric name and help are valid");
        if let Err(e) = self.registry.register(Box::new(g.clone())) {
            tracing::warn!(error = %e, "cannot register the cluster gauge");
        }
        g
    }

    pub fn sample(&self, pool: &str, version: &str) -> Sample {
        self.sample_where(|p, v| p == pool && v == version)
            .remove(&(pool.to_string(), version.to_string()))
            .unwrap_or_else(empty_sample)
    }

    /// [`Metrics::sample`] of every version in one pass over the series (the
    /// stats sampler's tick: one gather, not one per version).
    pub fn sample_all(&self) -> HashMap<(String, String), Sample> {
        self.sample_where(|_, _| true)
    }

    fn sample_where(&self, want: impl Fn(&str, &str) -> bool) -> HashMap<(String, String), Sample> {
        fn key(m: &prometheus::proto::Metric) -> (&str, &str, &str) {
            let (mut p, mut v, mut code) = ("", "", "");
            for l in m.get_label() {
                match l.name() {
                    "pool" => p = l.value(),
                    "version" => v = l.value(),
                    "code" => code = l.value(),
                    _ => {}
                }
            }
            (p, v, code)
        }
        let mut out: HashMap<(String, String), Sample> = HashMap::new();
        for mf in self.families.requests.collect() {
            for m in mf.get_metric() {
                let (p, v, code) = key(m);
                if !want(p, v) {
                    continue;
                }
                let s = out
                    .entry((p.to_string(), v.to_string()))
                    .or_insert_with(empty_sample);
                let n = m.get_counter().get_value() as u64;
                s.requests += n;
                if code.starts_with('5') {
                    s.errors += n;
                }
            }
        }
        for mf in self.families.duration.collect() {
            for m in mf.get_metric() {
                let (p, v, _) = key(m);
                if !want(p, v) {
                    continue;
                }
                let s = out
                    .entry((p.to_string(), v.to_string()))
                    .or_insert_with(empty_sample);
                let h = m.get_histogram();
                for (i, b) in h.get_bucket().iter().enumerate() {
                    if let Some(slot) = s.buckets.get_mut(i) {
                        slot.1 += b.cumulative_count();
                    }
                }
                if let Some(inf) = s.buckets.last_mut() {
                    inf.1 += h.get_sample_count();
                }
                s.sum += h.get_sample_sum();
            }
        }
        out
    }
}

/// A sample of a version that has served nothing.
pub fn empty_sample() -> Sample {
    Sample {
        requests: 0,
        errors: 0,
        buckets: BUCKETS
            .iter()
            .map(|&b| (b, 0))
            .chain([(f64::INFINITY, 0)])
            .collect(),
        sum: 0.0,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

// === impl RequestMetrics ===

impl RequestMetrics {
    pub(crate) fn labels(&self) -> [&str; 3] {
        [&self.route, &self.pool, &self.version]
    }

    /// The series, resolved on the first answer of this handle.
    #[inline]
    fn series(&self) -> &Series {
        self.series.get_or_init(|| {
            Box::new(Series {
                codes: Default::default(),
                duration: OnceLock::new(),
                response: OnceLock::new(),
            })
        })
    }

    fn counter(&self, status: u16) -> IntCounter {
        let [r, p, v] = self.labels();
        self.families
            .requests
            .with_label_values(&[r, p, v, &status.to_string()])
    }

    /// Counts one answer and its time to the response head. Atomics only for
    /// common codes; a rare code resolves its series once.
    #[inline]
    pub fn record(&self, status: u16, head: Duration) {
        let series = self.series();
        match COMMON_CODES.iter().position(|&c| c == status) {
            Some(i) => series.codes[i].get_or_init(|| self.counter(status)).inc(),
            None => self.counter(status).inc(),
        }
        self.duration().observe(head.as_secs_f64());
    }

    /// Time to the response head.
    #[inline]
    pub fn duration(&self) -> &Histogram {
        self.series()
            .duration
            .get_or_init(|| self.families.duration.with_label_values(&self.labels()))
    }

    /// Time to the end of the response body.
    #[inline]
    pub fn response(&self) -> &Histogram {
        self.series()
            .response
            .get_or_init(|| self.families.response.with_label_values(&self.labels()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_the_difference_of_samples() {
        let m = Metrics::new();
        let h = m.request_handles("app.test", "app", "green");
        let other = m.request_handles("app.test", "app", "blue");
        h.record(200, Duration::from_millis(3));
        let a = m.sample("app", "green");
        for _ in 0..95 {
            h.record(200, Duration::from_millis(3));
        }
        for _ in 0..5 {
            h.record(500, Duration::from_millis(200));
        }
        h.record(418, Duration::from_millis(1));
        other.record(500, Duration::from_millis(1));
        let b = m.sample("app", "green");
        let w = Window::between(&a, &b);
        assert_eq!(w.requests, 101);
        assert_eq!(w.errors, 5);
        assert!((w.error_rate().unwrap() - 5.0 / 101.0).abs() < 1e-12);
        // 96 of 101 at or under 5 ms; p99 is in (0.1, 0.25].
        let p99 = w.quantile(0.99).unwrap();
        assert!(p99 > 0.1 && p99 <= 0.25, "{p99}");
        assert_eq!(
            w.quantile(0.5),
            Some(0.0025 + (0.005 - 0.0025) * (50.5 - 1.0) / 95.0)
        );
    }

    #[test]
    fn gauges_drop_stale_series() {
        let m = Metrics::new();
        m.set_gauges(
            &[("app", "blue", 100), ("app", "green", 0)],
            &[("app", "blue", "127.0.0.1:1", true)],
        );
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains("switchyard_version_weight{pool=\"app\",version=\"green\"} 0"));
        m.set_gauges(&[("app", "blue", 100)], &[]);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(!text.contains("version=\"green\""));
        assert!(!text.contains("switchyard_backend_up{"));
    }
}

#[cfg(test)]
mod dashboard_tests {
    use super::names;

    /// The shipped Grafana dashboard uses only metric names switchyard exports.
    #[test]
    fn grafana_dashboard_uses_only_exported_names() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let exported = [
            names::REQUESTS_TOTAL,
            names::REQUEST_DURATION,
            names::RESPONSE_DURATION,
            names::UPSTREAM_ERRORS_TOTAL,
            names::BACKEND_UP,
            names::VERSION_WEIGHT,
            names::ROLLOUT_CANARY_PERCENT,
            names::ROLLOUT_STATE,
            names::CERTIFICATE_EXPIRY,
            names::CONFIG_RELOADS_TOTAL,
            names::ACCESS_LOG_DROPPED_TOTAL,
        ];
        let mut exprs = Vec::new();
        for p in v["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
        exprs.push(
            v["templating"]["list"][1]["query"]["query"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        assert!(exprs.len() >= 8);
        for e in &exprs {
            let used: Vec<&str> = e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("switchyard_"))
                .collect();
            assert!(!used.is_empty(), "{e}");
            for name in used {
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(exported.contains(&base), "{name} in {e} is not exported");
            }
        }
    }
}
