//! The dashboard's two gates: the bearer token (every `/v1` call) and the
//! same-origin check (every change, against CSRF).
//!
//! The token is read once at start from `admin.token_file`, which must be a
//! regular file that neither group nor others may read or write (0600 or
//! stricter). Tokens are compared in constant time.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use http::{header, HeaderMap};

use super::DashboardError;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The dashboard's shared secret.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

// === impl Token ===

impl Token {
    /// Reads and checks the token file: present, a regular file, mode 0600 or
    /// stricter, one non-empty token of printable ASCII (surrounding
    /// whitespace and a trailing newline are ignored).
    pub fn load(path: &Path) -> Result<Token, DashboardError> {
        let p = || path.display().to_string();
        let read = |source| DashboardError::TokenRead { path: p(), source };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() {
            return Err(DashboardError::TokenNotAFile { path: p() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(DashboardError::TokenMode { path: p(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(DashboardError::TokenEmpty { path: p() });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DashboardError::TokenChars { path: p() });
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(DashboardError::TokenShort {
                path: p(),
                len: token.len(),
            });
        }
        tracing::debug!(path = %path.display(), uid = meta.uid(), "dashboard token loaded");
        Ok(Token(token.as_bytes().to_vec()))
    }

    /// A token from memory (tests and embedding).
    pub fn from_secret(secret: &str) -> Token {
        Token(secret.as_bytes().to_vec())
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`. The
    /// comparison takes the same time wherever the first difference is.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(scheme_end) = value.iter().position(|&b| b == b' ') else {
            return false;
        };
        if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let given = value[scheme_end..].trim_ascii();
        constant_time_eq(&self.0, given)
    }
}

/// Compares two byte strings without an early exit: the time depends on the
/// length of `expected` only (a length mismatch is folded into the result).
pub fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != given.len());
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= e ^ g;
    }
    std::hint::black_box(diff) == 0
}

/// Why a change was refused by the same-origin check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("refused: the request has no Host header")]
    NoHost,
    #[error("refused: a change needs an Origin or Referer header from the dashboard's own page")]
    Missing,
    #[error("refused: a change from {seen} is cross-origin (the dashboard is {expected})")]
    Foreign { seen: String, expected: String },
}

/// The same-origin check for changes: `Origin` (or `Referer` when there is no
/// Origin) must name the dashboard itself, `http://<Host>` (or `https://<Host>`
/// behind a TLS front end). Browsers send `Origin` on every POST/PUT/DELETE,
/// and a page on another origin cannot forge it.
pub fn check_same_origin(headers: &HeaderMap) -> Result<(), OriginError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(OriginError::NoHost)?;
    let seen = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().unwrap_or("").trim().to_string(),
        None => match headers.get(header::REFERER) {
            // The origin part of the referrer: scheme://authority.
            Some(r) => {
                let r = r.to_str().unwrap_or("");
                match r.find("://") {
                    Some(i) => {
                        let rest = &r[i + 3..];
                        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                        format!("{}://{}", &r[..i], &rest[..end])
                    }
                    None => r.to_string(),
                }
            }
            None => return Err(OriginError::Missing),
        },
    };
    let ok = ["http://", "https://"].iter().any(|scheme| {
        seen.len() == scheme.len() + host.len()
            && seen[..scheme.len()].eq_ignore_ascii_case(scheme)
            && seen.is_char_boundary(scheme.len())
            && seen[scheme.len()..].eq_ignore_ascii_case(host)
    });
    if ok {
        Ok(())
    } else {
        Err(OriginError::Foreign {
            seen: if seen.is_empty() {
                "an empty origin".into()
            } else {
                seen
            },
            expected: format!("http://{host}"),
        })
    }
}

/// The token file of a config, or the error that the dashboard needs one.
pub fn token_path(admin: &crate::config::AdminConfig) -> Result<PathBuf, DashboardError> {
    admin.token_file.clone().ok_or(DashboardError::NoTokenFile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn token_file(mode: u32, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn constant_time_eq_is_plain_equality() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token2"));
        assert!(!constant_time_eq(b"secret-token", b"secret"));
        assert!(!constant_time_eq(b"secret-token", b""));
        assert!(!constant_time_eq(b"\0", b""));
    }

    #[test]
    fn bearer_token_is_required_exactly() {
        let t = Token::from_secret("0123456789abcdef");
        assert!(t.authorizes(&headers(&[("authorization", "Bearer 0123456789abcdef")])));
        assert!(t.authorizes(&headers(&[("authorization", "bearer  0123456789abcdef ")])));
        assert!(!t.authorizes(&headers(&[])));
        assert!(!t.authorizes(&headers(&[("authorization", "Bearer 0123456789abcdeX")])));
        assert!(!t.authorizes(&headers(&[("authorization", "Basic 0123456789abcdef")])));
        assert!(!t.authorizes(&headers(&[("authorization", "0123456789abcdef")])));
        assert!(!t.authorizes(&headers(&[("authorization", "Bearer ")])));
    }

    #[test]
    fn token_file_must_be_private_and_non_empty() {
        let (_d, p) = token_file(0o600, "0123456789abcdef0123\n");
        assert!(Token::load(&p).unwrap().authorizes(&headers(&[(
            "authorization",
            "Bearer 0123456789abcdef0123"
        )])));
        let (_d, p) = token_file(0o400, "0123456789abcdef0123");
        assert!(Token::load(&p).is_ok());
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let (_d, p) = token_file(mode, "0123456789abcdef0123");
            let e = Token::load(&p).unwrap_err();
            assert!(
                matches!(e, DashboardError::TokenMode { .. }),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let (_d, p) = token_file(0o600, " \n");
        assert!(matches!(
            Token::load(&p),
            Err(DashboardError::TokenEmpty { .. })
        ));
        let (_d, p) = token_file(0o600, "short");
        assert!(matches!(
            Token::load(&p),
            Err(DashboardError::TokenShort { len: 5, .. })
        ));
        let (_d, p) = token_file(0o600, "0123456789 abcdef0123");
        assert!(matches!(
            Token::load(&p),
            Err(DashboardError::TokenChars { .. })
        ));
        let (d, _) = token_file(0o600, "x");
        assert!(matches!(
            Token::load(&d.path().join("missing")),
            Err(DashboardError::TokenRead { .. })
        ));
        assert!(matches!(
            Token::load(d.path()),
            Err(DashboardError::TokenNotAFile { .. })
        ));
    }

    #[test]
    fn changes_must_come_from_the_dashboard_itself() {
        let host = ("host", "127.0.0.1:9091");
        assert_eq!(
            check_same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9091")])),
            Ok(())
        );
        assert_eq!(
            check_same_origin(&headers(&[
                ("host", "LocalHost:8443"),
                ("origin", "https://localhost:8443")
            ])),
            Ok(())
        );
        assert_eq!(
            check_same_origin(&headers(&[host, ("referer", "http://127.0.0.1:9091/?x=1")])),
            Ok(())
        );
        assert_eq!(
            check_same_origin(&headers(&[host])),
            Err(OriginError::Missing)
        );
        assert_eq!(
            check_same_origin(&headers(&[("origin", "http://127.0.0.1:9091")])),
            Err(OriginError::NoHost)
        );
        for bad in [
            "http://evil.example",
            "http://127.0.0.1:9092",
            "http://127.0.0.1:90910",
            "http://127.0.0.1",
            "null",
            "ftp://127.0.0.1:9091",
        ] {
            assert!(
                matches!(
                    check_same_origin(&headers(&[host, ("origin", bad)])),
                    Err(OriginError::Foreign { .. })
                ),
                "{bad}"
            );
        }
        // A foreign Origin is not rescued by a matching Referer.
        assert!(check_same_origin(&headers(&[
            host,
            ("origin", "http://evil.example"),
            ("referer", "http://127.0.0.1:9091/")
        ]))
        .is_err());
        assert!(check_same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:9091.evil.example/")
        ]))
        .is_err());
    }
}
