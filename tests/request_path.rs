//! The request path against the real binary, from a security review: a
//! client's own faults are never charged to a backend, one host per
//! request, response framing and reuse of backend connections, malformed
//! chunked responses, CONNECT and the asterisk target, HTTP/2 cookies, the
//! response head limit.
//!
//! Backends are the support crate's origin ([`Upstream`]) or a scripted one
//! here ([`Scripted`]) that answers by path with raw bytes, and answers any
//! later request on a connection it already used with `reused`, so that a
//! test sees whether the proxy reused a backend connection.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";
const REUSED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nreused";
/// What a broken backend sends late: a whole response, which a reused
/// connection would hand to the next request.
const STRAY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray";

/// A response whose fields the proxy must pass on as they are, but for the
/// hop-by-hop ones (Connection, what it names, Keep-Alive): names in mixed
/// case, padding, a bare LF line end, a repeated field, its own Date.
const FIELDS: &[u8] = b"HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 08:00:00 GMT\r\n\
X-Mixed-Case:   padded value\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
Keep-Alive: timeout=5\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok";

/// Malformed chunked bodies (after a `Transfer-Encoding: chunked` head).
fn malformed_chunked() -> Vec<Vec<u8>> {
    let mut big_trailers = b"5\r\nhello\r\n0\r\n".to_vec();
    for _ in 0..5 {
        big_trailers.extend_from_slice(b"X-T: ");
        big_trailers.resize(big_trailers.len() + 4000, b'a');
        big_trailers.extend_from_slice(b"\r\n");
    }
    big_trailers.extend_from_slice(b"\r\n");
    vec![
        b"zz\r\nabc\r\n0\r\n\r\n".to_vec(),
        b"5 x\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"fffffffffffffffff\r\nx\r\n0\r\n\r\n".to_vec(),
        b"5\nhello\r\n0\r\n\r\n".to_vec(),
        b"5\r\nhelloX\r\n0\r\n\r\n".to_vec(),
        b"0\r\nnot a field\r\n\r\n".to_vec(),
        big_trailers,
    ]
}

/// A scripted backend: raw answers by path, `reused` to any request after
/// the first on a connection.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Signalled once a late write (stray bytes) has been made.
    late_sent: Arc<Notify>,
    /// Lets `/chunked-then-bad` send its malformed rest.
    go: Arc<Notify>,
}

impl Scripted {
    async fn start() -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Scripted {
            addr: l.local_addr().unwrap(),
            connections: Arc::default(),
            late_sent: Arc::default(),
            go: Arc::default(),
        };
        let (conns, late, go) = (s.connections.clone(), s.late_sent.clone(), s.go.clone());
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (late, go) = (late.clone(), go.clone());
                tokio::spawn(async move {
                    let _ = scripted_conn(c, late, go).await;
                });
            }
        });
        s
    }
}

/// Reads one request (head, and a Content-Length or chunked body):
/// its request line, or `None` at the end of the stream.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut b = [0u8; 16384];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let line = head.lines().next().unwrap_or("").to_string();
    buf.drain(..end);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let done = if chunked {
            buf.windows(5).any(|w| w == b"0\r\n\r\n")
        } else {
            buf.len() >= len
        };
        if done {
            break;
        }
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    buf.clear();
    Some(line)
}

async fn scripted_conn(
    mut s: TcpStream,
    late: Arc<Notify>,
    go: Arc<Notify>,
) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut first = true;
    while let Some(line) = read_request(&mut s, &mut buf).await {
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        // The late-bytes answers (a clean pooled connection may carry them)
        // and `/fields` are scripted on any request of a connection; every
        // other path answers `reused` after the first request.
        let any_time = matches!(
            path.as_str(),
            "/head-late" | "/204-late" | "/cl-extra" | "/fields"
        );
        if !first && !any_time {
            s.write_all(REUSED).await?;
            continue;
        }
        first = false;
        let late_write = |head: &'static [u8]| async move { (head, true) };
        let (now, stray): (&[u8], bool) = match path.as_str() {
            "/head-late" => late_write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").await,
            "/204-late" => late_write(b"HTTP/1.1 204 No Content\r\n\r\n").await,
            "/cl-extra" => late_write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst").await,
            "/te-cl" => (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
                false,
            ),
            "/fields" => (FIELDS, false),
            "/big-head" => {
                let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                big.resize(big.len() + 70 * 1024, b'a');
                big.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
                s.write_all(&big).await?;
                continue;
            }
            "/chunked-then-bad" => {
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await?;
                go.notified().await;
                s.write_all(b"zz\r\n").await?;
                continue;
            }
            p => {
                if let Some(i) = p.strip_prefix("/bad-chunked/") {
                    let i: usize = i.parse().unwrap();
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    out.extend_from_slice(&malformed_chunked()[i]);
                    s.write_all(&out).await?;
                    continue;
                }
                (SECOND, false)
            }
        };
        s.write_all(now).await?;
        if stray {
            // The subject of the test: bytes after the response's end.
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(STRAY).await?;
            late.notify_one();
        }
    }
    Ok(())
}

fn one_pool(addr: SocketAddr, extra_pool: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
{extra_pool}

[pools.app.versions.v1]
weight = 100
backends = ["{addr}"]
"#
    )
}

// ---------------------------------------------------------------------------
// 1. A client's own errors never count as backend failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_faults_do_not_eject_the_backend() {
    let app = Upstream::start("app").await;
    let config = one_pool(
        app.addr,
        "passive = { failures = 2, ejection = \"30s\" }\nretry = 1",
    )
    .replace("[server]\n", "[server]\nrequest_timeout = \"1s\"\n");
    let p = Proxy::start(&config).await;

    for _ in 0..5 {
        let r = raw(
            p.http,
            b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
zz\r\nhello\r\n0\r\n\r\n",
            DEADLINE,
        )
        .await;
        assert_eq!(status_of(&r), 400, "{}", String::from_utf8_lossy(&r));
    }
    for _ in 0..5 {
        // Cut mid-body: 100 bytes of 1000, then the client's side closes.
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'x'; 100]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
        // No answer is needed; none is a 5xx.
        assert!(
            !out.starts_with(b"HTTP/1.1 5"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    for _ in 0..2 {
        // A stalled upload: the head and part of the body, then nothing
        // until request_timeout.
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\nxx")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
        assert_eq!(status_of(&out), 408, "{}", String::from_utf8_lossy(&out));
    }

    let backend = &p.state().await["pools"]["app"]["versions"]["v1"]["backends"][0];
    assert_eq!(backend["ejected"], false, "{backend}");
    assert!(p.events_of("backend.ejected").await.is_empty());
    let mut c = Client::new(p.http);
    for _ in 0..5 {
        let a = c.get("app.test", "/").await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    // A well-formed upload still goes through.
    let a = c
        .request("POST", "app.test", "/echo", &[], "payload")
        .await
        .unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "payload"));
}

// ---------------------------------------------------------------------------
// 2. One Host per request.

fn two_routes(app: &Upstream, internal: &Upstream) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[[routes]]
host = "internal.test"
pool = "internal"

[pools.app.versions.v1]
weight = 100
backends = ["{}"]

[pools.internal.versions.v1]
weight = 100
backends = ["{}"]
"#,
        app.addr, internal.addr
    )
}

/// The body of a raw HTTP/1.1 answer (`Connection: close` requests).
fn body_of(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_per_request_on_http1() {
    let app = Upstream::start("app").await;
    let internal = Upstream::start("internal").await;
    let p = Proxy::start(&two_routes(&app, &internal)).await;
    let ask = |req: &'static str| raw(p.http, req.as_bytes(), DEADLINE);

    // The absolute-form target decides, and the backend is told that host.
    let r = ask("GET http://app.test/headers HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&r), 200, "{}", String::from_utf8_lossy(&r));
    let seen: serde_json::Value = serde_json::from_str(&body_of(&r)).unwrap();
    assert_eq!(seen["host"], "app.test");
    let r =
        ask("GET http://app.test/headers HTTP/1.1\r\nHost: APP.test\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(status_of(&r), 200, "{}", String::from_utf8_lossy(&r));

    for bad in [
        // A Host naming another authority than the target's.
        "GET http://app.test/headers HTTP/1.1\r\nHost: internal.test\r\nConnection: close\r\n\r\n",
        "GET http://internal.test/headers HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        // Two Host fields, either order, even equal.
        "GET /headers HTTP/1.1\r\nHost: app.test\r\nHost: internal.test\r\nConnection: close\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: internal.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    ] {
        let r = ask(bad).await;
        assert_eq!(status_of(&r), 400, "{bad:?}: {}", String::from_utf8_lossy(&r));
    }
    assert_eq!(
        app.hits() + internal.hits(),
        2,
        "only the two good ones went through"
    );
}

async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    h2c(addr).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_and_one_cookie_field_on_http2() {
    let app = Upstream::start("app").await;
    let internal = Upstream::start("internal").await;
    let p = Proxy::start(&two_routes(&app, &internal)).await;
    let mut tx = h2(p.http).await;

    // :authority decides; Host conflicting with it is refused.
    let req = http::Request::get("http://app.test/headers")
        .header("host", "internal.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tx.send_request(req).await.unwrap();
    assert_eq!(r.status(), 400);

    // Cookie fields split by an HTTP/2 client reach the backend as one.
    let req = http::Request::get("http://app.test/headers")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tx.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let b = r.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(seen["host"], "app.test", "{seen}");
    assert_eq!(seen["cookie"], "a=1; b=2; c=3", "{seen}");
    assert_eq!(internal.hits(), 0);
}

/// A backend that records each request head it reads (lowercased) and
/// answers 200 `ok` on the same connection.
async fn head_recorder() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 16384];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let _ = tx.send(head);
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next_head(heads: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(DEADLINE, heads.recv())
        .await
        .expect("the backend saw no request")
        .expect("the recorder is gone")
}

/// What a backend must see of a request whose host came from its target
/// (`:authority`, an absolute-form URI): origin form, exactly one Host, the
/// routed one, written before the X-Forwarded-* fields.
fn assert_upstream_head(head: &str, line: &str) {
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], line, "{head}");
    let hosts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("host:"))
        .collect();
    assert_eq!(hosts.len(), 1, "one Host field: {head}");
    assert_eq!(lines[hosts[0]], "host: app.test", "{head}");
    let xff = lines
        .iter()
        .position(|l| l.starts_with("x-forwarded-for:"))
        .expect("x-forwarded-for");
    assert!(hosts[0] < xff, "Host before X-Forwarded-*: {head}");
    assert!(lines.contains(&"x-forwarded-host: app.test"), "{head}");
    assert!(lines.contains(&"x-forwarded-proto: http"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_authority_reaches_the_backend_as_origin_form_and_one_host() {
    let (addr, mut heads) = head_recorder().await;
    let p = Proxy::start(&one_pool(addr, "")).await;

    // HTTP/2: a GET (the direct exchange) and a POST with a body (hyper's
    // client), with :authority only, then with a Host that agrees with it.
    let mut tx = h2(p.http).await;
    for host in [None, Some("APP.test")] {
        for (method, body) in [("GET", ""), ("POST", "hi")] {
            let mut req = http::Request::builder()
                .method(method)
                .uri("http://app.test/p?q=1");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let req = req.body(Full::new(Bytes::from(body))).unwrap();
            let r = tx.send_request(req).await.unwrap();
            assert_eq!(r.status(), 200, "{method} host {host:?}");
            let line = format!("{} /p?q=1 http/1.1", method.to_lowercase());
            assert_upstream_head(&next_head(&mut heads).await, &line);
        }
    }

    // HTTP/1.1 absolute form, without a Host field and with an agreeing one.
    for (method, extra) in [
        ("GET", ""),
        ("POST", "Content-Length: 2\r\n"),
        ("GET", "Host: app.test\r\n"),
        ("POST", "Host: app.test\r\nContent-Length: 2\r\n"),
    ] {
        let body = if method == "POST" { "hi" } else { "" };
        let req = format!(
            "{method} http://app.test/p?q=1 HTTP/1.1\r\n{extra}Connection: close\r\n\r\n{body}"
        );
        let r = raw(p.http, req.as_bytes(), DEADLINE).await;
        assert_eq!(
            status_of(&r),
            200,
            "{req:?}: {}",
            String::from_utf8_lossy(&r)
        );
        let line = format!("{} /p?q=1 http/1.1", method.to_lowercase());
        assert_upstream_head(&next_head(&mut heads).await, &line);
    }
}

// ---------------------------------------------------------------------------
// 3. Response framing and reuse; late bytes.

/// A raw response's head lines, lowercased names, each checked to end in
/// CRLF; and its body.
fn head_fields(resp: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head end: {}", String::from_utf8_lossy(resp)));
    let head = &resp[..end + 2];
    let mut fields = Vec::new();
    for line in head.split(|&b| b == b'\n').skip(1) {
        if line.is_empty() {
            continue;
        }
        let line = line
            .strip_suffix(b"\r")
            .unwrap_or_else(|| panic!("a bare LF line end: {}", String::from_utf8_lossy(head)));
        let line = String::from_utf8_lossy(line);
        let (n, v) = line.split_once(':').unwrap();
        fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    (fields, resp[end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_fields_reach_the_client_as_sent_less_the_hop_by_hop_ones() {
    let b = Scripted::start().await;
    let plain = one_pool(b.addr, "");
    let served_by = one_pool(b.addr, "version_header = true");
    // The direct server writes the fields as they came; the others (hyper's
    // client, and a pool that adds x-served-by) go through a header map.
    let [direct, hyper] = both_paths(&plain).await;
    let marked = Proxy::start(&served_by).await;
    let mut heads = Vec::new();
    for (p, method) in [
        (&direct, "GET"),
        (&hyper, "GET"),
        (&marked, "GET"),
        (&direct, "HEAD"),
    ] {
        let req =
            format!("{method} /fields HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let resp = raw(p.http, req.as_bytes(), DEADLINE).await;
        assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
        let (fields, body) = head_fields(&resp);
        let mut fields: Vec<_> = fields
            .into_iter()
            .filter(|(n, _)| n != "x-served-by" || p.http != marked.http)
            .collect();
        // Order between different names is the writer's; of one name, the
        // backend's.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            fields,
            [
                ("connection", "close"),
                ("content-length", "2"),
                ("date", "Mon, 07 Dec 2026 08:00:00 GMT"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-mixed-case", "padded value"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string())),
            "{method} through {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(body, if method == "HEAD" { &b""[..] } else { b"ok" });
        heads.push(resp);
    }
    // The direct server passes the names in the backend's case.
    let direct_head = String::from_utf8_lossy(&heads[0]).to_string();
    assert!(
        direct_head.contains("\r\nX-Mixed-Case: padded value\r\n"),
        "{direct_head}"
    );
    assert!(String::from_utf8_lossy(&heads[2]).contains("x-served-by: v1\r\n"));
}

/// Both backend paths: the direct exchange (default) and hyper's client
/// (`SWITCHYARD_DIRECT_H1=0`).
async fn both_paths(config: &str) -> [Proxy; 2] {
    let direct = Proxy::start(config).await;
    let hyper = Proxy::start_env(
        tempfile::tempdir().unwrap(),
        config,
        &[("SWITCHYARD_DIRECT_H1", "0")],
    )
    .await;
    [direct, hyper]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_dechunked_and_its_connection_not_reused() {
    let b = Scripted::start().await;
    for p in both_paths(&one_pool(b.addr, "")).await {
        let mut c = Client::new(p.http);
        let a = c.get("app.test", "/te-cl").await.unwrap();
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
        assert!(!a.headers.contains_key("content-length"), "{a:?}");
        // Also through hyper's client on the default proxy: a body.
        let a = c
            .request("POST", "app.test", "/te-cl", &[], "up")
            .await
            .unwrap();
        assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "hello"));
        assert!(!a.headers.contains_key("content-length"), "{a:?}");
        let a = c.get("app.test", "/next").await.unwrap();
        assert_eq!(a.body, "second", "the connection after TE+CL was reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_bytes_from_a_backend_never_reach_the_next_request() {
    let b = Scripted::start().await;
    for p in both_paths(&one_pool(b.addr, "")).await {
        for (method, path) in [
            ("HEAD", "/head-late"),
            ("GET", "/204-late"),
            ("GET", "/cl-extra"),
        ] {
            let mut c = Client::new(p.http);
            let a = c.request(method, "app.test", path, &[], "").await.unwrap();
            assert!(a.status.is_success(), "{path}: {a:?}");
            // The stray bytes are on the pooled connection now.
            tokio::time::timeout(DEADLINE, b.late_sent.notified())
                .await
                .unwrap();
            let a = c.get("app.test", "/next").await.unwrap();
            assert_eq!(
                (a.status.as_u16(), a.body.as_str()),
                (200, "second"),
                "{path}: the next request got {a:?}"
            );
            // Through hyper's client too (a body).
            let a = c
                .request(method, "app.test", path, &[], "up")
                .await
                .unwrap();
            assert!(a.status.is_success(), "{path}: {a:?}");
            tokio::time::timeout(DEADLINE, b.late_sent.notified())
                .await
                .unwrap();
            let a = c
                .request("POST", "app.test", "/next", &[], "up")
                .await
                .unwrap();
            assert_eq!(
                (a.status.as_u16(), a.body.as_str()),
                (200, "second"),
                "{path} (body): the next request got {a:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Malformed chunked responses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_responses_are_a_502_before_the_head() {
    let b = Scripted::start().await;
    let p = Proxy::start(&one_pool(b.addr, "passive = { failures = 1000 }")).await;
    for i in 0..malformed_chunked().len() {
        let mut c = Client::new(p.http);
        let a = c.get("app.test", &format!("/bad-chunked/{i}")).await;
        let a = a.unwrap_or_else(|e| panic!("case {i}: no answer: {e}"));
        assert_eq!(a.status, 502, "case {i}: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_after_the_head_went_out_cuts_the_connection() {
    let b = Scripted::start().await;
    let p = Proxy::start(&one_pool(b.addr, "")).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /chunked-then-bad HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(5).any(|w| w == b"hello") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status_of(&got), 200);
    b.go.notify_one();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut got))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(!text.ends_with("0\r\n\r\n"), "ended cleanly: {text:?}");
}

// ---------------------------------------------------------------------------
// 5. CONNECT, the asterisk target.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_405_and_the_asterisk_is_for_options() {
    let app = Upstream::start("app").await;
    let p = Proxy::start(&one_pool(app.addr, "")).await;
    let r = raw(
        p.http,
        b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n",
        DEADLINE,
    )
    .await;
    let text = String::from_utf8_lossy(&r).to_lowercase();
    assert_eq!(status_of(&r), 405, "{text}");
    assert!(text.contains("\r\nallow: get, "), "{text}");
    let r = raw(
        p.http,
        b"GET * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        DEADLINE,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{}", String::from_utf8_lossy(&r));
    assert_eq!(app.hits(), 0);
    let r = raw(
        p.http,
        b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        DEADLINE,
    )
    .await;
    assert_eq!(status_of(&r), 200, "{}", String::from_utf8_lossy(&r));
}

// ---------------------------------------------------------------------------
// 6. Response head limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_over_64_kib_is_a_502_on_both_paths() {
    let b = Scripted::start().await;
    let p = Proxy::start(&one_pool(b.addr, "")).await;
    let mut c = Client::new(p.http);
    let a = c.get("app.test", "/big-head").await.unwrap();
    assert_eq!(a.status, 502, "direct: {a:?}");
    let a = c
        .request("POST", "app.test", "/big-head", &[], "up")
        .await
        .unwrap();
    assert_eq!(a.status, 502, "hyper's client: {:?}", a.status);
}
