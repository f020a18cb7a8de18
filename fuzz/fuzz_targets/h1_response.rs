//! Property: `h1::parse_head` agrees with a reference reading of RFC 9112
//! (status, fields kept, body framing, reuse) however the backend's bytes
//! are split into reads, and the body after the head decodes to what its
//! framing says (see `check_h1_response` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_h1_response(data));
