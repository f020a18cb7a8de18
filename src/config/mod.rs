//! The configuration file: TOML text in, a validated [`Config`] out.
//!
//! ```text
//! &str --toml--> file::FileConfig (serde, deny_unknown_fields, spans kept)
//!      --validate--> Config (typed, defaults filled, every error collected)
//! ```
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the validated model, its defaults, [`Config::load`] |
//! | `file.rs` | the file model serde reads |
//! | `validate.rs` | file model to [`Config`], with line:col diagnostics |
//! | `notify.rs` | `[[notify]]`: file model, model, validation |
//! | `routes.rs` | `[[routes]]`: hosts, rules, TLS, middlewares; shadowed routes |
//! | `middleware.rs` | `[middlewares.NAME]`: the model and its validation |
//! | `incremental.rs` | reloads that re-read only the sections an edit touched |
//! | `plain.rs` | the fast reader of sections in plain TOML (toml reads the rest) |
//!
//! Pure: the only I/O is [`Config::load`] reading the file. Every error carries
//! the line and column of the offending value so `switchyard check` can print
//! `FILE:LINE:COL: message` for each of them. Relative paths in the file are
//! resolved against the file's own directory. The bottom layer: nothing here
//! uses another module of the crate but [`crate::host`] and [`crate::rules`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::host::{HostName, HostPattern};
use crate::rules::{RouteRules, VersionRule};

mod file;
mod incremental;
mod middleware;
mod notify;
mod plain;
mod read;
mod routes;
#[cfg(test)]
mod tests;
mod validate;

pub use incremental::ConfigSource;
pub use middleware::{
    parse_cidr, BasicAuthConfig, CompressConfig, Encoding, HeadersConfig, IpAllowConfig,
    MiddlewareConfig, RateKey, RateLimitConfig, RedirectRegexConfig, DEFAULT_COMPRESS_TYPES,
};
pub use notify::{redact, NotifyConfig, NotifyFormat, NOTIFY_EVENTS};
#[doc(hidden)] // for the config_plain fuzz target
pub use plain::read_as_toml;
pub use read::{read_config_file, MAX_CONFIG_BYTES};
pub use routes::MAX_PRIORITY;
pub use validate::{
    basic_auth_users_at, check_step_items, check_steps, line_col, StepItem, StepList, CONFIDENCE,
};

/// Most versions a pool may have.
pub const MAX_VERSIONS: usize = 64;
/// Largest weight accepted for one version.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// One problem in a config file, located by line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory, FIFO, device or socket: never opened for reading.
    #[error("cannot read {path}: it is {kind}, not a regular file")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("cannot read {path}: it is larger than {} MiB", .limit >> 20)]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}", render(.path, .diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(path: &Path, diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("{}:{d}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// The validated model.

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub metrics: Option<MetricsConfig>,
    /// `[access_log]`; `None` when off.
    pub access_log: Option<AccessLogConfig>,
    pub acme: Option<AcmeConfig>,
    /// `[cluster]`: state shared with other instances through etcd. `None`:
    /// this instance keeps its own state file and no etcd code runs.
    pub cluster: Option<ClusterConfig>,
    /// Shared between the file's config and the effective one (see
    /// [`crate::state::apply_overrides`]): copied only when changed.
    pub routes: Arc<Vec<RouteConfig>>,
    /// Each pool shared like `routes`: the effective config copies only
    /// the pools a runtime change touches.
    pub pools: BTreeMap<Arc<str>, Arc<PoolConfig>>,
    /// `[[notify]]`: webhooks the audit events are sent to.
    pub notify: Vec<NotifyConfig>,
    /// `[providers.docker]`: pools discovered from container labels.
    pub docker: Option<DockerConfig>,
    /// `[middlewares.NAME]`, attached to routes by name.
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
}

/// `[providers.docker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock` (default), or `tcp://HOST:PORT` /
    /// `http://HOST:PORT` (a Docker API proxy).
    pub endpoint: String,
    /// Containers without `<prefix>.enable=true` are discovered too.
    pub exposed_by_default: bool,
    /// The network whose address to use when a container has several.
    pub network: Option<String>,
    pub labels: LabelDialect,
    /// The address of containers in the host's network namespace
    /// (`network_mode: host`, published ports on 0.0.0.0).
    pub host_address: std::net::IpAddr,
}

/// Which labels `[providers.docker]` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelDialect {
    /// `switchyard.pool`, `switchyard.version`, ...
    Switchyard,
    /// Traefik's `traefik.http.routers.*` / `traefik.http.services.*`.
    Traefik,
}

impl LabelDialect {
    /// The label prefix: `switchyard` or `traefik`.
    pub fn prefix(self) -> &'static str {
        match self {
            LabelDialect::Switchyard => "switchyard",
            LabelDialect::Traefik => "traefik",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The first request of a connection, and each request head after an
    /// idle spell, must arrive within this.
    pub header_timeout: Duration,
    /// Idle client connections (no request in flight) and idle pooled
    /// upstream connections are closed after this.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// A write to a client that makes no progress for this long aborts the
    /// connection.
    pub send_timeout: Duration,
    /// A request body that makes no progress for this long ends the request
    /// with 408.
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub socket: PathBuf,
    pub state: PathBuf,
    pub dashboard: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    pub target: AccessLogTarget,
}

/// `access_log.format`: `common` (Common Log Format plus route fields) or
/// `json` (one object per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Common,
    Json,
}

/// `access_log.path`: where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://` or `https://`).
    pub etcd: Vec<String>,
    /// Key prefix of this fleet (ends with `/`), so fleets can share an etcd.
    pub prefix: String,
    /// This instance's name; `None`: the host name, read at start.
    pub name: Option<String>,
    /// TTL of this instance's lease: how long after it vanishes its
    /// leadership and its published counters go.
    pub lease_ttl: Duration,
    pub tls: Option<ClusterTls>,
}

/// Client TLS to etcd: a CA to trust, and optionally a client certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    pub email: String,
    pub directory: String,
    pub storage: PathBuf,
    pub challenge: Challenge,
    pub ca_file: Option<PathBuf>,
    pub renew_before: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub host: HostPattern,
    pub pool: String,
    pub tls: TlsMode,
    pub redirect_https: bool,
    pub preview: Option<HostName>,
    /// Conditions beyond the host (path, methods, headers, query,
    /// priority); empty for a host-only route (all of which share one).
    pub rules: Arc<RouteRules>,
    /// Names of `[middlewares.NAME]`, applied in this order.
    pub middlewares: Vec<String>,
}

impl RouteConfig {
    /// The route's name in metrics, the access log and the state view for
    /// `host` (its own host, or its preview host): the host alone for a
    /// host-only route, else the host and the rule
    /// (`app.example.com path_prefix=/api`).
    pub fn label(&self, host: &str) -> String {
        if self.rules.is_empty() && self.rules.priority.is_none() {
            host.to_string()
        } else {
            format!("{host} {}", self.rules.describe())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    None,
    Acme,
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Boxed: most pools have none.
    pub health: Option<Box<HealthConfig>>,
    pub passive: PassiveConfig,
    pub sticky: Option<Sticky>,
    pub pin_header: Option<http::HeaderName>,
    pub version_header: bool,
    pub retry: u32,
    pub on_all_down: OnAllDown,
    /// Most requests in flight to one backend of the pool (each holds one
    /// backend connection); more wait in a FIFO queue. 0: no cap.
    pub max_connections_per_backend: u32,
    /// How long a request waits in that queue before a 503; `None`: the
    /// server's `connect_timeout`.
    pub queue_timeout: Option<Duration>,
    /// By name. A sorted vector: a pool has a handful of versions, and a
    /// `BTreeMap` node holds room for eleven (~630 bytes per pool).
    pub versions: VersionMap,
    /// Shared with every pool that leaves `[pools.P.rollout]` at its
    /// defaults (248 bytes each otherwise).
    pub rollout: Arc<RolloutConfig>,
    /// `[[pools.P.match]]`: requests carrying a header, cookie or query
    /// parameter go to a named version, before sticky buckets and weights.
    pub matches: Vec<VersionRule>,
}

/// A pool's versions by name, in name order.
pub type VersionMap = litemap::LiteMap<String, VersionConfig>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConfig {
    pub weight: u32,
    pub backends: Vec<BackendAddr>,
}

/// A backend address as written: `host:port`, where host is an IP literal or
/// a DNS name (a Compose service, say) resolved when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    /// Shared by the config, the backend and the registry's key (a clone
    /// copies no text).
    text: Arc<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Inclusive range of statuses that count as healthy.
    pub status: (u16, u16),
    pub host: Option<String>,
    /// Probe this port instead of the backend's own.
    pub port: Option<u16>,
}

/// Passive ejection from live traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveConfig {
    /// Consecutive connect failures or 5xx answers before ejection (0 = off).
    pub failures: u32,
    /// How long an ejected backend stays out when no active probe brings it back.
    pub ejection: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(http::HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    Unavailable,
    FailOpen,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    pub steps: Vec<u32>,
    pub step_duration: Duration,
    pub min_requests: u64,
    pub max_error_rate_increase: f64,
    pub max_p99_increase: f64,
    /// A p99 difference smaller than this never fails a judgement.
    pub p99_tolerance: Duration,
    pub failure_limit: u32,
    pub cooldown: Duration,
    pub smoke: Option<SmokeConfig>,
    /// Per-step durations (`None`: `step_duration`), one per step.
    pub step_durations: Vec<Option<Duration>>,
    /// Step percents that wait for an operator's approval before they start
    /// (`"pause"` in `steps`, or `approve_before`).
    pub approve_before: Vec<u32>,
    /// Confidence of a whole rollout's judgements (0.5..1).
    pub confidence: f64,
    /// Absolute gate: the canary's share of non-5xx answers.
    pub min_success_rate: Option<f64>,
    /// Absolute gate: the canary's p99.
    pub max_p99: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmokeConfig {
    pub path: String,
    pub status: (u16, u16),
    pub webhook: Option<String>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            steps: vec![1, 5, 25, 100],
            step_duration: Duration::from_secs(300),
            min_requests: 50,
            max_error_rate_increase: 0.01,
            max_p99_increase: 0.5,
            p99_tolerance: Duration::from_millis(10),
            failure_limit: 1,
            cooldown: Duration::from_secs(600),
            smoke: None,
            step_durations: Vec::new(),
            approve_before: Vec::new(),
            confidence: 0.99,
            min_success_rate: None,
            max_p99: None,
        }
    }
}

impl RolloutConfig {
    /// `r` in an `Arc`, or, when `r` is the defaults, the one copy of them
    /// every such pool shares.
    pub fn shared(r: RolloutConfig) -> Arc<RolloutConfig> {
        static DEFAULTS: std::sync::OnceLock<Arc<RolloutConfig>> = std::sync::OnceLock::new();
        let d = DEFAULTS.get_or_init(|| Arc::new(RolloutConfig::default()));
        if r == **d {
            d.clone()
        } else {
            Arc::new(r)
        }
    }
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            failures: 5,
            ejection: Duration::from_secs(30),
        }
    }
}

// === impl BackendAddr ===

impl BackendAddr {
    /// Parses `host:port` (`[v6]:port` for IPv6 literals).
    pub fn parse(raw: &str) -> Result<BackendAddr, String> {
        let (host, port) = match raw.rfind(':') {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => return Err(format!("backend {raw:?} must be host:port")),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("backend {raw:?} has a bad port"))?;
        if port == 0 {
            return Err(format!("backend {raw:?} has port 0"));
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("backend {raw:?} has a bad IPv6 address"))?;
        } else if host.contains(':') {
            return Err(format!(
                "backend {raw:?}: write IPv6 addresses as [addr]:port"
            ));
        } else {
            HostName::check(host).map_err(|e| format!("backend {raw:?}: {e}"))?;
            if host.is_empty() {
                return Err(format!("backend {raw:?} has no host"));
            }
        }
        Ok(BackendAddr { text: raw.into() })
    }

    /// The `host:port` text, also the HTTP authority used when connecting.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks a pool or version name: letters, digits, `.`, `_`, `-`, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Parses a duration such as `500ms`, `10s`, `2m`, `1h30m` or `30d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("bad duration {raw:?}: {e}"))
}

// === impl Config ===

impl Config {
    /// Reads and validates a file. Relative paths inside resolve against the
    /// file's directory. Only a regular file of at most
    /// [`MAX_CONFIG_BYTES`] is read, and reading never blocks (see
    /// [`read_config_file`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Config::from_file_text(path, &text)
    }

    /// [`Config::load`], and the file's text indexed for the next reload
    /// (see [`ConfigSource::reparse`]).
    pub fn load_source(path: &Path) -> Result<(Config, ConfigSource), ConfigError> {
        Config::parse_source(path, read_config_file(path)?)
    }

    /// [`Config::from_file_text`], and the text indexed for the next reload.
    /// The text is read section by section when it can be
    /// ([`ConfigSource::read`]: the same config, sooner), and parsed whole
    /// otherwise, which also reports its errors.
    pub fn parse_source(path: &Path, text: String) -> Result<(Config, ConfigSource), ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        match ConfigSource::read(text, base) {
            Ok(read) => Ok(read),
            Err(text) => Config::parse_source_whole(path, text),
        }
    }

    /// [`Config::parse_source`] parsing the whole text (never section by
    /// section).
    pub fn parse_source_whole(
        path: &Path,
        text: String,
    ) -> Result<(Config, ConfigSource), ConfigError> {
        let config = Config::from_file_text(path, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok((config, ConfigSource::index(text, base)))
    }

    /// Validates `text`, read from the file at `path` ([`Config::load`]
    /// once the file is read).
    pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str_in(text, base).map_err(|diagnostics| ConfigError::Invalid {
            path: path.to_owned(),
            diagnostics,
        })
    }

    /// Validates TOML text; relative paths stay relative.
    pub fn from_toml_str(text: &str) -> Result<Config, Vec<Diagnostic>> {
        Config::from_toml_str_in(text, Path::new(""))
    }

    /// Validates TOML text, resolving relative paths against `base`.
    pub fn from_toml_str_in(text: &str, base: &Path) -> Result<Config, Vec<Diagnostic>> {
        validate::parse(text, base)
    }

    /// Takes `old`'s shared parts where they are equal to this config's: a
    /// reload of a big file then holds one copy of each unchanged pool (and
    /// of the routes when none changed), and the table builder recognizes
    /// the unchanged pools by pointer. Everything else is copied afresh on
    /// the calling thread, so that nothing this config keeps stays in the
    /// memory of the thread that parsed it (see
    /// [`crate::memory::on_scratch`]). The config stays equal to itself.
    pub fn share_unchanged(&mut self, old: &Config) {
        let Config {
            server,
            admin,
            metrics,
            access_log,
            acme,
            cluster,
            routes,
            pools,
            notify,
            docker,
            middlewares,
        } = self;
        *routes = if Arc::ptr_eq(routes, &old.routes) || *routes == old.routes {
            old.routes.clone()
        } else {
            Arc::new(Vec::clone(routes))
        };
        *pools = pools
            .iter()
            .map(|(name, pool)| {
                let Some((old_name, o)) = old.pools.get_key_value(name) else {
                    // A new name: its own copy too, not the parser's.
                    let name: Arc<str> = Arc::from(&**name);
                    return (name, Arc::new(PoolConfig::clone(pool)));
                };
                let pool = if Arc::ptr_eq(o, pool) || **o == **pool {
                    o.clone()
                } else {
                    Arc::new(PoolConfig::clone(pool))
                };
                // The old name: the same text, already on this side.
                (old_name.clone(), pool)
            })
            .collect();
        *server = server.clone();
        *admin = admin.clone();
        *metrics = metrics.clone();
        *access_log = access_log.clone();
        *acme = acme.clone();
        *cluster = cluster.clone();
        *notify = notify.clone();
        *docker = docker.clone();
        *middlewares = middlewares.clone();
    }

    /// Takes `old`'s pools (and routes) where they are equal to this
    /// config's, as [`Config::share_unchanged`] does, and copies nothing
    /// else: for a config read on the calling thread.
    pub fn share_equal(&mut self, old: &Config) {
        if *self.routes == *old.routes {
            self.routes = old.routes.clone();
        }
        for (name, pool) in self.pools.iter_mut() {
            if let Some(o) = old.pools.get(name) {
                if **o == **pool {
                    *pool = o.clone();
                }
            }
        }
    }

    /// What is valid but probably not meant: `switchyard check` prints these
    /// on stderr and still succeeds.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.routes.is_empty() && self.docker.is_none() {
            out.push(
                "no [[routes]]: nothing would be routed (every request would be answered 404)"
                    .to_string(),
            );
        }
        out.extend(routes::shadowed(&self.routes));
        out
    }

    /// Checks a pool after runtime changes (added versions, new weights): the
    /// same rules as the file, without spans, except that a version may have
    /// no backend (a discovered version whose containers are all stopped;
    /// `PUT .../versions` refuses an empty list itself).
    pub fn check_pool(pool: &PoolConfig) -> Result<(), String> {
        if pool.versions.is_empty() {
            return Err("a pool needs at least one version".into());
        }
        if pool.versions.len() > MAX_VERSIONS {
            return Err(format!("a pool has at most {MAX_VERSIONS} versions"));
        }
        for (name, v) in &pool.versions {
            if !valid_name(name) {
                return Err(format!("bad version name {name:?}"));
            }
            if v.weight > MAX_WEIGHT {
                return Err(format!("weight of {name} is above {MAX_WEIGHT}"));
            }
        }
        for m in &pool.matches {
            if !pool.versions.contains_key(&m.version) {
                return Err(format!(
                    "a version rule sends to {}, which the pool does not have",
                    m.version
                ));
            }
        }
        Ok(())
    }
}
