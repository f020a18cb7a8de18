//! One way to serve a listener, for every listener: the proxy's, the admin
//! socket, the dashboard and the metrics endpoint.
//!
//! ```text
//! serve(listener, limits) ── connection slot (max_connections) ── accept (backoff on EMFILE)
//!                         ── task on the shared TaskTracker, holding the slot
//!                              └─ the caller's connection handler
//! http1(io, service, header_timeout, shutdown)  an HTTP/1.1 connection with a header
//!                                                timeout, closed gracefully at shutdown
//! conn::{Conn, Activity, Tracked, Watchdog}      the proxy's client connections: every
//!                                                protocol stage under a deadline
//! ```
//!
//! Every task lands on one [`TaskTracker`], so shutdown is: tell everyone
//! (`shutdown`), close the tracker, wait for it (bounded by the grace).

pub mod conn;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// Something that accepts connections.
pub trait Listen: Send + Sync + 'static {
    type Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    type Peer: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, Self::Peer)>> + Send;
}

impl Listen for TcpListener {
    type Conn = TcpStream;
    type Peer = std::net::SocketAddr;
    async fn accept(&self) -> io::Result<(TcpStream, std::net::SocketAddr)> {
        let (s, a) = TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, a))
    }
}

impl Listen for UnixListener {
    type Conn = UnixStream;
    type Peer = ();
    async fn accept(&self) -> io::Result<(UnixStream, ())> {
        UnixListener::accept(self).await.map(|(s, _)| (s, ()))
    }
}

/// How many connections a listener holds at once.
#[derive(Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots(Arc::new(Semaphore::new(max.max(1))))
    }
}

/// Accepts connections until `shutdown`, each in a task on `tracker` that
/// holds a slot until `handle` returns. Past the limit, new connections wait
/// in the kernel's backlog instead of being accepted.
pub async fn serve<L, H, F>(
    name: &'static str,
    listener: L,
    slots: Slots,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    L: Listen,
    H: Fn(L::Conn, L::Peer, OwnedSemaphorePermit) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let permit = tokio::select! {
            p = slots.0.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        tracker.spawn(handle(conn, peer, permit));
    }
}

/// Serves one HTTP/1.1 connection: the client has `header_timeout` for each
/// request head (and for the next one on an idle keep-alive connection); at
/// shutdown the connection finishes its request and closes.
pub async fn http1<I, S, B>(
    io: I,
    service: S,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    if *shutdown.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
