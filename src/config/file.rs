//! The file model: what serde reads, spans kept for diagnostics.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: Option<ServerFile>,
    #[serde(default)]
    pub(super) admin: Option<AdminFile>,
    #[serde(default)]
    pub(super) metrics: Option<MetricsFile>,
    #[serde(default)]
    pub(super) access_log: Option<AccessLogFile>,
    #[serde(default)]
    pub(super) acme: Option<Spanned<AcmeFile>>,
    #[serde(default)]
    pub(super) cluster: Option<Spanned<ClusterFile>>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub(super) pools: BTreeMap<Spanned<String>, Spanned<PoolFile>>,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<super::notify::NotifyFile>>,
    pub(super) providers: Option<ProvidersFile>,
    #[serde(default)]
    pub(super) middlewares: BTreeMap<Spanned<String>, Spanned<MiddlewareFile>>,
}

/// A document of `[[routes]]` sections only (see `incremental.rs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesFile {
    pub(super) routes: Vec<Spanned<RouteFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProvidersFile {
    pub(super) docker: Option<Spanned<DockerFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DockerFile {
    pub(super) endpoint: S<String>,
    pub(super) exposed_by_default: Option<bool>,
    pub(super) network: S<String>,
    pub(super) labels: S<String>,
    pub(super) host_address: S<String>,
}

pub(super) type S<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub(super) http: S<String>,
    pub(super) https: S<String>,
    pub(super) header_timeout: S<String>,
    pub(super) idle_timeout: S<String>,
    pub(super) connect_timeout: S<String>,
    pub(super) request_timeout: S<String>,
    pub(super) send_timeout: S<String>,
    pub(super) body_timeout: S<String>,
    pub(super) shutdown_grace: S<String>,
    pub(super) max_connections: S<i64>,
    pub(super) max_header_bytes: S<i64>,
    pub(super) workers: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub(super) socket: S<String>,
    pub(super) state: S<String>,
    pub(super) dashboard: S<String>,
    pub(super) token_file: S<String>,
    pub(super) allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsFile {
    pub(super) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLogFile {
    pub(super) format: S<String>,
    pub(super) path: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    pub(super) etcd: Spanned<Vec<Spanned<String>>>,
    pub(super) prefix: S<String>,
    pub(super) name: S<String>,
    pub(super) lease_ttl: S<String>,
    pub(super) tls: Option<Spanned<ClusterTlsFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterTlsFile {
    pub(super) ca: S<String>,
    pub(super) cert: S<String>,
    pub(super) key: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcmeFile {
    pub(super) email: Spanned<String>,
    pub(super) directory: S<String>,
    pub(super) storage: S<String>,
    pub(super) challenge: S<String>,
    pub(super) ca_file: S<String>,
    pub(super) renew_before: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    pub(super) host: Spanned<String>,
    pub(super) pool: Spanned<String>,
    pub(super) tls: Option<Spanned<TlsFile>>,
    pub(super) redirect_https: Option<bool>,
    pub(super) preview: S<String>,
    pub(super) path: S<String>,
    pub(super) path_prefix: S<String>,
    pub(super) path_regex: S<String>,
    pub(super) methods: S<Vec<String>>,
    pub(super) headers: S<BTreeMap<String, String>>,
    pub(super) query: S<BTreeMap<String, String>>,
    pub(super) priority: S<i64>,
    pub(super) middlewares: S<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum TlsFile {
    Word(String),
    Files(TlsFiles),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFiles {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolFile {
    pub(super) health: Option<Spanned<HealthFile>>,
    pub(super) passive: Option<Spanned<PassiveFile>>,
    pub(super) sticky: Option<Spanned<StickyFile>>,
    pub(super) pin_header: S<String>,
    pub(super) version_header: Option<bool>,
    pub(super) retry: S<i64>,
    pub(super) on_all_down: S<String>,
    pub(super) max_connections_per_backend: S<i64>,
    pub(super) queue_timeout: S<String>,
    #[serde(default)]
    pub(super) versions: BTreeMap<Spanned<String>, Spanned<VersionFile>>,
    pub(super) rollout: Option<RolloutFile>,
    #[serde(default, rename = "match")]
    pub(super) matches: Vec<Spanned<crate::rules::VersionMatchSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionFile {
    pub(super) weight: S<i64>,
    #[serde(default)]
    pub(super) backends: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthFile {
    pub(super) path: S<String>,
    pub(super) interval: S<String>,
    pub(super) timeout: S<String>,
    pub(super) rise: S<i64>,
    pub(super) fall: S<i64>,
    pub(super) status: S<StatusFile>,
    pub(super) host: S<String>,
    pub(super) port: S<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StatusFile {
    One(i64),
    Range(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PassiveFile {
    pub(super) failures: S<i64>,
    pub(super) ejection: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StickyFile {
    pub(super) header: Option<String>,
    pub(super) cookie: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutFile {
    pub(super) steps: S<Vec<StepFile>>,
    pub(super) approve_before: S<i64>,
    pub(super) confidence: S<f64>,
    pub(super) min_success_rate: S<f64>,
    pub(super) max_p99: S<String>,
    pub(super) step_duration: S<String>,
    pub(super) min_requests: S<i64>,
    pub(super) max_error_rate_increase: S<f64>,
    pub(super) max_p99_increase: S<f64>,
    pub(super) p99_tolerance: S<String>,
    pub(super) failure_limit: S<i64>,
    pub(super) cooldown: S<String>,
    pub(super) smoke: Option<Spanned<SmokeFile>>,
}

/// One entry of `steps`: `5`, `"pause"`, or `{ percent = 5, duration = "10m" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StepFile {
    Percent(i64),
    Word(String),
    Timed(TimedStepFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimedStepFile {
    pub(super) percent: i64,
    pub(super) duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SmokeFile {
    pub(super) path: S<String>,
    pub(super) status: S<StatusFile>,
    pub(super) webhook: S<String>,
}

/// `[middlewares.NAME]`: exactly one of these.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MiddlewareFile {
    pub(super) headers: Option<Spanned<HeadersFile>>,
    pub(super) basic_auth: Option<Spanned<BasicAuthFile>>,
    pub(super) ip_allow: Option<Spanned<IpAllowFile>>,
    pub(super) rate_limit: Option<Spanned<RateLimitFile>>,
    pub(super) compress: Option<Spanned<CompressFile>>,
    pub(super) strip_prefix: S<Vec<String>>,
    pub(super) add_prefix: S<String>,
    pub(super) redirect_regex: Option<Spanned<RedirectRegexFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HeadersFile {
    pub(super) hsts: S<String>,
    pub(super) force_hsts: Option<bool>,
    pub(super) frame_deny: Option<bool>,
    pub(super) custom_frame_options: S<String>,
    pub(super) content_type_nosniff: Option<bool>,
    pub(super) browser_xss_filter: Option<bool>,
    pub(super) referrer_policy: S<String>,
    pub(super) content_security_policy: S<String>,
    pub(super) permissions_policy: S<String>,
    pub(super) request: Option<Spanned<HeaderOpsFile>>,
    pub(super) response: Option<Spanned<HeaderOpsFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderOpsFile {
    #[serde(default)]
    pub(super) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BasicAuthFile {
    pub(super) users_file: S<String>,
    pub(super) users: S<Vec<String>>,
    pub(super) realm: S<String>,
    pub(super) remove_header: Option<bool>,
    pub(super) header_field: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IpAllowFile {
    pub(super) cidrs: Vec<Spanned<String>>,
    pub(super) trusted_proxies: S<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitFile {
    pub(super) average: Spanned<i64>,
    pub(super) burst: S<i64>,
    pub(super) period: S<String>,
    pub(super) per: S<String>,
    pub(super) trusted_proxies: S<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompressFile {
    pub(super) types: S<Vec<String>>,
    pub(super) min_bytes: S<i64>,
    pub(super) encodings: S<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedirectRegexFile {
    pub(super) regex: Spanned<String>,
    pub(super) replacement: Spanned<String>,
    pub(super) permanent: Option<bool>,
}
