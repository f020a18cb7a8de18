//! `switchyard import traefik` through the real binary, on realistic Traefik
//! setups (tests/fixtures/traefik/): the output passes `switchyard check`, and
//! the proxy serving it splits traffic the way Traefik's weights said.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

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
    let path = dir.path().join("imported.toml");
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
    // The headers middleware is not silently dropped.
    assert!(
        toml.lines()
            .any(|l| l.starts_with('#') && l.contains("\"security-headers\" (headers)")),
        "{toml}"
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
