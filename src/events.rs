//! The audit log: every weight change, version change, reload, health flip,
//! rollout step, judgement and rollback, with who did it and why.
//!
//! Events get increasing sequence numbers that survive restarts. The last
//! [`RING`] are kept in memory for `GET /v1/events?since=N`; all of them are
//! appended as JSON lines to a file next to the state file (rotated once it
//! passes [`MAX_FILE`]).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

pub use crate::model::event::{Event, EventKind, NewEvent};

/// Events kept in memory.
pub const RING: usize = 10_000;
/// Size past which the events file is rotated at start.
pub const MAX_FILE: u64 = 16 << 20;

struct Inner {
    ring: VecDeque<Event>,
    next: u64,
    file: Option<File>,
}

pub struct EventLog {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
    /// Every recorded event, for services that act on them (notifications).
    /// Never blocks the recorder: a subscriber that falls more than
    /// [`TAP`] events behind loses the oldest and is told how many.
    tap: broadcast::Sender<Event>,
    /// `[cluster]`: this instance's name and where its own events go to be
    /// shared with the fleet (set once the cluster service starts).
    fleet: Mutex<Option<Tap>>,
}

struct Tap {
    instance: String,
    to: tokio::sync::mpsc::UnboundedSender<Event>,
}

/// Events a subscriber may fall behind by.
pub const TAP: usize = 256;

// === impl EventLog ===

impl EventLog {
    /// A log that only keeps memory (tests, `demo`).
    pub fn in_memory() -> EventLog {
        EventLog {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                next: 1,
                file: None,
            }),
            path: None,
            tap: broadcast::channel(TAP).0,
            fleet: Mutex::new(None),
        }
    }

    /// Opens (or creates) the log at `path`, reading back its last events so
    /// sequence numbers continue. A damaged line is skipped, never fatal.
    pub fn open(path: &Path) -> EventLog {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.len() > MAX_FILE {
                let mut old = path.as_os_str().to_owned();
                old.push(".1");
                let _ = std::fs::rename(path, old);
            }
        }
        let mut ring = VecDeque::new();
        let mut next = 1;
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(e) = serde_json::from_str::<Event>(&line) {
                    next = next.max(e.seq + 1);
                    ring.push_back(e);
                    if ring.len() > RING {
                        ring.pop_front();
                    }
                }
            }
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Events name users and backends: private like the state file.
        let file = match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => {
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
                Some(f)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the events file; events stay in memory");
                None
            }
        };
        EventLog {
            inner: Mutex::new(Inner { ring, next, file }),
            path: Some(path.to_owned()),
            tap: broadcast::channel(TAP).0,
            fleet: Mutex::new(None),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `[cluster]`: names this instance in its events from now on, and
    /// sends each of them to `to` (the cluster service shares them).
    pub fn share(&self, instance: &str, to: tokio::sync::mpsc::UnboundedSender<Event>) {
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some(Tap {
            instance: instance.to_string(),
            to,
        });
    }

    /// Records an event, logs it, and returns its sequence number.
    pub fn record(&self, e: NewEvent) -> u64 {
        let tap = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        let event = Event {
            seq: 0,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            who: e.who,
            instance: tap.as_ref().map(|t| t.instance.clone()),
            kind: e.kind,
            pool: e.pool,
            what: e.what,
            before: e.before,
            after: e.after,
        };
        let event = self.append(event, true);
        if let Some(t) = tap.as_ref() {
            let _ = t.to.send(event.clone());
        }
        event.seq
    }

    /// `[cluster]`: an event another instance recorded, kept here under the
    /// next local sequence number (its time, author and instance kept). Not
    /// sent to [`EventLog::subscribe`]rs: the instance that recorded it
    /// notifies, so a fleet sends each notification once.
    pub fn record_remote(&self, event: Event) -> u64 {
        self.append(event, false).seq
    }

    /// Numbers, logs, writes and keeps one event; a `local` one goes to the
    /// subscribers too.
    fn append(&self, mut event: Event, local: bool) -> Event {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = inner.next;
        inner.next += 1;
        event.seq = seq;
        tracing::info!(target: "switchyard::audit", seq, who = %event.who, instance = event.instance.as_deref().unwrap_or(""), kind = %event.kind, pool = event.pool.as_deref().unwrap_or(""), "{}", event.what);
        if let Some(f) = inner.file.as_mut() {
            if let Ok(mut line) = serde_json::to_vec(&event) {
                line.push(b'\n');
                if let Err(err) = f.write_all(&line) {
                    tracing::warn!(error = %err, "cannot append to the events file");
                }
            }
        }
        if local && self.tap.receiver_count() > 0 {
            // In order: sent while the log's lock is held.
            let _ = self.tap.send(event.clone());
        }
        inner.ring.push_back(event.clone());
        if inner.ring.len() > RING {
            inner.ring.pop_front();
        }
        event
    }

    /// Events with a sequence number above `since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<Event> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .ring
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }

    /// Every event recorded from now on, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tap.subscribe()
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(what: &str) -> NewEvent {
        NewEvent::new("test", EventKind::Weights, what).pool("app")
    }

    #[test]
    fn sequence_continues_across_reopen_and_skips_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let log = EventLog::open(&p);
        assert_eq!(log.record(ev("one")), 1);
        assert_eq!(log.record(ev("two")), 2);
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{not json\n")
            .unwrap();
        let log = EventLog::open(&p);
        assert_eq!(log.record(ev("three")), 3);
        let all = log.since(0);
        assert_eq!(
            all.iter().map(|e| e.what.as_str()).collect::<Vec<_>>(),
            ["one", "two", "three"]
        );
        assert_eq!(log.since(2).len(), 1);
        assert_eq!(log.last_seq(), 3);
    }
}
