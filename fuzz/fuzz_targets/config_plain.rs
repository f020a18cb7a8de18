//! Property: the plain reader of config sections (`config::read_as_toml`)
//! never panics, and whatever it reads is what `toml::from_str` reads (see
//! `check_config_plain` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config_plain(data));
