//! `switchyard ctl`: a client of the admin socket, with human output.
//!
//! Each subcommand is one HTTP call (two for `switch`, which reads the pool's
//! versions first); `--json` prints the API's JSON as is for scripts. Answers
//! are read into the API's typed models ([`crate::model::api`]), the same
//! types the server serializes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::UnixStream;

use std::time::Duration;

use crate::model::api::{EventsReply, RolloutRequest, RolloutStatus, StateView, WeightsReply};

/// Why a ctl call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot connect to the admin socket {path}: {source} (is switchyard running? set -s or $SWITCHYARD_SOCKET)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {0}: {1}")]
    Http(PathBuf, String),
    /// The API refused the call; the message is its `error`.
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        body: Value,
    },
    #[error("{0}")]
    Usage(String),
    /// The answer is not what the API documents (another version of switchyard?).
    #[error("admin socket {0}: unexpected answer: {1}")]
    Shape(PathBuf, String),
    /// `--wait`: the rollout ended without promoting (rolled back, gone, or
    /// replaced); `body` is its last status.
    #[error("{message}")]
    RolledBack { message: String, body: Value },
    /// `--wait`: the proxy could not be reached for longer than allowed.
    #[error("could not reach the admin socket {path} for {waited:?} (last error: {last})")]
    Unreachable {
        path: PathBuf,
        waited: std::time::Duration,
        last: String,
    },
}

/// A 2xx answer: the JSON as sent (for `--json`) and read into its model.
pub struct Answer<T> {
    pub json: Value,
    pub typed: T,
}

/// Where `ctl` finds the socket: `-s`, then `$SWITCHYARD_SOCKET` (clap fills
/// both into `explicit`), then the config that `run` would read, then the
/// default.
pub fn resolve_socket(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    for candidate in ["switchyard.toml", "config/switchyard.toml"] {
        let p = Path::new(candidate);
        if p.exists() {
            if let Ok(c) = crate::config::Config::load(p) {
                return c.admin.socket;
            }
        }
    }
    PathBuf::from("/run/switchyard/admin.sock")
}

/// A value for a query string (`?pool=...`), percent-encoded.
pub fn query_escape(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// One admin call, its answer read into `T`.
pub async fn call<T: DeserializeOwned>(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&(impl Serialize + ?Sized)>,
) -> Result<Answer<T>, CtlError> {
    let json = call_json(socket, method, path, body).await?;
    let typed = serde_json::from_value(json.clone())
        .map_err(|e| CtlError::Shape(socket.to_owned(), e.to_string()))?;
    Ok(Answer { json, typed })
}

/// One admin call: returns the JSON body of a 2xx answer.
pub async fn call_json(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&(impl Serialize + ?Sized)>,
) -> Result<Value, CtlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| CtlError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let http_err = |e: &dyn std::fmt::Display| CtlError::Http(socket.to_owned(), e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = body
        .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "switchyard")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))
        .map_err(|e| http_err(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http_err(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http_err(&e))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&body) }));
    if status.is_success() {
        Ok(value)
    } else {
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed")
            .to_string();
        Err(CtlError::Api {
            status,
            message,
            body: value,
        })
    }
}

/// Parses `V=W` arguments.
pub fn parse_assignments(args: &[String]) -> Result<BTreeMap<String, u32>, CtlError> {
    let mut out = BTreeMap::new();
    for a in args {
        let (v, w) = a
            .split_once('=')
            .ok_or_else(|| CtlError::Usage(format!("expected VERSION=WEIGHT, got {a:?}")))?;
        let w: u32 = w
            .trim()
            .parse()
            .map_err(|_| CtlError::Usage(format!("weight in {a:?} must be a whole number >= 0")))?;
        out.insert(v.trim().to_string(), w);
    }
    if out.is_empty() {
        return Err(CtlError::Usage("give at least one VERSION=WEIGHT".into()));
    }
    Ok(out)
}

/// Weights for `switch POOL V`: V gets 100, every other version 0.
pub fn switch_weights(
    state: &StateView,
    pool: &str,
    target: &str,
) -> Result<BTreeMap<String, u32>, CtlError> {
    let not_found = |message: String| CtlError::Api {
        status: StatusCode::NOT_FOUND,
        message,
        body: Value::Null,
    };
    let versions = &state
        .pools
        .get(pool)
        .ok_or_else(|| not_found(format!("unknown pool {pool:?}")))?
        .versions;
    if !versions.contains_key(target) {
        return Err(not_found(format!("pool {pool} has no version {target:?}")));
    }
    Ok(versions
        .keys()
        .map(|v| (v.clone(), if v == target { 100 } else { 0 }))
        .collect())
}

/// `blue=90 green=10`.
pub fn weights_line(w: &WeightsReply) -> String {
    w.weights
        .iter()
        .map(|(k, w)| format!("{k}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `header X-Beta=1 -> green`.
pub fn describe_match(m: &crate::rules::VersionMatchSpec) -> String {
    match crate::rules::VersionRule::compile(m) {
        Ok(r) => r.describe(),
        Err(_) => format!("{m:?}"),
    }
}

/// A version rule from `ctl match add` arguments (`--header NAME[=VALUE]`,
/// `--cookie ...`, `--query ...`, `--regex RE`, VERSION).
pub fn match_spec(
    header: Option<String>,
    cookie: Option<String>,
    query: Option<String>,
    regex: Option<String>,
    version: String,
) -> Result<crate::rules::VersionMatchSpec, CtlError> {
    let given = header.or(cookie.clone()).or(query.clone());
    let Some(arg) = given.clone() else {
        return Err(CtlError::Usage(
            "give one of --header, --cookie or --query NAME[=VALUE]".into(),
        ));
    };
    let (name, value) = match arg.split_once('=') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (arg, None),
    };
    if value.is_some() && regex.is_some() {
        return Err(CtlError::Usage(
            "give NAME=VALUE or --regex, not both".into(),
        ));
    }
    let mut spec = crate::rules::VersionMatchSpec {
        header: None,
        cookie: None,
        query: None,
        value,
        regex,
        version,
    };
    if cookie.is_some() {
        spec.cookie = Some(name);
    } else if query.is_some() {
        spec.query = Some(name);
    } else {
        spec.header = Some(name);
    }
    crate::rules::VersionRule::compile(&spec).map_err(CtlError::Usage)?;
    Ok(spec)
}

/// `ctl match show`: numbered rules.
pub fn render_matches(pool: &str, rules: &[crate::rules::VersionMatchSpec]) -> String {
    if rules.is_empty() {
        return format!("{pool}: no version rules (weights and sticky users decide)\n");
    }
    let mut out = format!("{pool}: version rules, first match wins:\n");
    for (i, r) in rules.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, describe_match(r));
    }
    out
}

/// Human rendering of `GET /v1/state`.
pub fn render_state(s: &StateView) -> String {
    let mut out = String::new();
    let parts: Vec<String> = s
        .listeners
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(out, "listening: {}", parts.join(", "));
    let _ = writeln!(out, "routes:");
    for r in &s.routes {
        let preview = if r.preview { " (preview)" } else { "" };
        let rule = r
            .rule
            .as_deref()
            .map(|x| format!(" {x}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<32} -> {:<12} tls={}{preview}",
            format!("{}{rule}", r.host),
            r.pool,
            r.tls
        );
        for m in &r.middlewares {
            let _ = writeln!(
                out,
                "      {} ({}): {}; answered {}",
                m.name, m.kind, m.effect, m.rejected
            );
        }
    }
    for (name, p) in &s.pools {
        match &p.provider {
            Some(by) => {
                let _ = writeln!(out, "pool {name} (discovered by {by}):");
            }
            None => {
                let _ = writeln!(out, "pool {name}:");
            }
        }
        for m in &p.matches {
            let _ = writeln!(out, "  match {}", describe_match(m));
        }
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:>9} {:>7} {:>9}  backends",
            "version", "weight", "effective", "share", "in-flight"
        );
        for (v, d) in &p.versions {
            let backends: Vec<String> = d
                .backends
                .iter()
                .map(|b| {
                    let st = if b.ejected {
                        "ejected"
                    } else if !b.available {
                        "down"
                    } else if b.health == "unknown" {
                        "unknown"
                    } else {
                        "up"
                    };
                    if b.queued > 0 {
                        format!("{} {st} ({} queued)", b.addr, b.queued)
                    } else {
                        format!("{} {st}", b.addr)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "  {:<16} {:>7} {:>9} {:>6}% {:>9}  {}",
                v,
                d.weight,
                d.effective_weight,
                d.share_percent,
                d.in_flight,
                backends.join(", ")
            );
        }
    }
    render_certificates(&mut out, s);
    render_providers(&mut out, s);
    render_cluster(&mut out, s);
    out
}

fn render_providers(out: &mut String, s: &StateView) {
    for (name, p) in &s.providers {
        let status = if p.up { "up" } else { "DOWN" };
        let api = p.api_version.as_deref().unwrap_or("-");
        let sync = p.last_sync.as_deref().unwrap_or("never");
        let _ = writeln!(
            out,
            "provider {name}: {status}  {}  API {api}  {} container(s) in rotation  last sync {sync}",
            p.endpoint, p.containers
        );
        if let Some(e) = &p.error {
            let _ = writeln!(out, "  error: {e} (the last known backends keep serving)");
        }
        for r in &p.refused {
            let _ = writeln!(out, "  refused: {r}");
        }
    }
}

/// `[cluster]`: the connection, etcd's members, the fleet's instances.
fn render_cluster(out: &mut String, s: &StateView) {
    let Some(c) = &s.cluster else { return };
    let conn = if c.connected {
        "connected".to_string()
    } else {
        format!(
            "NOT CONNECTED to etcd ({}): serving the last table applied; changes are refused",
            c.last_error.as_deref().unwrap_or("not reached yet")
        )
    };
    let _ = writeln!(
        out,
        "cluster {} as {}: {conn}; applied revision {}; rollout leader {}",
        c.prefix,
        c.name,
        c.applied_revision,
        c.leader.as_deref().unwrap_or("none known")
    );
    for m in &c.etcd {
        let role = if m.leader { "leader" } else { "member" };
        let up = if m.reachable { "up" } else { "unreachable" };
        let _ = writeln!(
            out,
            "  etcd {:<12} {:<16} {role:<7} {up:<11} {}",
            m.name,
            m.id,
            m.client_urls.join(",")
        );
    }
    for (name, i) in &c.instances {
        let lead = if i.leader { " (rollout leader)" } else { "" };
        let _ = writeln!(
            out,
            "  instance {name:<16} applied revision {}{lead}",
            i.applied_revision
        );
    }
}

fn render_certificates(out: &mut String, s: &StateView) {
    if !s.certificates.is_empty() {
        let _ = writeln!(out, "certificates:");
    }
    let text = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
    for (name, c) in &s.certificates {
        let _ = writeln!(
            out,
            "  {name:<32} {:<5} not after {}  serial {}  issuer {}",
            c.source,
            text(&c.not_after),
            text(&c.serial),
            text(&c.issuer)
        );
        let Some(a) = &c.acme else { continue };
        let _ = writeln!(
            out,
            "  {:<32}       renew at {}  next check {}  attempts {}  failures {} ({} in a row)",
            "",
            text(&a.renew_at),
            text(&a.next_check),
            a.attempts,
            a.failures,
            a.consecutive_failures
        );
        if let Some(e) = &a.last_error {
            let _ = writeln!(
                out,
                "  {:<32}       last error: {e} (at {})",
                "",
                text(&a.last_error_at)
            );
        }
    }
}

/// Human rendering of `GET /v1/events`.
pub fn render_events(v: &EventsReply) -> String {
    let mut out = String::new();
    for e in &v.events {
        let _ = writeln!(
            out,
            "#{:<5} {} {:<12} {:<16} {}",
            e.seq,
            e.time,
            match &e.instance {
                Some(i) => format!("{i}/{}", e.who),
                None => e.who.clone(),
            },
            e.kind,
            e.what
        );
    }
    out
}

/// One `--steps` entry: `25`, `pause`, or `25:10m` (a step with its own
/// duration). Anything else goes to the server as written, which refuses it.
pub fn step_spec(s: &str) -> crate::model::api::StepSpec {
    use crate::model::api::StepSpec;
    let s = s.trim();
    match s.split_once(':') {
        Some((p, d)) => match p.trim().parse() {
            Ok(percent) => StepSpec::Timed {
                percent,
                duration: Some(d.trim().to_string()),
            },
            Err(_) => StepSpec::Word(s.to_string()),
        },
        None => s
            .parse()
            .map(StepSpec::Percent)
            .unwrap_or_else(|_| StepSpec::Word(s.to_string())),
    }
}

/// Human rendering of a rollout status.
pub fn render_rollout(v: &RolloutStatus) -> String {
    let mut out = String::new();
    let r = &v.rollout;
    let _ = writeln!(
        out,
        "rollout of {} in {} (stable {}): {}, step {}/{} at {}%",
        r.canary, r.pool, r.stable, v.state, v.step_number, v.steps_total, v.percent
    );
    if v.state == "running" {
        let _ = writeln!(
            out,
            "  next judgement in {:.1}s",
            v.time_left_ms as f64 / 1000.0
        );
    }
    if v.state == crate::model::rollout::WAITING_FOR_APPROVAL {
        let next = r.plan.steps.get(r.step + 1).copied().unwrap_or(100);
        let _ = writeln!(
            out,
            "  waiting for approval before step {}/{} ({next}%): `ctl rollout resume {}` approves, `ctl rollout abort {}` rolls back",
            r.step + 2,
            v.steps_total,
            r.pool,
            r.pool
        );
    }
    if let Some(j) = &r.last {
        let verdict = serde_json::to_value(j.verdict).unwrap_or(Value::Null);
        let _ = writeln!(
            out,
            "  last judgement: {}: {}",
            verdict.as_str().unwrap_or(""),
            j.reason
        );
        let f = |x: Option<f64>, scale: f64, unit: &str| {
            x.map(|x| format!("{:.2}{unit}", x * scale))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            out,
            "    canary {} req, 5xx {}, p99 {} | stable {} req, 5xx {}, p99 {}",
            j.canary_requests,
            f(j.canary_error_rate, 100.0, "%"),
            f(j.canary_p99, 1000.0, " ms"),
            j.stable_requests,
            f(j.stable_error_rate, 100.0, "%"),
            f(j.stable_p99, 1000.0, " ms")
        );
        if !j.tests.is_empty() {
            let _ = writeln!(
                out,
                "    window {} of step {}, {:.3}% confidence over the rollout:",
                j.window,
                j.step + 1,
                j.confidence * 100.0
            );
        }
        for t in &j.tests {
            let outcome = serde_json::to_value(t.outcome).unwrap_or(Value::Null);
            let _ = writeln!(
                out,
                "    {:<16} {:<14} {:<3} {:>6.2}  p {:.2e} (fails below {:.2e})  n {}/{}  {} {:.4} vs {:.4}: {}",
                t.test,
                t.method,
                t.statistic_name(),
                t.statistic,
                t.p_value,
                1.0 - t.confidence,
                t.canary_n,
                t.stable_n,
                estimate_name(&t.test),
                t.estimate,
                t.limit,
                outcome.as_str().unwrap_or("")
            );
        }
    }
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  {}: {reason}", v.state);
    }
    out
}

/// What a test's `estimate` is.
fn estimate_name(test: &str) -> &'static str {
    match test {
        "error_rate" => "5xx difference",
        "latency" => "P(slower)",
        "min_success_rate" => "success rate",
        _ => "share above max_p99",
    }
}

/// How long a `--wait` keeps retrying a proxy it cannot reach (a restart,
/// a socket not there yet) before giving up with exit code 3.
pub const DEFAULT_UNREACHABLE: Duration = Duration::from_secs(60);
/// Longest wait for one answer while following: a proxy that accepts but
/// does not answer counts as unreachable.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Between two looks at a rollout, and between two tries of the socket.
const POLL: Duration = Duration::from_millis(500);

/// What `--wait` follows: the rollout of `pool` that started at
/// `started_ms` (another one replacing it is not ours).
#[derive(Debug, Clone)]
pub struct Followed {
    pub pool: String,
    pub started_ms: Option<u64>,
}

/// Whether an error says the proxy could not be reached (as opposed to an
/// answer): worth retrying while it restarts.
fn is_unreachable(e: &CtlError) -> bool {
    matches!(e, CtlError::Connect { .. } | CtlError::Http(..))
}

/// One call, bounded by [`CALL_LIMIT`]: a proxy that never answers is a
/// transport error like a closed socket.
async fn call_bounded<T: DeserializeOwned>(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&(impl Serialize + ?Sized)>,
) -> Result<Answer<T>, CtlError> {
    match tokio::time::timeout(CALL_LIMIT, call(socket, method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(CtlError::Http(
            socket.to_owned(),
            format!("no answer within {CALL_LIMIT:?}"),
        )),
    }
}

/// Retries `GET path` while the proxy cannot be reached, for at most
/// `patience` since `last_ok` (the last answer); then [`CtlError::Unreachable`].
async fn get_patiently<T: DeserializeOwned>(
    socket: &Path,
    path: &str,
    patience: Duration,
    last_ok: &mut std::time::Instant,
) -> Result<Answer<T>, CtlError> {
    let mut said = false;
    loop {
        match call_bounded(socket, Method::GET, path, None::<&Value>).await {
            Ok(a) => {
                *last_ok = std::time::Instant::now();
                return Ok(a);
            }
            Err(e) if is_unreachable(&e) => {
                if last_ok.elapsed() >= patience {
                    return Err(CtlError::Unreachable {
                        path: socket.to_owned(),
                        waited: patience,
                        last: e.to_string(),
                    });
                }
                if !said {
                    eprintln!("\nswitchyard ctl: {e}; retrying for up to {patience:?}");
                    said = true;
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `rollout start --wait`: starts the rollout and follows it. A refusal is
/// returned as the API's error (exit 2); a proxy that cannot be reached is
/// retried for `patience` (exit 3 past it). When the start request was
/// sent but its answer lost (the proxy died meanwhile), the stored rollout
/// tells whether it started: ours is followed, otherwise it is sent again.
pub async fn start_and_follow(
    socket: &Path,
    pool: &str,
    body: &RolloutRequest,
    patience: Duration,
) -> Result<Answer<RolloutStatus>, CtlError> {
    let path = format!("/v1/pools/{pool}/rollout");
    let asked_ms = crate::control::now_ms();
    let mut last_ok = std::time::Instant::now();
    loop {
        let err = match call_bounded::<RolloutStatus>(socket, Method::POST, &path, Some(body)).await
        {
            Ok(a) => {
                let followed = Followed {
                    pool: pool.to_string(),
                    started_ms: Some(a.typed.rollout.started_ms),
                };
                return follow_rollout(socket, &followed, patience).await;
            }
            Err(e) if is_unreachable(&e) => e,
            Err(e) => return Err(e),
        };
        if let CtlError::Http(..) = err {
            // Sent, answer lost: did it start?
            let a: Answer<RolloutStatus> =
                match get_patiently(socket, &path, patience, &mut last_ok).await {
                    Ok(a) => a,
                    Err(CtlError::Api { status, .. }) if status == StatusCode::NOT_FOUND => {
                        continue
                    }
                    Err(e) => return Err(e),
                };
            let r = &a.typed.rollout;
            if Some(&r.canary) == body.canary.as_ref() && r.started_ms + 2_000 >= asked_ms {
                let followed = Followed {
                    pool: pool.to_string(),
                    started_ms: Some(r.started_ms),
                };
                return follow_rollout(socket, &followed, patience).await;
            }
            continue;
        }
        if last_ok.elapsed() >= patience {
            return Err(CtlError::Unreachable {
                path: socket.to_owned(),
                waited: patience,
                last: err.to_string(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows a rollout to its end with a live one-line progress on stderr,
/// through restarts of the proxy (retrying the socket for `patience` since
/// the last answer). `Ok` when promoted; [`CtlError::RolledBack`] when
/// rolled back, or when the rollout followed is gone or was replaced.
pub async fn follow_rollout(
    socket: &Path,
    followed: &Followed,
    patience: Duration,
) -> Result<Answer<RolloutStatus>, CtlError> {
    use std::io::Write as _;
    let pool = &followed.pool;
    let path = format!("/v1/pools/{pool}/rollout");
    let mut last_ok = std::time::Instant::now();
    let mut started = followed.started_ms;
    loop {
        let a: Answer<RolloutStatus> =
            match get_patiently(socket, &path, patience, &mut last_ok).await {
                Ok(a) => a,
                Err(CtlError::Api { status, body, .. }) if status == StatusCode::NOT_FOUND => {
                    return Err(CtlError::RolledBack {
                        message: format!("the rollout of pool {pool} is gone"),
                        body,
                    })
                }
                Err(e) => return Err(e),
            };
        let v = &a.typed;
        if *started.get_or_insert(v.rollout.started_ms) != v.rollout.started_ms {
            return Err(CtlError::RolledBack {
                message: format!(
                    "the rollout followed was replaced by a rollout of {} started by {}",
                    v.rollout.canary, v.rollout.started_by
                ),
                body: a.json,
            });
        }
        let mut err = std::io::stderr();
        let _ = err.write_all(progress_line(pool, v).as_bytes());
        let _ = err.flush();
        match v.state.as_str() {
            "promoted" => {
                let _ = writeln!(err);
                return Ok(a);
            }
            "rolled_back" => {
                let _ = writeln!(err);
                return Err(CtlError::RolledBack {
                    message: format!("rolled back: {}", v.rollout.reason.as_deref().unwrap_or("")),
                    body: a.json,
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

fn progress_line(pool: &str, v: &RolloutStatus) -> String {
    let last = v
        .rollout
        .last
        .as_ref()
        .and_then(|j| serde_json::to_value(j.verdict).ok())
        .and_then(|x| x.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    format!(
        "\r{pool}: {} {} step {}/{} {}% next judgement {:.0}s last {last}   ",
        v.rollout.canary,
        v.state,
        v.step_number,
        v.steps_total,
        v.percent,
        v.time_left_ms as f64 / 1000.0
    )
}

/// The exit code of a failed ctl call (documented in README and `ctl
/// --help`): 1 rolled back, 2 refused or bad input (nothing changed), 3 the
/// proxy could not be reached.
pub fn exit_code(e: &CtlError) -> u8 {
    match e {
        CtlError::RolledBack { .. } => 1,
        CtlError::Api { .. } | CtlError::Usage(_) | CtlError::Shape(..) => 2,
        CtlError::Connect { .. } | CtlError::Http(..) | CtlError::Unreachable { .. } => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        let w = parse_assignments(&["blue=0".into(), "green=100".into()]).unwrap();
        assert_eq!(w["green"], 100);
        assert!(parse_assignments(&["blue".into()]).is_err());
        assert!(parse_assignments(&["blue=-1".into()]).is_err());
        assert!(parse_assignments(&[]).is_err());
    }

    #[test]
    fn switch_sets_one_version_to_100() {
        let s: StateView = serde_json::from_value(json!({"last_event": 0, "state_store": "memory", "version": "x", "config": null,
            "pools": {"app": {"versions": {"blue": {"backends": [], "effective_weight": 0, "in_flight": 0, "share_percent": 0.0, "weight": 0},
            "green": {"backends": [], "effective_weight": 0, "in_flight": 0, "share_percent": 0.0, "weight": 0},
            "grey": {"backends": [], "effective_weight": 0, "in_flight": 0, "share_percent": 0.0, "weight": 0}}}}})).unwrap();
        let w = switch_weights(&s, "app", "green").unwrap();
        assert_eq!(
            w,
            [
                ("blue".into(), 0),
                ("green".into(), 100),
                ("grey".into(), 0)
            ]
            .into()
        );
        assert!(switch_weights(&s, "app", "nope").is_err());
        assert!(switch_weights(&s, "nope", "green").is_err());
    }

    #[test]
    fn renders_state() {
        let s: StateView = serde_json::from_value(json!({"listeners": {"http": "127.0.0.1:80"}, "routes": [{"host": "a.test", "pool": "app", "tls": "none", "preview": false}],
            "last_event": 0, "state_store": "memory", "version": "x", "config": null,
            "pools": {"app": {"versions": {"blue": {"weight": 100, "effective_weight": 100, "share_percent": 100.0, "in_flight": 0,
            "backends": [{"addr": "127.0.0.1:1", "available": true, "ejected": false, "health": "up", "healthy": true, "in_flight": 0},
                {"addr": "127.0.0.1:2", "available": true, "ejected": false, "health": "unknown", "healthy": null, "in_flight": 0},
                {"addr": "127.0.0.1:3", "available": true, "ejected": false, "health": "up", "healthy": true, "in_flight": 8, "queued": 5}]}}}}})).unwrap();
        let out = render_state(&s);
        assert!(out.contains("a.test"));
        let s: StateView = serde_json::from_value(json!({"last_event": 0, "state_store": "memory", "version": "x", "config": null,
            "certificates": {"a.test": {"source": "acme", "not_after": "2030-01-01T00:00:00Z", "not_before": null, "not_after_unix": null,
            "serial": "01:02", "issuer": "CN=ca", "attempts": 3, "failures": 2, "consecutive_failures": 2, "rate_limited": 0,
            "last_error": "connection refused", "last_error_at": null, "last_success_at": null, "next_check": null, "renew_at": null}}})).unwrap();
        let certs = render_state(&s);
        assert!(
            certs.contains("certificates:") && certs.contains("01:02"),
            "{certs}"
        );
        assert!(certs.contains("last error: connection refused"), "{certs}");
        assert!(out.contains("127.0.0.1:1 up"));
        assert!(out.contains("127.0.0.1:2 unknown,"), "{out}");
        assert!(out.contains("127.0.0.1:3 up (5 queued)"), "{out}");
    }
}
