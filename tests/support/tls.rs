//! Test support for TLS: certificates made with rcgen, a small TLS client
//! that reports the serial it was served, curl over HTTPS, and a switchyard
//! started with extra environment variables.
//!
//! Include with `#[path = "support/tls.rs"] mod tls_support;` next to `mod support;`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::support::{Proxy, DEADLINE};

/// A test CA and what it signs.
pub struct TestCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A P-256 server certificate for `names` (DNS names or IP literals):
    /// (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What one HTTPS request got.
#[derive(Debug)]
pub struct TlsAnswer {
    pub status: StatusCode,
    pub body: String,
    /// Serial of the leaf the server presented (hex, colon-separated).
    pub serial: String,
    pub alpn: Option<Vec<u8>>,
}

fn client_config(root_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS handshake with `sni`, verified against `root_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    root_pem: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connector = tokio_rustls::TlsConnector::from(client_config(root_pem, alpn));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// One HTTP/1.1 GET over a fresh TLS connection.
pub async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    host: &str,
    path: &str,
    root_pem: &str,
) -> Result<TlsAnswer, String> {
    let stream = tls_connect(addr, sni, root_pem, &[b"http/1.1"]).await?;
    let (_, conn) = stream.get_ref();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    let serial = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).unwrap();
            x.raw_serial_as_string()
        })
        .unwrap_or_default();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, tx.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(TlsAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        serial,
        alpn,
    })
}

/// `curl --cacert ROOT --resolve NAME:PORT:127.0.0.1 https://NAME:PORT/PATH`
/// with `--http2` or `--http1.1`: (HTTP version curl used, body).
pub fn curl_https(
    name: &str,
    port: u16,
    path: &str,
    root: &Path,
    http2: bool,
) -> Result<(String, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Ok((version.to_string(), body.to_string()))
}

/// Starts `switchyard run` on `config` (written to `dir/switchyard.toml`;
/// listeners on `127.0.0.1:0`, read back from its ready file) with extra
/// environment variables and switchyard's debug logs.
pub async fn start_switchyard(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Proxy {
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info,switchyard=debug"));
    Proxy::start_env(dir, config, &env).await
}
