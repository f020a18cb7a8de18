//! The cluster service: keeps this instance in step with the fleet.
//!
//! ```text
//! supervise ── session (until etcd is lost) ── retried every second
//!   1. lease: the one from before if it is still alive, else a new one
//!   2. re-read the prefix: the state (applied through Control), instances
//!   3. then, side by side until one fails:
//!      watch     from the last revision seen + 1: state -> Control::apply_shared,
//!                instances, events of other instances, the leader key,
//!                acme/ keys -> the ACME manager's KeyWatcher
//!      keepalive the lease, every TTL/3; leadership dropped before it can expire
//!      publish   this instance's record (applied revision, leadership,
//!                counters) every second under the lease, and its events
//!      campaign  the Lock API under the lease: the rollout leadership
//!      members   etcd's members and which one leads, every 5 s
//! ```
//!
//! While etcd is lost the instance keeps serving its last table; the store
//! refuses writes (503) until the next session has re-read the prefix.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, DeleteOptions, EventType, GetOptions, LockOptions, PutOptions, WatchOptions,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::{parse_state, Cluster, InstanceRecord, SampleRecord, RPC_TIMEOUT};
use crate::control::{now_ms, Control};
use crate::events::{Event, EventKind, NewEvent};
use crate::model::api::EtcdMemberView;
use crate::state::PersistedState;

/// Events of each instance kept in etcd (older ones are deleted).
const EVENTS_KEPT: u64 = 1000;
/// How often the instance record (and its counters) is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

type Failed = String;

/// What outlives a session.
struct Carry {
    lease: Option<i64>,
    /// The last revision of the prefix seen through the watch.
    last_seen: Option<i64>,
    events: mpsc::UnboundedReceiver<Event>,
    pending: VecDeque<Event>,
}

/// Keeps this instance in the fleet until `shutdown`.
pub async fn supervise(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let Some(cluster) = control.cluster().cloned() else {
        return;
    };
    let (tx, events) = mpsc::unbounded_channel();
    control.events.share(&cluster.name, tx);
    let mut carry = Carry {
        lease: None,
        last_seen: None,
        events,
        pending: VecDeque::new(),
    };
    tracing::info!(name = %cluster.name, etcd = %cluster.config.etcd.join(","), prefix = %cluster.config.prefix, "joining the fleet");
    loop {
        let failed = tokio::select! {
            r = session(&control, &cluster, &mut carry) => match r {
                Err(e) => e,
                Ok(never) => match never {},
            },
            _ = shutdown.changed() => break,
        };
        lost(&control, &cluster, &failed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => break,
        }
    }
    // Leave at once: the leadership passes without waiting for the TTL.
    if let Some(id) = carry.lease {
        let mut c = cluster.client();
        let _ = timeout(Duration::from_secs(1), c.lease_revoke(id)).await;
    }
    cluster.set_leader(None);
}

/// etcd was lost (or never reached): said in logs, events, the metric.
fn lost(control: &Control, cluster: &Cluster, why: &str) {
    cluster.set_error(why);
    if cluster.set_leader(None) {
        let what = format!("{} is no longer the rollout leader: {why}", cluster.name);
        control
            .events
            .record(NewEvent::new("cluster", EventKind::ClusterLeader, what));
    }
    if cluster.set_connected(false) {
        let what = format!(
            "lost etcd ({why}); serving the last table (revision {}), admin changes refused until it is back",
            cluster.applied()
        );
        tracing::error!("{what}");
        control
            .events
            .record(NewEvent::new("cluster", EventKind::ClusterConnection, what));
    } else {
        tracing::warn!(error = %why, "etcd unreachable; retrying");
    }
}

/// One connection's life: returns only with why it ended.
async fn session(
    control: &Arc<Control>,
    cluster: &Arc<Cluster>,
    carry: &mut Carry,
) -> Result<Infallible, Failed> {
    let mut client = cluster.client();
    let ttl = cluster.config.lease_ttl;
    let lease = match carry.lease {
        Some(id) if lease_alive(&mut client, id).await => id,
        _ => {
            let g = rpc(client.lease_grant(ttl.as_secs() as i64, None)).await?;
            g.id()
        }
    };
    carry.lease = Some(lease);
    let rev = reread(control, cluster).await?;
    if cluster.set_connected(true) {
        let what = format!("connected to etcd at revision {rev}; the fleet's state applied");
        tracing::info!("{what}");
        control
            .events
            .record(NewEvent::new("cluster", EventKind::ClusterConnection, what));
    }
    let from = carry.last_seen.unwrap_or(rev).min(rev);
    let Carry {
        events,
        pending,
        last_seen,
        ..
    } = carry;
    tokio::select! {
        r = watch_prefix(control, cluster, from, last_seen) => r,
        r = keep_alive(cluster, lease) => r,
        r = publish(control, cluster, lease, events, pending) => r,
        r = campaign(control, cluster, lease) => r,
        r = members(cluster) => r,
    }
}

/// An etcd call under [`RPC_TIMEOUT`].
async fn rpc<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failed> {
    match timeout(RPC_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("etcd did not answer within {RPC_TIMEOUT:?}")),
    }
}

async fn lease_alive(client: &mut Client, id: i64) -> bool {
    rpc(client.lease_time_to_live(id, None))
        .await
        .is_ok_and(|r| r.ttl() > 0)
}

/// Reads the whole prefix: the fleet's state (applied at once, whatever
/// revision this instance had), every instance's record. Returns the
/// revision read at.
async fn reread(control: &Arc<Control>, cluster: &Arc<Cluster>) -> Result<i64, Failed> {
    let mut client = cluster.client();
    let mut all = None;
    for attempt in 0..3 {
        match rpc(client.get(
            cluster.config.prefix.clone(),
            Some(GetOptions::new().with_prefix()),
        ))
        .await
        {
            Ok(r) => {
                all = Some(r);
                break;
            }
            Err(e) if attempt == 2 => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let Some(resp) = all else {
        return Err("no answer".into());
    };
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let state_key = cluster.state_key();
    let acme_prefix = cluster.key("acme/");
    let mut state = (PersistedState::default(), 0);
    let mut acme = Vec::new();
    cluster.clear_instances();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        if key == state_key {
            state = (parse_state(kv.value()), kv.mod_revision());
        } else if let Some(name) = key.strip_prefix(&cluster.key("instances/")) {
            cluster.set_instance(name, serde_json::from_slice(kv.value()).ok());
        } else if let Some(rest) = key.strip_prefix(&acme_prefix) {
            acme.push((rest.to_string(), kv.value().to_vec()));
        }
    }
    if let Some(w) = cluster.acme_watcher() {
        w.snapshot(acme);
    }
    let c = control.clone();
    crate::memory::control(move || c.apply_shared(state.0, state.1, true))
        .await
        .map_err(|_| "applying the fleet's state failed (a panic)".to_string())?;
    cluster.note_applied(rev);
    Ok(rev)
}

/// Follows the prefix from `from + 1`. A broken stream is watched again
/// from the last revision seen; a compacted one re-reads the prefix. Fails
/// when etcd stays unreachable for the lease's TTL.
async fn watch_prefix(
    control: &Arc<Control>,
    cluster: &Arc<Cluster>,
    from: i64,
    last_seen: &mut Option<i64>,
) -> Result<Infallible, Failed> {
    // Replayed from `from` (the last revision seen before a reconnection):
    // what others recorded meanwhile arrives in order; `last_seen` moves
    // only with what was received, so a session lost mid-replay loses none.
    let mut last = from;
    *last_seen = Some(last);
    let mut failing_since: Option<Instant> = None;
    loop {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(last + 1)
            .with_progress_notify();
        let mut client = cluster.client();
        let err = match rpc(client.watch(cluster.config.prefix.clone(), Some(opts))).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        failing_since = None;
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                last = reread(control, cluster).await?;
                            }
                            break format!("watch canceled: {}", resp.cancel_reason());
                        }
                        if resp.events().is_empty() {
                            // Progress: nothing happened up to here.
                            if let Some(h) = resp.header() {
                                last = last.max(h.revision());
                            }
                        }
                        for ev in resp.events() {
                            last = last.max(on_event(control, cluster, ev).await);
                        }
                        cluster.note_applied(last);
                        *last_seen = Some(last);
                    }
                    Ok(None) => break "the watch stream ended".to_string(),
                    Err(e) => break e.to_string(),
                }
            },
            Err(e) => e,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= cluster.config.lease_ttl {
            return Err(format!("watch: {err}"));
        }
        tracing::debug!(error = %err, "watching again from revision {}", last + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One change under the prefix; returns its revision.
async fn on_event(control: &Arc<Control>, cluster: &Arc<Cluster>, ev: &etcd_client::Event) -> i64 {
    let Some(kv) = ev.kv() else { return 0 };
    let rev = kv.mod_revision();
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let put = ev.event_type() == EventType::Put;
    if key == cluster.state_key() {
        let state = if put {
            parse_state(kv.value())
        } else {
            PersistedState::default()
        };
        let c = control.clone();
        let _ = crate::memory::control(move || c.apply_shared(state, rev, false)).await;
    } else if let Some(name) = key.strip_prefix(&cluster.key("instances/")) {
        let record = put
            .then(|| serde_json::from_slice::<InstanceRecord>(kv.value()).ok())
            .flatten();
        cluster.set_instance(name, record);
    } else if let Some(rest) = key.strip_prefix(&cluster.key("acme/")) {
        if let Some(w) = cluster.acme_watcher() {
            w.change(rest, put.then(|| kv.value()));
        }
    } else if let Some(rest) = key.strip_prefix(&cluster.key("events/")) {
        let mine = rest.split('/').next() == Some(cluster.name.as_str());
        if put && !mine {
            if let Ok(e) = serde_json::from_slice::<Event>(kv.value()) {
                control.events.record_remote(e);
            }
        }
    } else if !put && cluster.leader_key().as_deref() == Some(kv.key()) {
        // Our lock key went: the lease expired while we could not renew it.
        if cluster.set_leader(None) {
            let what = format!(
                "{} lost the rollout leadership (its lease expired)",
                cluster.name
            );
            control
                .events
                .record(NewEvent::new("cluster", EventKind::ClusterLeader, what));
        }
    }
    rev
}

/// Renews the lease every TTL/3. Drops the leadership before the lease
/// could have expired unseen, and fails when it did expire.
async fn keep_alive(cluster: &Arc<Cluster>, lease: i64) -> Result<Infallible, Failed> {
    let ttl = cluster.config.lease_ttl;
    let every = ttl / 3;
    let mut last_ok = Instant::now();
    let mut client = cluster.client();
    loop {
        let renewed = match rpc(client.lease_keep_alive(lease)).await {
            Ok((mut keeper, mut stream)) => loop {
                if keeper.keep_alive().await.is_err() {
                    break None;
                }
                match timeout(every, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = Instant::now(),
                    Ok(Ok(Some(_))) => break Some("the lease expired".to_string()),
                    _ => break None,
                }
                tokio::time::sleep(every).await;
            },
            Err(_) => None,
        };
        if let Some(expired) = renewed {
            return Err(expired);
        }
        if last_ok.elapsed() >= ttl.saturating_sub(ttl / 5) {
            cluster.set_leader(None);
        }
        if last_ok.elapsed() >= ttl {
            return Err("the lease could not be renewed within its TTL".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes this instance's record every second, and its events as they
/// come (events recorded while etcd was lost go out on reconnection).
async fn publish(
    control: &Arc<Control>,
    cluster: &Arc<Cluster>,
    lease: i64,
    events: &mut mpsc::UnboundedReceiver<Event>,
    pending: &mut VecDeque<Event>,
) -> Result<Infallible, Failed> {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_since: Option<Instant> = None;
    let mut client = cluster.client();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let record = serde_json::to_vec(&record(control, cluster)).unwrap_or_default();
                let key = cluster.key(&format!("instances/{}", cluster.name));
                match rpc(client.put(key, record, Some(PutOptions::new().with_lease(lease)))).await {
                    Ok(_) => failing_since = None,
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= cluster.config.lease_ttl {
                            return Err(format!("publish: {e}"));
                        }
                    }
                }
            }
            Some(e) = events.recv() => pending.push_back(e),
        }
        while let Some(e) = pending.front() {
            if put_event(&mut client, cluster, e).await.is_err() {
                break;
            }
            pending.pop_front();
        }
    }
}

/// This instance as the fleet sees it.
fn record(control: &Control, cluster: &Cluster) -> InstanceRecord {
    let mut counters =
        std::collections::BTreeMap::<String, std::collections::BTreeMap<_, _>>::new();
    for ((pool, version), s) in control.metrics.sample_all() {
        if pool.is_empty() || version.is_empty() {
            continue;
        }
        counters
            .entry(pool)
            .or_default()
            .insert(version, SampleRecord::of(&s));
    }
    InstanceRecord {
        name: cluster.name.clone(),
        applied_revision: cluster.applied(),
        leader: cluster.is_leader(),
        published_ms: now_ms(),
        counters,
    }
}

/// Shares one of this instance's events; old ones are trimmed.
async fn put_event(client: &mut Client, cluster: &Cluster, e: &Event) -> Result<(), Failed> {
    let base = cluster.key(&format!("events/{}/", cluster.name));
    let value = serde_json::to_vec(e).unwrap_or_default();
    rpc(client.put(format!("{base}{:020}", e.seq), value, None)).await?;
    if e.seq.is_multiple_of(100) && e.seq > EVENTS_KEPT {
        let end = format!("{base}{:020}", e.seq - EVENTS_KEPT);
        let _ = rpc(client.delete(base.clone(), Some(DeleteOptions::new().with_range(end)))).await;
    }
    Ok(())
}

/// Waits for the rollout leadership (the Lock API, under this instance's
/// lease), holds it while the lease lives, and campaigns again after.
async fn campaign(
    control: &Arc<Control>,
    cluster: &Arc<Cluster>,
    lease: i64,
) -> Result<Infallible, Failed> {
    let name = cluster.key("leader");
    let mut client = cluster.client();
    let mut lead = cluster.leadership();
    loop {
        // No timeout: the call returns when the lock is ours. Locking again
        // with the same lease finds the key this lease already holds.
        match client
            .lock(name.clone(), Some(LockOptions::new().with_lease(lease)))
            .await
        {
            Ok(r) => {
                if cluster.set_leader(Some(r.key().to_vec())) {
                    let what = format!("{} is the rollout leader now", cluster.name);
                    control
                        .events
                        .record(NewEvent::new("cluster", EventKind::ClusterLeader, what));
                }
                let _ = lead.wait_for(|l| !*l).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "campaign for the rollout leadership failed; again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// etcd's members and which of them leads, every 5 s (for `ctl state`).
async fn members(cluster: &Arc<Cluster>) -> Result<Infallible, Failed> {
    let mut client = cluster.client();
    let mut per_member: std::collections::HashMap<u64, Client> = Default::default();
    loop {
        if let Ok(list) = rpc(client.member_list()).await {
            let mut out = Vec::new();
            for m in list.members() {
                let urls: Vec<String> = m.client_urls().to_vec();
                if !per_member.contains_key(&m.id()) && !urls.is_empty() {
                    if let Ok(c) = super::connect(&cluster.config, &urls).await {
                        per_member.insert(m.id(), c);
                    }
                }
                let status = match per_member.get_mut(&m.id()) {
                    Some(c) => rpc(c.status()).await.ok(),
                    None => None,
                };
                out.push(EtcdMemberView {
                    client_urls: urls,
                    id: format!("{:x}", m.id()),
                    leader: status.as_ref().is_some_and(|s| s.leader() == m.id()),
                    name: m.name().to_string(),
                    reachable: status.is_some(),
                });
            }
            cluster.set_members(out);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
