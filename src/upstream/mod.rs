//! Backends: their live state and their pooled keep-alive connections.
//!
//! A [`Backend`] is keyed by (pool, version, address) and lives in the
//! [`BackendRegistry`]; successive routing tables share the same `Arc`, so a
//! weight change or a reload resets neither health nor pooled connections.
//! When the last backend at an address leaves every table, the idle
//! connections of that address drop with it and are closed.
//!
//! Two idle stacks per address: plain sockets for the direct exchange of
//! [`crate::upstream::h1`] (bodiless requests, nearly all traffic), and hyper client
//! connections for requests with a body or an upgrade. The stacks of an
//! address are shared by every backend at that address (the same origin
//! serving several pools or versions): each request carries its own Host,
//! so a connection is as good for one as for another, and 10 000 routes to
//! one origin keep a handful of connections instead of one per route.
//! Health, ejection and in-flight counts stay per backend.
//!
//! ```text
//! checkout: idle stack (LIFO, warmest first) -> else connect (connect_timeout)
//!           (a pooled socket the backend closed or wrote to is dropped)
//! checkin:  when the response body has been read to its end
//! ```

pub mod h1;
pub mod probe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::BackendAddr;
use crate::upstream::h1::RawConn;

/// Idle connections kept per address, at least; more after more requests
/// were in flight to it at once (see [`push_idle`]).
const MAX_IDLE: usize = 256;

/// The body sent upstream: the client's, streamed (what became of it
/// recorded in a [`ClientBody`]), or nothing (which lets a bodiless request
/// be sent again on a retry).
pub enum UpBody {
    Client(RequestBody, Arc<ClientBody>),
    Empty,
}

/// The body of every request the proxy serves: hyper's (HTTP/2, TLS, a
/// request with a body or an upgrade), or none at all (a bodiless request
/// parsed by the direct HTTP/1.1 server path, see `crate::server::h1`).
pub enum RequestBody {
    Hyper(Incoming),
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// What became of a client's request body while hyper's client streamed
/// it: after a failed or timed-out attempt, whether the client (a malformed
/// or cut body, a stalled upload) or the backend is to blame.
#[derive(Default)]
pub struct ClientBody(AtomicU8);

const BODY_STREAMING: u8 = 0;
const BODY_WAITING: u8 = 1;
const BODY_DONE: u8 = 2;
const BODY_FAILED: u8 = 3;

impl ClientBody {
    /// The client's body ended with an error (malformed framing, the client
    /// gone mid-upload).
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BODY_FAILED
    }

    /// The upload was waiting for the client's next bytes when last polled
    /// (not for the backend to take more).
    pub fn waiting_for_client(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BODY_WAITING
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Client(b, state) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                let now = match &r {
                    Poll::Pending => BODY_WAITING,
                    Poll::Ready(Some(Err(_))) => BODY_FAILED,
                    Poll::Ready(None) => BODY_DONE,
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => BODY_DONE,
                    Poll::Ready(Some(Ok(_))) => BODY_STREAMING,
                };
                state.0.store(now, Ordering::Relaxed);
                r
            }
            UpBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Client(b, _) => b.is_end_stream(),
            UpBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Client(b, _) => b.size_hint(),
            UpBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Identity of a backend across routing tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// The names as the routing table's pool and version hold them: a key
    /// (the backend's own and the registry's copy) copies no text.
    pub pool: Arc<str>,
    pub version: Arc<str>,
    pub addr: BackendAddr,
}

/// Why connecting to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("http handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// A connection ready to carry one request.
pub struct Conn {
    pub sender: SendRequest<UpBody>,
    /// True when taken from the idle pool (it may have been closed by the
    /// backend meanwhile; a failed send on it is safe to retry).
    pub reused: bool,
    /// A second handle on the socket hyper's connection task owns, to look
    /// at an idle connection before reuse (see [`Backend::checkout`]).
    watch: std::net::TcpStream,
}

/// Whether an idle socket is quiet: the backend neither closed it nor sent
/// anything unasked (a body after a HEAD, 204 or 304 head, bytes past the
/// Content-Length). A peek: nothing is consumed.
fn is_quiet(s: &std::net::TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// One backend's live state.
pub struct Backend {
    pub key: BackendKey,
    /// Pre-parsed when the address is an IP literal (no resolver call).
    literal: Option<SocketAddr>,
    /// Set by active probes. Starts true: a backend is in rotation until its
    /// first failed checks.
    healthy: AtomicBool,
    /// False until the first probe result or the first live request's
    /// outcome: until then, "healthy" is an assumption (it starts in
    /// rotation) and `GET /v1/state` says "unknown".
    seen: AtomicBool,
    /// Set by passive ejection from live traffic.
    ejected: AtomicBool,
    /// When the passive ejection ends (ms since the registry's epoch).
    ejected_until_ms: AtomicU64,
    /// Consecutive failures seen on live traffic.
    consecutive_failures: AtomicU32,
    /// Requests sent and not yet finished (response body included).
    pub in_flight: AtomicUsize,
    /// The most requests that were in flight at once (see [`push_idle`]).
    peak_in_flight: AtomicUsize,
    /// The idle connections of this backend's address.
    conns: Arc<IdleConns>,
    /// The pool's `max_connections_per_backend`, when it sets one: a slot
    /// per request in flight, and the FIFO queue of those waiting for one.
    slots: arc_swap::ArcSwapOption<Slots>,
    /// Requests waiting in that queue now.
    queued: AtomicUsize,
}

/// A cap on the requests in flight to one backend.
struct Slots {
    limit: u32,
    sem: Arc<tokio::sync::Semaphore>,
}

/// A place among a capped backend's requests in flight, held until the
/// response ends (then the next request in the queue goes).
pub type Slot = tokio::sync::OwnedSemaphorePermit;

/// No slot of a capped backend freed within the queue timeout.
#[derive(Debug, thiserror::Error)]
#[error("every connection to the backend stayed busy for the queue timeout")]
pub struct QueueTimeout;

/// The idle connections to one address, shared by the backends at it.
#[derive(Default)]
pub struct IdleConns {
    /// Idle hyper client connections (requests with a body or an upgrade).
    idle: Mutex<Vec<Idle<Conn>>>,
    /// Idle connections for the direct exchange of [`crate::upstream::h1`].
    raw_idle: Mutex<Vec<Idle<RawConn>>>,
}

// === impl Backend ===

impl Backend {
    /// A backend with idle connections of its own.
    pub fn new(key: BackendKey) -> Backend {
        Backend::with_conns(key, Arc::default())
    }

    /// A backend using the idle connections `conns` of its address.
    fn with_conns(key: BackendKey, conns: Arc<IdleConns>) -> Backend {
        let literal = key.addr.as_str().parse().ok();
        Backend {
            key,
            literal,
            healthy: AtomicBool::new(true),
            seen: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            conns,
            slots: arc_swap::ArcSwapOption::empty(),
            queued: AtomicUsize::new(0),
        }
    }

    /// A slot for one request under a cap of `limit` requests in flight
    /// (0: none, and no slot is needed), without waiting: `Ok` when no cap
    /// applies or a slot was free, else the semaphore to wait on with
    /// [`Backend::wait_slot`], in FIFO order behind the requests already
    /// queued. The request path awaits the wait only when it is needed, so
    /// its future does not carry the wait's state. A changed limit (a
    /// reload) takes effect for the requests that start after it; the ones
    /// in flight keep the slots they hold of the old cap.
    pub fn try_slot(&self, limit: u32) -> Result<Option<Slot>, Arc<tokio::sync::Semaphore>> {
        let Some(sem) = self.slots_for(limit) else {
            return Ok(None);
        };
        match sem.clone().try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(sem),
        }
    }

    /// Waits up to `wait` for a slot of `sem` (from [`Backend::try_slot`]).
    pub async fn wait_slot(
        &self,
        sem: Arc<tokio::sync::Semaphore>,
        wait: Duration,
    ) -> Result<Option<Slot>, QueueTimeout> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let r = tokio::time::timeout(wait, sem.acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok(Ok(p)) => Ok(Some(p)),
            // Timed out (the semaphore is never closed).
            _ => Err(QueueTimeout),
        }
    }

    /// Whether a request under a cap of `limit` would get a slot at once
    /// (none taken, nobody queued).
    pub fn has_room(&self, limit: u32) -> bool {
        limit == 0
            || match &*self.slots.load() {
                Some(s) if s.limit == limit => {
                    s.sem.available_permits() > 0 && self.queued.load(Ordering::Relaxed) == 0
                }
                _ => true,
            }
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn slots_for(&self, limit: u32) -> Option<Arc<tokio::sync::Semaphore>> {
        if limit == 0 {
            if self.slots.load().is_some() {
                self.slots.store(None);
            }
            return None;
        }
        if let Some(s) = &*self.slots.load() {
            if s.limit == limit {
                return Some(s.sem.clone());
            }
        }
        let fresh = Arc::new(Slots {
            limit,
            sem: Arc::new(tokio::sync::Semaphore::new(limit as usize)),
        });
        // Two requests may race to set the cap: whichever stores first
        // wins, and both use its semaphore.
        self.slots.rcu(|cur| match cur {
            Some(s) if s.limit == limit => Some(s.clone()),
            _ => Some(fresh.clone()),
        });
        match &*self.slots.load() {
            Some(s) if s.limit == limit => Some(s.sem.clone()),
            _ => Some(fresh.sem.clone()),
        }
    }

    /// A request to this backend starts (until its response body ends or
    /// it fails: then `in_flight` is decremented by its guard).
    #[inline]
    pub fn begin_request(&self) {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        // A load first: the cache line is written only at a new peak.
        if n > self.peak_in_flight.load(Ordering::Relaxed) {
            self.peak_in_flight.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// In rotation: healthy by probes and not ejected by live traffic.
    #[inline]
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Whether a probe or a live request has said anything about this
    /// backend yet.
    pub fn is_known(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    /// A probe or a request outcome came in (a load before the store: the
    /// request path writes the cache line once, not at every request).
    #[inline]
    pub fn mark_known(&self) {
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Sets the probe verdict; returns true when it changed.
    pub fn set_healthy(&self, up: bool) -> bool {
        let was = self.healthy.swap(up, Ordering::Relaxed);
        if up {
            // A passing probe also ends a passive ejection.
            self.ejected.store(false, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        was != up
    }

    /// Records a live-traffic outcome. Returns true when this failure ejects
    /// the backend (`threshold` consecutive failures; 0 disables ejection).
    #[inline]
    pub fn record_outcome(&self, ok: bool, threshold: u32, now_ms: u64, ejection_ms: u64) -> bool {
        self.mark_known();
        if ok {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold > 0 && n >= threshold && !self.ejected.swap(true, Ordering::Relaxed) {
            self.ejected_until_ms
                .store(now_ms + ejection_ms, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Lifts a passive ejection whose time is up; true when it was lifted.
    pub fn expire_ejection(&self, now_ms: u64) -> bool {
        if self.ejected.load(Ordering::Relaxed)
            && now_ms >= self.ejected_until_ms.load(Ordering::Relaxed)
        {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return self.ejected.swap(false, Ordering::Relaxed);
        }
        false
    }

    /// A pooled connection, or a new one. A pooled one is looked at first
    /// with a peek on its socket (one system call): one the backend closed
    /// or wrote to while it sat idle is dropped, whether or not hyper's
    /// connection task has noticed yet, so stray bytes are never read as the
    /// next request's answer.
    pub async fn checkout(
        &self,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        loop {
            let idle = self
                .conns
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let Some(idle) = idle else { break };
            if idle.since.elapsed() > idle_timeout
                || idle.conn.sender.is_closed()
                || !is_quiet(&idle.conn.watch)
            {
                continue;
            }
            let mut conn = idle.conn;
            if conn.sender.ready().await.is_ok() {
                conn.reused = true;
                return Ok(conn);
            }
        }
        let stream = self.connect(connect_timeout).await?;
        // A duplicate of the socket (the same file description), kept to
        // look at it while hyper's task owns the stream.
        let std = stream.into_std()?;
        let watch = std.try_clone()?;
        let stream = TcpStream::from_std(std)?;
        let (sender, conn) = http1::Builder::new()
            // The response head limit of the direct exchange (h1), so that
            // both paths refuse the same heads: 502.
            .max_buf_size(crate::upstream::h1::MAX_HEAD)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            // Errors here are the backend closing; the request that used the
            // connection has already seen them.
            let _ = conn.with_upgrades().await;
        });
        Ok(Conn {
            sender,
            reused: false,
            watch,
        })
    }

    /// A pooled connection for the direct exchange (unless `fresh`), or a
    /// new one; the flag says whether it was pooled (it may have been closed
    /// meanwhile).
    pub async fn checkout_raw(
        &self,
        connect_timeout: Duration,
        idle_timeout: Duration,
        fresh: bool,
    ) -> Result<(RawConn, bool), ConnectError> {
        if !fresh {
            loop {
                let idle = self
                    .conns
                    .raw_idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop();
                let Some(idle) = idle else { break };
                if idle.since.elapsed() <= idle_timeout && idle.conn.is_reusable() {
                    return Ok((idle.conn, true));
                }
            }
        }
        let stream = self.connect(connect_timeout).await?;
        Ok((RawConn::new(stream), false))
    }

    async fn connect(&self, timeout: Duration) -> Result<TcpStream, ConnectError> {
        let connect = async {
            let stream = match self.literal {
                Some(addr) => TcpStream::connect(addr).await?,
                // A name: resolved through the system resolver at every new
                // connection, so a Compose service that moves is followed.
                None => TcpStream::connect(self.key.addr.as_str()).await?,
            };
            stream.set_nodelay(true)?;
            Ok::<_, ConnectError>(stream)
        };
        // Boxed: connecting (a name lookup included) is rare next to reuse,
        // and its future would otherwise sit in every request's future.
        match tokio::time::timeout(timeout, Box::pin(connect)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    /// Returns a connection whose exchange finished cleanly.
    pub fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        push_idle(
            &self.conns.idle,
            conn,
            self.peak_in_flight.load(Ordering::Relaxed),
        );
    }

    /// Returns a direct-exchange connection whose response ended cleanly.
    pub fn checkin_raw(&self, conn: RawConn) {
        push_idle(
            &self.conns.raw_idle,
            conn,
            self.peak_in_flight.load(Ordering::Relaxed),
        );
    }

    /// Drops every idle connection to this backend's address (it failed,
    /// or it is leaving every table).
    pub fn close_idle(&self) {
        self.conns
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.conns
            .raw_idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Keeps a connection whose exchange ended (else it drops, and closes)
/// while fewer than `MAX_IDLE`, or than the most requests ever in flight to
/// its backend at once (`peak`), are idle. A fixed cap of 256 closed
/// connections a sustained load needed again at once: 1 000 concurrent
/// HTTP/2 streams (forwarded as 1 000 HTTP/1.1 exchanges) opened a new
/// backend connection for 15 % of the requests (HAProxy: none), and a cap
/// of the requests in flight at the moment still 9-10 %, as that number swings
/// within a turn of the event loop. The stack never holds more connections
/// than were open at once anyway; after a burst they stay, idle, until
/// taken (a stale one is dropped then) or the backend leaves.
fn push_idle<C>(pool: &Mutex<Vec<Idle<C>>>, conn: C, peak: usize) {
    let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < MAX_IDLE.max(peak) {
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// Backends by identity ([`Arc::as_ptr`] of the registry's): what a table
/// build uses, hashed with a fast hasher (the pointers are the registry's
/// own, not input).
pub type BackendSet = std::collections::HashSet<*const Backend, foldhash::fast::RandomState>;

/// Every backend of every table, by identity, and the idle connections of
/// each address they use.
#[derive(Default)]
pub struct BackendRegistry {
    map: Mutex<Registered>,
}

#[derive(Default)]
struct Registered {
    backends: HashMap<BackendKey, Arc<Backend>>,
    /// Held by the backends at each address; gone with the last of them.
    conns: HashMap<BackendAddr, Weak<IdleConns>>,
}

// === impl BackendRegistry ===

impl BackendRegistry {
    /// The backend for `key`, created healthy when new, sharing the idle
    /// connections of the other backends at its address.
    pub fn get_or_create(&self, key: BackendKey) -> Arc<Backend> {
        let mut guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *guard;
        if let Some(b) = r.backends.get(&key) {
            return b.clone();
        }
        let conns = match r.conns.get(&key.addr).and_then(Weak::upgrade) {
            Some(c) => c,
            None => {
                let c = Arc::new(IdleConns::default());
                r.conns.insert(key.addr.clone(), Arc::downgrade(&c));
                c
            }
        };
        let b = Arc::new(Backend::with_conns(key.clone(), conns));
        r.backends.insert(key, b.clone());
        b
    }

    /// Forgets backends not in `keep`, which names backends by identity
    /// ([`Arc::as_ptr`] of the ones this registry handed out: no key is
    /// copied to build it), closing the idle connections of an address no
    /// kept backend uses. In-flight requests keep their own `Arc` and finish
    /// normally.
    pub fn retain(&self, keep: &BackendSet) {
        let mut guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *guard;
        let mut gone = Vec::new();
        r.backends.retain(|_, b| {
            let kept = keep.contains(&Arc::as_ptr(b));
            if !kept {
                gone.push(b.clone());
            }
            kept
        });
        if gone.is_empty() {
            // Nothing to close: every address keeps the backends it had. (An
            // address whose last backend went while a request held its
            // connections stays listed until a retain that drops something.)
            return;
        }
        let used: std::collections::HashSet<&BackendAddr> =
            r.backends.keys().map(|k| &k.addr).collect();
        for b in &gone {
            if !used.contains(&b.key.addr) {
                b.close_idle();
            }
        }
        r.conns
            .retain(|addr, c| used.contains(addr) || c.strong_count() > 0);
    }

    /// The backends passive checks have ejected, in key order: what the
    /// once-a-second sweep looks at, without copying or sorting the others
    /// (20 000 at 10 000 pools).
    pub fn ejected(&self) -> Vec<Arc<Backend>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .backends
            .values()
            .filter(|b| b.is_ejected())
            .cloned()
            .collect();
        drop(map);
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.backends.values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        Backend::new(BackendKey {
            pool: "p".into(),
            version: "v".into(),
            addr: BackendAddr::parse("127.0.0.1:1").unwrap(),
        })
    }

    fn key(pool: &str, addr: &str) -> BackendKey {
        BackendKey {
            pool: pool.into(),
            version: "v".into(),
            addr: BackendAddr::parse(addr).unwrap(),
        }
    }

    #[test]
    fn backends_at_one_address_share_idle_connections_and_nothing_else() {
        let r = BackendRegistry::default();
        let a = r.get_or_create(key("a", "127.0.0.1:1"));
        let b = r.get_or_create(key("b", "127.0.0.1:1"));
        let c = r.get_or_create(key("c", "127.0.0.1:2"));
        assert!(Arc::ptr_eq(&a.conns, &b.conns));
        assert!(!Arc::ptr_eq(&a.conns, &c.conns));
        assert!(Arc::ptr_eq(&a, &r.get_or_create(key("a", "127.0.0.1:1"))));
        // Health stays per backend.
        a.record_outcome(false, 1, 0, 1000);
        assert!(!a.is_available() && b.is_available());
        // Dropping "a" keeps the address's connections for "b".
        r.retain(&[Arc::as_ptr(&b), Arc::as_ptr(&c)].into_iter().collect());
        assert_eq!(r.all().len(), 2);
        assert!(Arc::ptr_eq(
            &b.conns,
            &r.get_or_create(key("d", "127.0.0.1:1")).conns
        ));
        // With every backend at an address gone and dropped, the next one
        // at it starts a new set.
        r.retain(&BackendSet::default());
        let weak = Arc::downgrade(&b.conns);
        drop((a, b, c));
        assert!(weak.upgrade().is_none());
        let e = r.get_or_create(key("e", "127.0.0.1:1"));
        assert_eq!(Arc::strong_count(&e.conns), 1);
    }

    #[test]
    fn passive_ejection_after_threshold_and_expiry() {
        let b = backend();
        assert!(b.is_available());
        assert!(!b.record_outcome(false, 3, 0, 1000));
        assert!(!b.record_outcome(false, 3, 0, 1000));
        assert!(b.record_outcome(false, 3, 0, 1000));
        assert!(!b.is_available());
        assert!(!b.record_outcome(false, 3, 0, 1000), "already ejected");
        assert!(!b.expire_ejection(999));
        assert!(b.expire_ejection(1000));
        assert!(b.is_available());
    }

    #[test]
    fn success_resets_the_count_and_zero_disables() {
        let b = backend();
        b.record_outcome(false, 2, 0, 10);
        b.record_outcome(true, 2, 0, 10);
        assert!(
            !b.record_outcome(false, 2, 0, 10),
            "the count restarted after a success"
        );
        let c = backend();
        for _ in 0..100 {
            assert!(!c.record_outcome(false, 0, 0, 10));
        }
        assert!(c.is_available(), "threshold 0 never ejects");
    }

    #[test]
    fn probe_pass_lifts_ejection() {
        let b = backend();
        b.record_outcome(false, 1, 0, 10_000);
        assert!(!b.is_available());
        assert!(!b.set_healthy(true));
        assert!(b.is_available());
        assert!(b.set_healthy(false));
        assert!(!b.is_available());
    }

    #[test]
    fn idle_stack_holds_max_idle_or_the_peak_in_flight() {
        let pool: Mutex<Vec<Idle<u32>>> = Mutex::new(Vec::new());
        for i in 0..300 {
            push_idle(&pool, i, 1);
        }
        assert_eq!(
            pool.lock().unwrap().len(),
            MAX_IDLE,
            "light load: the fixed cap"
        );
        for i in 0..1000 {
            push_idle(&pool, i, 900);
        }
        assert_eq!(
            pool.lock().unwrap().len(),
            900,
            "a peak of 900 in flight: as many kept, no more"
        );
        let b = backend();
        for _ in 0..3 {
            b.begin_request();
        }
        b.in_flight.store(1, Ordering::Relaxed);
        b.begin_request();
        assert_eq!(b.peak_in_flight.load(Ordering::Relaxed), 3);
    }
}
