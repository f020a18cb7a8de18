//! Giving memory back to the system after a big transient allocation.
//!
//! A reload of a large config parses it into a document many times its size
//! (about 100 MB for a 1.9 MB file of 10 000 routes), validates it and builds
//! a new table beside the old one; all of it is freed once the new table is
//! in place. glibc's allocator keeps freed memory in its arenas, so without
//! help the RSS of a process that reloads stays at its highest point forever
//! and grows with fragmentation. [`release`] asks glibc to return every free
//! page it holds (`malloc_trim(0)`), which costs a few milliseconds and
//! is only called after such a one-off build, never on the request path.
//!
//! `malloc_trim` alone is not enough: it releases the free pages inside every
//! arena, but the free *top* of a thread's arena only when it exceeds the
//! trim threshold, and glibc raises that threshold (to twice the mmap
//! threshold, up to 64 MiB) each time a large mmapped block is freed. A
//! parse frees vectors of several megabytes, after which each reload's
//! transient stayed in the RSS (10 reloads of a changed 10 000-route file:
//! 60 -> 122 MiB). [`configure`] fixes both thresholds at start, as
//! `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_` would (same run: 60 ->
//! ~90 MiB); an operator's environment variables still win.

/// Blocks of at least this size are mapped on their own and unmapped when
/// freed (glibc's dynamic threshold starts at 128 KiB and only grows).
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// A free top of an arena above this size goes back to the system.
const TRIM_THRESHOLD: i32 = 512 * 1024;

/// Fixes glibc's mmap and trim thresholds (see the module doc). Called once
/// at the start of `switchyard run`, before the config is parsed; does
/// nothing elsewhere, or when the environment sets either threshold.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_env = |k: &str| std::env::var_os(k).is_some();
        if set_by_env("MALLOC_MMAP_THRESHOLD_") || set_by_env("MALLOC_TRIM_THRESHOLD_") {
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `mallopt` is glibc's own function: it takes the main
        // arena's lock, range-checks the value (an out-of-range one makes
        // it return 0 and change nothing) and stores it in the allocator's
        // global parameters. Both constants are valid parameter numbers,
        // both values in range (the mmap threshold's maximum is 32 MiB on
        // 64-bit, 512 KiB on 32-bit). No pointer is passed or returned and
        // no memory of ours is touched; its only effect is on how later
        // allocations are served, which Rust's allocator API allows.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Returns the allocator's free memory to the system (glibc only; a no-op
/// elsewhere).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` is glibc's own function with no preconditions:
    // it takes a padding size (0: trim all it can), locks each arena while
    // it walks it (so it is safe with other threads allocating), touches
    // no memory of ours and only returns a flag. Nothing here reads or
    // writes through a pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A long-lived thread that runs jobs in order, started on first use.
struct Worker {
    name: &'static str,
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

/// Transient work: whole parses, and the drops and trims after a change.
static SCRATCH: Worker = Worker::new("switchyard-scratch");
/// Every build of long-lived control state: see [`on_control`].
static CONTROL: Worker = Worker::new("switchyard-control");

impl Worker {
    const fn new(name: &'static str) -> Worker {
        Worker {
            name,
            queue: std::sync::Mutex::new(None),
        }
    }

    /// Whether the calling thread is this worker's (a job that queued a
    /// job on its own thread and waited for it would wait forever).
    fn is_current(&self) -> bool {
        std::thread::current().name() == Some(self.name)
    }

    /// Queues `job` (the thread started on first use); gives it back when
    /// the thread cannot be started or is gone.
    fn enqueue(&self, job: Job) -> Option<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                });
            if started.is_ok() {
                *queue = Some(tx);
            }
        }
        let Some(tx) = queue.as_ref() else {
            return Some(job);
        };
        // A send fails only when the thread is gone (it never returns while
        // the sender lives); the job comes back and runs inline.
        match tx.send(job) {
            Ok(()) => None,
            Err(std::sync::mpsc::SendError(back)) => {
                *queue = None;
                Some(back)
            }
        }
    }

    /// Runs `f` on this worker and waits for what it returns (a panic in
    /// `f` is resumed here). On the worker itself, or if it cannot be
    /// started, `f` runs inline.
    fn run<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.is_current() {
            return f();
        }
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = done.send(r);
        });
        if let Some(job) = self.enqueue(job) {
            job();
        }
        match result.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The job was dropped unrun: only if the thread died between
            // taking it and running it, which catch_unwind rules out.
            Err(_) => unreachable!("a worker's job always sends its result"),
        }
    }
}

/// Runs `f` on the scratch thread, after the jobs already queued there, and
/// returns at once: for the drop of a replaced table or config and the trim
/// that follows it, which need not hold up the reply to a reload. A panic in
/// `f` is caught and logged. If the thread cannot be started, `f` runs
/// inline.
pub fn later<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let job: Job = Box::new(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            tracing::error!("a deferred cleanup job panicked");
        }
    });
    if let Some(job) = SCRATCH.enqueue(job) {
        job();
    }
}

/// Runs `f` on the scratch thread and returns what it returns (a panic in
/// `f` is resumed here, as if `f` had run inline).
///
/// glibc gives each thread an arena of its own. A config parse allocates a
/// document many times the size of what it keeps; done on the thread that
/// also builds the long-lived table, the little it keeps ends up scattered
/// over the pages of that transient, and those pages stay resident after
/// the trim (10 reloads of a changed 10 000-route file: 47 MB live, ~80 MB
/// of anonymous RSS). On a thread of its own the transient lives and dies in
/// an arena of its own, which the trim empties; the caller then copies what
/// it keeps into its own arena (see `Config::share_unchanged`). One
/// long-lived thread, not one per parse: an exited thread's arena goes to
/// the next thread started (a tokio blocking thread, say), which would then
/// put long-lived data there.
///
/// If the thread cannot be started, `f` runs inline.
pub fn on_scratch<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    SCRATCH.run(f)
}

/// Runs `f` on the control thread and returns what it returns (a panic in
/// `f` is resumed here). On the control thread itself `f` runs inline.
///
/// Every change that builds long-lived control state (the start's config
/// and first table, reloads, admin changes, health rebuilds, the fleet's
/// and the providers' updates) runs here, so that every generation of the
/// config and the table is allocated in one arena. Run on whichever thread
/// started them, the start's generation stayed in the main thread's arena
/// and the reloads' in another: the survivors of each (routes, backends,
/// metric handles kept across reloads) pinned pages in both, and neither
/// arena could be trimmed. 10 reloads that change every pool of 10 000:
/// 69-71 MiB after, against 61 MiB with both in one arena.
pub fn on_control<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    CONTROL.run(f)
}

/// [`on_control`] for async callers: the runtime's thread is not held
/// while `f` runs (or waits its turn). A panic in `f` comes back as an
/// `Err` (as a blocking task's would, from `spawn_blocking`). The job runs
/// whether or not the future is awaited to the end.
pub async fn control<T, F>(f: F) -> std::thread::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = done.send(r);
    });
    if let Some(job) = CONTROL.enqueue(job) {
        job();
    }
    match result.await {
        Ok(r) => r,
        // The job was dropped unrun: only if the thread died between
        // taking it and running it, which catch_unwind rules out.
        Err(_) => Err(Box::new("the control thread dropped a job")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_runs_on_its_own_thread_and_returns() {
        let here = std::thread::current().id();
        let (there, name) = on_scratch(|| {
            let t = std::thread::current();
            (t.id(), t.name().map(str::to_string))
        });
        assert_ne!(here, there);
        assert_eq!(name.as_deref(), Some("switchyard-scratch"));
        // The same thread serves the next job.
        assert_eq!(on_scratch(|| std::thread::current().id()), there);
    }

    #[test]
    fn later_runs_on_scratch_in_order_and_survives_a_panic() {
        let (tx, rx) = std::sync::mpsc::channel();
        let first = tx.clone();
        later(move || {
            let _ = first.send((1, std::thread::current().name().map(str::to_string)));
        });
        later(|| panic!("boom"));
        later(move || {
            let _ = tx.send((2, std::thread::current().name().map(str::to_string)));
        });
        let wait = std::time::Duration::from_secs(30);
        let a = rx.recv_timeout(wait).expect("the first job ran");
        let b = rx.recv_timeout(wait).expect("the job after the panic ran");
        assert_eq!(a, (1, Some("switchyard-scratch".to_string())));
        assert_eq!(b, (2, Some("switchyard-scratch".to_string())));
        // A job queued behind them waits for them: on_scratch returns after.
        assert_eq!(on_scratch(|| 3), 3);
    }

    #[test]
    fn control_runs_on_its_own_thread_and_inline_on_it() {
        let (outer, inner) = on_control(|| {
            let here = std::thread::current().id();
            // A control job that asks for the control thread runs inline
            // (queued, it would wait for itself forever).
            (here, on_control(|| std::thread::current().id()))
        });
        assert_eq!(outer, inner);
        assert_ne!(outer, std::thread::current().id());
        let name = on_control(|| std::thread::current().name().map(str::to_string));
        assert_eq!(name.as_deref(), Some("switchyard-control"));
        // Not the scratch thread: transients and long-lived state apart.
        assert_ne!(on_scratch(|| std::thread::current().id()), outer);
    }

    #[test]
    fn control_from_async_returns_and_reports_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let name = control(|| std::thread::current().name().map(str::to_string)).await;
            assert_eq!(name.unwrap().as_deref(), Some("switchyard-control"));
            assert!(control(|| -> u8 { panic!("boom") }).await.is_err());
            // The thread goes on serving.
            assert_eq!(control(|| 7).await.unwrap(), 7);
        });
    }

    #[test]
    fn a_panic_on_scratch_comes_back_to_the_caller() {
        let r = std::panic::catch_unwind(|| on_scratch(|| -> u8 { panic!("boom") }));
        assert!(r.is_err());
        // And the thread still serves.
        assert_eq!(on_scratch(|| 7), 7);
    }
}
