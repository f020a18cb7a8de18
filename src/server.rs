//! Listeners, services, signals and graceful shutdown: the wiring of a
//! running instance.
//!
//! ```text
//! run(control, config)
//!  ├─ http listener ── listener::serve (max_connections) ─> conn::Conn ─> h1::serve (simple HTTP/1.x requests) ─> proxy::handle
//!  │    └─ the rest of the connection from the first other request (a body, an upgrade, h2c, an error) ─> hyper auto ─> proxy::handle
//!  ├─ https listener ── listener::serve ─> tls::TlsState::accept (SNI cert, ALPN) ─> conn::Conn ─> hyper auto ─> proxy::handle
//!  │    (each proxy connection: a conn::Watchdog beside it closes it when a client
//!  │     timeout passes; request bodies that stall get 408, see proxy_service)
//!  ├─ acme::spawn: orders and renews certificates for tls = "acme" routes
//!  ├─ admin socket ── admin::socket::serve          ├─ metrics listener ── GET /metrics
//!  ├─ dashboard listener ── admin::dashboard::serve  ├─ stats sampler (1 s)
//!  ├─ health: probes, rebuilder, ejection sweeper   ├─ rollout runner
//!  ├─ notify: audit events to the [[notify]] webhooks
//!  ├─ providers::docker (with [providers.docker]): containers -> Control
//!  └─ signals: SIGHUP -> reload (in its own task); SIGTERM/SIGINT -> stop accepting,
//!     drain in-flight requests for up to shutdown_grace, return
//! ```
//!
//! Every task runs on one [`TaskTracker`]: shutdown tells them all through
//! one watch channel and waits for the tracker, bounded by the grace.

pub mod h1;
mod streams;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use streams::{StreamExec, Streams};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admin::{dashboard, socket, Api};
use crate::config::{Config, ServerConfig};
use crate::control::Control;
use crate::listener::conn::{Activity, Conn, Expired, Roster, Timeouts, Tracked, Watchdog};
use crate::listener::gate::Gate;
use crate::listener::{self, Slots};
use crate::metrics::Metrics;
use crate::proxy::{self, Peer, Proxy};
use crate::stats::Stats;

/// How long a metrics scraper may take to send its request head.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Dashboard(#[from] crate::admin::dashboard::DashboardError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot open the access log {target}: {source}")]
    AccessLog {
        target: String,
        source: std::io::Error,
    },
}

/// Bound listeners, before serving (so callers can learn the ports).
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub admin: tokio::net::UnixListener,
    pub admin_path: PathBuf,
    pub metrics: Option<TcpListener>,
    pub dashboard: Option<dashboard::Dashboard>,
}

/// Binds every listener of `config`.
pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
    // First: a bad dashboard token file stops the start before anything binds.
    let dashboard = dashboard::bind(&config.admin).await?;
    let backlog = proxy_backlog(config.server.max_connections);
    let http = match config.server.http {
        Some(a) => Some(bind_tcp(a, backlog).await?),
        None => None,
    };
    let https = match config.server.https {
        Some(a) => Some(bind_tcp(a, backlog).await?),
        None => None,
    };
    let admin = socket::bind(&config.admin.socket).map_err(|source| ServerError::Bind {
        addr: config.admin.socket.display().to_string(),
        source,
    })?;
    let metrics = match &config.metrics {
        Some(m) => Some(bind_tcp(m.listen, METRICS_BACKLOG).await?),
        None => None,
    };
    Ok(Listeners {
        http,
        https,
        admin,
        admin_path: config.admin.socket.clone(),
        metrics,
        dashboard,
    })
}

/// The metrics listener's backlog: a scraper or two, not a crowd.
const METRICS_BACKLOG: u32 = 128;

/// The proxy listeners' accept backlog: as deep as the connections the
/// listener may hold (`max_connections`), so that a crowd connecting at once
/// (a restart of every client, a burst) queues in the kernel instead of
/// overflowing it. An overflow drops the handshake's last ACK, and the
/// client, which believes itself connected and has sent its request, waits
/// for the retransmitted SYN-ACK: one, three, seven seconds. The kernel caps
/// the value at `net.core.somaxconn` (4096 on current kernels).
fn proxy_backlog(max_connections: usize) -> u32 {
    u32::try_from(max_connections)
        .unwrap_or(u32::MAX)
        .clamp(1024, 65_535)
}

async fn bind_tcp(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServerError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let bind = |s: tokio::net::TcpSocket| -> std::io::Result<TcpListener> {
        s.set_reuseaddr(true)?;
        s.set_nodelay(true)?;
        s.bind(addr)?;
        s.listen(backlog)
    };
    socket.and_then(bind).map_err(|source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// What every task is handed.
struct Ctx {
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
    /// The direct server's connections, told of the shutdown with it.
    roster: Arc<Roster>,
}

/// Serves until `stop` resolves or SIGTERM/SIGINT arrives; SIGHUP reloads.
pub async fn run(
    control: Arc<Control>,
    config: &Config,
    listeners: Listeners,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // Before any listener serves: the first request is logged too.
    let access_log = match &config.access_log {
        Some(al) => Some(
            crate::accesslog::AccessLog::start(
                al.format,
                al.target.clone(),
                control.metrics.access_log_dropped.clone(),
            )
            .map_err(|source| ServerError::AccessLog {
                target: format!("{:?}", al.target),
                source,
            })?,
        ),
        None => None,
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    let ctx = Ctx {
        tracker: TaskTracker::new(),
        shutdown,
        roster: Arc::default(),
    };
    let proxy = Arc::new(Proxy::new(control.clone(), access_log));
    let admin_path = listeners.admin_path.clone();
    // Subscribed before anything can record an event worth notifying.
    ctx.tracker
        .spawn(crate::notify::start(control.clone(), ctx.shutdown.clone()));
    start_listeners(&ctx, &proxy, config, listeners);
    start_services(&ctx, &control, config);
    // The start's parse and first build are done: their scratch goes back.
    crate::memory::release();

    wait_for_stop(&control, stop).await;
    tracing::info!(grace = ?config.server.shutdown_grace, "shutting down: no new connections, draining in-flight requests");
    let _ = shutdown_tx.send(true);
    ctx.roster.close_all();
    ctx.tracker.close();
    if tokio::time::timeout(config.server.shutdown_grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace ran out; closing the remaining connections");
    }
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

/// Every listener, each served through [`listener::serve`].
fn start_listeners(ctx: &Ctx, proxy: &Arc<Proxy>, config: &Config, l: Listeners) {
    let control = &proxy.control;
    // Before the https listener serves: stored certificates are loaded here.
    if let Some(acme) = crate::acme::spawn(
        control.tls.clone(),
        config,
        control.cluster().cloned(),
        ctx.shutdown.clone(),
    ) {
        ctx.tracker.spawn(async move {
            let _ = acme.await;
        });
    }
    let settings = Arc::new(ConnSettings {
        builder: http_builder(&config.server),
        h1_builder: http_builder(&config.server).http1_only(),
        timeouts: client_timeouts(&config.server),
        max_head: max_head(&config.server),
        roster: ctx.roster.clone(),
    });
    let slots = Slots::new(config.server.max_connections);
    for (listener, https) in [(l.http, false), (l.https, true)] {
        let Some(listener) = listener else { continue };
        let name = if https { "https" } else { "http" };
        let addr = local(&listener);
        tracing::info!(%addr, "listening for {name}");
        control.set_bound(name, addr);
        if https {
            if let Ok(a) = listener.local_addr() {
                // Built on the control thread like every table (see
                // memory::on_control), and waited for: the http listener's
                // redirects name this port from its first request. Nothing
                // else is queued there yet at this point of the start.
                let (c, port) = (control.clone(), a.port());
                crate::memory::on_control(move || c.set_https_port(port));
            }
        }
        let (proxy, settings, shutdown) = (proxy.clone(), settings.clone(), ctx.shutdown.clone());
        ctx.tracker.spawn(listener::serve(
            name,
            listener,
            slots.clone(),
            ctx.tracker.clone(),
            ctx.shutdown.clone(),
            move |stream, addr, permit| {
                let peer = Peer {
                    addr,
                    https,
                    raw_fields: false,
                };
                // The connection's task is this future itself (an async
                // block around it would hold it twice: ~0.7 KiB more per
                // connection).
                proxy_conn(
                    proxy.clone(),
                    settings.clone(),
                    stream,
                    peer,
                    shutdown.clone(),
                    permit,
                )
            },
        ));
    }
    control.set_bound("admin", l.admin_path.display().to_string());
    tracing::info!(socket = %l.admin_path.display(), "admin socket ready");
    let api = Api {
        control: control.clone(),
        stats: Arc::new(Stats::default()),
    };
    let (tracker, shutdown) = (ctx.tracker.clone(), ctx.shutdown.clone());
    ctx.tracker.spawn(socket::serve(
        api.clone(),
        l.admin,
        tracker.clone(),
        shutdown.clone(),
    ));
    ctx.tracker.spawn(crate::stats::sample_loop(
        api.stats.clone(),
        control.clone(),
        shutdown.clone(),
    ));
    if let Some(d) = l.dashboard {
        let addr = d.local_addr();
        tracing::info!(%addr, "dashboard at http://{addr}/");
        control.set_bound("dashboard", addr.to_string());
        ctx.tracker
            .spawn(dashboard::serve(api, d, tracker.clone(), shutdown.clone()));
    }
    if let Some(m) = l.metrics {
        let addr = local(&m);
        tracing::info!(%addr, "serving metrics at /metrics");
        control.set_bound("metrics", addr);
        ctx.tracker
            .spawn(serve_metrics(control.metrics.clone(), m, tracker, shutdown));
    }
}

/// The background services.
fn start_services(ctx: &Ctx, control: &Arc<Control>, config: &Config) {
    let s = || ctx.shutdown.clone();
    if let Some(docker) = &config.docker {
        tracing::info!(endpoint = %docker.endpoint, labels = docker.labels.prefix(), "docker discovery on");
        ctx.tracker.spawn(crate::providers::docker::run(
            control.clone(),
            docker.clone(),
            s(),
        ));
    }
    ctx.tracker
        .spawn(crate::health::supervise(control.clone(), s()));
    ctx.tracker
        .spawn(crate::health::rebuilder(control.clone(), s()));
    ctx.tracker
        .spawn(crate::health::sweep_ejections(control.clone(), s()));
    ctx.tracker
        .spawn(crate::rollout::run::supervise(control.clone(), s()));
    if control.cluster().is_some() {
        ctx.tracker
            .spawn(crate::cluster::run::supervise(control.clone(), s()));
    }
}

fn local(l: &TcpListener) -> String {
    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// What every proxy connection is served with.
struct ConnSettings {
    builder: auto::Builder<StreamExec>,
    /// For a connection handed over by the direct path after it served
    /// requests: HTTP/1.1 for good.
    h1_builder: auto::Builder<StreamExec>,
    timeouts: Timeouts,
    /// The longest HTTP/1.1 request head (hyper's read buffer limit).
    max_head: usize,
    roster: Arc<Roster>,
}

fn max_head(s: &ServerConfig) -> usize {
    s.max_header_bytes.max(8192)
}

fn client_timeouts(s: &ServerConfig) -> Timeouts {
    Timeouts {
        header: s.header_timeout,
        idle: s.idle_timeout,
        send: s.send_timeout,
        body: s.body_timeout,
    }
}

/// The HTTP server settings shared by every proxy connection. The client
/// timeouts are the connection's [`Watchdog`]'s; hyper's own are backstops.
///
/// HTTP/2 streams run inside their connection's task ([`streams`]).
fn http_builder(s: &ServerConfig) -> auto::Builder<StreamExec> {
    let mut b = auto::Builder::new(StreamExec);
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper starts this when it begins reading a head, also when a
        // keep-alive connection goes idle: the watchdog ends the idle spell
        // (idle_timeout) and the head (header_timeout from its first byte)
        // first. A backstop only.
        .header_read_timeout(s.header_timeout.saturating_add(s.idle_timeout))
        .max_buf_size(max_head(s));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        // hyper's default, said out loud: streams one connection may hold.
        .max_concurrent_streams(200)
        // Finds dead peers under long streams; an idle connection is closed
        // by the watchdog whether or not it answers.
        .keep_alive_interval(Some(s.idle_timeout))
        .keep_alive_timeout(s.header_timeout);
    b
}

/// One client connection of the proxy: TLS first on https (in the
/// connection's own task, so a slow client cannot stall the accept loop),
/// then HTTP/1.1 or HTTP/2 under the client timeouts, closed gracefully at
/// shutdown.
///
/// This future is the connection's task for its whole life, so it is kept
/// small: an async block, not an async fn (whose arguments its state holds
/// twice, once as passed and once as moved into its body:
/// rust-lang/rust#62958), and every phase with a large state (the wait for
/// the first byte, TLS, serving) boxed and freed when it ends.
#[allow(clippy::manual_async_fn)] // an async fn would hold its arguments twice (see above)
fn proxy_conn(
    px: Arc<Proxy>,
    settings: Arc<ConnSettings>,
    stream: tokio::net::TcpStream,
    peer: Peer,
    mut shutdown: watch::Receiver<bool>,
    // Held until the connection ends: its `max_connections` slot.
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        let _slot = &permit;
        // Until its first byte, a connection costs this small task and its
        // socket: the TLS and HTTP state (several KiB) is allocated only once
        // the client sends something, so thousands of silent sockets stay
        // cheap (nginx allocates its buffers lazily the same way). The clock
        // of the first head (or of the handshake) still runs from the accept.
        let accepted = tokio::time::Instant::now();
        let first = if peer.https {
            crate::tls::HANDSHAKE_TIMEOUT
        } else {
            settings.timeouts.header
        };
        if *shutdown.borrow() {
            return;
        }
        let woke = Box::pin(async {
            tokio::select! {
                // Silent past its deadline, or the socket failed: dropped.
                r = tokio::time::timeout(first, stream.readable()) => matches!(r, Ok(Ok(()))),
                // Draining: a connection that never sent a byte has nothing
                // to finish.
                _ = shutdown.changed() => false,
            }
        });
        if !woke.await {
            return;
        }
        if !peer.https {
            return serve_plain(px, settings, stream, peer, accepted, shutdown).await;
        }
        let tls = px.control.tls.clone();
        let left = first.saturating_sub(accepted.elapsed());
        let Some((stream, sni)) = Box::pin(tls.accept(stream, left)).await else {
            return;
        };
        let now = tokio::time::Instant::now();
        Box::pin(serve_proxied(
            px,
            &settings,
            stream,
            peer,
            Some(sni),
            now,
            shutdown,
        ))
        .await
    }
}

/// Serves one plain-HTTP connection: simple HTTP/1.x requests on the
/// direct path ([`h1::serve`]), the rest of the connection from the first
/// request that is not simple with hyper (every connection with hyper when
/// `SWITCHYARD_DIRECT_SERVER=0`). The clocks start at `origin` (the accept).
/// One allocation: the direct path's future, with what the hand-over
/// needs in it once.
fn serve_plain(
    px: Arc<Proxy>,
    settings: Arc<ConnSettings>,
    stream: tokio::net::TcpStream,
    peer: Peer,
    origin: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    if !*h1::DIRECT_SERVER {
        return Box::pin(async move {
            serve_proxied(px, &settings, stream, peer, None, origin, shutdown).await
        });
    }
    let activity = Activity::since(origin);
    let watchdog = Watchdog::new(activity.clone(), settings.timeouts);
    let max_head = settings.max_head;
    let roster = settings.roster.clone();
    let direct = h1::serve(
        px.clone(),
        stream,
        peer,
        watchdog,
        max_head,
        &roster,
        move |h: h1::HandOver| {
            let svc = proxy_service(px, peer, None, activity, settings.timeouts.body);
            async move {
                let builder = if h.served {
                    &settings.h1_builder
                } else {
                    &settings.builder
                };
                serve_auto(builder, h.io, svc, h.watchdog, shutdown).await
            }
        },
    );
    Box::pin(direct)
}

/// Serves one connection (after TLS, if any) with its [`Activity`]: the
/// clocks of `header_timeout`, `idle_timeout` and `send_timeout` start at
/// `origin` (the accept, or the end of the TLS handshake).
async fn serve_proxied<I>(
    px: Arc<Proxy>,
    settings: &ConnSettings,
    io: I,
    peer: Peer,
    sni: Option<crate::tls::Sni>,
    origin: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Activity::since(origin);
    let svc = proxy_service(px, peer, sni, activity.clone(), settings.timeouts.body);
    let watchdog = Watchdog::new(activity.clone(), settings.timeouts);
    let io = Conn::new(io, activity);
    serve_auto(&settings.builder, io, svc, watchdog, shutdown).await
}

/// `proxy::handle` for each request of one connection, counted in its
/// [`Activity`] from the head until the response body ends; a request with a
/// body that stops coming for `body_timeout` before its answer starts is
/// answered 408 instead (and, on HTTP/1.1, its connection closed).
fn proxy_service(
    px: Arc<Proxy>,
    peer: Peer,
    sni: Option<crate::tls::Sni>,
    activity: Arc<Activity>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<proxy::ProxyBody>>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (px, activity, sni) = (px.clone(), activity.clone(), sni.clone());
        async move {
            let open = activity.request(req.version() == http::Version::HTTP_2);
            let req = req.map(proxy::RequestBody::Hyper);
            // Boxed: hyper keeps this future inline in each HTTP/2
            // stream's task (and moves it there by value), and
            // `proxy::handle`'s state is ~4.5 KiB; one allocation per request
            // on this path (TLS, HTTP/2, and what the direct path hands over)
            // is cheaper than copying it at every step.
            let resp = if http_body::Body::is_end_stream(req.body()) {
                Box::pin(proxy::handle(px, peer, sni, req)).await
            } else {
                Box::pin(with_body_timeout(
                    px,
                    peer,
                    sni,
                    req,
                    &activity,
                    body_timeout,
                ))
                .await
            };
            Ok(resp?.map(|body| Tracked::new(body, open)))
        }
    })
}

/// `proxy::handle`, or 408 once no byte came from the client for `timeout`
/// before the answer started (the request, and with it the backend
/// exchange, is dropped).
async fn with_body_timeout(
    px: Arc<Proxy>,
    peer: Peer,
    sni: Option<crate::tls::Sni>,
    req: Request<proxy::RequestBody>,
    activity: &Activity,
    timeout: Duration,
) -> Result<Response<proxy::ProxyBody>, Infallible> {
    let h1 = req.version() < http::Version::HTTP_2;
    let start = tokio::time::Instant::now();
    tokio::select! {
        biased;
        r = proxy::handle(px, peer, sni, req) => r,
        () = activity.read_stalled(start, timeout) => {
            tracing::debug!(client = %peer.addr, "request body stalled for body_timeout: 408");
            let mut r = proxy::plain(
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout: the request body stopped coming\n",
            );
            if h1 {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(r)
        }
    }
}

/// Drives one connection until it ends, a client timeout passes (see
/// [`Watchdog`]) or shutdown (then it finishes in-flight requests).
async fn serve_auto<I, S>(
    builder: &auto::Builder<StreamExec>,
    io: I,
    svc: S,
    mut watchdog: Watchdog,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Tracked<proxy::ProxyBody>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // Its HTTP/2 streams, polled by this task (dropped with it).
    let mut streams = Streams::default();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    // Polled only when the signal woke it (a poll of tokio's `Notified`
    // takes the waiters' lock; the task wakes for every read and stream).
    let gate = Gate::default();
    let mut stop = std::pin::pin!(shutdown.changed());
    loop {
        tokio::select! {
            r = streams.drive(conn.as_mut()) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            // The next round's drive polls the connection, which acts on
            // the shutdown (conn_changed: even when nothing woke it).
            _ = std::future::poll_fn(|cx| gate.poll(cx, |cx| stop.as_mut().poll(cx))), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
                streams.conn_changed();
            }
            e = watchdog.expired() => match e {
                Expired::Close(why) => {
                    tracing::debug!(reason = why.as_str(), "closing a client connection");
                    conn.as_mut().graceful_shutdown();
                    streams.conn_changed();
                }
                Expired::Abort(why) => {
                    tracing::debug!(reason = why.as_str(), "dropping a client connection");
                    return;
                }
            },
        }
    }
}

/// Serves `GET /metrics` until shutdown.
async fn serve_metrics(
    metrics: Arc<Metrics>,
    l: TcpListener,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let conn_shutdown = shutdown.clone();
    let slots = Slots::new(METRICS_MAX_CONNECTIONS);
    listener::serve(
        "metrics",
        l,
        slots,
        tracker,
        shutdown,
        move |stream, _, permit| {
            let (m, shutdown) = (metrics.clone(), conn_shutdown.clone());
            async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let m = m.clone();
                    async move { Ok::<_, Infallible>(metrics_answer(&m, req.uri().path())) }
                });
                listener::http1(stream, svc, METRICS_HEADER_TIMEOUT, shutdown).await;
                drop(permit);
            }
        },
    )
    .await;
}

fn metrics_answer(m: &Metrics, path: &str) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"metrics are at /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(m.encode())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Returns on SIGTERM, SIGINT or `stop`; reloads on SIGHUP meanwhile, each
/// reload in its own task so a slow one never delays a stop.
async fn wait_for_stop(control: &Arc<Control>, stop: impl Future<Output = ()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers; stop with the stop future only");
            stop.await;
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = &mut stop => return,
            _ = hup.recv() => {
                let c = control.clone();
                tokio::spawn(async move {
                    match crate::memory::control(move || c.reload("signal:SIGHUP", false)).await {
                        Ok(Ok(_)) => tracing::info!("reloaded on SIGHUP"),
                        Ok(Err(e)) => tracing::error!(error = %e, "reload on SIGHUP refused; the running config is kept"),
                        Err(_) => tracing::error!("reload task failed (a panic)"),
                    }
                });
            }
        }
    }
}
