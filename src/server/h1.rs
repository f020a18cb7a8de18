//! The direct HTTP/1.1 server path: plain-HTTP client connections whose
//! requests are *simple* are served here, without hyper's server.
//!
//! hyper's h1 server keeps a read and a write buffer per connection (about
//! 23 KiB once grown), builds its dispatcher state and a boxed service
//! future per request and registers a header timer per request. Here one
//! loop per connection reads, parses the head with httparse, runs
//! [`crate::proxy::handle`] and writes the response itself: the head into a
//! short-lived `Vec`, written with the first body chunk in one `writev`.
//! Between requests the connection holds no buffer at all (reads go to the
//! stack first; only what came is kept) and no request-loop state (the loop
//! is boxed and freed when the connection goes idle; a small future waits
//! for the next bytes), and its one timer is the connection's [`Watchdog`].
//!
//! ```text
//! idle wait (readable | watchdog | shutdown) ─> boxed request loop:
//!   read (stack, then the bytes kept) ─> httparse ─> simple?
//!     yes ─> Activity::request ─> proxy::handle ─> head + body frames ─> keep-alive?
//!              nothing buffered ─> back to the idle wait; a pipelined head ─> loop
//!     no  ─> HandOver: the socket and every byte read so far, for hyper
//! ```
//!
//! Simple: HTTP/1.0 or 1.1, no body (no Content-Length but `0`, no
//! Transfer-Encoding), no `Upgrade` or `Connection: upgrade`, no `Expect`,
//! not CONNECT, at most 100 fields, a target hyper would take and a head
//! within the limit hyper is given. Anything else (a body, a WebSocket, a
//! parse error, an oversized head, an HTTP/2 preface) is handed to hyper
//! with the bytes already read, so that hyper sees the connection from that
//! request on and gives its usual answers (400, 431, ...).
//!
//! The response follows hyper's server: the status line (HTTP/1.0 to an
//! HTTP/1.0 client), the fields, `connection: close` when the connection
//! ends after it (`keep-alive` to an HTTP/1.0 client keeping it), a
//! `content-length` when the body's size is known, else `transfer-encoding:
//! chunked` (HTTP/1.1) or the end of the connection (HTTP/1.0), a `date`
//! field unless there is one (cached per second); no body after HEAD or
//! with 204 and 304. The body streams frame by frame: the next frame is
//! taken only once the previous one is written. A body that fails, or ends
//! short of its length, drops the connection (as hyper does); so does a
//! client that closes its side while a request is in flight (hyper's
//! default without half-close).

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::listener::conn::{Activity, Conn, Enlisted, Expired, Open, Roster, Watchdog};
use crate::proxy::{self, Peer, Proxy, ProxyBody, RequestBody};
use crate::upstream::h1::{name_is, RawFields};

/// Whether plain-HTTP client connections take this path (the default). A
/// benchmark and diagnostic switch, not a setting:
/// `SWITCHYARD_DIRECT_SERVER=0` in the environment, read once, serves every
/// connection with hyper's server instead (benches/compare.sh's
/// `switchyard-hyperserver` target).
pub static DIRECT_SERVER: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SWITCHYARD_DIRECT_SERVER").is_none_or(|v| v != "0"));

/// Most header fields in a simple request (hyper's server default; it
/// answers more with 431).
const MAX_HEADERS: usize = 100;
/// Heads with at most this many fields (nearly all) are indexed on the stack.
const FEW_HEADERS: usize = 24;
/// Longest request target of a simple request (hyper answers a longer one
/// with 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;
/// The stack buffer a read goes to while the connection holds no buffer.
const STACK_READ: usize = 8 * 1024;
/// Growth step of a buffer holding a partial head.
const READ_STEP: usize = 4 * 1024;

// ---------------------------------------------------------------------------
// Request heads.

/// A simple request, ready for [`proxy::handle`].
pub struct Head {
    pub req: Request<RequestBody>,
    /// Whether the client wants the connection kept (RFC 9112 section 9.3).
    pub keep_alive: bool,
}

/// What the bytes at the start of a buffer are.
// One per request, returned on the stack: boxing the request would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Not a simple request: hyper's.
    Other,
    /// A simple request, its head taken out of the buffer.
    Simple(Head),
}

/// Parses the head at the start of `buf` (at most `max_head` bytes, the
/// bound hyper's server is given); a simple request's head is split off the
/// buffer, anything else leaves the buffer as it was. Public for the fuzz
/// targets and tests.
pub fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if path.len() > MAX_URI_LEN {
        return Parsed::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    let http10 = version == 0;
    let (mut close, mut keep) = (false, false);
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let count = req.headers.len();
    // Where each field sits: on the stack for the usual few (a zeroed
    // array of MAX_HEADERS cost a 3.2 KB memset per request).
    let mut few = [(0usize, 0usize, 0usize, 0usize); FEW_HEADERS];
    let mut many = Vec::new();
    let fields: &mut [(usize, usize, usize, usize)] = if count <= FEW_HEADERS {
        &mut few[..count]
    } else {
        many.resize(count, (0, 0, 0, 0));
        &mut many
    };
    for (h, slot) in req.headers.iter().zip(fields.iter_mut()) {
        let name = h.name.as_bytes();
        let simple = match name.len() {
            6 => !name_is(name, b"expect"),
            7 => !name_is(name, b"upgrade"),
            10 if name_is(name, b"connection") => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Other;
                    }
                }
                true
            }
            14 if name_is(name, b"content-length") => h.value == b"0",
            17 => !name_is(name, b"transfer-encoding"),
            _ => true,
        };
        if !simple {
            return Parsed::Other;
        }
        let (n, nl) = at(name);
        let (v, vl) = at(h.value);
        *slot = (n, nl, v, vl);
    }
    let (p, pl) = at(path.as_bytes());
    let keep_alive = !close && (!http10 || keep);

    let head = buf.split_to(len).freeze();
    let Some(req) = build(&head, method, (p, pl), fields, http10) else {
        // Not something `http` takes (hyper answers it): the buffer as it was.
        let mut back = BytesMut::with_capacity(head.len() + buf.len());
        back.extend_from_slice(&head);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::Other;
    };
    Parsed::Simple(Head { req, keep_alive })
}

/// The request, its target and field values sharing the head's bytes.
fn build(
    head: &Bytes,
    method: Method,
    (p, pl): (usize, usize),
    fields: &[(usize, usize, usize, usize)],
    http10: bool,
) -> Option<Request<RequestBody>> {
    let uri = Uri::from_maybe_shared(head.slice(p..p + pl)).ok()?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for &(n, nl, v, vl) in fields {
        let name = HeaderName::from_bytes(head.get(n..n + nl)?).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = headers;
    Some(req)
}

// ---------------------------------------------------------------------------
// Response heads.

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    None,
    /// This many bytes left.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0, size unknown).
    Close,
}

/// What the head of a response says about its connection and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// Whether the connection carries another request after this one.
    pub keep_alive: bool,
}

/// Encodes a response head for a client that sent an HTTP/1.0 request
/// (`http10`) or a HEAD (`head`), `keep_alive` what the request and the
/// server's state allow and `size` the body's exact size when known.
/// Transfer-Encoding and Content-Length fields of the response are
/// replaced by the framing chosen here (a HEAD's Content-Length is kept:
/// it describes the GET). `raw`: the fields as a backend sent them, in the
/// place of `parts.headers` (then empty).
pub fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    raw: Option<&RawFields>,
    http10: bool,
    head: bool,
    keep_alive: bool,
    size: Option<u64>,
) -> Encoded {
    let status = parts.status;
    let mut keep_alive = keep_alive;
    let bodiless_status = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    push_status_line(out, parts, http10);
    let framing = if bodiless_status || head {
        Framing::None
    } else if let Some(n) = size {
        Framing::Length(n)
    } else if http10 {
        keep_alive = false;
        Framing::Close
    } else {
        Framing::Chunked
    };
    let length = |out: &mut Vec<u8>, n: u64| {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(n, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
    };
    let (mut said_close, mut said_keep, mut wrote_len, mut wrote_date) =
        (false, false, false, false);
    if let Some(raw) = raw {
        wrote_len = push_raw_fields(out, raw, framing, bodiless_status);
        wrote_date = raw.has_date();
    }
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            // Where the response had it (as hyper writes it), once.
            match framing {
                _ if wrote_len || bodiless_status => {}
                Framing::None => {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    wrote_len = true;
                }
                Framing::Length(n) => {
                    length(out, n);
                    wrote_len = true;
                }
                Framing::Chunked | Framing::Close => {}
            }
            continue;
        } else if *name == header::TRANSFER_ENCODING {
            continue;
        } else if *name == header::CONNECTION {
            for token in value
                .as_bytes()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
            {
                if token.eq_ignore_ascii_case(b"close") {
                    said_close = true;
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    said_keep = true;
                }
            }
        } else if *name == header::DATE {
            wrote_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive && !http10 && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive && http10 && !said_keep {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !wrote_len {
        match (framing, size) {
            (Framing::None, Some(n @ 1..)) if head => length(out, n),
            (Framing::Length(n), _) => length(out, n),
            (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            _ => {}
        }
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Encoded {
        framing,
        keep_alive,
    }
}

/// A backend's fields as it sent them ([`RawFields`]: no hop-by-hop fields,
/// Connection among them, and at most one Content-Length), with the framing
/// in the place of the Content-Length line, as [`encode_head`] writes a map's:
/// the backend's value for a HEAD (it describes the GET), the body's length,
/// or nothing. Whether a Content-Length went out.
fn push_raw_fields(
    out: &mut Vec<u8>,
    raw: &RawFields,
    framing: Framing,
    bodiless_status: bool,
) -> bool {
    let lines = raw.lines();
    let Some(at) = raw.length_line() else {
        out.extend_from_slice(lines);
        return false;
    };
    out.extend_from_slice(&lines[..at.start]);
    let wrote = match (framing, raw.content_length()) {
        _ if bodiless_status => false,
        (Framing::None, Some(v)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
            true
        }
        (Framing::Length(n), _) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
            true
        }
        _ => false,
    };
    out.extend_from_slice(&lines[at.end..]);
    wrote
}

/// `HTTP/1.x CODE REASON`: the backend's reason phrase when hyper's client
/// kept one, else the code's canonical one.
fn push_status_line(out: &mut Vec<u8>, parts: &http::response::Parts, http10: bool) {
    let status = parts.status;
    if http10 {
        out.extend_from_slice(b"HTTP/1.0 ");
    } else if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
    }
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// The `date` value of the current second, formatted once per second
    /// per thread (as hyper caches its own).
    static DATE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an IMF-fixdate (RFC 9110 section 5.6.7).
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let text = DATE.with(|d| {
        let (at, text) = d.get();
        if at == secs {
            return text;
        }
        let mut text = [b' '; 29];
        let mut w = io::Cursor::new(&mut text[..]);
        let _ = io::Write::write_fmt(&mut w, format_args!("{}", httpdate::HttpDate::from(now)));
        d.set((secs, text));
        text
    });
    out.extend_from_slice(&text);
}

// ---------------------------------------------------------------------------
// Writing.

/// A chunk-size line: up to 16 hex digits and CRLF.
struct SizeLine {
    buf: [u8; 18],
    at: u8,
}

impl SizeLine {
    const EMPTY: SizeLine = SizeLine {
        buf: [0; 18],
        at: 18,
    };

    fn new(n: usize) -> SizeLine {
        let mut l = SizeLine::EMPTY;
        l.at = 16;
        l.buf[16] = b'\r';
        l.buf[17] = b'\n';
        let mut n = n;
        loop {
            l.at -= 1;
            l.buf[l.at as usize] = b"0123456789ABCDEF"[n & 15];
            n >>= 4;
            if n == 0 {
                return l;
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.at as usize..]
    }
}

/// What is still to be written, in order: the head, a chunk-size line, a
/// body chunk, a tail (a chunk's CRLF, the last chunk).
struct Out {
    head: Vec<u8>,
    head_at: usize,
    size: SizeLine,
    data: Bytes,
    tail: &'static [u8],
}

impl Out {
    fn is_empty(&self) -> bool {
        self.head_at == self.head.len()
            && self.size.bytes().is_empty()
            && self.data.is_empty()
            && self.tail.is_empty()
    }

    /// Writes until everything went out (`Ready(Ok)`), the socket is full
    /// (`Pending`) or fails.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let slices = [
                IoSlice::new(&self.head[self.head_at..]),
                IoSlice::new(self.size.bytes()),
                IoSlice::new(&self.data),
                IoSlice::new(self.tail),
            ];
            let mut n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let step = n.min(self.head.len() - self.head_at);
            self.head_at += step;
            n -= step;
            let step = n.min(self.size.bytes().len());
            self.size.at += step as u8;
            n -= step;
            let step = n.min(self.data.len());
            self.data.advance(step);
            n -= step;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
        if !self.head.is_empty() {
            // Written: the head's allocation goes now, not with the response.
            self.head = Vec::new();
            self.head_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

/// How a response ended on the wire.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Complete; the connection may carry another request.
    Done,
    /// Complete as framed, but the connection must close (a body longer
    /// than its length).
    Close,
    /// Cut: the connection is dropped.
    Abort,
}

/// One response going out.
struct Writer {
    body: ProxyBody,
    framing: Framing,
    out: Out,
    /// The body has ended (or there is none); what is left is in `out`.
    body_done: bool,
    /// Ends the request (in the connection's [`Activity`]) once written.
    open: Option<Open>,
    end: End,
}

impl Writer {
    fn new(head: Vec<u8>, body: ProxyBody, framing: Framing, open: Open) -> Writer {
        let body_done = framing == Framing::None || framing == Framing::Length(0);
        Writer {
            body,
            framing,
            out: Out {
                head,
                head_at: 0,
                size: SizeLine::EMPTY,
                data: Bytes::new(),
                tail: b"",
            },
            body_done,
            open: Some(open),
            end: End::Done,
        }
    }

    /// Takes body frames and writes them, one at a time (the next frame
    /// only once the last went out); the head goes with the first frame
    /// when it is ready, alone otherwise.
    fn poll<W: AsyncWrite + Unpin>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            if !self.body_done && self.out.data.is_empty() && self.out.tail.is_empty() {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending if self.out.is_empty() => return Poll::Pending,
                    Poll::Pending => {}
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent (no `Trailer` field survives
                        // the proxy's hop-by-hop pass).
                        if let Ok(data) = frame.into_data() {
                            self.queue(data);
                        }
                    }
                    Poll::Ready(None) => self.finish(),
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "response body failed: dropping the client connection");
                        return Poll::Ready(End::Abort);
                    }
                }
            }
            if !self.out.is_empty() {
                if let Err(e) = ready!(self.out.poll_write(io, cx)) {
                    tracing::debug!(error = %e, "writing to the client failed");
                    return Poll::Ready(End::Abort);
                }
            } else if self.body_done {
                self.open = None;
                return Poll::Ready(std::mem::replace(&mut self.end, End::Abort));
            }
        }
    }

    /// Frames one data chunk.
    fn queue(&mut self, mut data: Bytes) {
        let ends = self.body.is_end_stream();
        match &mut self.framing {
            Framing::Length(left) => {
                if data.len() as u64 > *left {
                    // More than it said: what it said goes, then the
                    // connection ends.
                    data.truncate(*left as usize);
                    self.end = End::Close;
                    self.body_done = true;
                }
                *left -= data.len() as u64;
                if *left == 0 {
                    self.body_done = true;
                } else if ends {
                    // Short of its length: the client must not take it
                    // for whole.
                    self.end = End::Abort;
                    self.body_done = true;
                }
                self.out.data = data;
            }
            Framing::Chunked => {
                if !data.is_empty() {
                    self.out.size = SizeLine::new(data.len());
                    self.out.data = data;
                    self.out.tail = if ends { b"\r\n0\r\n\r\n" } else { b"\r\n" };
                } else if ends {
                    self.out.tail = b"0\r\n\r\n";
                }
                self.body_done = ends;
            }
            Framing::Close => {
                self.out.data = data;
                self.body_done = ends;
            }
            Framing::None => self.body_done = true,
        }
    }

    /// The body ended.
    fn finish(&mut self) {
        self.body_done = true;
        match self.framing {
            Framing::Chunked => self.out.tail = b"0\r\n\r\n",
            Framing::Length(left) if left > 0 => self.end = End::Abort,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Reading.

/// Reads what the socket has into `buf`; `Ok(0)` at its end. A connection
/// holding no buffer reads onto the stack and keeps only the bytes that
/// came (a request of a few hundred bytes costs an allocation of that
/// size, nothing while idle); a partial head grows the buffer by steps.
fn poll_read<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == buf.len() && buf.is_empty() {
        let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
        let mut rb = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
        buf.extend_from_slice(rb.filled());
        return Poll::Ready(Ok(rb.filled().len()));
    }
    if buf.capacity() - buf.len() < READ_STEP / 4 {
        buf.reserve(READ_STEP.max(buf.len()));
    }
    std::pin::pin!(tokio::io::AsyncReadExt::read_buf(io, buf)).poll(cx)
}

// ---------------------------------------------------------------------------
// The connection.

/// A connection hyper takes on from here: the socket, the bytes read and
/// not served (they come first), its watchdog, and whether requests were
/// served on it already (then it is HTTP/1.1 for good, no HTTP/2 preface).
pub struct HandOver {
    pub io: Prefixed<Conn<TcpStream>>,
    pub watchdog: Watchdog,
    pub served: bool,
}

/// Serves simple requests of one plain-HTTP connection until it ends, or
/// until a request is not simple: then the connection is `hand_over`'s
/// (hyper's) from there. Its clocks are the watchdog's.
pub fn serve<H, F>(
    px: Arc<Proxy>,
    io: TcpStream,
    peer: Peer,
    watchdog: Watchdog,
    max_head: usize,
    roster: &Arc<Roster>,
    hand_over: H,
) -> impl Future<Output = ()> + Send
where
    H: FnOnce(HandOver) -> F + Send,
    F: Future<Output = ()> + Send,
{
    let activity = watchdog.activity().clone();
    let listed = roster.enlist(&activity);
    let c = Client {
        io: Conn::new(io, activity.clone()),
        buf: BytesMut::new(),
        draining: activity.is_draining(),
        watchdog,
        _listed: listed,
    };
    // The state moves into the loop's future once (not kept twice, as the
    // arguments of an async fn are next to what is moved out of them).
    serve_loop(c, px, peer, activity, max_head, hand_over)
}

/// Alternates between the request loop and waiting while idle. The request
/// loop's state (a request in flight, its response being written: ~2 KiB)
/// is boxed and freed each time the connection goes idle with nothing
/// buffered, so an idle keep-alive connection holds only its [`Client`]
/// and this small future (nginx frees its buffers while idle the same way).
/// An async block, not an async fn: the state holds the client once, not
/// once as passed and once as moved in (rust-lang/rust#62958); and the
/// hand-over's future is boxed, not beside the loop's.
#[allow(clippy::manual_async_fn)] // an async fn would hold its arguments twice (see above)
fn serve_loop<H, F>(
    mut c: Client,
    px: Arc<Proxy>,
    peer: Peer,
    activity: Arc<Activity>,
    max_head: usize,
    hand_over: H,
) -> impl Future<Output = ()> + Send
where
    H: FnOnce(HandOver) -> F + Send,
    F: Future<Output = ()> + Send,
{
    async move {
        // The first bytes are there already (the accept waited for them).
        let mut served = false;
        // The hand-over is awaited after the loop: awaited in a match arm,
        // it would keep the matched `Ran` (200 bytes) in this future's
        // state, idle connections included.
        let h = loop {
            let turn = proxy::boxed_in_place(|| run(c, &px, peer, &activity, max_head, served));
            match turn.await {
                Ran::Idle(back) => c = back,
                Ran::HandOver(h) => break h,
                Ran::Closed => return,
            }
            served = true;
            if !c.idle().await {
                return;
            }
        };
        Box::pin(hand_over(h)).await
    }
}

/// How a turn of the request loop ended.
enum Ran {
    /// A response went out, the connection is kept and nothing is buffered.
    Idle(Client),
    /// Not simple: the connection is hyper's from this request on.
    HandOver(HandOver),
    Closed,
}

async fn run(
    mut c: Client,
    px: &Arc<Proxy>,
    peer: Peer,
    activity: &Arc<Activity>,
    max_head: usize,
    mut served: bool,
) -> Ran {
    loop {
        let Head { req, keep_alive } = match c.next_head(max_head).await {
            Next::Head(h) => h,
            Next::Other => {
                return Ran::HandOver(HandOver {
                    io: Prefixed::new(c.buf.freeze(), c.io),
                    watchdog: c.watchdog,
                    served,
                })
            }
            Next::Closed => return Ran::Closed,
        };
        served = true;
        let open = activity.request(false);
        // Read by a plain function: a request this future borrowed would
        // keep its space here while the proxy's future holds it too.
        let (req, http10, is_head) = version_and_head(req);
        // In this future, not boxed: this future is boxed already, and one
        // allocation per request is cheaper than two.
        // This writer takes a backend's fields as they came (`Peer::raw_fields`).
        let peer = Peer {
            raw_fields: true,
            ..peer
        };
        let handling = std::pin::pin!(proxy::handle(px.clone(), peer, None, req));
        let Some(resp) = c.answer(handling).await else {
            return Ran::Closed;
        };
        c.note_shutdown();
        let keep = keep_alive && !c.draining;
        let (writer, keep) = respond_with(resp, open, http10, is_head, keep);
        let Some(end) = c.respond(writer).await else {
            return Ran::Closed;
        };
        c.note_shutdown();
        if end != End::Done || !keep || c.draining {
            if end != End::Abort {
                let _ = c.io.shutdown().await;
            }
            return Ran::Closed;
        }
        if c.buf.is_empty() {
            // Idle from here: no buffer held, and this future goes too.
            c.buf = BytesMut::new();
            return Ran::Idle(c);
        }
        // A pipelined request is buffered already: served in this turn.
    }
}

/// Whether the request is HTTP/1.0, and whether it is a HEAD.
fn version_and_head<B>(req: Request<B>) -> (Request<B>, bool, bool) {
    let http10 = req.version() == Version::HTTP_10;
    let is_head = req.method() == Method::HEAD;
    (req, http10, is_head)
}

/// The response's head encoded and its body to stream (no body after HEAD,
/// 204 or 304); whether the connection is kept after it.
fn respond_with(
    resp: Response<ProxyBody>,
    open: Open,
    http10: bool,
    is_head: bool,
    mut keep: bool,
) -> (Writer, bool) {
    let (mut parts, mut body) = resp.into_parts();
    if parts.status.is_informational() {
        // hyper's server refuses a 1xx as the response: 500, closed.
        parts = Response::new(()).into_parts().0;
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        body = ProxyBody::empty();
        keep = false;
    }
    let size = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let raw = body.take_raw_fields();
    let mut out = Vec::with_capacity(
        128 + parts.headers.len() * 48 + raw.as_ref().map_or(0, |r| r.lines().len()),
    );
    let enc = encode_head(&mut out, &parts, raw.as_ref(), http10, is_head, keep, size);
    if enc.framing == Framing::None {
        // Dropped unread: a backend body hands its connection back.
        body = ProxyBody::empty();
    }
    (Writer::new(out, body, enc.framing, open), enc.keep_alive)
}

/// What a connection waiting on its clocks learns.
enum Watch {
    Expired(Expired),
    /// Shutdown began (only when it was not `draining` already).
    Draining,
}

/// The watchdog's verdict, or the start of shutdown. The shutdown has no
/// waker of its own: [`Roster::close_all`] wakes the task through the
/// watchdog's, which is polled first, so a poll that sees no shutdown has
/// the task's waker registered where it will be woken.
fn watch(watchdog: &mut Watchdog, draining: bool) -> impl Future<Output = Watch> + '_ {
    poll_fn(move |cx| {
        if let Poll::Ready(e) = watchdog.poll_expired(cx) {
            return Poll::Ready(Watch::Expired(e));
        }
        if !draining && watchdog.activity().is_draining() {
            return Poll::Ready(Watch::Draining);
        }
        Poll::Pending
    })
}

/// What comes next on a connection.
#[allow(clippy::large_enum_variant)] // as `Parsed`
enum Next {
    Head(Head),
    /// Not simple: the connection is hyper's from this request on.
    Other,
    Closed,
}

/// One connection's state between its phases.
struct Client {
    io: Conn<TcpStream>,
    /// Bytes read and not yet served (pipelined requests, a partial head).
    buf: BytesMut,
    watchdog: Watchdog,
    /// Listed for shutdown: it marks the watchdog's Activity draining and
    /// wakes the task through the watchdog's waker (no waiter of its own).
    _listed: Enlisted,
    /// Shutdown began: the request in flight is finished, then the
    /// connection closes.
    draining: bool,
}

impl Client {
    /// Waits, between requests, until the client sends something (true) or
    /// a clock runs out (false). A shutdown marks the connection draining
    /// and returns true: the request loop then closes it.
    async fn idle(&mut self) -> bool {
        tokio::select! {
            biased;
            // An error shows again at the read, which closes the connection.
            _ = poll_fn(|cx| self.io.poll_readable(cx)) => true,
            w = watch(&mut self.watchdog, self.draining) => match w {
                Watch::Expired(e) => {
                    log_expired(e);
                    false
                }
                Watch::Draining => {
                    self.draining = true;
                    true
                }
            }
        }
    }

    /// The next request's head, read under the connection's clocks.
    async fn next_head(&mut self, max_head: usize) -> Next {
        loop {
            if !self.buf.is_empty() {
                match parse(&mut self.buf, max_head) {
                    Parsed::Simple(h) => return Next::Head(h),
                    Parsed::Other => return Next::Other,
                    Parsed::Partial => {}
                }
            }
            if self.draining {
                // Idle, or half a head: nothing in flight to finish.
                let _ = self.io.shutdown().await;
                return Next::Closed;
            }
            let (io, buf) = (&mut self.io, &mut self.buf);
            tokio::select! {
                biased;
                r = poll_fn(|cx| poll_read(io, buf, cx)) => match r {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {}
                },
                w = watch(&mut self.watchdog, self.draining) => match w {
                    Watch::Expired(e) => {
                        log_expired(e);
                        return Next::Closed;
                    }
                    Watch::Draining => self.draining = true,
                }
            }
        }
    }

    /// Whether shutdown began, for a connection with a request in flight:
    /// it finishes that request and closes, so it needs no wake-up for it.
    fn note_shutdown(&mut self) {
        if !self.draining && self.watchdog.activity().is_draining() {
            self.draining = true;
        }
    }

    /// The proxy's answer, watching the client meanwhile: `None` when the
    /// client closed its side or a clock ran out (the request is dropped).
    async fn answer<F>(&mut self, mut handle: Pin<&mut F>) -> Option<Response<ProxyBody>>
    where
        F: Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>>,
    {
        loop {
            let (io, buf) = (&mut self.io, &mut self.buf);
            let step = poll_fn(|cx| {
                if let Poll::Ready(Ok(r)) = handle.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                watch_eof(io, buf, cx).map(|()| None)
            });
            tokio::select! {
                biased;
                r = step => return r,
                e = self.watchdog.expired() => self.expired(e)?,
            }
        }
    }

    /// Writes the response out: `None` when a clock ran out.
    async fn respond(&mut self, mut writer: Writer) -> Option<End> {
        loop {
            let (io, buf) = (&mut self.io, &mut self.buf);
            let step = poll_fn(|cx| {
                if let Poll::Ready(end) = writer.poll(io, cx) {
                    return Poll::Ready(end);
                }
                watch_eof(io, buf, cx).map(|()| End::Abort)
            });
            tokio::select! {
                biased;
                end = step => return Some(end),
                e = self.watchdog.expired() => self.expired(e)?,
            }
        }
    }

    /// A clock ran out while a request is in flight: `None` to drop the
    /// connection.
    fn expired(&mut self, e: Expired) -> Option<()> {
        match e {
            Expired::Abort(_) => {
                log_expired(e);
                None
            }
            Expired::Close(_) => {
                self.draining = true;
                Some(())
            }
        }
    }
}

/// While a request is in flight: reads ahead once (the next pipelined
/// request's bytes wait in `buf`), and resolves when the client closed its
/// side or the connection failed (then the request is dropped, as hyper's
/// server does without half-close).
fn watch_eof<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if !buf.is_empty() {
        return Poll::Pending;
    }
    match poll_read(io, buf, cx) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

fn log_expired(e: Expired) {
    match e {
        Expired::Close(why) => {
            tracing::debug!(reason = why.as_str(), "closing a client connection")
        }
        Expired::Abort(why) => {
            tracing::debug!(reason = why.as_str(), "dropping a client connection")
        }
    }
}

// ---------------------------------------------------------------------------

/// An IO whose reads return `prefix` first: the bytes this path read before
/// handing the connection to hyper.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, io: T) -> Prefixed<T> {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.prefix.is_empty() {
            let n = me.prefix.len().min(buf.remaining());
            buf.put_slice(&me.prefix[..n]);
            me.prefix.advance(n);
            if me.prefix.is_empty() {
                me.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(s);
        let p = parse(&mut buf, 8192);
        (p, buf)
    }

    fn simple(s: &str) -> Head {
        match parse_str(s).0 {
            Parsed::Simple(h) => h,
            Parsed::Partial => panic!("partial: {s:?}"),
            Parsed::Other => panic!("not simple: {s:?}"),
        }
    }

    #[test]
    fn simple_requests_are_parsed_and_taken_out_of_the_buffer() {
        let (p, rest) =
            parse_str("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next");
        let Parsed::Simple(h) = p else { panic!() };
        assert_eq!(&rest[..], b"GET /next");
        assert_eq!(h.req.method(), Method::GET);
        assert_eq!(h.req.uri(), "/a?b=1");
        assert_eq!(h.req.version(), Version::HTTP_11);
        assert_eq!(h.req.headers().get_all("x-a").iter().count(), 2);
        assert!(h.keep_alive);
        assert!(h.req.body().is_end_stream());

        assert!(!simple("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(!simple("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let h = simple("HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.req.version(), Version::HTTP_10);
        assert!(simple("DELETE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let h = simple("GET http://app.test/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.req.uri().host(), Some("app.test"));
    }

    #[test]
    fn anything_else_is_left_whole_for_hyper() {
        for s in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.2\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            let (p, rest) = parse_str(s);
            assert!(matches!(p, Parsed::Other), "{s:?}");
            assert_eq!(&rest[..], s.as_bytes(), "{s:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let s = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse_str(&s).0, Parsed::Other));
        // More fields than the stack index holds, fewer than the limit:
        // every one kept, in order.
        for n in [FEW_HEADERS, FEW_HEADERS + 1, MAX_HEADERS] {
            let fields: String = (0..n).map(|i| format!("X-{i}: v{i}\r\n")).collect();
            let h = simple(&format!("GET / HTTP/1.1\r\n{fields}\r\n"));
            assert_eq!(h.req.headers().len(), n);
            for i in [0, n / 2, n - 1] {
                assert_eq!(h.req.headers()[format!("x-{i}")], format!("v{i}"), "{n}");
            }
        }
        // Over the head limit, whole or not.
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(parse_str(&big).0, Parsed::Other));
        assert!(matches!(parse_str(&big[..8500]).0, Parsed::Other));
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost:").0,
            Parsed::Partial
        ));
    }

    fn encode(
        resp: Response<()>,
        http10: bool,
        head: bool,
        keep: bool,
        size: Option<u64>,
    ) -> (String, Encoded) {
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        let e = encode_head(&mut out, &parts, None, http10, head, keep, size);
        let text = String::from_utf8(out).unwrap();
        let (before, date) = text.split_once("date: ").expect("a date");
        assert_eq!(date.len(), 29 + 4, "{date:?}");
        (format!("{before}{}", &date[31..]), e)
    }

    #[test]
    fn response_heads_say_their_framing_and_connection() {
        let mut r = Response::new(());
        r.headers_mut().insert("x-a", HeaderValue::from_static("1"));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        r.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let (t, e) = encode(r, false, false, true, Some(5));
        assert_eq!(t, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(
            e,
            Encoded {
                framing: Framing::Length(5),
                keep_alive: true
            }
        );

        let (t, e) = encode(Response::new(()), false, false, false, None);
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            e,
            Encoded {
                framing: Framing::Chunked,
                keep_alive: false
            }
        );

        let (t, e) = encode(Response::new(()), true, false, true, None);
        assert_eq!(t, "HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            e,
            Encoded {
                framing: Framing::Close,
                keep_alive: false
            }
        );

        let (t, e) = encode(Response::new(()), true, false, true, Some(0));
        assert_eq!(
            t,
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(e.keep_alive);

        // HEAD keeps the GET's length; 204 and 304 carry none.
        let mut r = Response::new(());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
        let (t, e) = encode(r, false, true, true, Some(0));
        assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n");
        assert_eq!(e.framing, Framing::None);
        for code in [204, 304] {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
            let (t, e) = encode(r, false, false, true, Some(5));
            assert!(!t.contains("content-length"), "{t}");
            assert_eq!(e.framing, Framing::None);
        }

        // The response's own close and date are kept, not doubled.
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut()
            .insert(header::DATE, HeaderValue::from_static("then"));
        let parts = r.into_parts().0;
        let mut out = Vec::new();
        let e = encode_head(&mut out, &parts, None, false, false, true, Some(0));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ndate: then\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(!e.keep_alive);
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        assert_eq!(SizeLine::new(0).bytes(), b"0\r\n");
        assert_eq!(SizeLine::new(13).bytes(), b"D\r\n");
        assert_eq!(SizeLine::new(0x1234abcd).bytes(), b"1234ABCD\r\n");
        assert_eq!(SizeLine::new(usize::MAX).bytes(), b"FFFFFFFFFFFFFFFF\r\n");
        assert!(SizeLine::EMPTY.bytes().is_empty());
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    /// A writer that takes at most `n` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        n: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.n);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        for n in [1, 2, 3, 7, 100] {
            let mut out = Out {
                head: b"HEAD".to_vec(),
                head_at: 0,
                size: SizeLine::new(5),
                data: Bytes::from_static(b"hello"),
                tail: b"\r\n0\r\n\r\n",
            };
            let mut w = Trickle { got: Vec::new(), n };
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(matches!(
                out.poll_write(&mut w, &mut cx),
                Poll::Ready(Ok(()))
            ));
            assert_eq!(w.got, b"HEAD5\r\nhello\r\n0\r\n\r\n", "{n}");
            assert!(out.is_empty());
        }
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_the_prefix_first() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(Bytes::from_static(b"read "), a);
        b.write_all(b"later").await.unwrap();
        drop(b);
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut p, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "read later");
    }
}
