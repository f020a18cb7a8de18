//! Property: `AdminCommand::parse(method, path, query, body)` never panics and
//! refuses only with 400 or 404; input is `method NUL path NUL query NUL body`
//! (see `check_admin_cmd` in fuzz/checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_admin_cmd(data));
