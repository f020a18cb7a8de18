//! `GET /v1/state`: built from the table and the snapshot, never from the
//! writer's lock, so it answers while a change is being made.

use std::sync::atomic::Ordering;

use super::Control;
use crate::config::TlsMode;
use crate::model::api::{BackendView, MiddlewareView, PoolView, RouteView, StateView, VersionView};
use crate::routing::Pool;

// === impl Control ===

impl Control {
    /// `GET /v1/state`; with `pool`, only that pool (and its routes).
    pub fn state_view(&self, pool: Option<&str>) -> StateView {
        let table = self.table.load();
        let view = self.snapshot();
        let wanted = |name: &str| pool.is_none_or(|p| p == name);
        let pools = table
            .pools
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, p)| {
                let mut v = pool_view(p);
                if !view.file.pools.contains_key(name) {
                    v.provider = view
                        .state
                        .discovered
                        .get(&**name)
                        .map(|d| d.provider.clone());
                }
                (name.to_string(), v)
            })
            .collect();
        let routes = table
            .routes()
            .iter()
            .filter(|r| wanted(&r.pool.name))
            .map(|r| RouteView {
                host: r.host.to_string(),
                middlewares: r
                    .middlewares
                    .iter()
                    .map(|m| MiddlewareView {
                        effect: m.describe(),
                        kind: m.kind_name().to_string(),
                        name: m.name.to_string(),
                        rejected: m.rejected(),
                    })
                    .collect(),
                pool: r.pool.name.to_string(),
                preview: r.preview,
                rule: r.rules.as_ref().map(|rules| rules.describe()),
                tls: match r.tls {
                    TlsMode::None => "none",
                    TlsMode::Acme => "acme",
                    TlsMode::Files { .. } => "files",
                }
                .to_string(),
            })
            .collect();
        let rollouts = view
            .state
            .rollouts
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        StateView {
            certificates: self.tls.certificates(),
            cluster: self.cluster().map(|c| c.view()),
            config: view.config_path.as_ref().map(|p| p.display().to_string()),
            last_event: self.events.last_seq(),
            listeners: self.bound(),
            pools,
            providers: self.providers_view(),
            rollouts,
            routes,
            state_store: self.store_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

fn pool_view(pool: &Pool) -> PoolView {
    let eff = pool.effective_weights();
    let total: u64 = eff.iter().map(|&w| u64::from(w)).sum();
    let versions = pool
        .versions
        .iter()
        .zip(&eff)
        .map(|(v, &e)| {
            let share_percent = if total == 0 {
                0.0
            } else {
                (f64::from(e) * 10_000.0 / total as f64).round() / 100.0
            };
            let backends = v
                .backends
                .iter()
                .map(|b| BackendView {
                    addr: b.key.addr.to_string(),
                    available: b.is_available(),
                    ejected: b.is_ejected(),
                    health: match (b.is_known(), b.is_healthy()) {
                        (false, _) => "unknown",
                        (true, true) => "up",
                        (true, false) => "down",
                    }
                    .to_string(),
                    healthy: b.is_known().then(|| b.is_healthy()),
                    in_flight: b.in_flight.load(Ordering::Relaxed),
                    queued: b.queued(),
                })
                .collect();
            let view = VersionView {
                backends,
                effective_weight: e,
                in_flight: v.in_flight(),
                share_percent,
                weight: v.weight,
            };
            (v.name.to_string(), view)
        })
        .collect();
    PoolView {
        provider: None,
        matches: pool.version_rules().map(|r| r.spec.clone()).collect(),
        versions,
    }
}
