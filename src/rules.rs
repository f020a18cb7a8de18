//! Request matchers: a route's rule beyond its host (path, methods, headers,
//! query) and a pool's version rules (header, cookie or query -> version).
//!
//! ```text
//! config (validated, regexes compiled) ──> RouteRules / VersionRule
//! request (method, path, query, headers) ──matches──> bool / version
//! ```
//!
//! Pure: no I/O, no tokio. Matching allocates nothing unless a query value
//! has to be percent-decoded. Precedence between routes of one host
//! ([`RouteRules::rank`]) and shadowing ([`RouteRules::covers`]) are decided
//! here too, so `switchyard check` and the routing table agree.

use std::fmt;

use http::header::{HeaderMap, HeaderName};
use http::Method;
use serde::{Deserialize, Serialize};

/// A compiled regular expression that remembers its text (for equality,
/// display and the state view).
#[derive(Clone)]
pub struct Pattern {
    text: Box<str>,
    re: regex::Regex,
}

impl Pattern {
    /// Compiles `text`; the error says why it is not a regex.
    pub fn new(text: &str) -> Result<Pattern, String> {
        regex::RegexBuilder::new(text)
            .size_limit(1 << 20)
            .build()
            .map(|re| Pattern {
                text: text.into(),
                re,
            })
            .map_err(|e| format!("bad regex {text:?}: {}", first_line(&e.to_string())))
    }

    #[inline]
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    pub fn regex(&self) -> &regex::Regex {
        &self.re
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.text)
    }
}

/// How a value (header, query parameter, cookie) must look.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatch {
    /// Present, whatever the value.
    Any,
    Exact(Box<str>),
    Regex(Pattern),
}

impl ValueMatch {
    /// A route rule's value: `"~REGEX"` is a regex (`"~"` alone: present
    /// with any value), anything else the exact value.
    pub fn parse(raw: &str) -> Result<ValueMatch, String> {
        match raw.strip_prefix('~') {
            Some("") => Ok(ValueMatch::Any),
            Some(re) => Pattern::new(re).map(ValueMatch::Regex),
            None => Ok(ValueMatch::Exact(raw.into())),
        }
    }

    #[inline]
    pub fn matches(&self, v: &[u8]) -> bool {
        match self {
            ValueMatch::Any => true,
            ValueMatch::Exact(e) => e.as_bytes() == v,
            ValueMatch::Regex(p) => std::str::from_utf8(v).is_ok_and(|s| p.is_match(s)),
        }
    }

    /// The value as a route rule writes it.
    pub fn as_rule(&self) -> String {
        match self {
            ValueMatch::Any => "~".into(),
            ValueMatch::Exact(e) => e.to_string(),
            ValueMatch::Regex(p) => format!("~{}", p.as_str()),
        }
    }

    fn len(&self) -> usize {
        match self {
            ValueMatch::Any => 0,
            ValueMatch::Exact(e) => e.len(),
            ValueMatch::Regex(p) => p.as_str().len(),
        }
    }
}

/// A route's path condition.
#[derive(Debug, Clone, PartialEq)]
pub enum PathRule {
    /// `path`: the whole path, exactly.
    Exact(Box<str>),
    /// `path_prefix`: the path starts with it (a plain string prefix, as
    /// Traefik's `PathPrefix`).
    Prefix(Box<str>),
    /// `path_regex`: the regex finds a match in the path (anchor it with `^`
    /// and `$` to match the whole path).
    Regex(Pattern),
}

impl PathRule {
    #[inline]
    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(p) => path == &**p,
            PathRule::Prefix(p) => path.starts_with(&**p),
            PathRule::Regex(re) => re.is_match(path),
        }
    }

    fn value_len(&self) -> usize {
        match self {
            PathRule::Exact(p) | PathRule::Prefix(p) => p.len(),
            PathRule::Regex(re) => re.as_str().len(),
        }
    }

    /// Tie-break order between equally long rules: exact, prefix, regex.
    fn kind_order(&self) -> u8 {
        match self {
            PathRule::Exact(_) => 3,
            PathRule::Prefix(_) => 2,
            PathRule::Regex(_) => 1,
        }
    }

    /// Whether every path `other` matches, `self` matches too (as far as can
    /// be told without solving regexes).
    fn covers(&self, other: &PathRule) -> bool {
        match (self, other) {
            (PathRule::Prefix(a), PathRule::Prefix(b) | PathRule::Exact(b)) => b.starts_with(&**a),
            (PathRule::Exact(a), PathRule::Exact(b)) => a == b,
            (PathRule::Regex(a), PathRule::Regex(b)) => a == b,
            (PathRule::Regex(a), PathRule::Exact(b)) => a.is_match(b),
            _ => false,
        }
    }
}

/// What a request offers to route rules.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A route's conditions beyond its host. All must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRules {
    pub path: Option<PathRule>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(Box<str>, ValueMatch)>,
    /// Explicit `priority`: replaces the rule's length in the precedence.
    pub priority: Option<u32>,
}

impl RouteRules {
    /// `r` in an `Arc`, or, when `r` has no condition at all, the one empty
    /// set every host-only route shares (136 bytes each otherwise).
    pub fn shared(r: RouteRules) -> std::sync::Arc<RouteRules> {
        static NONE: std::sync::OnceLock<std::sync::Arc<RouteRules>> = std::sync::OnceLock::new();
        let none = NONE.get_or_init(Default::default);
        if r == **none {
            none.clone()
        } else {
            std::sync::Arc::new(r)
        }
    }

    /// No condition beyond the host.
    pub fn is_empty(&self) -> bool {
        self.path.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
            && self.query.is_empty()
    }

    /// Whether a request meets every condition.
    #[inline]
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        if let Some(p) = &self.path {
            if !p.matches(r.path) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == r.method) {
            return false;
        }
        for (name, want) in &self.headers {
            if !r
                .headers
                .get_all(name)
                .iter()
                .any(|v| want.matches(v.as_bytes()))
            {
                return false;
            }
        }
        for (name, want) in &self.query {
            if !query_matches(r.query, name, want) {
                return false;
            }
        }
        true
    }

    /// The rule's length as precedence counts it (Traefik's way: a longer
    /// rule is more specific): the host's length plus the length of every
    /// value the rule names.
    pub fn length(&self, host: &str) -> usize {
        host.len()
            + self.path.as_ref().map_or(0, PathRule::value_len)
            + self.methods.iter().map(|m| m.as_str().len()).sum::<usize>()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>()
            + self
                .query
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }

    /// Sort key, highest first: the explicit `priority` or the rule's
    /// length, then exact path before prefix before regex before none, then
    /// more conditions first. Equal keys keep the file's order.
    pub fn rank(&self, host: &str) -> (u64, u8, usize) {
        let main = match self.priority {
            Some(p) => u64::from(p),
            None => self.length(host) as u64,
        };
        let kind = self.path.as_ref().map_or(0, PathRule::kind_order);
        let count = usize::from(self.path.is_some())
            + usize::from(!self.methods.is_empty())
            + self.headers.len()
            + self.query.len();
        (main, kind, count)
    }

    /// Whether every request `other` matches is also matched by `self` (so
    /// that, ranked first, `self` leaves `other` nothing). Conservative: a
    /// false answer only means it could not be shown.
    pub fn covers(&self, other: &RouteRules) -> bool {
        let path = match (&self.path, &other.path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.covers(b),
        };
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        let headers = self
            .headers
            .iter()
            .all(|h| other.headers.iter().any(|o| value_covers(h, o)));
        let query = self
            .query
            .iter()
            .all(|q| other.query.iter().any(|o| value_covers(q, o)));
        path && methods && headers && query
    }

    /// The conditions without `priority` (two routes with equal conditions
    /// on one host are the same route twice).
    pub fn same_conditions(&self, other: &RouteRules) -> bool {
        self.path == other.path
            && self.methods == other.methods
            && self.headers == other.headers
            && self.query == other.query
    }

    /// The rule written out, for labels and the state view:
    /// `path_prefix=/api methods=GET,POST header:X-Beta=1 query:v=~^2`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.path {
            Some(PathRule::Exact(p)) => parts.push(format!("path={p}")),
            Some(PathRule::Prefix(p)) => parts.push(format!("path_prefix={p}")),
            Some(PathRule::Regex(p)) => parts.push(format!("path_regex={}", p.as_str())),
            None => {}
        }
        if !self.methods.is_empty() {
            let m: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            parts.push(format!("methods={}", m.join(",")));
        }
        for (n, v) in &self.headers {
            parts.push(format!("header:{n}={}", v.as_rule()));
        }
        for (n, v) in &self.query {
            parts.push(format!("query:{n}={}", v.as_rule()));
        }
        if let Some(p) = self.priority {
            parts.push(format!("priority={p}"));
        }
        parts.join(" ")
    }
}

/// `a` (of the covering rule) asks for no more than `b` does on the same name.
fn value_covers<N: PartialEq>(a: &(N, ValueMatch), b: &(N, ValueMatch)) -> bool {
    a.0 == b.0
        && match (&a.1, &b.1) {
            (ValueMatch::Any, _) => true,
            (x, y) if x == y => true,
            (ValueMatch::Regex(re), ValueMatch::Exact(v)) => re.is_match(v),
            _ => false,
        }
}

/// Whether the query string has `name` with a value `want` accepts. Names
/// and values are compared percent-decoded (`+` is a space).
#[inline]
pub fn query_matches(query: Option<&str>, name: &str, want: &ValueMatch) -> bool {
    let Some(q) = query else { return false };
    form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == name && want.matches(v.as_bytes()))
}

/// The value of cookie `name`, from every `Cookie` field.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------
// Version rules.

/// One version rule as written in `[[pools.P.match]]` and in
/// `PUT /v1/pools/{pool}/match`: one of `header`, `cookie` or `query` (the
/// name), then `value` (exact) or `regex`, or neither (present with any
/// value), and the `version` such requests go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    pub version: String,
}

/// Where a version rule looks.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchSource {
    Header(HeaderName),
    Cookie(Box<str>),
    Query(Box<str>),
}

/// A compiled version rule.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRule {
    pub source: MatchSource,
    pub value: ValueMatch,
    pub version: String,
    /// As written, for the state view and the state file.
    pub spec: VersionMatchSpec,
}

/// Most version rules a pool may have.
pub const MAX_VERSION_RULES: usize = 64;

impl VersionRule {
    /// Checks and compiles a spec (the version's existence is the caller's
    /// business).
    pub fn compile(spec: &VersionMatchSpec) -> Result<VersionRule, String> {
        let source = match (&spec.header, &spec.cookie, &spec.query) {
            (Some(h), None, None) => MatchSource::Header(
                HeaderName::try_from(h.as_str())
                    .map_err(|_| format!("match header {h:?} is not a valid header name"))?,
            ),
            (None, Some(c), None) if valid_cookie_name(c) => MatchSource::Cookie(c.as_str().into()),
            (None, Some(c), None) => {
                return Err(format!("match cookie {c:?} is not a cookie name"))
            }
            (None, None, Some(q)) if !q.is_empty() => MatchSource::Query(q.as_str().into()),
            _ => {
                return Err(
                    "a version rule takes exactly one of header, cookie or query (a name)".into(),
                )
            }
        };
        let value = match (&spec.value, &spec.regex) {
            (None, None) => ValueMatch::Any,
            (Some(v), None) => ValueMatch::Exact(v.as_str().into()),
            (None, Some(r)) => ValueMatch::Regex(Pattern::new(r)?),
            (Some(_), Some(_)) => {
                return Err("a version rule takes value or regex, not both".into())
            }
        };
        if !valid_version_name(&spec.version) {
            return Err(format!("bad version name {:?}", spec.version));
        }
        Ok(VersionRule {
            source,
            value,
            version: spec.version.clone(),
            spec: spec.clone(),
        })
    }

    /// Whether a request carries what the rule asks for.
    #[inline]
    pub fn matches(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        match &self.source {
            MatchSource::Header(h) => headers
                .get_all(h)
                .iter()
                .any(|v| self.value.matches(v.as_bytes())),
            MatchSource::Cookie(c) => {
                cookie(headers, c).is_some_and(|v| self.value.matches(v.as_bytes()))
            }
            MatchSource::Query(q) => query_matches(query, q, &self.value),
        }
    }

    /// `header X-Beta=1 -> green`, for humans.
    pub fn describe(&self) -> String {
        let (kind, name) = match &self.source {
            MatchSource::Header(h) => ("header", h.as_str()),
            MatchSource::Cookie(c) => ("cookie", &**c),
            MatchSource::Query(q) => ("query", &**q),
        };
        let value = match &self.value {
            ValueMatch::Any => String::new(),
            ValueMatch::Exact(v) => format!("={v}"),
            ValueMatch::Regex(p) => format!("~{}", p.as_str()),
        };
        format!("{kind} {name}{value} -> {}", self.version)
    }
}

/// A cookie name: visible ASCII without `=`, `;` or `,`.
pub fn valid_cookie_name(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';' && b != b',')
}

/// A version name: letters, digits, `.`, `_`, `-`, at most 64 (as
/// `config::valid_name`).
pub fn valid_version_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        m: &'a Method,
        path: &'a str,
        q: Option<&'a str>,
        h: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            method: m,
            path,
            query: q,
            headers: h,
        }
    }

    #[test]
    fn paths_methods_headers_and_query_must_all_hold() {
        let rules = RouteRules {
            path: Some(PathRule::Prefix("/api".into())),
            methods: vec![Method::GET, Method::POST],
            headers: vec![(
                HeaderName::from_static("x-env"),
                ValueMatch::parse("~^(prod|stage)$").unwrap(),
            )],
            query: vec![("v".into(), ValueMatch::parse("2 x").unwrap())],
            priority: None,
        };
        let mut h = HeaderMap::new();
        h.insert("x-env", "prod".parse().unwrap());
        let get = Method::GET;
        assert!(rules.matches(&view(&get, "/api/x", Some("a=1&v=2+x"), &h)));
        assert!(rules.matches(&view(&get, "/apix", Some("v=2%20x"), &h)));
        assert!(!rules.matches(&view(&get, "/ap", Some("v=2+x"), &h)));
        assert!(!rules.matches(&view(&Method::PUT, "/api", Some("v=2+x"), &h)));
        assert!(!rules.matches(&view(&get, "/api", Some("v=3"), &h)));
        assert!(!rules.matches(&view(&get, "/api", None, &h)));
        h.insert("x-env", "dev".parse().unwrap());
        assert!(!rules.matches(&view(&get, "/api", Some("v=2+x"), &h)));
    }

    #[test]
    fn longer_rules_rank_first_exact_beats_prefix_priority_replaces_length() {
        let prefix = |p: &str| RouteRules {
            path: Some(PathRule::Prefix(p.into())),
            ..Default::default()
        };
        let exact = RouteRules {
            path: Some(PathRule::Exact("/api".into())),
            ..Default::default()
        };
        assert!(prefix("/api/v1").rank("a") > prefix("/api").rank("a"));
        assert!(exact.rank("a") > prefix("/api").rank("a"));
        assert!(prefix("/").rank("a") > RouteRules::default().rank("a"));
        let mut low = prefix("/api/v1");
        low.priority = Some(1);
        assert!(low.rank("a") < prefix("/").rank("a"));
    }

    #[test]
    fn covers_is_conservative() {
        let p = |s: &str| RouteRules {
            path: Some(PathRule::Prefix(s.into())),
            ..Default::default()
        };
        assert!(p("/").covers(&p("/api")));
        assert!(!p("/api").covers(&p("/")));
        assert!(RouteRules::default().covers(&p("/api")));
        let mut get = p("/api");
        get.methods = vec![Method::GET];
        assert!(p("/api").covers(&get));
        assert!(!get.covers(&p("/api")));
        let mut beta = p("/");
        beta.headers = vec![(HeaderName::from_static("x-beta"), ValueMatch::Any)];
        let mut beta1 = p("/api");
        beta1.headers = vec![(
            HeaderName::from_static("x-beta"),
            ValueMatch::Exact("1".into()),
        )];
        assert!(beta.covers(&beta1));
        assert!(!beta1.covers(&beta));
    }

    #[test]
    fn version_rules_read_headers_cookies_and_query() {
        let spec = |h: Option<&str>,
                    c: Option<&str>,
                    q: Option<&str>,
                    v: Option<&str>,
                    r: Option<&str>| {
            VersionMatchSpec {
                header: h.map(Into::into),
                cookie: c.map(Into::into),
                query: q.map(Into::into),
                value: v.map(Into::into),
                regex: r.map(Into::into),
                version: "green".into(),
            }
        };
        let mut h = HeaderMap::new();
        h.insert("x-beta", "1".parse().unwrap());
        h.insert("cookie", "a=b; beta=yes".parse().unwrap());
        let rule =
            VersionRule::compile(&spec(Some("X-Beta"), None, None, Some("1"), None)).unwrap();
        assert!(rule.matches(&h, None));
        assert!(!rule.matches(&HeaderMap::new(), None));
        let rule = VersionRule::compile(&spec(None, Some("beta"), None, None, Some("^y"))).unwrap();
        assert!(rule.matches(&h, None));
        let rule = VersionRule::compile(&spec(None, None, Some("canary"), None, None)).unwrap();
        assert!(rule.matches(&h, Some("canary")));
        assert!(rule.matches(&h, Some("x=1&canary=0")));
        assert!(!rule.matches(&h, Some("x=1")));
        assert!(VersionRule::compile(&spec(Some("a"), Some("b"), None, None, None)).is_err());
        assert!(VersionRule::compile(&spec(None, None, None, None, None)).is_err());
        assert!(VersionRule::compile(&spec(Some("a"), None, None, Some("1"), Some("2"))).is_err());
        assert!(VersionRule::compile(&spec(Some("a b"), None, None, None, None)).is_err());
        assert!(VersionRule::compile(&spec(Some("a"), None, None, None, Some("("))).is_err());
    }
}
