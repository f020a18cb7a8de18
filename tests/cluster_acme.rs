//! ACME in a fleet: two instances with `tls = "acme"` and `[cluster]`
//! against a real pebble and real etcd members on loopback. One order per
//! domain for the fleet (counted in pebble's log), the same certificate
//! served by both, a renewal reaching both, challenges answered by
//! whichever instance the validator reaches, and the on-disk cache serving
//! an instance restarted while etcd is down.

#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/pebble.rs"]
mod pebble;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use etcd::Etcd;
use pebble::{Pebble, PebbleOpts};
use support::{eventually, Proxy, Upstream, DEADLINE};
use tls_support::{start_switchyard, tls_get};

const ENV: &[(&str, &str)] = &[("SWITCHYARD_ACME_BACKOFF", "1s")];
const PREFIX: &str = "/sy-acme/";

fn config(
    pebble: &Pebble,
    etcd: &Etcd,
    upstream: &Upstream,
    dir: &Path,
    name: &str,
    challenge: &str,
    renew_before: &str,
) -> String {
    format!(
        r#"[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
shutdown_grace = "1s"

[admin]
socket = "{dir}/admin.sock"
state = "{dir}/state.json"

[acme]
email = "ops@app.test"
directory = "{directory}"
storage = "{dir}/acme"
challenge = "{challenge}"
ca_file = "{ca}"
renew_before = "{renew_before}"

[cluster]
etcd = {endpoints}
prefix = "{PREFIX}"
name = "{name}"
lease_ttl = "3s"

[[routes]]
host = "app.test"
pool = "app"
tls = "acme"

[pools.app.versions.blue]
weight = 100
backends = ["{upstream}"]
"#,
        dir = dir.display(),
        directory = pebble.directory,
        ca = pebble.ca_file.display(),
        endpoints = etcd.toml_endpoints(),
        upstream = upstream.addr,
    )
}

/// Two instances of one fleet, the validator pointed at both in turn.
async fn fleet(
    pebble: &Pebble,
    etcd: &Etcd,
    upstream: &Upstream,
    challenge: &str,
    renew_before: &str,
) -> (Proxy, Proxy) {
    let mut out = Vec::new();
    for name in ["sy-a", "sy-b"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            pebble,
            etcd,
            upstream,
            dir.path(),
            name,
            challenge,
            renew_before,
        );
        out.push(start_switchyard(dir, &cfg, ENV).await);
    }
    let b = out.pop().unwrap();
    let a = out.pop().unwrap();
    pebble.validate_on_both(&a, &b);
    (a, b)
}

/// The serial `p` serves for app.test over TLS (verified against pebble's
/// root), once it serves one other than `not`.
async fn served_serial(p: &Proxy, root: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = tls_get(p.https.unwrap(), "app.test", "app.test", "/", root).await;
        if let Ok(a) = &got {
            assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
            if Some(a.serial.as_str()) != not {
                return a.serial.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no (new) certificate served: {got:?}\n--- log:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(p: &Proxy, msg: &str) -> usize {
    p.log().matches(msg).count()
}

/// HTTP-01, three etcd members: one account, one order, one serial on both;
/// the renewal (certificates of 40 s renewed after 20 s) is one more order
/// and reaches both; with etcd down, a restarted instance serves the
/// certificate it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_per_domain_for_the_fleet_and_renewal_reaches_both() {
    let upstream = Upstream::start("blue").await;
    let pebble = Pebble::start(PebbleOpts {
        validity_secs: Some(40),
        reject_nonces: false,
    })
    .await;
    let mut etcd = Etcd::start(3);
    let (a, mut b) = fleet(&pebble, &etcd, &upstream, "http-01", "20s").await;
    let root = pebble.root_pem();

    let first_a = served_serial(&a, &root, None).await;
    let first_b = served_serial(&b, &root, None).await;
    assert_eq!(
        first_a,
        first_b,
        "both serve the same certificate\n--- a:\n{}\n--- b:\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(pebble.orders(), 1, "one order for the fleet");
    assert_eq!(pebble.new_accounts(), 1, "one account for the fleet");
    let obtained = count(&a, "certificate obtained") + count(&b, "certificate obtained");
    assert_eq!(obtained, 1, "exactly one instance ordered");
    // The other one got it from etcd.
    let installed = count(&a, "certificate from the fleet (etcd)")
        + count(&b, "certificate from the fleet (etcd)");
    assert!(installed >= 1, "{}\n{}", a.log(), b.log());
    // The validator reached both instances (it validates each challenge
    // several times, and the relay alternates): the one that did not order
    // answered from the challenges published in etcd.
    for p in [&a, &b] {
        assert!(
            count(p, "answered an HTTP-01 validation") >= 1,
            "this instance answered no validation:\n{}",
            p.log()
        );
    }
    // What etcd holds: the account and the certificate, under the prefix.
    let slug = pebble
        .directory
        .trim_start_matches("https://")
        .replace([':', '/'], "_");
    let cert = etcd
        .get(&format!("{PREFIX}acme/{slug}/certs/app.test"))
        .expect("the certificate in etcd");
    assert!(cert.contains("BEGIN CERTIFICATE") && cert.contains("PRIVATE KEY"));
    assert!(etcd.get(&format!("{PREFIX}acme/{slug}/account")).is_some());
    // No lock and no challenge left behind.
    assert!(
        eventually(DEADLINE, || async {
            etcd::etcdctl(
                &etcd.client_ports(),
                &["get", "--prefix", "--keys-only", &format!("{PREFIX}acme/")],
            )
            .is_some_and(|k| !k.contains("/locks/") && !k.contains("/challenges/"))
        })
        .await
    );

    // Renewal: 20 s after issue both wake, one orders, both serve the new one.
    let second_a = served_serial(&a, &root, Some(&first_a)).await;
    let second_b = served_serial(&b, &root, Some(&first_a)).await;
    assert_eq!(second_a, second_b, "{}\n{}", a.log(), b.log());
    assert_eq!(pebble.orders(), 2, "one renewal order for the fleet");
    let obtained = count(&a, "certificate obtained") + count(&b, "certificate obtained");
    assert_eq!(obtained, 2);

    // etcd gone, B restarted: it serves the certificate it cached on disk.
    etcd.stop_all();
    b.restart().await;
    let cached = served_serial(&b, &root, None).await;
    assert_eq!(cached, second_a, "{}", b.log());
    assert!(b.log().contains("stored certificate loaded"), "{}", b.log());
    assert_eq!(pebble.orders(), 2, "no order without etcd");
}

/// TLS-ALPN-01, one etcd member: the challenge certificate is built by
/// every instance from the digest in etcd, so both answer validations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_challenges_are_answered_by_both_instances() {
    let upstream = Upstream::start("blue").await;
    let pebble = Pebble::start(PebbleOpts::default()).await;
    let etcd = Etcd::start(1);
    let (a, b) = fleet(&pebble, &etcd, &upstream, "tls-alpn-01", "30d").await;
    let root = pebble.root_pem();
    let sa = served_serial(&a, &root, None).await;
    let sb = served_serial(&b, &root, None).await;
    assert_eq!(sa, sb);
    assert_eq!(pebble.orders(), 1);
    for p in [&a, &b] {
        assert!(
            count(p, "answered a TLS-ALPN-01 validation") >= 1,
            "this instance answered no validation:\n{}",
            p.log()
        );
    }
}
