//! The file model to a [`Config`]: defaults filled, every problem collected
//! as a [`Diagnostic`] at the line and column of the value it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::*;
use super::*;

/// Parses and validates TOML text, resolving relative paths against `base`.
pub(super) fn parse(text: &str, base: &Path) -> Result<Config, Vec<Diagnostic>> {
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

/// The longest `header_timeout`, `idle_timeout`, `send_timeout` and
/// `body_timeout` accepted.
const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Only a placeholder for a `queue_timeout` written wrong (an error is
/// reported then); an absent one means the server's `connect_timeout`.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(3);

/// Collects diagnostics while validating; turns byte spans into line:col.
pub(super) struct Checker<'a> {
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    /// A checker for `text`, with nothing reported yet.
    pub(super) fn new(text: &'a str) -> Self {
        Checker {
            text,
            diags: Vec::new(),
        }
    }

    /// Nothing has been reported.
    pub(super) fn is_clean(&self) -> bool {
        self.diags.is_empty()
    }

    pub(super) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.diags.push(Diagnostic {
            line,
            col,
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, v: &S<String>, key: &str, default: Duration) -> Duration {
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

    /// A timeout of client connections: above zero and at most
    /// [`MAX_CLIENT_TIMEOUT`] (timers add it to the current instant).
    pub(super) fn client_timeout(
        &mut self,
        v: &S<String>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration(v, key, default);
        match v {
            Some(s) if d > MAX_CLIENT_TIMEOUT => {
                self.err(s.span(), format!("{key} must be at most 24h"));
                default
            }
            _ => d,
        }
    }

    pub(super) fn int(&mut self, v: &S<i64>, key: &str, range: Range<i64>, default: i64) -> i64 {
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

    pub(super) fn addr(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
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

    pub(super) fn status(&mut self, v: &S<StatusFile>, key: &str) -> (u16, u16) {
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

/// Where `[middlewares.NAME]`'s `basic_auth` names its users: the line and
/// column of `users_file` (`file`) or of `users`, else of the middleware;
/// (1, 1) when the text does not parse. For `switchyard check`, which reads
/// the users when the rest is valid.
pub fn basic_auth_users_at(text: &str, middleware: &str, file: bool) -> (usize, usize) {
    let Ok(f) = toml::from_str::<FileConfig>(text) else {
        return (1, 1);
    };
    let Some((_, m)) = f
        .middlewares
        .iter()
        .find(|(name, _)| name.get_ref() == middleware)
    else {
        return (1, 1);
    };
    let at = m
        .get_ref()
        .basic_auth
        .as_ref()
        .and_then(|a| {
            let a = a.get_ref();
            if file {
                a.users_file.as_ref().map(|u| u.span())
            } else {
                a.users.as_ref().map(|u| u.span())
            }
        })
        .unwrap_or(m.span());
    line_col(text, at.start)
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || base.as_os_str().is_empty() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// The whole file, section by section. Diagnostics are sorted by position
/// afterwards; the order of the calls here decides the order of two at the
/// same position.
fn validate(c: &mut Checker<'_>, file: FileConfig, base: &Path) -> Config {
    let server = validate_server(c, file.server.unwrap_or_default());
    let admin = validate_admin(c, file.admin.unwrap_or_default(), base);
    let metrics = file.metrics.and_then(|m| {
        c.addr(&m.listen, "metrics.listen")
            .map(|listen| MetricsConfig { listen })
    });
    let acme = file
        .acme
        .as_ref()
        .map(|a| validate_acme(c, a.get_ref(), base));
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
    let middlewares = super::middleware::validate_middlewares(c, &file.middlewares, base);
    let routes = super::routes::validate_routes(
        c,
        &file.routes,
        &super::routes::RouteContext {
            has_pool: &|name| pools.contains_key(name),
            middlewares: &middlewares,
            acme: acme.is_some(),
            https: server.https.is_some(),
            base,
        },
    );
    let access_log = file
        .access_log
        .as_ref()
        .and_then(|a| validate_access_log(c, a, base));
    let notify = super::notify::validate(c, &file.notify, base);
    let docker = file
        .providers
        .as_ref()
        .and_then(|p| p.docker.as_ref())
        .map(|d| validate_docker(c, d));
    let cluster = file
        .cluster
        .as_ref()
        .map(|cl| validate_cluster(c, cl.get_ref(), base));
    Config {
        server,
        admin,
        metrics,
        access_log,
        acme,
        cluster,
        routes: Arc::new(routes),
        pools: pools
            .into_iter()
            .map(|(k, p)| (k.into(), Arc::new(p)))
            .collect(),
        notify,
        docker,
        middlewares,
    }
}

/// `[providers.docker]`: where the Engine API is and which labels to read.
fn validate_docker(c: &mut Checker<'_>, d: &Spanned<DockerFile>) -> DockerConfig {
    let d = d.get_ref();
    let endpoint = match &d.endpoint {
        None => "unix:///var/run/docker.sock".to_string(),
        Some(e) => {
            let text = e.get_ref().trim();
            let ok = match text.split_once("://") {
                Some(("unix", path)) => path.starts_with('/'),
                Some(("tcp" | "http", hostport)) => {
                    !hostport.is_empty()
                        && hostport
                            .rsplit_once(':')
                            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                }
                _ => false,
            };
            if !ok {
                c.err(
                    e.span(),
                    "providers.docker.endpoint must be unix:///path/docker.sock or tcp://HOST:PORT (a Docker API proxy; TLS is not supported)",
                );
            }
            text.to_string()
        }
    };
    let labels = match d.labels.as_ref().map(|l| (l.span(), l.get_ref().as_str())) {
        None | Some((_, "switchyard")) => LabelDialect::Switchyard,
        Some((_, "traefik")) => LabelDialect::Traefik,
        Some((span, _)) => {
            c.err(
                span,
                "providers.docker.labels must be \"switchyard\" or \"traefik\"",
            );
            LabelDialect::Switchyard
        }
    };
    let host_address = match &d.host_address {
        None => std::net::IpAddr::from([127, 0, 0, 1]),
        Some(a) => a.get_ref().parse().unwrap_or_else(|_| {
            c.err(
                a.span(),
                "providers.docker.host_address must be an IP address",
            );
            std::net::IpAddr::from([127, 0, 0, 1])
        }),
    };
    let network = d.network.as_ref().map(|n| n.get_ref().clone());
    if let Some(n) = &d.network {
        if n.get_ref().trim().is_empty() {
            c.err(n.span(), "providers.docker.network must not be empty");
        }
    }
    DockerConfig {
        endpoint,
        exposed_by_default: d.exposed_by_default.unwrap_or(false),
        network,
        labels,
        host_address,
    }
}

/// `[server]`: listeners, timeouts, limits.
fn validate_server(c: &mut Checker<'_>, sf: ServerFile) -> ServerConfig {
    let http = match &sf.http {
        Some(s) => c.addr(s, "server.http"),
        None if sf.https.is_none() => Some(SocketAddr::from(([0, 0, 0, 0], 80))),
        None => None,
    };
    let https = sf.https.as_ref().and_then(|s| c.addr(s, "server.https"));
    if let (Some(a), Some(b), Some(s)) = (http, https, &sf.https) {
        // Port 0 (the kernel picks one, tests do) is two different ports.
        if a == b && a.port() != 0 {
            c.err(
                s.span(),
                format!("server.https is the same address as server.http ({a}): two listeners cannot share one address"),
            );
        }
    }
    let secs = Duration::from_secs;
    ServerConfig {
        http,
        https,
        header_timeout: c.client_timeout(&sf.header_timeout, "header_timeout", secs(10)),
        idle_timeout: c.client_timeout(&sf.idle_timeout, "idle_timeout", secs(60)),
        connect_timeout: c.duration(&sf.connect_timeout, "connect_timeout", secs(3)),
        request_timeout: c.duration(&sf.request_timeout, "request_timeout", secs(60)),
        send_timeout: c.client_timeout(&sf.send_timeout, "send_timeout", secs(60)),
        body_timeout: c.client_timeout(&sf.body_timeout, "body_timeout", secs(60)),
        shutdown_grace: c.duration(&sf.shutdown_grace, "shutdown_grace", secs(30)),
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
    }
}

/// `[admin]`: socket, state file, dashboard and who may reach it.
fn validate_admin(c: &mut Checker<'_>, af: AdminFile, base: &Path) -> AdminConfig {
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
    AdminConfig {
        socket: resolve_or(base, &af.socket, "/run/switchyard/admin.sock"),
        state: resolve_or(base, &af.state, "/var/lib/switchyard/state.json"),
        dashboard,
        token_file: af.token_file.as_ref().map(|s| resolve(base, s.get_ref())),
        allow_remote,
    }
}

/// A path key resolved against `base`, or `default` when absent.
fn resolve_or(base: &Path, v: &S<String>, default: &str) -> PathBuf {
    resolve(
        base,
        v.as_ref().map(|s| s.get_ref().as_str()).unwrap_or(default),
    )
}

/// `[cluster]`: etcd endpoints, the fleet's prefix, this instance's name.
fn validate_cluster(c: &mut Checker<'_>, f: &ClusterFile, base: &Path) -> ClusterConfig {
    let tls = f.tls.as_ref().map(|t| {
        let t = t.get_ref();
        let path = |v: &S<String>| v.as_ref().map(|s| resolve(base, s.get_ref()));
        if t.cert.is_some() != t.key.is_some() {
            let span = t.cert.as_ref().or(t.key.as_ref()).map(|s| s.span());
            c.err(
                span.unwrap_or(0..0),
                "cluster.tls: give both cert and key (a client certificate), or neither",
            );
        }
        ClusterTls {
            ca: path(&t.ca),
            cert: path(&t.cert),
            key: path(&t.key),
        }
    });
    if f.etcd.get_ref().is_empty() {
        c.err(
            f.etcd.span(),
            "cluster.etcd: give at least one etcd client URL",
        );
    }
    for e in f.etcd.get_ref() {
        let url = e.get_ref();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok
            || url
                .split_once("://")
                .is_none_or(|(_, rest)| rest.is_empty())
        {
            c.err(
                e.span(),
                format!("cluster.etcd: {url:?} is not an http:// or https:// URL"),
            );
        } else if tls.is_some() && url.starts_with("http://") {
            c.err(
                e.span(),
                format!("cluster.etcd: {url:?} is plain http but cluster.tls is set"),
            );
        }
    }
    let prefix = match &f.prefix {
        None => "/switchyard/".to_string(),
        Some(p) if p.get_ref().ends_with('/') && !p.get_ref().contains('\0') => p.get_ref().clone(),
        Some(p) => {
            c.err(
                p.span(),
                "cluster.prefix must end with '/' (e.g. \"/switchyard/prod/\")",
            );
            p.get_ref().clone()
        }
    };
    let name = f.name.as_ref().map(|n| {
        if !valid_name(n.get_ref()) {
            c.err(
                n.span(),
                format!(
                    "bad cluster.name {:?}: use letters, digits, '.', '_', '-'",
                    n.get_ref()
                ),
            );
        }
        n.get_ref().clone()
    });
    let lease_ttl = c.duration(&f.lease_ttl, "cluster.lease_ttl", Duration::from_secs(5));
    if let Some(s) = &f.lease_ttl {
        if !(Duration::from_secs(2)..=Duration::from_secs(60)).contains(&lease_ttl) {
            c.err(s.span(), "cluster.lease_ttl must be between 2s and 60s");
        }
    }
    ClusterConfig {
        etcd: f
            .etcd
            .get_ref()
            .iter()
            .map(|e| e.get_ref().clone())
            .collect(),
        prefix,
        name,
        lease_ttl: lease_ttl
            .max(Duration::from_secs(2))
            .min(Duration::from_secs(60)),
        tls,
    }
}

/// `[acme]`: the account, the directory and the challenge.
fn validate_acme(c: &mut Checker<'_>, a: &AcmeFile, base: &Path) -> AcmeConfig {
    let email = a.email.get_ref().clone();
    if !email.contains('@') {
        c.err(a.email.span(), "acme.email must be an e-mail address");
    }
    let directory = match a.directory.as_ref().map(|d| d.get_ref().as_str()) {
        None | Some("letsencrypt") => "https://acme-v02.api.letsencrypt.org/directory".to_string(),
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
        storage: resolve_or(base, &a.storage, "/var/lib/switchyard/acme"),
        challenge,
        ca_file: a.ca_file.as_ref().map(|s| resolve(base, s.get_ref())),
        renew_before,
    }
}

/// `[access_log]`: `None` when `format = "off"` (or the format is wrong).
fn validate_access_log(
    c: &mut Checker<'_>,
    a: &AccessLogFile,
    base: &Path,
) -> Option<AccessLogConfig> {
    let format = match a.format.as_ref().map(|f| (f.span(), f.get_ref().as_str())) {
        None | Some((_, "common")) => AccessLogFormat::Common,
        Some((_, "json")) => AccessLogFormat::Json,
        Some((_, "off")) => return None,
        Some((span, _)) => {
            c.err(
                span,
                "access_log.format must be \"common\", \"json\" or \"off\"",
            );
            return None;
        }
    };
    let target = match a.path.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("-") | Some("stdout") => AccessLogTarget::Stdout,
        Some("stderr") => AccessLogTarget::Stderr,
        Some(p) => AccessLogTarget::File(resolve(base, p)),
    };
    Some(AccessLogConfig { format, target })
}

/// One `[pools.NAME]`.
pub(super) fn validate_pool(c: &mut Checker<'_>, pool: &Spanned<PoolFile>) -> PoolConfig {
    let p = pool.get_ref();
    let versions = validate_versions(c, pool.span(), &p.versions);
    let health = p.health.as_ref().map(|h| Box::new(validate_health(c, h)));
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
    let sticky = p.sticky.as_ref().and_then(|s| validate_sticky(c, s));
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
        max_connections_per_backend: c.int(
            &p.max_connections_per_backend,
            "max_connections_per_backend",
            0..1_000_001,
            0,
        ) as u32,
        queue_timeout: p
            .queue_timeout
            .as_ref()
            .map(|_| c.client_timeout(&p.queue_timeout, "queue_timeout", QUEUE_TIMEOUT)),
        matches: validate_matches(c, &p.matches, &versions),
        versions,
        rollout: RolloutConfig::shared(rollout),
    }
}

/// A pool's `[[pools.P.match]]` rules: each valid, each naming a version of
/// the pool.
fn validate_matches(
    c: &mut Checker<'_>,
    matches: &[Spanned<crate::rules::VersionMatchSpec>],
    versions: &VersionMap,
) -> Vec<crate::rules::VersionRule> {
    if matches.len() > crate::rules::MAX_VERSION_RULES {
        c.err(
            matches[0].span(),
            format!(
                "a pool has at most {} version rules",
                crate::rules::MAX_VERSION_RULES
            ),
        );
    }
    let mut out = Vec::new();
    for m in matches {
        match crate::rules::VersionRule::compile(m.get_ref()) {
            Ok(rule) if versions.contains_key(&rule.version) => out.push(rule),
            Ok(rule) => c.err(
                m.span(),
                format!(
                    "match sends to version {:?}, which the pool does not have",
                    rule.version
                ),
            ),
            Err(e) => c.err(m.span(), format!("match: {e}")),
        }
    }
    out
}

/// A pool's versions: one to [`MAX_VERSIONS`], each with a good name, a
/// weight and at least one backend address.
fn validate_versions(
    c: &mut Checker<'_>,
    span: Range<usize>,
    versions: &BTreeMap<Spanned<String>, Spanned<VersionFile>>,
) -> VersionMap {
    if versions.is_empty() {
        c.err(
            span.clone(),
            "a pool needs at least one version ([pools.NAME.versions.V])",
        );
    }
    if versions.len() > MAX_VERSIONS {
        c.err(span, format!("a pool has at most {MAX_VERSIONS} versions"));
    }
    let mut out = VersionMap::with_capacity(versions.len());
    for (vname, v) in versions {
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
        let mut backends = Vec::with_capacity(v.backends.len());
        for b in &v.backends {
            match BackendAddr::parse(b.get_ref()) {
                Ok(a) => backends.push(a),
                Err(e) => c.err(b.span(), e),
            }
        }
        out.insert(vname.get_ref().clone(), VersionConfig { weight, backends });
    }
    out
}

/// A pool's active `health` check.
fn validate_health(c: &mut Checker<'_>, h: &Spanned<HealthFile>) -> HealthConfig {
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
        port: h
            .port
            .as_ref()
            .map(|_| c.int(&h.port, "health.port", 1..65536, 80) as u16),
    }
}

/// A pool's `sticky`: a header or a cookie name, not both.
fn validate_sticky(c: &mut Checker<'_>, s: &Spanned<StickyFile>) -> Option<Sticky> {
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
}

fn validate_rollout(c: &mut Checker<'_>, r: &RolloutFile) -> RolloutConfig {
    let d = RolloutConfig::default();
    let list = rollout_steps(c, r, &d);
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
    let (confidence, min_success_rate, max_p99) = rollout_gates(c, r, &d);
    RolloutConfig {
        steps: list.percents,
        step_durations: list.durations,
        approve_before: list.approve_before,
        confidence,
        min_success_rate,
        max_p99,
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

/// `steps` (percents, `"pause"`, `{ percent, duration }`) and `approve_before`.
fn rollout_steps(c: &mut Checker<'_>, r: &RolloutFile, d: &RolloutConfig) -> StepList {
    let mut list = StepList {
        percents: d.steps.clone(),
        durations: Vec::new(),
        approve_before: Vec::new(),
    };
    if let Some(s) = &r.steps {
        let items: Result<Vec<StepItem>, String> = s
            .get_ref()
            .iter()
            .map(|f| match f {
                StepFile::Percent(p) => Ok(StepItem::Percent(*p)),
                StepFile::Word(w) if w.trim().eq_ignore_ascii_case("pause") => Ok(StepItem::Pause),
                StepFile::Word(w) => Err(format!(
                    "rollout step {w:?} is neither a percentage nor \"pause\""
                )),
                StepFile::Timed(t) => match t.duration.as_deref().map(parse_duration) {
                    None => Ok(StepItem::Timed(t.percent, None)),
                    Some(Ok(d)) if !d.is_zero() => Ok(StepItem::Timed(t.percent, Some(d))),
                    Some(Ok(_)) => Err("a rollout step's duration must be above zero".into()),
                    Some(Err(e)) => Err(format!("rollout step duration: {e}")),
                },
            })
            .collect();
        match items.and_then(|i| check_step_items(&i)) {
            Ok(l) => list = l,
            Err(e) => c.err(s.span(), e),
        }
    }
    if let Some(a) = &r.approve_before {
        match u32::try_from(*a.get_ref()) {
            Ok(p) if (1..=100).contains(&p) => {
                if !list.approve_before.contains(&p) {
                    list.approve_before.push(p);
                }
            }
            _ => c.err(
                a.span(),
                "rollout.approve_before must be a step percentage in 1..=100",
            ),
        }
    }
    list
}

/// `confidence`, `min_success_rate` and `max_p99`.
fn rollout_gates(
    c: &mut Checker<'_>,
    r: &RolloutFile,
    d: &RolloutConfig,
) -> (f64, Option<f64>, Option<Duration>) {
    let confidence = match &r.confidence {
        None => d.confidence,
        Some(x) if CONFIDENCE.contains(x.get_ref()) => *x.get_ref(),
        Some(x) => {
            c.err(
                x.span(),
                "rollout.confidence must be at least 0.5 and below 1 (e.g. 0.99)",
            );
            d.confidence
        }
    };
    let min_success_rate = match &r.min_success_rate {
        None => None,
        Some(x) if (0.0..=1.0).contains(x.get_ref()) => Some(*x.get_ref()),
        Some(x) => {
            c.err(
                x.span(),
                "rollout.min_success_rate must be between 0 and 1 (e.g. 0.99)",
            );
            None
        }
    };
    let max_p99 = r
        .max_p99
        .as_ref()
        .map(|_| c.duration(&r.max_p99, "rollout.max_p99", Duration::from_secs(1)));
    (confidence, min_success_rate, max_p99)
}

/// Accepted `confidence` values.
pub const CONFIDENCE: std::ops::Range<f64> = 0.5..1.0;

/// One entry of a rollout's `steps`, as written in the file or the API.
#[derive(Debug, Clone, PartialEq)]
pub enum StepItem {
    Percent(i64),
    /// An approval before the next step (the appended 100 when last).
    Pause,
    Timed(i64, Option<Duration>),
}

/// Checked steps: percents, their durations, and the approvals.
#[derive(Debug, Clone, PartialEq)]
pub struct StepList {
    pub percents: Vec<u32>,
    /// One per percent (`None`: the plan's `step_duration`).
    pub durations: Vec<Option<Duration>>,
    /// Percents whose step waits for an approval.
    pub approve_before: Vec<u32>,
}

/// Steps with pauses and per-step durations: the percents must be strictly
/// increasing in 1..=100; a pause needs a step before it, and stands for the
/// appended 100 when it is last.
pub fn check_step_items(items: &[StepItem]) -> Result<StepList, String> {
    let mut percents = Vec::new();
    let mut durations = Vec::new();
    let mut approve_before = Vec::new();
    let mut pause = false;
    for item in items {
        let (p, d) = match item {
            StepItem::Pause if percents.is_empty() => {
                return Err(
                    "\"pause\" needs a step before it (start the rollout later instead)".into(),
                )
            }
            StepItem::Pause if pause => return Err("two \"pause\" in a row".into()),
            StepItem::Pause => {
                pause = true;
                continue;
            }
            StepItem::Percent(p) => (*p, None),
            StepItem::Timed(p, d) => (*p, *d),
        };
        percents.push(p);
        durations.push(d);
        if std::mem::take(&mut pause) {
            approve_before.push(u32::try_from(p).unwrap_or(0));
        }
    }
    let percents = check_steps(&percents)?;
    if pause {
        if percents.last() == Some(&100) {
            return Err("\"pause\" after the last step".into());
        }
        approve_before.push(100);
    }
    Ok(StepList {
        percents,
        durations,
        approve_before,
    })
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
