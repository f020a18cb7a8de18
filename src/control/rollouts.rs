//! Rollout records: starting, steering and ending a rollout, and the
//! revisioned writes the rollout runner makes. The runner (a service) judges
//! and moves steps; every write of a record goes through here.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::changes::override_weights;
use super::Control;
use crate::config::PoolConfig;
use crate::events::{EventKind, NewEvent};
use crate::model::api::{RolloutRequest, RolloutStatus};
use crate::model::rollout::{Rollout, RolloutAction, Status, ROLLOUT_FORMAT};
use crate::model::AdminError;
use crate::rollout::plan::plan_from;

/// Wall-clock milliseconds since the epoch (rollout records use it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// === impl Control ===

impl Control {
    /// The stored rollout of a pool (any status).
    pub fn rollout(&self, pool: &str) -> Option<Rollout> {
        self.snapshot().state.rollouts.get(pool).cloned()
    }

    /// `GET /v1/pools/{pool}/rollout`.
    pub fn rollout_status(&self, pool: &str) -> Result<RolloutStatus, AdminError> {
        if self.pool_weights(pool).is_none() {
            return Err(AdminError::UnknownPool(pool.to_string()));
        }
        self.rollout(pool)
            .map(|r| r.status_at(now_ms()))
            .ok_or_else(|| AdminError::NoRollout(pool.to_string()))
    }

    /// `POST /v1/pools/{pool}/rollout`: checks the plan and the pool, stores
    /// the record before any traffic moves; the runner does the smoke gate
    /// and step 1.
    pub fn start_rollout(
        &self,
        pool: &str,
        req: &RolloutRequest,
        who: &str,
    ) -> Result<RolloutStatus, AdminError> {
        let config = self.effective_config();
        let pc = config
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        let canary = req.canary.clone().ok_or_else(|| {
            AdminError::BadRequest("give the canary version: {\"canary\": \"green\"}".into())
        })?;
        if !pc.versions.contains_key(&canary) {
            return Err(AdminError::unknown_version(pool, &canary));
        }
        let plan = plan_from(&pc.rollout, req)?;
        let existing = self.rollout(pool);
        check_startable(existing.as_ref(), pool, &canary, req.force.unwrap_or(false))?;
        let stable = stable_of(pc, pool, &canary)?;
        let now = now_ms();
        let mut r = Rollout {
            format: ROLLOUT_FORMAT,
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
            looks: 0,
            pooled: Default::default(),
            started_ms: now,
            started_by: who.to_string(),
            finished_ms: None,
            reason: None,
            cooldown_until_ms: None,
            last: None,
            history: Vec::new(),
            awaiting_approval: false,
            rev: existing.as_ref().map(|e| e.rev).unwrap_or(0),
            weights_before: pc
                .versions
                .iter()
                .map(|(v, c)| (v.clone(), c.weight))
                .collect(),
        };
        let what = format!(
            "rollout of {canary} in {pool} started by {who}: stable {stable}, steps {:?}, step {:?}",
            r.plan.steps, r.plan.step_duration
        );
        let event = NewEvent::new(who, EventKind::RolloutStart, what)
            .pool(pool)
            .after(json!(r.plan));
        self.save_rollout(&mut r, None, vec![event])?;
        let _ = self.rollout_calls.send(pool.to_string());
        Ok(r.status_at(now_ms()))
    }

    /// Pause, resume, promote or abort. A runner write that lands between
    /// our read and our write makes ours stale: we read again.
    pub fn act_on_rollout(
        &self,
        pool: &str,
        action: RolloutAction,
        who: &str,
    ) -> Result<RolloutStatus, AdminError> {
        for _ in 0..5 {
            match self.act_once(pool, action, who) {
                Err(AdminError::Stale) => continue,
                Ok(r) => {
                    let _ = self.rollout_calls.send(pool.to_string());
                    return Ok(r.status_at(now_ms()));
                }
                Err(e) => return Err(e),
            }
        }
        Err(AdminError::Conflict(
            "the rollout keeps changing; try again".into(),
        ))
    }

    fn act_once(
        &self,
        pool: &str,
        action: RolloutAction,
        who: &str,
    ) -> Result<Rollout, AdminError> {
        let mut r = self.rollout(pool).ok_or_else(|| {
            if self.pool_weights(pool).is_none() {
                AdminError::UnknownPool(pool.to_string())
            } else {
                AdminError::NoRollout(pool.to_string())
            }
        })?;
        if !r.status.is_active() {
            return Err(AdminError::Conflict(format!(
                "the rollout of {} in {pool} is already {}",
                r.canary,
                r.status.as_str()
            )));
        }
        let at = |r: &Rollout| format!("step {}/{}", r.step + 1, r.plan.steps.len());
        match action {
            RolloutAction::Pause => {
                if r.awaiting_approval {
                    return Err(AdminError::Conflict(
                        "the rollout is waiting for approval: `resume` approves the next step"
                            .into(),
                    ));
                }
                if r.status == Status::Paused {
                    return Err(AdminError::Conflict("the rollout is already paused".into()));
                }
                r.status = Status::Paused;
                let what = format!(
                    "rollout of {} in {pool} paused by {who} at {} ({}%)",
                    r.canary,
                    at(&r),
                    r.percent()
                );
                let e = NewEvent::new(who, EventKind::RolloutPause, what).pool(pool);
                self.save_rollout(&mut r, None, vec![e])?;
            }
            RolloutAction::Resume => {
                if r.status == Status::Running {
                    return Err(AdminError::Conflict("the rollout is not paused".into()));
                }
                r.status = Status::Running;
                r.step_started_ms = now_ms();
                r.waits = 0;
                r.looks = 0;
                let approved = std::mem::take(&mut r.awaiting_approval);
                if approved {
                    // The runner enters the step (and sets its weights).
                    r.step = (r.step + 1).min(r.plan.steps.len().saturating_sub(1));
                }
                let what = format!(
                    "rollout of {} in {pool} {} by {who} at {} ({}%)",
                    r.canary,
                    if approved { "approved" } else { "resumed" },
                    at(&r),
                    r.percent()
                );
                let e = NewEvent::new(who, EventKind::RolloutResume, what).pool(pool);
                self.save_rollout(&mut r, None, vec![e])?;
            }
            RolloutAction::Promote => {
                self.finish_rollout(&mut r, Status::Promoted, format!("promoted by {who}"), who)?
            }
            RolloutAction::Abort => {
                let why = format!("aborted by {who}");
                self.finish_with(&mut r, Status::RolledBack, why, who, true, false)?
            }
        }
        Ok(r)
    }

    /// Writes `r` as the next revision, and optionally new weights for its
    /// pool, in one durable write; then records the events. Refused with
    /// [`AdminError::Stale`] when the stored record moved on since `r` was
    /// read. The rollout runner changes weights only through here.
    pub fn save_rollout(
        &self,
        r: &mut Rollout,
        weights: Option<&BTreeMap<String, u32>>,
        events: Vec<NewEvent>,
    ) -> Result<(), AdminError> {
        self.save_rollout_as(r, weights, events, false)
    }

    /// [`Control::save_rollout`] for the rollout runner: in a fleet, refused
    /// unless this instance still holds the rollout leadership when the
    /// write lands (etcd checks its lock key in the same transaction), so an
    /// instance that lost its lease never judges or moves a step.
    pub fn leader_save_rollout(
        &self,
        r: &mut Rollout,
        weights: Option<&BTreeMap<String, u32>>,
        events: Vec<NewEvent>,
    ) -> Result<(), AdminError> {
        self.save_rollout_as(r, weights, events, true)
    }

    fn save_rollout_as(
        &self,
        r: &mut Rollout,
        weights: Option<&BTreeMap<String, u32>>,
        events: Vec<NewEvent>,
        fenced: bool,
    ) -> Result<(), AdminError> {
        r.rev += 1;
        let result = self.commit_rollout(r, weights, events, fenced);
        if result.is_err() {
            r.rev -= 1;
        }
        result
    }

    fn commit_rollout(
        &self,
        r: &Rollout,
        weights: Option<&BTreeMap<String, u32>>,
        events: Vec<NewEvent>,
        fenced: bool,
    ) -> Result<(), AdminError> {
        let pool = r.pool.as_str();
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let stored_rev = view.state.rollouts.get(pool).map(|s| s.rev).unwrap_or(0);
        if r.rev != stored_rev + 1 {
            return Err(AdminError::Stale);
        }
        let before = super::weights_of(&view.effective, pool).unwrap_or_default();
        let mut state = (*view.state).clone();
        state.rollouts.insert(pool.to_string(), r.clone());
        if let Some(weights) = weights {
            override_weights(&mut state, &view.file, pool, weights);
        }
        self.commit_as(&mut w, state, fenced)?;
        drop(w);
        if let Some(weights) = weights {
            let mut after = before.clone();
            after.extend(weights.iter().map(|(k, &v)| (k.clone(), v)));
            if after != before {
                self.record_weights("rollout", pool, &before, &after);
            }
        }
        for e in events {
            self.events.record(e);
        }
        Ok(())
    }

    /// Ends a rollout: promote (canary 100, stable 0) or roll back (every
    /// version back at its weight from before the rollout, the canary at 0;
    /// the cooldown starts).
    pub fn finish_rollout(
        &self,
        r: &mut Rollout,
        status: Status,
        reason: String,
        who: &str,
    ) -> Result<(), AdminError> {
        self.finish_with(r, status, reason, who, false, false)
    }

    /// [`Control::finish_rollout`] for the rollout runner (see
    /// [`Control::leader_save_rollout`]).
    pub fn leader_finish_rollout(
        &self,
        r: &mut Rollout,
        status: Status,
        reason: String,
        who: &str,
    ) -> Result<(), AdminError> {
        self.finish_with(r, status, reason, who, false, true)
    }

    /// [`Control::finish_rollout`]; `operator_abort` restores the canary's
    /// earlier weight too (an abort undoes the rollout exactly); `fenced`:
    /// written as the rollout leader.
    fn finish_with(
        &self,
        r: &mut Rollout,
        status: Status,
        reason: String,
        who: &str,
        operator_abort: bool,
        fenced: bool,
    ) -> Result<(), AdminError> {
        let now = now_ms();
        r.status = status;
        r.active = false;
        r.awaiting_approval = false;
        r.finished_ms = Some(now);
        r.reason = Some(reason.clone());
        let (weights, kind, what): (BTreeMap<String, u32>, _, _) = if status == Status::Promoted {
            (
                [(r.canary.clone(), 100), (r.stable.clone(), 0)].into(),
                EventKind::RolloutPromoted,
                format!("{} promoted in {}: {reason}", r.canary, r.pool),
            )
        } else {
            r.cooldown_until_ms = Some(now + r.plan.cooldown.as_millis() as u64);
            let current = self.pool_weights(&r.pool).unwrap_or_default();
            let weights = r.rollback_weights(&current, operator_abort);
            let what = format!(
                "{} rolled back in {}, weights back to {}: {reason}",
                r.canary,
                r.pool,
                super::fmt_weights(&weights)
            );
            (weights, EventKind::RolloutRolledBack, what)
        };
        let after = json!({ "reason": reason, "last_judgement": r.last, "cooldown_until_ms": r.cooldown_until_ms });
        let event = NewEvent::new(who, kind, what).pool(&r.pool).after(after);
        self.save_rollout_as(r, Some(&weights), vec![event], fenced)?;
        self.set_rollout_gauges(r);
        Ok(())
    }

    /// The rollout gauges of `r`.
    pub fn set_rollout_gauges(&self, r: &Rollout) {
        let m = &self.metrics;
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
}

// === the guard: a rollout's pool changes only through the rollout ===

impl Control {
    /// Refuses a change to `pool` while its rollout is active: weights are the
    /// rollout's. `view` is the snapshot read under the writer's lock.
    pub(super) fn guard(
        view: &super::Snapshot,
        pool: &str,
        change: &str,
    ) -> Result<(), AdminError> {
        match view.state.rollouts.get(pool) {
            Some(r) if r.status.is_active() => Err(AdminError::Conflict(format!(
                "pool {pool} has a {} rollout of {} (step {}/{}, {}%): {change} would bend it. \
                 Steer it with `switchyard ctl rollout pause|promote|abort {pool}`, or add --force \
                 (API: ?force=true) to abort the rollout and then apply the change",
                r.status.as_str(),
                r.canary,
                r.step + 1,
                r.plan.steps.len(),
                r.percent()
            ))),
            _ => Ok(()),
        }
    }

    /// `--force` on a guarded change: aborts `pool`'s active rollout first
    /// (an audited abort that restores the weights from before it). Nothing
    /// to do without an active rollout.
    pub(super) fn abort_for(&self, pool: &str, who: &str, change: &str) -> Result<(), AdminError> {
        for _ in 0..5 {
            let Some(mut r) = self.rollout(pool).filter(|r| r.status.is_active()) else {
                return Ok(());
            };
            let why = format!("aborted by {who} to apply a forced {change}");
            match self.finish_with(&mut r, Status::RolledBack, why, who, true, false) {
                Err(AdminError::Stale) => continue,
                Err(e) => return Err(e),
                Ok(()) => {
                    let _ = self.rollout_calls.send(pool.to_string());
                    return Ok(());
                }
            }
        }
        Err(AdminError::Conflict(
            "the rollout keeps changing; try again".into(),
        ))
    }
}

/// A new rollout may start: none active, and no cooldown of this canary
/// (unless forced).
fn check_startable(
    existing: Option<&Rollout>,
    pool: &str,
    canary: &str,
    force: bool,
) -> Result<(), AdminError> {
    let Some(r) = existing else {
        return Ok(());
    };
    if r.status.is_active() {
        return Err(AdminError::Conflict(format!(
            "pool {pool} already has a {} rollout of {}",
            r.status.as_str(),
            r.canary
        )));
    }
    if let Some(until) = r.cooldown_until_ms {
        let now = now_ms();
        if r.canary == canary && now < until && !force {
            return Err(AdminError::Conflict(format!(
                "{canary} was rolled back; cooldown ends in {}s (add \"force\": true to start anyway)",
                (until - now) / 1000
            )));
        }
    }
    Ok(())
}

/// The stable version: the highest weight now (ties: first by name); no
/// third version may have traffic.
fn stable_of(pc: &PoolConfig, pool: &str, canary: &str) -> Result<String, AdminError> {
    let weights: BTreeMap<&str, u32> = pc
        .versions
        .iter()
        .map(|(k, v)| (k.as_str(), v.weight))
        .collect();
    let (stable, top) = weights
        .iter()
        .filter(|(v, _)| **v != canary)
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(v, w)| (v.to_string(), *w))
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
    Ok(stable)
}
