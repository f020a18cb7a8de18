//! Docker Compose files: Traefik labels on each service, and the Traefik
//! container's own command line (its static configuration).
//!
//! ```text
//! services.NAME.labels (list "k=v" or map) + deploy.labels
//!   --interpolate ${VAR}--> traefik.http.* --dotted tree--> read_dynamic(Docker{NAME, port})
//!   traefik.enable / traefik.docker.* / traefik.tcp.* ... --> notes
//! services.traefik.command (--certificatesresolvers.le.acme.email=...)
//!   --dotted tree--> read_static
//! ```
//!
//! A container becomes a backend by its compose service name and port
//! (`blue:8080`): on a Compose network that name resolves to the container.

use serde_json::Value;

use super::dynamic::{read_dynamic, read_static, Docker};
use super::model::{Implicit, LoadBalancer, Server, Service, ServiceKind, Traefik};
use super::tree::{from_dotted, interpolate, Node};
use super::ImportError;

/// Reads a compose file's `services`.
pub(super) fn read_compose(
    root: &Node<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    t: &mut Traefik,
) -> Result<(), ImportError> {
    let Some(services) = root.child("services") else {
        return Ok(());
    };
    for (name, svc) in services.entries()? {
        read_container(&name, &svc, env, t)?;
    }
    Ok(())
}

/// A label: (key, value, where it was).
type Label = (String, String, String);

/// Whether an image is Traefik's (`traefik:v3.1`, `docker.io/library/traefik`).
fn is_traefik_image(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    let repo = last.split([':', '@']).next().unwrap_or(last);
    repo.eq_ignore_ascii_case("traefik")
}

fn read_container(
    name: &str,
    svc: &Node<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    t: &mut Traefik,
) -> Result<(), ImportError> {
    let image = svc.text_at("image")?.unwrap_or_default();
    if is_traefik_image(&image) {
        read_traefik_command(svc, env, t)?;
    }
    let Some((pairs, explicit)) = http_labels(svc, env, t)? else {
        return Ok(());
    };
    let tree =
        from_dotted(pairs.iter().map(|(k, v, _)| (k.as_str(), v.as_str()))).map_err(|e| {
            ImportError::Invalid {
                path: svc.file.to_owned(),
                key: format!("{}.labels", svc.path),
                message: e,
            }
        })?;
    let root = Node::root(svc.file, &format!("{}.labels: traefik", svc.path), &tree);
    let port = exposed_port(svc)?;
    let docker = Docker {
        container: name,
        port,
    };
    let mut frag = Traefik::default();
    read_dynamic(&root, &mut frag, Some(&docker))?;
    default_services(name, svc, port, &mut frag)?;
    if !explicit {
        frag.implicit.push(Implicit {
            at: format!("{}: {}", svc.file.display(), svc.path),
            routers: frag.routers.keys().cloned().collect(),
            services: frag.services.keys().cloned().collect(),
            middlewares: frag.middlewares.keys().cloned().collect(),
        });
    }
    t.merge(frag)
}

/// The container's `traefik.http.*` labels (`traefik.` cut off, values
/// interpolated), each with where it was; the other `traefik.*` labels become
/// notes. `None` when there are none, or `traefik.enable=false`; with them,
/// whether `traefik.enable=true` was said.
fn http_labels(
    svc: &Node<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    t: &mut Traefik,
) -> Result<Option<(Vec<Label>, bool)>, ImportError> {
    let mut labels: Vec<Label> = Vec::new();
    for source in [
        svc.child("labels"),
        svc.child("deploy").and_then(|d| d.child("labels")),
    ]
    .into_iter()
    .flatten()
    {
        labels.extend(label_pairs(&source)?);
    }
    let mut pairs = Vec::new();
    let mut enabled = true;
    let mut explicit = false;
    let mut tcp_noted = false;
    for (key, raw, at) in &labels {
        let lower = key.to_ascii_lowercase();
        if !lower.starts_with("traefik.") {
            continue;
        }
        let (value, unset) = interpolate(raw, env).map_err(|e| ImportError::Invalid {
            path: svc.file.to_owned(),
            key: format!("{at}: {key}"),
            message: e,
        })?;
        for var in unset {
            t.note(format!(
                "{}: {at}: {key}: variable {var} is not set (environment or .env); it was replaced by an empty string, as docker compose does",
                svc.file.display()
            ));
        }
        let rest = &key["traefik.".len()..];
        let rest_lower = &lower["traefik.".len()..];
        match rest_lower.split('.').next().unwrap_or("") {
            "http" => pairs.push((rest.to_string(), value, at.clone())),
            "enable" => {
                enabled = value.trim().eq_ignore_ascii_case("true");
                explicit = enabled;
            }
            "tcp" | "udp" if tcp_noted => {}
            "tcp" | "udp" => {
                t.note(format!(
                    "{}: {at}: {}: TCP/UDP routers are not carried over: switchyard proxies HTTP",
                    svc.file.display(),
                    key
                ));
                tcp_noted = true;
            }
            other => other_label(svc, other, at, key, &value, t),
        }
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    if !enabled {
        t.note(format!(
            "{}: {}: traefik.enable=false: its Traefik labels are not carried over",
            svc.file.display(),
            svc.path
        ));
        return Ok(None);
    }
    Ok(Some((pairs, explicit)))
}

/// A `traefik.<first>.*` label that is not HTTP routing: a note or an
/// unknown key.
fn other_label(svc: &Node<'_>, first: &str, at: &str, key: &str, value: &str, t: &mut Traefik) {
    match first {
        "docker" | "swarm" => t.note(format!(
            "{}: {at}: {key}={value}: not needed: switchyard must share a network with the container and reaches it by its service name",
            svc.file.display()
        )),
        "tls" => t.note(format!(
            "{}: {at}: {key}: TLS options are not carried over",
            svc.file.display()
        )),
        "frontend" | "backend" | "port" | "protocol" | "weight" => t.unknown(
            svc.file,
            &format!("{at}: {key}"),
            "a Traefik v1 label (Traefik v2 and later ignore it too)",
        ),
        _ => t.unknown(svc.file, &format!("{at}: {key}"), ""),
    }
}

/// Traefik's defaults for a container: a router without a service uses the
/// container's only service, or a service named after the container, which
/// is made from the exposed port when the labels do not define it.
fn default_services(
    name: &str,
    svc: &Node<'_>,
    port: Option<u16>,
    frag: &mut Traefik,
) -> Result<(), ImportError> {
    let own: Vec<String> = frag.services.keys().cloned().collect();
    for (rname, r) in frag.routers.iter_mut() {
        if r.service.is_some() {
            continue;
        }
        r.service = Some(match own.as_slice() {
            [one] => one.clone(),
            [] => name.to_string(),
            many => {
                return Err(r.origin.err(
                    "service",
                    format!(
                        "router {rname:?} names no service and the container defines several ({}): add traefik.http.routers.{rname}.service",
                        many.join(", ")
                    ),
                ))
            }
        });
    }
    let needs_default = frag
        .routers
        .values()
        .any(|r| r.service.as_deref() == Some(name))
        && !frag.services.contains_key(name);
    if !needs_default {
        return Ok(());
    }
    let port = port.ok_or_else(|| ImportError::Invalid {
        path: svc.file.to_owned(),
        key: svc.path.clone(),
        message: format!(
            "the container does not expose exactly one port and has no traefik.http.services.{name}.loadbalancer.server.port label"
        ),
    })?;
    frag.services.insert(
        name.to_string(),
        Service {
            origin: super::model::Origin {
                file: svc.file.to_owned(),
                key: svc.path.clone(),
            },
            kind: ServiceKind::LoadBalancer(LoadBalancer {
                servers: vec![Server {
                    host: name.to_string(),
                    port,
                    weight: 1,
                    group: Some(name.to_string()),
                }],
                health: None,
                sticky: None,
            }),
        },
    );
    Ok(())
}

/// `labels:` as a list of `k=v` strings or as a map; each with where it was.
fn label_pairs(n: &Node<'_>) -> Result<Vec<Label>, ImportError> {
    let mut out = Vec::new();
    match n.v {
        Value::Array(_) => {
            for item in n.items()? {
                let text = item.text()?;
                let (k, v) = text.split_once('=').unwrap_or((text.as_str(), ""));
                out.push((k.trim().to_string(), v.to_string(), item.path.clone()));
            }
        }
        Value::Object(_) => {
            for (k, v) in n.entries()? {
                let value = match v.v {
                    Value::Null => String::new(),
                    _ => v.text()?,
                };
                out.push((k, value, n.path.clone()));
            }
        }
        Value::Null => {}
        _ => return Err(n.err("labels must be a list of \"key=value\" or a mapping")),
    }
    Ok(out)
}

/// The container port when the service exposes exactly one (`expose`, or
/// the container side of `ports`).
fn exposed_port(svc: &Node<'_>) -> Result<Option<u16>, ImportError> {
    let mut found = Vec::new();
    for key in ["expose", "ports"] {
        let Some(list) = svc.child(key) else { continue };
        for item in list.items()? {
            let raw = if item.v.is_object() {
                match item.child("target") {
                    Some(t) => t.text()?,
                    None => continue,
                }
            } else {
                item.text()?
            };
            // "127.0.0.1:8080:80/tcp" -> "80"; ranges are not one port.
            let container = raw.rsplit(':').next().unwrap_or(&raw);
            let container = container.split('/').next().unwrap_or(container);
            if let Ok(p) = container.trim().parse::<u16>() {
                if !found.contains(&p) {
                    found.push(p);
                }
            } else {
                return Ok(None);
            }
        }
    }
    // Traefik's rule: the lowest port (its own container publishing 80 and
    // 443, say, is reached on 80).
    Ok(found.into_iter().min())
}

/// The Traefik container's `command:` flags are its static configuration.
fn read_traefik_command(
    svc: &Node<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    t: &mut Traefik,
) -> Result<(), ImportError> {
    let Some(cmd) = svc.child("command") else {
        return Ok(());
    };
    let args: Vec<String> = match cmd.v {
        Value::Array(_) => cmd.words()?,
        _ => cmd
            .text()?
            .split_whitespace()
            .map(|s| s.to_string())
            .collect(),
    };
    let mut flags = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            continue;
        };
        let (k, v) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // `--flag value` or a bare `--flag` (true).
            None => match iter.peek() {
                Some(next) if !next.starts_with("--") => {
                    (flag.to_string(), iter.next().cloned().unwrap_or_default())
                }
                _ => (flag.to_string(), "true".to_string()),
            },
        };
        let (v, _) = interpolate(&v, env).map_err(|e| cmd.err(format!("--{k}: {e}")))?;
        flags.push((k, v));
    }
    if flags.is_empty() {
        return Ok(());
    }
    let tree =
        from_dotted(flags.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| cmd.err(e))?;
    let root = Node::root(svc.file, &format!("{} --", cmd.path), &tree);
    read_static(&root, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traefik_images() {
        assert!(is_traefik_image("traefik:v3.1"));
        assert!(is_traefik_image("docker.io/library/traefik@sha256:abc"));
        assert!(is_traefik_image("traefik"));
        assert!(!is_traefik_image("traefik/whoami:v1.10"));
        assert!(!is_traefik_image("nginx"));
    }
}
