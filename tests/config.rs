//! `switchyard check` on files that are not what a config should be: nothing
//! to route (a warning, still exit 0), and paths that must be refused without
//! blocking (FIFO, device, directory, too large).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `switchyard check -c PATH`, killed (and the test failed) after 10 s.
fn check(path: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("switchyard check {} blocked", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn an_empty_config_passes_with_a_warning_that_nothing_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.toml");
    for body in ["", "[server]\nhttp = \"127.0.0.1:8080\"\n"] {
        std::fs::write(&f, body).unwrap();
        let out = check(&f);
        assert!(out.status.success(), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{}: warning: no [[routes]]", f.display()))
                && err.contains("nothing would be routed"),
            "{err}"
        );
        assert!(text(&out.stdout).contains(": ok (0 routes"));
    }
}

#[test]
fn a_config_with_routes_has_no_warning() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/full.toml");
    let out = check(&f);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn check_refuses_what_is_not_a_regular_file_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    let ok = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let link = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let big = dir.path().join("big.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    for (path, what) in [
        (fifo.as_path(), "it is a FIFO, not a regular file"),
        (
            link.as_path(),
            "it is a character device, not a regular file",
        ),
        (dir.path(), "it is a directory, not a regular file"),
        (big.as_path(), "it is larger than 16 MiB"),
    ] {
        let out = check(path);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let stdout = text(&out.stdout);
        assert_eq!(
            stdout,
            format!("{p}:1:1: cannot read {p}: {what}\n", p = path.display())
        );
    }
}
