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
pub mod gate;

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
use tokio::task::unconstrained;
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
    shutdown: watch::Receiver<bool>,
    handle: H,
) where
    L: Listen,
    H: Fn(L::Conn, L::Peer, OwnedSemaphorePermit) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    accept_loop(
        name,
        listener,
        slots,
        tracker,
        shutdown,
        handle,
        ACCEPT_BATCH,
    )
    .await;
}

/// [`serve`], letting the tasks run after each `batch` connections.
async fn accept_loop<L, H, F>(
    name: &'static str,
    listener: L,
    slots: Slots,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
    batch: u32,
) where
    L: Listen,
    H: Fn(L::Conn, L::Peer, OwnedSemaphorePermit) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut in_turn = 0;
    loop {
        // Out of tokio's cooperative budget (128 operations a turn): a
        // crowd connecting at once is taken from the kernel's backlog in
        // batches of ACCEPT_BATCH, not 128 at a time between turns of every
        // connection already served. A backlog left to fill overflows, and a
        // client whose handshake the kernel then dropped waits seconds for
        // its retransmission.
        let permit = tokio::select! {
            p = unconstrained(slots.0.clone().acquire_owned()) => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (conn, peer) = tokio::select! {
            r = unconstrained(listener.accept()) => match r {
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
        in_turn += 1;
        if in_turn >= batch {
            // The connections accepted get their turn.
            in_turn = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Connections a listener accepts before it lets the others run, when the
/// kernel's backlog holds that many (HAProxy's `tune.maxaccept` is 64 per
/// listener and event-loop pass; a tokio turn costs more than a pass, so
/// more here).
const ACCEPT_BATCH: u32 = 512;

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A crowd already in the backlog is accepted in batches: the first
    /// connection's handler runs only after `batch` accepts (not after
    /// tokio's budget of 128), and every connection is served.
    #[tokio::test(flavor = "current_thread")]
    async fn a_crowd_in_the_backlog_is_accepted_in_batches() {
        const CROWD: usize = 300;
        const BATCH: u32 = 200;
        // The crowd must fit in the backlog, which the kernel caps.
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok());
        assert!(
            cap.is_some_and(|c| c >= CROWD),
            "net.core.somaxconn is {cap:?}: this test needs at least {CROWD}"
        );
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        // Every handshake completes in the kernel before the first accept.
        let mut clients = Vec::new();
        for _ in 0..CROWD {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen_first = Arc::new(AtomicUsize::new(usize::MAX));
        let (_stop, shutdown) = watch::channel(false);
        let tracker = TaskTracker::new();
        let (a, s) = (accepted.clone(), seen_first.clone());
        let handle = move |mut conn: TcpStream, _, _permit| {
            a.fetch_add(1, Ordering::SeqCst);
            let (a, s) = (a.clone(), s.clone());
            // The first handler to run notes how many were accepted by then.
            async move {
                let _ = s.compare_exchange(
                    usize::MAX,
                    a.load(Ordering::SeqCst),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                let _ = conn.write_all(b"ok").await;
            }
        };
        tokio::spawn(accept_loop(
            "test",
            listener,
            Slots::new(CROWD * 2),
            tracker,
            shutdown,
            handle,
            BATCH,
        ));
        for mut c in clients {
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            assert_eq!(buf, b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), CROWD);
        assert_eq!(seen_first.load(Ordering::SeqCst), BATCH as usize);
    }
}
