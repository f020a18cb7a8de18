//! Notifications: `[[notify]]` webhooks get the rollout's events in order,
//! as JSON and in Slack's form, over HTTP and HTTPS; a target that answers
//! 500 or never answers delays nothing.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;

/// How a receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    /// Reads the request, never answers.
    Hang,
}

/// A local webhook receiver: every body it was sent, in arrival order.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Plain HTTP, or HTTPS with `tls` (a server config).
    async fn start(mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let g = got.clone();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (g, acceptor) = (g.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(mode, g.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(s).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                });
            }
        });
        Receiver { addr, got, task }
    }

    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mode: Mode,
    got: Arc<Mutex<Vec<Value>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    got.lock().unwrap().push(v);
    if mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    if mode == Mode::Fail {
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    Ok(r)
}

fn config(blue: &Upstream, green: &Upstream, notify: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["{}"]

[pools.app.versions.green]
weight = 0
backends = ["{}"]

[pools.app.rollout]
steps = [50, 100]
step_duration = "1s"
min_requests = 5
p99_tolerance = "10s"

{notify}
"#,
        blue.addr, green.addr
    )
}

/// Keeps a client busy until stopped.
struct Load(Arc<AtomicBool>, tokio::task::JoinHandle<()>);

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        Load(
            stop,
            tokio::spawn(async move {
                let mut c = Client::new(addr);
                while !s.load(Ordering::Relaxed) {
                    if c.get("app.test", "/").await.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }),
        )
    }

    async fn stop(self) {
        self.0.store(true, Ordering::Relaxed);
        let _ = self.1.await;
    }
}

async fn events(p: &Proxy) -> Vec<Value> {
    p.admin("GET", "/v1/events", None).await.1["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_rollout(p: &Proxy, state: &str) {
    assert!(
        eventually(DEADLINE, || async {
            p.admin("GET", "/v1/pools/app/rollout", None).await.1["state"] == state
        })
        .await,
        "the rollout never got {state}"
    );
}

const ROLLOUT_KINDS: [&str; 4] = [
    "rollout.start",
    "rollout.step",
    "rollout.promoted",
    "rollout.rolled_back",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_the_rollout_in_order_as_json_over_http_and_slack_over_https() {
    let ca = tls_support::TestCa::new("notify test CA");
    let (chain, key) = ca.leaf(&["127.0.0.1"]);
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(Result::unwrap)
            .collect(),
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    use rustls::pki_types::pem::PemObject;
    let json = Receiver::start(Mode::Ok, None).await;
    let slack = Receiver::start(Mode::Ok, Some(Arc::new(server_tls))).await;
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let notify = format!(
        r#"[[notify]]
url = "http://{}/hooks/switchyard"

[[notify]]
url = "https://{}/services/T0/B0/secret"
format = "slack"
events = ["rollout.start", "rollout.step", "rollout.promoted", "rollout.rolled_back"]
ca_file = "{}"
"#,
        json.addr,
        slack.addr,
        ca_file.display()
    );
    let p = Proxy::start(&config(&blue, &green, &notify)).await;

    // One rollout promoted, then one rolled back.
    let load = Load::start(p.http);
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    wait_rollout(&p, "promoted").await;
    load.stop().await;
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"blue","step_duration":"1h"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(eventually(DEADLINE, || async { p.weights("app").await["blue"] == 50 }).await);
    let (st, v) = p.admin("POST", "/v1/pools/app/rollout/abort", None).await;
    assert_eq!(st, 200, "{v}");

    let want = [
        "rollout.start",
        "rollout.step",
        "rollout.step",
        "rollout.promoted",
        "rollout.start",
        "rollout.step",
        "rollout.rolled_back",
    ];
    // JSON: the audit event itself, every kind by default (weights too).
    let kinds = |bodies: &[Value]| -> Vec<String> {
        bodies
            .iter()
            .map(|b| b["event"]["kind"].as_str().unwrap_or("").to_string())
            .filter(|k| ROLLOUT_KINDS.contains(&k.as_str()))
            .collect()
    };
    assert!(
        eventually(DEADLINE, || async {
            kinds(&json.bodies()).len() >= want.len()
        })
        .await,
        "{:?}",
        json.bodies()
    );
    let bodies = json.bodies();
    assert_eq!(kinds(&bodies), want, "in order");
    let seqs: Vec<u64> = bodies
        .iter()
        .map(|b| b["event"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(bodies.iter().any(|b| b["event"]["kind"] == "weights"));
    let steps: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["event"]["kind"] == "rollout.step")
        .map(|b| &b["event"]["after"]["percent"])
        .collect();
    assert_eq!(steps, [50, 100, 50]);
    assert!(bodies
        .iter()
        .all(|b| b["source"] == "switchyard" && b["text"].as_str().unwrap().starts_with("[app] ")));

    // Slack: only what it asked for, in the same order, as {"text": ...}.
    let slack_kinds = |bodies: &[Value]| -> Vec<String> {
        bodies
            .iter()
            .map(|b| {
                let text = b["text"].as_str().unwrap_or("");
                text.split('`').nth(3).unwrap_or("").to_string()
            })
            .collect()
    };
    assert!(
        eventually(DEADLINE, || async { slack.bodies().len() >= want.len() }).await,
        "{:?}",
        slack.bodies()
    );
    let bodies = slack.bodies();
    assert_eq!(slack_kinds(&bodies), want, "{bodies:?}");
    assert!(
        bodies.iter().all(|b| b.as_object().unwrap().len() == 1),
        "{bodies:?}"
    );
    assert!(
        bodies[6]["text"]
            .as_str()
            .unwrap()
            .starts_with(":rotating_light: *switchyard* pool `app`"),
        "{bodies:?}"
    );

    // Each delivery is in the audit log, without the secret part of the URL.
    let ev = events(&p).await;
    let sent: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "notify.sent").collect();
    assert!(sent.len() >= 2 * want.len(), "{sent:?}");
    assert!(sent
        .iter()
        .any(|e| e["after"]["target"] == format!("https://{}/…", slack.addr)));
    assert!(
        !ev.iter().any(|e| e.to_string().contains("secret")),
        "the URL's path is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_receiver_delays_no_rollback() {
    let failing = Receiver::start(Mode::Fail, None).await;
    let hanging = Receiver::start(Mode::Hang, None).await;
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    // Half of green's answers are 500s (never 5 in a row: no ejection).
    green.fail_every.store(2, Ordering::SeqCst);
    let notify = format!(
        "[[notify]]\nurl = \"http://{}/\"\n\n[[notify]]\nurl = \"http://{}/\"\n",
        failing.addr, hanging.addr
    );
    let p = Proxy::start(&config(&blue, &green, &notify)).await;
    let load = Load::start(p.http);
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // The first judgement fails and rolls back.
    wait_rollout(&p, "rolled_back").await;
    load.stop().await;
    assert_eq!(p.weights("app").await["blue"], 100);
    let ev = events(&p).await;
    let seq_of = |pred: &dyn Fn(&Value) -> bool| {
        ev.iter()
            .find(|e| pred(e))
            .map(|e| e["seq"].as_u64().unwrap())
    };
    let rolled_back = seq_of(&|e| e["kind"] == "rollout.rolled_back").unwrap();
    let judged = seq_of(&|e| e["kind"] == "rollout.judgement" && e["after"]["verdict"] == "fail")
        .expect("a failed judgement");
    assert!(judged < rolled_back);
    // The hanging target was sent the start and never answered: its first
    // attempt had not even timed out when the rollout was over.
    assert!(hanging
        .bodies()
        .iter()
        .any(|b| b["event"]["kind"] == "rollout.start"));
    let hang_target = format!("http://{}/…", hanging.addr);
    let first_hang_outcome = seq_of(&|e| {
        e["kind"].as_str().unwrap_or("").starts_with("notify.")
            && e["after"]["target"] == hang_target
    });
    assert!(
        first_hang_outcome.is_none_or(|s| s > rolled_back),
        "the rollback waited for nobody: {ev:?}"
    );
    // The failing target's attempts are each an event, retried with backoff.
    let fail_target = format!("http://{}/…", failing.addr);
    assert!(
        eventually(DEADLINE, || async {
            let ev = events(&p).await;
            let failed: Vec<Value> = ev
                .into_iter()
                .filter(|e| e["kind"] == "notify.failed" && e["after"]["target"] == fail_target)
                .collect();
            failed.iter().any(|e| e["after"]["attempt"] == 2)
                && failed
                    .iter()
                    .all(|e| e["what"].as_str().unwrap().contains("500"))
        })
        .await,
        "{:?}",
        events(&p).await
    );
    let ev = events(&p).await;
    let first = ev
        .iter()
        .find(|e| e["kind"] == "notify.failed" && e["after"]["target"] == fail_target)
        .unwrap();
    assert!(
        first["what"].as_str().unwrap().contains("attempt 1/5"),
        "{first}"
    );
    assert!(
        first["what"].as_str().unwrap().contains("retrying in 1s"),
        "{first}"
    );
    assert!(failing.bodies().len() >= 2, "tried again");
}
