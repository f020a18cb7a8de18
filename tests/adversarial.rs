//! Hostile and broken clients against the real binary: every client
//! connection, whatever its protocol stage, is closed after a bounded time
//! (`header_timeout`, `idle_timeout`, `send_timeout`, `body_timeout`), and
//! normal traffic is served meanwhile.
//!
//! The configured timeouts are 1 s; every deadline asserted is 10 s or more,
//! so a slow machine fails nothing: a test fails only when the proxy never
//! closes (what it did before these limits existed).

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use support::{closed_by_peer, pool_config, Client, Proxy, Upstream};
use tls_support::{tls_connect, tls_get, TestCa};

/// Far above every configured timeout: reaching it means "never closed".
const DEADLINE: Duration = Duration::from_secs(10);

/// blue (weight 100) and green behind a proxy with `server` keys added.
async fn proxy_with(server: &str) -> (Proxy, Upstream, Upstream) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&pool_config(&blue, 100, &green, 0, server)).await;
    (p, blue, green)
}

/// One GET through a fresh client; `Err` unless it is a 200 from blue
/// within [`DEADLINE`].
async fn normal_get(addr: SocketAddr) -> Result<(), String> {
    let mut c = Client::new(addr);
    match tokio::time::timeout(DEADLINE, c.get("app.test", "/")).await {
        Err(_) => Err(format!("no answer within {DEADLINE:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(a)) if a.status == StatusCode::OK && a.body == "blue\n" => Ok(()),
        Ok(Ok(a)) => Err(format!("{a:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_header_timeout_and_free_their_slots() {
    // Every slot taken by a silent client: before the limit, no normal
    // request was ever served again.
    let (p, _b, _g) = proxy_with("header_timeout = \"1s\"\nmax_connections = 50").await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(p.http).await.unwrap());
    }
    // While they are connected: served once their slots come free.
    normal_get(p.http)
        .await
        .expect("a request during the attack");
    for (i, s) in silent.iter_mut().enumerate() {
        let r = closed_by_peer(s, DEADLINE).await;
        assert!(r.is_ok(), "silent connection {i}: {r:?}");
        assert_eq!(r.unwrap(), 0, "nothing is sent to a silent client");
    }
    normal_get(p.http)
        .await
        .expect("a request after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_http2_preface_is_closed_after_header_timeout() {
    let (p, _b, _g) = proxy_with("header_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let r = closed_by_peer(&mut s, DEADLINE).await;
    assert!(r.is_ok(), "half a preface kept the connection: {r:?}");
    // A whole preface and SETTINGS, then no request: the same bound.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    let r = closed_by_peer(&mut s, DEADLINE).await;
    assert!(
        r.is_ok(),
        "an HTTP/2 connection with no request stayed: {r:?}"
    );
    normal_get(p.http).await.unwrap();
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Sends `bytes` one every `every`, then nothing; returns once the proxy
/// closed the connection, or `Err` after [`DEADLINE`].
async fn trickle(addr: SocketAddr, bytes: Vec<u8>, every: Duration) -> Result<u64, String> {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        for b in bytes {
            if w.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        // Keep the write side open: a FIN would let the proxy close early.
        std::future::pending::<()>().await;
    });
    let closed = closed_by_peer(&mut r, DEADLINE).await;
    writer.abort();
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_closed_and_normal_traffic_goes_on() {
    let (p, _b, _g) = proxy_with("header_timeout = \"1s\"").await;
    let every = Duration::from_millis(300);
    // A request head that never ends, one byte per 300 ms.
    let mut head = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    head.extend((0..40).flat_map(|i| format!("X-Slow-{i}: y\r\n").into_bytes()));
    // The HTTP/2 preface (which is also how the protocol is chosen) the same way.
    let preface = H2_PREFACE_AND_SETTINGS.to_vec();
    let h1 = tokio::spawn(trickle(p.http, head, every));
    let h2 = tokio::spawn(trickle(p.http, preface, every));
    // Meanwhile a normal request every 200 ms, each answered.
    let mut served = 0;
    while !(h1.is_finished() && h2.is_finished()) {
        normal_get(p.http)
            .await
            .expect("a request during the slowloris");
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (h1, h2) = (h1.await.unwrap(), h2.await.unwrap());
    assert!(h1.is_ok(), "HTTP/1.1 slowloris: {h1:?}");
    assert!(h2.is_ok(), "HTTP/2 preface slowloris: {h2:?}");
    assert!(served > 0);
    normal_get(p.http).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_after_the_tls_handshake_is_closed_after_header_timeout() {
    let blue = Upstream::start("blue").await;
    let ca = TestCa::new("adversarial test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["app.test"]);
    std::fs::write(dir.path().join("app.pem"), cert).unwrap();
    std::fs::write(dir.path().join("app.key"), key).unwrap();
    let cfg = format!(
        r#"[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
header_timeout = "1s"
shutdown_grace = "1s"

[[routes]]
host = "app.test"
pool = "app"
tls = {{ cert = "{{dir}}/app.pem", key = "{{dir}}/app.key" }}
redirect_https = false

[pools.app.versions.blue]
weight = 100
backends = ["{}"]
"#,
        blue.addr
    );
    let p = Proxy::start_in(dir, &cfg).await;
    let https = p.listener("https").await;
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let mut s = tls_connect(https, "app.test", &ca.cert_pem, &[alpn])
            .await
            .unwrap();
        let r = closed_by_peer(&mut s, DEADLINE).await;
        assert!(
            r.is_ok(),
            "silent after a handshake with ALPN {alpn:?}: {r:?}"
        );
    }
    let a = tls_get(https, "app.test", "app.test", "/", &ca.cert_pem)
        .await
        .unwrap();
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "blue\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_idle_timeout_h2_even_when_it_answers_pings() {
    // header_timeout far above the deadline: only idle_timeout can close them.
    let (p, _b, _g) = proxy_with("header_timeout = \"60s\"\nidle_timeout = \"1s\"").await;

    // HTTP/2 with prior knowledge, pinging every 200 ms while idle.
    let tcp = TcpStream::connect(p.http).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("http://app.test/").body(Empty::new()).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"blue\n");
    let ended = tokio::time::timeout(DEADLINE, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");

    // HTTP/1.1 keep-alive after one request.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"blue\n") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let r = closed_by_peer(&mut s, DEADLINE).await;
    assert_eq!(r, Ok(0), "an idle keep-alive connection stayed open");
}

/// A backend answering every request with an endless body; sends on the
/// channel when a write fails, that is when the proxy let its connection go.
async fn endless_backend() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut r = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
                    .await;
                while r.is_ok() {
                    r = s.write_all(&chunk).await;
                }
                let _ = tx.send(());
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_cut_off_after_send_timeout_and_the_backend_released() {
    let (backend, mut released) = endless_backend().await;
    let cfg = format!(
        r#"[server]
http = "127.0.0.1:0"
send_timeout = "1s"
shutdown_grace = "1s"

[[routes]]
host = "app.test"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["{backend}"]
"#
    );
    let p = Proxy::start(&cfg).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(p.http).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    // Never read: the proxy's writes stall, then it gives up.
    let r = tokio::time::timeout(DEADLINE * 3, released.recv()).await;
    assert!(
        matches!(r, Ok(Some(()))),
        "the backend connection of a stalled client was never released"
    );
    let r = closed_by_peer(&mut s, DEADLINE * 3).await;
    assert!(
        r.is_ok(),
        "the stalled client was never disconnected: {r:?}"
    );

    // HTTP/2: the client reads its socket (it answers PINGs) but never opens
    // its 64 KiB window again, so no write ever blocks: the response waits.
    let tcp = TcpStream::connect(p.http).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("http://app.test/big")
        .body(Empty::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = tokio::time::timeout(DEADLINE * 3, released.recv()).await;
    assert!(
        matches!(r, Ok(Some(()))),
        "the backend connection of a stream whose window stays shut was never released"
    );
    let ended = tokio::time::timeout(DEADLINE * 3, conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection was never closed");
    drop(resp);
}

/// Sends `head` and then `body` in `parts` pieces `gap` apart; returns what
/// came back once the proxy closed, or `Err` after [`DEADLINE`].
async fn upload(
    addr: SocketAddr,
    body: &[u8],
    parts: usize,
    gap: Duration,
) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len() + 2
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(parts)) {
        if s.write_all(piece).await.is_err() {
            break; // closed already: read what it said
        }
        tokio::time::sleep(gap).await;
    }
    // Two bytes short of Content-Length: what remains never comes.
    let mut out = Vec::new();
    match tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await {
        Err(_) => Err(format!(
            "still open after {DEADLINE:?}: {:?}",
            String::from_utf8_lossy(&out)
        )),
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_and_a_close_a_slow_one_goes_through() {
    let (p, _b, _g) = proxy_with("body_timeout = \"1s\"").await;
    // Stalls after "ab" for good.
    let out = upload(p.http, b"ab", 1, Duration::ZERO).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // Trickled slower than body_timeout: 408 after the first gap.
    let out = upload(p.http, b"abcdef", 3, Duration::from_millis(2500))
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // Slow but within body_timeout between pieces: served.
    let mut c = Client::new(p.http);
    let a = c
        .request("POST", "app.test", "/echo", &[], "hello")
        .await
        .unwrap();
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "hello"));
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"cd").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("abcd"),
        "{out}"
    );
}
