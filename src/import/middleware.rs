//! Traefik's HTTP middlewares as switchyard's `[middlewares.NAME]`, with
//! Traefik's meaning.
//!
//! ```text
//! http.middlewares.NAME.KIND.{options}  (file, labels, Middleware CRD spec)
//!   headers        -> headers = { request/response set+remove, hsts, frame_deny, ... }
//!   basicAuth      -> basic_auth = { users, users_file, realm, ... }
//!   ipAllowList    -> ip_allow = { cidrs, trusted_proxies = ipStrategy.depth }
//!   rateLimit      -> rate_limit = { average, period, burst, per, trusted_proxies }
//!   compress       -> compress = { types, min_bytes, encodings }
//!   stripPrefix / addPrefix / redirectRegex -> strip_prefix / add_prefix / redirect_regex
//!   redirectScheme (https) -> the route's redirect_https;  chain -> flattened by the routes
//!   anything else  -> not carried over, with the reason; a guard (auth, allow
//!                     lists, plugins) keeps its routers out of the import
//! ```
//!
//! Malformed values (`stsSeconds: many`) are errors naming the key, as
//! elsewhere in the importer; values switchyard cannot use are left out
//! with a note.

use http::header::{HeaderName, HeaderValue};
use toml::{Table, Value};

use super::dynamic::duration_at;
use super::model::{Middleware, MiddlewareSpec, Origin, Traefik};
use super::tree::Node;
use super::ImportError;
use crate::config::{parse_cidr, DEFAULT_COMPRESS_TYPES};
use crate::rules::Pattern;

/// Kinds whose absence would open a route to everyone.
const GUARDS: &[&str] = &[
    "basicauth",
    "digestauth",
    "forwardauth",
    "ipallowlist",
    "ipwhitelist",
    "plugin",
];

/// Kinds switchyard has no counterpart for, with the reason.
const NOT_CARRIED: &[(&str, &str)] = &[
    ("digestauth", "switchyard has no digest authentication (basic_auth takes htpasswd files)"),
    ("forwardauth", "switchyard has no forward authentication"),
    ("retry", "switchyard retries by the pool's retry (see \"Failures and retries\"), not per middleware"),
    ("buffering", "switchyard streams bodies and has no buffering middleware"),
    ("circuitbreaker", "switchyard ejects failing backends itself (passive), it has no circuit breaker middleware"),
    ("inflightreq", "switchyard has no in-flight request limit per route (server.max_connections limits connections)"),
    ("errors", "switchyard has no custom error pages"),
    ("passtlsclientcert", "switchyard does not ask for client certificates"),
    ("contenttype", "switchyard never guesses a Content-Type"),
    ("grpcweb", "switchyard does not translate gRPC-Web"),
    ("replacepath", "switchyard has no replace_path (strip_prefix and add_prefix only)"),
    ("replacepathregex", "switchyard has no replace_path_regex (strip_prefix and add_prefix only)"),
    ("stripprefixregex", "switchyard has no strip_prefix_regex (strip_prefix takes plain prefixes)"),
];

/// A middleware being read: where it is, what was left out of it.
struct Reading<'a> {
    body: Node<'a>,
    dropped: Vec<String>,
}

impl Reading<'_> {
    fn drop_key(&mut self, n: &Node<'_>, why: &str) {
        self.dropped.push(format!(
            "{}: {}: not carried over: {why}",
            n.file.display(),
            n.path
        ));
    }

    fn drop_present(&mut self, key: &str, why: &str) {
        if let Some(n) = self.body.child(key) {
            self.drop_key(&n, why);
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, ImportError> {
        self.body.child(key).map(|b| b.boolean()).transpose()
    }

    /// The unknown keys of the body: warnings.
    fn unknown(&self, t: &mut Traefik, known: &[&str]) {
        for k in self.body.unknown_keys(known) {
            t.unknown(self.body.file, &k, "");
        }
    }
}

/// Reads one middleware: `n` holds its one kind.
pub(super) fn read_middleware(n: &Node<'_>, t: &mut Traefik) -> Result<Middleware, ImportError> {
    let entries = n.entries()?;
    let (kind, body) = match entries.as_slice() {
        [] => return Err(n.err("a middleware needs a kind (redirectScheme, basicAuth, ...)")),
        [one] => one.clone(),
        many => {
            return Err(n.err(format!(
                "a middleware has exactly one kind, this one has {}",
                many.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )))
        }
    };
    let mut r = Reading {
        body,
        dropped: Vec::new(),
    };
    let lower = kind.to_ascii_lowercase();
    let spec = match lower.as_str() {
        "headers" => headers(&mut r, t)?,
        "basicauth" => basic_auth(&mut r, t)?,
        "ipallowlist" | "ipwhitelist" => ip_allow(&mut r, t)?,
        "ratelimit" => rate_limit(&mut r, t)?,
        "compress" => compress(&mut r, t)?,
        "stripprefix" => strip_prefix(&mut r, t)?,
        "addprefix" => add_prefix(&mut r, t)?,
        "redirectregex" => redirect_regex(&mut r, t)?,
        "redirectscheme" => redirect_scheme(&mut r, t)?,
        "chain" => {
            r.unknown(t, &["middlewares"]);
            let list = r
                .body
                .child("middlewares")
                .map(|m| m.words())
                .transpose()?
                .unwrap_or_default();
            if list.is_empty() {
                return Err(r.body.err("a chain needs middlewares"));
            }
            MiddlewareSpec::Chain(list)
        }
        other => {
            let reason = NOT_CARRIED
                .iter()
                .find(|(k, _)| *k == other)
                .map(|(_, why)| why.to_string())
                .unwrap_or_else(|| {
                    if other == "plugin" {
                        "a plugin is Traefik's own".to_string()
                    } else {
                        "a kind switchyard does not know".to_string()
                    }
                });
            MiddlewareSpec::NotCarried {
                reason,
                guard: GUARDS.contains(&other) || !NOT_CARRIED.iter().any(|(k, _)| *k == other),
            }
        }
    };
    Ok(Middleware {
        origin: Origin {
            file: n.file.to_owned(),
            key: n.path.clone(),
        },
        kind,
        spec,
        dropped: r.dropped,
    })
}

fn carried(key: &'static str, value: impl Into<Value>) -> MiddlewareSpec {
    MiddlewareSpec::Carried {
        key,
        value: value.into(),
    }
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

/// A scalar that may be left empty (`X-Debug: ""`, or nothing at all).
fn text_or_empty(n: &Node<'_>) -> Result<String, ImportError> {
    if n.v.is_null() {
        Ok(String::new())
    } else {
        n.text()
    }
}

// ---------------------------------------------------------------------------
// headers

const HEADERS_KEYS: &[&str] = &[
    "customRequestHeaders",
    "customResponseHeaders",
    "stsSeconds",
    "stsIncludeSubdomains",
    "stsPreload",
    "forceSTSHeader",
    "frameDeny",
    "customFrameOptionsValue",
    "contentTypeNosniff",
    "browserXssFilter",
    "customBrowserXSSValue",
    "contentSecurityPolicy",
    "contentSecurityPolicyReportOnly",
    "referrerPolicy",
    "permissionsPolicy",
    "featurePolicy",
    "publicKey",
    "accessControlAllowCredentials",
    "accessControlAllowHeaders",
    "accessControlAllowMethods",
    "accessControlAllowOriginList",
    "accessControlAllowOriginListRegex",
    "accessControlExposeHeaders",
    "accessControlMaxAge",
    "addVaryHeader",
    "allowedHosts",
    "hostsProxyHeaders",
    "sslRedirect",
    "sslTemporaryRedirect",
    "sslHost",
    "sslForceHost",
    "sslProxyHeaders",
    "isDevelopment",
];

/// `customRequestHeaders` / `customResponseHeaders`: a value sets the
/// field, an empty value removes it (Traefik's meaning).
fn header_ops(r: &mut Reading<'_>, key: &str) -> Result<Option<Table>, ImportError> {
    let Some(map) = r.body.child(key) else {
        return Ok(None);
    };
    let mut set = Table::new();
    let mut remove = Vec::new();
    for (name, v) in map.entries()? {
        let value = text_or_empty(&v)?;
        if HeaderName::try_from(name.as_str()).is_err() {
            r.drop_key(&v, "not a valid header name");
        } else if value.is_empty() {
            remove.push(name);
        } else if HeaderValue::try_from(value.as_str()).is_err() {
            r.drop_key(&v, "not a valid header value");
        } else {
            set.insert(name, Value::String(value));
        }
    }
    let mut ops = Table::new();
    if !set.is_empty() {
        ops.insert("set".into(), Value::Table(set));
    }
    if !remove.is_empty() {
        ops.insert("remove".into(), strings(remove));
    }
    Ok((!ops.is_empty()).then_some(ops))
}

fn headers(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, HEADERS_KEYS);
    let mut out = Table::new();
    let request = header_ops(r, "customRequestHeaders")?;
    let mut response = header_ops(r, "customResponseHeaders")?.unwrap_or_default();
    if let Some(req) = request {
        out.insert("request".into(), Value::Table(req));
    }
    if let Some(secs) = r.body.uint_at("stsSeconds")? {
        if secs > 0 {
            let mut hsts = format!("max-age={secs}");
            if r.flag("stsIncludeSubdomains")? == Some(true) {
                hsts.push_str("; includeSubDomains");
            }
            if r.flag("stsPreload")? == Some(true) {
                hsts.push_str("; preload");
            }
            out.insert("hsts".into(), Value::String(hsts));
            if r.flag("forceSTSHeader")? == Some(true) {
                out.insert("force_hsts".into(), Value::Boolean(true));
            }
        }
    }
    for (traefik, ours) in [
        ("frameDeny", "frame_deny"),
        ("contentTypeNosniff", "content_type_nosniff"),
        ("browserXssFilter", "browser_xss_filter"),
    ] {
        if r.flag(traefik)? == Some(true) {
            out.insert(ours.into(), Value::Boolean(true));
        }
    }
    single_fields(r, &mut out, &mut response)?;
    if !response.is_empty() {
        out.insert("response".into(), Value::Table(response));
    }
    drop_unsupported_headers(r);
    if out.is_empty() && !r.dropped.is_empty() {
        return Ok(MiddlewareSpec::NotCarried {
            reason: "none of its options can be carried over".into(),
            guard: false,
        });
    }
    Ok(carried("headers", out))
}

/// The options that set one response field: ours where switchyard has a
/// key, else `response.set` (an explicit custom header wins).
fn single_fields(
    r: &mut Reading<'_>,
    out: &mut Table,
    response: &mut Table,
) -> Result<(), ImportError> {
    // Options that set one response field.
    for (traefik, ours, field) in [
        (
            "customFrameOptionsValue",
            Some("custom_frame_options"),
            "X-Frame-Options",
        ),
        (
            "contentSecurityPolicy",
            Some("content_security_policy"),
            "Content-Security-Policy",
        ),
        ("referrerPolicy", Some("referrer_policy"), "Referrer-Policy"),
        (
            "permissionsPolicy",
            Some("permissions_policy"),
            "Permissions-Policy",
        ),
        ("customBrowserXSSValue", None, "X-XSS-Protection"),
        (
            "contentSecurityPolicyReportOnly",
            None,
            "Content-Security-Policy-Report-Only",
        ),
        ("featurePolicy", None, "Feature-Policy"),
        ("publicKey", None, "Public-Key-Pins"),
    ] {
        let Some(n) = r.body.child(traefik) else {
            continue;
        };
        let value = n.text()?;
        if value.is_empty() {
            continue;
        }
        if HeaderValue::try_from(value.as_str()).is_err() {
            r.drop_key(&n, "not a valid header value");
            continue;
        }
        match ours {
            Some(key) => {
                out.insert(key.into(), Value::String(value));
            }
            None => {
                let set = response
                    .entry("set")
                    .or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(set) = set {
                    set.entry(field).or_insert(Value::String(value));
                }
            }
        }
    }
    Ok(())
}

/// Notes for the `headers` options switchyard has no counterpart for.
fn drop_unsupported_headers(r: &mut Reading<'_>) {
    let cors = HEADERS_KEYS
        .iter()
        .filter(|k| k.starts_with("accessControl") || **k == "addVaryHeader")
        .filter_map(|k| r.body.child(k))
        .collect::<Vec<_>>();
    for n in &cors {
        r.drop_key(
            n,
            "switchyard does not answer CORS requests itself; let the backend send the Access-Control-* fields",
        );
    }
    r.drop_present(
        "allowedHosts",
        "routes already match their hosts; switchyard has no second host list",
    );
    r.drop_present(
        "hostsProxyHeaders",
        "switchyard has no allowed-hosts check for it to apply to",
    );
    for k in [
        "sslRedirect",
        "sslTemporaryRedirect",
        "sslHost",
        "sslForceHost",
    ] {
        r.drop_present(
            k,
            "Traefik deprecated it; switchyard redirects to HTTPS by the route's redirect_https",
        );
    }
    r.drop_present(
        "sslProxyHeaders",
        "switchyard sends Strict-Transport-Security on its own HTTPS answers (force_hsts for all)",
    );
    r.drop_present("isDevelopment", "a development switch of Traefik's");
}

// ---------------------------------------------------------------------------
// basicAuth

fn basic_auth(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(
        t,
        &[
            "users",
            "usersFile",
            "realm",
            "removeHeader",
            "headerField",
            "secret",
        ],
    );
    if r.body.child("secret").is_some() {
        return Ok(MiddlewareSpec::NotCarried {
            reason: "its users are in a Kubernetes secret: export them to an htpasswd file and give basic_auth users_file".into(),
            guard: true,
        });
    }
    let mut out = Table::new();
    let mut users = Vec::new();
    if let Some(list) = r.body.child("users") {
        for (i, line) in list.words()?.into_iter().enumerate() {
            let line = line.trim().to_string();
            match line.split_once(':') {
                Some((user, hash)) if !user.is_empty() && !hash.is_empty() => users.push(line),
                _ => r.dropped.push(format!(
                    "{}: {} (entry {}): not carried over: not a user:hash line",
                    list.file.display(),
                    list.path,
                    i + 1
                )),
            }
        }
    }
    let file = r
        .body
        .text_at("usersFile")?
        .filter(|f| !f.trim().is_empty());
    if users.is_empty() && file.is_none() {
        return Ok(MiddlewareSpec::NotCarried {
            reason: "it has no users and no usersFile switchyard can use".into(),
            guard: true,
        });
    }
    if let Some(f) = &file {
        out.insert("users_file".into(), Value::String(f.clone()));
        r.dropped.push(format!(
            "{}: {}.usersFile: switchyard reads {f} at start and on every reload (`switchyard check` reads it too): check the path on this machine",
            r.body.file.display(),
            r.body.path
        ));
        if !users.is_empty() {
            r.dropped.push(format!(
                "{}: {}: users and usersFile both: for a user in both, Traefik takes the file's line, switchyard the inline one",
                r.body.file.display(),
                r.body.path
            ));
        }
    }
    if !users.is_empty() {
        let cfg = crate::config::BasicAuthConfig {
            users_file: None,
            users: users.clone(),
            realm: String::new(),
            remove_header: false,
            header_field: None,
        };
        let (_, problems) = crate::middleware::auth::BasicAuth::load(&cfg);
        for p in problems {
            r.dropped.push(format!(
                "{}: {}.users: {p}",
                r.body.file.display(),
                r.body.path
            ));
        }
        out.insert("users".into(), strings(users));
    }
    if let Some(realm) = r.body.child("realm") {
        let text = realm.text()?;
        if text.contains(['"', '\\']) || text.chars().any(char::is_control) {
            r.drop_key(
                &realm,
                "quotes, backslashes and control characters are not allowed in switchyard's realm",
            );
        } else if !text.is_empty() {
            out.insert("realm".into(), Value::String(text));
        }
    }
    if r.flag("removeHeader")? == Some(true) {
        out.insert("remove_header".into(), Value::Boolean(true));
    }
    if let Some(h) = r.body.child("headerField") {
        let name = h.text()?;
        if HeaderName::try_from(name.as_str()).is_ok() {
            out.insert("header_field".into(), Value::String(name));
        } else if !name.is_empty() {
            r.drop_key(&h, "not a valid header name");
        }
    }
    Ok(carried("basic_auth", out))
}

// ---------------------------------------------------------------------------
// ipAllowList / ipWhiteList

/// `ipStrategy`: the X-Forwarded-For depth as `trusted_proxies`, or why it
/// cannot be carried.
fn ip_strategy(
    r: &mut Reading<'_>,
    s: &Node<'_>,
    t: &mut Traefik,
) -> Result<Result<u64, String>, ImportError> {
    for k in s.unknown_keys(&["depth", "excludedIPs", "ipv6Subnet"]) {
        t.unknown(s.file, &k, "");
    }
    let depth = s.uint_at("depth")?.unwrap_or(0);
    if depth == 0 {
        if let Some(ex) = s.child("excludedIPs") {
            if !ex.words()?.is_empty() {
                return Ok(Err(format!(
                    "{}.excludedIPs: switchyard picks the X-Forwarded-For entry by its place from the right (trusted_proxies), not by skipping addresses",
                    s.path
                )));
            }
        }
    } else if s.child("excludedIPs").is_some() {
        r.drop_present_at(s, "excludedIPs", "Traefik ignores it when depth is set");
    }
    if depth > 32 {
        return Ok(Err(format!(
            "{}.depth {depth}: switchyard trusts at most 32 proxies",
            s.path
        )));
    }
    if let Some(v6) = s.child("ipv6Subnet") {
        r.drop_key(&v6, "switchyard checks each IPv6 address as it is");
    }
    Ok(Ok(depth))
}

impl Reading<'_> {
    fn drop_present_at(&mut self, n: &Node<'_>, key: &str, why: &str) {
        if let Some(x) = n.child(key) {
            self.drop_key(&x, why);
        }
    }
}

fn ip_allow(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, &["sourceRange", "ipStrategy", "rejectStatusCode"]);
    let ranges = r
        .body
        .child("sourceRange")
        .map(|s| s.words())
        .transpose()?
        .unwrap_or_default();
    let mut cidrs = Vec::new();
    for range in &ranges {
        match parse_cidr(range) {
            Ok(net) => cidrs.push(net.to_string()),
            Err(e) => {
                return Ok(MiddlewareSpec::NotCarried {
                    reason: format!("sourceRange: {e} (Traefik refuses it too)"),
                    guard: true,
                })
            }
        }
    }
    if cidrs.is_empty() {
        return Ok(MiddlewareSpec::NotCarried {
            reason: "its sourceRange names no network".into(),
            guard: true,
        });
    }
    let mut out = Table::new();
    out.insert("cidrs".into(), strings(cidrs));
    if let Some(s) = r.body.child("ipStrategy") {
        match ip_strategy(r, &s, t)? {
            Ok(0) => {}
            Ok(depth) => {
                out.insert("trusted_proxies".into(), Value::Integer(depth as i64));
            }
            Err(reason) => {
                return Ok(MiddlewareSpec::NotCarried {
                    reason,
                    guard: true,
                })
            }
        }
    }
    if let Some(code) = r.body.child("rejectStatusCode") {
        if code.uint()? != 403 {
            r.drop_key(&code, "switchyard answers 403");
        }
    }
    Ok(carried("ip_allow", out))
}

// ---------------------------------------------------------------------------
// rateLimit

fn rate_limit(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(
        t,
        &["average", "period", "burst", "sourceCriterion", "redis"],
    );
    let average = r.body.uint_at("average")?.unwrap_or(0);
    let not = |reason: String| {
        Ok(MiddlewareSpec::NotCarried {
            reason,
            guard: false,
        })
    };
    if average == 0 {
        return not("average is 0, which Traefik takes as no limit at all".into());
    }
    if average > 1_000_000 {
        return not(format!(
            "average {average} is above switchyard's 1000000 per period"
        ));
    }
    let mut out = Table::new();
    out.insert("average".into(), Value::Integer(average as i64));
    // Traefik's period defaults to a second, as switchyard's does; 0 too.
    let zero = r
        .body
        .child("period")
        .map(|p| p.text())
        .transpose()?
        .is_some_and(|p| p.trim().trim_end_matches('s') == "0");
    if !zero {
        if let Some(period) = duration_at(&r.body, "period")? {
            if period != "1s" {
                out.insert("period".into(), Value::String(period));
            }
        }
    }
    // Traefik's burst defaults to 1 (below 1 is 1); switchyard's to average.
    let burst = r.body.uint_at("burst")?.unwrap_or(1).max(1);
    if burst > 10_000_000 {
        return not(format!("burst {burst} is above switchyard's 10000000"));
    }
    out.insert("burst".into(), Value::Integer(burst as i64));
    if let Some(sc) = r.body.child("sourceCriterion") {
        for k in sc.unknown_keys(&["ipStrategy", "requestHeaderName", "requestHost"]) {
            t.unknown(sc.file, &k, "");
        }
        let header = sc.text_at("requestHeaderName")?.filter(|h| !h.is_empty());
        let host = match sc.child("requestHost") {
            Some(h) => h.boolean()?,
            None => false,
        };
        if let Some(h) = header {
            if HeaderName::try_from(h.as_str()).is_err() {
                return not(format!(
                    "sourceCriterion.requestHeaderName {h:?} is not a header name"
                ));
            }
            out.insert("per".into(), Value::String(format!("header:{h}")));
        } else if host {
            return not(
                "it counts per requested host (sourceCriterion.requestHost); switchyard counts per client address or per header".into(),
            );
        } else if let Some(s) = sc.child("ipStrategy") {
            match ip_strategy(r, &s, t)? {
                Ok(0) => {}
                Ok(depth) => {
                    out.insert("trusted_proxies".into(), Value::Integer(depth as i64));
                }
                Err(reason) => return not(reason),
            }
        }
    }
    r.drop_present(
        "redis",
        "switchyard keeps its buckets in the process; every instance counts on its own",
    );
    Ok(carried("rate_limit", out))
}

// ---------------------------------------------------------------------------
// compress

/// A media type as switchyard compares it: no parameters, lower case.
fn media_type(raw: &str) -> Option<String> {
    let t = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = t == "*/*"
        || t.split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'));
    ok.then_some(t)
}

/// A list (or comma-separated value) under `key`; empty when absent.
fn words_at(n: &Node<'_>, key: &str) -> Result<Vec<String>, ImportError> {
    Ok(n.child(key)
        .map(|x| x.words())
        .transpose()?
        .unwrap_or_default())
}

fn compress(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(
        t,
        &[
            "excludedContentTypes",
            "includedContentTypes",
            "minResponseBodyBytes",
            "encodings",
            "defaultEncoding",
        ],
    );
    let mut out = Table::new();
    let included = words_at(&r.body, "includedContentTypes")?;
    let excluded = words_at(&r.body, "excludedContentTypes")?;
    if !included.is_empty() && !excluded.is_empty() {
        return Ok(MiddlewareSpec::NotCarried {
            reason:
                "includedContentTypes and excludedContentTypes are both set, which Traefik refuses"
                    .into(),
            guard: false,
        });
    }
    let at = format!("{}: {}", r.body.file.display(), r.body.path);
    if !included.is_empty() {
        let mut types = Vec::new();
        for raw in &included {
            match media_type(raw) {
                Some(m) if !types.contains(&m) => types.push(m),
                Some(_) => {}
                None => r.dropped.push(format!(
                    "{at}.includedContentTypes: {raw:?} is not a media type; left out"
                )),
            }
        }
        if types.is_empty() {
            return Ok(MiddlewareSpec::NotCarried {
                reason: "includedContentTypes names no media type".into(),
                guard: false,
            });
        }
        out.insert("types".into(), strings(types));
    } else {
        let excluded: Vec<String> = excluded.iter().filter_map(|e| media_type(e)).collect();
        let types: Vec<String> = DEFAULT_COMPRESS_TYPES
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !excluded.contains(s))
            .collect();
        let but = if excluded.is_empty() {
            "gRPC".to_string()
        } else {
            excluded.join(", ")
        };
        r.dropped.push(format!(
            "{at}: Traefik compresses every type but {but}; switchyard compresses the types it lists: {} (add others to types)",
            types.join(", ")
        ));
        if !excluded.is_empty() {
            out.insert("types".into(), strings(types));
        }
    }
    if let Some(n) = r.body.child("minResponseBodyBytes") {
        let min = n.uint()?;
        if min < 1 << 40 {
            if min != 1024 {
                out.insert("min_bytes".into(), Value::Integer(min as i64));
            }
        } else {
            r.drop_key(&n, "above switchyard's limit (1 TiB)");
        }
    }
    let encodings = words_at(&r.body, "encodings")?;
    if !encodings.is_empty() {
        let mut ours = Vec::new();
        for e in &encodings {
            let e = e.trim().to_ascii_lowercase();
            if ["zstd", "br", "gzip"].contains(&e.as_str()) {
                if !ours.contains(&e) {
                    ours.push(e);
                }
            } else {
                r.dropped.push(format!(
                    "{at}.encodings: {e:?}: switchyard encodes zstd, br and gzip; left out"
                ));
            }
        }
        if !ours.is_empty() {
            out.insert("encodings".into(), strings(ours));
        }
    }
    r.drop_present(
        "defaultEncoding",
        "switchyard compresses only for clients that send Accept-Encoding",
    );
    Ok(carried("compress", out))
}

// ---------------------------------------------------------------------------
// stripPrefix, addPrefix, redirectRegex, redirectScheme

fn strip_prefix(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, &["prefixes", "forceSlash"]);
    let mut prefixes = Vec::new();
    let list = r
        .body
        .child("prefixes")
        .map(|p| p.words())
        .transpose()?
        .unwrap_or_default();
    for p in list {
        if p.starts_with('/') {
            prefixes.push(p);
        } else {
            r.dropped.push(format!(
                "{}: {}.prefixes: {p:?} does not start with '/'; left out",
                r.body.file.display(),
                r.body.path
            ));
        }
    }
    if r.flag("forceSlash")? == Some(false) {
        r.drop_present(
            "forceSlash",
            "switchyard always leaves a path that starts with '/'",
        );
    }
    if prefixes.is_empty() {
        return Ok(MiddlewareSpec::NotCarried {
            reason: "it names no prefix starting with '/'".into(),
            guard: false,
        });
    }
    Ok(carried("strip_prefix", strings(prefixes)))
}

fn add_prefix(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, &["prefix"]);
    let prefix = r.body.text_at("prefix")?.unwrap_or_default();
    if !prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
        return Ok(MiddlewareSpec::NotCarried {
            reason: format!("prefix {prefix:?} is not a path starting with '/'"),
            guard: false,
        });
    }
    Ok(carried("add_prefix", prefix))
}

fn redirect_regex(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, &["regex", "replacement", "permanent"]);
    let regex = r
        .body
        .text_at("regex")?
        .ok_or_else(|| r.body.err("redirectRegex needs a regex"))?;
    let replacement = r
        .body
        .text_at("replacement")?
        .ok_or_else(|| r.body.err("redirectRegex needs a replacement"))?;
    if let Err(e) = Pattern::new(&regex) {
        return Ok(MiddlewareSpec::NotCarried {
            reason: format!("regex: {e}"),
            guard: false,
        });
    }
    let mut out = Table::new();
    out.insert("regex".into(), Value::String(regex));
    // Go's and the regex crate's replacements read $1, ${1} and ${name} alike.
    out.insert("replacement".into(), Value::String(replacement));
    if r.flag("permanent")? == Some(true) {
        out.insert("permanent".into(), Value::Boolean(true));
    }
    Ok(carried("redirect_regex", out))
}

fn redirect_scheme(r: &mut Reading<'_>, t: &mut Traefik) -> Result<MiddlewareSpec, ImportError> {
    r.unknown(t, &["scheme", "port", "permanent"]);
    let scheme = r.body.text_at("scheme")?.unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("https") {
        return Ok(MiddlewareSpec::NotCarried {
            reason: format!(
                "a redirect to {scheme:?}: switchyard only redirects plain HTTP to HTTPS (redirect_https)"
            ),
            guard: false,
        });
    }
    if let Some(p) = r.body.child("port") {
        let port = p.text()?;
        if !port.is_empty() && port != "443" {
            r.drop_key(&p, "switchyard redirects to the port of its HTTPS listener");
        }
    }
    Ok(MiddlewareSpec::RedirectHttps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("Text/HTML; charset=utf-8").as_deref(),
            Some("text/html")
        );
        assert_eq!(media_type("*/*").as_deref(), Some("*/*"));
        assert_eq!(media_type("text"), None);
        assert_eq!(media_type("a/b/c"), None);
        assert_eq!(media_type("/x"), None);
    }
}
