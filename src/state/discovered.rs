//! Pools discovered from container labels (`[providers.docker]`): what is
//! persisted of them, how a provider's view changes it, and how they join
//! the file's config.
//!
//! ```text
//! provider (docker) ──Found per container──> apply_container / apply_sync
//!        (persisted: pools -> versions -> containers in rotation, weights
//!         remembered from the first appearance)
//! file Config + discovered ──merge_discovered──> pools and routes the table is built from
//!        (then the runtime overrides apply to discovered pools as to the file's)
//! ```
//!
//! A discovered version outlives its containers: when the last one stops,
//! the version stays with no backend (it leaves the split, its weight is
//! remembered), so a container that comes back — `docker compose up -d` of
//! a new image — finds the weight the operator last gave it, not its label.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PersistedState;
use crate::config::{
    BackendAddr, Config, HealthConfig, PassiveConfig, PoolConfig, RolloutConfig, RouteConfig,
    TlsMode, VersionConfig,
};
use crate::host::HostPattern;

/// The pin header of discovered pools: a request naming a version goes to it.
pub const DISCOVERED_PIN_HEADER: &str = "x-switchyard-version";

/// One pool a provider discovered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveredPool {
    /// `docker`.
    pub provider: String,
    #[serde(default)]
    pub versions: BTreeMap<String, DiscoveredVersion>,
}

/// One version of a discovered pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveredVersion {
    /// The weight given at the first appearance (runtime weights are
    /// overrides on top, as for the file's pools).
    pub weight: u32,
    /// Hosts routed to the pool, from the labels of its latest container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The labels asked for a Let's Encrypt certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acme: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// Containers in rotation, by container id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, DiscoveredContainer>,
}

/// A container in rotation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiscoveredContainer {
    pub name: String,
    /// `ip:port`.
    pub addr: String,
}

/// A pool's active health check, as labels give it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub status: (u16, u16),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl HealthSpec {
    pub fn to_config(&self) -> HealthConfig {
        HealthConfig {
            path: self.path.clone(),
            interval: Duration::from_millis(self.interval_ms.max(1)),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            rise: self.rise.max(1),
            fall: self.fall.max(1),
            status: self.status,
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// What a provider found: one container's place in one pool. A container
/// with Traefik labels may give several (one per service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    /// The container's name, for messages.
    pub name: String,
    pub pool: String,
    pub version: String,
    /// `ip:port` when the container can take traffic; `None` while it is
    /// not ready (health `starting` or `unhealthy`).
    pub addr: Option<String>,
    pub hosts: Vec<String>,
    pub acme: bool,
    /// The weight label, if any.
    pub weight: Option<u32>,
    pub health: Option<HealthSpec>,
}

/// What changed, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    VersionAdded {
        pool: String,
        version: String,
        weight: u32,
        container: String,
    },
    BackendUp {
        pool: String,
        version: String,
        container: String,
        addr: String,
    },
    BackendDown {
        pool: String,
        version: String,
        container: String,
        addr: String,
    },
}

/// A container that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: String,
    pub message: String,
}

/// Where a container was in rotation: (pool, version, addr).
type Place = (String, String, String);

/// Replaces what `provider` knows of container `id` with `found` (empty: the
/// container left rotation). Returns what changed and what was refused.
pub fn apply_container(
    state: &mut PersistedState,
    file: &Config,
    provider: &str,
    id: &str,
    found: &[Found],
) -> (Vec<Change>, Vec<Refusal>) {
    let mut changes = Vec::new();
    let mut refused = Vec::new();
    let before = take_container(state, provider, id);
    let mut after = BTreeMap::new();
    for f in found.iter().filter(|f| f.id == id) {
        match check(state, file, provider, f) {
            Ok(()) => upsert(state, provider, f, &mut changes, &mut after),
            Err(message) => refused.push(Refusal {
                id: id.to_string(),
                message,
            }),
        }
    }
    for ((pool, version, addr), name) in &before {
        if !after.contains_key(&(pool.clone(), version.clone(), addr.clone())) {
            changes.push(Change::BackendDown {
                pool: pool.clone(),
                version: version.clone(),
                container: name.clone(),
                addr: addr.clone(),
            });
        }
    }
    for ((pool, version, addr), name) in after {
        if !before.contains_key(&(pool.clone(), version.clone(), addr.clone())) {
            changes.push(Change::BackendUp {
                pool,
                version,
                container: name,
                addr,
            });
        }
    }
    (changes, refused)
}

/// A complete view of `provider`: every container it has is in `found`;
/// the ones it no longer has leave rotation. Containers are taken in the
/// order given (oldest first, so the first version of a pool is the one
/// that gets the traffic).
pub fn apply_sync(
    state: &mut PersistedState,
    file: &Config,
    provider: &str,
    found: &[Found],
) -> (Vec<Change>, Vec<Refusal>) {
    let mut ids: Vec<&str> = Vec::new();
    for f in found {
        if !ids.contains(&f.id.as_str()) {
            ids.push(&f.id);
        }
    }
    let known: BTreeSet<String> = state
        .discovered
        .values()
        .filter(|p| p.provider == provider)
        .flat_map(|p| p.versions.values())
        .flat_map(|v| v.containers.keys().cloned())
        .collect();
    let mut changes = Vec::new();
    let mut refused = Vec::new();
    for gone in known.iter().filter(|k| !ids.contains(&k.as_str())) {
        let (c, r) = apply_container(state, file, provider, gone, &[]);
        changes.extend(c);
        refused.extend(r);
    }
    for id in ids {
        let (c, r) = apply_container(state, file, provider, id, found);
        changes.extend(c);
        refused.extend(r);
    }
    (changes, refused)
}

/// Removes container `id` from every version of `provider`'s pools; returns
/// where it was.
fn take_container(state: &mut PersistedState, provider: &str, id: &str) -> BTreeMap<Place, String> {
    let mut out = BTreeMap::new();
    for (pname, pool) in state.discovered.iter_mut() {
        if pool.provider != provider {
            continue;
        }
        for (vname, v) in pool.versions.iter_mut() {
            if let Some(c) = v.containers.remove(id) {
                out.insert((pname.clone(), vname.clone(), c.addr), c.name);
            }
        }
    }
    out
}

/// Whether `f` can be used: its pool is not the file's, its hosts are not
/// routed by the file or by another pool, TLS can be served.
fn check(state: &PersistedState, file: &Config, provider: &str, f: &Found) -> Result<(), String> {
    let who = format!("container {} ({provider})", f.name);
    if file.pools.contains_key(f.pool.as_str()) {
        return Err(format!(
            "{who} labels pool {:?}, which the config file defines ([pools.{}]): a pool comes from the file or from discovery, not both; the container is ignored",
            f.pool, f.pool
        ));
    }
    if let Some(other) = state.discovered.get(&f.pool) {
        if other.provider != provider {
            return Err(format!(
                "{who} labels pool {:?}, which provider {} discovered first; the container is ignored",
                f.pool, other.provider
            ));
        }
    }
    if let Some(v) = state
        .pools
        .get(&f.pool)
        .and_then(|o| o.versions.get(&f.version))
    {
        if !v.backends.is_empty() {
            return Err(format!(
                "{who} labels version {} of pool {}, which was added at runtime (ctl version add); remove it first; the container is ignored",
                f.version, f.pool
            ));
        }
    }
    for h in &f.hosts {
        let host = HostPattern::parse(h).map_err(|e| format!("{who}: host {h:?}: {e}"))?;
        let text = host.to_string();
        if file.routes.iter().any(|r| {
            r.host.to_string() == text || r.preview.as_ref().is_some_and(|p| p.as_str() == text)
        }) {
            return Err(format!(
                "{who} routes host {text}, which the config file routes already ([[routes]]); the container is ignored"
            ));
        }
        let claimed = state.discovered.iter().find(|(name, p)| {
            **name != f.pool && p.versions.values().any(|v| v.hosts.contains(&text))
        });
        if let Some((other, _)) = claimed {
            return Err(format!(
                "{who} routes host {text} to pool {}, but pool {other} (discovered) routes it already; the container is ignored",
                f.pool
            ));
        }
    }
    if f.acme && (file.acme.is_none() || file.server.https.is_none()) {
        return Err(format!(
            "{who} asks for tls=acme, which needs an [acme] section and server.https in the config file; the container is ignored"
        ));
    }
    Ok(())
}

/// Adds `f` to its version (created at its first appearance).
fn upsert(
    state: &mut PersistedState,
    provider: &str,
    f: &Found,
    changes: &mut Vec<Change>,
    after: &mut BTreeMap<Place, String>,
) {
    let traffic = pool_has_traffic(state, &f.pool);
    let pool = state
        .discovered
        .entry(f.pool.clone())
        .or_insert_with(|| DiscoveredPool {
            provider: provider.to_string(),
            versions: BTreeMap::new(),
        });
    let v = pool.versions.entry(f.version.clone()).or_insert_with(|| {
        let weight = f.weight.unwrap_or(if traffic { 0 } else { 100 });
        changes.push(Change::VersionAdded {
            pool: f.pool.clone(),
            version: f.version.clone(),
            weight,
            container: f.name.clone(),
        });
        DiscoveredVersion {
            weight,
            ..Default::default()
        }
    });
    let mut hosts: Vec<String> = f
        .hosts
        .iter()
        .filter_map(|h| HostPattern::parse(h).ok())
        .map(|h| h.to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    v.hosts = hosts;
    v.acme = f.acme;
    v.health = f.health.clone();
    if let Some(addr) = &f.addr {
        v.containers.insert(
            f.id.clone(),
            DiscoveredContainer {
                name: f.name.clone(),
                addr: addr.clone(),
            },
        );
        after.insert(
            (f.pool.clone(), f.version.clone(), addr.clone()),
            f.name.clone(),
        );
    }
}

/// Whether a version of `pool` already has a weight above 0 (runtime
/// weights and versions included): a new version then starts at 0.
fn pool_has_traffic(state: &PersistedState, pool: &str) -> bool {
    let o = state.pools.get(pool);
    let discovered = state.discovered.get(pool).into_iter().flat_map(|p| {
        p.versions.iter().map(move |(name, v)| {
            o.and_then(|o| o.weights.get(name))
                .copied()
                .unwrap_or(v.weight)
        })
    });
    let runtime = o
        .into_iter()
        .flat_map(|o| o.versions.values().map(|v| v.weight));
    discovered.chain(runtime).any(|w| w > 0)
}

/// Adds the discovered pools (and their routes) that the file does not
/// define to `config`. A pool or host the file has already is left out,
/// with a note.
pub fn merge_discovered(
    config: &mut Config,
    discovered: &BTreeMap<String, DiscoveredPool>,
    notes: &mut Vec<(String, String)>,
) {
    let mut routed: BTreeSet<String> = config
        .routes
        .iter()
        .map(|r| r.host.to_string())
        .chain(
            config
                .routes
                .iter()
                .filter_map(|r| r.preview.as_ref().map(|p| p.to_string())),
        )
        .collect();
    for (name, dp) in discovered {
        if config.pools.contains_key(name.as_str()) {
            notes.push((
                name.clone(),
                format!("pool {name} is defined in the config file and discovered by {}: the file's pool is used, the discovered one is ignored", dp.provider),
            ));
            continue;
        }
        config.pools.insert(
            name.as_str().into(),
            std::sync::Arc::new(discovered_pool(dp)),
        );
        let acme = dp.versions.values().any(|v| v.acme);
        let tls = if acme && config.acme.is_some() && config.server.https.is_some() {
            TlsMode::Acme
        } else {
            TlsMode::None
        };
        let hosts: BTreeSet<&String> = dp.versions.values().flat_map(|v| &v.hosts).collect();
        for h in hosts {
            let Ok(host) = HostPattern::parse(h) else {
                continue;
            };
            if !routed.insert(host.to_string()) {
                notes.push((
                    name.clone(),
                    format!("host {host} of discovered pool {name} is routed elsewhere already; left out"),
                ));
                continue;
            }
            std::sync::Arc::make_mut(&mut config.routes).push(RouteConfig {
                host,
                pool: name.clone(),
                redirect_https: tls != TlsMode::None,
                tls: tls.clone(),
                preview: None,
                rules: crate::rules::RouteRules::shared(Default::default()),
                middlewares: Vec::new(),
            });
        }
    }
}

/// The pool config of a discovered pool: its versions with the addresses of
/// their containers in rotation, the first health check its labels give.
fn discovered_pool(dp: &DiscoveredPool) -> PoolConfig {
    let versions = dp
        .versions
        .iter()
        .map(|(name, v)| {
            let mut backends: Vec<BackendAddr> = v
                .containers
                .values()
                .filter_map(|c| BackendAddr::parse(&c.addr).ok())
                .collect();
            backends.sort();
            backends.dedup();
            (
                name.clone(),
                VersionConfig {
                    weight: v.weight,
                    backends,
                },
            )
        })
        .collect();
    PoolConfig {
        health: dp
            .versions
            .values()
            .find_map(|v| v.health.as_ref())
            .map(|h| Box::new(h.to_config())),
        passive: PassiveConfig::default(),
        sticky: None,
        pin_header: Some(http::HeaderName::from_static(DISCOVERED_PIN_HEADER)),
        version_header: false,
        retry: 1,
        on_all_down: crate::config::OnAllDown::Unavailable,
        max_connections_per_backend: 0,
        queue_timeout: None,
        versions,
        matches: Vec::new(),
        rollout: RolloutConfig::shared(RolloutConfig::default()),
    }
}

/// Containers of `provider` in rotation now.
pub fn containers_in_rotation(state: &PersistedState, provider: &str) -> usize {
    state
        .discovered
        .values()
        .filter(|p| p.provider == provider)
        .flat_map(|p| p.versions.values())
        .map(|v| v.containers.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Config {
        Config::from_toml_str(
            r#"
[[routes]]
host = "file.test"
pool = "filepool"
[pools.filepool.versions.a]
weight = 1
backends = ["127.0.0.1:1"]
"#,
        )
        .unwrap()
    }

    fn found(id: &str, pool: &str, version: &str, addr: Option<&str>) -> Found {
        Found {
            id: id.into(),
            name: format!("c-{id}"),
            pool: pool.into(),
            version: version.into(),
            addr: addr.map(str::to_string),
            hosts: vec!["app.test".into()],
            acme: false,
            weight: None,
            health: None,
        }
    }

    #[test]
    fn the_first_version_gets_100_and_later_ones_0() {
        let mut s = PersistedState::default();
        let (c, r) = apply_container(
            &mut s,
            &file(),
            "docker",
            "1",
            &[found("1", "app", "blue", Some("127.0.0.1:81"))],
        );
        assert!(r.is_empty());
        assert!(matches!(&c[0], Change::VersionAdded { weight: 100, .. }));
        assert!(matches!(&c[1], Change::BackendUp { .. }));
        let (c, _) = apply_container(
            &mut s,
            &file(),
            "docker",
            "2",
            &[found("2", "app", "green", Some("127.0.0.1:82"))],
        );
        assert!(matches!(&c[0], Change::VersionAdded { weight: 0, .. }));
        let mut cfg = file();
        merge_discovered(&mut cfg, &s.discovered, &mut Vec::new());
        assert_eq!(cfg.pools["app"].versions.get("blue").unwrap().weight, 100);
        assert_eq!(cfg.pools["app"].versions.get("green").unwrap().weight, 0);
        assert_eq!(cfg.routes.len(), 2);
    }

    #[test]
    fn a_version_outlives_its_containers_with_its_weight() {
        let mut s = PersistedState::default();
        let mut f = found("1", "app", "blue", Some("127.0.0.1:81"));
        f.weight = Some(7);
        apply_container(&mut s, &file(), "docker", "1", &[f]);
        let (c, _) = apply_container(&mut s, &file(), "docker", "1", &[]);
        assert!(matches!(&c[0], Change::BackendDown { .. }));
        let mut cfg = file();
        merge_discovered(&mut cfg, &s.discovered, &mut Vec::new());
        assert!(cfg.pools["app"]
            .versions
            .get("blue")
            .unwrap()
            .backends
            .is_empty());
        assert_eq!(cfg.pools["app"].versions.get("blue").unwrap().weight, 7);
        // It comes back: same weight, whatever its label says now.
        let mut f = found("3", "app", "blue", Some("127.0.0.1:83"));
        f.weight = Some(50);
        let (c, _) = apply_container(&mut s, &file(), "docker", "3", &[f]);
        assert_eq!(c.len(), 1);
        assert_eq!(s.discovered["app"].versions.get("blue").unwrap().weight, 7);
    }

    #[test]
    fn a_starting_container_creates_its_version_but_takes_no_traffic() {
        let mut s = PersistedState::default();
        let (c, _) = apply_container(
            &mut s,
            &file(),
            "docker",
            "1",
            &[found("1", "app", "blue", None)],
        );
        assert_eq!(c.len(), 1);
        assert!(s.discovered["app"]
            .versions
            .get("blue")
            .unwrap()
            .containers
            .is_empty());
    }

    #[test]
    fn file_pools_and_hosts_are_refused_naming_both() {
        let mut s = PersistedState::default();
        let (_, r) = apply_container(
            &mut s,
            &file(),
            "docker",
            "1",
            &[found("1", "filepool", "b", Some("127.0.0.1:81"))],
        );
        assert!(
            r[0].message.contains("filepool") && r[0].message.contains("c-1"),
            "{r:?}"
        );
        let mut f = found("2", "app", "b", Some("127.0.0.1:81"));
        f.hosts = vec!["file.test".into()];
        let (_, r) = apply_container(&mut s, &file(), "docker", "2", &[f]);
        assert!(r[0].message.contains("file.test"), "{r:?}");
        assert!(s.discovered.is_empty());
    }

    #[test]
    fn a_resync_drops_containers_that_are_gone_and_keeps_the_rest() {
        let mut s = PersistedState::default();
        let a = found("1", "app", "blue", Some("127.0.0.1:81"));
        let b = found("2", "app", "blue", Some("127.0.0.1:82"));
        apply_sync(&mut s, &file(), "docker", &[a.clone(), b]);
        assert_eq!(containers_in_rotation(&s, "docker"), 2);
        let (c, _) = apply_sync(&mut s, &file(), "docker", &[a]);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(matches!(&c[0], Change::BackendDown { addr, .. } if addr == "127.0.0.1:82"));
        let (c, _) = apply_sync(
            &mut s,
            &file(),
            "docker",
            &[found("1", "app", "blue", Some("127.0.0.1:81"))],
        );
        assert!(c.is_empty(), "nothing changed: {c:?}");
    }
}
