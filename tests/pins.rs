//! Strict pins: a pin header or a preview host reaches the version it names
//! or is refused; it never gets another version's answer. Backends nothing
//! has looked at yet show as "unknown", not healthy.

mod support;

use serde_json::Value;
use support::*;

const PIN: &str = "X-Switchyard-Version";

fn config(blue: &Upstream, green: &str, health: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
connect_timeout = "2s"

[[routes]]
host = "app.test"
pool = "app"
preview = "next.app.test"

[pools.app]
version_header = true
pin_header = "{PIN}"
{health}

[pools.app.versions.blue]
weight = 100
backends = ["{}"]

[pools.app.versions.green]
weight = 0
backends = ["{green}"]
"#,
        blue.addr
    )
}

fn backend(state: &Value, version: &str) -> Value {
    state["pools"]["app"]["versions"][version]["backends"][0].clone()
}

/// The answers a smoke test of green gets: pin and preview.
async fn smoke_green(c: &mut Client) -> [Answer; 2] {
    let pinned = c
        .request("GET", "app.test", "/", &[(PIN, "green")], "")
        .await
        .unwrap();
    let preview = c.get("next.app.test", "/").await.unwrap();
    [pinned, preview]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_or_preview_of_a_version_that_is_not_listening_is_503_naming_it() {
    let blue = Upstream::start("blue").await;
    let dead = dead_addr();
    let p = Proxy::start(&config(&blue, &dead.addr.to_string(), "")).await;
    let mut c = Client::new(p.http);
    // Before any probe or request, nothing is known about either backend.
    let s = p.state().await;
    for v in ["blue", "green"] {
        let b = backend(&s, v);
        assert_eq!(b["health"], "unknown", "{b}");
        assert_eq!(b["healthy"], Value::Null, "{b}");
        assert_eq!(b["available"], true, "still in rotation: {b}");
    }
    let out = p.ctl(&["state"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} unknown", blue.addr)),
        "ctl state shows unknown: {text}"
    );
    // An unknown backend still takes traffic: no 503 at start.
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!((a.status.as_u16(), a.served_by()), (200, "blue"));
    assert_eq!(backend(&p.state().await, "blue")["health"], "up");

    let before = blue.hits();
    for _ in 0..3 {
        for a in smoke_green(&mut c).await {
            assert_eq!(a.status, 503, "{a:?}");
            assert!(
                a.body.contains("green"),
                "the body names the version: {a:?}"
            );
            assert_eq!(a.served_by(), "", "no version answered: {a:?}");
        }
    }
    assert_eq!(blue.hits(), before, "blue never answered for green");
    // The failed connections made green known, and down once ejected.
    assert_ne!(backend(&p.state().await, "green")["health"], "unknown");

    let a = c
        .request("GET", "app.test", "/", &[(PIN, "v9")], "")
        .await
        .unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.body.contains("v9"), "{a:?}");
    let a = c
        .request("GET", "app.test", "/", &[(PIN, "")], "")
        .await
        .unwrap();
    assert_eq!(a.status, 404, "an empty pin is not the split: {a:?}");
    assert_eq!(blue.hits(), before);
    // Without a pin, the split is as before.
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!((a.status.as_u16(), a.served_by()), (200, "blue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_a_version_its_probes_found_down_is_503_and_of_a_live_one_200() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let health = r#"health = { path = "/health", interval = "200ms", timeout = "200ms", rise = 1, fall = 1 }"#;
    let p = Proxy::start(&config(&blue, &green.addr.to_string(), health)).await;
    let mut c = Client::new(p.http);
    assert!(
        eventually(DEADLINE, || async {
            backend(&p.state().await, "green")["health"] == "up"
        })
        .await,
        "the first probe makes green known"
    );
    for a in smoke_green(&mut c).await {
        assert_eq!((a.status.as_u16(), a.served_by()), (200, "green"), "{a:?}");
    }
    green
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            let b = backend(&p.state().await, "green");
            b["health"] == "down" && b["healthy"] == false && b["available"] == false
        })
        .await
    );
    let before = blue.hits();
    for a in smoke_green(&mut c).await {
        assert_eq!(a.status, 503, "{a:?}");
        assert!(a.body.contains("version green"), "{a:?}");
    }
    assert_eq!(blue.hits(), before);
}
