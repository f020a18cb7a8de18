//! Route rules and version rules through the real binary, with curl as
//! the client: paths (prefix, exact, regex), methods, headers, query,
//! precedence, strip_prefix; `[[pools.P.match]]` and `ctl match`; the
//! shadowed-route warning of `switchyard check`.

mod origin;
mod support;

use std::collections::HashMap;

use origin::{curl, header, Origin};
use support::{run_bin, Proxy};

fn get(p: &Proxy, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = p.url(path);
    let host = format!("Host: {host}");
    let mut args = vec!["-H", host.as_str()];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    let (code, head, body) = curl(&args);
    (code, head, String::from_utf8_lossy(&body).into_owned())
}

fn pool(name: &str, o: &Origin) -> String {
    format!(
        "[pools.{name}.versions.v1]\nweight = 1\nbackends = [\"{}\"]\n",
        o.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_methods_headers_and_query_pick_the_route() {
    let web = Origin::start("web").await;
    let api = Origin::start("api").await;
    let v2 = Origin::start("v2").await;
    let exact = Origin::start("exact").await;
    let admin = Origin::start("admin").await;
    let reports = Origin::start("reports").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[middlewares.api]
strip_prefix = ["/api"]

[[routes]]
host = "app.test"
path_prefix = "/"
pool = "web"

[[routes]]
host = "app.test"
path_prefix = "/api"
pool = "api"
middlewares = ["api"]

[[routes]]
host = "app.test"
path_prefix = "/api/v2"
pool = "v2"

[[routes]]
host = "app.test"
path = "/api"
pool = "exact"

[[routes]]
host = "app.test"
path_prefix = "/admin"
methods = ["POST", "put"]
headers = {{ "X-Admin" = "yes" }}
pool = "admin"

[[routes]]
host = "app.test"
path_regex = "^/reports/[0-9]+$"
query = {{ format = "~^(csv|json)$" }}
pool = "reports"

[[routes]]
host = "only.test"
path_prefix = "/api"
pool = "api"

{}{}{}{}{}{}"#,
        pool("web", &web),
        pool("api", &api),
        pool("v2", &v2),
        pool("exact", &exact),
        pool("admin", &admin),
        pool("reports", &reports),
    );
    let p = Proxy::start(&config).await;

    // strip_prefix: the api backend sees /v1/x for /api/v1/x.
    let (code, _, body) = get(&p, "app.test", "/api/v1/x?a=1", &[]);
    assert_eq!((code, body.as_str()), (200, "api /v1/x?a=1 prefix=/api\n"));
    // The longest prefix wins; the exact path beats the prefix.
    assert_eq!(
        get(&p, "app.test", "/api/v2/y", &[]).2,
        "v2 /api/v2/y prefix=-\n"
    );
    assert_eq!(get(&p, "app.test", "/api", &[]).2, "exact /api prefix=-\n");
    assert_eq!(
        get(&p, "app.test", "/apiary", &[]).2,
        "api /ary prefix=/api\n"
    );
    assert_eq!(get(&p, "app.test", "/", &[]).2, "web / prefix=-\n");
    assert_eq!(
        get(&p, "APP.test:80", "/other", &[]).2,
        "web /other prefix=-\n"
    );

    // Methods and headers: all must hold, else the next route by rank.
    let post = ["-X", "POST", "-H", "X-Admin: yes"];
    assert_eq!(
        get(&p, "app.test", "/admin/a", &post).2,
        "admin /admin/a prefix=-\n"
    );
    let put = ["-X", "PUT", "-H", "X-Admin: yes"];
    assert!(get(&p, "app.test", "/admin/a", &put)
        .2
        .starts_with("admin "));
    assert!(get(&p, "app.test", "/admin/a", &["-H", "X-Admin: yes"])
        .2
        .starts_with("web "));
    assert!(get(&p, "app.test", "/admin/a", &["-X", "POST"])
        .2
        .starts_with("web "));

    // Regex path plus a query rule.
    assert!(get(&p, "app.test", "/reports/42?format=csv", &[])
        .2
        .starts_with("reports "));
    assert!(get(&p, "app.test", "/reports/42?format=pdf", &[])
        .2
        .starts_with("web "));
    assert!(get(&p, "app.test", "/reports/4x?format=csv", &[])
        .2
        .starts_with("web "));

    // A host whose only route is /api: anything else is 404.
    assert_eq!(get(&p, "only.test", "/api/x", &[]).0, 200);
    assert_eq!(get(&p, "only.test", "/other", &[]).0, 404);

    // The state shows each route with its rule and middlewares.
    let s = p.state().await;
    let routes = s["routes"].as_array().unwrap();
    let api_route = routes
        .iter()
        .find(|r| r["rule"] == "path_prefix=/api")
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(api_route["pool"], "api");
    assert_eq!(api_route["middlewares"][0]["kind"], "strip_prefix");
    assert!(routes.iter().any(|r| r["rule"] == "path=/api"));

    // Metrics name the route with its rule.
    let m = p.ctl(&["state"]);
    let text = String::from_utf8_lossy(&m.stdout).into_owned();
    assert!(text.contains("app.test path_prefix=/api"), "{text}");
    assert!(text.contains("api (strip_prefix): strips /api"), "{text}");
}

/// Counts which version answered `n` requests (the `x-served-by` header).
fn served(p: &Proxy, n: usize, extra: &[&str]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (code, head, _) = get(p, "app.test", "/", extra);
        assert_eq!(code, 200);
        let v = header(&head, "x-served-by").unwrap_or("?").to_string();
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_rules_send_beta_users_to_green_and_the_rest_by_weight() {
    let blue = Origin::start("blue").await;
    let green = Origin::start("green").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[[routes]]
host = "app.test"
pool = "app"

[pools.app]
version_header = true

[[pools.app.match]]
header = "X-Beta"
value = "1"
version = "green"

[[pools.app.match]]
cookie = "beta"
regex = "^(1|yes)$"
version = "green"

[pools.app.versions.blue]
weight = 3
backends = ["{}"]

[pools.app.versions.green]
weight = 1
backends = ["{}"]
"#,
        blue.addr, green.addr
    );
    let mut p = Proxy::start(&config).await;

    // Beta users always get green; the split of everyone else is untouched
    // by them (exactly 3:1 over whole cycles).
    assert_eq!(served(&p, 10, &["-H", "X-Beta: 1"])["green"], 10);
    assert_eq!(served(&p, 10, &["-b", "beta=yes"])["green"], 10);
    assert_eq!(
        served(&p, 10, &["-H", "X-Beta: 2"]).values().sum::<usize>(),
        10
    );
    let mut rest: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        for (k, v) in served(&p, 4, &[]) {
            *rest.entry(k).or_default() += v;
        }
        assert_eq!(served(&p, 1, &["-H", "X-Beta: 1"])["green"], 1);
    }
    assert_eq!((rest["blue"], rest["green"]), (30, 10), "{rest:?}");

    // At runtime: replace the rules (audited, persisted, survives a restart).
    let out = p.ctl(&["match", "clear", "app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.ctl(&["match", "add", "app", "--query", "canary=yes", "green"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1. query canary=yes -> green"));
    let (code, head, _) = get(&p, "app.test", "/?canary=yes", &[]);
    assert_eq!((code, header(&head, "x-served-by")), (200, Some("green")));
    let beta = served(&p, 8, &["-H", "X-Beta: 1"]);
    assert_eq!(
        (beta["blue"], beta["green"]),
        (6, 2),
        "X-Beta now goes by weight"
    );
    let events = p.events_of("match").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1]["what"]
        .as_str()
        .unwrap()
        .contains("query canary=yes -> green"));

    p.restart().await;
    let (_, head, _) = get(&p, "app.test", "/?canary=yes", &[]);
    assert_eq!(
        header(&head, "x-served-by"),
        Some("green"),
        "kept across a restart"
    );
    let s = p.state().await;
    assert_eq!(s["pools"]["app"]["match"][0]["query"], "canary", "{s}");

    // Refusals: an unknown version (404), a rule that is not one (400).
    let (st, v) = p
        .admin(
            "PUT",
            "/v1/pools/app/match",
            Some(r#"[{"header":"X","version":"nope"}]"#),
        )
        .await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = p
        .admin(
            "PUT",
            "/v1/pools/app/match",
            Some(r#"[{"header":"X","cookie":"y","version":"green"}]"#),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = p
        .admin("PUT", "/v1/pools/app/match", Some(r#"{"header":"X"}"#))
        .await;
    assert_eq!(st, 400);
    // A version a rule sends to cannot be removed.
    let (st, v) = p
        .admin("PUT", "/v1/pools/app/weights", Some(r#"{"green":0}"#))
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = p
        .admin("DELETE", "/v1/pools/app/versions/green", None)
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("version rule"), "{v}");
    let (st, v) = p
        .admin("PUT", "/v1/pools/app/weights", Some(r#"{"green":1}"#))
        .await;
    assert_eq!(st, 200, "{v}");

    // A rollout's share applies to the requests no rule matched.
    let out = p.ctl(&[
        "rollout",
        "start",
        "app",
        "green",
        "--steps",
        "10,100",
        "--step-duration",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        support::eventually(support::DEADLINE, || async {
            p.weights("app").await.get("green") == Some(&10)
        })
        .await,
        "{:?}",
        p.weights("app").await
    );
    assert_eq!(served(&p, 10, &["-G", "-d", "canary=yes"])["green"], 10);
    let split = served(&p, 20, &[]);
    assert_eq!((split["blue"], split["green"]), (18, 2), "{split:?}");
    assert!(p.ctl(&["rollout", "abort", "app"]).status.success());
}

#[test]
fn check_warns_about_routes_that_can_never_match() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    let base = r#"
[[routes]]
host = "app.test"
path_prefix = "/"
priority = 1000
pool = "app"

[[routes]]
host = "app.test"
path_prefix = "/api"
pool = "app"

[pools.app.versions.v1]
weight = 1
backends = ["127.0.0.1:9"]
"#;
    std::fs::write(&file, base).unwrap();
    let out = run_bin(&["check", "-c", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("route #2 (app.test path_prefix=/api) can never match: route #1"),
        "{err}"
    );

    // Without the priority, /api ranks first: no warning.
    std::fs::write(&file, base.replace("priority = 1000\n", "")).unwrap();
    let out = run_bin(&["check", "-c", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("never match"));

    // The same rule twice is an error, with its line.
    let dup = base
        .replace("priority = 1000\n", "")
        .replace("\"/api\"", "\"/\"");
    std::fs::write(&file, dup).unwrap();
    let out = run_bin(&["check", "-c", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains(":8:8: host app.test is routed twice with the same rule"),
        "{err}"
    );
}
