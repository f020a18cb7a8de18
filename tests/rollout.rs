//! Canary and blue-green rollouts judged against the stable version.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn config(blue: &Upstream, green: &Upstream, pool_extra: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
request_timeout = "2s"
[[routes]]
host = "app.test"
pool = "app"
[pools.app]
version_header = true
health = {{ path = "/health", interval = "200ms", timeout = "200ms", rise = 2, fall = 2 }}
{pool_extra}
[pools.app.versions.blue]
weight = 100
backends = ["{}"]
[pools.app.versions.green]
weight = 0
backends = ["{}"]
[pools.app.rollout]
steps = [10, 50, 100]
step_duration = "1s"
min_requests = 10
cooldown = "10m"
"#,
        blue.addr, green.addr
    )
}

/// Keeps `n` clients busy until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|i| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut c = Client::new(addr);
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let user = format!("load-{i}-{k}");
                        if c.request("GET", "app.test", "/", &[("x-user-id", &user)], "")
                            .await
                            .is_err()
                        {
                            // Pace after an error (a killed canary).
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

async fn rollout_status(p: &Proxy) -> Value {
    p.admin("GET", "/v1/pools/app/rollout", None).await.1
}

async fn wait_state(p: &Proxy, want: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = rollout_status(p).await;
        if v["state"] == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "rollout never became {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ctl_wait(p: &Proxy, args: &[&str]) -> tokio::task::JoinHandle<std::process::Output> {
    let socket = p.socket.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .arg("ctl")
            .arg("-s")
            .arg(socket)
            .args(args)
            .output()
            .unwrap()
    })
}

fn events(p: &Proxy) -> Vec<Value> {
    let out = p.ctl(&["--json", "events"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_through_every_step() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(&blue, &green, "")).await;
    let load = Load::start(p.http, 6);
    let out = ctl_wait(&p, &["rollout", "start", "app", "green", "--wait"])
        .await
        .unwrap();
    load.stop().await;
    assert!(
        out.status.success(),
        "--wait exits 0 on promotion: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("promoted"));
    let w = p.weights("app").await;
    assert_eq!((w["green"], w["blue"]), (100, 0));
    let ev = events(&p);
    let steps: Vec<u64> = ev
        .iter()
        .filter(|e| e["kind"] == "rollout.step")
        .map(|e| e["after"]["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![10, 50, 100], "every step in order");
    let passes = ev
        .iter()
        .filter(|e| e["kind"] == "rollout.judgement" && e["after"]["verdict"] == "pass")
        .count();
    assert!(passes >= 3, "each step judged: {ev:?}");
    assert!(ev.iter().any(|e| e["kind"] == "rollout.promoted"));
    // min_requests (10) on the canary at each of the three steps.
    assert!(green.hits() >= 30, "{}", green.hits());
    // A promoted rollout no longer steers stickiness or previews.
    assert_eq!(rollout_status(&p).await["active"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_5_percent_errors_is_rolled_back_at_the_first_step() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    green.fail_every.store(20, Ordering::SeqCst);
    let p = Proxy::start(&config(&blue, &green, "")).await;
    let load = Load::start(p.http, 6);
    // Every 20th green answer fails: in any 50 or more of them the rate is
    // over 3 %, so the first judgement (which waits for 50 on each side)
    // fails, however few requests a slow machine manages per window.
    let out = ctl_wait(
        &p,
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--steps",
            "20,50",
            "--min-requests",
            "50",
            "--step-duration",
            "3s",
            "--wait",
        ],
    )
    .await
    .unwrap();
    load.stop().await;
    assert!(!out.status.success(), "--wait exits non-zero on rollback");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rolled back"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = p.weights("app").await;
    assert_eq!((w["green"], w["blue"]), (0, 100));
    let ev = events(&p);
    let judged: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "rollout.judgement")
        .collect();
    let fail = judged
        .iter()
        .find(|e| e["after"]["verdict"] == "fail")
        .expect("a failed judgement");
    assert_eq!(fail["after"]["step"], 0, "failed at the first judged step");
    let a = &fail["after"];
    assert!(a["canary_error_rate"].as_f64().unwrap() > 0.03, "{a}");
    assert_eq!(a["stable_error_rate"], 0.0);
    assert_eq!(a["max_error_rate_increase"], 0.01);
    let what = fail["what"].as_str().unwrap();
    assert!(
        what.contains("5xx") && what.contains("0.00%") && what.contains("1.00"),
        "{what}"
    );
    assert!(ev.iter().any(|e| e["kind"] == "rollout.rolled_back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_canary_is_rolled_back_on_p99() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    green.delay_ms.store(300, Ordering::SeqCst);
    let p = Proxy::start(&config(&blue, &green, "")).await;
    let load = Load::start(p.http, 8);
    let out = ctl_wait(
        &p,
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--steps",
            "30,60",
            "--step-duration",
            "2s",
            "--wait",
        ],
    )
    .await
    .unwrap();
    load.stop().await;
    assert!(!out.status.success());
    let ev = events(&p);
    let fail = ev
        .iter()
        .find(|e| e["kind"] == "rollout.judgement" && e["after"]["verdict"] == "fail")
        .expect("failed judgement");
    let a = &fail["after"];
    // The injected 300 ms is a floor for the canary; the stable has none.
    assert!(a["canary_p99"].as_f64().unwrap() > 0.25, "{a}");
    assert!(
        a["stable_p99"].as_f64().unwrap() < a["canary_p99"].as_f64().unwrap(),
        "{a}"
    );
    assert!(fail["what"].as_str().unwrap().contains("p99"));
    assert_eq!(p.weights("app").await["blue"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_canary_mid_rollout_rolls_back_within_a_probe_cycle() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(&blue, &green, "")).await;
    let load = Load::start(p.http, 4);
    // A step that lasts an hour: only the canary's health can end it.
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green","step_duration":"1h"}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // The canary serves its share.
    assert!(eventually(DEADLINE, || async { green.hits() > 10 }).await);
    assert_eq!(rollout_status(&p).await["state"], "running");
    green.kill();
    let v = wait_state(&p, "rolled_back").await;
    load.stop().await;
    // Rolled back by the health checks' verdict, not by a judgement (how
    // fast is a benchmark's business).
    assert!(v["reason"].as_str().unwrap().contains("down"), "{v}");
    assert_eq!(p.weights("app").await["blue"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_continues_from_its_step() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = Proxy::start(&config(&blue, &green, "")).await;
    // Without traffic a step is never judged (windows without enough
    // requests only count towards a failure limit set out of reach), so a
    // step the rollout reaches with no load stays until load comes back.
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green","steps":[10,50],"step_duration":"2s","min_requests":5,"failure_limit":1000}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut load = Load::start(p.http, 4);
    let deadline = Instant::now() + DEADLINE;
    while rollout_status(&p).await["step_number"] != 2 {
        assert!(Instant::now() < deadline, "never reached step 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Hold step 2 while the load stops, then let it run again with none.
    let (st, v) = p.admin("POST", "/v1/pools/app/rollout/pause", None).await;
    assert_eq!(st, 200, "{v}");
    load.stop().await;
    let v = rollout_status(&p).await;
    assert_eq!(v["step_number"], 2, "paused at step 2: {v}");
    let (st, v) = p.admin("POST", "/v1/pools/app/rollout/resume", None).await;
    assert_eq!(st, 200, "{v}");
    p.restart().await;
    let v = rollout_status(&p).await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["step_number"], 2, "resumed at its step: {v}");
    assert_eq!(p.weights("app").await["green"], 50);
    load = Load::start(p.http, 4);
    wait_state(&p, "promoted").await;
    load.stop().await;
    let ev = events(&p);
    assert!(
        ev.iter().any(|e| e["kind"] == "rollout.resume"
            && e["what"].as_str().unwrap_or("").contains("after a restart")),
        "the resume is logged: {ev:?}"
    );
    let steps: Vec<u64> = ev
        .iter()
        .filter(|e| e["kind"] == "rollout.step")
        .map(|e| e["after"]["percent"].as_u64().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&10));
    assert_eq!(
        steps.iter().filter(|&&s| s == 10).count(),
        1,
        "step 1 was not redone: {steps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_watch_window_rolls_back_on_the_same_gates() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(&blue, &green, "")).await;
    // A clean record for blue first, large enough for the statistical
    // judge to tell 10 % errors from it at the rollout's confidence (with
    // 50 requests, 0 errors bound the stable's rate only to ~15 % at the
    // spent alpha: inconclusive).
    let mut c = Client::new(p.http);
    for _ in 0..500 {
        c.get("app.test", "/").await.unwrap();
    }
    green.fail_every.store(10, Ordering::SeqCst);
    let load = Load::start(p.http, 4);
    let out = ctl_wait(
        &p,
        &[
            "rollout",
            "start",
            "app",
            "green",
            "--preset",
            "all-at-once",
            "--step-duration",
            "2s",
            "--wait",
        ],
    )
    .await
    .unwrap();
    load.stop().await;
    assert!(!out.status.success());
    let ev = events(&p);
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "rollout.step" && e["after"]["percent"] == 100),
        "switched at once"
    );
    assert_eq!(
        p.weights("app").await["blue"],
        100,
        "rolled back after the watch window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_only_move_from_stable_to_canary() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(
        &blue,
        &green,
        "sticky = { header = \"X-User-ID\" }",
    ))
    .await;
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green","steps":[1,5,25,50],"step_duration":"1s","min_requests":0}"#),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut on_canary: HashMap<u32, bool> = HashMap::new();
    let mut seen = Vec::new();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    for _ in 0..4 {
        // Hold the next step while all users are asked once.
        let deadline = Instant::now() + DEADLINE;
        let step = loop {
            let v = rollout_status(&p).await;
            let n = v["step_number"].as_u64().unwrap() as usize;
            if !seen.contains(&n) && v["state"] == "running" {
                let (st, _) = p.admin("POST", "/v1/pools/app/rollout/pause", None).await;
                if st == 200 {
                    let v = rollout_status(&p).await;
                    break v["percent"].as_u64().unwrap();
                }
            }
            assert!(Instant::now() < deadline, "stuck: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        seen.push(rollout_status(&p).await["step_number"].as_u64().unwrap() as usize);
        let mut canary = 0u32;
        let chunks: Vec<Vec<String>> = users.chunks(1250).map(|c| c.to_vec()).collect();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let addr = p.http;
            tasks.push(tokio::spawn(async move {
                let mut c = Client::new(addr);
                let mut out = Vec::new();
                for u in chunk {
                    let a = c
                        .request("GET", "app.test", "/", &[("x-user-id", &u)], "")
                        .await
                        .unwrap();
                    out.push((u, a.served_by() == "green"));
                }
                out
            }));
        }
        for t in tasks {
            for (u, g) in t.await.unwrap() {
                let id: u32 = u.trim_start_matches("user-").parse().unwrap();
                if g {
                    canary += 1;
                } else {
                    assert!(
                        !on_canary.get(&id).copied().unwrap_or(false),
                        "{u} moved from canary back to stable at {step}%"
                    );
                }
                on_canary.insert(id, g);
            }
        }
        let share = f64::from(canary) / 100.0;
        assert!(
            (share - step as f64).abs() <= 1.0,
            "share {share}% at step {step}%"
        );
        assert_eq!(
            p.admin("POST", "/v1/pools/app/rollout/resume", None)
                .await
                .0,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_requests_are_refused_and_change_nothing() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&config(&blue, &green, "")).await;
    let cases: &[(&str, u16)] = &[
        (r#"{"canary":"purple"}"#, 404),
        (r#"{"steps":[10]}"#, 400),
        (r#"{"canary":"green","steps":[50,10]}"#, 400),
        (r#"{"canary":"green","steps":[10,150]}"#, 400),
        (r#"{"canary":"green","preset":"yolo"}"#, 400),
        (r#"{"canary":"blue"}"#, 409),
        (r#"not json"#, 400),
    ];
    for (body, status) in cases {
        let (st, v) = p.admin("POST", "/v1/pools/app/rollout", Some(body)).await;
        assert_eq!(st.as_u16(), *status, "{body}: {v}");
        assert!(v["error"].as_str().is_some());
    }
    assert_eq!(
        p.admin(
            "POST",
            "/v1/pools/nope/rollout",
            Some(r#"{"canary":"green"}"#)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        p.admin("GET", "/v1/pools/app/rollout", None).await.0,
        404,
        "nothing was started"
    );
    assert_eq!(p.weights("app").await["blue"], 100);

    // One rollout at a time.
    let (st, _) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green","step_duration":"1h"}"#),
        )
        .await;
    assert_eq!(st, 200);
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green"}"#),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    // Abort: instant rollback, then a cooldown.
    let out = p.ctl(&["rollout", "abort", "app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.weights("app").await["green"], 0);
    let (st, v) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green"}"#),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("cooldown"));
    let (st, _) = p
        .admin(
            "POST",
            "/v1/pools/app/rollout",
            Some(r#"{"canary":"green","force":true,"step_duration":"1h"}"#),
        )
        .await;
    assert_eq!(st, 200, "force starts during the cooldown");
    let out = p.ctl(&["rollout", "status", "app"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("step 1/3 at 10%") && text.contains("running"),
        "{text}"
    );
    assert!(p.ctl(&["rollout", "promote", "app"]).status.success());
    assert_eq!(p.weights("app").await["green"], 100);
    assert!(
        !p.ctl(&["rollout", "pause", "app"]).status.success(),
        "nothing to pause"
    );
}
