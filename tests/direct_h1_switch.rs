//! `SWITCHYARD_DIRECT_H1=0` (proxy.rs `DIRECT_H1`) sends bodiless GETs
//! through hyper's client instead of h1's direct exchange.
//!
//! The two paths are told apart by a backend whose response head has 110
//! fields: within h1's limit of 128 (200), over hyper's client default of
//! 100 (502). (Both paths refuse heads over 64 KiB, so size cannot tell
//! them apart.)
//!
//! A test binary of its own: the variable is set in this process's
//! environment for the proxy it starts, and no other test may see it.

mod support;

use support::{raw, status_of, Client, Proxy, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request with a head of 110 fields and closes the
/// connection.
async fn many_fields_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..108 {
        reply.extend_from_slice(format!("X-F{i}: {i}\r\n").as_bytes());
    }
    reply.extend_from_slice(b"Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&reply).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_h1_0_sends_bodiless_requests_through_hyper() {
    let addr = many_fields_backend().await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"
[[routes]]
host = "app.test"
pool = "app"
[pools.app.versions.v1]
weight = 1
backends = ["{addr}"]
"#
    );

    // Default: the direct exchange, which takes the head.
    std::env::remove_var("SWITCHYARD_DIRECT_H1");
    let p = Proxy::start(&config).await;
    // Read raw: hyper's client in this test would refuse 110 fields too.
    let r = raw(
        p.http,
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        DEADLINE,
    )
    .await;
    let text = String::from_utf8_lossy(&r).to_lowercase();
    assert_eq!(status_of(&r), 200, "{text}");
    assert!(text.contains("\r\nx-f107: 107\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    drop(p);

    // Switched off: hyper's client, which refuses it.
    std::env::set_var("SWITCHYARD_DIRECT_H1", "0");
    let p = Proxy::start(&config).await;
    let a = Client::new(p.http).get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 502, "{:?}", a.status);
}
