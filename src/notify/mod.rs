//! Notifications: audit events sent to the `[[notify]]` webhooks.
//!
//! ```text
//! EventLog::record ──(broadcast, never blocks)──> dispatcher: which targets want it?
//!     ──(bounded queue per target, try_send)──> one worker per target, in order:
//!          POST body (JSON or Slack) ── 2xx? ── notify.sent
//!                                    └─ else ── notify.failed, retry after 1, 2, 4, 8 s
//! ```
//!
//! Off every controller's path: the rollout runner, the admin API and the
//! health checks only record events, which costs a channel send; a target
//! that is slow, down or hanging holds up only its own queue (at most
//! [`QUEUE`] events; past that, new ones are dropped and that is an event
//! too). Targets follow the config: a reload that changes `[[notify]]`
//! applies to the next event. Queues live in memory: what is still queued
//! when switchyard stops is not sent.
//!
//! | file | layer | owns |
//! |---|---|---|
//! | [`message`] | pure | which events are notified, and the bodies |
//! | `mod.rs` | service | the dispatcher, the workers, the HTTP(S) client |

pub mod message;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::{Config, NotifyConfig};
use crate::control::Control;
use crate::events::{Event, EventKind, NewEvent};

/// Events waiting per target.
pub const QUEUE: usize = 256;
/// Tries per event and target.
pub const ATTEMPTS: u32 = 5;
/// One try: connect, TLS, request and answer head.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Before the second try; doubled for each next one (1, 2, 4, 8 s).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

type Client = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One target's queue and worker.
struct Worker {
    tx: mpsc::Sender<Event>,
    task: tokio::task::JoinHandle<()>,
}

/// Subscribes to the audit log now (so that nothing recorded after this
/// call is missed) and returns the dispatcher, to run until `shutdown`.
pub fn start(c: Arc<Control>, shutdown: watch::Receiver<bool>) -> impl Future<Output = ()> {
    let events = c.events.subscribe();
    dispatch(c, events, shutdown)
}

async fn dispatch(
    c: Arc<Control>,
    mut events: broadcast::Receiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut workers: HashMap<NotifyConfig, Worker> = HashMap::new();
    let mut config: Option<Arc<Config>> = None;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.changed() => break,
        };
        let e = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let what = format!("{n} audit events went by too fast to be notified");
                c.events
                    .record(NewEvent::new("notify", EventKind::NotifyFailed, what));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Some(name) = message::notified_as(&e) else {
            continue;
        };
        let now = c.snapshot().file.clone();
        if !config.as_ref().is_some_and(|old| Arc::ptr_eq(old, &now)) {
            // Targets gone from the config stop (their queue with them).
            workers.retain(|t, w| {
                let keep = now.notify.contains(t);
                if !keep {
                    w.task.abort();
                }
                keep
            });
            config = Some(now.clone());
        }
        for t in now.notify.iter().filter(|t| t.wants(name)) {
            let w = workers
                .entry(t.clone())
                .or_insert_with(|| spawn_worker(c.clone(), t.clone()));
            if w.tx.try_send(e.clone()).is_err() {
                let what = format!(
                    "notification of #{} {} to {} dropped: {QUEUE} are already waiting",
                    e.seq,
                    e.kind,
                    t.target()
                );
                record(
                    &c,
                    &e,
                    EventKind::NotifyFailed,
                    what,
                    json!({"target": t.target(), "event": e.seq, "dropped": true}),
                );
            }
        }
    }
    for w in workers.into_values() {
        w.task.abort();
    }
}

fn spawn_worker(c: Arc<Control>, target: NotifyConfig) -> Worker {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(deliver(c, target, rx));
    Worker { tx, task }
}

/// A target's worker: its events one after the other, each tried up to
/// [`ATTEMPTS`] times, every try's outcome an audit event.
async fn deliver(c: Arc<Control>, target: NotifyConfig, mut rx: mpsc::Receiver<Event>) {
    let client = client(&target);
    while let Some(e) = rx.recv().await {
        let body = Bytes::from(message::body(target.format, &e));
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let outcome = match &client {
                Ok(client) => post(client, &target.url, body.clone()).await,
                Err(err) => Err(err.clone()),
            };
            let about = json!({"target": target.target(), "event": e.seq, "kind": e.kind, "attempt": attempt});
            match outcome {
                Ok(status) => {
                    let what = format!(
                        "notification of #{} {} sent to {} ({status}, attempt {attempt})",
                        e.seq,
                        e.kind,
                        target.target()
                    );
                    let mut after = about;
                    after["status"] = json!(status);
                    record(&c, &e, EventKind::NotifySent, what, after);
                    break;
                }
                Err(err) => {
                    let next = if attempt < ATTEMPTS {
                        format!("retrying in {}s", backoff.as_secs())
                    } else {
                        "given up".to_string()
                    };
                    let what = format!(
                        "notification of #{} {} to {} failed (attempt {attempt}/{ATTEMPTS}): {err}; {next}",
                        e.seq,
                        e.kind,
                        target.target()
                    );
                    let mut after = about;
                    after["error"] = json!(err);
                    record(&c, &e, EventKind::NotifyFailed, what, after);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}

fn record(c: &Control, about: &Event, kind: EventKind, what: String, after: serde_json::Value) {
    let mut e = NewEvent::new("notify", kind, what).after(after);
    if let Some(p) = &about.pool {
        e = e.pool(p.clone());
    }
    c.events.record(e);
}

/// An HTTP and HTTPS client; HTTPS verified as ACME's is (the system's roots
/// plus the target's `ca_file`).
fn client(target: &NotifyConfig) -> Result<Client, String> {
    let extra = match &target.ca_file {
        Some(p) => crate::tls::read_roots(p)?,
        None => Vec::new(),
    };
    let tls = crate::tls::client_config(extra)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector))
}

/// One POST; `Ok(status)` for a 2xx answer within [`ATTEMPT_TIMEOUT`].
async fn post(client: &Client, url: &str, body: Bytes) -> Result<u16, String> {
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("switchyard/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await;
    match answer {
        Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        Ok(Err(e)) => Err(error_chain(&e)),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(resp.status().as_u16()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
    }
}

/// An error and its sources on one line (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
