//! Let's Encrypt's test CA (Debian's `pebble`) and its mock DNS server
//! (`pebble-challtestsrv`), started on loopback for one test and stopped by
//! pid when dropped. See shared/ACME.md for the measured facts behind the
//! settings: the mock DNS answers 127.0.0.1 for every name and no AAAA, the
//! validator dials the proxy's own listener ports, and validation does not
//! sleep.
//!
//! A machine without pebble fails these tests (scripts/setup.sh installs it).
//!
//! Include with `#[path = "support/pebble.rs"] mod pebble;` (it uses
//! `tls_support` for the certificates of pebble's own HTTPS listener).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls_support::{free_port, TestCa};

/// How a pebble is started.
#[derive(Clone, Copy)]
pub struct PebbleOpts {
    /// Port the validator dials for HTTP-01 (the proxy's http port).
    pub http_port: u16,
    /// Port the validator dials for TLS-ALPN-01 (the proxy's https port).
    pub tls_port: u16,
    /// Lifetime of issued certificates; pebble's default is 5 years.
    pub validity_secs: Option<u64>,
    /// Keep pebble's default 5 % nonce rejection (else 0 %).
    pub reject_nonces: bool,
}

impl PebbleOpts {
    pub fn new(http_port: u16, tls_port: u16) -> PebbleOpts {
        PebbleOpts {
            http_port,
            tls_port,
            validity_secs: None,
            reject_nonces: false,
        }
    }
}

pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// CA of pebble's own HTTPS listener: the proxy's `acme.ca_file`.
    pub ca_file: PathBuf,
    pub mgmt_port: u16,
    pub opts: PebbleOpts,
    listen_port: u16,
    dns_port: u16,
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

impl Pebble {
    pub fn start(opts: PebbleOpts) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("pebble test listener CA");
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1", "::1"]);
        let ca_file = dir.path().join("listener-ca.pem");
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let listen_port = free_port();
        let mgmt_port = free_port();
        let dns_port = free_port();
        let dns_mgmt_port = free_port();
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": opts.http_port,
            "tlsPort": opts.tls_port,
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
        let dns_log = std::fs::File::create(dir.path().join("challtestsrv.log")).unwrap();
        let dns = Command::new(which("pebble-challtestsrv"))
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(dns_log.try_clone().unwrap())
            .stderr(dns_log)
            .spawn()
            .expect("start pebble-challtestsrv");
        let mut p = Pebble {
            directory: format!("https://localhost:{listen_port}/dir"),
            ca_file,
            mgmt_port,
            opts,
            listen_port,
            dns_port,
            pebble: None,
            dns: Some(dns),
            runs: 0,
            dir,
        };
        p.start_pebble();
        p
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("pebble.{run}.log"))
    }

    fn start_pebble(&mut self) {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let mut c = Command::new(which("pebble"));
        c.arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !self.opts.reject_nonces {
            c.env("PEBBLE_WFE_NONCEREJECT", "0");
        }
        self.pebble = Some(c.spawn().expect("start pebble"));
        // Ready when the directory answers over TLS.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "--max-time", "2", "--cacert"])
                .arg(&self.ca_file)
                .arg(&self.directory)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops pebble (the mock DNS keeps running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fresh pebble on the same ports: new roots, no accounts, no orders.
    pub fn restart(&mut self) {
        self.stop();
        self.start_pebble();
    }

    /// The root that signs issued certificates (new at every pebble start).
    pub fn root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(&self.ca_file)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
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
