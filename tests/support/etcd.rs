//! Real etcd members (Debian's `etcd-server`) on loopback for one test,
//! started and stopped by pid, data in the test's temp dir. See
//! shared/ETCD.md. A machine without etcd fails these tests
//! (scripts/setup.sh installs it).
//!
//! etcd must be told every member's peer and client port before any of them
//! starts, so ports are picked by binding `:0` and letting go just before
//! the start; a member that then finds its port taken exits at once, and the
//! whole start is tried again on new ports.
//!
//! Include with `#[path = "support/etcd.rs"] mod etcd;`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::DEADLINE;

pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    child: Option<Child>,
}

pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    token: String,
}

impl Etcd {
    /// `n` members forming one cluster, each answering.
    pub fn start(n: usize) -> Etcd {
        for _ in 0..5 {
            let mut e = Etcd::pick(n);
            for i in 0..n {
                e.spawn(i);
            }
            if e.wait_healthy() {
                return e;
            }
        }
        panic!("etcd did not start (is etcd-server installed? scripts/setup.sh installs it)");
    }

    fn pick(n: usize) -> Etcd {
        let hold: Vec<TcpListener> = (0..2 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| hold[i].local_addr().unwrap().port();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client: port(2 * i),
                peer: port(2 * i + 1),
                child: None,
            })
            .collect();
        Etcd {
            dir: tempfile::tempdir().unwrap(),
            members,
            token: format!("sy-test-{}", std::process::id()),
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (again: its data dir is kept, so it rejoins).
    pub fn spawn(&mut self, i: usize) {
        let cluster = self.initial_cluster();
        let m = &self.members[i];
        let data: PathBuf = self.dir.path().join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd is not installed (scripts/setup.sh installs etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Every member answers `endpoint health`; false when one exited (its
    /// port was taken meanwhile) or the deadline passed.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for m in &mut self.members {
                if let Some(c) = m.child.as_mut() {
                    if let Ok(Some(_)) = c.try_wait() {
                        self.stop_all();
                        return false;
                    }
                }
            }
            if self.members.iter().all(|m| {
                // etcdctl 3.4 says "is healthy" on stderr; its exit status is the answer.
                etcdctl(&[m.client], &["endpoint", "health"]).is_some()
            }) {
                return true;
            }
            if Instant::now() > deadline {
                self.stop_all();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URLs for `[cluster] etcd`, as a TOML array.
    pub fn toml_endpoints(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("\"http://127.0.0.1:{}\"", m.client))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client).collect()
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }

    /// Starts every stopped member again on its data and waits for health.
    pub fn restart_stopped(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        assert!(self.wait_healthy(), "etcd did not come back");
    }

    /// The index of etcd's raft leader, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        let live: Vec<u16> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client)
            .collect();
        let out = etcdctl(&live, &["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        for s in v.as_array()? {
            let st = &s["Status"];
            if st["leader"] == st["header"]["member_id"] && !st["leader"].is_null() {
                let ep = s["Endpoint"].as_str()?;
                return self
                    .members
                    .iter()
                    .position(|m| ep.ends_with(&format!(":{}", m.client)));
            }
        }
        None
    }

    /// `etcdctl get KEY --print-value-only` against the live members.
    pub fn get(&self, key: &str) -> Option<String> {
        let live: Vec<u16> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client)
            .collect();
        etcdctl(&live, &["get", key, "--print-value-only"]).filter(|s| !s.trim().is_empty())
    }

    pub fn log(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `etcdctl --endpoints=... ARGS` with a short timeout; stdout on success.
pub fn etcdctl(ports: &[u16], args: &[&str]) -> Option<String> {
    let eps: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", eps.join(",")))
        .args(["--command-timeout=2s", "--dial-timeout=1s"])
        .args(args)
        .output()
        .expect("etcdctl is not installed (scripts/setup.sh installs etcd-client)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
