//! How much CPU does switchyard's routing decision cost per request (host lookup, version and backend pick), and how long does a reload's table build take?
//!
//! Everything here is pure and in-process: no sockets. The end-to-end cost of a
//! proxied request (and the comparison with nginx and HAProxy) is measured by
//! `benches/compare.sh`; this bench isolates the part switchyard adds on top of
//! forwarding bytes.
//!
//! ```text
//! cargo bench --bench routing                       # full run
//! cargo bench --bench routing -- route/             # one group
//! cargo bench --bench routing -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Groups:
//! - `route/*`: `RoutingTable::route` on a table of 20 routes (17 exact, 3
//!   wildcards): an exact hit, a wildcard hit (walks the wildcard list after
//!   the exact miss), a miss, and a mixed-case host with a port (normalization).
//! - `rules/*`: `RoutingTable::route_for` with a full request (method, path,
//!   query, headers): a host-only route (what every host without rules
//!   pays: must match `route/exact`), a host with eight rule routes where
//!   the request falls through all of them to the host-only route (the
//!   worst case), the longest of several prefixes, and a header rule.
//! - `pick/*`: `Pool::pick` then `Version::pick_backend` for a 90/10 pool with
//!   two backends per version, as the request path does; plus `Pool::pick` alone.
//! - `build/*`: `RoutingTable::build` for 20 routes over 20 pools, with a fresh
//!   `BackendRegistry` (first load) and with a registry reused across builds.
//!   `build` makes its own metrics registry each time; `build_and_sync`
//!   over one shared `Metrics` is what a reload or a weight change really does,
//!   so the difference between the two is the cost of a new metrics registry.
//! - `scale/*`: a request's routing cost (lookup, pick, metric record) on a
//!   table of 1 route and of 10 000 (hosts spread over all of them, so each
//!   request touches other memory: cache misses; and one host of the 10 000,
//!   the table's size alone); and the table build at 10 000 routes from
//!   scratch and when a reload changed nothing (every pool kept).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use switchyard::config::Config;
use switchyard::metrics::Metrics;
use switchyard::routing::{Pick, RoutingTable};
use switchyard::upstream::BackendRegistry;

/// Routes in the generated config (one pool each; the last three are wildcards).
const ROUTES: usize = 20;
const WILDCARDS: usize = 3;

/// A config with `ROUTES` routes and as many pools: pool `app` is the 90/10
/// pool the pick bench uses; the others are blue/green pools with varied
/// weights so their schedules differ.
fn config_text() -> String {
    let mut t = String::from("[server]\nhttp = \"127.0.0.1:8080\"\n\n");
    t.push_str("[[routes]]\nhost = \"app.local\"\npool = \"app\"\n\n");
    for i in 1..ROUTES {
        let host = if i >= ROUTES - WILDCARDS {
            format!("*.tenant{i}.example.com")
        } else {
            format!("svc{i}.example.com")
        };
        writeln!(t, "[[routes]]\nhost = \"{host}\"\npool = \"p{i}\"\n").unwrap();
    }
    t.push_str("[pools.app.versions.blue]\nweight = 90\nbackends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\n");
    t.push_str("[pools.app.versions.green]\nweight = 10\nbackends = [\"127.0.0.1:9003\", \"127.0.0.1:9004\"]\n\n");
    for i in 1..ROUTES {
        let port = 10_000 + 10 * i;
        writeln!(
            t,
            "[pools.p{i}.versions.blue]\nweight = {}\nbackends = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            100 - i,
            port,
            port + 1
        )
        .unwrap();
        writeln!(
            t,
            "[pools.p{i}.versions.green]\nweight = {i}\nbackends = [\"127.0.0.1:{}\"]\n",
            port + 2
        )
        .unwrap();
    }
    t
}

fn config() -> Config {
    let text = config_text();
    match Config::from_toml_str(&text) {
        Ok(c) => c,
        Err(diags) => panic!("bench config must be valid: {diags:?}\n{text}"),
    }
}

fn table(config: &Config) -> RoutingTable {
    RoutingTable::build(config, &BackendRegistry::default(), &HashMap::new())
}

fn bench_route(c: &mut Criterion) {
    let config = config();
    let t = table(&config);
    let cases = [
        ("exact", "app.local"),
        ("wildcard", "api.tenant19.example.com"),
        ("miss", "nope.example.org"),
        ("mixed_case_port", "SVC7.Example.COM:8443"),
    ];
    // Each case must land where its name says, or the figures mean nothing.
    for (name, host) in cases {
        let found = t.route(host).map(|r| &*r.pool.name);
        let expected = match name {
            "exact" => Some("app"),
            "wildcard" => Some("p19"),
            "miss" => None,
            _ => Some("p7"),
        };
        assert_eq!(found, expected, "route({host:?})");
    }

    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for (name, host) in cases {
        g.bench_function(name, |b| b.iter(|| t.route(black_box(host)).is_some()));
    }
    g.finish();
}

fn bench_pick(c: &mut Criterion) {
    let config = config();
    let t = table(&config);
    let pool = t
        .pools
        .get("app")
        .expect("the generated config has pool app")
        .clone();

    // The split over one schedule cycle is exactly 90/10.
    let mut green = 0;
    for _ in 0..1000 {
        if let Pick::Version(_, v) = pool.pick(None, false, None) {
            green += usize::from(&*v.name == "green");
        }
    }
    assert_eq!(green, 100, "a 90/10 pool must give green 100 picks in 1000");

    let mut g = c.benchmark_group("pick");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pool_and_backend_90_10", |b| {
        b.iter(
            || match pool.pick(black_box(None), black_box(false), black_box(None)) {
                Pick::Version(_, v) => v.pick_backend().map(|be| be.key.addr.as_str().len()),
                _ => None,
            },
        )
    });
    g.bench_function("pool_only_90_10", |b| {
        b.iter(
            || match pool.pick(black_box(None), black_box(false), black_box(None)) {
                Pick::Version(i, _) => i,
                _ => usize::MAX,
            },
        )
    });
    g.finish();
}

fn bench_build(c: &mut Criterion) {
    let config = config();
    assert_eq!(config.routes.len(), ROUTES);
    assert_eq!(config.pools.len(), ROUTES);

    let mut g = c.benchmark_group("build");
    g.bench_function("20_routes_fresh_registry", |b| {
        b.iter(|| {
            RoutingTable::build(
                black_box(&config),
                &BackendRegistry::default(),
                &HashMap::new(),
            )
        })
    });
    let registry = BackendRegistry::default();
    let canaries = HashMap::new();
    g.bench_function("20_routes_reused_registry", |b| {
        b.iter(|| RoutingTable::build(black_box(&config), &registry, &canaries))
    });
    let metrics = Metrics::new();
    g.bench_function("20_routes_reload_shared_metrics", |b| {
        b.iter(|| {
            RoutingTable::build_and_sync(
                black_box(&config),
                &registry,
                &canaries,
                &metrics,
                &Default::default(),
            )
        })
    });
    g.finish();
}

/// `rules.test` has eight rule routes ranked before its host-only route.
fn rules_config() -> Config {
    let mut text = config_text();
    for n in 1..=8 {
        let _ = write!(
            text,
            "\n[[routes]]\nhost = \"rules.test\"\npath_prefix = \"/api/v{n}\"\n\
             methods = [\"GET\", \"POST\"]\nheaders = {{ \"X-Tenant\" = \"~^t{n}$\" }}\npool = \"app\"\n"
        );
    }
    text.push_str(
        "\n[[routes]]\nhost = \"rules.test\"\npool = \"app\"\n\
         [[routes]]\nhost = \"rules.test\"\npath_prefix = \"/static\"\npool = \"p1\"\n\
         [[routes]]\nhost = \"rules.test\"\npath_prefix = \"/static/img\"\npool = \"p2\"\n\
         [[routes]]\nhost = \"rules.test\"\nheaders = { \"X-Beta\" = \"1\" }\npath_prefix = \"/\"\npool = \"p3\"\n",
    );
    Config::from_toml_str(&text).expect("the bench config is valid")
}

fn bench_rules(c: &mut Criterion) {
    use switchyard::rules::RequestView;
    let config = rules_config();
    let t = table(&config);
    let plain = http::HeaderMap::new();
    let mut beta = http::HeaderMap::new();
    beta.insert("x-beta", http::HeaderValue::from_static("1"));
    beta.insert("user-agent", http::HeaderValue::from_static("wrk"));
    let get = http::Method::GET;
    let view = |path: &'static str, headers: &'static http::HeaderMap| RequestView {
        method: &get,
        path,
        query: None,
        headers,
    };
    let plain: &'static http::HeaderMap = Box::leak(Box::new(plain));
    let beta: &'static http::HeaderMap = Box::leak(Box::new(beta));
    let cases = [
        ("host_only", "app.local", view("/", plain), "app"),
        (
            "fall_through_8_rules",
            "rules.test",
            view("/", plain),
            "app",
        ),
        (
            "longest_prefix",
            "rules.test",
            view("/static/img/a.png", plain),
            "p2",
        ),
        ("header_rule", "rules.test", view("/x", beta), "p3"),
    ];
    for (name, host, v, want) in &cases {
        let found = t.route_for(host, v).map(|r| &*r.pool.name);
        assert_eq!(found, Some(*want), "{name}");
    }
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    for (name, host, v, _) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| t.route_for(black_box(host), v).is_some())
        });
    }
    g.finish();
}

/// `n` routes `appI.test` -> pool `pI` of two versions (blue 90 / green 10),
/// the shape of benches/reload_load.sh's config.
fn scale_text(n: usize) -> String {
    let mut t = String::from("[server]\nhttp = \"127.0.0.1:8080\"\n");
    for i in 0..n {
        writeln!(t, "\n[[routes]]\nhost = \"app{i}.test\"\npool = \"p{i}\"").unwrap();
    }
    for i in 0..n {
        writeln!(
            t,
            "\n[pools.p{i}.versions.blue]\nweight = 90\nbackends = [\"127.0.0.1:9001\"]\n\n\
             [pools.p{i}.versions.green]\nweight = 10\nbackends = [\"127.0.0.1:9001\"]"
        )
        .unwrap();
    }
    t
}

/// What a request pays for routing must not depend on how many routes
/// there are: the host lookup, the version and backend pick and the metric
/// record, on a table of 1 route and on one of 10 000 (hosts spread over
/// all of them, as in reload_load.sh). Plus the table build of a reload
/// of the 10 000-route file that changed nothing (pools kept) and from
/// scratch.
fn bench_scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10_000] {
        let config = Config::from_toml_str(&scale_text(n)).expect("the scale config is valid");
        let t = table(&config);
        let hosts: Vec<String> = (0..n)
            .map(|i| format!("app{}.test", (i * 7919) % n))
            .collect();
        for h in &hosts {
            assert!(t.route(h).is_some(), "{h}");
        }
        let mut i = 0;
        g.bench_function(format!("route_{n}_routes"), |b| {
            b.iter(|| {
                i = (i + 1) % hosts.len();
                t.route(black_box(&hosts[i])).is_some()
            })
        });
        // The same host every time: the table's size alone, caches warm.
        let one = &hosts[hosts.len() / 2];
        g.bench_function(format!("route_{n}_routes_one_host"), |b| {
            b.iter(|| t.route(black_box(one)).is_some())
        });
        let mut i = 0;
        g.bench_function(format!("request_{n}_routes"), |b| {
            b.iter(|| {
                i = (i + 1) % hosts.len();
                let Some(r) = t.route(black_box(&hosts[i])) else {
                    return false;
                };
                let Pick::Version(v, version) = r.pool.pick(None, false, None) else {
                    return false;
                };
                let picked = version.pick_backend().is_some();
                r.metrics[v].record(200, std::time::Duration::from_micros(300));
                picked
            })
        });
    }
    let config = Config::from_toml_str(&scale_text(10_000)).expect("the scale config is valid");
    let registry = BackendRegistry::default();
    let metrics = Metrics::new();
    let (mw, _) = switchyard::middleware::Middlewares::build(&config, None, &metrics);
    let previous = RoutingTable::build_and_sync(&config, &registry, &HashMap::new(), &metrics, &mw);
    g.sample_size(10);
    g.bench_function("build_10000_routes_from_scratch", |b| {
        b.iter(|| RoutingTable::build_and_sync(&config, &registry, &HashMap::new(), &metrics, &mw))
    });
    g.bench_function("build_10000_routes_nothing_changed", |b| {
        b.iter(|| {
            RoutingTable::build_from(
                Some(&previous),
                &config,
                &registry,
                &HashMap::new(),
                &metrics,
                &mw,
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_route,
    bench_rules,
    bench_pick,
    bench_build,
    bench_scale
);
criterion_main!(benches);
