//! `basic_auth`: users from htpasswd files as Apache's `htpasswd` writes
//! them (bcrypt `$2y$`, apr1 MD5-crypt `$apr1$`, SHA1 `{SHA}`), checked in
//! constant time.
//!
//! ```text
//! Authorization: Basic b64(user:pass) ─> cache hit? ─> allowed
//!                                     └─> user's hash: apr1 / SHA1 inline,
//!                                         bcrypt off the runtime (slow by design)
//! ```
//!
//! A credential that passed once is remembered (a keyed hash of the whole
//! header value, at most [`CACHE_MAX`] of them) until the next reload, so a
//! bcrypt cost is paid once per client, not once per request. The file is
//! read when the config is loaded or reloaded, never on the request path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use subtle::ConstantTimeEq;

use crate::config::BasicAuthConfig;

/// Most remembered credentials per middleware.
pub const CACHE_MAX: usize = 4096;
/// Largest users file read.
const MAX_FILE: u64 = 4 << 20;

/// A password hash from an htpasswd line.
enum Hash {
    Bcrypt(String),
    Apr1 { salt: String, checksum: String },
    Sha1([u8; 20]),
}

/// One `basic_auth` middleware, loaded.
pub struct BasicAuth {
    users: HashMap<String, Hash>,
    /// `Basic realm="..."`, made once.
    pub challenge: HeaderValue,
    pub remove_header: bool,
    pub header_field: Option<HeaderName>,
    /// Where the users came from, for the state view.
    pub source: String,
    seed: std::collections::hash_map::RandomState,
    cache: Mutex<HashMap<u64, Arc<str>>>,
}

/// What a request's credentials come to.
pub enum AuthOutcome {
    Allowed(Arc<str>),
    Denied,
    /// A bcrypt hash to check: slow, so the caller runs [`SlowCheck::run`]
    /// off the runtime's workers and then [`BasicAuth::remember`]s a pass.
    Slow(SlowCheck),
}

/// A bcrypt verification to run on a blocking thread.
pub struct SlowCheck {
    hash: String,
    password: String,
    pub user: Arc<str>,
    pub key: u64,
}

impl SlowCheck {
    /// Verifies (blocking: bcrypt takes milliseconds to seconds by design).
    pub fn run(&self) -> bool {
        bcrypt::verify(self.password.as_bytes(), &self.hash).unwrap_or(false)
    }
}

impl BasicAuth {
    /// Loads the users (the file, then inline `users`). Returns the problems
    /// found (unreadable file, lines it cannot use); those lines are left
    /// out and a middleware without users denies everyone.
    pub fn load(cfg: &BasicAuthConfig) -> (BasicAuth, Vec<String>) {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        if let Some(path) = &cfg.users_file {
            sources.push(path.display().to_string());
            match read_bounded(path) {
                Ok(text) => parse_into(
                    &text,
                    &path.display().to_string(),
                    &mut users,
                    &mut problems,
                ),
                Err(e) => problems.push(format!(
                    "basic_auth users_file {}: {e}; nobody can sign in until it can be read",
                    path.display()
                )),
            }
        }
        if !cfg.users.is_empty() {
            sources.push(format!("{} inline", cfg.users.len()));
            parse_into(
                &cfg.users.join("\n"),
                "basic_auth.users",
                &mut users,
                &mut problems,
            );
        }
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{}\"", cfg.realm))
            .unwrap_or(HeaderValue::from_static("Basic realm=\"switchyard\""));
        let auth = BasicAuth {
            source: format!("{} user(s) from {}", users.len(), sources.join(", ")),
            users,
            challenge,
            remove_header: cfg.remove_header,
            header_field: cfg.header_field.clone(),
            seed: Default::default(),
            cache: Mutex::new(HashMap::new()),
        };
        (auth, problems)
    }

    /// Checks a request's `Authorization`.
    pub fn check(&self, headers: &HeaderMap) -> AuthOutcome {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return AuthOutcome::Denied;
        };
        let key = {
            let mut h = self.seed.build_hasher();
            h.write(value.as_bytes());
            h.finish()
        };
        if let Some(user) = self.lock_cache().get(&key) {
            return AuthOutcome::Allowed(user.clone());
        }
        let Some((user, password)) = credentials(value.as_bytes()) else {
            return AuthOutcome::Denied;
        };
        let Some(hash) = self.users.get(&user) else {
            return AuthOutcome::Denied;
        };
        let user: Arc<str> = user.into();
        let ok = match hash {
            Hash::Bcrypt(h) => {
                return AuthOutcome::Slow(SlowCheck {
                    hash: h.clone(),
                    password,
                    user,
                    key,
                })
            }
            Hash::Apr1 { salt, checksum } => {
                let got = md5_crypt(password.as_bytes(), salt.as_bytes(), b"$apr1$");
                got.as_bytes().ct_eq(checksum.as_bytes()).into()
            }
            Hash::Sha1(want) => {
                use sha1::Digest;
                let got = sha1::Sha1::digest(password.as_bytes());
                got.as_slice().ct_eq(want.as_slice()).into()
            }
        };
        if ok {
            self.remember(key, user.clone());
            AuthOutcome::Allowed(user)
        } else {
            AuthOutcome::Denied
        }
    }

    /// Remembers a credential that passed.
    pub fn remember(&self, key: u64, user: Arc<str>) {
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, user);
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<str>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a users file: a regular file of at most [`MAX_FILE`].
fn read_bounded(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {} MiB", MAX_FILE >> 20));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Parses htpasswd lines (`user:hash`; blank lines and `#` comments skipped).
fn parse_into(
    text: &str,
    source: &str,
    users: &mut HashMap<String, Hash>,
    problems: &mut Vec<String>,
) {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            problems.push(format!("{source}: line {}: not user:hash", i + 1));
            continue;
        };
        match parse_hash(hash) {
            Some(h) => {
                users.insert(user.to_string(), h);
            }
            None => problems.push(format!(
                "{source}: line {} (user {user}): unsupported hash; use htpasswd -B (bcrypt), -m (apr1 MD5) or -s (SHA1)",
                i + 1
            )),
        }
    }
}

fn parse_hash(h: &str) -> Option<Hash> {
    if ["$2y$", "$2b$", "$2a$", "$2x$"]
        .iter()
        .any(|p| h.starts_with(p))
    {
        return Some(Hash::Bcrypt(h.to_string()));
    }
    if let Some(rest) = h.strip_prefix("$apr1$") {
        let (salt, checksum) = rest.split_once('$')?;
        if salt.len() > 8 || checksum.len() != 22 {
            return None;
        }
        return Some(Hash::Apr1 {
            salt: salt.to_string(),
            checksum: checksum.to_string(),
        });
    }
    if let Some(b64) = h.strip_prefix("{SHA}") {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        return raw.try_into().ok().map(Hash::Sha1);
    }
    None
}

/// `Basic b64(user:password)` -> (user, password).
fn credentials(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, b64) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// MD5-crypt (Poul-Henning Kamp's FreeBSD algorithm) with a given magic:
/// `$1$` for crypt(3), `$apr1$` for Apache. Returns the 22-character
/// checksum. MD5 itself comes from the `md-5` crate.
pub fn md5_crypt(password: &[u8], salt: &[u8], magic: &[u8]) -> String {
    use md5::{Digest, Md5};
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let f = |i: usize| u32::from(fin[i]);
    let mut out = String::with_capacity(22);
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    push(f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_apache() {
        assert_eq!(
            md5_crypt(b"password", b"RandSalt", b"$apr1$"),
            "PgCXHRrkpSt4cbyC2C6bm/"
        );
        assert_eq!(
            md5_crypt(b"foo", b"mYJd83wW", b"$apr1$"),
            "IO.6aK3G0d4mHxcImhPX50"
        );
        // crypt(3)'s $1$ is the same algorithm with another magic.
        assert_eq!(
            md5_crypt(b"password", b"5pZSV9va", b"$1$"),
            "azfrPr6af3Fc7dLblQXVa0"
        );
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert("authorization", format!("Basic {v}").parse().unwrap());
        h
    }

    #[test]
    fn checks_apr1_sha1_and_bcrypt_lines() {
        let bcrypt_hash = bcrypt::hash_with_salt("s3cret", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let cfg = BasicAuthConfig {
            users_file: None,
            users: vec![
                "ann:$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/".into(),
                // htpasswd -s: {SHA} + base64(sha1("password"))
                "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".into(),
                format!("cid:{bcrypt_hash}"),
                "dan:plaintext".into(),
            ],
            realm: "ops".into(),
            remove_header: false,
            header_field: None,
        };
        let (auth, problems) = BasicAuth::load(&cfg);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(auth.challenge, "Basic realm=\"ops\"");
        assert!(matches!(
            auth.check(&basic("ann", "password")),
            AuthOutcome::Allowed(_)
        ));
        assert!(matches!(
            auth.check(&basic("ann", "wrong")),
            AuthOutcome::Denied
        ));
        assert!(matches!(
            auth.check(&basic("bob", "password")),
            AuthOutcome::Allowed(_)
        ));
        assert!(matches!(
            auth.check(&basic("eve", "password")),
            AuthOutcome::Denied
        ));
        assert!(matches!(auth.check(&HeaderMap::new()), AuthOutcome::Denied));
        match auth.check(&basic("cid", "s3cret")) {
            AuthOutcome::Slow(job) => {
                assert!(job.run());
                auth.remember(job.key, job.user.clone());
            }
            _ => panic!("bcrypt is checked off the runtime"),
        }
        assert!(matches!(
            auth.check(&basic("cid", "s3cret")),
            AuthOutcome::Allowed(_)
        ));
        match auth.check(&basic("cid", "nope")) {
            AuthOutcome::Slow(job) => assert!(!job.run()),
            _ => panic!(),
        }
    }
}
