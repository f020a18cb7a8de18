//! The decision rule: a canary window judged against the stable window (or
//! the stable's record up to a blue-green switch). Pure.

use crate::metrics::window::Window;
use crate::model::rollout::{Plan, Verdict};

/// Canary and stable 5xx rates and p99s, as judged.
pub type Numbers = [Option<f64>; 4];

/// Judges a canary window against the stable one.
pub fn judge(canary: &Window, stable: &Window, plan: &Plan) -> (Verdict, String, Numbers) {
    let (ce, se) = (canary.error_rate(), stable.error_rate());
    let (cp, sp) = (canary.quantile(0.99), stable.quantile(0.99));
    let numbers = [ce, se, cp, sp];
    if canary.requests < plan.min_requests || stable.requests < plan.min_requests {
        return (
            Verdict::Wait,
            format!(
                "not enough requests to judge: canary {}, stable {}, need {} each",
                canary.requests, stable.requests, plan.min_requests
            ),
            numbers,
        );
    }
    if let (Some(c), Some(s)) = (ce, se) {
        if c - s > plan.max_error_rate_increase {
            return (
                Verdict::Fail,
                format!(
                    "canary 5xx rate {:.2}% exceeds stable {:.2}% by more than {:.2} points",
                    c * 100.0,
                    s * 100.0,
                    plan.max_error_rate_increase * 100.0
                ),
                numbers,
            );
        }
    }
    if let (Some(c), Some(s)) = (cp, sp) {
        if s > 0.0
            && c / s - 1.0 > plan.max_p99_increase
            && c - s > plan.p99_tolerance.as_secs_f64()
        {
            return (
                Verdict::Fail,
                format!(
                    "canary p99 {:.1} ms is more than {:.0}% (and {} ms) above stable p99 {:.1} ms",
                    c * 1000.0,
                    plan.max_p99_increase * 100.0,
                    plan.p99_tolerance.as_millis(),
                    s * 1000.0
                ),
                numbers,
            );
        }
    }
    (Verdict::Pass, "canary within thresholds".into(), numbers)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::RolloutConfig;
    use crate::metrics::window::BUCKETS;
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
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .map(|&le| (le, if secs <= le { n } else { 0 }))
            .collect();
        buckets.push((f64::INFINITY, n));
        Window {
            requests: n,
            errors,
            buckets,
        }
    }

    #[test]
    fn too_few_requests_on_either_side_waits() {
        let (v, reason, _) = judge(&window(49, 0, 0.01), &window(500, 0, 0.01), &plan());
        assert_eq!(v, Verdict::Wait);
        assert!(reason.contains("canary 49"));
        assert_eq!(
            judge(&window(100, 0, 0.01), &window(10, 0, 0.01), &plan()).0,
            Verdict::Wait
        );
    }

    #[test]
    fn error_rate_increase_over_the_threshold_fails() {
        // 5 % against 0 % with a 1-point limit.
        let (v, reason, n) = judge(&window(100, 5, 0.01), &window(1000, 0, 0.01), &plan());
        assert_eq!(v, Verdict::Fail);
        assert!(
            reason.contains("5.00%") && reason.contains("0.00%") && reason.contains("1.00"),
            "{reason}"
        );
        assert_eq!(n[0], Some(0.05));
        // 1.5 % against 1 %: within 1 point.
        assert_eq!(
            judge(&window(200, 3, 0.01), &window(1000, 10, 0.01), &plan()).0,
            Verdict::Pass
        );
    }

    #[test]
    fn p99_ratio_over_the_threshold_fails() {
        let (v, reason, _) = judge(&window(100, 0, 0.3), &window(1000, 0, 0.004), &plan());
        assert_eq!(v, Verdict::Fail);
        assert!(reason.contains("p99"), "{reason}");
        // Same bucket: same p99, passes.
        assert_eq!(
            judge(&window(100, 0, 0.004), &window(1000, 0, 0.004), &plan()).0,
            Verdict::Pass
        );
        // Double the p99, but only a few milliseconds apart: under the
        // tolerance, passes; with no tolerance, fails.
        assert_eq!(
            judge(&window(100, 0, 0.008), &window(1000, 0, 0.002), &plan()).0,
            Verdict::Pass
        );
        let mut strict = plan();
        strict.p99_tolerance = Duration::ZERO;
        assert_eq!(
            judge(&window(100, 0, 0.008), &window(1000, 0, 0.002), &strict).0,
            Verdict::Fail
        );
    }
}
