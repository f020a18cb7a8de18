//! Property: host parsing never panics; a parsed `HostName` is lowercase
//! without port or trailing dot and re-parses to itself, and `normalize`
//! agrees with `HostName::parse` (see `check_host` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_host(data));
