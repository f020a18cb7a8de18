//! The admin socket and `ctl`: persistence, refusals, permissions, audit.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_survive_kill_9_and_restart() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let out = p.ctl(&["weights", "app", "blue=0", "green=100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app: blue=0 green=100"
    );
    p.restart().await;
    let w = p.weights("app").await;
    assert_eq!((w["blue"], w["green"]), (0, 100));
    let mut c = Client::new(p.http);
    for _ in 0..20 {
        assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");
    }
    // The state file is private and complete JSON.
    let state = p.dir.path().join("state.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(v["pools"]["app"]["weights"]["green"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_calls_are_refused_and_change_nothing() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let before = p.weights("app").await;
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("PUT", "/v1/pools/app/weights", Some("{not json"), 400),
        ("PUT", "/v1/pools/app/weights", Some(r#"{"blue":-5}"#), 400),
        (
            "PUT",
            "/v1/pools/app/weights",
            Some(r#"{"blue":"ten"}"#),
            400,
        ),
        ("PUT", "/v1/pools/app/weights", Some(r#"{}"#), 400),
        ("PUT", "/v1/pools/nope/weights", Some(r#"{"blue":1}"#), 404),
        ("PUT", "/v1/pools/app/weights", Some(r#"{"purple":1}"#), 404),
        ("PUT", "/v1/pools/app/weights", Some(r#"{"blue":0}"#), 409),
        (
            "PUT",
            "/v1/pools/app/weights",
            Some(r#"{"blue":0,"green":0}"#),
            409,
        ),
        (
            "PUT",
            "/v1/pools/app/versions/v3",
            Some(r#"{"backends":["no-port"]}"#),
            400,
        ),
        (
            "PUT",
            "/v1/pools/app/versions/bad%20name",
            Some(r#"{"backends":["127.0.0.1:1"]}"#),
            400,
        ),
        (
            "PUT",
            "/v1/pools/nope/versions/v3",
            Some(r#"{"backends":["127.0.0.1:1"]}"#),
            404,
        ),
        ("DELETE", "/v1/pools/app/versions/blue", None, 409),
        ("DELETE", "/v1/pools/app/versions/purple", None, 404),
        ("GET", "/v1/nothing", None, 404),
        ("GET", "/v1/events?since=abc", None, 400),
    ];
    for (method, path, body, status) in cases {
        let (st, v) = p.admin(method, path, *body).await;
        assert_eq!(st.as_u16(), *status, "{method} {path} {body:?} -> {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: no error text: {v}"
        );
    }
    assert_eq!(p.weights("app").await, before);
    assert_eq!(
        p.state().await["last_event"],
        0,
        "no refused call is an event"
    );
    // The process is still serving.
    let mut c = Client::new(p.http);
    assert_eq!(c.get("app.test", "/").await.unwrap().status, 200);
    // `force` allows all-zero: the pool then answers 503.
    let (st, _) = p
        .admin(
            "PUT",
            "/v1/pools/app/weights?force=true",
            Some(r#"{"blue":0}"#),
        )
        .await;
    assert_eq!(st, 200);
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 503);
    assert!(a.body.contains("pool app"), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reports_api_errors_with_non_zero_exit() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let out = p.ctl(&["weights", "app", "blue=0", "green=0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would be 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.ctl(&["switch", "app", "purple"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("purple"));
    let out = p.ctl(&["weights", "app", "blue=-1"]);
    assert!(!out.status.success());
    let out = std::process::Command::new(bin())
        .args(["ctl", "-s", "/nonexistent/admin.sock", "state"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // $SWITCHYARD_SOCKET is honoured.
    let out = std::process::Command::new(bin())
        .args(["ctl", "--json", "state"])
        .env("SWITCHYARD_SOCKET", &p.socket)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pools"]["app"]["versions"]["blue"]["weight"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_added_and_removed_at_runtime_and_persist() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let grey = Upstream::start("grey").await;
    let mut p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let grey_addr = grey.addr.to_string();
    let out = p.ctl(&[
        "version",
        "add",
        "app",
        "v1.4.2",
        "--backend",
        &grey_addr,
        "--weight",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = Client::new(p.http);
    let a = c
        .request(
            "GET",
            "app.test",
            "/",
            &[("x-switchyard-version", "v1.4.2")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(a.body, "grey\n");
    assert!(p
        .ctl(&["weights", "app", "v1.4.2=100", "blue=0"])
        .status
        .success());
    p.restart().await;
    let mut c = Client::new(p.http);
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "grey\n");
    // Removing needs weight 0 first.
    assert!(!p.ctl(&["version", "rm", "app", "v1.4.2"]).status.success());
    assert!(p.ctl(&["switch", "app", "green"]).status.success());
    assert!(p.ctl(&["version", "rm", "app", "v1.4.2"]).status.success());
    assert!(p.ctl(&["version", "rm", "app", "blue"]).status.success());
    // The last version cannot go.
    assert!(!p.ctl(&["switch", "app", "nope"]).status.success());
    p.restart().await;
    let s = p.state().await;
    let versions: Vec<&String> = s["pools"]["app"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(versions, ["green"]);
    let out = p.ctl(&["events"]);
    let events = String::from_utf8_lossy(&out.stdout);
    for kind in ["version.add", "weights", "version.remove"] {
        assert!(events.contains(kind), "{kind} missing from:\n{events}");
    }
    assert!(events.contains("uid:"), "who is recorded: {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_is_0600_and_there_is_no_admin_tcp_listener() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, "")).await;
    let mode = std::fs::metadata(&p.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The process's listening TCP sockets: exactly the http entrypoint.
    let listening = listening_ports(p.pid());
    assert_eq!(listening, vec![p.http.port()], "unexpected TCP listeners");
}

/// Ports of TCP sockets in LISTEN state owned by `pid`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = u16::from_str_radix(cols[1].rsplit(':').next().unwrap(), 16).unwrap();
                ports.push(port);
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_is_set_aside_and_the_config_serves() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        b"{\"pools\": {\"app\": [trunc",
    )
    .unwrap();
    let p = Proxy::start_in(dir, &pool_config(&blue, 100, &green, 0, "")).await;
    let mut c = Client::new(p.http);
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "blue\n");
    let aside = std::fs::read_dir(p.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        });
    assert!(aside, "corrupt state file set aside");
    assert!(p.log().contains("cannot use the state file"), "{}", p.log());
    // Changes work (from the next request on) and are written afresh.
    assert!(p.ctl(&["switch", "app", "green"]).status.success());
    assert_eq!(c.get("app.test", "/").await.unwrap().body, "green\n");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(v["pools"]["app"]["weights"]["green"], 100, "{v}");
}

/// `ctl state --pool P` (and `GET /v1/state?pool=P`) shows only that pool and
/// its routes; an unknown pool is an error; `ctl switch` works from that view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_filtered_to_one_pool() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let other = Upstream::start("other").await;
    let mut config = pool_config(&blue, 100, &green, 0, "");
    config.push_str(&format!(
        "\n[[routes]]\nhost = \"other.test\"\npool = \"other\"\n\n\
         [pools.other.versions.v1]\nweight = 1\nbackends = [\"{}\"]\n",
        other.addr
    ));
    let p = Proxy::start(&config).await;
    let all: serde_json::Value =
        serde_json::from_slice(&p.ctl(&["--json", "state"]).stdout).unwrap();
    assert!(all["pools"]["app"].is_object() && all["pools"]["other"].is_object());

    let out = p.ctl(&["--json", "state", "--pool", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pools = one["pools"].as_object().unwrap();
    assert_eq!(pools.keys().collect::<Vec<_>>(), ["other"]);
    let routes = one["routes"].as_array().unwrap();
    assert!(!routes.is_empty());
    assert!(routes.iter().all(|r| r["pool"] == "other"), "{routes:?}");

    let human = p.ctl(&["state", "--pool", "app"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("blue") && !text.contains("other.test"),
        "{text}"
    );

    let out = p.ctl(&["state", "--pool", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    let out = p.ctl(&["switch", "app", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = admin(&p.socket, "GET", "/v1/state?pool=app", None)
        .await
        .unwrap();
    assert_eq!(v["pools"]["app"]["versions"]["green"]["weight"], 100);
    assert_eq!(v["pools"]["app"]["versions"]["blue"]["weight"], 0);
}
