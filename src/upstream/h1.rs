//! The direct HTTP/1.1 exchange with a backend, for bodiless idempotent
//! requests (GET, HEAD, ... without a body and without an upgrade: nearly all
//! of a web app's traffic).
//!
//! hyper's client runs each backend connection in a task of its own and
//! passes every request, response head and body chunk across channels. Here
//! the request's own task writes the encoded head, parses the response head
//! with httparse and streams the body straight from the socket: no task hop,
//! no channel, one `write` and usually one `read` per request.
//!
//! ```text
//! RawConn::exchange: write head ─> read until the head parses (1xx skipped)
//!                    ─> framing (RFC 9112 §6.3): none | length | chunked | to EOF
//! RawBody:           frames from the read buffer, then from the socket;
//!                    at a clean end the connection can go back to the pool
//! ```
//!
//! Requests with a body or an upgrade keep going through hyper's client
//! (request bodies stream while the response comes back; 101 hands over the
//! connection), see [`crate::proxy`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Largest response head accepted from a backend (both paths: hyper's
/// client is given the same bound).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Heads with at most this many fields (nearly all) are indexed on the stack.
const FEW_HEADERS: usize = 24;
/// Longest chunk-size line or trailer line.
const MAX_LINE: usize = 4096;
/// Most trailer bytes skipped after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection closed (or was reset) before a byte of the response:
    /// on a pooled connection, the backend closed it while it sat idle.
    #[error("connection closed before the response")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("invalid response from backend: {0}")]
    Invalid(&'static str),
    /// No response head by the deadline given ([`RawConn::exchange_until`]).
    #[error("no response in time")]
    TimedOut,
}

impl ExchangeError {
    /// Nothing of a response was received: the request may be sent again
    /// elsewhere when it is idempotent.
    pub fn nothing_received(&self) -> bool {
        matches!(self, ExchangeError::Closed)
    }
}

/// Encodes a request head: `METHOD path HTTP/1.1`, the headers, a blank
/// line. `set` fields replace any of the same name in `headers`; each
/// one's value is the concatenation of its pieces (so that a value built
/// from parts, like X-Forwarded-For, needs no buffer of its own).
pub fn encode_head(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    set: &[(&HeaderName, &[&[u8]])],
) -> Vec<u8> {
    // `METHOD path HTTP/1.1\r\n` and the final `\r\n`: 14 bytes besides
    // the method and the path.
    let mut len = method.as_str().len() + path.len() + 14;
    for (n, v) in headers {
        len += n.as_str().len() + v.len() + 4;
    }
    for (n, pieces) in set {
        len += n.as_str().len() + 4 + pieces.iter().map(|p| p.len()).sum::<usize>();
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (n, v) in headers {
        if set.iter().any(|(s, _)| *s == n) {
            continue;
        }
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (n, pieces) in set {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        for p in *pieces {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A keep-alive connection to a backend, with what has been read ahead.
///
/// Boxed, once per connection: it moves with every response (in its body,
/// through each layer of the request path and into the client's writer),
/// and 8 bytes move for less than its 80 (benches/callgrind.sh).
pub struct RawConn(Box<Wire>);

/// A [`RawConn`]'s socket, its read buffer and its timer.
struct Wire {
    io: TcpStream,
    buf: BytesMut,
    /// The response deadline's timer, kept from one request to the next
    /// (see [`RawConn::exchange_until`]).
    timer: Option<Pin<Box<Sleep>>>,
}

impl RawConn {
    pub fn new(io: TcpStream) -> RawConn {
        RawConn(Box::new(Wire {
            io,
            buf: BytesMut::new(),
            timer: None,
        }))
    }

    /// Whether an idle connection still looks usable: the backend has
    /// neither closed it nor sent anything unasked. Costs no system call
    /// unless the event loop saw the socket become readable.
    pub fn is_reusable(&self) -> bool {
        if !self.0.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.0.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                // WouldBlock: a stale readiness, the connection is idle.
                matches!(self.0.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends an encoded bodiless request and reads the response head.
    pub async fn exchange(
        self,
        head: &[u8],
        method: &Method,
    ) -> Result<Response<RawBody>, ExchangeError> {
        self.exchange_until(head, method, None, false).await
    }

    /// [`exchange`](Self::exchange), the response head due by `deadline`
    /// ([`ExchangeError::TimedOut`] after it); with `lines`, its fields are
    /// left in the body as the backend sent them ([`RawBody::take_fields`])
    /// and the response's header map is empty.
    ///
    /// The timer is the connection's own, kept from one request to the
    /// next: tokio moves a timer's deadline later with one
    /// compare-and-swap, where a new timer per request (`timeout_at`) took
    /// the timer wheel's lock to register and again to deregister, about
    /// 500 instructions per request. A kept timer that fires while its
    /// connection is idle wakes the task that last waited on it once.
    pub async fn exchange_until(
        mut self,
        head: &[u8],
        method: &Method,
        deadline: Option<tokio::time::Instant>,
        lines: bool,
    ) -> Result<Response<RawBody>, ExchangeError> {
        let mut timer = deadline.map(|d| match self.0.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(d);
                t
            }
            None => Box::pin(tokio::time::sleep_until(d)),
        });
        let read = {
            let mut work = std::pin::pin!(self.read_head(head, method, lines));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = work.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(ExchangeError::TimedOut)),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        let h = read?;
        if timer.is_some() {
            self.0.timer = timer;
        }
        let (map, lines) = match h.fields {
            Fields::Map(map) => (map, None),
            Fields::Lines(lines) => (HeaderMap::new(), Some(lines)),
        };
        let mut resp = Response::new(RawBody {
            framing: h.framing,
            keep_alive: h.keep_alive,
            fields: lines,
            conn: Some(self),
        });
        *resp.status_mut() = h.status;
        *resp.headers_mut() = map;
        Ok(resp)
    }

    /// Writes the request head and reads the response head.
    async fn read_head(
        &mut self,
        head: &[u8],
        method: &Method,
        lines: bool,
    ) -> Result<Head, ExchangeError> {
        match self.0.io.write_all(head).await {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Err(ExchangeError::Closed),
            Err(e) => return Err(e.into()),
        }
        let mut received = false;
        loop {
            if !self.0.buf.is_empty() {
                received = true;
                if let Some(h) = parse_head(&mut self.0.buf, method, lines)? {
                    return Ok(h);
                }
            }
            match std::future::poll_fn(|cx| poll_fill(&mut self.0.io, &mut self.0.buf, cx)).await {
                Ok(0) if !received => return Err(ExchangeError::Closed),
                Ok(0) => return Err(ExchangeError::Invalid("connection closed inside the head")),
                Ok(_) => {}
                Err(e) if !received && is_closed(&e) => return Err(ExchangeError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Parses a complete head at the start of the buffer, taking it (and any
/// interim 1xx responses before it) out: `None` until one is there. A head
/// longer than `MAX_HEAD` is refused however it arrives (one read or many).
/// Public for the fuzz targets only (`fuzz/checks.rs`).
#[doc(hidden)]
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    lines: bool,
) -> Result<Option<Head>, ExchangeError> {
    loop {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parse = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        );
        let len = match parse {
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                return Err(ExchangeError::Invalid("response head too large"))
            }
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ExchangeError::Invalid("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Invalid("too many header fields"))
            }
            Err(_) => return Err(ExchangeError::Invalid("malformed response head")),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Invalid("invalid status code"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Invalid("101 to a request without upgrade"));
            }
            buf.advance(len);
            continue;
        }
        let http11 = parsed.version == Some(1);
        let raw = &*parsed.headers;
        // The hop-by-hop fields describe this connection: read what they
        // say, then leave them (and the fields Connection names) out.
        let hop = Hop::read(raw);
        let (framing, keep_alive) = framing(method, status, http11, &hop, raw)?;
        // Lines unless the proxy has a pass to make over the fields: a
        // Connection field kept (it named too many others to drop them
        // here), or several Content-Length fields (a map writes one).
        let fields = if lines && !hop.overflow && hop.lengths <= 1 {
            // As `name: value` lines (see `RawFields`): one buffer, instead
            // of a header map of names looked up and values sharing the read
            // buffer (an allocation or two, and two atomic operations per
            // field).
            let fields = raw_fields(&buf[..len], raw, &hop);
            buf.advance(len);
            Fields::Lines(fields)
        } else {
            // Where each kept field sits in the head, so that the values can
            // share the head's bytes once it is split off the buffer (no copy).
            let base = buf.as_ptr() as usize;
            // On the stack for the usual few (a zeroed array of MAX_HEADERS
            // cost a 2 KB memset per response).
            let mut few = [(0u32, 0u32, 0u32, 0u32); FEW_HEADERS];
            let mut many = Vec::new();
            let at: &mut [(u32, u32, u32, u32)] = if raw.len() <= FEW_HEADERS {
                &mut few[..raw.len()]
            } else {
                many.resize(raw.len(), (0, 0, 0, 0));
                &mut many
            };
            let mut count = 0;
            for h in raw.iter().filter(|h| !hop.drops(h.name)) {
                // Offsets within the buffer (at most MAX_HEAD plus one read) fit u32.
                at[count] = (
                    (h.name.as_ptr() as usize - base) as u32,
                    h.name.len() as u32,
                    (h.value.as_ptr() as usize - base) as u32,
                    h.value.len() as u32,
                );
                count += 1;
            }
            Fields::Map(header_map(buf.split_to(len).freeze(), &at[..count])?)
        };
        return Ok(Some(Head {
            status,
            fields,
            framing,
            keep_alive,
        }));
    }
}

/// How the body of a final response is framed, and whether its connection
/// can carry another request after it (RFC 9112 section 6.3).
fn framing(
    method: &Method,
    status: StatusCode,
    http11: bool,
    hop: &Hop<'_>,
    raw: &[httparse::Header<'_>],
) -> Result<(Framing, bool), ExchangeError> {
    // With both Transfer-Encoding and Content-Length, Transfer-Encoding
    // frames the body and Content-Length is left out; the message may be
    // an attempt at response splitting, so the connection is not reused
    // (RFC 9112 section 6.3, item 3).
    let mut keep_alive = http11 && !hop.close && !(hop.chunked.is_some() && hop.lengths > 0);
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if let Some(chunked) = hop.chunked {
        // HTTP/1.0 has no transfer codings: faulty framing (section 6.1).
        if !http11 {
            return Err(ExchangeError::Invalid(
                "transfer-encoding in an HTTP/1.0 response",
            ));
        }
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::Eof
        }
    } else if let Some(cl) = content_length(raw)? {
        Framing::Length(cl)
    } else {
        keep_alive = false;
        Framing::Eof
    };
    Ok((framing, keep_alive))
}

/// The fields at `at` (name offset and length, value offset and length)
/// of a head, `bytes`, as a header map whose values share its bytes.
fn header_map(bytes: Bytes, at: &[(u32, u32, u32, u32)]) -> Result<HeaderMap, ExchangeError> {
    let mut headers = HeaderMap::with_capacity(at.len());
    for &(n, nl, v, vl) in at {
        let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
        let name = HeaderName::from_bytes(&bytes[n..n + nl])
            .map_err(|_| ExchangeError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(v..v + vl))
            .map_err(|_| ExchangeError::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// A response head's kept fields, in one of two forms.
#[derive(Debug)]
pub enum Fields {
    /// A header map (for everything but the direct server's writer).
    Map(HeaderMap),
    /// Lines as the backend sent them (the direct server's writer).
    Lines(RawFields),
}

impl Fields {
    /// The fields as a header map, whichever the form.
    pub fn into_map(self) -> Result<HeaderMap, ExchangeError> {
        match self {
            Fields::Map(map) => Ok(map),
            Fields::Lines(lines) => lines.into_map(),
        }
    }
}

/// A head's kept fields (`head` is the head's bytes, `raw` its fields as
/// httparse found them in it) as [`RawFields`].
fn raw_fields(head: &[u8], raw: &[httparse::Header<'_>], hop: &Hop<'_>) -> RawFields {
    let mut lines = BytesMut::with_capacity(head.len() + 2 * raw.len());
    let mut date = false;
    // Where the Content-Length line is (there is at most one).
    let mut length: Option<(u32, u32)> = None;
    // Lines already written `name: value\r\n` are copied from the head
    // as they are, each run of them in one copy (usually one or two per
    // response); others are rebuilt that way.
    //
    // Offsets in the head, wrapping: a slice from elsewhere (which httparse
    // does not give) fails the checks below instead of being sliced.
    let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
    let mut run = 0..0;
    for h in raw.iter().filter(|h| !hop.drops(h.name)) {
        date |= name_is(h.name.as_bytes(), b"date");
        let start = at(h.name.as_bytes());
        let colon = start.wrapping_add(h.name.len());
        let value = at(h.value);
        let end = value.wrapping_add(h.value.len());
        let canonical = start < colon
            && value == colon.wrapping_add(2)
            && end <= head.len()
            && head.get(colon..value) == Some(b": ")
            && head.get(end..end.saturating_add(2)) == Some(b"\r\n");
        // Where this line lands in `lines`, and its length.
        let line = if canonical && run.end == start && !run.is_empty() {
            let at_line = lines.len() + run.len();
            run.end = end + 2;
            (at_line, end + 2 - start)
        } else {
            lines.extend_from_slice(&head[run.clone()]);
            let at_line = lines.len();
            if canonical {
                run = start..end + 2;
                (at_line, end + 2 - start)
            } else {
                run = 0..0;
                push_line(&mut lines, h.name.as_bytes(), h.value);
                (at_line, lines.len() - at_line)
            }
        };
        if name_is(h.name.as_bytes(), b"content-length") {
            // Within MAX_HEAD plus one read: fits u32.
            length = Some((line.0 as u32, line.1 as u32));
        }
    }
    lines.extend_from_slice(&head[run]);
    RawFields {
        lines: lines.freeze(),
        length,
        date,
    }
}

/// A parsed final response head (public for the fuzz targets).
#[doc(hidden)]
pub struct Head {
    pub status: StatusCode,
    /// Without the hop-by-hop fields and those Connection names.
    pub fields: Fields,
    pub framing: Framing,
    /// Whether the connection can carry another request after the body.
    pub keep_alive: bool,
}

/// `name: value` and a line end.
fn push_line(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A backend response's fields as it sent them, less the hop-by-hop ones
/// and those its Connection field names: `name: value\r\n` lines in the
/// backend's order (names in its case, values as httparse delimited them).
///
/// The direct HTTP/1.1 server writes them to its client as they are
/// (`crate::server::h1`), with its own framing in the place of the
/// Content-Length line. `crate::proxy` asks for lines only when nothing
/// else looks at the fields (no middlewares, `x-served-by` or sticky
/// cookie; not hyper's servers), and [`parse_head`] gives a header map
/// instead when the proxy has its own pass to make over them (a Connection
/// field kept, several Content-Length fields). httparse checked every name (token characters) and
/// value (no control characters but tab) against the same grammar as
/// `http`'s types, and line ends were made CRLF, so the lines are safe to
/// pass on as they are.
#[derive(Debug, Clone)]
pub struct RawFields {
    lines: Bytes,
    /// The Content-Length line: where it starts in `lines`, its length.
    length: Option<(u32, u32)>,
    date: bool,
}

impl RawFields {
    /// The fields, as lines to write.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// Where the Content-Length line is in [`lines`](Self::lines), when
    /// there is one.
    pub fn length_line(&self) -> Option<std::ops::Range<usize>> {
        self.length
            .map(|(at, len)| at as usize..at as usize + len as usize)
    }

    /// The Content-Length value, when the backend sent one (kept for a
    /// HEAD's answer, which describes the GET; the other framings are the
    /// writer's own).
    pub fn content_length(&self) -> Option<&[u8]> {
        let line = self.lines.get(self.length_line()?)?;
        let value = &line[line.iter().position(|&b| b == b':')? + 1..];
        Some(value.trim_ascii())
    }

    /// Whether the backend sent a Date field.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// The fields as a header map, in order (the fuzz check and the tests
    /// hold the lines to the map form with it).
    pub fn into_map(self) -> Result<HeaderMap, ExchangeError> {
        // About 48 bytes a field: one allocation for most heads.
        let mut headers = HeaderMap::with_capacity(self.lines.len() / 48 + 1);
        let mut at = 0;
        while let Some(eol) = self.lines[at..].iter().position(|&b| b == b'\n') {
            let line = at..at + eol;
            at = line.end + 1;
            // `name: value\r`
            let text = &self.lines[line.clone()];
            let (Some(colon), Some(b'\r')) = (text.iter().position(|&b| b == b':'), text.last())
            else {
                return Err(ExchangeError::Invalid("invalid header line"));
            };
            let name = HeaderName::from_bytes(&text[..colon])
                .map_err(|_| ExchangeError::Invalid("invalid header name"))?;
            // The value shares the lines' buffer: no copy.
            let end = line.end - 1;
            let start = (line.start + colon + 2).min(end);
            let value = HeaderValue::from_maybe_shared(self.lines.slice(start..end))
                .map_err(|_| ExchangeError::Invalid("invalid header value"))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Reads what the socket has into the buffer; `Ok(0)` at end of stream.
///
/// Through `AsyncRead` rather than `try_read_buf`: tokio clears the cached
/// readiness after a short read, so the next look at an idle pooled socket
/// ([`RawConn::is_reusable`]) and the next wait for a response cost no
/// `recv` that can only answer EAGAIN.
fn poll_fill(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

/// Whether a comma-separated header (Connection, ...) lists `token`.
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Fields that concern one connection only (RFC 9110 section 7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a field name (in any case) is one of [`HOP_BY_HOP`].
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    // By length first: one comparison for most names (two for lengths 7
    // and 10), instead of seven per field of every response.
    let n = name.as_bytes();
    match n.len() {
        2 => name_is(n, b"te"),
        7 => name_is(n, b"trailer") || name_is(n, b"upgrade"),
        10 => name_is(n, b"connection") || name_is(n, b"keep-alive"),
        16 => name_is(n, b"proxy-connection"),
        17 => name_is(n, b"transfer-encoding"),
        _ => false,
    }
}

/// Whether a field name is `lower` in any case, where the name is a token
/// (as httparse and `http` give them: RFC 9110 `tchar`s) and `lower` is
/// lowercase letters, digits and `-`.
///
/// `eq_ignore_ascii_case` lowercases both sides byte by byte. Here, eight
/// bytes at a time, the name's bytes get the 0x20 bit set, which lowercases
/// a letter and leaves a digit or `-` as it is. The bytes it turns into one
/// of `lower`'s are that byte itself, its uppercase letter, and controls
/// (0x10-0x19 into digits, CR into `-`), which no token has. (~450
/// instructions per request of name comparisons in benches/callgrind.sh,
/// most of them in this.)
#[inline]
pub(crate) fn name_is(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let (mut a, mut b) = (name.chunks_exact(8), lower.chunks_exact(8));
    for (x, y) in (&mut a).zip(&mut b) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            return false;
        };
        if u64::from_ne_bytes(x) | 0x2020_2020_2020_2020 != u64::from_ne_bytes(y) {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(x, y)| x | 0x20 == *y)
}

/// Connection tokens remembered for leaving their fields out; a response
/// naming more keeps its Connection field, for the proxy's own pass.
const MAX_NAMED: usize = 8;

/// What a response's hop-by-hop fields say.
struct Hop<'h> {
    /// `Connection: close`.
    close: bool,
    /// With Transfer-Encoding: whether its last coding is chunked.
    chunked: Option<bool>,
    /// How many Content-Length fields there are.
    lengths: u32,
    /// Other fields Connection names.
    named: [&'h [u8]; MAX_NAMED],
    count: usize,
    overflow: bool,
}

impl<'h> Hop<'h> {
    fn read(raw: &[httparse::Header<'h>]) -> Hop<'h> {
        let mut hop = Hop {
            close: false,
            chunked: None,
            lengths: 0,
            named: [&[]; MAX_NAMED],
            count: 0,
            overflow: false,
        };
        for h in raw {
            let name = h.name.as_bytes();
            if name_is(name, b"connection") {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        hop.close = true;
                    } else if !token.is_empty() {
                        match hop.named.get_mut(hop.count) {
                            Some(slot) => {
                                *slot = token;
                                hop.count += 1;
                            }
                            None => hop.overflow = true,
                        }
                    }
                }
            } else if name_is(name, b"transfer-encoding") {
                // The last coding of the last field decides.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                hop.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name_is(name, b"content-length") {
                hop.lengths += 1;
            }
        }
        hop
    }

    /// Whether the field `name` stays out of the response the client gets.
    fn drops(&self, name: &str) -> bool {
        if self.overflow && name_is(name.as_bytes(), b"connection") {
            return false;
        }
        is_hop_by_hop(name)
            || (self.chunked.is_some() && name_is(name.as_bytes(), b"content-length"))
            || self.named[..self.count]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The Content-Length, when there is one; several must agree.
fn content_length(raw: &[httparse::Header<'_>]) -> Result<Option<u64>, ExchangeError> {
    const INVALID: ExchangeError = ExchangeError::Invalid("invalid content-length");
    let mut found = None;
    for h in raw
        .iter()
        .filter(|h| name_is(h.name.as_bytes(), b"content-length"))
    {
        for part in h.value.split(|&b| b == b',') {
            // OWS only (spaces and tabs): not a Unicode space after the
            // digits, not a sign.
            let part = match part.iter().position(|&b| b != b' ' && b != b'\t') {
                Some(start) => &part[start..],
                None => return Err(INVALID),
            };
            let end = part
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |i| i + 1);
            let mut n: u64 = 0;
            for &b in &part[..end] {
                if !b.is_ascii_digit() {
                    return Err(INVALID);
                }
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(b - b'0')))
                    .ok_or(INVALID)?;
            }
            if found.is_some_and(|f| f != n) {
                return Err(ExchangeError::Invalid("conflicting content-length"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// How the response body is delimited (public for the fuzz targets).
#[doc(hidden)]
pub enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Eof,
    Done,
}

#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one; bytes seen.
    Trailers(usize),
}

/// What [`Framing::decode`] found in the buffer.
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The body is complete; what follows in the buffer is not part of it.
    End,
    /// Nothing more can be decoded until more bytes arrive.
    More,
}

impl Framing {
    /// Decodes the next body bytes from the front of `buf`, taking out what
    /// it consumed (chunk-size lines, CRLFs, trailers). Reads no socket: at
    /// `More` the caller reads, or at the end of the stream calls
    /// [`Framing::at_eof`]. Public for the fuzz targets.
    #[doc(hidden)]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ExchangeError> {
        loop {
            match self {
                Framing::Done | Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Decoded::End);
                }
                Framing::Chunked(Chunk::Data(0)) => {
                    *self = Framing::Chunked(Chunk::DataEnd);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Framing::Eof => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ExchangeError::Invalid("missing CRLF after chunk"));
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let seen = *seen;
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    if line.is_empty() {
                        *self = Framing::Done;
                        return Ok(Decoded::End);
                    }
                    if !is_field_line(&line) {
                        return Err(ExchangeError::Invalid("invalid trailer field"));
                    }
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(ExchangeError::Invalid("trailers too large"));
                    }
                    *self = Framing::Chunked(Chunk::Trailers(seen));
                }
            }
        }
    }

    /// The stream ended after [`Decoded::More`]: a clean end for a body
    /// delimited by the close, else a truncated body.
    #[doc(hidden)]
    pub fn at_eof(&mut self) -> Result<(), ExchangeError> {
        match self {
            Framing::Eof | Framing::Done => {
                *self = Framing::Done;
                Ok(())
            }
            _ => Err(truncated()),
        }
    }
}

/// A response body read straight from the backend connection.
pub struct RawBody {
    conn: Option<RawConn>,
    framing: Framing,
    keep_alive: bool,
    /// The response's fields, until taken (see [`RawFields`]).
    fields: Option<RawFields>,
}

impl RawBody {
    /// The response's fields as the backend sent them, once.
    pub fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    /// The connection, when the body has been read to its clean end and it
    /// can carry another request.
    pub fn take_idle(&mut self) -> Option<RawConn> {
        let done = matches!(self.framing, Framing::Done | Framing::Length(0));
        if done && self.keep_alive && self.conn.as_ref().is_some_and(|c| c.0.buf.is_empty()) {
            self.conn.take()
        } else {
            None
        }
    }

    /// Like [`RawBody::take_idle`], and a body whose rest is already in the
    /// buffer counts as read: when a client goes away before its response
    /// was written, the backend connection is kept all the same.
    pub fn take_idle_discarding_rest(&mut self) -> Option<RawConn> {
        if let (Framing::Length(left), Some(conn)) = (&self.framing, self.conn.as_mut()) {
            if conn.0.buf.len() as u64 == *left {
                conn.0.buf.clear();
                self.framing = Framing::Done;
            }
        }
        self.take_idle()
    }

    /// Before the response head goes to the client: reads what the backend
    /// has already sent (never waiting for more) and checks the chunked
    /// framing of it, so that a malformed body found now is a 502 rather
    /// than a response cut after its head. Reads stop at the body's end, at
    /// [`PREFETCH`] bytes, or when the socket has nothing more. Costs
    /// nothing for a body framed by length or by the close (no framing to
    /// get wrong before the end).
    pub async fn check_buffered(&mut self) -> Result<(), ExchangeError> {
        let (Framing::Chunked(state), Some(conn)) = (&self.framing, self.conn.as_mut()) else {
            return Ok(());
        };
        let state = *state;
        loop {
            if scan_chunked(state, &conn.0.buf)? || conn.0.buf.len() >= PREFETCH {
                return Ok(());
            }
            let read = std::future::poll_fn(|cx| match fill(conn, cx) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r)),
            })
            .await;
            match read {
                None => return Ok(()),
                Some(Ok(Fill::Data)) => {}
                // Closed inside the body: truncated.
                Some(Ok(Fill::Eof)) => return Err(truncated()),
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// Before the response head goes to the client: a body framed by a
    /// length of at most [`PREFETCH`] bytes is read whole, waiting for it.
    /// A backend that dies between its head and its body (a container
    /// stopped mid-response) then fails the attempt while the request can
    /// still be sent elsewhere, instead of cutting a response whose head the
    /// client already has. Costs nothing when the body came with the head,
    /// as small bodies almost always do.
    ///
    /// The wait ends at the deadline of the exchange that gave this body
    /// ([`RawConn::exchange_until`], on the connection's own timer): then
    /// `Ok`, and the body streams as it is. Without a deadline, it waits
    /// for the body or the connection's end.
    pub async fn read_small(&mut self) -> Result<(), ExchangeError> {
        let (Framing::Length(left), Some(conn)) = (&self.framing, self.conn.as_mut()) else {
            return Ok(());
        };
        let left = *left;
        if left > PREFETCH as u64 {
            return Ok(());
        }
        while (conn.0.buf.len() as u64) < left {
            let filled = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = fill(conn, cx) {
                    return Poll::Ready(Some(r));
                }
                match conn.0.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(None),
                    _ => Poll::Pending,
                }
            })
            .await;
            match filled {
                None => return Ok(()),
                Some(r) => {
                    if r? == Fill::Eof {
                        return Err(truncated());
                    }
                }
            }
        }
        Ok(())
    }

    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ExchangeError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.framing.decode(&mut conn.0.buf)? {
                Decoded::Data(data) => return Poll::Ready(Some(Ok(data))),
                Decoded::End => return Poll::Ready(None),
                Decoded::More => {
                    if std::task::ready!(fill(conn, cx))? == Fill::Eof {
                        self.framing.at_eof()?;
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Fill {
    Data,
    Eof,
}

/// Reads more into the connection's buffer, or returns `Pending`.
fn fill(conn: &mut RawConn, cx: &mut Context<'_>) -> Poll<Result<Fill, ExchangeError>> {
    match poll_fill(&mut conn.0.io, &mut conn.0.buf, cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(0)) => Poll::Ready(Ok(Fill::Eof)),
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(Fill::Data)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
    }
}

fn truncated() -> ExchangeError {
    ExchangeError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "backend closed the connection inside the body",
    ))
}

/// Most bytes [`RawBody::check_buffered`] reads ahead, and the largest
/// body [`RawBody::read_small`] waits for.
const PREFETCH: usize = 64 * 1024;

/// Walks chunked framing from `state` over `buf` without consuming it:
/// true when the body ends inside `buf`, false when more is needed, an
/// error for the same malformations [`Framing::decode`] refuses.
fn scan_chunked(mut state: Chunk, mut buf: &[u8]) -> Result<bool, ExchangeError> {
    loop {
        match state {
            Chunk::Data(n) => {
                if (buf.len() as u64) < n {
                    return Ok(false);
                }
                buf = &buf[n as usize..];
                state = Chunk::DataEnd;
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(false);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(ExchangeError::Invalid("missing CRLF after chunk"));
                }
                buf = &buf[2..];
                state = Chunk::Size;
            }
            Chunk::Size => {
                let Some((line, rest)) = split_line(buf)? else {
                    return Ok(false);
                };
                buf = rest;
                state = match chunk_size(line)? {
                    0 => Chunk::Trailers(0),
                    n => Chunk::Data(n),
                };
            }
            Chunk::Trailers(seen) => {
                let Some((line, rest)) = split_line(buf)? else {
                    return Ok(false);
                };
                buf = rest;
                if line.is_empty() {
                    return Ok(true);
                }
                if !is_field_line(line) {
                    return Err(ExchangeError::Invalid("invalid trailer field"));
                }
                let seen = seen + line.len() + 2;
                if seen > MAX_TRAILERS {
                    return Err(ExchangeError::Invalid("trailers too large"));
                }
                state = Chunk::Trailers(seen);
            }
        }
    }
}

/// A line (without its CRLF) and the bytes after it.
type LineAndRest<'a> = (&'a [u8], &'a [u8]);

/// The first CRLF-terminated line of `buf` (without its CRLF) and what
/// follows: `None` until the whole line is there; the same limits as
/// [`take_line`].
fn split_line(buf: &[u8]) -> Result<Option<LineAndRest<'_>>, ExchangeError> {
    match buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
        Some(i) => {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(ExchangeError::Invalid("line not ended by CRLF"));
            }
            Ok(Some((&buf[..i - 1], &buf[i + 1..])))
        }
        None if buf.len() > MAX_LINE => Err(ExchangeError::Invalid("chunk line too long")),
        None => Ok(None),
    }
}

/// One CRLF-terminated line from the front of the buffer (without its
/// CRLF): `None` until the whole line is there. A line longer than
/// `MAX_LINE` is refused whether it arrived in one read or in many.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, ExchangeError> {
    let Some((line, _)) = split_line(buf)? else {
        return Ok(None);
    };
    let len = line.len();
    let line = buf.split_to(len + 2).freeze();
    Ok(Some(line.slice(..len)))
}

/// A control character other than HTAB (never in a field value or a chunk
/// extension; CR and LF only end lines).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A `field-name ":" field-value` line (RFC 9110 section 5): a token, a
/// colon, then no control characters (so no obs-fold, no bare CR).
fn is_field_line(line: &[u8]) -> bool {
    let name = line
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .count();
    name > 0 && line.get(name) == Some(&b':') && !line[name + 1..].iter().any(|&b| is_ctl(b))
}

/// The size of a chunk-size line (`1a`, `1a;ext=v`, `1a ; ext`): hex
/// digits, optional blanks, then nothing or a `;` and extensions, which
/// are not interpreted but may hold no control characters.
fn chunk_size(line: &[u8]) -> Result<u64, ExchangeError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(ExchangeError::Invalid("invalid chunk size"));
    }
    let rest = &line[digits..];
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let ext = &rest[blanks..];
    if !(ext.is_empty() || ext[0] == b';') || ext.iter().any(|&b| is_ctl(b)) {
        return Err(ExchangeError::Invalid("invalid chunk extension"));
    }
    let mut n = 0u64;
    for &b in &line[..digits] {
        // At most 15 hex digits: no overflow.
        n = n * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
    }
    Ok(n)
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        match this.next(cx) {
            Poll::Ready(Some(Err(e))) => {
                // A broken body leaves the connection unusable.
                this.conn = None;
                this.framing = Framing::Done;
                Poll::Ready(Some(Err(e)))
            }
            other => other.map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte a token may have, at every place of each name compared,
    /// against `eq_ignore_ascii_case`.
    #[test]
    fn name_is_agrees_with_eq_ignore_ascii_case_on_tokens() {
        let tchar: Vec<u8> = (0u8..=127)
            .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
            .collect();
        let names: &[&[u8]] = &[
            b"te",
            b"date",
            b"expect",
            b"trailer",
            b"upgrade",
            b"connection",
            b"keep-alive",
            b"content-length",
            b"proxy-connection",
            b"transfer-encoding",
        ];
        for &lower in names {
            assert!(name_is(lower, lower));
            assert!(name_is(&lower.to_ascii_uppercase(), lower));
            assert!(!name_is(&lower[1..], lower));
            for at in 0..lower.len() {
                for &b in &tchar {
                    let mut name = lower.to_vec();
                    name[at] = b;
                    assert_eq!(
                        name_is(&name, lower),
                        name.eq_ignore_ascii_case(lower),
                        "{:?} against {:?}",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(lower)
                    );
                }
            }
        }
    }

    #[test]
    fn hop_by_hop_names_in_any_case_and_no_others() {
        for h in HOP_BY_HOP {
            assert!(is_hop_by_hop(h), "{h}");
            assert!(is_hop_by_hop(&h.to_ascii_uppercase()), "{h}");
        }
        for other in [
            "",
            "t",
            "tf",
            "content-length",
            "x-upgrade",
            "upgrades",
            "connectio",
            "keep_alive",
            "transfer-encodin",
            "proxy-connections",
            "date",
        ] {
            assert!(!is_hop_by_hop(other), "{other}");
        }
    }

    #[test]
    fn content_length_is_digits_with_ows_and_agreeing_copies() {
        fn cl(values: &[&[u8]]) -> Result<Option<u64>, &'static str> {
            let raw: Vec<httparse::Header<'_>> = values
                .iter()
                .map(|v| httparse::Header {
                    name: "Content-Length",
                    value: v,
                })
                .collect();
            content_length(&raw).map_err(|e| match e {
                ExchangeError::Invalid(m) => m,
                _ => "other",
            })
        }
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&[b"0"]), Ok(Some(0)));
        assert_eq!(cl(&[b" \t42\t "]), Ok(Some(42)));
        assert_eq!(cl(&[b"7, 7", b"7"]), Ok(Some(7)));
        assert_eq!(cl(&[b"18446744073709551615"]), Ok(Some(u64::MAX)));
        assert_eq!(cl(&[b"1", b"2"]), Err("conflicting content-length"));
        assert_eq!(cl(&[b"3,4"]), Err("conflicting content-length"));
        for bad in [
            &b""[..],
            b" ",
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"1,",
            b",1",
            b"12a",
            b"18446744073709551616",
            "1\u{a0}".as_bytes(),
            b"\xff",
        ] {
            assert_eq!(cl(&[bad]), Err("invalid content-length"), "{bad:?}");
        }
    }
    use http::header;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A backend that reads one request head and answers `reply` (in pieces,
    /// to exercise partial reads), then keeps the connection open a while.
    async fn backend(reply: Vec<&'static [u8]>) -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        backend_holding(reply, std::time::Duration::from_millis(50)).await
    }

    /// [`backend`], silent for `hold` after its answer.
    async fn backend_holding(
        reply: Vec<&'static [u8]>,
        hold: std::time::Duration,
    ) -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&b[..n]);
            }
            for part in reply {
                s.write_all(part).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            tokio::time::sleep(hold).await;
            got
        });
        (TcpStream::connect(addr).await.unwrap(), task)
    }

    async fn run(
        reply: Vec<&'static [u8]>,
        method: Method,
    ) -> Result<(StatusCode, HeaderMap, Bytes, bool), ExchangeError> {
        let (io, task) = backend(reply).await;
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        let xff = HeaderName::from_static("x-forwarded-for");
        h.insert(xff.clone(), HeaderValue::from_static("spoofed"));
        let head = encode_head(&method, "/p?q=1", &h, &[(&xff, &[b"10.0.0.1"])]);
        let resp = RawConn::new(io).exchange(&head, &method).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = resp.into_body();
        assert!(body.take_fields().is_none(), "a map was asked for");
        let mut data = BytesMut::new();
        while let Some(f) = body.frame().await {
            data.extend_from_slice(&f?.into_data().unwrap_or_default());
        }
        let reusable = body.take_idle().is_some();
        let sent = task.await.unwrap();
        assert_eq!(
            sent,
            format!(
                "{method} /p?q=1 HTTP/1.1\r\nhost: app.test\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
            )
            .as_bytes()
        );
        Ok((status, headers, data.freeze(), reusable))
    }

    #[tokio::test]
    async fn a_connection_keeps_its_deadline_timer_from_one_request_to_the_next() {
        // Answers the first request, then holds the connection silent.
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (io, backend) = backend_holding(vec![reply], std::time::Duration::from_secs(60)).await;
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), &[]);
        let soon = || tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let conn = RawConn::new(io);
        let resp = conn
            .exchange_until(&head, &Method::GET, Some(soon()), false)
            .await
            .unwrap();
        let mut body = resp.into_body();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ok"
        );
        assert!(body.frame().await.is_none());
        let conn = body.take_idle().expect("reusable");
        assert!(
            conn.0.timer.is_some(),
            "the timer stays with the connection"
        );
        // The same timer, moved earlier this time: the silence times out.
        let past = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let r = conn
            .exchange_until(&head, &Method::GET, Some(past), false)
            .await;
        assert!(matches!(r, Err(ExchangeError::TimedOut)), "{:?}", r.err());
        backend.abort();
    }

    #[tokio::test]
    async fn a_small_body_is_awaited_until_the_exchanges_deadline_then_streams() {
        // The head and part of a small body, then silence.
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe";
        let (io, backend) = backend_holding(vec![reply], std::time::Duration::from_secs(60)).await;
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), &[]);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        let conn = RawConn::new(io);
        let resp = conn
            .exchange_until(&head, &Method::GET, Some(deadline), false)
            .await
            .unwrap();
        let mut body = resp.into_body();
        // Not an error and no hang: at the deadline the body streams as it is.
        body.read_small().await.unwrap();
        assert!(tokio::time::Instant::now() >= deadline);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "he"
        );
        backend.abort();
    }

    #[tokio::test]
    async fn content_length_body_and_reuse() {
        let (s, h, b, reuse) = run(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 5\r\nX-A: 1\r\n\r\nhel",
                b"lo",
            ],
            Method::GET,
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        assert_eq!(h["x-a"], "1");
        assert_eq!(&b[..], b"hello");
        assert!(reuse);
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let (s, _, b, reuse) = run(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n",
                b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            ],
            Method::GET,
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        assert_eq!(&b[..], b"abc0123456789");
        assert!(reuse);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_head_has_no_body() {
        let (s, h, b, reuse) = run(
            vec![b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
            Method::HEAD,
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        assert_eq!(h[header::CONTENT_LENGTH], "99");
        assert!(b.is_empty());
        assert!(reuse);
    }

    #[test]
    fn encoded_head_is_sized_exactly_and_set_fields_replace() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let xff = HeaderName::from_static("x-forwarded-for");
        let head = encode_head(
            &Method::GET,
            "/a",
            &h,
            &[(&xff, &[b"1.2.3.4", b", ", b"5.6.7.8"])],
        );
        assert_eq!(
            head,
            b"GET /a HTTP/1.1\r\nhost: app.test\r\naccept: */*\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8\r\n\r\n"
        );
        // One allocation of the right size, no growth on the way.
        assert_eq!(head.capacity(), head.len());
    }

    #[tokio::test]
    async fn hop_by_hop_fields_are_read_then_left_out() {
        let (s, h, b, reuse) = run(
            vec![
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, Content-Length\r\n\
Keep-Alive: timeout=5\r\nX-Hop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\nX-End: e\r\n\
Content-Length: 2\r\n\r\nok",
            ],
            Method::GET,
        )
        .await
        .unwrap();
        assert_eq!(s, 200);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        // Content-Length, though named by Connection, still framed the body.
        assert_eq!(names, ["x-end"]);
        assert_eq!(&b[..], b"ok");
        assert!(reuse);

        // More named fields than remembered: Connection stays for the proxy.
        let (_, h, _, _) = run(
            vec![
                b"HTTP/1.1 200 OK\r\nConnection: a, b, c, d, e, f, g, h, i\r\nA: 1\r\nI: 9\r\n\
Content-Length: 0\r\n\r\n",
            ],
            Method::GET,
        )
        .await
        .unwrap();
        assert!(h.contains_key("connection"));
        assert!(!h.contains_key("a"));
        assert!(h.contains_key("i"));
    }

    #[tokio::test]
    async fn an_unread_but_buffered_rest_still_frees_the_connection() {
        let (io, _task) = backend(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"]).await;
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), &[]);
        let mut body = RawConn::new(io)
            .exchange(&head, &Method::GET)
            .await
            .unwrap()
            .into_body();
        assert!(body.take_idle().is_none(), "not read yet");
        assert!(body.take_idle_discarding_rest().is_some());

        // A rest still on the wire is not waited for.
        let (io, _task) = backend(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"]).await;
        let mut body = RawConn::new(io)
            .exchange(&head, &Method::GET)
            .await
            .unwrap()
            .into_body();
        assert!(body.take_idle_discarding_rest().is_none());
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close_are_not_reused() {
        let (io, _task) = backend(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil eof"]).await;
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), &[]);
        let resp = RawConn::new(io)
            .exchange(&head, &Method::GET)
            .await
            .unwrap();
        let mut body = resp.into_body();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "until eof");
        assert!(body.take_idle().is_none());

        let (_, _, b, reuse) = run(
            vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            Method::GET,
        )
        .await
        .unwrap();
        assert_eq!(&b[..], b"ok");
        assert!(!reuse);
        let (_, _, _, reuse) = run(
            vec![b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            Method::GET,
        )
        .await
        .unwrap();
        assert!(!reuse);
    }

    #[tokio::test]
    async fn malformed_responses_are_errors_not_panics() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\u{a0}\r\n\r\nx".as_bytes(),
            b"HTTP/1.1 101 Switching\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
        ] {
            let r = run(vec![reply], Method::GET).await;
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(reply));
        }
    }

    #[tokio::test]
    async fn truncated_body_is_an_error_and_silence_is_closed() {
        let (io, task) = backend(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), &[]);
        let resp = RawConn::new(io)
            .exchange(&head, &Method::GET)
            .await
            .unwrap();
        task.await.unwrap();
        let r = resp.into_body().collect().await;
        assert!(r.is_err());

        // A backend that reads the request and closes without a word.
        let (io, _task) = backend(vec![]).await;
        let r = RawConn::new(io).exchange(&head, &Method::GET).await;
        assert!(matches!(r, Err(e) if e.nothing_received()));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"1A;name=v").unwrap(), 26);
        assert_eq!(chunk_size(b"1a \t; a=\"q s\";b").unwrap(), 26);
        assert_eq!(chunk_size(b"5 ").unwrap(), 5);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert!(chunk_size(b"0x5").is_err());
        assert!(chunk_size(b"1234567890abcdef0").is_err());
        // Only blanks, then a `;`, may follow the digits.
        assert!(chunk_size(b"5 x").is_err());
        assert!(chunk_size(b"5x").is_err());
        // A bare CR (or any control but HTAB) in an extension.
        assert!(chunk_size(b"5;a\rb").is_err());
        assert!(chunk_size(b"5;a\0").is_err());
    }

    /// Decodes `input` in one piece with `framing`: the body, or the error.
    fn decode_all(mut framing: Framing, input: &[u8]) -> Result<(Vec<u8>, usize), ExchangeError> {
        let mut buf = BytesMut::from(input);
        let mut body = Vec::new();
        loop {
            match framing.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok((body, buf.len())),
                Decoded::More => {
                    framing.at_eof()?;
                    return Ok((body, 0));
                }
            }
        }
    }

    fn head_of(input: &[u8], method: &Method) -> Result<Option<Head>, ExchangeError> {
        parse_head(&mut BytesMut::from(input), method, false)
    }

    /// A head's fields as lines.
    fn lines_of(input: &[u8], method: &Method) -> RawFields {
        match asked_lines(input, method) {
            Fields::Lines(lines) => lines,
            Fields::Map(_) => panic!("no lines"),
        }
    }

    /// A head's fields, lines asked for.
    fn asked_lines(input: &[u8], method: &Method) -> Fields {
        parse_head(&mut BytesMut::from(input), method, true)
            .unwrap()
            .unwrap()
            .fields
    }

    #[test]
    fn heads_with_many_fields_keep_them_all() {
        for n in [24, 25, MAX_HEADERS - 2] {
            let mut input = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n".to_vec();
            for i in 0..n {
                input.extend_from_slice(format!("X-{i}: v{i}\r\n").as_bytes());
            }
            input.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            let head = head_of(&input, &Method::GET).unwrap().unwrap();
            // Connection is hop-by-hop: gone; the rest kept, in order.
            let headers = head.fields.into_map().unwrap();
            assert_eq!(headers.len(), n + 1, "{n}");
            assert!(headers.get(header::CONNECTION).is_none());
            for i in [0, n / 2, n - 1] {
                assert_eq!(headers[format!("x-{i}")], format!("v{i}"), "{n}");
            }
        }
    }

    #[test]
    fn a_head_over_the_limit_is_refused_in_one_piece_too() {
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        assert!(matches!(
            head_of(&big, &Method::GET),
            Err(ExchangeError::Invalid("response head too large"))
        ));
        big.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(
            head_of(&big, &Method::GET),
            Err(ExchangeError::Invalid("response head too large"))
        ));
    }

    #[test]
    fn a_chunk_line_over_the_limit_is_refused_in_one_read_too() {
        let chunked = || Framing::Chunked(Chunk::Size);
        // Found by fuzz/ h1_chunked: a longer line passed when it came in
        // one read, and was refused when it came in several.
        let mut long = b"1;".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert!(matches!(
            decode_all(chunked(), &long),
            Err(ExchangeError::Invalid(_))
        ));
        // The longest line accepted: its LF at index MAX_LINE.
        let mut longest = b"1;".to_vec();
        longest.resize(MAX_LINE - 1, b'x');
        longest.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(decode_all(chunked(), &longest).unwrap(), (b"a".to_vec(), 0));
    }

    #[test]
    fn chunked_lines_and_trailers_are_checked() {
        let chunked = || Framing::Chunked(Chunk::Size);
        let (body, rest) = decode_all(chunked(), b"3;x\r\nabc\r\n0\r\nX-T: 1\r\n\r\nnext").unwrap();
        assert_eq!((&body[..], rest), (&b"abc"[..], 4));
        for bad in [
            &b"0\r\nno colon\r\n\r\n"[..],
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX-T: a\rb\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(decode_all(chunked(), bad), Err(ExchangeError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Truncated is an i/o error, not a framing one.
        assert!(matches!(
            decode_all(chunked(), b"3\r\nab"),
            Err(ExchangeError::Io(_))
        ));
    }

    #[test]
    fn the_buffered_scan_agrees_with_decoding() {
        let mut big_trailers = b"5\r\nhello\r\n0\r\n".to_vec();
        for _ in 0..5 {
            big_trailers.extend_from_slice(b"X-T: ");
            big_trailers.resize(big_trailers.len() + 4000, b'a');
            big_trailers.extend_from_slice(b"\r\n");
        }
        big_trailers.extend_from_slice(b"\r\n");
        for input in [
            &b"3;x\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"[..],
            b"zz\r\nabc\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
            b"0\r\nX-T: 1\r\n folded\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            &big_trailers,
        ] {
            let decoded = decode_all(Framing::Chunked(Chunk::Size), input);
            let scanned = scan_chunked(Chunk::Size, input);
            assert_eq!(
                decoded.is_err(),
                scanned.is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            if let Ok(complete) = scanned {
                assert!(complete);
            }
        }
        // Incomplete but well-formed so far: more is needed, no error.
        assert!(!scan_chunked(Chunk::Size, b"5\r\nhel").unwrap());
        assert!(!scan_chunked(Chunk::Size, b"5\r\nhello\r\n0\r\nX-T").unwrap());
    }

    #[test]
    fn kept_fields_are_lines_as_sent_with_line_ends_made_crlf() {
        let input = b"HTTP/1.1 200 OK\r\nServer: s\r\nDate: d\r\nContent-Length: 2\r\n\
X-A:tight\r\nX-B:   padded\nConnection: keep-alive, X-Gone\r\nX-Gone: 1\r\n\
X-C: c\r\nX-D: d\r\n\r\nok";
        let f = lines_of(input, &Method::GET);
        let lines = "Server: s\r\nDate: d\r\nContent-Length: 2\r\nX-A: tight\r\n\
X-B: padded\r\nX-C: c\r\nX-D: d\r\n";
        assert_eq!(std::str::from_utf8(f.lines()).unwrap(), lines);
        assert!(f.has_date());
        assert_eq!(f.content_length(), Some(&b"2"[..]));
        assert_eq!(&lines[f.length_line().unwrap()], "Content-Length: 2\r\n");
        let map = f.into_map().unwrap();
        assert_eq!(map.len(), 7);
        assert_eq!(map["x-b"], "padded");
        assert_eq!(map[header::CONTENT_LENGTH], "2");
        // The same map as the map form of the head.
        let direct = head_of(input, &Method::GET).unwrap().unwrap().fields;
        assert_eq!(direct.into_map().unwrap(), map);
        // Connection naming more fields than are dropped here stays, for
        // the proxy's pass over a map.
        let mut many = b"HTTP/1.1 200 OK\r\nConnection: a1".to_vec();
        for i in 2..=MAX_NAMED + 1 {
            many.extend_from_slice(format!(", a{i}").as_bytes());
        }
        many.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let f = asked_lines(&many, &Method::GET);
        assert!(matches!(f, Fields::Map(_)), "{f:?}");
        // So do agreeing copies of Content-Length (written once, by a map).
        let f = asked_lines(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: 1\r\ncontent-length: 2\r\n\r\nok",
            &Method::GET,
        );
        assert!(matches!(f, Fields::Map(_)), "{f:?}");
        assert_eq!(
            f.into_map()
                .unwrap()
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .count(),
            2
        );
    }

    #[test]
    fn transfer_encoding_beats_content_length_and_ends_reuse() {
        let h = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(h.framing, Framing::Chunked(Chunk::Size)));
        assert!(!h.keep_alive);
        let headers = h.fields.into_map().unwrap();
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        assert!(headers.contains_key("x"));
        // HTTP/1.0 knows no transfer codings.
        assert!(head_of(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET
        )
        .is_err());
    }
}
