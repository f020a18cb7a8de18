//! The direct HTTP/1.1 server path (`src/listener/h1.rs`) against the real
//! binary: keep-alive, HTTP/1.0, HEAD, bodiless statuses, re-framed
//! bodies, pipelining, clients going away, hand-overs to hyper in the
//! middle of a connection, the client clocks and shutdown.
//!
//! Most scenarios run twice: on the direct path (the default) and with
//! `SWITCHYARD_DIRECT_SERVER=0` (hyper's server), which fixes the
//! behaviour the direct path must keep. Deadlines are generous and only
//! catch hangs; nothing here measures time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{closed_by_peer, eventually, Proxy, Upstream, DEADLINE};

/// The two server paths.
const PATHS: [(&str, &[(&str, &str)]); 2] = [
    ("direct", &[]),
    ("hyper", &[("SWITCHYARD_DIRECT_SERVER", "0")]),
];

fn config(blue: &Upstream, server: &str) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
{server}

[[routes]]
host = "app.test"
pool = "app"

[pools.app.versions.blue]
weight = 1
backends = ["{}"]
"#,
        blue.addr
    )
}

async fn start(blue: &Upstream, server: &str, env: &[(&str, &str)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    Proxy::start_env(dir, &config(blue, server), env).await
}

/// One response as read off the wire.
#[derive(Debug)]
struct Resp {
    /// `HTTP/1.1 200 OK`
    line: String,
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads more; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(DEADLINE, self.s.read(&mut chunk)).await {
            Err(_) => Err(format!("nothing more within {DEADLINE:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// The next response; `bodiless` for the answer to a HEAD.
    async fn response(&mut self, bodiless: bool) -> Result<Resp, String> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await? {
                return Err(format!(
                    "closed inside a head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8(head).map_err(|e| e.to_string())?;
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default().to_string();
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut r = Resp {
            line,
            status,
            headers,
            body: Vec::new(),
        };
        if bodiless || status == 204 || status == 304 || status / 100 == 1 {
            return Ok(r);
        }
        if r.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !self.fill().await? {
                        return Err("closed inside a chunked body".into());
                    }
                };
                let size_line: Vec<u8> = self.buf.drain(..line_end + 2).collect();
                let size = usize::from_str_radix(
                    std::str::from_utf8(&size_line[..line_end]).map_err(|e| e.to_string())?,
                    16,
                )
                .map_err(|e| format!("chunk size {size_line:?}: {e}"))?;
                while self.buf.len() < size + 2 {
                    if !self.fill().await? {
                        return Err("closed inside a chunk".into());
                    }
                }
                let chunk: Vec<u8> = self.buf.drain(..size + 2).collect();
                if &chunk[size..] != b"\r\n" {
                    return Err(format!("chunk not followed by CRLF: {chunk:?}"));
                }
                if size == 0 {
                    return Ok(r);
                }
                r.body.extend_from_slice(&chunk[..size]);
            }
        }
        if let Some(len) = r.header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("length {len:?}"))?;
            while self.buf.len() < len {
                if !self.fill().await? {
                    return Err("closed inside a sized body".into());
                }
            }
            r.body = self.buf.drain(..len).collect();
            return Ok(r);
        }
        // Delimited by the end of the connection.
        while self.fill().await? {}
        r.body = std::mem::take(&mut self.buf);
        Ok(r)
    }

    /// Whether the proxy closes the connection (with nothing more sent)
    /// within the deadline.
    async fn closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("unread: {:?}", String::from_utf8_lossy(&self.buf)));
        }
        match closed_by_peer(&mut self.s, DEADLINE).await? {
            0 => Ok(()),
            n => Err(format!("{n} more bytes before the close")),
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        for i in 0..200 {
            c.send(&get(&format!("/n{i}"))).await;
            let r = c.response(false).await.unwrap();
            assert_eq!(r.line, "HTTP/1.1 200 OK", "{name} #{i}: {r:?}");
            assert_eq!(r.body, b"blue\n", "{name} #{i}: {r:?}");
            assert_eq!(r.header("content-length"), Some("5"), "{name}: {r:?}");
            assert!(r.header("date").is_some(), "{name}: {r:?}");
            // The backend's own hop-by-hop fields stay with it.
            assert_eq!(r.header("connection"), None, "{name}: {r:?}");
            assert_eq!(r.header("keep-alive"), None, "{name}: {r:?}");
        }
        // Connection: close is honoured, and said.
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            .await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{name}: {r:?}");
        c.closed().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_closes_unless_asked_to_keep_alive() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        // Without keep-alive: answered in HTTP/1.0, then closed.
        let mut c = Raw::connect(p.http).await;
        c.send(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n").await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.line, "HTTP/1.0 200 OK", "{name}: {r:?}");
        assert_eq!(r.body, b"blue\n", "{name}: {r:?}");
        assert_eq!(r.header("connection"), None, "{name}: {r:?}");
        c.closed().await.unwrap_or_else(|e| panic!("{name}: {e}"));

        // With keep-alive: kept, and said so.
        let mut c = Raw::connect(p.http).await;
        for _ in 0..3 {
            c.send(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
                .await;
            let r = c.response(false).await.unwrap();
            assert_eq!(r.line, "HTTP/1.0 200 OK", "{name}: {r:?}");
            assert_eq!(r.header("connection"), Some("keep-alive"), "{name}: {r:?}");
            assert_eq!(r.body, b"blue\n", "{name}: {r:?}");
        }
        // A body of unknown size to HTTP/1.0: delimited by the close.
        c.send(b"GET /stream?chunks=3&ms=1 HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.line, "HTTP/1.0 200 OK", "{name}: {r:?}");
        assert_eq!(r.header("transfer-encoding"), None, "{name}: {r:?}");
        assert_eq!(r.header("content-length"), None, "{name}: {r:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "blue chunk 0\nblue chunk 1\nblue chunk 2\n",
            "{name}"
        );
        // The one place the paths differ on purpose (which also shows that
        // each test here ran on the path it names): hyper says
        // `keep-alive` on a response it then ends by closing.
        let said = if name == "direct" {
            None
        } else {
            Some("keep-alive")
        };
        assert_eq!(r.header("connection"), said, "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        c.send(b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
        let r = c.response(true).await.unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        // The length the GET would have.
        assert_eq!(r.header("content-length"), Some("5"), "{name}: {r:?}");
        for code in [204, 304] {
            c.send(&get(&format!("/status/{code}"))).await;
            let r = c.response(false).await.unwrap();
            assert_eq!(r.status, code, "{name}: {r:?}");
            assert_eq!(r.header("content-length"), None, "{name}: {r:?}");
            assert_eq!(r.header("transfer-encoding"), None, "{name}: {r:?}");
        }
        // Had any of them carried a body, it would be read as this answer.
        c.send(&get("/")).await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.line, "HTTP/1.1 200 OK", "{name}: {r:?}");
        assert_eq!(r.body, b"blue\n", "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_backend_response_is_reframed_and_the_connection_kept() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        for _ in 0..2 {
            c.send(&get("/stream?chunks=5&ms=5")).await;
            let r = c.response(false).await.unwrap();
            assert_eq!(r.status, 200, "{name}: {r:?}");
            assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{name}");
            let want: String = (0..5).map(|i| format!("blue chunk {i}\n")).collect();
            assert_eq!(String::from_utf8_lossy(&r.body), want, "{name}");
        }
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        let mut all = Vec::new();
        let codes = [201u16, 202, 0, 203, 404, 204, 205];
        for code in codes {
            if code == 0 {
                all.extend_from_slice(b"HEAD /status/200 HTTP/1.1\r\nHost: app.test\r\n\r\n");
            } else {
                all.extend_from_slice(&get(&format!("/status/{code}")));
            }
        }
        all.extend_from_slice(&get("/stream?chunks=2&ms=1"));
        all.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        // One write: every request waits in the proxy's buffer.
        c.send(&all).await;
        for code in codes {
            let r = c.response(code == 0).await.unwrap();
            assert_eq!(
                r.status,
                if code == 0 { 200 } else { code },
                "{name}: {r:?}"
            );
        }
        let r = c.response(false).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "blue chunk 0\nblue chunk 1\n",
            "{name}"
        );
        let r = c.response(false).await.unwrap();
        assert_eq!(r.body, b"blue\n", "{name}: {r:?}");
        c.closed().await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

async fn blue_in_flight(p: &Proxy) -> Value {
    p.state().await["pools"]["app"]["versions"]["blue"]["in_flight"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_mid_response_releases_the_backend() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        // `/held` sends its first chunk, then waits for a release that
        // never comes: only the client going away can end it.
        c.send(&get("/held")).await;
        while !c.buf.windows(10).any(|w| w == b"blue held\n") {
            assert!(c.fill().await.unwrap(), "{name}: closed early");
        }
        assert_eq!(blue_in_flight(&p).await, 1, "{name}");
        drop(c);
        let released = eventually(DEADLINE, || async { blue_in_flight(&p).await == 0 }).await;
        assert!(released, "{name}: the backend exchange outlived its client");
        // The proxy goes on serving.
        let mut c = Raw::connect(p.http).await;
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_mid_connection_is_served_by_hyper() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
        c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\nhello there")
            .await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.body, b"hello there", "{name}: {r:?}");
        // Chunked upload, then more plain requests on the same connection.
        c.send(b"PUT /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.unwrap().body, b"abc", "{name}");
        for _ in 0..3 {
            c.send(&get("/")).await;
            assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_after_simple_requests_passes_through() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "", env).await;
        let mut c = Raw::connect(p.http).await;
        for _ in 0..2 {
            c.send(&get("/")).await;
            assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
        }
        c.send(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
        )
        .await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 101, "{name}: {r:?}");
        c.send(b"ping through the tunnel").await;
        while c.buf.len() < 23 {
            assert!(c.fill().await.unwrap(), "{name}: tunnel closed");
        }
        assert_eq!(c.buf, b"ping through the tunnel", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_answers_what_is_not_simple_even_mid_connection() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        let p = start(&blue, "max_header_bytes = 8192", env).await;
        // A head over the limit: 431, first request or later.
        let big = format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let mut c = Raw::connect(p.http).await;
        c.send(big.as_bytes()).await;
        assert_eq!(c.response(false).await.unwrap().status, 431, "{name}");
        let mut c = Raw::connect(p.http).await;
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().status, 200, "{name}");
        c.send(big.as_bytes()).await;
        assert_eq!(c.response(false).await.unwrap().status, 431, "{name}");
        // Malformed: 400.
        let mut c = Raw::connect(p.http).await;
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().status, 200, "{name}");
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Name: x\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.unwrap().status, 400, "{name}");
        // Just under the limit: served.
        let fits = format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
            "a".repeat(7000)
        );
        let mut c = Raw::connect(p.http).await;
        c.send(fits.as_bytes()).await;
        assert_eq!(c.response(false).await.unwrap().status, 200, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_cuts_a_slow_second_head() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        // idle_timeout far above the deadline: only header_timeout can
        // close the connection in time.
        let p = start(
            &blue,
            "header_timeout = \"1s\"\nidle_timeout = \"300s\"",
            env,
        )
        .await;
        let mut c = Raw::connect(p.http).await;
        c.send(&get("/")).await;
        assert_eq!(c.response(false).await.unwrap().body, b"blue\n", "{name}");
        c.send(b"GET / HTTP/1.1\r\nHost: app").await;
        c.closed().await.unwrap_or_else(|e| panic!("{name}: {e}"));

        // An idle keep-alive connection is not cut by header_timeout.
        let mut idle = Raw::connect(p.http).await;
        idle.send(&get("/")).await;
        assert_eq!(idle.response(false).await.unwrap().body, b"blue\n");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        idle.send(&get("/")).await;
        let r = idle.response(false).await;
        assert_eq!(r.map(|r| r.body), Ok(b"blue\n".to_vec()), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_keep_alive_connections_at_once_and_finishes_requests() {
    let blue = Upstream::start("blue").await;
    for (name, env) in PATHS {
        // A grace and an idle timeout far above the deadline: a connection
        // still open at the deadline was kept by the proxy, not by the end
        // of the process or the idle clock.
        let p = start(
            &blue,
            "shutdown_grace = \"300s\"\nidle_timeout = \"300s\"",
            env,
        )
        .await;
        let mut idle = Raw::connect(p.http).await;
        idle.send(&get("/")).await;
        assert_eq!(idle.response(false).await.unwrap().body, b"blue\n");
        let mut busy = Raw::connect(p.http).await;
        busy.send(&get("/")).await;
        assert_eq!(busy.response(false).await.unwrap().body, b"blue\n");
        busy.send(&get("/slow?ms=1500")).await;
        let started = eventually(DEADLINE, || async { blue_in_flight(&p).await == 1 }).await;
        assert!(started, "{name}");
        p.signal("TERM");
        idle.closed()
            .await
            .unwrap_or_else(|e| panic!("{name}: idle: {e}"));
        let r = busy.response(false).await.unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.body, b"blue\n", "{name}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{name}: {r:?}");
        busy.closed()
            .await
            .unwrap_or_else(|e| panic!("{name}: busy: {e}"));
    }
}

/// Everything a script of requests on one connection gets back, `date`
/// lines left out.
async fn transcript(addr: SocketAddr, script: &[u8]) -> String {
    let mut c = Raw::connect(addr).await;
    c.send(script).await;
    while c.fill().await.unwrap() {}
    String::from_utf8_lossy(&c.buf)
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_server_paths_write_the_same_bytes() {
    let blue = Upstream::start("blue").await;
    let direct = start(&blue, "", PATHS[0].1).await;
    let hyper = start(&blue, "", PATHS[1].1).await;
    let scripts: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /status/503 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /stream?chunks=2&ms=1 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n\
          GET / HTTP/1.1\r\n\r\n\
          GET /end HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n\
          HEAD /status/404 HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n\
          GET / HTTP/1.0\r\nHost: app.test\r\n\r\n",
        b"GET http://app.test/abs?q=1 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        b"DELETE /status/202 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];
    for script in scripts {
        let a = transcript(direct.http, script).await;
        let b = transcript(hyper.http, script).await;
        assert_eq!(a, b, "script {:?}", String::from_utf8_lossy(script));
        assert!(a.contains("HTTP/1."), "{a}");
    }
}
