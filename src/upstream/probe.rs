//! One active probe of a backend: a fresh connection, `GET path`, a status
//! in range. Used by the health checker and the rollout's smoke gate.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthConfig;

/// Why a probe failed (for the event text).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
}

/// One probe: a fresh connection, `GET path`, a status within `status`.
/// With `hc.port`, the backend's host on that port instead of its own.
pub async fn probe(addr: &str, hc: &HealthConfig) -> Result<StatusCode, ProbeError> {
    let moved;
    let addr = match (hc.port, addr.rsplit_once(':')) {
        (Some(port), Some((host, _))) => {
            moved = format!("{host}:{port}");
            moved.as_str()
        }
        _ => addr,
    };
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(ProbeError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ProbeError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = hc.host.as_deref().unwrap_or(addr);
        let req = Request::get(hc.path.as_str())
            .header(http::header::HOST, host)
            .header(
                http::header::USER_AGENT,
                concat!("switchyard-health/", env!("CARGO_PKG_VERSION")),
            )
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|_| ProbeError::Status(StatusCode::BAD_REQUEST))?;
        let resp = tx.send_request(req).await.map_err(ProbeError::Http)?;
        let status = resp.status();
        if (hc.status.0..=hc.status.1).contains(&status.as_u16()) {
            Ok(status)
        } else {
            Err(ProbeError::Status(status))
        }
    };
    match tokio::time::timeout(hc.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout),
    }
}
