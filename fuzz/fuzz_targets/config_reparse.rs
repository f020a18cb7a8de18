//! Property: a reload read by parts (`ConfigSource::reparse`, the input an
//! old text and a new one split at the first NUL) never panics, and what it
//! takes is what `Config::from_toml_str` gives for the new text (see
//! `check_config_reparse` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config_reparse(data));
