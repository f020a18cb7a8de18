//! HTTPS with certificate files: SNI selection (exact and wildcard), h2 and
//! HTTP/1.1 through ALPN, reload re-reading files, unknown names refused in
//! the handshake, 421 for a Host other than the SNI, the 308 redirect on
//! plain HTTP, and WebSocket over TLS.

mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{Client, Proxy, Upstream, DEADLINE};
use tls_support::{curl_https, start_switchyard, tls_connect, tls_get, TestCa};

struct Site {
    _upstream: Upstream,
    ca: TestCa,
    proxy: Proxy,
    https: u16,
}

impl Site {
    fn addr(&self) -> SocketAddr {
        self.proxy.https.expect("an https listener")
    }
    fn dir(&self) -> &Path {
        self.proxy.dir.path()
    }
}

fn write_leaf(ca: &TestCa, dir: &Path, stem: &str, names: &[&str]) {
    let (cert, key) = ca.leaf(names);
    std::fs::write(dir.join(format!("{stem}.pem")), cert).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key).unwrap();
}

async fn site() -> Site {
    let upstream = Upstream::start("blue").await;
    let ca = TestCa::new("switchyard test CA");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    write_leaf(&ca, dir.path(), "app", &["app.test", "open.test"]);
    write_leaf(&ca, dir.path(), "wild", &["*.wild.test"]);
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let cfg = format!(
        r#"[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
shutdown_grace = "1s"

[admin]
socket = "{d}/admin.sock"
state = "{d}/state.json"

[[routes]]
host = "app.test"
pool = "app"
tls = {{ cert = "{d}/app.pem", key = "{d}/app.key" }}

[[routes]]
host = "*.wild.test"
pool = "app"
tls = {{ cert = "{d}/wild.pem", key = "{d}/wild.key" }}

[[routes]]
host = "open.test"
pool = "app"
tls = {{ cert = "{d}/app.pem", key = "{d}/app.key" }}
redirect_https = false

[[routes]]
host = "broken.test"
pool = "app"
tls = {{ cert = "{d}/missing.pem", key = "{d}/missing.key" }}

[[routes]]
host = "plain.test"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["{}"]
"#,
        upstream.addr
    );
    let proxy = start_switchyard(dir, &cfg, &[]).await;
    Site {
        _upstream: upstream,
        ca,
        https: proxy.https.expect("an https listener").port(),
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_serve_h2_and_h1_by_sni_and_reload_rereads_them() {
    let s = site().await;
    let ca_file = s.dir().join("ca.pem");
    let (v, body) = curl_https("app.test", s.https, "/", &ca_file, true).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("2", "blue\n"));
    let (v, body) = curl_https("app.test", s.https, "/", &ca_file, false).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("1.1", "blue\n"));
    // The wildcard route's certificate for a name under it.
    let (v, body) = curl_https("a.wild.test", s.https, "/", &ca_file, true).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("2", "blue\n"));

    // A route whose files are missing: reported at start, its handshakes fail.
    let log = s.proxy.log();
    assert!(
        log.contains("broken.test") && log.contains("missing.pem"),
        "{log}"
    );
    assert!(
        tls_connect(s.addr(), "broken.test", &s.ca.cert_pem, &[b"http/1.1"])
            .await
            .is_err()
    );

    let st = s.proxy.state().await;
    let first = st["certificates"]["app.test"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(st["certificates"]["app.test"]["source"], "files");
    assert_eq!(st["listeners"]["https"], format!("127.0.0.1:{}", s.https));
    let a = tls_get(s.addr(), "app.test", "app.test", "/", &s.ca.cert_pem)
        .await
        .unwrap();
    assert_eq!(a.serial, first);
    assert_eq!(a.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // New files + reload: the next handshake gets the new certificate.
    write_leaf(&s.ca, s.dir(), "app", &["app.test", "open.test"]);
    let out = s.proxy.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = tls_get(s.addr(), "app.test", "app.test", "/", &s.ca.cert_pem)
        .await
        .unwrap();
    assert_ne!(a.serial, first);
    let second = a.serial;

    // Garbage files + reload: reported, and the certificate loaded before stays.
    std::fs::write(s.dir().join("app.pem"), b"-----BEGIN CERTIFICATE-----\nxx").unwrap();
    let out = s.proxy.ctl(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("app.test") && text.contains("is kept"),
        "{text}"
    );
    let a = tls_get(s.addr(), "app.test", "app.test", "/", &s.ca.cert_pem)
        .await
        .unwrap();
    assert_eq!((a.status.as_u16(), a.serial), (200, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_sni_fails_the_handshake_cleanly() {
    let s = site().await;
    let e = tls_connect(s.addr(), "other.test", &s.ca.cert_pem, &[b"http/1.1"])
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("alert"), "{e}");
    // An IP address sends no SNI.
    assert!(
        tls_connect(s.addr(), "127.0.0.1", &s.ca.cert_pem, &[b"http/1.1"])
            .await
            .is_err()
    );
    // A plain-HTTP request on the TLS port is not answered as HTTP.
    let raw = support::raw(
        s.addr(),
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!String::from_utf8_lossy(&raw).contains("200"));
    // And the listener is fine afterwards.
    let a = tls_get(s.addr(), "app.test", "app.test", "/", &s.ca.cert_pem)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_other_than_the_sni_gets_421() {
    let s = site().await;
    let a = tls_get(s.addr(), "app.test", "open.test", "/", &s.ca.cert_pem)
        .await
        .unwrap();
    assert_eq!(a.status, 421, "{}", a.body);
    let a = tls_get(
        s.addr(),
        "app.test",
        &format!("APP.test:{}", s.https),
        "/",
        &s.ca.cert_pem,
    )
    .await
    .unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_with_308_except_the_acme_challenge_path() {
    let s = site().await;
    // The https listener is on :0: redirects name the port it was bound on.
    let mut c = Client::new(s.proxy.http);
    let r = c.get("app.test", "/a/b?x=1").await.unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://app.test:{}/a/b?x=1", s.https)
    );
    // An ACME token switchyard does not hold goes to the backend, not to HTTPS.
    let r = c
        .get("app.test", "/.well-known/acme-challenge/some-token")
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "blue\n"));
    let r = c.get("open.test", "/").await.unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "blue\n"));
    let r = c.get("plain.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_over_tls() {
    let s = site().await;
    let mut tls = tls_connect(s.addr(), "app.test", &s.ca.cert_pem, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, tls.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n == 1, "closed before the response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"ping"[..], b"second frame"] {
        tls.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(DEADLINE, tls.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}
