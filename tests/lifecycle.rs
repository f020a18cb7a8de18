//! check, reload (SIGHUP and ctl), graceful shutdown, demo.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::*;

#[test]
fn check_reports_every_error_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[server]\nhttp = \"not-an-address\"\n\n[[routes]]\nhost = \"app.test\"\npool = \"missing\"\n\n[pools.app.versions.blue]\nweight = -3\nbackends = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = run_bin(&["check", "-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = f.display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, l) in [2, 6, 9, 10].iter().zip(&lines) {
        assert!(l.starts_with(&format!("{prefix}:{line}:")), "{l}");
    }
    // Unknown key.
    std::fs::write(&f, "[server]\nhttp = \"127.0.0.1:1\"\nspeed = \"fast\"\n").unwrap();
    let out = run_bin(&["check", "-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("{prefix}:3:1:")) && text.contains("speed"),
        "{text}"
    );
    // Missing file.
    let out = run_bin(&["check", "-c", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(1));
    // The shipped examples are valid.
    for ex in ["config/switchyard.toml", "config/full.toml"] {
        let out = run_bin(&[
            "check",
            "-c",
            &format!("{}/{ex}", env!("CARGO_MANIFEST_DIR")),
        ]);
        assert!(
            out.status.success(),
            "{ex}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_file_and_keeps_the_table_on_a_bad_one() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let mut c = Client::new(p.http);

    // SIGHUP with new weights: applied.
    let text = with_admin_of(&p, &pool_config(&blue, 0, &green, 100, ""));
    std::fs::write(&p.config_path, &text).unwrap();
    p.signal("HUP");
    assert!(
        eventually(DEADLINE, || async {
            p.weights("app").await["green"] == 100
        })
        .await,
        "SIGHUP did not reload"
    );
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");

    // A broken file: ctl reload fails with every error, nothing changes.
    std::fs::write(
        &p.config_path,
        format!("{text}\n[pools.extra]\n[[routes]]\nhost = \"x y\"\npool = \"nope\"\n"),
    )
    .unwrap();
    let out = p.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at least one version") && err.contains("x y") && err.contains("nope"),
        "{err}"
    );
    assert_eq!(p.events_of("reload.failed").await.len(), 1);
    p.signal("HUP");
    // The SIGHUP reload has been refused once it is in the audit log.
    assert!(
        eventually(DEADLINE, || async {
            p.events_of("reload.failed").await.len() == 2
        })
        .await,
        "SIGHUP with a broken file was not refused"
    );
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");
    assert_eq!(p.weights("app").await["green"], 100);
    let events = String::from_utf8_lossy(&p.ctl(&["events"]).stdout).to_string();
    assert!(events.contains("reload.failed"), "{events}");

    // ctl reload of a good file with a new route works without a restart.
    std::fs::write(
        &p.config_path,
        format!("{text}\n[[routes]]\nhost = \"new.test\"\npool = \"app\"\n"),
    )
    .unwrap();
    let out = p.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.get("new.test", "/").await.unwrap().status, 200);
}

/// The proxy's `config reloaded` lines, ANSI colours taken out: whether
/// each read only what changed (`incremental=true`).
fn reloads_logged(p: &Proxy) -> Vec<bool> {
    reload_lines(p)
        .iter()
        .map(|l| l.contains("incremental=true"))
        .collect()
}

/// The proxy's `config reloaded` lines, ANSI colours taken out.
fn reload_lines(p: &Proxy) -> Vec<String> {
    let log = p.log();
    let mut plain = String::new();
    let mut chars = log.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(ch);
        }
    }
    plain
        .lines()
        .filter(|l| l.contains("config reloaded"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_only_the_pools_and_routes_an_edit_touched() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let mut c = Client::new(p.http);
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let reload = |text: &str| {
        std::fs::write(&p.config_path, text).unwrap();
        let out = p.ctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // The pool's weights swapped: read alone, and served at once.
    let swapped = text
        .replace("weight = 100", "weight = X")
        .replace("weight = 0\n", "weight = 100\n")
        .replace("weight = X", "weight = 0");
    assert_ne!(swapped, text);
    reload(&swapped);
    assert_eq!(p.weights("app").await["green"], 100);
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");
    assert_eq!(reloads_logged(&p), [true]);

    // A route added after the other: read alone too.
    let routed = swapped.replacen(
        "\n[pools.app]\n",
        "\n[[routes]]\nhost = \"new.test\"\npool = \"app\"\n\n[pools.app]\n",
        1,
    );
    assert_ne!(routed, swapped);
    reload(&routed);
    assert_eq!(c.get("new.test", "/").await.unwrap().body, "green\n");
    assert_eq!(reloads_logged(&p), [true, true]);

    // A bad weight in the pool: refused with the full read's diagnostic,
    // line and all; nothing changes.
    let bad = routed.replacen("weight = 100", "weight = -1", 1);
    std::fs::write(&p.config_path, &bad).unwrap();
    let out = p.ctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = bad.lines().position(|l| l == "weight = -1").unwrap() + 1;
    assert!(err.contains(&format!("switchyard.toml:{line}:")), "{err}");
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");

    // A comment at the top: read without the pools and routes.
    let edited = format!("# edited\n{routed}");
    reload(&edited);
    assert_eq!(reloads_logged(&p), [true, true, true]);
    // 600 pools no route names yet, added at the end: too many sections
    // for one region, matched section by section.
    let mut spare = edited.clone();
    for i in 0..600 {
        spare.push_str(&format!(
            "\n[pools.spare{i}.versions.v]\nweight = 1\nbackends = [\"{}\"]\n",
            green.addr
        ));
    }
    reload(&spare);
    assert_eq!(reloads_logged(&p), [true, true, true, true]);
    // Two edits 600 sections apart: a route among the routes, its pool at
    // the end of the file.
    let far = spare.replacen(
        "\n[pools.app]\n",
        "\n[[routes]]\nhost = \"far.test\"\npool = \"far\"\n\n[pools.app]\n",
        1,
    ) + &format!(
        "\n[pools.far.versions.v]\nweight = 1\nbackends = [\"{}\"]\n",
        blue.addr
    );
    reload(&far);
    assert_eq!(reloads_logged(&p), [true, true, true, true, true]);
    assert_eq!(c.get("far.test", "/").await.unwrap().body, "blue\n");
    // A sub-table for that route: the route is read again with it.
    let headed = far.replacen(
        "pool = \"far\"\n",
        "pool = \"far\"\n[routes.headers]\nX-Far = \"1\"\n",
        1,
    );
    reload(&headed);
    assert_eq!(reloads_logged(&p), [true, true, true, true, true, true]);
    assert_eq!(c.get("far.test", "/").await.unwrap().status, 404);
    let r = c
        .request("GET", "far.test", "/", &[("X-Far", "1")], "")
        .await
        .unwrap();
    assert_eq!(r.body, "blue\n");
    // Every spare pool's weight and the far one's changed at once, in
    // place: 1 202 sections, more than a diff takes, read one by one.
    let every = headed.replace("weight = 1\n", "weight = 2\n");
    assert_eq!(every.matches("weight = 2\n").count(), 601);
    reload(&every);
    assert_eq!(reloads_logged(&p), [true; 7]);
    assert_eq!(p.weights("far").await["v"], 2);
    assert_eq!(p.weights("spare599").await["v"], 2);
    // And a pool added too, at the end: not in place, too many sections
    // for a diff of the whole text. The walk takes every pool but the
    // last; the rest (the last pool and the new one) is matched.
    let grown = format!(
        "{every}\n[pools.grown.versions.v]\nweight = 1\nbackends = [\"{}\"]\n",
        blue.addr
    )
    .replace("weight = 2\n", "weight = 3\n");
    reload(&grown);
    assert_eq!(reloads_logged(&p), [true; 8]);
    assert_eq!(p.weights("far").await["v"], 3);
    assert_eq!(p.weights("grown").await["v"], 1);
    // Every weight again and a route at the top: the walk stops at once,
    // and the rest (all of it) is too much for a diff. The whole text is
    // read, section by section.
    let topped = format!(
        "[[routes]]\nhost = \"top.test\"\npool = \"grown\"\n\n{}",
        grown.replace("weight = 3\n", "weight = 4\n")
    );
    reload(&topped);
    let last = reload_lines(&p).pop().unwrap();
    assert!(
        last.contains("incremental=false") && last.contains("whole_by_sections=true"),
        "{last}"
    );
    assert_eq!(p.weights("far").await["v"], 4);
    assert_eq!(c.get("top.test", "/").await.unwrap().body, "blue\n");
    // A pool written as a root key: the whole file is read.
    reload(&format!(
        "pools.z.versions.v = {{ weight = 1, backends = [\"127.0.0.1:9\"] }}\n{routed}"
    ));
    assert_eq!(
        reloads_logged(&p),
        [true, true, true, true, true, true, true, true, false, false]
    );
    let last = reload_lines(&p).pop().unwrap();
    assert!(last.contains("whole_by_sections=false"), "{last}");
    assert_eq!(c.get("new.test", "/").await.unwrap().status, 200);
    assert_eq!(p.weights("app").await["green"], 100);
}

/// A config text with the running proxy's admin section.
fn with_admin_of(p: &Proxy, config: &str) -> String {
    format!(
        "{config}\n[admin]\nsocket = \"{0}/admin.sock\"\nstate = \"{0}/state.json\"\n",
        p.dir.path().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_weights_survive_reload_until_the_file_changes_them() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    assert!(p.ctl(&["switch", "app", "green"]).status.success());
    assert!(p.ctl(&["reload"]).status.success());
    assert_eq!(
        p.weights("app").await["green"],
        100,
        "reload kept the runtime weights"
    );
    // The operator edits the weights in the file: the file is newer and wins.
    let text =
        std::fs::read_to_string(&p.config_path)
            .unwrap()
            .replacen("weight = 100", "weight = 70", 1);
    std::fs::write(&p.config_path, text).unwrap();
    let out = p.ctl(&["reload"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("file's weights replace"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let w = p.weights("app").await;
    assert_eq!((w["blue"], w["green"]), (70, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    // A grace far longer than the test takes: the request is in flight
    // for as long as the test holds it.
    let config = pool_config(&blue, 100, &green, 0, "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"10m\"");
    let mut p = Proxy::start(&config).await;
    let addr = p.http;
    let slow = tokio::spawn(async move { Client::new(addr).get("app.test", "/held").await });
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["blue"]["in_flight"] == 1
        })
        .await
    );
    p.signal("TERM");
    // New connections are refused once it stops accepting...
    assert!(
        eventually(DEADLINE, || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await
    );
    // ...while the request in flight goes on: it ends when its origin does.
    assert!(!slow.is_finished());
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    blue.release(1);
    let a = slow.await.unwrap().unwrap();
    assert_eq!(a.status, 200, "in-flight request finished");
    assert_eq!(a.body, "blue held\nblue released\n");
    let status = p.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    assert!(!p.socket.exists(), "admin socket removed at exit");
}

/// The same over HTTP/2, whose streams run inside their connection's task:
/// the drain waits for each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_http2_streams_then_exits_0() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = pool_config(&blue, 100, &green, 0, "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"10m\"");
    let mut p = Proxy::start(&config).await;
    let (tx, _conn) = h2c(p.http).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tx = tx.clone();
        held.push(tokio::spawn(async move {
            let req = http::Request::get("http://app.test/held")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let r = tx.send_request(req).await.unwrap();
            let status = r.status();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&b).into_owned())
        }));
    }
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["blue"]["in_flight"] == 3
        })
        .await
    );
    p.signal("TERM");
    let addr = p.http;
    assert!(
        eventually(DEADLINE, || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await
    );
    assert!(held.iter().all(|h| !h.is_finished()));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with HTTP/2 streams in flight"
    );
    blue.release(3);
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200, "in-flight stream finished");
        assert_eq!(body, "blue held\nblue released\n");
    }
    let status = p.wait_exit().await;
    assert_eq!(status.code(), Some(0));
}

/// An idle HTTP/2 connection (its streams done) is told to go away at
/// once on SIGTERM, and the process exits: it does not wait for the
/// connection's idle timeout (10 minutes here, as is the grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_an_idle_http2_connection_at_once() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = pool_config(&blue, 100, &green, 0, "idle_timeout = \"10m\"")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"10m\"");
    let mut p = Proxy::start(&config).await;
    let (mut tx, client_conn) = h2c(p.http).await;
    for _ in 0..2 {
        let req = http::Request::get("http://app.test/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = tx.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
    }
    p.signal("TERM");
    // GOAWAY, then the connection ends: the client's side finishes.
    tokio::time::timeout(DEADLINE, client_conn)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .unwrap();
    let status = p.wait_exit().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_blue_and_switches_to_green() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    let mut child = Command::new(bin())
        .args(["demo", "--port", "0", "--ready-file"])
        .arg(&ready_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches(',')
        .to_string();
    let mut socket = None;
    for l in lines.by_ref().take(12) {
        let l = l.unwrap();
        if let Some(i) = l.find(" ctl -s ") {
            socket = l[i + 8..].split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let socket = socket.expect("demo prints ctl lines");
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // What it prints is what it bound, as its ready file says.
    assert!(eventually(DEADLINE, || async { ready_file.exists() }).await);
    let ready: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ready_file).unwrap()).unwrap();
    assert_eq!(ready["http"], addr.to_string(), "{ready}");
    assert_eq!(ready["admin"], socket, "{ready}");
    assert_eq!(ready["pid"], child.id(), "{ready}");
    let mut c = Client::new(addr);
    assert_eq!(c.get("demo.local", "/").await.unwrap().body, "blue\n");
    let out = Command::new(bin())
        .args(["ctl", "-s", &socket, "switch", "app", "green"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(c.get("demo.local", "/").await.unwrap().body, "green\n");
    let _ = child.kill();
    let _ = child.wait();
}
