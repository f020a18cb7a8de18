//! Let's Encrypt's test CA (Debian's `pebble`) and its mock DNS server
//! (`pebble-challtestsrv`), started on loopback for one test and stopped by
//! pid when dropped. See shared/ACME.md for the measured facts behind the
//! settings: the mock DNS answers 127.0.0.1 for every name and no AAAA, the
//! validator dials the proxy's own listener ports, and validation does not
//! sleep.
//!
//! Every listener is bound on `:0` by the program that uses it and read back
//! from /proc. Two facts need relays that the test binds and keeps: pebble
//! must be told the ports its validator dials before the proxy exists, and
//! the proxy must be told pebble's directory before pebble exists (and keep
//! it across a pebble restart, which picks new ports). So the proxy talks to
//! pebble through [`Pebble::directory`] (a relay), and the validator dials
//! [`Pebble::http01`] and [`Pebble::tlsalpn01`], relays the test points at
//! the proxy's listeners once it has read them ([`Pebble::validate_on`]).
//!
//! A machine without pebble fails these tests (scripts/setup.sh installs it).
//!
//! Include with `#[path = "support/pebble.rs"] mod pebble;` (it uses
//! `tls_support` for the certificates of pebble's own HTTPS listener).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bound_addrs, Proxy, Relay, Target, DEADLINE};
use crate::tls_support::TestCa;

/// How a pebble is started.
#[derive(Clone, Copy, Default)]
pub struct PebbleOpts {
    /// Lifetime of issued certificates; pebble's default is 5 years.
    pub validity_secs: Option<u64>,
    /// Keep pebble's default 5 % nonce rejection (else 0 %).
    pub reject_nonces: bool,
}

pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// The ACME directory URL (through [`Pebble::api`], the same across
    /// pebble restarts).
    pub directory: String,
    /// CA of pebble's own HTTPS listener: the proxy's `acme.ca_file`.
    pub ca_file: PathBuf,
    /// The management listener of the current run.
    pub mgmt: SocketAddr,
    pub opts: PebbleOpts,
    /// In front of pebble's ACME listener.
    api: Relay,
    /// Where the validator dials for HTTP-01 and TLS-ALPN-01.
    pub http01: Relay,
    pub tlsalpn01: Relay,
    /// The mock DNS server (UDP).
    dns_addr: SocketAddr,
    pebble: Option<Child>,
    dns: Option<Child>,
    /// Log files of successive pebble runs (a restart starts a new one).
    runs: u32,
}

fn which(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: run scripts/setup.sh (apt-get install pebble)");
}

/// Panics with `log` when `child` has exited.
fn alive(child: &mut Child, what: &str, log: impl FnOnce() -> String) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited with {status}:\n{}", log());
    }
}

impl Pebble {
    pub async fn start(opts: PebbleOpts) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble test listener CA");
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1", "::1"]);
        let ca_file = dir.path().join("listener-ca.pem");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let (api, http01, tlsalpn01) = (
            Relay::start().await,
            Relay::start().await,
            Relay::start().await,
        );
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": "127.0.0.1:0",
            "managementListenAddress": "127.0.0.1:0",
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http01.addr.port(),
            "tlsPort": tlsalpn01.addr.port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = opts.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        std::fs::write(
            dir.path().join("pebble.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let dns_log_path = dir.path().join("challtestsrv.log");
        let dns_log = std::fs::File::create(&dns_log_path).unwrap();
        let mut dns = Command::new(which("pebble-challtestsrv"))
            .args(["-dns01", "127.0.0.1:0"])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", "127.0.0.1:0"])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(dns_log.try_clone().unwrap())
            .stderr(dns_log)
            .spawn()
            .expect("start pebble-challtestsrv");
        // Its DNS server's UDP socket (pebble's resolver asks over UDP).
        let deadline = Instant::now() + DEADLINE;
        let dns_addr = loop {
            alive(&mut dns, "pebble-challtestsrv", || {
                std::fs::read_to_string(&dns_log_path).unwrap_or_default()
            });
            if let Some(a) = bound_addrs(dns.id(), "udp").first() {
                break *a;
            }
            assert!(
                Instant::now() < deadline,
                "pebble-challtestsrv bound no UDP socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut p = Pebble {
            directory: format!("https://localhost:{}/dir", api.addr.port()),
            ca_file,
            mgmt: "127.0.0.1:1".parse().unwrap(),
            opts,
            api,
            http01,
            tlsalpn01,
            dns_addr,
            pebble: None,
            dns: Some(dns),
            runs: 0,
            dir,
        };
        p.start_pebble().await;
        p
    }

    /// Points the validator's relays at `proxy`'s http and https listeners
    /// (again after every proxy restart: it gets new ports).
    pub fn validate_on(&self, proxy: &Proxy) {
        self.http01.set(Target::Up(proxy.http));
        self.tlsalpn01
            .set(Target::Up(proxy.https.expect("an https listener")));
    }

    /// Points the validator at two proxies in turn (each connection to the
    /// next): a challenge validates only if whichever it reaches answers.
    pub fn validate_on_both(&self, a: &Proxy, b: &Proxy) {
        self.http01.set(Target::Alternate(a.http, b.http));
        self.tlsalpn01.set(Target::Alternate(
            a.https.expect("an https listener"),
            b.https.expect("an https listener"),
        ));
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("pebble.{run}.log"))
    }

    /// `GET https://localhost:PORT/dir` answers (pebble's ACME listener;
    /// its management listener answers 404).
    fn serves_directory(&self, addr: SocketAddr) -> bool {
        Command::new("curl")
            .args(["-sf", "--max-time", "10", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("https://localhost:{}/dir", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    async fn start_pebble(&mut self) {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let mut c = Command::new(which("pebble"));
        c.arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &self.dns_addr.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !self.opts.reject_nonces {
            c.env("PEBBLE_WFE_NONCEREJECT", "0");
        }
        let mut child = c.spawn().expect("start pebble");
        // Ready when both its listeners are bound and one serves the
        // directory: that one is the ACME API, the other the management API.
        let deadline = Instant::now() + DEADLINE;
        loop {
            alive(&mut child, "pebble", || self.log());
            let bound = bound_addrs(child.id(), "tcp");
            if bound.len() == 2 {
                if let Some(i) = (0..2).find(|&i| self.serves_directory(bound[i])) {
                    self.api.set(Target::Up(bound[i]));
                    self.mgmt = bound[1 - i];
                    self.pebble = Some(child);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start (listening on {bound:?}):\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops pebble (the mock DNS keeps running): the directory refuses.
    pub fn stop(&mut self) {
        self.api.set(Target::Down);
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fresh pebble behind the same directory URL: new roots, no
    /// accounts, no orders.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_pebble().await;
    }

    /// The root that signs issued certificates (new at every pebble start).
    pub fn root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "30", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt.port()))
            .output()
            .expect("curl");
        assert!(out.status.success(), "cannot fetch pebble's root");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes [`Pebble::root_pem`] to a file (for curl --cacert).
    pub fn root_file(&self) -> PathBuf {
        let p = self.dir.path().join(format!("root.{}.pem", self.runs));
        std::fs::write(&p, self.root_pem()).unwrap();
        p
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    /// Orders placed with the current run (new-order requests in its log).
    pub fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }

    /// Accounts registered with the current run.
    pub fn new_accounts(&self) -> usize {
        self.log().matches("POST /sign-me-up").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
