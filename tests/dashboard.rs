//! The dashboard against the real binary: API security (token, same-origin
//! check, token file mode) and the page end to end in headless Chromium
//! driven over WebDriver (Debian's chromium + chromium-driver).
//!
//! Screenshots of every step go to `target/dashboard-screenshots/`; with
//! `SWITCHYARD_UPDATE_SCREENSHOT=1` the README's `docs/dashboard.png` is
//! refreshed from the rollout step.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const TOKEN: &str = "test-token-8c1f0a7e52d94b36";

fn write_token(dir: &Path, mode: u32, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("token");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn config(blue: &Upstream, green: &Upstream) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
shutdown_grace = "2s"

[admin]
socket = "{{dir}}/admin.sock"
state = "{{dir}}/state.json"
dashboard = "127.0.0.1:0"
token_file = "{{dir}}/token"

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
version_header = true
health = {{ path = "/health", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }}

[pools.app.versions.blue]
weight = 100
backends = ["{}"]

[pools.app.versions.green]
weight = 0
backends = ["{}"]

[pools.app.rollout]
steps = [10, 50, 100]
step_duration = "2s"
min_requests = 5
max_error_rate_increase = 0.5
max_p99_increase = 20.0
cooldown = "1s"
# Windows without traffic never add up to a rollback: with the load stopped
# a step holds for as long as the test looks at it.
failure_limit = 1000
"#,
        blue.addr, green.addr
    )
}

/// A running instance with its dashboard.
struct Dash {
    proxy: Proxy,
    addr: SocketAddr,
}

impl Dash {
    async fn start(blue: &Upstream, green: &Upstream) -> Dash {
        let dir = tempfile::tempdir().unwrap();
        write_token(dir.path(), 0o600, &format!("{TOKEN}\n"));
        let proxy = Proxy::start_in(dir, &config(blue, green)).await;
        let addr = proxy.dashboard.expect("the dashboard in the ready file");
        Dash { proxy, addr }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One request to the dashboard's HTTP listener.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let host = self.addr.to_string();
        Client::new(self.addr)
            .request(method, &host, path, headers, body)
            .await
            .unwrap()
    }
}

/// Keeps `n` clients sending requests to app.test until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, n: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut c = Client::new(addr);
                    // A light load: its pace, not a wait for anything.
                    while !stop.load(Ordering::Relaxed) {
                        if c.get("app.test", "/").await.is_err() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// API security.

/// Every API call without the token, or with a wrong one, gets 401 and
/// changes nothing; changes with the token but from another origin get 403;
/// the same calls from the dashboard's own origin work, audited as
/// `dashboard@<ip>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_needs_the_token_and_same_origin_changes() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let d = Dash::start(&blue, &green).await;
    // Once the first probes are in, health stays put: the comparison below
    // is about what the refused calls did.
    assert!(
        eventually(DEADLINE, || async {
            !d.proxy
                .state()
                .await
                .to_string()
                .contains(r#""health":"unknown""#)
        })
        .await
    );
    let before = d.proxy.state().await;
    let origin = d.origin();

    let calls: &[(&str, &str, &str)] = &[
        ("GET", "/v1/state", ""),
        ("GET", "/v1/stats", ""),
        ("GET", "/v1/events", ""),
        ("GET", "/v1/pools/app/rollout", ""),
        ("PUT", "/v1/pools/app/weights", r#"{"blue":0,"green":100}"#),
        (
            "PUT",
            "/v1/pools/app/versions/red",
            r#"{"backends":["127.0.0.1:9"],"weight":0}"#,
        ),
        ("DELETE", "/v1/pools/app/versions/green", ""),
        ("POST", "/v1/pools/app/rollout", r#"{"canary":"green"}"#),
        ("POST", "/v1/pools/app/rollout/abort", ""),
        ("POST", "/v1/reload", ""),
        ("GET", "/v1/no-such-thing", ""),
    ];
    let wrong = format!("Bearer {TOKEN}x");
    let short = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_string();
    for (method, path, body) in calls {
        for auth in [None, Some(&wrong), Some(&short), Some(&basic), Some(&bare)] {
            let mut headers = vec![("origin", origin.as_str())];
            if let Some(a) = auth {
                headers.push(("authorization", a.as_str()));
            }
            let a = d.call(method, path, &headers, body).await;
            assert_eq!(a.status, 401, "{method} {path} with {auth:?}: {}", a.body);
            let v: Value = serde_json::from_str(&a.body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("token"), "{}", a.body);
            assert!(a.headers.contains_key("www-authenticate"));
        }
    }

    // With the token, every change from elsewhere is refused.
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("authorization", bearer.as_str());
    let foreign: &[&[(&str, &str)]] = &[
        &[auth, ("origin", "http://evil.example")],
        &[auth, ("origin", "null")],
        &[auth, ("referer", "http://evil.example/page")],
        &[auth],
    ];
    for (method, path, body) in calls.iter().filter(|(m, _, _)| *m != "GET") {
        for headers in foreign {
            let a = d.call(method, path, headers, body).await;
            assert_eq!(a.status, 403, "{method} {path} {headers:?}: {}", a.body);
            assert!(a.body.contains("refused"), "{}", a.body);
        }
    }

    // Nothing changed: weights, versions, rollouts, the audit log.
    let after = d.proxy.state().await;
    assert_eq!(after["pools"], before["pools"]);
    assert_eq!(after["rollouts"], before["rollouts"]);
    assert_eq!(after["last_event"], before["last_event"]);
    assert_eq!(d.proxy.weights("app").await["blue"], 100);

    // Reads need the token but no origin; the answers are the API's own.
    let a = d.call("GET", "/v1/state", &[auth], "").await;
    assert_eq!(a.status, 200);
    let v: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["pools"], before["pools"]);
    let a = d.call("GET", "/v1/pools/nope/rollout", &[auth], "").await;
    assert_eq!(a.status, 404, "{}", a.body);

    // The dashboard's own origin (or its Referer) may change things.
    let own = [auth, ("origin", origin.as_str())];
    let a = d
        .call(
            "PUT",
            "/v1/pools/app/weights",
            &own,
            r#"{"blue":0,"green":100}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(d.proxy.weights("app").await["green"], 100);
    let referer = format!("{origin}/");
    let a = d
        .call(
            "PUT",
            "/v1/pools/app/weights",
            &[auth, ("referer", referer.as_str())],
            r#"{"blue":0,"green":0}"#,
        )
        .await;
    assert_eq!(a.status, 409, "the API's own refusal: {}", a.body);
    assert!(a.body.contains("would be 0"), "{}", a.body);
    let events = d.proxy.admin("GET", "/v1/events", None).await.1;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "weights");
    assert_eq!(last["who"], "dashboard@127.0.0.1");

    // The page needs no token; it is served with a strict CSP.
    let page = d.call("GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-testid=\"token-input\""));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let js = d.call("GET", "/dashboard.js", &[], "").await;
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(d.call("GET", "/nope", &[], "").await.status, 404);
    assert_eq!(d.call("POST", "/", &[], "").await.status, 405);
}

/// `GET /v1/stats` on the Unix socket: requests/s, 5xx rate and p99 per
/// version over the last ~10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_report_live_rates_per_version() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let d = Dash::start(&blue, &green).await;
    d.proxy
        .admin(
            "PUT",
            "/v1/pools/app/weights",
            Some(r#"{"blue":50,"green":50}"#),
        )
        .await;
    green.fail_every.store(4, Ordering::SeqCst);
    // The sampler's first sample predates the traffic.
    assert!(
        eventually(DEADLINE, || async {
            d.proxy.admin("GET", "/v1/stats", None).await.1["window_seconds"]
                .as_f64()
                .is_some_and(|w| w > 0.0)
        })
        .await
    );
    let mut c = Client::new(d.proxy.http);
    for _ in 0..400 {
        c.get("app.test", "/").await.unwrap();
    }
    // Until the sampler has taken a sample after the traffic.
    let total = |v: &Value| {
        let n = |k: &str| {
            v["pools"]["app"]["versions"][k]["requests"]
                .as_u64()
                .unwrap_or(0)
        };
        n("green") + n("blue")
    };
    // ...and the window reaches back more than a second (the rate below is
    // requests over that window).
    assert!(
        eventually(DEADLINE, || async {
            let v = d.proxy.admin("GET", "/v1/stats", None).await.1;
            total(&v) >= 400 && v["window_seconds"].as_f64().is_some_and(|w| w > 1.0)
        })
        .await
    );
    let (status, v) = d.proxy.admin("GET", "/v1/stats", None).await;
    assert_eq!(status, 200, "{v}");
    let g = &v["pools"]["app"]["versions"]["green"];
    let b = &v["pools"]["app"]["versions"]["blue"];
    assert_eq!(
        g["requests"].as_u64().unwrap() + b["requests"].as_u64().unwrap(),
        400,
        "{v}"
    );
    assert_eq!(g["requests"], 200, "{v}");
    assert_eq!(g["errors"], 50, "{v}");
    assert_eq!(g["error_rate"], 0.25, "{v}");
    assert_eq!(b["error_rate"], 0.0, "{v}");
    let window = g["window_seconds"].as_f64().unwrap();
    assert!(window > 1.0 && window <= 10.6, "{v}");
    let rps = g["requests_per_second"].as_f64().unwrap();
    assert!((rps - 200.0 / window).abs() < 0.5, "{rps} {v}");
    assert!(g["p99_seconds"].as_f64().unwrap() > 0.0);
    // The dashboard serves the same answer behind the token.
    let bearer = format!("Bearer {TOKEN}");
    let a = d
        .call(
            "GET",
            "/v1/stats",
            &[("authorization", bearer.as_str())],
            "",
        )
        .await;
    let over_tcp: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(over_tcp["pools"]["app"]["versions"]["green"]["errors"], 50);
}

/// A token file that others may read, an empty one, a missing one: the
/// binary refuses to start, says why, and binds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_with_an_unsafe_token_file() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    // (token file mode and text, or no file; what stderr must say)
    type Case<'a> = (Option<(u32, &'a str)>, &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            Some((0o644, TOKEN)),
            &[
                "readable or writable by group or others",
                "0644",
                "chmod 600",
            ],
        ),
        (Some((0o660, TOKEN)), &["0660", "chmod 600"]),
        (Some((0o600, "\n")), &["is empty"]),
        (Some((0o600, "tiny")), &["too short"]),
        (None, &["cannot read the dashboard token file"]),
    ];
    for (token, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        if let Some((mode, text)) = token {
            write_token(dir.path(), *mode, text);
        }
        let cfg = config(&blue, &green).replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("switchyard kept running with token {token:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{token:?}: {status}");
        for e in *expect {
            assert!(err.contains(e), "{token:?}: expected {e:?} in:\n{err}");
        }
        assert!(
            err.contains(&dir.path().join("token").display().to_string()),
            "{err}"
        );
        assert!(!dir.path().join("admin.sock").exists(), "nothing is bound");
    }
}

// ---------------------------------------------------------------------------
// WebDriver: a small blocking client for chromedriver.

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    shot_no: u32,
}

/// One HTTP/1.1 request over a fresh connection; returns (status, JSON).
/// (chromedriver keeps connections open: the body is read by its length.)
fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(DEADLINE)).ok();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (head, body_start) = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase(),
                i + 4,
            );
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let have = raw.len() - body_start;
        let done = match length {
            Some(len) => have >= len,
            None if chunked => raw[body_start..].windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let mut body = raw[body_start..].to_vec();
    if let Some(len) = length {
        body.truncate(len);
    } else if chunked {
        body = dechunk(&body);
    }
    let v = serde_json::from_slice(&body)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))?;
    Ok((status, v))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c) } << (18 - 6 * i as u32);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Missing
    /// packages are a failure, never a skip.
    fn start(log_dir: &Path) -> Browser {
        for exe in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(exe).exists(),
                "{exe} is missing: install Debian's chromium and chromium-driver (scripts/setup.sh)"
            );
        }
        let shots = PathBuf::from(bin())
            .parent()
            .and_then(Path::parent)
            .expect("the binary is under target/<profile>/")
            .join("dashboard-screenshots");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let profile = tempfile::tempdir().unwrap();
        // On :0; it prints the port it bound: "... started successfully on port N."
        let mut driver = Command::new("/usr/bin/chromedriver")
            .arg("--port=0")
            .arg(format!(
                "--log-path={}",
                log_dir.join("chromedriver.log").display()
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let stdout = std::io::BufReader::new(driver.stdout.take().unwrap());
        let port = std::io::BufRead::lines(stdout)
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("started successfully on port ")
                    .and_then(|(_, p)| p.trim_end_matches('.').trim().parse::<u16>().ok())
            })
            .expect("chromedriver printed no port");
        let deadline = Instant::now() + DEADLINE;
        while !matches!(http_json(port, "GET", "/status", None), Ok((200, v)) if v["value"]["ready"] == true)
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--force-device-scale-factor=1".into(),
            "--window-size=1280,1600".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let (status, v) = http_json(port, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "cannot start Chromium: {v}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
            shots,
            shot_no: 0,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let (status, v) =
            tokio::task::block_in_place(|| http_json(self.port, method, &full, body.as_ref()))
                .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, testid: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(
                json!({ "using": "css selector", "value": format!("[data-testid=\"{testid}\"]") }),
            ),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// A real click (the element must be visible and enabled).
    fn click(&self, testid: &str) {
        let id = self.find(testid);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn clear_and_type(&self, testid: &str, text: &str) {
        let id = self.find(testid);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Keys sent to an element (WebDriver focuses it first); `\u{E007}` is
    /// Enter, `\u{E00C}` Escape.
    fn keys(&self, testid: &str, text: &str) {
        let id = self.find(testid);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn focused(&self) -> Value {
        self.js(
            "return document.activeElement.dataset.testid || null",
            json!([]),
        )
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The text of an element by test id (null when absent).
    fn text(&self, testid: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); return e ? e.textContent.trim() : null;",
            json!([testid]),
        )
        .as_str()
        .map(str::to_string)
    }

    fn visible(&self, testid: &str) -> bool {
        self.js(
            "const e = document.querySelector(`[data-testid=\"${arguments[0]}\"]`); return !!e && e.getClientRects().length > 0;",
            json!([testid]),
        )
        .as_bool()
        .unwrap_or(false)
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves a screenshot as the next numbered artifact.
    fn shot(&mut self, name: &str) -> PathBuf {
        self.shot_no += 1;
        let png = base64_decode(self.cmd("GET", "/screenshot", None).as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot_no));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits until `f` holds, or fails with `what` and the page's state.
    fn wait(
        &mut self,
        within: Duration,
        what: &str,
        mut f: impl FnMut(&Browser) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if f(self) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let path = self.shot(&format!("failed-{}", what.replace(' ', "-")));
                let body = self.js("return document.body.innerText", json!([]));
                panic!(
                    "within {within:?}: {what}\nscreenshot {}\npage:\n{}",
                    path.display(),
                    body.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http_json(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn step_number(p: &Proxy) -> u64 {
    let v = p.admin("GET", "/v1/pools/app/rollout", None).await.1;
    v["step_number"].as_u64().unwrap_or(0)
}

/// `ctl --json state`: (blue, green) configured weights.
fn ctl_weights(p: &Proxy) -> (u64, u64) {
    let out = p.ctl(&["--json", "state"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = |n: &str| v["pools"]["app"]["versions"][n]["weight"].as_u64().unwrap();
    (w("blue"), w("green"))
}

fn page_weights(b: &Browser) -> (Option<String>, Option<String>) {
    (b.text("weight-app-blue"), b.text("weight-app-green"))
}

fn is(v: &(Option<String>, Option<String>), blue: &str, green: &str) -> bool {
    v.0.as_deref() == Some(blue) && v.1.as_deref() == Some(green)
}

/// The page end to end: token, the starting split, a switch from the page
/// that `ctl state` agrees with, a ctl change and a health flip the page
/// follows, a refusal shown with the API's text, a rollout started from the
/// page that advances, and an abort that rolls back. (How fast the page
/// follows is a benchmark's business: every wait here is a deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_drives_weights_and_rollouts_in_chromium() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let d = Dash::start(&blue, &green).await;
    let load = Load::start(d.proxy.http, 3);
    let mut b = Browser::start(d.proxy.dir.path());
    let url = format!("{}/", d.origin());

    // The token: a wrong one is refused, the right one opens the page.
    b.goto(&url);
    b.wait(DEADLINE, "the login form", |b| b.visible("token-input"));
    b.clear_and_type("token-input", "not-the-token-at-all");
    b.click("token-submit");
    b.wait(DEADLINE, "the wrong token refused", |b| {
        b.text("login-error").is_some_and(|t| t.contains("refused"))
    });
    b.shot("login");
    b.clear_and_type("token-input", TOKEN);
    b.click("token-submit");
    b.wait(DEADLINE, "blue 100 / green 0", |b| {
        is(&page_weights(b), "100", "0")
            && b.text("share-app-blue").as_deref() == Some("100 %")
            && b.text("health-app-green").as_deref() == Some("healthy")
    });
    assert_eq!(b.text("role-app-blue").as_deref(), Some("serving"));
    // Live figures from /v1/stats: blue serves the load.
    b.wait(DEADLINE, "live req/s for blue", |b| {
        b.text("rps-app-blue")
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0)
    });
    b.shot("blue-100");

    // Switch to green from the page, through the in-page dialog.
    b.click("switch-app-green");
    b.wait(DEADLINE, "the confirmation dialog", |b| {
        b.js(
            "return document.querySelector('[data-testid=confirm-dialog]').open && document.activeElement.dataset.testid",
            json!([]),
        ) == json!("confirm-ok")
    });
    assert!(b
        .text("confirm-title")
        .unwrap()
        .contains("Switch app to green"));
    b.shot("confirm-switch");
    b.click("confirm-ok");
    b.wait(DEADLINE, "page and ctl agree on green", |b| {
        is(&page_weights(b), "0", "100") && ctl_weights(&d.proxy) == (0, 100)
    });
    assert!(b.text("status").unwrap().contains("switched to green"));
    let events = d.proxy.admin("GET", "/v1/events", None).await.1;
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["who"] == "dashboard@127.0.0.1" && e["kind"] == "weights"));
    b.shot("switched-to-green");

    // A change made with ctl shows without a reload of the page.
    let out = d.proxy.ctl(&["weights", "app", "blue=30", "green=70"]);
    assert!(out.status.success());
    let took = b.wait(DEADLINE, "the page follows ctl", |b| {
        is(&page_weights(b), "30", "70") && b.text("share-app-green").as_deref() == Some("70 %")
    });
    eprintln!("page followed ctl in {took:?}");
    b.shot("after-ctl-weights");

    // A health flip shows once the proxy has noticed it.
    blue.healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(DEADLINE, || async {
            d.proxy.state().await["pools"]["app"]["versions"]["blue"]["backends"][0]["healthy"]
                == false
        })
        .await
    );
    b.wait(DEADLINE, "blue shown down", |b| {
        b.text("health-app-blue").as_deref() == Some("down")
            && b.text("share-app-green").as_deref() == Some("100 %")
    });
    b.shot("blue-down");
    blue.healthy.store(true, Ordering::SeqCst);
    b.wait(DEADLINE, "blue healthy again", |b| {
        b.text("health-app-blue").as_deref() == Some("healthy")
    });

    // Weights from the inputs: all zero is refused, with the API's text.
    b.clear_and_type("weight-input-app-blue", "0");
    b.clear_and_type("weight-input-app-green", "0");
    b.click("apply-weights-app");
    b.wait(DEADLINE, "the dialog", |b| b.visible("confirm-ok"));
    b.click("confirm-ok");
    b.wait(DEADLINE, "the API's refusal", |b| {
        b.text("status").is_some_and(|t| t.contains("would be 0"))
    });
    b.shot("refused");
    assert_eq!(ctl_weights(&d.proxy), (30, 70));
    // Then a real split with one call: blue 100, green 0.
    b.clear_and_type("weight-input-app-blue", "100");
    b.click("apply-weights-app");
    b.wait(DEADLINE, "the dialog", |b| b.visible("confirm-ok"));
    b.click("confirm-ok");
    b.wait(DEADLINE, "page and ctl on blue 100", |b| {
        is(&page_weights(b), "100", "0") && ctl_weights(&d.proxy) == (100, 0)
    });

    // A rollout from the page: it advances step by step under load, and
    // holds its step without (no step is judged without traffic, and the
    // config's failure limit is out of reach), so the page can be looked at
    // on a step however slowly it follows.
    drop(load);
    b.wait(DEADLINE, "the start form", |b| {
        b.visible("rollout-start-app")
    });
    assert_eq!(
        b.js(
            "return document.querySelector('[data-testid=rollout-canary-app]').value",
            json!([])
        ),
        json!("green")
    );
    b.clear_and_type("rollout-steps-input-app", "10,20,30,40,50");
    b.click("rollout-start-app");
    b.wait(DEADLINE, "the dialog", |b| b.visible("confirm-ok"));
    b.click("confirm-ok");
    b.wait(DEADLINE, "step 1 of 6", |b| {
        b.text("rollout-step-app").as_deref() == Some("1 / 6")
            && b.text("rollout-state-app").as_deref() == Some("running")
            && b.text("rollout-percent-app").as_deref() == Some("10 %")
    });
    assert!(b.text("rollout-next-app").unwrap().starts_with("in "));
    assert_eq!(b.text("role-app-green").as_deref(), Some("canary"));
    b.shot("rollout-started");
    // Under load it advances; it is held (paused) the moment it reaches step
    // 3, so that step's judgement is the last one when the page shows it.
    let load = Load::start(d.proxy.http, 3);
    assert!(eventually(DEADLINE, || async { step_number(&d.proxy).await >= 3 }).await);
    let (st, v) = d
        .proxy
        .admin("POST", "/v1/pools/app/rollout/pause", None)
        .await;
    assert_eq!(st, 200, "{v}");
    drop(load);
    assert_eq!(step_number(&d.proxy).await, 3, "paused at step 3");
    b.wait(DEADLINE, "the rollout advances to step 3", |b| {
        b.text("rollout-step-app").as_deref() == Some("3 / 6")
            && b.text("rollout-percent-app").as_deref() == Some("30 %")
    });
    let hist = b.text("rollout-history-app").unwrap();
    assert!(hist.contains("pass"), "{hist}");
    assert!(b.text("rollout-last-app").unwrap().contains("pass"));
    assert_eq!(b.text("weight-app-green").as_deref(), Some("30"));
    if b.visible("status-dismiss") {
        b.click("status-dismiss");
    }
    let readme_shot = b.shot("rollout-step-3");

    // Abort: instant rollback, on the page and in ctl.
    b.click("rollout-abort-app");
    b.wait(DEADLINE, "the dialog", |b| b.visible("confirm-ok"));
    b.click("confirm-ok");
    b.wait(DEADLINE, "rolled back, page and ctl agree", |b| {
        b.text("rollout-outcome-app")
            .is_some_and(|t| t.contains("rolled back"))
            && b.visible("rollout-outcome-app")
            && is(&page_weights(b), "100", "0")
            && ctl_weights(&d.proxy) == (100, 0)
    });
    let status = d.proxy.admin("GET", "/v1/pools/app/rollout", None).await.1;
    assert_eq!(status["state"], "rolled_back");
    assert!(status["reason"]
        .as_str()
        .unwrap()
        .contains("dashboard@127.0.0.1"));
    b.shot("rolled-back");

    // A phone: nothing wider than the screen.
    b.resize(360, 800);
    b.wait(DEADLINE, "a 360 px layout without sideways scrolling", |b| {
        b.js(
            "return window.innerWidth <= 400 && document.documentElement.scrollWidth <= window.innerWidth",
            json!([]),
        ) == json!(true)
    });
    b.shot("phone");
    b.js(
        "document.querySelector('[data-testid=rollout-app]').scrollIntoView()",
        json!([]),
    );
    b.shot("phone-rollout");

    // Keyboard: every action is a real button or input with a label.
    let unlabelled = b.js(
        "return [...document.querySelectorAll('input, select')].filter(e => e.type !== 'range' && !(e.labels && e.labels.length)).map(e => e.dataset.testid)",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]), "inputs without a label");
    let fake_buttons = b.js(
        "return [...document.querySelectorAll('[data-testid^=switch-], [data-testid^=rollout-pause], [data-testid^=rollout-abort], [data-testid^=apply-]')].filter(e => e.tagName !== 'BUTTON').length",
        json!([]),
    );
    assert_eq!(fake_buttons, json!(0));
    // Enter on a focused action opens the dialog with focus inside it;
    // Escape cancels, changes nothing and gives focus back.
    b.keys("switch-app-green", "\u{E007}");
    b.wait(DEADLINE, "the dialog from the keyboard", |b| {
        b.focused() == json!("confirm-ok")
    });
    b.keys("confirm-ok", "\u{E00C}");
    b.wait(DEADLINE, "focus back on the switch button", |b| {
        b.focused() == json!("switch-app-green") && !b.visible("confirm-ok")
    });
    assert_eq!(ctl_weights(&d.proxy), (100, 0));

    if std::env::var_os("SWITCHYARD_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&readme_shot, docs.join("dashboard.png")).unwrap();
    }
}
