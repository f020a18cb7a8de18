//! `[cluster]`: one ACME account and one order per domain for the whole
//! fleet, the certificates shared through etcd.
//!
//! ```text
//! etcd, under `<prefix>acme/`:
//!   <directory>/account               the fleet's account credentials (JSON)
//!   <directory>/certs/<domain>        {"chain": PEM, "key": PEM}: what every instance serves
//!   <directory>/locks/<domain>        the instance ordering <domain>, under a lease
//!   challenges/http-01/<token>        key authorization, under the order lock's lease
//!   challenges/tls-alpn-01/<domain>   SHA-256 of the key authorization (hex), same lease
//! ```
//!
//! The manager ([`super::Manager`]) of every instance looks at each domain
//! when it is due, as without a cluster; with a cluster it reads the
//! fleet's certificate first and orders only under the domain's lock (a key
//! created only if absent, under a lease kept alive while the order runs,
//! revoked after). The lock's holder publishes its challenges in etcd, so
//! the instance the CA's validator reaches answers whichever it is; it
//! waits (at most [`APPLIED_WAIT`]) until every other instance reports it
//! applied them before telling the CA to validate. The issued certificate
//! is written to etcd; every instance's watch installs it ([`Fleet`] is the
//! cluster service's [`KeyWatcher`]) and caches it in its own `acme.storage`
//! (0600), which serves when the instance starts with etcd down.
//!
//! Everything read from etcd is hostile input: a certificate is served only
//! when it parses, its key matches, and it names the domain; a challenge
//! only when it has the form of one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::{renew_at, slug, unix_now, unix_to_system, Storage};
use crate::cluster::{Cluster, KeyWatcher, RPC_TIMEOUT};
use crate::tls::{self, LoadedCert, TlsState};

/// The longest wait for the other instances to apply a published challenge.
pub const APPLIED_WAIT: Duration = Duration::from_secs(3);
/// The longest key authorization accepted from etcd (a token and a
/// thumbprint: about 90 bytes).
const MAX_KEY_AUTHORIZATION: usize = 1024;
const HTTP01: &str = "challenges/http-01/";
const ALPN01: &str = "challenges/tls-alpn-01/";

/// The value of `certs/<domain>`.
#[derive(Serialize, Deserialize)]
struct StoredCert {
    chain: String,
    key: String,
}

/// A certificate of the fleet, parsed, with its PEM text.
pub(super) struct FleetCert {
    pub cert: LoadedCert,
    pub chain: String,
    pub key: String,
}

/// What `certs/<domain>` holds.
pub(super) struct FleetRead {
    /// Its mod revision (0: absent), what a replacing write compares with.
    pub revision: i64,
    /// `None`: absent; `Err`: there, but not usable for the domain.
    pub cert: Option<Result<FleetCert, String>>,
}

/// The fleet's ACME keys, for one ACME directory.
pub(super) struct Fleet {
    pub cluster: Arc<Cluster>,
    tls: Arc<TlsState>,
    storage: Arc<Storage>,
    renew_before: Option<Duration>,
    /// `<directory slug>/`, under `<prefix>acme/`.
    base: String,
}

/// The lock on one domain's order; released (its lease revoked: the lock
/// key and the challenges go with it) by [`OrderLock::release`] or, failing
/// that, when dropped.
pub(super) struct OrderLock {
    lease: i64,
    client: Client,
    keeper: Option<JoinHandle<()>>,
}

impl OrderLock {
    pub async fn release(mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let _ = timeout(RPC_TIMEOUT, self.client.lease_revoke(self.lease)).await;
    }
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
            // Not released (an error or a shutdown mid-order): revoke in the
            // background; if that fails too the lease expires by itself.
            let (mut client, lease) = (self.client.clone(), self.lease);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = timeout(RPC_TIMEOUT, client.lease_revoke(lease)).await;
                });
            }
        }
    }
}

/// One etcd call under [`RPC_TIMEOUT`], tried three times (the client keeps
/// routing some calls to a member that died: see shared/ETCD.md).
async fn call<T, F, Fut>(mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match timeout(RPC_TIMEOUT, f()).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("etcd did not answer within {RPC_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// Parses `certs/<domain>`: usable only when the chain and key parse, match,
/// and the leaf names `domain`.
fn parse_cert(domain: &str, value: &[u8]) -> Result<FleetCert, String> {
    let s: StoredCert =
        serde_json::from_slice(value).map_err(|e| format!("not a stored certificate: {e}"))?;
    let cert = tls::load_pem(s.chain.as_bytes(), s.key.as_bytes()).map_err(|e| e.to_string())?;
    if !cert
        .info
        .names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(domain))
    {
        return Err(format!(
            "the certificate is for {:?}, not {domain}",
            cert.info.names
        ));
    }
    Ok(FleetCert {
        cert,
        chain: s.chain,
        key: s.key,
    })
}

/// A key authorization from etcd for `token`: `<token>.<thumbprint>`, both
/// base64url, bounded.
fn valid_key_authorization(token: &str, value: &[u8]) -> Option<String> {
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if value.len() > MAX_KEY_AUTHORIZATION || !b64url(token) {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (t, thumb) = text.split_once('.')?;
    (t == token && b64url(thumb)).then(|| text.to_string())
}

/// 64 hex digits -> 32 bytes.
fn parse_digest(value: &[u8]) -> Option<[u8; 32]> {
    // from_str_radix alone would take a sign ("+1").
    if value.len() != 64 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in value.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === impl Fleet ===

impl Fleet {
    pub fn new(
        cluster: Arc<Cluster>,
        tls: Arc<TlsState>,
        storage: Arc<Storage>,
        directory: &str,
        renew_before: Option<Duration>,
    ) -> Fleet {
        Fleet {
            cluster,
            tls,
            storage,
            renew_before,
            base: format!("{}/", slug(directory)),
        }
    }

    /// A full etcd key from one relative to `<prefix>acme/`.
    fn key(&self, rel: &str) -> String {
        self.cluster.key(&format!("acme/{rel}"))
    }

    fn cert_key(&self, domain: &str) -> String {
        self.key(&format!("{}certs/{domain}", self.base))
    }

    fn account_key(&self) -> String {
        self.key(&format!("{}account", self.base))
    }

    /// How long a waiting instance waits before looking again (a dead
    /// holder's lock goes with its lease in that time).
    pub fn retry_every(&self) -> Duration {
        self.cluster.config.lease_ttl
    }

    fn client(&self) -> Client {
        self.cluster.client()
    }

    /// The fleet's certificate for `domain`.
    pub async fn load_cert(&self, domain: &str) -> Result<FleetRead, String> {
        let key = self.cert_key(domain);
        let client = self.client();
        let resp = call(|| {
            let (mut c, k) = (client.clone(), key.clone());
            async move { c.get(k, None).await }
        })
        .await?;
        Ok(match resp.kvs().first() {
            None => FleetRead {
                revision: 0,
                cert: None,
            },
            Some(kv) => FleetRead {
                revision: kv.mod_revision(),
                cert: Some(parse_cert(domain, kv.value())),
            },
        })
    }

    /// Writes the fleet's certificate for `domain` if `certs/<domain>` is
    /// still at `revision` (0: absent). Returns whether it was written.
    pub async fn put_cert(
        &self,
        domain: &str,
        chain: &str,
        key_pem: &str,
        revision: Option<i64>,
    ) -> Result<bool, String> {
        let key = self.cert_key(domain);
        let value = serde_json::to_vec(&StoredCert {
            chain: chain.to_string(),
            key: key_pem.to_string(),
        })
        .map_err(|e| e.to_string())?;
        let when = match revision {
            Some(r) => vec![Compare::mod_revision(key.clone(), CompareOp::Equal, r)],
            None => vec![],
        };
        let client = self.client();
        let resp = call(|| {
            let txn = Txn::new().when(when.clone()).and_then(vec![TxnOp::put(
                key.clone(),
                value.clone(),
                None,
            )]);
            let mut c = client.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        Ok(resp.succeeded())
    }

    /// Takes the order lock of `domain` without waiting: `Ok(Err(holder))`
    /// when another instance holds it.
    pub async fn try_lock(&self, domain: &str) -> Result<Result<OrderLock, String>, String> {
        let mut client = self.client();
        let ttl = self.cluster.config.lease_ttl;
        let lease = call(|| {
            let mut c = client.clone();
            async move { c.lease_grant(ttl.as_secs().max(2) as i64, None).await }
        })
        .await?
        .id();
        let key = self.key(&format!("{}locks/{domain}", self.base));
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                self.cluster.name.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key.clone(), None)]);
        let resp = match timeout(RPC_TIMEOUT, client.txn(txn)).await {
            Ok(Ok(r)) => r,
            failed => {
                let _ = timeout(RPC_TIMEOUT, client.lease_revoke(lease)).await;
                return Err(match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("etcd did not answer within {RPC_TIMEOUT:?}"),
                });
            }
        };
        if !resp.succeeded() {
            let _ = timeout(RPC_TIMEOUT, client.lease_revoke(lease)).await;
            let holder = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
                        let mut s = String::from_utf8_lossy(kv.value()).into_owned();
                        s.truncate(64);
                        s
                    }),
                    _ => None,
                })
                .unwrap_or_else(|| "another instance".into());
            return Ok(Err(holder));
        }
        let keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl, domain.to_string()));
        Ok(Ok(OrderLock {
            lease,
            client,
            keeper: Some(keeper),
        }))
    }

    /// Publishes a pending HTTP-01 challenge under the lock's lease;
    /// returns the revision it was written at.
    pub async fn publish_http01(
        &self,
        lock: &OrderLock,
        token: &str,
        key_authorization: &str,
    ) -> Result<i64, String> {
        self.put_under(lock, format!("{HTTP01}{token}"), key_authorization.into())
            .await
    }

    /// Publishes a pending TLS-ALPN-01 challenge (the digest every instance
    /// builds its challenge certificate from).
    pub async fn publish_alpn01(
        &self,
        lock: &OrderLock,
        domain: &str,
        digest: &[u8],
    ) -> Result<i64, String> {
        self.put_under(lock, format!("{ALPN01}{domain}"), hex(digest))
            .await
    }

    async fn put_under(&self, lock: &OrderLock, rel: String, value: String) -> Result<i64, String> {
        let key = self.key(&rel);
        let client = self.client();
        let lease = lock.lease;
        let resp = call(|| {
            let (mut c, k, v) = (client.clone(), key.clone(), value.clone());
            async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Waits until every other instance reports it applied `revision`, at
    /// most [`APPLIED_WAIT`]; returns whether they all did.
    pub async fn wait_applied(&self, revision: i64) -> bool {
        let deadline = Instant::now() + APPLIED_WAIT;
        loop {
            if self.cluster.others_applied(revision) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The fleet's account credentials (raw JSON), if stored.
    pub async fn account(&self) -> Result<Option<Vec<u8>>, String> {
        let key = self.account_key();
        let client = self.client();
        let resp = call(|| {
            let (mut c, k) = (client.clone(), key.clone());
            async move { c.get(k, None).await }
        })
        .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Stores the fleet's account. `only_if_absent`: when another instance
    /// stored one first, returns it (`Ok(Some)`) and stores nothing.
    pub async fn put_account(
        &self,
        creds: &[u8],
        only_if_absent: bool,
    ) -> Result<Option<Vec<u8>>, String> {
        let key = self.account_key();
        let when = if only_if_absent {
            vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)]
        } else {
            vec![]
        };
        let client = self.client();
        let resp = call(|| {
            let txn = Txn::new()
                .when(when.clone())
                .and_then(vec![TxnOp::put(key.clone(), creds.to_vec(), None)])
                .or_else(vec![TxnOp::get(key.clone(), None)]);
            let mut c = client.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        if resp.succeeded() {
            return Ok(None);
        }
        Ok(resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        }))
    }

    /// Serves `c` for `domain` unless it is served already, and caches it
    /// on disk. Returns whether it changed what is served.
    pub fn install(&self, domain: &str, c: FleetCert) -> bool {
        let serving = self.tls.certs.acme_info(domain);
        let at = renew_at(
            c.cert.info.not_before,
            c.cert.info.not_after,
            self.renew_before,
        );
        self.tls
            .update_status(domain, |s| s.renew_at = Some(unix_to_system(at)));
        if serving
            .as_ref()
            .is_some_and(|i| i.serial == c.cert.info.serial)
        {
            return false;
        }
        tracing::info!(domain = %domain, serial = %c.cert.info.serial, not_after = %tls::fmt_time(c.cert.info.not_after), "certificate from the fleet (etcd) installed");
        let serial = c.cert.info.serial.clone();
        self.tls.certs.set_acme(domain, c.cert);
        self.cache(domain, serial, c.chain, c.key);
        true
    }

    /// Writes the served certificate to `acme.storage` off the runtime's
    /// workers; skipped when something newer is served by then.
    fn cache(&self, domain: &str, serial: String, chain: String, key: String) {
        let (tls, storage, domain) = (self.tls.clone(), self.storage.clone(), domain.to_string());
        let write = move || {
            let _g = storage.write_lock();
            let still = tls
                .certs
                .acme_info(&domain)
                .is_some_and(|i| i.serial == serial);
            if !still {
                return;
            }
            if let Err(e) = storage.save_cert_locked(&domain, &chain, &key) {
                tracing::warn!(domain = %domain, error = %e, "cannot cache the fleet's certificate on disk; it serves, but a restart with etcd down would not have it");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }

    /// A certificate key of the watch: installed when this instance wants
    /// the domain and the value is usable.
    fn on_cert(&self, domain: &str, value: &[u8]) {
        if !self.tls.wants_acme(domain) {
            return;
        }
        match parse_cert(domain, value) {
            Ok(c) => {
                let expired = c.cert.info.not_after <= unix_now();
                if expired && self.tls.certs.acme_info(domain).is_some() {
                    tracing::warn!(domain = %domain, "the fleet's certificate in etcd has expired; keeping the one served");
                    return;
                }
                self.install(domain, c);
            }
            Err(e) => {
                tracing::error!(domain = %domain, error = %e, "the fleet's certificate in etcd is unusable; keeping the one served (it is ordered again when due)");
            }
        }
    }

    /// The challenge certificate for a published digest, for a domain this
    /// instance wants (a flood of keys for other names costs nothing).
    fn alpn_cert(&self, domain: &str, value: &[u8]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if !self.tls.wants_acme(domain) {
            return None;
        }
        let Some(digest) = parse_digest(value) else {
            tracing::warn!(domain = %domain, "a TLS-ALPN-01 challenge in etcd is not a SHA-256 digest; ignored");
            return None;
        };
        match tls::challenge_cert(domain, &digest) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(domain = %domain, error = %e, "cannot make the fleet's TLS-ALPN-01 certificate");
                None
            }
        }
    }
}

impl KeyWatcher for Fleet {
    fn snapshot(&self, items: Vec<(String, Vec<u8>)>) {
        let mut http01 = HashMap::new();
        let mut alpn01 = HashMap::new();
        let certs = format!("{}certs/", self.base);
        for (key, value) in &items {
            if let Some(token) = key.strip_prefix(HTTP01) {
                if let Some(ka) = valid_key_authorization(token, value) {
                    http01.insert(token.to_string(), ka);
                }
            } else if let Some(domain) = key.strip_prefix(ALPN01) {
                if let Some(c) = self.alpn_cert(domain, value) {
                    alpn01.insert(domain.to_string(), c);
                }
            } else if let Some(domain) = key.strip_prefix(&certs) {
                self.on_cert(domain, value);
            }
        }
        self.tls.replace_fleet_challenges(http01, alpn01);
    }

    fn change(&self, key: &str, value: Option<&[u8]>) {
        if let Some(token) = key.strip_prefix(HTTP01) {
            let ka = value.and_then(|v| valid_key_authorization(token, v));
            if value.is_some() && ka.is_none() {
                tracing::warn!("an HTTP-01 challenge in etcd is malformed; ignored");
            }
            self.tls.set_fleet_http01(token, ka);
        } else if let Some(domain) = key.strip_prefix(ALPN01) {
            let cert = value.and_then(|v| self.alpn_cert(domain, v));
            self.tls.set_fleet_alpn01(domain, cert);
        } else if let Some(domain) = key
            .strip_prefix(&self.base)
            .and_then(|k| k.strip_prefix("certs/"))
        {
            // A deleted certificate keeps serving until its domain is
            // ordered again (or its route goes).
            if let Some(v) = value {
                self.on_cert(domain, v);
            }
        }
    }
}

/// Keeps an order lock's lease alive every third of its TTL until aborted.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, domain: String) {
    let every = ttl / 3;
    loop {
        if let Ok(Ok((mut keeper, mut stream))) =
            timeout(RPC_TIMEOUT, client.lease_keep_alive(lease)).await
        {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match timeout(every, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => {
                        tracing::warn!(domain = %domain, "the order lock's lease expired (etcd unreachable for its TTL); another instance may order this name too");
                        return;
                    }
                    _ => break,
                }
                tokio::time::sleep(every).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_authorizations_from_etcd_are_checked() {
        assert_eq!(
            valid_key_authorization("tok-_1", b"tok-_1.thumb_Print-2").as_deref(),
            Some("tok-_1.thumb_Print-2")
        );
        assert!(valid_key_authorization("tok", b"other.thumb").is_none());
        assert!(valid_key_authorization("tok", b"tok.").is_none());
        assert!(valid_key_authorization("tok", b"tok.th umb").is_none());
        assert!(valid_key_authorization("tok", b"tok.<script>").is_none());
        assert!(valid_key_authorization("tok", b"\xff\xfe").is_none());
        assert!(valid_key_authorization("", b".x").is_none());
        assert!(valid_key_authorization("t/../x", b"t/../x.y").is_none());
        let long = format!("tok.{}", "a".repeat(2000));
        assert!(valid_key_authorization("tok", long.as_bytes()).is_none());
    }

    #[test]
    fn digests_round_trip_and_garbage_is_refused() {
        let d: Vec<u8> = (0u8..32).collect();
        assert_eq!(parse_digest(hex(&d).as_bytes()).unwrap().to_vec(), d);
        assert!(parse_digest(b"00").is_none());
        assert!(parse_digest("zz".repeat(32).as_bytes()).is_none());
        assert!(parse_digest("é".repeat(32).as_bytes()).is_none());
        assert!(parse_digest("+1".repeat(32).as_bytes()).is_none());
    }

    #[test]
    fn stored_certificates_must_parse_match_and_name_the_domain() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["app.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let value = serde_json::to_vec(&StoredCert {
            chain: cert.pem(),
            key: key.serialize_pem(),
        })
        .unwrap();
        assert!(parse_cert("app.test", &value).is_ok());
        assert!(parse_cert("APP.test", &value).is_ok());
        let e = parse_cert("other.test", &value).err().unwrap();
        assert!(e.contains("not other.test"), "{e}");
        for garbage in [
            &b""[..],
            b"null",
            b"{\"chain\": 1}",
            b"{\"chain\": \"x\", \"key\": \"y\"}",
            b"\x00\xff",
        ] {
            assert!(parse_cert("app.test", garbage).is_err());
        }
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mismatched = serde_json::to_vec(&StoredCert {
            chain: cert.pem(),
            key: other.serialize_pem(),
        })
        .unwrap();
        assert!(parse_cert("app.test", &mismatched).is_err());
    }
}
