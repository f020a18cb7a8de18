//! `switchyard ctl`: a client of the admin socket, with human output.
//!
//! Each subcommand is one HTTP call (two for `switch`, which reads the pool's
//! versions first); `--json` prints the API's JSON as is for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;

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

/// One admin call: returns the JSON body of a 2xx answer.
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
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
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
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
    state: &Value,
    pool: &str,
    target: &str,
) -> Result<BTreeMap<String, u32>, CtlError> {
    let versions = state
        .pointer(&format!("/pools/{pool}/versions"))
        .and_then(Value::as_object)
        .ok_or_else(|| CtlError::Api {
            status: StatusCode::NOT_FOUND,
            message: format!("unknown pool {pool:?}"),
            body: Value::Null,
        })?;
    if !versions.contains_key(target) {
        return Err(CtlError::Api {
            status: StatusCode::NOT_FOUND,
            message: format!("pool {pool} has no version {target:?}"),
            body: Value::Null,
        });
    }
    Ok(versions
        .keys()
        .map(|v| (v.clone(), if v == target { 100 } else { 0 }))
        .collect())
}

/// Human rendering of `GET /v1/state`.
pub fn render_state(s: &Value) -> String {
    let mut out = String::new();
    if let Some(l) = s.get("listeners").and_then(Value::as_object) {
        let parts: Vec<String> = l
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("")))
            .collect();
        let _ = writeln!(out, "listening: {}", parts.join(", "));
    }
    if let Some(routes) = s.get("routes").and_then(Value::as_array) {
        let _ = writeln!(out, "routes:");
        for r in routes {
            let preview = if r["preview"].as_bool().unwrap_or(false) {
                " (preview)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<32} -> {:<12} tls={}{preview}",
                r["host"].as_str().unwrap_or(""),
                r["pool"].as_str().unwrap_or(""),
                r["tls"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(pools) = s.get("pools").and_then(Value::as_object) {
        for (name, p) in pools {
            let _ = writeln!(out, "pool {name}:");
            let _ = writeln!(
                out,
                "  {:<16} {:>7} {:>9} {:>7} {:>9}  backends",
                "version", "weight", "effective", "share", "in-flight"
            );
            if let Some(vs) = p["versions"].as_object() {
                for (v, d) in vs {
                    let backends: Vec<String> = d["backends"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|b| {
                                    let st = if b["available"].as_bool().unwrap_or(false) {
                                        "up"
                                    } else if b["ejected"].as_bool().unwrap_or(false) {
                                        "ejected"
                                    } else {
                                        "down"
                                    };
                                    format!("{} {st}", b["addr"].as_str().unwrap_or(""))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  {:<16} {:>7} {:>9} {:>6}% {:>9}  {}",
                        v,
                        d["weight"].to_string(),
                        d["effective_weight"].to_string(),
                        d["share_percent"].to_string(),
                        d["in_flight"].to_string(),
                        backends.join(", ")
                    );
                }
            }
        }
    }
    if let Some(certs) = s.get("certificates").and_then(Value::as_object) {
        if !certs.is_empty() {
            let _ = writeln!(out, "certificates:");
        }
        for (name, c) in certs {
            let text = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            let _ = writeln!(
                out,
                "  {name:<32} {:<5} not after {}  serial {}  issuer {}",
                text("source"),
                text("not_after"),
                text("serial"),
                text("issuer")
            );
            if c["source"] == "acme" {
                let _ = writeln!(
                    out,
                    "  {:<32}       renew at {}  next check {}  attempts {}  failures {} ({} in a row)",
                    "",
                    text("renew_at"),
                    text("next_check"),
                    c["attempts"],
                    c["failures"],
                    c["consecutive_failures"]
                );
            }
            if let Some(e) = c["last_error"].as_str() {
                let _ = writeln!(
                    out,
                    "  {:<32}       last error: {e} (at {})",
                    "",
                    text("last_error_at")
                );
            }
        }
    }
    out
}

/// Human rendering of `GET /v1/events`.
pub fn render_events(v: &Value) -> String {
    let mut out = String::new();
    for e in v["events"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "#{:<5} {} {:<12} {:<16} {}",
            e["seq"],
            e["time"].as_str().unwrap_or(""),
            e["who"].as_str().unwrap_or(""),
            e["kind"].as_str().unwrap_or(""),
            e["what"].as_str().unwrap_or("")
        );
    }
    out
}

/// Human rendering of a rollout status.
pub fn render_rollout(v: &Value) -> String {
    let mut out = String::new();
    let state = v["state"].as_str().unwrap_or("");
    let _ = writeln!(
        out,
        "rollout of {} in {} (stable {}): {state}, step {}/{} at {}%",
        v["canary"].as_str().unwrap_or(""),
        v["pool"].as_str().unwrap_or(""),
        v["stable"].as_str().unwrap_or(""),
        v["step_number"],
        v["steps_total"],
        v["percent"]
    );
    if state == "running" {
        let _ = writeln!(
            out,
            "  next judgement in {:.1}s",
            v["time_left_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        );
    }
    if let Some(j) = v.get("last").filter(|j| !j.is_null()) {
        let _ = writeln!(
            out,
            "  last judgement: {}: {}",
            j["verdict"].as_str().unwrap_or(""),
            j["reason"].as_str().unwrap_or("")
        );
        let f = |x: &Value, scale: f64, unit: &str| {
            x.as_f64()
                .map(|x| format!("{:.2}{unit}", x * scale))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            out,
            "    canary {} req, 5xx {}, p99 {} | stable {} req, 5xx {}, p99 {}",
            j["canary_requests"],
            f(&j["canary_error_rate"], 100.0, "%"),
            f(&j["canary_p99"], 1000.0, " ms"),
            j["stable_requests"],
            f(&j["stable_error_rate"], 100.0, "%"),
            f(&j["stable_p99"], 1000.0, " ms")
        );
    }
    if let Some(r) = v["reason"].as_str() {
        let _ = writeln!(out, "  {state}: {r}");
    }
    out
}

/// `rollout start --wait`: a live one-line progress on stderr until the
/// rollout ends; Ok when promoted, an error when rolled back.
pub async fn follow_rollout(socket: &Path, pool: &str) -> Result<String, CtlError> {
    use std::io::Write as _;
    let path = format!("/v1/pools/{pool}/rollout");
    loop {
        let v = call(socket, Method::GET, &path, None).await?;
        let state = v["state"].as_str().unwrap_or("").to_string();
        let last = v["last"]["verdict"].as_str().unwrap_or("-");
        let line = format!(
            "\r{pool}: {} {state} step {}/{} {}% next judgement {:.0}s last {last}   ",
            v["canary"].as_str().unwrap_or(""),
            v["step_number"],
            v["steps_total"],
            v["percent"],
            v["time_left_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        );
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        match state.as_str() {
            "promoted" => {
                let _ = writeln!(err);
                return Ok(render_rollout(&v));
            }
            "rolled_back" => {
                let _ = writeln!(err);
                return Err(CtlError::Api {
                    status: StatusCode::CONFLICT,
                    message: format!("rolled back: {}", v["reason"].as_str().unwrap_or("")),
                    body: v,
                });
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
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
        let s = json!({"pools": {"app": {"versions": {"blue": {}, "green": {}, "grey": {}}}}});
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
        let s = json!({"listeners": {"http": "127.0.0.1:80"}, "routes": [{"host": "a.test", "pool": "app", "tls": "none", "preview": false}],
            "pools": {"app": {"versions": {"blue": {"weight": 100, "effective_weight": 100, "share_percent": 100.0, "in_flight": 0,
            "backends": [{"addr": "127.0.0.1:1", "available": true}]}}}}});
        let out = render_state(&s);
        assert!(out.contains("a.test"));
        let s = json!({"certificates": {"a.test": {"source": "acme", "not_after": "2030-01-01T00:00:00Z",
            "serial": "01:02", "issuer": "CN=ca", "attempts": 3, "failures": 2, "consecutive_failures": 2,
            "last_error": "connection refused"}}});
        let certs = render_state(&s);
        assert!(
            certs.contains("certificates:") && certs.contains("01:02"),
            "{certs}"
        );
        assert!(certs.contains("last error: connection refused"), "{certs}");
        assert!(out.contains("127.0.0.1:1 up"));
    }
}
