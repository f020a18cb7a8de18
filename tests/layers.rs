//! The layering rule, checked on the source: every `crate::` path in a
//! module names a module of its own layer or of a layer below, and the
//! modules of one layer import one another without a cycle. The layers are
//! the map in src/lib.rs and the README's Layout; this test is that map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// (module path, layer). A file belongs to the longest module path that is a
/// prefix of its own; `crate::a::b` resolves the same way.
const LAYERS: &[(&str, u8)] = &[
    // 0 pure: no tokio, no I/O beyond std file helpers.
    ("config", 0),
    ("host", 0),
    ("rules", 0),
    ("balance", 0),
    ("model", 0),
    ("state", 0),
    ("metrics::window", 0),
    ("rollout::plan", 0),
    ("rollout::judge", 0),
    ("health::counter", 0),
    ("notify::message", 0),
    ("fsutil", 0),
    ("memory", 0),
    ("providers::labels", 0),
    ("providers::rule", 0),
    // 1 live state.
    ("metrics", 1),
    ("upstream", 1),
    ("routing", 1),
    ("events", 1),
    ("state::store", 1),
    ("tls", 1),
    ("accesslog", 1),
    ("listener", 1),
    ("middleware", 1),
    ("cluster", 1),
    // 2 control.
    ("control", 2),
    // 3 services: each takes the control handle, none imports another.
    ("proxy", 3),
    ("health", 3),
    ("rollout", 3),
    ("acme", 3),
    ("stats", 3),
    ("notify", 3),
    ("providers", 3),
    ("cluster::run", 3),
    // 4 API.
    ("admin", 4),
    // 5 wiring.
    ("server", 5),
    ("ctl", 5),
    ("import", 5),
    ("demo", 5),
    ("main", 5),
];

/// Services (layer 3) are independent: none may import another.
const SERVICE_LAYER: u8 = 3;

fn unit_of(module: &str) -> Option<(&'static str, u8)> {
    LAYERS
        .iter()
        .filter(|(m, _)| module == *m || module.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
        .copied()
}

/// `src/a/b.rs` -> `a::b`; `src/a/mod.rs` -> `a`; `src/lib.rs` -> None.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        return None;
    }
    Some(parts.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::...` module paths a file names, outside comments and its
/// `#[cfg(test)]` module (tests may reach anything).
fn imports(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split("//").next().unwrap_or("");
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segs: Vec<&str> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_lowercase()))
                .collect();
            if !segs.is_empty() {
                out.insert(segs.join("::"));
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_its_layer_or_below_and_services_stay_apart() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut problems = Vec::new();
    let mut graph: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&root, file) else {
            continue;
        };
        let Some((unit, layer)) = unit_of(&module) else {
            problems.push(format!(
                "{}: module {module} is in no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in imports(&text) {
            let Some((to_unit, to_layer)) = unit_of(&target) else {
                problems.push(format!(
                    "{}: crate::{target} is in no layer",
                    file.display()
                ));
                continue;
            };
            if to_unit == unit {
                continue;
            }
            if to_layer > layer {
                problems.push(format!(
                    "{}: {unit} (layer {layer}) imports crate::{target} ({to_unit}, layer {to_layer})",
                    file.display()
                ));
            }
            if layer == SERVICE_LAYER && to_layer == SERVICE_LAYER {
                problems.push(format!(
                    "{}: service {unit} imports another service, crate::{target}",
                    file.display()
                ));
            }
            graph.entry(unit).or_default().insert(to_unit);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn find_cycle(graph: &BTreeMap<&'static str, BTreeSet<&'static str>>) -> Option<Vec<&'static str>> {
    fn visit(
        n: &'static str,
        graph: &BTreeMap<&'static str, BTreeSet<&'static str>>,
        stack: &mut Vec<&'static str>,
        done: &mut BTreeSet<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(i) = stack.iter().position(|&s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n);
        for &m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for &n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_checker_sees_a_violation_and_a_cycle() {
    // A service reaching into the API layer, and a two-module cycle.
    let text = "use crate::admin::Api;\n// use crate::server;\nfn f() { crate::config::x(); }\n#[cfg(test)]\nmod tests { use crate::server; }\n";
    let found = imports(text);
    let want: BTreeSet<String> = ["admin", "config::x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want, "comments and the test module are skipped");
    assert_eq!(unit_of("admin"), Some(("admin", 4)));
    assert_eq!(unit_of("rollout::plan"), Some(("rollout::plan", 0)));
    assert_eq!(unit_of("rollout::run"), Some(("rollout", 3)));
    let mut g = BTreeMap::new();
    g.insert("a", BTreeSet::from(["b"]));
    g.insert("b", BTreeSet::from(["a"]));
    assert!(find_cycle(&g).is_some());
    g.remove("b");
    assert!(find_cycle(&g).is_none());
}
