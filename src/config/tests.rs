//! Parsing and validation on inline configs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[server]
http = "127.0.0.1:8080"

[[routes]]
host = "App.Example.com"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["127.0.0.1:8081"]

[pools.app.versions.green]
weight = 0
backends = ["green:8080", "[::1]:8083"]
"#;

#[test]
fn minimal_config_parses_with_defaults() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.server.http, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.server.header_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_header_bytes, 65_536);
    assert_eq!(c.routes[0].host.to_string(), "app.example.com");
    assert!(!c.routes[0].redirect_https);
    let app = &c.pools["app"];
    assert_eq!(app.versions.get("blue").unwrap().weight, 100);
    assert_eq!(
        app.versions.get("green").unwrap().backends[0].as_str(),
        "green:8080"
    );
    assert_eq!(app.retry, 1);
    assert_eq!(app.on_all_down, OnAllDown::Unavailable);
}

#[test]
fn client_timeouts_have_defaults_and_are_validated() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    let s = &c.server;
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.send_timeout, Duration::from_secs(60));
    assert_eq!(s.body_timeout, Duration::from_secs(60));
    let text = "[server]\nsend_timeout = \"1500ms\"\nbody_timeout = \"2m\"\n";
    let c = Config::from_toml_str(text).unwrap();
    assert_eq!(c.server.send_timeout, Duration::from_millis(1500));
    assert_eq!(c.server.body_timeout, Duration::from_secs(120));

    let text = "[server]\nsend_timeout = \"0s\"\nbody_timeout = \"soon\"\nheader_timeout = \"25h\"\nidle_timeout = \"1000000000y\"\n";
    let diags = Config::from_toml_str(text).unwrap_err();
    let at = |line: usize| {
        diags
            .iter()
            .find(|d| d.line == line)
            .map(|d| (d.col, d.message.clone()))
            .unwrap_or_else(|| panic!("no diagnostic on line {line}: {diags:?}"))
    };
    assert_eq!(at(2), (16, "send_timeout must be above zero".to_string()));
    assert!(
        at(3).1.starts_with("body_timeout: bad duration"),
        "{diags:?}"
    );
    assert_eq!(
        at(4),
        (18, "header_timeout must be at most 24h".to_string())
    );
    assert_eq!(at(5).1, "idle_timeout must be at most 24h");
    assert_eq!(diags.len(), 4, "{diags:?}");
}

#[test]
fn every_error_is_reported_with_position() {
    let text = r#"
[server]
http = "nope"
connect_timeout = "3 parsecs"

[[routes]]
host = "a b"
pool = "app"

[[routes]]
host = "b.test"
pool = "missing"

[pools.app.versions.blue]
weight = -1
backends = ["127.0.0.1", "x:99999"]

[pools.empty]
"#;
    let diags = Config::from_toml_str(text).unwrap_err();
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert!(lines.contains(&3), "{diags:?}");
    assert!(lines.contains(&4));
    assert!(lines.contains(&7));
    assert!(lines.contains(&12));
    assert!(lines.contains(&15));
    assert_eq!(diags.iter().filter(|d| d.line == 16).count(), 2);
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("at least one version")),
        "{diags:?}"
    );
    let d = diags.iter().find(|d| d.line == 3).unwrap();
    assert_eq!(d.col, 8);
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let text = "[server]\nhttp = \"127.0.0.1:1\"\nbogus = 1\n";
    let diags = Config::from_toml_str(text).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].line, 3);
    assert!(diags[0].message.contains("bogus"), "{diags:?}");
}

#[test]
fn syntax_errors_have_positions() {
    let diags = Config::from_toml_str("[server\nhttp=1").unwrap_err();
    assert_eq!(diags[0].line, 1);
}

#[test]
fn tls_and_acme_rules() {
    let text = r#"
[server]
https = "127.0.0.1:8443"
[[routes]]
host = "*.example.com"
pool = "app"
tls = "acme"
[[routes]]
host = "b.example.com"
pool = "app"
tls = { cert = "a.pem", key = "a.key" }
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
"#;
    let diags = Config::from_toml_str(text).unwrap_err();
    assert!(diags
        .iter()
        .any(|d| d.message.contains("needs an [acme] section")));
    assert!(diags.iter().any(|d| d.message.contains("DNS-01")));
    assert_eq!(diags.len(), 2, "{diags:?}");
}

#[test]
fn health_rollout_and_sticky_validate() {
    let text = r#"
[pools.app]
health = { path = "/health", interval = "2s", timeout = "1s", rise = 2, fall = 3, status = "200-299" }
sticky = { cookie = "sy_ver" }
on_all_down = "fail_open"
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
[pools.app.rollout]
steps = [1, 5, 25, 100]
step_duration = "2s"
min_requests = 10
"#;
    let c = Config::from_toml_str(text).unwrap();
    let p = &c.pools["app"];
    assert_eq!(p.health.as_ref().unwrap().status, (200, 299));
    assert_eq!(p.sticky, Some(Sticky::Cookie("sy_ver".into())));
    assert_eq!(p.on_all_down, OnAllDown::FailOpen);
    assert_eq!(p.rollout.step_duration, Duration::from_secs(2));
    assert_eq!(p.rollout.min_requests, 10);

    let bad = text
        .replace("[1, 5, 25, 100]", "[5, 1]")
        .replace("\"1s\"", "\"9s\"");
    let diags = Config::from_toml_str(&bad).unwrap_err();
    assert!(diags.iter().any(|d| d.message.contains("increasing")));
    assert!(diags.iter().any(|d| d.message.contains("must not exceed")));
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let c = Config::from_toml_str_in(
        "[admin]\nsocket = \"run/a.sock\"\nstate = \"/abs/s.json\"\n",
        Path::new("/etc/sy"),
    )
    .unwrap();
    assert_eq!(c.admin.socket, PathBuf::from("/etc/sy/run/a.sock"));
    assert_eq!(c.admin.state, PathBuf::from("/abs/s.json"));
}

#[test]
fn backend_addresses() {
    assert!(BackendAddr::parse("app:80").is_ok());
    assert!(BackendAddr::parse("[::1]:80").is_ok());
    assert!(BackendAddr::parse("::1:80").is_err());
    assert!(BackendAddr::parse("app").is_err());
    assert!(BackendAddr::parse(":80").is_err());
    assert!(BackendAddr::parse("a:0").is_err());
    assert!(BackendAddr::parse("a b:1").is_err());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    assert_eq!(line_col("", 5), (1, 1));
}

#[test]
fn shipped_examples_parse() {
    for f in ["config/switchyard.toml", "config/full.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        if let Err(e) = Config::load(&path) {
            panic!("{f}: {e}");
        }
    }
}

#[test]
fn rollout_steps_with_durations_pauses_and_gates() {
    let text = r#"
[pools.app.versions.blue]
weight = 1
backends = ["127.0.0.1:1"]
[pools.app.rollout]
steps = [1, { percent = 5, duration = "10m" }, "pause", 25]
approve_before = 100
confidence = 0.95
min_success_rate = 0.99
max_p99 = "500ms"
"#;
    let r = &Config::from_toml_str(text).unwrap().pools["app"].rollout;
    assert_eq!(r.steps, vec![1, 5, 25]);
    assert_eq!(
        r.step_durations,
        vec![None, Some(Duration::from_secs(600)), None]
    );
    assert_eq!(r.approve_before, vec![25, 100]);
    assert_eq!(r.confidence, 0.95);
    assert_eq!(r.min_success_rate, Some(0.99));
    assert_eq!(r.max_p99, Some(Duration::from_millis(500)));
    // Without them: plain steps, no approvals, 99 %, no gates.
    let d = RolloutConfig::default();
    assert!(d.approve_before.is_empty() && d.step_durations.is_empty());
    assert_eq!(
        (d.confidence, d.min_success_rate, d.max_p99),
        (0.99, None, None)
    );

    let steps = r#"[1, { percent = 5, duration = "10m" }, "pause", 25]"#;
    for (from, to, want, line) in [
        (steps, r#"["pause", 5]"#, "needs a step before it", 6),
        (steps, r#"[1, "later"]"#, "neither a percentage", 6),
        (
            steps,
            r#"[1, { percent = 5, duration = "soon" }]"#,
            "duration",
            6,
        ),
        (steps, r#"[5, "pause", "pause", 25]"#, "in a row", 6),
        (steps, r#"[5, 100, "pause"]"#, "after the last step", 6),
        ("confidence = 0.95", "confidence = 1.0", "confidence", 8),
        (
            "min_success_rate = 0.99",
            "min_success_rate = 1.5",
            "min_success_rate",
            9,
        ),
        ("max_p99 = \"500ms\"", "max_p99 = \"0s\"", "max_p99", 10),
        (
            "approve_before = 100",
            "approve_before = 0",
            "approve_before",
            7,
        ),
    ] {
        let diags = Config::from_toml_str(&text.replace(from, to)).unwrap_err();
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains(want) && d.line == line),
            "{to}: {diags:?}"
        );
    }
    // An unknown key in a step is refused, not ignored.
    let bad = text.replace("duration = \"10m\"", "length = \"10m\"");
    assert!(Config::from_toml_str(&bad).is_err());
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let text = "[server]\nhttp = \"0.0.0.0:80\"\nhttps = \"0.0.0.0:80\"\n";
    let e = Config::from_toml_str(text).unwrap_err();
    assert_eq!((e[0].line, e[0].col), (3, 9));
    assert!(
        e[0].message.contains("same address as server.http"),
        "{e:?}"
    );
}

#[test]
fn providers_docker_keys_defaults_and_errors() {
    let c = Config::from_toml_str("[providers.docker]\n").unwrap();
    let d = c.docker.clone().unwrap();
    assert_eq!(d.endpoint, "unix:///var/run/docker.sock");
    assert!(!d.exposed_by_default);
    assert_eq!(d.labels, LabelDialect::Switchyard);
    assert!(
        c.warnings().is_empty(),
        "discovery routes what the file does not"
    );
    let text =
        "[providers.docker]\nendpoint = \"https://x:2376\"\nlabels = \"nginx\"\nsocket = 1\n";
    let e = Config::from_toml_str(text).unwrap_err();
    assert!(e[0].message.contains("unknown field `socket`"), "{e:?}");
    let text = "[providers.docker]\nendpoint = \"https://x:2376\"\nlabels = \"nginx\"\n";
    let e = Config::from_toml_str(text).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].message.contains("endpoint") && e[1].message.contains("labels"),
        "{e:?}"
    );
    let c = Config::from_toml_str(
        "[providers.docker]\nendpoint = \"tcp://socket-proxy:2375\"\nlabels = \"traefik\"\nnetwork = \"web\"\n",
    )
    .unwrap();
    assert_eq!(c.docker.unwrap().labels, LabelDialect::Traefik);
}

#[test]
fn route_rules_middlewares_and_version_rules_are_validated_with_positions() {
    let text = r#"
[middlewares.two]
strip_prefix = ["/a"]
add_prefix = "/b"

[middlewares.bad_re]
redirect_regex = { regex = "(", replacement = "x" }

[middlewares.ok]
rate_limit = { average = 5, per = "header:X-Key" }

[[routes]]
host = "a.test"
path = "/x"
path_prefix = "/y"
pool = "app"

[[routes]]
host = "b.test"
path_regex = "["
methods = ["GET", "BAD METHOD"]
middlewares = ["ok", "nope", "ok"]
pool = "app"

[[pools.app.match]]
header = "X-Beta"
version = "ghost"

[[pools.app.match]]
cookie = "a"
query = "b"
version = "v1"

[pools.app.versions.v1]
weight = 1
backends = ["127.0.0.1:1"]
"#;
    let diags = Config::from_toml_str(text).unwrap_err();
    let has = |lines: std::ops::RangeInclusive<usize>, words: &str| {
        assert!(
            diags
                .iter()
                .any(|d| lines.contains(&d.line) && d.message.contains(words)),
            "no {words:?} on lines {lines:?}: {diags:#?}"
        )
    };
    has(2..=3, "exactly one of headers");
    has(7..=7, "redirect_regex: bad regex");
    has(14..=14, "one of path, path_prefix and path_regex");
    has(20..=20, "path_regex: bad regex");
    has(21..=21, "\"BAD METHOD\" is not a method");
    has(22..=22, "middleware \"nope\", which is not declared");
    has(22..=22, "middleware ok is listed twice");
    has(25..=27, "version \"ghost\", which the pool does not have");
    has(29..=31, "exactly one of header, cookie or query");

    let ok = r#"
[middlewares.ok]
rate_limit = { average = 5, per = "header:X-Key" }
[[routes]]
host = "a.test"
path_prefix = "/api"
methods = ["get"]
middlewares = ["ok"]
pool = "app"
[[pools.app.match]]
query = "canary"
version = "v1"
[pools.app.versions.v1]
weight = 1
backends = ["127.0.0.1:1"]
"#;
    let c = Config::from_toml_str(ok).unwrap();
    assert_eq!(c.routes[0].rules.methods, vec![http::Method::GET]);
    assert_eq!(
        c.routes[0].label("a.test"),
        "a.test path_prefix=/api methods=GET"
    );
    let MiddlewareConfig::RateLimit(r) = &c.middlewares["ok"] else {
        panic!()
    };
    assert_eq!((r.average, r.burst), (5, 5));
    assert_eq!(c.pools["app"].matches.len(), 1);
    assert!(c.warnings().is_empty());
}

#[test]
fn two_listeners_on_port_0_are_two_ports() {
    let text = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n";
    assert!(Config::from_toml_str(text).is_ok());
}

#[test]
fn cluster_section_parses_with_defaults_and_is_absent_by_default() {
    assert_eq!(Config::from_toml_str(MINIMAL).unwrap().cluster, None);
    let text = format!(
        "{MINIMAL}\n[cluster]\netcd = [\"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]\n"
    );
    let c = Config::from_toml_str(&text).unwrap().cluster.unwrap();
    assert_eq!(c.etcd.len(), 2);
    assert_eq!(c.prefix, "/switchyard/");
    assert_eq!(c.name, None);
    assert_eq!(c.lease_ttl, Duration::from_secs(5));
    assert_eq!(c.tls, None);
    let text = format!(
        "{MINIMAL}\n[cluster]\netcd = [\"https://e:2379\"]\nprefix = \"/sy/prod/\"\nname = \"pi-a\"\nlease_ttl = \"3s\"\ntls = {{ ca = \"ca.pem\" }}\n"
    );
    let c = Config::from_toml_str(&text).unwrap().cluster.unwrap();
    assert_eq!(
        (c.prefix.as_str(), c.name.as_deref()),
        ("/sy/prod/", Some("pi-a"))
    );
    assert_eq!(c.tls.unwrap().ca, Some(PathBuf::from("ca.pem")));
}

#[test]
fn cluster_section_errors_are_collected() {
    let text = format!(
        "{MINIMAL}\n[cluster]\netcd = [\"10.0.0.2:2379\", \"http://e:2379\"]\nprefix = \"/no-slash\"\nname = \"bad name\"\nlease_ttl = \"1s\"\ntls = {{ cert = \"c.pem\" }}\n"
    );
    let Err(diagnostics) = Config::from_toml_str(&text) else {
        panic!("accepted");
    };
    let all: Vec<String> = diagnostics.iter().map(|d| d.message.clone()).collect();
    for want in [
        "is not an http:// or https:// URL",
        "plain http but cluster.tls is set",
        "must end with '/'",
        "bad cluster.name",
        "between 2s and 60s",
        "give both cert and key",
    ] {
        assert!(all.iter().any(|m| m.contains(want)), "{want}: {all:?}");
    }
    let empty = format!("{MINIMAL}\n[cluster]\netcd = []\n");
    assert!(Config::from_toml_str(&empty).is_err());
}

const TWO_POOLS: &str = r#"
[[routes]]
host = "a.test"
pool = "a"

[[routes]]
host = "b.test"
pool = "b"
path_prefix = "/api"

[[routes]]
host = "c.test"
pool = "b"

[pools.a.versions.blue]
weight = 100
backends = ["127.0.0.1:8081"]

[pools.b.versions.blue]
weight = 90
backends = ["127.0.0.1:8082"]

[pools.b.versions.green]
weight = 10
backends = ["127.0.0.1:8083"]

[pools.b.rollout]
steps = [10, 100]
"#;

#[test]
fn share_unchanged_keeps_old_pools_and_copies_the_rest_afresh() {
    let old = Config::from_toml_str(TWO_POOLS).unwrap();
    let mut new = Config::from_toml_str(&TWO_POOLS.replace("weight = 90", "weight = 80")).unwrap();
    let parsed = new.clone();
    new.share_unchanged(&old);
    // Unchanged: the old config's own pool and routes.
    assert!(Arc::ptr_eq(&new.pools["a"], &old.pools["a"]));
    assert!(Arc::ptr_eq(&new.routes, &old.routes));
    // Changed: equal to what was parsed, but a copy of it (made on the
    // calling thread, not the parser's).
    assert_eq!(new, parsed);
    assert!(!Arc::ptr_eq(&new.pools["b"], &parsed.pools["b"]));
    assert_eq!(new.pools["b"].versions.get("blue").unwrap().weight, 80);
    // The names are the old config's, not the parser's.
    let name = |c: &Config, k: &str| c.pools.get_key_value(k).unwrap().0.clone();
    for k in ["a", "b"] {
        assert!(Arc::ptr_eq(&name(&new, k), &name(&old, k)), "{k}");
        assert!(!Arc::ptr_eq(&name(&new, k), &name(&parsed, k)), "{k}");
    }
    // A new name is a copy too.
    let c = "\n[pools.c.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:8084\"]\n";
    let mut more = Config::from_toml_str(&format!("{TWO_POOLS}{c}")).unwrap();
    let parsed = more.clone();
    more.share_unchanged(&old);
    assert!(!Arc::ptr_eq(&name(&more, "c"), &name(&parsed, "c")));
    // Changed routes are copied too.
    let mut moved = Config::from_toml_str(&TWO_POOLS.replace("c.test", "d.test")).unwrap();
    let parsed = moved.clone();
    moved.share_unchanged(&old);
    assert_eq!(moved, parsed);
    assert!(!Arc::ptr_eq(&moved.routes, &parsed.routes));
}

#[test]
fn defaults_are_shared_and_versions_stay_in_name_order() {
    let c = Config::from_toml_str(TWO_POOLS).unwrap();
    // Host-only routes share one empty rule set; a route with rules has its own.
    assert!(Arc::ptr_eq(&c.routes[0].rules, &c.routes[2].rules));
    assert!(c.routes[0].rules.is_empty() && !c.routes[1].rules.is_empty());
    // Pools at the default rollout share one; pool b has its own steps.
    let other = Config::from_toml_str(MINIMAL).unwrap();
    assert!(Arc::ptr_eq(
        &c.pools["a"].rollout,
        &other.pools["app"].rollout
    ));
    assert_eq!(*c.pools["a"].rollout, RolloutConfig::default());
    assert_eq!(c.pools["b"].rollout.steps, vec![10, 100]);
    // Versions iterate by name, whatever the file's order.
    let text = TWO_POOLS.replace("[pools.b.versions.blue]", "[pools.b.versions.zz]");
    let c = Config::from_toml_str(&text).unwrap();
    let names: Vec<&str> = c.pools["b"].versions.keys().map(String::as_str).collect();
    assert_eq!(names, ["green", "zz"]);
}

// ---------------------------------------------------------------------------
// Reloads that re-read only the sections an edit touched (incremental.rs): the
// result must be what the full parse gives, whatever the edit.

const SECTIONS: &str = r#"# a config with every kind of pool section
[server]
http = "127.0.0.1:8080"
https = "127.0.0.1:8443"

[[routes]]
host = "a.test"
pool = "a"

[[routes]]
host = "b.test"
pool = "b"
path_prefix = "/api"

[[routes]]
host = "c.test"
pool = "c.d"

[[routes]]
host = "t.test"
pool = "a"
middlewares = ["h"]
[routes.tls]
cert = "t.pem"
key = "t.key"

[[routes]]
host = "u.test"
pool = "a"

[pools.a]
retry = 2
health = { path = "/health", interval = "2s" }

[pools.a.versions.blue]
weight = 90
backends = ["127.0.0.1:8081"]

[pools.a.versions.green]
weight = 10   # the canary
backends = [
  "127.0.0.1:8082",
  "[::1]:8083",
]

[[pools.a.match]]
header = "X-Beta"
version = "green"

[ pools . b .versions.v1 ]
weight = 1
backends = ["127.0.0.1:9001"]

[pools.b.rollout]
steps = [1, 5, { percent = 25, duration = "15m" }, 100]
step_duration = "5m"

[pools."c.d".versions.only]
weight = 5
backends = ['127.0.0.1:9100']

[pools.b.versions.v2]
weight = 0
backends = ["127.0.0.1:9002"]

[middlewares.h.headers]
frame_deny = true
"#;

/// Reads `new` after `old` both ways. When the incremental path takes it, its
/// config and index must be the full parse's; returns whether it took it.
/// The section match on its own (the path for edits far apart) is held to
/// the full parse too.
fn reread(old: &str, new: &str) -> bool {
    let running = Config::from_toml_str(old).expect("the old text is valid");
    let source = ConfigSource::index(old.to_owned(), Path::new(""));
    let full = Config::from_toml_str(new);
    read_whole(new, &full);
    if let Some(config) = source.reparse_by_sections(&running, new) {
        let full = full.as_ref().unwrap_or_else(|d| {
            panic!("the section match took a text the full parse refuses ({d:?}):\n{new}")
        });
        assert_eq!(&config, full, "edit (by sections) of:\n{new}");
    }
    if let Some((config, own_index)) = source.reparse_by_walk(&running, new) {
        let full = full.as_ref().unwrap_or_else(|d| {
            panic!("the walk took a text the full parse refuses ({d:?}):\n{new}")
        });
        assert_eq!(&config, full, "edit (walked) of:\n{new}");
        assert!(own_index, "the walk's index is not the new text's:\n{new}");
    }
    if let Some((config, own_index)) = source.reparse_by_walk_and_match(&running, new) {
        let full = full.as_ref().unwrap_or_else(|d| {
            panic!("the walk and match took a text the full parse refuses ({d:?}):\n{new}")
        });
        assert_eq!(&config, full, "edit (walked, then matched) of:\n{new}");
        assert!(
            own_index,
            "the walk and match's index is not the new text's:\n{new}"
        );
    }
    match source.reparse(&running, new.to_owned()) {
        Ok((config, next)) => {
            let full = full.unwrap_or_else(|d| {
                panic!("the incremental path took a text the full parse refuses ({d:?}):\n{new}")
            });
            assert_eq!(config, full, "edit of:\n{new}");
            assert_eq!(next.text(), new);
            assert!(next.incremental() != next.whole_by_sections());
            assert_eq!(
                next.layout(),
                ConfigSource::index(new.to_owned(), Path::new("")).layout(),
                "the moved index is not the new text's:\n{new}"
            );
            next.incremental()
        }
        Err(back) => {
            assert_eq!(back, new);
            false
        }
    }
}

/// Whether the walk takes `new` after `old` in part, and the match of the
/// rest the remainder; what it gives is held to the full parse by
/// [`reread`].
fn walked_then_matched(old: &str, new: &str) -> bool {
    let running = Config::from_toml_str(old).expect("the old text is valid");
    let source = ConfigSource::index(old.to_owned(), Path::new(""));
    source.reparse_by_walk_and_match(&running, new).is_some()
}

/// Whether the walk (edits in place inside pools' sections) takes `new`
/// after `old`; what it gives is held to the full parse by [`reread`].
fn walked(old: &str, new: &str) -> bool {
    let running = Config::from_toml_str(old).expect("the old text is valid");
    let source = ConfigSource::index(old.to_owned(), Path::new(""));
    source.reparse_by_walk(&running, new).is_some()
}

/// Reads `text` whole, section by section: when that path takes it, its
/// config and index must be the full parse's (`full`). Returns whether it
/// took it.
fn read_whole(text: &str, full: &Result<Config, Vec<super::Diagnostic>>) -> bool {
    match ConfigSource::read(text.to_owned(), Path::new("")) {
        Ok((config, source)) => {
            let full = full.as_ref().unwrap_or_else(|d| {
                panic!("the read by sections took a text the full parse refuses ({d:?}):\n{text}")
            });
            assert_eq!(&config, full, "read by sections:\n{text}");
            assert_eq!(source.text(), text);
            assert!(source.whole_by_sections() && !source.incremental());
            assert_eq!(
                source.layout(),
                ConfigSource::index(text.to_owned(), Path::new("")).layout()
            );
            true
        }
        Err(back) => {
            assert_eq!(back, text);
            false
        }
    }
}

#[test]
fn a_text_is_read_whole_by_sections_when_it_splits_cleanly() {
    for text in [SECTIONS.to_owned(), many_pools(300)] {
        assert!(read_whole(&text, &Config::from_toml_str(&text)));
    }
    // An empty file, and one of other sections only.
    assert!(read_whole("", &Config::from_toml_str("")));
    let others = "[server]\nhttp = \"127.0.0.1:1\"\n";
    assert!(read_whole(others, &Config::from_toml_str(others)));
    // A pool written as a root key, and a text with an error: the full
    // parse's.
    let root =
        format!("pools.z.versions.v = {{ weight = 1, backends = [\"127.0.0.1:9\"] }}\n{SECTIONS}");
    assert!(Config::from_toml_str(&root).is_ok());
    assert!(!read_whole(&root, &Config::from_toml_str(&root)));
    let bad = SECTIONS.replacen("weight = 10", "weight = -1", 1);
    assert!(!read_whole(&bad, &Config::from_toml_str(&bad)));
    // A route's sub-table before any route: refused by both.
    let early = format!("[routes.headers]\nx = \"1\"\n{SECTIONS}");
    assert!(!read_whole(&early, &Config::from_toml_str(&early)));
}

/// Whether the section match alone takes `new` after `old` (what it gives
/// is checked by [`reread`]).
fn by_sections(old: &str, new: &str) -> bool {
    let running = Config::from_toml_str(old).expect("the old text is valid");
    let source = ConfigSource::index(old.to_owned(), Path::new(""));
    source.reparse_by_sections(&running, new).is_some()
}

#[test]
fn an_index_names_each_sections_pool() {
    let s = ConfigSource::index(SECTIONS.to_owned(), Path::new(""));
    let layout = s.layout().expect("indexed");
    let what: Vec<Option<&str>> = layout.iter().map(|(_, p)| p.as_deref()).collect();
    let route = Some("[[routes]]");
    assert_eq!(
        what,
        [
            None,
            None,
            route,
            route,
            route,
            route,
            Some("[routes.*]"),
            route,
            Some("a"),
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c.d"),
            Some("b"),
            None,
        ]
    );
    for (start, _) in &layout[1..] {
        assert_eq!(SECTIONS.as_bytes()[*start as usize], b'[');
    }
}

#[test]
fn edits_read_incrementally_give_what_the_full_parse_gives() {
    let fast = |from: &str, to: &str| {
        assert!(SECTIONS.contains(from), "{from}");
        SECTIONS.replacen(from, to, 1)
    };
    let taken = [
        // a weight, backends, a comment, a multi-line array
        fast("weight = 90", "weight = 80"),
        fast("\"127.0.0.1:9001\"", "\"127.0.0.1:9009\", \"127.0.0.1:9010\""),
        fast("weight = 10   # the canary", "weight = 10"),
        fast("  \"[::1]:8083\",\n", ""),
        // the pool's own table, health, rules, rollout
        fast("retry = 2", "retry = 3\non_all_down = \"fail_open\""),
        fast("interval = \"2s\"", "interval = \"5s\""),
        fast("header = \"X-Beta\"", "cookie = \"beta\""),
        fast("{ percent = 25, duration = \"15m\" }", "50"),
        // a quoted name, a spaced header
        fast("weight = 5", "weight = 6"),
        fast("weight = 1\n", "weight = 2\n"),
        // a version added after another, one taken away
        fast(
            "\n[[pools.a.match]]",
            "\n[pools.a.versions.red]\nweight = 0\nbackends = [\"127.0.0.1:8084\"]\n\n[[pools.a.match]]",
        ),
        fast(
            "[pools.b.versions.v2]\nweight = 0\nbackends = [\"127.0.0.1:9002\"]\n",
            "",
        ),
        // a version moved from one pool to another
        fast("[pools.b.versions.v2]", "[pools.\"c.d\".versions.v2]"),
        // Windows line ends in the edit
        fast("weight = 90\n", "weight = 70\r\n"),
        // routes: changed, added, removed, moved among the pools
        fast("host = \"b.test\"", "host = \"bb.test\""),
        fast("path_prefix = \"/api\"", "path = \"/api/v2\"\nmethods = [\"GET\"]"),
        fast(
            "[[routes]]\nhost = \"c.test\"",
            "[[routes]]\nhost = \"n.test\"\npool = \"b\"\npreview = \"pre.n.test\"\n\n[[routes]]\nhost = \"c.test\"",
        ),
        fast("[[routes]]\nhost = \"b.test\"\npool = \"b\"\npath_prefix = \"/api\"\n\n", ""),
        fast(
            "\n[pools.b.rollout]",
            "\n[[routes]]\nhost = \"e.test\"\npool = \"a\"\n\n[pools.b.rollout]",
        ),
        fast("host = \"u.test\"\npool = \"a\"", "host = \"u.test\"\npool = \"c.d\""),
        // a pool added (with its route next to it)
        fast("[pools.b.versions.v2]", "[pools.e.versions.v2]"),
        fast(
            "[[routes]]\nhost = \"u.test\"",
            "[[routes]]\nhost = \"new.test\"\npool = \"new\"\n\n[pools.new.versions.one]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n\n[[routes]]\nhost = \"u.test\"",
        ),
        // the other sections: a server setting, a section added, a
        // middleware's content, a comment at the top
        fast("http = \"127.0.0.1:8080\"", "http = \"127.0.0.1:8090\""),
        fast(
            "https = \"127.0.0.1:8443\"\n",
            "https = \"127.0.0.1:8443\"\n\n[metrics]\nlisten = \"127.0.0.1:9090\"\n",
        ),
        fast("frame_deny = true", "frame_deny = false\ncontent_type_nosniff = true"),
        format!("# edited\n{SECTIONS}"),
        // what the routes are checked against, changed in a way that keeps
        // them valid: [acme] added, a middleware added
        fast(
            "[server]",
            "[acme]\nemail = \"ops@example.com\"\n\n[server]",
        ),
        fast(
            "[middlewares.h.headers]",
            "[middlewares.g.headers]\nframe_deny = true\n\n[middlewares.h.headers]",
        ),
        // a route with a sub-table, or next to one (read whole, by
        // sections)
        fast("cert = \"t.pem\"", "cert = \"t2.pem\""),
        fast("host = \"t.test\"", "host = \"t2.test\""),
        fast("[routes.tls]\ncert = \"t.pem\"\nkey = \"t.key\"\n", ""),
        fast(
            "host = \"u.test\"\npool = \"a\"\n",
            "host = \"u.test\"\npool = \"a\"\n[routes.headers]\nx-a = \"1\"\n",
        ),
        fast("[[routes]]\nhost = \"u.test\"\npool = \"a\"\n", ""),
        // a route and a pool in one edit
        fast(
            "host = \"u.test\"\npool = \"a\"\n\n[pools.a]\nretry = 2",
            "host = \"u.test\"\npool = \"b\"\n\n[pools.a]\nretry = 4",
        ),
    ];
    for (i, text) in taken.iter().enumerate() {
        assert!(
            reread(SECTIONS, text),
            "edit {i} should be read incrementally:\n{text}"
        );
    }
}

#[test]
fn edits_the_incremental_path_cannot_take_get_the_full_parse() {
    let fast = |from: &str, to: &str| {
        assert!(SECTIONS.contains(from), "{from}");
        SECTIONS.replacen(from, to, 1)
    };
    let full = [
        // what the routes are checked against, taken from under a route:
        // server.https (route t.test has tls), a middleware (t.test's)
        fast("https = \"127.0.0.1:8443\"\n", ""),
        fast("[middlewares.h.headers]", "[middlewares.h2.headers]"),
        // a pool written as a root key
        format!("pools.z.versions.v = {{ weight = 1, backends = [\"127.0.0.1:1\"] }}\n{SECTIONS}"),
        // route errors, which the full parse reports
        fast("host = \"u.test\"", "host = \"a.test\""),
        fast("pool = \"c.d\"", "pool = \"nope\""),
        fast("pool = \"c.d\"", "pool = \"c.d\"\nmiddlewares = [\"nope\"]"),
        fast("pool = \"c.d\"", "pool = \"c.d\"\ntls = \"acme\""),
        fast(
            "host = \"c.test\"",
            "host = \"c.test\"\npreview = \"a.test\"",
        ),
        // errors, which the full parse reports
        fast("weight = 90", "weight = -1"),
        fast("weight = 90", "weight = 90\nweight = 91"),
        fast("retry = 2", "retry = 2\nversions.blue.weight = 1"),
        fast("weight = 5", "weight = 5\nnote = \"\"\""),
        fast("weight = 1\n", "weight = 1"),
        fast("[pools.b.versions.v2]", "[pools.b.versions.v1]"),
        fast("version = \"green\"", "version = \"ghost\""),
        // a pool removed while a route still names it; a bad new name
        fast(
            "[pools.\"c.d\".versions.only]\nweight = 5\nbackends = ['127.0.0.1:9100']\n",
            "",
        ),
        fast("[pools.b.versions.v2]", "[pools.\"e e\".versions.v2]"),
    ];
    for (i, text) in full.iter().enumerate() {
        assert!(
            !reread(SECTIONS, text),
            "edit {i} needs the full parse:\n{text}"
        );
    }
}

#[test]
fn whole_file_edge_cases_read_both_ways_agree() {
    // The same text is not an edit.
    assert!(!reread(SECTIONS, SECTIONS));
    // A file that starts with a header, edited inside that section and
    // above it (a generated edit found the first one moving the index).
    let headed = SECTIONS.split_once('\n').unwrap().1;
    assert!(headed.starts_with("[server]"));
    assert!(reread(
        headed,
        &headed.replacen("https = ", "# note\nhttps = ", 1)
    ));
    assert!(reread(headed, &format!("# top\n{headed}")));
    assert!(reread(&format!("# top\n{headed}"), headed));
    assert!(reread(&format!("  # top\n  {headed}"), headed));
    // A pool no route names, added at the end and removed again.
    let spare =
        format!("{SECTIONS}\n[pools.spare.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n");
    assert!(reread(SECTIONS, &spare));
    assert!(reread(&spare, SECTIONS));
    // A route's sub-table after another section is still that route's.
    let apart = "[server]\nhttps = \"127.0.0.1:8443\"\n[[routes]]\nhost = \"a.test\"\npool = \"a\"\n[pools.a.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n[routes.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    let c = Config::from_toml_str(apart).unwrap();
    assert!(matches!(c.routes[0].tls, TlsMode::Files { .. }));
    assert!(reread(apart, &apart.replace("a.test", "b.test")));
    assert!(reread(apart, &apart.replace("a.pem", "b.pem")));
    assert!(reread(apart, &apart.replace("weight = 1", "weight = 2")));
}

#[test]
fn pool_or_route_keys_outside_their_sections_turn_the_incremental_path_off() {
    for extra in [
        "pools.z.versions.v = { weight = 1, backends = [\"127.0.0.1:1\"] }\n",
        "[pools]\nz.versions.v = { weight = 1, backends = [\"127.0.0.1:1\"] }\n",
    ] {
        let (head, tail) = SECTIONS.split_at(SECTIONS.find("[server]").unwrap());
        let old = if extra.starts_with('[') {
            format!("{SECTIONS}{extra}")
        } else {
            format!("{head}{extra}{tail}")
        };
        assert!(Config::from_toml_str(&old).unwrap().pools.contains_key("z"));
        assert!(
            ConfigSource::index(old.clone(), Path::new(""))
                .layout()
                .is_none(),
            "{old}"
        );
        assert!(!reread(
            &old,
            &old.replacen("weight = 90", "weight = 80", 1)
        ));
    }
    let inline = "routes = [{ host = \"r.test\", pool = \"a\" }]\n[pools.a.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n";
    assert_eq!(Config::from_toml_str(inline).unwrap().routes.len(), 1);
    assert!(ConfigSource::index(inline.to_owned(), Path::new(""))
        .layout()
        .is_none());
    assert!(!reread(inline, &inline.replace("weight = 1", "weight = 2")));
    // A bare [pools] header with no keys keeps it on.
    let old = format!("{SECTIONS}[pools]\n");
    assert!(reread(&old, &old.replacen("weight = 90", "weight = 80", 1)));
}

/// `[server]`, then `n` pools of one version, each with its route, all the
/// routes first.
fn many_pools(n: usize) -> String {
    let mut text = String::from("[server]\nhttp = \"127.0.0.1:8080\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[routes]]\nhost = \"p{i}.test\"\npool = \"p{i}\"\n"
        ));
    }
    for i in 0..n {
        text.push_str(&format!(
            "\n[pools.p{i}.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n"
        ));
    }
    text
}

#[test]
fn edits_far_apart_are_read_by_sections() {
    let text = many_pools(300);
    // The first and the last pool: one region of 300 sections, too many;
    // matched section by section, two runs of one.
    let mut both = text.replacen("weight = 1", "weight = 2", 1);
    let last = both.rfind("weight = 1").unwrap();
    both.replace_range(last..last + "weight = 1".len(), "weight = 3");
    assert!(reread(&text, &both));
    assert!(by_sections(&text, &both));
    // Each alone is read alone.
    assert!(reread(&text, &text.replacen("weight = 1", "weight = 2", 1)));
    // A new route among the routes and its pool at the end; then both
    // taken away again.
    let added = text.replacen(
        "\n[[routes]]\nhost = \"p7.test\"",
        "\n[[routes]]\nhost = \"new.test\"\npool = \"new\"\n\n[[routes]]\nhost = \"p7.test\"",
        1,
    ) + "\n[pools.new.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n";
    assert!(reread(&text, &added));
    assert!(reread(&added, &text));
    // A route's pool renamed, in the route and in the pool's header.
    let renamed =
        text.replacen("pool = \"p9\"", "pool = \"q9\"", 1)
            .replacen("[pools.p9.", "[pools.q9.", 1);
    assert!(reread(&text, &renamed));
    // Two routes swapped; the first and the last route changed.
    let swapped = text
        .replacen(
            "host = \"p3.test\"\npool = \"p3\"",
            "host = \"p4.test\"\npool = \"p4\"X",
            1,
        )
        .replacen(
            "host = \"p4.test\"\npool = \"p4\"\n",
            "host = \"p3.test\"\npool = \"p3\"\n",
            1,
        )
        .replacen("\"p4\"X", "\"p4\"", 1);
    assert_ne!(swapped, text);
    assert!(reread(&text, &swapped));
    let ends = text
        .replacen("host = \"p0.test\"", "host = \"first.test\"", 1)
        .replacen("host = \"p299.test\"", "host = \"last.test\"", 1)
        .replacen("http = \"127.0.0.1:8080\"", "http = \"127.0.0.1:8081\"", 1);
    assert!(reread(&text, &ends));
    // Two edits, each fine alone, together a host routed twice: the full
    // parse reports it.
    let twice = text
        .replacen("host = \"p0.test\"", "host = \"dup.test\"", 1)
        .replacen("host = \"p299.test\"", "host = \"dup.test\"", 1);
    assert!(!reread(&text, &twice));
    // A pool removed at the end while a route far away still names it.
    let orphan = text.replacen(
        "[pools.p299.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n",
        "",
        1,
    );
    let orphan = orphan.replacen("weight = 1", "weight = 2", 1);
    assert!(!reread(&text, &orphan));
    // The last route's sub-table at the end of the file, 300 sections
    // after it: an edit of either reads both.
    let part = format!("{text}[routes.headers]\nx-a = \"1\"\n");
    assert!(
        Config::from_toml_str(&part).unwrap().routes[299]
            .rules
            .headers
            .len()
            == 1
    );
    assert!(reread(
        &part,
        &part.replacen("host = \"p299.test\"", "host = \"q.test\"", 1)
    ));
    assert!(reread(
        &part,
        &part.replacen("x-a = \"1\"", "x-a = \"2\"", 1)
    ));
    assert!(reread(&part, &text));
    assert!(reread(&text, &part));
    // A route added last takes the sub-table from the one before.
    let taken = part.replacen(
        "\n[pools.p0.versions.v]",
        "\n[[routes]]\nhost = \"last.test\"\npool = \"p0\"\n\n[pools.p0.versions.v]",
        1,
    );
    assert!(reread(&part, &taken));
}

#[test]
fn edits_in_place_are_read_by_sections_however_many() {
    let text = many_pools(300);
    let big = many_pools(600);
    let big_part = format!("{big}[routes.headers]\nx-a = \"1\"\n");
    let far_host = big_part.replacen("host = \"p599.test\"", "host = \"q.test\"", 1);
    // In place: the last route and its sub-table 601 sections apart, and
    // every pool between them, read by sections.
    assert!(by_sections(&big_part, &far_host));
    assert!(reread(&big_part, &far_host));
    // With a route added at the top too, no longer in place: the run that
    // holds the last route whole is too long for the diff, the whole file
    // is read.
    let added = far_host.replacen(
        "\n[[routes]]",
        "\n[[routes]]\nhost = \"new.test\"\npool = \"p0\"\n\n[[routes]]",
        1,
    );
    assert!(Config::from_toml_str(&added).is_ok());
    assert!(!reread(&big_part, &added));
    // An edit of every pool, in place: taken, 300 or 600 sections.
    assert!(reread(&text, &text.replace("weight = 1", "weight = 2")));
    let all = big.replace("weight = 1", "weight = 2");
    assert!(by_sections(&big, &all));
    assert!(reread(&big, &all));
    // Every pool and a pool added: not in place, and 1 201 sections only
    // one text has are too many for the diff of the whole text. The walk
    // takes every pool but the last; the rest (the last pool, and the new
    // one after it) is matched on its own. Back again: the same.
    let grown =
        format!("{all}\n[pools.extra.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n");
    assert!(Config::from_toml_str(&grown).is_ok());
    assert!(!by_sections(&big, &grown));
    assert!(!walked(&big, &grown));
    assert!(walked_then_matched(&big, &grown));
    assert!(walked_then_matched(&grown, &big));
    assert!(reread(&big, &grown));
    assert!(reread(&grown, &big));
    // With the server changed too, at the top: the walk stops there, and
    // the rest (all of the text) is too much for the diff: read whole.
    let moved = grown.replacen("127.0.0.1:8080", "127.0.0.1:8081", 1);
    assert!(!reread(&big, &moved));
    // Two sections that trade places keep the count, but are not an edit
    // in place: the diff matches them.
    let a = "\n[pools.p1.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n";
    let b = "\n[pools.p2.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n";
    let traded = big
        .replacen(a, "@A@", 1)
        .replacen(b, a, 1)
        .replacen("@A@", b, 1);
    assert_ne!(traded, big);
    assert!(by_sections(&big, &traded));
    assert!(reread(&big, &traded));
}

#[test]
fn where_the_walk_stops_the_rest_is_matched() {
    let text = many_pools(300);
    let all = text.replace("weight = 1", "weight = 2");
    // Every pool and a route's sub-table, at the end, 300 sections after
    // its route: the walk stops at the sub-table; the rest starts at its
    // route, and is matched in place.
    let part = format!("{text}[routes.headers]\nx-a = \"1\"\n");
    let both = format!("{all}[routes.headers]\nx-a = \"2\"\n");
    assert!(!walked(&part, &both));
    assert!(walked_then_matched(&part, &both));
    assert!(reread(&part, &both));
    // Every pool, and a key after a route's blank line (the next route's
    // place does not start with a header): the rest starts a section
    // earlier, at that route.
    let tucked = all.replacen(
        "pool = \"p298\"\n\n",
        "pool = \"p298\"\n\npath_prefix = \"/x\"\n",
        1,
    );
    assert!(Config::from_toml_str(&tucked).unwrap().routes[298]
        .rules
        .path
        .is_some());
    assert!(walked_then_matched(&text, &tucked));
    assert!(reread(&text, &tucked));
    // Every pool, and a sub-table added at the end: the rest starts at the
    // last route; 603 sections of it differ, few enough for the diff.
    let added = format!("{all}[routes.headers]\nx-a = \"1\"\n");
    assert!(walked_then_matched(&text, &added));
    assert!(reread(&text, &added));
    // A pool taken away in the middle, its route moved to the next pool,
    // and every weight changed: the walk stops at the route; the rest is
    // matched.
    let gone = all.replacen(
        "\n[pools.p150.versions.v]\nweight = 2\nbackends = [\"127.0.0.1:1\"]\n",
        "\n",
        1,
    );
    let gone = gone.replacen("pool = \"p150\"", "pool = \"p151\"", 1);
    assert!(walked_then_matched(&text, &gone));
    assert!(reread(&text, &gone));
    assert!(reread(&gone, &text));
    // The same with 600 pools: 1 203 sections of the rest differ, too many
    // for the diff: read whole, the same config.
    let big = many_pools(600);
    let added = format!(
        "{}[routes.headers]\nx-a = \"1\"\n",
        big.replace("weight = 1", "weight = 2")
    );
    assert!(!walked_then_matched(&big, &added));
    assert!(!reread(&big, &added));
}

/// A whole read after an edit that left every route section as it was
/// keeps the running routes (checked against the new config); a route
/// whose text changed, or whose pool went, is not kept.
#[test]
fn a_whole_read_keeps_the_routes_whose_sections_are_the_same() {
    let big = many_pools(600);
    let running = Config::from_toml_str(&big).expect("valid");
    let source = ConfigSource::index(big.clone(), Path::new(""));
    // `[server]` and every weight, and a pool added (not an edit in
    // place): 1 200 pool sections differ, too many for the diff: a whole
    // read.
    let edit = big
        .replace("http = \"127.0.0.1:8080\"", "http = \"127.0.0.1:8081\"")
        .replace("weight = 1", "weight = 2")
        + "\n[pools.extra.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n";
    let (config, next) = source.reparse(&running, edit.clone()).expect("read");
    assert!(next.whole_by_sections());
    assert_eq!(config, Config::from_toml_str(&edit).expect("valid"));
    assert!(Arc::ptr_eq(&config.routes, &running.routes));
    assert!(!reread(&big, &edit));
    // A route's text changed: the routes are read again.
    let moved = edit.replacen("host = \"p0.test\"", "host = \"p0.example\"", 1);
    let (config, next) = source.reparse(&running, moved.clone()).expect("read");
    assert!(next.whole_by_sections());
    assert!(!Arc::ptr_eq(&config.routes, &running.routes));
    assert_eq!(config, Config::from_toml_str(&moved).expect("valid"));
    // A pool a kept route names is gone: not taken, and the full parse
    // says why.
    let gone = edit.replace(
        "\n[pools.p7.versions.v]\nweight = 2\nbackends = [\"127.0.0.1:1\"]\n",
        "\n",
    );
    assert_ne!(gone, edit);
    assert!(source.reparse(&running, gone.clone()).is_err());
    assert!(Config::from_toml_str(&gone).is_err());
    assert!(!reread(&big, &gone));
}

#[test]
fn edits_in_place_inside_pools_are_walked_and_nothing_else_is() {
    let text = many_pools(300);
    // A weight changed in every pool: walked, and taken by `reparse`.
    let all = text.replace("weight = 1", "weight = 2");
    assert!(walked(&text, &all));
    assert!(reread(&text, &all));
    // The first and the last pool, a line added to one and a value grown in
    // the other.
    let mut two = text.replacen("weight = 1\n", "weight = 1\n# a note\n", 1);
    let last = two.rfind("127.0.0.1:1").unwrap();
    two.replace_range(last..last + "127.0.0.1:1".len(), "127.0.0.1:19999");
    assert!(Config::from_toml_str(&two).is_ok());
    assert!(walked(&text, &two));
    assert!(reread(&text, &two));
    let far = |edit: &dyn Fn(&str) -> String| -> String {
        // Pool p0 edited as `edit` says, and the last pool's weight too (so
        // that no one region holds both).
        let mut t = edit(&text);
        let last = t.rfind("weight = 1").unwrap();
        t.replace_range(last..last + "weight = 1".len(), "weight = 3");
        t
    };
    let p0 = "weight = 1\nbackends = [\"127.0.0.1:1\"]\n\n[pools.p1";
    // Not walked: a route or the server changed; a section added or one
    // removed; the next pool's header inside a string the edit opens (it
    // reads as a string, not a header). Walked: a header renamed inside its
    // pool (the pool is read again whole), and a comment that quotes the
    // next header.
    let edits = [
        far(&|t| t.replacen("host = \"p0.test\"", "host = \"q.test\"", 1)),
        far(&|t| t.replacen("8080", "8081", 1)),
        far(&|t| t.replacen("[pools.p0.versions.v]", "[pools.p0.versions.w]", 1)),
        far(&|t| {
            t.replacen(
                "[pools.p0.versions.v]\n",
                "[pools.p0.versions.v]\nweight = 1\n[pools.p0.versions.w]\n",
                1,
            )
        }),
        far(&|t| {
            t.replacen(
                "\n[pools.p0.versions.v]\nweight = 1\nbackends = [\"127.0.0.1:1\"]\n",
                "",
                1,
            )
        }),
        far(&|t| t.replacen(p0, &p0.replacen("\n\n", "\nx = \"\"\"\n\n", 1), 1)),
        far(&|t| {
            t.replacen(
                p0,
                &p0.replacen("\n\n", "\n# [pools.p1.versions.v]\n\n", 1),
                1,
            )
        }),
    ];
    for (i, new) in edits.iter().enumerate() {
        assert_ne!(new, &text, "edit {i} changed nothing");
        assert_eq!(walked(&text, new), i == 2 || i == 6, "edit {i}:\n{new}");
        reread(&text, new);
    }
}

/// Pieces the generated edits put into lines: bytes of TOML's syntax and
/// lines of a config.
const GENERATED_BITS: &[&str] = &[
    "[server]\n",
    "http = \"127.0.0.1:1\"\n",
    "# c\n",
    "[metrics]\n",
    "listen = \"127.0.0.1:2\"\n",
    "frame_deny = false\n",
    "[",
    "]",
    "=",
    ".",
    "\"",
    "'",
    "#",
    "\n",
    "{",
    "}",
    ",",
    "0",
    "7",
    "a",
    " ",
    "[[",
    "\"\"\"",
    "pools.",
    "[pools.a.versions.x]\n",
    "weight = 3\n",
    "[pools.b.versions.v1]\n",
    "backends = [\"127.0.0.1:1\"]\n",
    "[[routes]]\n",
    "[pools.a]\n",
    "versions.blue.weight = 2\n",
];

/// A xorshift generator from `seed`: each call gives a number below `n`.
pub(super) fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

#[test]
fn generated_edits_far_apart_give_what_the_full_parse_gives() {
    // Two to four edits of a big text, anywhere, far apart (no one region
    // holds them): the walk takes those inside pools' sections, the section
    // match or the full parse the rest, each held to the full parse.
    let extra = [
        "'''",
        "weight = 2\n",
        "[pools.p1.versions.v]\n",
        "# a note\n",
    ];
    let bits: Vec<&str> = GENERATED_BITS.iter().copied().chain(extra).collect();
    let mut rand = xorshift(0x0dd_ba11_5eed_0019);
    let base = many_pools(300);
    let lines: Vec<&str> = base.split_inclusive('\n').collect();
    let (mut walks, mut matched, mut valid) = (0, 0, 0);
    for _ in 0..600 {
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let edits = 2 + rand(3);
        for e in 0..edits {
            // Spread over the text: edit e in its own stretch of lines.
            let stretch = out.len() / edits;
            let i = e * stretch + rand(stretch);
            match rand(6) {
                0 => {
                    let piece = bits[rand(bits.len())];
                    let at = rand(out[i].len() + 1);
                    out[i].insert_str(at, piece);
                }
                1 => {
                    let line = &mut out[i];
                    if !line.is_empty() {
                        let at = rand(line.len());
                        line.remove(at);
                    }
                }
                2 => out[i].insert_str(0, "# "),
                // Values changed, valid or not (a weight, a port, a host).
                _ => out[i] = out[i].replace('1', "2"),
            }
        }
        let new: String = out.concat();
        valid += usize::from(Config::from_toml_str(&new).is_ok());
        walks += usize::from(walked(&base, &new));
        matched += usize::from(walked_then_matched(&base, &new));
        reread(&base, &new);
    }
    eprintln!("walked: {walks}, walked then matched: {matched}, of 600 edits ({valid} valid)");
    assert!(walks * 10 > valid, "walked: {walks} of {valid} valid edits");
    assert!(
        matched * 10 > valid,
        "walked then matched: {matched} of {valid} valid edits"
    );
}

#[test]
fn what_routes_are_checked_against_is_checked_again_when_it_changes() {
    let acme = format!(
        "[acme]\nemail = \"ops@example.com\"\n\n{}",
        SECTIONS.replacen(
            "host = \"u.test\"\npool = \"a\"",
            "host = \"u.test\"\npool = \"a\"\ntls = \"acme\"",
            1
        )
    );
    assert!(Config::from_toml_str(&acme).is_ok());
    // [acme] taken away while a route uses it.
    assert!(!reread(
        &acme,
        &acme.replacen("[acme]\nemail = \"ops@example.com\"\n", "", 1)
    ));
    // A middleware no route uses, renamed.
    let spare = format!("{SECTIONS}\n[middlewares.spare.headers]\nframe_deny = true\n");
    assert!(reread(
        &spare,
        &spare.replacen("middlewares.spare.", "middlewares.other.", 1)
    ));
    // One in use by route u.test, renamed in its section only: the full
    // parse reports the route; renamed in the route too: taken.
    let used = spare.replacen(
        "host = \"u.test\"\npool = \"a\"",
        "host = \"u.test\"\npool = \"a\"\nmiddlewares = [\"spare\"]",
        1,
    );
    let section = used.replacen("middlewares.spare.", "middlewares.other.", 1);
    assert!(Config::from_toml_str(&section).is_err());
    assert!(!reread(&used, &section));
    let both = section.replacen("middlewares = [\"spare\"]", "middlewares = [\"other\"]", 1);
    assert!(reread(&used, &both));
    // Route t.test's middleware (the route has a [routes.tls] after it).
    let renamed = SECTIONS
        .replacen("[middlewares.h.headers]", "[middlewares.k.headers]", 1)
        .replacen("middlewares = [\"h\"]", "middlewares = [\"k\"]", 1);
    assert!(Config::from_toml_str(&renamed).is_ok());
    assert!(reread(SECTIONS, &renamed));
}

#[test]
fn generated_edits_give_what_the_full_parse_gives() {
    // Edits of a valid text (lines dropped, doubled, swapped, bytes changed
    // or added; one to three at a time), each read both ways; an edit that gives a valid
    // text becomes the next base now and then.
    let mut rand = xorshift(0x5eed_1234_abcd_0001);
    let mut base = SECTIONS.to_owned();
    let (mut taken, mut tried, mut whole) = (0, 0, 0);
    for _ in 0..3000 {
        // One edit, or two or three anywhere (the section match's case).
        let mut out: Vec<String> = base.split_inclusive('\n').map(str::to_owned).collect();
        let edits = [1, 1, 2, 3][rand(4)];
        for _ in 0..edits {
            if out.is_empty() {
                break;
            }
            let i = rand(out.len());
            let j = rand(out.len());
            match rand(6) {
                0 => {
                    out.remove(i);
                }
                1 => out.insert(i, out[i].clone()),
                2 => out.swap(i, j),
                3 | 4 => {
                    let piece = GENERATED_BITS[rand(GENERATED_BITS.len())];
                    let line = &mut out[i];
                    let at = rand(line.len() + 1);
                    if line.is_char_boundary(at) {
                        line.insert_str(at, piece);
                    }
                }
                _ => {
                    let at = rand(out[i].len().max(1));
                    let line = &mut out[i];
                    if !line.is_empty()
                        && line.is_char_boundary(at)
                        && line.is_char_boundary(at + 1)
                    {
                        line.remove(at);
                    }
                }
            }
        }
        let new: String = out.concat();
        let full = Config::from_toml_str(&new);
        let valid = full.is_ok();
        tried += usize::from(valid);
        whole += usize::from(read_whole(&new, &full));
        if reread(&base, &new) {
            taken += 1;
        }
        if valid && rand(4) == 0 {
            base = new;
        }
    }
    // Most edits land in pool sections: the path is exercised, not bypassed.
    eprintln!("incremental path: {taken} of {tried} valid edits; read whole by sections: {whole}");
    assert!(
        whole * 4 > tried * 3,
        "read whole by sections: {whole} of {tried} valid texts"
    );
    assert!(
        taken * 4 > tried,
        "incremental path: {taken} of {tried} valid edits"
    );
}
