//! The access log: one line per request, in common or JSON format.

mod support;
use support::*;

async fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let ok = eventually(DEADLINE, || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let len = got.len();
        async move { len >= n }
    })
    .await;
    assert!(ok, "expected {n} lines, got {got:?}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_format_has_one_line_per_request_with_route_version_backend_bytes() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = format!(
        "{}\n[access_log]\nformat = \"common\"\npath = \"{{dir}}/access.log\"\n",
        pool_config(&blue, 100, &green, 0, "")
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    assert_eq!(c.get("app.test", "/hello?x=1").await.unwrap().status, 200);
    assert_eq!(c.get("nowhere.test", "/").await.unwrap().status, 404);
    let a = c.get("app.test", "/stream?chunks=3&ms=10").await.unwrap();
    let big = "z".repeat(10_000);
    assert_eq!(
        c.request("POST", "app.test", "/echo", &[], &big)
            .await
            .unwrap()
            .body
            .len(),
        10_000
    );
    let log = lines(&p.dir.path().join("access.log"), 4).await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].starts_with("127.0.0.1 - - ["), "{}", log[0]);
    assert!(
        log[0].contains(&format!(
            "\"GET /hello?x=1 HTTP/1.1\" 200 5 \"app.test\" app.test app/blue {} ",
            blue.addr
        )),
        "{}",
        log[0]
    );
    assert!(
        log[1].contains("\"GET / HTTP/1.1\" 404 ") && log[1].contains(" - -/- - "),
        "{}",
        log[1]
    );
    assert!(
        log[2].contains(&format!(" 200 {} ", a.body.len())),
        "streamed bytes counted: {}",
        log[2]
    );
    assert!(
        log[3].contains("\"POST /echo HTTP/1.1\" 200 10000 "),
        "{}",
        log[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_parses_and_off_writes_nothing() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = format!(
        "{}\n[access_log]\nformat = \"json\"\npath = \"{{dir}}/access.json\"\n",
        pool_config(&blue, 0, &green, 100, "")
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    for _ in 0..3 {
        c.get("app.test", "/").await.unwrap();
    }
    let log = lines(&p.dir.path().join("access.json"), 3).await;
    for l in &log {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["version"], "green");
        assert_eq!(v["backend"], green.addr.to_string());
        assert_eq!(v["bytes"], 6);
        assert_eq!(v["client"], "127.0.0.1");
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    }

    let off = format!(
        "{}\n[access_log]\nformat = \"off\"\npath = \"{{dir}}/never.log\"\n",
        pool_config(&blue, 1, &green, 0, "")
    );
    let p2 = Proxy::start(&off).await;
    let mut c = Client::new(p2.http);
    c.get("app.test", "/").await.unwrap();
    // An access log opens (creates) its file before the listeners serve, so
    // once a request is answered its absence is final: nothing to wait for.
    assert!(!p2.dir.path().join("never.log").exists());
}
