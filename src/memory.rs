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
