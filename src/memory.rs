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

/// The scratch thread's queue, started on first use.
static SCRATCH: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> =
    std::sync::Mutex::new(None);

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
    let (done, result) = std::sync::mpsc::sync_channel(1);
    let mut job: Option<Job> = Some(Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = done.send(r);
    }));
    {
        let mut queue = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
        if queue.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("switchyard-scratch".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                });
            if started.is_ok() {
                *queue = Some(tx);
            }
        }
        if let (Some(tx), Some(j)) = (queue.as_ref(), job.take()) {
            // A send fails only when the thread is gone (it never returns
            // while the sender lives); the job comes back and runs inline.
            if let Err(std::sync::mpsc::SendError(back)) = tx.send(j) {
                job = Some(back);
                *queue = None;
            }
        }
    }
    if let Some(job) = job {
        job();
    }
    match result.recv() {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The job was dropped unrun: only if the thread died between taking
        // it and running it, which catch_unwind rules out.
        Err(_) => unreachable!("the scratch job always sends its result"),
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
    fn a_panic_on_scratch_comes_back_to_the_caller() {
        let r = std::panic::catch_unwind(|| on_scratch(|| -> u8 { panic!("boom") }));
        assert!(r.is_err());
        // And the thread still serves.
        assert_eq!(on_scratch(|| 7), 7);
    }
}
