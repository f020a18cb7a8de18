//! `[cluster]`: several instances, one truth in etcd. This module is the live
//! state of that: the etcd client, what this instance knows of the fleet
//! (connected or not, the revision it applied, who leads rollouts, every
//! instance's published counters), and [`EtcdStore`], the state store that
//! writes the fleet's state with revision-compared transactions. The service
//! that keeps it current (watch, lease, election, publishing) is [`run`].
//!
//! ```text
//! etcd, under `prefix`:
//!   state                  the fleet's PersistedState (JSON): weights, versions, rollouts
//!   instances/<name>       each instance, under its lease, every second: applied
//!                          revision, leadership, per-version counters
//!   events/<name>/<seq>    each instance's audit events, shared with the fleet
//!   leader/<lease>         the Lock API's key of the rollout leader (and waiters)
//!   acme/...               the fleet's ACME account, certificates, order locks and
//!                          pending challenges (see [`crate::acme`]): the watch hands
//!                          these keys to the [`KeyWatcher`] the ACME manager installs
//! ```
//!
//! Without `[cluster]` nothing here is built and no etcd code runs.

pub mod run;
mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::metrics::{FleetSample, Sample, BUCKETS};
use crate::model::api::{ClusterView, EtcdMemberView, InstanceView};
use crate::state::{PersistedState, StateError};

pub use store::EtcdStore;

/// One etcd call's bound (the client's own timeout would also bound the
/// Lock API's wait, see ETCD pitfalls: calls are wrapped instead).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a state write keeps retrying (a member down, a leader
/// election) before the admin call answers 503.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(8);

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.tls: cannot read {path}: {source}")]
    Tls {
        path: String,
        source: std::io::Error,
    },
    #[error("etcd: {0}")]
    Etcd(String),
}

/// Follows the keys under `<prefix>acme/` for the ACME manager: the
/// cluster service hands it every such key it reads (on each (re)connection)
/// and every change its watch sees. Values are hostile input.
pub trait KeyWatcher: Send + Sync {
    /// Everything under `<prefix>acme/` at one revision (keys without the
    /// prefix): what was not in it is gone.
    fn snapshot(&self, items: Vec<(String, Vec<u8>)>);
    /// One key (without `<prefix>acme/`) put (`Some`) or deleted (`None`).
    fn change(&self, key: &str, value: Option<&[u8]>);
}

/// What an instance publishes about itself every second, under its lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub name: String,
    pub applied_revision: i64,
    pub leader: bool,
    pub published_ms: u64,
    /// pool -> version -> cumulative counters.
    #[serde(default)]
    pub counters: BTreeMap<String, BTreeMap<String, SampleRecord>>,
}

/// A [`Sample`] on the wire: bucket counts in the order of [`BUCKETS`], then
/// +Inf (JSON has no infinity).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
    pub sum: f64,
}

impl SampleRecord {
    pub fn of(s: &Sample) -> SampleRecord {
        SampleRecord {
            requests: s.requests,
            errors: s.errors,
            buckets: s.buckets.iter().map(|&(_, c)| c).collect(),
            sum: s.sum,
        }
    }

    /// Back to a sample; `None` when the buckets do not fit this build's.
    pub fn sample(&self) -> Option<Sample> {
        if self.buckets.len() != BUCKETS.len() + 1 {
            return None;
        }
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        Some(Sample {
            requests: self.requests,
            errors: self.errors,
            buckets: bounds.zip(self.buckets.iter().copied()).collect(),
            sum: self.sum,
        })
    }
}

/// This instance's view of the fleet, shared by the store, the control
/// layer, the rollout runner and the cluster service.
pub struct Cluster {
    pub name: String,
    pub config: ClusterConfig,
    client: Client,
    connected: AtomicBool,
    /// The state key's mod revision this instance applied or wrote last
    /// (0: the key does not exist): what the next write compares against.
    state_rev: AtomicI64,
    /// The highest revision of the prefix applied.
    applied: AtomicI64,
    /// The Lock API key while this instance leads rollouts.
    leader_key: Mutex<Option<Vec<u8>>>,
    leadership: watch::Sender<bool>,
    instances: Mutex<BTreeMap<String, InstanceRecord>>,
    members: Mutex<Vec<EtcdMemberView>>,
    last_error: Mutex<Option<String>>,
    gauge: OnceLock<prometheus::IntGauge>,
    /// The ACME manager's follower of `acme/` keys, once it runs.
    acme: OnceLock<std::sync::Arc<dyn KeyWatcher>>,
}

// === impl Cluster ===

impl Cluster {
    /// Builds the client. Connecting is lazy: nothing is sent yet, and an
    /// etcd that is down is not an error here.
    pub async fn new(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let client = connect(config, &config.etcd).await?;
        let name = config.name.clone().unwrap_or_else(hostname);
        Ok(Cluster {
            name,
            config: config.clone(),
            client,
            connected: AtomicBool::new(false),
            state_rev: AtomicI64::new(0),
            applied: AtomicI64::new(0),
            leader_key: Mutex::new(None),
            leadership: watch::Sender::new(false),
            instances: Mutex::new(BTreeMap::new()),
            members: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            gauge: OnceLock::new(),
            acme: OnceLock::new(),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.config.prefix)
    }

    pub fn state_key(&self) -> String {
        self.key("state")
    }

    /// Installs the follower of `<prefix>acme/` (the first one wins).
    pub fn watch_acme(&self, w: std::sync::Arc<dyn KeyWatcher>) {
        let _ = self.acme.set(w);
    }

    pub fn acme_watcher(&self) -> Option<&std::sync::Arc<dyn KeyWatcher>> {
        self.acme.get()
    }

    /// Whether every other instance of the fleet has published a record
    /// saying it applied `revision` (records are published every second).
    pub fn others_applied(&self, revision: i64) -> bool {
        lock(&self.instances)
            .iter()
            .filter(|(n, _)| **n != self.name)
            .all(|(_, r)| r.applied_revision >= revision)
    }

    /// Follows the connection in `switchyard_cluster_connected`.
    pub fn export_connected(&self, gauge: prometheus::IntGauge) {
        gauge.set(i64::from(self.is_connected()));
        let _ = self.gauge.set(gauge);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Returns whether it changed.
    pub fn set_connected(&self, up: bool) -> bool {
        if let Some(g) = self.gauge.get() {
            g.set(i64::from(up));
        }
        if up {
            *lock(&self.last_error) = None;
        }
        self.connected.swap(up, Ordering::AcqRel) != up
    }

    pub fn set_error(&self, e: &str) {
        *lock(&self.last_error) = Some(e.to_string());
    }

    pub fn state_rev(&self) -> i64 {
        self.state_rev.load(Ordering::Acquire)
    }

    pub fn set_state_rev(&self, rev: i64) {
        self.state_rev.store(rev, Ordering::Release);
    }

    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    pub fn note_applied(&self, rev: i64) {
        self.applied.fetch_max(rev, Ordering::AcqRel);
    }

    /// Whether this instance leads rollouts now.
    pub fn is_leader(&self) -> bool {
        *self.leadership.borrow()
    }

    /// Follows the leadership (true while this instance leads).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leadership.subscribe()
    }

    pub fn leader_key(&self) -> Option<Vec<u8>> {
        lock(&self.leader_key).clone()
    }

    /// Takes or drops the leadership; returns whether it changed.
    pub fn set_leader(&self, key: Option<Vec<u8>>) -> bool {
        let lead = key.is_some();
        *lock(&self.leader_key) = key;
        self.leadership
            .send_if_modified(|l| std::mem::replace(l, lead) != lead)
    }

    /// An instance's record arrived (`None`: its key went, with its lease).
    pub fn set_instance(&self, name: &str, record: Option<InstanceRecord>) {
        let mut all = lock(&self.instances);
        match record {
            Some(r) => all.insert(name.to_string(), r),
            None => all.remove(name),
        };
    }

    pub fn clear_instances(&self) {
        lock(&self.instances).clear();
    }

    pub fn set_members(&self, members: Vec<EtcdMemberView>) {
        *lock(&self.members) = members;
    }

    /// The fleet's counters of one version: every other instance's last
    /// publication, and this instance's `local` sample (fresher).
    pub fn fleet_sample(&self, pool: &str, version: &str, local: Sample) -> FleetSample {
        let mut out = FleetSample::default();
        for (name, r) in lock(&self.instances).iter() {
            if *name == self.name {
                continue;
            }
            if let Some(s) = r.counters.get(pool).and_then(|p| p.get(version)) {
                if let Some(s) = s.sample() {
                    out.0.insert(name.clone(), s);
                }
            }
        }
        out.0.insert(self.name.clone(), local);
        out
    }

    /// `cluster` in `GET /v1/state`.
    pub fn view(&self) -> ClusterView {
        let me_leader = self.is_leader();
        let mut instances: BTreeMap<String, InstanceView> = lock(&self.instances)
            .iter()
            .map(|(n, r)| {
                let v = InstanceView {
                    applied_revision: r.applied_revision,
                    leader: r.leader,
                    published_ms: r.published_ms,
                };
                (n.clone(), v)
            })
            .collect();
        let me = instances.entry(self.name.clone()).or_default();
        me.applied_revision = self.applied();
        me.leader = me_leader;
        let leader = instances
            .iter()
            .find(|(_, v)| v.leader)
            .map(|(n, _)| n.clone());
        ClusterView {
            applied_revision: self.applied(),
            connected: self.is_connected(),
            etcd: lock(&self.members).clone(),
            instances,
            last_error: lock(&self.last_error).clone(),
            leader,
            name: self.name.clone(),
            prefix: self.config.prefix.clone(),
        }
    }

    /// Writes the fleet's state if the state key is still at the revision
    /// this instance last saw (and, `fenced`, while it holds the rollout
    /// leadership). Retries a member that is down or an election until
    /// [`WRITE_DEADLINE`]. Returns the new revision.
    pub async fn write_state(
        &self,
        state: &PersistedState,
        fenced: bool,
    ) -> Result<i64, StateError> {
        let value = serde_json::to_vec(state).unwrap_or_default();
        let key = self.state_key();
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            let fence = match (fenced, self.leader_key()) {
                (false, _) => None,
                (true, Some(k)) => Some(k),
                (true, None) => return Err(StateError::NotLeader),
            };
            let mut when = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                self.state_rev(),
            )];
            let mut otherwise = vec![TxnOp::get(key.clone(), None)];
            if let Some(f) = &fence {
                when.push(Compare::version(f.clone(), CompareOp::Greater, 0));
                otherwise.push(TxnOp::get(f.clone(), None));
            }
            let txn = Txn::new()
                .when(when)
                .and_then(vec![TxnOp::put(key.clone(), value.clone(), None)])
                .or_else(otherwise);
            let err =
                match tokio::time::timeout(RPC_TIMEOUT, self.client.kv_client().txn(txn)).await {
                    Ok(Ok(resp)) => return self.written(&resp, &value, fence.is_some()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {RPC_TIMEOUT:?}"),
                };
            if tokio::time::Instant::now() >= deadline {
                self.set_error(&err);
                return Err(StateError::Unavailable(format!(
                    "etcd did not take the change ({err}); nothing was changed. \
                     The fleet keeps routing as before; retry once etcd is reachable"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The outcome of a state transaction.
    fn written(
        &self,
        resp: &etcd_client::TxnResponse,
        value: &[u8],
        fenced: bool,
    ) -> Result<i64, StateError> {
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        if resp.succeeded() {
            self.set_state_rev(rev);
            return Ok(rev);
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let stored = gets.next().and_then(|g| g.kvs().first().cloned());
        if fenced && gets.next().is_none_or(|g| g.kvs().is_empty()) {
            return Err(StateError::NotLeader);
        }
        let (fresh, revision) = match &stored {
            Some(kv) if kv.value() == value => {
                // An earlier try of this very write landed (its answer was lost).
                self.set_state_rev(kv.mod_revision());
                return Ok(kv.mod_revision());
            }
            Some(kv) => (parse_state(kv.value()), kv.mod_revision()),
            None => (PersistedState::default(), 0),
        };
        Err(StateError::Conflict {
            fresh: Box::new(fresh),
            revision,
        })
    }
}

/// `switchyard cluster init`: copies a single instance's state file into
/// etcd under the prefix, so a fleet starts with its weights, versions and
/// rollouts. Refused when the fleet already has a state, unless `force`.
/// Returns what was copied, for the operator.
pub async fn init(
    config: &ClusterConfig,
    state_file: &std::path::Path,
    force: bool,
) -> Result<String, ClusterError> {
    use crate::state::{FileStore, StateStore};
    let state = FileStore::new(state_file)
        .load()
        .map_err(|e| ClusterError::Etcd(format!("cannot use the state file: {e}")))?
        .unwrap_or_default();
    let mut client = connect(config, &config.etcd).await?;
    let key = format!("{}state", config.prefix);
    let value = serde_json::to_vec(&state).unwrap_or_default();
    // etcd-client wants when, then and_then, then or_else, in that order.
    let when = if force {
        vec![]
    } else {
        vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)]
    };
    let txn = Txn::new()
        .when(when)
        .and_then(vec![TxnOp::put(key.clone(), value, None)])
        .or_else(vec![TxnOp::get(key.clone(), None)]);
    let resp = tokio::time::timeout(WRITE_DEADLINE, client.txn(txn))
        .await
        .map_err(|_| ClusterError::Etcd(format!("no answer within {WRITE_DEADLINE:?}")))?
        .map_err(|e| ClusterError::Etcd(e.to_string()))?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    if !resp.succeeded() {
        return Err(ClusterError::Etcd(format!(
            "{key} already holds the fleet's state (revision {rev});              add --force to replace it with {}",
            state_file.display()
        )));
    }
    Ok(format!(
        "copied {} ({} pool(s) with runtime changes, {} rollout(s)) to {key} at revision {rev}",
        state_file.display(),
        state.pools.len(),
        state.rollouts.len()
    ))
}

/// The stored state, or an empty one for a value this build cannot read.
pub fn parse_state(value: &[u8]) -> PersistedState {
    serde_json::from_slice(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the fleet's state in etcd is unreadable; serving the config file alone");
        PersistedState::default()
    })
}

/// A client for `endpoints` with this config's TLS and keep-alive.
pub async fn connect(config: &ClusterConfig, endpoints: &[String]) -> Result<Client, ClusterError> {
    // gRPC keep-alive of at least 5 s: etcd answers faster pings with GOAWAY.
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).map_err(|source| ClusterError::Tls {
                path: p.display().to_string(),
                source,
            })
        };
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            t = t.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(t);
    }
    Client::connect(endpoints, Some(opts))
        .await
        .map_err(|e| ClusterError::Etcd(e.to_string()))
}

/// The host name (the default instance name).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "switchyard".to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
