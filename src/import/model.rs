//! What the importer understood of a Traefik setup, merged over every input.
//!
//! Each reader (compose labels, dynamic file, static file, Kubernetes
//! manifest) fills a [`Traefik`]; [`Traefik::merge`] joins them the way
//! Traefik joins providers: the same service named by several containers
//! gathers their servers, the same router must be defined identically.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ImportError;

/// The importer's view of a Traefik setup.
#[derive(Debug, Default)]
pub(super) struct Traefik {
    pub routers: BTreeMap<String, Router>,
    pub services: BTreeMap<String, Service>,
    pub middlewares: BTreeMap<String, Middleware>,
    pub resolvers: BTreeMap<String, Resolver>,
    pub entrypoints: BTreeMap<String, EntryPoint>,
    /// Where Prometheus metrics were switched on, if they were.
    pub metrics: Option<String>,
    /// `providers.docker.exposedByDefault` of the static configuration.
    pub exposed_by_default: Option<bool>,
    /// Containers without `traefik.enable=true`, dropped when
    /// `exposedByDefault` is false.
    pub implicit: Vec<Implicit>,
    /// `accessLog`: (`json` or `common`, the file path if any, where).
    pub access_log: Option<(String, Option<String>, String)>,
    /// `tls.certificates` of dynamic files: (certFile, keyFile, where).
    pub file_certs: Vec<(String, String, String)>,
    /// Everything not carried over, one line each (becomes a comment).
    pub notes: Vec<String>,
    /// Keys and labels the importer does not know (also reported on stderr).
    pub unknown: Vec<String>,
}

/// What a container without `traefik.enable=true` defined.
#[derive(Debug)]
pub(super) struct Implicit {
    /// Where: `compose.yml: services.app`.
    pub at: String,
    pub routers: Vec<String>,
    pub services: Vec<String>,
    /// Keys (`name@docker`).
    pub middlewares: Vec<String>,
}

/// Where something was defined, for messages: `compose.yml: traefik.http.routers.app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    pub file: PathBuf,
    pub key: String,
}

impl Origin {
    pub fn err(&self, sub: &str, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            path: self.file.clone(),
            key: if sub.is_empty() {
                self.key.clone()
            } else {
                format!("{}.{sub}", self.key)
            },
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.key)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Router {
    pub origin: Origin,
    pub rule: Option<String>,
    /// The service, `@provider` suffix removed.
    pub service: Option<String>,
    pub entrypoints: Vec<String>,
    pub tls: bool,
    pub certresolver: Option<String>,
    /// As written: `auth`, `auth@file` (resolved against `provider`).
    pub middlewares: Vec<String>,
    /// The explicit `priority`, when it is set (Traefik's 0 means unset).
    pub priority: Option<i64>,
    /// Where Traefik would have read it: `file`, `docker`, `kubernetescrd`.
    pub provider: &'static str,
}

impl Router {
    fn same_as(&self, other: &Router) -> bool {
        self.rule == other.rule
            && self.service == other.service
            && self.entrypoints == other.entrypoints
            && self.tls == other.tls
            && self.certresolver == other.certresolver
            && self.middlewares == other.middlewares
            && self.priority == other.priority
    }
}

#[derive(Debug, Clone)]
pub(super) struct Service {
    pub origin: Origin,
    pub kind: ServiceKind,
}

#[derive(Debug, Clone)]
pub(super) enum ServiceKind {
    LoadBalancer(LoadBalancer),
    Weighted(Weighted),
    /// mirroring, failover, ...: named for the note.
    Other(String),
}

#[derive(Debug, Clone, Default)]
pub(super) struct LoadBalancer {
    pub servers: Vec<Server>,
    pub health: Option<Health>,
    /// A sticky cookie (its name, `None` for Traefik's generated name).
    pub sticky: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Server {
    pub host: String,
    pub port: u16,
    pub weight: u64,
    /// The compose service (container) it came from: servers of one Traefik
    /// service from several containers become one version per container.
    pub group: Option<String>,
}

impl Server {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Weighted {
    pub children: Vec<WeightedChild>,
    pub sticky: Option<Option<String>>,
}

#[derive(Debug, Clone)]
pub(super) struct WeightedChild {
    pub name: String,
    pub weight: u64,
    /// The key that named it, for messages.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Health {
    pub path: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub hostname: Option<String>,
    pub status: Option<u16>,
    /// `healthCheck.port`: probed instead of the server's port.
    pub port: Option<u16>,
}

/// A Traefik middleware as switchyard can (or cannot) carry it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Middleware {
    pub origin: Origin,
    /// Traefik's kind as written (`basicAuth`, `headers`, ...).
    pub kind: String,
    pub spec: MiddlewareSpec,
    /// Options left out or changed on the way, one line each: noted when a
    /// carried route uses the middleware.
    pub dropped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum MiddlewareSpec {
    /// A redirectScheme to https: the route's `redirect_https`.
    RedirectHttps,
    /// `chain`: these middlewares in order (references as written).
    Chain(Vec<String>),
    /// A switchyard middleware: its kind key and value
    /// (`basic_auth = { users = [...] }`).
    Carried {
        key: &'static str,
        value: toml::Value,
    },
    /// Cannot be carried over. A `guard` (authentication, IP allow lists,
    /// plugins, unknown kinds) keeps its routers out of the import: they
    /// would be served open otherwise.
    NotCarried { reason: String, guard: bool },
}

#[derive(Debug, Clone)]
pub(super) struct Resolver {
    pub origin: Origin,
    pub email: Option<String>,
    pub storage: Option<String>,
    pub ca_server: Option<String>,
    pub challenge: Option<AcmeChallenge>,
    pub ca_certificates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AcmeChallenge {
    Http,
    Tls,
    /// DNS-01, with its provider.
    Dns(String),
}

#[derive(Debug, Clone, Default)]
pub(super) struct EntryPoint {
    pub address: Option<String>,
    /// `http.redirections.entryPoint.to`.
    pub redirect_to: Option<String>,
    /// `http.tls.certResolver`: TLS for every router on this entrypoint.
    pub tls_resolver: Option<String>,
    /// `http.tls` set at all.
    pub tls: bool,
}

/// The key of a middleware in [`Traefik::middlewares`]: `name@provider`.
/// A reference without a provider is resolved in `provider`, the one of
/// the router (or chain) that makes it, as Traefik does.
pub(super) fn middleware_key(reference: &str, provider: &str) -> String {
    match reference.split_once('@') {
        Some((name, p)) => format!("{}@{}", name.trim(), p.trim().to_ascii_lowercase()),
        None => format!("{}@{provider}", reference.trim()),
    }
}

/// Removes a `@provider` suffix: `app@docker` -> `app`.
pub(super) fn base_name(name: &str) -> &str {
    name.split_once('@').map(|(n, _)| n).unwrap_or(name)
}

/// The provider of a reference, if it names one (`api@internal` -> `internal`).
pub(super) fn provider(name: &str) -> Option<&str> {
    name.split_once('@').map(|(_, p)| p)
}

// === impl Traefik ===

impl Traefik {
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into().replace(['\n', '\r'], " ");
        if !self.notes.contains(&line) {
            self.notes.push(line);
        }
    }

    /// A key or label the importer does not know: a note and a warning.
    pub fn unknown(&mut self, file: &std::path::Path, key: &str, hint: &str) {
        let line = format!(
            "{}: {key}: unknown{}{hint}; not carried over",
            file.display(),
            if hint.is_empty() { "" } else { ": " }
        );
        self.unknown.push(line.clone());
        self.note(line);
    }

    /// Joins another input's findings into this one.
    pub fn merge(&mut self, other: Traefik) -> Result<(), ImportError> {
        for (name, r) in other.routers {
            match self.routers.get(&name) {
                None => {
                    self.routers.insert(name, r);
                }
                Some(mine) if mine.same_as(&r) => {}
                Some(mine) => {
                    return Err(r.origin.err(
                        "",
                        format!(
                            "router {name:?} is also defined, differently, at {}; Traefik refuses such a router too",
                            mine.origin
                        ),
                    ))
                }
            }
        }
        for (name, s) in other.services {
            let Some(mine) = self.services.get_mut(&name) else {
                self.services.insert(name, s);
                continue;
            };
            match (&mut mine.kind, s.kind) {
                (ServiceKind::LoadBalancer(a), ServiceKind::LoadBalancer(b)) => {
                    for server in b.servers {
                        if !a.servers.contains(&server) {
                            a.servers.push(server);
                        }
                    }
                    if a.health.is_none() {
                        a.health = b.health;
                    } else if b.health.is_some() && a.health != b.health {
                        let line = format!(
                            "{}: service {name:?} has another health check at {}; the first one is used",
                            s.origin.file.display(),
                            s.origin.key
                        );
                        self.notes.push(line);
                    }
                    if a.sticky.is_none() {
                        a.sticky = b.sticky;
                    }
                }
                _ => {
                    return Err(s.origin.err(
                        "",
                        format!(
                            "service {name:?} is also defined at {}; only load balancers may be defined twice (their servers are joined)",
                            mine.origin
                        ),
                    ))
                }
            }
        }
        for (name, m) in other.middlewares {
            match self.middlewares.get(&name) {
                None => {
                    self.middlewares.insert(name, m);
                }
                Some(mine) if mine.spec == m.spec => {}
                Some(mine) => {
                    let line = format!(
                        "{}: middleware {name:?} is also defined, differently, at {}; the first one is used",
                        m.origin, mine.origin
                    );
                    self.note(line);
                }
            }
        }
        for (name, r) in other.resolvers {
            if let Some(mine) = self.resolvers.get(&name) {
                let line = format!(
                    "{}: certificate resolver {name:?} is also defined at {}; the first one is used",
                    r.origin.file.display(),
                    mine.origin
                );
                self.note(line);
            } else {
                self.resolvers.insert(name, r);
            }
        }
        for (name, e) in other.entrypoints {
            let mine = self.entrypoints.entry(name).or_default();
            mine.address = mine.address.take().or(e.address);
            mine.redirect_to = mine.redirect_to.take().or(e.redirect_to);
            mine.tls_resolver = mine.tls_resolver.take().or(e.tls_resolver);
            mine.tls |= e.tls;
        }
        self.metrics = self.metrics.take().or(other.metrics);
        self.exposed_by_default = self.exposed_by_default.or(other.exposed_by_default);
        self.implicit.extend(other.implicit);
        self.access_log = self.access_log.take().or(other.access_log);
        self.file_certs.extend(other.file_certs);
        for n in other.notes {
            self.note(n);
        }
        self.unknown.extend(other.unknown);
        Ok(())
    }
}
