//! Runs parsed commands against the control layer and answers in JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use super::command::{AdminCommand, MAX_BODY};
use crate::control::Control;
use crate::model::api::{
    ErrorBody, EventsReply, MatchReply, ReloadReply, RemovedReply, RolloutStatus, StateView,
    StatsView, VersionReply, WeightsReply,
};
use crate::model::AdminError;
use crate::stats::Stats;
use crate::upstream::Backend;

/// What the API serves from: the control handle and the live figures.
#[derive(Clone)]
pub struct Api {
    pub control: Arc<Control>,
    pub stats: Arc<Stats>,
}

/// Every answer of the API, serialized as the inner type.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    State(Box<StateView>),
    Stats(StatsView),
    Weights(WeightsReply),
    Version(VersionReply),
    Removed(RemovedReply),
    Reload(ReloadReply),
    Events(EventsReply),
    Rollout(Box<RolloutStatus>),
    Match(MatchReply),
}

/// Runs a read on the blocking pool: big reads build large answers, which
/// must not hold up a runtime worker.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::Internal(format!("admin task failed: {e}")))?
}

/// Runs a change on the control thread ([`crate::memory::on_control`]):
/// changes fsync, and build tables that must live in the control's memory.
async fn change<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    crate::memory::control(f)
        .await
        .map_err(|_| AdminError::Internal("admin change failed (a panic; see the log)".into()))?
}

/// Runs a parsed command.
pub async fn dispatch(api: &Api, cmd: AdminCommand, who: String) -> Result<Reply, AdminError> {
    let c = api.control.clone();
    match cmd {
        AdminCommand::State { pool } => {
            if let Some(p) = &pool {
                if c.pool_weights(p).is_none() {
                    return Err(AdminError::UnknownPool(p.clone()));
                }
            }
            read(move || Ok(Reply::State(Box::new(c.state_view(pool.as_deref()))))).await
        }
        AdminCommand::Stats => {
            let stats = api.stats.clone();
            read(move || Ok(Reply::Stats(crate::stats::view(&stats, &c)))).await
        }
        AdminCommand::Events { since } => Ok(Reply::Events(EventsReply {
            events: c.events.since(since),
        })),
        AdminCommand::GetMatch { pool } => c.matches(&pool).map(Reply::Match),
        AdminCommand::SetMatch { pool, rules } => {
            change(move || c.set_matches(&pool, &rules, &who).map(Reply::Match)).await
        }
        AdminCommand::RolloutStatus { pool } => {
            c.rollout_status(&pool).map(|r| Reply::Rollout(Box::new(r)))
        }
        AdminCommand::RolloutStart { pool, request } => {
            change(move || {
                c.start_rollout(&pool, &request, &who)
                    .map(|r| Reply::Rollout(Box::new(r)))
            })
            .await
        }
        AdminCommand::RolloutAction { pool, action } => {
            change(move || {
                c.act_on_rollout(&pool, action, &who)
                    .map(|r| Reply::Rollout(Box::new(r)))
            })
            .await
        }
        AdminCommand::DeleteVersion { pool, version } => {
            delete_version(c, pool, version, who).await
        }
        AdminCommand::SetWeights {
            pool,
            weights,
            force,
        } => {
            change(move || {
                c.set_weights(&pool, &weights, force, &who)
                    .map(Reply::Weights)
            })
            .await
        }
        AdminCommand::PutVersion {
            pool,
            version,
            backends,
            weight,
            force,
        } => {
            change(move || {
                c.put_version(&pool, &version, &backends, weight, force, &who)
                    .map(Reply::Version)
            })
            .await
        }
        AdminCommand::Reload { force } => {
            change(move || c.reload(&who, force).map(Reply::Reload)).await
        }
    }
}

/// Removes a version, then waits (up to `shutdown_grace`) for its in-flight
/// requests to finish, and says whether they did.
async fn delete_version(
    c: Arc<Control>,
    pool: String,
    version: String,
    who: String,
) -> Result<Reply, AdminError> {
    // Keep the version's backends to watch them drain.
    let backends: Vec<Arc<Backend>> = c
        .table
        .load()
        .pools
        .get(pool.as_str())
        .and_then(|p| p.version(&version))
        .map(|v| v.backends.clone())
        .unwrap_or_default();
    let (c2, p, v) = (c.clone(), pool.clone(), version.clone());
    change(move || c2.delete_version(&p, &v, &who)).await?;
    let in_flight = |bs: &[Arc<Backend>]| -> usize {
        bs.iter().map(|b| b.in_flight.load(Ordering::Relaxed)).sum()
    };
    let deadline = tokio::time::Instant::now() + c.effective_config().server.shutdown_grace;
    while in_flight(&backends) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = in_flight(&backends);
    Ok(Reply::Removed(RemovedReply {
        drained: left == 0,
        in_flight: left,
        pool,
        removed: version,
    }))
}

/// A JSON response (pretty, with a final newline).
pub fn json_response(status: StatusCode, v: &impl Serialize) -> Response<Full<Bytes>> {
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

/// The response of a refusal.
pub fn error_response(e: &AdminError) -> Response<Full<Bytes>> {
    json_response(
        e.status(),
        &ErrorBody {
            error: e.to_string(),
        },
    )
}

/// Reads a request's body (at most [`MAX_BODY`]) and parses the command.
pub async fn read_command<B>(req: http::Request<B>) -> Result<AdminCommand, AdminError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let uri = req.uri().clone();
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| AdminError::PayloadTooLarge("body too large or unreadable".into()))?
        .to_bytes();
    AdminCommand::parse(method.as_str(), uri.path(), uri.query(), &body)
}

/// Reads, parses and dispatches one admin request.
pub async fn handle_request<B>(
    api: Api,
    who: String,
    req: http::Request<B>,
) -> Response<Full<Bytes>>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let result = match read_command(req).await {
        Ok(cmd) => dispatch(&api, cmd, who).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(reply) => json_response(StatusCode::OK, &reply),
        Err(e) => error_response(&e),
    }
}
