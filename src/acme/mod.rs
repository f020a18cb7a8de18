//! Automatic certificates with ACME (Let's Encrypt): one task that orders,
//! stores and renews a certificate per route host with `tls = "acme"`.
//!
//! ```text
//! TlsState::watch_acme_domains ─> Manager::run (one task)
//!   per domain, when due:
//!     storage lock (flock) ─> stored cert still fine? (another instance may have renewed)
//!     ─> account (stored once; re-registered on accountDoesNotExist)
//!     ─> new order ─> HTTP-01 token / TLS-ALPN-01 cert published in TlsState
//!     ─> set_ready ─> poll_ready ─> fresh P-256 key + CSR ─> finalize ─> chain
//!     ─> key.pem, cert.pem written atomically (0600) ─> CertStore::set_acme
//!   on failure: exponential backoff (Retry-After wins when longer); the
//!   certificate in the store keeps serving
//! ```
//!
//! Storage, under `acme.storage`, one folder per ACME directory so staging and
//! production never mix:
//!
//! ```text
//! lock                                       flock: one instance orders at a time
//! <directory>/account.json                   account credentials (0600)
//! <directory>/certs/<domain>/key.pem         private key (0600)
//! <directory>/certs/<domain>/cert.pem        chain, leaf first (0600)
//! ```
//!
//! A stored file that cannot be used (truncated, garbage, key and certificate
//! that do not match) is logged, moved aside as `NAME.corrupt-<time>` and the
//! certificate is ordered again.
//!
//! With `[cluster]` the account and the certificates live in etcd, one order
//! per domain for the fleet, under a lease-held lock per domain; the storage
//! above is then each instance's cache of what it serves (see [`fleet`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fs4::fs_std::FileExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::config::{AcmeConfig, Challenge, Config};
use crate::fsutil;
use crate::tls::{self, LoadedCert, TlsError, TlsState};

mod fleet;

use fleet::{Fleet, FleetRead, OrderLock};

/// Env var: the first backoff delay after a failed order (default 5m). Tests
/// set it to seconds; see the README.
pub const BACKOFF_ENV: &str = "SWITCHYARD_ACME_BACKOFF";
/// How often a domain whose certificate is fine is looked at again.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Random spread added to [`CHECK_EVERY`] so instances do not move in step.
const CHECK_JITTER: Duration = Duration::from_secs(3600);
const DEFAULT_BACKOFF: Duration = Duration::from_secs(300);
const BACKOFF_CAP: Duration = Duration::from_secs(86_400);
/// The longest Retry-After honoured (Let's Encrypt's rate limits are weekly).
const RETRY_AFTER_CAP: Duration = Duration::from_secs(7 * 86_400);
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// How long one request to the CA may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Order-level tries for errors worth an immediate retry (badNonce, a
/// forgotten account).
const ORDER_TRIES: u32 = 4;

const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{}", with_sources(.0))]
    Acme(#[from] instant_acme::Error),
    #[error("storage {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client for the CA: {0}")]
    Client(String),
    #[error("authorization for {domain} is {status}")]
    Authorization { domain: String, status: String },
    #[error("the CA offers no {0} challenge for this name")]
    NoChallenge(&'static str),
    #[error("order became invalid: {0}")]
    Invalid(String),
    #[error("cannot make the key or CSR: {0}")]
    Csr(String),
    #[error("the CA sent a certificate that cannot be used: {0}")]
    Issued(TlsError),
    #[error(transparent)]
    Challenge(TlsError),
    #[error("etcd: {0}")]
    Fleet(String),
}

/// An error and its causes on one line ("client error (Connect): tcp
/// connect error: Connection refused"), so logs and `ctl state` say why.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

impl AcmeError {
    /// The ACME problem type (`urn:ietf:params:acme:error:...`), if any.
    fn problem_type(&self) -> Option<&str> {
        match self {
            AcmeError::Acme(instant_acme::Error::Api(p)) => p.r#type.as_deref(),
            _ => None,
        }
    }

    fn is_rate_limited(&self) -> bool {
        self.problem_type() == Some(RATE_LIMITED)
            || matches!(self, AcmeError::Acme(instant_acme::Error::Api(p)) if p.status == Some(429))
    }
}

// ---------------------------------------------------------------------------
// Renewal policy (pure).

/// When a certificate valid from `not_before` to `not_after` (Unix seconds)
/// is due for renewal: `renew_before` ahead of expiry (default 30 days, but at
/// most a third of the lifetime for short certificates). A configured value is
/// capped at half the lifetime, so a certificate always serves for at least
/// half its life and a misconfiguration cannot turn into an order storm.
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Option<Duration>) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let window = match renew_before {
        Some(d) => secs(d).min(lifetime / 2),
        None => secs(DEFAULT_RENEW_BEFORE).min(lifetime / 3),
    };
    not_after.saturating_sub(window)
}

/// Delay before the next try after `failures` consecutive failed orders:
/// base, 2 base, 4 base, ... capped at `cap`.
pub fn backoff(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exp).min(cap)
}

/// The backoff base: [`BACKOFF_ENV`] when set and valid, else 5 minutes.
fn backoff_base() -> Duration {
    match std::env::var(BACKOFF_ENV) {
        Ok(v) => match humantime::parse_duration(&v) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                tracing::warn!(value = %v, "{BACKOFF_ENV} is not a duration; using 5m");
                DEFAULT_BACKOFF
            }
        },
        Err(_) => DEFAULT_BACKOFF,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn unix_to_system(t: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
}

/// Adds up to `spread` of randomness.
fn jitter(d: Duration, spread: Duration) -> Duration {
    d + spread.mul_f64(fastrand::f64())
}

// ---------------------------------------------------------------------------
// Storage.

/// The on-disk layout (see the module docs).
struct Storage {
    root: PathBuf,
    /// `root/<directory slug>`.
    dir: PathBuf,
    /// Held while certificate files are written ([`fsutil::write_atomic`]'s
    /// temp names are per process: two writers of one file must not overlap).
    write: Mutex<()>,
}

// === impl Storage ===

impl Storage {
    fn new(root: &Path, directory: &str) -> Storage {
        Storage {
            root: root.to_path_buf(),
            dir: root.join(slug(directory)),
            write: Mutex::new(()),
        }
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    fn cert_dir(&self, domain: &str) -> PathBuf {
        self.dir.join("certs").join(slug(domain))
    }

    /// The stored certificate of `domain`: `Ok(None)` when there is none,
    /// `Err` (after setting the files aside) when what is there is unusable.
    fn load_cert(&self, domain: &str) -> Result<Option<LoadedCert>, String> {
        let dir = self.cert_dir(domain);
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert_path.exists() && !key_path.exists() {
            return Ok(None);
        }
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let result = read(&cert_path).and_then(|c| {
            let k = read(&key_path)?;
            tls::load_pem(&c, &k).map_err(|e| e.to_string())
        });
        match result {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                let mut moved = Vec::new();
                for p in [&cert_path, &key_path] {
                    if p.exists() {
                        match fsutil::set_aside(p) {
                            Ok(to) => moved.push(to.display().to_string()),
                            Err(err) => moved.push(format!("{} (cannot move: {err})", p.display())),
                        }
                    }
                }
                Err(format!(
                    "stored certificate for {domain} in {} is unusable ({e}); set aside as {}",
                    dir.display(),
                    moved.join(", ")
                ))
            }
        }
    }

    /// The PEM text of the stored certificate and key of `domain`.
    fn read_pems(&self, domain: &str) -> Option<(String, String)> {
        let dir = self.cert_dir(domain);
        let chain = std::fs::read_to_string(dir.join("cert.pem")).ok()?;
        let key = std::fs::read_to_string(dir.join("key.pem")).ok()?;
        Some((chain, key))
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save_cert(&self, domain: &str, chain_pem: &str, key_pem: &str) -> Result<(), AcmeError> {
        let _g = self.write_lock();
        self.save_cert_locked(domain, chain_pem, key_pem)
    }

    /// Key first, then the chain: a crash in between leaves a pair that does
    /// not match, which [`Storage::load_cert`] treats as unusable. The caller
    /// holds [`Storage::write_lock`].
    fn save_cert_locked(
        &self,
        domain: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), AcmeError> {
        let dir = self.cert_dir(domain);
        for (name, data) in [("key.pem", key_pem), ("cert.pem", chain_pem)] {
            let p = dir.join(name);
            fsutil::write_atomic(&p, data.as_bytes(), 0o600).map_err(|source| {
                AcmeError::Storage {
                    path: p.display().to_string(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Takes the storage lock without waiting: `Ok(None)` when another
    /// instance holds it.
    fn try_lock(&self) -> Result<Option<File>, AcmeError> {
        let path = self.root.join("lock");
        let err = |source| AcmeError::Storage {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(err)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        match f.try_lock_exclusive() {
            Ok(true) => Ok(Some(f)),
            Ok(false) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }
}

/// A file-name-safe form of a URL or domain.
fn slug(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let out: String = s
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    match out.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => out,
    }
}

// ---------------------------------------------------------------------------
// The HTTP client: a hyper-rustls client (ring, platform roots plus
// `ca_file`) that bounds each request and remembers a Retry-After.

#[derive(Clone)]
struct CaClient {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    /// Set from a 429 or 503 answer's Retry-After.
    retry_after: Arc<Mutex<Option<SystemTime>>>,
    /// Requests sent (for logs).
    requests: Arc<AtomicU64>,
}

impl CaClient {
    fn new(ca_file: Option<&Path>) -> Result<CaClient, AcmeError> {
        let extra = match ca_file {
            Some(p) => tls::read_roots(p).map_err(AcmeError::Client)?,
            None => Vec::new(),
        };
        let config = tls::client_config(extra).map_err(AcmeError::Client)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(CaClient {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry_after: Arc::default(),
            requests: Arc::default(),
        })
    }

    fn take_retry_after(&self) -> Option<SystemTime> {
        self.retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let slot = self.retry_after.clone();
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(instant_acme::Error::Other(
                        format!("no answer from the CA within {REQUEST_TIMEOUT:?}").into(),
                    ))
                }
            };
            let status = rsp.parts.status.as_u16();
            if status == 429 || status == 503 {
                let after = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                if let Some(t) = after {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                }
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After: <seconds>` or an HTTP date (IMF-fixdate, the form ACME
/// servers send, or one of the two obsolete forms).
fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(SystemTime::now() + Duration::from_secs(secs));
    }
    httpdate::parse_http_date(v).ok()
}

// ---------------------------------------------------------------------------
// The manager.

struct Settings {
    directory: String,
    email: String,
    challenge: Challenge,
    ca_file: Option<PathBuf>,
    renew_before: Option<Duration>,
    backoff_base: Duration,
}

/// When the manager next looks at a domain.
struct Tracked {
    next: Instant,
}

struct Manager {
    tls: Arc<TlsState>,
    settings: Settings,
    storage: Arc<Storage>,
    /// `[cluster]`: the fleet's account, certificates and order locks in etcd.
    fleet: Option<Arc<Fleet>>,
    client: Option<CaClient>,
    account: Option<Account>,
    /// The stored account was refused by the CA: register a new one.
    new_account: bool,
    domains: BTreeMap<String, Tracked>,
}

/// Starts the ACME manager when the config has an `[acme]` section. It runs
/// until `shutdown` turns true. With `cluster`, the fleet shares one account
/// and one certificate per domain through etcd.
pub fn spawn(
    tls: Arc<TlsState>,
    config: &Config,
    cluster: Option<Arc<Cluster>>,
    shutdown: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let acme: &AcmeConfig = config.acme.as_ref()?;
    let settings = Settings {
        directory: acme.directory.clone(),
        email: acme.email.clone(),
        challenge: acme.challenge,
        ca_file: acme.ca_file.clone(),
        renew_before: acme.renew_before,
        backoff_base: backoff_base(),
    };
    let storage = Arc::new(Storage::new(&acme.storage, &settings.directory));
    let fleet = cluster.map(|c| {
        let f = Arc::new(Fleet::new(
            c.clone(),
            tls.clone(),
            storage.clone(),
            &settings.directory,
            settings.renew_before,
        ));
        c.watch_acme(f.clone());
        f
    });
    tracing::info!(directory = %settings.directory, storage = %acme.storage.display(), challenge = ?settings.challenge, fleet = fleet.is_some(), "ACME manager started");
    let mut m = Manager {
        storage,
        fleet,
        settings,
        client: None,
        account: None,
        new_account: false,
        domains: BTreeMap::new(),
        tls,
    };
    // Stored certificates serve from the first handshake on.
    let initial = m.tls.watch_acme_domains().borrow().clone();
    m.sync_domains(&initial);
    Some(tokio::spawn(m.run(shutdown)))
}

// === impl Manager ===

impl Manager {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut wanted = self.tls.watch_acme_domains();
        loop {
            let domains = wanted.borrow_and_update().clone();
            self.sync_domains(&domains);
            let now = Instant::now();
            let due: Vec<String> = self
                .domains
                .iter()
                .filter(|(_, t)| t.next <= now)
                .map(|(d, _)| d.clone())
                .collect();
            for d in due {
                tokio::select! {
                    _ = self.check(&d) => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            let next = self.domains.values().map(|t| t.next).min();
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(t),
                None => tokio::time::sleep(CHECK_EVERY),
            };
            tokio::select! {
                _ = sleep => {}
                r = wanted.changed() => if r.is_err() { return },
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    }

    /// Starts tracking new domains (loading what storage holds) and stops
    /// tracking, serving and renewing domains no route wants any more.
    fn sync_domains(&mut self, wanted: &[String]) {
        let gone: Vec<String> = self
            .domains
            .keys()
            .filter(|d| !wanted.contains(d))
            .cloned()
            .collect();
        for d in gone {
            tracing::info!(domain = %d, "no route wants a certificate for this name any more; it will not be renewed");
            self.domains.remove(&d);
            self.tls.certs.remove_acme(&d);
            self.tls.forget_status(&d);
        }
        for d in wanted {
            if self.domains.contains_key(d) {
                continue;
            }
            match self.storage.load_cert(d) {
                Ok(Some(c)) => {
                    tracing::info!(domain = %d, issuer = %c.info.issuer, serial = %c.info.serial, not_after = %tls::fmt_time(c.info.not_after), "stored certificate loaded");
                    self.tls.certs.set_acme(d, c);
                }
                Ok(None) => tracing::info!(domain = %d, "no stored certificate; ordering one"),
                Err(e) => {
                    tracing::error!(domain = %d, "{e}; ordering a new one");
                    self.tls.update_status(d, |s| {
                        s.last_error = Some(e.clone());
                        s.last_error_at = Some(SystemTime::now());
                    });
                }
            }
            self.domains.insert(
                d.clone(),
                Tracked {
                    next: Instant::now(),
                },
            );
        }
    }

    fn schedule(&mut self, domain: &str, after: Duration) {
        if let Some(t) = self.domains.get_mut(domain) {
            t.next = Instant::now() + after;
        }
        self.tls.update_status(domain, |s| {
            s.next_check = Some(SystemTime::now() + after);
        });
    }

    /// The renewal time of the served certificate, if there is one.
    fn renew_time(&self, domain: &str) -> Option<i64> {
        self.tls
            .certs
            .acme_info(domain)
            .map(|i| renew_at(i.not_before, i.not_after, self.settings.renew_before))
    }

    /// Looks at one due domain: renews when needed, then schedules the next look.
    async fn check(&mut self, domain: &str) {
        if let Some(f) = self.fleet.clone() {
            return self.check_fleet(&f, domain).await;
        }
        if let Some(at) = self.renew_time(domain) {
            self.tls
                .update_status(domain, |s| s.renew_at = Some(unix_to_system(at)));
            let now = unix_now();
            if now < at {
                self.schedule_fine(domain, at);
                return;
            }
        }
        let lock = match self.storage.try_lock() {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::info!(domain = %domain, "another instance holds the ACME storage lock; looking again in a minute");
                self.schedule(domain, Duration::from_secs(60));
                return;
            }
            Err(e) => {
                self.failed(domain, e, None);
                return;
            }
        };
        // Another instance may have renewed it meanwhile.
        if let Ok(Some(c)) = self.storage.load_cert(domain) {
            let at = renew_at(
                c.info.not_before,
                c.info.not_after,
                self.settings.renew_before,
            );
            let newer = self
                .tls
                .certs
                .acme_info(domain)
                .is_none_or(|cur| cur.serial != c.info.serial);
            if unix_now() < at && newer {
                tracing::info!(domain = %domain, serial = %c.info.serial, "certificate renewed by another instance; using it");
                self.tls.certs.set_acme(domain, c);
                self.tls
                    .update_status(domain, |s| s.renew_at = Some(unix_to_system(at)));
                self.schedule_fine(domain, at);
                return;
            }
        }
        let renewing = self.tls.certs.acme_info(domain).is_some();
        tracing::info!(domain = %domain, renewing, "ordering a certificate");
        self.tls.update_status(domain, |s| s.attempts += 1);
        if let Some(c) = &self.client {
            c.take_retry_after();
        }
        let result = self.obtain(domain, None).await;
        let result = match result {
            Ok((chain, key)) => match tls::load_pem(chain.as_bytes(), key.as_bytes()) {
                Ok(c) => self.storage.save_cert(domain, &chain, &key).map(|()| c),
                Err(e) => Err(AcmeError::Issued(e)),
            },
            Err(e) => Err(e),
        };
        drop(lock);
        match result {
            Ok(c) => self.obtained(domain, c),
            Err(e) => {
                let retry_after = self.client.as_ref().and_then(|c| c.take_retry_after());
                self.failed(domain, e, retry_after);
            }
        }
    }

    /// A certificate was issued for `domain`: served from now on.
    fn obtained(&mut self, domain: &str, c: LoadedCert) {
        let at = renew_at(
            c.info.not_before,
            c.info.not_after,
            self.settings.renew_before,
        );
        tracing::info!(domain = %domain, issuer = %c.info.issuer, serial = %c.info.serial, not_after = %tls::fmt_time(c.info.not_after), renew_at = %tls::fmt_time(at), "certificate obtained");
        self.tls.certs.set_acme(domain, c);
        self.tls.update_status(domain, |s| {
            s.consecutive_failures = 0;
            s.last_success_at = Some(SystemTime::now());
            s.renew_at = Some(unix_to_system(at));
        });
        self.schedule_fine(domain, at);
    }

    fn due(&self, c: &LoadedCert) -> bool {
        unix_now()
            >= renew_at(
                c.info.not_before,
                c.info.not_after,
                self.settings.renew_before,
            )
    }

    /// `[cluster]`: looks at one due domain for the fleet. The fleet's
    /// certificate (etcd) is served when it is fine; else, when this
    /// instance serves a fine one etcd lacks (its cache, from before the
    /// fleet), that one is published; else the certificate is ordered, by
    /// this instance only if it takes the domain's lock. Without etcd
    /// nothing is ordered: the cached certificate keeps serving.
    async fn check_fleet(&mut self, fleet: &Fleet, domain: &str) {
        let retry = fleet.retry_every();
        let served_due = self.renew_time(domain).is_none_or(|at| unix_now() >= at);
        // At start the cluster service connects a moment after this runs.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !fleet.cluster.is_connected() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !fleet.cluster.is_connected() {
            if served_due {
                tracing::warn!(domain = %domain, retry_in = ?retry, serving = self.tls.certs.acme_info(domain).is_some(), "etcd is unreachable: a certificate is ordered only under the fleet's lock; waiting for etcd");
            } else {
                tracing::debug!(domain = %domain, "etcd is unreachable; the served certificate is fine");
            }
            self.schedule(domain, retry);
            return;
        }
        let read = match fleet.load_cert(domain).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(domain = %domain, error = %e, retry_in = ?retry, "cannot read the fleet's certificate from etcd");
                self.schedule(domain, retry);
                return;
            }
        };
        let revision = read.revision;
        match read.cert {
            Some(Ok(c)) if !self.due(&c.cert) => {
                let at = renew_at(
                    c.cert.info.not_before,
                    c.cert.info.not_after,
                    self.settings.renew_before,
                );
                fleet.install(domain, c);
                self.schedule_fine(domain, at);
                return;
            }
            Some(Err(e)) => {
                tracing::error!(domain = %domain, error = %e, "the fleet's certificate in etcd is unusable; replacing it");
            }
            _ => {}
        }
        if !served_due && self.publish_served(fleet, domain, revision).await {
            self.schedule(domain, retry);
            return;
        }
        let lock = match fleet.try_lock(domain).await {
            Ok(Ok(l)) => l,
            Ok(Err(holder)) => {
                tracing::info!(domain = %domain, holder = %holder, retry_in = ?retry, "another instance of the fleet is ordering this certificate; it arrives through etcd");
                self.schedule(domain, retry);
                return;
            }
            Err(e) => {
                tracing::warn!(domain = %domain, error = %e, retry_in = ?retry, "cannot take the fleet's order lock in etcd");
                self.schedule(domain, retry);
                return;
            }
        };
        // Under the lock: another instance may have renewed it meanwhile.
        let revision = match fleet.load_cert(domain).await {
            Ok(FleetRead {
                cert: Some(Ok(c)), ..
            }) if !self.due(&c.cert) => {
                lock.release().await;
                let at = renew_at(
                    c.cert.info.not_before,
                    c.cert.info.not_after,
                    self.settings.renew_before,
                );
                tracing::info!(domain = %domain, serial = %c.cert.info.serial, "certificate renewed by another instance of the fleet; using it");
                fleet.install(domain, c);
                self.schedule_fine(domain, at);
                return;
            }
            Ok(r) => r.revision,
            Err(e) => {
                lock.release().await;
                tracing::warn!(domain = %domain, error = %e, retry_in = ?retry, "cannot read the fleet's certificate from etcd");
                self.schedule(domain, retry);
                return;
            }
        };
        self.order_for_fleet(fleet, domain, lock, revision).await;
    }

    /// Orders the certificate of `domain` under the fleet's `lock`, serves
    /// it, and publishes it in etcd if `certs/<domain>` is still at
    /// `revision`.
    async fn order_for_fleet(
        &mut self,
        fleet: &Fleet,
        domain: &str,
        lock: OrderLock,
        revision: i64,
    ) {
        let retry = fleet.retry_every();
        let renewing = self.tls.certs.acme_info(domain).is_some();
        tracing::info!(domain = %domain, renewing, fleet = true, "ordering a certificate");
        self.tls.update_status(domain, |s| s.attempts += 1);
        if let Some(c) = &self.client {
            c.take_retry_after();
        }
        let result = match self.obtain(domain, Some((fleet, &lock))).await {
            Ok((chain, key)) => match tls::load_pem(chain.as_bytes(), key.as_bytes()) {
                Ok(c) => Ok((c, chain, key)),
                Err(e) => Err(AcmeError::Issued(e)),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok((c, chain, key)) => {
                // Cached and served here first, then published to the fleet.
                if let Err(e) = self.storage.save_cert(domain, &chain, &key) {
                    tracing::warn!(domain = %domain, error = %e, "cannot cache the certificate on disk");
                }
                self.obtained(domain, c);
                match fleet.put_cert(domain, &chain, &key, Some(revision)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(domain = %domain, "the fleet's certificate changed in etcd during the order (a lost lock?); this one is served here until the next look, in {retry:?}");
                        self.schedule(domain, retry);
                    }
                    Err(e) => {
                        tracing::error!(domain = %domain, error = %e, "cannot publish the new certificate to the fleet; it serves here and is published at the next look, in {retry:?}");
                        self.schedule(domain, retry);
                    }
                }
                lock.release().await;
            }
            Err(e) => {
                lock.release().await;
                let retry_after = self.client.as_ref().and_then(|c| c.take_retry_after());
                self.failed(domain, e, retry_after);
            }
        }
    }

    /// Publishes the certificate this instance serves (fine, not due) when
    /// the fleet's is missing, unusable or due: a fleet formed from single
    /// instances converges on one certificate without an order. Returns
    /// whether it was published.
    async fn publish_served(&self, fleet: &Fleet, domain: &str, revision: i64) -> bool {
        let Some(serving) = self.tls.certs.acme_info(domain) else {
            return false;
        };
        let Some((chain, key)) = self.storage.read_pems(domain) else {
            return false;
        };
        let same = tls::load_pem(chain.as_bytes(), key.as_bytes())
            .is_ok_and(|c| c.info.serial == serving.serial);
        if !same {
            return false;
        }
        match fleet.put_cert(domain, &chain, &key, Some(revision)).await {
            Ok(true) => {
                tracing::info!(domain = %domain, serial = %serving.serial, "the fleet had no usable certificate for this name; published the one served here");
                true
            }
            Ok(false) => true,
            Err(e) => {
                tracing::warn!(domain = %domain, error = %e, "cannot publish the served certificate to the fleet");
                false
            }
        }
    }

    /// Schedules the next look at a domain whose certificate is fine: at its
    /// renewal time, or in about 12 hours, whichever comes first.
    fn schedule_fine(&mut self, domain: &str, renew_at: i64) {
        let until_renewal = Duration::from_secs(u64::try_from(renew_at - unix_now()).unwrap_or(0));
        let after = jitter(CHECK_EVERY - CHECK_JITTER / 2, CHECK_JITTER).min(until_renewal);
        self.schedule(domain, after);
    }

    fn failed(&mut self, domain: &str, e: AcmeError, retry_after: Option<SystemTime>) {
        let rate_limited = e.is_rate_limited() || retry_after.is_some();
        let mut failures = 0;
        self.tls.update_status(domain, |s| {
            s.failures += 1;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            failures = s.consecutive_failures;
            if rate_limited {
                s.rate_limited += 1;
            }
            s.last_error = Some(e.to_string());
            s.last_error_at = Some(SystemTime::now());
        });
        let mut delay = backoff(self.settings.backoff_base, BACKOFF_CAP, failures);
        // Up to 10 % more, so many domains failing together spread out.
        delay = jitter(delay, delay / 10);
        if let Some(t) = retry_after {
            let wait = t
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(RETRY_AFTER_CAP);
            delay = delay.max(wait);
        }
        let serving = self.tls.certs.acme_info(domain);
        let expired = serving.as_ref().is_some_and(|i| i.not_after <= unix_now());
        tracing::error!(
            domain = %domain,
            error = %e,
            consecutive_failures = failures,
            rate_limited,
            retry_in = ?delay,
            serving = serving.is_some(),
            expired,
            "certificate order failed; {}",
            match (&serving, expired) {
                (None, _) => "no certificate to serve for this name yet",
                (Some(_), false) => "the current certificate keeps serving",
                (Some(_), true) => "the current certificate has EXPIRED and is still served",
            }
        );
        self.schedule(domain, delay);
    }

    /// One certificate, with order-level retries for a rejected nonce and a
    /// forgotten account. Returns (chain PEM, key PEM).
    async fn obtain(
        &mut self,
        domain: &str,
        fleet: Option<(&Fleet, &OrderLock)>,
    ) -> Result<(String, String), AcmeError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let account = match fleet {
                Some((f, _)) => self.fleet_account(f).await?,
                None => self.account().await?,
            };
            match self.order(&account, domain, fleet).await {
                Ok(r) => return Ok(r),
                Err(e) if tries < ORDER_TRIES && e.problem_type() == Some(BAD_NONCE) => {
                    tracing::warn!(domain = %domain, error = %e, "nonce rejected; placing the order again");
                }
                Err(e)
                    if tries < ORDER_TRIES && e.problem_type() == Some(ACCOUNT_DOES_NOT_EXIST) =>
                {
                    tracing::warn!(domain = %domain, "the CA does not know the stored account (was it reset?); registering a new one");
                    self.account = None;
                    self.new_account = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn client(&mut self) -> Result<CaClient, AcmeError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = CaClient::new(self.settings.ca_file.as_deref())?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// The account: cached, else stored, else newly registered and stored.
    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let client = self.client()?;
        let path = self.storage.account_path();
        if !self.new_account {
            if let Some(creds) = read_account(&path) {
                let a = Account::builder_with_http(Box::new(client.clone()))
                    .from_credentials(creds)
                    .await?;
                self.account = Some(a.clone());
                return Ok(a);
            }
        }
        let contact = format!("mailto:{}", self.settings.email);
        let (a, creds) = Account::builder_with_http(Box::new(client))
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await?;
        let data = serde_json::to_vec_pretty(&creds).map_err(|e| AcmeError::Storage {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        fsutil::write_atomic(&path, &data, 0o600).map_err(|source| AcmeError::Storage {
            path: path.display().to_string(),
            source,
        })?;
        tracing::info!(account = %a.id(), file = %path.display(), "ACME account registered and stored");
        self.new_account = false;
        self.account = Some(a.clone());
        Ok(a)
    }

    /// `[cluster]`: the fleet's account: cached, else from etcd, else this
    /// instance's stored one (a single instance joining a fleet) or a new
    /// one, stored in etcd unless another instance stored one first.
    async fn fleet_account(&mut self, fleet: &Fleet) -> Result<Account, AcmeError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let client = self.client()?;
        let from = |bytes: &[u8]| serde_json::from_slice::<AccountCredentials>(bytes);
        if !self.new_account {
            let stored = fleet.account().await.map_err(AcmeError::Fleet)?;
            let creds = match stored.as_deref().map(from) {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "the fleet's ACME account in etcd is unusable; registering a new one");
                    self.new_account = true;
                    None
                }
                None => match read_account(&self.storage.account_path()) {
                    Some(local) => {
                        let data = serde_json::to_vec(&local).unwrap_or_default();
                        match fleet
                            .put_account(&data, true)
                            .await
                            .map_err(AcmeError::Fleet)?
                        {
                            None => {
                                tracing::info!("the fleet had no ACME account; published this instance's stored one");
                                Some(local)
                            }
                            Some(winner) => from(&winner).ok(),
                        }
                    }
                    None => None,
                },
            };
            if let Some(creds) = creds {
                let a = Account::builder_with_http(Box::new(client.clone()))
                    .from_credentials(creds)
                    .await?;
                self.account = Some(a.clone());
                return Ok(a);
            }
        }
        let contact = format!("mailto:{}", self.settings.email);
        let (a, creds) = Account::builder_with_http(Box::new(client.clone()))
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await?;
        let data = serde_json::to_vec(&creds).map_err(|e| AcmeError::Fleet(e.to_string()))?;
        // A replacement (the CA forgot the account, or etcd's was garbage)
        // overwrites; a first registration yields to one stored meanwhile.
        let only_if_absent = !self.new_account;
        let a = match fleet
            .put_account(&data, only_if_absent)
            .await
            .map_err(AcmeError::Fleet)?
        {
            None => {
                tracing::info!(account = %a.id(), "ACME account registered and stored in etcd for the fleet");
                a
            }
            Some(winner) => match from(&winner) {
                Ok(c) => {
                    tracing::info!(
                        "another instance stored the fleet's ACME account first; using it"
                    );
                    Account::builder_with_http(Box::new(client))
                        .from_credentials(c)
                        .await?
                }
                Err(_) => a,
            },
        };
        self.new_account = false;
        self.account = Some(a.clone());
        Ok(a)
    }

    /// One order from creation to the issued chain. With `fleet`, the
    /// challenges are also published in etcd (under the lock's lease) for
    /// every instance to answer.
    async fn order(
        &self,
        account: &Account,
        domain: &str,
        fleet: Option<(&Fleet, &OrderLock)>,
    ) -> Result<(String, String), AcmeError> {
        let ids = [Identifier::Dns(domain.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut published = Published {
            tls: &self.tls,
            tokens: Vec::new(),
            alpn: None,
        };
        {
            let mut auths = order.authorizations();
            while let Some(a) = auths.next().await {
                let mut a = a?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    // Reused from an earlier order: nothing to prove.
                    AuthorizationStatus::Valid => continue,
                    s => {
                        return Err(AcmeError::Authorization {
                            domain: domain.to_string(),
                            status: format!("{s:?}"),
                        })
                    }
                }
                let (ty, name) = match self.settings.challenge {
                    Challenge::Http01 => (ChallengeType::Http01, "http-01"),
                    Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
                };
                let mut ch = a.challenge(ty).ok_or(AcmeError::NoChallenge(name))?;
                let ka = ch.key_authorization();
                let shared = match self.settings.challenge {
                    Challenge::Http01 => {
                        self.tls.set_http01(&ch.token, ka.as_str());
                        published.tokens.push(ch.token.clone());
                        match fleet {
                            Some((f, l)) => Some(f.publish_http01(l, &ch.token, ka.as_str()).await),
                            None => None,
                        }
                    }
                    Challenge::TlsAlpn01 => {
                        let cert = tls::challenge_cert(domain, ka.digest().as_ref())
                            .map_err(AcmeError::Challenge)?;
                        self.tls.set_alpn01(domain, cert);
                        published.alpn = Some(domain.to_string());
                        match fleet {
                            Some((f, l)) => {
                                Some(f.publish_alpn01(l, domain, ka.digest().as_ref()).await)
                            }
                            None => None,
                        }
                    }
                };
                if let (Some(shared), Some((f, _))) = (shared, fleet) {
                    let rev = shared.map_err(AcmeError::Fleet)?;
                    // The validator may reach any instance: let them all have it.
                    if !f.wait_applied(rev).await {
                        tracing::warn!(domain = %domain, "not every instance reported the challenge applied within {:?}; validating anyway", fleet::APPLIED_WAIT);
                    }
                }
                ch.set_ready().await?;
            }
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await;
        // The validator is done with the tokens once the order is ready (or failed).
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                let detail = invalid_detail(&mut order).await;
                return Err(match (e, detail) {
                    (instant_acme::Error::Api(p), Some(d)) => {
                        AcmeError::Invalid(format!("{p}; {d}"))
                    }
                    (e, _) => AcmeError::Acme(e),
                });
            }
        };
        drop(published);
        if status != OrderStatus::Ready {
            let detail = invalid_detail(&mut order)
                .await
                .unwrap_or_else(|| format!("order status {status:?}"));
            return Err(AcmeError::Invalid(detail));
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await?;
        Ok((chain, key.serialize_pem()))
    }
}

/// The challenge errors of an order's authorizations, for a useful message.
async fn invalid_detail(order: &mut Order) -> Option<String> {
    let mut out = Vec::new();
    if let Some(p) = &order.state().error {
        out.push(p.to_string());
    }
    let mut auths = order.authorizations();
    while let Some(Ok(mut a)) = auths.next().await {
        if let Ok(st) = a.refresh().await {
            for c in &st.challenges {
                if let Some(p) = &c.error {
                    out.push(p.to_string());
                }
            }
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// Reads stored credentials; an unusable file is logged and set aside.
fn read_account(path: &Path) -> Option<AccountCredentials> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the ACME account; registering a new one");
            return None;
        }
    };
    match serde_json::from_slice::<AccountCredentials>(&data) {
        Ok(c) => Some(c),
        Err(e) => {
            let moved = fsutil::set_aside(path)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|err| format!("(cannot move it: {err})"));
            tracing::error!(file = %path.display(), error = %e, set_aside = %moved, "stored ACME account is unusable; registering a new one");
            None
        }
    }
}

/// Challenge answers published for one order; withdrawn when dropped, so an
/// order that fails half-way leaves nothing behind.
struct Published<'a> {
    tls: &'a TlsState,
    tokens: Vec<String>,
    alpn: Option<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.tls.remove_http01(t);
        }
        if let Some(d) = &self.alpn {
            self.tls.remove_alpn01(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_defaults_to_30_days_or_a_third_of_short_lifetimes() {
        let day = 86_400;
        // 90-day certificate: 30 days before expiry.
        assert_eq!(renew_at(0, 90 * day, None), 60 * day);
        // 5-year certificate: still 30 days.
        assert_eq!(renew_at(0, 1825 * day, None), 1795 * day);
        // 6-day certificate: a third of its life, 2 days.
        assert_eq!(renew_at(0, 6 * day, None), 4 * day);
        // Configured.
        assert_eq!(
            renew_at(0, 90 * day, Some(Duration::from_secs(10 * day as u64))),
            80 * day
        );
        // Configured above half the lifetime: capped at half.
        assert_eq!(renew_at(0, 100, Some(Duration::from_secs(1000))), 50);
        // Nonsense validity does not underflow.
        assert_eq!(renew_at(100, 0, None), 0);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let m = Duration::from_secs(60);
        let cap = Duration::from_secs(86_400);
        assert_eq!(backoff(m, cap, 1), m);
        assert_eq!(backoff(m, cap, 2), 2 * m);
        assert_eq!(backoff(m, cap, 5), 16 * m);
        assert_eq!(backoff(m, cap, 12), cap);
        assert_eq!(backoff(m, cap, u32::MAX), cap);
    }

    #[test]
    fn retry_after_forms() {
        let t = parse_retry_after("120").unwrap();
        let d = t.duration_since(SystemTime::now()).unwrap();
        assert!(d > Duration::from_secs(118) && d <= Duration::from_secs(120));
        let t = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_445_412_480
        );
        // The two obsolete forms HTTP recipients must accept.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(t)
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015"), Some(t));
        assert!(parse_retry_after("soon").is_none());
        assert!(parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT").is_none());
        assert!(parse_retry_after("Wed, 21 Oct 2015 25:28:00 GMT").is_none());
    }

    #[test]
    fn slugs_are_single_safe_path_components() {
        assert_eq!(slug("https://localhost:14000/dir"), "localhost_14000_dir");
        assert_eq!(
            slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(slug("App.Test"), "app.test");
        assert_eq!(slug(".."), "_");
        assert_eq!(slug("a/../b"), "a_.._b");
    }

    #[test]
    fn storage_sets_aside_garbage_and_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://ca.test/dir");
        assert!(matches!(s.load_cert("app.test"), Ok(None)));
        let cd = s.cert_dir("app.test");
        std::fs::create_dir_all(&cd).unwrap();
        std::fs::write(cd.join("cert.pem"), b"-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
        std::fs::write(cd.join("key.pem"), b"\x00\x01garbage").unwrap();
        let e = s.load_cert("app.test").unwrap_err();
        assert!(e.contains("unusable"), "{e}");
        assert!(!cd.join("cert.pem").exists() && !cd.join("key.pem").exists());
        let aside = std::fs::read_dir(&cd).unwrap().count();
        assert_eq!(aside, 2, "both files moved aside");
        assert!(matches!(s.load_cert("app.test"), Ok(None)));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        s.save_cert("app.test", &cert.pem(), &key.serialize_pem())
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["cert.pem", "key.pem"] {
            let mode = std::fs::metadata(cd.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(s.load_cert("app.test").unwrap().is_some());
    }

    #[test]
    fn storage_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path(), "https://ca.test/dir");
        let held = s.try_lock().unwrap();
        assert!(held.is_some());
        // flock locks belong to the open file description: a second open
        // (as another process would do) cannot take it.
        assert!(s.try_lock().unwrap().is_none());
        drop(held);
        assert!(s.try_lock().unwrap().is_some());
    }

    #[test]
    fn stored_account_garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("account.json");
        std::fs::write(&p, b"{\"id\": ").unwrap();
        assert!(read_account(&p).is_none());
        assert!(!p.exists());
        assert!(read_account(&p).is_none());
    }
}
