//! An origin for the rules and middleware tests (used with `mod origin;`):
//! it says which origin answered and what it saw, and serves bodies to
//! compress. Bound on 127.0.0.1:0, stopped when dropped.
//!
//! | path | answer |
//! |---|---|
//! | `/big` | [`BIG`] as `text/plain`, sized (with `Range`: a 206 of its first bytes) |
//! | `/small` | `tiny\n`, `text/plain` |
//! | `/gz` | [`BIG`] gzip-encoded by the origin itself (`Content-Encoding: gzip`) |
//! | `/image` | 20 000 bytes of `image/png` |
//! | `/stream` | `text/plain`, chunked: `first line\n` at once, the rest only after [`Origin::release`] |
//! | anything else | `NAME PATH?QUERY prefix=X-Forwarded-Prefix`, plus the request headers as `x-seen-*` response headers |

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// 20 000 bytes of compressible text.
pub fn big() -> String {
    let line = "switchyard streams this line through the compress middleware.\n";
    line.repeat(20_000 / line.len() + 1)[..20_000].to_string()
}

pub const BIG_LEN: usize = 20_000;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub struct Origin {
    pub name: &'static str,
    pub addr: SocketAddr,
    release: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(name: &'static str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let r = release.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(name, req, r.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin {
            name,
            addr,
            release,
            task,
        }
    }

    /// Lets one held `/stream` answer finish.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn text(status: StatusCode, body: impl Into<Bytes>, ct: &str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
    r
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
    release: Arc<tokio::sync::Semaphore>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/big" if req.headers().contains_key(http::header::RANGE) => {
            let mut r = text(
                StatusCode::PARTIAL_CONTENT,
                big()[..10].to_string(),
                "text/plain",
            );
            r.headers_mut().insert(
                http::header::CONTENT_RANGE,
                format!("bytes 0-9/{BIG_LEN}").parse().unwrap(),
            );
            r
        }
        "/big" => text(StatusCode::OK, big(), "text/plain; charset=utf-8"),
        "/small" => text(StatusCode::OK, "tiny\n", "text/plain"),
        "/gz" => {
            let mut r = text(StatusCode::OK, gzip(big().as_bytes()), "text/plain");
            r.headers_mut()
                .insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
            r
        }
        "/image" => text(StatusCode::OK, vec![7u8; 20_000], "image/png"),
        "/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("first line\n")))).await;
                if let Ok(p) = release.acquire().await {
                    p.forget();
                    for i in 0..50 {
                        let line = format!("line {i} after the release\n");
                        let _ = tx.send(Ok(Frame::data(Bytes::from(line)))).await;
                    }
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(Recv(rx))));
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
            r
        }
        _ => echo(name, &req),
    };
    Ok(resp)
}

/// `NAME PATH?QUERY prefix=...`, request headers as `x-seen-NAME`.
fn echo(name: &str, req: &Request<Incoming>) -> Response<Body> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let prefix = req
        .headers()
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let mut r = text(
        StatusCode::OK,
        format!("{name} {pq} prefix={prefix}\n"),
        "text/plain",
    );
    for (k, v) in req.headers() {
        if let Ok(n) = http::HeaderName::try_from(format!("x-seen-{}", k.as_str())) {
            r.headers_mut().append(n, v.clone());
        }
    }
    r
}

struct Recv<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for Recv<T> {
    type Item = T;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.get_mut().0.poll_recv(cx)
    }
}

/// Runs curl with `args`; returns (status line's code, headers, body).
/// Fails the test when curl is missing (scripts/setup.sh installs it).
pub fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = std::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "30", "-D"])
        .arg(&head)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl is needed (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(head).unwrap_or_default();
    // The last head (after any 100 Continue).
    let last = head
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or("")
        .to_string();
    let code = last
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, last.to_ascii_lowercase(), out.stdout)
}

/// A response header's value from [`curl`]'s lowercased head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}
