//! How many TLS handshakes per second does a server complete? A load client
//! for `benches/tls_compare.sh`: CONNS concurrent loops, each opening a new
//! TCP connection, doing a handshake, sending one `GET /` with
//! `Connection: close` and reading the answer to its end.
//!
//! By default session resumption is off, so every connection pays for a full
//! handshake (ECDHE and the certificate signature). With `--resume` each loop
//! is a client with its own session store (rustls' in-memory cache) that
//! offers a ticket the server sent on its previous connection: a TLS 1.3
//! resumption (PSK with ECDHE, no certificate) wherever the server accepts it.
//! (One store shared by all loops would not do: rustls keeps at most 8 TLS
//! 1.3 tickets per server name, so more than 8 loops find it empty at times
//! and fall back to full handshakes, whatever the server.) `resumed` counts
//! the handshakes that were resumptions.
//!
//! Usage: tls_handshake ADDR SNI CA_PEM SECONDS [CONNS] [--resume]
//! Prints: `handshakes=N seconds=S per_second=R errors=E resumed=M`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let resume = args.iter().any(|a| a == "--resume");
    args.retain(|a| a != "--resume");
    if args.len() < 5 {
        eprintln!("usage: tls_handshake ADDR SNI CA_PEM SECONDS [CONNS] [--resume]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is host:port");
    let sni = ServerName::try_from(args[2].clone()).expect("SNI is a name");
    let seconds: u64 = args[4].parse().expect("SECONDS is a number");
    let conns: usize = args
        .get(5)
        .map_or(16, |c| c.parse().expect("CONNS is a number"));

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args[3]).expect("CA_PEM readable") {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // With --resume: a config (and so a session store) per loop.
    let connector = |resume: bool| {
        let mut c = config.clone();
        if resume {
            c.resumption = rustls::client::Resumption::in_memory_sessions(32);
        }
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (connector, sni, done, errors, resumed) = (
                connector(resume),
                sni.clone(),
                done.clone(),
                errors.clone(),
                resumed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let req = format!(
                    "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    sni.to_str()
                );
                let mut buf = Vec::with_capacity(1024);
                while Instant::now() < deadline {
                    let ok = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                        tcp.set_nodelay(true).ok()?;
                        let mut tls = connector.connect(sni.clone(), tcp).await.ok()?;
                        if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                        tls.write_all(req.as_bytes()).await.ok()?;
                        buf.clear();
                        tls.read_to_end(&mut buf).await.ok();
                        buf.starts_with(b"HTTP/1.1 200").then_some(())
                    }
                    .await;
                    match ok {
                        Some(()) => done.fetch_add(1, Ordering::Relaxed),
                        None => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "handshakes={n} seconds={secs:.1} per_second={:.0} errors={} resumed={}",
        n as f64 / secs,
        errors.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed)
    );
}
