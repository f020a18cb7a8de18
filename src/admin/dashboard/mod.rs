//! The dashboard: one page and the admin API over loopback TCP.
//!
//! ```text
//! [admin] dashboard = "127.0.0.1:9091", token_file = "..." (0600)
//!
//! TcpListener ─> hyper http1 ─┬─ GET /, /dashboard.js, /dashboard.css, /favicon.svg  (embedded assets)
//!                             └─ /v1/... ─> bearer token (401) ─> AdminCommand::parse
//!                                         ─> is_change()? same-origin check (403)
//!                                         ─> admin::dispatch(who = "dashboard@<peer ip>")
//! ```
//!
//! There is no second implementation of the API: the dashboard parses and
//! dispatches exactly like the Unix socket. The page polls `GET /v1/state`,
//! `GET /v1/stats` (see [`stats`]) and the rollout status once a second.

pub mod auth;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::dispatch::{dispatch, error_response, json_response, read_command, Api};
use crate::config::AdminConfig;
use crate::listener::{self, Slots};
use crate::model::api::ErrorBody;

pub use auth::Token;

const INDEX_HTML: &str = include_str!("index.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard.css");
const FAVICON_SVG: &str = include_str!("favicon.svg");

/// How long a client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Dashboard connections served at once (more wait in the backlog).
const MAX_CONNECTIONS: usize = 64;

/// The page may load its own script and style and talk to its own origin;
/// nothing else, and nobody may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("admin.dashboard needs admin.token_file (a file with a random token, mode 0600)")]
    NoTokenFile,
    #[error("cannot read the dashboard token file {path}: {source}")]
    TokenRead {
        path: String,
        source: std::io::Error,
    },
    #[error("the dashboard token file {path} is not a regular file")]
    TokenNotAFile { path: String },
    #[error(
        "the dashboard token file {path} is readable or writable by group or others \
         (mode {mode:04o}); it must be 0600 or stricter: chmod 600 {path}"
    )]
    TokenMode { path: String, mode: u32 },
    #[error(
        "the dashboard token file {path} is empty; put a random token in it, \
         e.g. head -c 32 /dev/urandom | base64 > {path}"
    )]
    TokenEmpty { path: String },
    #[error(
        "the dashboard token in {path} is too short ({len} characters, at least 16); \
         use e.g. head -c 32 /dev/urandom | base64 > {path}"
    )]
    TokenShort { path: String, len: usize },
    #[error("the dashboard token in {path} must be one word of printable ASCII (no spaces)")]
    TokenChars { path: String },
    #[error(
        "admin.dashboard {addr} is not a loopback address; set admin.allow_remote = true \
         to serve it there (see the README first)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr} for the dashboard: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound dashboard listener and the token it requires.
pub struct Dashboard {
    listener: TcpListener,
    token: Arc<Token>,
    addr: SocketAddr,
}

impl Dashboard {
    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads the token and binds the listener when `admin.dashboard` is set.
/// Any problem with the token file is an error: the dashboard never serves
/// without a private, non-empty token.
pub async fn bind(admin: &AdminConfig) -> Result<Option<Dashboard>, DashboardError> {
    let Some(addr) = admin.dashboard else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && !admin.allow_remote {
        return Err(DashboardError::NotLoopback { addr });
    }
    let token = Token::load(&auth::token_path(admin)?)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind { addr, source })?;
    Ok(Some(Dashboard {
        listener,
        token: Arc::new(token),
        addr,
    }))
}

/// Serves the dashboard until `shutdown` changes.
pub async fn serve(
    api: Api,
    dashboard: Dashboard,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let Dashboard {
        listener, token, ..
    } = dashboard;
    let conn_shutdown = shutdown.clone();
    listener::serve(
        "dashboard",
        listener,
        Slots::new(MAX_CONNECTIONS),
        tracker,
        shutdown,
        move |stream, peer, permit| {
            let (api, token, shutdown) = (api.clone(), token.clone(), conn_shutdown.clone());
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    handle(api.clone(), token.clone(), peer, req)
                });
                listener::http1(stream, svc, HEADER_TIMEOUT, shutdown).await;
                drop(permit);
            }
        },
    )
    .await;
}

/// One dashboard request: an asset, or an API call behind the token.
pub async fn handle(
    api: Api,
    token: Arc<Token>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let mut resp = if path == "/v1" || path.starts_with("/v1/") {
        call(&api, &token, peer, req).await
    } else {
        asset(req.method(), path)
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    Ok(resp)
}

/// The embedded page and its files.
fn asset(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/dashboard.js" => (DASHBOARD_JS, "text/javascript; charset=utf-8"),
        "/dashboard.css" => (DASHBOARD_CSS, "text/css; charset=utf-8"),
        "/favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: the dashboard is at /, its API under /v1/\n",
            )
        }
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET here\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/v1/...`: token, parse, same-origin check for changes, dispatch.
async fn call(
    api: &Api,
    token: &Token,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !token.authorizes(req.headers()) {
        tracing::warn!(peer = %peer.ip(), method = %req.method(), path = %req.uri().path(), "dashboard API call without the right token refused");
        let body = ErrorBody {
            error:
                "missing or wrong token: send Authorization: Bearer <the token in admin.token_file>"
                    .into(),
        };
        let mut r = json_response(StatusCode::UNAUTHORIZED, &body);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"switchyard\""),
        );
        return r;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let origin = auth::check_same_origin(req.headers());
    let cmd = match read_command(req).await {
        Ok(cmd) => cmd,
        Err(e) => return error_response(&e),
    };
    if cmd.is_change() {
        if let Err(e) = origin {
            tracing::warn!(peer = %peer.ip(), %method, %path, error = %e, "dashboard change refused by the same-origin check");
            let body = ErrorBody {
                error: e.to_string(),
            };
            return json_response(StatusCode::FORBIDDEN, &body);
        }
    }
    match dispatch(api, cmd, format!("dashboard@{}", peer.ip())).await {
        Ok(reply) => json_response(StatusCode::OK, &reply),
        Err(e) => error_response(&e),
    }
}
