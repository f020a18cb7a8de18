//! `rate_limit`: a token bucket per key (client address or a header's
//! value), in bounded memory.
//!
//! Each bucket holds up to `burst` tokens and gains `average` per `period`;
//! a request takes one or is refused with the time until one is there.
//! Buckets live in [`SHARDS`] mutex-guarded maps keyed by a keyed hash of
//! the key (no allocation per request). A shard holds at most
//! [`MAX_KEYS`]` / SHARDS` buckets: when full, buckets that have refilled
//! completely are dropped first (a full bucket is the same as none), then
//! the least recently used one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// Most keys tracked at once per middleware.
pub const MAX_KEYS: usize = 65_536;
const SHARDS: usize = 16;

struct Bucket {
    tokens: f64,
    /// Nanoseconds since the limiter's epoch at the last update.
    last: u64,
}

/// One `rate_limit` middleware's buckets.
pub struct RateLimiter {
    pub config: RateLimitConfig,
    /// Tokens gained per nanosecond.
    rate: f64,
    burst: f64,
    epoch: Instant,
    seed: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
    per_shard: usize,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        Self::with_capacity(config, MAX_KEYS)
    }

    /// A limiter tracking at most `max_keys` keys.
    pub fn with_capacity(config: RateLimitConfig, max_keys: usize) -> RateLimiter {
        let period_ns = config.period.as_nanos().max(1) as f64;
        RateLimiter {
            rate: f64::from(config.average) / period_ns,
            burst: f64::from(config.burst.max(1)),
            config,
            epoch: Instant::now(),
            seed: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
        }
    }

    /// Takes a token for `key`: `Ok` or `Err(time until the next token)`.
    pub fn check(&self, key: &[u8]) -> Result<(), Duration> {
        self.check_at(key, self.epoch.elapsed())
    }

    /// [`RateLimiter::check`] at a given time since the epoch (tests).
    pub fn check_at(&self, key: &[u8], now: Duration) -> Result<(), Duration> {
        let now = now.as_nanos() as u64;
        let h = {
            let mut h = self.seed.build_hasher();
            h.write(key);
            h.finish()
        };
        let shard = &self.shards[(h as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&h) && map.len() >= self.per_shard {
            self.evict(&mut map, now);
        }
        let b = map.entry(h).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last) as f64;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ns = ((1.0 - b.tokens) / self.rate).ceil();
            Err(Duration::from_nanos(wait_ns.min(u64::MAX as f64) as u64))
        }
    }

    /// Makes room in a full shard.
    fn evict(&self, map: &mut HashMap<u64, Bucket>, now: u64) {
        let (rate, burst) = (self.rate, self.burst);
        map.retain(|_, b| b.tokens + now.saturating_sub(b.last) as f64 * rate < burst);
        if map.len() >= self.per_shard {
            if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateKey;

    fn limiter(average: u32, burst: u32, max: usize) -> RateLimiter {
        RateLimiter::with_capacity(
            RateLimitConfig {
                average,
                period: Duration::from_secs(1),
                burst,
                per: RateKey::ClientIp,
                trusted_proxies: 0,
            },
            max,
        )
    }

    #[test]
    fn burst_then_refill_at_the_average() {
        let l = limiter(10, 10, 1024);
        let t0 = Duration::from_secs(5);
        for _ in 0..10 {
            assert!(l.check_at(b"a", t0).is_ok());
        }
        let wait = l.check_at(b"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another key has its own bucket.
        assert!(l.check_at(b"b", t0).is_ok());
        // 100 ms later: one token.
        assert!(l.check_at(b"a", t0 + Duration::from_millis(100)).is_ok());
        assert!(l.check_at(b"a", t0 + Duration::from_millis(100)).is_err());
        // Never more than the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(l.check_at(b"a", later).is_ok());
        }
        assert!(l.check_at(b"a", later).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let l = limiter(1, 1, 64);
        for i in 0..10_000u32 {
            let _ = l.check_at(&i.to_be_bytes(), Duration::from_millis(u64::from(i)));
        }
        assert!(l.tracked() <= 64, "{}", l.tracked());
    }
}
