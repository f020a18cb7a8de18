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

/// Cumulative samples of one version on every instance of a fleet, by
/// instance name (one entry, named `""`, on a single instance).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSample(pub std::collections::BTreeMap<String, Sample>);

// === impl FleetSample ===

impl FleetSample {
    /// A single instance's sample.
    pub fn one(s: Sample) -> FleetSample {
        FleetSample([(String::new(), s)].into())
    }

    /// The fleet's window from `earlier` to now: the sum of each instance's
    /// own window. An instance that appeared meanwhile, or whose counters
    /// went back (it restarted), counts from zero; one that left counts
    /// nothing (its traffic since `earlier` is not known).
    pub fn window_since(&self, earlier: &FleetSample) -> Window {
        let mut total = Window::empty();
        for (name, later) in &self.0 {
            let w = match earlier.0.get(name) {
                Some(e) if later.requests >= e.requests => Window::between(e, later),
                _ => Window::between(&empty_like(later), later),
            };
            total.add(&w);
        }
        total
    }

    /// Everything counted so far, fleet-wide (a window from zero).
    pub fn record(&self) -> Window {
        self.window_since(&FleetSample::default())
    }
}

fn empty_like(s: &Sample) -> Sample {
    Sample {
        requests: 0,
        errors: 0,
        buckets: s.buckets.iter().map(|&(le, _)| (le, 0)).collect(),
        sum: 0.0,
    }
}

impl Window {
    /// A window with nothing in it (and no buckets yet).
    pub fn empty() -> Window {
        Window {
            requests: 0,
            errors: 0,
            buckets: Vec::new(),
        }
    }

    /// Adds `other` to this window (buckets by position: every sample has
    /// the same bounds).
    pub fn add(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64) -> Sample {
        let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().map(|&b| (b, requests)).collect();
        buckets.push((f64::INFINITY, requests));
        Sample {
            requests,
            errors,
            buckets,
            sum: 0.0,
        }
    }

    #[test]
    fn a_fleet_window_sums_each_instance_and_survives_restarts_and_departures() {
        let earlier = FleetSample(
            [
                ("a".into(), sample(100, 1)),
                ("b".into(), sample(50, 0)),
                ("gone".into(), sample(9, 9)),
            ]
            .into(),
        );
        let later = FleetSample(
            [
                ("a".into(), sample(130, 3)),  // +30, +2
                ("b".into(), sample(5, 1)),    // restarted: 5, 1 from zero
                ("new".into(), sample(10, 0)), // appeared: 10 from zero
            ]
            .into(),
        );
        let w = later.window_since(&earlier);
        assert_eq!((w.requests, w.errors), (45, 3));
        assert_eq!(w.buckets.last().unwrap().1, 45);
        assert_eq!(later.record().requests, 145);
        assert_eq!(
            FleetSample::one(sample(7, 0))
                .window_since(&FleetSample::one(sample(2, 0)))
                .requests,
            5
        );
    }

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
