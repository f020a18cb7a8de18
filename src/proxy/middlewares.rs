//! A route's middlewares on the request path.
//!
//! ```text
//! request ─> m1 ─> m2 ─> ... ─> pool           (request side, route order)
//!                  │ answers itself (401/403/429/30x): only m1 wraps it
//! response <─ m1 <─ m2 <─ ... <─ backend        (response side, reverse order)
//! ```
//!
//! The onion is Traefik's: a middleware's response side applies to every
//! answer from further in, its own rejections excluded. `compress` wraps
//! the body in [`Encoded`], which streams: it compresses what the backend
//! sent and flushes whenever the backend has nothing more ready, so a
//! client sees bytes as soon as the backend sends them.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame};

use super::{plain, BodyError, Peer, ProxyBody, RequestBody};
use crate::config::{CompressConfig, Encoding, RateKey};
use crate::middleware::auth::AuthOutcome;
use crate::middleware::compress::{negotiate, worth_it, Encoder};
use crate::middleware::{add_prefix, client_ip, strip_prefix, Kind, Middleware};

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// What the response side needs to know from the request side.
pub struct Plan<'r> {
    /// How many middlewares ran on the request (their response sides apply).
    pub ran: usize,
    /// The coding the client accepts, with the `compress` middleware's
    /// config, the method and whether the request asked for a range.
    compress: Option<(Encoding, &'r CompressConfig, Method, bool)>,
}

/// Runs the request side of `chain` in order. `Err` is an answer a
/// middleware gave itself, already wrapped by the response sides of the
/// middlewares before it.
pub async fn request_side<'r>(
    chain: &'r [std::sync::Arc<Middleware>],
    req: &mut Request<RequestBody>,
    peer: Peer,
    host: &str,
) -> Result<Plan<'r>, Response<ProxyBody>> {
    let mut plan = Plan {
        ran: 0,
        compress: None,
    };
    for (i, m) in chain.iter().enumerate() {
        if let Some(mut resp) = one(m, req, peer, host, &mut plan).await {
            m.count_rejection(resp.status());
            plan.ran = i;
            response_side(chain, &plan, &mut resp, peer.https);
            return Err(resp);
        }
        plan.ran = i + 1;
    }
    Ok(plan)
}

/// One middleware's request side; `Some` when it answers itself.
async fn one<'r>(
    m: &'r Middleware,
    req: &mut Request<RequestBody>,
    peer: Peer,
    host: &str,
    plan: &mut Plan<'r>,
) -> Option<Response<ProxyBody>> {
    match &m.kind {
        Kind::Headers(h) => h.apply_request(req.headers_mut()),
        Kind::BasicAuth(a) => {
            let user = match a.check(req.headers()) {
                AuthOutcome::Allowed(user) => user,
                AuthOutcome::Denied => return Some(unauthorized(&a.challenge)),
                AuthOutcome::Slow(job) => {
                    let done = tokio::task::spawn_blocking(move || (job.run(), job)).await;
                    match done {
                        Ok((true, job)) => {
                            a.remember(job.key, job.user.clone());
                            job.user
                        }
                        _ => return Some(unauthorized(&a.challenge)),
                    }
                }
            };
            if a.remove_header {
                req.headers_mut().remove(header::AUTHORIZATION);
            }
            if let Some(f) = &a.header_field {
                if let Ok(v) = HeaderValue::try_from(&*user) {
                    req.headers_mut().insert(f.clone(), v);
                }
            }
        }
        Kind::IpAllow(a) => {
            if !a.allows(peer.addr.ip(), req.headers()) {
                return Some(plain(
                    StatusCode::FORBIDDEN,
                    "403 Forbidden: not allowed from this address\n",
                ));
            }
        }
        Kind::RateLimit(l) => {
            let c = &l.config;
            let ip = || {
                client_ip(peer.addr.ip(), req.headers(), c.trusted_proxies)
                    .unwrap_or(peer.addr.ip())
            };
            let checked = match &c.per {
                RateKey::Header(h) => match req.headers().get(h) {
                    Some(v) => l.check(v.as_bytes()),
                    None => l.check(&ip_key(ip())),
                },
                RateKey::ClientIp => l.check(&ip_key(ip())),
            };
            if let Err(wait) = checked {
                return Some(too_many(wait));
            }
        }
        Kind::Compress(c) => {
            if plan.compress.is_none() {
                let ranged = req.headers().contains_key(header::RANGE);
                plan.compress = negotiate(req.headers(), &c.encodings)
                    .map(|e| (e, c, req.method().clone(), ranged));
            }
        }
        Kind::StripPrefix(prefixes) => {
            if let Some((path, prefix)) = strip_prefix(prefixes, req.uri().path()) {
                set_path(req, &path);
                if let Ok(v) = HeaderValue::try_from(prefix) {
                    req.headers_mut().insert(X_FORWARDED_PREFIX.clone(), v);
                }
            }
        }
        Kind::AddPrefix(prefix) => {
            let path = add_prefix(prefix, req.uri().path());
            set_path(req, &path);
        }
        Kind::RedirectRegex(r) => {
            let scheme = if peer.https { "https" } else { "http" };
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let url = format!("{scheme}://{host}{pq}");
            if let Some((status, location)) = r.redirect(req.method(), &url) {
                let mut resp = plain(status, format!("{} {location}\n", status.as_u16()));
                if let Ok(v) = HeaderValue::try_from(location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return Some(resp);
            }
        }
    }
    None
}

/// A rate limit key for an address: its 16 bytes (IPv4 mapped), on the stack.
fn ip_key(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn unauthorized(challenge: &HeaderValue) -> Response<ProxyBody> {
    let mut r = plain(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge.clone());
    r
}

fn too_many(wait: std::time::Duration) -> Response<ProxyBody> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "429 Too Many Requests: rate limit reached\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// Replaces the request's path, keeping its query.
fn set_path(req: &mut Request<RequestBody>, path: &str) {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let Ok(pq) = http::uri::PathAndQuery::try_from(pq) else {
        return;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(u) = Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
}

/// The response sides of the middlewares that ran, innermost first.
pub fn response_side(
    chain: &[std::sync::Arc<Middleware>],
    plan: &Plan<'_>,
    resp: &mut Response<ProxyBody>,
    https: bool,
) {
    for m in chain[..plan.ran.min(chain.len())].iter().rev() {
        match &m.kind {
            Kind::Headers(h) => h.apply_response(resp.headers_mut(), https),
            Kind::Compress(c) => compress(c, plan, resp),
            _ => {}
        }
    }
}

/// Compresses the response when it is worth it and the client accepts a
/// coding; says `Vary: Accept-Encoding` for every response whose type
/// could be compressed.
fn compress(c: &CompressConfig, plan: &Plan<'_>, resp: &mut Response<ProxyBody>) {
    let type_ok = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| crate::middleware::compress::type_matches(&c.types, ct));
    if !type_ok {
        return;
    }
    vary_accept_encoding(resp.headers_mut());
    let Some((enc, cfg, method, ranged)) = &plan.compress else {
        return;
    };
    if !std::ptr::eq(*cfg, c) || !worth_it(c, method, *ranged, resp.status(), resp.headers()) {
        return;
    }
    let Ok(encoder) = Encoder::new(*enc) else {
        return;
    };
    let h = resp.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(enc.as_str()),
    );
    // The compressed bytes are not the entity the strong tag names.
    if let Some(tag) = h.get(header::ETAG).cloned() {
        if tag.as_bytes().starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(tag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                h.insert(header::ETAG, v);
            }
        }
    }
    let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
    *resp.body_mut() = ProxyBody::Encoded(Box::new(Encoded {
        inner: body,
        encoder: Some(encoder),
        unflushed: false,
    }));
}

fn vary_accept_encoding(h: &mut http::HeaderMap) {
    let has = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*");
    if !has {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A body compressed as it streams.
pub struct Encoded {
    pub(super) inner: ProxyBody,
    encoder: Option<Encoder>,
    /// Bytes went in since the last flush.
    unflushed: bool,
}

/// Output held back before it is passed on even while input keeps coming.
const CHUNK: usize = 32 * 1024;

impl Encoded {
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(enc) = self.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped: the encoding frames the body anew.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Err(e) = enc.write(&data) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    self.unflushed = true;
                    if enc.pending() >= CHUNK {
                        return Poll::Ready(Some(Ok(Frame::data(enc.take()))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let Some(enc) = self.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    return match enc.finish() {
                        Ok(last) => Poll::Ready(Some(Ok(Frame::data(last)))),
                        Err(e) => Poll::Ready(Some(Err(e.into()))),
                    };
                }
                Poll::Pending => {
                    if self.unflushed {
                        self.unflushed = false;
                        if let Err(e) = enc.flush() {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        let out = enc.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}
