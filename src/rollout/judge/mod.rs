//! The decision rule: a canary window judged against the stable window (or
//! the stable's record up to a blue-green switch) with one-sided tests, not
//! point estimates. Pure.
//!
//! - **error rate**: "the canary's 5xx rate exceeds the stable's by more
//!   than `max_error_rate_increase`", Newcombe's score bound of a difference
//!   of proportions;
//! - **latency**: Mann-Whitney U on the histogram buckets (the whole
//!   distribution, as Kayenta does), acted on only when the canary's p99 is
//!   also above the stable's by `max_p99_increase` and `p99_tolerance`;
//! - **gates** (optional): `min_success_rate` and `max_p99`, exact binomial
//!   tests on the canary alone.
//!
//! Repeated looks: the rollout's alpha (`1 - confidence`) is split evenly
//! (Bonferroni) over every test at every window a rollout may judge
//! (`steps x MAX_WINDOWS`), so the chance that a canary as good as the
//! stable fails any judgement of the rollout stays under `1 - confidence`,
//! however many windows it takes. A test fails only when significant at its
//! share; a canary that looks worse than allowed without significance is
//! *inconclusive* and the step's window extends (windows accumulate), up to
//! [`MAX_LOOKS`] looks; at the last one an inconclusive step passes. A
//! window with too few requests is no look (nothing is tested): it extends
//! too, up to [`MAX_WAITS`] windows, after which the step fails (a canary
//! nobody uses is not proven).

pub mod sim;
pub mod stats;

use crate::metrics::window::Window;
use crate::model::rollout::{Plan, TestResult, Verdict};

use stats::{
    binomial_at_least, binomial_at_most, mann_whitney, newcombe_z, normal_isf, normal_sf, Z_MAX,
};

/// Looks (windows with enough requests to test) a step may take before it
/// is decided: an inconclusive step passes at the last. The alpha is split
/// over this many looks a step.
pub const MAX_LOOKS: u32 = 5;

/// Windows of one step without enough requests before that counts as a
/// failed judgement (a canary nobody uses is not proven).
pub const MAX_WAITS: u32 = 12;

/// Canary and stable 5xx rates and p99s, as judged.
pub type Numbers = [Option<f64>; 4];

/// A judgement: the verdict, why, the numbers and the tests behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub reason: String,
    pub numbers: Numbers,
    pub tests: Vec<TestResult>,
}

/// The share of the rollout's alpha one test gets at one window.
pub fn alpha_per_test(plan: &Plan) -> f64 {
    let tests =
        2 + u32::from(plan.min_success_rate.is_some()) + u32::from(plan.max_p99_ms.is_some());
    let looks = (plan.steps.len().max(1) as u32).saturating_mul(MAX_LOOKS);
    let alpha = (1.0 - plan.confidence).clamp(1e-9, 0.5);
    alpha / f64::from(tests * looks)
}

/// Judges a canary window against the stable one; `look` is the look's
/// number in its step (1..=[`MAX_LOOKS`]).
pub fn judge(canary: &Window, stable: &Window, plan: &Plan, look: u32) -> Judged {
    let numbers = [
        canary.error_rate(),
        stable.error_rate(),
        canary.quantile(0.99),
        stable.quantile(0.99),
    ];
    if canary.requests < plan.min_requests || stable.requests < plan.min_requests {
        return Judged {
            verdict: Verdict::Wait,
            reason: format!(
                "not enough requests to judge: canary {}, stable {}, need {} each",
                canary.requests, stable.requests, plan.min_requests
            ),
            numbers,
            tests: Vec::new(),
        };
    }
    let alpha = alpha_per_test(plan);
    let mut tests = vec![error_rate(canary, stable, plan, alpha)];
    tests.extend(latency(canary, stable, plan, alpha));
    if let Some(min) = plan.min_success_rate {
        tests.push(success_gate(canary, min, alpha));
    }
    if let Some(ms) = plan.max_p99_ms {
        tests.extend(p99_gate(canary, ms as f64 / 1000.0, alpha));
    }
    let (verdict, reason) = decide(&tests, plan, numbers, look);
    Judged {
        verdict,
        reason,
        numbers,
        tests,
    }
}

/// The verdict of a set of tests: any fail fails; any inconclusive extends
/// the window, except at the last one.
fn decide(tests: &[TestResult], plan: &Plan, n: Numbers, look: u32) -> (Verdict, String) {
    let whole = format!("{}% over the rollout", pct_str(plan.confidence));
    if let Some(t) = tests.iter().find(|t| t.outcome == Verdict::Fail) {
        let why = format!(
            "{} (p = {} < {}, {whole})",
            describe(t, plan, n),
            p_str(t.p_value),
            p_str(1.0 - t.confidence)
        );
        return (Verdict::Fail, why);
    }
    let open: Vec<String> = tests
        .iter()
        .filter(|t| t.outcome == Verdict::Inconclusive)
        .map(|t| format!("{} (p = {})", describe(t, plan, n), p_str(t.p_value)))
        .collect();
    if open.is_empty() {
        return (Verdict::Pass, format!("canary within thresholds ({whole})"));
    }
    if look >= MAX_LOOKS {
        let why = format!(
            "no significant difference after {look} looks, passing: {}",
            open.join("; ")
        );
        return (Verdict::Pass, why);
    }
    let why = format!(
        "not significant yet, extending the window: {}",
        open.join("; ")
    );
    (Verdict::Inconclusive, why)
}

/// One line for a test that did not pass.
fn describe(t: &TestResult, plan: &Plan, [ce, se, cp, sp]: Numbers) -> String {
    match t.test.as_str() {
        "error_rate" => format!(
            "canary 5xx rate {} exceeds stable {} by more than {:.2} points",
            pct(ce),
            pct(se),
            plan.max_error_rate_increase * 100.0
        ),
        "latency" => format!(
            "canary slower (P(slower) {:.2}): p99 {} is more than {:.0}% (and {} ms) above stable p99 {}",
            t.estimate,
            ms_str(cp),
            plan.max_p99_increase * 100.0,
            plan.p99_tolerance.as_millis(),
            ms_str(sp)
        ),
        "min_success_rate" => format!(
            "canary success rate {:.2}% is below min_success_rate {:.2}%",
            t.estimate * 100.0,
            t.limit * 100.0
        ),
        _ => format!(
            "canary p99 {} is above max_p99 {} ms ({:.2}% of requests slower)",
            ms_str(cp),
            plan.max_p99_ms.unwrap_or(0),
            t.estimate * 100.0
        ),
    }
}

fn outcome(p: f64, alpha: f64, worse: bool) -> Verdict {
    if worse && p < alpha {
        Verdict::Fail
    } else if worse {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

/// Error rate: Newcombe's bound of the difference against the limit.
fn error_rate(canary: &Window, stable: &Window, plan: &Plan, alpha: f64) -> TestResult {
    let delta = plan.max_error_rate_increase;
    let (xc, nc) = (canary.errors.min(canary.requests), canary.requests);
    let (xs, ns) = (stable.errors.min(stable.requests), stable.requests);
    let z = newcombe_z(xc, nc, xs, ns, delta);
    let p = normal_sf(z);
    let diff = xc as f64 / nc.max(1) as f64 - xs as f64 / ns.max(1) as f64;
    TestResult {
        test: "error_rate".into(),
        method: "newcombe".into(),
        statistic: z,
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n: nc,
        stable_n: ns,
        estimate: diff,
        limit: delta,
        outcome: outcome(p, alpha, diff > delta),
    }
}

/// Observations per bucket (the window's buckets are cumulative).
fn per_bucket(w: &Window) -> Vec<u64> {
    let mut prev = 0;
    w.buckets
        .iter()
        .map(|&(_, c)| {
            let n = c.saturating_sub(prev);
            prev = prev.max(c);
            n
        })
        .collect()
}

/// Latency: Mann-Whitney U on the buckets; the p99s decide whether the
/// difference is big enough to act on. `None` when either side has no
/// timed request or the buckets differ.
fn latency(canary: &Window, stable: &Window, plan: &Plan, alpha: f64) -> Option<TestResult> {
    let (a, b) = (per_bucket(canary), per_bucket(stable));
    let same_bounds = canary
        .buckets
        .iter()
        .map(|b| b.0)
        .eq(stable.buckets.iter().map(|b| b.0));
    if !same_bounds {
        return None;
    }
    let m = mann_whitney(&a, &b)?;
    let p = normal_sf(m.z);
    let big_enough = match (canary.quantile(0.99), stable.quantile(0.99)) {
        (Some(c), Some(s)) => {
            c - s > plan.p99_tolerance.as_secs_f64()
                && (s <= 0.0 || c / s - 1.0 > plan.max_p99_increase)
        }
        _ => false,
    };
    Some(TestResult {
        test: "latency".into(),
        method: "mann_whitney_u".into(),
        statistic: m.z,
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n: a.iter().sum(),
        stable_n: b.iter().sum(),
        estimate: m.share,
        limit: 0.5,
        outcome: outcome(p, alpha, big_enough && m.share > 0.5),
    })
}

/// `min_success_rate`: an exact binomial test of the canary's non-5xx share.
fn success_gate(canary: &Window, min: f64, alpha: f64) -> TestResult {
    let n = canary.requests;
    let ok = n - canary.errors.min(n);
    let p = binomial_at_most(ok, n, min);
    let rate = ok as f64 / n.max(1) as f64;
    TestResult {
        test: "min_success_rate".into(),
        method: "binomial".into(),
        statistic: z_of(p),
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n: n,
        stable_n: 0,
        estimate: rate,
        limit: min,
        outcome: outcome(p, alpha, rate < min),
    }
}

/// `max_p99`: an exact binomial test of "more than 1 % of the canary's
/// requests are slower than `max`", counting only the buckets wholly above
/// `max` (exact when `max` is a bucket bound, conservative otherwise).
fn p99_gate(canary: &Window, max: f64, alpha: f64) -> Option<TestResult> {
    let n = canary.buckets.last()?.1;
    if n == 0 {
        return None;
    }
    let mut lower = 0.0;
    let mut below = 0;
    for &(le, c) in &canary.buckets {
        if lower >= max {
            break;
        }
        below = c;
        lower = le;
    }
    let slower = n.saturating_sub(below);
    let p = binomial_at_least(slower, n, 0.01);
    let over = canary.quantile(0.99).is_some_and(|q| q > max);
    Some(TestResult {
        test: "max_p99".into(),
        method: "binomial".into(),
        statistic: z_of(p),
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n: n,
        stable_n: 0,
        estimate: slower as f64 / n as f64,
        limit: 0.01,
        outcome: outcome(p, alpha, over),
    })
}

fn z_of(p: f64) -> f64 {
    normal_isf(p).clamp(-Z_MAX, Z_MAX)
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ms_str(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1} ms", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

fn pct_str(c: f64) -> String {
    let s = format!("{:.3}", c * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn p_str(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests;
