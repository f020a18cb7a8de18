//! `max_connections_per_backend`: a capped backend gets at most that many
//! requests (and connections) at once, the rest wait in a FIFO queue for up
//! to `queue_timeout`, then 503; waiting is overload, never a backend
//! failure. Against the real binary, with origins that hold answers open.

mod support;

use std::time::Duration;

use support::*;

/// One version, the given backends, capped.
fn capped(backends: &[&Upstream], cap: u32, queue_timeout: &str, extra_pool: &str) -> String {
    let list: Vec<String> = backends.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        r#"[server]
http = "127.0.0.1:0"
shutdown_grace = "5s"

[[routes]]
host = "app.test"
pool = "app"

[metrics]
listen = "127.0.0.1:0"

[pools.app]
max_connections_per_backend = {cap}
queue_timeout = "{queue_timeout}"
{extra_pool}

[pools.app.versions.blue]
weight = 100
backends = [{}]
"#,
        list.join(", ")
    )
}

async fn scrape(p: &Proxy) -> String {
    let addr: std::net::SocketAddr = p.state().await["listeners"]["metrics"]
        .as_str()
        .expect("metrics listener")
        .parse()
        .unwrap();
    let a = Client::new(addr)
        .get("localhost", "/metrics")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    a.body
}

fn held(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<Result<Answer, String>> {
    tokio::spawn(async move { Client::new(addr).get("app.test", "/held").await })
}

async fn backend_field(p: &Proxy, i: usize, field: &str) -> serde_json::Value {
    p.state().await["pools"]["app"]["versions"]["blue"]["backends"][i][field].clone()
}

#[tokio::test]
async fn a_backend_at_its_cap_queues_requests_and_serves_them_on_its_connections() {
    let blue = Upstream::start("blue").await;
    let p = Proxy::start(&capped(&[&blue], 2, "60s", "")).await;
    let first = held(p.http);
    let second = held(p.http);
    assert!(
        eventually(DEADLINE, || async { blue.hits() == 2 }).await,
        "two requests reach the backend"
    );
    let third = held(p.http);
    let fourth = held(p.http);
    assert!(
        eventually(DEADLINE, || async {
            backend_field(&p, 0, "queued").await == 2
        })
        .await,
        "the third and fourth wait: {}",
        p.state().await
    );
    assert_eq!(backend_field(&p, 0, "in_flight").await, 2);
    // Give a wrongly uncapped proxy time to send them anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(blue.hits(), 2, "nothing beyond the cap reached the backend");
    assert_eq!(blue.connections(), 2);

    // One answer ends: one queued request goes, on the freed connection.
    blue.release(1);
    assert!(
        eventually(DEADLINE, || async { blue.hits() == 3 }).await,
        "a queued request went when a slot freed"
    );
    assert!(
        eventually(DEADLINE, || async {
            backend_field(&p, 0, "queued").await == 1
        })
        .await
    );
    assert_eq!(
        blue.connections(),
        2,
        "the queued request reused a connection"
    );

    blue.release(3);
    for (name, h) in [
        ("first", first),
        ("second", second),
        ("third", third),
        ("fourth", fourth),
    ] {
        let a = h.await.unwrap().unwrap();
        assert_eq!(a.status, 200, "{name}: {a:?}");
        assert_eq!(a.body, "blue held\nblue released\n", "{name}");
    }
    assert_eq!(blue.hits(), 4);
    assert_eq!(blue.connections(), 2, "never more connections than the cap");
    assert_eq!(backend_field(&p, 0, "queued").await, 0);
}

#[tokio::test]
async fn a_request_queued_past_queue_timeout_gets_503_and_the_backend_stays_in_rotation() {
    let blue = Upstream::start("blue").await;
    // One failure would eject the backend: waiting must not count as one.
    let p = Proxy::start(&capped(
        &[&blue],
        1,
        "300ms",
        "passive = { failures = 1, ejection = \"1h\" }",
    ))
    .await;
    let first = held(p.http);
    assert!(eventually(DEADLINE, || async { blue.hits() == 1 }).await);

    let a = Client::new(p.http).get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(
        a.body, "503 Service Unavailable: pool app: every backend connection is busy\n",
        "names the pool, never the backend"
    );
    assert_eq!(a.headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        blue.hits(),
        1,
        "the queued request never reached the backend"
    );
    assert_eq!(backend_field(&p, 0, "ejected").await, false);
    assert_eq!(backend_field(&p, 0, "available").await, true);

    let metrics = scrape(&p).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_upstream_errors_total")
                && l.contains("kind=\"queue_timeout\"")
                && l.ends_with(" 1")),
        "counted as a queue timeout: {metrics}"
    );

    blue.release(1);
    assert_eq!(first.await.unwrap().unwrap().status, 200);
    let a = Client::new(p.http).get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 200, "served again once the slot is free: {a:?}");
}

#[tokio::test]
async fn a_full_backend_hands_requests_to_another_of_the_version_with_room() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // A queue that never times out: a request queued behind the held one
    // would hang, and the test with it.
    let p = Proxy::start(&capped(&[&a, &b], 1, "24h", "")).await;
    let first = held(p.http);
    assert!(eventually(DEADLINE, || async { a.hits() + b.hits() == 1 }).await);
    let (busy, free) = if a.hits() == 1 { (&a, &b) } else { (&b, &a) };
    // Round robin alternates between the two: every other request would
    // go to the busy one, and wait there.
    let mut c = Client::new(p.http);
    for i in 0..4 {
        let answer = tokio::time::timeout(DEADLINE, c.get("app.test", "/"))
            .await
            .unwrap_or_else(|_| panic!("request {i} hung in the busy backend's queue"))
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("{}\n", free.name));
    }
    assert_eq!(busy.hits(), 1);
    assert_eq!(free.hits(), 4);
    busy.release(1);
    assert_eq!(first.await.unwrap().unwrap().status, 200);
}

#[tokio::test]
async fn a_reload_changes_the_cap_for_the_requests_that_follow() {
    let blue = Upstream::start("blue").await;
    let p = Proxy::start(&capped(&[&blue], 1, "60s", "")).await;
    let first = held(p.http);
    assert!(eventually(DEADLINE, || async { blue.hits() == 1 }).await);
    let second = held(p.http);
    assert!(
        eventually(DEADLINE, || async {
            backend_field(&p, 0, "queued").await == 1
        })
        .await
    );

    // Raised to 3 (and the queue timeout shortened): the new cap counts
    // from here, so two more requests go at once while the queued one
    // keeps waiting for a slot of the old cap.
    std::fs::write(&p.config_path, capped(&[&blue], 3, "60s", "")).unwrap();
    let out = p.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = held(p.http);
    let fourth = held(p.http);
    assert!(
        eventually(DEADLINE, || async { blue.hits() == 3 }).await,
        "the raised cap lets requests through: {}",
        p.state().await
    );
    blue.release(4);
    for h in [first, second, third, fourth] {
        assert_eq!(h.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(blue.hits(), 4);

    // No cap: nothing queues whatever is in flight.
    std::fs::write(&p.config_path, capped(&[&blue], 0, "60s", "")).unwrap();
    assert!(p.ctl(&["reload"]).status.success());
    let many: Vec<_> = (0..5).map(|_| held(p.http)).collect();
    assert!(eventually(DEADLINE, || async { blue.hits() == 9 }).await);
    blue.release(5);
    for h in many {
        assert_eq!(h.await.unwrap().unwrap().status, 200);
    }
}

#[test]
fn the_cap_and_queue_timeout_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let base = "[server]\nhttp = \"127.0.0.1:0\"\n[[routes]]\nhost = \"a.test\"\npool = \"app\"\n[pools.app.versions.blue]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n[pools.app]\n";
    for (extra, message) in [
        (
            "max_connections_per_backend = -1",
            "max_connections_per_backend must be between 0 and 1000000",
        ),
        ("queue_timeout = \"0s\"", "queue_timeout must be above zero"),
        ("queue_timeout = \"soon\"", "queue_timeout:"),
    ] {
        std::fs::write(&f, format!("{base}{extra}\n")).unwrap();
        let out = run_bin(&["check", "--config", f.to_str().unwrap()]);
        assert!(!out.status.success(), "{extra} accepted");
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(err.contains(message), "{extra}: {err}");
    }
    std::fs::write(
        &f,
        format!("{base}max_connections_per_backend = 64\nqueue_timeout = \"2s\"\n"),
    )
    .unwrap();
    let out = run_bin(&["check", "--config", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
