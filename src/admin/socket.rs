//! The admin socket: bound with mode 0600, served with the shared listener
//! helper; the caller is named by its peer uid in the audit log.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::dispatch::{handle_request, Api};
use crate::listener::{self, Slots};

/// How long a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once (more wait in the backlog).
pub const MAX_CONNECTIONS: usize = 64;

/// Binds the admin socket: any stale socket removed, created under a temp
/// name, set to 0600, then renamed into place, so no client ever sees it with
/// looser permissions.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let tmp: PathBuf = {
        let mut n = path.as_os_str().to_owned();
        n.push(format!(".{}.tmp", std::process::id()));
        n.into()
    };
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Serves the admin socket until `shutdown`.
pub async fn serve(
    api: Api,
    listener: UnixListener,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let conn_shutdown = shutdown.clone();
    listener::serve(
        "admin",
        listener,
        Slots::new(MAX_CONNECTIONS),
        tracker,
        shutdown,
        move |stream, (), permit| {
            let who = match stream.peer_cred() {
                Ok(c) => format!("uid:{}", c.uid()),
                Err(_) => "admin".to_string(),
            };
            let api = api.clone();
            let shutdown = conn_shutdown.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (api, who) = (api.clone(), who.clone());
                    async move { Ok::<_, Infallible>(handle_request(api, who, req).await) }
                });
                listener::http1(stream, svc, HEADER_TIMEOUT, shutdown).await;
                drop(permit);
            }
        },
    )
    .await;
}
