//! Durable file writes: temp file, fsync, rename, fsync the directory.
//!
//! Everything that matters on disk (the state file, ACME accounts and
//! certificates) goes through [`write_atomic`], so a crash leaves either the
//! old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path` atomically with the given mode (e.g. `0o600`).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temp files [`write_atomic`] leaves for `path` when a process
/// dies between creating and renaming one (`kill -9`, power loss): every
/// `.NAME.tmp.PID` next to `path` whose PID is not this process. Returns how
/// many were removed. Call at start, before anything writes `path`.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let ours = std::process::id().to_string();
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some(pid) = file.strip_prefix(&prefix) else {
            continue;
        };
        let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        if is_pid && pid != ours && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Moves an unreadable file aside as `NAME.corrupt-UNIXTIME` so it can be
/// inspected; returns the new path.
pub fn set_aside(path: &Path) -> io::Result<std::path::PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".corrupt-{secs}"));
    let to = path.with_file_name(name);
    fs::rename(path, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_atomically_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(&p, b"{}").unwrap();
        for name in [
            ".state.json.tmp.12345",
            ".state.json.tmp.1",
            ".other.json.tmp.7",
            ".state.json.tmp.x1",
            "keep",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let ours = dir
            .path()
            .join(format!(".state.json.tmp.{}", std::process::id()));
        fs::write(&ours, b"").unwrap();
        assert_eq!(remove_stale_temps(&p), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".other.json.tmp.7".to_string(),
            ".state.json.tmp.x1".to_string(),
            format!(".state.json.tmp.{}", std::process::id()),
            "keep".to_string(),
            "state.json".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn set_aside_renames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        fs::write(&p, b"garbage").unwrap();
        let to = set_aside(&p).unwrap();
        assert!(!p.exists());
        assert!(to.to_string_lossy().contains("x.json.corrupt-"));
    }
}
