//! Listeners, signals and graceful shutdown: the wiring of a running instance.
//!
//! ```text
//! run(app, config)
//!  ├─ http listener ── accept (max_connections permits) ─> hyper auto (h1 / h2c) ─> proxy::handle
//!  ├─ https listener ── accept ─> tls::TlsState::accept (SNI cert, ALPN h2 / http/1.1) ─> hyper auto ─> proxy::handle
//!  ├─ acme::spawn: orders and renews certificates for tls = "acme" routes
//!  ├─ admin socket  ── admin::serve
//!  ├─ metrics listener ── metrics::serve (GET /metrics)
//!  ├─ dashboard listener ── dashboard::serve (page + /v1 API behind a token); stats sampler (1 s)
//!  ├─ health::supervise: one probe task per checked backend; health::rebuilder
//!  ├─ ejection sweeper (1 s): lifts passive ejections whose time is up (pools without health checks)
//!  └─ signals: SIGHUP -> reload; SIGTERM/SIGINT -> stop accepting, drain
//!     in-flight requests for up to shutdown_grace, return
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::app::App;
use crate::config::{Config, ServerConfig};
use crate::events::NewEvent;
use crate::proxy::{self, Peer};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::DashboardError),
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
    pub dashboard: Option<crate::dashboard::Dashboard>,
}

/// Binds every listener of `config`.
pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
    // First: a bad dashboard token file stops the start before anything binds.
    let dashboard = crate::dashboard::bind(&config.admin).await?;
    let http = match config.server.http {
        Some(a) => Some(bind_tcp(a).await?),
        None => None,
    };
    let https = match config.server.https {
        Some(a) => Some(bind_tcp(a).await?),
        None => None,
    };
    let admin = crate::admin::bind(&config.admin.socket).map_err(|source| ServerError::Bind {
        addr: config.admin.socket.display().to_string(),
        source,
    })?;
    let metrics = match &config.metrics {
        Some(m) => Some(bind_tcp(m.listen).await?),
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

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let bind = |s: tokio::net::TcpSocket| -> std::io::Result<TcpListener> {
        s.set_reuseaddr(true)?;
        s.set_nodelay(true)?;
        s.bind(addr)?;
        s.listen(1024)
    };
    socket.and_then(bind).map_err(|source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Serves until `stop` resolves or SIGTERM/SIGINT arrives; SIGHUP reloads.
pub async fn run(
    app: Arc<App>,
    config: &Config,
    listeners: Listeners,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // Before any listener serves: the first request is logged too.
    if let Some(al) = &config.access_log {
        let log = crate::accesslog::AccessLog::start(
            al.format,
            al.target.clone(),
            app.metrics.access_log_dropped.clone(),
        )
        .map_err(|source| ServerError::AccessLog {
            target: format!("{:?}", al.target),
            source,
        })?;
        let _ = app.access_log.set(log);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = Arc::new(http_builder(&config.server));
    let permits = Arc::new(Semaphore::new(config.server.max_connections));
    let mut tasks = Vec::new();

    if let Some(l) = listeners.http {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, "listening for http");
        app.set_bound("http", addr);
        tasks.push(tokio::spawn(accept_loop(
            app.clone(),
            l,
            false,
            builder.clone(),
            graceful.clone(),
            permits.clone(),
            shutdown_rx.clone(),
        )));
    }
    // Before the https listener serves: stored certificates are loaded here.
    let acme = crate::acme::spawn(app.tls.clone(), config, shutdown_rx.clone());
    if let Some(l) = listeners.https {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, "listening for https");
        app.set_bound("https", addr);
        tasks.push(tokio::spawn(accept_loop(
            app.clone(),
            l,
            true,
            builder.clone(),
            graceful.clone(),
            permits.clone(),
            shutdown_rx.clone(),
        )));
    }
    app.set_bound("admin", listeners.admin_path.display().to_string());
    tracing::info!(socket = %listeners.admin_path.display(), "admin socket ready");
    let admin_task = tokio::spawn(crate::admin::serve(
        app.clone(),
        listeners.admin,
        shutdown_rx.clone(),
    ));
    let metrics_task = listeners.metrics.map(|l| {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, "serving metrics at /metrics");
        app.set_bound("metrics", addr);
        tokio::spawn(crate::metrics::serve(
            app.metrics.clone(),
            l,
            shutdown_rx.clone(),
        ))
    });
    let sweeper = tokio::spawn(sweep_ejections(app.clone(), shutdown_rx.clone()));
    let dashboard_tasks = crate::dashboard::spawn(&app, listeners.dashboard, shutdown_rx.clone());
    let health = tokio::spawn(crate::health::supervise(
        app.clone(),
        app.table_changed.clone(),
        shutdown_rx.clone(),
    ));
    let rebuilder = tokio::spawn(crate::health::rebuilder(
        app.clone(),
        app.rebuild_wanted.clone(),
        shutdown_rx.clone(),
    ));

    app.rollout_controller.resume_all(&app);

    wait_for_stop(&app, stop).await;
    app.rollout_controller.stop_all();

    tracing::info!(grace = ?config.server.shutdown_grace, "shutting down: no new connections, draining in-flight requests");
    let _ = shutdown_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = admin_task.await;
    let _ = sweeper.await;
    for t in dashboard_tasks {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = health.await;
    let _ = rebuilder.await;
    if let Some(t) = acme {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(&listeners.admin_path);
    if let Ok(g) = Arc::try_unwrap(graceful) {
        if tokio::time::timeout(config.server.shutdown_grace, g.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace ran out; closing the remaining connections");
        }
    }
    Ok(())
}

/// The HTTP server settings shared by every connection.
fn http_builder(s: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Also bounds how long an idle keep-alive connection may wait before
        // its next request starts (hyper starts this timer when idle).
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(s.idle_timeout))
        .keep_alive_timeout(s.header_timeout);
    b
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    https: bool,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // Wait for a connection slot first: past max_connections, new
        // connections wait in the kernel's backlog instead of being accepted.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer { addr, https };
        let app = app.clone();
        if https {
            // The handshake runs in the connection's own task, so a slow
            // client cannot stall the accept loop.
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = app.tls.clone();
                let accepted = tls.accept(stream, crate::tls::HANDSHAKE_TIMEOUT).await;
                if let Some((stream, sni)) = accepted {
                    let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                        req.extensions_mut().insert(sni.clone());
                        proxy::handle(app.clone(), peer, req)
                    });
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                }
                drop(permit);
            });
            continue;
        }
        let svc = hyper::service::service_fn(move |req| proxy::handle(app.clone(), peer, req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn sweep_ejections(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = app.now_ms();
        // In a pool with active health checks an ejected backend comes back
        // when its probe passes (health::probe_loop); the clock only frees
        // backends nothing else would ever check.
        let checked: std::collections::HashSet<String> = app
            .effective_config()
            .pools
            .into_iter()
            .filter(|(_, p)| p.health.is_some())
            .map(|(name, _)| name)
            .collect();
        for b in app.registry.all() {
            if checked.contains(&b.key.pool) {
                continue;
            }
            if b.expire_ejection(now) {
                let k = &b.key;
                app.events.record(NewEvent {
                    who: "proxy".into(),
                    kind: "backend.restored",
                    pool: Some(k.pool.clone()),
                    what: format!(
                        "{}/{} backend {} back in rotation after its ejection time",
                        k.pool, k.version, k.addr
                    ),
                    ..Default::default()
                });
                app.request_rebuild();
            }
        }
    }
}

/// Returns on SIGTERM, SIGINT or `stop`; reloads on SIGHUP meanwhile.
async fn wait_for_stop(app: &Arc<App>, stop: impl Future<Output = ()>) {
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
                let app = app.clone();
                match tokio::task::spawn_blocking(move || app.reload("signal:SIGHUP")).await {
                    Ok(Ok(_)) => tracing::info!("reloaded on SIGHUP"),
                    Ok(Err(e)) => tracing::error!(error = %e, "reload on SIGHUP refused; the running config is kept"),
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        }
    }
}
