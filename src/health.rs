//! Active health checks, and the rebuilds that health changes ask for.
//!
//! ```text
//! supervisor ── on every table change: one probe task per backend of a pool with `health`
//! probe task ── every interval (+ jitter): connect, GET path, status in range?
//!            ── ConsecutiveCounter (rise/fall) ── transition? ─> Backend::set_healthy
//!                                                            ─> audit event + rebuild request
//! rebuilder  ── coalesces rebuild requests; rebuilds the table off the request path
//! ```
//!
//! Probes touch only the backend's atomics; a request never waits on them.
//! Backends start healthy and leave rotation after `fall` failed probes. A
//! backend named by DNS is re-resolved at every probe (and every connection).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use crate::app::App;
use crate::config::HealthConfig;
use crate::events::NewEvent;
use crate::upstream::{Backend, BackendKey};

/// Rise/fall hysteresis. Starts healthy; reports only transitions.
#[derive(Debug, Clone)]
pub struct ConsecutiveCounter {
    rise: u32,
    fall: u32,
    healthy: bool,
    streak: u32,
}

// === impl ConsecutiveCounter ===

impl ConsecutiveCounter {
    pub fn new(rise: u32, fall: u32, healthy: bool) -> ConsecutiveCounter {
        ConsecutiveCounter {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy,
            streak: 0,
        }
    }

    /// Records one probe result; returns the new state when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

/// Why a probe failed (for the event text).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
}

/// One probe: a fresh connection, `GET path`, a status within `status`.
pub async fn probe(addr: &str, hc: &HealthConfig) -> Result<StatusCode, ProbeError> {
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(ProbeError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = hc.host.as_deref().unwrap_or(addr);
        let req = Request::get(hc.path.as_str())
            .header(http::header::HOST, host)
            .header(
                http::header::USER_AGENT,
                concat!("switchyard-health/", env!("CARGO_PKG_VERSION")),
            )
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|_| ProbeError::Status(StatusCode::BAD_REQUEST))?;
        let resp = tx.send_request(req).await.map_err(ProbeError::Http)?;
        let status = resp.status();
        if (hc.status.0..=hc.status.1).contains(&status.as_u16()) {
            Ok(status)
        } else {
            Err(ProbeError::Status(status))
        }
    };
    match tokio::time::timeout(hc.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout),
    }
}

/// A small jitter in `[0, max)`, without a random crate: the key hashed with
/// a random seed, good enough to keep a fleet of probes out of lockstep.
fn jitter(key: &BackendKey, max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(std::collections::hash_map::RandomState::new().hash_one(key) % ms)
}

async fn probe_loop(app: Arc<App>, backend: Arc<Backend>, hc: HealthConfig) {
    let key = backend.key.clone();
    // Start at once, spread over a tenth of the interval (at most 250 ms).
    tokio::time::sleep(jitter(
        &key,
        (hc.interval / 10).min(Duration::from_millis(250)),
    ))
    .await;
    let mut counter = ConsecutiveCounter::new(hc.rise, hc.fall, backend.is_healthy());
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(key.addr.as_str(), &hc).await;
        if let Some(up) = counter.record(result.is_ok()) {
            if backend.set_healthy(up) {
                let what = match &result {
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
                app.events.record(NewEvent {
                    who: "health".into(),
                    kind: if up { "health.up" } else { "health.down" },
                    pool: Some(key.pool.clone()),
                    what,
                    ..Default::default()
                });
                if !up {
                    backend.close_idle();
                }
                app.request_rebuild();
            }
        } else if up_and_ejected(&backend, &result) {
            // A passing probe ends a passive ejection at once.
            backend.set_healthy(true);
            app.events.record(NewEvent {
                who: "health".into(),
                kind: "backend.restored",
                pool: Some(key.pool.clone()),
                what: format!(
                    "{}/{} backend {} back in rotation: its probe passes",
                    key.pool, key.version, key.addr
                ),
                ..Default::default()
            });
            app.request_rebuild();
        }
    }
}

fn up_and_ejected(backend: &Backend, result: &Result<StatusCode, ProbeError>) -> bool {
    result.is_ok() && backend.is_healthy() && backend.is_ejected()
}

/// Keeps one probe task per checked backend, following table changes.
pub async fn supervise(app: Arc<App>, changed: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks: HashMap<BackendKey, (HealthConfig, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let table = app.table.load_full();
        let mut wanted: HashMap<BackendKey, (HealthConfig, Arc<Backend>)> = HashMap::new();
        let config = app.effective_config();
        for (name, pool) in &table.pools {
            let Some(hc) = config.pools.get(name).and_then(|p| p.health.clone()) else {
                continue;
            };
            for v in &pool.versions {
                for b in &v.backends {
                    wanted.insert(b.key.clone(), (hc.clone(), b.clone()));
                }
            }
        }
        tasks.retain(|k, (hc, task)| {
            let keep = wanted.get(k).is_some_and(|(w, _)| w == hc);
            if !keep {
                task.abort();
            }
            keep
        });
        for (k, (hc, b)) in wanted {
            tasks.entry(k).or_insert_with(|| {
                let task = tokio::spawn(probe_loop(app.clone(), b, hc.clone()));
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

/// Performs the rebuilds that health changes and ejections request,
/// coalesced, off the request path.
pub async fn rebuilder(app: Arc<App>, wanted: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = wanted.notified() => {}
            _ = shutdown.changed() => return,
        }
        let a = app.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || a.rebuild()).await {
            tracing::error!(error = %e, "table rebuild failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_needs_fall_failures_then_rise_successes() {
        let mut c = ConsecutiveCounter::new(2, 3, true);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failure streak");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert!(!c.is_healthy());
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None, "a failure resets the success streak");
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        assert!(c.is_healthy());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut c = ConsecutiveCounter::new(1, 1, true);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(true), Some(true));
        let mut z = ConsecutiveCounter::new(0, 0, false);
        assert_eq!(z.record(true), Some(true), "zero is treated as one");
    }
}
