//! Changes from discovery providers (`[providers.docker]`): containers that
//! start, stop or change health, and complete resyncs. A provider never
//! touches the table: it hands what it found here, where it is persisted,
//! published and audited like an admin change.
//!
//! ```text
//! docker service ──provider_up/down──> status (ctl state, switchyard_provider_up)
//!               ──discovery_sync (list)──┐
//!               ──discovery_container────┼─> state::discovered (pure) ─> commit (persist, swap) ─> events
//!               ──discovery_gone─────────┘   (gone: its backends leave rotation at once, before the fsync)
//! ```

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::json;

use super::Control;
use crate::config::Config;
use crate::events::{EventKind, NewEvent};
use crate::model::api::ProviderView;
use crate::model::AdminError;
use crate::state::discovered::{self, Change, Found, Refusal};
use crate::state::PersistedState;

/// A provider's live status (not persisted).
#[derive(Debug, Clone, Default)]
pub(super) struct ProviderLive {
    pub(super) view: ProviderView,
    /// Refused containers by id, with why.
    pub(super) refused: BTreeMap<String, String>,
}

// === impl Control ===

impl Control {
    /// A provider is configured (down until it connects).
    pub fn provider_configured(&self, provider: &str, endpoint: &str) {
        self.providers_mut(|m| {
            m.entry(provider.to_string()).or_default().view.endpoint = endpoint.to_string();
        });
        self.metrics
            .provider_up
            .with_label_values(&[provider])
            .set(0);
    }

    /// The provider answers and its events are followed.
    pub fn provider_up(&self, provider: &str, api_version: &str) {
        let was = self.providers_mut(|m| {
            let p = m.entry(provider.to_string()).or_default();
            let was = p.view.up;
            p.view.up = true;
            p.view.error = None;
            p.view.api_version = Some(api_version.to_string());
            was
        });
        self.metrics
            .provider_up
            .with_label_values(&[provider])
            .set(1);
        if !was {
            let what = format!("{provider} reachable (API {api_version}); following its events");
            tracing::info!(provider, "{what}");
            self.events
                .record(NewEvent::new(provider, EventKind::ProviderUp, what));
        }
    }

    /// The provider cannot be reached: the last known backends keep serving.
    pub fn provider_down(&self, provider: &str, error: &str) {
        let was = self.providers_mut(|m| {
            let p = m.entry(provider.to_string()).or_default();
            let was = p.view.up;
            p.view.up = false;
            p.view.error = Some(error.to_string());
            was
        });
        self.metrics
            .provider_up
            .with_label_values(&[provider])
            .set(0);
        if was {
            let what = format!(
                "{provider} unreachable ({error}); the last known backends keep serving, retrying"
            );
            tracing::warn!(provider, "{what}");
            self.events
                .record(NewEvent::new(provider, EventKind::ProviderDown, what));
        }
    }

    /// Providers as `GET /v1/state` shows them.
    pub fn providers_view(&self) -> BTreeMap<String, ProviderView> {
        let state = self.snapshot().state.clone();
        self.providers_mut(|m| {
            m.iter()
                .map(|(name, p)| {
                    let mut v = p.view.clone();
                    v.containers = discovered::containers_in_rotation(&state, name);
                    v.refused = p.refused.values().cloned().collect();
                    (name.clone(), v)
                })
                .collect()
        })
    }

    /// A complete list from `provider`: containers not in it leave rotation.
    pub fn discovery_sync(
        &self,
        provider: &str,
        found: &[Found],
        problems: &[(String, String)],
    ) -> Result<(), AdminError> {
        let refused = self.discovery_commit(provider, |state, file| {
            discovered::apply_sync(state, file, provider, found)
        })?;
        self.providers_mut(|m| {
            m.entry(provider.to_string()).or_default().view.last_sync =
                Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        });
        self.note_refusals(provider, None, refused, problems);
        Ok(())
    }

    /// One container's current view (it started, or its health changed).
    pub fn discovery_container(
        &self,
        provider: &str,
        id: &str,
        found: &[Found],
        problems: &[(String, String)],
    ) -> Result<(), AdminError> {
        let refused = self.discovery_commit(provider, |state, file| {
            discovered::apply_container(state, file, provider, id, found)
        })?;
        self.note_refusals(provider, Some(id), refused, problems);
        Ok(())
    }

    /// A container is stopping (kill, stop, die) or unhealthy: its backends
    /// leave rotation now — marked down in the table in use before anything
    /// is written — then the change is persisted and the table rebuilt.
    pub fn discovery_gone(&self, provider: &str, id: &str, why: &str) -> Result<(), AdminError> {
        let view = self.snapshot();
        let table = self.table.load();
        let mut any = false;
        for (pname, dp) in view
            .state
            .discovered
            .iter()
            .filter(|(_, p)| p.provider == provider)
        {
            for (vname, v) in &dp.versions {
                let Some(c) = v.containers.get(id) else {
                    continue;
                };
                any = true;
                let backend = table
                    .pools
                    .get(pname.as_str())
                    .and_then(|p| p.version(vname))
                    .and_then(|v| v.backends.iter().find(|b| b.key.addr.as_str() == c.addr));
                if let Some(b) = backend {
                    b.set_healthy(false);
                }
                tracing::info!(provider, container = %c.name, pool = %pname, version = %vname, "container {why}: out of rotation");
            }
        }
        if !any {
            self.providers_mut(|m| {
                if let Some(p) = m.get_mut(provider) {
                    p.refused.remove(id);
                }
            });
            return Ok(());
        }
        self.discovery_container(provider, id, &[], &[])
    }

    /// Applies a discovery change to the persisted state and commits it
    /// (nothing is written when nothing changed); records what changed.
    fn discovery_commit(
        &self,
        provider: &str,
        f: impl FnOnce(&mut PersistedState, &Config) -> (Vec<Change>, Vec<Refusal>),
    ) -> Result<Vec<Refusal>, AdminError> {
        let mut w = self.lock_writer();
        let view = self.snapshot();
        let mut state = (*view.state).clone();
        let (changes, refused) = f(&mut state, &view.file);
        if state != *view.state {
            self.commit(&mut w, state)?;
            let now = self.snapshot();
            if acme_hosts(&view.effective) != acme_hosts(&now.effective) {
                for problem in self.tls.apply_config(&now.effective) {
                    tracing::error!("{problem}");
                }
            }
        }
        drop(w);
        for c in changes {
            self.record_change(provider, c);
        }
        Ok(refused)
    }

    fn record_change(&self, provider: &str, c: Change) {
        let (kind, pool, what, after) = match c {
            Change::VersionAdded {
                pool,
                version,
                weight,
                container,
            } => (
                EventKind::VersionAdd,
                pool.clone(),
                format!("discovered version {version} of {pool} ({provider} container {container}): weight {weight}"),
                json!({ "version": version, "weight": weight }),
            ),
            Change::BackendUp {
                pool,
                version,
                container,
                addr,
            } => (
                EventKind::BackendDiscovered,
                pool.clone(),
                format!("{pool}/{version} backend {addr} ({provider} container {container}) in rotation"),
                json!({ "version": version, "backend": addr, "container": container }),
            ),
            Change::BackendDown {
                pool,
                version,
                container,
                addr,
            } => (
                EventKind::BackendGone,
                pool.clone(),
                format!("{pool}/{version} backend {addr} ({provider} container {container}) out of rotation"),
                json!({ "version": version, "backend": addr, "container": container }),
            ),
        };
        tracing::info!(provider, "{what}");
        self.events
            .record(NewEvent::new(provider, kind, what).pool(pool).after(after));
    }

    /// Keeps refusals (for `ctl state`): they replace those of container
    /// `scope`, or all of them. Each new one is logged and audited once.
    fn note_refusals(
        &self,
        provider: &str,
        scope: Option<&str>,
        refused: Vec<Refusal>,
        problems: &[(String, String)],
    ) {
        let mut now: BTreeMap<String, String> = BTreeMap::new();
        for (id, msg) in refused
            .into_iter()
            .map(|r| (r.id, r.message))
            .chain(problems.iter().cloned())
        {
            now.entry(id)
                .and_modify(|m| {
                    m.push_str("; ");
                    m.push_str(&msg);
                })
                .or_insert(msg);
        }
        let fresh: Vec<String> = self.providers_mut(|m| {
            let p = m.entry(provider.to_string()).or_default();
            let old = match scope {
                None => std::mem::take(&mut p.refused),
                Some(id) => p
                    .refused
                    .remove(id)
                    .map(|m| (id.to_string(), m))
                    .into_iter()
                    .collect(),
            };
            let fresh = now
                .iter()
                .filter(|(id, msg)| old.get(*id) != Some(*msg))
                .map(|(_, msg)| msg.clone())
                .collect();
            p.refused.extend(now);
            fresh
        });
        for msg in fresh {
            tracing::error!(provider, "{msg}");
            self.events
                .record(NewEvent::new(provider, EventKind::ProviderRefused, msg));
        }
    }

    fn providers_mut<T>(&self, f: impl FnOnce(&mut BTreeMap<String, ProviderLive>) -> T) -> T {
        let mut m = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m)
    }
}

/// Hosts whose routes want an ACME certificate.
fn acme_hosts(c: &Config) -> Vec<String> {
    c.routes
        .iter()
        .filter(|r| r.tls == crate::config::TlsMode::Acme)
        .map(|r| r.host.to_string())
        .collect()
}
