//! `ctl rollout ... --wait` exit codes a CI job can act on: 0 promoted, 1
//! rolled back, 2 refused or bad input (nothing changed), 3 proxy
//! unreachable past the bound; and following a rollout through a kill -9
//! and restart of the proxy.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(blue: &Upstream, green: &Upstream) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
version_header = true

[pools.app.versions.blue]
weight = 100
backends = ["{}"]

[pools.app.versions.green]
weight = 0
backends = ["{}"]

[pools.app.rollout]
steps = [20, 100]
step_duration = "3s"
min_requests = 5
cooldown = "10m"
# Judged on errors only: latency right after a restart is not the point here.
p99_tolerance = "10s"
"#,
        blue.addr, green.addr
    )
}

/// Keeps a few clients busy until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..3)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut c = Client::new(addr);
                    while !stop.load(Ordering::Relaxed) {
                        if c.get("app.test", "/").await.is_err() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `switchyard ctl -s SOCKET args...` started in the background, its
/// stderr going to a file the test can read while it runs.
struct Ctl {
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ctl {
    fn spawn(socket: &Path, args: &[&str]) -> Ctl {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let child = Command::new(bin())
            .arg("ctl")
            .arg("-s")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Ctl {
            child,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (off the runtime's workers) for the exit.
    async fn finish(self) -> (Output, String) {
        let Ctl {
            child,
            stderr,
            _dir,
        } = self;
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        let err = std::fs::read_to_string(&stderr).unwrap_or_default();
        (out, err)
    }
}

async fn rollout(p: &Proxy) -> Value {
    p.admin("GET", "/v1/pools/app/rollout", None).await.1
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_a_rollout_through_a_kill_9_and_restart_and_exits_0_when_promoted() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = Proxy::start(&config(&blue, &green)).await;
    let load = Load::start(p.http);
    let ctl = Ctl::spawn(
        &p.socket,
        &["--json", "rollout", "start", "app", "green", "--wait"],
    );
    assert!(
        eventually(DEADLINE, || async {
            rollout(&p).await["state"] == "running" && p.weights("app").await["green"] == 20
        })
        .await,
        "the rollout never reached its first step"
    );
    load.stop().await;
    p.kill9();
    // The follower notices the proxy is gone and keeps trying.
    assert!(
        eventually(DEADLINE, || async { ctl.stderr().contains("retrying") }).await,
        "{}",
        ctl.stderr()
    );
    p.restart().await;
    let load = Load::start(p.http);
    let (out, err) = ctl.finish().await;
    load.stop().await;
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v = json_out(&out);
    assert_eq!(
        v["state"], "promoted",
        "--json prints the final status: {v}"
    );
    assert_eq!(v["canary"], "green");
    let w = p.weights("app").await;
    assert_eq!((w["green"], w["blue"]), (100, 0));
    let (_, ev) = p.admin("GET", "/v1/events", None).await;
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rollout.resume"
                && e["what"].as_str().unwrap().contains("after a restart")),
        "the rollout was resumed by the restarted proxy: {ev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_1_when_rolled_back_and_2_when_refused_with_nothing_changed() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(&blue, &green)).await;
    let ctl = Ctl::spawn(
        &p.socket,
        &[
            "--json",
            "rollout",
            "start",
            "app",
            "green",
            "--step-duration",
            "1h",
            "--wait",
        ],
    );
    assert!(
        eventually(DEADLINE, || async {
            rollout(&p).await["state"] == "running"
        })
        .await
    );
    let (st, v) = p.admin("POST", "/v1/pools/app/rollout/abort", None).await;
    assert_eq!(st, 200, "{v}");
    let (out, err) = ctl.finish().await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(json_out(&out)["state"], "rolled_back");

    let events_before = p.admin("GET", "/v1/events", None).await.1["events"]
        .as_array()
        .unwrap()
        .len();
    let refused: [&[&str]; 5] = [
        // The cooldown after that rollback.
        &["rollout", "start", "app", "green", "--wait"],
        &["rollout", "start", "nope", "green", "--wait"],
        &["rollout", "start", "app", "purple", "--wait"],
        &[
            "rollout", "start", "app", "green", "--steps", "50,10", "--wait",
        ],
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--wait",
            "--unreachable-timeout",
            "soon",
        ],
    ];
    for args in refused {
        let out = p.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = rollout(&p).await;
    assert_eq!(r["state"], "rolled_back", "nothing started: {r}");
    assert_eq!(p.weights("app").await["blue"], 100);
    let events_after = p.admin("GET", "/v1/events", None).await.1["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(events_before, events_after, "nothing happened");
    // Bad input clap catches is 2 as well.
    assert_eq!(p.ctl(&["rollout", "start", "app"]).status.code(), Some(2));
    // The codes are in `ctl --help`.
    let help = run_bin(&["ctl", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("rolled back") && help.contains("60s"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_3_when_the_proxy_stays_unreachable_past_the_bound() {
    // No proxy at all.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("admin.sock");
    let ctl = Ctl::spawn(
        &missing,
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--wait",
            "--unreachable-timeout",
            "1s",
        ],
    );
    let (out, err) = ctl.finish().await;
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("could not reach"), "{err}");

    // A proxy killed mid-rollout and never started again.
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = Proxy::start(&config(&blue, &green)).await;
    let ctl = Ctl::spawn(
        &p.socket,
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--step-duration",
            "1h",
            "--wait",
            "--unreachable-timeout",
            "2s",
        ],
    );
    assert!(
        eventually(DEADLINE, || async {
            rollout(&p).await["state"] == "running"
        })
        .await
    );
    p.kill9();
    let (out, err) = ctl.finish().await;
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("retrying"), "{err}");
    // Without --wait, an unreachable proxy is 3 at once.
    let out = Command::new(bin())
        .args(["ctl", "-s"])
        .arg(&missing)
        .arg("state")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
