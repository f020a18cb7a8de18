//! Simulated rollouts for the judge: canary and stable windows drawn from
//! known distributions, judged exactly as the runner does: the windows of a
//! step accumulate until a verdict, each look judged with the rollout's
//! pooled counts of its decided steps; a pass folds the step into them; a
//! fail counts towards `failure_limit` and restarts the step's window; too
//! few requests for [`MAX_WAITS`] windows count as a fail; [`MAX_LOOKS`](super::MAX_LOOKS)
//! inconclusive looks hold the rollout for an operator (where a simulated
//! rollout stops); the 100 % step brings canary requests only, judged
//! against the stable's pooled counts. Pure and deterministic from a seed
//! (`examples/judge_sim.rs` prints the table).

use super::{fold, judge, Look, MAX_WAITS};
use crate::metrics::window::{Window, BUCKETS};
use crate::model::rollout::{Plan, Pooled, Verdict};

use super::stats::normal_sf;

/// One version's behaviour: a 5xx share and lognormal latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    pub error_rate: f64,
    /// Median latency, seconds.
    pub median: f64,
    /// Sigma of the latency's logarithm.
    pub sigma: f64,
}

/// How one simulated rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The step (0-based) whose judgement rolled it back, if any.
    pub failed_at: Option<usize>,
    /// The step (0-based) that reached [`MAX_LOOKS`] undecided and held
    /// for an operator, if any (the simulation stops there).
    pub held_at: Option<usize>,
    /// Windows judged in all.
    pub windows: u32,
}

/// Bucket probabilities of a behaviour's latencies, cumulative, ending at 1
/// (the +Inf bucket), like [`BUCKETS`].
fn bucket_cdf(b: &Behaviour) -> Vec<f64> {
    let mu = b.median.ln();
    let mut cdf: Vec<f64> = BUCKETS
        .iter()
        .map(|&le| 1.0 - normal_sf((le.ln() - mu) / b.sigma))
        .collect();
    cdf.push(1.0);
    cdf
}

/// Draws `n` requests into a window with the real histogram's buckets.
fn draw(rng: &mut fastrand::Rng, n: u64, b: &Behaviour, cdf: &[f64]) -> Window {
    let mut counts = vec![0u64; cdf.len()];
    let mut errors = 0;
    for _ in 0..n {
        let u = rng.f64();
        let i = cdf.partition_point(|&c| c < u).min(cdf.len() - 1);
        counts[i] += 1;
        if rng.f64() < b.error_rate {
            errors += 1;
        }
    }
    let mut cum = 0;
    let buckets = BUCKETS
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts)
        .map(|(le, c)| {
            cum += c;
            (le, cum)
        })
        .collect();
    Window {
        requests: n,
        errors,
        buckets,
    }
}

fn add(into: &mut Window, w: &Window) {
    if into.buckets.is_empty() {
        *into = w.clone();
        return;
    }
    into.requests += w.requests;
    into.errors += w.errors;
    for (a, b) in into.buckets.iter_mut().zip(&w.buckets) {
        a.1 += b.1;
    }
}

fn empty() -> Window {
    Window {
        requests: 0,
        errors: 0,
        buckets: Vec::new(),
    }
}

/// One rollout: every window brings `n` requests to each side (to the
/// canary alone at 100 %).
pub fn rollout(
    rng: &mut fastrand::Rng,
    plan: &Plan,
    n: u64,
    stable: &Behaviour,
    canary: &Behaviour,
) -> Outcome {
    let (sc, cc) = (bucket_cdf(stable), bucket_cdf(canary));
    let mut pooled = Pooled::default();
    let mut windows = 0;
    let mut failures = 0;
    let end = |failed_at, held_at, windows| Outcome {
        failed_at,
        held_at,
        windows,
    };
    for (step, &percent) in plan.steps.iter().enumerate() {
        let full = percent >= 100;
        let (mut cw, mut sw) = (empty(), empty());
        let (mut waits, mut looks) = (0, 0);
        loop {
            windows += 1;
            add(&mut cw, &draw(rng, n, canary, &cc));
            if !full {
                add(&mut sw, &draw(rng, n, stable, &sc));
            }
            let look = Look {
                pooled: &pooled,
                full,
                number: looks + 1,
            };
            let judged = judge(&cw, &sw, plan, &look);
            if judged.hold {
                return end(None, Some(step), windows);
            }
            let failed = match judged.verdict {
                Verdict::Pass => {
                    fold(&mut pooled, &cw, &sw, full);
                    break;
                }
                Verdict::Fail => true,
                Verdict::Wait => {
                    waits += 1;
                    waits >= MAX_WAITS
                }
                Verdict::Inconclusive => {
                    waits += 1;
                    looks += 1;
                    false
                }
            };
            if failed {
                failures += 1;
                if failures >= plan.failure_limit {
                    return end(Some(step), None, windows);
                }
                (cw, sw) = (empty(), empty());
                (waits, looks) = (0, 0);
            }
        }
    }
    end(None, None, windows)
}

/// Requests per window, log-uniform in `lo..=hi`.
pub fn requests(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> u64 {
    let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(lo).max(1) as f64).ln());
    (l + (h - l) * rng.f64()).exp().round() as u64
}

/// Runs `count` rollouts of `canary` against `stable` from `seed` with
/// `lo..=hi` requests per window; returns each one's requests per window
/// and outcome.
pub fn run(
    seed: u64,
    count: usize,
    plan: &Plan,
    (lo, hi): (u64, u64),
    stable: &Behaviour,
    canary: &Behaviour,
) -> Vec<(u64, Outcome)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let n = requests(&mut rng, lo, hi);
            (n, rollout(&mut rng, plan, n, stable, canary))
        })
        .collect()
}
