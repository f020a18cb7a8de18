//! Weighted split and instant switching, through the real binary.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_90_10_is_exact_over_10000_sequential_requests() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 90, &green, 10, "")).await;
    let mut c = Client::new(p.http);
    for _ in 0..10_000 {
        let a = c.get("app.test", "/").await.unwrap();
        assert_eq!(a.status, 200);
    }
    assert_eq!(blue.hits(), 9_000);
    assert_eq!(green.hits(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_is_never_chosen_but_can_be_pinned() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 1, &green, 0, "")).await;
    let mut c = Client::new(p.http);
    for _ in 0..1_000 {
        assert_eq!(c.get("app.test", "/").await.unwrap().body, "blue\n");
    }
    assert_eq!(green.hits(), 0);
    // A smoke test reaches green by name without changing weights.
    let a = c
        .request(
            "GET",
            "app.test",
            "/",
            &[("x-switchyard-version", "green")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(a.body, "green\n");
    assert_eq!(a.served_by(), "green");
    assert_eq!(green.hits(), 1);
}

/// 32 keep-alive clients; after `ctl switch` returns, every request that
/// starts is answered by green. Then 200 alternating switches under the same
/// load: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_is_instant_and_loses_nothing() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let timeline: Timeline = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (stop, timeline, addr) = (stop.clone(), timeline.clone(), p.http);
        clients.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            let mut local = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = match c.get("app.test", "/").await {
                    Ok(a) if a.status == 200 => Ok(a.body.trim().to_string()),
                    Ok(a) => Err(format!("status {}", a.status)),
                    Err(e) => Err(e),
                };
                local.push((start, r));
            }
            timeline.lock().unwrap().extend(local);
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let socket = p.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args(["ctl", "-s"])
            .arg(&socket)
            .args(["switch", "app", "green"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let switched_at = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 200 alternating switches while the clients keep going.
    let socket = p.socket.clone();
    let flips = tokio::task::spawn_blocking(move || {
        for i in 0..200 {
            let v = if i % 2 == 0 { "blue" } else { "green" };
            let out = std::process::Command::new(bin())
                .args(["ctl", "-s"])
                .arg(&socket)
                .args(["switch", "app", v])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    flips.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let t = std::mem::take(&mut *timeline.lock().unwrap());
    let failed: Vec<_> = t.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        t.len(),
        failed.first()
    );
    let after: Vec<_> = t
        .iter()
        .filter(|(s, _)| *s > switched_at && *s < switched_at + Duration::from_millis(400))
        .collect();
    assert!(
        after.len() > 50,
        "too few requests after the switch: {}",
        after.len()
    );
    let wrong = after
        .iter()
        .filter(|(_, r)| r.as_deref() != Ok("green"))
        .count();
    assert_eq!(
        wrong, 0,
        "requests started after ctl returned but not answered by green"
    );
    assert!(
        t.len() > 1000,
        "load was too light to mean anything: {}",
        t.len()
    );
    // The last switch (i = 199) was to green.
    assert_eq!(p.weights("app").await["green"], 100);
}
