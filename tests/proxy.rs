//! Proxy behaviour users rely on (SPEC section 6), through the real binary.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

async fn basic() -> (Upstream, Upstream, Proxy) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(
        &blue,
        100,
        &green,
        0,
        "request_timeout = \"10s\"\nmax_header_bytes = 8192",
    ))
    .await;
    (blue, green, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_matching_and_errors() {
    let (_b, _g, p) = basic().await;
    let mut c = Client::new(p.http);
    assert_eq!(c.get("APP.Test:8080", "/").await.unwrap().body, "blue\n");
    assert_eq!(c.get("app.test.", "/").await.unwrap().body, "blue\n");
    let a = c.get("other.test", "/").await.unwrap();
    assert_eq!(a.status, 404);
    assert!(a.body.contains("no route"));
    // No Host at all (HTTP/1.0 allows leaving it out): 400.
    let out = raw(p.http, b"GET / HTTP/1.0\r\n\r\n", DEADLINE).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.0 400") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    // Oversized headers: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let out = raw(p.http, big.as_bytes(), DEADLINE).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_502_and_slow_backend_504() {
    // A port with nothing listening.
    let dead = dead_addr();
    let slow = Upstream::start("slow").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
request_timeout = "2s"
[[routes]]
host = "dead.test"
pool = "dead"
[[routes]]
host = "slow.test"
pool = "slow"
[pools.dead]
retry = 0
[pools.dead.versions.v1]
weight = 1
backends = ["{dead}"]
[pools.slow.versions.v1]
weight = 1
backends = ["{}"]
"#,
        slow.addr,
        dead = dead.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    let a = c.get("dead.test", "/").await.unwrap();
    assert_eq!(a.status, 502);
    assert!(a.body.contains("pool dead"), "{}", a.body);
    // An origin that would answer in 10 minutes: the 504 (rather than its
    // 200) is the request timeout's doing.
    let a = c.get("slow.test", "/slow?ms=600000").await.unwrap();
    assert_eq!(a.status, 504);
    assert!(a.body.contains("pool slow"), "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_added_and_hop_by_hop_stripped() {
    let (_b, _g, p) = basic().await;
    let mut c = Client::new(p.http);
    let a = c
        .request(
            "GET",
            "app.test:8080",
            "/headers",
            &[
                ("connection", "keep-alive, x-private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-forwarded-for", "10.9.8.7"),
                ("te", "trailers"),
            ],
            "",
        )
        .await
        .unwrap();
    let h: std::collections::HashMap<String, String> = serde_json::from_str(&a.body).unwrap();
    assert_eq!(h["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.test:8080");
    assert_eq!(h["host"], "app.test:8080", "the client's Host is kept");
    for gone in ["x-private", "keep-alive", "te"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
    // Hop-by-hop headers of the response are not passed back.
    assert!(a.headers.get("keep-alive").is_none(), "{:?}", a.headers);
    assert_eq!(a.served_by(), "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let (blue, _g, p) = basic().await;
    // Response: the first chunk arrives before the origin produces the
    // last (it does so only once the test has the first).
    let s = TcpStream::connect(p.http).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/held")
        .header("host", "app.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, async {
        let mut body = tx.send_request(req).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        (body, first)
    })
    .await;
    let (body, first) = first.expect("no first chunk while the origin holds the last");
    assert_eq!(&first[..], b"blue held\n");
    blue.release(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"blue released\n");

    // Request: 8 MiB up and back without trouble.
    let mut c = Client::new(p.http);
    let big = "x".repeat(8 << 20);
    let a = c
        .request("POST", "app.test", "/echo", &[], &big)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_through() {
    let (_b, _g, p) = basic().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for msg in ["hello", "over the proxy", "bye"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_the_http_entrypoint() {
    let (_b, _g, p) = basic().await;
    let (mut tx, _conn) = h2c(p.http).await;
    for _ in 0..3 {
        let req = http::Request::get("http://app.test/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = tx.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_2);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&b[..], b"blue\n");
    }
}

/// HTTP/2 streams run inside their connection's task (src/server/streams.rs):
/// 150 requests at once on one connection, each with its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_http2_streams_on_one_connection_each_get_their_answer() {
    let (_b, _g, p) = basic().await;
    let (tx, _conn) = h2c(p.http).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..150 {
        let mut tx = tx.clone();
        set.spawn(async move {
            tx.ready().await.unwrap();
            // A body each: the streams' request bodies go through too.
            let req = http::Request::post("http://app.test/echo")
                .body(Full::new(Bytes::from(format!("stream {i}"))))
                .unwrap();
            let r = tx.send_request(req).await.unwrap();
            let status = r.status();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            (i, status, String::from_utf8_lossy(&b).into_owned())
        });
    }
    let mut seen = 0;
    while let Some(r) = set.join_next().await {
        let (i, status, body) = r.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("stream {i}"));
        seen += 1;
    }
    assert_eq!(seen, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_backend() {
    let dead = dead_addr();
    let live = Upstream::start("live").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "app.test"
pool = "app"
[pools.app]
retry = 1
[pools.app.versions.v1]
weight = 1
backends = ["{dead}", "{}"]
"#,
        live.addr,
        dead = dead.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    for i in 0..20 {
        // A POST too: it never reached the dead backend, so it is safe to resend.
        let a = if i % 2 == 0 {
            c.get("app.test", "/").await.unwrap()
        } else {
            c.request("POST", "app.test", "/echo", &[], "payload")
                .await
                .unwrap()
        };
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
    }
    assert_eq!(live.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_extra_clients_in_the_backlog() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 1, &green, 0, "max_connections = 1")).await;
    let mut first = Client::new(p.http);
    assert_eq!(first.get("app.test", "/").await.unwrap().status, 200);
    // A second client, connected (in the listen backlog) with its request
    // sent, waits while the first keeps its connection open and busy...
    let mut second = TcpStream::connect(p.http).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(first.get("app.test", "/").await.unwrap().status, 200);
        assert_eq!(
            blue.hits(),
            2 + i,
            "second connection was served past max_connections"
        );
    }
    let mut buf = [0u8; 1];
    assert!(
        matches!(second.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "second connection was answered past max_connections"
    );
    // ...and is served once the first goes away.
    drop(first);
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, second.read_to_end(&mut answer))
        .await
        .expect("second client served")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("blue\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (blue, _g, p) = basic().await;
    let mut c = Client::new(p.http);
    for i in 0..200 {
        // Sized, chunked and empty bodies all hand the connection back.
        let path = match i % 3 {
            0 => "/",
            1 => "/stream?chunks=2&ms=0",
            _ => "/status/204",
        };
        let a = c.get("app.test", path).await.unwrap();
        assert!(a.status.is_success());
    }
    assert_eq!(blue.hits(), 200);
    assert!(
        blue.connections() <= 2,
        "{} upstream connections for 200 sequential requests",
        blue.connections()
    );
}

/// A hand-written HTTP/1.1 backend: answers each connection's first request
/// with `reply`, then closes it after `linger` (a keep-alive timeout far
/// shorter than the proxy's). Counts the requests it answered.
async fn one_shot_backend(
    reply: &'static [u8],
    linger: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(reply).await.is_ok() {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, served)
}

fn single_backend_config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "app.test"
pool = "app"
[pools.app.versions.v1]
weight = 1
backends = ["{addr}"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_closing_idle_connections_lose_no_request() {
    let (addr, served) = one_shot_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
        Duration::from_millis(2),
    )
    .await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    for i in 0..200 {
        // Back to back (the close races the next request on the pooled
        // connection) and after a pause (the close is already seen): the
        // pause is the subject, not a wait for something.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a = c.get("app.test", "/").await.unwrap();
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert_eq!(a.body, "ok\n");
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_and_chunked_responses_pass_whole() {
    let (addr, _) = one_shot_backend(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the backend closes\n",
        Duration::ZERO,
    )
    .await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    for _ in 0..3 {
        let a = c.get("app.test", "/").await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "until the backend closes\n");
    }

    let (addr, _) = one_shot_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        Duration::from_millis(50),
    )
    .await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "hello, world");

    // A backend that breaks the protocol gets a 502, not a hang or a crash.
    let (addr, _) = one_shot_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        Duration::from_millis(50),
    )
    .await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_fields_stay_with_the_backend_connection() {
    let (addr, served) = one_shot_backend(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
X-Hop: secret\r\nProxy-Connection: keep-alive\r\nX-End: kept\r\nContent-Length: 3\r\n\r\nok\n",
        Duration::from_millis(20),
    )
    .await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "ok\n");
    assert_eq!(a.headers["x-end"], "kept");
    for gone in ["keep-alive", "x-hop", "proxy-connection"] {
        assert!(
            a.headers.get(gone).is_none(),
            "{gone} passed: {:?}",
            a.headers
        );
    }
    // The client's own connection stays open: no `Connection: close` leaked.
    assert!(a.headers.get("connection").is_none(), "{:?}", a.headers);
    let b = c.get("app.test", "/").await.unwrap();
    assert_eq!(b.status, 200);
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_field_naming_many_fields_takes_them_all_out() {
    // More names than the direct exchange keeps track of while it reads the
    // head: the proxy's own pass takes the rest out.
    let names: Vec<String> = (0..12).map(|i| format!("X-H{i}")).collect();
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, {}\r\n",
        names.join(", ")
    );
    for n in &names {
        reply.push_str(&format!("{n}: secret\r\n"));
    }
    reply.push_str("X-End: kept\r\nContent-Length: 3\r\n\r\nok\n");
    let reply: &'static [u8] = Box::leak(reply.into_bytes().into_boxed_slice());
    let (addr, served) = one_shot_backend(reply, Duration::from_millis(20)).await;
    let p = Proxy::start(&single_backend_config(addr)).await;
    let mut c = Client::new(p.http);
    for _ in 0..2 {
        let a = c.get("app.test", "/").await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "ok\n");
        assert_eq!(a.headers["x-end"], "kept");
        for n in &names {
            assert!(
                a.headers.get(n.as_str()).is_none(),
                "{n} passed: {:?}",
                a.headers
            );
        }
        assert!(a.headers.get("connection").is_none(), "{:?}", a.headers);
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_bodiless_statuses_keep_the_connection() {
    let (blue, _g, p) = basic().await;
    let mut c = Client::new(p.http);
    for i in 0..30 {
        let a = match i % 3 {
            0 => c.request("HEAD", "app.test", "/", &[], "").await.unwrap(),
            1 => c.get("app.test", "/status/304").await.unwrap(),
            _ => c.get("app.test", "/").await.unwrap(),
        };
        assert!(a.status.is_success() || a.status == 304, "{}", a.status);
        if i % 3 != 2 {
            assert!(a.body.is_empty());
        }
    }
    assert_eq!(blue.hits(), 30);
    assert_eq!(blue.connections(), 1);
}

/// A backend that writes each connection's response head, pauses, then
/// either writes the body or (`None`) dies without it. Counts the heads
/// it wrote.
async fn staged_backend(
    head: &'static [u8],
    body: Option<&'static [u8]>,
    pause: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(head).await.is_err() {
                    return;
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(pause).await;
                match body {
                    Some(b) => {
                        let _ = s.write_all(b).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => {
                        let _ = s.set_zero_linger();
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_between_head_and_body_costs_no_request() {
    // The head of a small body comes, then the backend dies (a container
    // stopped mid-response): the GET goes to the other backend, whole.
    let (dying, heads) = staged_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
        None,
        Duration::from_millis(100),
    )
    .await;
    let live = Upstream::start("live").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "app.test"
pool = "app"
[pools.app]
retry = 1
[pools.app.passive]
failures = 0
[pools.app.versions.v1]
weight = 1
backends = ["{dying}", "{}"]
"#,
        live.addr
    );
    let p = Proxy::start(&config).await;
    let mut c = Client::new(p.http);
    for i in 0..10 {
        let a = c.get("app.test", "/").await;
        let a = a.unwrap_or_else(|e| panic!("request {i}: {e}\n{}", p.log()));
        assert_eq!(
            (a.status.as_u16(), a.body.as_str()),
            (200, "live\n"),
            "request {i}"
        );
    }
    assert!(
        heads.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the dying backend was tried"
    );
    assert_eq!(live.hits(), 10);

    // A small body that is merely slow is waited for, and passes whole.
    let (slow, _) = staged_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        Some(b"late\n"),
        Duration::from_millis(300),
    )
    .await;
    let p = Proxy::start(&single_backend_config(slow)).await;
    let mut c = Client::new(p.http);
    let a = c.get("app.test", "/").await.unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "late\n"));
}
