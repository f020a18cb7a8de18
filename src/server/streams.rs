//! The HTTP/2 streams of a client connection, run inside the connection's
//! own task.
//!
//! hyper's HTTP/2 server hands each stream's future to its executor. With
//! hyper-util's `TokioExecutor` that is a `tokio::spawn` per request: a task
//! cell aligned to 128 bytes (glibc serves it through `posix_memalign`, its
//! slowest path, ~1 000 instructions), the future copied into it, a trip
//! through the scheduler's queue at each wake-up, and the cell freed again.
//! nginx and HAProxy run a connection's streams inside the connection.
//! [`Streams`] does the same: the connection's task polls the connection,
//! takes the streams it started, and polls those in a `FuturesUnordered`
//! (which polls only the streams that were woken).
//!
//! How the futures get there: [`StreamExec::execute`] is only ever called
//! from inside the connection's poll, on the thread running it. [`Streams`]
//! puts an empty list in a thread-local slot around that poll; `execute`
//! pushes into it. Outside such a poll (no slot), `execute` spawns a task as
//! before, so nothing is ever lost.
//!
//! What changes for a stream: it runs on the thread of its connection (as in
//! nginx and HAProxy), and when the connection ends, its unfinished streams
//! are dropped with it (their client is gone; a graceful end waits for them
//! first, as hyper's connection future does).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::listener::gate::Gate;

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Set (to an empty list) while a connection is polled by [`Streams`].
    static STARTED: Cell<Option<Vec<StreamFuture>>> = const { Cell::new(None) };
}

/// hyper's executor for the proxy's client connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match STARTED.take() {
            Some(mut started) => {
                started.push(Box::pin(fut));
                STARTED.set(Some(started));
            }
            None => {
                tokio::spawn(fut);
            }
        }
    }
}

/// The streams a connection started, polled by its task.
#[derive(Default)]
pub struct Streams {
    /// Made at the first stream (an HTTP/1.1 connection never needs one).
    running: Option<Running>,
    /// The list lent to [`STARTED`] (kept for its capacity).
    spare: Vec<StreamFuture>,
}

/// An HTTP/2 connection's streams, and the waker its connection is polled
/// with from then on: the task wakes for a stream as often as for the
/// connection, and hyper's connection poll is not cheap (it reads, pings,
/// sweeps reset streams and flushes), so it is polled only when something
/// it waits on woke it.
struct Running {
    streams: FuturesUnordered<StreamFuture>,
    conn: Gate,
}

impl Running {
    fn new() -> Running {
        // A gate is fired at first: the connection was last polled with
        // the task's own waker, so its next poll must register the gate's
        // (a future that returns Pending wakes the waker of that poll).
        Running {
            streams: FuturesUnordered::new(),
            conn: Gate::default(),
        }
    }
}

impl Streams {
    /// Drives `conn` and the streams it starts until `conn` ends.
    pub fn drive<'a, C>(
        &'a mut self,
        mut conn: Pin<&'a mut C>,
    ) -> impl Future<Output = C::Output> + 'a
    where
        C: Future,
    {
        std::future::poll_fn(move |cx| self.poll(conn.as_mut(), cx))
    }

    fn poll<C: Future>(&mut self, mut conn: Pin<&mut C>, cx: &mut Context<'_>) -> Poll<C::Output> {
        if let Some(r) = &self.running {
            r.conn.gated().register(cx);
        }
        // Twice at most: streams that answered on the first pass queued
        // frames, which the connection's second poll writes now rather
        // than on the next wake-up.
        for _ in 0..2 {
            let mut fresh = false;
            if self.conn_woken() {
                let outer = STARTED.replace(Some(std::mem::take(&mut self.spare)));
                let polled = match &self.running {
                    Some(r) => conn.as_mut().poll(&mut Context::from_waker(r.conn.waker())),
                    None => conn.as_mut().poll(cx),
                };
                let started = STARTED.replace(outer).unwrap_or_default();
                if let Poll::Ready(out) = polled {
                    self.spare = started;
                    return Poll::Ready(out);
                }
                fresh = !started.is_empty();
                self.adopt(started, cx);
            }
            let finished = self.poll_streams(cx);
            if !fresh && finished == 0 {
                break;
            }
        }
        Poll::Pending
    }

    /// Has the connection polled by the next [`drive`](Self::drive), for
    /// what was done to it outside its poll: hyper's `graceful_shutdown`
    /// only sets a state that the next poll acts on (sending GOAWAY), and
    /// an idle connection would otherwise wait for its client or a timer
    /// to wake it.
    pub fn conn_changed(&self) {
        if let Some(r) = &self.running {
            r.conn.gated().mark();
        }
    }

    /// Whether the connection is to be polled (and the mark taken).
    fn conn_woken(&self) -> bool {
        match &self.running {
            Some(r) => r.conn.gated().fired(),
            // Until its first stream, the connection is polled with the
            // task's waker: each wake-up is its own.
            None => true,
        }
    }

    fn adopt(&mut self, mut started: Vec<StreamFuture>, cx: &Context<'_>) {
        if !started.is_empty() {
            let running = self.running.get_or_insert_with(|| {
                let r = Running::new();
                r.conn.gated().register(cx);
                r
            });
            for fut in started.drain(..) {
                running.streams.push(fut);
            }
        }
        self.spare = started;
    }

    /// Polls the woken streams; how many finished.
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> usize {
        let mut finished = 0;
        let Some(running) = self.running.as_mut() else {
            return 0;
        };
        // Pending once no stream is ready (or after FuturesUnordered's
        // own budget, when it has woken this task to come back); None
        // when there are none.
        while let Poll::Ready(Some(())) = running.streams.poll_next_unpin(cx) {
            finished += 1;
        }
        finished
    }

    /// Streams started and not finished.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.running.as_ref().map_or(0, |r| r.streams.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A stand-in for hyper's connection: starts `n` streams through the
    /// executor on its first poll, each waiting for a message, then ends
    /// once they all finished.
    struct FakeConn {
        n: usize,
        started: bool,
        done: Arc<AtomicUsize>,
        rxs: Vec<tokio::sync::oneshot::Receiver<()>>,
    }

    impl Future for FakeConn {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            if !self.started {
                self.started = true;
                for rx in std::mem::take(&mut self.rxs) {
                    let done = self.done.clone();
                    StreamExec.execute(async move {
                        let _ = rx.await;
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
            let done = self.done.load(Ordering::SeqCst);
            if done == self.n {
                Poll::Ready(done)
            } else {
                // Woken by the streams' progress: they share this task.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn streams_run_in_the_connection_task_until_it_ends() {
        let n = 5;
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..n {
            let (tx, rx) = tokio::sync::oneshot::channel();
            txs.push(tx);
            rxs.push(rx);
        }
        let done = Arc::new(AtomicUsize::new(0));
        let conn = FakeConn {
            n,
            started: false,
            done: done.clone(),
            rxs,
        };
        tokio::pin!(conn);
        let mut streams = Streams::default();
        // Nothing answered yet: the streams wait in the set, not in tasks.
        let first = futures_util::poll!(streams.drive(conn.as_mut()));
        assert!(first.is_pending());
        assert_eq!(streams.len(), n);
        for tx in txs {
            tx.send(()).unwrap();
        }
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            streams.drive(conn.as_mut()),
        )
        .await
        .expect("the connection ends once its streams finished");
        assert_eq!(out, n);
        assert_eq!(streams.len(), 0);
    }

    /// Starts one stream on its first poll, then waits on nothing of its
    /// own; counts its polls.
    struct QuietConn {
        polls: Arc<AtomicUsize>,
        rx: Option<tokio::sync::oneshot::Receiver<()>>,
        done: Arc<AtomicUsize>,
    }

    impl Future for QuietConn {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if let Some(rx) = self.rx.take() {
                let done = self.done.clone();
                StreamExec.execute(async move {
                    let _ = rx.await;
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_wake_up_for_a_stream_alone_does_not_poll_the_connection() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let conn = QuietConn {
            polls: polls.clone(),
            rx: Some(rx),
            done: done.clone(),
        };
        tokio::pin!(conn);
        let mut streams = Streams::default();
        assert!(futures_util::poll!(streams.drive(conn.as_mut())).is_pending());
        // Polled with the task's waker, then once more with its own (so
        // that what it waits on wakes that one).
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        tx.send(()).unwrap();
        assert!(futures_util::poll!(streams.drive(conn.as_mut())).is_pending());
        assert_eq!(done.load(Ordering::SeqCst), 1, "the stream ran");
        assert_eq!(streams.len(), 0);
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "the connection was not woken"
        );
        // Its own waker does bring it back.
        let r = streams.running.as_ref().expect("made at the first stream");
        r.conn.waker().wake_by_ref();
        assert!(futures_util::poll!(streams.drive(conn.as_mut())).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn outside_a_connection_poll_a_stream_is_spawned() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        StreamExec.execute(async move {
            let _ = tx.send(7);
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
            .await
            .expect("the spawned stream ran");
        assert_eq!(got.unwrap(), 7);
    }
}
