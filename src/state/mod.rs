//! Runtime changes that must survive restarts, and where they are kept.
//!
//! ```text
//! config file ──┐
//!               ├─ apply_overrides ─> effective Config ─> RoutingTable
//! state file ───┘     (weights set by ctl, versions added or removed at runtime,
//!                      active rollouts)
//! ```
//!
//! Weights set at runtime remember the file's weights they were set against
//! (`base`). As long as the file keeps those weights, the runtime weights win
//! (a restart or reload never undoes `ctl switch`). When someone edits the
//! file's weights for that pool and reloads, the file is the newer word and
//! wins; the dropped override is reported as an event.
//!
//! This module is the pure model (what is persisted and how it applies to
//! the file's config); [`store`] is where it is kept. The state sits behind
//! [`store::StateStore`] so a shared store (etcd, for several instances) can
//! take the JSON file's place.

pub mod discovered;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{BackendAddr, Config, VersionConfig};
use crate::model::rollout::Rollout;
use crate::rules::{VersionMatchSpec, VersionRule};

pub use store::{FileStore, MemoryStore, StateError, StateStore};

/// Everything persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PersistedState {
    #[serde(default = "format_version")]
    pub format: u32,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolOverrides>,
    /// Active or recently finished rollouts, by pool. A record this build
    /// cannot read is dropped with a warning, never fatal to the whole file.
    #[serde(default, deserialize_with = "lenient_rollouts")]
    pub rollouts: BTreeMap<String, Rollout>,
    /// Pools discovered by providers (Docker labels), with their containers
    /// in rotation: a restart serves the last known backends even when the
    /// provider cannot be reached.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub discovered: BTreeMap<String, discovered::DiscoveredPool>,
}

fn lenient_rollouts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Rollout>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(pool, v)| match serde_json::from_value::<Rollout>(v) {
            Ok(r) => Some((pool, r)),
            Err(e) => {
                tracing::warn!(%pool, error = %e, "stored rollout is unreadable; ignored");
                None
            }
        })
        .collect())
}

impl PersistedState {
    /// Pool -> canary version, from active rollouts.
    pub fn canaries(&self) -> std::collections::HashMap<String, String> {
        self.rollouts
            .iter()
            .filter(|(_, r)| r.active)
            .map(|(p, r)| (p.clone(), r.canary.clone()))
            .collect()
    }
}

fn format_version() -> u32 {
    1
}

/// Runtime changes to one pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PoolOverrides {
    /// Weights set at runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, u32>,
    /// The file's weights for this pool when `weights` were set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub base: BTreeMap<String, u32>,
    /// Versions added or replaced at runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, VersionSpec>,
    /// File versions removed at runtime.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<String>,
    /// Version rules set at runtime (`PUT .../match`), replacing the file's.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<VersionMatchSpec>>,
    /// The file's version rules when `matches` was set: a file whose rules
    /// changed since is the newer word (as for weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_base: Option<Vec<VersionMatchSpec>>,
}

impl PoolOverrides {
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
            && self.versions.is_empty()
            && self.removed.is_empty()
            && self.matches.is_none()
    }
}

/// The file's version rules for one pool, as written.
pub fn file_matches(config: &Config, pool: &str) -> Vec<VersionMatchSpec> {
    config
        .pools
        .get(pool)
        .map(|p| p.matches.iter().map(|r| r.spec.clone()).collect())
        .unwrap_or_default()
}

/// Runtime version rules over a pool whose versions are final: compiled,
/// each naming a version the pool has.
fn runtime_matches(
    pool: &crate::config::PoolConfig,
    rules: &[VersionMatchSpec],
) -> Result<Vec<VersionRule>, String> {
    rules
        .iter()
        .map(|spec| {
            let r = VersionRule::compile(spec)?;
            if pool.versions.contains_key(&r.version) {
                Ok(r)
            } else {
                Err(format!("version {} is gone", r.version))
            }
        })
        .collect()
}

/// A version as given to `PUT /v1/pools/{pool}/versions/{v}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    pub backends: Vec<String>,
    #[serde(default)]
    pub weight: u32,
}

/// The file's weights for one pool.
pub fn file_weights(config: &Config, pool: &str) -> BTreeMap<String, u32> {
    config
        .pools
        .get(pool)
        .map(|p| {
            p.versions
                .iter()
                .map(|(v, c)| (v.clone(), c.weight))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies runtime overrides to the file's config. Returns the effective
/// config, the overrides that still apply (stale ones dropped), and a note
/// for each dropped override.
pub fn apply_overrides(
    file: &Config,
    state: &PersistedState,
) -> (Config, PersistedState, Vec<(String, String)>) {
    let mut config = file.clone();
    let mut kept = PersistedState {
        format: 1,
        pools: BTreeMap::new(),
        rollouts: state.rollouts.clone(),
        discovered: state.discovered.clone(),
    };
    let mut notes = Vec::new();
    discovered::merge_discovered(&mut config, &state.discovered, &mut notes);
    for (name, o) in &state.pools {
        // Copied here (copy on write): the pools no override touches stay
        // shared with the file's config.
        let Some(pool) = config.pools.get_mut(name.as_str()).map(Arc::make_mut) else {
            notes.push((
                name.clone(),
                format!("pool {name} is gone from the config; its runtime changes are dropped"),
            ));
            continue;
        };
        let before = pool.clone();
        let mut k = PoolOverrides::default();
        for (v, spec) in &o.versions {
            let backends: Result<Vec<BackendAddr>, String> = spec
                .backends
                .iter()
                .map(|b| BackendAddr::parse(b))
                .collect();
            match backends {
                Ok(backends) if !backends.is_empty() => {
                    pool.versions.insert(
                        v.clone(),
                        VersionConfig {
                            weight: spec.weight,
                            backends,
                        },
                    );
                    k.versions.insert(v.clone(), spec.clone());
                }
                _ => notes.push((
                    name.clone(),
                    format!("runtime version {v} of pool {name} is invalid; dropped"),
                )),
            }
        }
        for v in &o.removed {
            let in_file = file
                .pools
                .get(name.as_str())
                .is_some_and(|p| p.versions.contains_key(v));
            if in_file && !o.versions.contains_key(v) {
                pool.versions.remove(v);
                k.removed.insert(v.clone());
            }
        }
        if !o.weights.is_empty() {
            if o.base == file_weights(file, name) {
                for (v, &w) in &o.weights {
                    if let Some(vc) = pool.versions.get_mut(v) {
                        vc.weight = w;
                        k.weights.insert(v.clone(), w);
                    } else {
                        notes.push((name.clone(), format!("weight override for {v} in pool {name} dropped: the version is gone")));
                    }
                }
                if !k.weights.is_empty() {
                    k.base = o.base.clone();
                }
            } else {
                notes.push((name.clone(), format!("the config file changed the weights of pool {name}; the file's weights replace the runtime ones")));
            }
        }
        if let Some(rules) = &o.matches {
            if o.match_base.as_deref() != Some(&file_matches(file, name)[..]) {
                notes.push((name.clone(), format!("the config file changed the version rules of pool {name}; the file's rules replace the runtime ones")));
            } else {
                match runtime_matches(pool, rules) {
                    Ok(compiled) => {
                        pool.matches = compiled;
                        k.matches = Some(rules.clone());
                        k.match_base = o.match_base.clone();
                    }
                    Err(e) => notes.push((
                        name.clone(),
                        format!("runtime version rules of pool {name} dropped: {e}"),
                    )),
                }
            }
        }
        if let Err(e) = Config::check_pool(pool) {
            notes.push((
                name.clone(),
                format!("runtime changes to pool {name} dropped: {e}"),
            ));
            *pool = before;
            continue;
        }
        if !k.is_empty() {
            kept.pools.insert(name.clone(), k);
        }
    }
    (config, kept, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[pools.app.versions.blue]
weight = 100
backends = ["127.0.0.1:1"]
[pools.app.versions.green]
weight = 0
backends = ["127.0.0.1:2"]
"#;

    fn file() -> Config {
        Config::from_toml_str(FILE).unwrap()
    }

    fn weights_override(w: &[(&str, u32)]) -> PersistedState {
        let mut s = PersistedState::default();
        s.pools.insert(
            "app".into(),
            PoolOverrides {
                weights: w.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                base: file_weights(&file(), "app"),
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn runtime_weights_win_while_the_file_keeps_its_weights() {
        let (c, kept, notes) =
            apply_overrides(&file(), &weights_override(&[("blue", 0), ("green", 100)]));
        assert_eq!(c.pools["app"].versions.get("green").unwrap().weight, 100);
        assert_eq!(c.pools["app"].versions.get("blue").unwrap().weight, 0);
        assert!(notes.is_empty());
        assert_eq!(kept.pools["app"].weights.len(), 2);
    }

    #[test]
    fn an_edited_file_wins_over_older_runtime_weights() {
        let edited = Config::from_toml_str(&FILE.replace("weight = 100", "weight = 50")).unwrap();
        let (c, kept, notes) =
            apply_overrides(&edited, &weights_override(&[("blue", 0), ("green", 100)]));
        assert_eq!(c.pools["app"].versions.get("blue").unwrap().weight, 50);
        assert!(kept.pools.is_empty());
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn added_and_removed_versions_apply_and_stale_ones_drop() {
        let mut s = PersistedState::default();
        let mut o = PoolOverrides::default();
        o.versions.insert(
            "v2".into(),
            VersionSpec {
                backends: vec!["127.0.0.1:3".into()],
                weight: 5,
            },
        );
        o.removed.insert("green".into());
        o.removed.insert("ghost".into());
        s.pools.insert("app".into(), o);
        s.pools.insert("gone".into(), PoolOverrides::default());
        let (c, kept, notes) = apply_overrides(&file(), &s);
        assert_eq!(c.pools["app"].versions.get("v2").unwrap().weight, 5);
        assert!(!c.pools["app"].versions.contains_key("green"));
        assert_eq!(
            kept.pools["app"].removed.len(),
            1,
            "ghost was never in the file"
        );
        assert!(notes.iter().any(|(_, n)| n.contains("gone")));
    }

    #[test]
    fn removing_every_version_is_not_applied() {
        let mut s = PersistedState::default();
        let mut o = PoolOverrides::default();
        o.removed.insert("green".into());
        o.removed.insert("blue".into());
        s.pools.insert("app".into(), o);
        let (c, kept, notes) = apply_overrides(&file(), &s);
        assert_eq!(c.pools["app"].versions.len(), 2);
        assert!(kept.pools.is_empty());
        assert_eq!(notes.len(), 1);
    }
}
