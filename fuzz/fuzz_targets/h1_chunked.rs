//! Property: h1's chunked decoder (`Framing::decode`) equals a reference
//! decoder on any input, fed whole, byte by byte or at random splits, never
//! loops, and decodes a valid encoding of the input back to it (see
//! `check_h1_chunked` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_h1_chunked(data));
