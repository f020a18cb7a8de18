//! Weights and versions: `PUT .../weights`, `PUT` and `DELETE .../versions/{v}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{fmt_weights, weights_of, Control};
use crate::config::{valid_name, BackendAddr, VersionConfig, MAX_WEIGHT};
use crate::events::{EventKind, NewEvent};
use crate::model::api::{VersionReply, VersionSpecView, WeightsReply};
use crate::model::AdminError;
use crate::state::{file_weights, PersistedState, VersionSpec};

// === impl Control ===

/// Whether giving `version` the weight `weight` changes its weight now.
fn moves(version: &str, weight: Option<u32>, now: &BTreeMap<String, u32>) -> bool {
    weight.is_some_and(|w| w != now.get(version).copied().unwrap_or(0))
}

/// Runs a change again when it lost a race to another instance's (in a
/// fleet; the state that won is adopted before the next try), so two admins
/// never overwrite each other and neither has to retry by hand.
fn retried<T>(mut once: impl FnMut() -> Result<T, AdminError>) -> Result<T, AdminError> {
    for _ in 0..4 {
        match once() {
            Err(AdminError::Stale) => continue,
            r => return r,
        }
    }
    Err(AdminError::Conflict(
        "the fleet's state keeps changing under this change; try again".into(),
    ))
}

impl Control {
    /// `PUT /v1/pools/{pool}/weights`: versions not named keep their weight.
    pub fn set_weights(
        &self,
        pool: &str,
        weights: &BTreeMap<String, u32>,
        force: bool,
        who: &str,
    ) -> Result<WeightsReply, AdminError> {
        if force {
            let current = self
                .pool_weights(pool)
                .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
            check_weights(pool, &current, weights)?;
            self.abort_for(pool, who, "weights change")?;
        }
        retried(|| self.set_weights_once(pool, weights, force, who))
    }

    fn set_weights_once(
        &self,
        pool: &str,
        weights: &BTreeMap<String, u32>,
        force: bool,
        who: &str,
    ) -> Result<WeightsReply, AdminError> {
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let before = weights_of(&view.effective, pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        check_weights(pool, &before, weights)?;
        Self::guard(&view, pool, "a weights change")?;
        let mut after = before.clone();
        after.extend(weights.iter().map(|(k, &v)| (k.clone(), v)));
        if after.values().all(|&w| w == 0) && !force {
            return Err(AdminError::Conflict(format!(
                "every weight of pool {pool} would be 0; add ?force=true to stop all traffic"
            )));
        }
        let mut state = (*view.state).clone();
        override_weights(&mut state, &view.file, pool, weights);
        self.commit(&mut w, state)?;
        self.record_weights(who, pool, &before, &after);
        Ok(WeightsReply {
            pool: pool.to_string(),
            weights: after,
        })
    }

    /// The audit event of a weight change (none when nothing changed).
    pub(super) fn record_weights(
        &self,
        who: &str,
        pool: &str,
        before: &BTreeMap<String, u32>,
        after: &BTreeMap<String, u32>,
    ) {
        let what = format!(
            "weights of {pool}: {} -> {}",
            fmt_weights(before),
            fmt_weights(after)
        );
        self.events.record(
            NewEvent::new(who, EventKind::Weights, what)
                .pool(pool)
                .before(json!(before))
                .after(json!(after)),
        );
    }

    /// `PUT /v1/pools/{pool}/versions/{v}`: add or replace a version. Without a
    /// weight, a replaced version keeps its weight and a new one gets 0.
    /// While the pool has an active rollout, a change of weight is refused
    /// unless `force` (which aborts the rollout first).
    pub fn put_version(
        &self,
        pool: &str,
        version: &str,
        backends: &[String],
        weight: Option<u32>,
        force: bool,
        who: &str,
    ) -> Result<VersionReply, AdminError> {
        check_version(version, backends, weight)?;
        let now = self
            .pool_weights(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        if force && moves(version, weight, &now) {
            self.abort_for(pool, who, "version change")?;
        }
        retried(|| self.put_version_once(pool, version, backends, weight, who))
    }

    fn put_version_once(
        &self,
        pool: &str,
        version: &str,
        backends: &[String],
        weight: Option<u32>,
        who: &str,
    ) -> Result<VersionReply, AdminError> {
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let existing = view
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?
            .versions
            .get(version)
            .cloned();
        if moves(
            version,
            weight,
            &weights_of(&view.effective, pool).unwrap_or_default(),
        ) {
            Self::guard(&view, pool, &format!("giving {version} weight {weight:?}"))?;
        }
        let weight = weight.or(existing.as_ref().map(|v| v.weight)).unwrap_or(0);
        let mut state = (*view.state).clone();
        let o = state.pools.entry(pool.to_string()).or_default();
        o.versions.insert(
            version.to_string(),
            VersionSpec {
                backends: backends.to_vec(),
                weight,
            },
        );
        o.removed.remove(version);
        o.weights.remove(version);
        if o.weights.is_empty() {
            o.base.clear();
        }
        self.commit(&mut w, state)?;
        let spec = VersionSpecView {
            backends: backends.to_vec(),
            weight,
        };
        let (kind, verb) = match existing {
            Some(_) => (EventKind::VersionReplace, "replaced"),
            None => (EventKind::VersionAdd, "added"),
        };
        let what = format!(
            "{verb} version {version} of {pool}: weight {weight}, backends {}",
            backends.join(", ")
        );
        self.events.record(
            NewEvent::new(who, kind, what)
                .pool(pool)
                .before(existing.map(|v| version_json(&v)).unwrap_or(Value::Null))
                .after(json!(spec)),
        );
        Ok(VersionReply {
            pool: pool.to_string(),
            spec,
            version: version.to_string(),
        })
    }

    /// `DELETE /v1/pools/{pool}/versions/{v}`: refused while its weight is
    /// above 0, and for the last version of a pool.
    pub fn delete_version(&self, pool: &str, version: &str, who: &str) -> Result<(), AdminError> {
        retried(|| self.delete_version_once(pool, version, who))
    }

    fn delete_version_once(&self, pool: &str, version: &str, who: &str) -> Result<(), AdminError> {
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let p = view
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        let v = p
            .versions
            .get(version)
            .ok_or_else(|| AdminError::unknown_version(pool, version))?;
        if let Some(r) = view
            .state
            .rollouts
            .get(pool)
            .filter(|r| r.status.is_active() && (r.canary == version || r.stable == version))
        {
            return Err(AdminError::Conflict(format!(
                "version {version} is in the {} rollout of {} in {pool}; \
                 end it first (`switchyard ctl rollout abort|promote {pool}`)",
                r.status.as_str(),
                r.canary
            )));
        }
        if v.weight > 0 {
            return Err(AdminError::Conflict(format!(
                "version {version} still has weight {}; set it to 0 first",
                v.weight
            )));
        }
        let discovered = view
            .state
            .discovered
            .get(pool)
            .filter(|_| !view.file.pools.contains_key(pool))
            .and_then(|d| d.versions.get(version).map(|v| (d, v)));
        if let Some((d, dv)) = discovered {
            if !dv.containers.is_empty() {
                let names: Vec<&str> = dv.containers.values().map(|c| c.name.as_str()).collect();
                return Err(AdminError::Conflict(format!(
                    "version {version} of pool {pool} is discovered by {} and has running containers ({}); stop them first",
                    d.provider,
                    names.join(", ")
                )));
            }
        } else if p.versions.len() == 1 {
            return Err(AdminError::Conflict(format!(
                "{version} is the last version of pool {pool}"
            )));
        }
        if let Some(rule) = p.matches.iter().find(|r| r.version == version) {
            return Err(AdminError::Conflict(format!(
                "a version rule of pool {pool} sends to {version} ({}); change the rules first (ctl match)",
                rule.describe()
            )));
        }
        let before = version_json(v);
        let in_file = view
            .file
            .pools
            .get(pool)
            .is_some_and(|fp| fp.versions.contains_key(version));
        let mut state = (*view.state).clone();
        if discovered.is_some() {
            forget_discovered(&mut state, pool, version);
        }
        let o = state.pools.entry(pool.to_string()).or_default();
        o.versions.remove(version);
        o.weights.remove(version);
        if in_file {
            o.removed.insert(version.to_string());
        }
        if o.is_empty() {
            state.pools.remove(pool);
        }
        self.commit(&mut w, state)?;
        let what = format!("removed version {version} of {pool}");
        self.events.record(
            NewEvent::new(who, EventKind::VersionRemove, what)
                .pool(pool)
                .before(before),
        );
        Ok(())
    }
}

/// Forgets a discovered version (its containers are all gone); the pool
/// too when it was the last one, with its runtime changes.
fn forget_discovered(state: &mut PersistedState, pool: &str, version: &str) {
    let Some(d) = state.discovered.get_mut(pool) else {
        return;
    };
    d.versions.remove(version);
    if d.versions.is_empty() {
        state.discovered.remove(pool);
        state.pools.remove(pool);
    }
}

/// Every named version exists and every weight is in range.
fn check_weights(
    pool: &str,
    current: &BTreeMap<String, u32>,
    weights: &BTreeMap<String, u32>,
) -> Result<(), AdminError> {
    if weights.is_empty() {
        return Err(AdminError::BadRequest(
            "give at least one version and weight".into(),
        ));
    }
    for (v, &w) in weights {
        if !current.contains_key(v) {
            return Err(AdminError::unknown_version(pool, v));
        }
        if w > MAX_WEIGHT {
            return Err(AdminError::BadRequest(format!(
                "weight of {v} is above {MAX_WEIGHT}"
            )));
        }
    }
    Ok(())
}

/// A valid version name, at least one parseable backend, a weight in range.
fn check_version(
    version: &str,
    backends: &[String],
    weight: Option<u32>,
) -> Result<(), AdminError> {
    if !valid_name(version) {
        return Err(AdminError::BadRequest(format!(
            "bad version name {version:?}: use letters, digits, '.', '_', '-'"
        )));
    }
    if backends.is_empty() {
        return Err(AdminError::BadRequest(
            "a version needs at least one backend".into(),
        ));
    }
    for b in backends {
        BackendAddr::parse(b).map_err(AdminError::BadRequest)?;
    }
    if weight.is_some_and(|w| w > MAX_WEIGHT) {
        return Err(AdminError::BadRequest(format!(
            "weight is above {MAX_WEIGHT}"
        )));
    }
    Ok(())
}

/// Records runtime weights for `pool`, remembering the file's weights they
/// were set against.
pub(super) fn override_weights(
    state: &mut PersistedState,
    file: &crate::config::Config,
    pool: &str,
    weights: &BTreeMap<String, u32>,
) {
    let o = state.pools.entry(pool.to_string()).or_default();
    if o.weights.is_empty() {
        o.base = file_weights(file, pool);
    }
    o.weights
        .extend(weights.iter().map(|(k, &v)| (k.clone(), v)));
}

fn version_json(v: &VersionConfig) -> Value {
    json!(VersionSpecView {
        backends: v.backends.iter().map(|b| b.to_string()).collect(),
        weight: v.weight,
    })
}
