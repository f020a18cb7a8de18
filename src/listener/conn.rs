//! Deadlines for one client connection of the proxy, whatever its protocol
//! stage: nothing sent, half a preface, a TLS session with no request, an idle
//! keep-alive or HTTP/2 connection, a client that stops reading, a request
//! body that stops coming.
//!
//! ```text
//! accepted stream (TCP, or TLS after the handshake)
//!  └─ Conn<IO> ── records read progress and writes that block ──┐
//!        └─ hyper auto (h1 / h2)                                 │
//!             └─ service: Activity::request() ── Tracked<body> ──┤ Arc<Activity>
//!                                                                │ (atomics)
//! Watchdog::expired() ── reads the Activity, sleeps until the ───┘
//!   earliest deadline, says Close (graceful) or Abort (drop it)
//! ```
//!
//! | clock | runs while | starts | on expiry |
//! |---|---|---|---|
//! | first request | no request yet | accept (after TLS) | abort |
//! | next head (HTTP/1.1) | idle, and a byte of the next request came | that byte | abort |
//! | idle | no request in flight | the last request's end | graceful close |
//! | send | a write blocks, or (HTTP/2) a response body waits for the client's window | then | abort |
//! | body | a request with a body waits for its answer head | the last byte read | 408 (the service) |
//!
//! Nothing here sleeps per read or write: the IO wrapper and the response
//! bodies only store timestamps in atomics; the [`Watchdog`] sleeps until the
//! earliest deadline that can apply and re-reads them when it wakes. A clock
//! that may start later (a write that blocks a moment from now) cannot end
//! before now plus its timeout, so the watchdog never sleeps past the
//! shortest timeout and misses nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::sync::LazyLock;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use futures_util::task::AtomicWaker;

use super::gate::Gated;

/// The client-side timeouts (`[server]` keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The first request, and on HTTP/1.1 each later head from its first byte.
    pub header: Duration,
    /// No request in flight.
    pub idle: Duration,
    /// A write, or a response body handed to hyper, making no progress.
    pub send: Duration,
    /// A request body making no progress before its answer starts.
    pub body: Duration,
}

impl Timeouts {
    /// The shortest clock that may start at any moment.
    fn shortest(&self) -> Duration {
        self.header.min(self.idle).min(self.send)
    }
}

/// "Not set" for the timestamps below.
const NONE: u64 = u64::MAX;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NONE)
}

/// What one connection has been doing: shared by its IO wrapper, its
/// requests and response bodies (on HTTP/2 in other tasks) and its watchdog.
/// Times are nanoseconds since `origin`; every field is a relaxed atomic. On
/// HTTP/1.1 all of it happens on the connection's task; on HTTP/2 a request
/// starting on another thread may be seen a moment late, so at worst an idle
/// close (a graceful one) begins as a stream opens, and that stream finishes.
///
/// One per connection, idle ones included, and its size counts twice:
/// glibc serves it from a size class shared with other small blocks of a
/// connection's life, and 32 bytes more (one class up) cost 0.19 KiB per
/// idle connection in `benches/many_conns.sh`, through fragmentation. The
/// origin is therefore nanoseconds from a process-wide base (8 bytes, not
/// an `Instant`'s 16), the counters are 32-bit, and the timer's flag sits
/// with the other flags: 88 bytes, the class it had before the timer's
/// gate came.
#[derive(Debug)]
pub struct Activity {
    /// Nanoseconds from [`CLOCK_BASE`].
    origin: u64,
    /// The last read that returned bytes.
    last_read: AtomicU64,
    /// When a write (or flush) last returned `Pending` without a write
    /// making progress since; `NONE` while writes go through.
    write_blocked: AtomicU64,
    /// Requests started and not finished (response body ended or dropped).
    open: AtomicU32,
    /// Whether any request started yet.
    started: AtomicBool,
    /// Whether the requests are HTTP/2 (idle HTTP/2 connections exchange
    /// PINGs and SETTINGS: those bytes start no head clock).
    h2: AtomicBool,
    /// When `open` last fell to zero.
    idle_since: AtomicU64,
    /// The first byte read since then (HTTP/1.1: the next head began).
    head_began: AtomicU64,
    /// Response bodies that handed hyper a frame and were not polled since
    /// (on HTTP/2: the client is not opening its window).
    bodies_waiting: AtomicU32,
    /// The last time a waiting body was polled again, or began waiting.
    body_moved: AtomicU64,
    /// The watchdog's timer is polled only when it fired (the
    /// connection's task wakes far more often than its deadlines pass):
    /// its [`Gated`] is these two, and the Activity is the timer's waker,
    /// so that this costs no allocation of its own.
    timer_fired: AtomicBool,
    timer_task: AtomicWaker,
    /// Shutdown began ([`Roster::close_all`]): the connection finishes
    /// what it has in flight and closes.
    draining: AtomicBool,
}

/// The waker of the connection's watchdog timer.
impl Wake for Activity {
    fn wake(self: Arc<Self>) {
        self.timer().wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.timer().wake();
    }
}

/// What the connections' origins count from: a moment before the first of
/// them (it is taken before the first origin is converted, and an origin
/// before it counts as the base itself, at most the microseconds between).
static CLOCK_BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Activity {
    /// A connection starting now (after its TLS handshake, if any).
    pub fn new() -> Arc<Activity> {
        Activity::since(Instant::now())
    }

    /// Clocks that started at `origin` (the accept of a connection that was
    /// left waiting for its first byte before anything else was set up).
    pub fn since(origin: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            origin: nanos(origin.saturating_duration_since(*CLOCK_BASE)),
            last_read: AtomicU64::new(0),
            write_blocked: AtomicU64::new(NONE),
            open: AtomicU32::new(0),
            started: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_began: AtomicU64::new(NONE),
            bodies_waiting: AtomicU32::new(0),
            body_moved: AtomicU64::new(0),
            timer_fired: AtomicBool::new(true),
            timer_task: AtomicWaker::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// The connection's clocks' origin.
    fn origin(&self) -> Instant {
        *CLOCK_BASE + Duration::from_nanos(self.origin)
    }

    fn now(&self) -> u64 {
        nanos(CLOCK_BASE.elapsed()).saturating_sub(self.origin)
    }

    fn at(&self, t: u64) -> Instant {
        *CLOCK_BASE + Duration::from_nanos(self.origin.saturating_add(t))
    }

    /// The watchdog timer's gate.
    fn timer(&self) -> Gated<'_> {
        Gated::new(&self.timer_fired, &self.timer_task)
    }

    /// Whether shutdown began for this connection ([`Roster::close_all`]).
    /// Nothing registers to be woken by it: the task whose watchdog last
    /// waited is woken through the watchdog's own waker, so a task that
    /// polls its [`Watchdog`] and then reads this misses no shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Acquire)
    }

    /// Marks the connection draining and wakes its task (through the
    /// watchdog's gate: its next poll checks the timer again, harmlessly).
    fn drain(&self) {
        self.draining.store(true, Release);
        self.timer().wake();
    }

    /// A request's head is complete and it is being served; the returned
    /// guard ends it when dropped (see [`Tracked`]).
    pub fn request(self: &Arc<Self>, h2: bool) -> Open {
        self.open.fetch_add(1, Relaxed);
        if !self.started.load(Relaxed) {
            self.started.store(true, Relaxed);
        }
        if h2 && !self.h2.load(Relaxed) {
            self.h2.store(true, Relaxed);
        }
        Open(Some(self.clone()))
    }

    /// Resolves once no byte has been read for `timeout`, counted from
    /// `since` at the earliest (the request's start).
    pub async fn read_stalled(&self, since: Instant, timeout: Duration) {
        let since = nanos(since.saturating_duration_since(self.origin()));
        loop {
            let last = self.last_read.load(Relaxed).max(since);
            let deadline = last.saturating_add(nanos(timeout));
            if self.now() >= deadline {
                return;
            }
            tokio::time::sleep_until(self.at(deadline)).await;
        }
    }

    fn read_progress(&self, now: u64) {
        self.last_read.store(now, Relaxed);
        if self.open.load(Relaxed) == 0 && self.head_began.load(Relaxed) == NONE {
            self.head_began.store(now, Relaxed);
        }
    }

    fn write_progress(&self) {
        if self.write_blocked.load(Relaxed) != NONE {
            self.write_blocked.store(NONE, Relaxed);
        }
    }

    fn write_pending(&self, now: u64) {
        if self.write_blocked.load(Relaxed) == NONE {
            self.write_blocked.store(now, Relaxed);
        }
    }

    fn body_waits(&self, now: u64) {
        if self.bodies_waiting.fetch_add(1, Relaxed) == 0 {
            self.body_moved.store(now, Relaxed);
        }
    }

    fn body_polled(&self, now: u64) {
        self.bodies_waiting.fetch_sub(1, Relaxed);
        self.body_moved.store(now, Relaxed);
    }

    /// A request ended (its [`Open`] guard dropped).
    fn request_done(&self, now: u64) {
        if self.open.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(now, Relaxed);
            self.head_began.store(NONE, Relaxed);
        }
    }

    /// Where the connection stands against `t`. `closing`: when a graceful
    /// close began (it gets `t.header` to finish).
    fn check(&self, t: &Timeouts, closing: Option<u64>, now: u64) -> Verdict {
        let mut wake = now.saturating_add(nanos(t.shortest()));
        let mut due = |start: u64, limit: Duration| {
            let deadline = start.saturating_add(nanos(limit));
            wake = wake.min(deadline);
            now >= deadline
        };
        let blocked = self.write_blocked.load(Relaxed);
        if blocked != NONE && due(blocked, t.send) {
            return Verdict::Abort(Why::Send);
        }
        // On HTTP/1.1 a body waits only behind a full socket: the blocked
        // write above is that clock, and a slow reader's every write counts.
        // On HTTP/2 a body also waits on a window the client never opens
        // while the socket stays free (and PING answers still go out).
        let h2 = self.h2.load(Relaxed);
        if h2 && self.bodies_waiting.load(Relaxed) > 0 && due(self.body_moved.load(Relaxed), t.send)
        {
            return Verdict::Abort(Why::Send);
        }
        if let Some(began) = closing {
            if due(began, t.header) {
                return Verdict::Abort(Why::Closing);
            }
        } else if !self.started.load(Relaxed) {
            if due(0, t.header) {
                return Verdict::Abort(Why::FirstRequest);
            }
        } else if self.open.load(Relaxed) == 0 {
            let head = self.head_began.load(Relaxed);
            if head != NONE && !h2 {
                if due(head, t.header) {
                    return Verdict::Abort(Why::Head);
                }
            } else if due(self.idle_since.load(Relaxed), t.idle) {
                return Verdict::Close(Why::Idle);
            }
        }
        Verdict::Wait(wake)
    }
}

/// The direct server's connections, to tell when shutdown begins.
///
/// A connection that waits for its next request could wait on the shutdown
/// signal too, but a waiter on tokio's `watch` (a `Notified`) takes the
/// waiters' lock to register and again to go, once per idle spell, that is
/// once per request of a keep-alive client (about 300 instructions in
/// `benches/callgrind.sh`). Here a connection is listed once, when it
/// starts, and taken off when it ends; at shutdown [`close_all`] marks
/// each one's [`Activity`] draining and wakes its task through the
/// watchdog's waker, which every wait of the connection polls anyway.
///
/// [`close_all`]: Roster::close_all
#[derive(Debug, Default)]
pub struct Roster {
    inner: std::sync::Mutex<Listed>,
}

#[derive(Debug, Default)]
struct Listed {
    closing: bool,
    /// By the address of each connection's Activity.
    conns: std::collections::HashMap<usize, std::sync::Weak<Activity>>,
}

impl Roster {
    fn lock(&self) -> std::sync::MutexGuard<'_, Listed> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists a connection until the returned guard is dropped. Listed after
    /// shutdown began, it is draining at once.
    pub fn enlist(self: &Arc<Self>, activity: &Arc<Activity>) -> Enlisted {
        let weak = Arc::downgrade(activity);
        let mut listed = self.lock();
        if listed.closing {
            activity.drain();
        } else {
            listed.conns.insert(key(&weak), weak.clone());
        }
        Enlisted {
            roster: self.clone(),
            activity: weak,
        }
    }

    /// Shutdown began: every listed connection (and every one listed from
    /// now on) is marked draining and woken.
    pub fn close_all(&self) {
        let conns = {
            let mut listed = self.lock();
            listed.closing = true;
            std::mem::take(&mut listed.conns)
        };
        for activity in conns.values().filter_map(std::sync::Weak::upgrade) {
            activity.drain();
        }
    }

    /// How many connections are listed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

/// A connection's key in a [`Roster`]: its Activity's address. While the
/// connection's [`Enlisted`] holds its `Weak`, the allocation stays (a
/// `Weak` keeps it), so no other Activity can have that address until the
/// entry is gone.
fn key(activity: &std::sync::Weak<Activity>) -> usize {
    activity.as_ptr() as usize
}

/// A connection's place in a [`Roster`], given up when dropped.
#[derive(Debug)]
pub struct Enlisted {
    roster: Arc<Roster>,
    activity: std::sync::Weak<Activity>,
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.roster.lock().conns.remove(&key(&self.activity));
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub struct Open(Option<Arc<Activity>>);

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.request_done(a.now());
        }
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No complete first request within `header_timeout`.
    FirstRequest,
    /// An HTTP/1.1 head begun after an idle spell not complete within `header_timeout`.
    Head,
    /// No request in flight for `idle_timeout`.
    Idle,
    /// A write, or the response, made no progress for `send_timeout`.
    Send,
    /// A graceful close not finished within `header_timeout`.
    Closing,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::FirstRequest => "no request within header_timeout",
            Why::Head => "request head not complete within header_timeout",
            Why::Idle => "idle for idle_timeout",
            Why::Send => "client not reading for send_timeout",
            Why::Closing => "graceful close not done within header_timeout",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing due before this time (nanoseconds since the origin).
    Wait(u64),
    Close(Why),
    Abort(Why),
}

/// What the connection's owner should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Start a graceful close (HTTP/2 GOAWAY; an idle HTTP/1.1 connection closes).
    Close(Why),
    /// Drop the connection now.
    Abort(Why),
}

/// Watches one connection's [`Activity`]; poll [`Watchdog::expired`] next to
/// the connection.
pub struct Watchdog {
    activity: Arc<Activity>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    /// `sleep` is set to the wake-up of the last check and has not fired.
    armed: bool,
    closing: Option<u64>,
}

impl Watchdog {
    pub fn new(activity: Arc<Activity>, timeouts: Timeouts) -> Watchdog {
        let first = activity.origin();
        Watchdog {
            activity,
            timeouts,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed: false,
            closing: None,
        }
    }

    /// The connection's clocks this watchdog reads.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Resolves when a deadline passed. Cancel-safe: call it again after
    /// another branch of a `select!` won. After a `Close`, the connection has
    /// `header_timeout` to finish before an `Abort(Closing)`.
    ///
    /// A check sets the timer no later than its time plus the shortest
    /// timeout, and every clock starts at the moment of its event (see the
    /// module doc), so no clock started since can end before the timer
    /// fires: until it does, a new call (each `select!` round of a
    /// connection makes one, several per request) only waits on it, without
    /// reading the clock, checking or re-setting the timer.
    pub fn expired(&mut self) -> impl Future<Output = Expired> + '_ {
        std::future::poll_fn(move |cx| self.poll_expired(cx))
    }

    /// [`expired`](Self::expired) as a poll. The timer itself is polled
    /// only when it fired (or was just set): between, a poll costs one
    /// compare-and-swap ([`Gated`]).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        loop {
            if self.armed {
                let (activity, sleep) = (&self.activity, &mut self.sleep);
                ready!(activity.timer().poll(
                    cx,
                    || Waker::from(activity.clone()),
                    |cx| sleep.as_mut().poll(cx)
                ));
                self.armed = false;
            }
            let now = self.activity.now();
            match self.activity.check(&self.timeouts, self.closing, now) {
                Verdict::Wait(at) => {
                    self.sleep.as_mut().reset(self.activity.at(at));
                    self.armed = true;
                    // Polled next, to register the timer's waker.
                    self.activity.timer().mark();
                }
                Verdict::Close(why) => {
                    self.closing = Some(now);
                    return Poll::Ready(Expired::Close(why));
                }
                Verdict::Abort(why) => return Poll::Ready(Expired::Abort(why)),
            }
        }
    }
}

// ---------------------------------------------------------------------------

/// The accepted stream, recording progress into its [`Activity`].
pub struct Conn<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Conn<T> {
    pub fn new(io: T, activity: Arc<Activity>) -> Conn<T> {
        Conn { io, activity }
    }

    fn wrote<R>(&self, r: &Poll<io::Result<R>>, progress: impl FnOnce(&R) -> bool) {
        match r {
            Poll::Ready(Ok(v)) if progress(v) => self.activity.write_progress(),
            Poll::Pending => self.activity.write_pending(self.activity.now()),
            _ => {}
        }
    }
}

impl Conn<tokio::net::TcpStream> {
    /// Ready when the socket has bytes to read or is closed, reading
    /// nothing: a connection idle between requests waits here. A poll, not
    /// tokio's `readable()` future: that one carries a waiter node (~150
    /// bytes in the idle connection's state); this registers the waker in
    /// the socket's own read slot (this connection's task is its only
    /// reader).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_read_ready(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.activity.read_progress(me.activity.now());
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.wrote(&r, |n| *n > 0);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.wrote(&r, |n| *n > 0);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.wrote(&r, |_| true);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_shutdown(cx);
        me.wrote(&r, |_| true);
        r
    }
}

// ---------------------------------------------------------------------------

/// A response body that ends its request (the [`Open`] guard) when it ends
/// or is dropped, and tells the [`Activity`] while hyper holds a frame of it
/// without asking for the next: the client is not taking the response (a
/// full socket, or an HTTP/2 window it never opens).
pub struct Tracked<B> {
    inner: B,
    open: Option<Open>,
    waiting: bool,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, open: Open) -> Tracked<B> {
        Tracked {
            inner,
            open: Some(open),
            waiting: false,
        }
    }

    fn activity(&self) -> Option<&Arc<Activity>> {
        self.open.as_ref().and_then(|o| o.0.as_ref())
    }

    fn resume(&mut self) {
        if std::mem::take(&mut self.waiting) {
            if let Some(a) = self.activity() {
                a.body_polled(a.now());
            }
        }
    }

    fn end(&mut self) {
        self.resume();
        self.open = None;
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.resume();
    }
}

impl<B> Body for Tracked<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let me = self.get_mut();
        me.resume();
        let r = Pin::new(&mut me.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => me.end(),
            Poll::Ready(Some(Ok(_))) if me.inner.is_end_stream() => me.end(),
            Poll::Ready(Some(Ok(_))) => {
                if let Some(a) = me.activity() {
                    a.body_waits(a.now());
                    me.waiting = true;
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
        body: Duration::from_secs(60),
    };

    fn s(secs: u64) -> u64 {
        nanos(Duration::from_secs(secs))
    }

    /// The verdict at `secs` seconds after the origin.
    fn at(a: &Activity, secs: u64) -> Verdict {
        a.check(&T, None, s(secs))
    }

    fn wait(secs: u64) -> Verdict {
        Verdict::Wait(s(secs))
    }

    #[test]
    fn an_activity_stays_in_its_allocator_size_class() {
        // Arc's two counts and the Activity: at most 104 bytes, which glibc
        // serves as a 112-byte chunk (see the type's doc for why it counts).
        assert!(
            std::mem::size_of::<Activity>() <= 88,
            "{}",
            std::mem::size_of::<Activity>()
        );
    }

    #[test]
    fn origins_and_deadlines_convert_through_the_clock_base() {
        let origin = Instant::now() + Duration::from_secs(5);
        let a = Activity::since(origin);
        assert_eq!(a.origin(), origin);
        assert_eq!(a.at(s(7)), origin + Duration::from_secs(7));
        // The origin is 5 s ahead: no time has passed since it.
        assert_eq!(a.now(), 0);
        // An origin before the base counts as the base.
        let early = Activity::since(*CLOCK_BASE - Duration::from_millis(1));
        assert_eq!(early.origin(), *CLOCK_BASE);
    }

    /// A request started at 0 and ended at `end`.
    fn one_request(a: &Arc<Activity>, h2: bool, end: u64) {
        let mut open = a.request(h2);
        open.0 = None; // ended by hand, at a chosen time
        a.request_done(s(end));
    }

    #[test]
    fn a_connection_with_no_request_is_aborted_at_header_timeout() {
        let a = Activity::new();
        assert_eq!(at(&a, 0), wait(10));
        a.read_progress(s(3)); // half a preface: no difference
        assert_eq!(at(&a, 9), wait(10));
        assert_eq!(at(&a, 10), Verdict::Abort(Why::FirstRequest));
    }

    #[test]
    fn a_request_in_flight_is_not_timed_here() {
        let a = Activity::new();
        let _open = a.request(false);
        // Wakes within the shortest timeout to look again, nothing more.
        assert_eq!(at(&a, 100), wait(110));
        assert_eq!(at(&a, 10_000), wait(10_010));
    }

    #[test]
    fn idle_closes_after_idle_timeout_then_the_close_gets_header_timeout() {
        let a = Activity::new();
        one_request(&a, false, 100);
        assert_eq!(at(&a, 100), wait(110));
        assert_eq!(at(&a, 159), wait(160));
        assert_eq!(at(&a, 160), Verdict::Close(Why::Idle));
        assert_eq!(a.check(&T, Some(s(160)), s(160)), wait(170));
        assert_eq!(
            a.check(&T, Some(s(160)), s(170)),
            Verdict::Abort(Why::Closing)
        );
    }

    #[test]
    fn on_http1_a_byte_after_idle_starts_a_head_with_header_timeout() {
        let a = Activity::new();
        one_request(&a, false, 0);
        a.read_progress(s(5));
        a.read_progress(s(14)); // more of the head: still 10 s from its first byte
        assert_eq!(at(&a, 14), wait(15));
        assert_eq!(at(&a, 15), Verdict::Abort(Why::Head));
        // The next request ends the head clock.
        let mut open = a.request(false);
        open.0 = None;
        assert_eq!(at(&a, 15), wait(25));
        a.request_done(s(20));
        assert_eq!(at(&a, 79), wait(80));
    }

    #[test]
    fn on_http2_pings_start_no_head() {
        let a = Activity::new();
        one_request(&a, true, 0);
        a.read_progress(s(5));
        assert_eq!(at(&a, 5), wait(15));
        assert_eq!(at(&a, 59), wait(60));
        assert_eq!(at(&a, 60), Verdict::Close(Why::Idle));
    }

    #[test]
    fn a_blocked_write_aborts_at_send_timeout() {
        let a = Activity::new();
        let _open = a.request(false);
        a.write_pending(s(0));
        a.write_pending(s(20)); // still the same stall
        assert_eq!(at(&a, 20), wait(30));
        a.write_progress();
        assert_eq!(at(&a, 40), wait(50));
        a.write_pending(s(40));
        assert_eq!(at(&a, 69), wait(70));
        assert_eq!(at(&a, 70), Verdict::Abort(Why::Send));
    }

    #[test]
    fn on_http1_a_waiting_body_is_the_blocked_writes_business() {
        let a = Activity::new();
        let _open = a.request(false);
        a.body_waits(s(0));
        assert_eq!(at(&a, 100), wait(110));
    }

    #[test]
    fn on_http2_a_body_frame_not_taken_for_send_timeout_aborts() {
        let a = Activity::new();
        let _other = a.request(true);
        a.body_waits(s(0));
        assert_eq!(at(&a, 29), wait(30));
        a.body_polled(s(29));
        a.body_waits(s(29));
        assert_eq!(at(&a, 58), wait(59));
        assert_eq!(at(&a, 59), Verdict::Abort(Why::Send));
        a.body_polled(s(59));
        assert_eq!(at(&a, 60), wait(70));
    }

    #[tokio::test]
    async fn tracked_counts_frames_hyper_holds_and_ends_the_request() {
        let a = Activity::new();
        let mut body = std::pin::pin!(Tracked::new(Frames(3), a.request(true)));
        body.frame().await.unwrap().unwrap();
        assert_eq!(a.bodies_waiting.load(Relaxed), 1);
        body.frame().await.unwrap().unwrap();
        assert_eq!(a.bodies_waiting.load(Relaxed), 1);
        assert_eq!(a.open.load(Relaxed), 1);
        // The last frame ends the request: nothing waits any more.
        body.frame().await.unwrap().unwrap();
        assert_eq!(a.bodies_waiting.load(Relaxed), 0);
        assert_eq!(a.open.load(Relaxed), 0);

        // Dropped while hyper holds a frame (the client went away).
        let a = Activity::new();
        let mut body = Box::pin(Tracked::new(Frames(3), a.request(false)));
        body.frame().await.unwrap().unwrap();
        assert_eq!(a.bodies_waiting.load(Relaxed), 1);
        drop(body);
        assert_eq!(a.bodies_waiting.load(Relaxed), 0);
        assert_eq!(a.open.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_roster_wakes_its_connections_through_their_watchdogs_at_shutdown() {
        let long = Duration::from_secs(3600);
        let timeouts = Timeouts {
            header: long,
            idle: long,
            send: long,
            body: long,
        };
        let roster = Arc::new(Roster::default());
        // Listed while it lives, off the list when it ends.
        let gone = Activity::new();
        let listed = roster.enlist(&gone);
        assert_eq!(roster.len(), 1);
        drop(listed);
        assert_eq!(roster.len(), 0);

        let a = Activity::new();
        let _listed = roster.enlist(&a);
        let mut dog = Watchdog::new(a.clone(), timeouts);
        // A connection waiting on its watchdog, with no deadline near.
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if let Poll::Ready(e) = dog.poll_expired(cx) {
                    return Poll::Ready(Err(e));
                }
                if dog.activity().is_draining() {
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            })
            .await
        });
        // The waiter's first poll (one thread: it runs at this yield).
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!a.is_draining());
        roster.close_all();
        assert!(a.is_draining());
        let woke = tokio::time::timeout(Duration::from_secs(30), waiter).await;
        assert!(matches!(woke, Ok(Ok(Ok(())))), "{woke:?}");
        // Listed after the shutdown began: draining at once.
        let late = Activity::new();
        let _late = roster.enlist(&late);
        assert!(late.is_draining());
        assert_eq!(roster.len(), 0);
    }

    /// A body of N one-byte data frames.
    struct Frames(u8);

    impl Body for Frames {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
        }
        fn is_end_stream(&self) -> bool {
            self.0 == 0
        }
    }

    #[tokio::test]
    async fn read_stalled_counts_from_the_last_byte_read() {
        let a = Activity::new();
        let t = Duration::from_millis(300);
        let start = Instant::now();
        let stalled = a.read_stalled(start, t);
        tokio::pin!(stalled);
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.read_progress(a.now());
        let read_at = Instant::now();
        stalled.await;
        assert!(read_at.elapsed() >= t, "{:?}", read_at.elapsed());
    }
}
