//! The deployment files in deploy/: the systemd unit passes
//! `systemd-analyze verify` and its offline security review, and the Compose
//! example's switchyard config passes `switchyard check` and points at the
//! Compose services it sits in front of.
//!
//! systemd-analyze comes with Debian's `systemd` package; a machine without
//! it fails these tests (they never skip).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy(name)).unwrap()
}

/// `Key=value` lines of a unit file (every value of repeated keys).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values(d: &[(String, String)], key: &str) -> Vec<String> {
    d.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The unit in a temp dir with the installed binary path replaced by the
/// one cargo built (verify checks that ExecStart's binary exists).
fn unit_copy(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.service");
    std::fs::write(
        &path,
        text.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    (dir, path)
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed")
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let unit = read("switchyard.service");
    let (_dir, path) = unit_copy(&unit);
    let out = systemd_analyze(&["verify", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{err}");
    assert!(err.trim().is_empty(), "verify warned:\n{err}");

    // The check above can fail: a misspelt directive is reported.
    let (_bad_dir, bad) = unit_copy(&unit.replace("NoNewPrivileges=", "NoNewPrivilegez="));
    let out = systemd_analyze(&["verify", bad.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoNewPrivilegez"),
        "systemd-analyze did not notice a bad directive"
    );
}

#[test]
fn systemd_unit_is_confined_to_binding_low_ports() {
    let unit = read("switchyard.service");
    let d = directives(&unit);
    let one = |k: &str| {
        let v = values(&d, k);
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("StateDirectory"), "switchyard");
    assert_eq!(one("RuntimeDirectory"), "switchyard");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(values(&d, "SystemCallFilter").contains(&"@system-service".to_string()));

    // The directories systemd creates are the ones switchyard uses by
    // default, so a config without an [admin] section works under the unit.
    let c = switchyard::config::Config::from_toml_str("").unwrap();
    assert!(
        c.admin.socket.starts_with("/run/switchyard"),
        "{:?}",
        c.admin.socket
    );
    assert!(
        c.admin.state.starts_with("/var/lib/switchyard"),
        "{:?}",
        c.admin.state
    );

    // systemd's own review: "exposure" 0 (locked down) to 10 (unconfined).
    let (_dir, path) = unit_copy(&unit);
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--threshold=20",
        "--no-pager",
        path.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Overall exposure level"), "{text}");
}

/// A compose service as the Docker API would show its container: labels,
/// an address on each of its networks, its exposed ports.
fn as_container(name: &str, svc: &serde_norway::Value) -> switchyard::providers::labels::Container {
    use switchyard::providers::labels::{Container, Health, Port};
    let mut labels = std::collections::BTreeMap::new();
    for l in svc["labels"].as_sequence().into_iter().flatten() {
        let (k, v) = l.as_str().unwrap().split_once('=').unwrap();
        labels.insert(
            k.to_string(),
            v.split('#').next().unwrap().trim().to_string(),
        );
    }
    labels.insert("com.docker.compose.service".into(), name.to_string());
    labels.insert("com.docker.compose.project".into(), "deploy".into());
    let networks = svc["networks"]
        .as_sequence()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str().unwrap().to_string(),
                std::net::IpAddr::from([172, 20, i as u8, 2]),
            )
        })
        .collect();
    let ports = svc["expose"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| Port {
            private: p.as_str().unwrap().parse().unwrap(),
            public: None,
        })
        .collect();
    Container {
        id: name.to_string(),
        name: format!("deploy-{name}-1"),
        labels,
        running: true,
        health: Health::Healthy,
        host_network: false,
        networks,
        ports,
    }
}

#[test]
fn compose_examples_check_and_their_labels_give_the_pool() {
    for (compose_file, config_file, socket_proxy) in [
        ("docker-compose.yml", "switchyard.toml", false),
        (
            "docker-compose.socket-proxy.yml",
            "switchyard.socket-proxy.toml",
            true,
        ),
    ] {
        let config = deploy(config_file);
        let out = run_bin(&["check", "-c", config.to_str().unwrap()]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{config_file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = switchyard::config::Config::load(&config).unwrap();
        let docker = c.docker.clone().expect("[providers.docker]");
        let compose: serde_norway::Value = serde_norway::from_str(&read(compose_file)).unwrap();
        let services = compose["services"].as_mapping().unwrap();
        let proxy = &compose["services"]["switchyard"];

        // The labelled services give pool app: blue at 100, green at 0, on
        // the configured network's address.
        let mut found = Vec::new();
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            let r = switchyard::providers::labels::read(&as_container(name, svc), &docker);
            assert!(
                r.problems.is_empty(),
                "{compose_file}: {name}: {:?}",
                r.problems
            );
            found.extend(r.found);
        }
        let got: Vec<(String, String, Option<u32>, Vec<String>)> = found
            .iter()
            .map(|f| (f.pool.clone(), f.version.clone(), f.weight, f.hosts.clone()))
            .collect();
        let host = vec!["app.example.com".to_string()];
        assert_eq!(
            got,
            [
                ("app".into(), "blue".into(), Some(100), host.clone()),
                ("app".into(), "green".into(), Some(0), host)
            ],
            "{compose_file}"
        );
        assert!(found
            .iter()
            .all(|f| f.addr.as_deref().is_some_and(|a| a.ends_with(":80"))));
        let nets = |s: &serde_norway::Value| -> BTreeSet<String> {
            s["networks"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        };
        assert!(nets(proxy).contains(docker.network.as_deref().unwrap()));

        // Who holds the socket: switchyard itself (read-only), or only the
        // API proxy, reached on a network of its own.
        let volumes: Vec<&str> = proxy["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let socket = volumes
            .iter()
            .any(|v| v.starts_with("/var/run/docker.sock:"));
        if socket_proxy {
            assert!(
                !socket,
                "{compose_file}: switchyard must not mount the socket"
            );
            assert_eq!(docker.endpoint, "tcp://socket-proxy:2375");
            let sp = &compose["services"]["socket-proxy"];
            assert!(!nets(sp).is_disjoint(&nets(proxy)));
            assert_eq!(
                sp["environment"]["POST"].as_i64(),
                Some(0),
                "a read-only proxy"
            );
            assert!(sp["volumes"][0].as_str().unwrap().ends_with(":ro"));
        } else {
            assert!(
                volumes.contains(&"/var/run/docker.sock:/var/run/docker.sock:ro"),
                "{volumes:?}"
            );
            assert_eq!(docker.endpoint, "unix:///var/run/docker.sock");
        }

        // The volumes hold what the config writes; the config is mounted
        // where the image's command reads it.
        let mounts: Vec<(String, String)> = volumes
            .iter()
            .map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                (parts[0].to_string(), parts[1].to_string())
            })
            .collect();
        let mounted = |p: &Path| mounts.iter().any(|(_, target)| p.starts_with(target));
        assert!(mounted(&c.admin.socket), "admin socket not on a volume");
        assert!(mounted(&c.admin.state), "state file not on a volume");
        let dockerfile = read("Dockerfile");
        let cmd = dockerfile
            .lines()
            .find(|l| l.starts_with("CMD "))
            .expect("the Dockerfile has a CMD");
        let (_, config_target) = mounts
            .iter()
            .find(|(src, _)| src == &format!("./{config_file}"))
            .expect("compose mounts the config");
        assert!(
            cmd.contains(&format!("\"{config_target}\"")),
            "{cmd} does not read {config_target}"
        );
        assert_eq!(
            proxy["build"]["dockerfile"].as_str(),
            Some("deploy/Dockerfile")
        );
    }
}
