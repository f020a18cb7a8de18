//! Property: `Config::from_toml_str` never panics; a config that parses also
//! builds a `RoutingTable` without panic and routes each of its hosts to
//! itself (see `check_config` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config(data));
