//! Config paths a reload must refuse without blocking anything: a FIFO nobody
//! ever writes to, a symlink to /dev/zero, a 17 MiB file, and an empty file
//! (which would leave nothing to route). Through `POST /v1/reload`, SIGHUP
//! and `switchyard check`.
//!
//! Whatever the path holds, the reload returns with a clear error, proxied
//! requests and the admin API keep being answered meanwhile and after, and
//! SIGTERM still stops the process.
//!
//! Every wait has a deadline: a hang is reported as a failure naming what did
//! not answer, never as a hung test. Each test collects what went wrong and
//! reports it all at the end, with the proxy's log. The proxy and `check` run
//! under `ulimit -d` (1 GiB), so a build that reads /dev/zero without bound
//! fails the test instead of taking the machine's memory.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use tokio::time::timeout;

use support::*;

/// A reload, a `check` or a logged SIGHUP refusal must come within this.
const REPLY_WITHIN: Duration = Duration::from_secs(10);
/// Each proxied GET and each `GET /v1/state`.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// From SIGTERM to the exit (the configs here have `shutdown_grace = "5s"`).
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// `ulimit -d` of the processes under test, in KiB.
const DATA_LIMIT_KIB: u64 = 1024 * 1024;
/// Peak RSS (VmHWM) the proxy may reach over a test: it serves a two-version
/// pool, so anything near this means it read what it should have refused.
const PEAK_RSS_LIMIT_KIB: u64 = 256 * 1024;

/// What the config path is replaced by.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// A FIFO: opening it for reading blocks until a writer comes; none does.
    Fifo,
    /// A symlink to /dev/zero: endless input.
    DevZero,
    /// The config followed by comment lines up to 17 MiB: valid TOML, too big.
    Oversized,
}

impl Bad {
    /// Replaces the file at `path` (its text is kept for `Oversized`).
    fn install(self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let _ = std::fs::remove_file(path);
        match self {
            Bad::Fifo => {
                let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
                assert!(ok, "mkfifo {} failed", path.display());
            }
            Bad::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Bad::Oversized => {
                let line = format!("# padding {}\n", "x".repeat(52));
                let mut big = text;
                big.reserve(17 * 1024 * 1024 + line.len());
                while big.len() <= 17 * 1024 * 1024 {
                    big.push_str(&line);
                }
                std::fs::write(path, big).unwrap();
            }
        }
    }

    /// The error must contain one of these (lowercased).
    fn expected(self) -> &'static [&'static str] {
        match self {
            Bad::Fifo | Bad::DevZero => &["not a regular file"],
            Bad::Oversized => &["too large", "too big", "larger than", "exceeds"],
        }
    }

    fn says_why(self, message: &str) -> bool {
        let m = message.to_lowercase();
        self.expected().iter().any(|e| m.contains(e))
    }
}

/// What went wrong so far; each distinct problem once, in order.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: String) {
        if !self.0.contains(&problem) {
            self.0.push(problem);
        }
    }

    fn assert_none(self, p: &Proxy) {
        assert!(
            self.0.is_empty(),
            "{}\n--- proxy log (last 40 lines) ---\n{}",
            self.0.join("\n"),
            tail(&plain_log(p), 40)
        );
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The proxy's log without terminal colour codes (`ESC [ ... m`).
fn plain_log(p: &Proxy) -> String {
    let mut out = String::new();
    let log = p.log();
    let mut chars = log.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The usual blue/green pool (blue 100, green 0), under the data limit.
async fn start_proxy(blue: &Upstream, green: &Upstream) -> Proxy {
    Proxy::start_with_data_limit(&pool_config(blue, 100, green, 0, ""), DATA_LIMIT_KIB).await
}

/// One proxied GET (fresh connection) and one `GET /v1/state`, each within
/// `ANSWER_WITHIN`, both answered as the running config says.
async fn check_serving(p: &Proxy, when: &str, problems: &mut Problems) {
    let mut c = Client::new(p.http);
    match timeout(ANSWER_WITHIN, c.get("app.test", "/")).await {
        Err(_) => problems.add(format!(
            "{when}: proxied GET not answered within {ANSWER_WITHIN:?}"
        )),
        Ok(Err(e)) => problems.add(format!("{when}: proxied GET failed: {e}")),
        Ok(Ok(a)) if a.status != StatusCode::OK || a.body != "blue\n" => problems.add(format!(
            "{when}: proxied GET answered {} {:?}, not 200 \"blue\\n\"",
            a.status, a.body
        )),
        Ok(Ok(_)) => {}
    }
    match timeout(ANSWER_WITHIN, admin(&p.socket, "GET", "/v1/state", None)).await {
        Err(_) => problems.add(format!(
            "{when}: GET /v1/state not answered within {ANSWER_WITHIN:?}"
        )),
        Ok(Err(e)) => problems.add(format!("{when}: GET /v1/state failed: {e}")),
        Ok(Ok((status, v))) => {
            let versions = &v["pools"]["app"]["versions"];
            let right = status == StatusCode::OK
                && versions["blue"]["weight"] == 100
                && versions["green"]["weight"] == 0
                && v["listeners"]["http"].as_str() == Some(p.http.to_string().as_str())
                && v["routes"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["host"] == "app.test"));
            if !right {
                problems.add(format!(
                    "{when}: GET /v1/state answered {status} without the running config: {v}"
                ));
            }
        }
    }
}

/// The proxy's peak RSS stayed under `PEAK_RSS_LIMIT_KIB`.
fn check_peak_rss(p: &Proxy, problems: &mut Problems) {
    let status = match std::fs::read_to_string(format!("/proc/{}/status", p.pid())) {
        Ok(s) => s,
        Err(e) => return problems.add(format!("cannot read the proxy's /proc status: {e}")),
    };
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match hwm {
        Some(kib) if kib > PEAK_RSS_LIMIT_KIB => problems.add(format!(
            "the proxy's peak RSS reached {} MiB (limit {} MiB)",
            kib / 1024,
            PEAK_RSS_LIMIT_KIB / 1024
        )),
        Some(_) => {}
        // A zombie has no VmHWM: it died, which the other checks report.
        None => problems.add("the proxy has no VmHWM (it is no longer running)".into()),
    }
}

/// SIGTERM; the process exits 0 within `EXIT_WITHIN`.
async fn check_sigterm_exits(p: &mut Proxy, problems: &mut Problems) {
    p.signal("TERM");
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        match p.child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                return problems.add(format!("after SIGTERM the proxy exited with {status}"))
            }
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(None) => {
                return problems.add(format!(
                    "the proxy did not exit within {EXIT_WITHIN:?} of SIGTERM"
                ))
            }
            Err(e) => return problems.add(format!("waiting for the proxy: {e}")),
        }
    }
}

/// `POST /v1/reload` in a task; until it returns (at most `REPLY_WITHIN`),
/// proxied requests and `GET /v1/state` are checked in a loop.
async fn reload_while_checking(
    p: &Proxy,
    path: &'static str,
    problems: &mut Problems,
) -> Option<(StatusCode, Value)> {
    let socket = p.socket.clone();
    let started = Instant::now();
    let mut reload = tokio::spawn(async move { admin(&socket, "POST", path, None).await });
    while !reload.is_finished() && started.elapsed() < REPLY_WITHIN {
        check_serving(p, "while the reload was outstanding", problems).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = REPLY_WITHIN.saturating_sub(started.elapsed());
    let answer = match timeout(left, &mut reload).await {
        Err(_) => {
            problems.add(format!(
                "POST {path} did not return within {REPLY_WITHIN:?}"
            ));
            None
        }
        Ok(Err(e)) => panic!("the reload task failed: {e}"),
        Ok(Ok(Err(e))) => {
            problems.add(format!("POST {path}: no HTTP answer: {e}"));
            None
        }
        Ok(Ok(Ok(answer))) => Some(answer),
    };
    reload.abort();
    answer
}

async fn reload_is_refused_while_serving(bad: Bad) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = start_proxy(&blue, &green).await;
    let mut problems = Problems::default();
    check_serving(&p, "before the reload", &mut problems).await;
    assert!(problems.0.is_empty(), "{:?}", problems.0);

    bad.install(&p.config_path);
    if let Some((status, v)) = reload_while_checking(&p, "/v1/reload", &mut problems).await {
        let message = v["error"].as_str().unwrap_or_default();
        if !status.is_client_error() || !bad.says_why(message) {
            problems.add(format!(
                "POST /v1/reload of a {bad:?} answered {status} {v}; expected a 4xx error containing one of {:?}",
                bad.expected()
            ));
        }
    }
    for _ in 0..3 {
        check_serving(&p, "after the reload", &mut problems).await;
    }
    check_peak_rss(&p, &mut problems);
    check_sigterm_exits(&mut p, &mut problems).await;
    problems.assert_none(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_fifo_is_refused_while_requests_are_served() {
    reload_is_refused_while_serving(Bad::Fifo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_symlink_to_dev_zero_is_refused_while_requests_are_served() {
    reload_is_refused_while_serving(Bad::DevZero).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_17_mib_file_is_refused_while_requests_are_served() {
    reload_is_refused_while_serving(Bad::Oversized).await;
}

/// SIGHUP with a bad path: the refusal is logged (naming why) within
/// `REPLY_WITHIN`, the proxy serves throughout, SIGTERM still works.
async fn sighup_is_refused_while_serving(bad: Bad) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = start_proxy(&blue, &green).await;
    let mut problems = Problems::default();
    check_serving(&p, "before SIGHUP", &mut problems).await;
    assert!(problems.0.is_empty(), "{:?}", problems.0);

    bad.install(&p.config_path);
    p.signal("HUP");
    let started = Instant::now();
    let mut logged = false;
    while !logged && started.elapsed() < REPLY_WITHIN {
        check_serving(&p, "after SIGHUP", &mut problems).await;
        logged = plain_log(&p).lines().any(|l| bad.says_why(l));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !logged {
        problems.add(format!(
            "no log line containing one of {:?} within {REPLY_WITHIN:?} of SIGHUP",
            bad.expected()
        ));
    }
    for _ in 0..3 {
        check_serving(&p, "after the refusal", &mut problems).await;
    }
    check_peak_rss(&p, &mut problems);
    check_sigterm_exits(&mut p, &mut problems).await;
    problems.assert_none(&p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_fifo_is_refused_and_logged_while_requests_are_served() {
    sighup_is_refused_while_serving(Bad::Fifo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_symlink_to_dev_zero_is_refused_and_logged_while_requests_are_served() {
    sighup_is_refused_while_serving(Bad::DevZero).await;
}

/// `switchyard check -c PATH` (under the data limit) within `REPLY_WITHIN`.
fn check_within(path: &Path) -> Result<(bool, String), String> {
    let out = output_within(
        &mut bin_with_data_limit(DATA_LIMIT_KIB, &["check", "-c", path.to_str().unwrap()]),
        REPLY_WITHIN,
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn check_refuses(bad: Bad) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    bad.install(&path);
    let (ok, text) = check_within(&path)
        .unwrap_or_else(|e| panic!("switchyard check -c <{bad:?}> did not return: {e}"));
    assert!(!ok, "check of a {bad:?} succeeded: {text}");
    assert!(
        bad.says_why(&text),
        "check of a {bad:?} does not say why (one of {:?}): {text}",
        bad.expected()
    );
}

#[test]
fn check_of_a_fifo_returns_an_error() {
    check_refuses(Bad::Fifo);
}

#[test]
fn check_of_a_symlink_to_dev_zero_returns_an_error() {
    check_refuses(Bad::DevZero);
}

/// A refusal of an empty file must say it would leave nothing to route.
fn says_nothing_routed(message: &str) -> bool {
    let m = message.to_lowercase();
    m.contains("no route") || m.contains("nothing")
}

/// An empty file parses (every section has defaults) but routes nothing: a
/// plain reload refuses it, keeping the running table; `?force=true` (the
/// spelling of `PUT .../weights?force=true`) applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_an_empty_file_is_refused_unless_forced() {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let mut p = start_proxy(&blue, &green).await;
    let mut problems = Problems::default();
    check_serving(&p, "before the reload", &mut problems).await;
    assert!(problems.0.is_empty(), "{:?}", problems.0);

    std::fs::write(&p.config_path, "").unwrap();
    if let Some((status, v)) = reload_while_checking(&p, "/v1/reload", &mut problems).await {
        let message = v["error"].as_str().unwrap_or_default();
        if !status.is_client_error() || !says_nothing_routed(message) {
            problems.add(format!(
                "POST /v1/reload of an empty file answered {status} {v}; expected a 4xx error saying nothing would be routed"
            ));
        }
    }
    check_serving(&p, "after the refused reload", &mut problems).await;

    match timeout(
        REPLY_WITHIN,
        admin(&p.socket, "POST", "/v1/reload?force=true", None),
    )
    .await
    {
        Ok(Ok((StatusCode::OK, _))) => {
            let mut c = Client::new(p.http);
            match timeout(ANSWER_WITHIN, c.get("app.test", "/")).await {
                Ok(Ok(a)) if a.status == StatusCode::NOT_FOUND => {}
                other => problems.add(format!(
                    "after the forced reload of an empty file, app.test answered {other:?}, not 404"
                )),
            }
        }
        other => problems.add(format!(
            "POST /v1/reload?force=true of an empty file answered {other:?}, not 200"
        )),
    }
    check_sigterm_exits(&mut p, &mut problems).await;
    problems.assert_none(&p);
}

#[test]
fn check_of_an_empty_file_warns_that_nothing_would_be_routed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, "").unwrap();
    let (_, text) = check_within(&path).unwrap();
    assert!(
        text.to_lowercase().contains("warn") && says_nothing_routed(&text),
        "no warning that nothing would be routed: {text}"
    );
}
