//! The smoke gate: every canary backend answers the smoke path, and the
//! webhook (if any) answers 2xx.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::config::HealthConfig;
use crate::control::Control;
use crate::model::rollout::Rollout;
use crate::upstream::probe::probe;

/// Runs the smoke gate of `r`.
pub async fn smoke(r: &Rollout, control: &Control) -> Result<(), String> {
    let config = control.effective_config();
    let backends = config
        .pools
        .get(r.pool.as_str())
        .and_then(|p| p.versions.get(&r.canary))
        .map(|v| v.backends.clone())
        .unwrap_or_default();
    if let Some(path) = &r.plan.smoke_path {
        let hc = HealthConfig {
            path: path.clone(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            rise: 1,
            fall: 1,
            status: r.plan.smoke_status,
            host: None,
            port: None,
        };
        for b in &backends {
            probe(b.as_str(), &hc)
                .await
                .map_err(|e| format!("smoke check {path} on {b}: {e}"))?;
        }
    }
    if let Some(url) = &r.plan.webhook {
        let body = json!({ "pool": r.pool, "canary": r.canary, "stable": r.stable, "phase": "pre-rollout" });
        webhook(url, body.to_string())
            .await
            .map_err(|e| format!("webhook {url}: {e}"))?;
    }
    Ok(())
}

/// POSTs `body` to a plain-HTTP webhook and wants a 2xx within 10 s.
async fn webhook(url: &str, body: String) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let authority = uri
        .authority()
        .ok_or("the URL has no host")?
        .as_str()
        .to_string();
    let target = format!(
        "{}:{}",
        uri.host().unwrap_or_default(),
        uri.port_u16().unwrap_or(80)
    );
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let call = async {
        let stream = tokio::net::TcpStream::connect(&target)
            .await
            .map_err(|e| e.to_string())?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post(path)
            .header(http::header::HOST, &authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", resp.status()))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "timed out".to_string())?
}
