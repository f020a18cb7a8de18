//! The configuration file: TOML text in, a validated [`Config`] out.
//!
//! ```text
//! &str --toml--> FileConfig (serde, deny_unknown_fields, spans kept)
//!      --validate--> Config (typed, defaults filled, every error collected)
//! ```
//!
//! Pure: the only I/O is [`Config::load`] reading the file. Every error carries
//! the line and column of the offending value so `switchyard check` can print
//! `FILE:LINE:COL: message` for each of them. Relative paths in the file are
//! resolved against the file's own directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::host::{HostName, HostPattern};

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
    pub routes: Vec<RouteConfig>,
    pub pools: BTreeMap<String, PoolConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
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
    pub format: crate::accesslog::Format,
    pub target: crate::accesslog::Target,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    None,
    Acme,
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub health: Option<HealthConfig>,
    pub passive: PassiveConfig,
    pub sticky: Option<Sticky>,
    pub pin_header: Option<http::HeaderName>,
    pub version_header: bool,
    pub retry: u32,
    pub on_all_down: OnAllDown,
    pub versions: BTreeMap<String, VersionConfig>,
    pub rollout: RolloutConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConfig {
    pub weight: u32,
    pub backends: Vec<BackendAddr>,
}

/// A backend address as written: `host:port`, where host is an IP literal or
/// a DNS name (a Compose service, say) resolved when connecting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    text: Box<str>,
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
            HostName::parse(host).map_err(|e| format!("backend {raw:?}: {e}"))?;
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

// ---------------------------------------------------------------------------
// The file model (what serde reads).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: Option<ServerFile>,
    #[serde(default)]
    admin: Option<AdminFile>,
    #[serde(default)]
    metrics: Option<MetricsFile>,
    #[serde(default)]
    access_log: Option<AccessLogFile>,
    #[serde(default)]
    acme: Option<Spanned<AcmeFile>>,
    #[serde(default)]
    routes: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pools: BTreeMap<Spanned<String>, Spanned<PoolFile>>,
}

type S<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    http: S<String>,
    https: S<String>,
    header_timeout: S<String>,
    idle_timeout: S<String>,
    connect_timeout: S<String>,
    request_timeout: S<String>,
    shutdown_grace: S<String>,
    max_connections: S<i64>,
    max_header_bytes: S<i64>,
    workers: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    socket: S<String>,
    state: S<String>,
    dashboard: S<String>,
    token_file: S<String>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogFile {
    format: S<String>,
    path: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeFile {
    email: Spanned<String>,
    directory: S<String>,
    storage: S<String>,
    challenge: S<String>,
    ca_file: S<String>,
    renew_before: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    host: Spanned<String>,
    pool: Spanned<String>,
    tls: Option<Spanned<TlsFile>>,
    redirect_https: Option<bool>,
    preview: S<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TlsFile {
    Word(String),
    Files(TlsFiles),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFiles {
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    health: Option<Spanned<HealthFile>>,
    passive: Option<Spanned<PassiveFile>>,
    sticky: Option<Spanned<StickyFile>>,
    pin_header: S<String>,
    version_header: Option<bool>,
    retry: S<i64>,
    on_all_down: S<String>,
    #[serde(default)]
    versions: BTreeMap<Spanned<String>, Spanned<VersionFile>>,
    rollout: Option<RolloutFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    weight: S<i64>,
    #[serde(default)]
    backends: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    path: S<String>,
    interval: S<String>,
    timeout: S<String>,
    rise: S<i64>,
    fall: S<i64>,
    status: S<StatusFile>,
    host: S<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusFile {
    One(i64),
    Range(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassiveFile {
    failures: S<i64>,
    ejection: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyFile {
    header: Option<String>,
    cookie: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    steps: S<Vec<i64>>,
    step_duration: S<String>,
    min_requests: S<i64>,
    max_error_rate_increase: S<f64>,
    max_p99_increase: S<f64>,
    p99_tolerance: S<String>,
    failure_limit: S<i64>,
    cooldown: S<String>,
    smoke: Option<Spanned<SmokeFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmokeFile {
    path: S<String>,
    status: S<StatusFile>,
    webhook: S<String>,
}

// ---------------------------------------------------------------------------
// Validation.

/// Collects diagnostics while validating; turns byte spans into line:col.
struct Checker<'a> {
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.diags.push(Diagnostic {
            line,
            col,
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &S<String>, key: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) if d.is_zero() => {
                    self.err(s.span(), format!("{key} must be above zero"));
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.err(s.span(), format!("{key}: {e}"));
                    default
                }
            },
        }
    }

    fn int(&mut self, v: &S<i64>, key: &str, range: Range<i64>, default: i64) -> i64 {
        match v {
            None => default,
            Some(s) if range.contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    s.span(),
                    format!(
                        "{key} must be between {} and {}",
                        range.start,
                        range.end - 1
                    ),
                );
                default
            }
        }
    }

    fn addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    format!("{key}: {:?} is not an IP:port address", v.get_ref()),
                );
                None
            }
        }
    }

    fn status(&mut self, v: &S<StatusFile>, key: &str) -> (u16, u16) {
        let Some(s) = v else { return (200, 399) };
        let parsed = match s.get_ref() {
            StatusFile::One(n) => u16::try_from(*n).ok().map(|n| (n, n)),
            StatusFile::Range(r) => r
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?))),
        };
        match parsed {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b => {
                (a, b)
            }
            _ => {
                self.err(
                    s.span(),
                    format!("{key} must be a status (200) or a range (\"200-399\")"),
                );
                (200, 399)
            }
        }
    }
}

/// 1-based line and column of a byte offset (columns count characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

// === impl Config ===

impl Config {
    /// Reads and validates a file. Relative paths inside resolve against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str_in(&text, base).map_err(|diagnostics| ConfigError::Invalid {
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
        let file: FileConfig = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let (line, col) = line_col(text, e.span().map(|s| s.start).unwrap_or(0));
                let message = e.message().trim().replace('\n', " ");
                return Err(vec![Diagnostic { line, col, message }]);
            }
        };
        let mut c = Checker {
            text,
            diags: Vec::new(),
        };
        let config = validate(&mut c, file, base);
        if c.diags.is_empty() {
            Ok(config)
        } else {
            c.diags.sort_by_key(|d| (d.line, d.col));
            Err(c.diags)
        }
    }

    /// Checks a pool after runtime changes (added versions, new weights): the
    /// same rules as the file, without spans.
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
            if v.backends.is_empty() {
                return Err(format!("version {name} has no backends"));
            }
        }
        Ok(())
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn validate(c: &mut Checker<'_>, file: FileConfig, base: &Path) -> Config {
    let sf = file.server.unwrap_or_default();
    let http = match &sf.http {
        Some(s) => c.addr(s, "server.http"),
        None if sf.https.is_none() => Some(SocketAddr::from(([0, 0, 0, 0], 80))),
        None => None,
    };
    let https = sf.https.as_ref().and_then(|s| c.addr(s, "server.https"));
    let server = ServerConfig {
        http,
        https,
        header_timeout: c.duration(
            &sf.header_timeout,
            "header_timeout",
            Duration::from_secs(10),
        ),
        idle_timeout: c.duration(&sf.idle_timeout, "idle_timeout", Duration::from_secs(60)),
        connect_timeout: c.duration(
            &sf.connect_timeout,
            "connect_timeout",
            Duration::from_secs(3),
        ),
        request_timeout: c.duration(
            &sf.request_timeout,
            "request_timeout",
            Duration::from_secs(60),
        ),
        shutdown_grace: c.duration(
            &sf.shutdown_grace,
            "shutdown_grace",
            Duration::from_secs(30),
        ),
        max_connections: c.int(
            &sf.max_connections,
            "max_connections",
            1..10_000_001,
            10_000,
        ) as usize,
        max_header_bytes: c.int(
            &sf.max_header_bytes,
            "max_header_bytes",
            1024..16_777_217,
            65_536,
        ) as usize,
        workers: c.int(&sf.workers, "workers", 0..1025, 0) as usize,
    };

    let af = file.admin.unwrap_or_default();
    let dashboard = af
        .dashboard
        .as_ref()
        .and_then(|s| c.addr(s, "admin.dashboard"));
    let allow_remote = af.allow_remote.unwrap_or(false);
    if let (Some(d), Some(s)) = (dashboard, &af.dashboard) {
        if af.token_file.is_none() {
            c.err(s.span(), "admin.dashboard needs admin.token_file");
        }
        if !d.ip().is_loopback() && !allow_remote {
            c.err(
                s.span(),
                "admin.dashboard on a non-loopback address needs allow_remote = true",
            );
        }
    }
    let admin = AdminConfig {
        socket: resolve(
            base,
            af.socket
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or("/run/switchyard/admin.sock"),
        ),
        state: resolve(
            base,
            af.state
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or("/var/lib/switchyard/state.json"),
        ),
        dashboard,
        token_file: af.token_file.as_ref().map(|s| resolve(base, s.get_ref())),
        allow_remote,
    };

    let metrics = file.metrics.and_then(|m| {
        c.addr(&m.listen, "metrics.listen")
            .map(|listen| MetricsConfig { listen })
    });

    let acme = file.acme.as_ref().map(|a| {
        let a = a.get_ref();
        let email = a.email.get_ref().clone();
        if !email.contains('@') {
            c.err(a.email.span(), "acme.email must be an e-mail address");
        }
        let directory = match a.directory.as_ref().map(|d| d.get_ref().as_str()) {
            None | Some("letsencrypt") => {
                "https://acme-v02.api.letsencrypt.org/directory".to_string()
            }
            Some("letsencrypt-staging") => {
                "https://acme-staging-v02.api.letsencrypt.org/directory".to_string()
            }
            Some(url) if url.starts_with("https://") => url.to_string(),
            Some(_) => {
                let d = a.directory.as_ref().map(|d| d.span()).unwrap_or(0..0);
                c.err(
                    d,
                    "acme.directory must be letsencrypt, letsencrypt-staging or an https:// URL",
                );
                String::new()
            }
        };
        let challenge = match a.challenge.as_ref().map(|d| d.get_ref().as_str()) {
            None | Some("http-01") => Challenge::Http01,
            Some("tls-alpn-01") => Challenge::TlsAlpn01,
            Some(_) => {
                let d = a.challenge.as_ref().map(|d| d.span()).unwrap_or(0..0);
                c.err(d, "acme.challenge must be \"http-01\" or \"tls-alpn-01\"");
                Challenge::Http01
            }
        };
        let renew_before = a.renew_before.as_ref().map(|_| {
            c.duration(
                &a.renew_before,
                "renew_before",
                Duration::from_secs(30 * 86400),
            )
        });
        AcmeConfig {
            email,
            directory,
            storage: resolve(
                base,
                a.storage
                    .as_ref()
                    .map(|s| s.get_ref().as_str())
                    .unwrap_or("/var/lib/switchyard/acme"),
            ),
            challenge,
            ca_file: a.ca_file.as_ref().map(|s| resolve(base, s.get_ref())),
            renew_before,
        }
    });

    let mut pools = BTreeMap::new();
    for (name, pool) in &file.pools {
        if !valid_name(name.get_ref()) {
            c.err(
                name.span(),
                format!(
                    "bad pool name {:?}: use letters, digits, '.', '_', '-'",
                    name.get_ref()
                ),
            );
        }
        pools.insert(name.get_ref().clone(), validate_pool(c, pool));
    }

    let mut routes = Vec::new();
    let mut seen = BTreeMap::new();
    for r in &file.routes {
        let span = r.span();
        let r = r.get_ref();
        if !pools.contains_key(r.pool.get_ref()) {
            c.err(
                r.pool.span(),
                format!(
                    "route names pool {:?}, which is not defined",
                    r.pool.get_ref()
                ),
            );
        }
        let host = match HostPattern::parse(r.host.get_ref()) {
            Ok(h) => h,
            Err(e) => {
                c.err(
                    r.host.span(),
                    format!("route host {:?}: {e}", r.host.get_ref()),
                );
                continue;
            }
        };
        if seen.insert(host.to_string(), ()).is_some() {
            c.err(r.host.span(), format!("host {host} is routed twice"));
        }
        let tls = match r.tls.as_ref().map(|t| (t.span(), t.get_ref())) {
            None => TlsMode::None,
            Some((_, TlsFile::Word(w))) if w == "none" => TlsMode::None,
            Some((span, TlsFile::Word(w))) if w == "acme" => {
                if acme.is_none() {
                    c.err(span.clone(), "tls = \"acme\" needs an [acme] section");
                }
                if host.is_wildcard() {
                    c.err(span, "a wildcard host needs a DNS-01 challenge, which switchyard does not do: use tls = { cert, key }");
                }
                TlsMode::Acme
            }
            Some((span, TlsFile::Word(w))) => {
                c.err(
                    span,
                    format!(
                        "tls must be \"acme\", \"none\" or {{ cert = ..., key = ... }}, not {w:?}"
                    ),
                );
                TlsMode::None
            }
            Some((_, TlsFile::Files(f))) => TlsMode::Files {
                cert: resolve(base, &f.cert),
                key: resolve(base, &f.key),
            },
        };
        if tls != TlsMode::None && server.https.is_none() {
            c.err(span.clone(), "a route with tls needs server.https");
        }
        let preview = match &r.preview {
            None => None,
            Some(p) => match HostName::parse(p.get_ref()) {
                Ok(h) => {
                    if seen.insert(h.to_string(), ()).is_some() {
                        c.err(p.span(), format!("host {h} is routed twice"));
                    }
                    Some(h)
                }
                Err(e) => {
                    c.err(p.span(), format!("preview host: {e}"));
                    None
                }
            },
        };
        routes.push(RouteConfig {
            host,
            pool: r.pool.get_ref().clone(),
            redirect_https: r.redirect_https.unwrap_or(tls != TlsMode::None),
            tls,
            preview,
        });
    }

    let access_log = file.access_log.as_ref().and_then(|a| {
        use crate::accesslog::{Format, Target};
        let format = match a.format.as_ref().map(|f| (f.span(), f.get_ref().as_str())) {
            None | Some((_, "common")) => Some(Format::Common),
            Some((_, "json")) => Some(Format::Json),
            Some((_, "off")) => None,
            Some((span, _)) => {
                c.err(
                    span,
                    "access_log.format must be \"common\", \"json\" or \"off\"",
                );
                None
            }
        }?;
        let target = match a.path.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("-") | Some("stdout") => Target::Stdout,
            Some("stderr") => Target::Stderr,
            Some(p) => Target::File(resolve(base, p)),
        };
        Some(AccessLogConfig { format, target })
    });

    Config {
        server,
        admin,
        metrics,
        access_log,
        acme,
        routes,
        pools,
    }
}

fn validate_pool(c: &mut Checker<'_>, pool: &Spanned<PoolFile>) -> PoolConfig {
    let span = pool.span();
    let p = pool.get_ref();
    let mut versions = BTreeMap::new();
    if p.versions.is_empty() {
        c.err(
            span.clone(),
            "a pool needs at least one version ([pools.NAME.versions.V])",
        );
    }
    if p.versions.len() > MAX_VERSIONS {
        c.err(span, format!("a pool has at most {MAX_VERSIONS} versions"));
    }
    for (vname, v) in &p.versions {
        if !valid_name(vname.get_ref()) {
            c.err(
                vname.span(),
                format!(
                    "bad version name {:?}: use letters, digits, '.', '_', '-'",
                    vname.get_ref()
                ),
            );
        }
        let vspan = v.span();
        let v = v.get_ref();
        let weight = c.int(&v.weight, "weight", 0..i64::from(MAX_WEIGHT) + 1, 0) as u32;
        if v.backends.is_empty() {
            c.err(
                vspan,
                format!("version {} needs at least one backend", vname.get_ref()),
            );
        }
        let mut backends = Vec::new();
        for b in &v.backends {
            match BackendAddr::parse(b.get_ref()) {
                Ok(a) => backends.push(a),
                Err(e) => c.err(b.span(), e),
            }
        }
        versions.insert(vname.get_ref().clone(), VersionConfig { weight, backends });
    }

    let health = p.health.as_ref().map(|h| {
        let hspan = h.span();
        let h = h.get_ref();
        let interval = c.duration(&h.interval, "health.interval", Duration::from_secs(2));
        let timeout = c.duration(&h.timeout, "health.timeout", Duration::from_secs(1));
        if timeout > interval {
            c.err(hspan, "health.timeout must not exceed health.interval");
        }
        let path = h
            .path
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            let s = h.path.as_ref().map(|p| p.span()).unwrap_or(0..0);
            c.err(s, "health.path must start with '/'");
        }
        HealthConfig {
            path,
            interval,
            timeout,
            rise: c.int(&h.rise, "health.rise", 1..101, 2) as u32,
            fall: c.int(&h.fall, "health.fall", 1..101, 3) as u32,
            status: c.status(&h.status, "health.status"),
            host: h.host.as_ref().map(|s| s.get_ref().clone()),
        }
    });

    let passive = match &p.passive {
        None => PassiveConfig::default(),
        Some(ps) => {
            let ps = ps.get_ref();
            PassiveConfig {
                failures: c.int(&ps.failures, "passive.failures", 0..1001, 5) as u32,
                ejection: c.duration(&ps.ejection, "passive.ejection", Duration::from_secs(30)),
            }
        }
    };

    let sticky = p.sticky.as_ref().and_then(|s| {
        let span = s.span();
        match (&s.get_ref().header, &s.get_ref().cookie) {
            (Some(h), None) => match http::HeaderName::try_from(h.as_str()) {
                Ok(h) => Some(Sticky::Header(h)),
                Err(_) => {
                    c.err(
                        span,
                        format!("sticky header {h:?} is not a valid header name"),
                    );
                    None
                }
            },
            (None, Some(k))
                if !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';') =>
            {
                Some(Sticky::Cookie(k.clone()))
            }
            _ => {
                c.err(
                    span,
                    "sticky takes one of { header = \"X-User-ID\" } or { cookie = \"name\" }",
                );
                None
            }
        }
    });

    let pin_header = p.pin_header.as_ref().and_then(|h| {
        match http::HeaderName::try_from(h.get_ref().as_str()) {
            Ok(n) => Some(n),
            Err(_) => {
                c.err(h.span(), "pin_header is not a valid header name");
                None
            }
        }
    });

    let on_all_down = match p
        .on_all_down
        .as_ref()
        .map(|s| (s.span(), s.get_ref().as_str()))
    {
        None | Some((_, "503")) => OnAllDown::Unavailable,
        Some((_, "fail_open")) => OnAllDown::FailOpen,
        Some((span, _)) => {
            c.err(span, "on_all_down must be \"503\" or \"fail_open\"");
            OnAllDown::Unavailable
        }
    };

    let rollout = p
        .rollout
        .as_ref()
        .map(|r| validate_rollout(c, r))
        .unwrap_or_default();

    PoolConfig {
        health,
        passive,
        sticky,
        pin_header,
        version_header: p.version_header.unwrap_or(false),
        retry: c.int(&p.retry, "retry", 0..11, 1) as u32,
        on_all_down,
        versions,
        rollout,
    }
}

fn validate_rollout(c: &mut Checker<'_>, r: &RolloutFile) -> RolloutConfig {
    let d = RolloutConfig::default();
    let steps = match &r.steps {
        None => d.steps.clone(),
        Some(s) => match check_steps(s.get_ref()) {
            Ok(v) => v,
            Err(e) => {
                c.err(s.span(), e);
                d.steps.clone()
            }
        },
    };
    let fraction = |c: &mut Checker<'_>, v: &S<f64>, key: &str, default: f64, max: f64| match v {
        None => default,
        Some(x) if x.get_ref().is_finite() && *x.get_ref() >= 0.0 && *x.get_ref() <= max => {
            *x.get_ref()
        }
        Some(x) => {
            c.err(x.span(), format!("{key} must be between 0 and {max}"));
            default
        }
    };
    RolloutConfig {
        steps,
        step_duration: c.duration(&r.step_duration, "rollout.step_duration", d.step_duration),
        min_requests: c.int(
            &r.min_requests,
            "rollout.min_requests",
            0..1_000_000_001,
            50,
        ) as u64,
        max_error_rate_increase: fraction(
            c,
            &r.max_error_rate_increase,
            "rollout.max_error_rate_increase",
            d.max_error_rate_increase,
            1.0,
        ),
        max_p99_increase: fraction(
            c,
            &r.max_p99_increase,
            "rollout.max_p99_increase",
            d.max_p99_increase,
            1000.0,
        ),
        p99_tolerance: match &r.p99_tolerance {
            Some(s) if s.get_ref().trim() == "0s" || s.get_ref().trim() == "0" => Duration::ZERO,
            other => c.duration(other, "rollout.p99_tolerance", d.p99_tolerance),
        },
        failure_limit: c.int(&r.failure_limit, "rollout.failure_limit", 1..1001, 1) as u32,
        cooldown: match &r.cooldown {
            // A zero cooldown is allowed: "no cooldown".
            Some(s) if s.get_ref().trim() == "0s" || s.get_ref().trim() == "0" => Duration::ZERO,
            other => c.duration(other, "rollout.cooldown", d.cooldown),
        },
        smoke: r.smoke.as_ref().map(|s| {
            let s = s.get_ref();
            SmokeConfig {
                path: s
                    .path
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_else(|| "/".into()),
                status: c.status(&s.status, "rollout.smoke.status"),
                webhook: s.webhook.as_ref().map(|w| w.get_ref().clone()),
            }
        }),
    }
}

/// Rollout steps: strictly increasing percentages in 1..=100.
pub fn check_steps(steps: &[i64]) -> Result<Vec<u32>, String> {
    if steps.is_empty() {
        return Err("rollout steps must not be empty".into());
    }
    let mut prev = 0;
    for &s in steps {
        if !(1..=100).contains(&s) {
            return Err(format!("rollout step {s} is not a percentage in 1..=100"));
        }
        if s <= prev {
            return Err("rollout steps must be strictly increasing".into());
        }
        prev = s;
    }
    Ok(steps.iter().map(|&s| s as u32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
http = "127.0.0.1:8080"

[[routes]]
host = "App.Example.com"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["127.0.0.1:8081"]

[pools.app.versions.green]
weight = 0
backends = ["green:8080", "[::1]:8083"]
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.server.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_header_bytes, 65_536);
        assert_eq!(c.routes[0].host.to_string(), "app.example.com");
        assert!(!c.routes[0].redirect_https);
        let app = &c.pools["app"];
        assert_eq!(app.versions["blue"].weight, 100);
        assert_eq!(app.versions["green"].backends[0].as_str(), "green:8080");
        assert_eq!(app.retry, 1);
        assert_eq!(app.on_all_down, OnAllDown::Unavailable);
    }

    #[test]
    fn every_error_is_reported_with_position() {
        let text = r#"
[server]
http = "nope"
connect_timeout = "3 parsecs"

[[routes]]
host = "a b"
pool = "app"

[[routes]]
host = "b.test"
pool = "missing"

[pools.app.versions.blue]
weight = -1
backends = ["127.0.0.1", "x:99999"]

[pools.empty]
"#;
        let diags = Config::from_toml_str(text).unwrap_err();
        let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
        assert!(lines.contains(&3), "{diags:?}");
        assert!(lines.contains(&4));
        assert!(lines.contains(&7));
        assert!(lines.contains(&12));
        assert!(lines.contains(&15));
        assert_eq!(diags.iter().filter(|d| d.line == 16).count(), 2);
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("at least one version")),
            "{diags:?}"
        );
        let d = diags.iter().find(|d| d.line == 3).unwrap();
        assert_eq!(d.col, 8);
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let text = "[server]\nhttp = \"127.0.0.1:1\"\nbogus = 1\n";
        let diags = Config::from_toml_str(text).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].line, 3);
        assert!(diags[0].message.contains("bogus"), "{diags:?}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let diags = Config::from_toml_str("[server\nhttp=1").unwrap_err();
        assert_eq!(diags[0].line, 1);
    }

    #[test]
    fn tls_and_acme_rules() {
        let text = r#"
[server]
https = "127.0.0.1:8443"
[[routes]]
host = "*.example.com"
pool = "app"
tls = "acme"
[[routes]]
host = "b.example.com"
pool = "app"
tls = { cert = "a.pem", key = "a.key" }
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
"#;
        let diags = Config::from_toml_str(text).unwrap_err();
        assert!(diags
            .iter()
            .any(|d| d.message.contains("needs an [acme] section")));
        assert!(diags.iter().any(|d| d.message.contains("DNS-01")));
        assert_eq!(diags.len(), 2, "{diags:?}");
    }

    #[test]
    fn health_rollout_and_sticky_validate() {
        let text = r#"
[pools.app]
health = { path = "/health", interval = "2s", timeout = "1s", rise = 2, fall = 3, status = "200-299" }
sticky = { cookie = "sy_ver" }
on_all_down = "fail_open"
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
[pools.app.rollout]
steps = [1, 5, 25, 100]
step_duration = "2s"
min_requests = 10
"#;
        let c = Config::from_toml_str(text).unwrap();
        let p = &c.pools["app"];
        assert_eq!(p.health.as_ref().unwrap().status, (200, 299));
        assert_eq!(p.sticky, Some(Sticky::Cookie("sy_ver".into())));
        assert_eq!(p.on_all_down, OnAllDown::FailOpen);
        assert_eq!(p.rollout.step_duration, Duration::from_secs(2));
        assert_eq!(p.rollout.min_requests, 10);

        let bad = text
            .replace("[1, 5, 25, 100]", "[5, 1]")
            .replace("\"1s\"", "\"9s\"");
        let diags = Config::from_toml_str(&bad).unwrap_err();
        assert!(diags.iter().any(|d| d.message.contains("increasing")));
        assert!(diags.iter().any(|d| d.message.contains("must not exceed")));
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = Config::from_toml_str_in(
            "[admin]\nsocket = \"run/a.sock\"\nstate = \"/abs/s.json\"\n",
            Path::new("/etc/sy"),
        )
        .unwrap();
        assert_eq!(c.admin.socket, PathBuf::from("/etc/sy/run/a.sock"));
        assert_eq!(c.admin.state, PathBuf::from("/abs/s.json"));
    }

    #[test]
    fn backend_addresses() {
        assert!(BackendAddr::parse("app:80").is_ok());
        assert!(BackendAddr::parse("[::1]:80").is_ok());
        assert!(BackendAddr::parse("::1:80").is_err());
        assert!(BackendAddr::parse("app").is_err());
        assert!(BackendAddr::parse(":80").is_err());
        assert!(BackendAddr::parse("a:0").is_err());
        assert!(BackendAddr::parse("a b:1").is_err());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn shipped_examples_parse() {
        for f in ["config/switchyard.toml", "config/full.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            if let Err(e) = Config::load(&path) {
                panic!("{f}: {e}");
            }
        }
    }
}
