//! A rollout as it is stored and served: its plan, where it stands, and the
//! judgements so far. Changed only through `control` (revisioned writes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::RolloutStatus;

/// The format of a stored rollout record; bumped when its meaning changes.
pub const ROLLOUT_FORMAT: u32 = 1;

/// The `state` of a rollout held before a step until an operator approves.
pub const WAITING_FOR_APPROVAL: &str = "waiting_for_approval";

/// What a rollout does: steps and gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Canary percent per step; the last is 100.
    pub steps: Vec<u32>,
    #[serde(with = "ms")]
    pub step_duration: Duration,
    pub min_requests: u64,
    pub max_error_rate_increase: f64,
    pub max_p99_increase: f64,
    /// A p99 difference smaller than this never fails a judgement: at a few
    /// milliseconds, ratios are noise.
    #[serde(with = "ms", default = "default_tolerance")]
    pub p99_tolerance: Duration,
    pub failure_limit: u32,
    #[serde(with = "ms")]
    pub cooldown: Duration,
    #[serde(default)]
    pub smoke_path: Option<String>,
    #[serde(default = "default_status")]
    pub smoke_status: (u16, u16),
    #[serde(default)]
    pub webhook: Option<String>,
    /// The preset the plan came from, if any.
    #[serde(default)]
    pub preset: Option<String>,
    /// Per-step durations in ms (`None`: `step_duration`); empty for plans
    /// stored before they existed.
    #[serde(default)]
    pub step_durations: Vec<Option<u64>>,
    /// Step percents that wait for an operator's approval before they start.
    #[serde(default)]
    pub approve_before: Vec<u32>,
    /// Confidence of the whole rollout's judgements: the chance that a canary
    /// as good as the stable is rolled back stays under `1 - confidence`.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Absolute gate: the canary's share of non-5xx answers.
    #[serde(default)]
    pub min_success_rate: Option<f64>,
    /// Absolute gate: the canary's p99, in ms.
    #[serde(default)]
    pub max_p99_ms: Option<u64>,
}

pub fn default_confidence() -> f64 {
    0.99
}

// === impl Plan ===

impl Plan {
    /// How long step `i` lasts.
    pub fn duration_of(&self, i: usize) -> Duration {
        self.step_durations
            .get(i)
            .copied()
            .flatten()
            .map(Duration::from_millis)
            .unwrap_or(self.step_duration)
    }

    /// Whether step `i` waits for an approval before it starts.
    pub fn needs_approval(&self, i: usize) -> bool {
        self.steps
            .get(i)
            .is_some_and(|p| self.approve_before.contains(p))
    }
}

pub fn default_tolerance() -> Duration {
    Duration::from_millis(10)
}

pub fn default_status() -> (u16, u16) {
    (200, 299)
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Paused,
    Promoted,
    RolledBack,
}

impl Status {
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Promoted => "promoted",
            Status::RolledBack => "rolled_back",
        }
    }
}

/// One judgement of a window, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub step: usize,
    pub percent: u32,
    pub at_ms: u64,
    pub verdict: Verdict,
    pub reason: String,
    pub canary_requests: u64,
    pub stable_requests: u64,
    pub canary_error_rate: Option<f64>,
    pub stable_error_rate: Option<f64>,
    pub canary_p99: Option<f64>,
    pub stable_p99: Option<f64>,
    pub max_error_rate_increase: f64,
    pub max_p99_increase: f64,
    /// The window's number within its step (1-based; windows accumulate
    /// until a step is decided).
    #[serde(default)]
    pub window: u32,
    /// Confidence of the whole rollout ([`Plan::confidence`]).
    #[serde(default)]
    pub confidence: f64,
    /// The tests behind the verdict (none when the window was too small).
    #[serde(default)]
    pub tests: Vec<TestResult>,
}

/// One statistical test of a judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// `error_rate`, `latency`, `min_success_rate` or `max_p99`.
    pub test: String,
    /// How: `sprt` (Wald's sequential probability ratio test on the
    /// rollout's pooled counts), `mann_whitney_u` (bucketed, ties
    /// corrected) or `binomial`.
    pub method: String,
    /// The test's statistic, larger for stronger evidence against the
    /// canary: the log likelihood ratio for `sprt`, a z otherwise
    /// ([`TestResult::statistic_name`]).
    pub statistic: f64,
    /// One-sided p-value of "the canary is no worse than allowed" (for
    /// `sprt`, `1 / likelihood ratio`: valid at any look).
    pub p_value: f64,
    /// The confidence this look needed to fail: `1 - alpha` of this test
    /// (the SPRT's share of the rollout's alpha, spent once; the other
    /// tests' share at this look, split over tests and looks).
    pub confidence: f64,
    pub canary_n: u64,
    /// 0 for the absolute gates.
    pub stable_n: u64,
    /// What was measured: the 5xx-rate difference, P(canary slower), the
    /// success rate, or the share above `max_p99`.
    pub estimate: f64,
    /// The limit `estimate` was held against.
    pub limit: f64,
    pub outcome: Verdict,
}

// === impl TestResult ===

impl TestResult {
    /// What `statistic` is: `llr` (log likelihood ratio) or `z`.
    pub fn statistic_name(&self) -> &'static str {
        if self.method == "sprt" {
            "llr"
        } else {
            "z"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too few requests on a side to test anything.
    Wait,
    /// Enough requests, but the canary looks worse than allowed without
    /// significance: the window extends.
    Inconclusive,
}

/// One side's counts summed over windows: requests, 5xx answers, and the
/// latency histogram's cumulative counts (one per bound of the proxy's
/// buckets, then +Inf).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    #[serde(default)]
    pub buckets: Vec<u64>,
}

/// The canary's and the stable's counts over a rollout's decided steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pooled {
    pub canary: Counts,
    pub stable: Counts,
    /// Steps folded in.
    pub steps: u32,
}

impl Pooled {
    pub fn is_empty(&self) -> bool {
        self.steps == 0 && self.canary.requests == 0 && self.stable.requests == 0
    }
}

/// What an operator asks of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
    Abort,
}

/// A rollout, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The record's format ([`ROLLOUT_FORMAT`]); records without one are format 1.
    #[serde(default = "format_one")]
    pub format: u32,
    pub pool: String,
    pub canary: String,
    pub stable: String,
    pub plan: Plan,
    pub status: Status,
    /// Read by the routing table: canary first in the sticky layout.
    pub active: bool,
    pub step: usize,
    pub step_started_ms: u64,
    pub failures: u32,
    /// Windows of the current step so far without a decision.
    pub waits: u32,
    /// Of those, the looks: windows tested and found inconclusive.
    #[serde(default)]
    pub looks: u32,
    /// What the decided steps of this rollout saw, pooled: every later
    /// window is judged together with it (absent until a step is decided).
    #[serde(default, skip_serializing_if = "Pooled::is_empty")]
    pub pooled: Pooled,
    pub started_ms: u64,
    pub started_by: String,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub cooldown_until_ms: Option<u64>,
    #[serde(default)]
    pub last: Option<Judgement>,
    /// The last judgements, newest last (at most 20).
    #[serde(default)]
    pub history: Vec<Judgement>,
    /// Held before `step` until an operator approves (`resume`); `status`
    /// is `paused` meanwhile.
    #[serde(default)]
    pub awaiting_approval: bool,
    /// Bumped by every write; a write based on an older revision is refused,
    /// so the controller and admin calls never overwrite each other.
    #[serde(default)]
    pub rev: u64,
    /// Every version's weight when the rollout started: a rollback restores
    /// them (the canary gets 0 unless an operator aborted). Empty in records
    /// written before this field existed (rollback: canary 0, stable 100).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights_before: BTreeMap<String, u32>,
}

fn format_one() -> u32 {
    1
}

// === impl Rollout ===

impl Rollout {
    pub fn percent(&self) -> u32 {
        self.plan.steps.get(self.step).copied().unwrap_or(100)
    }

    /// Weights for the current step: canary p, stable 100 - p.
    pub fn step_weights(&self) -> BTreeMap<String, u32> {
        let p = self.percent().min(100);
        [(self.canary.clone(), p), (self.stable.clone(), 100 - p)].into()
    }

    /// The weights a rollback sets, given the pool's versions now: every
    /// version back at its weight from before the rollout (versions added
    /// since keep theirs), the canary at 0 unless `operator_abort` (an abort
    /// restores exactly what was there). Never all zero: the stable gets 100
    /// then.
    pub fn rollback_weights(
        &self,
        now: &BTreeMap<String, u32>,
        operator_abort: bool,
    ) -> BTreeMap<String, u32> {
        let mut w: BTreeMap<String, u32> = self
            .weights_before
            .iter()
            .filter(|(v, _)| now.contains_key(*v))
            .map(|(v, &x)| (v.clone(), x))
            .collect();
        if w.is_empty() {
            w.insert(self.canary.clone(), 0);
            w.insert(self.stable.clone(), 100);
        }
        if !operator_abort && now.contains_key(&self.canary) {
            w.insert(self.canary.clone(), 0);
        }
        if w.values().all(|&x| x == 0) {
            w.insert(self.stable.clone(), 100);
        }
        w.retain(|v, _| now.contains_key(v));
        w
    }

    /// Status for `GET /v1/pools/{pool}/rollout` and `ctl rollout status`, at `now_ms`.
    pub fn status_at(&self, now_ms: u64) -> RolloutStatus {
        let time_left_ms = if self.status == Status::Running {
            (self.step_started_ms + self.plan.duration_of(self.step).as_millis() as u64)
                .saturating_sub(now_ms)
        } else {
            0
        };
        let state = if self.awaiting_approval && self.status == Status::Paused {
            WAITING_FOR_APPROVAL
        } else {
            self.status.as_str()
        };
        RolloutStatus {
            rollout: self.clone(),
            percent: self.percent(),
            state: state.to_string(),
            step_number: self.step + 1,
            steps_total: self.plan.steps.len(),
            time_left_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(before: &[(&str, u32)]) -> Rollout {
        Rollout {
            format: ROLLOUT_FORMAT,
            pool: "app".into(),
            canary: "green".into(),
            stable: "blue".into(),
            plan: Plan {
                steps: vec![10, 100],
                step_duration: Duration::from_secs(1),
                min_requests: 1,
                max_error_rate_increase: 0.01,
                max_p99_increase: 0.5,
                p99_tolerance: default_tolerance(),
                failure_limit: 1,
                cooldown: Duration::from_secs(1),
                smoke_path: None,
                smoke_status: default_status(),
                webhook: None,
                preset: None,
                step_durations: Vec::new(),
                approve_before: Vec::new(),
                confidence: 0.99,
                min_success_rate: None,
                max_p99_ms: None,
            },
            status: Status::Running,
            active: true,
            step: 0,
            step_started_ms: 0,
            failures: 0,
            waits: 0,
            looks: 0,
            pooled: Pooled::default(),
            awaiting_approval: false,
            started_ms: 0,
            started_by: "test".into(),
            finished_ms: None,
            reason: None,
            cooldown_until_ms: None,
            last: None,
            history: Vec::new(),
            rev: 1,
            weights_before: before.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        }
    }

    fn map(w: &[(&str, u32)]) -> BTreeMap<String, u32> {
        w.iter().map(|(v, x)| (v.to_string(), *x)).collect()
    }

    #[test]
    fn rollback_restores_the_weights_from_before_the_start() {
        let r = rollout(&[("blue", 37), ("green", 5), ("grey", 0)]);
        let now = map(&[("blue", 90), ("green", 10), ("grey", 0), ("added", 0)]);
        assert_eq!(
            r.rollback_weights(&now, true),
            map(&[("blue", 37), ("green", 5), ("grey", 0)]),
            "an abort restores exactly, versions added since keep theirs"
        );
        assert_eq!(
            r.rollback_weights(&now, false),
            map(&[("blue", 37), ("green", 0), ("grey", 0)]),
            "a failed canary gets nothing"
        );
        // A version that left the pool is not set.
        let gone = map(&[("blue", 50), ("green", 50)]);
        assert_eq!(
            r.rollback_weights(&gone, false),
            map(&[("blue", 37), ("green", 0)])
        );
        // Old records: canary 0, stable 100.
        let old = rollout(&[]);
        assert_eq!(
            old.rollback_weights(&now, true),
            map(&[("blue", 100), ("green", 0)])
        );
        // Never all zero.
        let only_canary = rollout(&[("blue", 0), ("green", 10)]);
        assert_eq!(
            only_canary.rollback_weights(&now, false),
            map(&[("blue", 100), ("green", 0)])
        );
    }
}
