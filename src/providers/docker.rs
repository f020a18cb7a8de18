//! `[providers.docker]`: containers with labels become versions and backends
//! while they run, through the Docker Engine API (bollard; the API version is
//! negotiated, so Debian's 20.10 engine at API 1.41 works as well as a
//! current one).
//!
//! ```text
//! connect ─ negotiate ─┬─ events(since = before the list) ─┐
//!                      └─ list (running containers) ───────┴─> Control::discovery_sync
//! events:  start, unpause, health_status ─> list that container ─> Control::discovery_container
//!          kill (TERM/KILL/INT/QUIT), stop, die, pause, destroy,
//!          health_status: unhealthy ─────────────────────────────> Control::discovery_gone (at once)
//! every 30 s: list again (a missed event is repaired)
//! error anywhere ─> provider down (last known backends keep serving) ─> backoff 0.5 s .. 10 s ─> reconnect + resync
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, EventMessage};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::labels::{self, Container, Health, Port};
use crate::config::DockerConfig;
use crate::control::Control;
use crate::state::discovered::Found;

/// The provider's name in events, `ctl state` and the metric.
pub const NAME: &str = "docker";
/// A complete list this often, besides the events.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// Timeout of one API call (not of the events stream).
const CALL_TIMEOUT_SECS: u64 = 10;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Events the provider follows.
const EVENTS: &[&str] = &[
    "start",
    "unpause",
    "health_status",
    "kill",
    "stop",
    "die",
    "pause",
    "destroy",
];

/// Follows the engine until shutdown, reconnecting with backoff.
pub async fn run(control: Arc<Control>, cfg: DockerConfig, mut shutdown: watch::Receiver<bool>) {
    control.provider_configured(NAME, &cfg.endpoint);
    let mut delay = BACKOFF_FIRST;
    loop {
        let mut synced = false;
        let err = tokio::select! {
            e = session(&control, &cfg, &mut synced) => e,
            _ = shutdown.changed() => return,
        };
        control.provider_down(NAME, &err);
        if synced {
            delay = BACKOFF_FIRST;
        }
        let wait = delay.mul_f64(1.0 + fastrand::f64() / 10.0);
        tracing::debug!(provider = NAME, error = %err, retry_in = ?wait, "docker unreachable");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

/// One connection: resync, then events until something fails. Returns why.
async fn session(control: &Arc<Control>, cfg: &DockerConfig, synced: &mut bool) -> String {
    let docker = match connect(&cfg.endpoint) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => return format!("cannot reach the Docker API at {}: {e}", cfg.endpoint),
    };
    let api = docker.client_version().to_string();
    let since = since_now();
    let mut filters = HashMap::new();
    filters.insert("type", vec!["container"]);
    filters.insert("event", EVENTS.to_vec());
    let opts = EventsOptionsBuilder::new()
        .since(&since)
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(opts)).boxed();
    if let Err(e) = resync(control, cfg, &docker).await {
        return e;
    }
    *synced = true;
    control.provider_up(NAME, &api);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if let Err(e) = on_event(control, cfg, &docker, ev).await {
                        return e;
                    }
                }
                Some(Err(e)) => return format!("the Docker events stream failed: {e}"),
                None => return "the Docker events stream ended".to_string(),
            },
            _ = tick.tick() => {
                if let Err(e) = resync(control, cfg, &docker).await {
                    return e;
                }
            }
        }
    }
}

/// A client for `unix:///path` or `tcp://host:port` / `http://host:port`.
fn connect(endpoint: &str) -> Result<Docker, String> {
    let r = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, CALL_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(endpoint, CALL_TIMEOUT_SECS, API_DEFAULT_VERSION)
    };
    r.map_err(|e| format!("cannot connect to {endpoint}: {e}"))
}

/// Now, as the events API's `since` (seconds.nanoseconds).
fn since_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Lists the running containers and hands the whole view to control.
async fn resync(control: &Arc<Control>, cfg: &DockerConfig, docker: &Docker) -> Result<(), String> {
    let mut list = list(docker, None).await?;
    // Oldest first: the first version of a pool is the one that gets traffic.
    list.sort_by_key(|c| c.created.unwrap_or(0));
    let (found, problems) = read_all(&list, cfg);
    let c = control.clone();
    blocking(move || c.discovery_sync(NAME, &found, &problems)).await
}

/// Running containers, all or the one with `id`.
async fn list(docker: &Docker, id: Option<&str>) -> Result<Vec<ContainerSummary>, String> {
    let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
    if let Some(id) = id {
        filters.insert("id", vec![id]);
    }
    let opts = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))
}

/// Every container's reading: what it gives, and its problems by id.
fn read_all(list: &[ContainerSummary], cfg: &DockerConfig) -> (Vec<Found>, Vec<(String, String)>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for s in list {
        let c = container(s);
        let r = labels::read(&c, cfg);
        found.extend(r.found);
        problems.extend(r.problems.into_iter().map(|p| (c.id.clone(), p)));
    }
    (found, problems)
}

/// One event: a container joins (after a look at its current state) or
/// leaves rotation.
async fn on_event(
    control: &Arc<Control>,
    cfg: &DockerConfig,
    docker: &Docker,
    ev: EventMessage,
) -> Result<(), String> {
    let action = ev.action.unwrap_or_default();
    let Some(actor) = ev.actor else { return Ok(()) };
    let Some(id) = actor.id else { return Ok(()) };
    let attrs = actor.attributes.unwrap_or_default();
    let prefix = format!("{}.", cfg.labels.prefix());
    if !attrs
        .keys()
        .any(|k| k.starts_with(&prefix) || k.starts_with("switchyard."))
    {
        return Ok(());
    }
    let name = attrs.get("name").cloned().unwrap_or_else(|| id.clone());
    tracing::debug!(provider = NAME, container = %name, action = %action, "docker event");
    match leaves(&action, attrs.get("signal").map(String::as_str)) {
        Some(why) => {
            let c = control.clone();
            blocking(move || c.discovery_gone(NAME, &id, &why)).await
        }
        None if matches!(action.as_str(), "start" | "unpause")
            || action.starts_with("health_status") =>
        {
            let list = list(docker, Some(&id)).await?;
            let (found, problems) = read_all(&list, cfg);
            let c = control.clone();
            blocking(move || c.discovery_container(NAME, &id, &found, &problems)).await
        }
        None => Ok(()),
    }
}

/// Why an event takes a container out of rotation, or `None`.
fn leaves(action: &str, signal: Option<&str>) -> Option<String> {
    match action {
        "kill" => {
            let s = signal.unwrap_or("");
            matches!(
                s,
                "15" | "9"
                    | "2"
                    | "3"
                    | "SIGTERM"
                    | "SIGKILL"
                    | "SIGINT"
                    | "SIGQUIT"
                    | "TERM"
                    | "KILL"
                    | "INT"
                    | "QUIT"
            )
            .then(|| format!("stopping (signal {s})"))
        }
        "stop" => Some("stopped".into()),
        "die" => Some("died".into()),
        "pause" => Some("paused".into()),
        "destroy" => Some("removed".into()),
        _ if action.starts_with("health_status") && action.ends_with("unhealthy") => {
            Some("unhealthy".into())
        }
        _ => None,
    }
}

/// Runs a control call (it may fsync, and builds the table) on the control
/// thread ([`crate::memory::on_control`]), off the runtime's workers.
async fn blocking<F>(f: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), crate::model::AdminError> + Send + 'static,
{
    match crate::memory::control(f).await {
        Ok(Ok(())) => Ok(()),
        // A change control refused (the state file cannot be written): log
        // it and go on; the next resync tries again.
        Ok(Err(e)) => {
            tracing::error!(provider = NAME, error = %e, "discovery change not applied");
            Ok(())
        }
        Err(_) => Err("discovery task failed (a panic)".to_string()),
    }
}

/// What labels.rs needs of a container summary.
fn container(s: &ContainerSummary) -> Container {
    let id = s.id.clone().unwrap_or_default();
    let name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let running = matches!(s.state, Some(ContainerSummaryStateEnum::RUNNING));
    let status = s.status.as_deref().unwrap_or("");
    let health = if status.contains("(health: starting)") {
        Health::Starting
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(healthy)") {
        Health::Healthy
    } else {
        Health::None
    };
    let host_network = s
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        == Some("host");
    let networks = s
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            n.iter()
                .filter_map(|(name, ep)| {
                    let ip = ep.ip_address.as_deref()?.parse::<IpAddr>().ok()?;
                    Some((name.clone(), ip))
                })
                .collect()
        })
        .unwrap_or_default();
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter(|p| {
            !matches!(
                p.typ.map(|t| t.to_string()).as_deref(),
                Some("udp" | "sctp")
            )
        })
        .map(|p| Port {
            private: p.private_port,
            public: p.public_port.map(|public| {
                let ip =
                    p.ip.as_deref()
                        .and_then(|ip| ip.parse().ok())
                        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                (ip, public)
            }),
        })
        .collect();
    Container {
        id,
        name,
        labels: s.labels.clone().unwrap_or_default().into_iter().collect(),
        running,
        health,
        host_network,
        networks,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_events_take_a_container_out() {
        assert!(leaves("kill", Some("15")).is_some());
        assert!(leaves("kill", Some("SIGKILL")).is_some());
        assert!(
            leaves("kill", Some("1")).is_none(),
            "SIGHUP reloads, it does not stop"
        );
        assert_eq!(leaves("die", None).as_deref(), Some("died"));
        assert_eq!(leaves("stop", None).as_deref(), Some("stopped"));
        assert!(leaves("health_status: unhealthy", None).is_some());
        assert!(leaves("health_status: healthy", None).is_none());
        assert!(leaves("start", None).is_none());
    }

    #[test]
    fn summaries_of_the_engine_api_1_41() {
        let s: ContainerSummary = serde_json::from_str(
            r#"{"Id":"7b4d","Names":["/sy-blue"],"Created":1,"Ports":[{"IP":"0.0.0.0","PrivatePort":8080,"PublicPort":32768,"Type":"tcp"},{"PrivatePort":9000,"Type":"udp"}],
            "Labels":{"switchyard.pool":"app"},"State":"running","Status":"Up 2 seconds (health: starting)",
            "HostConfig":{"NetworkMode":"default"},
            "NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2"},"host":{"IPAddress":""}}}}"#,
        )
        .unwrap();
        let c = container(&s);
        assert_eq!(c.name, "sy-blue");
        assert!(c.running && !c.host_network);
        assert_eq!(c.health, Health::Starting);
        assert_eq!(c.networks.len(), 1);
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].public, Some((IpAddr::from([0, 0, 0, 0]), 32768)));
    }
}
