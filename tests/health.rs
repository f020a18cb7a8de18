//! Health checks, fallback to the stable version, ejection, draining.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

// The probe timeout is the interval (its maximum): a probe that a loaded
// machine answers slowly is not a failure.
const HEALTH: &str =
    r#"health = { path = "/health", interval = "200ms", timeout = "200ms", rise = 2, fall = 2 }"#;

fn checked_pool(versions: &[(&str, u32, &[&Upstream])], pool_extra: &str) -> String {
    let mut s = format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nrequest_timeout = \"10s\"\nshutdown_grace = \"60s\"\n\n[[routes]]\nhost = \"app.test\"\npool = \"app\"\n\n[pools.app]\nversion_header = true\n{HEALTH}\n{pool_extra}\n"
    );
    for (name, w, ups) in versions {
        let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
        s.push_str(&format!(
            "\n[pools.app.versions.{name}]\nweight = {w}\nbackends = [{}]\n",
            list.join(", ")
        ));
    }
    s
}

async fn backend_state(p: &Proxy, version: &str, addr: std::net::SocketAddr) -> serde_json::Value {
    let s = p.state().await;
    s["pools"]["app"]["versions"][version]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_request() {
    let b1 = Upstream::start("blue").await;
    let b2 = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&checked_pool(
        &[("blue", 100, &[&b1, &b2]), ("green", 0, &[&green])],
        "",
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), p.http);
        clients.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            while !stop.load(Ordering::Relaxed) {
                match c.get("app.test", "/").await {
                    Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Under load: both backends serve.
    assert!(eventually(DEADLINE, || async { b1.hits() > 100 && b2.hits() > 100 }).await);
    b1.kill();
    let down = eventually(DEADLINE, || async {
        !backend_state(&p, "blue", b1.addr).await["healthy"]
            .as_bool()
            .unwrap()
    })
    .await;
    assert!(down, "the killed backend never showed down");
    // The load goes on with one backend down.
    let at_down = ok.load(Ordering::Relaxed);
    assert!(
        eventually(DEADLINE, || async {
            ok.load(Ordering::Relaxed) > at_down + 500
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests (of {} ok)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 500);
    let events = String::from_utf8_lossy(&p.ctl(&["events"]).stdout).to_string();
    assert!(events.contains("health.down"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_version_leaves_the_split_and_comes_back() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&checked_pool(
        &[("blue", 50, &[&blue]), ("green", 50, &[&green])],
        "",
    ))
    .await;
    green.healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["green"]["effective_weight"] == 0
        })
        .await
    );
    let mut c = Client::new(p.http);
    let before = green.hits();
    for _ in 0..100 {
        assert_eq!(c.get("app.test", "/").await.unwrap().body, "blue\n");
    }
    assert_eq!(green.hits(), before);
    assert_eq!(
        p.state().await["pools"]["app"]["versions"]["blue"]["share_percent"],
        100.0
    );
    // Weights are untouched: only the effective ones changed.
    assert_eq!(p.weights("app").await["green"], 50);

    green.healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["green"]["effective_weight"] == 50
        })
        .await
    );
    let (b0, g0) = (blue.hits(), green.hits());
    for _ in 0..100 {
        c.get("app.test", "/").await.unwrap();
    }
    assert_eq!(
        (blue.hits() - b0, green.hits() - g0),
        (50, 50),
        "the configured split is back"
    );
    let events = String::from_utf8_lossy(&p.ctl(&["events"]).stdout).to_string();
    assert!(
        events.contains("health.down") && events.contains("health.up"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_versions_down_gives_503_or_fails_open() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.healthy.store(false, Ordering::SeqCst);
    b.healthy.store(false, Ordering::SeqCst);
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "strict.test"
pool = "strict"
[[routes]]
host = "open.test"
pool = "open"
[pools.strict]
{HEALTH}
[pools.strict.versions.v1]
weight = 1
backends = ["{}"]
[pools.open]
on_all_down = "fail_open"
{HEALTH}
[pools.open.versions.v1]
weight = 1
backends = ["{}"]
"#,
        a.addr, b.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["strict"]["versions"]["v1"]["effective_weight"] == 0
        })
        .await
    );
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["open"]["versions"]["v1"]["effective_weight"] == 0
        })
        .await
    );
    let r = c.get("strict.test", "/").await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("pool strict"), "{}", r.body);
    let r = c.get("open.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_resetting_backends_do_not_eject_a_healthy_sibling() {
    let slow = Upstream::start("slow").await;
    // Far slower than the request timeout: the subject of the test.
    slow.delay_ms.store(600_000, Ordering::SeqCst);
    let good = Upstream::start("good").await;
    let (reset, _reset_task) = start_resetting().await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
request_timeout = "2s"
[[routes]]
host = "slow.test"
pool = "slow"
[[routes]]
host = "reset.test"
pool = "reset"
[pools.slow]
retry = 0
passive = {{ failures = 2, ejection = "1m" }}
[pools.slow.versions.v1]
weight = 1
backends = ["{}", "{}"]
[pools.reset]
retry = 0
passive = {{ failures = 2, ejection = "1m" }}
[pools.reset.versions.v1]
weight = 1
backends = ["{reset}", "{}"]
"#,
        slow.addr, good.addr, good.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(c.get("slow.test", "/").await.unwrap().status.as_u16());
        statuses.push(
            c.request("POST", "reset.test", "/echo", &[], "x")
                .await
                .unwrap()
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&504), "{statuses:?}");
    assert!(statuses.contains(&502), "{statuses:?}");
    let s = p.state().await;
    for pool in ["slow", "reset"] {
        let backends = s["pools"][pool]["versions"]["v1"]["backends"]
            .as_array()
            .unwrap();
        let good_b = backends
            .iter()
            .find(|b| b["addr"] == good.addr.to_string())
            .unwrap();
        let bad_b = backends
            .iter()
            .find(|b| b["addr"] != good.addr.to_string())
            .unwrap();
        assert_eq!(good_b["available"], true, "{pool}: {backends:?}");
        assert_eq!(
            bad_b["ejected"], true,
            "{pool}: the failing backend is ejected: {backends:?}"
        );
    }
    // Once the bad ones are out, every request succeeds.
    for _ in 0..10 {
        assert_eq!(c.get("slow.test", "/").await.unwrap().status, 200);
        assert_eq!(
            c.request("POST", "reset.test", "/echo", &[], "x")
                .await
                .unwrap()
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_stream_and_a_websocket_survive_switch_and_reload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&checked_pool(
        &[("blue", 100, &[&blue]), ("green", 0, &[&green])],
        "",
    ))
    .await;

    let addr = p.http;
    let stream = tokio::spawn(async move {
        let mut c = Client::new(addr);
        c.get("app.test", "/stream?chunks=30&ms=1000").await
    });
    let mut ws = tokio::net::TcpStream::connect(p.http).await.unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    // Both are on blue (the stream's request and the upgrade) before the switch.
    assert!(eventually(DEADLINE, || async { blue.hits() >= 2 }).await);
    assert!(p.ctl(&["switch", "app", "green"]).status.success());
    assert!(p.ctl(&["reload"]).status.success());
    let mut c = Client::new(p.http);
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");

    // The WebSocket keeps echoing through the switch and reload, for the
    // whole life of the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30) + DEADLINE;
    let mut n = 0;
    while !stream.is_finished() {
        let msg = format!("ping {n}");
        ws.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(DEADLINE, ws.read_exact(&mut buf))
            .await
            .expect("echo")
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
        n += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never ended"
        );
        // A ping every half second over the stream's 30 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(n > 1, "the WebSocket was used while the stream lasted");
    let a = stream.await.unwrap().unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body.lines().count(), 30, "the stream finished normally");
    assert!(a.body.contains("blue chunk 29"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_version_waits_for_its_requests_to_drain() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&checked_pool(
        &[("blue", 100, &[&blue]), ("green", 0, &[&green])],
        "pin_header = \"X-Switchyard-Version\"",
    ))
    .await;
    let addr = p.http;
    // A request to green that lasts until the test lets its origin finish.
    let slow = tokio::spawn(async move {
        let mut c = Client::new(addr);
        c.request(
            "GET",
            "app.test",
            "/held",
            &[("x-switchyard-version", "green")],
            "",
        )
        .await
    });
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]["green"]["in_flight"] == 1
        })
        .await
    );
    let released = Arc::new(AtomicBool::new(false));
    let delete = {
        let (socket, released) = (p.socket.clone(), released.clone());
        tokio::spawn(async move {
            let r = admin(&socket, "DELETE", "/v1/pools/app/versions/green", None).await;
            (r, released.load(Ordering::SeqCst))
        })
    };
    // The version is gone from the table: the DELETE is being handled...
    assert!(
        eventually(DEADLINE, || async {
            p.state().await["pools"]["app"]["versions"]
                .get("green")
                .is_none()
        })
        .await
    );
    // ...and not answered while its request is in flight.
    assert!(!delete.is_finished(), "answered before the request drained");
    released.store(true, Ordering::SeqCst);
    green.release(1);
    let (reply, after_release) = delete.await.unwrap();
    let (status, reply) = reply.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["drained"], true, "{reply}");
    assert!(after_release, "answered before the request drained");
    let a = slow.await.unwrap().unwrap();
    assert_eq!(a.body, "green held\ngreen released\n");
    assert!(p.state().await["pools"]["app"]["versions"]
        .get("green")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_ends_with_a_passing_probe_or_its_time() {
    let checked = Upstream::start("checked").await;
    let plain = Upstream::start("plain").await;
    checked.failing.store(true, Ordering::SeqCst);
    plain.failing.store(true, Ordering::SeqCst);
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "checked.test"
pool = "checked"
[[routes]]
host = "plain.test"
pool = "plain"
[pools.checked]
retry = 0
health = {{ path = "/health", interval = "300ms", timeout = "100ms", rise = 1, fall = 1 }}
passive = {{ failures = 2, ejection = "1h" }}
[pools.checked.versions.v1]
weight = 1
backends = ["{}"]
[pools.plain]
retry = 0
passive = {{ failures = 2, ejection = "1s" }}
[pools.plain.versions.v1]
weight = 1
backends = ["{}"]
"#,
        checked.addr, plain.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    for host in ["checked.test", "plain.test"] {
        for _ in 0..2 {
            assert_eq!(c.get(host, "/").await.unwrap().status, 500);
        }
    }
    let ejected = |pool: &'static str| {
        let p = &p;
        async move { p.state().await["pools"][pool]["versions"]["v1"]["backends"][0]["ejected"] == true }
    };
    let events = |kind: &'static str, pool: &'static str| {
        let p = &p;
        async move {
            p.events_of(kind)
                .await
                .into_iter()
                .filter(|e| e["pool"] == pool)
                .count()
        }
    };
    // From the audit log: a snapshot of the state could come after the
    // passing probe that ends the checked pool's ejection.
    for pool in ["checked", "plain"] {
        assert_eq!(
            events("backend.ejected", pool).await,
            1,
            "{pool}: ejected after 2 failures"
        );
    }
    // Asked while ejected, the plain pool has nothing left: 503. Should the
    // 1 s ejection have ended before the request got there, that end is in
    // the log (as many restores as ejections): the backend, still failing,
    // answers 500 and is ejected again by the next failures; ask again.
    let mut tries = 0;
    loop {
        let ejections = events("backend.ejected", "plain").await;
        let a = c.get("plain.test", "/").await.unwrap();
        if a.status == 503 {
            break;
        }
        assert_eq!(a.status, 500, "{}", a.body);
        assert!(
            events("backend.restored", "plain").await >= ejections,
            "answered while ejected: {} {}",
            a.status,
            a.body
        );
        tries += 1;
        assert!(tries < 50, "never asked while ejected");
    }
    // With health checks: back at the next passing probe, long before 1 h.
    assert!(eventually(DEADLINE, || async { !ejected("checked").await }).await);
    // Without: back when the ejection time is up (the sweeper runs every second).
    assert!(eventually(DEADLINE, || async { !ejected("plain").await }).await);
    let events = String::from_utf8_lossy(&p.ctl(&["events"]).stdout).to_string();
    assert!(
        events.contains("its probe passes") && events.contains("after its ejection time"),
        "{events}"
    );
}
