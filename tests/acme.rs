//! ACME end to end: the real binary gets certificates from a real pebble
//! (Let's Encrypt's test CA) on loopback, serves them, keeps them across
//! restarts, renews them under load, rides out a CA outage, and recovers
//! from garbage in its storage.

#[path = "support/pebble.rs"]
mod pebble;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use pebble::{Pebble, PebbleOpts};
use support::{eventually, Client, Proxy, Upstream, DEADLINE};
use tls_support::{curl_https, start_switchyard, tls_get};

/// Backoff base of 1 s instead of minutes, so outages fit in a test.
const ENV: &[(&str, &str)] = &[("SWITCHYARD_ACME_BACKOFF", "1s")];

struct Setup {
    upstream: Upstream,
    pebble: Pebble,
}

async fn setup(validity: Option<u64>, reject_nonces: bool) -> Setup {
    let upstream = Upstream::start("blue").await;
    let pebble = Pebble::start(PebbleOpts {
        validity_secs: validity,
        reject_nonces,
    })
    .await;
    Setup { upstream, pebble }
}

/// Starts switchyard and points pebble's validator at its listeners.
async fn start(s: &Setup, dir: tempfile::TempDir, cfg: &str) -> Proxy {
    let p = start_switchyard(dir, cfg, ENV).await;
    s.pebble.validate_on(&p);
    p
}

fn config(s: &Setup, dir: &Path, challenge: &str, renew_before: Option<&str>) -> String {
    let renew = renew_before
        .map(|r| format!("renew_before = \"{r}\""))
        .unwrap_or_default();
    format!(
        r#"[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
shutdown_grace = "1s"

[metrics]
listen = "127.0.0.1:0"

[admin]
socket = "{dir}/admin.sock"
state = "{dir}/state.json"

[acme]
email = "ops@app.test"
directory = "{directory}"
storage = "{dir}/acme"
challenge = "{challenge}"
ca_file = "{ca}"
{renew}

[[routes]]
host = "app.test"
pool = "app"
tls = "acme"

[[routes]]
host = "plain.test"
pool = "app"

[pools.app.versions.blue]
weight = 100
backends = ["{upstream}"]
"#,
        dir = dir.display(),
        directory = s.pebble.directory,
        ca = s.pebble.ca_file.display(),
        upstream = s.upstream.addr,
    )
}

fn https_addr(p: &Proxy) -> SocketAddr {
    p.https.expect("an https listener")
}

fn cert_state(state: &Value, domain: &str) -> Value {
    state["certificates"][domain].clone()
}

fn time_of(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(v.as_str()?).ok()
}

/// Waits until the state shows a certificate for `domain` other than
/// `not_serial`, with its success recorded and its next check scheduled
/// after it (the certificate is swapped in a moment before those are
/// written); returns its serial.
async fn wait_cert(p: &Proxy, domain: &str, not_serial: Option<&str>) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = p.state().await;
        let c = cert_state(&st, domain);
        if let Some(serial) = c["serial"].as_str() {
            let settled = match (time_of(&c["last_success_at"]), time_of(&c["next_check"])) {
                (Some(ok), Some(next)) => next > ok,
                _ => false,
            };
            if Some(serial) != not_serial && settled && c["consecutive_failures"] == 0 {
                return serial.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no (new) certificate for {domain}: {}\n--- log:\n{}",
            cert_state(&st, domain),
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines of the proxy's log whose message is `msg`, colours removed, with
/// the time each starts with.
fn log_lines(p: &Proxy, msg: &str) -> Vec<(SystemTime, String)> {
    let mut plain = String::new();
    let mut in_escape = false;
    for ch in p.log().chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain
        .lines()
        .filter(|l| l.contains(msg))
        .map(|l| {
            let at = l.split_whitespace().next().unwrap_or("");
            let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{l}: {e}"));
            (at, l.to_string())
        })
        .collect()
}

/// `name=value` of a log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// A `Duration`'s `Debug` form (`retry_in=1.0523s`) in seconds.
fn secs(debug: &str) -> f64 {
    if let Some(ms) = debug.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1e3
    } else {
        debug.strip_suffix('s').unwrap().parse().unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn slug_dir(s: &Setup, dir: &Path) -> std::path::PathBuf {
    let slug = s
        .pebble
        .directory
        .trim_start_matches("https://")
        .replace([':', '/'], "_");
    dir.join("acme").join(slug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_from_empty_storage_serves_h2_and_h1_then_restart_places_no_new_order() {
    let s = setup(None, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path(), "http-01", None);
    let store = slug_dir(&s, dir.path());
    let mut p = start(&s, dir, &cfg).await;

    let serial = wait_cert(&p, "app.test", None).await;
    assert_eq!(s.pebble.orders(), 1, "one order for the one acme host");
    assert!(p.log().contains("certificate obtained"));

    let root = s.pebble.root_file();
    let (v, body) = curl_https("app.test", https_addr(&p).port(), "/", &root, true).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("2", "blue\n"));
    let (v, body) = curl_https("app.test", https_addr(&p).port(), "/", &root, false).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("1.1", "blue\n"));

    // Stored once, private.
    assert_eq!(mode(&store.join("account.json")), 0o600);
    assert_eq!(mode(&store.join("certs/app.test/key.pem")), 0o600);
    assert_eq!(mode(&store.join("certs/app.test/cert.pem")), 0o600);

    // The state says what is served and when it renews.
    let st = p.state().await;
    let c = cert_state(&st, "app.test");
    assert!(
        c["issuer"]
            .as_str()
            .unwrap()
            .contains("Pebble Intermediate"),
        "{c}"
    );
    assert!(c["not_after"].as_str().is_some() && c["renew_at"].as_str().is_some());
    assert!(c["next_check"].as_str().is_some() && c["last_error"].is_null());
    let human = p.ctl(&["state"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("certificates:") && human.contains(&serial),
        "{human}"
    );
    // The expiry gauge of the metrics.
    let metrics = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", p.metrics.unwrap())])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_certificate_expiry_timestamp_seconds{domain=\"app.test\"}")
        })
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    assert_eq!(
        gauge.rsplit(' ').next().unwrap().parse::<f64>().unwrap(),
        c["not_after_unix"].as_f64().unwrap()
    );

    // Restart on the same storage: the stored certificate serves at once,
    // and no order (nor account) is placed.
    p.restart().await;
    s.pebble.validate_on(&p);
    let root_pem = s.pebble.root_pem();
    let a = tls_get(https_addr(&p), "app.test", "app.test", "/", &root_pem)
        .await
        .unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "blue\n"));
    assert_eq!(a.serial, serial);
    // The restarted manager has looked at the stored certificate once it has
    // scheduled its next look (hours away, at most at the renewal time):
    // by then it has ordered, or decided not to.
    let soon = SystemTime::now() + Duration::from_secs(3600);
    assert!(
        eventually(DEADLINE, || async {
            time_of(&cert_state(&p.state().await, "app.test")["next_check"])
                .is_some_and(|t| t > soon)
        })
        .await,
        "no next check scheduled: {}",
        cert_state(&p.state().await, "app.test")
    );
    assert_eq!(
        cert_state(&p.state().await, "app.test")["attempts"],
        0,
        "no order attempted since the restart"
    );
    assert_eq!(s.pebble.orders(), 1, "a restart must not order again");
    assert_eq!(s.pebble.new_accounts(), 1);
    assert!(p.log().contains("stored certificate loaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_from_empty_storage_serves_h2_and_h1() {
    let s = setup(None, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path(), "tls-alpn-01", None);
    let p = start(&s, dir, &cfg).await;

    wait_cert(&p, "app.test", None).await;
    let log = p.log();
    assert!(log.contains("answered a TLS-ALPN-01 validation"), "{log}");
    let root = s.pebble.root_file();
    let (v, body) = curl_https("app.test", https_addr(&p).port(), "/", &root, true).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("2", "blue\n"));
    let (v, body) = curl_https("app.test", https_addr(&p).port(), "/", &root, false).unwrap();
    assert_eq!((v.as_str(), body.as_str()), ("1.1", "blue\n"));
}

/// Short certificates (30 s) renewed 22 s before expiry (8 s after issue:
/// the renewal has 22 s before the first one expires), with pebble's default
/// 5 % nonce rejection: clients opening a new connection every 20 ms and one
/// keep-alive client see no failure, and new handshakes get the new serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_renewal_under_load_has_zero_failed_requests() {
    let s = setup(Some(30), true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path(), "http-01", Some("22s"));
    let p = start(&s, dir, &cfg).await;
    let first = wait_cert(&p, "app.test", None).await;
    let root_pem = s.pebble.root_pem();
    let addr = https_addr(&p);

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let load = {
        let (stop, seen, root_pem) = (stop.clone(), seen.clone(), root_pem.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = tls_get(addr, "app.test", "app.test", "/", &root_pem).await;
                let r = match r {
                    Ok(a) if a.status == 200 && a.body == "blue\n" => Ok(a.serial),
                    Ok(a) => Err(format!("{} {}", a.status, a.body)),
                    Err(e) => Err(e),
                };
                seen.lock().unwrap().push(r);
                // A new connection every 20 ms: the load's pace.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // A keep-alive connection opened before the renewal keeps working.
    let stream = tls_support::tls_connect(addr, "app.test", &root_pem, &[b"http/1.1"])
        .await
        .unwrap();
    let ka_serial = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).unwrap();
            x.raw_serial_as_string()
        })
        .unwrap();
    let (mut ka, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(stream))
    .await
    .unwrap();
    tokio::spawn(conn);
    // Its first request now: a connection that sends nothing for
    // `header_timeout` after its handshake is dropped (tests/adversarial.rs).
    let req = http::Request::builder()
        .uri("/")
        .header("host", "app.test")
        .body(http_body_util::Empty::new())
        .unwrap();
    let r = ka
        .send_request(req)
        .await
        .expect("first keep-alive request");
    assert_eq!(r.status(), 200);

    let second = wait_cert(&p, "app.test", Some(&first)).await;
    // Keep going after the swap until the new connections have met the new
    // certificate and the keep-alive one has made a few more requests.
    let deadline = Instant::now() + DEADLINE;
    let mut ka_ok = 0;
    loop {
        let req = http::Request::builder()
            .uri("/")
            .header("host", "app.test")
            .body(http_body_util::Empty::new())
            .unwrap();
        let r = ka.send_request(req).await.expect("keep-alive request");
        assert_eq!(r.status(), 200);
        ka_ok += 1;
        let got_second = {
            let seen = seen.lock().unwrap();
            seen.iter().any(|r| r.as_deref() == Ok(second.as_str())) && seen.len() > 20
        };
        if got_second && ka_ok > 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load never met the new certificate"
        );
        // The keep-alive client's pace.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let failed: Vec<_> = seen.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(
        ka_serial, first,
        "the keep-alive connection predates the swap"
    );
    assert!(seen.iter().any(|r| r.as_deref() == Ok(first.as_str())));
    // Once swapped, new handshakes get a new certificate.
    let a = tls_get(addr, "app.test", "app.test", "/", &root_pem)
        .await
        .unwrap();
    assert_ne!(a.serial, first);
    assert!(s.pebble.orders() >= 2);
}

/// pebble goes away while the certificate is due for renewal: plain HTTP keeps
/// working, HTTPS keeps serving the current certificate, attempts back off
/// (1 s, 2 s, 4 s ...), the error shows in `ctl state`. A fresh pebble (which
/// forgot the account) is then used: switchyard registers again and renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_keeps_serving_backs_off_and_recovers_with_a_new_account() {
    // Renewal due 6 s after issue; the certificate stays valid for a minute,
    // long enough to serve through the outage however slow the machine.
    let mut s = setup(Some(60), false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path(), "http-01", Some("54s"));
    let p = start(&s, dir, &cfg).await;
    let first = wait_cert(&p, "app.test", None).await;
    let root_pem = s.pebble.root_pem();
    s.pebble.stop();

    // Through three failed attempts: HTTPS serves the current certificate,
    // plain HTTP works.
    let consecutive = |st: &Value| {
        cert_state(st, "app.test")["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut plain = Client::new(p.http);
    let deadline = Instant::now() + DEADLINE;
    while consecutive(&p.state().await) < 3 {
        let a = tls_get(https_addr(&p), "app.test", "app.test", "/", &root_pem)
            .await
            .expect("the current certificate keeps serving");
        assert_eq!(
            (a.status.as_u16(), a.serial.as_str()),
            (200, first.as_str())
        );
        let r = plain.get("plain.test", "/").await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            Instant::now() < deadline,
            "not three failed renewals:\n{}",
            p.log()
        );
        // The clients' pace.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The backoff, from the process's own log: after the k-th failure in a
    // row the next attempt is 2^(k-1) s away (plus up to 10 % jitter), and
    // it is not made before then. Retrying without backoff, or with a fixed
    // 1 s, fails this.
    let failed = log_lines(&p, "certificate order failed");
    let ordering = log_lines(&p, "ordering a certificate");
    assert!(failed.len() >= 3, "{failed:?}");
    for (k, (at, line)) in failed.iter().take(3).enumerate() {
        assert_eq!(
            field(line, "consecutive_failures"),
            (k + 1).to_string(),
            "{line}"
        );
        let base = f64::from(1u32 << k);
        let retry = secs(field(line, "retry_in"));
        assert!(
            retry >= base && retry <= base * 1.1 + 0.001,
            "failure {}: retry in {retry} s, not {base} s plus jitter: {line}",
            k + 1
        );
        if k < 2 {
            let next = ordering
                .iter()
                .map(|(t, _)| *t)
                .find(|t| t > at)
                .expect("an attempt after the failure");
            let waited = next.duration_since(*at).unwrap().as_secs_f64();
            assert!(
                waited >= retry - 0.005,
                "failure {}: next attempt after {waited} s, scheduled in {retry} s",
                k + 1
            );
        }
    }
    let st = p.state().await;
    let c = cert_state(&st, "app.test");
    assert!(c["consecutive_failures"].as_u64().unwrap() >= 3, "{c}");
    assert!(c["last_error"].as_str().is_some(), "{c}");
    let human = p.ctl(&["state"]);
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(human.contains("last error:"), "{human}");

    // The CA comes back, reset: a new account, a new certificate.
    s.pebble.restart().await;
    let second = wait_cert(&p, "app.test", Some(&first)).await;
    assert_eq!(s.pebble.new_accounts(), 1, "{}", s.pebble.log());
    assert!(p.log().contains("registering a new one"));
    let new_root = s.pebble.root_pem();
    let a = tls_get(https_addr(&p), "app.test", "app.test", "/", &new_root)
        .await
        .unwrap();
    assert_eq!(a.serial, second);
    let c = cert_state(&p.state().await, "app.test");
    assert_eq!(c["consecutive_failures"], 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_storage_is_set_aside_and_reobtained() {
    let s = setup(None, false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s, dir.path(), "http-01", None);
    let store = slug_dir(&s, dir.path());
    let certs = store.join("certs/app.test");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(store.join("account.json"), b"{\"id\": \"https://loc").unwrap();
    std::fs::write(
        certs.join("cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU",
    )
    .unwrap();
    std::fs::write(certs.join("key.pem"), [0u8, 159, 146, 150, 255, 1, 2, 3]).unwrap();
    let p = start(&s, dir, &cfg).await;

    let serial = wait_cert(&p, "app.test", None).await;
    let log = p.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("stored certificate for app.test") && log.contains("is unusable"),
        "{log}"
    );
    assert!(log.contains("stored ACME account is unusable"), "{log}");
    let names: Vec<String> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("cert.pem.corrupt-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("key.pem.corrupt-")),
        "{names:?}"
    );
    assert!(std::fs::read_dir(&store).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("account.json.corrupt-")));
    let a = tls_get(
        https_addr(&p),
        "app.test",
        "app.test",
        "/",
        &s.pebble.root_pem(),
    )
    .await
    .unwrap();
    assert_eq!((a.status.as_u16(), a.serial), (200, serial));
    // The error of the start stays visible until the certificate is obtained.
    assert!(
        eventually(DEADLINE, || async {
            cert_state(&p.state().await, "app.test")["last_success_at"].is_string()
        })
        .await
    );
}

/// A CA that answers every new-account request with 429, a rateLimited
/// problem and `Retry-After: 10`; counts those requests.
async fn start_rate_limited_ca(ca: &tls_support::TestCa) -> (u16, Arc<AtomicU64>) {
    use http_body_util::Full;
    let (cert, key) = ca.leaf(&["localhost"]);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, h) = (acceptor.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let h = h.clone();
                        async move {
                            let base = format!("https://localhost:{port}");
                            let mut r = http::Response::builder().header("replay-nonce", "bm9uY2U");
                            let body = match req.uri().path() {
                                "/dir" => serde_json::json!({
                                    "newNonce": format!("{base}/nonce"),
                                    "newAccount": format!("{base}/acct"),
                                    "newOrder": format!("{base}/order"),
                                })
                                .to_string(),
                                "/nonce" => String::new(),
                                _ => {
                                    h.fetch_add(1, Ordering::SeqCst);
                                    r = r
                                        .status(429)
                                        .header("retry-after", "10")
                                        .header("content-type", "application/problem+json");
                                    r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new accounts","status":429}"#.to_string()
                                }
                            };
                            Ok::<_, std::convert::Infallible>(
                                r.body(Full::new(bytes::Bytes::from(body))).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, hits)
}

/// A 429 with Retry-After: the next attempt waits for it even though the
/// backoff alone (1 s, 2 s) would retry sooner; the state counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_is_honoured() {
    let upstream = Upstream::start("blue").await;
    let ca = tls_support::TestCa::new("fake CA");
    let (port, hits) = start_rate_limited_ca(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let cfg = format!(
        r#"[server]
http = "127.0.0.1:0"
https = "127.0.0.1:0"

[admin]
socket = "{d}/admin.sock"
state = "{d}/state.json"

[acme]
email = "ops@app.test"
directory = "https://localhost:{port}/dir"
storage = "{d}/acme"
ca_file = "{d}/ca.pem"

[[routes]]
host = "app.test"
pool = "app"
tls = "acme"

[pools.app.versions.blue]
weight = 100
backends = ["{up}"]
"#,
        up = upstream.addr,
    );
    let p = start_switchyard(dir, &cfg, ENV).await;
    // The first refusal, once its next look is scheduled.
    let settled = |c: &Value| match (time_of(&c["last_error_at"]), time_of(&c["next_check"])) {
        (Some(err), Some(next)) => c["rate_limited"] == 1 && next > err,
        _ => false,
    };
    assert!(
        eventually(DEADLINE, || async {
            settled(&cert_state(&p.state().await, "app.test"))
        })
        .await,
        "{}",
        p.log()
    );
    let c = cert_state(&p.state().await, "app.test");
    assert!(
        c["last_error"].as_str().unwrap().contains("rateLimited"),
        "{c}"
    );
    // Scheduled by Retry-After (10 s), not by the 1 s backoff (the state's
    // times are whole seconds).
    let (err, next) = (
        time_of(&c["last_error_at"]).unwrap(),
        time_of(&c["next_check"]).unwrap(),
    );
    assert!(
        next.duration_since(err).unwrap() >= Duration::from_secs(9),
        "next check too soon: {c}"
    );
    // The retry comes, and not before then.
    assert!(
        eventually(DEADLINE, || async { hits.load(Ordering::SeqCst) >= 2 }).await,
        "{}",
        p.log()
    );
    let failed = log_lines(&p, "certificate order failed");
    let (at, line) = failed.first().expect("a failed order in the log");
    assert_eq!(field(line, "rate_limited"), "true", "{line}");
    let retry = secs(field(line, "retry_in"));
    assert!(retry >= 9.0, "Retry-After: 10 not honoured: {line}");
    let next_attempt = log_lines(&p, "ordering a certificate")
        .into_iter()
        .map(|(t, _)| t)
        .find(|t| t > at)
        .expect("the retry in the log");
    let waited = next_attempt.duration_since(*at).unwrap().as_secs_f64();
    assert!(
        waited >= retry - 0.005,
        "retried after {waited} s, before Retry-After:\n{}",
        p.log()
    );
}
