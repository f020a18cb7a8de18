//! The importer on small inline inputs: every shape it reads, every refusal.
//! (tests/import.rs runs the real binary on realistic files and measures the
//! split through the proxy.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::config::{Challenge, Config, TlsMode};

fn sources(files: &[(&str, &str)], env: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(name, text)| Source {
            path: PathBuf::from(name),
            text: text.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        })
        .collect()
}

fn import(files: &[(&str, &str)]) -> Imported {
    match traefik(&sources(files, &[])) {
        Ok(i) => i,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn fail(files: &[(&str, &str)]) -> String {
    match traefik(&sources(files, &[])) {
        Ok(i) => panic!("expected an error, got:\n{}", i.toml),
        Err(e) => e.to_string(),
    }
}

fn config(i: &Imported) -> Config {
    Config::from_toml_str(&i.toml).expect("the importer validates its output")
}

/// (version, weight, backends) of a pool.
fn versions(c: &Config, pool: &str) -> Vec<(String, u32, Vec<String>)> {
    c.pools[pool]
        .versions
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.weight,
                v.backends.iter().map(|b| b.to_string()).collect(),
            )
        })
        .collect()
}

fn v(name: &str, w: u32, backends: &[&str]) -> (String, u32, Vec<String>) {
    (
        name.to_string(),
        w,
        backends.iter().map(|b| b.to_string()).collect(),
    )
}

#[test]
fn one_service_from_two_containers_becomes_a_version_per_container() {
    // The other common blue-green shape: both containers label the same
    // router and service; Traefik joins their servers.
    let compose = r#"
services:
  blue:
    image: app:1
    labels:
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.services.app.loadbalancer.server.port=80
  green:
    image: app:2
    labels:
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.services.app.loadbalancer.server.port=80
"#;
    let i = import(&[("compose.yml", compose)]);
    let c = config(&i);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].pool, "app");
    assert_eq!(
        versions(&c, "app"),
        [v("blue", 1, &["blue:80"]), v("green", 1, &["green:80"])]
    );
}

#[test]
fn server_weights_in_labels_give_exact_version_weights() {
    let compose = r#"
services:
  stable:
    labels:
      traefik.http.routers.app.rule: Host(`app.example.com`)
      traefik.http.services.app.loadbalancer.server.port: 8080
      traefik.http.services.app.loadbalancer.server.weight: 9
  canary:
    labels:
      traefik.http.routers.app.rule: Host(`app.example.com`)
      traefik.http.services.app.loadbalancer.server.port: 8080
      traefik.http.services.app.loadbalancer.server.weight: 1
"#;
    let c = config(&import(&[("compose.yml", compose)]));
    assert_eq!(
        versions(&c, "app"),
        [
            v("canary", 1, &["canary:8080"]),
            v("stable", 9, &["stable:8080"])
        ]
    );
}

#[test]
fn default_service_and_exposed_port() {
    // No service label: Traefik makes one named after the container, on its
    // only exposed port.
    let compose = r#"
services:
  whoami:
    image: traefik/whoami
    ports: ["127.0.0.1:8000:80/tcp"]
    labels:
      - "traefik.http.routers.who.rule=Host(`who.example.com`, `whoami.example.com`)"
"#;
    let c = config(&import(&[("compose.yml", compose)]));
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].host.to_string(), "whoami.example.com");
    assert_eq!(versions(&c, "whoami"), [v("whoami", 1, &["whoami:80"])]);
}

#[test]
fn compose_variables_come_from_the_environment() {
    let compose = r#"
services:
  app:
    expose: ["3000"]
    labels:
      - "traefik.http.routers.app.rule=Host(`app.${DOMAIN}`) || Host(`${ALT:-alt.example.org}`)"
"#;
    let i = traefik(&sources(
        &[("compose.yml", compose)],
        &[("DOMAIN", "example.net")],
    ))
    .unwrap();
    let c = config(&i);
    let hosts: Vec<String> = c.routes.iter().map(|r| r.host.to_string()).collect();
    assert_eq!(hosts, ["app.example.net", "alt.example.org"]);
    // Unset: replaced by nothing, as compose does, and said so.
    let i = import(&[("compose.yml", compose)]);
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("traefik.http.routers.app.rule")
                && n.contains("variable DOMAIN is not set")),
        "{:?}",
        i.notes
    );
}

#[test]
fn unknown_and_unsupported_labels_are_reported_not_dropped() {
    let compose = r#"
services:
  app:
    expose: ["80"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.routers.app.middlewares=auth
      - traefik.http.routers.app.colour=blue
      - traefik.http.middlewares.auth.basicauth.users=u:$$apr1$$x
      - traefik.frontend.rule=Host:app.example.com
      - traefik.docker.network=proxy
      - traefik.tcp.routers.db.rule=HostSNI(`*`)
"#;
    let i = import(&[("compose.yml", compose)]);
    let w = i.warnings.join("\n");
    assert!(w.contains("traefik.http.routers.app.colour"), "{w}");
    assert!(
        w.contains("traefik.frontend.rule") && w.contains("v1"),
        "{w}"
    );
    assert_eq!(i.warnings.len(), 2, "{w}");
    for needle in [
        "traefik.http.routers.app.colour",
        "unsupported hash",
        "traefik.docker.network",
        "TCP/UDP",
    ] {
        assert!(
            i.toml
                .lines()
                .any(|l| l.starts_with('#') && l.contains(needle)),
            "no comment for {needle}:\n{}",
            i.toml
        );
    }
    config(&i);
}

#[test]
fn disabled_containers_and_redirect_routers() {
    let compose = r#"
services:
  old:
    expose: ["80"]
    labels:
      - traefik.enable=false
      - traefik.http.routers.old.rule=Host(`old.example.com`)
  app:
    expose: ["80"]
    labels:
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.routers.app.entrypoints=websecure
      - traefik.http.routers.app.tls=true
      - traefik.http.routers.app.tls.certresolver=le
      - traefik.http.routers.app-http.rule=Host(`app.example.com`)
      - traefik.http.routers.app-http.entrypoints=web
      - traefik.http.routers.app-http.middlewares=https-redirect
      - traefik.http.middlewares.https-redirect.redirectscheme.scheme=https
"#;
    let statik = r#"
entryPoints:
  web: {address: ":8080"}
  websecure:
    address: ":8443"
certificatesResolvers:
  le:
    acme:
      email: me@example.com
      tlsChallenge: {}
"#;
    let i = import(&[("compose.yml", compose), ("traefik.yml", statik)]);
    let c = config(&i);
    assert_eq!(c.routes.len(), 1, "{}", i.toml);
    assert_eq!(c.routes[0].tls, TlsMode::Acme);
    assert!(c.routes[0].redirect_https);
    assert_eq!(c.server.http.unwrap().to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.https.unwrap().to_string(), "0.0.0.0:8443");
    assert_eq!(c.acme.as_ref().unwrap().challenge, Challenge::TlsAlpn01);
    assert!(i.toml.contains("traefik.enable=false"), "{}", i.toml);
}

#[test]
fn a_host_also_served_in_plain_http_keeps_plain_http() {
    let dynamic = r#"
http:
  routers:
    secure: {rule: "Host(`a.example.com`)", service: a, entryPoints: [websecure], tls: {certResolver: le}}
    plain: {rule: "Host(`a.example.com`)", service: a, entryPoints: [web]}
  services:
    a: {loadBalancer: {servers: [{url: "http://10.0.0.5:8080"}]}}
"#;
    let statik = r#"
certificatesResolvers:
  le: {acme: {email: me@example.com, httpChallenge: {entryPoint: web}}}
"#;
    let c = config(&import(&[
        ("dynamic.yml", dynamic),
        ("traefik.yml", statik),
    ]));
    assert_eq!(c.routes[0].tls, TlsMode::Acme);
    assert!(!c.routes[0].redirect_https);
    assert_eq!(versions(&c, "a"), [v("a", 1, &["10.0.0.5:8080"])]);
}

#[test]
fn nested_and_mixed_weights_flatten_exactly() {
    // app: 2 parts stable (two servers weighted 1 and 3), 1 part canary.
    let dynamic = r#"
http:
  routers:
    app: {rule: "Host(`app.example.com`)", service: app}
  services:
    app:
      weighted:
        services:
          - {name: stable, weight: 2}
          - {name: canary, weight: 1}
    stable:
      loadBalancer:
        servers:
          - {url: "http://s1:80", weight: 1}
          - {url: "http://s2:80", weight: 3}
    canary:
      loadBalancer:
        servers: [{url: "http://c1:80"}]
"#;
    let c = config(&import(&[("d.yml", dynamic)]));
    // stable 2/3 split 1:3 -> 1/6 and 1/2; canary 1/3: 1:3:2.
    assert_eq!(
        versions(&c, "app"),
        [
            v("canary", 2, &["c1:80"]),
            v("s1", 1, &["s1:80"]),
            v("s2", 3, &["s2:80"])
        ]
    );
}

#[test]
fn traefik_service_manifests_with_named_ports_and_ingress_route_splits() {
    let manifests = r#"
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {name: web, namespace: site}
spec:
  entryPoints: [web]
  routes:
    - match: Host(`www.example.com`)
      kind: Rule
      services:
        - {name: web-v1, port: 80, weight: 4}
        - {name: web-v2, port: 80, weight: 1, namespace: staging}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-v1}
spec: {}
"#;
    let i = import(&[("k8s.yaml", manifests)]);
    let c = config(&i);
    assert_eq!(c.routes[0].pool, "web");
    assert_eq!(
        versions(&c, "web"),
        [
            v("v1", 4, &["web-v1.site:80"]),
            v("v2", 1, &["web-v2.staging:80"])
        ]
    );
    assert!(
        i.toml.contains("a Deployment is not carried over"),
        "{}",
        i.toml
    );

    let named = r#"
apiVersion: traefik.io/v1alpha1
kind: TraefikService
metadata: {name: t}
spec:
  weighted:
    services:
      - {name: x, port: http}
"#;
    let e = fail(&[("ts.yaml", named)]);
    assert!(
        e.contains("ts.yaml: (TraefikService).spec.weighted.services[0].port")
            && e.contains("named port \"http\""),
        "{e}"
    );
}

#[test]
fn a_traefik_service_without_a_router_is_a_pool_without_a_route() {
    let ts = r#"
apiVersion: traefik.containo.us/v1alpha1
kind: TraefikService
metadata: {name: app}
spec:
  weighted:
    services:
      - {name: app-blue, port: 80, weight: 1}
      - {name: app-green, port: 80, weight: 0}
"#;
    let i = import(&[("ts.yaml", ts)]);
    let c = config(&i);
    assert!(c.routes.is_empty());
    assert_eq!(
        versions(&c, "app"),
        [
            v("blue", 1, &["app-blue.default:80"]),
            v("green", 0, &["app-green.default:80"])
        ]
    );
    assert!(i.toml.contains("no router routes to service \"app\""));
}

#[test]
fn rules_switchyard_cannot_route_are_left_out_with_a_reason() {
    let dynamic = r#"
http:
  routers:
    api: {rule: "Host(`a.example.com`) && ClientIP(`10.0.0.0/8`)", service: api}
    site: {rule: "Host(`a.example.com`)", service: site}
    mirror: {rule: "Host(`m.example.com`)", service: m}
    dash: {rule: "Host(`traefik.example.com`)", service: api@internal}
  services:
    api: {loadBalancer: {servers: [{url: "http://api:80"}]}}
    site: {loadBalancer: {servers: [{url: "http://site:80"}]}}
    m: {mirroring: {service: site}}
"#;
    let i = import(&[("d.yml", dynamic)]);
    let c = config(&i);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].pool, "site");
    for needle in [
        "router \"api\": Host(`a.example.com`) && ClientIP(`10.0.0.0/8`): ClientIP(`10.0.0.0/8`) matches the client's address",
        "router \"mirror\": service \"m\" is a mirroring service",
        "router \"dash\" serves Traefik's own api@internal",
    ] {
        assert!(i.toml.contains(needle), "{needle}:\n{}", i.toml);
    }
}

#[test]
fn acme_resolvers_map_to_the_acme_section() {
    let statik = r#"
[certificatesResolvers.le.acme]
  email = "ops@example.com"
  storage = "acme.json"
  caServer = "https://pebble.internal:14000/dir"
  caCertificates = ["/etc/ssl/pebble.pem"]
  [certificatesResolvers.le.acme.dnsChallenge]
    provider = "cloudflare"
"#;
    let i = import(&[("traefik.toml", statik)]);
    let c = config(&i);
    let a = c.acme.unwrap();
    assert_eq!(a.email, "ops@example.com");
    assert_eq!(a.directory, "https://pebble.internal:14000/dir");
    assert_eq!(a.challenge, Challenge::Http01);
    assert_eq!(a.ca_file.unwrap(), PathBuf::from("/etc/ssl/pebble.pem"));
    assert_eq!(a.storage, PathBuf::from("/var/lib/switchyard/acme"));
    assert!(i.toml.contains("DNS-01 (cloudflare)"), "{}", i.toml);

    let e = fail(&[(
        "traefik.yml",
        "certificatesResolvers:\n  le:\n    acme:\n      email: a@b.c\n      caServer: http://insecure/dir\n",
    )]);
    assert!(
        e.contains("traefik.yml: certificatesResolvers.le.acme.caServer") && e.contains("https://"),
        "{e}"
    );
}

#[test]
fn malformed_inputs_name_the_file_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "c.yml",
            "services:\n  app:\n    labels:\n      - traefik.http.routers.a.rule=Host(`a.test`)\n      - traefik.http.services.a.loadbalancer.server.port=eighty\n",
            "c.yml: services.app.labels: traefik.http.services.a.loadbalancer.server.port: \"eighty\" is not a port",
        ),
        (
            "c.yml",
            "services:\n  app:\n    expose: [80]\n    labels:\n      - traefik.http.routers.a.rule=Host(`a.test\n",
            "c.yml: services.app.labels: traefik.http.routers.a.rule: cannot parse",
        ),
        (
            "c.yml",
            "services:\n  app:\n    labels:\n      - traefik.http.routers.a.rule=Host(`a.test`)\n",
            "c.yml: services.app: the container does not expose exactly one port",
        ),
        (
            "c.yml",
            "services:\n  app:\n    labels:\n      - traefik.http.routers.a.rule=Host(`a b`)\n      - traefik.http.services.a.loadbalancer.server.port=80\n",
            "traefik.http.routers.a.rule: host \"a b\"",
        ),
        (
            "c.yml",
            "services:\n  app:\n    labels: 7\n",
            "c.yml: services.app.labels: labels must be",
        ),
        (
            "d.yml",
            "http:\n  services:\n    s:\n      weighted:\n        services:\n          - name: x\n            weight: heavy\n",
            "d.yml: http.services.s.weighted.services[0].weight: expected a whole number >= 0, found \"heavy\"",
        ),
        (
            "d.yml",
            "http:\n  routers:\n    r: {rule: \"Host(`a.test`)\", service: nope}\n",
            "d.yml: http.routers.r.service: service \"nope\" is not defined",
        ),
        (
            "d.yml",
            "http:\n  routers:\n    r: {rule: \"Host(`a.test`)\", service: s}\n  services:\n    s: {weighted: {services: [{name: t}]}}\n    t: {weighted: {services: [{name: s}]}}\n",
            "loop",
        ),
        (
            "d.yml",
            "http:\n  services:\n    s: {loadBalancer: {servers: [{url: \"ftp://x\"}]}}\n",
            "d.yml: http.services.s.loadBalancer.servers[0].url: \"ftp://x\": unsupported scheme",
        ),
        (
            "d.yml",
            "http:\n  services:\n    s: {loadBalancer: {servers: []}}\n",
            "d.yml: http.services.s.loadBalancer: a load balancer needs at least one server",
        ),
        (
            "d.yml",
            "http:\n  services:\n    s: {loadBalancer: {servers: [{url: \"http://x\"}], healthCheck: {path: /h, interval: often}}}\n",
            "d.yml: http.services.s.loadBalancer.healthCheck.interval: bad duration",
        ),
        (
            "d.yml",
            "http:\n  services:\n    s: {}\n",
            "d.yml: http.services.s: a service needs one of loadBalancer",
        ),
        ("d.yml", "http: [1, 2\n", "d.yml:"),
        ("d.toml", "[http\n", "d.toml:1:"),
        (
            "x.yml",
            "name: something else\nversion: 3\n",
            "x.yml: not a Docker Compose file",
        ),
        ("x.yml", "- a\n- b\n", "the file is not a mapping"),
        (
            "c.yml",
            "services:\n  db:\n    image: postgres\n",
            "found no routers, services or certificate resolvers",
        ),
    ];
    for (name, text, want) in cases {
        let e = fail(&[(name, text)]);
        assert!(e.contains(want), "{name}:\n{text}\nwant: {want}\ngot:  {e}");
    }
}

#[test]
fn the_same_router_defined_differently_is_refused() {
    let compose = r#"
services:
  a:
    expose: ["80"]
    labels: ["traefik.http.routers.r.rule=Host(`a.test`)"]
  b:
    expose: ["80"]
    labels: ["traefik.http.routers.r.rule=Host(`b.test`)"]
"#;
    let e = fail(&[("c.yml", compose)]);
    assert!(
        e.contains("router \"r\" is also defined, differently"),
        "{e}"
    );
}

#[test]
fn output_is_stable_and_weights_above_the_limit_are_refused() {
    let dynamic = r#"
http:
  routers:
    r: {rule: "Host(`a.test`)", service: s}
  services:
    s: {weighted: {services: [{name: a, weight: 2000000}, {name: b, weight: 1}]}}
    a: {loadBalancer: {servers: [{url: "http://a"}]}}
    b: {loadBalancer: {servers: [{url: "http://b"}]}}
"#;
    let e = fail(&[("d.yml", dynamic)]);
    assert!(e.contains("above switchyard's 1000000"), "{e}");
    let ok = dynamic.replace("2000000", "20");
    let one = import(&[("d.yml", &ok)]).toml;
    let two = import(&[("d.yml", &ok)]).toml;
    assert_eq!(one, two);
}

#[test]
fn never_panics_on_any_prefix_of_the_fixtures() {
    // Every truncation of realistic inputs is either imported or refused
    // with an error: no panic, and whatever is printed validates.
    let fixtures = [
        (
            "compose.yml",
            include_str!("../../tests/fixtures/traefik/compose-blue-green.yml"),
        ),
        (
            "dynamic.yml",
            include_str!("../../tests/fixtures/traefik/dynamic-weighted.yml"),
        ),
        (
            "dynamic.toml",
            include_str!("../../tests/fixtures/traefik/dynamic-weighted.toml"),
        ),
        (
            "ts.yml",
            include_str!("../../tests/fixtures/traefik/traefikservice.yml"),
        ),
        (
            "static.yml",
            include_str!("../../tests/fixtures/traefik/traefik-static.yml"),
        ),
        (
            "middlewares.yml",
            include_str!("../../tests/fixtures/traefik/middlewares.yml"),
        ),
        (
            "compose-middlewares.yml",
            include_str!("../../tests/fixtures/traefik/compose-middlewares.yml"),
        ),
    ];
    let mut imported = 0;
    for (name, text) in fixtures {
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            if let Ok(i) = traefik(&sources(&[(name, &text[..end])], &[])) {
                config(&i);
                imported += 1;
            }
        }
    }
    assert!(imported > 100, "only {imported} prefixes imported");
}

#[test]
fn routers_on_web_and_websecure_never_give_two_listeners_one_address() {
    let compose = r#"
services:
  app:
    expose: ["8080"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.app.rule=Host(`app.example.com`)
      - traefik.http.routers.app.entrypoints=web,websecure
      - traefik.http.routers.app.tls.certresolver=le
"#;
    let statik = r#"
entryPoints:
  metrics: {address: ":8082"}
  web: {address: ":80"}
  websecure: {address: ":443"}
certificatesResolvers:
  le: {acme: {email: me@example.com, httpChallenge: {entryPoint: web}}}
"#;
    let c = config(&import(&[
        ("compose.yml", compose),
        ("traefik.yml", statik),
    ]));
    assert_eq!(c.server.http.unwrap().to_string(), "0.0.0.0:80");
    assert_eq!(c.server.https.unwrap().to_string(), "0.0.0.0:443");
    // No entryPoints: on every entrypoint; web stays the HTTP listener
    // although "metrics" comes first alphabetically.
    let none = compose.replace(
        "      - traefik.http.routers.app.entrypoints=web,websecure\n",
        "",
    );
    let c = config(&import(&[("compose.yml", &none), ("traefik.yml", statik)]));
    assert_eq!(c.server.http.unwrap().to_string(), "0.0.0.0:80");
    assert_eq!(c.server.https.unwrap().to_string(), "0.0.0.0:443");
    // Only web defined: HTTPS cannot take its address.
    let web_only = "entryPoints:\n  web: {address: \":80\"}\ncertificatesResolvers:\n  le: {acme: {email: me@example.com}}\n";
    let i = import(&[("compose.yml", compose), ("traefik.yml", web_only)]);
    let c = config(&i);
    assert_ne!(c.server.http, c.server.https, "{}", i.toml);
}

#[test]
fn same_host_routers_on_another_entrypoint_are_kept_apart() {
    let dynamic = r#"
http:
  routers:
    site: {rule: "Host(`a.example.com`)", service: site, entryPoints: [web]}
    admin: {rule: "Host(`a.example.com`)", service: admin, entryPoints: [admin]}
  services:
    site: {loadBalancer: {servers: [{url: "http://10.0.0.5:8080"}]}}
    admin: {loadBalancer: {servers: [{url: "http://10.0.0.5:9000"}]}}
"#;
    let statik = "entryPoints:\n  web: {address: \":80\"}\n  admin: {address: \":8081\"}\n";
    let i = import(&[("dynamic.yml", dynamic), ("traefik.yml", statik)]);
    let c = config(&i);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        versions(&c, "site"),
        [v("site", 1, &["10.0.0.5:8080"])],
        "{}",
        i.toml
    );
    assert!(
        i.toml
            .contains("router \"admin\" is on entrypoint(s) admin"),
        "{}",
        i.toml
    );
}

#[test]
fn a_router_without_a_service_is_skipped_with_a_comment() {
    let dynamic = r#"
http:
  routers:
    good: {rule: "Host(`a.example.com`)", service: s}
    bad: {rule: "Host(`b.example.com`)"}
  services:
    s: {loadBalancer: {servers: [{url: "http://10.0.0.5:8080"}]}}
"#;
    let i = import(&[("dynamic.yml", dynamic)]);
    assert_eq!(config(&i).routes.len(), 1);
    assert!(
        i.toml.contains("router \"bad\" names no service"),
        "{}",
        i.toml
    );
    let only_bad = "http:\n  routers:\n    bad: {rule: \"Host(`b.example.com`)\"}\n";
    let e = fail(&[("dynamic.yml", only_bad)]);
    assert!(
        e.contains("nothing in dynamic.yml could be carried over (1 router(s) found)")
            && e.contains("names no service"),
        "{e}"
    );
}

#[test]
fn static_files_providers_access_log_and_health_port() {
    let i = import(&[
        (
            "pi-compose.yml",
            include_str!("../../tests/fixtures/traefik/pi-compose.yml"),
        ),
        (
            "pi-static.yml",
            include_str!("../../tests/fixtures/traefik/pi-static.yml"),
        ),
    ]);
    let c = config(&i);
    assert_eq!(
        c.routes.len(),
        1,
        "wiki has no traefik.enable=true: {}",
        i.toml
    );
    assert_eq!(c.pools["app"].health.as_ref().unwrap().port, Some(9090));
    let al = c
        .access_log
        .as_ref()
        .expect("the access log is carried over");
    assert_eq!(
        al.target,
        crate::config::AccessLogTarget::File("/var/log/traefik/access.log".into())
    );
    for needle in [
        "services.wiki: no traefik.enable=true",
        "providers.docker.constraints",
        "providers.redis: switchyard cannot read the redis provider",
        "pi-static.yml: http: a static configuration file's http section is not read",
    ] {
        assert!(i.toml.contains(needle), "{needle}:\n{}", i.toml);
    }
    assert!(!i.toml.contains("ignored.example.com"));
}

#[test]
fn traefiks_own_container_is_reached_on_its_lowest_port() {
    let compose = r#"
services:
  traefik:
    image: traefik:v3.1
    ports: ["80:80", "443:443"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.dash.rule=Host(`proxy.example.com`)
      - traefik.http.routers.dash.service=self
      - traefik.http.services.self.loadbalancer.healthcheck.path=/ping
"#;
    let c = config(&import(&[("compose.yml", compose)]));
    assert_eq!(versions(&c, "self")[0].2, ["traefik:80"]);
}

#[test]
fn a_compose_file_and_its_override_are_merged() {
    let i = import(&[
        (
            "compose-base.yml",
            include_str!("../../tests/fixtures/traefik/compose-base.yml"),
        ),
        (
            "compose-override.yml",
            include_str!("../../tests/fixtures/traefik/compose-override.yml"),
        ),
    ]);
    let c = config(&i);
    assert_eq!(
        c.routes[0].host.to_string(),
        "app.example.com",
        "{}",
        i.toml
    );
    assert_eq!(
        versions(&c, "app"),
        [v("app", 1, &["app:9090"])],
        "the override's port wins"
    );
}

#[test]
fn certificates_from_files_are_carried_over() {
    let dynamic = r#"
http:
  routers:
    app: {rule: "Host(`app.example.com`)", service: s, entryPoints: [websecure], tls: {}}
  services:
    s: {loadBalancer: {servers: [{url: "http://10.0.0.5:8080"}]}}
tls:
  certificates:
    - {certFile: /certs/other.example.com.crt, keyFile: /certs/other.example.com.key}
    - {certFile: /certs/app.example.com.crt, keyFile: /certs/app.example.com.key}
  options:
    default: {minVersion: VersionTLS12}
"#;
    let statik = "entryPoints:\n  web: {address: \":80\"}\n  websecure: {address: \":443\"}\n";
    let i = import(&[("dynamic.yml", dynamic), ("traefik.yml", statik)]);
    let c = config(&i);
    assert_eq!(
        c.routes[0].tls,
        TlsMode::Files {
            cert: "/certs/app.example.com.crt".into(),
            key: "/certs/app.example.com.key".into()
        },
        "{}",
        i.toml
    );
    assert_eq!(c.server.https.unwrap().to_string(), "0.0.0.0:443");
    assert!(
        i.toml
            .contains("tls.options: TLS options and stores are not carried over"),
        "{}",
        i.toml
    );
}

// ---------------------------------------------------------------------------
// Rules and middlewares.

use crate::config::{MiddlewareConfig, RateKey};

/// (host, rule as described, pool, middlewares) of every route.
fn route_list(c: &Config) -> Vec<(String, String, String, Vec<String>)> {
    c.routes
        .iter()
        .map(|r| {
            (
                r.host.to_string(),
                r.rules.describe(),
                r.pool.clone(),
                r.middlewares.clone(),
            )
        })
        .collect()
}

/// A dynamic file with one router on `app.test` using `mws`, and `defs`
/// under http.middlewares.
fn with_middlewares(mws: &str, defs: &str) -> String {
    format!(
        "http:\n  routers:\n    app: {{rule: \"Host(`app.test`)\", service: app, middlewares: [{mws}]}}\n  services:\n    app: {{loadBalancer: {{servers: [{{url: \"http://app:80\"}}]}}}}\n  middlewares:\n{defs}"
    )
}

fn notes_have(i: &Imported, needle: &str) {
    assert!(
        i.notes.iter().any(|n| n.contains(needle)),
        "no note with {needle:?}:\n{}",
        i.notes.join("\n")
    );
}

#[test]
fn rules_become_routes_with_traefiks_priorities() {
    let dynamic = r#"
http:
  routers:
    site: {rule: "Host(`a.test`)", service: site}
    api: {rule: "Host(`a.test`) && PathPrefix(`/api`) && Method(`GET`, `POST`)", service: api}
    exact: {rule: "Host(`a.test`) && Path(`/api`)", service: site}
    beta: {rule: "(Host(`a.test`) || Host(`b.test`)) && HeaderRegexp(`X-Beta`, `^(1|yes)$`) && Query(`v`, `2`)", service: api, priority: 500}
    assets: {rule: "Host(`b.test`) && PathRegexp(`\\.(css|js)$`) && !Header(`X-No`, `1`)", service: site}
    local: {rule: "Host(`c.test`) && ClientIP(`10.0.0.0/8`) || Host(`c.test`) && Path(`/ok`)", service: site}
  services:
    site: {loadBalancer: {servers: [{url: "http://site:80"}]}}
    api: {loadBalancer: {servers: [{url: "http://api:80"}]}}
"#;
    let i = import(&[("d.yml", dynamic)]);
    let c = config(&i);
    let got: Vec<(String, String, String)> = route_list(&c)
        .into_iter()
        .map(|(h, r, p, _)| (h, r, p))
        .collect();
    // Several routes on a.test: each gets Traefik's priority (the rule's
    // length unless set), so the GET/POST prefix goes before the exact
    // path, as in Traefik. One route on b.test and c.test: none needed.
    let want = [
        (
            "a.test",
            "path_prefix=/api methods=GET,POST priority=61",
            "api",
        ),
        (
            "a.test",
            "header:x-beta=~^(1|yes)$ query:v=2 priority=500",
            "api",
        ),
        ("b.test", "header:x-beta=~^(1|yes)$ query:v=2", "api"),
        ("a.test", "path=/api priority=30", "site"),
        ("c.test", "path=/ok", "site"),
        ("a.test", "priority=14", "site"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(h, r, p)| (h.to_string(), r.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want, "{}", i.toml);
    notes_have(&i, "!Header(`X-No`, `1`) negates a matcher");
    notes_have(&i, "ClientIP(`10.0.0.0/8`) matches the client's address");
    assert!(
        !i.toml.contains("host = \"b.test\"\npath_regex"),
        "{}",
        i.toml
    );
}

#[test]
fn priorities_outside_switchyards_range_keep_their_order() {
    let dynamic = r#"
http:
  routers:
    low: {rule: "Host(`a.test`)", service: s, priority: -5}
    high: {rule: "Host(`a.test`) && PathPrefix(`/x`)", service: s, priority: 9223372036854775807}
    mid: {rule: "Host(`a.test`) && Path(`/y`)", service: s}
  services:
    s: {loadBalancer: {servers: [{url: "http://s:80"}]}}
"#;
    let i = import(&[("d.yml", dynamic)]);
    let c = config(&i);
    let prio = |d: &str| {
        c.routes
            .iter()
            .find(|r| r.rules.describe().starts_with(d))
            .and_then(|r| r.rules.priority)
            .unwrap()
    };
    assert!(prio("priority") < prio("path=/y") && prio("path=/y") < prio("path_prefix=/x"));
    notes_have(&i, "keep their order");
}

#[test]
fn headers_carry_custom_fields_and_security_options() {
    let defs = r#"    h:
      headers:
        customRequestHeaders: {X-Env: prod, X-Debug: ""}
        customResponseHeaders: {X-Powered-By: "", Cache-Control: no-store, "Bad Name": x}
        stsSeconds: 63072000
        stsIncludeSubdomains: true
        stsPreload: true
        forceSTSHeader: true
        frameDeny: true
        contentTypeNosniff: true
        browserXssFilter: true
        customBrowserXSSValue: "0"
        contentSecurityPolicy: "default-src 'self'"
        referrerPolicy: no-referrer
        accessControlAllowMethods: [GET]
        sslRedirect: true
"#;
    let i = import(&[("d.yml", &with_middlewares("h", defs))]);
    let c = config(&i);
    let MiddlewareConfig::Headers(h) = &c.middlewares["h"] else {
        panic!("{}", i.toml)
    };
    let names = |v: &[(http::HeaderName, http::HeaderValue)]| -> Vec<String> {
        v.iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
            .collect()
    };
    assert_eq!(names(&h.request_set), ["x-env=prod"]);
    assert_eq!(h.request_remove, ["x-debug"]);
    assert_eq!(h.response_remove, ["x-powered-by"]);
    let resp = names(&h.response_set);
    for want in [
        "cache-control=no-store",
        "x-xss-protection=0",
        "x-frame-options=DENY",
        "x-content-type-options=nosniff",
        "content-security-policy=default-src 'self'",
        "referrer-policy=no-referrer",
    ] {
        assert!(resp.contains(&want.to_string()), "{want}: {resp:?}");
    }
    assert!(!resp.iter().any(|r| r == "x-xss-protection=1; mode=block"));
    assert_eq!(
        h.hsts.as_ref().unwrap(),
        "max-age=63072000; includeSubDomains; preload"
    );
    assert!(h.force_hsts);
    assert_eq!(c.routes[0].middlewares, ["h"]);
    notes_have(&i, "accessControlAllowMethods: not carried over");
    notes_have(&i, "sslRedirect: not carried over");
    notes_have(&i, "Bad Name: not carried over: not a valid header name");
}

#[test]
fn basic_auth_users_inline_or_from_a_file() {
    // Labels: users comma-separated, `$$` for `$`, options in lower case.
    let compose = r#"
services:
  app:
    expose: ["80"]
    labels:
      - traefik.http.routers.app.rule=Host(`app.test`)
      - traefik.http.routers.app.middlewares=auth
      - traefik.http.middlewares.auth.basicauth.users=alice:$$apr1$$05hwIpsJ$$rBiU2noji5ow/hHS9yZu0/,bob:{SHA}x,nocolon
      - traefik.http.middlewares.auth.basicauth.realm=ops
      - traefik.http.middlewares.auth.basicauth.removeheader=true
      - traefik.http.middlewares.auth.basicauth.headerfield=X-User
"#;
    let i = import(&[("compose.yml", compose)]);
    let c = config(&i);
    let MiddlewareConfig::BasicAuth(a) = &c.middlewares["auth"] else {
        panic!("{}", i.toml)
    };
    assert_eq!(
        a.users,
        ["alice:$apr1$05hwIpsJ$rBiU2noji5ow/hHS9yZu0/", "bob:{SHA}x"]
    );
    assert_eq!(a.realm, "ops");
    assert!(a.remove_header);
    assert_eq!(a.header_field.as_ref().unwrap(), "x-user");
    notes_have(&i, "not a user:hash line");
    notes_have(&i, "(user bob): unsupported hash");
    assert!(!i.toml.contains("nocolon"), "no malformed line copied");

    let defs =
        "    auth:\n      basicAuth: {usersFile: /etc/traefik/users, users: [\"carol:{SHA}x\"]}\n";
    let i = import(&[("d.yml", &with_middlewares("auth", defs))]);
    let MiddlewareConfig::BasicAuth(a) = &config(&i).middlewares["auth"] else {
        panic!()
    };
    assert_eq!(
        a.users_file.as_deref(),
        Some(std::path::Path::new("/etc/traefik/users"))
    );
    notes_have(&i, "switchyard reads /etc/traefik/users");
    notes_have(&i, "users and usersFile both");
}

#[test]
fn guards_that_cannot_be_carried_keep_their_routers_out() {
    // Served without them, these routes would be open to everyone.
    for (mws, defs, why) in [
        ("auth", "    auth: {basicAuth: {secret: users}}\n", "Kubernetes secret"),
        ("auth", "    auth: {basicAuth: {realm: x}}\n", "no users"),
        ("fa", "    fa: {forwardAuth: {address: \"http://auth\"}}\n", "forward authentication"),
        ("p", "    p: {plugin: {jwt: {}}}\n", "plugin"),
        ("ip", "    ip: {ipAllowList: {sourceRange: [\"10.0.0.0/33\"]}}\n", "sourceRange"),
        ("ip", "    ip: {ipAllowList: {sourceRange: []}}\n", "names no network"),
        ("ip", "    ip: {ipAllowList: {sourceRange: [10.0.0.0/8], ipStrategy: {excludedIPs: [10.0.0.1]}}}\n", "excludedIPs"),
        ("ip", "    ip: {ipWhiteList: {sourceRange: [10.0.0.0/8], ipStrategy: {depth: 40}}}\n", "at most 32"),
        ("x", "    x: {someNewKind: {}}\n", "does not know"),
        ("missing", "    other: {compress: {}}\n", "not defined in the files given"),
        ("c", "    c: {chain: {middlewares: [c]}}\n", "nest too deeply"),
    ] {
        let i = import(&[("d.yml", &with_middlewares(mws, defs))]);
        let c = config(&i);
        assert!(c.routes.is_empty(), "{why}: {}", i.toml);
        notes_have(&i, why);
        notes_have(&i, "the router is not carried over");
    }
}

#[test]
fn other_middlewares_that_cannot_be_carried_are_noted_and_the_route_kept() {
    for (defs, why) in [
        ("    m: {retry: {attempts: 3}}\n", "retries by the pool's retry"),
        ("    m: {rateLimit: {average: 0}}\n", "no limit at all"),
        ("    m: {rateLimit: {average: 5, sourceCriterion: {requestHost: true}}}\n", "per requested host"),
        ("    m: {compress: {includedContentTypes: [text/html], excludedContentTypes: [image/png]}}\n", "both set"),
        ("    m: {redirectScheme: {scheme: http}}\n", "only redirects plain HTTP to HTTPS"),
        ("    m: {stripPrefix: {prefixes: [api]}}\n", "no prefix starting with '/'"),
        ("    m: {addPrefix: {prefix: \"x y\"}}\n", "not a path"),
        ("    m: {redirectRegex: {regex: \"(\", replacement: x}}\n", "regex"),
        ("    m: {headers: {accessControlAllowOriginList: [\"*\"]}}\n", "none of its options"),
    ] {
        let i = import(&[("d.yml", &with_middlewares("m", defs))]);
        let c = config(&i);
        assert_eq!(c.routes.len(), 1, "{why}: {}", i.toml);
        assert!(c.routes[0].middlewares.is_empty(), "{why}");
        notes_have(&i, why);
    }
}

#[test]
fn allow_lists_rate_limits_and_compression_keep_traefiks_numbers() {
    let defs = r#"    office:
      ipWhiteList:
        sourceRange: ["192.168.1.0/24", "2001:db8::1"]
        ipStrategy: {depth: 2, ipv6Subnet: 64}
    limit:
      rateLimit: {average: 100, period: 1m, sourceCriterion: {requestHeaderName: X-Api-Key}}
    perip:
      rateLimit: {average: 5, burst: 20, sourceCriterion: {ipStrategy: {depth: 1}}}
    gz:
      compress: {includedContentTypes: ["text/html; charset=utf-8", application/json, nonsense], minResponseBodyBytes: 200, encodings: [br, gzip, deflate]}
    gz2:
      compress: {excludedContentTypes: [application/json]}
"#;
    let i = import(&[(
        "d.yml",
        &with_middlewares("office, limit, perip, gz, gz2", defs),
    )]);
    let c = config(&i);
    let MiddlewareConfig::IpAllow(ip) = &c.middlewares["office"] else {
        panic!()
    };
    let cidrs: Vec<String> = ip.cidrs.iter().map(|n| n.to_string()).collect();
    assert_eq!(cidrs, ["192.168.1.0/24", "2001:db8::1/128"]);
    assert_eq!(ip.trusted_proxies, 2);
    notes_have(&i, "ipv6Subnet: not carried over");
    let MiddlewareConfig::RateLimit(l) = &c.middlewares["limit"] else {
        panic!()
    };
    assert_eq!(
        (l.average, l.burst),
        (100, 1),
        "Traefik's burst defaults to 1"
    );
    assert_eq!(l.period, std::time::Duration::from_secs(60));
    assert_eq!(
        l.per,
        RateKey::Header(http::HeaderName::from_static("x-api-key"))
    );
    let MiddlewareConfig::RateLimit(l) = &c.middlewares["perip"] else {
        panic!()
    };
    assert_eq!((l.average, l.burst, l.trusted_proxies), (5, 20, 1));
    assert_eq!(l.per, RateKey::ClientIp);
    let MiddlewareConfig::Compress(z) = &c.middlewares["gz"] else {
        panic!()
    };
    assert_eq!(z.types, ["text/html", "application/json"]);
    assert_eq!(z.min_bytes, 200);
    let enc: Vec<&str> = z.encodings.iter().map(|e| e.as_str()).collect();
    assert_eq!(enc, ["br", "gzip"]);
    notes_have(&i, "\"nonsense\" is not a media type");
    notes_have(&i, "\"deflate\": switchyard encodes zstd, br and gzip");
    let MiddlewareConfig::Compress(z) = &c.middlewares["gz2"] else {
        panic!()
    };
    assert!(z.types.contains(&"text/*".to_string()));
    assert!(!z.types.contains(&"application/json".to_string()));
    notes_have(&i, "every type but application/json");
    assert_eq!(
        c.routes[0].middlewares,
        ["office", "limit", "perip", "gz", "gz2"]
    );
}

#[test]
fn prefixes_redirects_and_chains_flatten_in_order() {
    let compose = r#"
services:
  app:
    expose: ["80"]
    labels:
      - traefik.http.routers.app.rule=Host(`app.test`) && PathPrefix(`/api`)
      - traefik.http.routers.app.middlewares=outer,strip@docker
      - traefik.http.middlewares.outer.chain.middlewares=inner,add
      - traefik.http.middlewares.inner.chain.middlewares=old,strip
      - traefik.http.middlewares.strip.stripprefix.prefixes=/api,/v1
      - traefik.http.middlewares.add.addprefix.prefix=/app
      - traefik.http.middlewares.old.redirectregex.regex=^http://old\.test/(.*)
      - traefik.http.middlewares.old.redirectregex.replacement=https://app.test/$${1}
      - traefik.http.middlewares.old.redirectregex.permanent=true
"#;
    let i = import(&[("compose.yml", compose)]);
    let c = config(&i);
    assert_eq!(c.routes[0].middlewares, ["old", "strip", "add"]);
    notes_have(&i, "attached twice");
    let MiddlewareConfig::StripPrefix(p) = &c.middlewares["strip"] else {
        panic!()
    };
    assert_eq!(p, &["/api", "/v1"]);
    assert_eq!(
        c.middlewares["add"],
        MiddlewareConfig::AddPrefix("/app".into())
    );
    let MiddlewareConfig::RedirectRegex(r) = &c.middlewares["old"] else {
        panic!()
    };
    assert_eq!(r.replacement, "https://app.test/${1}");
    assert!(r.permanent);
    assert_eq!(
        r.redirect(&http::Method::GET, "http://old.test/a?b=1")
            .map(|x| x.1),
        Some("https://app.test/a?b=1".to_string())
    );
}

#[test]
fn middleware_references_resolve_in_their_provider() {
    // `office` exists in both providers, differently: a docker router's
    // plain reference is docker's, `@file` is the file's.
    let compose = r#"
services:
  app:
    expose: ["80"]
    labels:
      - traefik.http.routers.app.rule=Host(`app.test`)
      - traefik.http.routers.app.middlewares=office
      - traefik.http.routers.app2.rule=Host(`app2.test`)
      - traefik.http.routers.app2.service=app
      - traefik.http.routers.app2.middlewares=office@file
      - traefik.http.middlewares.office.ipallowlist.sourcerange=10.0.0.0/8
"#;
    let dynamic =
        "http:\n  middlewares:\n    office: {ipAllowList: {sourceRange: [192.168.0.0/16]}}\n";
    let i = import(&[("compose.yml", compose), ("d.yml", dynamic)]);
    let c = config(&i);
    let by_host: BTreeMap<String, Vec<String>> = c
        .routes
        .iter()
        .map(|r| (r.host.to_string(), r.middlewares.clone()))
        .collect();
    let net = |name: &str| match &c.middlewares[name] {
        MiddlewareConfig::IpAllow(a) => a.cidrs[0].to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(net(&by_host["app.test"][0]), "10.0.0.0/8", "{}", i.toml);
    assert_eq!(
        net(&by_host["app2.test"][0]),
        "192.168.0.0/16",
        "{}",
        i.toml
    );
    assert_ne!(by_host["app.test"], by_host["app2.test"]);

    // A docker router naming a file middleware without @file: Traefik does
    // not find it, and the note says how to name it.
    let compose = compose.replace("office@file", "secure");
    let dynamic = "http:\n  middlewares:\n    secure: {headers: {frameDeny: true}}\n";
    let i = import(&[("compose.yml", &compose), ("d.yml", dynamic)]);
    assert_eq!(config(&i).routes.len(), 1, "{}", i.toml);
    notes_have(&i, "the files define secure@file");
}

#[test]
fn routers_sharing_a_rule_share_a_route_and_a_redirect_stays_a_redirect() {
    let dynamic = r#"
http:
  routers:
    blue: {rule: "Host(`a.test`) && PathPrefix(`/x`)", service: blue, middlewares: [gz]}
    green: {rule: "Host(`a.test`) && PathPrefix(`/x`)", service: green}
    plain: {rule: "Host(`a.test`)", service: blue, entryPoints: [web], middlewares: [tohttps, gz]}
  middlewares:
    gz: {compress: {}}
    tohttps: {redirectScheme: {scheme: https, port: "8443"}}
  services:
    blue: {loadBalancer: {servers: [{url: "http://blue:80"}]}}
    green: {loadBalancer: {servers: [{url: "http://green:80"}]}}
"#;
    let i = import(&[("d.yml", dynamic)]);
    let c = config(&i);
    let x = c
        .routes
        .iter()
        .find(|r| r.rules.describe().starts_with("path_prefix=/x"))
        .unwrap();
    assert_eq!(c.pools[x.pool.as_str()].versions.len(), 2, "{}", i.toml);
    assert_eq!(x.middlewares, ["gz"]);
    notes_have(&i, "share a rule but not their middlewares");
    // The plain router only redirects: it adds no route.
    assert_eq!(c.routes.len(), 1, "{}", i.toml);
}

#[test]
fn odd_middleware_and_rule_inputs_never_panic() {
    // Each is imported (and validates) or refused with an error naming the
    // file: never a panic, never an invalid config.
    let cases = [
        "    m: []\n",
        "    m: 5\n",
        "    m: {headers: 5}\n",
        "    m: {headers: {customRequestHeaders: [a, b]}}\n",
        "    m: {headers: {customRequestHeaders: {\"X\\u00e9\": v, Y: \"a\\nb\"}}}\n",
        "    m: {headers: {stsSeconds: -1}}\n",
        "    m: {headers: {stsSeconds: 99999999999999999999}}\n",
        "    m: {basicAuth: {users: [\":\", \"a:\", \":b\", \"\\u00e9:$2y$\"]}}\n",
        "    m: {basicAuth: {users: 7, realm: \"a\\\"b\"}}\n",
        "    m: {ipAllowList: {sourceRange: {a: b}}}\n",
        "    m: {ipAllowList: {sourceRange: [\"::/0\", 0.0.0.0/0], ipStrategy: {depth: -1}}}\n",
        "    m: {rateLimit: {average: 18446744073709551615, burst: 0}}\n",
        "    m: {rateLimit: {average: 1.5}}\n",
        "    m: {rateLimit: {average: 3, period: forever}}\n",
        "    m: {rateLimit: {average: 3, period: 0}}\n",
        "    m: {rateLimit: {average: 3, sourceCriterion: {requestHeaderName: \"a b\"}}}\n",
        "    m: {compress: {minResponseBodyBytes: 1099511627777, includedContentTypes: \"*/*\"}}\n",
        "    m: {stripPrefix: {prefixes: \"\"}}\n",
        "    m: {redirectRegex: {regex: \"(?<x>a)\", replacement: \"$x\"}}\n",
        "    m: {redirectRegex: {regex: x}}\n",
        "    m: {chain: {}}\n",
        "    m: {chain: {middlewares: [m@file, nope@consul]}}\n",
        "    m: {headers: {}, compress: {}}\n",
    ];
    for defs in cases {
        let text = with_middlewares("m", defs);
        match traefik(&sources(&[("d.yml", &text)], &[])) {
            Ok(i) => {
                config(&i);
            }
            Err(e) => assert!(e.to_string().contains("d.yml"), "{defs}: {e}"),
        }
    }
    for rule in [
        "Host(`a.test`) && Path(``)",
        "Host(`a.test`) && Method(``)",
        "Host(`a.test`) && Header(`\u{e9}`, `x`)",
        "Host(`a.test`) && Query(`=x`)",
        "Host(`a.test`) && Query(``, `x`)",
        "Host(`a.test`) && PathRegexp(`(?P<`)",
        "Host(`a.test`) && HeaderRegexp(`X`, `[`)",
        "Host(`a.test`) && Path(`/a?b`)",
        "Host(`a.test`) && Header(`X`, `~x`)",
        "Host(`a.test`) && Query(`k=v`, `j={id}`)",
        "!!!!Host(`a.test`)",
        "Host(`a.test`) && (Path(`/1`) || Path(`/2`)) && (Path(`/1`) || Path(`/3`))",
    ] {
        let text = format!(
            "http:\n  routers:\n    r: {{rule: {rule:?}, service: s}}\n  services:\n    s: {{loadBalancer: {{servers: [{{url: \"http://s:80\"}}]}}}}\n"
        );
        match traefik(&sources(&[("d.yml", &text)], &[])) {
            Ok(i) => {
                let c = config(&i);
                // An exact value that starts with ~ stays exact.
                if rule.contains("`~x`") {
                    let (_, v) = &c.routes[0].rules.headers[0];
                    assert!(v.matches(b"~x") && !v.matches(b"x"), "{v:?}");
                }
            }
            Err(e) => assert!(e.to_string().contains("d.yml"), "{rule}: {e}"),
        }
    }
}

#[test]
fn middlewares_of_containers_traefik_ignores_are_not_found() {
    // exposedByDefault=false: a container without traefik.enable=true is
    // not Traefik's, nor are the middlewares its labels define.
    let compose = r#"
services:
  auth:
    expose: ["80"]
    labels:
      - traefik.http.middlewares.gate.ipallowlist.sourcerange=10.0.0.0/8
  app:
    expose: ["80"]
    labels:
      - traefik.enable=true
      - traefik.http.routers.app.rule=Host(`app.test`)
      - traefik.http.routers.app.middlewares=gate
"#;
    let statik = "providers:\n  docker:\n    exposedByDefault: false\n";
    let i = import(&[("compose.yml", compose), ("traefik.yml", statik)]);
    assert!(config(&i).routes.is_empty(), "{}", i.toml);
    notes_have(&i, "middleware \"gate\" is not defined");
    // Exposed by default: the same labels protect the route.
    let i = import(&[("compose.yml", compose)]);
    assert_eq!(config(&i).routes[0].middlewares, ["gate"]);
}
