//! The admin API on the wire: every request body and every answer, as the
//! README documents them. Fields are declared in the order they appear on the
//! wire (alphabetical, as the API has always answered).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::Event;
use super::rollout::Rollout;
pub use crate::rules::VersionMatchSpec;

/// `{"error": "..."}`, with 400, 404, 409, 413 or 500.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

// ---------------------------------------------------------------------------
// GET /v1/state

/// `GET /v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    /// One entry per ACME domain and per certificate file.
    #[serde(default)]
    pub certificates: BTreeMap<String, CertificateView>,
    /// `[cluster]` only: etcd, the fleet's instances and its rollout leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
    /// The config file, when there is one.
    pub config: Option<String>,
    /// The sequence number of the newest audit event.
    pub last_event: u64,
    /// Bound addresses (port 0 resolved): `http`, `https`, `admin`, `metrics`, `dashboard`.
    #[serde(default)]
    pub listeners: BTreeMap<String, String>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolView>,
    /// Discovery providers (`docker`), when configured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderView>,
    /// The stored rollout of each pool (any status).
    #[serde(default)]
    pub rollouts: BTreeMap<String, Rollout>,
    #[serde(default)]
    pub routes: Vec<RouteView>,
    /// Where runtime changes are kept (the state file's path, or `memory`).
    pub state_store: String,
    /// switchyard's own version.
    pub version: String,
}

/// A discovery provider as `GET /v1/state` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderView {
    /// Where it reads from (`unix:///var/run/docker.sock`).
    pub endpoint: String,
    /// Reachable and in sync: its events are followed.
    pub up: bool,
    /// The Engine API version negotiated, once connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Why it is down (the last error), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time of the last complete resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    /// Containers in rotation now (discovered, running, not `starting` or `unhealthy`).
    pub containers: usize,
    /// Containers ignored and why (a pool of the config file, a bad label ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// `[cluster]`: how this instance sees the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The revision of the fleet's state this instance applied last (0:
    /// none yet, it serves what its local cache held at start).
    pub applied_revision: i64,
    /// Whether this instance reaches etcd now.
    pub connected: bool,
    /// The etcd members as the last status check saw them.
    #[serde(default)]
    pub etcd: Vec<EtcdMemberView>,
    /// Every instance publishing under the prefix (this one included).
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceView>,
    /// Why the last etcd call failed, while it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The instance holding the rollout leadership, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// This instance.
    pub name: String,
    pub prefix: String,
}

/// One etcd member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EtcdMemberView {
    pub client_urls: Vec<String>,
    /// Member id, hex.
    pub id: String,
    /// Whether it is the raft leader of etcd.
    pub leader: bool,
    pub name: String,
    /// Whether it answered the last status check.
    pub reachable: bool,
}

/// One switchyard instance of the fleet, as it last published itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub applied_revision: i64,
    /// Whether it holds the rollout leadership.
    pub leader: bool,
    /// Wall-clock milliseconds of its last publication.
    pub published_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// The provider that discovered this pool (`docker`); absent for the
    /// config file's pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Version rules (`[[pools.P.match]]` or `PUT .../match`), in order;
    /// left out when there are none.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<VersionMatchSpec>,
    pub versions: BTreeMap<String, VersionView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    pub backends: Vec<BackendView>,
    /// The weight the split uses: 0 while no backend is available.
    pub effective_weight: u32,
    pub in_flight: usize,
    /// Share of new requests, in percent with two decimals.
    pub share_percent: f64,
    /// The configured weight (after runtime changes).
    pub weight: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub addr: String,
    /// In rotation: not down by probes, not ejected. A backend starts in
    /// rotation before anything is known about it.
    pub available: bool,
    pub ejected: bool,
    /// `unknown` until the first probe result or the first request's
    /// outcome, then `up` or `down` (the probes' verdict).
    pub health: String,
    /// `null` while `health` is `unknown`.
    pub healthy: Option<bool>,
    pub in_flight: usize,
    /// Requests waiting for one of the backend's connections (the pool's
    /// `max_connections_per_backend`); always 0 without a cap.
    #[serde(default)]
    pub queued: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub host: String,
    /// Middlewares in the order they apply, with what each does; left out
    /// when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub middlewares: Vec<MiddlewareView>,
    pub pool: String,
    pub preview: bool,
    /// The rule beyond the host (`path_prefix=/api methods=GET`); left out
    /// for a host-only route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `none`, `acme` or `files`.
    pub tls: String,
}

/// A middleware as a route applies it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MiddlewareView {
    /// What it does, in one line.
    pub effect: String,
    /// `headers`, `basic_auth`, `ip_allow`, `rate_limit`, `compress`,
    /// `strip_prefix`, `add_prefix` or `redirect_regex`.
    pub kind: String,
    pub name: String,
    /// Requests it answered itself (401, 403, 429, redirects) since it was
    /// built (start, or the reload that changed it).
    pub rejected: u64,
}

/// `PUT /v1/pools/{pool}/match` takes a JSON array of these (the whole
/// list, in order; `[]` removes every rule).
pub type MatchRequest = Vec<VersionMatchSpec>;

/// The answer to `GET` and `PUT /v1/pools/{pool}/match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchReply {
    pub pool: String,
    pub rules: Vec<VersionMatchSpec>,
}

/// A certificate switchyard serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    pub issuer: Option<String>,
    pub not_after: Option<String>,
    pub not_after_unix: Option<i64>,
    pub not_before: Option<String>,
    pub serial: Option<String>,
    /// `acme` or `files`.
    pub source: String,
    /// The ACME manager's record of the domain (ACME certificates only).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeStatusView>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AcmeStatusView {
    pub attempts: u64,
    pub consecutive_failures: u32,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
    pub next_check: Option<String>,
    pub rate_limited: u64,
    pub renew_at: Option<String>,
}

// ---------------------------------------------------------------------------
// Changes

/// `PUT /v1/pools/{pool}/weights`: `{"blue":0,"green":100}`.
pub type WeightsRequest = BTreeMap<String, u32>;

/// The answer to `PUT /v1/pools/{pool}/weights`: every weight of the pool after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsReply {
    pub pool: String,
    pub weights: BTreeMap<String, u32>,
}

/// `PUT /v1/pools/{pool}/versions/{v}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRequest {
    pub backends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A version as it is after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSpecView {
    pub backends: Vec<String>,
    pub weight: u32,
}

/// The answer to `PUT /v1/pools/{pool}/versions/{v}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReply {
    pub pool: String,
    pub spec: VersionSpecView,
    pub version: String,
}

/// The answer to `DELETE /v1/pools/{pool}/versions/{v}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedReply {
    /// Whether its in-flight requests finished within `shutdown_grace`.
    pub drained: bool,
    pub in_flight: usize,
    pub pool: String,
    pub removed: String,
}

/// The answer to `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// What the reload could not apply (listeners, dropped overrides, certificates).
    pub notes: Vec<String>,
    pub reloaded: String,
}

/// `GET /v1/events?since=N`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsReply {
    pub events: Vec<Event>,
}

// ---------------------------------------------------------------------------
// GET /v1/stats

/// `GET /v1/stats`: per version, over the last ~10 s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub pools: BTreeMap<String, StatsPool>,
    /// The widest span the figures cover, in seconds.
    pub window_seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsPool {
    pub versions: BTreeMap<String, Figures>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub error_rate: Option<f64>,
    pub errors: u64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub requests: u64,
    pub requests_per_second: Option<f64>,
    pub window_seconds: f64,
}

// ---------------------------------------------------------------------------
// Rollouts

/// `POST /v1/pools/{pool}/rollout`: the canary and any plan fields that
/// override the pool's `[rollout]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve_before: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_increase: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_tolerance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke: Option<SmokeRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// One entry of a rollout's `steps`: a percent, `"pause"` (an approval
/// before the next step), or `{"percent": 5, "duration": "10m"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepSpec {
    Percent(i64),
    Word(String),
    Timed {
        percent: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `GET /v1/pools/{pool}/rollout` (and the answer to every rollout call):
/// the stored rollout plus where it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The canary's share at the current step.
    pub percent: u32,
    /// `running`, `paused`, `waiting_for_approval` (paused before a step
    /// until an operator approves), `promoted` or `rolled_back`.
    pub state: String,
    /// 1-based.
    pub step_number: usize,
    pub steps_total: usize,
    /// Until the current window is judged (0 unless running).
    pub time_left_ms: u64,
}
