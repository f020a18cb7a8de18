//! The decision rule: a step's window judged together with everything the
//! rollout's earlier steps saw, by one-sided tests, not point estimates.
//! Pure.
//!
//! **Pooled evidence.** A rollout keeps the canary's and the stable's counts
//! of its decided steps ([`Pooled`], stored in the record so a restart keeps
//! them); every window of a later step is judged on those counts plus its
//! own, so a bad canary is caught with the requests of steps 1 and 2
//! together. The 100 % step (the stable gets nothing) judges the canary's
//! pooled counts against the stable's pooled counts from the earlier steps:
//! the same rollout, the same hours, no drift. A blue-green switch has no
//! earlier step; there the stable's record up to the switch is the only
//! reference there is, and the runner passes it.
//!
//! - **error rate**: Wald's sequential probability ratio test (SPRT) on the
//!   pooled counts, of "the canary's 5xx rate exceeds the stable's by at most
//!   `max_error_rate_increase`" (H0) against "by [`DESIGN_INCREASE`] more than
//!   that" (H1), on the exact binomial likelihoods with the stable's rate
//!   profiled out. It fails when the likelihood ratio reaches `1 / alpha`
//!   and passes when it falls to [`BETA`]; in between the step extends.
//!   For known rates the likelihood ratio is a martingale under H0, so by
//!   Ville's inequality it reaches `1 / alpha` with probability at most
//!   `alpha` however many times, and whenever, it is looked at: one test
//!   over the whole rollout, its repeated looks accounted for. The stable's
//!   rate is unknown and takes its best fit under each hypothesis: under H0
//!   that only makes the ratio smaller; under H1 it is an approximation,
//!   which the simulator measures (canaries exactly at the limit);
//! - **latency**: Mann-Whitney U on the pooled histogram buckets (the whole
//!   distribution, as Kayenta does), acted on only when the canary's p99 is
//!   also above the stable's by `max_p99_increase` and `p99_tolerance`; a
//!   significant slowdown whose p99s are within those passes only once both
//!   sides have [`P99_SAMPLE`] timed requests (a p99 of fewer is too rough;
//!   at the 100 % step only the canary's side, as the stable's cannot grow);
//! - **gates** (optional): `min_success_rate` and `max_p99`, exact binomial
//!   tests on the canary's pooled counts.
//!
//! Alpha (`1 - confidence`): each test gets an equal share (Bonferroni). The
//! SPRT spends its share once for the whole rollout; the other tests split
//! theirs evenly over every look a rollout may take (`steps x MAX_LOOKS`).
//! So the chance that a canary as good as the stable fails any judgement of
//! the rollout stays under `1 - confidence`. A failed window is not pooled
//! (with `failure_limit` above 1 the step is judged again on fresh windows).
//!
//! **Undecided is not a verdict.** A test that neither fails nor passes is
//! *inconclusive*: the step's window extends (windows accumulate). After
//! [`MAX_LOOKS`] inconclusive looks the step holds for an operator (the
//! runner pauses the rollout, waiting for approval: `ctl rollout resume`
//! passes the step, `promote` and `abort` end the rollout); it never passes
//! or fails on its own. A window with too few requests is no look (nothing
//! is tested): it extends too, up to [`MAX_WAITS`] windows, after which the
//! step fails (a canary nobody uses is not proven).

pub mod sim;
pub mod stats;

use crate::metrics::window::{Window, BUCKETS};
use crate::model::rollout::{Counts, Plan, Pooled, Rollout, TestResult, Verdict};

use stats::{
    binomial_at_least, binomial_at_most, mann_whitney, normal_isf, normal_sf, sprt_llr, Z_MAX,
};

/// Inconclusive looks a step may take; at the last the step holds for an
/// operator. The latency test and the gates split their alpha over this
/// many looks a step.
pub const MAX_LOOKS: u32 = 24;

/// Windows of one step without enough requests before that counts as a
/// failed judgement (a canary nobody uses is not proven).
pub const MAX_WAITS: u32 = 12;

/// The error-rate SPRT's alternative: a canary this much (a share: 0.04 is
/// 4 points) beyond `max_error_rate_increase`. Regressions at least this
/// large are caught fastest; one between the limit and the limit plus half
/// of this may pass a step.
pub const DESIGN_INCREASE: f64 = 0.04;

/// The error-rate SPRT's pass bound: a step passes when a canary
/// [`DESIGN_INCREASE`] beyond the limit would have been this much less
/// likely to give the evidence than one within it (Wald: such a canary
/// passes a step with probability about this).
pub const BETA: f64 = 0.05;

/// Timed requests a side before a significant slowdown whose p99s differ
/// by less than the thresholds passes: with fewer, a p99 is one of the few
/// slowest requests (of 1000, about the tenth), too rough to clear anyone.
pub const P99_SAMPLE: u64 = 1000;

/// Canary and stable 5xx rates and p99s, as judged.
pub type Numbers = [Option<f64>; 4];

/// A judgement: the verdict, why, the numbers and the tests behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub reason: String,
    /// Of the pooled evidence judged (earlier steps and this window).
    pub numbers: Numbers,
    /// Canary and stable requests judged (pooled).
    pub requests: [u64; 2],
    pub tests: Vec<TestResult>,
    /// An inconclusive look at the bound ([`MAX_LOOKS`]): the step holds
    /// for an operator.
    pub hold: bool,
}

/// Where a window stands in its rollout.
#[derive(Debug, Clone, Copy)]
pub struct Look<'a> {
    /// What the rollout's decided steps saw.
    pub pooled: &'a Pooled,
    /// The 100 % step: the stable gets nothing, the canary is judged
    /// against the stable's pooled counts (or, with none, the stable window
    /// given: its record up to the switch).
    pub full: bool,
    /// The look's number in its step (1..=[`MAX_LOOKS`]).
    pub number: u32,
}

// === impl Look ===

impl<'a> Look<'a> {
    /// The next look of `r`'s current step.
    pub fn of(r: &'a Rollout) -> Self {
        Look {
            pooled: &r.pooled,
            full: r.percent() >= 100,
            number: r.looks + 1,
        }
    }
}

/// The number of tests a plan runs.
fn tests_of(plan: &Plan) -> u32 {
    2 + u32::from(plan.min_success_rate.is_some()) + u32::from(plan.max_p99_ms.is_some())
}

/// One test's share of the rollout's alpha (the SPRT spends it once).
pub fn alpha_per_test(plan: &Plan) -> f64 {
    (1.0 - plan.confidence).clamp(1e-9, 0.5) / f64::from(tests_of(plan))
}

/// The share of the rollout's alpha a fixed-sample test (latency, gates)
/// gets at one look.
pub fn alpha_per_look(plan: &Plan) -> f64 {
    let looks = (plan.steps.len().max(1) as u32).saturating_mul(MAX_LOOKS);
    alpha_per_test(plan) / f64::from(looks)
}

/// Adds a step's windows to the pooled counts once the step is decided (at
/// 100 % only the canary's: the stable served nothing, unless there is no
/// earlier step and the window given is the stable's record).
pub fn fold(pooled: &mut Pooled, canary: &Window, stable: &Window, full: bool) {
    add_counts(&mut pooled.canary, canary);
    if !full || pooled.stable.requests == 0 {
        add_counts(&mut pooled.stable, stable);
    }
    pooled.steps += 1;
}

/// Whether a window's buckets are the proxy's (`BUCKETS`, then +Inf).
fn standard(w: &Window) -> bool {
    w.buckets.len() == BUCKETS.len() + 1 && w.buckets.iter().zip(bounds()).all(|(b, le)| b.0 == le)
}

fn add_counts(into: &mut Counts, w: &Window) {
    into.requests = into.requests.saturating_add(w.requests);
    into.errors = into.errors.saturating_add(w.errors.min(w.requests));
    if !standard(w) {
        return;
    }
    if into.buckets.len() != w.buckets.len() {
        into.buckets = vec![0; w.buckets.len()];
    }
    for (a, b) in into.buckets.iter_mut().zip(&w.buckets) {
        *a = a.saturating_add(b.1);
    }
}

/// The proxy's bucket bounds, then +Inf.
fn bounds() -> impl Iterator<Item = f64> {
    BUCKETS
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
}

/// The pooled counts plus a window (the window's buckets alone when the
/// pooled ones are not the proxy's, or the window's are neither the
/// proxy's nor empty).
fn plus(pooled: &Counts, w: &Window) -> Window {
    let pooled_standard = pooled.buckets.len() == BUCKETS.len() + 1;
    let buckets = if pooled_standard && (w.buckets.is_empty() || standard(w)) {
        let new = w.buckets.iter().map(|b| b.1).chain(std::iter::repeat(0));
        bounds()
            .zip(&pooled.buckets)
            .zip(new)
            .map(|((le, &p), q)| (le, p.saturating_add(q)))
            .collect()
    } else {
        w.buckets.clone()
    };
    Window {
        requests: pooled.requests.saturating_add(w.requests),
        errors: pooled.errors.saturating_add(w.errors.min(w.requests)),
        buckets,
    }
}

/// The evidence a look judges: pooled plus this step's windows (at 100 %,
/// the stable's pooled counts alone when there are any).
fn evidence(canary: &Window, stable: &Window, look: &Look<'_>) -> (Window, Window) {
    let c = plus(&look.pooled.canary, canary);
    let s = if look.full && look.pooled.stable.requests > 0 {
        let none = Window {
            requests: 0,
            errors: 0,
            buckets: Vec::new(),
        };
        plus(&look.pooled.stable, &none)
    } else {
        plus(&look.pooled.stable, stable)
    };
    (c, s)
}

/// Judges this step's windows (`canary`, `stable`: since the step began)
/// together with the rollout's pooled counts.
pub fn judge(canary: &Window, stable: &Window, plan: &Plan, look: &Look<'_>) -> Judged {
    let (c, s) = evidence(canary, stable, look);
    let numbers = [
        c.error_rate(),
        s.error_rate(),
        c.quantile(0.99),
        s.quantile(0.99),
    ];
    // Each step brings its own requests; the stable's are the pooled ones
    // at 100 %.
    let stable_new = if look.full {
        s.requests
    } else {
        stable.requests
    };
    if canary.requests < plan.min_requests || stable_new < plan.min_requests {
        return Judged {
            verdict: Verdict::Wait,
            reason: format!(
                "not enough requests to judge: canary {}, stable {}, need {} each",
                canary.requests, stable_new, plan.min_requests
            ),
            numbers,
            requests: [c.requests, s.requests],
            tests: Vec::new(),
            hold: false,
        };
    }
    if c.requests == 0 || s.requests == 0 {
        // Only with `min_requests = 0`: nothing to test, and the plan asks
        // for no evidence.
        return Judged {
            verdict: Verdict::Pass,
            reason: "no requests to judge, and min_requests = 0 asks for none: passing untested"
                .into(),
            numbers,
            requests: [c.requests, s.requests],
            tests: Vec::new(),
            hold: false,
        };
    }
    let alpha = alpha_per_look(plan);
    let mut tests = vec![error_rate(&c, &s, plan)];
    tests.extend(latency(&c, &s, plan, alpha, look.full));
    if let Some(min) = plan.min_success_rate {
        tests.push(success_gate(&c, min, alpha));
    }
    if let Some(ms) = plan.max_p99_ms {
        tests.extend(p99_gate(&c, ms as f64 / 1000.0, alpha));
    }
    let (verdict, reason) = decide(&tests, plan, numbers, look);
    Judged {
        verdict,
        reason,
        numbers,
        requests: [c.requests, s.requests],
        hold: verdict == Verdict::Inconclusive && look.number >= MAX_LOOKS,
        tests,
    }
}

/// The verdict of a set of tests: any fail fails; all pass pass; otherwise
/// the window extends (and at the bound, the step holds).
fn decide(tests: &[TestResult], plan: &Plan, n: Numbers, look: &Look<'_>) -> (Verdict, String) {
    let whole = format!("{}% over the rollout", pct_str(plan.confidence));
    let pooled = if look.pooled.steps > 0 {
        format!(", pooled with {} earlier step(s)", look.pooled.steps)
    } else {
        String::new()
    };
    if let Some(t) = tests.iter().find(|t| t.outcome == Verdict::Fail) {
        let why = format!(
            "{} (p = {} < {}, {whole}{pooled})",
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
        let why = format!("canary within thresholds ({whole}{pooled})");
        return (Verdict::Pass, why);
    }
    if look.number >= MAX_LOOKS {
        let why = format!(
            "undecided after {} looks, holding for an operator (`ctl rollout resume` passes the step, `promote` or `abort` ends the rollout): {}",
            look.number,
            open.join("; ")
        );
        return (Verdict::Inconclusive, why);
    }
    let why = format!("not decided yet, extending the window: {}", open.join("; "));
    (Verdict::Inconclusive, why)
}

/// One line for a test that did not pass.
fn describe(t: &TestResult, plan: &Plan, [ce, se, cp, sp]: Numbers) -> String {
    match t.test.as_str() {
        "error_rate" if t.outcome == Verdict::Fail => format!(
            "canary 5xx rate {} exceeds stable {} by more than {:.2} points",
            pct(ce),
            pct(se),
            plan.max_error_rate_increase * 100.0
        ),
        "error_rate" => format!(
            "canary 5xx rate {} against stable {}: too few requests yet to tell within +{:.2} points from +{:.2}",
            pct(ce),
            pct(se),
            plan.max_error_rate_increase * 100.0,
            (plan.max_error_rate_increase + DESIGN_INCREASE) * 100.0
        ),
        "latency" if t.outcome == Verdict::Inconclusive && t.p_value < 1.0 - t.confidence => format!(
            "canary significantly slower (P(slower) {:.2}); too few requests yet to tell whether its p99 {} is more than {:.0}% (and {} ms) above stable p99 {}",
            t.estimate,
            ms_str(cp),
            plan.max_p99_increase * 100.0,
            plan.p99_tolerance.as_millis(),
            ms_str(sp)
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

/// Error rate: the SPRT on the pooled counts. Its p-value is `1 / LR`
/// (valid at any look: the likelihood ratio is an e-value), its statistic
/// the log likelihood ratio.
fn error_rate(canary: &Window, stable: &Window, plan: &Plan) -> TestResult {
    let delta = plan.max_error_rate_increase;
    let alpha = alpha_per_test(plan);
    let (xc, nc) = (canary.errors.min(canary.requests), canary.requests);
    let (xs, ns) = (stable.errors.min(stable.requests), stable.requests);
    let llr = sprt_llr(xc, nc, xs, ns, delta, delta + DESIGN_INCREASE);
    let p = (-llr).exp().min(1.0);
    let diff = xc as f64 / nc.max(1) as f64 - xs as f64 / ns.max(1) as f64;
    let outcome = if llr >= (1.0 / alpha).ln() {
        Verdict::Fail
    } else if llr <= BETA.ln() {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    TestResult {
        test: "error_rate".into(),
        method: "sprt".into(),
        statistic: llr,
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n: nc,
        stable_n: ns,
        estimate: diff,
        limit: delta,
        outcome,
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
/// timed request or the buckets differ. `stable_frozen` (the 100 % step):
/// the stable's sample is its past record and cannot grow.
fn latency(
    canary: &Window,
    stable: &Window,
    plan: &Plan,
    alpha: f64,
    stable_frozen: bool,
) -> Option<TestResult> {
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
    let (canary_n, stable_n) = (a.iter().sum::<u64>(), b.iter().sum::<u64>());
    let mut verdict = outcome(p, alpha, big_enough && m.share > 0.5);
    // Significantly slower, but the p99s are too rough yet to tell whether
    // by enough to act on: not a pass. Waiting helps only the side that
    // still gets traffic: at the 100 % step the stable's record is all
    // there will be, and the canary's p99 is judged against it once the
    // canary's own is sound (waiting for more would hold forever).
    let rough = canary_n < P99_SAMPLE || (!stable_frozen && stable_n < P99_SAMPLE);
    if verdict == Verdict::Pass && m.share > 0.5 && p < alpha && rough {
        verdict = Verdict::Inconclusive;
    }
    Some(TestResult {
        test: "latency".into(),
        method: "mann_whitney_u".into(),
        statistic: m.z,
        p_value: p,
        confidence: 1.0 - alpha,
        canary_n,
        stable_n,
        estimate: m.share,
        limit: 0.5,
        outcome: verdict,
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
