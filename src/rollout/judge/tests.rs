use std::time::Duration;

use super::sim::{run, Behaviour};
use super::*;
use crate::config::RolloutConfig;
use crate::model::api::RolloutRequest;

fn plan() -> Plan {
    let req = RolloutRequest {
        canary: Some("green".into()),
        min_requests: Some(50),
        ..Default::default()
    };
    crate::rollout::plan::plan_from(&RolloutConfig::default(), &req).unwrap()
}

/// A window of `n` requests, `errors` of them 5xx, all taking `secs`.
fn window(n: u64, errors: u64, secs: f64) -> Window {
    spread(errors, &[(n, secs)])
}

/// A window of requests taking the given times (`(count, secs)`).
fn spread(errors: u64, parts: &[(u64, f64)]) -> Window {
    let n: u64 = parts.iter().map(|p| p.0).sum();
    let mut buckets: Vec<(f64, u64)> = BUCKETS
        .iter()
        .map(|&le| {
            let below = parts.iter().filter(|p| p.1 <= le).map(|p| p.0).sum();
            (le, below)
        })
        .collect();
    buckets.push((f64::INFINITY, n));
    Window {
        requests: n,
        errors,
        buckets,
    }
}

/// The first look of a rollout's first step.
fn first() -> Look<'static> {
    static NONE: Pooled = Pooled {
        canary: Counts {
            requests: 0,
            errors: 0,
            buckets: Vec::new(),
        },
        stable: Counts {
            requests: 0,
            errors: 0,
            buckets: Vec::new(),
        },
        steps: 0,
    };
    Look {
        pooled: &NONE,
        full: false,
        number: 1,
    }
}

/// `judge` at the first look of the first step.
fn judge1(canary: &Window, stable: &Window, plan: &Plan) -> Judged {
    judge(canary, stable, plan, &first())
}

/// Pooled counts of `steps` earlier steps, each like the windows given.
fn pooled(canary: &Window, stable: &Window, steps: u32) -> Pooled {
    let mut p = Pooled::default();
    for _ in 0..steps {
        fold(&mut p, canary, stable, false);
    }
    p
}

fn test<'a>(j: &'a Judged, name: &str) -> &'a TestResult {
    j.tests.iter().find(|t| t.test == name).unwrap()
}

#[test]
fn too_few_requests_on_either_side_waits() {
    let j = judge1(&window(49, 0, 0.01), &window(500, 0, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Wait);
    assert!(j.reason.contains("canary 49"));
    assert!(j.tests.is_empty());
    let j = judge1(&window(100, 0, 0.01), &window(10, 0, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Wait);
    // Pooled evidence does not stand in for a step's own requests.
    let earlier = pooled(&window(5000, 0, 0.01), &window(5000, 0, 0.01), 2);
    let look = Look {
        pooled: &earlier,
        full: false,
        number: 1,
    };
    let j = judge(&window(10, 0, 0.01), &window(500, 0, 0.01), &plan(), &look);
    assert_eq!(j.verdict, Verdict::Wait, "{}", j.reason);
    // min_requests = 0 asks for no evidence: an empty side passes untested
    // (a few requests are tested as ever).
    let mut none = plan();
    none.min_requests = 0;
    let j = judge1(&window(0, 0, 0.01), &window(0, 0, 0.01), &none);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    assert!(j.tests.is_empty() && j.reason.contains("untested"));
    let j = judge1(&window(3, 0, 0.01), &window(3, 0, 0.01), &none);
    assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.reason);
}

#[test]
fn the_alpha_is_split_over_tests_and_looks() {
    let mut p = plan();
    // 2 tests; the SPRT spends its half once, latency over 4 steps x
    // MAX_LOOKS looks.
    let looks = f64::from(4 * MAX_LOOKS);
    assert!((alpha_per_test(&p) - 0.01 / 2.0).abs() < 1e-15);
    assert!((alpha_per_look(&p) - 0.01 / 2.0 / looks).abs() < 1e-15);
    p.min_success_rate = Some(0.99);
    p.max_p99_ms = Some(500);
    p.confidence = 0.95;
    assert!((alpha_per_test(&p) - 0.05 / 4.0).abs() < 1e-15);
    assert!((alpha_per_look(&p) - 0.05 / 4.0 / looks).abs() < 1e-15);
}

#[test]
fn a_clearly_higher_error_rate_fails_with_its_statistics() {
    // 10 % against 5 % with a 1-point limit, on 2000 requests a side.
    let j = judge1(&window(2000, 200, 0.01), &window(2000, 100, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert!(
        j.reason.contains("5xx") && j.reason.contains("10.00%") && j.reason.contains("5.00%"),
        "{}",
        j.reason
    );
    let t = test(&j, "error_rate");
    assert_eq!((t.canary_n, t.stable_n), (2000, 2000));
    assert_eq!(t.method, "sprt");
    // The log likelihood ratio is past ln(1 / 0.005); p = 1 / LR.
    assert!(t.statistic > 200f64.ln(), "{t:?}");
    assert!((t.p_value - (-t.statistic).exp()).abs() < 1e-12, "{t:?}");
    assert!((t.confidence - 0.995).abs() < 1e-12);
    assert!((t.estimate - 0.05).abs() < 1e-12 && t.limit == 0.01);
    assert_eq!(j.requests, [2000, 2000]);
}

#[test]
fn the_point_estimates_that_used_to_roll_back_good_code_do_not() {
    // The cases: 8.47 % vs 5.12 % at 59 canary requests: too few
    // requests to tell, the window extends.
    let j = judge1(&window(59, 5, 0.01), &window(1000, 51, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.reason);
    assert!(j.reason.contains("extending"), "{}", j.reason);
    assert!(!j.hold);
    // 5.74 % vs 4.56 % from 592 canary requests: over the limit as point
    // estimates, but the evidence favours "within the limit" over "4 points
    // beyond it" by far more than 1 / BETA: the step passes.
    let j = judge1(&window(592, 34, 0.01), &window(5000, 228, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    assert!(test(&j, "error_rate").statistic < BETA.ln());
    // Within the limit: pass at once.
    let j = judge1(&window(200, 3, 0.01), &window(1000, 10, 0.01), &plan());
    assert_eq!(j.verdict, Verdict::Pass);
    assert_eq!(test(&j, "error_rate").outcome, Verdict::Pass);
}

#[test]
fn pooled_evidence_fails_a_bad_canary_no_single_window_can() {
    // 9 % against 2 % on 100 requests a side: too few to decide alone.
    let (c, s) = (window(100, 9, 0.01), window(100, 2, 0.01));
    let alone = judge1(&c, &s, &plan());
    assert_eq!(alone.verdict, Verdict::Inconclusive, "{}", alone.reason);
    // The same window after three earlier steps like it: the pooled 400 a
    // side decide.
    let earlier = pooled(&c, &s, 3);
    let look = Look {
        pooled: &earlier,
        full: false,
        number: 1,
    };
    let j = judge(&c, &s, &plan(), &look);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert!(
        j.reason.contains("pooled with 3 earlier step(s)"),
        "{}",
        j.reason
    );
    let t = test(&j, "error_rate");
    assert_eq!((t.canary_n, t.stable_n), (400, 400));
    assert_eq!(j.requests, [400, 400]);
    // The latency histograms are pooled too.
    assert_eq!(test(&j, "latency").canary_n, 400);
}

#[test]
fn an_undecided_step_holds_at_the_bound_and_never_passes() {
    // Identical at 5 %, 100 requests a side: undecided.
    let (c, s) = (window(100, 5, 0.01), window(100, 5, 0.01));
    let look = |number| Look { number, ..first() };
    for number in 1..MAX_LOOKS {
        let j = judge(&c, &s, &plan(), &look(number));
        assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.reason);
        assert!(!j.hold);
    }
    let j = judge(&c, &s, &plan(), &look(MAX_LOOKS));
    assert_eq!(j.verdict, Verdict::Inconclusive, "{}", j.reason);
    assert!(j.hold);
    assert!(j.reason.contains("holding for an operator"), "{}", j.reason);
    assert!(j.reason.contains("ctl rollout resume"), "{}", j.reason);
}

#[test]
fn the_full_step_is_judged_against_the_earlier_steps_stable() {
    // Three steps with both at 5 %; at 100 % the canary keeps its 5 %.
    let earlier = pooled(&window(1000, 50, 0.01), &window(1000, 50, 0.01), 3);
    let canary = window(500, 25, 0.01);
    // The stable's record, from quieter days: no errors at all.
    let record = window(100_000, 0, 0.01);
    let look = Look {
        pooled: &earlier,
        full: true,
        number: 1,
    };
    let j = judge(&canary, &record, &plan(), &look);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    let t = test(&j, "error_rate");
    assert_eq!((t.canary_n, t.stable_n), (3500, 3000));
    assert_eq!(test(&j, "latency").stable_n, 3000);
    // A blue-green switch has no earlier step: the record is all there is.
    let look = Look {
        full: true,
        ..first()
    };
    let j = judge(&canary, &record, &plan(), &look);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert_eq!(test(&j, "error_rate").stable_n, 100_000);
}

#[test]
fn at_the_full_step_a_small_stable_record_does_not_hold_a_slightly_slower_canary() {
    // The fleet test's case: one earlier step with 500 stable requests; at
    // 100 % the canary is significantly but slightly slower (one bucket,
    // 1 -> 2.5 ms: within p99_tolerance). The stable's side cannot grow any
    // more, so once the canary's own p99 is sound it passes; before, the
    // window extended until the look bound held the rollout.
    let earlier = pooled(&window(300, 0, 0.001), &window(500, 0, 0.001), 1);
    let look = Look {
        pooled: &earlier,
        full: true,
        number: 1,
    };
    let j = judge(
        &window(2000, 0, 0.002),
        &window(500, 0, 0.001),
        &plan(),
        &look,
    );
    let t = test(&j, "latency");
    assert!(t.p_value < 1e-6, "{t:?}");
    assert_eq!((t.canary_n, t.stable_n), (2300, 500));
    assert_eq!(t.outcome, Verdict::Pass, "{}", j.reason);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    // The canary's own sample still has to be sound.
    let j = judge(
        &window(300, 0, 0.002),
        &window(500, 0, 0.001),
        &plan(),
        &look,
    );
    assert_eq!(
        test(&j, "latency").outcome,
        Verdict::Inconclusive,
        "{}",
        j.reason
    );
    // Not at 100 %: the stable still gets traffic, so its side waits too.
    let look = Look {
        full: false,
        ..look
    };
    let j = judge(
        &window(2000, 0, 0.002),
        &window(100, 0, 0.001),
        &plan(),
        &look,
    );
    assert_eq!(test(&j, "latency").stable_n, 600);
    assert_eq!(
        test(&j, "latency").outcome,
        Verdict::Inconclusive,
        "{}",
        j.reason
    );
}

#[test]
fn folding_a_step_adds_its_counts() {
    let mut p = Pooled::default();
    fold(&mut p, &window(100, 5, 0.01), &window(300, 6, 0.002), false);
    assert_eq!((p.steps, p.canary.requests, p.canary.errors), (1, 100, 5));
    assert_eq!((p.stable.requests, p.stable.errors), (300, 6));
    assert_eq!(p.canary.buckets.len(), BUCKETS.len() + 1);
    assert_eq!(p.canary.buckets.last(), Some(&100));
    // At 100 % the stable served nothing new: only the canary's counts.
    fold(&mut p, &window(50, 1, 0.01), &window(9999, 9, 0.01), true);
    assert_eq!((p.steps, p.canary.requests, p.canary.errors), (2, 150, 6));
    assert_eq!((p.stable.requests, p.stable.errors), (300, 6));
    // Buckets that are not the proxy's are not pooled (the requests are).
    let odd = Window {
        requests: 10,
        errors: 0,
        buckets: vec![(1.0, 10), (f64::INFINITY, 10)],
    };
    fold(&mut p, &odd, &odd, false);
    assert_eq!(p.canary.requests, 160);
    assert_eq!(p.canary.buckets.last(), Some(&150));
    // The stored form round-trips.
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Pooled>(&text).unwrap(), p);
}

#[test]
fn a_few_slow_outliers_do_not_fail_but_a_slower_distribution_does() {
    // The p99 false alarm: identical bulk, a couple of slow canary
    // requests, so the canary p99 (~20 ms) is far above the stable's (~3 ms).
    let canary = spread(0, &[(60, 0.002), (2, 0.02)]);
    let stable = spread(0, &[(1000, 0.002), (5, 0.004)]);
    let j = judge1(&canary, &stable, &plan());
    assert_ne!(j.verdict, Verdict::Fail, "{}", j.reason);
    let t = test(&j, "latency");
    assert_eq!(t.method, "mann_whitney_u");
    assert_eq!((t.canary_n, t.stable_n), (62, 1005));
    // Not significant at this look's share of the alpha (alone it would be
    // at 1 %: the repeated looks are what keep it from failing).
    assert!(t.p_value > 1.0 - t.confidence, "{t:?}");
    // A canary 100 ms slower than the stable, from 60 requests: fails.
    let j = judge1(&window(60, 0, 0.101), &window(1000, 0, 0.001), &plan());
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert!(j.reason.contains("p99"), "{}", j.reason);
    let t = test(&j, "latency");
    assert!(t.estimate > 0.99 && t.statistic > 5.0, "{t:?}");
}

#[test]
fn a_significant_but_small_slowdown_is_not_acted_on() {
    // Every canary request one bucket up (1 -> 2.5 ms): significant, but
    // the p99s are a couple of milliseconds apart, under p99_tolerance.
    let j = judge1(&window(2000, 0, 0.002), &window(2000, 0, 0.001), &plan());
    let t = test(&j, "latency");
    assert!(t.p_value < 1e-6);
    assert_eq!(t.outcome, Verdict::Pass);
    assert_eq!(j.verdict, Verdict::Pass);
    // From fewer than P99_SAMPLE requests a side the p99s are too rough to
    // clear a significant slowdown: the window extends.
    let j = judge1(&window(500, 0, 0.002), &window(500, 0, 0.001), &plan());
    assert_eq!(test(&j, "latency").outcome, Verdict::Inconclusive);
    assert!(j.reason.contains("significantly slower"), "{}", j.reason);
    // Without a tolerance it fails.
    let mut strict = plan();
    strict.p99_tolerance = Duration::ZERO;
    let j = judge1(&window(500, 0, 0.002), &window(500, 0, 0.001), &strict);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
}

#[test]
fn absolute_gates() {
    let mut p = plan();
    p.min_success_rate = Some(0.99);
    p.max_p99_ms = Some(100);
    // Stable and canary both at 5 % errors: the relative test passes, the
    // success gate fails.
    let j = judge1(&window(1000, 50, 0.01), &window(1000, 50, 0.01), &p);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert!(j.reason.contains("min_success_rate"), "{}", j.reason);
    assert_eq!(test(&j, "error_rate").outcome, Verdict::Pass);
    let t = test(&j, "min_success_rate");
    assert_eq!((t.canary_n, t.stable_n), (1000, 0));
    assert!((t.estimate - 0.95).abs() < 1e-12 && t.limit == 0.99);
    // 0.5 % errors: within the gate.
    let j = judge1(&window(1000, 5, 0.01), &window(1000, 5, 0.01), &p);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    // Every canary request at 250 ms against max_p99 100 ms (a bucket
    // bound): fails on the gate even though the stable is as slow.
    let j = judge1(&window(200, 0, 0.25), &window(200, 0, 0.25), &p);
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert_eq!(test(&j, "max_p99").outcome, Verdict::Fail);
    assert!(j.reason.contains("max_p99"), "{}", j.reason);
    // 1 slow request in 200: over 1 %? no: within.
    let j = judge1(
        &spread(0, &[(199, 0.01), (1, 0.25)]),
        &window(200, 0, 0.01),
        &p,
    );
    assert_eq!(test(&j, "max_p99").outcome, Verdict::Pass);
}

#[test]
fn every_number_is_finite() {
    // Extreme windows: everything failing, nothing failing, one bucket.
    for (c, s) in [
        (
            window(1_000_000, 1_000_000, 20.0),
            window(1_000_000, 0, 0.0005),
        ),
        (window(50, 0, 0.0005), window(50, 50, 20.0)),
        (window(u64::MAX, u64::MAX, 0.01), window(50, 0, 0.01)),
    ] {
        let j = judge1(&c, &s, &plan());
        for t in &j.tests {
            for x in [t.statistic, t.p_value, t.confidence, t.estimate, t.limit] {
                assert!(x.is_finite(), "{t:?}");
            }
        }
        serde_json::to_string(&j.tests).unwrap();
    }
}

/// A small run of the simulator (examples/judge_sim.rs runs thousands):
/// identical canaries are rarely rolled back; bad ones are caught by the
/// end of step 2.
#[test]
fn simulated_rollouts_meet_the_goals_on_a_small_run() {
    let mut p = plan();
    p.steps = vec![5, 25, 50, 100];
    let base = Behaviour {
        error_rate: 0.05,
        median: 0.01,
        sigma: 0.5,
    };
    let same = run(7, 300, &p, (50, 2000), &base, &base);
    let false_alarms = same.iter().filter(|(_, o)| o.failed_at.is_some()).count();
    assert!(
        false_alarms <= 3,
        "{false_alarms} of 300 identical canaries rolled back"
    );
    let by_step_2 = |seed, canary: &Behaviour| {
        run(seed, 300, &p, (50, 2000), &base, canary)
            .iter()
            .filter(|(_, o)| o.failed_at.is_some_and(|s| s <= 1))
            .count()
    };
    let slow = Behaviour {
        median: 0.02,
        ..base
    };
    let caught = by_step_2(8, &slow);
    assert!(
        caught >= 285,
        "{caught} of 300 2x slower canaries caught by step 2"
    );
    let erring = Behaviour {
        error_rate: 0.10,
        ..base
    };
    let caught = by_step_2(9, &erring);
    assert!(
        caught >= 285,
        "{caught} of 300 canaries with +5 points of 5xx caught by step 2"
    );
}
