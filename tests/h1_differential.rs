//! Differential test of the two backend paths: the same backend byte
//! streams through h1's direct exchange (`h1::encode_head`,
//! `RawConn::exchange`, the `RawBody`, `take_idle` and `is_reusable`, as
//! proxy.rs and upstream.rs use them) and through hyper's client
//! (`hyper::client::conn::http1`, as upstream.rs uses it), comparing what a
//! client of the proxy would get: the status, the fields after the proxy's
//! hop-by-hop pass (`proxy::strip_hop_by_hop`, on both sides), the body
//! bytes or a broken body, and whether the connection carries a next
//! request.
//!
//! ```text
//! fake backend (127.0.0.1:0): read the request head, write the case's bytes
//!   (in the case's writes), then answer a second request with "second"
//! h1:    exchange -> body to its end -> take_idle + is_reusable -> 2nd exchange
//! hyper: send_request -> body to its end -> ready() -> 2nd send_request
//! ```
//!
//! Every case states the expected outcome, so that agreeing wrongly fails
//! too. Where hyper's client differs on purpose, the case says what hyper
//! does and why h1's behaviour is the one kept.
//!
//! No sleeps: the backend's bytes decide everything; waits are bounded by
//! a generous deadline only so that a hang fails instead of blocking.

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use switchyard::proxy::strip_hop_by_hop;
use switchyard::upstream::h1::{self, RawConn};
use switchyard::upstream::UpBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Only so that a hang fails the test rather than blocking it.
const DEADLINE: Duration = Duration::from_secs(30);

/// The backend's answer to a second request on the same connection.
const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";

/// Whether the connection carried a second request afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Not offered for reuse (the proxy closes it).
    No,
    /// Offered, and the next request got the backend's next response.
    Yes,
    /// Offered, but the next request failed or got something else: a
    /// broken pooled connection. No case expects this.
    Broken,
}

/// What a client of the proxy gets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// No response head: the proxy answers 502.
    NoResponse,
    Response {
        status: u16,
        /// After `strip_hop_by_hop`, in order.
        headers: Vec<(String, String)>,
        /// `None`: the body broke off (the client sees a truncated body).
        body: Option<Vec<u8>>,
        reuse: Reuse,
    },
}

fn ok(status: u16, headers: &[(&str, &str)], body: &[u8], reuse: Reuse) -> Seen {
    Seen::Response {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Some(body.to_vec()),
        reuse,
    }
}

fn broken_body(status: u16, headers: &[(&str, &str)]) -> Seen {
    Seen::Response {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: None,
        reuse: Reuse::No,
    }
}

struct Case {
    name: &'static str,
    method: Method,
    /// What the backend writes after the request head, one write each.
    writes: Vec<Vec<u8>>,
    /// Whether the backend closes the connection after its writes.
    close: bool,
    /// What a client gets through h1 (and through hyper, unless `hyper`).
    expect: Seen,
    /// What a client gets through hyper's client where that deliberately
    /// differs (the reason is in a comment at the case).
    hyper: Option<Seen>,
}

fn case(name: &'static str, writes: &[&[u8]], expect: Seen) -> Case {
    Case {
        name,
        method: Method::GET,
        writes: writes.iter().map(|w| w.to_vec()).collect(),
        close: false,
        expect,
        hyper: None,
    }
}

impl Case {
    fn head(mut self) -> Case {
        self.method = Method::HEAD;
        self
    }
    fn closing(mut self) -> Case {
        self.close = true;
        self
    }
    fn hyper(mut self, seen: Seen) -> Case {
        self.hyper = Some(seen);
        self
    }
}

/// `bytes` in writes of `n` bytes each.
fn pieces(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    bytes.chunks(n).collect()
}

/// Reads one request head (the requests here have no body). `None` at the
/// end of the stream.
async fn read_head(s: &mut TcpStream) -> Option<()> {
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    Some(())
}

/// A backend for one connection: reads a request head, writes `writes`,
/// then closes (`close`) or answers a second request with [`SECOND`].
async fn backend(writes: Vec<Vec<u8>>, close: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        if read_head(&mut s).await.is_none() {
            return;
        }
        for w in &writes {
            if s.write_all(w).await.is_err() {
                return;
            }
            // Lets the client read between writes when it is waiting.
            tokio::task::yield_now().await;
        }
        if close {
            return;
        }
        if read_head(&mut s).await.is_some() {
            let _ = s.write_all(SECOND).await;
        }
    });
    addr
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("app.test"));
    h
}

fn normalised(mut headers: HeaderMap) -> Vec<(String, String)> {
    strip_hop_by_hop(&mut headers);
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Reads a body to its end: the data, or `None` if it broke off.
async fn read_body<B>(body: &mut B) -> Option<Vec<u8>>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        // Trailers are not data; both paths leave them out of what the
        // client gets (the proxy strips the Trailer field that would
        // announce them, so hyper's server would not send them either).
        if let Ok(d) = frame.ok()?.into_data() {
            data.extend_from_slice(&d);
        }
    }
    Some(data)
}

async fn via_h1(method: &Method, addr: SocketAddr) -> Seen {
    let io = TcpStream::connect(addr).await.unwrap();
    io.set_nodelay(true).unwrap();
    let head = h1::encode_head(method, "/", &request_headers(), &[]);
    // The fields as lines (the direct server's form), read as a map here;
    // a head the proxy must pass over itself comes as a map already.
    let Ok(resp) = RawConn::new(io)
        .exchange_until(&head, method, None, true)
        .await
    else {
        return Seen::NoResponse;
    };
    let (mut parts, mut body) = resp.into_parts();
    if let Some(lines) = body.take_fields() {
        assert!(parts.headers.is_empty());
        match lines.into_map() {
            Ok(headers) => parts.headers = headers,
            Err(_) => return Seen::NoResponse,
        }
    }
    let data = read_body(&mut body).await;
    let reuse = match (&data, body.take_idle()) {
        // The pool's checks: take_idle at the body's end (proxy.rs
        // ProxyBody), is_reusable at checkout (upstream.rs checkout_raw).
        (Some(_), Some(conn)) if conn.is_reusable() => {
            let head = h1::encode_head(&Method::GET, "/", &request_headers(), &[]);
            match conn.exchange(&head, &Method::GET).await {
                Ok(resp) if resp.status() == 200 => {
                    let mut body = resp.into_body();
                    if read_body(&mut body).await.as_deref() == Some(b"second") {
                        Reuse::Yes
                    } else {
                        Reuse::Broken
                    }
                }
                _ => Reuse::Broken,
            }
        }
        _ => Reuse::No,
    };
    Seen::Response {
        status: parts.status.as_u16(),
        headers: normalised(parts.headers),
        body: data,
        reuse,
    }
}

async fn via_hyper(method: &Method, addr: SocketAddr) -> Seen {
    let io = TcpStream::connect(addr).await.unwrap();
    io.set_nodelay(true).unwrap();
    // As upstream.rs's Backend::checkout builds its connections.
    let (mut sender, conn) = http1::Builder::new()
        .handshake::<_, UpBody>(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = |m: &Method| {
        let mut r = Request::new(UpBody::Empty);
        *r.method_mut() = m.clone();
        *r.uri_mut() = "/".parse().unwrap();
        *r.headers_mut() = request_headers();
        r
    };
    let Ok(resp) = sender.send_request(req(method)).await else {
        return Seen::NoResponse;
    };
    let (parts, mut body) = resp.into_parts();
    let data = read_body(&mut body).await;
    // The pool's checks: is_closed at checkin, ready() at checkout.
    let reuse = if data.is_some() && !sender.is_closed() && sender.ready().await.is_ok() {
        match sender.send_request(req(&Method::GET)).await {
            Ok(resp) if resp.status() == 200 => {
                let mut body = resp.into_body();
                if read_body(&mut body).await.as_deref() == Some(b"second") {
                    Reuse::Yes
                } else {
                    Reuse::Broken
                }
            }
            _ => Reuse::Broken,
        }
    } else {
        Reuse::No
    };
    Seen::Response {
        status: parts.status.as_u16(),
        headers: normalised(parts.headers),
        body: data,
        reuse,
    }
}

/// Runs every case through both paths; returns the mismatches, described.
async fn run(cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let addr = backend(c.writes.clone(), c.close).await;
        let h1 = tokio::time::timeout(DEADLINE, via_h1(&c.method, addr))
            .await
            .unwrap_or_else(|_| panic!("{}: h1 hung", c.name));
        let addr = backend(c.writes.clone(), c.close).await;
        let hyper = tokio::time::timeout(DEADLINE, via_hyper(&c.method, addr))
            .await
            .unwrap_or_else(|_| panic!("{}: hyper hung", c.name));
        if h1 != c.expect {
            failures.push(format!(
                "{}: h1 gave\n    {h1:?}\n  expected\n    {:?}",
                c.name, c.expect
            ));
        }
        let want = c.hyper.as_ref().unwrap_or(&c.expect);
        if hyper != *want {
            failures.push(format!(
                "{}: hyper gave\n    {hyper:?}\n  expected\n    {want:?}",
                c.name
            ));
        }
    }
    failures
}

async fn check(cases: Vec<Case>) {
    let failures = run(cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

use Reuse::{No, Yes};

const CL5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello";
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
3;x=y\r\nabc\r\nA; q=\"a b\"\r\n0123456789\r\n0;last\r\nX-T: 1\r\nX-U: 2\r\n\r\n";

#[tokio::test]
async fn framing_by_length_chunks_and_close() {
    check(vec![
        case(
            "content-length",
            &[CL5],
            ok(200, &[("content-length", "5"), ("x-a", "1")], b"hello", Yes),
        ),
        case(
            "content-length, 3-byte writes",
            &pieces(CL5, 3),
            ok(200, &[("content-length", "5"), ("x-a", "1")], b"hello", Yes),
        ),
        case(
            "chunked with extensions and trailers",
            &[CHUNKED],
            ok(200, &[("x-a", "1")], b"abc0123456789", Yes),
        ),
        case(
            "chunked, one byte per write",
            &pieces(CHUNKED, 1),
            ok(200, &[("x-a", "1")], b"abc0123456789", Yes),
        ),
        case(
            "chunked, 7-byte writes",
            &pieces(CHUNKED, 7),
            ok(200, &[("x-a", "1")], b"abc0123456789", Yes),
        ),
        case(
            "close-delimited",
            &[b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil ", b"eof"],
            ok(200, &[("x-a", "1")], b"until eof", No),
        )
        .closing(),
        case(
            "transfer-encoding not ending in chunked: to the close",
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes"],
            ok(200, &[], b"raw bytes", No),
        )
        .closing(),
        case(
            "content-length body cut short by the close",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            broken_body(200, &[("content-length", "10")]),
        )
        .closing(),
        case(
            "connection: close",
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            ok(200, &[("content-length", "2")], b"ok", No),
        ),
        case(
            "hop-by-hop and connection-named fields",
            &[
                b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-End: e\r\n\
Content-Length: 2\r\n\r\nok",
            ],
            ok(200, &[("x-end", "e"), ("content-length", "2")], b"ok", Yes),
        ),
    ])
    .await;
}

#[tokio::test]
async fn responses_without_a_body() {
    check(vec![
        case(
            "HEAD with content-length",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
            ok(200, &[("content-length", "99")], b"", Yes),
        )
        .head(),
        case(
            "HEAD with a bogus body",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"],
            ok(200, &[("content-length", "5")], b"", No),
        )
        .head(),
        case(
            "204",
            &[b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"],
            ok(204, &[("x-a", "1")], b"", Yes),
        ),
        case(
            "204 with a bogus body",
            &[b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"],
            ok(204, &[("content-length", "5")], b"", No),
        ),
        case(
            "304",
            &[b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 1234\r\n\r\n"],
            ok(
                304,
                &[("etag", "\"x\""), ("content-length", "1234")],
                b"",
                Yes,
            ),
        ),
        case(
            "304 with a bogus chunked body",
            &[b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
            ok(304, &[], b"", No),
        ),
    ])
    .await;
}

#[tokio::test]
async fn interim_responses_before_the_final_one() {
    let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
    let fin = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    check(vec![
        case(
            "100 continue",
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            ok(200, &[("content-length", "2")], b"ok", Yes),
        ),
        case(
            "103 twice, in separate writes",
            &[early, early, fin],
            ok(200, &[("content-length", "2")], b"ok", Yes),
        ),
        case(
            "103 split across writes",
            &pieces(&[&early[..], &fin[..]].concat(), 5),
            ok(200, &[("content-length", "2")], b"ok", Yes),
        ),
        case("103, then the close", &[early], Seen::NoResponse).closing(),
    ])
    .await;
}

#[tokio::test]
async fn ambiguous_lengths() {
    check(vec![
        // RFC 9112 section 6.3 item 3: Transfer-Encoding overrides
        // Content-Length, the Content-Length is not forwarded, and the
        // connection must not be reused (the message may be an attempt at
        // response splitting). hyper's client frames by chunked too but
        // keeps the connection: h1 is the stricter.
        case(
            "transfer-encoding and content-length",
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n",
            ],
            ok(200, &[], b"hello", No),
        )
        .hyper(ok(200, &[], b"hello", Yes)),
        case(
            "duplicate content-length, equal",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"],
            ok(
                200,
                &[("content-length", "5"), ("content-length", "5")],
                b"hello",
                Yes,
            ),
        ),
        case(
            "content-length list, equal",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"],
            ok(200, &[("content-length", "5, 5")], b"hello", Yes),
        ),
        case(
            "duplicate content-length, differing",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"],
            Seen::NoResponse,
        ),
        case(
            "content-length with a non-breaking space",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\xc2\xa0\r\n\r\nhello"],
            Seen::NoResponse,
        ),
        case(
            "content-length +5",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"],
            Seen::NoResponse,
        ),
        // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty
        // framing. Both refuse.
        case(
            "HTTP/1.0 with transfer-encoding",
            &[b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
            Seen::NoResponse,
        ),
        // RFC 9112 section 9.3: an HTTP/1.0 keep-alive is honoured only if
        // the recipient wishes to. hyper's client does; h1 does not (an
        // HTTP/1.0 backend gets a connection per request): safer, and such
        // backends are rare.
        case(
            "HTTP/1.0 with connection: keep-alive",
            &[b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"],
            ok(200, &[("content-length", "2")], b"ok", No),
        )
        .hyper(ok(200, &[("content-length", "2")], b"ok", Yes)),
    ])
    .await;
}

#[tokio::test]
async fn malformed_chunks() {
    let chunked = |body: &[u8]| {
        [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            body,
        ]
        .concat()
    };
    let cases: &[(&'static str, &[u8])] = &[
        ("chunk size not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("chunk size then junk", b"5 x\r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size -1", b"-1\r\nx\r\n0\r\n\r\n"),
        (
            "chunk size overflowing 64 bits",
            b"fffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
        ("empty chunk size", b"\r\nhello\r\n0\r\n\r\n"),
        ("bare LF after the chunk size", b"5\nhello\r\n0\r\n\r\n"),
        (
            "bare CR in a chunk extension",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        ),
        ("no CRLF after the chunk data", b"5\r\nhelloX\r\n0\r\n\r\n"),
        ("trailer that is not a field", b"0\r\nnot a field\r\n\r\n"),
        (
            "obs-fold in the trailers",
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",
        ),
    ];
    check(
        cases
            .iter()
            .map(|&(name, body)| Case {
                name,
                method: Method::GET,
                writes: vec![chunked(body)],
                close: false,
                expect: broken_body(200, &[]),
                hyper: None,
            })
            .collect(),
    )
    .await;
}

#[tokio::test]
async fn malformed_and_oversize_heads() {
    // 70 KiB of one field: over h1's 64 KiB head limit, under hyper's
    // (its read buffer's 400 KiB). A limit of h1's own; nginx refuses far
    // less (4 or 8 KiB by default).
    let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    big.resize(big.len() + 70 * 1024, b'a');
    big.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
    let big_value = "a".repeat(70 * 1024);
    // 1 MiB: over both.
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.resize(huge.len() + 1024 * 1024, b'a');
    huge.extend_from_slice(b"\r\n\r\n");
    check(vec![
        case("70 KiB head", &pieces(&big, 16 * 1024), Seen::NoResponse).hyper(ok(
            200,
            &[("x-big", big_value.as_str()), ("content-length", "2")],
            b"ok",
            Yes,
        )),
        case("1 MiB head", &pieces(&huge, 64 * 1024), Seen::NoResponse),
        case(
            "obs-fold",
            &[b"HTTP/1.1 200 OK\r\nX-A: 1\r\n continued\r\nContent-Length: 0\r\n\r\n"],
            Seen::NoResponse,
        ),
        case(
            "space before the colon",
            &[b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"],
            Seen::NoResponse,
        ),
        case(
            "not HTTP",
            &[b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
            Seen::NoResponse,
        ),
        case(
            "head cut short by the close",
            &[b"HTTP/1.1 200 OK\r\nContent-Le"],
            Seen::NoResponse,
        )
        .closing(),
    ])
    .await;
}

#[tokio::test]
async fn bytes_after_the_response_end_reuse() {
    check(vec![
        case(
            "bytes after a content-length body",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"],
            ok(200, &[("content-length", "2")], b"ok", No),
        ),
        case(
            "bytes after a chunked body",
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nEXTRA"],
            ok(200, &[], b"ok", No),
        ),
        case(
            "an unasked second response right behind",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            ok(200, &[("content-length", "2")], b"ok", No),
        ),
    ])
    .await;
}
