//! The request path: route, pick, forward, answer.
//!
//! ```text
//! request ─> table = control.table.load_full()        (one atomic; the whole request uses it)
//!         ─> host (authority or Host) ─> Route    (404 when none, 400 without Host)
//!         ─> Pool::pick (pin / preview / sticky / weighted) ─> Version
//!         ─> Version::pick_backend (round robin over available backends)
//!         ─> Backend::checkout (pooled, else connect) ─> send ─> response head
//!         ─> stream the body back; the connection returns to the pool at its end
//! ```
//!
//! Failures map to statuses in one place, [`ProxyError::status`]: unreachable
//! 502, timed out 504, no available version 503. A request that never reached a
//! backend (connect failure, or a pooled connection found closed before
//! anything was written) is retried on another backend, preferring the same
//! version; one that reached it is retried only when idempotent and bodiless
//! (a small response body is read whole before the head is answered, so a
//! backend dying inside it counts as such a failure).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::Histogram;
use std::time::{Instant, SystemTime};

use crate::accesslog::{AccessLog, Entry};

use crate::balance::sticky_bucket;
use crate::config::{OnAllDown, Sticky, TlsMode};
use crate::control::Control;
use crate::host::MAX_HOST_LEN;
use crate::routing::{Limits, Pick, Pool, Route, RoutingTable, Version};
use crate::tls::Sni;
use crate::upstream::h1::{self, ExchangeError, RawBody};
use crate::upstream::{Backend, ClientBody, Conn, ConnectError, QueueTimeout, Slot, UpBody};

mod middlewares;
pub mod request;
use request::{join_cookies, request_host, vet};

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host header")]
    NoHost,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("CONNECT is not proxied")]
    MethodNotAllowed,
    /// The client's request body failed (malformed framing, the client gone
    /// mid-upload): the client's fault, never the backend's.
    #[error("pool {0}: the request body from the client failed")]
    ClientBody(Arc<str>),
    /// The upload was still waiting for the client at `request_timeout`.
    #[error("pool {0}: the client's upload stalled")]
    ClientTimeout(Arc<str>),
    #[error("no route for host")]
    NoRoute,
    #[error("host does not match the TLS server name of this connection")]
    Misdirected,
    #[error("pool {0}: no healthy version")]
    NoHealthyVersion(Arc<str>),
    /// The pin header or a preview host named this version, and it has no
    /// available backend (or none of them could be reached).
    #[error("pool {pool}: version {version} has no available backend")]
    VersionDown { pool: Arc<str>, version: Arc<str> },
    /// The pin header names no version of the pool.
    #[error("pool {pool} has no version {version:?}")]
    UnknownVersion { pool: Arc<str>, version: Arc<str> },
    /// A preview host of a pool with nothing to preview.
    #[error("pool {0} has no version to preview (no rollout canary, no version at weight 0)")]
    NoPreview(Arc<str>),
    #[error("pool {pool}: backend {backend} unreachable: {source}")]
    Connect {
        pool: Arc<str>,
        backend: Arc<str>,
        source: ConnectError,
    },
    #[error("pool {pool}: backend {backend} timed out")]
    Timeout { pool: Arc<str>, backend: Arc<str> },
    /// Every backend connection allowed (`max_connections_per_backend`)
    /// stayed busy for the queue timeout.
    #[error("pool {0}: every backend connection is busy")]
    Busy(Arc<str>),
    #[error("pool {pool}: backend {backend} failed: {source}")]
    Upstream {
        pool: Arc<str>,
        backend: Arc<str>,
        source: hyper::Error,
    },
    #[error("pool {pool}: backend {backend} failed: {source}")]
    Exchange {
        pool: Arc<str>,
        backend: Arc<str>,
        source: ExchangeError,
    },
}

// === impl ProxyError ===

impl ProxyError {
    /// The status a client sees. Exhaustive on purpose: a new error kind must
    /// choose its status here.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHost | ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoRoute | ProxyError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoHealthyVersion(_)
            | ProxyError::VersionDown { .. }
            | ProxyError::NoPreview(_)
            | ProxyError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect {
                source: ConnectError::Timeout,
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Connect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } | ProxyError::Exchange { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The error kind label for upstream error metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoHost
            | ProxyError::NoRoute
            | ProxyError::Misdirected
            | ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::ClientBody(_)
            | ProxyError::ClientTimeout(_)
            | ProxyError::UnknownVersion { .. } => "client",
            ProxyError::NoHealthyVersion(_)
            | ProxyError::VersionDown { .. }
            | ProxyError::NoPreview(_) => "unavailable",
            ProxyError::Connect {
                source: ConnectError::Timeout,
                ..
            } => "connect_timeout",
            ProxyError::Connect { .. } => "connect",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::Busy(_) => "queue_timeout",
            ProxyError::Upstream { .. } | ProxyError::Exchange { .. } => "reset",
        }
    }

    fn response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("");
        let body = match self {
            ProxyError::NoHost
            | ProxyError::NoRoute
            | ProxyError::Misdirected
            | ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed
            | ProxyError::ClientBody(_)
            | ProxyError::ClientTimeout(_)
            | ProxyError::VersionDown { .. }
            | ProxyError::UnknownVersion { .. }
            | ProxyError::NoPreview(_)
            | ProxyError::Busy(_) => {
                format!("{} {reason}: {self}\n", status.as_u16())
            }
            // Name the pool; keep backend addresses out of public answers.
            ProxyError::NoHealthyVersion(p) => format!(
                "{} {reason}: pool {p} has no healthy version\n",
                status.as_u16()
            ),
            ProxyError::Connect { pool, .. } => format!(
                "{} {reason}: pool {pool}: upstream unreachable\n",
                status.as_u16()
            ),
            ProxyError::Timeout { pool, .. } => format!(
                "{} {reason}: pool {pool}: upstream timed out\n",
                status.as_u16()
            ),
            ProxyError::Upstream { pool, .. } | ProxyError::Exchange { pool, .. } => format!(
                "{} {reason}: pool {pool}: upstream failed\n",
                status.as_u16()
            ),
        };
        let mut r = plain(status, body);
        match self {
            ProxyError::MethodNotAllowed => {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(request::ALLOW));
                // A CONNECT client may already be sending its tunnel's
                // bytes, which must not be read as the next request.
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // Overloaded: a client may come back in a moment.
            ProxyError::Busy(_) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The rest of the body is not read: the connection ends here.
            ProxyError::ClientBody(_) | ProxyError::ClientTimeout(_) => {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        r
    }
}

/// A plain-text response.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

// ---------------------------------------------------------------------------
// Bodies.

/// The body of every response the proxy sends: a backend's streamed body
/// (through hyper's client, or read directly, see [`crate::upstream::h1`]), or a small
/// body of our own.
pub enum ProxyBody {
    Upstream {
        body: Incoming,
        /// The connection, back to the pool at a clean end (with `finish`
        /// only). Here, not in [`Finish`], which the direct exchange's
        /// bodies carry too: a response moves through every layer of the
        /// request path, and 32 bytes fewer move each time.
        sender: Option<Conn>,
        finish: Option<Finish>,
    },
    Direct {
        body: RawBody,
        finish: Option<Finish>,
    },
    Full(Option<Bytes>),
    /// Compressed as it streams (the `compress` middleware).
    Encoded(Box<middlewares::Encoded>),
}

pub use crate::upstream::RequestBody;

/// Any error a response body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What happens when an upstream body ends: the connection goes back to the
/// pool, the in-flight count goes down. Dropped early (client gone), the
/// connection is closed instead of reused.
pub struct Finish {
    backend: Arc<Backend>,
    /// The whole-response histogram and the request's arrival.
    observe: Option<(Histogram, Instant)>,
    /// Body bytes passed to the client so far.
    bytes: u64,
    /// The access log line to write when the response ends.
    log: Option<Box<PendingLog>>,
    /// Under a connection cap: freed last, after the connection went back
    /// to the idle stack, so that the next queued request reuses it.
    slot: Option<Slot>,
}

impl Finish {
    fn new(backend: Arc<Backend>) -> Finish {
        Finish {
            backend,
            observe: None,
            bytes: 0,
            log: None,
            slot: None,
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some((h, start)) = self.observe.take() {
            h.observe(start.elapsed().as_secs_f64());
        }
        if let Some(p) = self.log.take() {
            p.write(self.bytes);
        }
    }
}

/// What the access log needs from a request, kept until its response ends.
/// Cheap clones only (the table's `Arc`, the URI's and Host's shared bytes):
/// the line is formatted once, when it is written.
struct PendingLog {
    log: AccessLog,
    table: Arc<RoutingTable>,
    route: Option<usize>,
    version: Option<usize>,
    backend: Option<Arc<Backend>>,
    time: SystemTime,
    start: Instant,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    proto: &'static str,
    host: Option<HeaderValue>,
    status: u16,
}

impl PendingLog {
    fn write(&self, bytes: u64) {
        let route = self.route.and_then(|i| self.table.routes().get(i));
        let version = route
            .zip(self.version)
            .and_then(|(r, v)| r.pool.versions.get(v));
        self.log.log(&Entry {
            time: self.time,
            client: self.client,
            method: self.method.as_str(),
            path: self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            proto: self.proto,
            status: self.status,
            bytes,
            duration: self.start.elapsed(),
            host: self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
            route: route.map(|r| &*r.label).unwrap_or(""),
            pool: route.map(|r| &*r.pool.name).unwrap_or(""),
            version: version.map(|v| &*v.name).unwrap_or(""),
            backend: self
                .backend
                .as_ref()
                .map(|b| b.key.addr.as_str())
                .unwrap_or(""),
        });
    }
}

impl Drop for ProxyBody {
    /// A body that ended without being polled to its end (a 204, hyper
    /// stopping once `is_end_stream` said so, or a client gone while the
    /// whole rest sat in the buffer) still hands its connection back.
    fn drop(&mut self) {
        match self {
            ProxyBody::Upstream {
                body,
                sender,
                finish: Some(f),
            } if body.is_end_stream() => {
                if let Some(s) = sender.take() {
                    f.backend.checkin(s);
                }
            }
            ProxyBody::Direct {
                body,
                finish: Some(f),
            } => {
                if let Some(c) = body.take_idle_discarding_rest() {
                    f.backend.checkin_raw(c);
                }
            }
            _ => {}
        }
    }
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(b.into()))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    /// A direct exchange's response fields, when they were left as the
    /// backend sent them (`Peer::raw_fields`): the response's header map
    /// is then empty, and the writer writes these.
    pub fn take_raw_fields(&mut self) -> Option<crate::upstream::h1::RawFields> {
        match self {
            ProxyBody::Direct { body, .. } => body.take_fields(),
            _ => None,
        }
    }

    /// What happens at the end of a backend's body, when this is one.
    fn finish_mut(&mut self) -> Option<&mut Finish> {
        match self {
            ProxyBody::Upstream { finish, .. } | ProxyBody::Direct { finish, .. } => {
                finish.as_mut()
            }
            ProxyBody::Encoded(e) => e.inner.finish_mut(),
            ProxyBody::Full(_) => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Encoded(e) => e.poll(cx),
            ProxyBody::Direct { body, finish } => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(f), Some(data)) = (finish.as_mut(), frame.data_ref()) {
                            f.bytes += data.len() as u64;
                        }
                    }
                    // Broken mid-body: the connection is dropped, not reused.
                    Poll::Ready(Some(Err(_))) => drop(finish.take()),
                    _ => {}
                }
                if body.is_end_stream() {
                    if let Some(f) = finish.take() {
                        if let Some(c) = body.take_idle() {
                            f.backend.checkin_raw(c);
                        }
                    }
                }
                r.map(|o| o.map(|r| r.map_err(Into::into)))
            }
            ProxyBody::Upstream {
                body,
                sender,
                finish,
            } => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(f), Some(data)) = (finish.as_mut(), frame.data_ref()) {
                            f.bytes += data.len() as u64;
                        }
                        // hyper may stop polling once the body says it has
                        // ended, so the end is seen here too.
                        body.is_end_stream()
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The backend broke mid-body: do not reuse.
                        *sender = None;
                        finish.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if ended {
                    if let Some(f) = finish.take() {
                        if let Some(s) = sender.take() {
                            f.backend.checkin(s);
                        }
                    }
                }
                r.map(|o| o.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Encoded(e) => e.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Direct { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Encoded(_) => SizeHint::default(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Direct { body, .. } => body.size_hint(),
        }
    }
}

// ---------------------------------------------------------------------------
// The service.

/// What the listener knows about a connection.
#[derive(Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub https: bool,
    /// The connection's writer takes a direct exchange's response fields
    /// as the backend sent them ([`crate::upstream::h1::RawFields`]; the
    /// direct HTTP/1.1 server): a response that nothing here changes then
    /// skips the header map both ways.
    pub raw_fields: bool,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// The proxy service: the control handle and what only the request path
/// uses.
pub struct Proxy {
    pub control: Arc<Control>,
    /// The access log, when configured.
    access_log: Option<AccessLog>,
    /// Seeds sticky keys handed out in cookies.
    sticky_seed: std::collections::hash_map::RandomState,
    sticky_counter: std::sync::atomic::AtomicU64,
}

impl Proxy {
    pub fn new(control: Arc<Control>, access_log: Option<AccessLog>) -> Proxy {
        Proxy {
            control,
            access_log,
            sticky_seed: Default::default(),
            sticky_counter: Default::default(),
        }
    }

    /// A fresh random key for a sticky cookie.
    fn new_sticky_key(&self) -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.sticky_seed.build_hasher();
        h.write_u64(self.sticky_counter.fetch_add(1, Ordering::Relaxed));
        format!("{:016x}", h.finish())
    }
}

/// Boxes the future `make` builds, built in its allocation: the
/// allocation comes first and the future is written into it, so the
/// compiler can build the future's first state (its arguments) there
/// instead of on the stack and copy the whole future, every byte of its
/// largest state, into the box (`Box::pin(f)` makes `f` before it
/// allocates). benches/callgrind.sh counted that copy: ~280 instructions
/// per request for the direct server's request loop, ~120 for a direct
/// attempt.
#[inline(always)]
pub(crate) fn boxed_in_place<F: std::future::Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Serves one request. Never fails: every error becomes a response.
///
/// The layers of the request path (`handle`, `serve_pool`, `forward`,
/// `attempt`) only ever *move* the request: whatever reads or edits it is a
/// plain function that takes it by value and gives it back. A value an
/// async fn borrows keeps its space in the future until its scope ends,
/// and every layer's future is copied whole into its caller's when it
/// starts: with the request borrowed in every layer, this future was 4.8 KB
/// and a request cost ~16 KB of memcpy (now 1.2 KB; `-Zprint-type-sizes`
/// on nightly shows the layout). The rare paths (middlewares, a capped
/// backend's queue, hyper's client) are boxed for the same reason.
///
/// `sni` is the server name of the TLS connection the request came on
/// (`None` on plain HTTP): a request for another host is refused.
pub async fn handle(
    px: Arc<Proxy>,
    peer: Peer,
    sni: Option<Sni>,
    req: Request<RequestBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let table = px.control.table.load_full();
    let mut at = Recorded::default();
    // Only with an access log: what the line needs from the request.
    let (req, pending) = pending_log(&px, &table, peer, start, req);
    // The match picks a future, and its statement ends before the await:
    // a match around the awaits (or in the await's statement) would keep
    // its scrutinee, the request, in this future. Pinned where it is made:
    // awaited by value, it would be copied whole once more.
    let served = {
        let serving = std::pin::pin!(
            match next_step(&px, &table, peer, sni.as_ref(), req, &mut at) {
                Next::Done(r) => Either::Left(std::future::ready(r)),
                Next::Pool(route, planned) => Either::Right(Either::Left(serve_pool(
                    &px, &table, route, planned, &mut at,
                ))),
                // Boxed: the middleware state is no part of a plain route's future.
                Next::Middlewares(req, host_value, route) =>
                    Either::Right(Either::Right(Box::pin(serve_with_middlewares(
                        &px, &table, route, peer, req, host_value, &mut at
                    )))),
            }
        );
        serving.await
    };
    let mut resp = match served {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "proxy error");
            e.response()
        }
    };
    let m = match (at.route, at.version) {
        (None, _) => &table.unmatched,
        (Some(r), Some(v)) => r.metrics.get(v).unwrap_or(&r.unpicked),
        (Some(r), None) => &r.unpicked,
    };
    let head = start.elapsed();
    m.record(resp.status().as_u16(), head);
    let status = resp.status().as_u16();
    let pending = pending.map(|mut p| {
        p.route = at.route.map(|r| r.index);
        p.version = at.version;
        p.time = SystemTime::now();
        p.status = status;
        p
    });
    let body = resp.body_mut();
    match body.finish_mut() {
        Some(f) => {
            f.observe = Some((m.response().clone(), start));
            f.log = pending.map(|mut p| {
                p.backend = Some(f.backend.clone());
                p
            });
        }
        None => {
            m.response().observe(head.as_secs_f64());
            if let Some(p) = pending {
                p.write(body.size_hint().exact().unwrap_or(0));
            }
        }
    }
    Ok(resp)
}

/// The access log line's request half, when there is an access log (the
/// rest is filled in once the response head is known).
fn pending_log(
    px: &Proxy,
    table: &Arc<RoutingTable>,
    peer: Peer,
    start: Instant,
    req: Request<RequestBody>,
) -> (Request<RequestBody>, Option<Box<PendingLog>>) {
    let pending = px.access_log.as_ref().map(|log| {
        Box::new(PendingLog {
            log: log.clone(),
            table: table.clone(),
            route: None,
            version: None,
            backend: None,
            time: SystemTime::UNIX_EPOCH,
            start,
            client: peer.addr,
            method: req.method().clone(),
            uri: req.uri().clone(),
            proto: proto_str(req.version()),
            host: request_host(&req).ok(),
            status: 0,
        })
    });
    (req, pending)
}

fn proto_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Where a request got to, for its metrics.
#[derive(Default)]
struct Recorded<'t> {
    route: Option<&'t Route>,
    version: Option<usize>,
}

/// What [`handle`] does next with a request.
enum Next<'t> {
    /// Nothing: this is the answer.
    Done(Result<Response<ProxyBody>, ProxyError>),
    /// To the route's pool, as planned.
    Pool(&'t Route, Planned<'t>),
    /// Through the route's middlewares first.
    Middlewares(Request<RequestBody>, HeaderValue, &'t Route),
}

/// The route, and for a route without middlewares the plan; a plain
/// function, so that nothing of it is part of [`handle`]'s future.
fn next_step<'t>(
    px: &Proxy,
    table: &'t RoutingTable,
    peer: Peer,
    sni: Option<&Sni>,
    req: Request<RequestBody>,
    at: &mut Recorded<'t>,
) -> Next<'t> {
    match route_request(px, table, peer, sni, req, at) {
        Err(e) => Next::Done(Err(e)),
        Ok(Routed::Answer(resp)) => Next::Done(Ok(resp)),
        Ok(Routed::Route(req, host_value, route)) => {
            if !route.middlewares.is_empty() {
                return Next::Middlewares(req, host_value, route);
            }
            match plan(px, route, peer, req, &host_value) {
                Ok(planned) => Next::Pool(route, planned),
                Err(e) => Next::Done(Err(e)),
            }
        }
    }
}

/// Where [`route_request`] sends a request.
enum Routed<'t> {
    /// Answered by the proxy itself (an ACME challenge, a redirect).
    Answer(Response<ProxyBody>),
    /// To this route, with the host that chose it.
    Route(Request<RequestBody>, HeaderValue, &'t Route),
}

/// The request's route (recorded in `at`), or the proxy's own answer.
fn route_request<'t>(
    px: &Proxy,
    table: &'t RoutingTable,
    peer: Peer,
    sni: Option<&Sni>,
    req: Request<RequestBody>,
    at: &mut Recorded<'t>,
) -> Result<Routed<'t>, ProxyError> {
    let host_value = vet(&req)?;
    let host = host_value.to_str().map_err(|_| ProxyError::NoHost)?;
    // Normalized once: the SNI check and the route lookup both use it.
    let mut buf = [0u8; MAX_HOST_LEN + 2];
    let name = crate::host::normalize(host, &mut buf);
    if peer.https {
        // The certificate was chosen for the SNI name: another Host on this
        // connection (HTTP/2 coalescing, domain fronting) is misdirected.
        if sni.is_some_and(|sni| !name.is_some_and(|n| sni.matches_normalized(n))) {
            return Err(ProxyError::Misdirected);
        }
    } else if let Some(token) = req.uri().path().strip_prefix(ACME_PREFIX) {
        // ACME HTTP-01; an unknown token goes to the backend like any path.
        if let Some(key_authorization) = px.control.tls.http01_answer(token) {
            tracing::info!(host = ?host, "answered an HTTP-01 validation");
            return Ok(Routed::Answer(plain(StatusCode::OK, key_authorization)));
        }
    }
    let view = crate::rules::RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let route = name
        .and_then(|name| table.route_for_name(name, &view))
        .ok_or(ProxyError::NoRoute)?;
    at.route = Some(route);
    if !peer.https
        && route.redirect_https
        && route.tls != TlsMode::None
        && !req.uri().path().starts_with(ACME_PREFIX)
    {
        return Ok(Routed::Answer(redirect(host, table.https_port, req.uri())));
    }
    Ok(Routed::Route(req, host_value, route))
}

/// A route with middlewares: their request side, the pool, their response
/// side.
async fn serve_with_middlewares<'t>(
    px: &Proxy,
    table: &'t RoutingTable,
    route: &'t Route,
    peer: Peer,
    mut req: Request<RequestBody>,
    host_value: HeaderValue,
    at: &mut Recorded<'t>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let chain = &route.middlewares;
    let Ok(host) = host_value.to_str() else {
        return Err(ProxyError::NoHost);
    };
    let mw_plan = match middlewares::request_side(chain, &mut req, peer, host).await {
        Ok(mw_plan) => mw_plan,
        Err(answer) => return Ok(answer),
    };
    let served = match plan(px, route, peer, req, &host_value) {
        Ok(planned) => serve_pool(px, table, route, planned, at).await,
        Err(e) => Err(e),
    };
    // The response side applies to the proxy's own error answers too.
    let mut resp = match served {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "proxy error");
            e.response()
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        middlewares::response_side(chain, &mw_plan, &mut resp, peer.https);
    }
    Ok(resp)
}

/// The pool's part, once [`plan`] chose the version and backend: forward,
/// upgrade, response headers.
async fn serve_pool<'t>(
    px: &Proxy,
    table: &'t RoutingTable,
    route: &'t Route,
    planned: Planned<'t>,
    at: &mut Recorded<'t>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let pool = &route.pool;
    let Planned {
        chosen,
        exchange,
        client_upgrade,
        set_cookie,
    } = planned;
    at.version = Some(chosen.vidx);
    let (mut resp, vidx) =
        forward(&px.control, table, route, chosen, exchange, &mut at.version).await?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(b)) = (client_upgrade.await, backend_upgrade.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(b))
                            .await;
                }
            });
            return Ok(resp);
        }
    }
    strip_hop_by_hop(resp.headers_mut());
    if pool.version_header {
        if let Some(v) = pool.versions.get(vidx) {
            resp.headers_mut()
                .insert(X_SERVED_BY.clone(), v.header.clone());
        }
    }
    if let Some(c) = set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// What [`plan`] decided for a request.
struct Planned<'t> {
    chosen: Chosen<'t>,
    exchange: Exchange,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    set_cookie: Option<HeaderValue>,
}

/// The version and backend (pin, preview, version rules, sticky, weights),
/// and the upstream request.
fn plan<'t>(
    px: &Proxy,
    route: &'t Route,
    peer: Peer,
    mut req: Request<RequestBody>,
    host_value: &HeaderValue,
) -> Result<Planned<'t>, ProxyError> {
    let pool = &route.pool;
    let mut set_cookie = None;
    let bucket = match pool.sticky() {
        None => None,
        Some(Sticky::Header(h)) => req.headers().get(h).map(|v| sticky_bucket(v.as_bytes())),
        Some(Sticky::Cookie(name)) => match cookie(req.headers(), name) {
            Some(v) => Some(sticky_bucket(v.as_bytes())),
            None => {
                let key = px.new_sticky_key();
                let b = sticky_bucket(key.as_bytes());
                set_cookie =
                    HeaderValue::try_from(format!("{name}={key}; Path=/; HttpOnly; SameSite=Lax"))
                        .ok();
                Some(b)
            }
        },
    };
    let pinned = pool
        .pin_header
        .as_ref()
        .and_then(|h| req.headers().get(h))
        .map(|v| v.as_bytes());
    let matched = pool.match_version(req.headers(), req.uri().query());
    let (vidx, version, backend, strict) =
        match pool.pick_with(pinned, route.preview, matched, bucket) {
            Pick::Version(i, v) => match v.pick_backend() {
                Some(b) => (i, v, b.clone(), false),
                None => fallback(pool)?,
            },
            Pick::Named(i, v) => match v.pick_backend() {
                Some(b) => (i, v, b.clone(), true),
                None => return Err(version_down(pool, v)),
            },
            Pick::NamedDown(v) => return Err(version_down(pool, v)),
            Pick::UnknownPin => return Err(unknown_pin(pool, pinned)),
            Pick::NoPreview => return Err(ProxyError::NoPreview(pool.name.clone())),
            Pick::AllDown => fallback(pool)?,
        };

    let (upgrade, forwarded) = prepare_upstream(&mut req, host_value, peer);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    // The response's fields stay as the backend sent them when nothing
    // below changes them (serve_pool, the middlewares' response side).
    let raw = peer.raw_fields
        && route.middlewares.is_empty()
        && !pool.version_header
        && set_cookie.is_none();
    Ok(Planned {
        chosen: Chosen {
            vidx,
            version,
            backend,
            strict,
        },
        exchange: Exchange::new(req, upgrade, forwarded, raw),
        client_upgrade,
        set_cookie,
    })
}

/// No version has an available backend: `on_all_down` decides.
fn fallback(pool: &Pool) -> Result<(usize, &Version, Arc<Backend>, bool), ProxyError> {
    if pool.on_all_down == OnAllDown::FailOpen {
        if let Some((i, v)) = pool.pick_ignoring_health() {
            if let Some(b) = v.pick_any_backend() {
                return Ok((i, v, b.clone(), false));
            }
        }
    }
    Err(ProxyError::NoHealthyVersion(pool.name.clone()))
}

/// A named version (pin, preview) that cannot take the request.
fn version_down(pool: &Pool, v: &Version) -> ProxyError {
    ProxyError::VersionDown {
        pool: pool.name.clone(),
        version: v.name.clone(),
    }
}

/// A pin naming no version: the answer quotes at most 64 bytes of it, lossy
/// UTF-8 (the `{:?}` of the message escapes the rest).
fn unknown_pin(pool: &Pool, pinned: Option<&[u8]>) -> ProxyError {
    let raw = pinned.unwrap_or_default();
    ProxyError::UnknownVersion {
        pool: pool.name.clone(),
        version: String::from_utf8_lossy(&raw[..raw.len().min(64)]).into(),
    }
}

/// The version and backend a request goes to first.
struct Chosen<'a> {
    vidx: usize,
    version: &'a Version,
    backend: Arc<Backend>,
    /// Named by a pin or a preview host: retries stay on this version, and
    /// when none of its backends can be reached the answer is 503 naming it.
    strict: bool,
}

/// How a request goes to its backend.
// One per request, on the request's own stack: boxing the larger variant
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Exchange {
    /// Bodiless, idempotent, no upgrade: the encoded head is written directly
    /// ([`crate::upstream::h1`]); it can be sent again as often as a retry needs.
    /// `raw`: the response's fields may stay as the backend sent them
    /// (nothing changes them on the way and the writer takes them so).
    Direct {
        method: Method,
        head: Vec<u8>,
        raw: bool,
    },
    /// Through hyper's client (a body to stream, or an upgrade). `None` once
    /// the request has been handed over and cannot be sent again.
    /// Boxed: the request head is large, and this variant is the rarer one.
    Hyper(Option<Box<Request<UpBody>>>, Arc<ClientBody>),
}

impl Exchange {
    /// The direct exchange when the request allows it, else hyper's.
    fn new(req: Request<RequestBody>, upgrade: bool, forwarded: Forwarded, raw: bool) -> Exchange {
        let (mut parts, body) = req.into_parts();
        let direct = *DIRECT_H1 && body.is_end_stream() && is_idempotent(&parts.method) && !upgrade;
        if direct {
            // The path and query of an absolute-form target are its
            // origin form: written as they are, no URI built for them.
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            Exchange::Direct {
                head: forwarded.encode_head(&parts.method, path, &parts.headers),
                method: parts.method,
                raw,
            }
        } else {
            // hyper's client writes the URI it is given: origin form.
            if parts.uri.authority().is_some() || parts.uri.scheme().is_some() {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                if let Ok(u) = Uri::try_from(path) {
                    parts.uri = u;
                }
            }
            forwarded.insert_into(&mut parts.headers);
            // One allocation, for requests with a body or an upgrade only.
            let state = Arc::new(ClientBody::default());
            let body = UpBody::Client(body, state.clone());
            Exchange::Hyper(Some(Box::new(Request::from_parts(parts, body))), state)
        }
    }
}

/// Whether bodiless idempotent requests take the direct exchange of
/// [`crate::upstream::h1`] (the default). A benchmark and diagnostic switch, not a
/// setting: `SWITCHYARD_DIRECT_H1=0` in the environment, read once (at the
/// first request), sends every request through hyper's client instead, so
/// that the direct path's worth can be measured (benches/compare.sh's
/// `switchyard-hyper` target) or a suspected h1 bug ruled out.
static DIRECT_H1: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SWITCHYARD_DIRECT_H1").is_none_or(|v| v != "0"));

/// What one attempt on one backend came to. Not boxed: it lives for one
/// return, and a box would cost an allocation on every proxied request.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Answered(Response<ProxyBody>),
    /// A pooled connection turned out closed before anything was sent:
    /// send again on a fresh one, not counted as a retry (the error is what
    /// the client gets if that keeps happening).
    Stale(ProxyError),
    /// Failed; a retry elsewhere may help.
    Failed(ProxyError),
    /// Failed for good (timed out: the request may still be running).
    Final(ProxyError),
    /// The client's own fault (its body failed or stalled): not charged to
    /// the backend, not retried.
    Client(ProxyError),
}

/// Sends the request, retrying where that is safe. Returns the response
/// head with a body that streams from the backend.
async fn forward(
    app: &Control,
    table: &RoutingTable,
    route: &Route,
    chosen: Chosen<'_>,
    mut exchange: Exchange,
    at_version: &mut Option<usize>,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    let pool = &route.pool;
    let strict = chosen.strict;
    let (mut vidx, mut version, mut backend) = (chosen.vidx, chosen.version, chosen.backend);
    if pool.max_conns > 0 && !backend.has_room(pool.max_conns) {
        // At its cap: another backend of the version with a free slot
        // takes the request rather than it queueing here.
        if let Some(b) = version
            .backends
            .iter()
            .find(|b| b.is_available() && b.has_room(pool.max_conns))
        {
            backend = b.clone();
        }
    }
    let mut retries_left = pool.retry;
    let mut stale_retries = 2u32;
    // After a pooled connection turned out closed, the next try connects anew.
    let mut fresh = false;
    loop {
        let tried = attempt(
            app,
            pool,
            table.limits,
            version,
            &backend,
            &mut exchange,
            fresh,
        );
        let err = match tried.await {
            Attempt::Answered(resp) => return Ok((resp, vidx)),
            Attempt::Final(e) | Attempt::Client(e) => return Err(e),
            Attempt::Stale(_) if stale_retries > 0 => {
                stale_retries -= 1;
                fresh = true;
                continue;
            }
            Attempt::Stale(e) | Attempt::Failed(e) => e,
        };
        app.passive_failure(&backend, &pool.passive);
        app.metrics.upstream_error(
            &pool.name,
            &version.name,
            backend.key.addr.as_str(),
            err.kind(),
        );
        let can_resend = match &exchange {
            Exchange::Direct { .. } => true,
            Exchange::Hyper(req, _) => req.is_some(),
        };
        if retries_left == 0 || !can_resend {
            return Err(named_failure(strict, pool, version, err));
        }
        retries_left -= 1;
        tracing::debug!(error = %err, "retrying on another backend");
        let next = if strict {
            version
                .pick_backend_except(&backend)
                .map(|b| (vidx, version, b.clone()))
        } else {
            next_backend(pool, vidx, version, &backend)
        };
        let Some((i, v, b)) = next else {
            return Err(named_failure(strict, pool, version, err));
        };
        (vidx, version, backend, fresh) = (i, v, b, false);
        *at_version = Some(i);
    }
}

/// The last error of a request to a named version: a backend that could not
/// even be connected to makes the version unavailable (503 naming it).
fn named_failure(strict: bool, pool: &Pool, version: &Version, err: ProxyError) -> ProxyError {
    match err {
        ProxyError::Connect { .. } if strict => version_down(pool, version),
        err => err,
    }
}

/// Where a retry goes: the same version first, then the weighted choice
/// (never weight 0); when that lands on the failed backend's version again
/// (its only backend), the heaviest other version with a backend.
fn next_backend<'p>(
    pool: &'p Pool,
    vidx: usize,
    version: &'p Version,
    failed: &Backend,
) -> Option<(usize, &'p Version, Arc<Backend>)> {
    if let Some(b) = version.pick_backend_except(failed) {
        return Some((vidx, version, b.clone()));
    }
    if let Pick::Version(i, v) = pool.pick(None, false, None) {
        if let Some(b) = v.pick_backend_except(failed) {
            return Some((i, v, b.clone()));
        }
    }
    pool.versions
        .iter()
        .enumerate()
        .filter(|(i, v)| *i != vidx && v.weight > 0)
        .max_by_key(|(_, v)| v.weight)
        .and_then(|(i, v)| v.pick_backend_except(failed).map(|b| (i, v, b.clone())))
}

/// One try on one backend.
async fn attempt(
    app: &Control,
    pool: &Pool,
    limits: Limits,
    version: &Version,
    backend: &Arc<Backend>,
    exchange: &mut Exchange,
    fresh: bool,
) -> Attempt {
    let wait = pool.queue_timeout.unwrap_or(limits.connect_timeout);
    let slot = match backend.try_slot(pool.max_conns) {
        Ok(slot) => Ok(slot),
        // Boxed: only a capped backend at its cap waits here.
        Err(sem) => Box::pin(backend.wait_slot(sem, wait)).await,
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(QueueTimeout) => {
            // Overload, not a fault: never retried (the other backends of a
            // capped pool were full when this one was chosen) and not
            // counted for passive ejection.
            app.metrics.upstream_error(
                &pool.name,
                &version.name,
                backend.key.addr.as_str(),
                "queue_timeout",
            );
            return Attempt::Final(ProxyError::Busy(pool.name.clone()));
        }
    };
    backend.begin_request();
    let in_flight = InFlight {
        backend: Some(backend.clone()),
        slot,
    };
    let to = Target {
        app,
        pool,
        limits,
        version,
        backend,
    };
    match exchange {
        // Boxed (the direct one fits glibc's per-thread cache, under 1 KiB):
        // inline, they would be part of, and copied with, every future
        // above this one.
        Exchange::Direct { method, head, raw } => {
            boxed_in_place(|| to.direct(method, head, *raw, fresh, in_flight)).await
        }
        Exchange::Hyper(req, state) => Box::pin(to.hyper(req, state, in_flight)).await,
    }
}

/// Where one attempt goes.
struct Target<'a> {
    app: &'a Control,
    pool: &'a Pool,
    limits: Limits,
    version: &'a Version,
    backend: &'a Arc<Backend>,
}

impl Target<'_> {
    /// Out of `request_timeout`: final, and charged to the backend.
    fn timed_out(&self) -> Attempt {
        let e = ProxyError::Timeout {
            pool: self.pool.name.clone(),
            backend: self.backend.key.addr.as_str().into(),
        };
        Attempt::Final(timed_out(
            self.app,
            self.pool,
            self.version,
            self.backend,
            e,
        ))
    }

    /// An answer's status counts for passive ejection (5xx is a failure).
    fn answered(&self, status: StatusCode) {
        let (pool, backend) = (self.pool, self.backend);
        self.app
            .passive_outcome(backend, &pool.passive, !status.is_server_error());
    }

    /// The direct HTTP/1.1 exchange ([`crate::upstream::h1`]).
    async fn direct(
        &self,
        method: &Method,
        head: &[u8],
        raw: bool,
        fresh: bool,
        mut in_flight: InFlight,
    ) -> Attempt {
        let (pool, backend, limits) = (self.pool, self.backend, self.limits);
        // Send at the end of this event-loop turn, with the other requests
        // that arrived in it: a backend on the same CPU then wakes once per
        // batch instead of preempting the proxy after every send (about 0.58
        // -> 0.43 context switches per request in benches/compare.sh's rig).
        // With nothing else ready, the turn ends at once.
        tokio::task::yield_now().await;
        let checkout = backend.checkout_raw(limits.connect_timeout, limits.idle_timeout, fresh);
        let (conn, reused) = match checkout.await {
            Ok(x) => x,
            Err(source) => return Attempt::Failed(connect_error(pool, backend, source)),
        };
        let deadline = tokio::time::Instant::now() + limits.request_timeout;
        match conn.exchange_until(head, method, Some(deadline), raw).await {
            Err(ExchangeError::TimedOut) => self.timed_out(),
            Ok(resp) => {
                let (parts, mut body) = resp.into_parts();
                // A small body is awaited before the head goes out, so that
                // a backend dying inside it leaves the request retryable. At
                // the deadline the response streams as it is (a slow body is
                // the client's to wait for, not a 504). The connection's own
                // timer keeps the deadline: no timer of its own here (whose
                // 100 bytes put this future over glibc's per-thread cache).
                let whole = body.read_small().await;
                // A malformed chunked body already here is a 502 now, not a
                // response cut after its head.
                let checked = match whole {
                    Ok(()) => body.check_buffered().await,
                    Err(e) => Err(e),
                };
                if let Err(source) = checked {
                    return Attempt::Failed(ProxyError::Exchange {
                        pool: pool.name.clone(),
                        backend: backend.key.addr.as_str().into(),
                        source,
                    });
                }
                self.answered(parts.status);
                let finish = in_flight.finish();
                Attempt::Answered(Response::from_parts(
                    parts,
                    ProxyBody::Direct { body, finish },
                ))
            }
            Err(source) => {
                let stale = reused && source.nothing_received();
                let e = ProxyError::Exchange {
                    pool: pool.name.clone(),
                    backend: backend.key.addr.as_str().into(),
                    source,
                };
                if stale {
                    Attempt::Stale(e)
                } else {
                    Attempt::Failed(e)
                }
            }
        }
    }

    /// Through hyper's client (a body to stream, or an upgrade).
    async fn hyper(
        &self,
        req: &mut Option<Box<Request<UpBody>>>,
        client_body: &ClientBody,
        mut in_flight: InFlight,
    ) -> Attempt {
        let (pool, backend, limits) = (self.pool, self.backend, self.limits);
        let Some(r) = req.take() else {
            // Unreachable by construction: a consumed request is never
            // retried (see `can_resend` in `forward`).
            return Attempt::Final(ProxyError::NoHealthyVersion(pool.name.clone()));
        };
        let checkout = Box::pin(backend.checkout(limits.connect_timeout, limits.idle_timeout));
        let mut conn = match checkout.await {
            Ok(c) => c,
            Err(source) => {
                *req = Some(r);
                return Attempt::Failed(connect_error(pool, backend, source));
            }
        };
        let sent = Box::pin(conn.sender.try_send_request(*r));
        match tokio::time::timeout(limits.request_timeout, sent).await {
            // Still waiting for the client's next bytes: a stalled upload.
            Err(_) if client_body.waiting_for_client() => {
                Attempt::Client(ProxyError::ClientTimeout(pool.name.clone()))
            }
            Err(_) => self.timed_out(),
            // hyper's read buffer limit bounds a head only while it is
            // partial; one that arrived whole is measured here, so both
            // paths refuse the same heads (502).
            Ok(Ok(resp)) if head_size(resp.headers()) > crate::upstream::h1::MAX_HEAD => {
                Attempt::Failed(ProxyError::Exchange {
                    pool: pool.name.clone(),
                    backend: backend.key.addr.as_str().into(),
                    source: ExchangeError::Invalid("response head too large"),
                })
            }
            Ok(Ok(resp)) => {
                self.answered(resp.status());
                let (parts, body) = resp.into_parts();
                // Transfer-Encoding beside Content-Length (hyper frames by
                // the former and keeps the connection): possibly an attempt
                // at response splitting, so the connection is not reused
                // (RFC 9112 section 6.3), as on the direct path.
                let ambiguous = parts.headers.contains_key(header::TRANSFER_ENCODING)
                    && parts.headers.contains_key(header::CONTENT_LENGTH);
                let finish = in_flight.finish();
                // Pooled again only through a `Finish`.
                let sender = (!ambiguous && finish.is_some()).then_some(conn);
                Attempt::Answered(Response::from_parts(
                    parts,
                    ProxyBody::Upstream {
                        body,
                        sender,
                        finish,
                    },
                ))
            }
            // The client's body failed (malformed, cut): its fault.
            Ok(Err(_)) if client_body.failed() => {
                Attempt::Client(ProxyError::ClientBody(pool.name.clone()))
            }
            Ok(Err(mut e)) => {
                let back = e.take_message();
                // A pooled connection closed under us before a byte was
                // written: the request came back and may go again.
                let stale = back.is_some() && conn.reused;
                *req = back.map(Box::new);
                let e = ProxyError::Upstream {
                    pool: pool.name.clone(),
                    backend: backend.key.addr.as_str().into(),
                    source: e.into_error(),
                };
                if stale {
                    Attempt::Stale(e)
                } else {
                    Attempt::Failed(e)
                }
            }
        }
    }
}

/// The size of a response head as it was on the wire, near enough: the
/// status line and every field line with its `: ` and CRLF.
fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .fold(b"HTTP/1.1 200 OK\r\n\r\n".len(), |n, (k, v)| {
            n + k.as_str().len() + v.len() + 4
        })
}

fn connect_error(pool: &Pool, backend: &Backend, source: ConnectError) -> ProxyError {
    ProxyError::Connect {
        pool: pool.name.clone(),
        backend: backend.key.addr.as_str().into(),
        source,
    }
}

/// A request that ran out of `request_timeout`: counted, and the backend
/// charged with a passive failure. Never retried (it may still be running).
fn timed_out(
    app: &Control,
    pool: &Pool,
    version: &Version,
    backend: &Backend,
    err: ProxyError,
) -> ProxyError {
    app.passive_failure(backend, &pool.passive);
    app.metrics.upstream_error(
        &pool.name,
        &version.name,
        backend.key.addr.as_str(),
        err.kind(),
    );
    err
}

/// Decrements a backend's in-flight count (and frees its slot under a
/// connection cap) unless handed on to a [`Finish`].
struct InFlight {
    backend: Option<Arc<Backend>>,
    slot: Option<Slot>,
}

impl InFlight {
    /// The [`Finish`] that ends the request when its response body ends.
    fn finish(&mut self) -> Option<Finish> {
        let backend = self.backend.take()?;
        let mut f = Finish::new(backend);
        f.slot = self.slot.take();
        Some(f)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(b) = self.backend.take() {
            b.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && h1::has_token(h, header::CONNECTION, "upgrade")
}

/// The X-Forwarded-* fields of an upstream request. The proxy sets them: a
/// client's own X-Forwarded-Proto and -Host are replaced, its
/// X-Forwarded-For is extended with the client's address.
struct Forwarded {
    /// The client's own X-Forwarded-For, extended with its address.
    prior_for: Option<HeaderValue>,
    client: IpText,
    https: bool,
    host: HeaderValue,
    /// Whether the upstream request needs a Host field the client's head
    /// does not have (HTTP/2's `:authority`, or absolute form without a
    /// Host): written before the X-Forwarded-* fields, not put in the map.
    add_host: bool,
}

impl Forwarded {
    fn proto(&self) -> &'static [u8] {
        if self.https {
            b"https"
        } else {
            b"http"
        }
    }

    /// The upstream request head for the direct path, these fields in it.
    fn encode_head(&self, method: &Method, path: &str, headers: &HeaderMap) -> Vec<u8> {
        let ip = self.client.as_bytes();
        let for_: &[&[u8]] = match &self.prior_for {
            Some(prior) => &[prior.as_bytes(), b", ", ip],
            None => &[ip],
        };
        let host: &[&[u8]] = &[self.host.as_bytes()];
        let set: [(&HeaderName, &[&[u8]]); 4] = [
            (&header::HOST, host),
            (&X_FORWARDED_FOR, for_),
            (&X_FORWARDED_PROTO, &[self.proto()]),
            (&X_FORWARDED_HOST, host),
        ];
        // Without a Host to add, the client's (in the map) stays where it is.
        let set = if self.add_host { &set[..] } else { &set[1..] };
        h1::encode_head(method, path, headers, set)
    }

    fn insert_into(self, headers: &mut HeaderMap) {
        if self.add_host {
            headers.insert(header::HOST, self.host.clone());
        }
        let ip = self.client.as_bytes();
        let for_ = match &self.prior_for {
            Some(prior) => HeaderValue::from_bytes(&[prior.as_bytes(), b", ", ip].concat()),
            None => HeaderValue::from_bytes(ip),
        };
        // Both parts are valid field values; the fallback cannot happen.
        let for_ = for_.unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        headers.insert(X_FORWARDED_FOR.clone(), for_);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if self.https { "https" } else { "http" }),
        );
        headers.insert(X_FORWARDED_HOST.clone(), self.host);
    }
}

/// A client address as text, formatted on the stack (an IPv6 address with
/// a mapped IPv4 tail is at most 45 characters).
struct IpText {
    buf: [u8; 48],
    len: u8,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 48],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if octet >= 100 {
                        t.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        t.push(b'0' + octet / 10 % 10);
                    }
                    t.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                let mut w = std::io::Cursor::new(&mut t.buf[..]);
                let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
                t.len = w.position() as u8;
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len as usize) {
            *slot = b;
            self.len += 1;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// Turns a client request into the upstream one: HTTP/1.1, HTTP/2 cookie
/// fields joined, hop-by-hop headers gone. Returns whether it asks for an
/// upgrade, and the fields to send with it: X-Forwarded-*, and Host (the
/// request's host) where the client's head has none to keep. The URI is
/// made origin-form by [`Exchange::new`].
fn prepare_upstream(
    req: &mut Request<RequestBody>,
    host: &HeaderValue,
    peer: Peer,
) -> (bool, Forwarded) {
    let upgrade = is_upgrade(req.headers());
    let upgrade_value = if upgrade {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    };
    let http2 = req.version() == http::Version::HTTP_2;
    let has_authority = req.uri().authority().is_some();
    *req.version_mut() = http::Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // The host that routed the request is the one the backend is told
    // (request_host refused a differing Host); origin-form requests carry
    // it in their one Host field already. A Host beside an authority is
    // replaced in its place; none at all is added by the encoder.
    let add_host = !headers.contains_key(header::HOST);
    if has_authority && !add_host {
        headers.insert(header::HOST, host.clone());
    }
    if http2 {
        join_cookies(headers);
    }
    if let Some(u) = upgrade_value {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let forwarded = Forwarded {
        prior_for: headers.get(&X_FORWARDED_FOR).cloned(),
        client: IpText::new(peer.addr.ip()),
        https: peer.https,
        host: host.clone(),
        add_host,
    };
    (upgrade, forwarded)
}

/// Removes hop-by-hop headers, including those named by Connection, and
/// a Content-Length beside a Transfer-Encoding: the body was framed by the
/// latter, so the length claimed is not the body's (RFC 9112 section 6.3:
/// an intermediary removes it before forwarding; hyper's server would
/// otherwise frame the client's response by it). Public for
/// tests/h1_differential.rs, which compares the direct and the hyper
/// backend paths after this same pass.
#[doc(hidden)]
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no hashing.
    if !headers.keys().any(|k| h1::is_hop_by_hop(k.as_str())) {
        return;
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Fields the Connection header names go too. A cheap clone of the
    // value (shared bytes), and removal by name without building one.
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        for token in conn.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if !token.is_empty() && !token.eq_ignore_ascii_case("close") {
                headers.remove(token);
            }
        }
    }
    for h in h1::HOP_BY_HOP {
        headers.remove(h);
    }
}

use crate::rules::cookie;

fn redirect(host: &str, https_port: Option<u16>, uri: &Uri) -> Response<ProxyBody> {
    let bare = crate::host::strip_port(host);
    let port = match https_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = format!("https://{bare}{port}{path}");
    let mut r = plain(
        StatusCode::PERMANENT_REDIRECT,
        format!("308 Permanent Redirect: {location}\n"),
    );
    if let Ok(v) = HeaderValue::try_from(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_print_as_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "1.2.3.4",
            "::1",
            "::ffff:192.168.100.200",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn every_error_maps_to_its_status() {
        let p: Arc<str> = "app".into();
        let b: Arc<str> = "127.0.0.1:1".into();
        assert_eq!(ProxyError::NoHost.status(), 400);
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::Misdirected.status(), 421);
        assert_eq!(ProxyError::NoHealthyVersion(p.clone()).status(), 503);
        let down = ProxyError::VersionDown {
            pool: p.clone(),
            version: "green".into(),
        };
        assert_eq!(down.status(), 503);
        assert_eq!(
            ProxyError::UnknownVersion {
                pool: p.clone(),
                version: "v9".into()
            }
            .status(),
            404
        );
        assert_eq!(ProxyError::NoPreview(p.clone()).status(), 503);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ProxyError::Connect {
                pool: p.clone(),
                backend: b.clone(),
                source: refused.into()
            }
            .status(),
            502
        );
        assert_eq!(
            ProxyError::Connect {
                pool: p.clone(),
                backend: b.clone(),
                source: ConnectError::Timeout
            }
            .status(),
            504
        );
        assert_eq!(
            ProxyError::Timeout {
                pool: p.clone(),
                backend: b
            }
            .status(),
            504
        );
    }

    #[test]
    fn error_bodies_name_the_pool_not_the_backend() {
        let e = ProxyError::Timeout {
            pool: "app".into(),
            backend: "10.0.0.1:80".into(),
        };
        let r = e.response();
        let ProxyBody::Full(Some(b)) = r.body() else {
            panic!()
        };
        let text = std::str::from_utf8(b).unwrap();
        assert!(text.contains("pool app"));
        assert!(!text.contains("10.0.0.1"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        // Without Transfer-Encoding, Content-Length is the body's.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sy_ver=abc; b=2"),
        );
        assert_eq!(cookie(&h, "sy_ver"), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn redirect_keeps_path_and_sets_port() {
        let r = redirect("app.test:8080", Some(8443), &Uri::from_static("/a?b=1"));
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()[header::LOCATION], "https://app.test:8443/a?b=1");
        let r = redirect("app.test", Some(443), &Uri::from_static("/"));
        assert_eq!(r.headers()[header::LOCATION], "https://app.test/");
    }
}
