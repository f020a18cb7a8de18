//! `switchyard import traefik FILE...`: Traefik configuration in, an
//! equivalent switchyard config (TOML text) out.
//!
//! ```text
//! FILE ──yaml/toml──> documents ──classify──> compose   (compose::read_compose: labels, Traefik's command line)
//!                                          ├> dynamic   (dynamic::read_dynamic: http.routers/services/middlewares,
//!                                          │              middleware::read_middleware for each middleware)
//!                                          ├> static    (dynamic::read_static: entryPoints, certificatesResolvers)
//!                                          └> manifest  (dynamic::read_k8s: TraefikService, IngressRoute)
//!      every reader fills a model::Traefik, merged over all files
//!      ──emit::build──> TOML text ──Config::from_toml_str──> validated before it is printed
//! ```
//!
//! Routers become routes (one per host and alternative of the rule, with
//! its path, method, header and query conditions and Traefik's priority),
//! their middlewares `[middlewares.NAME]` (`middleware.rs`; chains
//! flattened, references resolved per provider), the services behind a
//! route become one pool whose versions carry Traefik's weights, containers
//! become backends by compose service name and port. A router whose
//! authentication or allow list cannot be carried is left out, not served
//! open.
//! Everything that is not carried over is a comment at the top of the output;
//! keys and labels the importer does not know are also returned as warnings.
//! Malformed input is an [`ImportError`] naming the file and the key.

mod compose;
mod dynamic;
mod emit;
mod middleware;
mod model;

mod tree;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::config::Config;
use model::Traefik;
use tree::Node;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: not a Docker Compose file, a Traefik dynamic or static configuration, nor a Traefik Kubernetes manifest (top-level keys: {keys})")]
    Unrecognized { path: PathBuf, keys: String },
    #[error("found no routers, services or certificate resolvers to import in {files}")]
    Empty { files: String },
    /// Routers (or other things) were found, none could be carried over.
    #[error("nothing in {files} could be carried over ({routers} router(s) found):\n  {why}")]
    NothingCarried {
        files: String,
        routers: usize,
        why: String,
    },
    /// The importer wrote a config that does not validate: a bug to report.
    #[error("the imported configuration does not validate (please report this):\n{0}")]
    Generated(String),
}

/// One input: its name (for messages), its text, and the variables compose
/// interpolation sees.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    pub env: BTreeMap<String, String>,
}

/// A finished import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The switchyard config, comments included; it passes `switchyard check`.
    pub toml: String,
    /// Keys and labels the importer does not know (also among the notes).
    pub warnings: Vec<String>,
    /// Everything not carried over (the comments at the top of `toml`).
    pub notes: Vec<String>,
}

/// Reads the files and imports them. Compose variables come from the
/// environment, then from a `.env` file next to each file.
pub fn traefik_files(paths: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut sources = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
            path: path.clone(),
            source,
        })?;
        let mut env = BTreeMap::new();
        let dotenv = path
            .parent()
            .map(|d| d.join(".env"))
            .unwrap_or_else(|| PathBuf::from(".env"));
        if let Ok(t) = std::fs::read_to_string(&dotenv) {
            env.extend(tree::parse_dotenv(&t));
        }
        env.extend(std::env::vars());
        sources.push(Source {
            path: path.clone(),
            text,
            env,
        });
    }
    traefik(&sources)
}

/// The kind of one document.
enum Doc {
    Compose,
    Manifest(String),
    Config { dynamic: bool, statik: bool },
}

fn classify(v: &Value) -> Option<Doc> {
    let map = v.as_object()?;
    let has = |k: &str| map.keys().any(|x| x.eq_ignore_ascii_case(k));
    if has("apiVersion") && has("kind") {
        let kind = map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("kind"))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("")
            .to_string();
        return Some(Doc::Manifest(kind));
    }
    if map
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("services") && v.is_object())
    {
        return Some(Doc::Compose);
    }
    let dynamic = ["http", "tcp", "udp", "tls"].iter().any(|k| has(k));
    let statik = dynamic::STATIC_KEYS.iter().any(|k| has(k));
    (dynamic || statik).then_some(Doc::Config { dynamic, statik })
}

fn parse(s: &Source) -> Result<Vec<Value>, ImportError> {
    let ext = s
        .path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "toml" => Ok(vec![tree::toml_document(&s.path, &s.text)?]),
        "yml" | "yaml" | "json" => tree::yaml_documents(&s.path, &s.text),
        // No telling extension: YAML first, then TOML.
        _ => tree::yaml_documents(&s.path, &s.text).or_else(|e| {
            tree::toml_document(&s.path, &s.text)
                .map(|v| vec![v])
                .map_err(|_| e)
        }),
    }
}

/// Imports already read inputs.
pub fn traefik(sources: &[Source]) -> Result<Imported, ImportError> {
    let mut parsed: Vec<(&Source, Vec<Value>)> = Vec::new();
    for s in sources {
        parsed.push((s, parse(s)?));
    }
    merge_compose_files(&mut parsed);
    // Named ports of Kubernetes Services, for TraefikServices that use them.
    let mut ports = dynamic::NamedPorts::new();
    for (s, docs) in &parsed {
        for d in docs {
            if let Some(Doc::Manifest(kind)) = classify(d) {
                if kind == "Service" {
                    dynamic::collect_ports(&Node::root(&s.path, "", d), &mut ports)?;
                }
            }
        }
    }

    let mut t = Traefik::default();
    for (s, docs) in &parsed {
        let multi = docs.len() > 1;
        for (i, d) in docs.iter().enumerate() {
            let prefix = if multi {
                format!("document {} ", i + 1)
            } else {
                String::new()
            };
            let root = Node::root(&s.path, prefix.trim_end(), d);
            let mut frag = Traefik::default();
            match classify(d) {
                Some(Doc::Compose) => {
                    let env = |k: &str| s.env.get(k).cloned();
                    compose::read_compose(&root, &env, &mut frag)?;
                }
                Some(Doc::Manifest(kind)) if kind == "Service" => {}
                Some(Doc::Manifest(kind)) => {
                    let root = Node::root(&s.path, &format!("{prefix}({kind})"), d);
                    dynamic::read_k8s(&root, &kind, &mut frag, &ports)?;
                }
                Some(Doc::Config { dynamic, statik }) => {
                    read_config_doc(&root, &s.path, dynamic, statik, &mut frag)?;
                }
                None => {
                    return Err(ImportError::Unrecognized {
                        path: s.path.clone(),
                        keys: top_keys(d),
                    })
                }
            }
            t.merge(frag)?;
        }
    }

    drop_implicit(&mut t);
    let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
    let found_routers = t.routers.len();
    let toml = emit::build(&mut t, &paths)?;
    let config = Config::from_toml_str(&toml).map_err(|diags| {
        ImportError::Generated(
            diags
                .iter()
                .map(|d| {
                    let line = toml.lines().nth(d.line.saturating_sub(1)).unwrap_or("");
                    format!("{d}\n    {line}")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    if config.routes.is_empty() && config.pools.is_empty() && config.acme.is_none() {
        let files = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if found_routers > 0 || !t.notes.is_empty() {
            return Err(ImportError::NothingCarried {
                files,
                routers: found_routers,
                why: t.notes.join("\n  "),
            });
        }
        return Err(ImportError::Empty { files });
    }
    Ok(Imported {
        toml,
        warnings: t.unknown.clone(),
        notes: t.notes.clone(),
    })
}

/// Compose files given together are one project, as `docker compose -f
/// a.yml -f b.yml` (or a file and its `docker-compose.override.yml`) makes
/// them: the later ones are merged into the first, in the order given, and
/// not read on their own.
fn merge_compose_files(parsed: &mut [(&Source, Vec<Value>)]) {
    let mut first: Option<(usize, usize)> = None;
    let mut later = Vec::new();
    for (i, (_, docs)) in parsed.iter().enumerate() {
        for (j, d) in docs.iter().enumerate() {
            if matches!(classify(d), Some(Doc::Compose)) {
                match first {
                    None => first = Some((i, j)),
                    Some(_) => later.push((i, j)),
                }
            }
        }
    }
    let Some((fi, fj)) = first else { return };
    for &(i, j) in later.iter().rev() {
        let over = parsed[i].1.remove(j);
        merge_compose(&mut parsed[fi].1[fj], over);
    }
}

/// Compose's merge: mappings key by key, `labels` and `environment` as
/// maps (a later value wins), `expose` and `ports` joined, anything else
/// replaced.
fn merge_compose(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if k == "labels" || k == "environment" => {
                        let mut m = as_map(slot);
                        m.extend(as_map(&v));
                        *slot = Value::Object(m);
                    }
                    Some(Value::Array(a)) if k == "expose" || k == "ports" => {
                        if let Value::Array(more) = v {
                            for x in more {
                                if !a.contains(&x) {
                                    a.push(x);
                                }
                            }
                        }
                    }
                    Some(slot) => merge_compose(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `["k=v", ...]` or `{k: v}` as a map.
fn as_map(v: &Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(|i| match i.split_once('=') {
                Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                None => (i.to_string(), Value::Null),
            })
            .collect(),
        _ => serde_json::Map::new(),
    }
}

/// A Traefik configuration file: dynamic (routers, services ...) or static
/// (entry points, resolvers, providers ...). Traefik reads routers and
/// services from its providers only, never from its static file: a static
/// file's `http` section is noted, not read.
fn read_config_doc(
    root: &Node<'_>,
    path: &std::path::Path,
    dynamic: bool,
    statik: bool,
    frag: &mut Traefik,
) -> Result<(), ImportError> {
    if dynamic && statik {
        for k in ["http", "tcp", "udp", "tls"] {
            if let Some(x) = root.child(k) {
                frag.note(format!(
                    "{}: {}: a static configuration file's {k} section is not read by Traefik (only the file provider's files are); not imported",
                    x.file.display(),
                    x.path
                ));
            }
        }
    } else if dynamic {
        dynamic::read_dynamic(root, frag, None)?;
    }
    if statik {
        dynamic::read_static(root, frag)?;
    }
    let mut known: Vec<&str> = vec!["http", "tcp", "udp", "tls"];
    known.extend(dynamic::STATIC_KEYS);
    for k in root.unknown_keys(&known) {
        frag.unknown(path, &k, "");
    }
    Ok(())
}

/// With `providers.docker.exposedByDefault=false`, containers without
/// `traefik.enable=true` are not Traefik's: their routers and services go.
fn drop_implicit(t: &mut Traefik) {
    if t.exposed_by_default != Some(false) {
        return;
    }
    for gone in std::mem::take(&mut t.implicit) {
        for r in &gone.routers {
            t.routers.remove(r);
        }
        for s in &gone.services {
            t.services.remove(s);
        }
        for m in &gone.middlewares {
            t.middlewares.remove(m);
        }
        t.note(format!(
            "{}: no traefik.enable=true, and providers.docker.exposedByDefault is false: Traefik ignores this container; not imported",
            gone.at
        ));
    }
}

fn top_keys(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m.keys().cloned().collect::<Vec<_>>().join(", "),
        Some(_) => "none".into(),
        None => "none: the file is not a mapping".into(),
    }
}

#[cfg(test)]
mod tests;
