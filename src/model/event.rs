//! Audit events: what happened, who did it, and the kind as a closed set.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every kind of audit event. On the wire and in the events file each is
/// the dotted name (`"weights"`, `"rollout.step"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "weights")]
    Weights,
    #[serde(rename = "version.add")]
    VersionAdd,
    #[serde(rename = "version.replace")]
    VersionReplace,
    #[serde(rename = "version.remove")]
    VersionRemove,
    /// A pool's version rules changed at runtime (`PUT .../match`).
    #[serde(rename = "match")]
    Match,
    #[serde(rename = "reload")]
    Reload,
    #[serde(rename = "reload.failed")]
    ReloadFailed,
    #[serde(rename = "override.dropped")]
    OverrideDropped,
    #[serde(rename = "state.error")]
    StateError,
    #[serde(rename = "backend.ejected")]
    BackendEjected,
    #[serde(rename = "backend.restored")]
    BackendRestored,
    #[serde(rename = "health.up")]
    HealthUp,
    #[serde(rename = "health.down")]
    HealthDown,
    #[serde(rename = "rollout.start")]
    RolloutStart,
    #[serde(rename = "rollout.smoke")]
    RolloutSmoke,
    #[serde(rename = "rollout.step")]
    RolloutStep,
    #[serde(rename = "rollout.judgement")]
    RolloutJudgement,
    #[serde(rename = "rollout.failure")]
    RolloutFailure,
    #[serde(rename = "rollout.pause")]
    RolloutPause,
    #[serde(rename = "rollout.resume")]
    RolloutResume,
    /// A step passed and the next waits for an operator's approval.
    #[serde(rename = "rollout.waiting_approval")]
    RolloutApproval,
    #[serde(rename = "rollout.promoted")]
    RolloutPromoted,
    #[serde(rename = "rollout.rolled_back")]
    RolloutRolledBack,
    /// A notification (`[[notify]]`) was delivered.
    #[serde(rename = "notify.sent")]
    NotifySent,
    /// A notification attempt failed (retried, or given up), or one was dropped.
    #[serde(rename = "notify.failed")]
    NotifyFailed,
    /// A discovered container joined its version's backends.
    #[serde(rename = "backend.discovered")]
    BackendDiscovered,
    /// A discovered container left rotation (stopped, killed, unhealthy, gone).
    #[serde(rename = "backend.gone")]
    BackendGone,
    /// A provider (Docker) became unreachable, or reachable again.
    #[serde(rename = "provider.down")]
    ProviderDown,
    #[serde(rename = "provider.up")]
    ProviderUp,
    /// A container whose labels cannot be used (a pool of the config file,
    /// a host routed elsewhere, a bad label): it is ignored.
    #[serde(rename = "provider.refused")]
    ProviderRefused,
    /// `[cluster]`: this instance became, or stopped being, the fleet's
    /// rollout leader.
    #[serde(rename = "cluster.leader")]
    ClusterLeader,
    /// `[cluster]`: the connection to etcd was lost or came back.
    #[serde(rename = "cluster.connection")]
    ClusterConnection,
    /// A kind this build does not know (an events file from a newer one).
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl EventKind {
    /// The dotted name, as in the events file.
    pub fn as_str(self) -> &'static str {
        use EventKind::*;
        match self {
            Weights => "weights",
            VersionAdd => "version.add",
            VersionReplace => "version.replace",
            VersionRemove => "version.remove",
            Match => "match",
            Reload => "reload",
            ReloadFailed => "reload.failed",
            OverrideDropped => "override.dropped",
            StateError => "state.error",
            BackendEjected => "backend.ejected",
            BackendRestored => "backend.restored",
            HealthUp => "health.up",
            HealthDown => "health.down",
            RolloutStart => "rollout.start",
            RolloutSmoke => "rollout.smoke",
            RolloutStep => "rollout.step",
            RolloutJudgement => "rollout.judgement",
            RolloutFailure => "rollout.failure",
            RolloutPause => "rollout.pause",
            RolloutResume => "rollout.resume",
            RolloutApproval => "rollout.waiting_approval",
            RolloutPromoted => "rollout.promoted",
            RolloutRolledBack => "rollout.rolled_back",
            NotifySent => "notify.sent",
            NotifyFailed => "notify.failed",
            BackendDiscovered => "backend.discovered",
            BackendGone => "backend.gone",
            ProviderDown => "provider.down",
            ProviderUp => "provider.up",
            ProviderRefused => "provider.refused",
            ClusterLeader => "cluster.leader",
            ClusterConnection => "cluster.connection",
            Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// `uid:1000` for an admin-socket peer, or `config`, `health`, `rollout`, `signal:SIGHUP`.
    pub who: String,
    /// `[cluster]`: the instance that recorded it (events of the whole fleet
    /// are shared); left out on a single instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// One line for humans.
    pub what: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub before: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub after: Value,
}

/// What a caller records; the log adds `seq` and `time`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub who: String,
    pub kind: EventKind,
    pub pool: Option<String>,
    pub what: String,
    pub before: Value,
    pub after: Value,
}

impl NewEvent {
    pub fn new(who: impl Into<String>, kind: EventKind, what: impl Into<String>) -> NewEvent {
        NewEvent {
            who: who.into(),
            kind,
            pool: None,
            what: what.into(),
            before: Value::Null,
            after: Value::Null,
        }
    }

    pub fn pool(mut self, pool: impl Into<String>) -> NewEvent {
        self.pool = Some(pool.into());
        self
    }

    pub fn before(mut self, v: Value) -> NewEvent {
        self.before = v;
        self
    }

    pub fn after(mut self, v: Value) -> NewEvent {
        self.after = v;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_dotted_names_both_ways() {
        for k in [
            EventKind::Weights,
            EventKind::VersionAdd,
            EventKind::RolloutRolledBack,
            EventKind::HealthDown,
        ] {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&s).unwrap(), k);
        }
        assert_eq!(
            serde_json::from_str::<EventKind>("\"from.the.future\"").unwrap(),
            EventKind::Unknown
        );
    }
}
