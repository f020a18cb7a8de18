//! Docker discovery against a real engine (Debian's `docker.io`, installed
//! by `scripts/setup.sh`; a machine without `dockerd` fails these tests).
//!
//! Each test starts its own `dockerd` on private paths (socket, data root,
//! exec root in a temp dir) with `--bridge=none --iptables=false
//! --ip-forward=false`: it changes nothing on the host (no docker0, no
//! iptables chains, no ip_forward), and two of them never meet. Containers
//! run with `--network host` and serve on 127.0.0.1, so every request stays
//! on loopback. The image is made at test time from the static busybox
//! (`docker import`, no registry). Each daemon is stopped by pid when its
//! handle drops, its leftover mounts unmounted.
//!
//! Tests run one at a time (a daemon each is heavy on a 2-core machine).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{eventually, Client, Proxy, DEADLINE};

/// One test at a time (an async lock: each test has its own runtime).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The docker CLI: Debian's when installed, else the one on PATH.
fn docker_cli() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// A private `dockerd`.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    live_restore: bool,
}

impl Dockerd {
    /// Starts a daemon and makes the test image; panics (fails the test)
    /// when `dockerd` is missing or does not come up.
    fn start(live_restore: bool) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("sy-dockerd")
            .tempdir()
            .unwrap();
        let mut d = Dockerd {
            dir,
            child: None,
            live_restore,
        };
        d.spawn();
        d.make_image();
        d
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn spawn(&mut self) {
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("dockerd.log"))
            .unwrap();
        let mut c = Command::new("dockerd");
        c.arg("--exec-opt")
            .arg("native.cgroupdriver=cgroupfs")
            .arg("--host")
            .arg(self.endpoint())
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdout(Stdio::null())
            .stderr(log);
        if self.live_restore {
            c.arg("--live-restore");
        }
        let child = c.spawn().unwrap_or_else(|e| {
            panic!("cannot start dockerd ({e}): install docker.io (scripts/setup.sh)")
        });
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self
                .cli(&["version", "--format", "{{.Server.APIVersion}}"])
                .status
                .success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("dockerd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H ... args`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .arg("-H")
            .arg(self.endpoint())
            .args(args)
            .output()
            .unwrap()
    }

    /// `docker args`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `sy-test:local`: the static busybox, `serve` answering `$VERSION` on
    /// 127.0.0.1:`$PORT` and creating `/tmp/ok` (the health file).
    fn make_image(&self) {
        let root = self.dir.path().join("rootfs");
        for d in ["bin", "www", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("/bin/busybox (static): install busybox-static (scripts/setup.sh)");
        for a in ["sh", "httpd", "wget", "test", "rm", "touch", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        let serve = "#!/bin/sh\necho \"$VERSION\" >/www/index.html\ntouch /tmp/ok\nexec /bin/busybox httpd -f -p \"127.0.0.1:$PORT\" -h /www\n";
        std::fs::write(root.join("bin/serve"), serve).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("bin/serve"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let script = format!(
            "tar -C '{}' -c . | {} -H '{}' import --change 'CMD [\"/bin/serve\"]' --change 'ENV PORT=8080' - sy-test:local",
            root.display(),
            docker_cli(),
            self.endpoint()
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the daemon by pid (SIGTERM, then SIGKILL after the deadline).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Mounts the daemon left under its dir (the netns of the host network,
    /// overlay mounts of containers killed with it), deepest first.
    fn unmount_leftovers(&self) {
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.ok_quiet(&["ps", "-aq"]);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.split_whitespace());
                let _ = self.cli(&args);
            }
        }
        self.stop();
        self.unmount_leftovers();
    }
}

impl Dockerd {
    fn ok_quiet(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli(args).stdout)
            .trim()
            .to_string()
    }
}

/// A port for a container on the host network: from 20000-29999, below the
/// kernel's ephemeral range (where every `:0` bind of the tests lands), and
/// free when picked. A container must be told its port before it binds it.
fn container_port() -> u16 {
    loop {
        let p = fastrand::u16(20_000..30_000);
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// The proxy with `[providers.docker]` on `d`.
fn config(endpoint: &str, labels: &str, extra: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
shutdown_grace = "5s"

[metrics]
listen = "127.0.0.1:0"

[providers.docker]
endpoint = "{endpoint}"
labels = "{labels}"
{extra}
"#
    )
}

/// `docker run -d` arguments for a labelled container on `port`.
fn run_args<'a>(
    name: &'a str,
    version: &'a str,
    port: &'a str,
    labels: &'a [String],
) -> Vec<String> {
    let mut a: Vec<String> = ["run", "-d", "--init", "--network", "host", "--name", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend([
        "-e".into(),
        format!("PORT={port}"),
        "-e".into(),
        format!("VERSION={version}"),
    ]);
    for l in labels {
        a.push("--label".into());
        a.push(l.clone());
    }
    a.push("sy-test:local".into());
    a
}

fn labels(pool: &str, version: &str, port: u16, more: &[&str]) -> Vec<String> {
    let mut v = vec![
        "switchyard.enable=true".to_string(),
        format!("switchyard.pool={pool}"),
        format!("switchyard.version={version}"),
        format!("switchyard.port={port}"),
        "switchyard.host=app.test".to_string(),
    ];
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The body of `GET /` on app.test, trimmed, or the error.
async fn served(c: &mut Client, host: &str) -> Result<(u16, String), String> {
    let a = c.get(host, "/").await?;
    Ok((a.status.as_u16(), a.body.trim().to_string()))
}

/// Backends of `pool`/`version` in `GET /v1/state`.
async fn backends(p: &Proxy, pool: &str, version: &str) -> Vec<String> {
    let s = p.state().await;
    s["pools"][pool]["versions"][version]["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["addr"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Counts the versions that answer `n` requests.
async fn split(p: &Proxy, host: &str, n: usize) -> HashMap<String, usize> {
    let mut c = Client::new(p.http);
    let mut out = HashMap::new();
    for _ in 0..n {
        let (status, body) = served(&mut c, host).await.unwrap();
        assert_eq!(status, 200, "{body}");
        *out.entry(body).or_default() += 1;
    }
    out
}

async fn provider(p: &Proxy) -> serde_json::Value {
    p.state().await["providers"]["docker"].clone()
}

/// Starts `name` with `docker start` and measures how long until the proxy
/// routes to it, and (polled in the same loop) until the container itself
/// answers: the difference is discovery's share.
async fn timed_start(
    d: &Dockerd,
    p: &Proxy,
    name: &str,
    port: u16,
    version: &str,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut cli = Command::new(docker_cli())
        .arg("-H")
        .arg(d.endpoint())
        .args(["start", name])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut own = None;
    let mut c = Client::new(p.http);
    let direct: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut dc = Client::new(direct);
    let deadline = Instant::now() + DEADLINE;
    let routed = loop {
        if own.is_none() && dc.get("x", "/").await.is_ok_and(|a| a.status == 200) {
            own = Some(started.elapsed());
        }
        if let Ok((200, body)) = served(&mut c, "app.test").await {
            if body == version {
                break started.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} never routed:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(cli.wait().unwrap().success(), "docker start {name}");
    (routed, own.unwrap_or(routed))
}

// Multi-threaded: the docker CLI and dockerd calls block a worker, the
// load keeps running on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_containers_are_routed_split_by_weight_and_leave_on_stop() {
    let _serial = SERIAL.lock().await;
    let d = Dockerd::start(false);
    let mut p = Proxy::start(&config(&d.endpoint(), "switchyard", "")).await;
    assert!(
        eventually(DEADLINE, || async { provider(&p).await["up"] == true }).await,
        "docker never up: {}\n{}",
        provider(&p).await,
        p.log()
    );

    // blue: created, then started under the clock.
    let blue_port = container_port();
    let bl = labels("app", "blue", blue_port, &["switchyard.weight=1"]);
    let mut create = run_args("sy-blue", "blue", &blue_port.to_string(), &bl);
    create[0] = "create".into();
    create.remove(1);
    d.ok(&strs(&create));
    let (routed, own) = timed_start(&d, &p, "sy-blue", blue_port, "blue").await;
    eprintln!(
        "FIGURE routed {:.3} s after `docker start` (the container itself answered after {:.3} s)",
        routed.as_secs_f64(),
        own.as_secs_f64()
    );

    // green at weight 3: the split is exactly 1:3.
    let green_port = container_port();
    let gl = labels("app", "green", green_port, &["switchyard.weight=3"]);
    d.ok(&strs(&run_args(
        "sy-green",
        "green",
        &green_port.to_string(),
        &gl,
    )));
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "green").await.len() == 1
        })
        .await,
        "green never discovered: {}",
        p.state().await
    );
    let s = split(&p, "app.test", 100).await;
    assert_eq!(
        (s.get("blue"), s.get("green")),
        (Some(&25), Some(&75)),
        "{s:?}"
    );
    let added = p.events_of("version.add").await;
    assert!(
        added.iter().any(|e| e["what"]
            .as_str()
            .unwrap()
            .contains("discovered version green of app")),
        "{added:?}"
    );

    // docker stop of green under load: not one failed request.
    let load = tokio::spawn(load(p.http, Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = Instant::now();
    d.ok(&["stop", "sy-green"]);
    let stop_took = stopping.elapsed();
    let (ok, failed, after_stop) = load.await.unwrap();
    eprintln!(
        "FIGURE docker stop took {:.3} s; {ok} requests under load, {} failed",
        stop_took.as_secs_f64(),
        failed.len()
    );
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "failed requests while green stopped"
    );
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert!(
        after_stop.iter().all(|v| v == "blue"),
        "after the stop only blue: {after_stop:?}"
    );
    assert!(backends(&p, "app", "green").await.is_empty());
    assert_eq!(
        p.weights("app").await["green"],
        3,
        "the version and its weight stay"
    );

    // Runtime weights win over labels from then on, and survive a restart.
    let out = p.ctl(&["weights", "app", "blue=100", "green=0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["start", "sy-green"]);
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "green").await.len() == 1
        })
        .await
    );
    assert_eq!(p.weights("app").await["green"], 0);
    p.restart().await;
    assert_eq!(
        p.weights("app").await["green"],
        0,
        "after a restart: {}",
        p.state().await
    );
    let s = split(&p, "app.test", 20).await;
    assert_eq!(s.get("blue"), Some(&20), "{s:?}");
    // A pinned request still reaches green.
    let mut c = Client::new(p.http);
    let a = c
        .request(
            "GET",
            "app.test",
            "/",
            &[("X-Switchyard-Version", "green")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(a.body.trim(), "green");
    let text = String::from_utf8_lossy(&p.ctl(&["state"]).stdout).to_string();
    assert!(
        text.contains("pool app (discovered by docker)") && text.contains("provider docker: up"),
        "{text}"
    );
}

/// Requests on 4 connections for `dur`: (answered 200, failures, versions
/// served in the last quarter).
async fn load(addr: std::net::SocketAddr, dur: Duration) -> (usize, Vec<String>, Vec<String>) {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            let (mut ok, mut failed, mut late) = (0, Vec::new(), Vec::new());
            while Instant::now() < end {
                match served(&mut c, "app.test").await {
                    Ok((200, body)) => {
                        ok += 1;
                        if end.saturating_duration_since(Instant::now()) < dur / 4 {
                            late.push(body);
                        }
                    }
                    Ok((status, body)) => failed.push(format!("{status} {body}")),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed, late)
        }));
    }
    let mut all = (0, Vec::new(), Vec::new());
    for t in tasks {
        let (ok, f, l) = t.await.unwrap();
        all.0 += ok;
        all.1.extend(f);
        all.2.extend(l);
    }
    all
}

// Multi-threaded: the docker CLI and dockerd calls block a worker, the
// load keeps running on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_starting_takes_no_traffic_unhealthy_leaves_and_conflicts_are_refused() {
    let _serial = SERIAL.lock().await;
    let d = Dockerd::start(false);
    let blue_port = container_port();
    // The file defines pool `files`: a container claiming it is refused.
    let extra = format!(
        r#"
[[routes]]
host = "files.test"
pool = "files"
[pools.files.versions.v1]
backends = ["127.0.0.1:{blue_port}"]
weight = 1
"#
    );
    let p = Proxy::start(&config(&d.endpoint(), "switchyard", &extra)).await;
    let bl = labels("app", "blue", blue_port, &[]);
    d.ok(&strs(&run_args(
        "sy-blue",
        "blue",
        &blue_port.to_string(),
        &bl,
    )));
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "blue").await.len() == 1
        })
        .await
    );

    // green has a HEALTHCHECK that passes only after a while (`sleep 3`):
    // while `starting` it is a version without backends.
    let green_port = container_port();
    let gl = labels("app", "green", green_port, &["switchyard.weight=100"]);
    let mut args = run_args("sy-green", "green", &green_port.to_string(), &gl);
    let image = args.pop().unwrap();
    args.extend(
        [
            "--health-cmd",
            "test -f /tmp/ok && test -f /tmp/ready",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-start-period",
            "60s",
        ]
        .map(String::from),
    );
    args.push(image);
    d.ok(&strs(&args));
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["green"].is_object()
        })
        .await
    );
    assert!(
        backends(&p, "app", "green").await.is_empty(),
        "starting: no backend"
    );
    let s = split(&p, "app.test", 10).await;
    assert_eq!(
        s.get("blue"),
        Some(&10),
        "a starting container takes no traffic: {s:?}"
    );
    d.ok(&["exec", "sy-green", "touch", "/tmp/ready"]);
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "green").await.len() == 1
        })
        .await,
        "healthy green joins: {}",
        p.state().await
    );
    let s = split(&p, "app.test", 20).await;
    assert_eq!(
        (s.get("blue"), s.get("green")),
        (Some(&10), Some(&10)),
        "{s:?}"
    );

    // Unhealthy: out of rotation (the container still runs).
    d.ok(&["exec", "sy-green", "rm", "/tmp/ok"]);
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "green").await.is_empty()
        })
        .await,
        "unhealthy green leaves: {}",
        p.state().await
    );
    let s = split(&p, "app.test", 10).await;
    assert_eq!(s.get("blue"), Some(&10), "{s:?}");
    let gone = p.events_of("backend.gone").await;
    assert!(!gone.is_empty());

    // A container labelled with the file's pool: refused, naming both.
    let other = container_port();
    let fl = labels("files", "v2", other, &[]);
    d.ok(&strs(&run_args("sy-files", "v2", &other.to_string(), &fl)));
    assert!(
        eventually(DEADLINE, || async {
            provider(&p).await["refused"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        })
        .await
    );
    let refused = provider(&p).await["refused"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("sy-files") && refused.contains("[pools.files]"),
        "{refused}"
    );
    assert_eq!(
        p.weights("files").await.len(),
        1,
        "the file's pool is untouched"
    );
    assert!(!p.events_of("provider.refused").await.is_empty());
}

// Multi-threaded: the docker CLI and dockerd calls block a worker, the
// load keeps running on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_at_start_or_later_keeps_serving_and_resyncs() {
    let _serial = SERIAL.lock().await;
    // The proxy starts first: Docker is not there yet.
    let mut d = Dockerd {
        dir: tempfile::Builder::new()
            .prefix("sy-dockerd")
            .tempdir()
            .unwrap(),
        child: None,
        live_restore: true,
    };
    let mut p = Proxy::start(&config(&d.endpoint(), "switchyard", "")).await;
    let v = provider(&p).await;
    assert_eq!(v["up"], false, "{v}");
    let metrics_cfg = p.state().await;
    assert!(metrics_cfg["listeners"]["http"].is_string());
    d.spawn();
    d.make_image();
    assert!(
        eventually(DEADLINE, || async { provider(&p).await["up"] == true }).await,
        "docker found once it came up: {}\n{}",
        provider(&p).await,
        p.log()
    );
    let blue_port = container_port();
    let bl = labels("app", "blue", blue_port, &[]);
    d.ok(&strs(&run_args(
        "sy-blue",
        "blue",
        &blue_port.to_string(),
        &bl,
    )));
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "blue").await.len() == 1
        })
        .await
    );

    // dockerd stops (live-restore keeps the container running): traffic
    // never stops, the provider is down, the metric says so.
    let load_task = tokio::spawn(load(p.http, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.stop();
    assert!(
        eventually(DEADLINE, || async { provider(&p).await["up"] == false }).await,
        "provider down: {}",
        provider(&p).await
    );
    let text = String::from_utf8_lossy(&p.ctl(&["state"]).stdout).to_string();
    assert!(
        text.contains("provider docker: DOWN") && text.contains("error:"),
        "{text}"
    );
    d.spawn();
    let (ok, failed, _) = load_task.await.unwrap();
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "requests failed while dockerd restarted"
    );
    assert!(ok > 50, "{ok}");
    assert!(
        eventually(DEADLINE, || async { provider(&p).await["up"] == true }).await,
        "provider back: {}\n{}",
        provider(&p).await,
        p.log()
    );
    assert_eq!(
        backends(&p, "app", "blue").await.len(),
        1,
        "blue kept across the resync"
    );
    assert_eq!(p.events_of("provider.down").await.len(), 1);

    // Discovery resumes: a new container is routed.
    let green_port = container_port();
    let gl = labels("app", "green", green_port, &["switchyard.weight=100"]);
    d.ok(&strs(&run_args(
        "sy-green",
        "green",
        &green_port.to_string(),
        &gl,
    )));
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, "app", "green").await.len() == 1
        })
        .await
    );

    // A restart of the proxy while Docker is away serves the last known backends.
    d.stop();
    p.restart().await;
    assert_eq!(provider(&p).await["up"], false);
    let s = split(&p, "app.test", 20).await;
    assert_eq!(
        (s.get("blue"), s.get("green")),
        (Some(&10), Some(&10)),
        "{s:?}"
    );
    let metrics = metrics_text(&p).await;
    assert!(
        metrics.contains("switchyard_provider_up{provider=\"docker\"} 0"),
        "{metrics}"
    );
    d.spawn();
    assert!(eventually(DEADLINE, || async { provider(&p).await["up"] == true }).await);
    let metrics = metrics_text(&p).await;
    assert!(
        metrics.contains("switchyard_provider_up{provider=\"docker\"} 1"),
        "{metrics}"
    );
}

async fn metrics_text(p: &Proxy) -> String {
    let addr = p.metrics.expect("a metrics listener");
    let mut c = Client::new(addr);
    c.get("x", "/metrics").await.unwrap().body
}

// Multi-threaded: the docker CLI and dockerd calls block a worker, the
// load keeps running on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traefik_compose_file_routes_by_its_weights_and_switch_survives_a_restart() {
    let _serial = SERIAL.lock().await;
    let d = Dockerd::start(false);
    let mut p = Proxy::start(&config(&d.endpoint(), "traefik", "")).await;
    let compose =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker/traefik-pi.yml");
    let ports = [container_port(), container_port(), container_port()];
    let out = Command::new("docker-compose")
        .arg("-p")
        .arg("sytraefik")
        .arg("-f")
        .arg(&compose)
        .args(["up", "-d"])
        .env("DOCKER_HOST", d.endpoint())
        .env("BLUE_PORT", ports[0].to_string())
        .env("GREEN_PORT", ports[1].to_string())
        .env("DB_PORT", ports[2].to_string())
        .output()
        .expect("docker-compose: install it (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = "app.test";
    assert!(
        eventually(DEADLINE, || async {
            backends(&p, pool, "app-blue").await.len() == 1
                && backends(&p, pool, "app-green").await.len() == 1
        })
        .await,
        "both discovered: {}\n{}",
        p.state().await,
        p.log()
    );
    assert_eq!(
        p.state().await["pools"].as_object().unwrap().len(),
        1,
        "db is not discovered"
    );
    let s = split(&p, "app.test", 100).await;
    assert_eq!(
        (s.get("blue"), s.get("green")),
        (Some(&25), Some(&75)),
        "{s:?}"
    );

    let out = p.ctl(&["switch", pool, "app-green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = split(&p, "app.test", 20).await;
    assert_eq!(s.get("green"), Some(&20), "{s:?}");
    p.restart().await;
    assert!(eventually(DEADLINE, || async { provider(&p).await["up"] == true }).await);
    let s = split(&p, "app.test", 20).await;
    assert_eq!(s.get("green"), Some(&20), "after a restart: {s:?}");
    assert_eq!(p.weights(pool).await["app-blue"], 0);
}
