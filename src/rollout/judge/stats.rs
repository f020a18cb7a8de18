//! The judge's tests: score bounds of proportions (Wilson, and Newcombe's
//! for a difference), Mann-Whitney U on histogram buckets, and exact
//! binomial tails. Distribution functions come from `statrs`. Pure.

use statrs::distribution::{Binomial, DiscreteCDF};
use statrs::function::erf::{erfc, erfc_inv};

/// Largest |z| reported (a p-value of about 1e-350 and below; keeps every
/// number finite for JSON).
pub const Z_MAX: f64 = 40.0;

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The z with P(Z > z) = p (the one-sided critical value of `p`).
pub fn normal_isf(p: f64) -> f64 {
    if p <= 0.0 {
        return Z_MAX;
    }
    if p >= 1.0 {
        return -Z_MAX;
    }
    (std::f64::consts::SQRT_2 * erfc_inv(2.0 * p)).clamp(-Z_MAX, Z_MAX)
}

/// Wilson score bounds of a proportion `x / n` at `z` (two one-sided bounds).
/// `(0, 1)` for an empty sample.
pub fn wilson(x: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = (x as f64 / n).min(1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (
        ((centre - half) / denom).clamp(0.0, 1.0),
        ((centre + half) / denom).clamp(0.0, 1.0),
    )
}

/// Newcombe's hybrid score lower bound (his method 10) of `p1 - p2` at `z`:
/// good coverage even with no events on either side, where a Wald interval
/// collapses.
pub fn newcombe_lower(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> f64 {
    let p1 = if n1 == 0 { 0.0 } else { x1 as f64 / n1 as f64 };
    let p2 = if n2 == 0 { 0.0 } else { x2 as f64 / n2 as f64 };
    let (l1, _) = wilson(x1, n1, z);
    let (_, u2) = wilson(x2, n2, z);
    (p1 - p2) - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt()
}

/// The test of "p1 exceeds p2 by more than `delta`" as a z statistic: the
/// z at which Newcombe's lower bound equals `delta` (the bound falls as z
/// grows). 0 when the observed difference is not above `delta` at all.
pub fn newcombe_z(x1: u64, n1: u64, x2: u64, n2: u64, delta: f64) -> f64 {
    let lower = |z| newcombe_lower(x1, n1, x2, n2, z);
    if lower(0.0) <= delta {
        return 0.0;
    }
    if lower(Z_MAX) > delta {
        return Z_MAX;
    }
    let (mut lo, mut hi) = (0.0, Z_MAX);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if lower(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A Mann-Whitney U test of "the first sample is slower".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// Pairs (first, second) where the first is slower, ties counted half.
    pub u: f64,
    /// `u` over all pairs: P(first slower) + P(tie) / 2; 0.5 when alike.
    pub share: f64,
    /// Normal approximation with the tie correction and a continuity
    /// correction of 1/2.
    pub z: f64,
}

/// Mann-Whitney U on two histograms with the same buckets (`a[i]`, `b[i]`:
/// observations in bucket `i`, not cumulative). Observations in one bucket
/// are ties. `None` when either side is empty or the buckets differ.
pub fn mann_whitney(a: &[u64], b: &[u64]) -> Option<MannWhitney> {
    if a.len() != b.len() {
        return None;
    }
    let n1: f64 = a.iter().map(|&x| x as f64).sum();
    let n2: f64 = b.iter().map(|&x| x as f64).sum();
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let (mut u, mut below, mut ties) = (0.0, 0.0, 0.0);
    for (&ai, &bi) in a.iter().zip(b) {
        let (ai, bi) = (ai as f64, bi as f64);
        u += ai * (below + bi / 2.0);
        below += bi;
        let t = ai + bi;
        ties += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if var > 0.0 {
        ((u - mean - 0.5) / var.sqrt()).clamp(-Z_MAX, Z_MAX)
    } else {
        0.0
    };
    Some(MannWhitney {
        u,
        share: u / (n1 * n2),
        z,
    })
}

/// P(X >= k) for X ~ Binomial(n, p): the exact one-sided p-value of "more
/// than a share p".
pub fn binomial_at_least(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(b) => b.sf(k - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// P(X <= k) for X ~ Binomial(n, p): the exact one-sided p-value of "less
/// than a share p".
pub fn binomial_at_most(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(b) => b.cdf(k).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() < eps
    }

    #[test]
    fn normal_tails_match_tables() {
        assert!(close(normal_sf(0.0), 0.5, 1e-12));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-6));
        assert!(close(normal_isf(0.01), 2.326_348, 1e-5));
        assert!(close(normal_isf(0.000_25), 3.480_756, 1e-4));
        assert_eq!(normal_isf(0.0), Z_MAX);
        assert!(normal_isf(1e-300).is_finite());
    }

    #[test]
    fn wilson_bounds_match_published_values() {
        // Newcombe (1998), table II: 81/263 at 95 %: 0.2553 .. 0.3662.
        let (l, u) = wilson(81, 263, 1.959_964);
        assert!(close(l, 0.2553, 5e-4) && close(u, 0.3662, 5e-4), "{l} {u}");
        // No events: the lower bound is 0, the upper is z^2 / (n + z^2).
        let (l, u) = wilson(0, 100, 2.0);
        assert_eq!(l, 0.0);
        assert!(close(u, 4.0 / 104.0, 1e-12));
        assert_eq!(wilson(0, 0, 2.0), (0.0, 1.0));
    }

    #[test]
    fn newcombe_difference_matches_the_paper() {
        // Newcombe (1998), table II, example (a): 56/70 - 48/80 at 95 %,
        // method 10: 0.0524 .. 0.3339.
        let l = newcombe_lower(56, 70, 48, 80, 1.959_964);
        assert!(close(l, 0.0524, 5e-4), "{l}");
        // The z statistic inverts the bound.
        let z = newcombe_z(56, 70, 48, 80, 0.0524);
        assert!(close(z, 1.96, 0.01), "{z}");
        assert_eq!(newcombe_z(5, 100, 5, 100, 0.0), 0.0);
    }

    #[test]
    fn mann_whitney_on_buckets() {
        // Identical histograms: U is half the pairs, z below zero.
        let m = mann_whitney(&[10, 20, 5], &[10, 20, 5]).unwrap();
        assert!(close(m.share, 0.5, 1e-12));
        assert!(m.z < 0.0);
        // Every first observation above every second: U = n1 n2.
        let m = mann_whitney(&[0, 0, 30], &[30, 0, 0]).unwrap();
        assert!(close(m.u, 900.0, 1e-9) && m.z > 5.0, "{m:?}");
        // Small exact case: a = {2, 3}, b = {1, 2}: pairs a>b: (2,1) (3,1)
        // (3,2), tie (2,2): U = 3.5.
        let m = mann_whitney(&[0, 1, 1], &[1, 1, 0]).unwrap();
        assert!(close(m.u, 3.5, 1e-12));
        assert!(mann_whitney(&[0, 0], &[1, 1]).is_none());
        assert!(mann_whitney(&[1], &[1, 1]).is_none());
        // One bucket for everything: no variance, no evidence.
        assert_eq!(mann_whitney(&[5], &[7]).unwrap().z, 0.0);
    }

    #[test]
    fn binomial_tails() {
        // P(X >= 1), n = 10, p = 0.1: 1 - 0.9^10.
        assert!(close(
            binomial_at_least(1, 10, 0.1),
            1.0 - 0.9f64.powi(10),
            1e-12
        ));
        assert_eq!(binomial_at_least(0, 10, 0.1), 1.0);
        // P(X <= 8), n = 10, p = 0.99.
        let want = 1.0 - 0.99f64.powi(10) - 10.0 * 0.01 * 0.99f64.powi(9);
        assert!(close(binomial_at_most(8, 10, 0.99), want, 1e-12));
        assert_eq!(binomial_at_most(10, 10, 0.99), 1.0);
    }
}
