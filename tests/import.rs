//! `switchyard import traefik` through the real binary, on realistic Traefik
//! setups (tests/fixtures/traefik/): the output passes `switchyard check`, and
//! the proxy serving it splits traffic the way Traefik's weights said, and
//! routes and guards requests the way its rules and middlewares said (curl
//! as the client, Apache's `htpasswd` writing the users file).

mod origin;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use origin::header;
use support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/traefik")
        .join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the importer on files and returns its TOML, asserting success.
fn import(files: &[PathBuf]) -> (String, String) {
    let mut args = vec!["import".to_string(), "traefik".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = run_bin(&args);
    assert!(
        out.status.success(),
        "import failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    (stdout(&out), stderr(&out))
}

/// `switchyard check` on the text, asserting it passes.
fn check(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    check_in(dir.path(), toml);
}

/// `switchyard check` on the text written in `dir` (next to the files it
/// names), asserting it passes.
fn check_in(dir: &Path, toml: &str) {
    let path = dir.join("imported.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_bin(&["check", "-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "switchyard check refused the imported config:\n{}{}\n--- config ---\n{toml}",
        stdout(&out),
        stderr(&out)
    );
}

fn table(toml: &str) -> toml::Table {
    toml.parse().expect("the output is TOML")
}

/// pool -> version -> (weight, backends)
fn versions(t: &toml::Table, pool: &str) -> BTreeMap<String, (i64, Vec<String>)> {
    t["pools"][pool]["versions"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(name, v)| {
            let backends = v["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap().to_string())
                .collect();
            (name.clone(), (v["weight"].as_integer().unwrap(), backends))
        })
        .collect()
}

fn routes(t: &toml::Table) -> Vec<(String, String, String)> {
    t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap().to_string(),
                r["pool"].as_str().unwrap().to_string(),
                r.get("tls")
                    .and_then(|x| x.as_str())
                    .unwrap_or("none")
                    .to_string(),
            )
        })
        .collect()
}

/// The imported config made servable here: loopback listener, the named
/// backends replaced by local upstreams (every backend must be mapped), no
/// TLS or ACME (there is no Internet); routes, pools, weights and health
/// checks as imported.
fn serve_locally(toml: &str, upstreams: &[(&str, SocketAddr)]) -> String {
    let mut t = table(toml);
    let server = t["server"].as_table_mut().unwrap();
    server.insert("http".into(), "127.0.0.1:0".into());
    server.remove("https");
    server.insert("shutdown_grace".into(), "2s".into());
    t.remove("acme");
    for r in t["routes"].as_array_mut().unwrap() {
        let r = r.as_table_mut().unwrap();
        r.remove("tls");
        r.remove("redirect_https");
    }
    for (_, pool) in t["pools"].as_table_mut().unwrap().iter_mut() {
        pool.as_table_mut()
            .unwrap()
            .insert("version_header".into(), true.into());
        for (_, v) in pool["versions"].as_table_mut().unwrap().iter_mut() {
            for b in v["backends"].as_array_mut().unwrap() {
                let name = b.as_str().unwrap().to_string();
                let addr = upstreams
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("unexpected backend {name} in the import"))
                    .1;
                *b = addr.to_string().into();
            }
        }
    }
    toml::to_string(&t).unwrap()
}

async fn send(p: &Proxy, host: &str, n: usize) {
    let mut c = Client::new(p.http);
    for _ in 0..n {
        let a = c.get(host, "/").await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_blue_green_labels_weights_1_1_split_50_50_through_the_proxy() {
    let (toml, _) = import(&[fixture("compose-blue-green.yml")]);
    check(&toml);
    let t = table(&toml);
    assert_eq!(
        routes(&t),
        [
            ("shop.example.com".into(), "shop".into(), "acme".into()),
            ("www.shop.example.com".into(), "shop".into(), "acme".into()),
        ]
    );
    let v = versions(&t, "shop");
    assert_eq!(v["blue"], (1, vec!["blue:8080".to_string()]));
    assert_eq!(v["green"], (1, vec!["green:8080".to_string()]));
    assert_eq!(v.len(), 2);
    // The resolver from the Traefik container's command line.
    let acme = t["acme"].as_table().unwrap();
    assert_eq!(acme["email"].as_str(), Some("ops@example.com"));
    assert_eq!(acme["challenge"].as_str(), Some("tls-alpn-01"));
    assert_eq!(t["server"]["https"].as_str(), Some("0.0.0.0:443"));
    let health = t["pools"]["shop"]["health"].as_table().unwrap();
    assert_eq!(health["path"].as_str(), Some("/health"));
    assert_eq!(health["interval"].as_str(), Some("10s"));
    assert_eq!(health["timeout"].as_str(), Some("3s"));

    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let p = Proxy::start(&serve_locally(
        &toml,
        &[("blue:8080", blue.addr), ("green:8080", green.addr)],
    ))
    .await;
    send(&p, "shop.example.com", 100).await;
    assert_eq!((blue.hits(), green.hits()), (50, 50));
    // The second host of `Host(a) || Host(b)` reaches the same pool.
    send(&p, "www.shop.example.com", 10).await;
    assert_eq!((blue.hits(), green.hits()), (55, 55));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_file_weighted_100_0_sends_everything_to_the_first_service() {
    let (toml, _) = import(&[fixture("dynamic-weighted.yml")]);
    check(&toml);
    let t = table(&toml);
    // The resolver is in the static configuration, not given here: said so,
    // and served in plain HTTP.
    assert!(
        toml.contains("uses certificate resolver \"le\", which is not in the files given"),
        "{toml}"
    );
    assert_eq!(
        routes(&t),
        [("shop.example.com".into(), "shop".into(), "none".into())]
    );
    let v = versions(&t, "shop");
    assert_eq!(
        v["v1"],
        (
            100,
            vec!["shop-v1-a:8080".to_string(), "shop-v1-b:8080".to_string()]
        )
    );
    assert_eq!(v["v2"], (0, vec!["shop-v2:8080".to_string()]));
    let health = t["pools"]["shop"]["health"].as_table().unwrap();
    assert_eq!(health["path"].as_str(), Some("/health"));
    assert_eq!(health["interval"].as_str(), Some("5s"));
    assert_eq!(health["timeout"].as_str(), Some("2s"));
    // The headers middleware is carried over: HSTS from stsSeconds.
    let secure = &t["middlewares"]["security-headers"]["headers"];
    assert_eq!(secure["hsts"].as_str(), Some("max-age=31536000"), "{toml}");
    assert_eq!(secure["frame_deny"].as_bool(), Some(true));
    assert_eq!(
        t["routes"][0]["middlewares"].as_array().unwrap()[0].as_str(),
        Some("security-headers")
    );

    let a = Upstream::start("v1-a").await;
    let b = Upstream::start("v1-b").await;
    let canary = Upstream::start("v2").await;
    let p = Proxy::start(&serve_locally(
        &toml,
        &[
            ("shop-v1-a:8080", a.addr),
            ("shop-v1-b:8080", b.addr),
            ("shop-v2:8080", canary.addr),
        ],
    ))
    .await;
    send(&p, "shop.example.com", 100).await;
    assert_eq!(canary.hits(), 0);
    assert_eq!((a.hits(), b.hits()), (50, 50));
}

#[test]
fn dynamic_files_in_yaml_and_toml_import_alike() {
    let (yaml, _) = import(&[fixture("dynamic-weighted.yml")]);
    let (toml, _) = import(&[fixture("dynamic-weighted.toml")]);
    let neutral = |s: &str| {
        s.replace("dynamic-weighted.yml", "F")
            .replace("dynamic-weighted.toml", "F")
    };
    assert_eq!(neutral(&yaml), neutral(&toml));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_service_manifest_3_1_splits_75_25_through_the_proxy() {
    let (toml, _) = import(&[fixture("traefikservice.yml")]);
    check(&toml);
    let t = table(&toml);
    assert_eq!(
        routes(&t),
        [("api.example.com".into(), "api".into(), "none".into())]
    );
    let v = versions(&t, "api");
    assert_eq!(v["stable"], (3, vec!["api-stable.prod:80".to_string()]));
    // `port: http` resolved through the Service manifest in the same file.
    assert_eq!(v["canary"], (1, vec!["api-canary.prod:8080".to_string()]));

    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let p = Proxy::start(&serve_locally(
        &toml,
        &[
            ("api-stable.prod:80", stable.addr),
            ("api-canary.prod:8080", canary.addr),
        ],
    ))
    .await;
    send(&p, "api.example.com", 100).await;
    assert_eq!((stable.hits(), canary.hits()), (75, 25));
}

#[test]
fn static_config_acme_resolver_becomes_the_acme_section() {
    let (toml, _) = import(&[fixture("traefik-static.yml")]);
    check(&toml);
    let t = table(&toml);
    let acme = t["acme"].as_table().unwrap();
    assert_eq!(acme["email"].as_str(), Some("ops@example.com"));
    assert_eq!(acme["directory"].as_str(), Some("letsencrypt-staging"));
    assert_eq!(acme["challenge"].as_str(), Some("http-01"));
    assert_eq!(acme["storage"].as_str(), Some("/var/lib/switchyard/acme"));
    assert!(toml.contains("\"/letsencrypt/acme.json\""), "{toml}");
    assert!(t.get("routes").is_none());

    // With the dynamic file it serves: TLS by ACME on the websecure port,
    // the web entrypoint's redirect kept (switchyard's default).
    let (both, _) = import(&[
        fixture("traefik-static.yml"),
        fixture("dynamic-weighted.yml"),
    ]);
    check(&both);
    let t = table(&both);
    assert_eq!(
        routes(&t),
        [("shop.example.com".into(), "shop".into(), "acme".into())]
    );
    assert_eq!(t["server"]["https"].as_str(), Some("0.0.0.0:443"));
    assert!(t["routes"][0].get("redirect_https").is_none());
}

#[test]
fn unknown_labels_are_reported_on_stderr_and_in_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-compose.yml");
    std::fs::write(
        &path,
        r#"
services:
  app:
    image: example/app
    expose: ["3000"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.routers.app.colour=blue
      - traefik.frontend.rule=Host:app.example.com
"#,
    )
    .unwrap();
    let (toml, err) = import(&[path]);
    check(&toml);
    for label in ["traefik.http.routers.app.colour", "traefik.frontend.rule"] {
        assert!(
            err.lines()
                .any(|l| l.contains("warning") && l.contains(label)),
            "{label} not on stderr:\n{err}"
        );
        assert!(
            toml.lines()
                .any(|l| l.starts_with('#') && l.contains(label)),
            "{label} not in a comment:\n{toml}"
        );
    }
}

#[test]
fn malformed_or_unsupported_input_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "port.yml",
            "services:\n  app:\n    labels:\n      - traefik.http.routers.a.rule=Host(`a.test`)\n      - traefik.http.services.a.loadbalancer.server.port=eighty\n",
            "traefik.http.services.a.loadbalancer.server.port: \"eighty\" is not a port",
        ),
        (
            "weight.yml",
            "http:\n  services:\n    s:\n      weighted:\n        services:\n          - name: x\n            weight: -3\n",
            "http.services.s.weighted.services[0].weight: expected a whole number >= 0",
        ),
        (
            "rule.yml",
            "http:\n  routers:\n    r: {rule: \"Host(`a.test`) ||\", service: s}\n  services:\n    s: {loadBalancer: {servers: [{url: \"http://s\"}]}}\n",
            "http.routers.r.rule: cannot parse",
        ),
        (
            "ca.yml",
            "certificatesResolvers:\n  le:\n    acme:\n      email: a@b.c\n      caServer: http://ca.internal/dir\n",
            "certificatesResolvers.le.acme.caServer",
        ),
        ("syntax.yml", "http:\n  routers: [\n", "syntax.yml:"),
        ("syntax.toml", "[http.routers\n", "syntax.toml:1:"),
        (
            "other.yml",
            "apiVersionX: 1\nfoo: bar\n",
            "not a Docker Compose file, a Traefik dynamic or static configuration",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = run_bin(&["import", "traefik", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: want {want:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(stdout(&out).is_empty(), "{name}: printed a config anyway");
    }
    let missing = dir.path().join("nope.yml");
    let out = run_bin(&["import", "traefik", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    // No file at all is a usage error from the argument parser.
    let out = run_bin(&["import", "traefik"]);
    assert!(!out.status.success());
}

#[test]
fn the_pi_setup_imports_to_two_listeners_and_checks() {
    let (toml, _) = import(&[fixture("pi-compose.yml"), fixture("pi-static.yml")]);
    check(&toml);
    let t = table(&toml);
    assert_eq!(t["server"]["http"].as_str(), Some("0.0.0.0:80"), "{toml}");
    assert_eq!(t["server"]["https"].as_str(), Some("0.0.0.0:443"), "{toml}");
    assert_eq!(
        routes(&t),
        [("app.example.com".into(), "app".into(), "acme".into())],
        "wiki has no traefik.enable=true"
    );
    assert_eq!(t["pools"]["app"]["health"]["port"].as_integer(), Some(9090));
    assert_eq!(
        t["access_log"]["path"].as_str(),
        Some("/var/log/traefik/access.log")
    );

    let (merged, _) = import(&[fixture("compose-base.yml"), fixture("compose-override.yml")]);
    check(&merged);
    let t = table(&merged);
    assert_eq!(versions(&t, "app")["app"].1, ["app:9090"]);
}

// ---------------------------------------------------------------------------
// Rules and middlewares.

fn htpasswd(args: &[&str]) {
    let out = std::process::Command::new("htpasswd")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("htpasswd (apache2-utils) is needed; scripts/setup.sh installs it: {e}")
        });
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl to the proxy with a Host: (status, lowercased head, body).
fn req(p: &Proxy, host: &str, path: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let url = p.url(path);
    let host = format!("Host: {host}");
    let mut args = vec!["-H", host.as_str()];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    origin::curl(&args)
}

fn body(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn gunzip(b: &[u8]) -> String {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("a gzip body");
    out
}

/// `n` requests at once with one curl (`--parallel`): the status codes and
/// how long they took.
fn burst(p: &Proxy, host: &str, path: &str, n: usize) -> (Vec<u16>, std::time::Duration) {
    let url = p.url(path);
    let host = format!("Host: {host}");
    let mut c = std::process::Command::new("curl");
    c.args([
        "-s",
        "-Z",
        "--parallel-immediate",
        "--parallel-max",
        "50",
        "-w",
        "%{http_code}\n",
    ])
    .args(["-H", &host]);
    for _ in 0..n {
        c.args(["-o", "/dev/null", &url]);
    }
    let start = std::time::Instant::now();
    let out = c
        .output()
        .expect("curl is needed (scripts/setup.sh installs it)");
    let took = start.elapsed();
    let codes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    (codes, took)
}

/// The middlewares of the file provider, imported, checked and served:
/// path routing and strip_prefix, the exact path before the prefix, the
/// header rule, security headers, basic auth from an htpasswd file (bcrypt
/// and apr1) behind an allow list that trusts one proxy hop, 403 from an
/// allow list, 429 past the rate limit, gzip, and the redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_provider_rules_and_middlewares_behave_as_in_traefik() {
    let (toml, _) = import(&[fixture("middlewares.yml")]);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.htpasswd");
    let users = users.to_str().unwrap();
    htpasswd(&["-c", "-B", "-b", users, "alice", "wonderland"]);
    htpasswd(&["-b", "-m", users, "bob", "builder"]);
    check_in(dir.path(), &toml);
    let t = table(&toml);
    assert_eq!(
        t["middlewares"]["admin-auth"]["basic_auth"]["users_file"].as_str(),
        Some("users.htpasswd")
    );
    assert!(
        toml.contains("accessControlAllowOriginList: not carried over"),
        "{toml}"
    );

    let web = origin::Origin::start("web").await;
    let api = origin::Origin::start("api").await;
    let green = origin::Origin::start("green").await;
    let config = serve_locally(
        &toml,
        &[
            ("web:8080", web.addr),
            ("api:8080", api.addr),
            ("green:8080", green.addr),
        ],
    );
    let p = Proxy::start_in(dir, &config).await;
    let app = "app.example.com";

    // Security and custom headers on the host's catch-all route.
    let (code, head, b) = req(&p, app, "/", &["-H", "X-Debug: 1"]);
    assert_eq!(code, 200, "{head}");
    assert_eq!(body(&b), "web / prefix=-\n");
    assert_eq!(header(&head, "x-frame-options"), Some("deny"));
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert_eq!(header(&head, "x-seen-x-env"), Some("prod"));
    assert_eq!(header(&head, "x-seen-x-debug"), None, "removed");
    assert_eq!(
        header(&head, "strict-transport-security"),
        None,
        "HSTS only over HTTPS, as Traefik without forceSTSHeader"
    );
    // The prefix is stripped for the API; the exact path beats the prefix.
    let (code, _, b) = req(&p, app, "/api/v1/x", &[]);
    assert_eq!((code, body(&b)), (200, "api /v1/x prefix=/api\n".into()));
    let (_, _, b) = req(&p, app, "/api/health", &[]);
    assert_eq!(body(&b), "web /api/health prefix=-\n");
    // The header rule sends beta testers to green.
    let (_, _, b) = req(&p, app, "/", &["-H", "X-Beta: 1"]);
    assert_eq!(body(&b), "green / prefix=-\n");
    // gzip through the chain (strip, limit, compress).
    let (code, head, b) = req(&p, app, "/api/big", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&b), origin::big());

    // The admin area: the X-Forwarded-For entry one hop from the right
    // decides, then the users of the htpasswd file.
    let xff = ["-H", "X-Forwarded-For: 203.0.113.9, 10.1.2.3"];
    assert_eq!(req(&p, app, "/admin/", &[]).0, 403, "no proxy hop");
    assert_eq!(
        req(&p, app, "/admin/", &["-H", "X-Forwarded-For: 10.9.9.9"]).0,
        403
    );
    let (code, head, _) = req(&p, app, "/admin/", &xff);
    assert_eq!(code, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some("basic realm=\"admin\"")
    );
    for (user, want) in [
        ("alice:wonderland", 200),
        ("bob:builder", 200),
        ("alice:builder", 401),
        ("mallory:x", 401),
    ] {
        let mut args = xff.to_vec();
        args.extend(["-u", user]);
        let (code, head, _) = req(&p, app, "/admin/", &args);
        assert_eq!(code, want, "{user}");
        if want == 200 {
            assert_eq!(header(&head, "x-seen-authorization"), None, "removeHeader");
        }
    }
    // An allow list the client is not on, for both of the rule's prefixes.
    assert_eq!(req(&p, app, "/closed/x", &[]).0, 403);
    assert_eq!(req(&p, app, "/private", &[]).0, 403);
    // The old host redirects, keeping the path.
    let (code, head, _) = req(&p, "old.example.com", "/some/page", &[]);
    assert_eq!(code, 301);
    assert_eq!(
        header(&head, "location"),
        Some("https://app.example.com/some/page")
    );

    // average 10 burst 10: about 10 pass, then 429 with Retry-After; another
    // client address is not affected. The /api requests above took tokens
    // from this client's bucket: a full second refills it (10/s, burst 10),
    // so that the burst starts from a full bucket however fast the steps
    // between ran.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (codes, took) = burst(&p, app, "/api/x", 50);
    assert_eq!(codes.len(), 50, "{codes:?}");
    let ok = codes.iter().filter(|&&c| c == 200).count();
    let limited = codes.iter().filter(|&&c| c == 429).count();
    assert_eq!(ok + limited, 50, "{codes:?}");
    let refill = (took.as_secs_f64() * 10.0).ceil() as usize;
    assert!(ok >= 10 && ok <= 10 + refill + 1, "{ok} passed in {took:?}");
    let (code, head, _) = req(&p, app, "/api/x", &[]);
    if code == 429 {
        assert!(header(&head, "retry-after").is_some(), "{head}");
    }
    assert_eq!(req(&p, app, "/api/x", &["--interface", "127.0.0.2"]).0, 200);
}

/// Compose labels with inline users, method and query rules, a docker
/// middleware and one of the file provider's (`secure@file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_label_rules_and_middlewares_behave_as_in_traefik() {
    let (toml, _) = import(&[
        fixture("compose-middlewares.yml"),
        fixture("middlewares.yml"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.htpasswd");
    htpasswd(&["-c", "-B", "-b", users.to_str().unwrap(), "admin", "x"]);
    check_in(dir.path(), &toml);
    let t = table(&toml);
    let shop_routes: Vec<&toml::Value> = t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"].as_str() == Some("shop.example.com"))
        .collect();
    assert_eq!(shop_routes.len(), 4, "{toml}");
    assert!(
        shop_routes.iter().all(|r| r.get("priority").is_some()),
        "{toml}"
    );

    let web = origin::Origin::start("web").await;
    let api = origin::Origin::start("api").await;
    let green = origin::Origin::start("green").await;
    let shop = origin::Origin::start("shop").await;
    let shop_api = origin::Origin::start("shop-api").await;
    let config = serve_locally(
        &toml,
        &[
            ("web:8080", web.addr),
            ("api:8080", api.addr),
            ("green:8080", green.addr),
            ("shop:8080", shop.addr),
            ("shop-api:9000", shop_api.addr),
        ],
    );
    let p = Proxy::start_in(dir, &config).await;
    let host = "shop.example.com";

    // Inline users (bcrypt and apr1 from the labels), then the file's headers.
    assert_eq!(req(&p, host, "/", &[]).0, 401);
    for (user, want) in [
        ("alice:wonderland", 200),
        ("bob:builder", 200),
        ("bob:x", 401),
    ] {
        let (code, head, b) = req(&p, host, "/", &["-u", user]);
        assert_eq!(code, want, "{user}");
        if want == 200 {
            assert_eq!(body(&b), "shop / prefix=-\n");
            assert_eq!(
                header(&head, "x-frame-options"),
                Some("deny"),
                "secure@file"
            );
        }
    }
    // GET and POST under /api go to the API without the prefix; another
    // method falls through to the shop's own route (and its auth).
    let (code, _, b) = req(&p, host, "/api/items", &[]);
    assert_eq!(
        (code, body(&b)),
        (200, "shop-api /items prefix=/api\n".into())
    );
    let (code, _, b) = req(&p, host, "/api/items", &["-X", "POST", "-d", "x"]);
    assert_eq!(
        (code, body(&b)),
        (200, "shop-api /items prefix=/api\n".into())
    );
    assert_eq!(req(&p, host, "/api/items", &["-X", "DELETE"]).0, 401);
    // The office allow list refuses loopback.
    assert_eq!(req(&p, host, "/internal/x", &[]).0, 403);
    // The search route needs its query parameter (and has no auth).
    let (code, head, _) = req(&p, host, "/search?format=json", &[]);
    assert_eq!(code, 200, "{head}");
    assert_eq!(header(&head, "x-served-by"), Some("shop"));
    assert_eq!(
        req(&p, host, "/search?format=html", &[]).0,
        401,
        "the catch-all"
    );
}

/// `switchyard check` reads the users of every basic_auth: an imported
/// usersFile that is not on this machine, or lines it cannot use, fail the
/// check at the key that names them.
#[test]
fn check_reports_a_users_file_it_cannot_read_or_use() {
    let (toml, _) = import(&[fixture("middlewares.yml")]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.toml");
    std::fs::write(&path, &toml).unwrap();
    let line = toml
        .lines()
        .position(|l| l.contains("users_file = \"users.htpasswd\""))
        .unwrap()
        + 1;
    let out = run_bin(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("imported.toml:{line}:"))
            && text.contains("middleware admin-auth")
            && text.contains("users.htpasswd"),
        "{text}"
    );
    // Malformed lines: reported with their line numbers.
    std::fs::write(
        dir.path().join("users.htpasswd"),
        "alice:plaintext\nnot a line\n",
    )
    .unwrap();
    let out = run_bin(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("line 1 (user alice): unsupported hash") && text.contains("line 2"),
        "{text}"
    );
    // A good file passes.
    htpasswd(&[
        "-c",
        "-B",
        "-b",
        dir.path().join("users.htpasswd").to_str().unwrap(),
        "alice",
        "x",
    ]);
    check_in(dir.path(), &toml);
}
