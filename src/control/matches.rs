//! Version rules at runtime: `GET` and `PUT /v1/pools/{pool}/match`.

use serde_json::json;

use super::Control;
use crate::events::{EventKind, NewEvent};
use crate::model::api::MatchReply;
use crate::model::AdminError;
use crate::rules::{VersionMatchSpec, VersionRule, MAX_VERSION_RULES};
use crate::state::file_matches;

// === impl Control ===

impl Control {
    /// The pool's version rules as they apply now.
    pub fn matches(&self, pool: &str) -> Result<MatchReply, AdminError> {
        let view = self.snapshot();
        let p = view
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        Ok(MatchReply {
            pool: pool.to_string(),
            rules: p.matches.iter().map(|r| r.spec.clone()).collect(),
        })
    }

    /// `PUT /v1/pools/{pool}/match`: replaces the pool's version rules
    /// (`[]` removes them all). Persisted like runtime weights: they stay
    /// until the file's own rules for the pool change. Rules equal to the
    /// file's drop the override.
    pub fn set_matches(
        &self,
        pool: &str,
        rules: &[VersionMatchSpec],
        who: &str,
    ) -> Result<MatchReply, AdminError> {
        if rules.len() > MAX_VERSION_RULES {
            return Err(AdminError::BadRequest(format!(
                "a pool has at most {MAX_VERSION_RULES} version rules"
            )));
        }
        let compiled = rules
            .iter()
            .map(VersionRule::compile)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AdminError::BadRequest)?;
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let p = view
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::UnknownPool(pool.to_string()))?;
        if let Some(r) = compiled
            .iter()
            .find(|r| !p.versions.contains_key(&r.version))
        {
            return Err(AdminError::unknown_version(pool, &r.version));
        }
        let before: Vec<VersionMatchSpec> = p.matches.iter().map(|r| r.spec.clone()).collect();
        let file_rules = file_matches(&view.file, pool);
        let mut state = (*view.state).clone();
        let o = state.pools.entry(pool.to_string()).or_default();
        if rules == file_rules.as_slice() {
            o.matches = None;
            o.match_base = None;
        } else {
            o.matches = Some(rules.to_vec());
            o.match_base = Some(file_rules);
        }
        self.commit(&mut w, state)?;
        let show = |v: &[VersionMatchSpec]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .filter_map(|s| VersionRule::compile(s).ok())
                    .map(|r| r.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        };
        let what = format!(
            "version rules of {pool}: {} -> {}",
            show(&before),
            show(rules)
        );
        self.events.record(
            NewEvent::new(who, EventKind::Match, what)
                .pool(pool)
                .before(json!(before))
                .after(json!(rules)),
        );
        Ok(MatchReply {
            pool: pool.to_string(),
            rules: rules.to_vec(),
        })
    }
}
