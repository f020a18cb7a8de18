//! Rollouts guard their pool: while one is active, weights move only
//! through it; `--force` aborts it first (audited); an abort restores every
//! version's weight from before the rollout, across a restart too.

mod support;

use std::collections::HashMap;
use std::process::Output;

use serde_json::Value;
use support::*;

fn config(blue: &Upstream, green: &Upstream, grey: &Upstream, w: [u32; 3]) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
version_header = true

[pools.app.versions.blue]
weight = {}
backends = ["{}"]

[pools.app.versions.green]
weight = {}
backends = ["{}"]

[pools.app.versions.grey]
weight = {}
backends = ["{}"]
"#,
        w[0], blue.addr, w[1], green.addr, w[2], grey.addr
    )
}

fn weights(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refused ctl call: exit code 2, the API's reason naming the rollout and
/// the commands to use.
fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(out));
    let e = stderr(out);
    assert!(
        e.contains("rollout of green") && e.contains("pause|promote|abort") && e.contains("409"),
        "{what}: {e}"
    );
}

async fn start_rollout(p: &Proxy, body: &str) {
    let (st, v) = p.admin("POST", "/v1/pools/app/rollout", Some(body)).await;
    assert_eq!(st, 200, "{v}");
    // The first step is in force once the canary has its share.
    assert!(
        eventually(DEADLINE, || async { p.weights("app").await["green"] == 10 }).await,
        "step 1 never applied"
    );
}

async fn rollout(p: &Proxy) -> Value {
    p.admin("GET", "/v1/pools/app/rollout", None).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_to_a_pool_in_a_rollout_are_refused_and_force_aborts_first() {
    let (blue, green, grey) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
        Upstream::start("grey").await,
    );
    let text = config(&blue, &green, &grey, [37, 0, 0]);
    let p = Proxy::start(&text).await;
    start_rollout(
        &p,
        r#"{"canary":"green","steps":[10,50,100],"step_duration":"1h"}"#,
    )
    .await;
    let during = weights(&[("blue", 90), ("green", 10), ("grey", 0)]);
    assert_eq!(p.weights("app").await, during);

    let spare = blue.addr.to_string();
    let refused: [(&str, Vec<&str>); 5] = [
        ("weights", vec!["weights", "app", "green=50", "grey=5"]),
        ("switch", vec!["switch", "app", "green"]),
        (
            "a version's new weight",
            vec![
                "version",
                "add",
                "app",
                "grey",
                "--backend",
                &spare,
                "--weight",
                "5",
            ],
        ),
        (
            "a new version with weight",
            vec![
                "version",
                "add",
                "app",
                "v4",
                "--backend",
                &spare,
                "--weight",
                "3",
            ],
        ),
        ("removing the canary", vec!["version", "rm", "app", "green"]),
    ];
    for (what, args) in &refused {
        let out = p.ctl(args);
        if *what == "removing the canary" {
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            assert!(stderr(&out).contains("rollout"), "{}", stderr(&out));
        } else {
            assert_refused(&out, what);
        }
        assert_eq!(p.weights("app").await, during, "{what} changed nothing");
    }
    // The API says the same, and a version added at weight 0 is fine.
    let (st, v) = p
        .admin("PUT", "/v1/pools/app/weights", Some(r#"{"grey":5}"#))
        .await;
    assert_eq!(st, 409, "{v}");
    let out = p.ctl(&["version", "add", "app", "v4", "--backend", &spare]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A reload that would move the rollout's weights is refused too.
    std::fs::write(
        &p.config_path,
        config(&blue, &green, &grey, [37, 0, 1]) + &admin_section(&p),
    )
    .unwrap();
    let out = p.ctl(&["reload"]);
    assert_refused(&out, "reload");
    std::fs::write(&p.config_path, text.clone() + &admin_section(&p)).unwrap();
    let mut now = during.clone();
    now.insert("v4".into(), 0);
    assert_eq!(p.weights("app").await, now);
    assert_eq!(rollout(&p).await["state"], "running", "still running");

    // --force: the rollout is aborted (weights from before it), then the
    // change applies on top.
    let out = p.ctl(&["weights", "app", "grey=5", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = rollout(&p).await;
    assert_eq!(r["state"], "rolled_back", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("forced weights change"),
        "{r}"
    );
    assert_eq!(
        p.weights("app").await,
        weights(&[("blue", 37), ("green", 0), ("grey", 5), ("v4", 0)])
    );
    // Audited: the abort by the caller, then the change.
    let (_, ev) = p.admin("GET", "/v1/events", None).await;
    let ev = ev["events"].as_array().unwrap().clone();
    let i = ev
        .iter()
        .position(|e| e["kind"] == "rollout.rolled_back")
        .expect("the abort is in the events");
    assert!(
        ev[i]["who"].as_str().unwrap().starts_with("uid:"),
        "{}",
        ev[i]
    );
    assert!(
        ev[i + 1..]
            .iter()
            .any(|e| e["kind"] == "weights" && e["after"]["grey"] == 5),
        "{ev:?}"
    );
}

fn admin_section(p: &Proxy) -> String {
    let dir = p.dir.path().display();
    format!("\n[admin]\nsocket = \"{dir}/admin.sock\"\nstate = \"{dir}/state.json\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_restores_every_weight_from_before_the_rollout_even_after_a_restart() {
    let (blue, green, grey) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
        Upstream::start("grey").await,
    );
    // A hand-made canary at 3 before the rollout, and a third version at 0.
    let mut p = Proxy::start(&config(&blue, &green, &grey, [37, 3, 0])).await;
    let before = weights(&[("blue", 37), ("green", 3), ("grey", 0)]);
    assert_eq!(p.weights("app").await, before);
    start_rollout(
        &p,
        r#"{"canary":"green","steps":[10,50,100],"step_duration":"1h"}"#,
    )
    .await;
    assert_eq!(
        p.weights("app").await,
        weights(&[("blue", 90), ("green", 10), ("grey", 0)])
    );
    // The weights from before are part of the stored rollout.
    p.restart().await;
    let r = rollout(&p).await;
    assert_eq!(r["state"], "running", "{r}");
    assert_eq!(r["weights_before"]["blue"], 37, "{r}");
    let out = p.ctl(&["rollout", "abort", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.weights("app").await, before, "exactly as before");
    // And traffic follows: grey, at 0 before, gets nothing.
    let mut c = Client::new(p.http);
    for _ in 0..40 {
        let a = c.get("app.test", "/").await.unwrap();
        assert_ne!(a.served_by(), "grey");
    }
}
