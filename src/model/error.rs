//! Why a change or an admin call was refused. Each variant maps to one HTTP
//! status; the message is what `{"error": "..."}` carries.

use http::StatusCode;

/// Why an admin call (or a change made by a service) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Malformed or out-of-range input.
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown pool {0:?}")]
    UnknownPool(String),
    #[error("pool {pool} has no version {version:?}")]
    UnknownVersion { pool: String, version: String },
    #[error("pool {0} has no rollout")]
    NoRollout(String),
    /// An endpoint or another named thing that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the current state (last version, weight above
    /// 0, rollout already running, ...).
    #[error("{0}")]
    Conflict(String),
    /// A revisioned write found that the record moved on since it was read
    /// (optimistic concurrency); the caller reads again and retries.
    #[error("the rollout changed meanwhile")]
    Stale,
    /// The config file could not be used; the running config is kept.
    #[error("{0}")]
    BadConfig(String),
    #[error("this instance has no config file to reload")]
    NoConfigFile,
    /// The change could not be made durable; nothing changed.
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// `[cluster]`: etcd cannot be reached, so the change cannot be made for
    /// the fleet; nothing changed here either.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        use AdminError::*;
        match self {
            BadRequest(_) | BadConfig(_) => StatusCode::BAD_REQUEST,
            UnknownPool(_) | UnknownVersion { .. } | NoRollout(_) | NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Conflict(_) | Stale | NoConfigFile => StatusCode::CONFLICT,
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Store(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn unknown_version(pool: &str, version: &str) -> AdminError {
        AdminError::UnknownVersion {
            pool: pool.to_string(),
            version: version.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(AdminError::BadRequest(String::new()).status(), 400);
        assert_eq!(AdminError::BadConfig(String::new()).status(), 400);
        assert_eq!(AdminError::UnknownPool("a".into()).status(), 404);
        assert_eq!(AdminError::unknown_version("a", "b").status(), 404);
        assert_eq!(AdminError::NoRollout("a".into()).status(), 404);
        assert_eq!(AdminError::Conflict(String::new()).status(), 409);
        assert_eq!(AdminError::Stale.status(), 409);
        assert_eq!(AdminError::NoConfigFile.status(), 409);
        assert_eq!(AdminError::PayloadTooLarge(String::new()).status(), 413);
        assert_eq!(AdminError::Store(String::new()).status(), 500);
        assert_eq!(AdminError::Unavailable(String::new()).status(), 503);
        assert_eq!(
            AdminError::unknown_version("app", "v9").to_string(),
            "pool app has no version \"v9\""
        );
    }
}
