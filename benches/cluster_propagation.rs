//! How long a weight change made on one instance of a fleet takes to reach
//! the routing tables of the others: three etcd members and three
//! switchyard instances on loopback, 200 changes on A, each timed from A's
//! answer until B's and C's `GET /v1/state` show it (polled every 0.5 ms, so
//! the figure includes up to that much polling delay). Prints the median,
//! p99 and maximum per instance and over both.
//!
//! `cargo bench --bench cluster_propagation` (needs etcd: scripts/setup.sh).
//! A figure for a quiet machine; not a test.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use support::*;

const CHANGES: u32 = 200;

fn config(blue: &Upstream, green: &Upstream, etcd: &etcd::Etcd, name: &str) -> String {
    format!(
        "{}\n[cluster]\netcd = {}\nprefix = \"/sy-bench/\"\nname = \"{name}\"\n",
        pool_config(blue, 100, green, 0, ""),
        etcd.toml_endpoints()
    )
}

async fn shows(p: &Proxy, blue: u32) -> bool {
    p.state().await["pools"]["app"]["versions"]["blue"]["weight"] == blue
}

fn figures(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let at = |q: f64| d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1];
    println!(
        "{name}: {} changes, median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        d.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        d[d.len() - 1].as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench targets too: only `cargo bench`
    // (which passes --bench) measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let etcd = etcd::Etcd::start(3);
    let mut fleet = Vec::new();
    for name in ["sy-a", "sy-b", "sy-c"] {
        fleet.push(Proxy::start(&config(&blue, &green, &etcd, name)).await);
    }
    for p in &fleet {
        let up = eventually(DEADLINE, || async {
            p.state().await["cluster"]["connected"] == true
        })
        .await;
        assert!(up, "{}", p.log());
    }
    let (a, others) = fleet.split_first().unwrap();
    let mut per: Vec<Vec<Duration>> = vec![Vec::new(); others.len()];
    for i in 0..CHANGES {
        let blue_w = 1 + i % 999;
        let body = format!("{{\"blue\":{blue_w},\"green\":{}}}", 1000 - blue_w);
        let (status, v) = a.admin("PUT", "/v1/pools/app/weights", Some(&body)).await;
        assert_eq!(status, 200, "{v}");
        let answered = Instant::now();
        let (b, c) = tokio::join!(
            arrival(&others[0], blue_w, answered),
            arrival(&others[1], blue_w, answered)
        );
        per[0].push(b);
        per[1].push(c);
    }
    let all: Vec<Duration> = per.iter().flatten().copied().collect();
    figures("B", per[0].clone());
    figures("C", per[1].clone());
    figures("B+C", all);
}

/// How long after `answered` `p` shows blue at `blue_w`.
async fn arrival(p: &Proxy, blue_w: u32, answered: Instant) -> Duration {
    let deadline = answered + DEADLINE;
    while !shows(p, blue_w).await {
        assert!(Instant::now() < deadline, "a change never arrived");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    answered.elapsed()
}
