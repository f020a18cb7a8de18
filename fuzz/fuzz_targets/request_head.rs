//! Property: a client's request head, as hyper's parser hands it over,
//! never panics the checks the proxy runs before routing; what passes has
//! one host, the one that decides the route (see `check_request_head` in
//! fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_request_head(data));
