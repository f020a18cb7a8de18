//! Progressive delivery: canary and blue-green rollouts that judge the canary
//! against the stable version from switchyard's own metrics, and promote or
//! roll back on their own.
//!
//! ```text
//! start ─> smoke gate (canary backends answer the smoke path; optional webhook 2xx)
//!       ─> for each step p < 100: weights canary=p stable=100-p; wait step_duration,
//!            sampling canary and stable over the same window; judge:
//!              too few requests -> wait another window (max_waits, then a failure)
//!              5xx-rate increase or p99 ratio over threshold -> failure
//!              failures == failure_limit -> roll back
//!       ─> step 100: canary=100 stable=0, then a watch window judged against the
//!            stable's record up to the switch; pass -> promoted, fail -> roll back
//! any time: canary without an available backend -> roll back at once
//! ```
//!
//! The rollout's state lives in the state file (through
//! [`App::rollout_commit`], which also sets weights in the same write), so a
//! restart resumes the step instead of forgetting it. Every step, judgement,
//! promotion and rollback is an audit event. [`judge`] is pure and unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::app::App;
use crate::config::{check_steps, parse_duration, RolloutConfig, SmokeConfig};
use crate::error::AdminError;
use crate::events::NewEvent;
use crate::metrics::{Sample, Window};

/// Windows without enough requests before that counts as a failed judgement.
pub const MAX_WAITS: u32 = 5;
/// How often a running rollout checks the canary's health.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(100);

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
}

fn default_tolerance() -> Duration {
    Duration::from_millis(10)
}

fn default_status() -> (u16, u16) {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Wait,
}

/// A rollout, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
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
    pub waits: u32,
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
    /// Bumped by every write; a write based on an older revision is refused,
    /// so the controller and admin calls never overwrite each other.
    #[serde(default)]
    pub rev: u64,
}

// === impl Rollout ===

impl Rollout {
    pub fn percent(&self) -> u32 {
        self.plan.steps.get(self.step).copied().unwrap_or(100)
    }

    /// Weights for the current step: canary p, stable 100 - p.
    pub fn step_weights(&self) -> BTreeMap<String, u32> {
        let p = self.percent();
        [(self.canary.clone(), p), (self.stable.clone(), 100 - p)].into()
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Status for `GET /v1/pools/{pool}/rollout` and `ctl rollout status`.
    pub fn status_json(&self) -> Value {
        let now = now_ms();
        let left_ms = if self.status == Status::Running {
            (self.step_started_ms + self.plan.step_duration.as_millis() as u64).saturating_sub(now)
        } else {
            0
        };
        let mut v = self.to_value();
        v["percent"] = json!(self.percent());
        v["steps_total"] = json!(self.plan.steps.len());
        v["step_number"] = json!(self.step + 1);
        v["time_left_ms"] = json!(left_ms);
        v["state"] = json!(self.status.as_str());
        v
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Plans.

/// The plan from the pool's `[rollout]` defaults, a preset and the request's
/// overrides. Refuses anything that is not a sensible plan.
pub fn plan_from(defaults: &RolloutConfig, body: &Value) -> Result<Plan, AdminError> {
    let bad = |m: String| AdminError::BadRequest(m);
    let obj = body
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object".into()))?;
    const KNOWN: &[&str] = &[
        "canary",
        "preset",
        "steps",
        "step_duration",
        "min_requests",
        "max_error_rate_increase",
        "max_p99_increase",
        "p99_tolerance",
        "failure_limit",
        "cooldown",
        "smoke",
        "webhook",
        "force",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!("unknown field {k:?}")));
    }
    let mut steps = defaults.steps.clone();
    let mut preset = None;
    if let Some(p) = obj.get("preset") {
        let name = p
            .as_str()
            .ok_or_else(|| bad("preset must be a string".into()))?;
        steps = preset_steps(name).ok_or_else(|| {
            bad(format!(
                "unknown preset {name:?} (canary-10, linear-10, all-at-once)"
            ))
        })?;
        preset = Some(name.to_string());
    }
    if let Some(s) = obj.get("steps") {
        let list: Vec<i64> = s
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad("steps must be a list of whole percentages".into()))?;
        steps = check_steps(&list).map_err(bad)?;
    }
    if steps.last() != Some(&100) {
        steps.push(100);
    }
    let dur = |k: &str, d: Duration| -> Result<Duration, AdminError> {
        match obj.get(k) {
            None => Ok(d),
            Some(Value::String(s)) => parse_duration(s).map_err(|e| bad(format!("{k}: {e}"))),
            Some(_) => Err(bad(format!("{k} must be a duration such as \"2m\""))),
        }
    };
    let num = |k: &str, d: f64, max: f64| -> Result<f64, AdminError> {
        match obj.get(k) {
            None => Ok(d),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => Ok(x),
                _ => Err(bad(format!("{k} must be a number between 0 and {max}"))),
            },
        }
    };
    let int = |k: &str, d: u64, min: u64| -> Result<u64, AdminError> {
        match obj.get(k) {
            None => Ok(d),
            Some(v) => match v.as_u64() {
                Some(x) if x >= min => Ok(x),
                _ => Err(bad(format!("{k} must be a whole number >= {min}"))),
            },
        }
    };
    let step_duration = dur("step_duration", defaults.step_duration)?;
    if step_duration < Duration::from_millis(100) {
        return Err(bad("step_duration must be at least 100ms".into()));
    }
    let (mut smoke_path, mut smoke_status, mut webhook) = match &defaults.smoke {
        Some(SmokeConfig {
            path,
            status,
            webhook,
        }) => (Some(path.clone()), *status, webhook.clone()),
        None => (None, default_status(), None),
    };
    if let Some(s) = obj.get("smoke") {
        let path = s
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("smoke needs a path".into()))?;
        if !path.starts_with('/') {
            return Err(bad("smoke.path must start with '/'".into()));
        }
        smoke_path = Some(path.to_string());
        if let Some(st) = s.get("status").and_then(Value::as_u64) {
            smoke_status = (st as u16, st as u16);
        }
    }
    if let Some(w) = obj.get("webhook") {
        webhook = Some(
            w.as_str()
                .ok_or_else(|| bad("webhook must be a URL string".into()))?
                .to_string(),
        );
    }
    if let Some(w) = &webhook {
        check_webhook(w).map_err(bad)?;
    }
    Ok(Plan {
        steps,
        step_duration,
        min_requests: int("min_requests", defaults.min_requests, 0)?,
        max_error_rate_increase: num(
            "max_error_rate_increase",
            defaults.max_error_rate_increase,
            1.0,
        )?,
        max_p99_increase: num("max_p99_increase", defaults.max_p99_increase, 1000.0)?,
        p99_tolerance: match obj.get("p99_tolerance") {
            Some(Value::String(s)) if s.trim() == "0" || s.trim() == "0s" => Duration::ZERO,
            _ => dur("p99_tolerance", defaults.p99_tolerance)?,
        },
        failure_limit: int("failure_limit", u64::from(defaults.failure_limit), 1)? as u32,
        cooldown: dur("cooldown", defaults.cooldown)?,
        smoke_path,
        smoke_status,
        webhook,
        preset,
    })
}

/// Named plans, as AWS CodeDeploy names them.
pub fn preset_steps(name: &str) -> Option<Vec<u32>> {
    match name {
        "canary-10" => Some(vec![10, 100]),
        "linear-10" => Some((1..=10).map(|i| i * 10).collect()),
        "all-at-once" => Some(vec![100]),
        _ => None,
    }
}

/// A webhook must be plain HTTP on loopback (the gate runs next to the proxy).
fn check_webhook(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("webhook must be an http:// URL on loopback")?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = crate::host::strip_port(authority);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err("webhook must be on loopback (127.0.0.1, [::1] or localhost)".into())
    }
}

// ---------------------------------------------------------------------------
// The decision rule (pure).

/// Judges a canary window against the stable window (or the stable's record
/// up to a blue-green switch).
pub fn judge(canary: &Window, stable: &Window, plan: &Plan) -> (Verdict, String, [Option<f64>; 4]) {
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

// ---------------------------------------------------------------------------
// The controller.

/// Running rollout tasks, by pool.
#[derive(Default)]
pub struct Controller {
    tasks: Mutex<HashMap<String, Handle>>,
}

struct Handle {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn load(app: &App, pool: &str) -> Option<Rollout> {
    app.rollouts()
        .get(pool)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// An event done by an admin caller (not the controller itself).
fn event_by(who: &str, kind: &'static str, pool: &str, what: String) -> NewEvent {
    NewEvent {
        who: who.into(),
        kind,
        pool: Some(pool.into()),
        what,
        ..Default::default()
    }
}

fn event(kind: &'static str, pool: &str, what: String, after: Value) -> NewEvent {
    NewEvent {
        who: "rollout".into(),
        kind,
        pool: Some(pool.into()),
        what,
        after,
        ..Default::default()
    }
}

// === impl Controller ===

impl Controller {
    fn spawn(&self, app: &Arc<App>, pool: &str) {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(app.clone(), pool.to_string(), wake.clone()));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = tasks.insert(pool.to_string(), Handle { wake, task }) {
            old.task.abort();
        }
    }

    fn wake(&self, pool: &str) {
        if let Some(h) = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pool)
        {
            h.wake.notify_one();
        }
    }

    /// Resumes every active rollout from the state file (at start).
    pub fn resume_all(&self, app: &Arc<App>) {
        for (pool, v) in app.rollouts() {
            let Ok(r) = serde_json::from_value::<Rollout>(v) else {
                tracing::warn!(%pool, "stored rollout is unreadable; ignored");
                continue;
            };
            if r.status.is_active() {
                app.events.record(event(
                    "rollout.resume",
                    &pool,
                    format!(
                        "rollout of {} in {pool} resumed after a restart at step {}/{} ({}%), {}",
                        r.canary,
                        r.step + 1,
                        r.plan.steps.len(),
                        r.percent(),
                        r.status.as_str()
                    ),
                    Value::Null,
                ));
                self.spawn(app, &pool);
            }
        }
    }

    /// Stops every task (shutdown); the state stays for the next start.
    pub fn stop_all(&self) {
        for (_, h) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            h.task.abort();
        }
    }
}

/// `POST /v1/pools/{pool}/rollout`.
pub fn start(app: &Arc<App>, pool: &str, body: &Value, who: &str) -> Result<Value, AdminError> {
    let config = app.effective_config();
    let pc = config
        .pools
        .get(pool)
        .ok_or_else(|| AdminError::NotFound(format!("unknown pool {pool:?}")))?;
    let canary = body
        .get("canary")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AdminError::BadRequest("give the canary version: {\"canary\": \"green\"}".into())
        })?
        .to_string();
    if !pc.versions.contains_key(&canary) {
        return Err(AdminError::NotFound(format!(
            "pool {pool} has no version {canary:?}"
        )));
    }
    let plan = plan_from(&pc.rollout, body)?;
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let existing = load(app, pool);
    if let Some(r) = &existing {
        if r.status.is_active() {
            return Err(AdminError::Conflict(format!(
                "pool {pool} already has a {} rollout of {}",
                r.status.as_str(),
                r.canary
            )));
        }
        if let Some(until) = r.cooldown_until_ms {
            if r.canary == canary && now_ms() < until && !force {
                return Err(AdminError::Conflict(format!(
                    "{canary} was rolled back; cooldown ends in {}s (add \"force\": true to start anyway)",
                    (until - now_ms()) / 1000
                )));
            }
        }
    }
    // The stable version: the highest weight now (ties: first by name).
    let weights: BTreeMap<String, u32> = pc
        .versions
        .iter()
        .map(|(k, v)| (k.clone(), v.weight))
        .collect();
    let (stable, top) = weights
        .iter()
        .filter(|(v, _)| **v != canary)
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(v, w)| (v.clone(), *w))
        .ok_or_else(|| {
            AdminError::Conflict(format!(
                "pool {pool} needs a stable version besides {canary}"
            ))
        })?;
    if top == 0 {
        return Err(AdminError::Conflict(format!(
            "no version of {pool} other than {canary} has traffic to compare against"
        )));
    }
    if let Some((v, _)) = weights
        .iter()
        .find(|(v, w)| **v != canary && **v != stable && **w > 0)
    {
        return Err(AdminError::Conflict(format!("version {v} also has traffic; set it to 0 so the rollout compares {canary} with {stable} only")));
    }
    let now = now_ms();
    let r = Rollout {
        pool: pool.to_string(),
        canary: canary.clone(),
        stable: stable.clone(),
        plan,
        status: Status::Running,
        active: true,
        step: 0,
        step_started_ms: now,
        failures: 0,
        waits: 0,
        started_ms: now,
        started_by: who.to_string(),
        finished_ms: None,
        reason: None,
        cooldown_until_ms: None,
        last: None,
        history: Vec::new(),
        rev: existing.as_ref().map(|e| e.rev).unwrap_or(0),
    };
    let mut r = r;
    // Persist before any traffic moves; the task does the smoke gate and step 1.
    let what = format!(
        "rollout of {canary} in {pool} started by {who}: stable {stable}, steps {:?}, step {:?}",
        r.plan.steps, r.plan.step_duration
    );
    let plan = json!(r.plan);
    save(
        app,
        &mut r,
        None,
        vec![NewEvent {
            who: who.into(),
            kind: "rollout.start",
            pool: Some(pool.into()),
            what,
            after: plan,
            ..Default::default()
        }],
    )?;
    app.rollout_controller.spawn(app, pool);
    Ok(r.status_json())
}

/// `GET /v1/pools/{pool}/rollout`.
pub fn status(app: &App, pool: &str) -> Result<Value, AdminError> {
    if app.pool_weights(pool).is_none() {
        return Err(AdminError::NotFound(format!("unknown pool {pool:?}")));
    }
    load(app, pool)
        .map(|r| r.status_json())
        .ok_or_else(|| AdminError::NotFound(format!("pool {pool} has no rollout")))
}

/// Pause, resume, promote or abort.
pub fn act(
    app: &Arc<App>,
    pool: &str,
    action: crate::admin::RolloutAction,
    who: &str,
) -> Result<Value, AdminError> {
    // A controller write may land between our read and our write: the
    // revision check refuses ours, and we read again.
    for _ in 0..5 {
        match act_once(app, pool, action, who) {
            Err(AdminError::Conflict(m)) if m == CHANGED => continue,
            other => return other,
        }
    }
    Err(AdminError::Conflict(
        "the rollout keeps changing; try again".into(),
    ))
}

fn act_once(
    app: &Arc<App>,
    pool: &str,
    action: crate::admin::RolloutAction,
    who: &str,
) -> Result<Value, AdminError> {
    use crate::admin::RolloutAction as A;
    let mut r = load(app, pool).ok_or_else(|| {
        if app.pool_weights(pool).is_none() {
            AdminError::NotFound(format!("unknown pool {pool:?}"))
        } else {
            AdminError::NotFound(format!("pool {pool} has no rollout"))
        }
    })?;
    if !r.status.is_active() {
        return Err(AdminError::Conflict(format!(
            "the rollout of {} in {pool} is already {}",
            r.canary,
            r.status.as_str()
        )));
    }
    match action {
        A::Pause => {
            if r.status == Status::Paused {
                return Err(AdminError::Conflict("the rollout is already paused".into()));
            }
            r.status = Status::Paused;
            let what = format!(
                "rollout of {} in {pool} paused by {who} at step {}/{} ({}%)",
                r.canary,
                r.step + 1,
                r.plan.steps.len(),
                r.percent()
            );
            save(
                app,
                &mut r,
                None,
                vec![event_by(who, "rollout.pause", pool, what)],
            )?;
        }
        A::Resume => {
            if r.status == Status::Running {
                return Err(AdminError::Conflict("the rollout is not paused".into()));
            }
            r.status = Status::Running;
            r.step_started_ms = now_ms();
            r.waits = 0;
            let what = format!(
                "rollout of {} in {pool} resumed by {who} at step {}/{}",
                r.canary,
                r.step + 1,
                r.plan.steps.len()
            );
            save(
                app,
                &mut r,
                None,
                vec![event_by(who, "rollout.resume", pool, what)],
            )?;
        }
        A::Promote => finish(
            app,
            &mut r,
            Status::Promoted,
            format!("promoted by {who}"),
            who,
        )?,
        A::Abort => finish(
            app,
            &mut r,
            Status::RolledBack,
            format!("aborted by {who}"),
            who,
        )?,
    }
    app.rollout_controller.wake(pool);
    Ok(r.status_json())
}

/// What `App::rollout_commit` says when the stored revision moved on.
pub const CHANGED: &str = "the rollout changed meanwhile";

/// Writes `r` (and optionally weights) as the next revision.
fn save(
    app: &App,
    r: &mut Rollout,
    weights: Option<&BTreeMap<String, u32>>,
    events: Vec<NewEvent>,
) -> Result<(), AdminError> {
    r.rev += 1;
    let pool = r.pool.clone();
    let result = app.rollout_commit(&pool, r.to_value(), weights, events);
    if result.is_err() {
        r.rev -= 1;
    }
    result
}

/// Ends a rollout: promote (canary 100, stable 0) or roll back (canary 0,
/// stable 100, cooldown starts).
fn finish(
    app: &App,
    r: &mut Rollout,
    status: Status,
    reason: String,
    who: &str,
) -> Result<(), AdminError> {
    let now = now_ms();
    r.status = status;
    r.active = false;
    r.finished_ms = Some(now);
    r.reason = Some(reason.clone());
    let weights: BTreeMap<String, u32> = if status == Status::Promoted {
        [(r.canary.clone(), 100), (r.stable.clone(), 0)].into()
    } else {
        r.cooldown_until_ms = Some(now + r.plan.cooldown.as_millis() as u64);
        [(r.canary.clone(), 0), (r.stable.clone(), 100)].into()
    };
    let (kind, what) = if status == Status::Promoted {
        (
            "rollout.promoted",
            format!("{} promoted in {}: {reason}", r.canary, r.pool),
        )
    } else {
        (
            "rollout.rolled_back",
            format!(
                "{} rolled back in {}, {} has all traffic: {reason}",
                r.canary, r.pool, r.stable
            ),
        )
    };
    let after = json!({ "reason": reason, "last_judgement": r.last, "cooldown_until_ms": r.cooldown_until_ms });
    save(
        app,
        r,
        Some(&weights),
        vec![NewEvent {
            who: who.into(),
            kind,
            pool: Some(r.pool.clone()),
            what,
            after,
            ..Default::default()
        }],
    )?;
    set_gauges(app, r);
    Ok(())
}

fn set_gauges(app: &App, r: &Rollout) {
    let m = &app.metrics;
    let pct = if r.status.is_active() {
        r.percent()
    } else if r.status == Status::Promoted {
        100
    } else {
        0
    };
    m.rollout_canary_percent
        .with_label_values(&[&r.pool, &r.canary])
        .set(i64::from(pct));
    for s in [
        Status::Running,
        Status::Paused,
        Status::Promoted,
        Status::RolledBack,
    ] {
        m.rollout_state
            .with_label_values(&[&r.pool, &r.canary, s.as_str()])
            .set(i64::from(s == r.status));
    }
}

/// Whether the canary version still has an available backend.
fn canary_alive(app: &App, r: &Rollout) -> Option<bool> {
    let table = app.table.load();
    table
        .pools
        .get(&r.pool)?
        .version(&r.canary)
        .map(|v| v.has_available())
}

/// The smoke gate: every canary backend answers the smoke path, and the
/// webhook (if any) answers 2xx.
async fn smoke(r: &Rollout, app: &App) -> Result<(), String> {
    let config = app.effective_config();
    let backends = config
        .pools
        .get(&r.pool)
        .and_then(|p| p.versions.get(&r.canary))
        .map(|v| v.backends.clone())
        .unwrap_or_default();
    if let Some(path) = &r.plan.smoke_path {
        let hc = crate::config::HealthConfig {
            path: path.clone(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            rise: 1,
            fall: 1,
            status: r.plan.smoke_status,
            host: None,
        };
        for b in &backends {
            crate::health::probe(b.as_str(), &hc)
                .await
                .map_err(|e| format!("smoke check {path} on {b}: {e}"))?;
        }
    }
    if let Some(url) = &r.plan.webhook {
        let body = json!({ "pool": r.pool, "canary": r.canary, "stable": r.stable, "phase": "pre-rollout" });
        webhook(url, &body)
            .await
            .map_err(|e| format!("webhook {url}: {e}"))?;
    }
    Ok(())
}

async fn webhook(url: &str, body: &Value) -> Result<(), String> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let rest = url.strip_prefix("http://").ok_or("not http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let call = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", resp.status()))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// One rollout's task.
async fn run(app: Arc<App>, pool: String, wake: Arc<Notify>) {
    let Some(mut r) = load(&app, &pool) else {
        return;
    };
    set_gauges(&app, &r);
    // A fresh rollout passes the smoke gate before any traffic moves.
    if r.step == 0
        && r.status == Status::Running
        && r.history.is_empty()
        && r.failures == 0
        && r.waits == 0
    {
        if let Err(e) = smoke(&r, &app).await {
            let why = format!("smoke gate failed: {e}");
            if finish(&app, &mut r, Status::RolledBack, why, "rollout").is_ok() {
                return;
            }
        }
        if r.plan.smoke_path.is_some() || r.plan.webhook.is_some() {
            app.events.record(event(
                "rollout.smoke",
                &pool,
                format!("smoke gate passed for {} in {pool}", r.canary),
                Value::Null,
            ));
        }
    }
    // Baseline for a step at 100 %: the stable's record up to the switch.
    let mut applied_step = None;
    loop {
        // Always act on the stored state: admin calls change it under us.
        let Some(current) = load(&app, &pool) else {
            return;
        };
        r = current;
        if !r.status.is_active() {
            set_gauges(&app, &r);
            return;
        }
        if r.status == Status::Paused {
            set_gauges(&app, &r);
            wake.notified().await;
            applied_step = None;
            continue;
        }
        let versions = app.pool_weights(&pool).unwrap_or_default();
        if !versions.contains_key(&r.canary) || !versions.contains_key(&r.stable) {
            let why = "a version of the rollout left the pool".to_string();
            if finish(&app, &mut r, Status::RolledBack, why, "rollout").is_ok() {
                return;
            }
            continue;
        }
        if applied_step != Some(r.step) {
            let weights = r.step_weights();
            let entered = vec![step_event(&r)];
            match save(&app, &mut r, Some(&weights), entered) {
                Ok(()) => {}
                Err(AdminError::Conflict(m)) if m == CHANGED => continue,
                Err(e) => {
                    tracing::error!(%pool, error = %e, "cannot apply the rollout step; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            applied_step = Some(r.step);
            set_gauges(&app, &r);
        }
        let at_full = r.percent() >= 100;
        let stable_record = app.metrics.sample(&pool, &r.stable);
        let start = (app.metrics.sample(&pool, &r.canary), stable_record.clone());
        // Wait out the window, watching the canary's health and admin calls.
        let end = tokio::time::Instant::now() + r.plan.step_duration;
        let mut interrupted = false;
        loop {
            if canary_alive(&app, &r) == Some(false) {
                let why = format!("every backend of {} is down", r.canary);
                if finish(&app, &mut r, Status::RolledBack, why, "rollout").is_ok() {
                    return;
                }
                interrupted = true;
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep((end - now).min(HEALTH_CHECK_EVERY)) => {}
                _ = wake.notified() => { interrupted = true; break; }
            }
        }
        if interrupted {
            continue;
        }
        let Some(fresh) = load(&app, &pool) else {
            return;
        };
        if fresh.status != Status::Running || fresh.step != r.step {
            continue;
        }
        r = fresh;
        let canary_w = Window::between(&start.0, &app.metrics.sample(&pool, &r.canary));
        let stable_w = if at_full {
            // Everything is on the canary: compare with the stable's record.
            Window::between(&empty_like(&stable_record), &stable_record)
        } else {
            Window::between(&start.1, &app.metrics.sample(&pool, &r.stable))
        };
        let (verdict, reason, [ce, se, cp, sp]) = judge(&canary_w, &stable_w, &r.plan);
        let j = Judgement {
            step: r.step,
            percent: r.percent(),
            at_ms: now_ms(),
            verdict,
            reason: reason.clone(),
            canary_requests: canary_w.requests,
            stable_requests: stable_w.requests,
            canary_error_rate: ce,
            stable_error_rate: se,
            canary_p99: cp,
            stable_p99: sp,
            max_error_rate_increase: r.plan.max_error_rate_increase,
            max_p99_increase: r.plan.max_p99_increase,
        };
        r.last = Some(j.clone());
        r.history.push(j.clone());
        if r.history.len() > 20 {
            r.history.remove(0);
        }
        let mut events = vec![event(
            "rollout.judgement",
            &pool,
            format!(
                "step {}/{} ({}%): {:?}: {reason} [canary {} req, 5xx {}, p99 {}; stable {} req, 5xx {}, p99 {}; limits +{:.2} pts, +{:.0}% p99]",
                r.step + 1,
                r.plan.steps.len(),
                r.percent(),
                verdict,
                j.canary_requests,
                pct(ce),
                ms_str(cp),
                j.stable_requests,
                pct(se),
                ms_str(sp),
                r.plan.max_error_rate_increase * 100.0,
                r.plan.max_p99_increase * 100.0
            ),
            serde_json::to_value(&j).unwrap_or(Value::Null),
        )];
        let mut next_weights = None;
        match verdict {
            Verdict::Wait => {
                r.waits += 1;
                if r.waits >= MAX_WAITS {
                    r.waits = 0;
                    r.failures += 1;
                    events.push(event("rollout.failure", &pool, format!("{MAX_WAITS} windows without enough traffic count as a failed judgement"), Value::Null));
                }
            }
            Verdict::Fail => {
                r.failures += 1;
                r.waits = 0;
            }
            Verdict::Pass => {
                r.waits = 0;
                if at_full || r.step + 1 >= r.plan.steps.len() {
                    if save(&app, &mut r, None, events).is_err() {
                        continue;
                    }
                    let why = "every step passed".to_string();
                    if finish(&app, &mut r, Status::Promoted, why, "rollout").is_ok() {
                        return;
                    }
                    continue;
                }
                // The next step and its weights go in one write, so the
                // stored step always matches the weights in force.
                r.step += 1;
                r.step_started_ms = now_ms();
                events.push(step_event(&r));
                next_weights = Some(r.step_weights());
            }
        }
        if r.failures >= r.plan.failure_limit {
            if save(&app, &mut r, None, events).is_err() {
                continue;
            }
            let why = format!("{} failed judgement(s): {reason}", r.failures);
            if finish(&app, &mut r, Status::RolledBack, why, "rollout").is_ok() {
                return;
            }
            continue;
        }
        if verdict != Verdict::Pass {
            r.step_started_ms = now_ms();
        }
        match save(&app, &mut r, next_weights.as_ref(), events) {
            Ok(()) if next_weights.is_some() => {
                applied_step = Some(r.step);
                set_gauges(&app, &r);
            }
            Ok(()) => {}
            // Most likely an admin call (pause, abort) landed meanwhile: the
            // next turn reads it. The judgement of this window is dropped.
            Err(e) => tracing::info!(%pool, error = %e, "rollout judgement not stored"),
        }
    }
}

/// The audit event of entering `r.step`.
fn step_event(r: &Rollout) -> NewEvent {
    let what = format!(
        "step {}/{}: {} at {}%, {} at {}%",
        r.step + 1,
        r.plan.steps.len(),
        r.canary,
        r.percent(),
        r.stable,
        100 - r.percent()
    );
    event(
        "rollout.step",
        &r.pool,
        what,
        json!({ "step": r.step + 1, "percent": r.percent() }),
    )
}

fn empty_like(s: &Sample) -> Sample {
    Sample {
        requests: 0,
        errors: 0,
        buckets: s.buckets.iter().map(|&(le, _)| (le, 0)).collect(),
        sum: 0.0,
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ms_str(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1} ms", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::BUCKETS;

    fn plan() -> Plan {
        plan_from(
            &RolloutConfig::default(),
            &json!({"canary": "green", "min_requests": 50}),
        )
        .unwrap()
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

    #[test]
    fn plans_from_defaults_presets_and_overrides() {
        let d = RolloutConfig::default();
        let p = plan_from(&d, &json!({"canary": "g"})).unwrap();
        assert_eq!(p.steps, vec![1, 5, 25, 100]);
        assert_eq!(
            plan_from(&d, &json!({"preset": "canary-10"}))
                .unwrap()
                .steps,
            vec![10, 100]
        );
        assert_eq!(
            plan_from(&d, &json!({"preset": "linear-10"}))
                .unwrap()
                .steps
                .len(),
            10
        );
        assert_eq!(
            plan_from(&d, &json!({"preset": "all-at-once"}))
                .unwrap()
                .steps,
            vec![100]
        );
        let p = plan_from(
            &d,
            &json!({"steps": [10, 50], "step_duration": "2s", "min_requests": 5}),
        )
        .unwrap();
        assert_eq!(p.steps, vec![10, 50, 100], "100 is always the last step");
        assert_eq!(p.step_duration, Duration::from_secs(2));
        for bad in [
            json!({"steps": [50, 10]}),
            json!({"steps": [10, 150]}),
            json!({"steps": [0]}),
            json!({"steps": "1,2"}),
            json!({"preset": "yolo"}),
            json!({"step_duration": "soon"}),
            json!({"max_error_rate_increase": 2}),
            json!({"failure_limit": 0}),
            json!({"webhook": "http://example.com/hook"}),
            json!({"surprise": 1}),
        ] {
            assert!(plan_from(&d, &bad).is_err(), "{bad}");
        }
        assert!(plan_from(&d, &json!({"webhook": "http://127.0.0.1:9/gate"})).is_ok());
    }

    #[test]
    fn step_weights_split_canary_and_stable() {
        let r = Rollout {
            pool: "app".into(),
            canary: "green".into(),
            stable: "blue".into(),
            plan: plan(),
            status: Status::Running,
            active: true,
            step: 1,
            step_started_ms: 0,
            failures: 0,
            waits: 0,
            started_ms: 0,
            started_by: "t".into(),
            finished_ms: None,
            reason: None,
            cooldown_until_ms: None,
            last: None,
            history: vec![],
            rev: 0,
        };
        assert_eq!(
            r.step_weights(),
            [("blue".to_string(), 95), ("green".to_string(), 5)].into()
        );
        let back: Rollout = serde_json::from_value(r.to_value()).unwrap();
        assert_eq!(back, r);
    }
}
