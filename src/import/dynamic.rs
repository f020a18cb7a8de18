//! Readers for Traefik's own configuration shapes:
//!
//! - the dynamic configuration (`http.routers`, `http.services`,
//!   `http.middlewares`), from a file or, with a [`Docker`] context, from a
//!   container's labels;
//! - the static configuration (`entryPoints`, `certificatesResolvers`,
//!   `metrics`), from a file or the Traefik container's command line;
//! - Kubernetes CRDs (`TraefikService`, `IngressRoute`, `Middleware`).
//!
//! Each fills a [`Traefik`]; keys it does not carry over become notes.

use std::collections::BTreeMap;

use super::middleware::read_middleware;
use super::model::{
    base_name, AcmeChallenge, EntryPoint, Health, LoadBalancer, Origin, Resolver, Router, Server,
    Service, ServiceKind, Traefik, Weighted, WeightedChild,
};
use super::tree::Node;
use super::ImportError;

/// The container a set of labels belongs to.
pub(super) struct Docker<'a> {
    /// The compose service name: the backend's host name.
    pub container: &'a str,
    /// The container's single exposed port, when it has one.
    pub port: Option<u16>,
}

fn origin(n: &Node<'_>) -> Origin {
    Origin {
        file: n.file.to_owned(),
        key: n.path.clone(),
    }
}

/// Notes each of `keys` present under `n` as not carried over, with `why`.
fn note_dropped(t: &mut Traefik, n: &Node<'_>, keys: &[&str], why: &str) {
    for k in keys {
        if let Some(x) = n.child(k) {
            t.note(format!(
                "{}: {}: not carried over{why}",
                x.file.display(),
                x.path
            ));
        }
    }
}

fn note_keys(t: &mut Traefik, n: &Node<'_>, known: &[&str]) {
    for k in n.unknown_keys(known) {
        t.unknown(n.file, &k, "");
    }
}

// ---------------------------------------------------------------------------
// Dynamic configuration.

/// Reads `http`, `tcp`, `udp` and `tls` under `root`.
pub(super) fn read_dynamic(
    root: &Node<'_>,
    t: &mut Traefik,
    docker: Option<&Docker<'_>>,
) -> Result<(), ImportError> {
    let provider = if docker.is_some() { "docker" } else { "file" };
    if let Some(http) = root.child("http") {
        if let Some(routers) = http.child("routers") {
            for (name, node) in routers.entries()? {
                let r = read_router(&node, t, provider)?;
                t.routers.insert(name, r);
            }
        }
        if let Some(services) = http.child("services") {
            for (name, node) in services.entries()? {
                let s = read_service(&name, &node, t, docker)?;
                t.services.insert(name, s);
            }
        }
        if let Some(mws) = http.child("middlewares") {
            for (name, node) in mws.entries()? {
                let m = read_middleware(&node, t)?;
                t.middlewares.insert(format!("{name}@{provider}"), m);
            }
        }
        if let Some(st) = http.child("serversTransports") {
            t.note(format!(
                "{}: {}: servers transports (backend TLS, timeouts) are not carried over",
                st.file.display(),
                st.path
            ));
        }
        note_keys(
            t,
            &http,
            &["routers", "services", "middlewares", "serversTransports"],
        );
    }
    for proto in ["tcp", "udp"] {
        if let Some(n) = root.child(proto) {
            t.note(format!(
                "{}: {}: {} routers and services are not carried over: switchyard proxies HTTP",
                n.file.display(),
                n.path,
                proto.to_uppercase()
            ));
        }
    }
    if let Some(n) = root.child("tls") {
        if let Some(list) = n.child("certificates") {
            for c in list.items()? {
                match (c.text_at("certFile")?, c.text_at("keyFile")?) {
                    (Some(cert), Some(key)) => {
                        t.file_certs
                            .push((cert, key, format!("{}: {}", c.file.display(), c.path)))
                    }
                    _ => return Err(c.err("a certificate needs certFile and keyFile")),
                }
            }
        }
        for k in n.unknown_keys(&["certificates"]) {
            t.note(format!(
                "{}: {k}: TLS options and stores are not carried over (switchyard's TLS: rustls defaults, TLS 1.2 and 1.3)",
                n.file.display()
            ));
        }
    }
    Ok(())
}

fn read_router(
    n: &Node<'_>,
    t: &mut Traefik,
    provider: &'static str,
) -> Result<Router, ImportError> {
    let mut r = Router {
        origin: origin(n),
        rule: n.text_at("rule")?,
        service: n.text_at("service")?,
        entrypoints: n
            .child("entryPoints")
            .map(|e| e.words())
            .transpose()?
            .unwrap_or_default(),
        tls: false,
        certresolver: None,
        middlewares: n
            .child("middlewares")
            .map(|m| m.words())
            .transpose()?
            .unwrap_or_default(),
        priority: read_priority(n)?,
        provider,
    };
    if let Some(tls) = n.child("tls") {
        r.tls = tls.enabled()?;
        if tls.v.is_object() {
            r.certresolver = tls.text_at("certResolver")?;
            for k in ["domains", "options"] {
                if let Some(d) = tls.child(k) {
                    t.note(format!(
                        "{}: {}: not carried over (switchyard orders a certificate for each route host)",
                        d.file.display(),
                        d.path
                    ));
                }
            }
            note_keys(t, &tls, &["certResolver", "domains", "options"]);
        }
    }
    if let Some(o) = n.child("observability") {
        t.note(format!(
            "{}: {}: not carried over",
            o.file.display(),
            o.path
        ));
    }
    note_keys(
        t,
        n,
        &[
            "rule",
            "service",
            "entryPoints",
            "tls",
            "middlewares",
            "priority",
            "ruleSyntax",
            "observability",
        ],
    );
    Ok(r)
}

/// A router's `priority`: `None` when absent or 0 (Traefik's "unset").
fn read_priority(n: &Node<'_>) -> Result<Option<i64>, ImportError> {
    Ok(n.child("priority")
        .map(|p| p.int())
        .transpose()?
        .filter(|p| *p != 0))
}

fn read_service(
    name: &str,
    n: &Node<'_>,
    t: &mut Traefik,
    docker: Option<&Docker<'_>>,
) -> Result<Service, ImportError> {
    let kinds = ["loadBalancer", "weighted", "mirroring", "failover"];
    let present: Vec<&str> = kinds.iter().copied().filter(|k| n.has(k)).collect();
    let kind = match present.as_slice() {
        ["loadBalancer"] => {
            let lb = n.child("loadBalancer");
            let empty = serde_json::Value::Object(serde_json::Map::new());
            let lb = lb.unwrap_or_else(|| Node {
                file: n.file,
                path: format!("{}.loadBalancer", n.path),
                v: &empty,
            });
            ServiceKind::LoadBalancer(read_load_balancer(name, &lb, t, docker)?)
        }
        ["weighted"] => {
            let w = n
                .child("weighted")
                .ok_or_else(|| n.err("weighted: lists no services"))?;
            ServiceKind::Weighted(read_weighted(&w, t)?)
        }
        [other] => ServiceKind::Other(other.to_string()),
        [] => {
            return Err(
                n.err("a service needs one of loadBalancer, weighted, mirroring or failover")
            )
        }
        many => {
            return Err(n.err(format!(
                "a service has exactly one kind, this one has {}",
                many.join(" and ")
            )))
        }
    };
    note_keys(t, n, &kinds);
    Ok(Service {
        origin: origin(n),
        kind,
    })
}

fn read_load_balancer(
    name: &str,
    n: &Node<'_>,
    t: &mut Traefik,
    docker: Option<&Docker<'_>>,
) -> Result<LoadBalancer, ImportError> {
    let mut lb = LoadBalancer::default();
    let mut known = vec![
        "servers",
        "healthCheck",
        "sticky",
        "passHostHeader",
        "serversTransport",
        "responseForwarding",
        "strategy",
        "passiveHealthCheck",
    ];
    if let Some(servers) = n.child("servers") {
        for s in servers.items()? {
            lb.servers.push(read_server(&s, t)?);
        }
    }
    if let Some(d) = docker {
        known.extend(["server", "weight"]);
        read_docker_server(name, n, d, t, &mut lb)?;
    }
    if lb.servers.is_empty() {
        return Err(n.err("a load balancer needs at least one server"));
    }
    read_lb_options(n, t, &mut lb)?;
    note_keys(t, n, &known);
    Ok(lb)
}

/// One of `servers`: `{ url, weight }`.
fn read_server(s: &Node<'_>, t: &mut Traefik) -> Result<Server, ImportError> {
    let url = s
        .child("url")
        .ok_or_else(|| s.err("a server needs a url"))?;
    let weight = s.uint_at("weight")?.unwrap_or(1);
    let server = server_from_url(&url, weight, t)?;
    if let Some(p) = s.child("preservePath") {
        if p.boolean()? {
            t.note(format!(
                "{}: {}: not carried over",
                p.file.display(),
                p.path
            ));
        }
    }
    note_keys(t, s, &["url", "weight", "preservePath"]);
    Ok(server)
}

/// Labels describe one server: this container, on the port the labels give
/// (or its only exposed port), unless `server.url` or `servers[N].url` is used.
fn read_docker_server(
    name: &str,
    n: &Node<'_>,
    d: &Docker<'_>,
    t: &mut Traefik,
    lb: &mut LoadBalancer,
) -> Result<(), ImportError> {
    let server = n.child("server");
    let scheme = server
        .as_ref()
        .map(|s| s.text_at("scheme"))
        .transpose()?
        .flatten();
    let weight_node = server
        .as_ref()
        .and_then(|s| s.child("weight"))
        .or_else(|| n.child("weight"));
    let weight = weight_node.map(|w| w.uint()).transpose()?.unwrap_or(1);
    if let Some(url) = server.as_ref().and_then(|s| s.child("url")) {
        lb.servers.push(server_from_url(&url, weight, t)?);
    } else if lb.servers.is_empty() {
        let port = match server.as_ref().and_then(|s| s.child("port")) {
            Some(p) => port_of(&p)?,
            None => d.port.ok_or_else(|| {
                n.err(format!(
                    "no server.port label, and the container {:?} does not expose exactly one port: add traefik.http.services.{name}.loadbalancer.server.port",
                    d.container
                ))
            })?,
        };
        lb.servers.push(Server {
            host: d.container.to_string(),
            port,
            weight,
            group: Some(d.container.to_string()),
        });
    }
    if let (Some(s), Some(scheme)) = (&server, scheme) {
        if !scheme.eq_ignore_ascii_case("http") {
            t.note(format!(
                "{}: {}.scheme={scheme}: switchyard speaks plain HTTP to backends",
                s.file.display(),
                s.path
            ));
        }
    }
    if let Some(s) = &server {
        note_keys(t, s, &["port", "scheme", "url", "weight"]);
    }
    Ok(())
}

/// A load balancer's health check and sticky cookie, and notes for the
/// options switchyard has no counterpart for.
fn read_lb_options(
    n: &Node<'_>,
    t: &mut Traefik,
    lb: &mut LoadBalancer,
) -> Result<(), ImportError> {
    if let Some(h) = n.child("healthCheck") {
        lb.health = read_health(&h, t)?;
    }
    if let Some(s) = n.child("sticky") {
        lb.sticky = read_sticky(&s, t)?;
    }
    if let Some(p) = n.child("passHostHeader") {
        if !p.boolean()? {
            t.note(format!(
                "{}: {}=false: switchyard always passes the client's Host",
                p.file.display(),
                p.path
            ));
        }
    }
    if let Some(s) = n.child("strategy") {
        let s_text = s.text()?;
        if !s_text.eq_ignore_ascii_case("wrr") {
            t.note(format!(
                "{}: {}={s_text}: switchyard balances by weighted round robin",
                s.file.display(),
                s.path
            ));
        }
    }
    note_dropped(t, n, &["serversTransport"], "");
    note_dropped(
        t,
        n,
        &["passiveHealthCheck"],
        " (switchyard's own passive ejection applies: see passive in the README)",
    );
    // responseForwarding.flushInterval needs no counterpart: switchyard
    // streams response bodies as they arrive.
    Ok(())
}

fn port_of(p: &Node<'_>) -> Result<u16, ImportError> {
    let raw = p.text()?;
    match raw.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(p.err(format!("{raw:?} is not a port (1-65535)"))),
    }
}

/// `http://host:port/path` -> a server.
fn server_from_url(url: &Node<'_>, weight: u64, t: &mut Traefik) -> Result<Server, ImportError> {
    let raw = url.text()?;
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| url.err(format!("{raw:?} is not a URL (http://host:port)")))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "h2c" => 80,
        "https" => 443,
        _ => return Err(url.err(format!("{raw:?}: unsupported scheme {scheme:?}"))),
    };
    if !scheme.eq_ignore_ascii_case("http") {
        t.note(format!(
            "{}: {}={raw}: switchyard speaks plain HTTP/1.1 to backends",
            url.file.display(),
            url.path
        ));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "/" {
        t.note(format!(
            "{}: {}={raw}: the path {path:?} is not carried over (switchyard forwards the request path as is)",
            url.file.display(),
            url.path
        ));
    }
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| url.err(format!("{raw:?}: unclosed [ in the address")))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(url.err(format!("{raw:?}: bad port {p:?}"))),
        },
    };
    if host.is_empty() {
        return Err(url.err(format!("{raw:?} names no host")));
    }
    Ok(Server {
        group: None,
        host,
        port,
        weight,
    })
}

fn read_health(n: &Node<'_>, t: &mut Traefik) -> Result<Option<Health>, ImportError> {
    let Some(path) = n.text_at("path")? else {
        t.note(format!(
            "{}: {}: a health check without a path is not carried over",
            n.file.display(),
            n.path
        ));
        return Ok(None);
    };
    let status = match n.child("status") {
        None => None,
        Some(s) => match s.uint()? {
            code @ 100..=599 => Some(code as u16),
            other => return Err(s.err(format!("{other} is not an HTTP status"))),
        },
    };
    note_dropped(
        t,
        n,
        &["scheme", "mode", "headers", "method", "unhealthyInterval"],
        " (switchyard probes each backend's own address with GET over HTTP)",
    );
    note_keys(
        t,
        n,
        &[
            "path",
            "interval",
            "timeout",
            "hostname",
            "status",
            "port",
            "scheme",
            "mode",
            "headers",
            "method",
            "unhealthyInterval",
            "followRedirects",
        ],
    );
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Ok(Some(Health {
        path,
        interval: duration_at(n, "interval")?,
        timeout: duration_at(n, "timeout")?,
        hostname: n.text_at("hostname")?,
        status,
        port: match n.child("port") {
            None => None,
            Some(p) => match p.uint()? {
                port @ 1..=65535 => Some(port as u16),
                other => return Err(p.err(format!("{other} is not a port"))),
            },
        },
    }))
}

/// A Traefik duration (`10s`, `1m30s`, or a bare number of seconds) as
/// switchyard writes it; an error naming the key when it is not one.
pub(super) fn duration_at(n: &Node<'_>, key: &str) -> Result<Option<String>, ImportError> {
    let Some(d) = n.child(key) else {
        return Ok(None);
    };
    let raw = d.text()?;
    let text = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        format!("{raw}s")
    } else {
        raw.trim().to_string()
    };
    match crate::config::parse_duration(&text) {
        Ok(v) if !v.is_zero() => Ok(Some(text)),
        Ok(_) => Err(d.err("must be above zero")),
        Err(e) => Err(d.err(e)),
    }
}

/// `sticky: {cookie: {name: x}}`, `sticky.cookie=true`, `sticky=true`.
fn read_sticky(n: &Node<'_>, t: &mut Traefik) -> Result<Option<Option<String>>, ImportError> {
    if !n.enabled()? {
        return Ok(None);
    }
    let Some(cookie) = n.child("cookie") else {
        note_keys(t, n, &["cookie"]);
        return Ok(Some(None));
    };
    if !cookie.enabled()? {
        return Ok(None);
    }
    let name = if cookie.v.is_object() {
        note_keys(
            t,
            &cookie,
            &[
                "name", "secure", "httpOnly", "sameSite", "maxAge", "path", "domain",
            ],
        );
        cookie.text_at("name")?
    } else {
        None
    };
    Ok(Some(name))
}

fn read_weighted(n: &Node<'_>, t: &mut Traefik) -> Result<Weighted, ImportError> {
    let services = n
        .child("services")
        .ok_or_else(|| n.err("a weighted service needs a services list"))?;
    let mut children = Vec::new();
    for s in services.items()? {
        let name = s
            .text_at("name")?
            .ok_or_else(|| s.err("a weighted entry needs a name"))?;
        let weight = s.uint_at("weight")?.unwrap_or(1);
        note_keys(t, &s, &["name", "weight"]);
        children.push(WeightedChild {
            name: base_name(&name).to_string(),
            weight,
            key: format!("{}.name", s.path),
        });
    }
    if children.is_empty() {
        return Err(services.err("a weighted service needs at least one service"));
    }
    let sticky = match n.child("sticky") {
        Some(s) => read_sticky(&s, t)?,
        None => None,
    };
    if let Some(h) = n.child("healthCheck") {
        t.note(format!(
            "{}: {}: not needed: each version's backends are probed by the pool's health check",
            h.file.display(),
            h.path
        ));
    }
    note_keys(t, n, &["services", "sticky", "healthCheck"]);
    Ok(Weighted { children, sticky })
}

// ---------------------------------------------------------------------------
// Static configuration.

/// Reads `entryPoints`, `certificatesResolvers`, `metrics` and notes the rest.
pub(super) fn read_static(root: &Node<'_>, t: &mut Traefik) -> Result<(), ImportError> {
    if let Some(eps) = root.child("entryPoints") {
        for (name, n) in eps.entries()? {
            let ep = read_entrypoint(&n, t)?;
            t.entrypoints.insert(name, ep);
        }
    }
    if let Some(rs) = root.child("certificatesResolvers") {
        for (name, n) in rs.entries()? {
            match n.child("acme") {
                Some(acme) => {
                    let r = read_resolver(&acme, t)?;
                    t.resolvers.insert(name, r);
                }
                None => t.note(format!(
                    "{}: {}: only ACME resolvers are carried over",
                    n.file.display(),
                    n.path
                )),
            }
        }
    }
    if let Some(m) = root.child("metrics") {
        if m.child("prometheus").is_some() || m.has("prometheus") {
            t.metrics = Some(format!("{}: {}.prometheus", m.file.display(), m.path));
        }
        for k in m.unknown_keys(&["prometheus"]) {
            t.note(format!(
                "{}: {k}: not carried over: switchyard serves Prometheus metrics only",
                m.file.display()
            ));
        }
    }
    if let Some(a) = root.child("api") {
        t.note(format!(
            "{}: {}: Traefik's API and dashboard are not carried over: use switchyard ctl (admin socket) and /metrics",
            a.file.display(),
            a.path
        ));
    }
    if let Some(a) = root.child("accessLog") {
        let format = a.text_at("format")?.unwrap_or_else(|| "common".into());
        let format = if format.eq_ignore_ascii_case("json") {
            "json"
        } else {
            "common"
        };
        let where_ = format!("{}: {}", a.file.display(), a.path);
        t.access_log = Some((format.to_string(), a.text_at("filePath")?, where_));
        note_keys(
            t,
            &a,
            &["format", "filePath", "bufferingSize", "filters", "fields"],
        );
        for k in ["filters", "fields", "bufferingSize"] {
            if let Some(x) = a.child(k) {
                t.note(format!(
                    "{}: {}: not carried over (switchyard logs every request, with its fields)",
                    x.file.display(),
                    x.path
                ));
            }
        }
    }
    if let Some(p) = root.child("providers") {
        read_providers(&p, t)?;
    }
    for k in [
        "tracing",
        "ping",
        "serversTransport",
        "tcpServersTransport",
        "experimental",
        "hub",
        "spiffe",
        "hostResolver",
        "ocsp",
        "core",
    ] {
        if let Some(x) = root.child(k) {
            t.note(format!(
                "{}: {}: not carried over",
                x.file.display(),
                x.path
            ));
        }
    }
    // log, global and pilot describe Traefik itself: nothing to carry.
    Ok(())
}

/// `providers`: Docker's `exposedByDefault` is followed, its `constraints`
/// and every provider whose configuration is not in a file are named.
fn read_providers(p: &Node<'_>, t: &mut Traefik) -> Result<(), ImportError> {
    for (name, n) in p.entries()? {
        match name.as_str() {
            "docker" | "swarm" => {
                if let Some(e) = n.child("exposedByDefault") {
                    t.exposed_by_default = Some(e.boolean()?);
                }
                if let Some(c) = n.child("constraints") {
                    t.note(format!(
                        "{}: {}: constraints are not carried over: every container with Traefik labels is imported; leave out the ones the constraint excluded",
                        c.file.display(),
                        c.path
                    ));
                }
            }
            "file" | "kubernetesCRD" | "providersThrottleDuration" => {}
            _ => t.note(format!(
                "{}: {}: switchyard cannot read the {name} provider; its routers and services are not imported (give them as files)",
                n.file.display(),
                n.path
            )),
        }
    }
    Ok(())
}

/// The static keys that mark a file (or command line) as static configuration.
pub(super) const STATIC_KEYS: &[&str] = &[
    "entryPoints",
    "certificatesResolvers",
    "providers",
    "api",
    "log",
    "accessLog",
    "metrics",
    "global",
    "serversTransport",
    "tcpServersTransport",
    "ping",
    "tracing",
    "experimental",
    "hub",
    "pilot",
    "spiffe",
    "hostResolver",
    "ocsp",
    "core",
];

fn read_entrypoint(n: &Node<'_>, t: &mut Traefik) -> Result<EntryPoint, ImportError> {
    let mut ep = EntryPoint {
        address: n.text_at("address")?,
        ..EntryPoint::default()
    };
    if let Some(http) = n.child("http") {
        if let Some(to) = http
            .child("redirections")
            .and_then(|r| r.child("entryPoint"))
        {
            ep.redirect_to = to.text_at("to")?;
        }
        if let Some(tls) = http.child("tls") {
            ep.tls = tls.enabled()?;
            if tls.v.is_object() {
                ep.tls_resolver = tls.text_at("certResolver")?;
            }
        }
        if let Some(m) = http.child("middlewares") {
            t.note(format!(
                "{}: {}: entrypoint middlewares are not carried over",
                m.file.display(),
                m.path
            ));
        }
    }
    note_dropped(t, n, &["http3", "proxyProtocol", "forwardedHeaders"], "");
    Ok(ep)
}

fn read_resolver(n: &Node<'_>, t: &mut Traefik) -> Result<Resolver, ImportError> {
    let mut challenge = None;
    if n.child("tlsChallenge").is_some() || n.has("tlsChallenge") {
        challenge = Some(AcmeChallenge::Tls);
    }
    if let Some(h) = n.child("httpChallenge") {
        if h.enabled()? {
            if challenge.is_some() {
                t.note(format!(
                    "{}: {}: both HTTP-01 and TLS-ALPN-01 are set; switchyard uses one: http-01",
                    n.file.display(),
                    n.path
                ));
            }
            challenge = Some(AcmeChallenge::Http);
        }
    } else if n.has("httpChallenge") {
        challenge = Some(AcmeChallenge::Http);
    }
    if let Some(d) = n.child("dnsChallenge") {
        if challenge.is_none() {
            let provider = d.text_at("provider")?.unwrap_or_else(|| "?".into());
            challenge = Some(AcmeChallenge::Dns(provider));
        }
    }
    let ca_certificates = n
        .child("caCertificates")
        .map(|c| c.words())
        .transpose()?
        .unwrap_or_default();
    note_dropped(
        t,
        n,
        &[
            "keyType",
            "certificatesDuration",
            "preferredChain",
            "eab",
            "caServerName",
            "caSystemCertPool",
            "clientTimeout",
            "clientResponseHeaderTimeout",
            "profile",
            "emailAddresses",
            "disableCommonName",
        ],
        "",
    );
    note_keys(
        t,
        n,
        &[
            "email",
            "storage",
            "caServer",
            "httpChallenge",
            "tlsChallenge",
            "dnsChallenge",
            "caCertificates",
            "keyType",
            "certificatesDuration",
            "preferredChain",
            "eab",
            "caServerName",
            "caSystemCertPool",
            "clientTimeout",
            "clientResponseHeaderTimeout",
            "profile",
            "emailAddresses",
            "disableCommonName",
        ],
    );
    Ok(Resolver {
        origin: origin(n),
        email: n.text_at("email")?,
        storage: n.text_at("storage")?,
        ca_server: n.text_at("caServer")?,
        challenge,
        ca_certificates,
    })
}

// ---------------------------------------------------------------------------
// Kubernetes CRDs.

/// Numbered ports of core `Service`s by (namespace, service, port name), to
/// resolve `port: http` in a TraefikService.
pub(super) type NamedPorts = BTreeMap<(String, String, String), u16>;

/// Records the named ports of a core `Service` manifest.
pub(super) fn collect_ports(doc: &Node<'_>, ports: &mut NamedPorts) -> Result<(), ImportError> {
    let meta = doc.child("metadata");
    let name = meta
        .as_ref()
        .map(|m| m.text_at("name"))
        .transpose()?
        .flatten();
    let ns = meta
        .as_ref()
        .map(|m| m.text_at("namespace"))
        .transpose()?
        .flatten()
        .unwrap_or_else(|| "default".into());
    let (Some(name), Some(spec)) = (name, doc.child("spec")) else {
        return Ok(());
    };
    if let Some(list) = spec.child("ports") {
        for p in list.items()? {
            if let (Some(pname), Some(port)) = (p.text_at("name")?, p.child("port")) {
                ports.insert((ns.clone(), name.clone(), pname), port_of(&port)?);
            }
        }
    }
    Ok(())
}

/// Reads one Kubernetes document; `kind` is its `kind:`.
pub(super) fn read_k8s(
    doc: &Node<'_>,
    kind: &str,
    t: &mut Traefik,
    ports: &NamedPorts,
) -> Result<(), ImportError> {
    let meta = doc
        .child("metadata")
        .ok_or_else(|| doc.err(format!("a {kind} needs metadata.name")))?;
    let name = meta
        .text_at("name")?
        .ok_or_else(|| meta.err(format!("a {kind} needs metadata.name")))?;
    let ns = meta
        .text_at("namespace")?
        .unwrap_or_else(|| "default".into());
    let spec = doc
        .child("spec")
        .ok_or_else(|| doc.err(format!("a {kind} needs a spec")))?;
    let k8s = K8s {
        name: &name,
        ns: &ns,
        spec: &spec,
        ports,
    };
    match kind {
        "TraefikService" => k8s.read_traefik_service(t)?,
        "IngressRoute" => k8s.read_ingress_route(t)?,
        "Middleware" => {
            let m = read_middleware(&spec, t)?;
            t.middlewares.insert(format!("{name}@kubernetescrd"), m);
        }
        other => t.note(format!(
            "{}: {}: a {other} is not carried over",
            doc.file.display(),
            meta.path
        )),
    }
    Ok(())
}

/// One Kubernetes document being read.
struct K8s<'a> {
    /// `metadata.name`.
    name: &'a str,
    /// `metadata.namespace`, `default` when absent.
    ns: &'a str,
    spec: &'a Node<'a>,
    ports: &'a NamedPorts,
}

impl K8s<'_> {
    /// A TraefikService: weighted (carried over) or mirroring/failover (not).
    fn read_traefik_service(&self, t: &mut Traefik) -> Result<(), ImportError> {
        let spec = self.spec;
        let kind = if let Some(w) = spec.child("weighted") {
            let children = k8s_refs(&w, self.ns, t, self.ports)?;
            let sticky = match w.child("sticky") {
                Some(s) => read_sticky(&s, t)?,
                None => None,
            };
            note_keys(t, &w, &["services", "sticky"]);
            ServiceKind::Weighted(Weighted { children, sticky })
        } else if spec.has("mirroring") {
            ServiceKind::Other("mirroring".into())
        } else if spec.has("failover") {
            ServiceKind::Other("failover".into())
        } else {
            return Err(spec.err("a TraefikService needs weighted (or mirroring)"));
        };
        t.services.insert(
            self.name.to_string(),
            Service {
                origin: origin(spec),
                kind,
            },
        );
        Ok(())
    }

    /// An IngressRoute: one router per route (`NAME-i` when there are several).
    fn read_ingress_route(&self, t: &mut Traefik) -> Result<(), ImportError> {
        let spec = self.spec;
        let entrypoints = spec
            .child("entryPoints")
            .map(|e| e.words())
            .transpose()?
            .unwrap_or_default();
        let tls = spec.child("tls");
        let certresolver = tls
            .as_ref()
            .map(|t| t.text_at("certResolver"))
            .transpose()?
            .flatten();
        if let Some(secret) = tls.as_ref().and_then(|t| t.child("secretName")) {
            if certresolver.is_none() {
                t.note(format!(
                    "{}: {}: certificates from a Kubernetes secret are not carried over: give the route tls = {{ cert, key }}",
                    secret.file.display(),
                    secret.path
                ));
            }
        }
        let routes = spec
            .child("routes")
            .ok_or_else(|| spec.err("an IngressRoute needs routes"))?
            .items()?;
        let many = routes.len() > 1;
        for (i, route) in routes.iter().enumerate() {
            let rname = if many {
                format!("{}-{i}", self.name)
            } else {
                self.name.to_string()
            };
            let router = Router {
                origin: origin(route),
                rule: None,
                service: None,
                entrypoints: entrypoints.clone(),
                tls: tls.is_some(),
                certresolver: certresolver.clone(),
                middlewares: Vec::new(),
                priority: read_priority(route)?,
                provider: "kubernetescrd",
            };
            self.read_route(route, rname, router, t)?;
        }
        Ok(())
    }

    /// One of an IngressRoute's routes, into `router` (which has the
    /// IngressRoute's entrypoints and TLS): its services (a weighted service
    /// named after the router when there are several), middlewares and match.
    fn read_route(
        &self,
        route: &Node<'_>,
        rname: String,
        mut router: Router,
        t: &mut Traefik,
    ) -> Result<(), ImportError> {
        let refs = k8s_refs(route, self.ns, t, self.ports)?;
        let service = match refs.as_slice() {
            [one] => one.name.clone(),
            _ => {
                t.services.insert(
                    rname.clone(),
                    Service {
                        origin: origin(route),
                        kind: ServiceKind::Weighted(Weighted {
                            children: refs,
                            sticky: None,
                        }),
                    },
                );
                rname.clone()
            }
        };
        router.middlewares = match route.child("middlewares") {
            None => Vec::new(),
            Some(m) => m
                .items()?
                .iter()
                .map(|i| i.text_at("name").map(|n| n.unwrap_or_default()))
                .collect::<Result<_, _>>()?,
        };
        router.rule = route.text_at("match")?;
        router.service = Some(service);
        t.routers.insert(rname, router);
        note_keys(
            t,
            route,
            &[
                "match",
                "kind",
                "services",
                "middlewares",
                "priority",
                "syntax",
                "observability",
            ],
        );
        Ok(())
    }
}

/// The `services` list of a TraefikService's `weighted` or an IngressRoute
/// route: Kubernetes Services become load balancers (`name:port`), other
/// TraefikServices are referenced by name.
fn k8s_refs(
    n: &Node<'_>,
    ns: &str,
    t: &mut Traefik,
    ports: &NamedPorts,
) -> Result<Vec<WeightedChild>, ImportError> {
    let list = n
        .child("services")
        .ok_or_else(|| n.err("needs a services list"))?;
    let mut out = Vec::new();
    for s in list.items()? {
        out.push(k8s_ref(&s, ns, t, ports)?);
    }
    if out.is_empty() {
        return Err(list.err("needs at least one service"));
    }
    Ok(out)
}

/// One service reference: a TraefikService by name, or a Kubernetes Service
/// as a load balancer of one server.
fn k8s_ref(
    s: &Node<'_>,
    ns: &str,
    t: &mut Traefik,
    ports: &NamedPorts,
) -> Result<WeightedChild, ImportError> {
    let name = s
        .text_at("name")?
        .ok_or_else(|| s.err("a service reference needs a name"))?;
    let weight = s.uint_at("weight")?.unwrap_or(1);
    let kind = s.text_at("kind")?.unwrap_or_else(|| "Service".into());
    let key = format!("{}.name", s.path);
    if kind == "TraefikService" {
        return Ok(WeightedChild {
            name: base_name(&name).to_string(),
            weight,
            key,
        });
    }
    if kind != "Service" {
        return Err(s.err(format!("kind {kind:?}: expected Service or TraefikService")));
    }
    let svc_ns = s.text_at("namespace")?.unwrap_or_else(|| ns.to_string());
    let port = k8s_service_port(s, &svc_ns, &name, ports)?;
    // Always qualified: switchyard does not run in the manifest's
    // namespace, and `name.namespace` resolves from any namespace.
    let host = format!("{name}.{svc_ns}");
    let lb = k8s_load_balancer(s, host, port, t)?;
    // The load balancer is keyed by the Service name; the same name on
    // another port gets its own key.
    let mut key_name = name.clone();
    if let Some(existing) = t.services.get(&key_name) {
        let same =
            matches!(&existing.kind, ServiceKind::LoadBalancer(l) if l.servers == lb.servers);
        if !same {
            key_name = format!("{name}-{port}");
        }
    }
    t.services.insert(
        key_name.clone(),
        Service {
            origin: origin(s),
            kind: ServiceKind::LoadBalancer(lb),
        },
    );
    Ok(WeightedChild {
        name: key_name,
        weight,
        key,
    })
}

/// A Service reference's `port`: a number, or a name that a Service manifest
/// among the inputs defines.
fn k8s_service_port(
    s: &Node<'_>,
    svc_ns: &str,
    name: &str,
    ports: &NamedPorts,
) -> Result<u16, ImportError> {
    let port_node = s
        .child("port")
        .ok_or_else(|| s.err("a Kubernetes Service reference needs a port"))?;
    let raw = port_node.text()?;
    match raw.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => ports
            .get(&(svc_ns.to_string(), name.to_string(), raw.clone()))
            .copied()
            .ok_or_else(|| {
                port_node.err(format!(
                    "named port {raw:?} of Service {name:?}: no Service manifest among the inputs defines it; give the port number"
                ))
            }),
    }
}

/// The load balancer a Service reference becomes, with its health check and
/// sticky cookie; notes for what is not carried over.
fn k8s_load_balancer(
    s: &Node<'_>,
    host: String,
    port: u16,
    t: &mut Traefik,
) -> Result<LoadBalancer, ImportError> {
    let scheme = s.text_at("scheme")?;
    if scheme
        .as_deref()
        .is_some_and(|x| !x.eq_ignore_ascii_case("http"))
    {
        t.note(format!(
            "{}: {}.scheme: switchyard speaks plain HTTP to backends",
            s.file.display(),
            s.path
        ));
    }
    let health = match s.child("healthCheck") {
        Some(h) => read_health(&h, t)?,
        None => None,
    };
    let sticky = match s.child("sticky") {
        Some(x) => read_sticky(&x, t)?,
        None => None,
    };
    note_keys(
        t,
        s,
        &[
            "name",
            "kind",
            "namespace",
            "port",
            "weight",
            "scheme",
            "healthCheck",
            "sticky",
            "passHostHeader",
            "serversTransport",
            "responseForwarding",
            "strategy",
            "nativeLB",
            "nodePortLB",
        ],
    );
    Ok(LoadBalancer {
        servers: vec![Server {
            host,
            port,
            weight: 1,
            group: None,
        }],
        health,
        sticky,
    })
}
