//! Active health checks, passive ejections' expiry, and the rebuilds that
//! health changes ask for.
//!
//! ```text
//! supervisor ── on every table change: one probe task per backend of a pool with `health`
//! probe task ── every interval (+ jitter): connect, GET path, status in range?
//!            ── ConsecutiveCounter (rise/fall) ── transition? ─> Backend::set_healthy
//!                                                            ─> audit event + rebuild request
//! sweeper    ── every second: lifts passive ejections whose time is up (pools without probes)
//! rebuilder  ── coalesces rebuild requests; rebuilds the table off the request path
//! ```
//!
//! Probes touch only the backend's atomics; a request never waits on them.
//! Backends start healthy and leave rotation after `fall` failed probes. A
//! backend named by DNS is re-resolved at every probe (and every connection).

pub mod counter;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::watch;

use crate::config::HealthConfig;
use crate::control::Control;
use crate::events::{EventKind, NewEvent};
use crate::upstream::probe::{probe, ProbeError};
use crate::upstream::{Backend, BackendKey};

pub use counter::ConsecutiveCounter;

/// A random jitter in `[0, max)`, to keep a fleet of probes out of lockstep.
fn jitter(max: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(0..max.as_millis().max(1) as u64))
}

async fn probe_loop(c: Arc<Control>, backend: Arc<Backend>, hc: HealthConfig) {
    let key = backend.key.clone();
    // Start at once, spread over a tenth of the interval (at most 250 ms).
    tokio::time::sleep(jitter((hc.interval / 10).min(Duration::from_millis(250)))).await;
    let mut counter = ConsecutiveCounter::new(hc.rise, hc.fall, backend.is_healthy());
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(key.addr.as_str(), &hc).await;
        backend.mark_known();
        if let Some(up) = counter.record(result.is_ok()) {
            if backend.set_healthy(up) {
                flipped(&c, &backend, &hc, up, &result);
            }
        } else if up_and_ejected(&backend, &result) {
            // A passing probe ends a passive ejection at once.
            backend.set_healthy(true);
            c.backend_restored("health", &backend, ": its probe passes");
        }
    }
}

/// A backend went up or down: audit it, drop its idle connections when
/// down, and have the table rebuilt.
fn flipped(
    c: &Control,
    backend: &Backend,
    hc: &HealthConfig,
    up: bool,
    result: &Result<StatusCode, ProbeError>,
) {
    let key = &backend.key;
    let what = match result {
        Ok(s) => format!(
            "{}/{} backend {} is up (probe {} {})",
            key.pool,
            key.version,
            key.addr,
            hc.path,
            s.as_u16()
        ),
        Err(e) => format!(
            "{}/{} backend {} is down after {} failed probes ({} {e})",
            key.pool, key.version, key.addr, hc.fall, hc.path
        ),
    };
    let kind = if up {
        EventKind::HealthUp
    } else {
        EventKind::HealthDown
    };
    c.events
        .record(NewEvent::new("health", kind, what).pool(&*key.pool));
    if !up {
        backend.close_idle();
    }
    c.request_rebuild();
}

fn up_and_ejected(backend: &Backend, result: &Result<StatusCode, ProbeError>) -> bool {
    result.is_ok() && backend.is_healthy() && backend.is_ejected()
}

/// Keeps one probe task per checked backend, following table changes.
pub async fn supervise(c: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let changed = c.table_changed.clone();
    let mut tasks: HashMap<BackendKey, (HealthConfig, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let wanted = checked_backends(&c);
        tasks.retain(|k, (hc, task)| {
            let keep = wanted.get(k).is_some_and(|(w, _)| w == hc);
            if !keep {
                task.abort();
            }
            keep
        });
        for (k, (hc, b)) in wanted {
            tasks.entry(k).or_insert_with(|| {
                let task = tokio::spawn(probe_loop(c.clone(), b, hc.clone()));
                (hc, task)
            });
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, (_, t)) in tasks {
        t.abort();
    }
}

/// Every backend of the table whose pool has `health`, with its check.
fn checked_backends(c: &Control) -> HashMap<BackendKey, (HealthConfig, Arc<Backend>)> {
    let table = c.table.load_full();
    let config = c.effective_config();
    let mut wanted = HashMap::new();
    for (name, pool) in &table.pools {
        let Some(hc) = config.pools.get(name).and_then(|p| p.health.clone()) else {
            continue;
        };
        for v in &pool.versions {
            for b in &v.backends {
                wanted.insert(b.key.clone(), (HealthConfig::clone(&hc), b.clone()));
            }
        }
    }
    wanted
}

/// Performs the rebuilds that health changes and ejections request,
/// coalesced, off the request path (and off the runtime's workers).
pub async fn rebuilder(c: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let wanted = c.rebuild_wanted.clone();
    loop {
        tokio::select! {
            _ = wanted.notified() => {}
            _ = shutdown.changed() => return,
        }
        let c = c.clone();
        if crate::memory::control(move || c.rebuild()).await.is_err() {
            tracing::error!("table rebuild failed (a panic)");
        }
    }
}

/// Lifts passive ejections whose time is up, once a second. In a pool with
/// active health checks an ejected backend comes back when its probe passes
/// (see `probe_loop`); the clock only frees backends nothing else would
/// ever check.
pub async fn sweep_ejections(c: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let ejected = c.registry.ejected();
        if ejected.is_empty() {
            continue;
        }
        let now = c.now_ms();
        let config = c.effective_config();
        let checked = |pool: &str| config.pools.get(pool).is_some_and(|p| p.health.is_some());
        for b in ejected {
            if !checked(&b.key.pool) && b.expire_ejection(now) {
                c.backend_restored("proxy", &b, " after its ejection time");
            }
        }
    }
}
