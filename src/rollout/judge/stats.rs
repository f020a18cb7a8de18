//! The judge's tests: binomial likelihoods (profiled) for the sequential
//! probability ratio test of a difference of 5xx rates, Mann-Whitney U on
//! histogram buckets, and exact binomial tails. Distribution functions come
//! from `statrs`. Pure.

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

/// Largest |log likelihood ratio| reported (keeps every number finite for
/// JSON).
pub const LLR_MAX: f64 = 700.0;

/// Binomial log-likelihood of `x` events in `n` at rate `p`, without the
/// binomial coefficient (which cancels in a ratio); `0 ln 0 = 0`.
pub fn binomial_ll(x: u64, n: u64, p: f64) -> f64 {
    let x = x.min(n);
    let term = |k: u64, q: f64| {
        if k == 0 {
            0.0
        } else if q <= 0.0 {
            f64::NEG_INFINITY
        } else {
            k as f64 * q.ln()
        }
    };
    term(x, p) + term(n - x, 1.0 - p)
}

/// The largest joint log-likelihood of `x1 / n1` and `x2 / n2` when the
/// first rate is exactly `d` above the second (the second rate, a nuisance,
/// profiled out). The log-likelihood is concave in the second rate, so a
/// bisection on its slope finds the maximum.
pub fn profile_ll(x1: u64, n1: u64, x2: u64, n2: u64, d: f64) -> f64 {
    let (x1, x2) = (x1.min(n1), x2.min(n2));
    let ll = |p: f64| binomial_ll(x1, n1, p + d) + binomial_ll(x2, n2, p);
    let (lo, hi) = ((-d).max(0.0), (1.0 - d).min(1.0));
    if hi <= lo {
        return ll(lo);
    }
    let part = |k: u64, q: f64| if k == 0 { 0.0 } else { k as f64 / q };
    let slope = |p: f64| {
        part(x1, p + d) - part(n1 - x1, 1.0 - p - d) + part(x2, p) - part(n2 - x2, 1.0 - p)
    };
    let (mut a, mut b) = (lo, hi);
    for _ in 0..200 {
        let m = (a + b) / 2.0;
        if m <= a || m >= b {
            break;
        }
        if slope(m) > 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    ll((a + b) / 2.0).max(ll(lo)).max(ll(hi))
}

/// The log likelihood ratio of Wald's sequential probability ratio test of
/// "the first rate exceeds the second by `d1`" against "by at most `d0`"
/// (`d0 < d1`): the likelihood at `d1` over the largest at any difference
/// up to `d0`, the second rate profiled out of both. Large: evidence of a
/// difference of `d1` (or more); small: of `d0` or less. Clamped to
/// [`LLR_MAX`]. 0 when a side is empty.
pub fn sprt_llr(x1: u64, n1: u64, x2: u64, n2: u64, d0: f64, d1: f64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let (x1, x2) = (x1.min(n1), x2.min(n2));
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let h0 = if p1 - p2 <= d0 {
        binomial_ll(x1, n1, p1) + binomial_ll(x2, n2, p2)
    } else {
        profile_ll(x1, n1, x2, n2, d0)
    };
    let h1 = profile_ll(x1, n1, x2, n2, d1.min(1.0));
    let llr = h1 - h0;
    if llr.is_nan() {
        0.0
    } else {
        llr.clamp(-LLR_MAX, LLR_MAX)
    }
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
    fn profile_likelihood_and_the_sprt_ratio() {
        // No nuisance left: with the second sample empty the profile is the
        // first's likelihood at its own rate, whatever d.
        let want = binomial_ll(3, 10, 0.3);
        assert!(close(profile_ll(3, 10, 0, 0, 0.2), want, 1e-9));
        // 5/100 against 5/100 with d = 0: both rates at 5 %.
        let want = 2.0 * binomial_ll(5, 100, 0.05);
        assert!(close(profile_ll(5, 100, 5, 100, 0.0), want, 1e-9));
        // No errors anywhere, d = 0.05: the second rate goes to 0, the
        // first to 5 %: 100 ln 0.95.
        assert!(close(
            profile_ll(0, 100, 0, 100, 0.05),
            100.0 * 0.95f64.ln(),
            1e-6
        ));
        // The SPRT ratio of the same: 0/100 and 0/100, 1 % against 5 %:
        // ln(0.95^100 / 1) (the observed difference, 0, is within d0).
        let llr = sprt_llr(0, 100, 0, 100, 0.01, 0.05);
        assert!(close(llr, 100.0 * 0.95f64.ln(), 1e-6), "{llr}");
        // 10 % against 0 % in 400 a side: strong evidence of +5 points
        // (the stable's rate, profiled, may be above 0 %: about 8 from 200
        // a side, twice that from 400).
        let llr = sprt_llr(40, 400, 0, 400, 0.01, 0.05);
        assert!(llr > 14.0 && llr < 18.0, "{llr}");
        // Symmetric in the evidence's direction: equal rates favour d0.
        assert!(sprt_llr(50, 1000, 50, 1000, 0.01, 0.05) < -10.0);
        assert_eq!(sprt_llr(1, 0, 0, 10, 0.01, 0.05), 0.0);
        // Impossible alternatives are clamped, not infinite.
        let llr = sprt_llr(0, 10, 10, 10, 0.0, 1.0);
        assert_eq!(llr, -LLR_MAX);
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
