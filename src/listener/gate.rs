//! Polling a future only when its own waker fired.
//!
//! A connection's task wakes for many reasons: bytes from the client, an
//! answer from a backend, a stream that finished, a flush. At each wake-up
//! it polls everything it waits on, and some of those polls are not cheap
//! while they have nothing to say: a timer (its waker registered in the
//! timer entry, the task's budget checked, about 300 instructions with the
//! watchdog's own check) or the shutdown signal (tokio's `Notified` takes
//! the waiters' lock to update its waker, about 750). At one request per
//! HTTP/2 connection (`benches/callgrind_h2.sh -m1`) those two cost about
//! 1 600 instructions per request, for deadlines that almost never pass.
//!
//! A [`Gated`] future is polled with a waker of its own, which notes that
//! it fired and wakes the task. Until then, the task's polls of it only
//! register the task's waker (one compare-and-swap) and return `Pending`.
//! [`Streams`](crate::server::streams) polls an HTTP/2 connection through a
//! [`Gate`] too: its task wakes for every stream.
//!
//! Correctness rests on one rule: the inner future is polled at its first
//! poll, after its own waker fired, after it returned `Ready`, and after
//! [`Gated::mark`] (something outside the future changed its state); in
//! between, it is waiting for its waker and a poll could only return
//! `Pending`. The task's waker is registered before the flag is read, so a
//! wake-up between the two is seen either by that read or by the task's
//! next poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future's wake-up flag and the task to wake, wherever they are stored
/// ([`GateCell`], or fields of a larger struct: the connection's
/// `Activity` keeps its flag beside its other flags, so that it stays in
/// its allocator size class).
#[derive(Debug, Clone, Copy)]
pub struct Gated<'a> {
    fired: &'a AtomicBool,
    task: &'a AtomicWaker,
}

impl<'a> Gated<'a> {
    /// The gate made of these two. The flag is to start true: the inner
    /// future has never been polled.
    pub fn new(fired: &'a AtomicBool, task: &'a AtomicWaker) -> Gated<'a> {
        Gated { fired, task }
    }

    /// The inner future's waker fired: notes it and wakes the task.
    pub fn wake(self) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Has the inner future polled at the next [`poll`](Self::poll), for
    /// what was done to it from outside (a reset deadline, a graceful
    /// close).
    pub fn mark(self) {
        self.fired.store(true, Ordering::Release);
    }

    /// Registers the task's waker; whether the inner future is to be
    /// polled (and the note taken).
    pub fn take(self, cx: &Context<'_>) -> bool {
        self.register(cx);
        self.fired()
    }

    /// The task to wake when the inner future's waker fires.
    pub fn register(self, cx: &Context<'_>) {
        self.task.register(cx.waker());
    }

    /// Whether the inner future's waker fired (or it was marked) since
    /// the last call; the note is taken.
    pub fn fired(self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// Polls the inner future through `f`, with the waker `own` makes
    /// (one that calls [`wake`](Self::wake)), when it is due; else
    /// `Pending`. After `Ready`, the next poll polls it again.
    pub fn poll<T>(
        self,
        cx: &Context<'_>,
        own: impl FnOnce() -> Waker,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        if !self.take(cx) {
            return Poll::Pending;
        }
        let waker = own();
        let r = f(&mut Context::from_waker(&waker));
        if r.is_ready() {
            self.mark();
        }
        r
    }
}

/// A gate's own storage.
#[derive(Debug)]
pub struct GateCell {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Default for GateCell {
    fn default() -> GateCell {
        GateCell {
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl GateCell {
    /// The gate this storage holds.
    pub fn gated(&self) -> Gated<'_> {
        Gated::new(&self.fired, &self.task)
    }
}

/// A [`Gated`] of its own (one allocation) and its waker, for a future
/// polled in a `select!` beside busier ones.
#[derive(Debug)]
pub struct Gate {
    wake: Arc<GateWake>,
    waker: Waker,
}

impl Default for Gate {
    fn default() -> Gate {
        let wake = Arc::new(GateWake(GateCell::default()));
        Gate {
            waker: Waker::from(wake.clone()),
            wake,
        }
    }
}

#[derive(Debug, Default)]
struct GateWake(GateCell);

impl Wake for GateWake {
    fn wake(self: Arc<Self>) {
        self.0.gated().wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.gated().wake();
    }
}

impl Gate {
    /// Polls `f` when its own waker fired since it last returned
    /// `Pending` (see [`Gated::poll`]).
    pub fn poll<T>(
        &self,
        cx: &Context<'_>,
        f: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.wake.0.gated().poll(cx, || self.waker.clone(), f)
    }

    /// The flag and the task to wake, for a caller that polls by hand.
    pub fn gated(&self) -> Gated<'_> {
        self.wake.0.gated()
    }

    /// The waker to poll the inner future with.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{poll_fn, Future};
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `go` is notified.
    async fn counted(polls: &AtomicUsize, go: &tokio::sync::Notify) {
        let mut wait = pin!(go.notified());
        poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            wait.as_mut().poll(cx)
        })
        .await
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_its_own_waker_fired() {
        let gate = Gate::default();
        let polls = AtomicUsize::new(0);
        let go = tokio::sync::Notify::new();
        let mut inner = pin!(counted(&polls, &go));
        let noop = Waker::noop();
        let cx = Context::from_waker(noop);
        // The first poll goes through (and registers the gate's waker).
        assert!(gate.poll(&cx, |cx| inner.as_mut().poll(cx)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task woke for something else: the inner future is left alone.
        for _ in 0..5 {
            assert!(gate.poll(&cx, |cx| inner.as_mut().poll(cx)).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own waker fired: polled, and ready.
        go.notify_one();
        assert!(gate.poll(&cx, |cx| inner.as_mut().poll(cx)).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_up_of_the_inner_future_wakes_the_task() {
        let gate = Gate::default();
        let polls = AtomicUsize::new(0);
        let go = Arc::new(tokio::sync::Notify::new());
        let later = go.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            later.notify_one();
        });
        let mut inner = pin!(counted(&polls, &go));
        // Awaited: the task sleeps until the gate's waker wakes it.
        tokio::time::timeout(
            Duration::from_secs(60),
            poll_fn(|cx| gate.poll(cx, |cx| inner.as_mut().poll(cx))),
        )
        .await
        .expect("the gate's wake-up reached the task");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn after_ready_or_a_mark_the_next_poll_goes_through() {
        let cell = GateCell::default();
        let g = cell.gated();
        let cx = Context::from_waker(Waker::noop());
        let own = || Waker::noop().clone();
        let calls = std::cell::Cell::new(0);
        let ready = |_: &mut Context<'_>| {
            calls.set(calls.get() + 1);
            Poll::Ready(())
        };
        let pending = |_: &mut Context<'_>| {
            calls.set(calls.get() + 1);
            Poll::<()>::Pending
        };
        assert!(g.poll(&cx, own, ready).is_ready());
        assert!(g.poll(&cx, own, ready).is_ready());
        assert_eq!(calls.get(), 2, "polled again after Ready");
        assert!(g.poll(&cx, own, pending).is_pending());
        assert!(g.poll(&cx, own, pending).is_pending());
        assert_eq!(calls.get(), 3, "not polled while waiting for its waker");
        g.mark();
        assert!(g.poll(&cx, own, pending).is_pending());
        assert_eq!(calls.get(), 4, "polled after a mark");
    }
}
