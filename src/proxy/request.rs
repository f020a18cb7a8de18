//! What a request must be before it is routed: one host, a target the
//! proxy can forward, and the HTTP/2 fields an HTTP/1.1 backend needs
//! joined.
//!
//! ```text
//! CONNECT                      -> 405 (Allow: the methods proxied)
//! `*` target, not OPTIONS      -> 400
//! two Host fields              -> 400
//! authority (absolute-form URI or :authority) and a Host naming another -> 400
//! the host: the authority when there is one, else Host
//! ```
//!
//! Cheap on the common path (an origin-form HTTP/1.1 GET with one Host):
//! a method comparison, a look at the path's first byte, and one walk of
//! the Host values; no allocation.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};

use super::ProxyError;

/// What the `Allow` field of a 405 to CONNECT lists.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// Everything a request head must pass before it is routed: its target
/// ([`check_target`]), then its one host ([`request_host`]), which it
/// returns. `fuzz/fuzz_targets/request_head.rs` drives this with heads
/// parsed by hyper's parser.
pub fn vet<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    check_target(req)?;
    request_host(req)
}

/// Refuses what the proxy cannot forward: CONNECT (a tunnel, which a
/// reverse proxy does not open; its authority-form target would otherwise
/// go out as `CONNECT /`), and the asterisk form with any method but
/// OPTIONS (RFC 9112 section 3.2.4).
pub fn check_target<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if req.uri().path() == "*" && req.method() != Method::OPTIONS {
        return Err(ProxyError::BadRequest("the * target is for OPTIONS only"));
    }
    Ok(())
}

/// The request's one host: the authority of the target (an absolute-form
/// URI on HTTP/1.1, `:authority` on HTTP/2) when there is one, else the
/// Host field. More than one Host field, or a Host that names another
/// authority than the target's, is a 400 (as nginx answers a duplicate
/// Host; RFC 9113 section 8.3.1 for HTTP/2): whatever decides the route is
/// what the backend is told.
pub fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host field"));
    }
    if let Some(a) = req.uri().authority() {
        if a.as_str().contains('@') {
            return Err(ProxyError::BadRequest("user information in the target"));
        }
        return match host {
            Some(h) if h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => Ok(h.clone()),
            Some(_) => Err(ProxyError::BadRequest(
                "the Host field differs from the target's authority",
            )),
            None => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::NoHost),
        };
    }
    let h = host.ok_or(ProxyError::NoHost)?;
    if h.is_empty() || h.to_str().is_err() {
        return Err(ProxyError::NoHost);
    }
    Ok(h.clone())
}

/// Joins the `cookie` fields of an HTTP/2 request into one, separated by
/// "; ", for an HTTP/1.1 backend (RFC 9113 section 8.2.3: HTTP/2 clients
/// may split them, HTTP/1.1 allows one Cookie field). Only allocates when
/// there are several.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part is a valid field value and "; " is too.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_host_decides() {
        let host = |r: &Request<()>| request_host(r).map(|h| h.to_str().unwrap().to_string());
        assert_eq!(host(&req("GET", "/a", &["app.test"])).unwrap(), "app.test");
        assert_eq!(
            host(&req("GET", "http://app.test/a", &[])).unwrap(),
            "app.test"
        );
        assert_eq!(
            host(&req("GET", "http://App.Test/a", &["app.test"])).unwrap(),
            "app.test"
        );
        for bad in [
            req("GET", "/a", &["app.test", "internal.test"]),
            req("GET", "/a", &["app.test", "app.test"]),
            req("GET", "http://app.test/a", &["internal.test"]),
            req("GET", "http://u@app.test/a", &[]),
        ] {
            assert!(
                matches!(request_host(&bad), Err(ProxyError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            request_host(&req("GET", "/a", &[])),
            Err(ProxyError::NoHost)
        ));
    }

    #[test]
    fn connect_and_the_asterisk() {
        assert!(matches!(
            check_target(&req("CONNECT", "app.test:443", &["app.test"])),
            Err(ProxyError::MethodNotAllowed)
        ));
        assert!(check_target(&req("OPTIONS", "*", &["app.test"])).is_ok());
        assert!(matches!(
            check_target(&req("GET", "*", &["app.test"])),
            Err(ProxyError::BadRequest(_))
        ));
        assert!(check_target(&req("GET", "/", &["app.test"])).is_ok());
    }

    #[test]
    fn cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    }
}
