//! Test support: real upstreams on 127.0.0.1:0 and the real `switchyard`
//! binary started on a config written to a temp dir.
//!
//! Nothing binds a fixed port, and no port is picked, let go and bound again
//! later: every listener is bound on `:0` by the process that uses it and its
//! address is read back from that process (the proxy writes them to its
//! `--ready-file`). Every process is stopped when its handle drops.
//!
//! No wall-clock bound is asserted here: waits poll for a condition with a
//! generous deadline ([`DEADLINE`]) that only turns a hang into a failure.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A scriptable origin: answers its name and counts what it served.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// When false, `/health` answers 503.
    pub healthy: Arc<AtomicBool>,
    /// When true, every non-health request answers 500.
    pub failing: Arc<AtomicBool>,
    /// Added to every non-health answer, in ms.
    pub delay_ms: Arc<AtomicU64>,
    /// When N > 0, every Nth request answers 500.
    pub fail_every: Arc<AtomicU64>,
    /// Permits for `/held` answers to finish (see [`Upstream::release`]).
    held: Arc<tokio::sync::Semaphore>,
    /// Every connection's task, to close them all at once (a process kill).
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts an origin on 127.0.0.1:0. Paths:
    /// `/health`; `/slow?ms=N`; `/stream?chunks=N&ms=M`; `/echo` (echoes the
    /// request body, streaming); `/headers` (request headers as JSON);
    /// `/status/N`; `/held` (sends `NAME held` at once, then `NAME released`
    /// and the end of the body only when the test calls [`Upstream::release`]);
    /// an Upgrade request echoes raw bytes after 101.
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(name, listener)
    }

    /// Serves on an already bound listener (to restart on the same port).
    pub fn serve_on(name: &'static str, listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let failing = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let fail_every = Arc::new(AtomicU64::new(0));
        let held = Arc::new(tokio::sync::Semaphore::new(0));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let knobs = Knobs {
            hits: hits.clone(),
            healthy: healthy.clone(),
            failing: failing.clone(),
            delay_ms: delay_ms.clone(),
            fail_every: fail_every.clone(),
            held: held.clone(),
        };
        let c = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let knobs = knobs.clone();
                let t = tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| origin(name, req, knobs.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                c.lock().unwrap().push(t.abort_handle());
            }
        });
        Upstream {
            name,
            addr,
            hits,
            healthy,
            failing,
            delay_ms,
            fail_every,
            held,
            conns,
            task,
        }
    }

    /// Lets `n` answers to `/held` finish (now or when they get there).
    pub fn release(&self, n: usize) {
        self.held.add_permits(n);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Like killing the process: stops accepting and closes every open
    /// connection (in-flight requests included).
    pub fn kill(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
struct Knobs {
    hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    fail_every: Arc<AtomicU64>,
    held: Arc<tokio::sync::Semaphore>,
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)?
        .1
        .parse()
        .ok()
}

async fn origin(
    name: &'static str,
    mut req: Request<Incoming>,
    knobs: Knobs,
) -> Result<Response<BoxBody>, Infallible> {
    let Knobs {
        hits,
        healthy,
        failing,
        delay_ms,
        fail_every,
        held,
    } = knobs;
    let path = req.uri().path().to_string();
    if path == "/health" {
        let ok = healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if ok { "ok\n" } else { "sick\n" }));
        *r.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(r);
    }
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let every = fail_every.load(Ordering::SeqCst);
    let delay = delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(http::header::UPGRADE, "echo".parse().unwrap());
        r.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        return Ok(r);
    }
    if failing.load(Ordering::SeqCst) || (every > 0 && n % every == 0) {
        let mut r = Response::new(full(format!("{name} failing\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(r);
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
    }
    if path == "/stream" {
        let chunks = query(&req, "chunks").unwrap_or(10);
        let ms = query(&req, "ms").unwrap_or(100);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for i in 0..chunks {
                if tx
                    .send(Ok(Frame::data(Bytes::from(format!("{name} chunk {i}\n")))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        });
        let stream = tokio_stream_from(rx);
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if path == "/held" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let first = Frame::data(Bytes::from(format!("{name} held\n")));
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            if let Ok(p) = held.acquire().await {
                p.forget();
                let last = Frame::data(Bytes::from(format!("{name} released\n")));
                let _ = tx.send(Ok(last)).await;
            }
        });
        let stream = tokio_stream_from(rx);
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if path == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::new(full(body)));
    }
    if path == "/headers" {
        let map: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        return Ok(Response::new(full(serde_json::to_vec(&map).unwrap())));
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let mut r = Response::new(full(format!("{name}\n")));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    let mut r = Response::new(full(format!("{name}\n")));
    r.headers_mut()
        .insert("connection", "keep-alive".parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=30".parse().unwrap());
    Ok(r)
}

/// An mpsc receiver as a `futures_core::Stream` (what `StreamBody` takes).
fn tokio_stream_from<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> RecvStream<T> {
    RecvStream(rx)
}

struct RecvStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for RecvStream<T> {
    type Item = T;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.get_mut().0.poll_recv(cx)
    }
}

// ---------------------------------------------------------------------------

/// The real binary. With `SWITCHYARD_TEST_RUNNER` set (scripts/arm64.sh sets
/// `qemu-aarch64-static -L /usr/aarch64-linux-gnu` for a cross-built binary),
/// a wrapper script that `exec`s the binary under that runner: every
/// `Command::new(bin())` then runs it emulated, with the same pid and signals.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = env!("CARGO_BIN_EXE_switchyard");
        match std::env::var("SWITCHYARD_TEST_RUNNER") {
            Ok(runner) if !runner.trim().is_empty() => runner_wrapper(runner.trim(), exe),
            _ => exe.to_string(),
        }
    })
}

/// Writes `exec RUNNER EXE "$@"` as an executable script next to the binary
/// (written under a temporary name, then renamed: test processes share it).
fn runner_wrapper(runner: &str, exe: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let exe_path = Path::new(exe);
    let path = exe_path.with_file_name("switchyard-under-runner");
    let quoted = exe.replace('\'', "'\\''");
    let script = format!("#!/bin/sh\nexec {runner} '{quoted}' \"$@\"\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(script.as_str()) {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path.display().to_string()
}

/// The generous deadline of every wait for a condition: long enough that
/// only a hang reaches it, even under qemu on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running `switchyard run`.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The admin socket, as the process reported it.
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub dashboard: Option<SocketAddr>,
    pub child: Child,
    /// Extra environment of every start (restarts included).
    env: Vec<(String, String)>,
}

impl Proxy {
    /// Writes `config` (with `{dir}` replaced by the temp dir) and starts the
    /// binary; returns once its ready file names every bound address.
    pub async fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config).await
    }

    /// Starts in a given dir (to restart on the same state).
    pub async fn start_in(dir: tempfile::TempDir, config: &str) -> Proxy {
        Self::start_env(dir, config, &[]).await
    }

    /// Starts in a given dir with extra environment variables (`RUST_LOG`
    /// among them overrides the default `info`).
    pub async fn start_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Proxy {
        let config_path = dir.path().join("switchyard.toml");
        let text = with_admin(config, dir.path());
        std::fs::write(&config_path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(&config_path, dir.path(), &env);
        let mut p = Proxy {
            socket: dir.path().join("admin.sock"),
            dir,
            config_path,
            http: "127.0.0.1:1".parse().unwrap(),
            https: None,
            metrics: None,
            dashboard: None,
            child,
            env,
        };
        p.wait_ready().await;
        p
    }

    fn ready_path(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    /// Waits for the ready file of the current process (a restart removes
    /// the previous one before it spawns) and takes every address from it.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchyard exited early with {status}:\n{}", self.log());
            }
            // Written atomically: a file that is there is complete.
            if let Ok(text) = std::fs::read_to_string(self.ready_path()) {
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("ready file {text:?}: {e}"));
                let addr = |k: &str| v[k].as_str().map(|a| a.parse::<SocketAddr>().unwrap());
                assert_eq!(v["pid"], self.child.id(), "a stale ready file: {v}");
                self.http = addr("http").expect("an http listener");
                self.https = addr("https");
                self.metrics = addr("metrics");
                self.dashboard = addr("dashboard");
                self.socket = PathBuf::from(v["admin"].as_str().expect("the admin socket"));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "switchyard wrote no ready file within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Restarts the process on the same dir (config and state kept). Its
    /// listeners on `:0` get new ports, read from the new ready file.
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = spawn(&self.config_path, self.dir.path(), &self.env);
        self.wait_ready().await;
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (up to [`DEADLINE`]) for the process to exit; its status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < DEADLINE, "did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// `switchyard ctl -s SOCKET args...`
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("ctl")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        admin(&self.socket, method, path, body).await.unwrap()
    }

    pub async fn state(&self) -> Value {
        self.admin("GET", "/v1/state", None).await.1
    }

    pub async fn weights(&self, pool: &str) -> HashMap<String, u64> {
        let s = self.state().await;
        s["pools"][pool]["versions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["weight"].as_u64().unwrap()))
            .collect()
    }

    /// Audit events of `kind` so far.
    pub async fn events_of(&self, kind: &str) -> Vec<Value> {
        let (status, v) = self.admin("GET", "/v1/events", None).await;
        assert_eq!(status, 200, "{v}");
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `switchyard run -c CONFIG --ready-file DIR/ready.json` (any ready
/// file of an earlier process removed first), stderr appended to
/// `DIR/stderr.log`.
fn spawn(config: &Path, dir: &Path, env: &[(String, String)]) -> Child {
    let ready = dir.join("ready.json");
    match std::fs::remove_file(&ready) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot remove {}: {e}", ready.display()),
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .unwrap();
    let mut c = Command::new(bin());
    c.arg("run")
        .arg("-c")
        .arg(config)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Adds an `[admin]` section pointing into `dir` unless the config has one.
fn with_admin(config: &str, dir: &Path) -> String {
    let config = config.replace("{dir}", &dir.display().to_string());
    if config.contains("[admin]") {
        config
    } else {
        format!(
            "{config}\n[admin]\nsocket = \"{0}/admin.sock\"\nstate = \"{0}/state.json\"\n",
            dir.display()
        )
    }
}

/// The usual test pool: `app.test` -> blue/green with the given weights.
pub fn pool_config(
    blue: &Upstream,
    wb: u32,
    green: &Upstream,
    wg: u32,
    extra_server: &str,
) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
shutdown_grace = "5s"
{extra_server}

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
version_header = true
pin_header = "X-Switchyard-Version"

[pools.app.versions.blue]
weight = {wb}
backends = ["{}"]

[pools.app.versions.green]
weight = {wg}
backends = ["{}"]
"#,
        blue.addr, green.addr
    )
}

/// One admin call over the Unix socket.
pub async fn admin(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(StatusCode, Value), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "switchyard")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))?;
    Ok((status, v))
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    addr: SocketAddr,
    tx: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, tx: None }
    }

    async fn conn(
        &mut self,
    ) -> Result<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let usable = match &mut self.tx {
            Some(tx) => tx.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            s.set_nodelay(true).ok();
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.tx = Some(tx);
        }
        Ok(self.tx.as_mut().unwrap())
    }

    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, String> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let tx = self.conn().await?;
        let resp = match tx.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.tx = None;
                return Err(e.to_string());
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        self.request("GET", host, path, &[], "").await
    }
}

/// A backend that accepts, reads the request and resets the connection.
pub async fn start_resetting() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.set_zero_linger();
                drop(s);
            });
        }
    });
    (addr, t)
}

/// Runs `switchyard` with arguments and returns its output.
/// An HTTP/2 client connection with prior knowledge (h2c) to `addr`, and
/// the task driving it (it ends when the server closes the connection).
pub async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    (tx, tokio::spawn(conn))
}

pub fn run_bin(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Raw bytes over a fresh TCP connection; returns everything read until the
/// peer closes or `timeout`.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    out
}

/// The status code of a raw HTTP/1.1 response (0 when there is none).
pub fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(resp.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it is true or `within` passes (a deadline against hangs,
/// never a claim about speed: pass [`DEADLINE`] unless there is a reason).
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An address where nothing listens and nothing can start listening while
/// the guard lives: a socket bound (without `SO_REUSEADDR`) but never put in
/// listen state, so connecting is refused, and no other socket can take the
/// port (unlike a port picked on `:0` and let go).
pub struct DeadAddr {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub fn dead_addr() -> DeadAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    DeadAddr {
        addr: socket.local_addr().unwrap(),
        _socket: socket,
    }
}

/// Where a [`Relay`] sends what it accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Not known yet: accepted connections wait for it.
    Pending,
    /// Nothing there: accepted connections are closed at once.
    Down,
    Up(SocketAddr),
    /// Each accepted connection to the next of the two, in turn (pebble's
    /// validator reaching either instance of a fleet).
    Alternate(SocketAddr, SocketAddr),
}

/// A TCP relay the test binds on `127.0.0.1:0` and keeps for the whole test,
/// for a process that must be told a port before its peer exists (pebble's
/// validator dials the proxy, the proxy dials pebble) or across a restart
/// of the peer on new `:0` ports.
pub struct Relay {
    pub addr: SocketAddr,
    target: tokio::sync::watch::Sender<Target>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (target, rx) = tokio::sync::watch::channel(Target::Pending);
        let task = tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                accepted += 1;
                let turn = accepted;
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let t = match rx.wait_for(|t| *t != Target::Pending).await {
                        Ok(t) => *t,
                        Err(_) => return,
                    };
                    let to = match t {
                        Target::Up(to) => to,
                        Target::Alternate(a, b) => {
                            if turn.is_multiple_of(2) {
                                a
                            } else {
                                b
                            }
                        }
                        Target::Pending | Target::Down => return,
                    };
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = server.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, target, task }
    }

    pub fn set(&self, t: Target) {
        self.target.send_replace(t);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Addresses of the sockets owned by `pid` (read from /proc): TCP ones in
/// LISTEN state for `"tcp"`, bound UDP ones for `"udp"`. How a test reads
/// back the ports a program it started picked on `:0`.
pub fn bound_addrs(pid: u32, proto: &str) -> Vec<SocketAddr> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    l.to_string_lossy()
                        .strip_prefix("socket:[")
                        .map(|s| s.trim_end_matches(']').to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let state = if proto == "tcp" { "0A" } else { "07" };
    let mut out = Vec::new();
    for line in std::fs::read_to_string(format!("/proc/{pid}/net/{proto}"))
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 9 && cols[3] == state && inodes.contains(cols[9]) {
            let (ip, port) = cols[1].split_once(':').unwrap();
            let ip = u32::from_str_radix(ip, 16).unwrap();
            let ip = std::net::Ipv4Addr::from(u32::from_be(ip));
            let port = u16::from_str_radix(port, 16).unwrap();
            out.push(SocketAddr::from((ip, port)));
        }
    }
    out
}

/// A shared log of (start instant, version) per request, for switch tests.
pub type Timeline = Arc<Mutex<Vec<(Instant, Result<String, String>)>>>;

// --- bounded processes (tests/control.rs) -----------------------------------

/// `bin()` with `args`, run by `sh` under `ulimit -d KIB` and then `exec`-ed
/// (the same pid, the same signals): a process that reads without bound (a
/// config path pointing at /dev/zero) fails an allocation instead of taking
/// the machine's memory.
pub fn bin_with_data_limit(kib: u64, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("ulimit -d \"$1\" || exit 97; shift; exec \"$@\"")
        .arg("sh")
        .arg(kib.to_string())
        .arg(bin())
        .args(args);
    c
}

/// Runs `cmd` with stdout and stderr captured (small outputs: they are read
/// after the exit); kills it and says so if it is still running after `within`.
pub fn output_within(cmd: &mut Command, within: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "still running after {within:?} (killed); stdout: {:?}; stderr: {:?}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl Proxy {
    /// `Proxy::start` with the process under `ulimit -d KIB` (see
    /// `bin_with_data_limit`).
    pub async fn start_with_data_limit(config: &str, kib: u64) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, with_admin(config, dir.path())).unwrap();
        let socket = dir.path().join("admin.sock");
        let ready = dir.path().join("ready.json");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("stderr.log"))
            .unwrap();
        let args = [
            "run",
            "-c",
            config_path.to_str().unwrap(),
            "--ready-file",
            ready.to_str().unwrap(),
        ];
        let child = bin_with_data_limit(kib, &args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Proxy {
            dir,
            config_path,
            socket,
            http: "127.0.0.1:1".parse().unwrap(),
            https: None,
            metrics: None,
            dashboard: None,
            child,
            env: Vec::new(),
        };
        p.wait_ready().await;
        p
    }
}

// --- adversarial clients (tests/adversarial.rs) ------------------------------

impl Proxy {
    /// A listener's bound address from `GET /v1/state` (`"http"`, `"https"`).
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let s = self.state().await;
        let addr = s["listeners"][name].as_str();
        addr.unwrap_or_else(|| panic!("no {name} listener in {s}"))
            .parse()
            .unwrap()
    }
}

/// Reads and discards until the peer closes (EOF or an error such as a
/// reset); `Ok(bytes read)` then, `Err` when it is still open after `within`.
pub async fn closed_by_peer<S>(s: &mut S, within: Duration) -> Result<u64, String>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {within:?} ({total} bytes read)")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n as u64,
        }
    }
}
