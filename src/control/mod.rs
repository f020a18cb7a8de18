//! The control layer: the running instance's shared state, and the one place
//! that changes it.
//!
//! ```text
//! Arc<Control>
//!  ├─ table: ArcSwap<RoutingTable>   read by every request, swapped whole
//!  ├─ view: ArcSwap<Snapshot>        file config, effective config, persisted state:
//!  │                                 what readers (GET /v1/state, services) see
//!  ├─ registry, metrics, events, tls live state the table and services share
//!  ├─ writer: Mutex<Writer>          serializes changes; owns the state store
//!  └─ installing: Mutex<()>          serializes table builds + swaps
//! ```
//!
//! Every change (admin call, reload, rollout step, health flip) goes through
//! a method here that holds `writer` for validate -> persist -> publish ->
//! install -> record, so changes are serialized and a change is on disk
//! before anyone is told it happened. Readers never take `writer`: they load
//! the snapshot. Requests never take any lock. Methods that persist block on
//! fsync: async callers run them with `spawn_blocking`, never on a runtime
//! worker. A table rebuild (after a health change) takes only `installing`,
//! never waits for an fsync.
//!
//! Results and refusals are typed ([`crate::model`]); the API layer turns
//! them into JSON.

mod changes;
mod discovery;
mod matches;
mod reload;
mod rollouts;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch, Notify};

use crate::cluster::Cluster;
use crate::config::{Config, ConfigSource, PassiveConfig};
use crate::events::{EventKind, EventLog, NewEvent};
use crate::metrics::FleetSample;
use crate::metrics::Metrics;
use crate::middleware::Middlewares;
use crate::model::AdminError;
use crate::routing::RoutingTable;
use crate::state::{apply_overrides, PersistedState, StateError, StateStore};
use crate::tls::TlsState;
use crate::upstream::{Backend, BackendRegistry};

pub use rollouts::now_ms;

/// What readers see: consistent with the table last installed by a writer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config_path: Option<PathBuf>,
    /// The config as read from the file.
    pub file: Arc<Config>,
    /// The text `file` was read from, indexed (`None` when not known): a
    /// reload that reads the very same text again takes `file` as it is,
    /// and one whose edit stayed in a few sections re-reads what those make
    /// (see [`ConfigSource::reparse`]).
    pub source: Option<Arc<ConfigSource>>,
    /// The file plus runtime overrides: what the table is built from.
    pub effective: Arc<Config>,
    /// The runtime overrides and rollouts, as persisted.
    pub state: Arc<PersistedState>,
    /// The file's middlewares, built when it was read (users files read
    /// then); every table built from this snapshot shares them.
    pub middlewares: Arc<Middlewares>,
}

struct Writer {
    store: Box<dyn StateStore>,
}

/// The running instance.
pub struct Control {
    pub table: ArcSwap<RoutingTable>,
    pub registry: BackendRegistry,
    pub events: EventLog,
    /// Prometheus metrics; the table holds handles into it.
    pub metrics: Arc<Metrics>,
    /// Certificates by SNI, ACME challenge answers and certificate status.
    pub tls: Arc<TlsState>,
    view: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    installing: Mutex<()>,
    store_name: String,
    /// Time base for passive ejection deadlines.
    epoch: Instant,
    /// Addresses actually bound (port 0 resolved), for `GET /v1/state`.
    bound: Mutex<BTreeMap<String, String>>,
    /// The https listener's bound port (0 until bound): redirects name it,
    /// not the configured one (which may be 0).
    https_port: AtomicU16,
    /// Notified after every table swap (health probes follow the table).
    pub table_changed: Arc<Notify>,
    /// Notified when health or ejection changed what is available; the
    /// rebuilder task then rebuilds off the request path.
    pub rebuild_wanted: Arc<Notify>,
    /// Pools whose rollout an operator started or steered; the rollout
    /// runner follows it.
    rollout_calls: broadcast::Sender<String>,
    /// Discovery providers' live status, by name.
    providers: Mutex<BTreeMap<String, discovery::ProviderLive>>,
    /// `[cluster]`: the fleet (its state is in etcd; changes from other
    /// instances arrive through [`Control::apply_shared`]).
    cluster: Option<Arc<Cluster>>,
    /// A single instance always leads its own rollouts.
    solo_leader: watch::Sender<bool>,
}

// === impl Control ===

impl Control {
    /// Starts from the file config and whatever the store holds. A store that
    /// cannot be read is reported, set aside when corrupt, and started fresh.
    pub fn new(
        config_path: Option<PathBuf>,
        file: Config,
        store: Box<dyn StateStore>,
        events: EventLog,
    ) -> Control {
        let stored = load_store(store.as_ref(), &events);
        let (effective, mut kept, notes) = apply_overrides(&file, &stored);
        for (pool, note) in notes {
            events.record(NewEvent::new("config", EventKind::OverrideDropped, note).pool(pool));
        }
        if store.shared() {
            // The fleet's state, kept as written: other instances' files
            // may hold what this one drops.
            kept = stored;
        } else if kept != stored {
            if let Err(e) = store.save(&kept) {
                tracing::error!(error = %e, "cannot write the state file");
            }
        }
        let registry = BackendRegistry::default();
        let metrics = Arc::new(Metrics::new());
        let (middlewares, problems) = Middlewares::build(&file, None, &metrics);
        for p in problems {
            tracing::error!("{p}");
        }
        let table = RoutingTable::build_and_sync(
            &effective,
            &registry,
            &kept.canaries(),
            &metrics,
            &middlewares,
        );
        // The effective config: discovered routes with tls = "acme" get certificates too.
        let tls = Arc::new(TlsState::new(&effective));
        tls.certs.export_expiry(metrics.certificate_expiry.clone());
        let (rollout_calls, _) = broadcast::channel(64);
        Control {
            table: ArcSwap::from_pointee(table),
            registry,
            events,
            metrics,
            tls,
            view: ArcSwap::from_pointee(Snapshot {
                config_path,
                file: Arc::new(file),
                source: None,
                effective: Arc::new(effective),
                state: Arc::new(kept),
                middlewares: Arc::new(middlewares),
            }),
            store_name: store.describe(),
            writer: Mutex::new(Writer { store }),
            installing: Mutex::new(()),
            epoch: Instant::now(),
            bound: Mutex::new(BTreeMap::new()),
            https_port: AtomicU16::new(0),
            table_changed: Arc::new(Notify::new()),
            rebuild_wanted: Arc::new(Notify::new()),
            rollout_calls,
            providers: Mutex::new(BTreeMap::new()),
            cluster: None,
            solo_leader: watch::Sender::new(true),
        }
    }

    /// The text the file's config was read from (see [`Config::load_source`]):
    /// the first reload then re-reads only what changed.
    pub fn with_source(self, source: ConfigSource) -> Control {
        let view = self.snapshot();
        self.view.store(Arc::new(Snapshot {
            source: Some(Arc::new(source)),
            ..(*view).clone()
        }));
        self
    }

    /// `[cluster]`: this instance is one of a fleet sharing its state
    /// through `cluster` (its store must be the cluster's).
    pub fn clustered(mut self, cluster: Arc<Cluster>) -> Control {
        cluster.export_connected(self.metrics.cluster_connected());
        self.cluster = Some(cluster);
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// True while this instance may run rollouts: always on a single
    /// instance; in a fleet, while it holds the leadership.
    pub fn rollout_leadership(&self) -> watch::Receiver<bool> {
        match &self.cluster {
            Some(c) => c.leadership(),
            None => self.solo_leader.subscribe(),
        }
    }

    /// The counters of one version the rollout judge reads: this
    /// instance's, or in a fleet every instance's last publication.
    pub fn fleet_sample(&self, pool: &str, version: &str) -> FleetSample {
        let local = self.metrics.sample(pool, version);
        match &self.cluster {
            Some(c) => c.fleet_sample(pool, version, local),
            None => FleetSample::one(local),
        }
    }

    /// What readers see now. Never waits for a writer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.load_full()
    }

    /// The effective config (file plus overrides).
    pub fn effective_config(&self) -> Arc<Config> {
        self.view.load().effective.clone()
    }

    /// The configured weights of a pool's versions (after runtime changes).
    pub fn pool_weights(&self, pool: &str) -> Option<BTreeMap<String, u32>> {
        weights_of(&self.view.load().effective, pool)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new snapshot and installs its table. Called by writers,
    /// with `writer` held, after the state is durable.
    fn publish(&self, snapshot: Snapshot) {
        let old = self.view.swap(Arc::new(snapshot));
        self.install_current();
        // The replaced config (10 000 pools in a big file) is freed on the
        // scratch thread, not before the change is acknowledged.
        crate::memory::later(move || drop(old));
    }

    /// Builds the table of the current snapshot and swaps it in.
    fn install_current(&self) {
        let _installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        let view = self.view.load_full();
        // Pools nothing changed are kept from the table in place.
        let previous = self.table.load_full();
        let mut table = RoutingTable::build_from(
            Some(&previous),
            &view.effective,
            &self.registry,
            &view.state.canaries(),
            &self.metrics,
            &view.middlewares,
        );
        match self.https_port.load(Ordering::Relaxed) {
            0 => {}
            bound => table.https_port = Some(bound),
        }
        let old = self.table.swap(Arc::new(table));
        self.table_changed.notify_one();
        // Requests still holding the old table keep it; otherwise it is
        // freed on the scratch thread, off the path of the change.
        crate::memory::later(move || drop(old));
    }

    /// Rebuilds the table from the current snapshot (after a health change,
    /// to refresh effective weights). Blocking work: call off the runtime's
    /// workers.
    pub fn rebuild(&self) {
        self.install_current();
    }

    /// Asks for a rebuild (effective weights changed); cheap, never blocks.
    pub fn request_rebuild(&self) {
        self.rebuild_wanted.notify_one();
    }

    pub fn set_bound(&self, name: &str, addr: String) {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), addr);
    }

    /// The https listener is bound on `port`: redirects to https name it
    /// from the next table on (the first is installed at once).
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
        self.install_current();
    }

    pub fn bound(&self) -> BTreeMap<String, String> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Milliseconds since start, the clock of passive ejection.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Pools whose rollout an operator started or steered, as they happen.
    pub fn rollout_calls(&self) -> broadcast::Receiver<String> {
        self.rollout_calls.subscribe()
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

    /// A failure caused by the backend: counted toward its ejection.
    pub fn passive_failure(&self, backend: &Backend, passive: &PassiveConfig) {
        if backend.record_outcome(
            false,
            passive.failures,
            self.now_ms(),
            passive.ejection.as_millis() as u64,
        ) {
            let k = &backend.key;
            let what = format!(
                "{}/{} backend {} ejected after {} consecutive failures",
                k.pool, k.version, k.addr, passive.failures
            );
            self.events
                .record(NewEvent::new("proxy", EventKind::BackendEjected, what).pool(&*k.pool));
            backend.close_idle();
            self.request_rebuild();
        }
    }

    /// Records that a backend came back into rotation (ejection over, probe
    /// passing) and asks for a rebuild.
    pub fn backend_restored(&self, who: &str, backend: &Backend, why: &str) {
        let k = &backend.key;
        let what = format!(
            "{}/{} backend {} back in rotation{why}",
            k.pool, k.version, k.addr
        );
        self.events
            .record(NewEvent::new(who, EventKind::BackendRestored, what).pool(&*k.pool));
        self.request_rebuild();
    }

    /// Applies a new state: effective config, persist, publish, install.
    /// Nothing changes when any step fails. `writer` must be held.
    fn commit(&self, w: &mut Writer, new_state: PersistedState) -> Result<(), AdminError> {
        self.commit_as(w, new_state, false)
    }

    /// [`Control::commit`]; `fenced`: a write only the rollout leader may
    /// make. In a fleet, a write that lost a race to another instance's
    /// adopts theirs and is refused with [`AdminError::Stale`] (the caller
    /// reads again and retries).
    fn commit_as(
        &self,
        w: &mut Writer,
        new_state: PersistedState,
        fenced: bool,
    ) -> Result<(), AdminError> {
        let view = self.view.load_full();
        let (effective, mut kept, _notes) = apply_overrides(&view.file, &new_state);
        for (name, pool) in &effective.pools {
            Config::check_pool(pool)
                .map_err(|e| AdminError::Conflict(format!("pool {name}: {e}")))?;
        }
        if w.store.shared() {
            kept = new_state;
        }
        let saved = if fenced {
            w.store.save_fenced(&kept)
        } else {
            w.store.save(&kept)
        };
        if let Err(e) = saved {
            return Err(self.store_refused(w, e));
        }
        self.publish(Snapshot {
            config_path: view.config_path.clone(),
            file: view.file.clone(),
            source: view.source.clone(),
            effective: Arc::new(effective),
            state: Arc::new(kept),
            middlewares: view.middlewares.clone(),
        });
        Ok(())
    }
}

// === impl Control: the fleet ===

impl Control {
    /// Why a store refused a write, as an admin error; a write that lost a
    /// race adopts the state that won it first. `writer` must be held.
    fn store_refused(&self, w: &mut Writer, e: StateError) -> AdminError {
        match e {
            StateError::Unavailable(m) => AdminError::Unavailable(m),
            StateError::NotLeader => AdminError::Conflict(e.to_string()),
            StateError::Conflict { fresh, revision } => {
                self.adopt(w, *fresh, revision);
                AdminError::Stale
            }
            e => AdminError::Store(e.to_string()),
        }
    }

    /// `[cluster]`: the fleet's state at `revision` (from etcd's watch or a
    /// re-read) becomes this instance's: cached locally, published,
    /// installed. An older revision than the one applied is ignored unless
    /// `force` (the first read after connecting). Returns whether it applied.
    /// Blocking (fsync of the cache, table build): call off the workers.
    pub fn apply_shared(&self, state: PersistedState, revision: i64, force: bool) -> bool {
        let mut w = self.lock_writer();
        let Some(cluster) = &self.cluster else {
            return false;
        };
        if !force && revision <= cluster.state_rev() {
            return false;
        }
        self.adopt(&mut w, state, revision);
        true
    }

    /// Makes `state` (at `revision`) the current one. `writer` must be held.
    fn adopt(&self, w: &mut Writer, state: PersistedState, revision: i64) {
        let view = self.view.load_full();
        if let Some(c) = &self.cluster {
            c.set_state_rev(revision);
            c.note_applied(revision);
        }
        if *view.state == state {
            return;
        }
        if let Err(e) = w.store.save_local(&state) {
            tracing::warn!(error = %e, "cannot update the local cache of the fleet's state");
        }
        let (effective, _kept, notes) = apply_overrides(&view.file, &state);
        for (pool, note) in notes {
            tracing::warn!(%pool, "{note}");
        }
        let changed: Vec<String> = state
            .rollouts
            .iter()
            .filter(|(p, r)| view.state.rollouts.get(*p) != Some(*r))
            .map(|(p, _)| p.clone())
            .collect();
        tracing::info!(revision, "applied the fleet's state");
        self.publish(Snapshot {
            config_path: view.config_path.clone(),
            file: view.file.clone(),
            source: view.source.clone(),
            effective: Arc::new(effective),
            state: Arc::new(state),
            middlewares: view.middlewares.clone(),
        });
        for pool in changed {
            let _ = self.rollout_calls.send(pool);
        }
    }
}

/// The stored state, or a fresh one when the store cannot be read.
fn load_store(store: &dyn StateStore, events: &EventLog) -> PersistedState {
    match store.load() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "cannot use the state file; starting from the config alone");
            if let crate::state::StateError::Corrupt { path, .. } = &e {
                match crate::fsutil::set_aside(path) {
                    Ok(to) => tracing::warn!(to = %to.display(), "corrupt state file set aside"),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot set the corrupt state file aside")
                    }
                }
            }
            events.record(NewEvent::new(
                "config",
                EventKind::StateError,
                e.to_string(),
            ));
            PersistedState::default()
        }
    }
}

/// A pool's configured weights, `None` for an unknown pool.
fn weights_of(config: &Config, pool: &str) -> Option<BTreeMap<String, u32>> {
    config.pools.get(pool).map(|p| {
        p.versions
            .iter()
            .map(|(v, c)| (v.clone(), c.weight))
            .collect()
    })
}

fn fmt_weights(w: &BTreeMap<String, u32>) -> String {
    w.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
