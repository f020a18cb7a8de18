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
