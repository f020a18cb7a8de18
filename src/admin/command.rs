//! Admin requests, parsed: method, path, query and body to one typed
//! [`AdminCommand`]. Pure and fuzzed: never panics, whatever the input.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::config::MAX_WEIGHT;
use crate::model::api::{RolloutRequest, VersionRequest};
use crate::model::rollout::RolloutAction;
use crate::model::AdminError;

/// Largest admin request body.
pub const MAX_BODY: usize = 1 << 20;

/// One admin request, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCommand {
    /// `GET /v1/state[?pool=P]`.
    State {
        pool: Option<String>,
    },
    /// `GET /v1/stats`: requests/s, 5xx rate and p99 per version over ~10 s.
    Stats,
    SetWeights {
        pool: String,
        weights: BTreeMap<String, u32>,
        force: bool,
    },
    /// `PUT /v1/pools/{pool}/versions/{v}[?force=true]`.
    PutVersion {
        pool: String,
        version: String,
        backends: Vec<String>,
        weight: Option<u32>,
        /// Abort the pool's active rollout first when the weight changes.
        force: bool,
    },
    DeleteVersion {
        pool: String,
        version: String,
    },
    /// `GET /v1/pools/{pool}/match`.
    GetMatch {
        pool: String,
    },
    /// `PUT /v1/pools/{pool}/match`: the whole list of version rules.
    SetMatch {
        pool: String,
        rules: Vec<crate::rules::VersionMatchSpec>,
    },
    RolloutStart {
        pool: String,
        request: Box<RolloutRequest>,
    },
    RolloutStatus {
        pool: String,
    },
    RolloutAction {
        pool: String,
        action: RolloutAction,
    },
    /// `POST /v1/reload[?force=true]`.
    Reload {
        force: bool,
    },
    Events {
        since: u64,
    },
}

/// The query string's parameters (percent-decoded); the first of a repeated
/// key wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `force`, `force=true|1` or absent/`false|0`.
    fn flag(&self, key: &str) -> Result<bool, AdminError> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(v) => Err(AdminError::BadRequest(format!(
                "{key} must be true or false, not {v:?}"
            ))),
        }
    }
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
        let q = Query::parse(query);
        let bad_method = || AdminError::BadRequest(format!("{method} is not allowed on {path}"));
        match (segs.as_slice(), method) {
            (["v1", "state"], "GET") => Ok(AdminCommand::State {
                pool: q.get("pool").map(str::to_string),
            }),
            (["v1", "stats"], "GET") => Ok(AdminCommand::Stats),
            (["v1", "reload"], "POST") => Ok(AdminCommand::Reload {
                force: q.flag("force")?,
            }),
            (["v1", "events"], "GET") => Ok(AdminCommand::Events {
                since: parse_since(q.get("since"))?,
            }),
            (["v1", "pools", pool, "weights"], "PUT") => Ok(AdminCommand::SetWeights {
                pool: pool.to_string(),
                weights: parse_weights(body)?,
                force: q.flag("force")?,
            }),
            (["v1", "pools", pool, "versions", version], "PUT") => {
                let v: VersionRequest = json_body(body)?;
                if v.weight.is_some_and(|w| w > MAX_WEIGHT) {
                    return Err(AdminError::BadRequest(format!(
                        "weight is above {MAX_WEIGHT}"
                    )));
                }
                Ok(AdminCommand::PutVersion {
                    pool: pool.to_string(),
                    version: version.to_string(),
                    backends: v.backends,
                    weight: v.weight,
                    force: q.flag("force")?,
                })
            }
            (["v1", "pools", pool, "versions", version], "DELETE") => {
                Ok(AdminCommand::DeleteVersion {
                    pool: pool.to_string(),
                    version: version.to_string(),
                })
            }
            (["v1", "pools", pool, "match"], "GET") => Ok(AdminCommand::GetMatch {
                pool: pool.to_string(),
            }),
            (["v1", "pools", pool, "match"], "PUT") => Ok(AdminCommand::SetMatch {
                pool: pool.to_string(),
                rules: parse_match_rules(body)?,
            }),
            (["v1", "pools", pool, "rollout"], "POST") => Ok(AdminCommand::RolloutStart {
                pool: pool.to_string(),
                request: Box::new(if body.iter().all(u8::is_ascii_whitespace) {
                    RolloutRequest::default()
                } else {
                    json_body(body)?
                }),
            }),
            (["v1", "pools", pool, "rollout"], "GET") => Ok(AdminCommand::RolloutStatus {
                pool: pool.to_string(),
            }),
            (["v1", "pools", pool, "rollout", action], "POST") => Ok(AdminCommand::RolloutAction {
                pool: pool.to_string(),
                action: parse_action(action)?,
            }),
            (["v1", "pools", _, "rollout", action], _) if parse_action(action).is_err() => {
                Err(parse_action(action).unwrap_err())
            }
            (
                ["v1", "state" | "stats" | "reload" | "events"]
                | ["v1", "pools", _, "weights" | "rollout" | "match"]
                | ["v1", "pools", _, "versions", _]
                | ["v1", "pools", _, "rollout", _],
                _,
            ) => Err(bad_method()),
            _ => Err(AdminError::NotFound(format!(
                "no such endpoint: {method} {path}"
            ))),
        }
    }

    /// Whether the command changes anything (for the dashboard's CSRF check).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            AdminCommand::State { .. }
                | AdminCommand::Stats
                | AdminCommand::Events { .. }
                | AdminCommand::RolloutStatus { .. }
                | AdminCommand::GetMatch { .. }
        )
    }
}

fn parse_action(action: &str) -> Result<RolloutAction, AdminError> {
    match action {
        "pause" => Ok(RolloutAction::Pause),
        "resume" => Ok(RolloutAction::Resume),
        "promote" => Ok(RolloutAction::Promote),
        "abort" => Ok(RolloutAction::Abort),
        other => Err(AdminError::NotFound(format!(
            "unknown rollout action {other:?}"
        ))),
    }
}

fn parse_since(v: Option<&str>) -> Result<u64, AdminError> {
    match v {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| AdminError::BadRequest(format!("since must be a number, not {s:?}"))),
    }
}

/// A JSON object body as `T`; anything else is a 400 saying why.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => {
            return Err(AdminError::BadRequest(
                "the body must be a JSON object".into(),
            ))
        }
        Err(e) => return Err(AdminError::BadRequest(format!("bad JSON: {e}"))),
    }
    serde_json::from_slice(body).map_err(|e| AdminError::BadRequest(format!("bad body: {e}")))
}

/// `[{"header":"X-Beta","value":"1","version":"green"}, ...]`: a JSON
/// array of version rules (checked again by the control layer).
pub fn parse_match_rules(body: &[u8]) -> Result<Vec<crate::rules::VersionMatchSpec>, AdminError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(_)) => {}
        Ok(_) => {
            return Err(AdminError::BadRequest(
                "the body must be a JSON array of rules ([] for none)".into(),
            ))
        }
        Err(e) => return Err(AdminError::BadRequest(format!("bad JSON: {e}"))),
    }
    serde_json::from_slice(body).map_err(|e| AdminError::BadRequest(format!("bad rule: {e}")))
}

/// `{"blue":0,"green":100}`: whole numbers from 0 to MAX_WEIGHT.
pub fn parse_weights(body: &[u8]) -> Result<BTreeMap<String, u32>, AdminError> {
    let m: BTreeMap<String, serde_json::Value> = json_body(body)?;
    m.into_iter()
        .map(|(k, v)| {
            let w = match v.as_i64() {
                Some(w) if w < 0 => Err(format!("weight of {k} is negative")),
                Some(w) if w > i64::from(MAX_WEIGHT) => Err(format!("weight of {k} is too large")),
                Some(w) => Ok(w as u32),
                None => Err(format!("weight of {k} must be a whole number")),
            };
            w.map(|w| (k, w)).map_err(AdminError::BadRequest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_endpoint() {
        assert_eq!(
            AdminCommand::parse("GET", "/v1/state", None, b""),
            Ok(AdminCommand::State { pool: None })
        );
        assert_eq!(
            AdminCommand::parse("GET", "/v1/state", Some("pool=a%20b"), b""),
            Ok(AdminCommand::State {
                pool: Some("a b".into())
            })
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
                weight: None,
                force: false,
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
            Ok(AdminCommand::Reload { force: false })
        );
        assert_eq!(
            AdminCommand::parse("POST", "/v1/reload", Some("force=true"), b""),
            Ok(AdminCommand::Reload { force: true })
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
