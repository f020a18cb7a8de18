//! [`EtcdStore`]: the fleet's state in etcd, with this instance's state file
//! as a local cache (what it serves when it starts without etcd).

use std::sync::Arc;

use super::Cluster;
use crate::state::{FileStore, PersistedState, StateError, StateStore};

/// Writes go to etcd (revision-compared) and then to the local cache; reads
/// at start come from the cache, and the cluster service replaces them
/// with etcd's as soon as it connects.
pub struct EtcdStore {
    cluster: Arc<Cluster>,
    cache: FileStore,
    cache_name: String,
    runtime: tokio::runtime::Handle,
}

impl EtcdStore {
    /// `runtime` runs the etcd calls of [`StateStore::save`], which is called
    /// off the runtime's workers (on the blocking pool).
    pub fn new(
        cluster: Arc<Cluster>,
        cache: &std::path::Path,
        runtime: tokio::runtime::Handle,
    ) -> EtcdStore {
        EtcdStore {
            cluster,
            cache: FileStore::new(cache),
            cache_name: cache.display().to_string(),
            runtime,
        }
    }

    fn write(&self, state: &PersistedState, fenced: bool) -> Result<(), StateError> {
        // Tried even while this instance's watch is down: a watch that just
        // lost its member (an etcd leader killed) takes seconds to come back,
        // while the write itself retries the other members until its
        // deadline. What etcd takes, the whole fleet sees; what it does not,
        // nobody does (503, nothing changed).
        match self
            .runtime
            .block_on(self.cluster.write_state(state, fenced))
        {
            Ok(_) => {}
            Err(StateError::Unavailable(why)) if !self.cluster.is_connected() => {
                return Err(StateError::Unavailable(format!(
                    "etcd is unreachable ({}): changes are refused until this instance reconnects, \
                     so that no instance routes differently from the fleet; it keeps serving the last table ({why})",
                    self.cluster.config.etcd.join(", ")
                )));
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = self.cache.save(state) {
            tracing::warn!(error = %e, "cannot update the local cache of the fleet's state");
        }
        Ok(())
    }
}

impl StateStore for EtcdStore {
    fn load(&self) -> Result<Option<PersistedState>, StateError> {
        self.cache.load()
    }

    fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        self.write(state, false)
    }

    fn save_fenced(&self, state: &PersistedState) -> Result<(), StateError> {
        self.write(state, true)
    }

    fn save_local(&self, state: &PersistedState) -> Result<(), StateError> {
        self.cache.save(state)
    }

    fn shared(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} under {} (local cache {})",
            self.cluster.config.etcd.join(","),
            self.cluster.state_key(),
            self.cache_name
        )
    }
}
