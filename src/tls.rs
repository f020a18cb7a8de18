//! TLS termination on the `https` entrypoint: certificates by SNI, ALPN, and
//! the ACME challenges that live on the wire.
//!
//! ```text
//! accept ─> LazyConfigAcceptor ─> ClientHello
//!            ├─ ALPN "acme-tls/1" ─> the TLS-ALPN-01 challenge cert for SNI, handshake, close
//!            └─ otherwise ─> ServerConfig (ALPN h2, http/1.1) ─> CertStore::resolve(SNI)
//!                             ├─ exact name, then the longest wildcard (like routing)
//!                             └─ unknown name: no certificate, the handshake fails
//! ```
//!
//! [`CertStore`] keeps two sources, static files (`tls = { cert, key }`, re-read
//! on reload) and ACME certificates (written by [`crate::acme`]), and publishes
//! their union as one immutable [`CertMap`] in an `ArcSwap`: a new or renewed
//! certificate serves the next handshake, and a handshake never takes a lock.
//!
//! [`TlsState`] is what the rest of the program shares: the store, the HTTP-01
//! tokens answered by the proxy on the `http` entrypoint, the TLS-ALPN-01
//! challenge certificates, the per-domain ACME status shown by `GET /v1/state`,
//! and the set of domains the ACME manager must keep certified.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::api::{AcmeStatusView, CertificateView};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{Config, TlsMode};
use crate::host::{self, HostPattern, MAX_HOST_LEN};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The one crypto provider of this program.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default (first thing in `main`, and in
/// tests that build rustls configs). Installing twice is harmless.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls client config of every outbound HTTPS call (the ACME
/// directory, notification targets): the platform's verifier, which trusts
/// the system's roots, plus `extra` roots (a `ca_file`), with ring and the
/// safe protocol versions.
pub fn client_config(extra: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider())
        .map_err(|e| e.to_string())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Every certificate of a PEM file, to trust as extra roots (`ca_file`).
pub fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = |e: &dyn fmt::Display| format!("ca_file {}: {e}", path.display());
    let mut roots = Vec::new();
    for c in CertificateDer::pem_file_iter(path).map_err(|e| what(&e))? {
        roots.push(c.map_err(|e| what(&e))?);
    }
    if roots.is_empty() {
        return Err(format!("ca_file {} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("bad PEM certificate: {0}")]
    BadCertificate(String),
    #[error("no PEM private key found")]
    NoKey,
    #[error("unusable private key: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("cannot make a challenge certificate: {0}")]
    Challenge(String),
}

/// What `GET /v1/state` and the renewal logic need to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex, colon-separated, as openssl prints it.
    pub serial: String,
    pub names: Vec<String>,
}

/// A certificate ready to serve, with what is known about it.
#[derive(Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("info", &self.info)
            .finish()
    }
}

/// Reads the leaf's issuer, validity, serial and DNS names.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertInfo {
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
        names,
    })
}

/// Parses a PEM chain (leaf first) and its PEM private key, and checks that
/// they belong together. Never panics, whatever the bytes.
pub fn load_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
    let info = cert_info(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        e => TlsError::BadKey(e.to_string()),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err(TlsError::KeyMismatch),
    }
    Ok(LoadedCert {
        key: Arc::new(ck),
        info,
    })
}

/// Reads a `tls = { cert, key }` pair from disk.
pub fn load_files(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    load_pem(&read(cert)?, &read(key)?)
}

/// The self-signed certificate that answers a TLS-ALPN-01 validation for
/// `domain`: the name as its only SAN and the key authorization's SHA-256 in
/// the critical acmeIdentifier extension.
pub fn challenge_cert(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let e = |e: rcgen::Error| TlsError::Challenge(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(e)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(e)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Challenge(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

// ---------------------------------------------------------------------------
// The certificate store.

/// One immutable SNI -> certificate snapshot.
#[derive(Default)]
struct CertMap {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// (suffix such as ".example.com", cert), longest suffix first.
    wildcards: Vec<(Box<str>, Arc<CertifiedKey>)>,
}

/// Where certificates come from; the map is rebuilt from these on change.
#[derive(Default)]
struct Sources {
    /// Static files per route host (and preview host).
    files: Vec<(HostPattern, LoadedCert)>,
    /// ACME certificates per domain.
    acme: BTreeMap<String, LoadedCert>,
    /// Domains with an expiry gauge series.
    exported: Vec<String>,
}

/// SNI -> certificate, swapped whole on every change.
pub struct CertStore {
    map: ArcSwap<CertMap>,
    /// Writers only (reload, the ACME manager); handshakes never lock.
    sources: Mutex<Sources>,
    /// `switchyard_certificate_expiry_timestamp_seconds{domain}`, kept in
    /// step with what is served.
    expiry: std::sync::OnceLock<prometheus::GaugeVec>,
}

// === impl CertStore ===

impl Default for CertStore {
    fn default() -> Self {
        CertStore {
            map: ArcSwap::from_pointee(CertMap::default()),
            sources: Mutex::new(Sources::default()),
            expiry: std::sync::OnceLock::new(),
        }
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.map.load();
        f.debug_struct("CertStore")
            .field("exact", &m.exact.len())
            .field("wildcards", &m.wildcards.len())
            .finish()
    }
}

impl CertStore {
    /// Exports each served certificate's expiry to `gauge` from now on
    /// (the first gauge given wins).
    pub fn export_expiry(&self, gauge: prometheus::GaugeVec) {
        if self.expiry.set(gauge).is_ok() {
            let mut s = self.sources();
            self.publish(&mut s);
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new snapshot. ACME certificates are exact names; a file
    /// for an exact name wins over an ACME one for the same name (the route
    /// says which it wants, so both exist only across a reload).
    fn publish(&self, s: &mut Sources) {
        if let Some(g) = self.expiry.get() {
            let mut now: BTreeMap<String, i64> = BTreeMap::new();
            for (p, c) in &s.files {
                now.insert(p.to_string(), c.info.not_after);
            }
            for (d, c) in &s.acme {
                now.insert(d.clone(), c.info.not_after);
            }
            for gone in s.exported.iter().filter(|d| !now.contains_key(*d)) {
                let _ = g.remove_label_values(&[gone.as_str()]);
            }
            for (d, t) in &now {
                g.with_label_values(&[d.as_str()]).set(*t as f64);
            }
            s.exported = now.into_keys().collect();
        }
        let mut map = CertMap::default();
        for (d, c) in &s.acme {
            map.exact.insert(d.as_str().into(), c.key.clone());
        }
        for (pattern, c) in &s.files {
            match pattern {
                HostPattern::Exact(h) => {
                    map.exact.insert(h.as_str().into(), c.key.clone());
                }
                HostPattern::Wildcard(suffix) => {
                    map.wildcards.push((suffix.clone(), c.key.clone()))
                }
            }
        }
        map.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        self.map.store(Arc::new(map));
    }

    /// Installs (or replaces) the ACME certificate of `domain`.
    pub fn set_acme(&self, domain: &str, cert: LoadedCert) {
        let mut s = self.sources();
        s.acme.insert(domain.to_string(), cert);
        self.publish(&mut s);
    }

    /// Forgets the ACME certificate of `domain` (its route is gone).
    pub fn remove_acme(&self, domain: &str) {
        let mut s = self.sources();
        if s.acme.remove(domain).is_some() {
            self.publish(&mut s);
        }
    }

    /// What the store holds for `domain` from ACME.
    pub fn acme_info(&self, domain: &str) -> Option<CertInfo> {
        self.sources().acme.get(domain).map(|c| c.info.clone())
    }

    fn set_files(&self, files: Vec<(HostPattern, LoadedCert)>) {
        let mut s = self.sources();
        s.files = files;
        self.publish(&mut s);
    }

    fn file_cert(&self, pattern: &HostPattern) -> Option<LoadedCert> {
        self.sources()
            .files
            .iter()
            .find(|(p, _)| p == pattern)
            .map(|(_, c)| c.clone())
    }

    fn files_info(&self) -> Vec<(String, CertInfo)> {
        self.sources()
            .files
            .iter()
            .map(|(p, c)| (p.to_string(), c.info.clone()))
            .collect()
    }

    /// The certificate for a server name: exact first, then the longest
    /// wildcard. No allocation.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        let name = host::normalize(server_name, &mut buf)?;
        let map = self.map.load();
        if let Some(c) = map.exact.get(name) {
            return Some(c.clone());
        }
        map.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(&**suffix))
            .map(|(_, c)| c.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI, or a name we hold no certificate for: no certificate, and
        // rustls ends the handshake with an alert.
        let found = hello.server_name().and_then(|n| self.lookup(n));
        if found.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "TLS handshake for a name with no certificate");
        }
        found
    }
}

/// Answers with one certificate (the TLS-ALPN-01 challenge).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

// ---------------------------------------------------------------------------
// Shared TLS state.

/// The server name a TLS connection asked for, handed to each of its
/// requests so the proxy can refuse a Host the certificate was not chosen
/// for. Normalized once, at the handshake; a name that is not a host name
/// is kept as "", which no normalized Host is.
#[derive(Debug, Clone)]
pub struct Sni(Arc<str>);

impl Sni {
    pub fn new(server_name: &str) -> Sni {
        let mut buf = [0u8; MAX_HOST_LEN + 2];
        Sni(host::normalize(server_name, &mut buf).unwrap_or("").into())
    }

    /// Whether a host name [`host::normalize`] returned names this SNI.
    pub fn matches_normalized(&self, host: &str) -> bool {
        !self.0.is_empty() && *self.0 == *host
    }
}

/// Live ACME status of one domain, for `GET /v1/state`.
#[derive(Debug, Clone, Default)]
pub struct DomainStatus {
    /// When the manager will next look at (and maybe renew) this domain.
    pub next_check: Option<SystemTime>,
    /// When renewal becomes due for the current certificate.
    pub renew_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Orders attempted since start (including successes).
    pub attempts: u64,
    /// Failed orders since start.
    pub failures: u64,
    /// Failures since the last success (drives the backoff).
    pub consecutive_failures: u32,
    /// Times the CA said to slow down (429 / rateLimited).
    pub rate_limited: u64,
    pub last_success_at: Option<SystemTime>,
}

/// Everything TLS that the proxy, the listeners and the ACME manager share.
pub struct TlsState {
    pub certs: Arc<CertStore>,
    /// The config for ordinary handshakes (resolver = `certs`, ALPN h2 + http/1.1).
    server_config: Arc<ServerConfig>,
    /// HTTP-01: token -> key authorization.
    http01: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: domain -> challenge certificate.
    alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// `[cluster]`: the fleet's pending challenges, published in etcd by
    /// whichever instance orders, so that any instance the CA reaches
    /// answers (HTTP-01 token -> key authorization; domain -> cert).
    fleet_http01: Mutex<HashMap<String, String>>,
    fleet_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Per-domain ACME status.
    status: Mutex<BTreeMap<String, DomainStatus>>,
    /// The domains routes want ACME certificates for; the manager watches it.
    acme_domains: watch::Sender<Vec<String>>,
}

// === impl TlsState ===

impl TlsState {
    /// Loads static certificate files and notes the ACME domains of `config`.
    /// A file that cannot be used is logged; its host has no certificate.
    pub fn new(config: &Config) -> TlsState {
        let certs = Arc::new(CertStore::default());
        let mut sc = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (acme_domains, _) = watch::channel(Vec::new());
        let state = TlsState {
            certs,
            server_config: Arc::new(sc),
            http01: Mutex::default(),
            alpn01: Mutex::default(),
            fleet_http01: Mutex::default(),
            fleet_alpn01: Mutex::default(),
            status: Mutex::default(),
            acme_domains,
        };
        for problem in state.apply_config(config) {
            tracing::error!("{problem}");
        }
        state
    }

    /// Applies a (re)loaded config: re-reads every certificate file and
    /// updates the ACME domain set. A file that cannot be read on reload keeps
    /// the certificate served before for that host. Returns the problems.
    pub fn apply_config(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        let mut files = Vec::new();
        let mut acme = Vec::new();
        for r in config.routes.iter() {
            let mut patterns = vec![r.host.clone()];
            if let Some(p) = &r.preview {
                patterns.push(HostPattern::Exact(p.clone()));
            }
            match &r.tls {
                TlsMode::None => {}
                TlsMode::Acme => {
                    for p in &patterns {
                        if let HostPattern::Exact(h) = p {
                            acme.push(h.to_string());
                        }
                    }
                }
                TlsMode::Files { cert, key } => match load_files(cert, key) {
                    Ok(c) => {
                        tracing::info!(host = %r.host, cert = %cert.display(), not_after = %fmt_time(c.info.not_after), "certificate loaded");
                        files.extend(patterns.into_iter().map(|p| (p, c.clone())));
                    }
                    Err(e) => {
                        let kept = self.certs.file_cert(&r.host);
                        problems.push(format!(
                            "route {}: certificate {} / key {}: {e}{}",
                            r.host,
                            cert.display(),
                            key.display(),
                            if kept.is_some() {
                                "; the certificate loaded before is kept"
                            } else {
                                "; TLS handshakes for this host will fail"
                            }
                        ));
                        if let Some(c) = kept {
                            files.extend(patterns.into_iter().map(|p| (p, c.clone())));
                        }
                    }
                },
            }
        }
        self.certs.set_files(files);
        acme.sort();
        acme.dedup();
        self.acme_domains.send_replace(acme);
        problems
    }

    /// Whether a route wants an ACME certificate for `domain`.
    pub fn wants_acme(&self, domain: &str) -> bool {
        self.acme_domains.borrow().iter().any(|d| d == domain)
    }

    /// The domains that want ACME certificates, and their changes.
    pub fn watch_acme_domains(&self) -> watch::Receiver<Vec<String>> {
        self.acme_domains.subscribe()
    }

    /// The key authorization for an HTTP-01 token, when one is pending
    /// here or in the fleet.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        if let Some(a) = lock(&self.http01).get(token) {
            return Some(a.clone());
        }
        lock(&self.fleet_http01).get(token).cloned()
    }

    /// The TLS-ALPN-01 certificate for `domain`, when one is pending here
    /// or in the fleet.
    fn alpn01_cert(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(c) = lock(&self.alpn01).get(domain) {
            return Some(c.clone());
        }
        lock(&self.fleet_alpn01).get(domain).cloned()
    }

    /// A challenge of the fleet (from etcd) appeared (`Some`) or went.
    pub fn set_fleet_http01(&self, token: &str, key_authorization: Option<String>) {
        let mut m = lock(&self.fleet_http01);
        match key_authorization {
            Some(ka) => m.insert(token.to_string(), ka),
            None => m.remove(token),
        };
    }

    pub fn set_fleet_alpn01(&self, domain: &str, cert: Option<Arc<CertifiedKey>>) {
        let mut m = lock(&self.fleet_alpn01);
        match cert {
            Some(c) => m.insert(domain.to_string(), c),
            None => m.remove(domain),
        };
    }

    /// Replaces every challenge of the fleet (a re-read of etcd).
    pub fn replace_fleet_challenges(
        &self,
        http01: HashMap<String, String>,
        alpn01: HashMap<String, Arc<CertifiedKey>>,
    ) {
        *lock(&self.fleet_http01) = http01;
        *lock(&self.fleet_alpn01) = alpn01;
    }

    pub fn set_http01(&self, token: &str, key_authorization: &str) {
        lock(&self.http01).insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove_http01(&self, token: &str) {
        lock(&self.http01).remove(token);
    }

    pub fn set_alpn01(&self, domain: &str, cert: Arc<CertifiedKey>) {
        lock(&self.alpn01).insert(domain.to_string(), cert);
    }

    pub fn remove_alpn01(&self, domain: &str) {
        lock(&self.alpn01).remove(domain);
    }

    /// Updates the ACME status of `domain`.
    pub fn update_status(&self, domain: &str, f: impl FnOnce(&mut DomainStatus)) {
        f(lock(&self.status).entry(domain.to_string()).or_default());
    }

    pub fn status(&self, domain: &str) -> Option<DomainStatus> {
        lock(&self.status).get(domain).cloned()
    }

    pub fn forget_status(&self, domain: &str) {
        lock(&self.status).remove(domain);
    }

    /// The `certificates` part of `GET /v1/state`: one entry per ACME domain
    /// and per certificate file.
    pub fn certificates(&self) -> BTreeMap<String, CertificateView> {
        let mut out = BTreeMap::new();
        let domains = self.acme_domains.borrow().clone();
        let status = lock(&self.status).clone();
        for d in domains {
            let st = status.get(&d).cloned().unwrap_or_default();
            let info = self.certs.acme_info(&d);
            let view = CertificateView {
                source: "acme".into(),
                issuer: info.as_ref().map(|i| i.issuer.clone()),
                serial: info.as_ref().map(|i| i.serial.clone()),
                not_before: info.as_ref().map(|i| fmt_time(i.not_before)),
                not_after: info.as_ref().map(|i| fmt_time(i.not_after)),
                not_after_unix: info.as_ref().map(|i| i.not_after),
                acme: Some(AcmeStatusView {
                    renew_at: st.renew_at.map(fmt_system_time),
                    next_check: st.next_check.map(fmt_system_time),
                    last_error: st.last_error,
                    last_error_at: st.last_error_at.map(fmt_system_time),
                    last_success_at: st.last_success_at.map(fmt_system_time),
                    attempts: st.attempts,
                    failures: st.failures,
                    consecutive_failures: st.consecutive_failures,
                    rate_limited: st.rate_limited,
                }),
            };
            out.insert(d.clone(), view);
        }
        for (pattern, info) in self.certs.files_info() {
            out.entry(pattern).or_insert_with(|| CertificateView {
                source: "files".into(),
                issuer: Some(info.issuer),
                serial: Some(info.serial),
                not_before: Some(fmt_time(info.not_before)),
                not_after: Some(fmt_time(info.not_after)),
                not_after_unix: Some(info.not_after),
                acme: None,
            });
        }
        out
    }

    /// The TLS handshake of one connection, within `timeout`. Returns the
    /// stream and its SNI, or `None` when the handshake failed or was a
    /// TLS-ALPN-01 validation (answered and closed here).
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<(TlsStream<TcpStream>, Sni)> {
        let handshake = async {
            let start = match LazyConfigAcceptor::new(Acceptor::default(), stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS ClientHello unreadable");
                    return None;
                }
            };
            let hello = start.client_hello();
            let sni: Option<Arc<str>> = hello.server_name().map(|s| s.to_ascii_lowercase().into());
            let acme = hello
                .alpn()
                .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
            if acme {
                let cert = sni.as_deref().and_then(|s| self.alpn01_cert(s));
                let Some(cert) = cert else {
                    tracing::debug!(sni = ?sni, "acme-tls/1 handshake with no pending challenge");
                    return None;
                };
                let mut sc = ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .ok()?
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(OneCert(cert)));
                sc.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
                match start.into_stream(Arc::new(sc)).await {
                    Ok(mut s) => {
                        tracing::info!(sni = ?sni, "answered a TLS-ALPN-01 validation");
                        let _ = s.shutdown().await;
                    }
                    Err(e) => tracing::debug!(error = %e, "TLS-ALPN-01 handshake failed"),
                }
                return None;
            }
            match start.into_stream(self.server_config.clone()).await {
                Ok(s) => Some((s, Sni::new(&sni?))),
                Err(e) => {
                    tracing::debug!(sni = ?sni, error = %e, "TLS handshake failed");
                    None
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .ok()
            .flatten()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix seconds as RFC 3339 (UTC).
pub fn fmt_time(unix: i64) -> String {
    let t = if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn fmt_system_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_pair_and_reads_its_info() {
        let (c, k) = self_signed(&["a.test", "b.test"]);
        let l = load_pem(c.as_bytes(), k.as_bytes()).unwrap();
        assert_eq!(l.info.names, vec!["a.test", "b.test"]);
        assert!(l.info.not_after > l.info.not_before);
        assert!(!l.info.serial.is_empty());
    }

    #[test]
    fn refuses_garbage_truncation_and_mismatch_without_panicking() {
        let (c, k) = self_signed(&["a.test"]);
        let (_, other_key) = self_signed(&["a.test"]);
        assert!(matches!(
            load_pem(b"", k.as_bytes()),
            Err(TlsError::NoCertificate)
        ));
        assert!(load_pem(b"\x00\xffgarbage", k.as_bytes()).is_err());
        assert!(load_pem(&c.as_bytes()[..c.len() / 2], k.as_bytes()).is_err());
        assert!(matches!(load_pem(c.as_bytes(), b""), Err(TlsError::NoKey)));
        assert!(load_pem(c.as_bytes(), &k.as_bytes()[..k.len() / 2]).is_err());
        assert!(matches!(
            load_pem(c.as_bytes(), other_key.as_bytes()),
            Err(TlsError::KeyMismatch)
        ));
        // A PEM block whose base64 decodes to junk DER.
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(load_pem(junk.as_bytes(), k.as_bytes()).is_err());
    }

    #[test]
    fn lookup_prefers_exact_then_longest_wildcard() {
        let store = CertStore::default();
        let (c, k) = self_signed(&["x"]);
        let cert = load_pem(c.as_bytes(), k.as_bytes()).unwrap();
        let (c2, k2) = self_signed(&["y"]);
        let cert2 = load_pem(c2.as_bytes(), k2.as_bytes()).unwrap();
        let (c3, k3) = self_signed(&["z"]);
        let cert3 = load_pem(c3.as_bytes(), k3.as_bytes()).unwrap();
        store.set_files(vec![
            (HostPattern::parse("*.example.com").unwrap(), cert.clone()),
            (
                HostPattern::parse("*.a.example.com").unwrap(),
                cert2.clone(),
            ),
        ]);
        store.set_acme("exact.a.example.com", cert3.clone());
        let is = |name: &str, c: &LoadedCert| {
            store
                .lookup(name)
                .is_some_and(|got| Arc::ptr_eq(&got, &c.key))
        };
        assert!(is("EXACT.a.example.com.", &cert3));
        assert!(is("b.a.example.com", &cert2));
        assert!(is("b.example.com", &cert));
        assert!(store.lookup("example.com").is_none());
        assert!(store.lookup("other.test").is_none());
        store.remove_acme("exact.a.example.com");
        assert!(is("exact.a.example.com", &cert2));
    }

    #[test]
    fn expiry_gauge_follows_the_store() {
        let g = prometheus::GaugeVec::new(prometheus::Opts::new("exp", "h"), &["domain"]).unwrap();
        let store = CertStore::default();
        store.export_expiry(g.clone());
        let (c, k) = self_signed(&["a.test"]);
        let cert = load_pem(c.as_bytes(), k.as_bytes()).unwrap();
        store.set_acme("a.test", cert.clone());
        assert_eq!(
            g.with_label_values(&["a.test"]).get(),
            cert.info.not_after as f64
        );
        store.remove_acme("a.test");
        assert_eq!(
            prometheus::core::Collector::collect(&g)[0]
                .get_metric()
                .len(),
            0
        );
    }

    #[test]
    fn sni_matches_host_ignoring_case_and_port() {
        // The proxy's check: the Host normalized, then compared.
        fn matches(s: &Sni, raw_host: &str) -> bool {
            let mut buf = [0u8; MAX_HOST_LEN + 2];
            host::normalize(raw_host, &mut buf).is_some_and(|h| s.matches_normalized(h))
        }
        let s = Sni::new("App.test");
        assert!(matches(&s, "App.Test:8443"));
        assert!(matches(&s, "app.test."));
        assert!(s.matches_normalized("app.test"));
        assert!(!s.matches_normalized("App.test"));
        assert!(!matches(&s, "other.test"));
        assert!(!matches(&s, ""));
        // A server name that is no host name matches nothing.
        assert!(!matches(&Sni::new("bad name"), "bad name"));
    }

    #[test]
    fn challenge_cert_carries_the_acme_identifier() {
        let ck = challenge_cert("app.test", &[7u8; 32]).unwrap();
        let der = ck.end_entity_cert().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&[7u8; 32]));
    }
}
