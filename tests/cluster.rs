//! `[cluster]`: several instances sharing weights, versions, rollouts and
//! events through real etcd members on loopback (started and stopped by pid
//! by the tests; a machine without etcd fails them).

#[path = "support/etcd.rs"]
mod etcd;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd::Etcd;
use serde_json::Value;
use support::*;

/// One instance's config: the usual blue/green pool, in the fleet `etcd`.
fn member_config(blue: &Upstream, green: &Upstream, etcd: &Etcd, name: &str) -> String {
    let base = pool_config(blue, 100, green, 0, "");
    format!(
        "{base}\n[pools.app.rollout]\nsteps = [20, 50, 100]\nstep_duration = \"2s\"\nmin_requests = 5\np99_tolerance = \"10s\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [cluster]\netcd = {}\nprefix = \"/sy-test/\"\nname = \"{name}\"\nlease_ttl = \"3s\"\n",
        etcd.toml_endpoints()
    )
}

async fn fleet(blue: &Upstream, green: &Upstream, etcd: &Etcd, n: usize) -> Vec<Proxy> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("sy-{}", (b'a' + i as u8) as char);
        out.push(Proxy::start(&member_config(blue, green, etcd, &name)).await);
    }
    for p in &out {
        assert!(
            eventually(DEADLINE, || async {
                p.state().await["cluster"]["connected"] == true
            })
            .await,
            "an instance never connected to etcd:\n{}\n{}",
            p.log(),
            etcd.log()
        );
    }
    out
}

fn weights_are(state: &Value, blue: u64, green: u64) -> bool {
    let v = &state["pools"]["app"]["versions"];
    v["blue"]["weight"] == blue && v["green"]["weight"] == green
}

/// The served versions of `n` requests to `p`.
async fn split(p: &Proxy, n: usize) -> HashMap<String, usize> {
    let mut c = Client::new(p.http);
    let mut out = HashMap::new();
    for _ in 0..n {
        let a = c.get("app.test", "/").await.expect("a request failed");
        assert_eq!(a.status, 200, "{}", a.body);
        *out.entry(a.served_by().to_string()).or_insert(0) += 1;
    }
    out
}

/// TCP connections `pid` made (not listeners, not connections it accepted
/// on one of its listeners).
fn connections_of(pid: u32) -> Vec<String> {
    let listening: std::collections::HashSet<String> = bound_addrs(pid, "tcp")
        .iter()
        .map(|a| format!("{:04X}", a.port()))
        .collect();
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).unwrap_or_default();
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let accepted = cols
                .get(1)
                .and_then(|l| l.rsplit(':').next())
                .is_some_and(|p| listening.contains(p));
            if cols.len() > 9 && cols[3] != "0A" && inodes.contains(cols[9]) && !accepted {
                out.push(format!("{} -> {} state {}", cols[1], cols[2], cols[3]));
            }
        }
    }
    out
}

/// Without `[cluster]`: no cluster in the state, no cluster metric, and the
/// process holds no connection at all after admin writes (nothing dialled
/// etcd, or anything else).
#[tokio::test]
async fn without_cluster_no_etcd_code_runs() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        pool_config(&blue, 100, &green, 0, "")
    );
    let p = Proxy::start(&config).await;
    let out = p.ctl(&["weights", "app", "blue=50", "green=50"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = p.state().await;
    assert!(state.get("cluster").is_none(), "{state}");
    assert!(weights_are(&state, 50, 50));
    let metrics = reqwest_metrics(&p).await;
    assert!(
        metrics.contains("switchyard_requests_total")
            || metrics.contains("switchyard_config_reloads_total")
    );
    assert!(
        !metrics.contains("switchyard_cluster_connected"),
        "{metrics}"
    );
    let log = p.log();
    assert!(!log.contains("etcd") && !log.contains("fleet"), "{log}");
    assert_eq!(connections_of(p.pid()), Vec::<String>::new());
}

async fn reqwest_metrics(p: &Proxy) -> String {
    let mut c = Client::new(p.metrics.expect("a metrics listener"));
    c.get("metrics", "/metrics").await.unwrap().body
}

/// `ctl weights` on A moves B and C; 100 switches on A with etcd's leader
/// killed (-9) halfway: every switch answered and applied everywhere, and
/// not one request to B or C failed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_on_one_instance_moves_the_fleet_through_an_etcd_leader_kill() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut etcd = Etcd::start(3);
    let fleet = fleet(&blue, &green, &etcd, 3).await;
    let (a, others) = fleet.split_first().unwrap();

    let out = a.ctl(&["weights", "app", "blue=25", "green=75"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in others {
        assert!(
            eventually(DEADLINE, || async { weights_are(&p.state().await, 25, 75) }).await,
            "{}",
            p.log()
        );
        // The split is exact per cycle of 4: 100 requests give 25 / 75.
        let s = split(p, 100).await;
        assert_eq!(
            (s.get("blue"), s.get("green")),
            (Some(&25), Some(&75)),
            "{s:?}"
        );
    }

    // Requests to B and C the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for p in others {
        let (stop, failed, sent, addr) = (stop.clone(), failed.clone(), sent.clone(), p.http);
        load.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            while !stop.load(Ordering::Relaxed) {
                match c.get("app.test", "/").await {
                    Ok(a) if a.status == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let mut refused = Vec::new();
    for i in 0..100 {
        if i == 50 {
            let leader = etcd.leader().expect("etcd has a leader");
            etcd.kill9(leader);
        }
        let to = if i % 2 == 0 { "green" } else { "blue" };
        let out = a.ctl(&["switch", "app", to]);
        if !out.status.success() {
            refused.push(format!(
                "switch {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // The last switch (i = 99) sent everything to blue.
    for p in &fleet {
        assert!(
            eventually(DEADLINE, || async { weights_are(&p.state().await, 100, 0) }).await,
            "{}",
            p.log()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        refused.is_empty(),
        "lost switches: {refused:?}\n{}",
        a.log()
    );
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests to B and C"
    );
    // Every switch is in A's audit log, and reached B's through etcd.
    // (events are shared after the change they describe)
    let from_a = || async {
        let b_weights = others[0].events_of("weights").await;
        b_weights.iter().filter(|e| e["instance"] == "sy-a").count()
    };
    assert!(
        eventually(DEADLINE, || async { from_a().await == 101 }).await,
        "B saw {} of A's 101 weight events",
        from_a().await
    );
    let s = split(&others[1], 10).await;
    assert_eq!(s.get("blue"), Some(&10), "{s:?}");
}

/// A rollout started on the leader; the leader killed at step 2: another
/// instance takes over, finishes it, and the events show the handover and
/// exactly one passing judgement per step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_survives_its_leader() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let etcd = Etcd::start(3);
    let mut fleet = fleet(&blue, &green, &etcd, 3).await;
    assert!(
        eventually(DEADLINE, || async {
            fleet[0].state().await["cluster"]["leader"].is_string()
        })
        .await
    );
    let leader_name = fleet[0].state().await["cluster"]["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let li = fleet
        .iter()
        .position(|p| {
            p.config_path.exists()
                && std::fs::read_to_string(&p.config_path)
                    .unwrap()
                    .contains(&format!("name = \"{leader_name}\""))
        })
        .unwrap();

    // Traffic through every instance, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for p in &fleet {
        let (stop, addr) = (stop.clone(), p.http);
        load.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get("app.test", "/").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let out = fleet[li].ctl(&["rollout", "start", "app", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let survivor = (li + 1) % 3;
    assert!(
        eventually(DEADLINE, || async {
            let r = &fleet[survivor].state().await["rollouts"]["app"];
            r["step"].as_u64() == Some(1)
        })
        .await,
        "step 2 never reached:\n{}",
        fleet[li].log()
    );
    fleet[li].kill9();
    let finished = eventually(Duration::from_secs(120), || async {
        fleet[survivor].state().await["rollouts"]["app"]["status"] == "promoted"
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.abort();
    }
    let (_, ev) = fleet[survivor].admin("GET", "/v1/events", None).await;
    let events = ev["events"].as_array().unwrap().clone();
    let lines: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {} {}", e["instance"], e["who"], e["kind"], e["what"]))
        .collect();
    assert!(finished, "not promoted:\n{}", lines.join("\n"));
    let new_leader = events
        .iter()
        .find(|e| {
            e["kind"] == "cluster.leader"
                && e["instance"] != leader_name.as_str()
                && e["what"]
                    .as_str()
                    .unwrap()
                    .contains("is the rollout leader now")
        })
        .unwrap_or_else(|| panic!("no takeover event:\n{}", lines.join("\n")));
    let taken = events.iter().any(|e| {
        e["kind"] == "rollout.resume"
            && e["what"].as_str().unwrap().contains("taken over")
            && e["instance"] == new_leader["instance"]
    });
    assert!(taken, "no handover event:\n{}", lines.join("\n"));
    // One passing judgement per step, wherever it was made: the rollout's
    // history (stored with each step, in etcd) has exactly one per step,
    // and no judgement event is there twice. (An event the killed leader
    // recorded but had not shared yet is lost with it; its history entry
    // is not.)
    let record = &fleet[survivor].state().await["rollouts"]["app"];
    let mut passes: HashMap<u64, usize> = HashMap::new();
    for j in record["history"].as_array().unwrap() {
        if j["verdict"] == "pass" {
            *passes.entry(j["step"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    assert_eq!(passes.len(), 3, "{record}\n{}", lines.join("\n"));
    assert!(passes.values().all(|&n| n == 1), "{record}");
    let mut seen = std::collections::HashSet::new();
    for e in events.iter().filter(|e| e["kind"] == "rollout.judgement") {
        let key = (e["after"]["step"].clone(), e["after"]["at_ms"].clone());
        assert!(
            seen.insert(format!("{}/{}", key.0, key.1)),
            "judged twice:\n{}",
            lines.join("\n")
        );
    }
    drop(fleet.remove(li));
}

/// etcd all down: proxying goes on, admin writes 503 with a clear message,
/// an instance restarted meanwhile serves its cached table; etcd back:
/// writes work and every instance converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_down_keeps_serving_and_refuses_writes_then_converges() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut etcd = Etcd::start(1);
    let mut fleet = fleet(&blue, &green, &etcd, 2).await;
    let out = fleet[0].ctl(&["weights", "app", "blue=50", "green=50"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(DEADLINE, || async {
            weights_are(&fleet[1].state().await, 50, 50)
        })
        .await
    );

    etcd.stop_all();
    for p in &fleet {
        assert!(
            eventually(DEADLINE, || async {
                p.state().await["cluster"]["connected"] == false
            })
            .await,
            "{}",
            p.log()
        );
        let m = reqwest_metrics(p).await;
        assert!(m.contains("switchyard_cluster_connected 0"), "{m}");
    }
    let (status, body) = fleet[0]
        .admin(
            "PUT",
            "/v1/pools/app/weights",
            Some(r#"{"blue":100,"green":0}"#),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("etcd"), "{body}");
    // A restart without etcd serves the last table it applied.
    fleet[1].restart().await;
    assert!(weights_are(&fleet[1].state().await, 50, 50));
    for p in &fleet {
        let s = split(p, 20).await;
        assert_eq!(
            (s.get("blue"), s.get("green")),
            (Some(&10), Some(&10)),
            "{s:?}"
        );
    }
    let state = fleet[1].state().await;
    assert_eq!(state["cluster"]["connected"], false, "{state}");

    etcd.restart_stopped();
    for p in &fleet {
        assert!(
            eventually(DEADLINE, || async {
                p.state().await["cluster"]["connected"] == true
            })
            .await,
            "{}",
            p.log()
        );
    }
    let out = fleet[1].ctl(&["switch", "app", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &fleet {
        assert!(eventually(DEADLINE, || async { weights_are(&p.state().await, 0, 100) }).await);
        let m = reqwest_metrics(p).await;
        assert!(m.contains("switchyard_cluster_connected 1"), "{m}");
    }
}

/// `switchyard cluster init` copies a single instance's state into etcd; a
/// fleet instance then starts with those weights; a second init is refused.
#[tokio::test]
async fn cluster_init_moves_a_single_instance_into_a_fleet() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let etcd = Etcd::start(1);
    let mut single = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let out = single.ctl(&["weights", "app", "blue=30", "green=70"]);
    assert!(out.status.success());
    single.kill9();
    let clustered = member_config(&blue, &green, &etcd, "sy-a");
    let text = std::fs::read_to_string(&single.config_path).unwrap();
    let admin = &text[text.find("[admin]").unwrap()..];
    std::fs::write(&single.config_path, format!("{clustered}\n{admin}")).unwrap();
    let cfg = single.config_path.to_str().unwrap().to_string();
    let out = run_bin(&["cluster", "init", "-c", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = etcd.get("/sy-test/state").expect("the state in etcd");
    assert!(stored.contains("\"green\":70"), "{stored}");
    let again = run_bin(&["cluster", "init", "-c", &cfg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let other = Proxy::start(&member_config(&blue, &green, &etcd, "sy-b")).await;
    assert!(
        eventually(DEADLINE, || async {
            weights_are(&other.state().await, 30, 70)
        })
        .await
    );
}
