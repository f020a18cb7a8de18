//! Per-version RED metrics: checked by a real Prometheus, by promtool, and
//! series by series.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::*;

fn metrics_config(blue: &Upstream, wb: u32, green: &Upstream, wg: u32) -> String {
    format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        pool_config(blue, wb, green, wg, "request_timeout = \"1s\"")
    )
}

async fn scrape(p: &Proxy) -> String {
    let addr: std::net::SocketAddr = p.state().await["listeners"]["metrics"]
        .as_str()
        .expect("metrics listener")
        .parse()
        .unwrap();
    let mut c = Client::new(addr);
    let a = c.get("localhost", "/metrics").await.unwrap();
    assert_eq!(a.status, 200);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    a.body
}

/// The value of the series whose line starts with `prefix` (name plus labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus on 127.0.0.1:0; its address is read from its log.
async fn start_prometheus(target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus is installed (scripts/setup.sh)");
    // `msg="Listening on" address=127.0.0.1:PORT` (the bound port).
    let mut addr = None;
    let found = eventually(DEADLINE, || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        addr = text
            .lines()
            .filter(|l| l.contains("msg=\"Listening on\""))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
            })
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let done = addr.is_some() || exited;
        async move { done }
    })
    .await;
    let addr = addr.unwrap_or_else(|| {
        panic!(
            "prometheus gave no address (found {found}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    let p = Prometheus {
        child,
        _dir: dir,
        addr,
    };
    assert!(
        eventually(DEADLINE, || async move {
            Client::new(addr)
                .get("localhost", "/-/ready")
                .await
                .map(|a| a.status == 200)
                .unwrap_or(false)
        })
        .await,
        "prometheus did not become ready"
    );
    p
}

async fn query(prom: &Prometheus, q: &str) -> Option<f64> {
    let url = format!("/api/v1/query?query={}", urlencode(q));
    let a = Client::new(prom.addr).get("localhost", &url).await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&a.body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_injected_error_rate_and_latency() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    green.fail_every.store(20, Ordering::SeqCst); // 5 % of answers are 500
    green.delay_ms.store(200, Ordering::SeqCst); // and take 200 ms
    let p = Proxy::start(&metrics_config(&blue, 50, &green, 50)).await;
    // Every series exists (a 500 included) before Prometheus's first scrape,
    // so the rates below all start from the same samples.
    let mut c = Client::new(p.http);
    for _ in 0..40 {
        c.get("app.test", "/").await.unwrap();
    }
    assert_eq!(green.hits(), 20);
    let prom = start_prometheus(&p.metrics.unwrap().to_string()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (stop, addr) = (stop.clone(), p.http);
        clients.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            while !stop.load(Ordering::Relaxed) {
                c.get("app.test", "/").await.unwrap();
            }
        }));
    }
    // Load until Prometheus has seen 400 more green answers: enough for a
    // 5 % rate to mean something.
    let green_seen = r#"sum(increase(switchyard_requests_total{pool="app",version="green"}[30s]))"#;
    assert!(
        eventually(DEADLINE, || async {
            query(&prom, green_seen).await.is_some_and(|n| n >= 400.0)
        })
        .await,
        "too few green requests: {}",
        green.hits()
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    // Prometheus has scraped the final counts.
    let text = scrape(&p).await;
    let total = |t: &str, v: &str| -> f64 {
        t.lines()
            .filter(|l| {
                l.starts_with("switchyard_requests_total{")
                    && l.contains("pool=\"app\"")
                    && l.contains(&format!("version=\"{v}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (final_green, final_blue) = (total(&text, "green"), total(&text, "blue"));
    let green_total = r#"sum(switchyard_requests_total{pool="app",version="green"})"#;
    let blue_total = r#"sum(switchyard_requests_total{pool="app",version="blue"})"#;
    assert!(
        eventually(DEADLINE, || async {
            query(&prom, green_total).await == Some(final_green)
                && query(&prom, blue_total).await == Some(final_blue)
        })
        .await,
        "prometheus never scraped the final counts ({final_green} green, {final_blue} blue)"
    );

    let err = r#"sum(rate(switchyard_requests_total{pool="app",version="green",code=~"5.."}[30s])) / sum(rate(switchyard_requests_total{pool="app",version="green"}[30s]))"#;
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(switchyard_request_duration_seconds_bucket{pool="app",version="green"}[30s])))"#;
    let blue_err = r#"sum(rate(switchyard_requests_total{pool="app",version="blue",code=~"5.."}[30s])) or vector(0)"#;
    let rate = query(&prom, err).await.expect("error rate query");
    let latency = query(&prom, p99).await.expect("p99 query");
    assert!((rate - 0.05).abs() <= 0.015, "green 5xx rate {rate}");
    // The injected 200 ms is a floor: no green answer is in a bucket at or
    // under 100 ms, so its p99 is above (how far above depends on the
    // machine, which is a benchmark's business).
    let green_fast =
        r#"sum(switchyard_request_duration_seconds_bucket{pool="app",version="green",le="0.1"})"#;
    assert_eq!(
        query(&prom, green_fast).await,
        Some(0.0),
        "green under 100 ms"
    );
    assert!(latency > 0.1, "green p99 {latency} is not above 100 ms");
    assert_eq!(query(&prom, blue_err).await, Some(0.0), "blue is clean");
    // And the two versions are told apart: blue, without the delay, is faster.
    let p50 = |v: &str| {
        format!(
            r#"histogram_quantile(0.5, sum by (le) (rate(switchyard_request_duration_seconds_bucket{{pool="app",version="{v}"}}[30s])))"#
        )
    };
    let (blue_p50, green_p50) = (
        query(&prom, &p50("blue")).await.unwrap(),
        query(&prom, &p50("green")).await.unwrap(),
    );
    assert!(
        blue_p50 < green_p50,
        "blue p50 {blue_p50}, green p50 {green_p50}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&metrics_config(&blue, 90, &green, 10)).await;
    let mut c = Client::new(p.http);
    for _ in 0..20 {
        c.get("app.test", "/").await.unwrap();
    }
    c.get("nothing.test", "/").await.unwrap();
    let text = scrape(&p).await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/setup.sh)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && problems.trim().is_empty(),
        "promtool: {problems}"
    );
    // Process metrics are there too.
    assert!(text.contains("process_resident_memory_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_unmatched_hosts_and_changes_land_in_the_right_series() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let dead = dead_addr();
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
request_timeout = "2s"
[metrics]
listen = "127.0.0.1:0"
[[routes]]
host = "app.test"
pool = "app"
[pools.app]
health = {{ path = "/health", interval = "200ms", timeout = "200ms", rise = 1, fall = 1 }}
[pools.app.versions.blue]
weight = 100
backends = ["{}"]
[pools.app.versions.green]
weight = 0
backends = ["{}"]
[[routes]]
host = "dead.test"
pool = "dead"
[pools.dead]
retry = 0
[pools.dead.versions.v1]
weight = 1
backends = ["{dead}"]
"#,
        blue.addr,
        green.addr,
        dead = dead.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    for _ in 0..3 {
        assert_eq!(c.get("nowhere.test", "/").await.unwrap().status, 404);
        assert_eq!(c.get("app.test", "/").await.unwrap().status, 200);
        assert_eq!(c.get("dead.test", "/").await.unwrap().status, 502);
    }
    // Far slower than the request timeout: the subject here.
    blue.delay_ms.store(600_000, Ordering::SeqCst);
    assert_eq!(c.get("app.test", "/").await.unwrap().status, 504);
    blue.delay_ms.store(0, Ordering::SeqCst);

    let t = scrape(&p).await;
    assert_eq!(
        value(
            &t,
            r#"switchyard_requests_total{code="404",pool="",route="",version=""}"#
        ),
        Some(3.0),
        "{t}"
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_requests_total{code="200",pool="app",route="app.test",version="blue"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_requests_total{code="504",pool="app",route="app.test",version="blue"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_requests_total{code="502",pool="dead",route="dead.test",version="v1"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &t,
            &format!(
                r#"switchyard_upstream_errors_total{{backend="{}",kind="connect",pool="dead",version="v1"}}"#,
                dead.addr
            )
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &t,
            &format!(
                r#"switchyard_upstream_errors_total{{backend="{}",kind="timeout",pool="app",version="blue"}}"#,
                blue.addr
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_request_duration_seconds_count{pool="app",route="app.test",version="blue"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_version_weight{pool="app",version="blue"}"#
        ),
        Some(100.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_version_weight{pool="app",version="green"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &t,
            &format!(
                r#"switchyard_backend_up{{backend="{}",pool="app",version="green"}}"#,
                green.addr
            )
        ),
        Some(1.0)
    );

    // A weight change and a health flip show at once.
    assert!(p
        .ctl(&["weights", "app", "blue=60", "green=40"])
        .status
        .success());
    green.healthy.store(false, Ordering::SeqCst);
    let green_up = format!(
        r#"switchyard_backend_up{{backend="{}",pool="app",version="green"}}"#,
        green.addr
    );
    assert!(
        eventually(DEADLINE, || async {
            value(&scrape(&p).await, &green_up) == Some(0.0)
        })
        .await
    );
    let t = scrape(&p).await;
    assert_eq!(
        value(
            &t,
            r#"switchyard_version_weight{pool="app",version="blue"}"#
        ),
        Some(60.0)
    );
    assert_eq!(
        value(
            &t,
            r#"switchyard_version_weight{pool="app",version="green"}"#
        ),
        Some(0.0),
        "effective weight of a down version"
    );
    green.healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            value(
                &scrape(&p).await,
                r#"switchyard_version_weight{pool="app",version="green"}"#,
            ) == Some(40.0)
        })
        .await
    );

    // No healthy version: 503 counted with version="".
    blue.healthy.store(false, Ordering::SeqCst);
    green.healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            Client::new(p.http)
                .get("app.test", "/")
                .await
                .unwrap()
                .status
                == 503
        })
        .await
    );
    let t = scrape(&p).await;
    assert!(
        value(
            &t,
            r#"switchyard_requests_total{code="503",pool="app",route="app.test",version=""}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{t}"
    );

    // Reloads are counted by result.
    assert!(p.ctl(&["reload"]).status.success());
    std::fs::write(&p.config_path, "garbage = [").unwrap();
    assert!(!p.ctl(&["reload"]).status.success());
    let t = scrape(&p).await;
    assert_eq!(
        value(&t, r#"switchyard_config_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&t, r#"switchyard_config_reloads_total{result="failure"}"#),
        Some(1.0)
    );
}
