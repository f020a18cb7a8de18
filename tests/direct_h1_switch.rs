//! `SWITCHYARD_DIRECT_H1=0` (proxy.rs `DIRECT_H1`) sends bodiless GETs
//! through hyper's client instead of h1's direct exchange.
//!
//! The two paths are told apart by a backend whose response head is 70 KiB:
//! over h1's 64 KiB limit (502), within hyper's (200); see
//! tests/h1_differential.rs for that difference.
//!
//! A test binary of its own: the variable is set in this process's
//! environment for the proxy it starts, and no other test may see it.

mod support;

use support::{Client, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request with a 70 KiB head and closes the connection.
async fn big_head_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut reply = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    reply.resize(reply.len() + 70 * 1024, b'a');
    reply.extend_from_slice(b"\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
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
    let addr = big_head_backend().await;
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

    // Default: the direct exchange, which refuses the head.
    std::env::remove_var("SWITCHYARD_DIRECT_H1");
    let p = Proxy::start(&config).await;
    let a = Client::new(p.http).get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 502, "{a:?}");
    drop(p);

    // Switched off: hyper's client, which takes it.
    std::env::set_var("SWITCHYARD_DIRECT_H1", "0");
    let p = Proxy::start(&config).await;
    let a = Client::new(p.http).get("app.test", "/").await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.status);
    assert_eq!(a.body, "ok\n");
    assert_eq!(a.headers["x-big"].len(), 70 * 1024);
}
