//! Container labels to pools, versions and backends: the `switchyard.*`
//! labels, or Traefik's own (`traefik.http.routers.*`, `traefik.http.services.*`)
//! read with Traefik's meaning. Pure: the Docker service hands a
//! [`Container`] (what the Engine API said) and gets [`Found`] entries back.
//!
//! ```text
//! Container { labels, state, health, networks, ports }
//!   --enabled? (prefix.enable / exposed_by_default)--> dialect
//!   --switchyard: one Found (pool, version, port, hosts, tls, weight, health)
//!   --traefik:    one Found per router -> service (Host rule, port, weight, certresolver, healthcheck)
//!   --address: host network -> host_address:port; the chosen network's IP; a published port
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{parse_duration, valid_name, DockerConfig, LabelDialect, MAX_WEIGHT};
use crate::host::HostPattern;
use crate::state::discovered::{Found, HealthSpec};

use super::rule;

/// A container's Docker HEALTHCHECK status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No HEALTHCHECK.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// A port the container exposes (and may publish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub private: u16,
    /// The host port it is published on, and the host IP.
    pub public: Option<(IpAddr, u16)>,
}

/// What the Engine API said about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Running and not paused.
    pub running: bool,
    pub health: Health,
    /// `network_mode: host`: reached on the host's own address.
    pub host_network: bool,
    /// Network name -> the container's IP on it.
    pub networks: BTreeMap<String, IpAddr>,
    pub ports: Vec<Port>,
}

/// What one container gives: its places in pools, and what in its labels
/// could not be used.
#[derive(Debug, Default)]
pub struct Reading {
    pub found: Vec<Found>,
    pub problems: Vec<String>,
}

/// Reads a container's labels under `cfg`. A container that is not enabled
/// gives an empty reading.
pub fn read(c: &Container, cfg: &DockerConfig) -> Reading {
    if !enabled(c, cfg) {
        return Reading::default();
    }
    let mut r = match cfg.labels {
        LabelDialect::Switchyard => match read_switchyard(c, cfg) {
            Ok(f) => Reading {
                found: f.into_iter().collect(),
                problems: Vec::new(),
            },
            Err(e) => Reading {
                found: Vec::new(),
                problems: vec![e],
            },
        },
        LabelDialect::Traefik => read_traefik(c, cfg),
    };
    for p in &mut r.problems {
        *p = format!("container {}: {p}", c.name);
    }
    r
}

/// `<prefix>.enable=true`, or exposed by default and not `enable=false`.
fn enabled(c: &Container, cfg: &DockerConfig) -> bool {
    let key = format!("{}.enable", cfg.labels.prefix());
    match c.labels.get(&key).map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        _ => {
            cfg.exposed_by_default
                && c.labels.keys().any(|k| {
                    k.strip_prefix(cfg.labels.prefix())
                        .is_some_and(|rest| rest.starts_with('.'))
                })
        }
    }
}

/// The compose service name, else the container's name.
fn service_name(c: &Container) -> &str {
    c.labels
        .get("com.docker.compose.service")
        .map(String::as_str)
        .unwrap_or(&c.name)
}

/// The labels `switchyard.*` knows.
const SWITCHYARD_KEYS: &[&str] = &["enable", "pool", "version", "port", "host", "tls", "weight"];
const HEALTH_KEYS: &[&str] = &[
    "path", "interval", "timeout", "rise", "fall", "status", "host", "port",
];

/// `switchyard.pool`, `.version`, `.port`, `.host`, `.tls`, `.weight`, `.health.*`.
fn read_switchyard(c: &Container, cfg: &DockerConfig) -> Result<Option<Found>, String> {
    let mut own = BTreeMap::new();
    let mut health = BTreeMap::new();
    for (k, v) in &c.labels {
        let Some(key) = k.strip_prefix("switchyard.") else {
            continue;
        };
        if let Some(h) = key.strip_prefix("health.") {
            if !HEALTH_KEYS.contains(&h) {
                return Err(format!("unknown label {k}"));
            }
            health.insert(h.to_string(), v.trim().to_string());
        } else if SWITCHYARD_KEYS.contains(&key) {
            own.insert(key.to_string(), v.trim().to_string());
        } else {
            return Err(format!("unknown label {k}"));
        }
    }
    let pool = own
        .get("pool")
        .cloned()
        .ok_or("no switchyard.pool label: which pool does it serve?")?;
    if !valid_name(&pool) {
        return Err(format!(
            "switchyard.pool {pool:?}: use letters, digits, '.', '_', '-'"
        ));
    }
    let version = own
        .get("version")
        .cloned()
        .unwrap_or_else(|| service_name(c).to_string());
    if !valid_name(&version) {
        return Err(format!(
            "version {version:?}: use letters, digits, '.', '_', '-' (set switchyard.version)"
        ));
    }
    let port = match own.get("port") {
        Some(p) => parse_port(p).map_err(|e| format!("switchyard.port: {e}"))?,
        None => one_port(c)?,
    };
    let hosts = own
        .get("host")
        .map(|h| split_hosts(h))
        .transpose()?
        .unwrap_or_default();
    let acme = match own.get("tls").map(String::as_str) {
        None | Some("none") => false,
        Some("acme") => true,
        Some(other) => {
            return Err(format!(
                "switchyard.tls must be acme or none, not {other:?}"
            ))
        }
    };
    let weight = own
        .get("weight")
        .map(|w| match w.parse::<u32>() {
            Ok(n) if n <= MAX_WEIGHT => Ok(n),
            _ => Err(format!(
                "switchyard.weight {w:?} is not a whole number from 0 to {MAX_WEIGHT}"
            )),
        })
        .transpose()?;
    let health = health_spec(&health)?;
    Ok(Some(Found {
        id: c.id.clone(),
        name: c.name.clone(),
        pool,
        version,
        addr: address(c, cfg, port)?,
        hosts,
        acme,
        weight,
        health,
    }))
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.trim().parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{p:?} is not a port")),
    }
}

/// The one port the container exposes.
fn one_port(c: &Container) -> Result<u16, String> {
    let mut ports: Vec<u16> = c.ports.iter().map(|p| p.private).collect();
    ports.sort_unstable();
    ports.dedup();
    match ports.as_slice() {
        [one] => Ok(*one),
        [] => Err("it exposes no port: set switchyard.port".into()),
        many => Err(format!(
            "it exposes several ports ({}): set switchyard.port",
            many.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn split_hosts(h: &str) -> Result<Vec<String>, String> {
    h.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            HostPattern::parse(s)
                .map(|p| p.to_string())
                .map_err(|e| format!("switchyard.host {s:?}: {e}"))
        })
        .collect()
}

/// `health.*` labels (switchyard's names) to a spec; `None` without a path.
fn health_spec(h: &BTreeMap<String, String>) -> Result<Option<HealthSpec>, String> {
    let Some(path) = h.get("path") else {
        if h.is_empty() {
            return Ok(None);
        }
        return Err("health labels need a path (switchyard.health.path)".into());
    };
    if !path.starts_with('/') {
        return Err(format!("health path {path:?} must start with '/'"));
    }
    let ms = |key: &str, default: u64| -> Result<u64, String> {
        match h.get(key) {
            None => Ok(default),
            Some(v) => match parse_duration(v) {
                Ok(d) if !d.is_zero() && d.as_secs() <= 86_400 => Ok(d.as_millis() as u64),
                _ => Err(format!("health {key} {v:?} is not a duration such as 2s")),
            },
        }
    };
    let count = |key: &str, default: u32| -> Result<u32, String> {
        match h.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(n),
                _ => Err(format!("health {key} {v:?} must be from 1 to 100")),
            },
        }
    };
    let status = match h.get("status") {
        None => (200, 399),
        Some(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                (Ok(a), Ok(b))
                    if (100..=599).contains(&a) && (100..=599).contains(&b) && a <= b =>
                {
                    (a, b)
                }
                _ => {
                    return Err(format!(
                        "health status {s:?} must be a status (200) or a range (200-399)"
                    ))
                }
            }
        }
    };
    let interval_ms = ms("interval", 2000)?;
    let timeout_ms = ms("timeout", 1000)?.min(interval_ms);
    Ok(Some(HealthSpec {
        path: path.clone(),
        interval_ms,
        timeout_ms,
        rise: count("rise", 2)?,
        fall: count("fall", 3)?,
        status,
        host: h.get("host").cloned().filter(|s| !s.is_empty()),
        port: h.get("port").map(|p| parse_port(p)).transpose()?,
    }))
}

/// Where the container is reached on `port`; `None` while it cannot take
/// traffic (not running, health `starting` or `unhealthy`).
fn address(c: &Container, cfg: &DockerConfig, port: u16) -> Result<Option<String>, String> {
    if !c.running || matches!(c.health, Health::Starting | Health::Unhealthy) {
        return Ok(None);
    }
    let ip = if c.host_network {
        Some(cfg.host_address)
    } else {
        network_ip(c, cfg)?
    };
    let addr = match ip {
        Some(ip) => Some((ip, port)),
        // No network address (network "none", or a daemon that gives none):
        // the port published on the host.
        None => c
            .ports
            .iter()
            .filter(|p| p.private == port)
            .find_map(|p| p.public)
            .map(|(ip, public)| {
                let ip = if ip.is_unspecified() {
                    cfg.host_address
                } else {
                    ip
                };
                (ip, public)
            }),
    };
    match addr {
        Some((IpAddr::V6(ip), p)) => Ok(Some(format!("[{ip}]:{p}"))),
        Some((ip, p)) => Ok(Some(format!("{ip}:{p}"))),
        None => Err(format!(
            "it has no network address and does not publish port {port}"
        )),
    }
}

/// The IP on `network` (also as Compose names it, `<project>_<network>`), or
/// on its only network, or on the first by name.
fn network_ip(c: &Container, cfg: &DockerConfig) -> Result<Option<IpAddr>, String> {
    let Some(want) = &cfg.network else {
        return Ok(c.networks.values().next().copied());
    };
    let project = c.labels.get("com.docker.compose.project");
    let hit = c.networks.iter().find(|(name, _)| {
        *name == want || project.is_some_and(|p| **name == format!("{p}_{want}"))
    });
    match hit {
        Some((_, ip)) => Ok(Some(*ip)),
        None if c.networks.is_empty() => Ok(None),
        None => Err(format!(
            "it is not on network {want} (its networks: {})",
            c.networks.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

// ---------------------------------------------------------------------------
// Traefik's labels.

/// One router or service as its labels give it (keys lowercased).
#[derive(Default)]
struct Labelled {
    keys: BTreeMap<String, String>,
}

/// Traefik's labels: each router with a Host rule gives a Found for its
/// service. The pool is named after the router's first host (in
/// alphabetical order), the version after the service.
fn read_traefik(c: &Container, cfg: &DockerConfig) -> Reading {
    let mut reading = Reading::default();
    let mut routers: BTreeMap<String, Labelled> = BTreeMap::new();
    let mut services: BTreeMap<String, Labelled> = BTreeMap::new();
    for (k, v) in &c.labels {
        let lower = k.to_ascii_lowercase();
        let parts: Vec<&str> = lower.splitn(5, '.').collect();
        match parts.as_slice() {
            ["traefik", "http", "routers", name, rest] => {
                routers
                    .entry(name.to_string())
                    .or_default()
                    .keys
                    .insert(rest.to_string(), v.trim().to_string());
            }
            ["traefik", "http", "services", name, rest] => {
                services
                    .entry(name.to_string())
                    .or_default()
                    .keys
                    .insert(rest.to_string(), v.trim().to_string());
            }
            _ => {}
        }
    }
    let implicit = service_name(c).to_ascii_lowercase();
    for (rname, router) in &routers {
        let service = match router.keys.get("service") {
            Some(s) => s.split('@').next().unwrap_or(s).to_ascii_lowercase(),
            None if services.len() == 1 => services.keys().next().cloned().unwrap_or_default(),
            None if services.is_empty() => implicit.clone(),
            None => {
                reading.problems.push(format!("router {rname} names no service and the container defines several; the router is skipped (Traefik refuses it too)"));
                continue;
            }
        };
        match traefik_found(c, cfg, rname, router, &service, services.get(&service)) {
            Ok(f) => merge_found(&mut reading.found, f),
            Err(e) => reading
                .problems
                .push(format!("router {rname}: {e}; the router is skipped")),
        }
    }
    reading
}

/// One router and its service.
fn traefik_found(
    c: &Container,
    cfg: &DockerConfig,
    rname: &str,
    router: &Labelled,
    service: &str,
    svc: Option<&Labelled>,
) -> Result<Found, String> {
    let rule_text = router
        .keys
        .get("rule")
        .ok_or("no rule (Traefik's defaultRule is not read)")?;
    let parsed = rule::parse(rule_text).map_err(|e| format!("rule {rule_text:?}: {e}"))?;
    let mut hosts: Vec<String> = rule::hosts(&parsed)?.into_iter().map(|h| h.host).collect();
    for h in &hosts {
        HostPattern::parse(h).map_err(|e| format!("host {h:?}: {e}"))?;
    }
    hosts.sort();
    hosts.dedup();
    let pool = match c.labels.get("switchyard.pool") {
        Some(p) => p.trim().to_string(),
        None => hosts.first().cloned().unwrap_or_else(|| rname.to_string()),
    };
    let pool = pool.trim_start_matches("*.").to_string();
    if !valid_name(&pool) || !valid_name(service) {
        return Err(format!(
            "pool {pool:?} or version {service:?} is not a valid name"
        ));
    }
    let get = |k: &str| svc.and_then(|s| s.keys.get(k));
    let port = match get("loadbalancer.server.port") {
        Some(p) => parse_port(p).map_err(|e| format!("service {service}: port: {e}"))?,
        None => lowest_port(c)?,
    };
    let weight = match get("loadbalancer.server.weight").or(get("loadbalancer.weight")) {
        None => 1,
        Some(w) => match w.parse::<u32>() {
            Ok(n) if n <= MAX_WEIGHT => n,
            _ => {
                return Err(format!(
                    "service {service}: weight {w:?} is not a whole number up to {MAX_WEIGHT}"
                ))
            }
        },
    };
    let acme = router.keys.contains_key("tls.certresolver");
    let mut health = BTreeMap::new();
    for (from, to) in [
        ("path", "path"),
        ("interval", "interval"),
        ("timeout", "timeout"),
        ("hostname", "host"),
        ("status", "status"),
        ("port", "port"),
    ] {
        if let Some(v) = get(&format!("loadbalancer.healthcheck.{from}")) {
            health.insert(to.to_string(), v.clone());
        }
    }
    if health.contains_key("path") {
        // Traefik's defaults: every 30 s, 5 s timeout, out on one failure,
        // back on one success.
        health
            .entry("interval".into())
            .or_insert_with(|| "30s".into());
        health
            .entry("timeout".into())
            .or_insert_with(|| "5s".into());
        health.insert("rise".into(), "1".into());
        health.insert("fall".into(), "1".into());
    }
    Ok(Found {
        id: c.id.clone(),
        name: c.name.clone(),
        pool,
        version: c
            .labels
            .get("switchyard.version")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| service.to_string()),
        addr: address(c, cfg, port)?,
        hosts,
        acme,
        weight: Some(weight),
        health: health_spec(&health)?,
    })
}

/// Traefik's rule without a port label: the lowest exposed port.
fn lowest_port(c: &Container) -> Result<u16, String> {
    c.ports.iter().map(|p| p.private).min().ok_or_else(|| {
        "it exposes no port: set traefik.http.services.NAME.loadbalancer.server.port".into()
    })
}

/// Two routers of one container to the same service (and pool) give one
/// place with both routers' hosts.
fn merge_found(all: &mut Vec<Found>, f: Found) {
    match all
        .iter_mut()
        .find(|x| x.pool == f.pool && x.version == f.version)
    {
        Some(x) => {
            for h in f.hosts {
                if !x.hosts.contains(&h) {
                    x.hosts.push(h);
                }
            }
            x.acme |= f.acme;
        }
        None => all.push(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dialect: LabelDialect) -> DockerConfig {
        DockerConfig {
            endpoint: "unix:///var/run/docker.sock".into(),
            exposed_by_default: false,
            network: None,
            labels: dialect,
            host_address: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn container(labels: &[(&str, &str)]) -> Container {
        Container {
            id: "abc".into(),
            name: "shop-blue-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            health: Health::None,
            host_network: false,
            networks: [("web".to_string(), IpAddr::from([172, 18, 0, 5]))].into(),
            ports: vec![Port {
                private: 8080,
                public: None,
            }],
        }
    }

    #[test]
    fn switchyard_labels() {
        let c = container(&[
            ("switchyard.enable", "true"),
            ("switchyard.pool", "shop"),
            ("com.docker.compose.service", "blue"),
            ("switchyard.host", "shop.example.com, www.shop.example.com"),
            ("switchyard.weight", "5"),
            ("switchyard.health.path", "/health"),
        ]);
        let r = read(&c, &cfg(LabelDialect::Switchyard));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let f = &r.found[0];
        assert_eq!((f.pool.as_str(), f.version.as_str()), ("shop", "blue"));
        assert_eq!(f.addr.as_deref(), Some("172.18.0.5:8080"));
        assert_eq!(f.hosts, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(f.weight, Some(5));
        assert_eq!(f.health.as_ref().unwrap().fall, 3);
    }

    #[test]
    fn not_enabled_unless_asked_or_exposed_by_default() {
        let c = container(&[("switchyard.pool", "shop")]);
        assert!(read(&c, &cfg(LabelDialect::Switchyard)).found.is_empty());
        let mut exposed = cfg(LabelDialect::Switchyard);
        exposed.exposed_by_default = true;
        assert_eq!(read(&c, &exposed).found.len(), 1);
        let off = container(&[("switchyard.pool", "shop"), ("switchyard.enable", "false")]);
        assert!(read(&off, &exposed).found.is_empty());
    }

    #[test]
    fn bad_labels_are_named() {
        for (labels, want) in [
            (
                vec![("switchyard.pools", "x")],
                "unknown label switchyard.pools",
            ),
            (vec![], "no switchyard.pool"),
            (
                vec![("switchyard.pool", "a"), ("switchyard.weight", "-1")],
                "switchyard.weight",
            ),
            (
                vec![("switchyard.pool", "a"), ("switchyard.tls", "yes")],
                "switchyard.tls",
            ),
            (
                vec![
                    ("switchyard.pool", "a"),
                    ("switchyard.health.interval", "2s"),
                ],
                "need a path",
            ),
        ] {
            let mut l = labels.clone();
            l.push(("switchyard.enable", "true"));
            let r = read(&container(&l), &cfg(LabelDialect::Switchyard));
            assert!(r.found.is_empty());
            assert!(
                r.problems[0].contains(want) && r.problems[0].contains("shop-blue-1"),
                "{:?}",
                r.problems
            );
        }
    }

    #[test]
    fn starting_and_unhealthy_containers_take_no_traffic() {
        for h in [Health::Starting, Health::Unhealthy] {
            let mut c = container(&[("switchyard.enable", "true"), ("switchyard.pool", "a")]);
            c.health = h;
            assert_eq!(read(&c, &cfg(LabelDialect::Switchyard)).found[0].addr, None);
        }
    }

    #[test]
    fn addresses_host_network_named_network_and_published_ports() {
        let base = [("switchyard.enable", "true"), ("switchyard.pool", "a")];
        let mut c = container(&base);
        c.host_network = true;
        c.networks.clear();
        assert_eq!(
            read(&c, &cfg(LabelDialect::Switchyard)).found[0]
                .addr
                .as_deref(),
            Some("127.0.0.1:8080")
        );
        let mut c = container(&[
            ("switchyard.enable", "true"),
            ("switchyard.pool", "a"),
            ("com.docker.compose.project", "pi"),
        ]);
        c.networks
            .insert("pi_back".into(), IpAddr::from([10, 0, 0, 2]));
        let mut on_back = cfg(LabelDialect::Switchyard);
        on_back.network = Some("back".into());
        assert_eq!(
            read(&c, &on_back).found[0].addr.as_deref(),
            Some("10.0.0.2:8080")
        );
        on_back.network = Some("nope".into());
        assert!(read(&c, &on_back).problems[0].contains("not on network nope"));
        let mut c = container(&base);
        c.networks.clear();
        c.ports = vec![Port {
            private: 8080,
            public: Some((IpAddr::from([0, 0, 0, 0]), 32768)),
        }];
        assert_eq!(
            read(&c, &cfg(LabelDialect::Switchyard)).found[0]
                .addr
                .as_deref(),
            Some("127.0.0.1:32768")
        );
    }

    #[test]
    fn traefik_labels_with_traefiks_meaning() {
        let c = container(&[
            ("traefik.enable", "true"),
            ("traefik.http.routers.blue.rule", "Host(`app.example.com`)"),
            ("traefik.http.routers.blue.entrypoints", "web,websecure"),
            ("traefik.http.routers.blue.tls.certresolver", "le"),
            ("traefik.http.services.blue.loadBalancer.server.port", "80"),
            ("traefik.http.services.blue.loadbalancer.server.weight", "3"),
            (
                "traefik.http.services.blue.loadbalancer.healthcheck.path",
                "/ping",
            ),
        ]);
        let r = read(&c, &cfg(LabelDialect::Traefik));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let f = &r.found[0];
        assert_eq!(
            (f.pool.as_str(), f.version.as_str()),
            ("app.example.com", "blue")
        );
        assert_eq!(f.addr.as_deref(), Some("172.18.0.5:80"));
        assert_eq!(f.weight, Some(3));
        assert!(f.acme);
        let h = f.health.as_ref().unwrap();
        assert_eq!((h.interval_ms, h.rise, h.fall), (30_000, 1, 1));
    }

    #[test]
    fn traefik_lowest_port_implicit_service_and_skipped_routers() {
        let mut c = container(&[
            ("traefik.enable", "true"),
            ("com.docker.compose.service", "web"),
            ("traefik.http.routers.a.rule", "Host(`a.test`)"),
            (
                "traefik.http.routers.b.rule",
                "Host(`b.test`) && PathPrefix(`/api`)",
            ),
        ]);
        c.ports = vec![
            Port {
                private: 443,
                public: None,
            },
            Port {
                private: 80,
                public: None,
            },
        ];
        let r = read(&c, &cfg(LabelDialect::Traefik));
        assert_eq!(r.found.len(), 1);
        assert_eq!(r.found[0].version, "web");
        assert_eq!(r.found[0].addr.as_deref(), Some("172.18.0.5:80"));
        assert!(
            r.problems[0].contains("router b") && r.problems[0].contains("host only"),
            "{:?}",
            r.problems
        );
    }
}
