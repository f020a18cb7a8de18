//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through the
//! same checks the fuzz targets run, so seeds and crash regressions are
//! re-checked by `cargo test` on stable, without libFuzzer.
//!
//! ```text
//! fuzz/corpus/<target>/<file> --read--> fuzz/checks.rs check_<target>(bytes)
//! ```
//!
//! A missing or empty corpus directory fails the test: a seed set that
//! silently disappeared must not pass as "nothing to check".

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Runs `check` on every file in `fuzz/corpus/<target>` and names each file
/// whose check panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        // Dot files are libFuzzer's scratch and are not committed (.gitignore).
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} has no seeds", dir.display());

    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| check(&data)))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} seeds failed (panic messages above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn config_seeds() {
    replay("config", checks::check_config);
}

#[test]
fn config_reparse_seeds() {
    replay("config_reparse", checks::check_config_reparse);
}

#[test]
fn config_plain_seeds() {
    replay("config_plain", checks::check_config_plain);
}

#[test]
fn host_seeds() {
    replay("host", checks::check_host);
}

#[test]
fn admin_cmd_seeds() {
    replay("admin_cmd", checks::check_admin_cmd);
}

#[test]
fn h1_response_seeds() {
    replay("h1_response", checks::check_h1_response);
}

#[test]
fn h1_chunked_seeds() {
    replay("h1_chunked", checks::check_h1_chunked);
}

#[test]
fn request_head_seeds() {
    replay("request_head", checks::check_request_head);
}
