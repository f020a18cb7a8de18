//! The access log: one line per request, written off the request path.
//!
//! ```text
//! request ends ─> Entry::line (format once) ─> try_send on a bounded channel
//!                                              └─ full: counted as dropped, never a stall
//! writer thread ─> every 50 ms: drain the queue into a BufWriter (stdout, stderr or a file), flush
//! ```
//!
//! Formats: `common` is the Common Log Format followed by the host, route,
//! pool/version, backend and duration; `json` is one JSON object per line.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::mpsc::{self, SyncSender, TryRecvError};

use prometheus::IntCounter;
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// Lines buffered between requests and the writer: 50 ms of up to ~320 000
/// requests/s, a few MiB at most.
pub const CAPACITY: usize = 16_384;

/// The format and target are part of the config model; these are their
/// names here.
pub use crate::config::{AccessLogFormat as Format, AccessLogTarget as Target};

/// The sending half, held by the app (cloned into responses still streaming).
#[derive(Clone)]
pub struct AccessLog {
    format: Format,
    tx: SyncSender<String>,
    dropped: IntCounter,
}

/// How often the writer drains the queue (lines reach the file within this).
const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// One finished request.
#[derive(Debug)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub proto: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub host: &'a str,
    pub route: &'a str,
    pub pool: &'a str,
    pub version: &'a str,
    pub backend: &'a str,
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread. Fails only when the file cannot be opened.
    pub fn start(
        format: Format,
        target: Target,
        dropped: IntCounter,
    ) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match &target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::Stderr => Box::new(std::io::stderr()),
            Target::File(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
        };
        let (tx, rx) = mpsc::sync_channel(CAPACITY);
        std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(AccessLog {
            format,
            tx,
            dropped,
        })
    }

    /// Queues one entry; drops (and counts) it when the writer is behind.
    #[inline]
    pub fn log(&self, e: &Entry<'_>) {
        let line = e.line(self.format);
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

fn write_loop(rx: mpsc::Receiver<String>, out: Box<dyn Write + Send>) {
    // The writer never parks on the channel: a parked receiver would make
    // every request's send a wake-up (a syscall and a context switch on the
    // proxy's core). It drains what is queued, writes it in large chunks,
    // flushes, then sleeps FLUSH_AFTER. Lines reach the file within that.
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = w.write_all(line.as_bytes());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = w.flush();
                    return;
                }
            }
        }
        let _ = w.flush();
        std::thread::sleep(FLUSH_AFTER);
    }
}

// === impl Entry ===

impl Entry<'_> {
    /// The formatted line, newline included.
    pub fn line(&self, format: Format) -> String {
        match format {
            Format::Json => {
                let secs = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                let line = JsonLine {
                    time: humantime::format_rfc3339_millis(UNIX_EPOCH + secs),
                    client: self.client.ip(),
                    method: self.method,
                    path: self.path,
                    proto: self.proto,
                    status: self.status,
                    bytes: self.bytes,
                    duration_ms: (self.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
                    host: self.host,
                    route: self.route,
                    pool: self.pool,
                    version: self.version,
                    backend: self.backend,
                };
                let mut s = serde_json::to_string(&line).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Common => {
                // Pieces pushed one by one (itoa for numbers): this runs once
                // per request, and `format!` machinery is most of its cost.
                let mut s = String::with_capacity(192);
                let mut n = itoa::Buffer::new();
                let _ = write!(s, "{}", self.client.ip());
                s.push_str(" - - [");
                clf_time(&mut s, self.time);
                s.push_str("] \"");
                s.push_str(self.method);
                s.push(' ');
                s.push_str(&escape(self.path));
                s.push(' ');
                s.push_str(self.proto);
                s.push_str("\" ");
                s.push_str(n.format(self.status));
                s.push(' ');
                s.push_str(n.format(self.bytes));
                s.push_str(" \"");
                s.push_str(&escape(self.host));
                s.push_str("\" ");
                s.push_str(dash(self.route));
                s.push(' ');
                s.push_str(dash(self.pool));
                s.push('/');
                s.push_str(dash(self.version));
                s.push(' ');
                s.push_str(dash(self.backend));
                s.push(' ');
                // Seconds with three decimals, rounded like `{:.3}`.
                let ms = (self.duration.as_micros() + 500) / 1000;
                s.push_str(n.format(ms / 1000));
                s.push('.');
                let frac = (ms % 1000) as u32;
                if frac < 100 {
                    s.push('0');
                }
                if frac < 10 {
                    s.push('0');
                }
                s.push_str(n.format(frac));
                s.push('\n');
                s
            }
        }
    }
}

/// The JSON form of a line (borrowing the entry's fields).
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    client: std::net::IpAddr,
    method: &'a str,
    path: &'a str,
    proto: &'a str,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    host: &'a str,
    route: &'a str,
    pool: &'a str,
    version: &'a str,
    backend: &'a str,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `-` for an empty field, as the Common Log Format has it.
fn dash(x: &str) -> &str {
    if x.is_empty() {
        "-"
    } else {
        x
    }
}

/// Keeps a log line one line: quotes, backslashes and control bytes escaped.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == ' ' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// The Common Log Format's time, `10/Oct/2000:13:55:36 +0000` (UTC).
const CLF_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");

thread_local! {
    /// The last second formatted on this thread and its text: a busy proxy
    /// formats the time once per second per worker, not once per request.
    static CLF_CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends `t` as a Common Log Format time (before 1970 counts as 1970).
fn clf_time(out: &mut String, t: SystemTime) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CLF_CACHE.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            text.push_str(&format_clf_time(secs));
            *cached = secs;
        }
        out.push_str(text);
    });
}

/// Unix seconds as a Common Log Format time; past year 9999 (which `time`
/// does not format) it is the epoch's.
fn format_clf_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|d| d.format(CLF_TIME).ok())
        .unwrap_or_else(|| "01/Jan/1970:00:00:00 +0000".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry<'_> {
        Entry {
            time: UNIX_EPOCH + Duration::from_secs(971_186_136), // 2000-10-10 13:55:36
            client: "10.1.2.3:5555".parse().unwrap(),
            method: "GET",
            path,
            proto: "HTTP/1.1",
            status: 200,
            bytes: 5,
            duration: Duration::from_micros(1_500),
            host: "app.test",
            route: "app.test",
            pool: "app",
            version: "blue",
            backend: "127.0.0.1:8081",
        }
    }

    #[test]
    fn common_log_format_line() {
        assert_eq!(
            entry("/a?b=1").line(Format::Common),
            "10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=1 HTTP/1.1\" 200 5 \"app.test\" app.test app/blue 127.0.0.1:8081 0.002\n"
        );
    }

    #[test]
    fn hostile_paths_stay_on_one_line() {
        let line = entry("/x\"y z\n").line(Format::Common);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains("/x\\\"y\\x20z\\x0a"), "{line}");
    }

    #[test]
    fn json_line() {
        let v: serde_json::Value =
            serde_json::from_str(entry("/").line(Format::Json).trim()).unwrap();
        assert_eq!(v["time"], "2000-10-10T13:55:36.000Z");
        assert_eq!(v["client"], "10.1.2.3");
        assert_eq!(v["status"], 200);
        assert_eq!(v["version"], "blue");
        assert_eq!(v["duration_ms"], 1.5);
    }

    #[test]
    fn clf_times() {
        let at = |secs: u64| {
            let mut s = String::new();
            clf_time(&mut s, UNIX_EPOCH + Duration::from_secs(secs));
            s
        };
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(971_186_136), "10/Oct/2000:13:55:36 +0000");
        // Twice the same second (from the cache), then the next one.
        assert_eq!(at(1_795_392_000), "23/Nov/2026:00:00:00 +0000");
        assert_eq!(at(1_795_392_000), "23/Nov/2026:00:00:00 +0000");
        assert_eq!(at(1_795_392_001), "23/Nov/2026:00:00:01 +0000");
        let mut s = String::new();
        clf_time(&mut s, UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(s, "01/Jan/1970:00:00:00 +0000");
        assert_eq!(format_clf_time(u64::MAX), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(
            format_clf_time(253_402_300_799),
            "31/Dec/9999:23:59:59 +0000"
        );
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (tx, _rx) = mpsc::sync_channel(1);
        let log = AccessLog {
            format: Format::Common,
            tx,
            dropped,
        };
        log.log(&entry("/"));
        log.log(&entry("/"));
        log.log(&entry("/"));
        assert_eq!(log.dropped(), 2);
    }
}
