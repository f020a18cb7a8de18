//! The `switchyard` binary: CLI, logging, runtime; everything else is the library.

#![warn(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use http::Method;
use serde_json::{json, Value};

use switchyard::cluster::{Cluster, EtcdStore};
use switchyard::config::{Config, ConfigError};
use switchyard::control::Control;
use switchyard::ctl::{self, CtlError};
use switchyard::events::EventLog;
use switchyard::state::{FileStore, MemoryStore};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Reverse proxy for blue-green and canary releases"
)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (config: -c, else ./switchyard.toml, else config/switchyard.toml).
    Run {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Once every listener is bound, write their addresses (ports picked
        /// for `:0` included) and the pid to this file as JSON, atomically.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Validate a config: exit 0, or 1 with every error as FILE:LINE:COL: message.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Talk to a running instance through its admin socket.
    #[command(after_help = CTL_EXIT_CODES)]
    Ctl {
        /// Admin socket (else $SWITCHYARD_SOCKET, else the config's, else /run/switchyard/admin.sock).
        #[arg(short, long, env = "SWITCHYARD_SOCKET")]
        socket: Option<PathBuf>,
        /// Print the API's JSON instead of human output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
    /// Start the proxy with built-in origins on loopback: its own blue/green
    /// setup, or with -c, origins on the config's loopback backends (each
    /// answers its version's name) and the proxy on that config.
    Demo {
        /// Proxy port on 127.0.0.1 when no config is given (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// As for `run`: the bound addresses and the pid as JSON in this file.
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
    },
    /// Several instances sharing their state through etcd (`[cluster]`).
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Print a switchyard config equivalent to another proxy's configuration.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

/// The exit codes of `ctl`, shown by `ctl --help` (and in README.md).
const CTL_EXIT_CODES: &str = "Exit codes:
  0  done; with --wait: the rollout was promoted
  1  --wait: the rollout was rolled back (judgement, gate, abort, dead canary),
     or the rollout followed is gone or was replaced
  2  refused or bad input: the API said no (its error on stderr), nothing changed
  3  the proxy could not be reached (with --wait: for longer than
     --unreachable-timeout, default 60s, retrying meanwhile)";

/// `--wait` and how long it keeps retrying a proxy it cannot reach.
#[derive(clap::Args, Clone)]
struct WaitArgs {
    /// Follow the rollout to its end (live progress on stderr): exit 0 when
    /// promoted, 1 when rolled back, 2 when refused, 3 when the proxy stays
    /// unreachable. Follows the rollout through restarts of the proxy.
    #[arg(long)]
    wait: bool,
    /// With --wait: how long the proxy may stay unreachable (a restart)
    /// before giving up with exit code 3.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    unreachable_timeout: String,
}

impl WaitArgs {
    fn patience(&self) -> Result<Duration, CtlError> {
        switchyard::config::parse_duration(&self.unreachable_timeout)
            .map_err(|e| CtlError::Usage(format!("--unreachable-timeout: {e}")))
    }
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Copy this instance's state file (runtime weights, versions, rollouts)
    /// into etcd under `[cluster] prefix`: how a single instance becomes the
    /// first of a fleet. Refused when the fleet already has a state.
    Init {
        /// The config with the `[cluster]` section (its `admin.state` is read).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Replace a state the fleet already has.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Traefik: Docker Compose files with Traefik labels, dynamic or static
    /// configuration files (YAML/TOML), TraefikService/IngressRoute manifests.
    /// The config goes to stdout; what could not be carried over is in its
    /// comments and unknown keys are warned about on stderr.
    Traefik {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Routes, pools, versions, weights and backend health.
    State {
        /// Only this pool, its routes and rollout (`GET /v1/state?pool=P`).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Set weights atomically: `weights app blue=90 green=10`.
    Weights {
        pool: String,
        #[arg(required = true)]
        assignments: Vec<String>,
        /// Allow every weight to be 0 (stops all traffic to the pool), and
        /// abort the pool's active rollout first (refused without it).
        #[arg(long)]
        force: bool,
    },
    /// Send all traffic to one version (it gets 100, the others 0).
    Switch {
        pool: String,
        version: String,
        /// Abort the pool's active rollout first (refused without it).
        #[arg(long)]
        force: bool,
    },
    /// Add, replace or remove a version.
    Version {
        #[command(subcommand)]
        cmd: VersionCmd,
    },
    /// Canary and blue-green rollouts.
    Rollout {
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Version rules: requests with a header, cookie or query parameter go
    /// to a named version (A/B), before sticky users and weights.
    Match {
        #[command(subcommand)]
        cmd: MatchCmd,
    },
    /// Reload the config file.
    Reload {
        /// Apply a file that routes nothing or drops pools holding runtime
        /// changes (refused without it).
        #[arg(long)]
        force: bool,
    },
    /// The audit log.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

#[derive(Subcommand)]
enum RolloutCmd {
    /// Start a rollout of CANARY (the stable version is the one with the most traffic).
    Start {
        pool: String,
        canary: String,
        /// Canary percent per step, e.g. 1,5,25,100 (100 is always last);
        /// `5:10m` gives a step its own duration, `pause` waits for
        /// `rollout resume` before the next step.
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<String>>,
        /// Wait for `rollout resume` before the step at this percent (e.g. 100).
        #[arg(long)]
        approve_before: Option<u32>,
        /// How long each step lasts before it is judged, e.g. 2m.
        #[arg(long)]
        step_duration: Option<String>,
        /// canary-10, linear-10 or all-at-once (blue-green).
        #[arg(long)]
        preset: Option<String>,
        /// Requests needed on each side before judging.
        #[arg(long)]
        min_requests: Option<u64>,
        /// Start even during the cooldown after a rollback.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Step, percent, time left and the last judgement.
    Status {
        pool: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Hold the current step.
    Pause { pool: String },
    /// Continue a paused rollout (its step restarts its window).
    Resume {
        pool: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Give the canary all traffic now.
    Promote { pool: String },
    /// Roll back now: canary 0, stable 100.
    Abort { pool: String },
}

#[derive(Subcommand)]
enum MatchCmd {
    /// The pool's version rules, in order.
    Show { pool: String },
    /// Append a rule: `match add app --header X-Beta=1 green`.
    Add {
        pool: String,
        /// NAME or NAME=VALUE: a request header.
        #[arg(long, conflicts_with_all = ["cookie", "query"])]
        header: Option<String>,
        /// NAME or NAME=VALUE: a cookie.
        #[arg(long, conflicts_with = "query")]
        cookie: Option<String>,
        /// NAME or NAME=VALUE: a query parameter.
        #[arg(long)]
        query: Option<String>,
        /// The value must match this regex (instead of =VALUE).
        #[arg(long)]
        regex: Option<String>,
        /// Where matching requests go.
        version: String,
    },
    /// Remove rule N (1-based, as `show` numbers them).
    Rm { pool: String, n: usize },
    /// Remove every rule of the pool.
    Clear { pool: String },
}

#[derive(Subcommand)]
enum VersionCmd {
    /// Add or replace a version: `version add app green --backend 127.0.0.1:8082`.
    Add {
        pool: String,
        version: String,
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        #[arg(long)]
        weight: Option<u32>,
        /// Abort the pool's active rollout first when the weight changes
        /// (refused without it).
        #[arg(long)]
        force: bool,
    },
    /// Remove a version (refused while its weight is above 0).
    Rm { pool: String, version: String },
}

fn main() -> ExitCode {
    // One crypto provider (ring) for every rustls config in the process.
    switchyard::tls::install_provider();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.cmd {
        Cmd::Run { config, ready_file } => report(run(config, ready_file.as_deref())),
        Cmd::Check { config } => check(config),
        Cmd::Ctl { socket, json, cmd } => ctl_main(ctl::resolve_socket(socket), json, cmd),
        Cmd::Demo {
            port,
            config,
            ready_file,
        } => report(match config {
            None => demo(port, ready_file.as_deref()),
            Some(c) => demo_config(&c, ready_file.as_deref()),
        }),
        Cmd::Import {
            from: ImportFrom::Traefik { files },
        } => import_traefik(&files),
        Cmd::Cluster {
            cmd: ClusterCmd::Init { config, force },
        } => report(cluster_init(config, force)),
    }
}

/// `cluster init`: the state file into etcd.
fn cluster_init(config: Option<PathBuf>, force: bool) -> anyhow::Result<()> {
    let path = config_path(config);
    let config = Config::load(&path)?;
    let Some(cc) = &config.cluster else {
        anyhow::bail!(
            "{} has no [cluster] section: add one (etcd, prefix) first",
            path.display()
        );
    };
    let rt = runtime(1)?;
    let done = rt.block_on(switchyard::cluster::init(cc, &config.admin.state, force))?;
    println!("{done}");
    Ok(())
}

/// `import traefik`: the config on stdout, warnings on stderr, exit 1 on bad input.
fn import_traefik(files: &[PathBuf]) -> ExitCode {
    match switchyard::import::traefik_files(files) {
        Ok(out) => {
            print!("{}", out.toml);
            for w in &out.warnings {
                eprintln!("switchyard import: warning: {w}");
            }
            if !out.notes.is_empty() {
                eprintln!(
                    "switchyard import: {} item(s) not carried over or changed; see the comments at the top of the output",
                    out.notes.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `-c`, else ./switchyard.toml, else config/switchyard.toml.
fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        let local = PathBuf::from("switchyard.toml");
        if local.exists() {
            local
        } else {
            PathBuf::from("config/switchyard.toml")
        }
    })
}

/// `basic_auth` users that cannot be read: each middleware's users file
/// (unreadable, or lines it cannot use) and inline users, as
/// `FILE:LINE:COL: message` at the key that names them.
fn users_problems(path: &Path, c: &Config) -> Vec<String> {
    let text = switchyard::config::read_config_file(path).unwrap_or_default();
    let mut out = Vec::new();
    for (name, m) in &c.middlewares {
        let switchyard::config::MiddlewareConfig::BasicAuth(a) = m else {
            continue;
        };
        let parts = [
            (true, a.users_file.is_some(), {
                let mut only_file = a.clone();
                only_file.users.clear();
                only_file
            }),
            (false, !a.users.is_empty(), {
                let mut only_inline = a.clone();
                only_inline.users_file = None;
                only_inline
            }),
        ];
        for (file, present, cfg) in parts {
            if !present {
                continue;
            }
            let (_, problems) = switchyard::middleware::auth::BasicAuth::load(&cfg);
            let (line, col) = switchyard::config::basic_auth_users_at(&text, name, file);
            for p in problems {
                out.push(format!(
                    "{}:{line}:{col}: middleware {name}: {p}",
                    path.display()
                ));
            }
        }
    }
    out
}

fn check(config: Option<PathBuf>) -> ExitCode {
    let path = config_path(config);
    match Config::load(&path) {
        Ok(c) => {
            let problems = users_problems(&path, &c);
            if !problems.is_empty() {
                for p in problems {
                    println!("{p}");
                }
                return ExitCode::FAILURE;
            }
            c.warnings()
                .iter()
                .for_each(|w| eprintln!("{}: warning: {w}", path.display()));
            println!(
                "{}: ok ({} routes, {} pools)",
                path.display(),
                c.routes.len(),
                c.pools.len()
            );
            ExitCode::SUCCESS
        }
        Err(e @ ConfigError::Invalid { .. }) => {
            println!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{}:1:1: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The runtime: `workers = 1` gets tokio's single-threaded scheduler (no
/// work-stealing machinery to pay for on one core); otherwise one worker per
/// `workers`, or per core when 0. Blocking work (fsync of the state file)
/// goes to the blocking pool either way.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        b.worker_threads(workers);
    }
    b.enable_all()
        .thread_name("switchyard")
        .build()
        .context("cannot start the runtime")
}

fn run(config: Option<PathBuf>, ready_file: Option<&Path>) -> anyhow::Result<()> {
    // Before the parse: its big vectors must not raise glibc's thresholds.
    switchyard::memory::configure();
    let path = config_path(config);
    // Read and built on the control thread, where every later generation
    // of the config and the table is built too (see memory::on_control).
    let (config, source) = {
        let path = path.clone();
        switchyard::memory::on_control(move || Config::load_source(&path))?
    };
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let rt = runtime(config.server.workers)?;
    rt.block_on(async {
        let events = EventLog::open(&events_path(&config.admin.state));
        let app = Arc::new(control_for(&path, config, events).await?.with_source(source));
        // The control holds the one copy of the file's config from here on
        // (at 10 000 routes a copy is tens of megabytes).
        let config = app.snapshot().file.clone();
        let listeners = switchyard::server::bind(&config).await?;
        write_ready_file(ready_file, &listeners)?;
        tracing::info!(config = %path.display(), state = %config.admin.state.display(), "switchyard {} started", env!("CARGO_PKG_VERSION"));
        switchyard::server::run(app, &config, listeners, std::future::pending()).await?;
        // A change still running on the control thread (a reload, say)
        // finishes before the process exits.
        let _ = switchyard::memory::control(|| ()).await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The instance's control: on its own state file, or with `[cluster]`, on
/// the fleet's state in etcd (the state file then caches it).
async fn control_for(path: &Path, config: Config, events: EventLog) -> anyhow::Result<Control> {
    let Some(cc) = &config.cluster else {
        let store = Box::new(FileStore::new(&config.admin.state));
        return build_control(path, config, store, events).await;
    };
    let cluster = Arc::new(Cluster::new(cc).await?);
    let store = Box::new(EtcdStore::new(
        cluster.clone(),
        &config.admin.state,
        tokio::runtime::Handle::current(),
    ));
    Ok(build_control(path, config, store, events)
        .await?
        .clustered(cluster))
}

/// `Control::new` on the control thread (its first table is the first
/// generation of what every change rebuilds there).
async fn build_control(
    path: &Path,
    config: Config,
    store: Box<dyn switchyard::state::StateStore>,
    events: EventLog,
) -> anyhow::Result<Control> {
    let path = path.to_owned();
    switchyard::memory::control(move || Control::new(Some(path), config, store, events))
        .await
        .map_err(|_| anyhow::anyhow!("building the routing table failed (a panic)"))
}

/// `--ready-file`: once every listener is bound (connections queue from
/// then on), `{"http": "127.0.0.1:PORT", "https": ..., "metrics": ...,
/// "dashboard": ..., "admin": "/path/admin.sock", "pid": N}` (absent
/// listeners left out), written atomically, so whoever started the process
/// learns the ports picked for `:0` without probing.
fn write_ready_file(
    path: Option<&Path>,
    listeners: &switchyard::server::Listeners,
) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let mut ready = serde_json::Map::new();
    for (name, listener) in [
        ("http", &listeners.http),
        ("https", &listeners.https),
        ("metrics", &listeners.metrics),
    ] {
        if let Some(l) = listener {
            ready.insert(name.into(), json!(l.local_addr()?.to_string()));
        }
    }
    if let Some(d) = &listeners.dashboard {
        ready.insert("dashboard".into(), json!(d.local_addr().to_string()));
    }
    ready.insert(
        "admin".into(),
        json!(listeners.admin_path.display().to_string()),
    );
    ready.insert("pid".into(), json!(std::process::id()));
    let text = format!("{}\n", Value::Object(ready));
    switchyard::fsutil::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write the ready file {}", path.display()))
}

/// The audit log lives next to the state file: `state.json` -> `state.events.jsonl`.
fn events_path(state: &Path) -> PathBuf {
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    state.with_file_name(format!("{stem}.events.jsonl"))
}

fn demo(port: u16, ready_file: Option<&Path>) -> anyhow::Result<()> {
    let rt = runtime(0)?;
    rt.block_on(async {
        let (blue, green) = switchyard::demo::start_origins().await?;
        let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
        let socket = dir.join("admin.sock");
        // The asked port, or any free one when it is taken.
        let probe = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
        };
        let http = probe.local_addr()?;
        drop(probe);
        let text = switchyard::demo::demo_config(http, blue, green, &socket);
        let config =
            Config::from_toml_str(&text).map_err(|d| anyhow::anyhow!("demo config: {d:?}"))?;
        let app = Arc::new(Control::new(
            None,
            config.clone(),
            Box::<MemoryStore>::default(),
            EventLog::in_memory(),
        ));
        let listeners = switchyard::server::bind(&config).await?;
        write_ready_file(ready_file, &listeners)?;
        let exe = std::env::args()
            .next()
            .unwrap_or_else(|| "switchyard".into());
        println!("{}", switchyard::demo::instructions(http, &socket, &exe));
        switchyard::server::run(app, &config, listeners, std::future::pending()).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

/// `demo -c FILE`: origins on the file's loopback backends, then `run`.
fn demo_config(path: &Path, ready_file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let rt = runtime(config.server.workers)?;
    rt.block_on(async {
        for (pool, p) in &config.pools {
            for (version, v) in &p.versions {
                let name: &'static str = Box::leak(version.clone().into_boxed_str());
                for b in &v.backends {
                    let Ok(addr) = b.as_str().parse::<std::net::SocketAddr>() else { continue };
                    if !addr.ip().is_loopback() {
                        continue;
                    }
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            println!("demo origin {pool}/{version} on {addr}");
                            tokio::spawn(switchyard::demo::serve_origin(l, name));
                        }
                        Err(e) => println!("demo origin {pool}/{version}: {addr} is taken ({e}); using what listens there"),
                    }
                }
            }
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let events = EventLog::open(&events_path(&config.admin.state));
        let store = Box::new(FileStore::new(&config.admin.state));
        let app = Arc::new(Control::new(Some(path), config.clone(), store, events));
        let listeners = switchyard::server::bind(&config).await?;
        write_ready_file(ready_file, &listeners)?;
        if let (Some(http), Some(route)) = (config.server.http, config.routes.first()) {
            let exe = std::env::args().next().unwrap_or_else(|| "switchyard".into());
            println!("try:  curl -s -H 'Host: {}' http://{http}/", route.host);
            println!("      {exe} ctl -s {} state", config.admin.socket.display());
        }
        switchyard::server::run(app, &config, listeners, std::future::pending()).await?;
        Ok(())
    })
}

fn ctl_main(socket: PathBuf, as_json: bool, cmd: CtlCmd) -> ExitCode {
    // `--wait` follows a rollout for as long as it takes.
    let waits = matches!(
        &cmd,
        CtlCmd::Rollout {
            cmd: RolloutCmd::Start { wait, .. }
                | RolloutCmd::Status { wait, .. }
                | RolloutCmd::Resume { wait, .. }
        } if wait.wait
    );
    let limit = Duration::from_secs(if waits { 7 * 24 * 3600 } else { 60 });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(async { tokio::time::timeout(limit, ctl_run(&socket, as_json, cmd)).await }) {
        Ok(Ok(out)) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            let code = ctl::exit_code(&e);
            match &e {
                CtlError::Api { status, body, .. } => {
                    if as_json {
                        println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
                    }
                    eprintln!("switchyard ctl: {e} ({status})");
                }
                CtlError::RolledBack { body, .. } => {
                    if as_json {
                        println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
                    } else if let Ok(v) = serde_json::from_value(body.clone()) {
                        print!("{}", ctl::render_rollout(&v));
                    }
                    eprintln!("switchyard ctl: {e}");
                }
                _ => eprintln!("switchyard ctl: {e}"),
            }
            ExitCode::from(code)
        }
        Err(_) => {
            eprintln!(
                "switchyard ctl: no answer from {} within {limit:?}",
                socket.display()
            );
            ExitCode::from(3)
        }
    }
}

async fn ctl_run(socket: &Path, as_json: bool, cmd: CtlCmd) -> Result<String, CtlError> {
    use switchyard::model::api::{EventsReply, ReloadReply, StateView, WeightsReply};
    let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
    let out = |v: Value, human: String| if as_json { pretty(&v) } else { human };
    let none = None::<&Value>;
    match cmd {
        CtlCmd::State { pool } => {
            let path = match pool {
                Some(p) => format!("/v1/state?pool={}", ctl::query_escape(&p)),
                None => "/v1/state".to_string(),
            };
            let a: ctl::Answer<StateView> = ctl::call(socket, Method::GET, &path, none).await?;
            Ok(out(a.json, ctl::render_state(&a.typed)))
        }
        CtlCmd::Weights {
            pool,
            assignments,
            force,
        } => {
            let w = ctl::parse_assignments(&assignments)?;
            let path = format!(
                "/v1/pools/{pool}/weights{}",
                if force { "?force=true" } else { "" }
            );
            let a: ctl::Answer<WeightsReply> =
                ctl::call(socket, Method::PUT, &path, Some(&w)).await?;
            let human = format!("{pool}: {}\n", ctl::weights_line(&a.typed));
            Ok(out(a.json, human))
        }
        CtlCmd::Switch {
            pool,
            version,
            force,
        } => {
            // Only this pool: a 10,000-pool state is megabytes.
            let path = format!("/v1/state?pool={}", ctl::query_escape(&pool));
            let state: ctl::Answer<StateView> = ctl::call(socket, Method::GET, &path, none).await?;
            let w = ctl::switch_weights(&state.typed, &pool, &version)?;
            let path = format!(
                "/v1/pools/{pool}/weights{}",
                if force { "?force=true" } else { "" }
            );
            let a: ctl::Answer<WeightsReply> =
                ctl::call(socket, Method::PUT, &path, Some(&w)).await?;
            let human = format!(
                "{pool}: switched to {version} ({})\n",
                ctl::weights_line(&a.typed)
            );
            Ok(out(a.json, human))
        }
        CtlCmd::Version { cmd } => version_cmd(socket, as_json, cmd).await,
        CtlCmd::Rollout { cmd } => rollout_cmd(socket, as_json, cmd).await,
        CtlCmd::Match { cmd } => match_cmd(socket, as_json, cmd).await,
        CtlCmd::Reload { force } => {
            let path = if force {
                "/v1/reload?force=true"
            } else {
                "/v1/reload"
            };
            let a: ctl::Answer<ReloadReply> = ctl::call(socket, Method::POST, path, none).await?;
            let mut human = format!("reloaded {}\n", a.typed.reloaded);
            for n in &a.typed.notes {
                human.push_str(&format!("note: {n}\n"));
            }
            Ok(out(a.json, human))
        }
        CtlCmd::Events { since } => {
            let path = format!("/v1/events?since={since}");
            let a: ctl::Answer<EventsReply> = ctl::call(socket, Method::GET, &path, none).await?;
            Ok(out(a.json, ctl::render_events(&a.typed)))
        }
    }
}

async fn version_cmd(socket: &Path, as_json: bool, cmd: VersionCmd) -> Result<String, CtlError> {
    use switchyard::model::api::{RemovedReply, VersionReply, VersionRequest};
    let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
    let out = |v: Value, human: String| if as_json { pretty(&v) } else { human };
    match cmd {
        VersionCmd::Add {
            pool,
            version,
            backends,
            weight,
            force,
        } => {
            let body = VersionRequest { backends, weight };
            let path = format!(
                "/v1/pools/{pool}/versions/{version}{}",
                if force { "?force=true" } else { "" }
            );
            let a: ctl::Answer<VersionReply> =
                ctl::call(socket, Method::PUT, &path, Some(&body)).await?;
            let human = format!(
                "{pool}: version {version} set: weight {}, backends {}\n",
                a.typed.spec.weight,
                a.typed.spec.backends.join(", ")
            );
            Ok(out(a.json, human))
        }
        VersionCmd::Rm { pool, version } => {
            let path = format!("/v1/pools/{pool}/versions/{version}");
            let a: ctl::Answer<RemovedReply> =
                ctl::call(socket, Method::DELETE, &path, None::<&Value>).await?;
            Ok(out(a.json, format!("{pool}: version {version} removed\n")))
        }
    }
}

/// `ctl match ...`: reads the pool's rules, changes them, writes them back.
async fn match_cmd(socket: &Path, as_json: bool, cmd: MatchCmd) -> Result<String, CtlError> {
    use switchyard::model::api::MatchReply;
    let pool = match &cmd {
        MatchCmd::Show { pool }
        | MatchCmd::Add { pool, .. }
        | MatchCmd::Rm { pool, .. }
        | MatchCmd::Clear { pool } => pool.clone(),
    };
    let path = format!("/v1/pools/{pool}/match");
    let current: ctl::Answer<MatchReply> =
        ctl::call(socket, Method::GET, &path, None::<&Value>).await?;
    let mut rules = current.typed.rules;
    match cmd {
        MatchCmd::Show { .. } => {
            let human = ctl::render_matches(&pool, &rules);
            return Ok(if as_json {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&current.json).unwrap_or_default()
                )
            } else {
                human
            });
        }
        MatchCmd::Add {
            header,
            cookie,
            query,
            regex,
            version,
            ..
        } => rules.push(ctl::match_spec(header, cookie, query, regex, version)?),
        MatchCmd::Rm { n, .. } => {
            if n == 0 || n > rules.len() {
                return Err(CtlError::Usage(format!(
                    "pool {pool} has {} rule(s); give a number from `ctl match show {pool}`",
                    rules.len()
                )));
            }
            rules.remove(n - 1);
        }
        MatchCmd::Clear { .. } => rules.clear(),
    }
    let a: ctl::Answer<MatchReply> = ctl::call(socket, Method::PUT, &path, Some(&rules)).await?;
    Ok(if as_json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&a.json).unwrap_or_default()
        )
    } else {
        ctl::render_matches(&pool, &a.typed.rules)
    })
}

async fn rollout_cmd(socket: &Path, as_json: bool, cmd: RolloutCmd) -> Result<String, CtlError> {
    use switchyard::model::api::{RolloutRequest, RolloutStatus};
    let show = |a: ctl::Answer<RolloutStatus>| {
        if as_json {
            format!(
                "{}\n",
                serde_json::to_string_pretty(&a.json).unwrap_or_default()
            )
        } else {
            ctl::render_rollout(&a.typed)
        }
    };
    let none = None::<&Value>;
    let (pool, action, wait) = match cmd {
        RolloutCmd::Start {
            pool,
            canary,
            steps,
            approve_before,
            step_duration,
            preset,
            min_requests,
            force,
            wait,
        } => {
            let body = RolloutRequest {
                canary: Some(canary),
                steps: steps.map(|s| s.iter().map(|x| ctl::step_spec(x)).collect()),
                approve_before,
                step_duration,
                preset,
                min_requests,
                force: force.then_some(true),
                ..Default::default()
            };
            let path = format!("/v1/pools/{pool}/rollout");
            if !wait.wait {
                return Ok(show(
                    ctl::call(socket, Method::POST, &path, Some(&body)).await?,
                ));
            }
            let patience = wait.patience()?;
            return Ok(show(
                ctl::start_and_follow(socket, &pool, &body, patience).await?,
            ));
        }
        RolloutCmd::Status { pool, wait } => {
            let path = format!("/v1/pools/{pool}/rollout");
            if !wait.wait {
                return Ok(show(ctl::call(socket, Method::GET, &path, none).await?));
            }
            let followed = ctl::Followed {
                pool,
                started_ms: None,
            };
            return Ok(show(
                ctl::follow_rollout(socket, &followed, wait.patience()?).await?,
            ));
        }
        RolloutCmd::Pause { pool } => (pool, "pause", None),
        RolloutCmd::Resume { pool, wait } => (pool, "resume", wait.wait.then_some(wait)),
        RolloutCmd::Promote { pool } => (pool, "promote", None),
        RolloutCmd::Abort { pool } => (pool, "abort", None),
    };
    let path = format!("/v1/pools/{pool}/rollout/{action}");
    let patience = wait.as_ref().map(WaitArgs::patience).transpose()?;
    let a: ctl::Answer<RolloutStatus> = ctl::call(socket, Method::POST, &path, none).await?;
    let Some(patience) = patience else {
        return Ok(show(a));
    };
    let followed = ctl::Followed {
        pool,
        started_ms: Some(a.typed.rollout.started_ms),
    };
    Ok(show(
        ctl::follow_rollout(socket, &followed, patience).await?,
    ))
}
