//! Reading the config file, bounded: a regular file of at most
//! [`MAX_CONFIG_BYTES`], opened so that neither the open nor the read can
//! block.
//!
//! ```text
//! path --open(O_NONBLOCK | O_NOCTTY)--> fd --fstat--> not a regular file: refused
//!                                                └──> read take(MAX + 1) --> over MAX: refused
//! ```
//!
//! The type is checked on the opened file, not the path, so a symlink to
//! `/dev/zero` or to a FIFO is refused too, and nothing can be swapped in
//! between the check and the read. `O_NONBLOCK` is what keeps opening a FIFO
//! with no writer from waiting for one; it changes nothing for a regular file.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::ConfigError;

/// Largest config file read: 16 MiB.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The text of a config file, or why it cannot be one.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        // A Unix socket cannot be opened (ENXIO): say what it is.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => not_a_file(path, m.file_type()),
                _ => read_err(e),
            });
        }
        Err(e) => return Err(read_err(e)),
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(not_a_file(path, meta.file_type()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(path));
    }
    let bytes = read_at_most(file, meta.len(), MAX_CONFIG_BYTES).map_err(read_err)?;
    let Some(bytes) = bytes else {
        // It grew between the fstat and the read.
        return Err(too_large(path));
    };
    String::from_utf8(bytes).map_err(|_| {
        read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// All of `file` when it has at most `max` bytes, `None` when it has more.
/// `expected` (its size when it was looked at, at most `max`) sizes the
/// buffer: a 2 MB file is read without growing it, and a file that grew
/// since is still read whole.
fn read_at_most(file: File, expected: u64, max: u64) -> io::Result<Option<Vec<u8>>> {
    let capacity = usize::try_from(expected.min(max)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity.saturating_add(1));
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

fn too_large(path: &Path) -> ConfigError {
    ConfigError::TooLarge {
        path: path.to_owned(),
        limit: MAX_CONFIG_BYTES,
    }
}

fn not_a_file(path: &Path, t: FileType) -> ConfigError {
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    ConfigError::NotAFile {
        path: path.to_owned(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    /// Runs `f` on another thread and fails the test when it takes more than
    /// five seconds: a config read that blocks is the bug these tests catch.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("reading the config blocked")
    }

    fn load_err(path: PathBuf) -> String {
        within_5s(move || match Config::load(&path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        })
    }

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs")
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        mkfifo(&fifo);
        let e = load_err(fifo);
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
    }

    #[test]
    fn a_symlink_to_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let e = load_err(link);
        assert!(e.contains("is a FIFO"), "{e}");
    }

    #[test]
    fn dev_zero_and_a_symlink_to_it_are_refused() {
        let e = load_err(PathBuf::from("/dev/zero"));
        assert!(e.contains("is a character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = load_err(link);
        assert!(e.contains("is a character device"), "{e}");
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_err(dir.path().to_owned());
        assert!(e.contains("is a directory, not a regular file"), "{e}");
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("config.toml");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = load_err(sock);
        assert!(e.contains("is a socket"), "{e}");
    }

    #[test]
    fn a_file_over_16_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("config.toml");
        // Sparse: 17 MiB long, no blocks written.
        File::create(&big)
            .unwrap()
            .set_len(17 * 1024 * 1024)
            .unwrap();
        let e = load_err(big);
        assert!(e.contains("larger than 16 MiB"), "{e}");
    }

    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let at = |expected, max| read_at_most(File::open(&p).unwrap(), expected, max).unwrap();
        assert_eq!(at(10, 10).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(at(10, 9), None);
        // A file that grew (or shrank) since its size was taken is read
        // whole all the same.
        assert_eq!(at(4, 10).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(at(4, 9), None);
        assert_eq!(at(20, 10).as_deref(), Some(&b"0123456789"[..]));
    }

    #[test]
    fn a_regular_file_still_loads_and_bad_utf8_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "[server]\nhttp = \"127.0.0.1:8080\"\n").unwrap();
        assert!(Config::load(&p).is_ok());
        std::fs::write(&p, b"# \xff\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.ends_with("stream did not contain valid UTF-8"), "{e}");
    }
}
