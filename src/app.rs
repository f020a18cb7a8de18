//! The running instance's shared state, and the one place that changes it.
//!
//! ```text
//! Arc<App>
//!  ├─ table: ArcSwap<RoutingTable>     read by every request, swapped whole
//!  ├─ registry: BackendRegistry        live backend state shared by tables
//!  ├─ events: EventLog                 the audit log
//!  └─ control: Mutex<Control>          file config + runtime overrides + store
//! ```
//!
//! Every change (admin call, reload, rollout step, health flip) goes through
//! a method here that holds `control` for the whole of
//! validate -> persist -> build -> swap -> record, so changes are serialized
//! and a change is on disk before anyone is told it happened. Requests never
//! take this lock. These methods block on fsync: call them from
//! `spawn_blocking` in async code.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::{valid_name, BackendAddr, Config, PassiveConfig, TlsMode, MAX_WEIGHT};
use crate::error::AdminError;
use crate::events::{EventLog, NewEvent};
use crate::metrics::Metrics;
use crate::routing::RoutingTable;
use crate::state::{apply_overrides, file_weights, PersistedState, StateStore, VersionSpec};
use crate::upstream::{Backend, BackendRegistry};

/// The running instance.
pub struct App {
    pub table: ArcSwap<RoutingTable>,
    pub registry: BackendRegistry,
    pub events: EventLog,
    control: Mutex<Control>,
    /// Time base for passive ejection deadlines.
    epoch: Instant,
    /// Seeds sticky keys handed out in cookies.
    sticky_seed: std::collections::hash_map::RandomState,
    sticky_counter: AtomicU64,
    /// Addresses actually bound (port 0 resolved), for `GET /v1/state`.
    bound: Mutex<BTreeMap<&'static str, String>>,
    /// Prometheus metrics; the table holds handles into it.
    pub metrics: Arc<Metrics>,
    /// Running rollout tasks.
    pub rollout_controller: crate::rollout::Controller,
    /// Recent metric samples per version, for `GET /v1/stats`.
    pub stats: crate::dashboard::Stats,
    /// The access log, when configured (set once at start).
    pub access_log: std::sync::OnceLock<crate::accesslog::AccessLog>,
    /// Notified after every table swap (health probes follow the table).
    pub table_changed: Arc<Notify>,
    /// Notified when health or ejection changed what is available; the
    /// rebuilder task then rebuilds off the request path.
    pub rebuild_wanted: Arc<Notify>,
    /// Certificates by SNI, ACME challenge answers and certificate status.
    pub tls: Arc<crate::tls::TlsState>,
}

struct Control {
    config_path: Option<PathBuf>,
    /// The config as read from the file.
    file: Config,
    /// The file plus runtime overrides: what the table is built from.
    effective: Config,
    state: PersistedState,
    store: Box<dyn StateStore>,
}

// === impl App ===

impl App {
    /// Starts from the file config and whatever the store holds. A store that
    /// cannot be read is reported, set aside when corrupt, and started fresh.
    pub fn new(
        config_path: Option<PathBuf>,
        file: Config,
        store: Box<dyn StateStore>,
        events: EventLog,
    ) -> App {
        let stored = match store.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the state file; starting from the config alone");
                if let crate::state::StateError::Corrupt { path, .. } = &e {
                    match crate::fsutil::set_aside(path) {
                        Ok(to) => {
                            tracing::warn!(to = %to.display(), "corrupt state file set aside")
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot set the corrupt state file aside")
                        }
                    }
                }
                events.record(NewEvent {
                    who: "config".into(),
                    kind: "state.error",
                    what: e.to_string(),
                    ..Default::default()
                });
                PersistedState::default()
            }
        };
        let (effective, kept, notes) = apply_overrides(&file, &stored);
        for (pool, note) in notes {
            events.record(NewEvent {
                who: "config".into(),
                kind: "override.dropped",
                pool: Some(pool),
                what: note,
                ..Default::default()
            });
        }
        if kept != stored {
            if let Err(e) = store.save(&kept) {
                tracing::error!(error = %e, "cannot write the state file");
            }
        }
        let registry = BackendRegistry::default();
        let metrics = Arc::new(Metrics::new());
        let table =
            RoutingTable::build_with_metrics(&effective, &registry, &canaries(&kept), &metrics);
        let tls = Arc::new(crate::tls::TlsState::new(&file));
        tls.certs.export_expiry(metrics.certificate_expiry.clone());
        App {
            table: ArcSwap::from_pointee(table),
            registry,
            events,
            control: Mutex::new(Control {
                config_path,
                file,
                effective,
                state: kept,
                store,
            }),
            epoch: Instant::now(),
            sticky_seed: Default::default(),
            sticky_counter: AtomicU64::new(0),
            bound: Mutex::new(BTreeMap::new()),
            metrics,
            rollout_controller: Default::default(),
            stats: Default::default(),
            access_log: std::sync::OnceLock::new(),
            table_changed: Arc::new(Notify::new()),
            rebuild_wanted: Arc::new(Notify::new()),
            tls,
        }
    }

    /// Builds the table for an effective config and state, swaps it in, and
    /// tells whoever follows the table.
    fn install(&self, effective: &Config, state: &PersistedState) {
        let table = RoutingTable::build_with_metrics(
            effective,
            &self.registry,
            &canaries(state),
            &self.metrics,
        );
        self.table.store(Arc::new(table));
        self.table_changed.notify_one();
    }

    /// Asks for a rebuild (effective weights changed); cheap, never blocks.
    pub fn request_rebuild(&self) {
        self.rebuild_wanted.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The effective config (file plus overrides).
    pub fn effective_config(&self) -> Config {
        self.lock().effective.clone()
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        self.lock().config_path.clone()
    }

    pub fn set_bound(&self, name: &'static str, addr: String) {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, addr);
    }

    /// Milliseconds since start, the clock of passive ejection.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A fresh random key for a sticky cookie.
    pub fn new_sticky_key(&self) -> String {
        let mut h = self.sticky_seed.build_hasher();
        h.write_u64(self.sticky_counter.fetch_add(1, Ordering::Relaxed));
        format!("{:016x}", h.finish())
    }

    /// Live traffic outcome for passive ejection (success path: no clock, no lock).
    #[inline]
    pub fn passive_outcome(&self, backend: &Backend, passive: &PassiveConfig, ok: bool) {
        if ok {
            backend.record_outcome(true, passive.failures, 0, 0);
        } else {
            self.passive_failure(backend, passive);
        }
    }

    pub fn passive_failure(&self, backend: &Backend, passive: &PassiveConfig) {
        if backend.record_outcome(
            false,
            passive.failures,
            self.now_ms(),
            passive.ejection.as_millis() as u64,
        ) {
            let k = &backend.key;
            self.events.record(NewEvent {
                who: "proxy".into(),
                kind: "backend.ejected",
                pool: Some(k.pool.clone()),
                what: format!(
                    "{}/{} backend {} ejected after {} consecutive failures",
                    k.pool, k.version, k.addr, passive.failures
                ),
                ..Default::default()
            });
            backend.close_idle();
            self.request_rebuild();
        }
    }

    /// Applies a new state: effective config, persist, build, swap. Nothing
    /// changes when any step fails.
    fn commit(&self, ctl: &mut Control, new_state: PersistedState) -> Result<(), AdminError> {
        let (effective, kept, _notes) = apply_overrides(&ctl.file, &new_state);
        for (name, pool) in &effective.pools {
            Config::check_pool(pool)
                .map_err(|e| AdminError::Conflict(format!("pool {name}: {e}")))?;
        }
        ctl.store
            .save(&kept)
            .map_err(|e| AdminError::Internal(e.to_string()))?;
        self.install(&effective, &kept);
        ctl.effective = effective;
        ctl.state = kept;
        Ok(())
    }

    /// Rebuilds the table from the current effective config (after a health
    /// change, to refresh effective weights).
    pub fn rebuild(&self) {
        let ctl = self.lock();
        self.install(&ctl.effective, &ctl.state);
    }

    fn weights_of(ctl: &Control, pool: &str) -> BTreeMap<String, u32> {
        ctl.effective
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

    /// `PUT /v1/pools/{pool}/weights`: versions not named keep their weight.
    pub fn set_weights(
        &self,
        pool: &str,
        weights: &BTreeMap<String, u32>,
        force: bool,
        who: &str,
    ) -> Result<Value, AdminError> {
        let mut ctl = self.lock();
        let before = Self::weights_of(&ctl, pool);
        if before.is_empty() {
            return Err(AdminError::NotFound(format!("unknown pool {pool:?}")));
        }
        if weights.is_empty() {
            return Err(AdminError::BadRequest(
                "give at least one version and weight".into(),
            ));
        }
        for (v, &w) in weights {
            if !before.contains_key(v) {
                return Err(AdminError::NotFound(format!(
                    "pool {pool} has no version {v:?}"
                )));
            }
            if w > MAX_WEIGHT {
                return Err(AdminError::BadRequest(format!(
                    "weight of {v} is above {MAX_WEIGHT}"
                )));
            }
        }
        let mut after = before.clone();
        after.extend(weights.iter().map(|(k, &v)| (k.clone(), v)));
        if after.values().all(|&w| w == 0) && !force {
            return Err(AdminError::Conflict(format!(
                "every weight of pool {pool} would be 0; add ?force=true to stop all traffic"
            )));
        }
        let mut state = ctl.state.clone();
        let o = state.pools.entry(pool.to_string()).or_default();
        if o.weights.is_empty() {
            o.base = file_weights(&ctl.file, pool);
        }
        o.weights
            .extend(weights.iter().map(|(k, &v)| (k.clone(), v)));
        self.commit(&mut ctl, state)?;
        self.events.record(NewEvent {
            who: who.into(),
            kind: "weights",
            pool: Some(pool.into()),
            what: format!(
                "weights of {pool}: {} -> {}",
                fmt_weights(&before),
                fmt_weights(&after)
            ),
            before: json!(before),
            after: json!(after),
        });
        Ok(json!({ "pool": pool, "weights": after }))
    }

    /// The configured weights of a pool's versions (after runtime changes).
    pub fn pool_weights(&self, pool: &str) -> Option<BTreeMap<String, u32>> {
        let ctl = self.lock();
        ctl.effective
            .pools
            .contains_key(pool)
            .then(|| Self::weights_of(&ctl, pool))
    }

    /// The stored rollout of each pool (any status).
    pub fn rollouts(&self) -> BTreeMap<String, Value> {
        self.lock().state.rollouts.clone()
    }

    /// Stores a rollout's new state and, optionally, new weights for its pool,
    /// in one durable write, then records the events. The rollout controller
    /// changes weights only through here.
    pub fn rollout_commit(
        &self,
        pool: &str,
        rollout: Value,
        weights: Option<&BTreeMap<String, u32>>,
        events: Vec<NewEvent>,
    ) -> Result<(), AdminError> {
        let mut ctl = self.lock();
        let rev = |v: Option<&Value>| {
            v.and_then(|v| v.get("rev"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        if rev(Some(&rollout)) != rev(ctl.state.rollouts.get(pool)) + 1 {
            return Err(AdminError::Conflict(crate::rollout::CHANGED.into()));
        }
        let before = Self::weights_of(&ctl, pool);
        let mut state = ctl.state.clone();
        state.rollouts.insert(pool.to_string(), rollout);
        if let Some(w) = weights {
            let o = state.pools.entry(pool.to_string()).or_default();
            if o.weights.is_empty() {
                o.base = file_weights(&ctl.file, pool);
            }
            o.weights.extend(w.iter().map(|(k, &v)| (k.clone(), v)));
        }
        self.commit(&mut ctl, state)?;
        if let Some(w) = weights {
            let mut after = before.clone();
            after.extend(w.iter().map(|(k, &v)| (k.clone(), v)));
            if after != before {
                self.events.record(NewEvent {
                    who: "rollout".into(),
                    kind: "weights",
                    pool: Some(pool.into()),
                    what: format!(
                        "weights of {pool}: {} -> {}",
                        fmt_weights(&before),
                        fmt_weights(&after)
                    ),
                    before: json!(before),
                    after: json!(after),
                });
            }
        }
        for e in events {
            self.events.record(e);
        }
        Ok(())
    }

    /// `PUT /v1/pools/{pool}/versions/{v}`: add or replace a version. Without a
    /// weight, a replaced version keeps its weight and a new one gets 0.
    pub fn put_version(
        &self,
        pool: &str,
        version: &str,
        backends: &[String],
        weight: Option<u32>,
        who: &str,
    ) -> Result<Value, AdminError> {
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
        let mut ctl = self.lock();
        let before_pool = ctl
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::NotFound(format!("unknown pool {pool:?}")))?;
        let existing = before_pool.versions.get(version).cloned();
        let weight = weight.or(existing.as_ref().map(|v| v.weight)).unwrap_or(0);
        let mut state = ctl.state.clone();
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
        self.commit(&mut ctl, state)?;
        let before = existing.map(|v| json!({ "weight": v.weight, "backends": v.backends.iter().map(|b| b.to_string()).collect::<Vec<_>>() }));
        let after = json!({ "weight": weight, "backends": backends });
        self.events.record(NewEvent {
            who: who.into(),
            kind: if before.is_some() {
                "version.replace"
            } else {
                "version.add"
            },
            pool: Some(pool.into()),
            what: format!(
                "{} version {version} of {pool}: weight {weight}, backends {}",
                if before.is_some() {
                    "replaced"
                } else {
                    "added"
                },
                backends.join(", ")
            ),
            before: before.unwrap_or(Value::Null),
            after: after.clone(),
        });
        Ok(json!({ "pool": pool, "version": version, "spec": after }))
    }

    /// `DELETE /v1/pools/{pool}/versions/{v}`: refused while its weight is above 0.
    pub fn delete_version(
        &self,
        pool: &str,
        version: &str,
        who: &str,
    ) -> Result<Value, AdminError> {
        let mut ctl = self.lock();
        let p = ctl
            .effective
            .pools
            .get(pool)
            .ok_or_else(|| AdminError::NotFound(format!("unknown pool {pool:?}")))?;
        let v = p.versions.get(version).ok_or_else(|| {
            AdminError::NotFound(format!("pool {pool} has no version {version:?}"))
        })?;
        if v.weight > 0 {
            return Err(AdminError::Conflict(format!(
                "version {version} still has weight {}; set it to 0 first",
                v.weight
            )));
        }
        if p.versions.len() == 1 {
            return Err(AdminError::Conflict(format!(
                "{version} is the last version of pool {pool}"
            )));
        }
        let before = json!({ "weight": v.weight, "backends": v.backends.iter().map(|b| b.to_string()).collect::<Vec<_>>() });
        let in_file = ctl
            .file
            .pools
            .get(pool)
            .is_some_and(|fp| fp.versions.contains_key(version));
        let mut state = ctl.state.clone();
        let o = state.pools.entry(pool.to_string()).or_default();
        o.versions.remove(version);
        o.weights.remove(version);
        if in_file {
            o.removed.insert(version.to_string());
        }
        self.commit(&mut ctl, state)?;
        self.events.record(NewEvent {
            who: who.into(),
            kind: "version.remove",
            pool: Some(pool.into()),
            what: format!("removed version {version} of {pool}"),
            before,
            after: Value::Null,
        });
        Ok(json!({ "pool": pool, "removed": version }))
    }

    /// Reloads the config file. A bad file changes nothing and every error is
    /// returned. Listener addresses need a restart (they are not re-bound).
    pub fn reload(&self, who: &str) -> Result<Value, AdminError> {
        let mut ctl = self.lock();
        let Some(path) = ctl.config_path.clone() else {
            return Err(AdminError::Conflict(
                "this instance has no config file to reload".into(),
            ));
        };
        let file = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                self.metrics.config_reload(false);
                self.events.record(NewEvent {
                    who: who.into(),
                    kind: "reload.failed",
                    what: format!("reload refused, running config kept:\n{msg}"),
                    ..Default::default()
                });
                return Err(AdminError::BadRequest(msg));
            }
        };
        let mut notes_out = Vec::new();
        if listeners_differ(&ctl.file, &file) {
            notes_out.push("listener addresses, limits and the admin socket changed in the file: they take effect at the next restart".to_string());
        }
        let (effective, kept, notes) = apply_overrides(&file, &ctl.state);
        if kept != ctl.state {
            ctl.store
                .save(&kept)
                .map_err(|e| AdminError::Internal(e.to_string()))?;
        }
        self.install(&effective, &kept);
        for problem in self.tls.apply_config(&file) {
            tracing::error!("{problem}");
            notes_out.push(problem);
        }
        ctl.file = file;
        ctl.effective = effective;
        ctl.state = kept;
        for (pool, note) in notes {
            self.events.record(NewEvent {
                who: who.into(),
                kind: "override.dropped",
                pool: Some(pool),
                what: note.clone(),
                ..Default::default()
            });
            notes_out.push(note);
        }
        self.metrics.config_reload(true);
        self.events.record(NewEvent {
            who: who.into(),
            kind: "reload",
            what: format!("reloaded {}", path.display()),
            ..Default::default()
        });
        Ok(json!({ "reloaded": path.display().to_string(), "notes": notes_out }))
    }

    /// `GET /v1/state`.
    pub fn state_json(&self) -> Value {
        let table = self.table.load();
        let (config_path, state_store, rollouts) = {
            let ctl = self.lock();
            (
                ctl.config_path.as_ref().map(|p| p.display().to_string()),
                ctl.store.describe(),
                json!(ctl.state.rollouts),
            )
        };
        let mut pools = serde_json::Map::new();
        for (name, pool) in &table.pools {
            let eff = pool.effective_weights();
            let total: u64 = eff.iter().map(|&w| u64::from(w)).sum();
            let mut versions = serde_json::Map::new();
            for (v, &e) in pool.versions.iter().zip(&eff) {
                let share = if total == 0 {
                    0.0
                } else {
                    (f64::from(e) * 10_000.0 / total as f64).round() / 100.0
                };
                let backends: Vec<Value> = v
                    .backends
                    .iter()
                    .map(|b| {
                        json!({
                            "addr": b.key.addr.to_string(),
                            "healthy": b.is_healthy(),
                            "ejected": b.is_ejected(),
                            "available": b.is_available(),
                            "in_flight": b.in_flight.load(Ordering::Relaxed),
                        })
                    })
                    .collect();
                versions.insert(
                    v.name.to_string(),
                    json!({ "weight": v.weight, "effective_weight": e, "share_percent": share, "in_flight": v.in_flight(), "backends": backends }),
                );
            }
            pools.insert(name.clone(), json!({ "versions": versions }));
        }
        let routes: Vec<Value> = table
            .routes()
            .iter()
            .map(|r| {
                let tls = match r.tls {
                    TlsMode::None => "none",
                    TlsMode::Acme => "acme",
                    TlsMode::Files { .. } => "files",
                };
                json!({ "host": &*r.host, "pool": &*r.pool.name, "tls": tls, "preview": r.preview })
            })
            .collect();
        let listeners = self.bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": config_path,
            "state_store": state_store,
            "listeners": listeners,
            "routes": routes,
            "pools": pools,
            "rollouts": rollouts,
            "last_event": self.events.last_seq(),
            "certificates": self.tls.state_json(),
        })
    }
}

/// Pool -> canary version, from active rollouts in the state.
fn canaries(state: &PersistedState) -> HashMap<String, String> {
    state
        .rollouts
        .iter()
        .filter(|(_, r)| r.get("active").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|(p, r)| {
            r.get("canary")
                .and_then(Value::as_str)
                .map(|c| (p.clone(), c.to_string()))
        })
        .collect()
}

fn listeners_differ(a: &Config, b: &Config) -> bool {
    let sa = &a.server;
    let sb = &b.server;
    sa.http != sb.http
        || sa.https != sb.https
        || sa.header_timeout != sb.header_timeout
        || sa.max_connections != sb.max_connections
        || sa.max_header_bytes != sb.max_header_bytes
        || sa.workers != sb.workers
        || a.admin != b.admin
        || a.metrics != b.metrics
        || a.access_log != b.access_log
}

fn fmt_weights(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
