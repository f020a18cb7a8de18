//! The stats sampler (a service) and the live figures per version for `GET /v1/stats`: requests/s, 5xx rate and
//! p99 over the last ~10 s.
//!
//! ```text
//! sampler (1 s) ─> Metrics::sample(pool, version) ─> ring per version (~12 samples)
//! GET /v1/stats ─> fresh sample now, minus the ring's sample ~10 s ago ─> Window
//!               ─> requests/s, Window::error_rate, Window::quantile(0.99)
//! ```
//!
//! The figures come from the same windowed reader the rollout controller
//! judges from, so the page and the controller agree.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::control::Control;
use crate::metrics::{empty_sample, Metrics, Sample, Window};
use crate::model::api::{Figures, StatsPool, StatsView};

/// How far back the figures look.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the sampler takes a sample.
pub const TICK: Duration = Duration::from_secs(1);
/// Samples older than this are dropped.
const KEEP: Duration = Duration::from_secs(13);

/// Recent samples of one version, oldest first.
type Ring = VecDeque<(Instant, Sample)>;

/// The rings of recent samples, per (pool, version) that has answered a
/// request: memory and work follow the versions in use, not the ones
/// configured (at 10 000 pools, a ring of empty samples per idle version
/// held ~70 MB).
#[derive(Default)]
pub struct Stats {
    rings: Mutex<Rings>,
}

#[derive(Default)]
struct Rings {
    by_version: HashMap<(String, String), Ring>,
    /// When the recent ticks were taken (as long as rings keep samples). A
    /// version without series at a tick had counted nothing then: its new
    /// ring starts with an empty sample at the last tick, and a version
    /// without a ring reads as empty at the oldest tick in the window.
    ticks: VecDeque<Instant>,
}

// === impl Stats ===

impl Stats {
    /// Takes one sample of each `(pool, version)` with series at `now`, and
    /// forgets versions that are gone and samples older than the ring keeps.
    pub fn tick(&self, metrics: &Metrics, versions: &[(String, String)], now: Instant) {
        let all = metrics.sample_all();
        let current: HashSet<&(String, String)> = versions.iter().collect();
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let last_tick = rings.ticks.back().copied();
        rings.ticks.push_back(now);
        while rings
            .ticks
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > KEEP)
        {
            rings.ticks.pop_front();
        }
        rings.by_version.retain(|k, _| current.contains(k));
        for (key, sample) in all {
            if !current.contains(&key) {
                continue;
            }
            let ring = rings.by_version.entry(key).or_insert_with(|| {
                let mut ring = Ring::new();
                if let Some(t) = last_tick {
                    ring.push_back((t, empty_sample()));
                }
                ring
            });
            ring.push_back((now, sample));
            while ring
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > KEEP)
            {
                ring.pop_front();
            }
        }
    }

    /// The figures of each `(pool, version)` from the oldest sample within
    /// [`WINDOW`] of `now` to a fresh sample taken now.
    pub fn view(
        &self,
        metrics: &Metrics,
        versions: &[(String, String)],
        now: Instant,
    ) -> StatsView {
        let mut pools: BTreeMap<String, StatsPool> = BTreeMap::new();
        let mut widest = Duration::ZERO;
        let mut all = metrics.sample_all();
        for (pool, version) in versions {
            let later = all
                .remove(&(pool.clone(), version.clone()))
                .unwrap_or_else(empty_sample);
            let earlier = self.oldest_within_window(pool, version, now);
            let figures = match earlier {
                Some((t, earlier)) => {
                    let span = now.saturating_duration_since(t);
                    widest = widest.max(span);
                    figures(&Window::between(&earlier, &later), span)
                }
                None => figures(&Window::between(&later, &later), Duration::ZERO),
            };
            pools
                .entry(pool.clone())
                .or_default()
                .versions
                .insert(version.clone(), figures);
        }
        StatsView {
            pools,
            window_seconds: round(widest.as_secs_f64(), 3),
        }
    }

    fn oldest_within_window(
        &self,
        pool: &str,
        version: &str,
        now: Instant,
    ) -> Option<(Instant, Sample)> {
        let within = |t: &Instant| now.saturating_duration_since(*t) <= WINDOW + TICK / 2;
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        match rings
            .by_version
            .get(&(pool.to_string(), version.to_string()))
        {
            Some(ring) => ring.iter().find(|(t, _)| within(t)).cloned(),
            None => rings
                .ticks
                .iter()
                .find(|t| within(t))
                .map(|&t| (t, empty_sample())),
        }
    }
}

/// One version's figures over `span`.
fn figures(w: &Window, span: Duration) -> Figures {
    let secs = span.as_secs_f64();
    Figures {
        requests: w.requests,
        errors: w.errors,
        requests_per_second: (secs >= 0.1).then(|| round(w.requests as f64 / secs, 2)),
        error_rate: w.error_rate().map(|r| round(r, 6)),
        p50_seconds: w.quantile(0.5).map(|q| round(q, 6)),
        p99_seconds: w.quantile(0.99).map(|q| round(q, 6)),
        window_seconds: round(secs, 3),
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Every (pool, version) of the current table.
pub fn versions_of(c: &Control) -> Vec<(String, String)> {
    let table = c.table.load();
    table
        .pools
        .iter()
        .flat_map(|(name, pool)| {
            pool.versions
                .iter()
                .map(move |v| (name.to_string(), v.name.to_string()))
        })
        .collect()
}

/// `GET /v1/stats`.
pub fn view(stats: &Stats, c: &Control) -> StatsView {
    stats.view(&c.metrics, &versions_of(c), Instant::now())
}

/// Samples every version once a second until shutdown.
pub async fn sample_loop(stats: Arc<Stats>, c: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (stats, c) = (stats.clone(), c.clone());
        // Gathering the families is a little CPU work; keep it off the
        // reactor threads' hot path.
        let _ = tokio::task::spawn_blocking(move || {
            stats.tick(&c.metrics, &versions_of(&c), Instant::now())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, v: &str) -> (String, String) {
        (p.to_string(), v.to_string())
    }

    #[test]
    fn only_versions_with_traffic_have_rings_and_a_late_one_counts_from_the_last_tick() {
        let m = Metrics::new();
        let versions: Vec<_> = (0..1000).map(|i| key(&format!("p{i}"), "blue")).collect();
        let s = Stats::default();
        let t0 = Instant::now();
        s.tick(&m, &versions, t0);
        s.tick(&m, &versions, t0 + Duration::from_secs(1));
        assert!(s.rings.lock().unwrap().by_version.is_empty());
        // p7 answers its first requests between two ticks: the window
        // still counts them (its ring starts empty at the tick before).
        let h = m.request_handles("p7.test", "p7", "blue");
        for _ in 0..30 {
            h.record(200, Duration::from_millis(2));
        }
        s.tick(&m, &versions, t0 + Duration::from_secs(2));
        assert_eq!(s.rings.lock().unwrap().by_version.len(), 1);
        let now = t0 + Duration::from_secs(3);
        let v = serde_json::to_value(s.view(&m, &versions, now)).unwrap();
        let g = &v["pools"]["p7"]["versions"]["blue"];
        assert_eq!(g["requests"], 30, "{v}");
        assert_eq!(g["window_seconds"], 2.0, "{v}");
    }

    #[test]
    fn rates_come_from_the_window_and_old_samples_drop_out() {
        let m = Metrics::new();
        let green = m.request_handles("app.test", "app", "green");
        let blue = m.request_handles("app.test", "app", "blue");
        let versions = vec![key("app", "blue"), key("app", "green")];
        let s = Stats::default();
        let t0 = Instant::now();

        // Before any sample: counts, no rates.
        let v = serde_json::to_value(s.view(&m, &versions, t0)).unwrap();
        assert_eq!(v["pools"]["app"]["versions"]["green"]["requests"], 0);
        assert!(v["pools"]["app"]["versions"]["green"]["requests_per_second"].is_null());

        // Traffic before the window is not counted.
        for _ in 0..1000 {
            green.record(200, Duration::from_millis(2));
        }
        s.tick(&m, &versions, t0);
        for i in 0..20u64 {
            s.tick(&m, &versions, t0 + Duration::from_secs(i));
        }
        // 20 s later: 190 answers, 10 of them 500 and slow.
        for _ in 0..190 {
            green.record(200, Duration::from_millis(2));
        }
        for _ in 0..10 {
            green.record(500, Duration::from_millis(300));
        }
        let now = t0 + Duration::from_secs(20);
        let v = serde_json::to_value(s.view(&m, &versions, now)).unwrap();
        let g = &v["pools"]["app"]["versions"]["green"];
        assert_eq!(g["requests"], 200, "{v}");
        assert_eq!(g["errors"], 10);
        // The oldest sample within 10.5 s is t0 + 10 s: 200 requests / 10 s.
        assert_eq!(g["requests_per_second"], 20.0);
        assert_eq!(g["error_rate"], 0.05);
        let p99 = g["p99_seconds"].as_f64().unwrap();
        assert!(p99 > 0.25 && p99 <= 0.5, "{p99}");
        assert_eq!(v["window_seconds"], 10.0);
        // An idle version: zero rate, no error rate or p99.
        let b = &v["pools"]["app"]["versions"]["blue"];
        assert_eq!(b["requests_per_second"], 0.0);
        assert!(b["error_rate"].is_null() && b["p99_seconds"].is_null());
        blue.record(200, Duration::from_millis(1));

        // The ring keeps ~13 s, and forgets versions that are gone.
        let rings = s.rings.lock().unwrap();
        assert!(rings.by_version[&key("app", "green")].len() <= 14);
        drop(rings);
        s.tick(&m, &versions[..1], now);
        assert!(!s
            .rings
            .lock()
            .unwrap()
            .by_version
            .contains_key(&key("app", "green")));
    }
}
