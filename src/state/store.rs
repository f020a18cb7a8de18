//! Where the persisted state is kept: the JSON state file (temp file, fsync,
//! rename), or memory for `demo` and tests.

use std::path::{Path, PathBuf};

use super::PersistedState;
use crate::fsutil;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A shared store (etcd) cannot be reached: nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// A shared store holds a newer state than the one this write was made
    /// against (another instance wrote first): nothing was written; `fresh`
    /// is what it holds, at `revision`.
    #[error("another instance changed the shared state meanwhile")]
    Conflict {
        fresh: Box<PersistedState>,
        revision: i64,
    },
    /// A write only the rollout leader may make, from an instance that no
    /// longer holds the leadership: nothing was written.
    #[error("this instance is not the rollout leader (any more)")]
    NotLeader,
}

/// Where the state lives.
pub trait StateStore: Send + Sync {
    /// The stored state; `Ok(None)` when there is none yet.
    fn load(&self) -> Result<Option<PersistedState>, StateError>;
    /// Stores the state durably before returning.
    fn save(&self, state: &PersistedState) -> Result<(), StateError>;
    /// A name for logs.
    fn describe(&self) -> String;
    /// Stores a write only the rollout leader may make: refused with
    /// [`StateError::NotLeader`] once this instance lost the leadership. A
    /// store of one instance has no leader to check.
    fn save_fenced(&self, state: &PersistedState) -> Result<(), StateError> {
        self.save(state)
    }
    /// Keeps `state` as this instance's local copy only: for a shared
    /// store, the cache served when it cannot be reached at start.
    fn save_local(&self, state: &PersistedState) -> Result<(), StateError> {
        self.save(state)
    }
    /// Whether the store is shared by several instances (each applies it to
    /// its own config file, so it is stored as written, never pruned).
    fn shared(&self) -> bool {
        false
    }
}

/// The JSON state file.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_owned(),
        }
    }
}

impl StateStore for FileStore {
    /// Also removes the temp files a writer killed mid-write left behind.
    fn load(&self) -> Result<Option<PersistedState>, StateError> {
        let stale = fsutil::remove_stale_temps(&self.path);
        if stale > 0 {
            tracing::info!(removed = stale, path = %self.path.display(), "removed temp files left by an interrupted write");
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let mut data = serde_json::to_vec_pretty(state).unwrap_or_default();
        data.push(b'\n');
        fsutil::write_atomic(&self.path, &data, 0o600).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A store that keeps nothing (for `demo` and tests).
#[derive(Default)]
pub struct MemoryStore {
    state: std::sync::Mutex<Option<PersistedState>>,
}

impl StateStore for MemoryStore {
    fn load(&self) -> Result<Option<PersistedState>, StateError> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let store = FileStore::new(&p);
        assert!(store.load().unwrap().is_none());
        let s = {
            let mut s = PersistedState::default();
            s.pools.insert("app".into(), Default::default());
            s
        };
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), s);
        std::fs::write(&p, b"{\"pools\": [").unwrap();
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
