//! Weighted split and instant switching, through the real binary.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
/// load: after each returns, the requests that start are answered by the
/// version it switched to, and no request fails.
///
/// Ordering, not time: a phase counter goes odd while a `ctl switch` runs
/// and even once it has returned; a request that starts and ends in the
/// same even phase must be answered by that phase's version. After each
/// switch the test waits until 50 (then 5) requests have done so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_is_instant_and_loses_nothing() {
    const SWITCHES: usize = 201;
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicUsize::new(0));
    // Per settled phase: requests that started and ended in it.
    let settled: Arc<Vec<AtomicUsize>> =
        Arc::new((0..=SWITCHES).map(|_| AtomicUsize::new(0)).collect());
    // (phase at start, phase at end, answer)
    type Log = Vec<(usize, usize, Result<String, String>)>;
    let log: Arc<Mutex<Log>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (stop, phase, settled, log, addr) = (
            stop.clone(),
            phase.clone(),
            settled.clone(),
            log.clone(),
            p.http,
        );
        clients.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            let mut local = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let start = phase.load(Ordering::SeqCst);
                let r = match c.get("app.test", "/").await {
                    Ok(a) if a.status == 200 => Ok(a.body.trim().to_string()),
                    Ok(a) => Err(format!("status {}", a.status)),
                    Err(e) => Err(e),
                };
                let end = phase.load(Ordering::SeqCst);
                if start == end && start % 2 == 0 {
                    settled[start / 2].fetch_add(1, Ordering::SeqCst);
                }
                local.push((start, end, r));
            }
            log.lock().unwrap().extend(local);
        }));
    }
    // The version of settled phase 2k: blue, then green, then alternating.
    let version = |k: usize| if k % 2 == 1 { "green" } else { "blue" };
    let wait_settled = |k: usize, n: usize| {
        let settled = settled.clone();
        async move {
            assert!(
                eventually(DEADLINE, || async {
                    settled[k].load(Ordering::SeqCst) >= n
                })
                .await,
                "fewer than {n} requests after switch {k}"
            );
        }
    };
    wait_settled(0, 50).await;

    // Switch k (1 ..= SWITCHES) to version(k): 1 is the switch to green,
    // then 200 alternating ones while the clients keep going.
    for k in 1..=SWITCHES {
        phase.fetch_add(1, Ordering::SeqCst);
        let socket = p.socket.clone();
        let v = version(k);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin())
                .args(["ctl", "-s"])
                .arg(&socket)
                .args(["switch", "app", v])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        phase.fetch_add(1, Ordering::SeqCst);
        wait_settled(k, if k == 1 { 50 } else { 5 }).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let failed: Vec<_> = log.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        log.len(),
        failed.first()
    );
    let wrong: Vec<_> = log
        .iter()
        .filter(|(s, e, r)| s == e && s % 2 == 0 && r.as_deref() != Ok(version(s / 2)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} requests started after a switch returned (and before the next began) but not answered by its version, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    let after_first = log.iter().filter(|(s, e, _)| *s == 2 && *e == 2).count();
    assert!(
        after_first >= 50,
        "{after_first} requests after the first switch"
    );
    // The last switch (201, odd) was to green.
    assert_eq!(p.weights("app").await["green"], 100);
}
