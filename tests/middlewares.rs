//! Middlewares through the real binary, with curl as the client and
//! Apache's `htpasswd` (apache2-utils) writing the users files: basic_auth
//! (bcrypt, apr1, SHA1; reload), ip_allow (peer and X-Forwarded-For),
//! rate_limit (burst, 429 + Retry-After, per client, metric), compress
//! (gzip/br/zstd, skips, streaming), headers, redirect_regex, add_prefix,
//! the onion order, and what `ctl state` shows.

mod origin;
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use origin::{big, curl, gzip, header, Origin};
use support::Proxy;

fn htpasswd(args: &[&str]) {
    let out = Command::new("htpasswd")
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

fn req(p: &Proxy, host: &str, path: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let url = p.url(path);
    let host = format!("Host: {host}");
    let mut args = vec!["-H", host.as_str()];
    args.extend_from_slice(extra);
    args.push(url.as_str());
    curl(&args)
}

fn route(host: &str, middlewares: &str) -> String {
    format!("[[routes]]\nhost = \"{host}\"\npool = \"app\"\nmiddlewares = [{middlewares}]\n\n")
}

fn app_pool(o: &Origin) -> String {
    format!(
        "[pools.app]\npin_header = \"X-Pin\"\n\n[pools.app.versions.v1]\nweight = 1\nbackends = [\"{}\"]\n",
        o.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_reads_htpasswd_files_and_rereads_them_on_reload() {
    let o = Origin::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    let users = users.to_str().unwrap();
    htpasswd(&["-c", "-B", "-b", users, "alice", "wonderland"]);
    htpasswd(&["-b", "-m", users, "bob", "builder"]);
    htpasswd(&["-b", "-s", users, "carol", "singer"]);
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[middlewares.auth]
basic_auth = {{ users_file = "{users}", realm = "ops", header_field = "X-User", remove_header = true }}

{}{}"#,
        route("app.test", "\"auth\""),
        app_pool(&o)
    );
    let p = Proxy::start(&config).await;

    let (code, head, body) = req(&p, "app.test", "/", &["-u", "alice:wonderland"]);
    assert_eq!(code, 200, "bcrypt (htpasswd -B)");
    assert_eq!(header(&head, "x-seen-x-user"), Some("alice"));
    assert_eq!(header(&head, "x-seen-authorization"), None, "remove_header");
    assert_eq!(String::from_utf8_lossy(&body), "app / prefix=-\n");
    assert_eq!(
        req(&p, "app.test", "/", &["-u", "alice:wonderland"]).0,
        200,
        "cached"
    );
    assert_eq!(
        req(&p, "app.test", "/", &["-u", "bob:builder"]).0,
        200,
        "apr1 (htpasswd -m)"
    );
    assert_eq!(
        req(&p, "app.test", "/", &["-u", "carol:singer"]).0,
        200,
        "SHA1 (htpasswd -s)"
    );
    for wrong in ["alice:alice", "bob:wonderland", "mallory:x"] {
        let (code, head, _) = req(&p, "app.test", "/", &["-u", wrong]);
        assert_eq!(code, 401, "{wrong}");
        assert_eq!(
            header(&head, "www-authenticate"),
            Some("basic realm=\"ops\"")
        );
    }
    let (code, head, _) = req(&p, "app.test", "/", &[]);
    assert_eq!(
        (code, header(&head, "www-authenticate").is_some()),
        (401, true)
    );

    // A new password in the file, then a reload: the new one works, the old one not.
    htpasswd(&["-b", "-B", users, "alice", "looking-glass"]);
    assert_eq!(
        req(&p, "app.test", "/", &["-u", "alice:wonderland"]).0,
        200,
        "until reloaded"
    );
    let out = p.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        req(&p, "app.test", "/", &["-u", "alice:looking-glass"]).0,
        200
    );
    assert_eq!(req(&p, "app.test", "/", &["-u", "alice:wonderland"]).0, 401);
    assert_eq!(req(&p, "app.test", "/", &["-u", "bob:builder"]).0, 200);

    let s = p.state().await;
    let m = &s["routes"][0]["middlewares"][0];
    assert_eq!(m["kind"], "basic_auth", "{s}");
    assert!(m["effect"].as_str().unwrap().contains("3 user(s)"), "{m}");
    assert_eq!(m["rejected"], 1, "counted since the reload: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_decides_on_the_peer_or_the_trusted_forwarded_for_entry() {
    let o = Origin::start("app").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[middlewares.local]
ip_allow = {{ cidrs = ["127.0.0.0/8", "::1"] }}

[middlewares.office]
ip_allow = {{ cidrs = ["192.168.1.0/24", "2001:db8::/32"] }}

[middlewares.behind]
ip_allow = {{ cidrs = ["203.0.113.0/24"], trusted_proxies = 1 }}

{}{}{}{}"#,
        route("local.test", "\"local\""),
        route("office.test", "\"office\""),
        route("proxied.test", "\"behind\""),
        app_pool(&o)
    );
    let p = Proxy::start(&config).await;
    assert_eq!(req(&p, "local.test", "/", &[]).0, 200);
    let (code, _, body) = req(&p, "office.test", "/", &[]);
    assert_eq!(code, 403);
    assert!(String::from_utf8_lossy(&body).contains("not allowed"));
    // Forwarded-For is not believed without trusted proxies.
    assert_eq!(
        req(
            &p,
            "office.test",
            "/",
            &["-H", "X-Forwarded-For: 192.168.1.5"]
        )
        .0,
        403
    );
    // Behind one trusted proxy: its entry (the rightmost) decides.
    let xff = |v: &str| format!("X-Forwarded-For: {v}");
    assert_eq!(
        req(&p, "proxied.test", "/", &["-H", &xff("203.0.113.5")]).0,
        200
    );
    assert_eq!(
        req(&p, "proxied.test", "/", &["-H", &xff("198.51.100.1")]).0,
        403
    );
    assert_eq!(
        req(
            &p,
            "proxied.test",
            "/",
            &["-H", &xff("203.0.113.5, 198.51.100.1")]
        )
        .0,
        403
    );
    assert_eq!(
        req(
            &p,
            "proxied.test",
            "/",
            &["-H", &xff("198.51.100.1, 203.0.113.5")]
        )
        .0,
        200
    );
    assert_eq!(
        req(&p, "proxied.test", "/", &[]).0,
        403,
        "no entry: refused"
    );
}

/// Fires `n` requests at once with one curl (`--parallel`); returns the
/// status codes and how long it took.
fn burst(p: &Proxy, host: &str, n: usize, extra: &[&str]) -> (Vec<u16>, Duration) {
    let url = p.url("/");
    let host = format!("Host: {host}");
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-Z",
        "--parallel-immediate",
        "--parallel-max",
        "50",
        "-w",
        "%{http_code}\n",
    ])
    .args(["-H", &host])
    .args(extra);
    for _ in 0..n {
        c.args(["-o", "/dev/null", &url]);
    }
    let start = Instant::now();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_gives_the_burst_then_429_per_client() {
    let o = Origin::start("app").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[middlewares.limit]
rate_limit = {{ average = 10, burst = 10 }}

[middlewares.hourly]
rate_limit = {{ average = 10, burst = 10, period = "1h", per = "header:X-Api-Key" }}

{}{}{}"#,
        route("app.test", "\"limit\""),
        route("api.test", "\"hourly\""),
        app_pool(&o)
    );
    let p = Proxy::start(&config).await;

    // 10 per second, burst 10: ~10 pass, the rest get 429. What passes is
    // the burst plus what refilled while the burst ran.
    let (codes, took) = burst(&p, "app.test", 50, &[]);
    assert_eq!(codes.len(), 50, "{codes:?}");
    let ok = codes.iter().filter(|&&c| c == 200).count();
    let limited = codes.iter().filter(|&&c| c == 429).count();
    assert_eq!(ok + limited, 50, "{codes:?}");
    let refill = (took.as_secs_f64() * 10.0).ceil() as usize;
    assert!(ok >= 10 && ok <= 10 + refill + 1, "{ok} passed in {took:?}");
    // Another client address is not affected.
    assert_eq!(
        req(&p, "app.test", "/", &["--interface", "127.0.0.2"]).0,
        200
    );

    // Per header, 10 per hour: exactly the burst passes; 429 says when to retry.
    let (codes, _) = burst(&p, "api.test", 50, &["-H", "X-Api-Key: k1"]);
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 429).count(), 40, "{codes:?}");
    let (code, head, body) = req(&p, "api.test", "/", &["-H", "X-Api-Key: k1"]);
    assert_eq!(code, 429);
    assert!(String::from_utf8_lossy(&body).contains("rate limit"));
    let retry: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((300..=360).contains(&retry), "{retry}");
    assert_eq!(req(&p, "api.test", "/", &["-H", "X-Api-Key: k2"]).0, 200);

    let metrics = format!("http://{}/metrics", p.metrics.unwrap());
    let (_, _, text) = curl(&[metrics.as_str()]);
    let text = String::from_utf8_lossy(&text).into_owned();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("switchyard_middleware_rejected_total")
                && l.contains("middleware=\"hourly\"")
                && l.contains("code=\"429\"")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 41"), "{line}");
    let s = p.state().await;
    let m = &s["routes"][1]["middlewares"][0];
    assert_eq!(m["rejected"], 41, "{s}");
    assert!(
        m["effect"].as_str().unwrap().contains("2 key(s) tracked"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_streams_gzip_br_zstd_and_skips_what_it_should() {
    let o = Origin::start("app").await;
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[middlewares.gzip]
compress = {{ types = ["text/*", "application/json"], min_bytes = 1024 }}

{}{}"#,
        route("app.test", "\"gzip\""),
        app_pool(&o)
    );
    let p = Proxy::start(&config).await;

    // curl --compressed: gzip (or better) on the wire, the original after decoding.
    let (code, head, body) = req(&p, "app.test", "/big", &["--compressed"]);
    assert_eq!(code, 200);
    assert!(header(&head, "content-encoding").is_some(), "{head}");
    assert_eq!(header(&head, "vary"), Some("accept-encoding"));
    assert_eq!(header(&head, "content-length"), None);
    assert_eq!(String::from_utf8(body).unwrap(), big());
    // Each coding by name, decoded here.
    for (enc, decode) in [
        (
            "gzip",
            Box::new(|b: &[u8]| {
                let mut s = String::new();
                flate2::read::GzDecoder::new(b)
                    .read_to_string(&mut s)
                    .unwrap();
                s
            }) as Box<dyn Fn(&[u8]) -> String>,
        ),
        (
            "br",
            Box::new(|b: &[u8]| {
                let mut s = String::new();
                brotli::Decompressor::new(b, 4096)
                    .read_to_string(&mut s)
                    .unwrap();
                s
            }),
        ),
        (
            "zstd",
            Box::new(|b: &[u8]| String::from_utf8(zstd::decode_all(b).unwrap()).unwrap()),
        ),
    ] {
        let ae = format!("Accept-Encoding: {enc}");
        let (code, head, body) = req(&p, "app.test", "/big", &["-H", &ae]);
        assert_eq!((code, header(&head, "content-encoding")), (200, Some(enc)));
        assert!(body.len() < 2000, "{enc}: {} bytes", body.len());
        assert_eq!(decode(&body), big(), "{enc}");
    }
    let gz = ["-H", "Accept-Encoding: gzip"];
    // Small, already encoded, ranged and other types pass unchanged.
    let (_, head, body) = req(&p, "app.test", "/small", &gz);
    assert_eq!(
        (header(&head, "content-encoding"), body.as_slice()),
        (None, &b"tiny\n"[..])
    );
    let (_, head, body) = req(&p, "app.test", "/gz", &gz);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(body, gzip(big().as_bytes()), "not encoded twice");
    let (code, head, body) = req(
        &p,
        "app.test",
        "/big",
        &["-H", "Accept-Encoding: gzip", "-r", "0-9"],
    );
    assert_eq!(
        (code, header(&head, "content-encoding"), body.len()),
        (206, None, 10)
    );
    let (_, head, body) = req(&p, "app.test", "/image", &gz);
    assert_eq!(
        (header(&head, "content-encoding"), body.len()),
        (None, 20_000)
    );
    let (_, head, body) = req(&p, "app.test", "/big", &[]);
    assert_eq!(
        (header(&head, "content-encoding"), body.len()),
        (None, 20_000)
    );

    // Streaming: the first line arrives, decoded, while the origin still
    // holds the rest of the body.
    let mut child = Command::new("curl")
        .args(["-s", "-N", "--compressed", "-H", "Host: app.test"])
        .arg(p.url("/stream"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is needed");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + support::DEADLINE;
    while !got.ends_with(b"first line\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        got.extend(
            rx.recv_timeout(left)
                .expect("the first line, before the origin finished"),
        );
    }
    assert_eq!(
        got, b"first line\n",
        "nothing after it yet: the origin holds it"
    );
    o.release();
    while let Ok(more) = rx.recv_timeout(support::DEADLINE) {
        got.extend(more);
    }
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(text.ends_with("line 49 after the release\n"), "{text}");
    assert_eq!(text.lines().count(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_redirects_prefixes_and_the_onion_order() {
    let o = Origin::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    let users = users.to_str().unwrap();
    htpasswd(&["-c", "-b", "-m", users, "ann", "pw"]);
    let config = format!(
        r#"[server]
http = "127.0.0.1:0"

[middlewares.secure]
headers = {{ hsts = "max-age=31536000; includeSubDomains", frame_deny = true, content_type_nosniff = true, request = {{ set = {{ "X-Env" = "prod" }}, remove = ["X-Debug"] }}, response = {{ set = {{ "Cache-Control" = "no-store" }}, remove = ["X-Seen-Host"] }} }}

[middlewares.hsts]
headers = {{ hsts = "max-age=60", force_hsts = true }}

[middlewares.auth]
basic_auth = {{ users_file = "{users}" }}

[middlewares.old]
redirect_regex = {{ regex = "^https?://old\\.test/(.*)", replacement = "http://new.test/$1", permanent = true }}

[middlewares.app]
add_prefix = "/app"

{}{}{}{}{}{}{}"#,
        route("secure.test", "\"secure\""),
        route("hsts.test", "\"hsts\""),
        route("outer.test", "\"secure\", \"auth\""),
        route("inner.test", "\"auth\", \"secure\""),
        route("old.test", "\"old\""),
        route("prefixed.test", "\"app\""),
        app_pool(&o)
    );
    let p = Proxy::start(&config).await;

    let (code, head, _) = req(&p, "secure.test", "/", &["-H", "X-Debug: 1"]);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "x-seen-x-env"), Some("prod"));
    assert_eq!(header(&head, "x-seen-x-debug"), None);
    assert_eq!(
        header(&head, "x-seen-host"),
        None,
        "removed from the response"
    );
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert_eq!(header(&head, "x-frame-options"), Some("deny"));
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&head, "strict-transport-security"),
        None,
        "HSTS only on https"
    );
    let (_, head, _) = req(&p, "hsts.test", "/", &[]);
    assert_eq!(
        header(&head, "strict-transport-security"),
        Some("max-age=60")
    );

    // Onion: a middleware wraps the answers of those after it only.
    let (code, head, _) = req(&p, "outer.test", "/", &[]);
    assert_eq!(
        (code, header(&head, "x-frame-options")),
        (401, Some("deny"))
    );
    let (code, head, _) = req(&p, "inner.test", "/", &[]);
    assert_eq!((code, header(&head, "x-frame-options")), (401, None));
    let (code, head, _) = req(&p, "inner.test", "/", &["-u", "ann:pw"]);
    assert_eq!(
        (code, header(&head, "x-frame-options")),
        (200, Some("deny"))
    );
    // The proxy's own answer (a pin naming no version: 404 before any
    // backend) gets the response side too.
    let (code, head, _) = req(&p, "secure.test", "/", &["-H", "X-Pin: nope"]);
    assert_eq!(
        (code, header(&head, "x-frame-options")),
        (404, Some("deny"))
    );

    let (code, head, _) = req(&p, "old.test", "/a/b?c=1", &[]);
    assert_eq!(code, 301);
    assert_eq!(header(&head, "location"), Some("http://new.test/a/b?c=1"));
    let (code, _, _) = req(&p, "old.test", "/x", &["-X", "POST"]);
    assert_eq!(code, 308);

    let (_, _, body) = req(&p, "prefixed.test", "/x?y=1", &[]);
    assert_eq!(String::from_utf8_lossy(&body), "app /app/x?y=1 prefix=-\n");

    let out = p.ctl(&["state"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("old (redirect_regex): 301/308 when the URL matches"),
        "{text}"
    );
    assert!(
        text.contains("secure (headers): request sets x-env; request removes x-debug"),
        "{text}"
    );
}
