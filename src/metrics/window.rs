//! The windowed reader's maths: cumulative samples of one version, the
//! window between two samples, its error rate and quantiles. Pure.

/// Latency buckets for a proxy: 1 ms to 10 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Cumulative counters of one version at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    /// (upper bound, cumulative count), ascending, ending with +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
}

/// What happened between two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<(f64, u64)>,
}

// === impl Window ===

impl Window {
    /// The difference `later - earlier` (counter resets count as zero).
    pub fn between(earlier: &Sample, later: &Sample) -> Window {
        let buckets = later
            .buckets
            .iter()
            .zip(earlier.buckets.iter().chain(std::iter::repeat(&(0.0, 0))))
            .map(|(&(le, b), &(_, a))| (le, b.saturating_sub(a)))
            .collect();
        Window {
            requests: later.requests.saturating_sub(earlier.requests),
            errors: later.errors.saturating_sub(earlier.errors),
            buckets,
        }
    }

    /// 5xx answers over all answers; `None` for an empty window.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The q-quantile (0..=1) of durations by linear interpolation within
    /// buckets, as PromQL's `histogram_quantile`: the lowest bucket starts at
    /// 0; a rank in the +Inf bucket gives the highest finite bound. `None`
    /// for an empty window.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut prev_le = 0.0;
        let mut prev_count = 0u64;
        for (i, &(le, count)) in self.buckets.iter().enumerate() {
            if count as f64 >= rank {
                if le.is_infinite() {
                    return Some(if i == 0 { 0.0 } else { self.buckets[i - 1].0 });
                }
                let in_bucket = (count - prev_count) as f64;
                if in_bucket == 0.0 {
                    return Some(le);
                }
                return Some(prev_le + (le - prev_le) * (rank - prev_count as f64) / in_bucket);
            }
            prev_le = le;
            prev_count = count;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(counts: &[u64]) -> Window {
        // Cumulative counts per BUCKETS bound, then +Inf.
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        buckets.push((f64::INFINITY, *counts.last().unwrap()));
        Window {
            requests: *counts.last().unwrap(),
            errors: 0,
            buckets,
        }
    }

    #[test]
    fn quantile_interpolates_like_histogram_quantile() {
        // 100 observations: 50 in (0, 1ms], 50 in (100ms, 250ms].
        let mut c = vec![50; 7];
        c.extend([100; 6]);
        let w = window(&c);
        // rank 50 -> end of the first bucket.
        assert!((w.quantile(0.5).unwrap() - 0.001).abs() < 1e-12);
        // rank 99 -> 0.1 + 0.15 * (99 - 50) / 50
        let p99 = w.quantile(0.99).unwrap();
        assert!((p99 - (0.1 + 0.15 * 49.0 / 50.0)).abs() < 1e-12, "{p99}");
        // rank 75 -> midway through (0.1, 0.25]
        assert!((w.quantile(0.75).unwrap() - 0.175).abs() < 1e-12);
    }

    #[test]
    fn quantile_in_the_inf_bucket_is_the_highest_finite_bound() {
        let mut w = window(&[0; 13]);
        w.buckets.last_mut().unwrap().1 = 10;
        w.requests = 10;
        assert_eq!(w.quantile(0.99), Some(10.0));
    }

    #[test]
    fn empty_window_has_no_quantile_or_rate() {
        let w = window(&[0; 13]);
        assert_eq!(w.quantile(0.99), None);
        assert_eq!(w.error_rate(), None);
    }
}
