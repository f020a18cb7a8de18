//! The admin API: HTTP/1.1 + JSON on a Unix socket (mode 0600).
//!
//! ```text
//! UnixStream (peer uid) ─> hyper http1 ─> AdminCommand::parse(method, path, query, body)
//!                                      ─> dispatch (blocking pool) ─> App method ─> JSON
//! ```
//!
//! Parsing is pure and fuzzed; every refusal is `{"error": "..."}` with 400,
//! 404 or 409. The same parse and dispatch serve the dashboard (`dashboard`),
//! which adds a bearer token and a same-origin check in front.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use crate::app::App;
use crate::error::AdminError;
use crate::upstream::Backend;

/// Largest admin request body.
pub const MAX_BODY: usize = 1 << 20;

/// One admin request, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCommand {
    State,
    /// `GET /v1/stats`: requests/s, 5xx rate and p99 per version over ~10 s.
    Stats,
    SetWeights {
        pool: String,
        weights: BTreeMap<String, u32>,
        force: bool,
    },
    PutVersion {
        pool: String,
        version: String,
        backends: Vec<String>,
        weight: Option<u32>,
    },
    DeleteVersion {
        pool: String,
        version: String,
    },
    RolloutStart {
        pool: String,
        body: Value,
    },
    RolloutStatus {
        pool: String,
    },
    RolloutAction {
        pool: String,
        action: RolloutAction,
    },
    Reload,
    Events {
        since: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
    Abort,
}

// === impl AdminCommand ===

impl AdminCommand {
    /// Parses a request. Never panics, whatever the input.
    pub fn parse(
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<AdminCommand, AdminError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let bad_method = || AdminError::BadRequest(format!("{method} is not allowed on {path}"));
        let q = |key: &str| {
            query
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        match segs.as_slice() {
            ["v1", "state"] => match method {
                "GET" => Ok(AdminCommand::State),
                _ => Err(bad_method()),
            },
            ["v1", "stats"] => match method {
                "GET" => Ok(AdminCommand::Stats),
                _ => Err(bad_method()),
            },
            ["v1", "reload"] => match method {
                "POST" => Ok(AdminCommand::Reload),
                _ => Err(bad_method()),
            },
            ["v1", "events"] => match method {
                "GET" => {
                    let since = match q("since") {
                        None => 0,
                        Some(s) => s.parse().map_err(|_| {
                            AdminError::BadRequest(format!("since must be a number, not {s:?}"))
                        })?,
                    };
                    Ok(AdminCommand::Events { since })
                }
                _ => Err(bad_method()),
            },
            ["v1", "pools", pool, "weights"] => match method {
                "PUT" => {
                    let force = match q("force") {
                        None | Some("false") | Some("0") => false,
                        Some("true") | Some("1") | Some("") => true,
                        Some(v) => {
                            return Err(AdminError::BadRequest(format!(
                                "force must be true or false, not {v:?}"
                            )))
                        }
                    };
                    Ok(AdminCommand::SetWeights {
                        pool: pool.to_string(),
                        weights: parse_weights(body)?,
                        force,
                    })
                }
                _ => Err(bad_method()),
            },
            ["v1", "pools", pool, "versions", version] => match method {
                "PUT" => {
                    let v = json_object(body)?;
                    for k in v.keys() {
                        if k != "backends" && k != "weight" {
                            return Err(AdminError::BadRequest(format!(
                                "unknown field {k:?} (expected backends, weight)"
                            )));
                        }
                    }
                    let backends = match v.get("backends") {
                        Some(Value::Array(a)) => a
                            .iter()
                            .map(|b| {
                                b.as_str().map(str::to_string).ok_or_else(|| {
                                    AdminError::BadRequest(
                                        "backends must be strings \"host:port\"".into(),
                                    )
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        _ => {
                            return Err(AdminError::BadRequest(
                                "backends must be a list of \"host:port\"".into(),
                            ))
                        }
                    };
                    let weight = match v.get("weight") {
                        None => None,
                        Some(w) => Some(weight_value("weight", w)?),
                    };
                    Ok(AdminCommand::PutVersion {
                        pool: pool.to_string(),
                        version: version.to_string(),
                        backends,
                        weight,
                    })
                }
                "DELETE" => Ok(AdminCommand::DeleteVersion {
                    pool: pool.to_string(),
                    version: version.to_string(),
                }),
                _ => Err(bad_method()),
            },
            ["v1", "pools", pool, "rollout"] => match method {
                "POST" => {
                    let body = if body.iter().all(u8::is_ascii_whitespace) {
                        json!({})
                    } else {
                        Value::Object(json_object(body)?)
                    };
                    Ok(AdminCommand::RolloutStart {
                        pool: pool.to_string(),
                        body,
                    })
                }
                "GET" => Ok(AdminCommand::RolloutStatus {
                    pool: pool.to_string(),
                }),
                _ => Err(bad_method()),
            },
            ["v1", "pools", pool, "rollout", action] => {
                if method != "POST" {
                    return Err(bad_method());
                }
                let action = match *action {
                    "pause" => RolloutAction::Pause,
                    "resume" => RolloutAction::Resume,
                    "promote" => RolloutAction::Promote,
                    "abort" => RolloutAction::Abort,
                    other => {
                        return Err(AdminError::NotFound(format!(
                            "unknown rollout action {other:?}"
                        )))
                    }
                };
                Ok(AdminCommand::RolloutAction {
                    pool: pool.to_string(),
                    action,
                })
            }
            _ => Err(AdminError::NotFound(format!(
                "no such endpoint: {method} {path}"
            ))),
        }
    }

    /// Whether the command changes anything (for the dashboard's CSRF check).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            AdminCommand::State
                | AdminCommand::Stats
                | AdminCommand::Events { .. }
                | AdminCommand::RolloutStatus { .. }
        )
    }
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, AdminError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AdminError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(AdminError::BadRequest(format!("bad JSON: {e}"))),
    }
}

fn weight_value(name: &str, v: &Value) -> Result<u32, AdminError> {
    match v.as_i64() {
        Some(w) if w < 0 => Err(AdminError::BadRequest(format!(
            "weight of {name} is negative"
        ))),
        Some(w) if w > i64::from(crate::config::MAX_WEIGHT) => Err(AdminError::BadRequest(
            format!("weight of {name} is too large"),
        )),
        Some(w) => Ok(w as u32),
        None => Err(AdminError::BadRequest(format!(
            "weight of {name} must be a whole number"
        ))),
    }
}

/// `{"blue":0,"green":100}`.
pub fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, AdminError> {
    let m = json_object(body)?;
    m.iter()
        .map(|(k, v)| Ok((k.clone(), weight_value(k, v)?)))
        .collect()
}

/// Runs a parsed command against the app.
pub async fn dispatch(app: &Arc<App>, cmd: AdminCommand, who: String) -> Result<Value, AdminError> {
    match cmd {
        AdminCommand::State => Ok(app.state_json()),
        AdminCommand::Stats => Ok(crate::dashboard::stats::stats_json(app)),
        AdminCommand::Events { since } => Ok(json!({ "events": app.events.since(since) })),
        AdminCommand::RolloutStatus { pool } => crate::rollout::status(app, &pool),
        AdminCommand::RolloutStart { pool, body } => {
            let app = app.clone();
            tokio::task::spawn_blocking(move || crate::rollout::start(&app, &pool, &body, &who))
                .await
                .map_err(|e| AdminError::Internal(format!("admin task failed: {e}")))?
        }
        AdminCommand::RolloutAction { pool, action } => {
            let app = app.clone();
            tokio::task::spawn_blocking(move || crate::rollout::act(&app, &pool, action, &who))
                .await
                .map_err(|e| AdminError::Internal(format!("admin task failed: {e}")))?
        }
        AdminCommand::DeleteVersion { pool, version } => {
            // Keep the version's backends to watch them drain.
            let backends: Vec<Arc<Backend>> = app
                .table
                .load()
                .pools
                .get(&pool)
                .and_then(|p| p.version(&version))
                .map(|v| v.backends.clone())
                .unwrap_or_default();
            let a = app.clone();
            let (p, v) = (pool.clone(), version.clone());
            let mut reply = tokio::task::spawn_blocking(move || a.delete_version(&p, &v, &who))
                .await
                .map_err(|e| AdminError::Internal(format!("admin task failed: {e}")))??;
            let grace = app.effective_config().server.shutdown_grace;
            let in_flight = |bs: &[Arc<Backend>]| -> usize {
                bs.iter()
                    .map(|b| b.in_flight.load(std::sync::atomic::Ordering::Relaxed))
                    .sum()
            };
            let deadline = tokio::time::Instant::now() + grace;
            while in_flight(&backends) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let left = in_flight(&backends);
            reply["drained"] = json!(left == 0);
            reply["in_flight"] = json!(left);
            Ok(reply)
        }
        change => {
            let app = app.clone();
            tokio::task::spawn_blocking(move || match change {
                AdminCommand::SetWeights {
                    pool,
                    weights,
                    force,
                } => app.set_weights(&pool, &weights, force, &who),
                AdminCommand::PutVersion {
                    pool,
                    version,
                    backends,
                    weight,
                } => app.put_version(&pool, &version, &backends, weight, &who),
                AdminCommand::Reload => app.reload(&who),
                _ => Err(AdminError::Internal("not a change".into())),
            })
            .await
            .map_err(|e| AdminError::Internal(format!("admin task failed: {e}")))?
        }
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads, parses and dispatches one admin request.
pub async fn handle(
    app: Arc<App>,
    who: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({ "error": "body too large or unreadable" }),
            ))
        }
    };
    let result = match AdminCommand::parse(method.as_str(), &path, query.as_deref(), &body) {
        Ok(cmd) => dispatch(&app, cmd, who).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => json_response(e.status(), &json!({ "error": e.to_string() })),
    })
}

/// Binds the admin socket: any stale socket removed, created under a temp
/// name, set to 0600, then renamed into place, so no client ever sees it with
/// looser permissions.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp: PathBuf = {
        let mut n = path.as_os_str().to_owned();
        n.push(format!(".{}.tmp", std::process::id()));
        n.into()
    };
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Serves the admin socket until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: UnixListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let who = match stream.peer_cred() {
            Ok(c) => format!("uid:{}", c.uid()),
            Err(_) => "admin".to_string(),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(app.clone(), who.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_endpoint() {
        assert_eq!(
            AdminCommand::parse("GET", "/v1/state", None, b""),
            Ok(AdminCommand::State)
        );
        assert_eq!(
            AdminCommand::parse("GET", "/v1/stats", None, b""),
            Ok(AdminCommand::Stats)
        );
        assert!(!AdminCommand::Stats.is_change());
        assert_eq!(
            AdminCommand::parse("POST", "/v1/stats", None, b"")
                .unwrap_err()
                .status(),
            400
        );
        let w = AdminCommand::parse(
            "PUT",
            "/v1/pools/app/weights",
            Some("force=true"),
            br#"{"blue":0,"green":100}"#,
        )
        .unwrap();
        assert_eq!(
            w,
            AdminCommand::SetWeights {
                pool: "app".into(),
                weights: [("blue".into(), 0), ("green".into(), 100)].into(),
                force: true
            }
        );
        let v = AdminCommand::parse(
            "PUT",
            "/v1/pools/app/versions/v2",
            None,
            br#"{"backends":["127.0.0.1:1"]}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            AdminCommand::PutVersion {
                pool: "app".into(),
                version: "v2".into(),
                backends: vec!["127.0.0.1:1".into()],
                weight: None
            }
        );
        assert_eq!(
            AdminCommand::parse("DELETE", "/v1/pools/app/versions/v2", None, b""),
            Ok(AdminCommand::DeleteVersion {
                pool: "app".into(),
                version: "v2".into()
            })
        );
        assert_eq!(
            AdminCommand::parse("GET", "/v1/events", Some("since=7"), b""),
            Ok(AdminCommand::Events { since: 7 })
        );
        assert_eq!(
            AdminCommand::parse("POST", "/v1/reload", None, b""),
            Ok(AdminCommand::Reload)
        );
        assert_eq!(
            AdminCommand::parse("POST", "/v1/pools/app/rollout/abort", None, b""),
            Ok(AdminCommand::RolloutAction {
                pool: "app".into(),
                action: RolloutAction::Abort
            })
        );
        assert!(matches!(
            AdminCommand::parse(
                "POST",
                "/v1/pools/app/rollout",
                None,
                br#"{"canary":"green"}"#
            ),
            Ok(AdminCommand::RolloutStart { .. })
        ));
    }

    #[test]
    fn refuses_bad_input_with_the_right_status() {
        let st = |m: &str, p: &str, q: Option<&str>, b: &[u8]| {
            AdminCommand::parse(m, p, q, b).unwrap_err().status()
        };
        assert_eq!(st("PUT", "/v1/pools/app/weights", None, b"{bad"), 400);
        assert_eq!(
            st("PUT", "/v1/pools/app/weights", None, br#"{"blue":-1}"#),
            400
        );
        assert_eq!(
            st("PUT", "/v1/pools/app/weights", None, br#"{"blue":1.5}"#),
            400
        );
        assert_eq!(st("PUT", "/v1/pools/app/weights", None, br#"[1]"#), 400);
        assert_eq!(
            st(
                "PUT",
                "/v1/pools/app/weights",
                Some("force=maybe"),
                br#"{"blue":1}"#
            ),
            400
        );
        assert_eq!(
            st(
                "PUT",
                "/v1/pools/app/versions/v",
                None,
                br#"{"backends":"x"}"#
            ),
            400
        );
        assert_eq!(
            st(
                "PUT",
                "/v1/pools/app/versions/v",
                None,
                br#"{"backends":[],"extra":1}"#
            ),
            400
        );
        assert_eq!(st("GET", "/v1/events", Some("since=x"), b""), 400);
        assert_eq!(st("DELETE", "/v1/state", None, b""), 400);
        assert_eq!(st("GET", "/nope", None, b""), 404);
        assert_eq!(st("POST", "/v1/pools/app/rollout/explode", None, b""), 404);
    }
}
