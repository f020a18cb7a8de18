//! `switchyard demo`: the proxy plus two built-in origins on loopback.
//!
//! The origins answer every path with their name (`blue` or `green`) and
//! `/health` with 200, so a first look needs nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves a minimal origin that answers `name\n` until the task is dropped.
pub async fn serve_origin(listener: TcpListener, name: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{name}\n")))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Starts both origins on ephemeral loopback ports.
pub async fn start_origins() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let blue = TcpListener::bind("127.0.0.1:0").await?;
    let green = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = (blue.local_addr()?, green.local_addr()?);
    tokio::spawn(serve_origin(blue, "blue"));
    tokio::spawn(serve_origin(green, "green"));
    Ok(addrs)
}

/// The demo's config: one route, `demo.local`, to blue:100 / green:0.
pub fn demo_config(
    http: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    socket: &std::path::Path,
) -> String {
    format!(
        r#"[server]
http = "{http}"
shutdown_grace = "2s"

[admin]
socket = "{socket}"

[[routes]]
host = "demo.local"
pool = "app"

[pools.app]
version_header = true
pin_header = "X-Switchyard-Version"

[pools.app.versions.blue]
weight = 100
backends = ["{blue}"]

[pools.app.versions.green]
weight = 0
backends = ["{green}"]
"#,
        socket = socket.display()
    )
}

/// What to try, printed at start.
pub fn instructions(http: SocketAddr, socket: &std::path::Path, exe: &str) -> String {
    let s = socket.display();
    format!(
        "switchyard demo: proxy on http://{http}, origins blue and green on loopback.\n\
         Try, in another shell:\n\
         \x20 curl -s -H 'Host: demo.local' http://{http}/                        # blue\n\
         \x20 curl -s -H 'Host: demo.local' -H 'X-Switchyard-Version: green' http://{http}/   # smoke-test green\n\
         \x20 {exe} ctl -s {s} state\n\
         \x20 {exe} ctl -s {s} weights app blue=90 green=10                # canary 10%\n\
         \x20 {exe} ctl -s {s} switch app green                              # all to green\n\
         \x20 {exe} ctl -s {s} switch app blue                               # roll back\n\
         \x20 {exe} ctl -s {s} events\n\
         Stop with Ctrl-C.\n"
    )
}
