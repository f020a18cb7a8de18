//! Choosing a version by weight, and a backend within a version.
//!
//! Pure: no I/O, no tokio. Everything expensive happens when a routing table is
//! built; a request does one atomic increment and an index.
//!
//! ```text
//! weights [3, 1]  --build-->  schedule [0, 0, 1, 0]  (smooth WRR, one cycle)
//! request         --pick--->  schedule[cursor.fetch_add(1) % len]
//! ```
//!
//! Over every cycle of the schedule each version appears exactly its weight
//! (divided by the gcd of the weights) times, interleaved as nginx's smooth
//! weighted round robin does. A weight of 0 never appears in the schedule, so
//! it can never be chosen, not even when a pick walks past unavailable entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest schedule built. Weights whose reduced sum exceeds this are scaled
/// down proportionally (each non-zero weight keeps at least one slot), which
/// makes the split approximate; ordinary weights (percentages, small integers)
/// never reach it.
pub const MAX_SCHEDULE: u64 = 1 << 16;

/// The number of sticky buckets: a user key hashes to `[0, STICKY_BUCKETS)`.
pub const STICKY_BUCKETS: u32 = 10_000;

/// A precomputed smooth weighted round-robin cycle over entry indices.
///
/// The cycle depends on the weights alone, so pools with the same weights
/// (and successive builds of a pool whose weights did not change) share
/// one; each schedule has a cursor of its own.
#[derive(Debug)]
pub struct Schedule {
    seq: Arc<[u16]>,
    cursor: AtomicUsize,
}

// === impl Schedule ===

impl Schedule {
    /// Builds one cycle for `weights` (entry `i` has weight `weights[i]`).
    /// Entries beyond `u16::MAX` are ignored.
    pub fn new(weights: &[u32]) -> Schedule {
        let weights = &weights[..weights.len().min(u16::MAX as usize)];
        let reduced = reduce(weights);
        let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
        let mut seq = Vec::with_capacity(total as usize);
        // nginx smooth WRR: each round add every weight to its current value,
        // pick the largest, subtract the total from it.
        let mut current: Vec<i64> = vec![0; reduced.len()];
        for _ in 0..total {
            let mut best = usize::MAX;
            for (i, &w) in reduced.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best == usize::MAX || current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            seq.push(best as u16);
        }
        Schedule {
            seq: seq.into(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// A schedule over the same cycle, with a cursor of its own at the
    /// cycle's start: what [`Schedule::new`] of the same weights gives.
    pub fn share(&self) -> Schedule {
        Schedule {
            seq: self.seq.clone(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The length of one cycle (0 when every weight is 0).
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// The next entry whose `available` is true, walking forward through the
    /// cycle at most once. `None` when the schedule is empty or nothing is
    /// available.
    #[inline]
    pub fn pick(&self, mut available: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for step in 0..len {
            let idx = usize::from(self.seq[(start.wrapping_add(step)) % len]);
            if available(idx) {
                if step > 0 {
                    // Keep the cursor moving past what was skipped so that the
                    // next request does not walk the same dead entries again.
                    self.cursor.fetch_add(step, Ordering::Relaxed);
                }
                return Some(idx);
            }
        }
        None
    }

    /// The raw cycle, for tests and benchmarks.
    pub fn sequence(&self) -> &[u16] {
        &self.seq
    }
}

/// The schedules of one table build, by weights: pools with the same
/// weights (most of a big config's, 90/10 or 100/0) share one cycle.
#[derive(Default)]
pub struct Schedules(HashMap<Box<[u32]>, Schedule, foldhash::fast::RandomState>);

impl Schedules {
    /// A schedule for `weights`: [`Schedule::new`]'s, over a cycle made
    /// once per distinct weights.
    pub fn get(&mut self, weights: &[u32]) -> Schedule {
        if let Some(s) = self.0.get(weights) {
            return s.share();
        }
        let s = Schedule::new(weights);
        let out = s.share();
        self.0.insert(weights.into(), s);
        out
    }
}

/// Divides by the gcd, and scales down when the cycle would be too long.
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0u32, gcd);
    if g == 0 {
        return vec![0; weights.len()];
    }
    let reduced: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                ((u64::from(w) * MAX_SCHEDULE / total) as u32).max(1)
            }
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Sticky assignment: the bucket ranges of each entry over `[0, STICKY_BUCKETS)`.
///
/// Entries are laid out in the order given; an entry owns a contiguous range
/// whose size is its share of the buckets. Putting the canary first makes "the
/// user gets the canary exactly when its bucket is below the canary's share"
/// hold, so raising the canary's share only moves users from stable to canary.
#[derive(Debug, Clone)]
pub struct StickyRanges {
    /// (exclusive upper bound, entry index), ascending.
    bounds: Box<[(u32, u16)]>,
}

// === impl StickyRanges ===

impl StickyRanges {
    /// `order` lists entry indices in layout order with their weights.
    pub fn new(order: &[(usize, u32)]) -> StickyRanges {
        let total: u64 = order.iter().map(|&(_, w)| u64::from(w)).sum();
        let mut bounds = Vec::new();
        let mut acc: u64 = 0;
        for &(idx, w) in order.iter().filter(|&&(_, w)| w > 0) {
            acc += u64::from(w);
            // Rounded so that the last bound is exactly STICKY_BUCKETS.
            if let Some(upper) = (acc * u64::from(STICKY_BUCKETS) + total / 2).checked_div(total) {
                bounds.push((upper as u32, idx as u16));
            }
        }
        StickyRanges {
            bounds: bounds.into_boxed_slice(),
        }
    }

    /// The entry owning `bucket`, or `None` when every weight is 0.
    pub fn entry(&self, bucket: u32) -> Option<usize> {
        self.bounds
            .iter()
            .find(|&&(upper, _)| bucket < upper)
            .map(|&(_, i)| usize::from(i))
    }
}

/// The sticky bucket of a user key: FNV-1a, stable across restarts and builds.
pub fn sticky_bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    ((h ^ (h >> 32)) % u64::from(STICKY_BUCKETS)) as u32
}

/// Round robin over a version's backends, skipping unavailable ones.
#[derive(Debug, Default)]
pub struct RoundRobin {
    cursor: AtomicUsize,
}

// === impl RoundRobin ===

impl RoundRobin {
    #[inline]
    pub fn pick(&self, len: usize, mut available: impl FnMut(usize) -> bool) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|step| start.wrapping_add(step) % len)
            .find(|&i| available(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &Schedule, n: usize, entries: usize) -> Vec<usize> {
        let mut c = vec![0; entries];
        for _ in 0..n {
            c[s.pick(|_| true).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_share_a_cycle_with_cursors_of_their_own() {
        let mut cache = Schedules::default();
        let a = cache.get(&[90, 10]);
        let b = cache.get(&[90, 10]);
        let c = cache.get(&[3, 1]);
        assert!(Arc::ptr_eq(&a.seq, &b.seq));
        assert!(!Arc::ptr_eq(&a.seq, &c.seq));
        assert_eq!(a.sequence(), Schedule::new(&[90, 10]).sequence());
        assert_eq!(c.sequence(), &[0, 0, 1, 0]);
        // Picks on one do not move the other's cursor.
        assert_eq!(counts(&a, 7, 2), vec![6, 1]);
        assert_eq!(b.pick(|_| true), Some(usize::from(b.sequence()[0])));
        let shared = a.share();
        assert_eq!(shared.pick(|_| true), Some(usize::from(a.sequence()[0])));
    }

    #[test]
    fn three_to_one_is_exact_and_interleaved() {
        let s = Schedule::new(&[3, 1]);
        assert_eq!(s.sequence(), &[0, 0, 1, 0]);
        assert_eq!(counts(&s, 4, 2), vec![3, 1]);
        assert_eq!(counts(&s, 400, 2), vec![300, 100]);
    }

    #[test]
    fn ninety_ten_is_exact_per_cycle() {
        let s = Schedule::new(&[90, 10]);
        assert_eq!(s.len(), 10);
        assert_eq!(counts(&s, 10_000, 2), vec![9000, 1000]);
        // Smooth: the minority entry is not bunched at one end.
        let pos: Vec<usize> = s
            .sequence()
            .iter()
            .enumerate()
            .filter(|(_, &v)| v == 1)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pos.len(), 1);
    }

    #[test]
    fn smooth_spreads_three_versions() {
        let s = Schedule::new(&[5, 1, 1]);
        assert_eq!(s.sequence(), &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_is_never_chosen_even_when_others_are_down() {
        let s = Schedule::new(&[1, 0]);
        assert_eq!(counts(&s, 100, 2), vec![100, 0]);
        assert_eq!(s.pick(|i| i == 1), None);
    }

    #[test]
    fn empty_and_all_zero() {
        assert!(Schedule::new(&[]).pick(|_| true).is_none());
        let s = Schedule::new(&[0, 0]);
        assert!(s.is_empty());
        assert!(s.pick(|_| true).is_none());
    }

    #[test]
    fn skips_unavailable_then_recovers() {
        let s = Schedule::new(&[1, 1]);
        let mut down = true;
        for _ in 0..10 {
            assert_eq!(s.pick(|i| !(down && i == 0)), Some(1));
        }
        down = false;
        let c = {
            let mut c = [0; 2];
            for _ in 0..10 {
                c[s.pick(|i| !(down && i == 0)).unwrap()] += 1;
            }
            c
        };
        assert_eq!(c, [5, 5]);
        assert_eq!(s.pick(|_| false), None);
    }

    #[test]
    fn huge_weights_are_scaled_not_refused() {
        let s = Schedule::new(&[4_000_000_000, 1, 0]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2);
        assert!(s.sequence().contains(&1));
        assert!(!s.sequence().contains(&2));
    }

    #[test]
    fn gcd_reduces_the_cycle() {
        assert_eq!(Schedule::new(&[50, 50]).len(), 2);
        assert_eq!(Schedule::new(&[0, 100]).sequence(), &[1]);
    }

    #[test]
    fn sticky_ranges_put_first_entry_low() {
        let r = StickyRanges::new(&[(1, 5), (0, 95)]);
        assert_eq!(r.entry(0), Some(1));
        assert_eq!(r.entry(499), Some(1));
        assert_eq!(r.entry(500), Some(0));
        assert_eq!(r.entry(9_999), Some(0));
        assert_eq!(StickyRanges::new(&[(0, 0)]).entry(1), None);
        let z = StickyRanges::new(&[(1, 0), (0, 100)]);
        assert_eq!(z.entry(0), Some(0));
    }

    #[test]
    fn sticky_bucket_is_spread() {
        let mut hist = [0u32; 10];
        for i in 0..10_000 {
            let b = sticky_bucket(format!("user-{i}").as_bytes());
            assert!(b < STICKY_BUCKETS);
            hist[(b / 1000) as usize] += 1;
        }
        for h in hist {
            assert!((850..=1150).contains(&h), "{hist:?}");
        }
    }

    #[test]
    fn round_robin_skips_down_backends() {
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6).map(|_| rr.pick(3, |i| i != 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert!(picks.contains(&0) && picks.contains(&2));
        assert_eq!(rr.pick(3, |_| false), None);
        assert_eq!(rr.pick(0, |_| true), None);
    }
}
