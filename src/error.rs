//! Errors at the admin boundary. (`ConfigError` lives in `config`, `ProxyError`
//! in `proxy`, each next to the code that raises it.)

use http::StatusCode;

/// Why an admin call was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(AdminError::BadRequest(String::new()).status(), 400);
        assert_eq!(AdminError::NotFound(String::new()).status(), 404);
        assert_eq!(AdminError::Conflict(String::new()).status(), 409);
        assert_eq!(AdminError::Internal(String::new()).status(), 500);
    }
}
