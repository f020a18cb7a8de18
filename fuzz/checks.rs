//! The properties the fuzz targets assert, one function per target.
//!
//! Shared, not copied: every `fuzz_targets/*.rs` and `tests/fuzz_seeds.rs`
//! take this file in with `#[path = ".../checks.rs"] mod checks;`, so a seed
//! replayed by `cargo test` on stable meets exactly the checks libFuzzer runs.
//!
//! ```text
//! bytes --check_config--> Config::from_toml_str --Ok--> RoutingTable::build
//! bytes --check_host----> HostName / HostPattern::parse, strip_port, normalize
//! bytes --check_admin_cmd (split at the first three NULs)--> AdminCommand::parse
//! ```
//!
//! Each check returns normally for any input the library handles correctly
//! (including a refusal); a panic, from the library or from an `assert!`
//! here, is a finding.

// Each fuzz target uses one of these functions; the test uses all three.
#![allow(dead_code)]

use std::collections::HashMap;

use switchyard::admin::AdminCommand;
use switchyard::config::{Config, MAX_WEIGHT};
use switchyard::host::{self, HostName, HostPattern, MAX_HOST_LEN};
use switchyard::routing::RoutingTable;
use switchyard::upstream::BackendRegistry;

/// Config text never panics the parser; a config that parses also builds a
/// routing table, passes the runtime pool check, and routes each of its own
/// hosts to itself. Every refusal has a located, non-empty diagnostic.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::from_toml_str(text) {
        Ok(cfg) => cfg,
        Err(diags) => {
            assert!(!diags.is_empty(), "a refused config must say why");
            let lines = text.matches('\n').count() + 1;
            for d in &diags {
                assert!(
                    d.line >= 1 && d.line <= lines && d.col >= 1,
                    "diagnostic {d} is outside the text ({lines} lines)"
                );
                assert!(
                    !d.message.trim().is_empty(),
                    "diagnostic at {}:{} has no message",
                    d.line,
                    d.col
                );
            }
            return;
        }
    };
    for (name, pool) in &cfg.pools {
        if let Err(e) = Config::check_pool(pool) {
            panic!("pool {name:?} passed the file validation but not Config::check_pool: {e}");
        }
    }
    let table = RoutingTable::build(&cfg, &BackendRegistry::default(), &HashMap::new());
    let previews = cfg.routes.iter().filter(|r| r.preview.is_some()).count();
    assert_eq!(
        table.routes().len(),
        cfg.routes.len() + previews,
        "every route (and preview host) is in the table"
    );
    for r in &cfg.routes {
        if let HostPattern::Exact(h) = &r.host {
            let got = table
                .route(h.as_str())
                .map(|route| (&*route.host, route.preview));
            assert_eq!(
                got,
                Some((h.as_str(), false)),
                "route host {h} does not route to itself"
            );
        }
        if let Some(p) = &r.preview {
            let got = table
                .route(p.as_str())
                .map(|route| (&*route.host, route.preview));
            assert_eq!(
                got,
                Some((p.as_str(), true)),
                "preview host {p} does not route to itself"
            );
        }
    }
}

/// Host parsing never panics; a parsed `HostName` is lowercase ASCII with no
/// port and no trailing dot, re-parses to itself, and `normalize` agrees
/// with `HostName::parse`. A `HostPattern` survives a Display round trip and
/// matches what it claims to.
pub fn check_host(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();

    let stripped = host::strip_port(raw);
    assert!(
        raw.starts_with(stripped),
        "strip_port({raw:?}) = {stripped:?} is not a prefix"
    );
    assert_eq!(
        host::strip_port(stripped),
        stripped,
        "strip_port is not idempotent on {raw:?}"
    );

    let parsed = HostName::parse(raw);
    let mut buf = [0u8; MAX_HOST_LEN + 2];
    let normalized = host::normalize(raw, &mut buf);
    assert_eq!(
        normalized,
        parsed.as_ref().ok().map(HostName::as_str),
        "normalize and HostName::parse disagree on {raw:?}"
    );

    if let Ok(h) = &parsed {
        let s = h.as_str();
        assert!(
            !s.is_empty() && s.len() <= MAX_HOST_LEN + 2,
            "{raw:?} -> {s:?}: bad length"
        );
        assert!(
            s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()),
            "{raw:?} -> {s:?}: not lowercase ASCII"
        );
        assert_eq!(host::strip_port(s), s, "{raw:?} -> {s:?}: still has a port");
        assert!(!s.ends_with('.'), "{raw:?} -> {s:?}: trailing dot");
        assert_eq!(
            HostName::parse(s).as_ref(),
            Ok(h),
            "{raw:?} -> {s:?} does not re-parse to itself"
        );
    }

    if let Ok(p) = HostPattern::parse(raw) {
        let shown = p.to_string();
        assert_eq!(
            HostPattern::parse(&shown).as_ref(),
            Ok(&p),
            "{raw:?} -> {shown:?} does not re-parse to itself"
        );
        match &p {
            HostPattern::Exact(h) => {
                assert_eq!(
                    parsed.as_ref(),
                    Ok(h),
                    "exact pattern {raw:?} differs from HostName::parse"
                );
                assert!(
                    p.matches(h.as_str()),
                    "pattern {shown:?} does not match its own name"
                );
            }
            HostPattern::Wildcard(suffix) => {
                assert!(
                    suffix.starts_with('.'),
                    "wildcard {raw:?} has suffix {suffix:?}"
                );
                assert!(
                    p.matches(&format!("a{suffix}")),
                    "wildcard {shown:?} does not match a{suffix}"
                );
                assert!(
                    !p.matches(&suffix[1..]),
                    "wildcard {shown:?} matches its bare suffix"
                );
            }
        }
    }
}

/// Splits an admin_cmd input: `method NUL path NUL query NUL body`. Missing
/// parts are empty; an empty query is `None`.
pub fn split_admin_input(data: &[u8]) -> (String, String, Option<String>, &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, query, body) = (next(), next(), next(), next());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let query = if query.is_empty() {
        None
    } else {
        Some(text(query))
    };
    (text(method), text(path), query, body)
}

/// `AdminCommand::parse` never panics, is deterministic, refuses only with
/// 400 or 404, and what it accepts is consistent: reads are GETs, weights
/// are within bounds, names come from single path segments.
pub fn check_admin_cmd(data: &[u8]) {
    let (method, path, query, body) = split_admin_input(data);
    let result = AdminCommand::parse(&method, &path, query.as_deref(), body);
    assert_eq!(
        result,
        AdminCommand::parse(&method, &path, query.as_deref(), body),
        "parse is not deterministic"
    );
    let cmd = match result {
        Ok(cmd) => cmd,
        Err(e) => {
            let status = e.status().as_u16();
            assert!(
                status == 400 || status == 404,
                "parse refused {method} {path} with {status}: {e}"
            );
            return;
        }
    };
    assert_eq!(
        cmd.is_change(),
        method != "GET",
        "{method} {path} -> {cmd:?}: is_change disagrees with the method"
    );
    let segment = |s: &str| {
        assert!(
            !s.contains('/'),
            "{method} {path} -> {cmd:?}: name {s:?} spans path segments"
        )
    };
    match &cmd {
        AdminCommand::SetWeights { pool, weights, .. } => {
            segment(pool);
            assert!(
                weights.values().all(|&w| w <= MAX_WEIGHT),
                "{cmd:?}: weight above {MAX_WEIGHT}"
            );
        }
        AdminCommand::PutVersion {
            pool,
            version,
            weight,
            ..
        } => {
            segment(pool);
            segment(version);
            assert!(
                !matches!(weight, Some(w) if *w > MAX_WEIGHT),
                "{cmd:?}: weight above {MAX_WEIGHT}"
            );
        }
        AdminCommand::DeleteVersion { pool, version } => {
            segment(pool);
            segment(version);
        }
        AdminCommand::RolloutStart { pool, request } => {
            segment(pool);
            // The typed request round-trips: nothing unknown slipped in.
            let again: switchyard::model::api::RolloutRequest =
                serde_json::from_value(serde_json::to_value(request).unwrap()).unwrap();
            assert_eq!(
                &again, &**request,
                "{cmd:?}: rollout request does not round-trip"
            );
        }
        AdminCommand::RolloutStatus { pool } | AdminCommand::RolloutAction { pool, .. } => {
            segment(pool)
        }
        // The rest carry no names or weights (and new commands land here).
        _ => {}
    }
}
