//! The rollout runner: one task per active rollout, and the supervisor that
//! starts them (at start for stored rollouts, and when an operator starts or
//! steers one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use super::judge::{fold, judge, Judged, Look};
use super::{MAX_LOOKS, MAX_WAITS};
use crate::control::{now_ms, Control};
use crate::events::{EventKind, NewEvent};
use crate::metrics::FleetSample;
use crate::model::rollout::{Judgement, Rollout, Status, TestResult, Verdict};
use crate::model::AdminError;

/// How often a running rollout checks the canary's health.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Judgements kept in a rollout's history.
const HISTORY: usize = 20;

struct Task {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Runs every active rollout until `shutdown`; their state stays in the
/// store for the next start. In a fleet (`[cluster]`) only the instance
/// holding the rollout leadership runs them: it resumes every active
/// rollout when it takes the leadership, and stops them all the moment it
/// loses it (the next leader resumes them at the stored step).
pub async fn supervise(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut lead = control.rollout_leadership();
    let mut first = true;
    loop {
        tokio::select! {
            r = lead.wait_for(|l| *l) => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if lead_while(&control, &mut lead, &mut shutdown, first).await {
            return;
        }
        first = false;
    }
}

/// Runs the rollouts while this instance leads. True on shutdown.
async fn lead_while(
    control: &Arc<Control>,
    lead: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
    first: bool,
) -> bool {
    let mut calls = control.rollout_calls();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    resume_all(control, &mut tasks, first);
    let stop = loop {
        tokio::select! {
            call = calls.recv() => match call {
                Ok(pool) => follow(control, &mut tasks, &pool),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let pools: Vec<String> = control.snapshot().state.rollouts.keys().cloned().collect();
                    for pool in pools {
                        follow(control, &mut tasks, &pool);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break true,
            },
            r = lead.wait_for(|l| !*l) => break r.is_err(),
            _ = shutdown.changed() => break true,
        }
    };
    for (_, t) in tasks {
        t.task.abort();
    }
    stop
}

/// An operator started or steered `pool`'s rollout: wake its task, or start
/// one.
fn follow(control: &Arc<Control>, tasks: &mut HashMap<String, Task>, pool: &str) {
    if let Some(t) = tasks.get(pool).filter(|t| !t.task.is_finished()) {
        t.wake.notify_one();
        return;
    }
    if control.rollout(pool).is_some_and(|r| r.status.is_active()) {
        spawn(control, tasks, pool);
    }
}

fn spawn(control: &Arc<Control>, tasks: &mut HashMap<String, Task>, pool: &str) {
    let wake = Arc::new(Notify::new());
    let task = tokio::spawn(run(control.clone(), pool.to_string(), wake.clone()));
    if let Some(old) = tasks.insert(pool.to_string(), Task { wake, task }) {
        old.task.abort();
    }
}

/// Resumes every active rollout from the store (at start, or when this
/// instance takes over the leadership of a fleet).
fn resume_all(control: &Arc<Control>, tasks: &mut HashMap<String, Task>, first: bool) {
    let stored = control.snapshot().state.rollouts.clone();
    let how = match control.cluster() {
        Some(c) => format!("taken over by {} (the rollout leader now)", c.name),
        None if first => "resumed after a restart".to_string(),
        None => "resumed".to_string(),
    };
    for (pool, r) in stored.iter().filter(|(_, r)| r.status.is_active()) {
        let what = format!(
            "rollout of {} in {pool} {how} at step {}/{} ({}%), {}",
            r.canary,
            r.step + 1,
            r.plan.steps.len(),
            r.percent(),
            r.status.as_str()
        );
        control
            .events
            .record(event(EventKind::RolloutResume, pool, what, Value::Null));
        spawn(control, tasks, pool);
    }
}

fn event(kind: EventKind, pool: &str, what: String, after: Value) -> NewEvent {
    NewEvent::new("rollout", kind, what).pool(pool).after(after)
}

/// What a turn of the loop decided.
enum Flow {
    /// Read the stored record again and go on.
    Again,
    /// The rollout ended (or is gone): the task ends.
    Done,
}

/// One rollout's task.
async fn run(c: Arc<Control>, pool: String, wake: Arc<Notify>) {
    let Some(r) = c.rollout(&pool) else {
        return;
    };
    c.set_rollout_gauges(&r);
    let fresh = r.step == 0
        && r.status == Status::Running
        && r.history.is_empty()
        && r.failures == 0
        && r.waits == 0;
    if fresh && !smoke_gate(&c, r).await {
        return;
    }
    let mut applied_step = None;
    let mut window = None;
    while let Flow::Again = turn(&c, &pool, &wake, &mut applied_step, &mut window).await {}
}

/// Where the step's window began: the canary's and the stable's samples.
/// Windows of one step accumulate until the step is decided.
type WindowStart = (usize, FleetSample, FleetSample);

/// A fresh rollout passes the smoke gate before any traffic moves. False
/// when it failed and the rollout was rolled back.
async fn smoke_gate(c: &Arc<Control>, r: Rollout) -> bool {
    if let Err(e) = super::gate::smoke(&r, c).await {
        let why = format!("smoke gate failed: {e}");
        if let Flow::Done = end(c, r.clone(), Status::RolledBack, why).await {
            return false;
        }
    }
    if r.plan.smoke_path.is_some() || r.plan.webhook.is_some() {
        let what = format!("smoke gate passed for {} in {}", r.canary, r.pool);
        c.events
            .record(event(EventKind::RolloutSmoke, &r.pool, what, Value::Null));
    }
    true
}

/// Acts on the stored record once: applies its step, waits out a window,
/// judges it. Admin calls change the record under us, so every turn starts
/// from the store.
async fn turn(
    c: &Arc<Control>,
    pool: &str,
    wake: &Notify,
    applied_step: &mut Option<usize>,
    window: &mut Option<WindowStart>,
) -> Flow {
    let Some(mut r) = c.rollout(pool) else {
        return Flow::Done;
    };
    if !r.status.is_active() {
        c.set_rollout_gauges(&r);
        return Flow::Done;
    }
    if r.status == Status::Paused {
        c.set_rollout_gauges(&r);
        wake.notified().await;
        *applied_step = None;
        *window = None;
        return Flow::Again;
    }
    let versions = c.pool_weights(pool).unwrap_or_default();
    if !versions.contains_key(&r.canary) || !versions.contains_key(&r.stable) {
        let why = "a version of the rollout left the pool".to_string();
        return end(c, r, Status::RolledBack, why).await;
    }
    if *applied_step != Some(r.step) {
        let entered = vec![step_event(&r)];
        let weights = r.step_weights();
        let saved = off(c, move |c| {
            let result = c.leader_save_rollout(&mut r, Some(&weights), entered);
            (result, r)
        });
        let Some((result, saved)) = saved.await else {
            return Flow::Done;
        };
        r = saved;
        match result {
            Ok(()) => {}
            Err(AdminError::Stale) => return Flow::Again,
            Err(e) => {
                tracing::error!(%pool, error = %e, "cannot apply the rollout step; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Flow::Again;
            }
        }
        *applied_step = Some(r.step);
        *window = None;
        c.set_rollout_gauges(&r);
    }
    let start = match window.take() {
        Some((step, a, b)) if step == r.step => (a, b),
        _ => (
            c.fleet_sample(pool, &r.canary),
            c.fleet_sample(pool, &r.stable),
        ),
    };
    if let Some(flow) = wait_window(c, &mut r, wake).await {
        return flow;
    }
    let Some(fresh) = c.rollout(pool) else {
        return Flow::Done;
    };
    if fresh.status != Status::Running || fresh.step != r.step {
        return Flow::Again;
    }
    let applied = *applied_step;
    let step = fresh.step;
    let judged = off(c, move |c| {
        let mut applied = applied;
        let (flow, extend) = judge_window(c, fresh, &start, &mut applied);
        (flow, applied, extend.then_some((step, start.0, start.1)))
    });
    match judged.await {
        Some((flow, applied, extend)) => {
            *applied_step = applied;
            *window = extend;
            flow
        }
        None => Flow::Done,
    }
}

/// Runs `f` (which writes the store, and so fsyncs, and builds the table)
/// on the control thread ([`crate::memory::on_control`]), never on a
/// runtime worker. `None` when `f` panicked.
async fn off<T: Send + 'static>(
    c: &Arc<Control>,
    f: impl FnOnce(&Control) -> T + Send + 'static,
) -> Option<T> {
    let c = c.clone();
    crate::memory::control(move || f(&c)).await.ok()
}

/// Waits out the step's window, watching the canary's health and admin
/// calls. `None` when the window ran its course.
async fn wait_window(c: &Arc<Control>, r: &mut Rollout, wake: &Notify) -> Option<Flow> {
    let end_at = tokio::time::Instant::now() + r.plan.duration_of(r.step);
    loop {
        if canary_alive(c, r) == Some(false) {
            let why = format!("every backend of {} is down", r.canary);
            return Some(end(c, r.clone(), Status::RolledBack, why).await);
        }
        let now = tokio::time::Instant::now();
        if now >= end_at {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep((end_at - now).min(HEALTH_CHECK_EVERY)) => {}
            _ = wake.notified() => return Some(Flow::Again),
        }
    }
}

/// Ends the rollout; a stale write (an admin call landed) goes round again.
async fn end(c: &Arc<Control>, mut r: Rollout, status: Status, why: String) -> Flow {
    let ended = off(c, move |c| {
        c.leader_finish_rollout(&mut r, status, why, "rollout")
    });
    match ended.await {
        Some(Ok(())) | None => Flow::Done,
        Some(Err(_)) => Flow::Again,
    }
}

/// [`end`] from a blocking context (a judgement already off the workers).
fn end_now(c: &Control, r: &mut Rollout, status: Status, why: String) -> Flow {
    match c.leader_finish_rollout(r, status, why, "rollout") {
        Ok(()) => Flow::Done,
        Err(_) => Flow::Again,
    }
}

/// Judges the step's window so far and stores the outcome: wait or
/// inconclusive (the window extends: true in the answer), fail (maybe roll
/// back), or pass (next step, an approval, or promote). Blocking (it writes
/// the store): runs on the blocking pool.
fn judge_window(
    c: &Control,
    mut r: Rollout,
    start: &(FleetSample, FleetSample),
    applied_step: &mut Option<usize>,
) -> (Flow, bool) {
    let pool = r.pool.clone();
    let at_full = r.percent() >= 100;
    // In a fleet: the sum of every instance's window.
    let canary_w = c.fleet_sample(&pool, &r.canary).window_since(&start.0);
    let stable_w = if at_full {
        // Everything is on the canary: the judge compares with the stable's
        // pooled counts of the earlier steps; with none (a blue-green
        // switch), with this: the stable's record up to the switch.
        start.1.record()
    } else {
        c.fleet_sample(&pool, &r.stable).window_since(&start.1)
    };
    let window = r.waits + 1;
    let judged = judge(&canary_w, &stable_w, &r.plan, &Look::of(&r));
    let (verdict, hold) = (judged.verdict, judged.hold);
    let reason = judged.reason.clone();
    let j = judgement(&r, judged, window);
    let mut events = vec![judgement_event(&r, &j)];
    r.last = Some(j.clone());
    r.history.push(j);
    if r.history.len() > HISTORY {
        r.history.remove(0);
    }
    let mut next_weights = None;
    let mut extend = false;
    match verdict {
        Verdict::Wait | Verdict::Inconclusive => {
            r.waits += 1;
            r.looks += u32::from(verdict == Verdict::Inconclusive);
            extend = true;
            if verdict == Verdict::Wait && r.waits >= MAX_WAITS {
                r.waits = 0;
                r.looks = 0;
                r.failures += 1;
                extend = false;
                let what = format!(
                    "{MAX_WAITS} windows without enough traffic count as a failed judgement"
                );
                events.push(event(EventKind::RolloutFailure, &pool, what, Value::Null));
            }
            if hold {
                // Undecided at the bound: keep the step's evidence, and
                // wait for an operator (resume passes the step).
                fold(&mut r.pooled, &canary_w, &stable_w, at_full);
                (r.waits, r.looks, extend) = (0, 0, false);
                r.status = Status::Paused;
                r.awaiting_approval = true;
                events.push(hold_event(&r, &reason));
            }
        }
        Verdict::Fail => {
            r.failures += 1;
            r.waits = 0;
            r.looks = 0;
        }
        Verdict::Pass => {
            r.waits = 0;
            r.looks = 0;
            fold(&mut r.pooled, &canary_w, &stable_w, at_full);
            if at_full || r.step + 1 >= r.plan.steps.len() {
                if c.leader_save_rollout(&mut r, None, events).is_err() {
                    return (Flow::Again, false);
                }
                return (
                    end_now(c, &mut r, Status::Promoted, "every step passed".into()),
                    false,
                );
            }
            if r.plan.needs_approval(r.step + 1) {
                // Hold here (weights unchanged) until an operator approves.
                r.status = Status::Paused;
                r.awaiting_approval = true;
                events.push(approval_event(&r));
            } else {
                // The next step and its weights go in one write, so the
                // stored step always matches the weights in force.
                r.step += 1;
                r.step_started_ms = now_ms();
                events.push(step_event(&r));
                next_weights = Some(r.step_weights());
            }
        }
    }
    if r.failures >= r.plan.failure_limit {
        if c.leader_save_rollout(&mut r, None, events).is_err() {
            return (Flow::Again, false);
        }
        let why = format!("{} failed judgement(s): {reason}", r.failures);
        return (end_now(c, &mut r, Status::RolledBack, why), false);
    }
    if verdict != Verdict::Pass {
        r.step_started_ms = now_ms();
    }
    match c.leader_save_rollout(&mut r, next_weights.as_ref(), events) {
        Ok(()) if next_weights.is_some() => {
            *applied_step = Some(r.step);
            c.set_rollout_gauges(&r);
        }
        Ok(()) => c.set_rollout_gauges(&r),
        // Most likely an admin call (pause, abort) landed meanwhile: the
        // next turn reads it. The judgement of this window is dropped.
        Err(e) => {
            tracing::info!(%pool, error = %e, "rollout judgement not stored");
            extend = false;
        }
    }
    (Flow::Again, extend)
}

/// The stored record of one judgement (requests and rates: the pooled
/// evidence judged).
fn judgement(r: &Rollout, j: Judged, window: u32) -> Judgement {
    let [ce, se, cp, sp] = j.numbers;
    Judgement {
        step: r.step,
        percent: r.percent(),
        at_ms: now_ms(),
        verdict: j.verdict,
        reason: j.reason,
        canary_requests: j.requests[0],
        stable_requests: j.requests[1],
        canary_error_rate: ce,
        stable_error_rate: se,
        canary_p99: cp,
        stable_p99: sp,
        max_error_rate_increase: r.plan.max_error_rate_increase,
        max_p99_increase: r.plan.max_p99_increase,
        window,
        confidence: r.plan.confidence,
        tests: j.tests,
    }
}

/// Whether the canary version still has an available backend.
fn canary_alive(c: &Control, r: &Rollout) -> Option<bool> {
    let table = c.table.load();
    table
        .pools
        .get(r.pool.as_str())?
        .version(&r.canary)
        .map(|v| v.has_available())
}

fn judgement_event(r: &Rollout, j: &Judgement) -> NewEvent {
    let what = format!(
        "step {}/{} ({}%) window {}: {:?}: {} [canary {} req, 5xx {}, p99 {}; stable {} req, 5xx {}, p99 {}; limits +{:.2} pts, +{:.0}% p99]{}",
        r.step + 1,
        r.plan.steps.len(),
        r.percent(),
        j.window,
        j.verdict,
        j.reason,
        j.canary_requests,
        pct(j.canary_error_rate),
        ms_str(j.canary_p99),
        j.stable_requests,
        pct(j.stable_error_rate),
        ms_str(j.stable_p99),
        r.plan.max_error_rate_increase * 100.0,
        r.plan.max_p99_increase * 100.0,
        tests_str(&j.tests)
    );
    let after = serde_json::to_value(j).unwrap_or(Value::Null);
    event(EventKind::RolloutJudgement, &r.pool, what, after)
}

/// The tests of a judgement, one clause each.
pub fn tests_str(tests: &[TestResult]) -> String {
    tests
        .iter()
        .map(|t| {
            format!(
                " {} ({}): {} {:.2}, p {:.2e}, fails below {:.2e}; n {}/{}",
                t.test,
                t.method,
                t.statistic_name(),
                t.statistic,
                t.p_value,
                1.0 - t.confidence,
                t.canary_n,
                t.stable_n
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The audit event of holding before the next step for an approval.
fn approval_event(r: &Rollout) -> NewEvent {
    let next = r.plan.steps.get(r.step + 1).copied().unwrap_or(100);
    let what = format!(
        "step {}/{} passed; waiting for approval before step {}/{} ({} at {next}%): `ctl rollout resume {}` approves, `abort` rolls back",
        r.step + 1,
        r.plan.steps.len(),
        r.step + 2,
        r.plan.steps.len(),
        r.canary,
        r.pool
    );
    let after = json!({ "step": r.step + 2, "percent": next });
    event(EventKind::RolloutApproval, &r.pool, what, after)
}

/// The audit event of holding an undecided step for an operator.
fn hold_event(r: &Rollout, why: &str) -> NewEvent {
    let what = format!(
        "step {}/{} ({}%) of {} undecided after {MAX_LOOKS} looks; waiting for approval: {why}",
        r.step + 1,
        r.plan.steps.len(),
        r.percent(),
        r.canary
    );
    let after = json!({ "step": r.step + 1, "percent": r.percent(), "undecided": true });
    event(EventKind::RolloutApproval, &r.pool, what, after)
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
        100 - r.percent().min(100)
    );
    let after = json!({ "step": r.step + 1, "percent": r.percent() });
    event(EventKind::RolloutStep, &r.pool, what, after)
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ms_str(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1} ms", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}
