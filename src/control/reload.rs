//! Reloading the config file.

use std::sync::Arc;

use super::{Control, Snapshot};

use crate::config::{read_config_file, Config, ConfigSource};
use crate::events::{EventKind, NewEvent};
use crate::middleware::Middlewares;
use crate::model::api::ReloadReply;
use crate::model::AdminError;
use crate::state::{apply_overrides, PersistedState};

// === impl Control ===

impl Control {
    /// Reloads the config file. A bad file changes nothing and every error is
    /// returned. A file that would route nothing, or that drops pools holding
    /// runtime changes or an active rollout, is refused unless `force`.
    /// Listener addresses need a restart (they are not re-bound).
    ///
    /// The file is read before the writer lock is taken, with a size and
    /// type limit, so a slow or hostile path (a FIFO, a device) never holds
    /// up another change, and reads never wait for it at all.
    pub fn reload(&self, who: &str, force: bool) -> Result<ReloadReply, AdminError> {
        let reply = self.reload_file(who, force);
        // The parsed document and the builders' scratch are freed by now;
        // the old table and config (unless a request still holds the table)
        // are freed on the scratch thread before this runs there.
        crate::memory::later(crate::memory::release);
        reply
    }

    fn reload_file(&self, who: &str, force: bool) -> Result<ReloadReply, AdminError> {
        let path = self
            .snapshot()
            .config_path
            .clone()
            .ok_or(AdminError::NoConfigFile)?;
        let started = std::time::Instant::now();
        let text = read_config_file(&path).map_err(|e| self.reload_failed(who, e.to_string()))?;
        let running = self.snapshot();
        let (file, source) = match running.source.as_ref() {
            // The text the running config was read from: reading it again
            // would give the same config.
            Some(source) if source.text() == text => {
                drop(text);
                (Config::clone(&running.file), source.clone())
            }
            // An edit in a few sections: what they make (pools, routes, the
            // rest) is read again on this thread, the rest of the config
            // shared; anything else gives the text back for a full read.
            Some(source) => match source.reparse(&running.file, text) {
                Ok((mut file, source)) => {
                    if source.whole_by_sections() {
                        file.share_equal(&running.file);
                    }
                    (file, Arc::new(source))
                }
                Err(text) => self.parse_all(who, &path, text, &running.file, false)?,
            },
            None => self.parse_all(who, &path, text, &running.file, true)?,
        };
        drop(running);
        // Users files are read here, before the writer's lock, like the file.
        let previous = self.snapshot().middlewares.clone();
        let (middlewares, mw_problems) = Middlewares::build(&file, Some(&previous), &self.metrics);
        let read = started.elapsed();
        if force {
            // A forced reload that moves a rollout's weights aborts it first.
            let view = self.snapshot();
            let (effective, _, _) = apply_overrides(&file, &view.state);
            for pool in bent_rollouts(&view, &effective) {
                self.abort_for(&pool, who, "reload")?;
            }
        }
        let w = self.lock_writer();
        let view = self.snapshot();
        if !force {
            refuse_losses(&file, &view.state).map_err(|m| self.reload_failed(who, m))?;
        }
        let mut notes_out = Vec::new();
        if listeners_differ(&view.file, &file) {
            notes_out.push("listener addresses, limits, the admin socket or [providers.docker] changed in the file: they take effect at the next restart".to_string());
        }
        let (effective, mut kept, notes) = apply_overrides(&file, &view.state);
        if let Some(pool) = bent_rollouts(&view, &effective).first() {
            let refused = Self::guard(&view, pool, "a reload that changes its weights")
                .err()
                .unwrap_or_else(|| AdminError::Conflict(format!("pool {pool} is in a rollout")));
            self.reload_failed(who, refused.to_string());
            return Err(refused);
        }
        let applied = started.elapsed();
        if w.store.shared() {
            // The fleet's state is not this file's to prune.
            kept = (*view.state).clone();
        } else if kept != *view.state {
            w.store
                .save(&kept)
                .map_err(|e| AdminError::Store(e.to_string()))?;
        }
        for problem in self
            .tls
            .apply_config(&effective)
            .into_iter()
            .chain(mw_problems)
        {
            tracing::error!("{problem}");
            notes_out.push(problem);
        }
        self.publish(Snapshot {
            config_path: Some(path.clone()),
            file: Arc::new(file),
            source: Some(source.clone()),
            effective: Arc::new(effective),
            state: Arc::new(kept),
            middlewares: Arc::new(middlewares),
        });
        drop(w);
        tracing::info!(
            read_ms = read.as_millis() as u64,
            overrides_ms = (applied - read).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            incremental = source.incremental(),
            whole_by_sections = source.whole_by_sections(),
            "config reloaded"
        );
        for (pool, note) in notes {
            self.events
                .record(NewEvent::new(who, EventKind::OverrideDropped, note.clone()).pool(pool));
            notes_out.push(note);
        }
        self.metrics.config_reload(true);
        let what = format!("reloaded {}", path.display());
        self.events
            .record(NewEvent::new(who, EventKind::Reload, what));
        Ok(ReloadReply {
            notes: notes_out,
            reloaded: path.display().to_string(),
        })
    }

    /// The whole file read and validated, its text indexed: section by
    /// section when `by_sections` and it can be, parsed whole otherwise.
    fn parse_all(
        &self,
        who: &str,
        path: &std::path::Path,
        text: String,
        running: &Config,
        by_sections: bool,
    ) -> Result<(Config, Arc<ConfigSource>), AdminError> {
        // Section by section, on this thread (the transient is one
        // pool's), unless `reparse` tried.
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let text = if by_sections {
            match ConfigSource::read(text, base) {
                Ok((mut file, source)) => {
                    file.share_equal(running);
                    return Ok((file, Arc::new(source)));
                }
                Err(text) => text,
            }
        } else {
            text
        };
        // Parsed whole (and its errors reported): the parse's transient (a
        // document many times the text) lives and dies on the scratch
        // thread, in memory of its own.
        let at = path.to_owned();
        let (mut file, mut source) =
            crate::memory::on_scratch(move || Config::parse_source_whole(&at, text))
                .map_err(|e| self.reload_failed(who, e.to_string()))?;
        // One copy of what did not change, and the table keeps those pools;
        // the rest copied into this thread's memory.
        file.share_unchanged(running);
        source.rehome();
        Ok((file, Arc::new(source)))
    }

    /// Counts and records a refused reload; the running config is kept.
    fn reload_failed(&self, who: &str, msg: String) -> AdminError {
        self.metrics.config_reload(false);
        self.events.record(NewEvent::new(
            who,
            EventKind::ReloadFailed,
            format!("reload refused, running config kept:\n{msg}"),
        ));
        AdminError::BadConfig(msg)
    }
}

/// Pools with an active rollout whose weights `effective` would change.
fn bent_rollouts(view: &Snapshot, effective: &Config) -> Vec<String> {
    view.state
        .rollouts
        .iter()
        .filter(|(_, r)| r.status.is_active())
        .filter(|(pool, _)| {
            let now = super::weights_of(&view.effective, pool);
            let next = super::weights_of(effective, pool);
            next.is_some() && next != now
        })
        .map(|(pool, _)| pool.clone())
        .collect()
}

/// What a reload must not do without being told to: route nothing, or drop
/// pools that hold runtime changes or a rollout.
fn refuse_losses(file: &Config, state: &PersistedState) -> Result<(), String> {
    if file.routes.is_empty() && file.docker.is_none() {
        return Err(
            "the new config has no routes: every request would get 404. \
                    Fix the file, or reload with force (ctl reload --force) to serve nothing"
                .into(),
        );
    }
    let held: Vec<&str> = state
        .pools
        .iter()
        .filter(|(_, o)| !o.is_empty())
        .map(|(p, _)| p.as_str())
        .chain(
            state
                .rollouts
                .iter()
                .filter(|(_, r)| r.status.is_active())
                .map(|(p, _)| p.as_str()),
        )
        .filter(|p| !file.pools.contains_key(*p) && !state.discovered.contains_key(*p))
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the new config drops pool(s) {} that hold runtime changes (weights, versions or a rollout); \
         they would be lost. Fix the file, or reload with force (ctl reload --force) to drop them",
        held.join(", ")
    ))
}

/// Whether a reload changed something only a restart applies.
fn listeners_differ(a: &Config, b: &Config) -> bool {
    let sa = &a.server;
    let sb = &b.server;
    sa.http != sb.http
        || sa.https != sb.https
        || sa.header_timeout != sb.header_timeout
        || sa.max_connections != sb.max_connections
        || sa.max_header_bytes != sb.max_header_bytes
        || sa.workers != sb.workers
        || a.admin != b.admin
        || a.metrics != b.metrics
        || a.access_log != b.access_log
        || a.docker != b.docker
        || a.cluster != b.cluster
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventLog;
    use crate::state::MemoryStore;

    const TEXT: &str = r#"
[[routes]]
host = "a.test"
pool = "a"
[[routes]]
host = "b.test"
pool = "b"
[pools.a.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
[pools.b.versions.blue]
weight = 1
backends = ["127.0.0.1:2"]
"#;

    #[test]
    fn a_reload_parses_only_a_changed_text_and_keeps_the_unchanged_pools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, TEXT).unwrap();
        let c = Control::new(
            Some(path.clone()),
            Config::load(&path).unwrap(),
            Box::<MemoryStore>::default(),
            EventLog::in_memory(),
        );
        let pool = |name: &str| c.table.load().pools[name].clone();
        let source = || c.snapshot().source.clone().expect("a source");
        let (a0, b0) = (pool("a"), pool("b"));
        assert!(c.snapshot().source.is_none());

        // The same text: parsed once (nothing known at start), then taken as
        // it is; every pool kept.
        c.reload("test", false).unwrap();
        let first = c.snapshot();
        assert!(!source().incremental());
        assert!(Arc::ptr_eq(&a0, &pool("a")) && Arc::ptr_eq(&b0, &pool("b")));
        c.reload("test", false).unwrap();
        let second = c.snapshot();
        assert!(Arc::ptr_eq(
            second.source.as_ref().unwrap(),
            first.source.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&first.file.pools["a"], &second.file.pools["a"]));
        assert!(Arc::ptr_eq(&first.file.routes, &second.file.routes));

        // One pool changed: it alone is read again and rebuilt, and the
        // config follows the file.
        let b3 = TEXT.replace(
            "weight = 1\nbackends = [\"127.0.0.1:2\"]",
            "weight = 3\nbackends = [\"127.0.0.1:2\"]",
        );
        std::fs::write(&path, &b3).unwrap();
        c.reload("test", false).unwrap();
        let third = c.snapshot();
        assert!(source().incremental(), "only pool b's section changed");
        assert_eq!(source().text(), b3);
        assert_eq!(
            third.file.pools["b"].versions.get("blue").unwrap().weight,
            3
        );
        assert_eq!(*third.file, Config::from_file_text(&path, &b3).unwrap());
        assert!(Arc::ptr_eq(&second.file.pools["a"], &third.file.pools["a"]));
        assert!(Arc::ptr_eq(&second.file.routes, &third.file.routes));
        assert!(Arc::ptr_eq(&a0, &pool("a")));
        assert!(!Arc::ptr_eq(&b0, &pool("b")));
        assert_eq!(pool("b").versions[0].weight, 3);

        // A bad file is refused whatever was read before, and changes
        // nothing: an error in a pool's section, then anywhere.
        std::fs::write(&path, b3.replace("weight = 3", "weight = -3")).unwrap();
        let e = c.reload("test", false).unwrap_err().to_string();
        assert!(e.contains("weight"), "{e}");
        std::fs::write(&path, "[[routes]]\nhost = 1\n").unwrap();
        assert!(c.reload("test", false).is_err());
        assert!(Arc::ptr_eq(
            c.snapshot().source.as_ref().unwrap(),
            third.source.as_ref().unwrap()
        ));
        // Back to the first text: pool b read again.
        std::fs::write(&path, TEXT).unwrap();
        c.reload("test", false).unwrap();
        assert!(source().incremental());
        assert_eq!(source().text(), TEXT);
        assert_eq!(
            c.snapshot().file.pools["b"]
                .versions
                .get("blue")
                .unwrap()
                .weight,
            1
        );
        assert_eq!(pool("b").versions[0].weight, 1);

        // A route changed: read again alone too.
        let moved = TEXT.replace("host = \"b.test\"", "host = \"c.test\"");
        std::fs::write(&path, &moved).unwrap();
        c.reload("test", false).unwrap();
        assert!(source().incremental());
        assert_eq!(
            *c.snapshot().file,
            Config::from_file_text(&path, &moved).unwrap()
        );
        assert_eq!(c.snapshot().file.routes[1].host.to_string(), "c.test");
        // A comment at the top: read without the pools and routes.
        std::fs::write(&path, format!("# noted\n{moved}")).unwrap();
        c.reload("test", false).unwrap();
        assert!(source().incremental());
        // A pool as a root key: the whole file is read again.
        let noted =
            format!("pools.z.versions.v = {{ weight = 1, backends = [\"127.0.0.1:3\"] }}\n{moved}");
        std::fs::write(&path, &noted).unwrap();
        c.reload("test", false).unwrap();
        assert!(!source().incremental());
        assert_eq!(
            *c.snapshot().file,
            Config::from_file_text(&path, &noted).unwrap()
        );
    }
}
