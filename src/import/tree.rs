//! Input files as one tree shape, read with key paths.
//!
//! ```text
//! YAML (every document, merge keys applied) ─┐
//! TOML ──────────────────────────────────────┼─> serde_json::Value ─> Node (value + key path)
//! labels / command-line flags (a.b.c=v) ─────┘
//! ```
//!
//! Traefik reads its keys case-insensitively, so [`Node::child`] does too. Every
//! [`Node`] knows its file and the key path that reached it, so a bad value is
//! reported as `FILE: http.services.app.weighted.services[1].weight: ...`.

use std::path::Path;

use serde_json::{Map, Value};

use super::ImportError;
use crate::config::line_col;

/// Parses every YAML document of a file (empty documents are skipped).
pub(super) fn yaml_documents(path: &Path, text: &str) -> Result<Vec<Value>, ImportError> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let mut v: serde_norway::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| yaml_error(path, &e))?;
        v.apply_merge().map_err(|e| yaml_error(path, &e))?;
        let v = from_yaml(path, v)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn yaml_error(path: &Path, e: &serde_norway::Error) -> ImportError {
    let (line, col) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    ImportError::Syntax {
        path: path.to_owned(),
        line,
        col,
        message: e.to_string(),
    }
}

fn from_yaml(path: &Path, v: serde_norway::Value) -> Result<Value, ImportError> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(n.to_string()))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| from_yaml(path, i))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    other => {
                        return Err(ImportError::Syntax {
                            path: path.to_owned(),
                            line: 1,
                            col: 1,
                            message: format!("a mapping key must be a plain value, not {other:?}"),
                        })
                    }
                };
                out.insert(key, from_yaml(path, v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => from_yaml(path, t.value)?,
    })
}

/// Parses a TOML file.
pub(super) fn toml_document(path: &Path, text: &str) -> Result<Value, ImportError> {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => Ok(from_toml(toml::Value::Table(t))),
        Err(e) => {
            let (line, col) = line_col(text, e.span().map(|s| s.start).unwrap_or(0));
            Err(ImportError::Syntax {
                path: path.to_owned(),
                line,
                col,
                message: e.message().trim().replace('\n', " "),
            })
        }
    }
}

fn from_toml(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(from_toml).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, from_toml(v))).collect())
        }
    }
}

/// Builds a tree from dotted keys (`http.routers.app.rule` = value), the way
/// Traefik reads labels and command-line flags. `servers[0].url` indexes a
/// list. A key that is both a value and a parent (`tls=true` next to
/// `tls.certresolver=le`) becomes a parent: the parent implies the value.
pub(super) fn from_dotted<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Value, String> {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        let mut parts = Vec::new();
        for part in key.split('.') {
            match part.split_once('[') {
                Some((name, rest)) => {
                    let idx: usize = rest
                        .strip_suffix(']')
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| format!("{key}: bad list index in {part:?}"))?;
                    if idx > 1000 {
                        return Err(format!("{key}: list index {idx} is too large"));
                    }
                    parts.push(Step::Key(name.to_string()));
                    parts.push(Step::Index(idx));
                }
                None if part.is_empty() => return Err(format!("{key}: empty key segment")),
                None => parts.push(Step::Key(part.to_string())),
            }
        }
        insert(&mut root, &parts, value);
    }
    Ok(root)
}

enum Step {
    Key(String),
    Index(usize),
}

fn insert(node: &mut Value, steps: &[Step], value: &str) {
    let Some((first, rest)) = steps.split_first() else {
        // A value for a key that is already a parent adds nothing.
        if !node.is_object() && !node.is_array() {
            *node = Value::String(value.to_string());
        }
        return;
    };
    match first {
        Step::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else { return };
            // Same key in another case: the first spelling wins.
            let existing = map.keys().find(|x| x.eq_ignore_ascii_case(k)).cloned();
            let slot = map
                .entry(existing.unwrap_or_else(|| k.clone()))
                .or_insert(Value::Null);
            insert(slot, rest, value);
        }
        Step::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Value::Array(items) = node else { return };
            while items.len() <= *i {
                items.push(Value::Null);
            }
            insert(&mut items[*i], rest, value);
        }
    }
}

/// A value in an input file and the key path that reached it.
#[derive(Clone)]
pub(super) struct Node<'a> {
    pub file: &'a Path,
    pub path: String,
    pub v: &'a Value,
}

impl<'a> Node<'a> {
    pub fn root(file: &'a Path, path: &str, v: &'a Value) -> Node<'a> {
        Node {
            file,
            path: path.to_string(),
            v,
        }
    }

    fn join(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else if self.path.ends_with("--") || self.path.ends_with(' ') {
            format!("{}{key}", self.path)
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about this value.
    pub fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            path: self.file.to_owned(),
            key: self.path.clone(),
            message: message.into(),
        }
    }

    /// The child under `key`, matched without regard to case.
    pub fn child(&self, key: &str) -> Option<Node<'a>> {
        let map = self.v.as_object()?;
        let (k, v) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))?;
        if v.is_null() {
            return None;
        }
        Some(Node {
            file: self.file,
            path: self.join(k),
            v,
        })
    }

    /// Whether a key is present (even with an empty value).
    pub fn has(&self, key: &str) -> bool {
        self.v
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(key)))
    }

    /// The entries of a mapping; an error for anything else.
    pub fn entries(&self) -> Result<Vec<(String, Node<'a>)>, ImportError> {
        match self.v {
            Value::Object(map) => Ok(map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Node {
                            file: self.file,
                            path: self.join(k),
                            v,
                        },
                    )
                })
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(self.err(format!("expected a mapping, found {}", kind(other)))),
        }
    }

    /// The items of a list; an error for anything else.
    pub fn items(&self) -> Result<Vec<Node<'a>>, ImportError> {
        match self.v {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    file: self.file,
                    path: format!("{}[{i}]", self.path),
                    v,
                })
                .collect()),
            Value::Null => Ok(Vec::new()),
            other => Err(self.err(format!("expected a list, found {}", kind(other)))),
        }
    }

    /// A scalar as text (numbers and booleans too: labels are all text).
    pub fn text(&self) -> Result<String, ImportError> {
        match self.v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(self.err(format!("expected a single value, found {}", kind(other)))),
        }
    }

    /// A list of words: a YAML/TOML list, or one comma-separated value (labels).
    pub fn words(&self) -> Result<Vec<String>, ImportError> {
        match self.v {
            Value::Array(_) => self.items()?.iter().map(|i| i.text()).collect(),
            _ => Ok(self
                .text()?
                .split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()),
        }
    }

    pub fn uint(&self) -> Result<u64, ImportError> {
        match self.v {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| self.err(format!("expected a whole number >= 0, found {n}"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| self.err(format!("expected a whole number >= 0, found {s:?}"))),
            other => Err(self.err(format!("expected a whole number, found {}", kind(other)))),
        }
    }

    pub fn int(&self) -> Result<i64, ImportError> {
        match self.v {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| self.err(format!("expected a whole number, found {n}"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| self.err(format!("expected a whole number, found {s:?}"))),
            other => Err(self.err(format!("expected a whole number, found {}", kind(other)))),
        }
    }

    pub fn boolean(&self) -> Result<bool, ImportError> {
        match self.v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            other => Err(self.err(format!("expected true or false, found {}", show(other)))),
        }
    }

    /// A mapping counts as "on" (Traefik's `tlsChallenge: {}`), and so does
    /// an empty value; otherwise a boolean.
    pub fn enabled(&self) -> Result<bool, ImportError> {
        match self.v {
            Value::Object(_) | Value::Null => Ok(true),
            Value::String(s) if s.is_empty() => Ok(true),
            _ => self.boolean(),
        }
    }

    pub fn text_at(&self, key: &str) -> Result<Option<String>, ImportError> {
        self.child(key).map(|c| c.text()).transpose()
    }

    pub fn uint_at(&self, key: &str) -> Result<Option<u64>, ImportError> {
        self.child(key).map(|c| c.uint()).transpose()
    }

    /// The keys of this mapping that are not in `known` (case-insensitive),
    /// each with its full path.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        let Some(map) = self.v.as_object() else {
            return Vec::new();
        };
        map.keys()
            .filter(|k| !known.iter().any(|n| n.eq_ignore_ascii_case(k)))
            .map(|k| self.join(k))
            .collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

/// Docker Compose variable interpolation: `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?msg}`, `$VAR`, and
/// `$$` for a literal `$`. Unset variables become empty, as with
/// `docker compose`; their names are returned so the caller can say so.
pub(super) fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(s.len());
    let mut unset = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let expr = &r[..end];
            let name_len = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            if name.is_empty() {
                return Err(format!("bad variable ${{{expr}}} in {s:?}"));
            }
            let val = lookup(name);
            let set_nonempty = val.as_deref().is_some_and(|v| !v.is_empty());
            let value = match op {
                "" => val.unwrap_or_else(|| {
                    unset.push(name.to_string());
                    String::new()
                }),
                _ if op.starts_with(":-") => {
                    if set_nonempty {
                        val.unwrap_or_default()
                    } else {
                        op[2..].to_string()
                    }
                }
                _ if op.starts_with('-') => val.unwrap_or_else(|| op[1..].to_string()),
                _ if op.starts_with(":+") => {
                    if set_nonempty {
                        op[2..].to_string()
                    } else {
                        String::new()
                    }
                }
                _ if op.starts_with('+') => {
                    if val.is_some() {
                        op[1..].to_string()
                    } else {
                        String::new()
                    }
                }
                _ if op.starts_with(":?") || op.starts_with('?') => match val {
                    Some(v) if !(op.starts_with(':') && v.is_empty()) => v,
                    _ => {
                        let msg = op.trim_start_matches(':').trim_start_matches('?');
                        return Err(format!("variable {name} is required: {msg}"));
                    }
                },
                _ => return Err(format!("bad variable ${{{expr}}} in {s:?}")),
            };
            out.push_str(&value);
            rest = &r[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
                rest = after;
            } else {
                let name = &after[..name_len];
                out.push_str(&lookup(name).unwrap_or_else(|| {
                    unset.push(name.to_string());
                    String::new()
                }));
                rest = &after[name_len..];
            }
        }
    }
    out.push_str(rest);
    Ok((out, unset))
}

/// Reads a `.env` file: `KEY=value` lines, `export` allowed, `#` comments,
/// one level of quotes stripped.
pub(super) fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = if (v.starts_with('"') && v.ends_with('"') && v.len() >= 2)
                || (v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2)
            {
                &v[1..v.len() - 1]
            } else {
                v.split(" #").next().unwrap_or(v).trim()
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_build_a_tree_with_lists_and_parents() {
        let v = from_dotted([
            ("http.routers.app.tls", "true"),
            ("http.routers.app.tls.certresolver", "le"),
            ("http.services.app.loadbalancer.servers[1].url", "http://b"),
            ("http.services.app.loadbalancer.servers[0].url", "http://a"),
        ])
        .unwrap();
        assert_eq!(v["http"]["routers"]["app"]["tls"]["certresolver"], "le");
        let servers = &v["http"]["services"]["app"]["loadbalancer"]["servers"];
        assert_eq!(servers[0]["url"], "http://a");
        assert_eq!(servers[1]["url"], "http://b");
        // The value after the parent does not undo it.
        let v = from_dotted([("a.b.c", "x"), ("a.b", "true")]).unwrap();
        assert_eq!(v["a"]["b"]["c"], "x");
        assert!(from_dotted([("a..b", "x")]).is_err());
        assert!(from_dotted([("a.b[x]", "x")]).is_err());
    }

    #[test]
    fn nodes_match_keys_without_case_and_name_paths() {
        let v: Value = serde_json::json!({"HTTP": {"Services": {"app": {"weight": "x"}}}});
        let f = Path::new("f.yml");
        let root = Node::root(f, "", &v);
        let w = root
            .child("http")
            .and_then(|h| h.child("services"))
            .and_then(|s| s.child("app"))
            .and_then(|a| a.child("weight"))
            .unwrap();
        assert_eq!(w.path, "HTTP.Services.app.weight");
        let e = w.uint().unwrap_err().to_string();
        assert!(e.contains("f.yml: HTTP.Services.app.weight"), "{e}");
        assert!(e.contains("\"x\""), "{e}");
    }

    #[test]
    fn interpolation_follows_compose() {
        let env = |k: &str| match k {
            "DOMAIN" => Some("example.com".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let i = |s: &str| interpolate(s, &env).unwrap();
        assert_eq!(i("Host(`app.${DOMAIN}`)").0, "Host(`app.example.com`)");
        assert_eq!(i("$DOMAIN/x").0, "example.com/x");
        assert_eq!(i("${NOPE:-d}").0, "d");
        assert_eq!(i("${EMPTY:-d}").0, "d");
        assert_eq!(i("${EMPTY-d}").0, "");
        assert_eq!(i("${DOMAIN:+yes}").0, "yes");
        assert_eq!(i("$$apr1$$x").0, "$apr1$x");
        assert_eq!(i("a${NOPE}b"), ("ab".to_string(), vec!["NOPE".to_string()]));
        assert!(interpolate("${NOPE:?must be set}", &env).is_err());
        assert!(interpolate("${DOMAIN", &env).is_err());
    }

    #[test]
    fn dotenv_lines() {
        let e = parse_dotenv("# c\nA=1\nexport B=\"two words\"\nC='x' \nD=v # note\n\nbad\n");
        assert_eq!(
            e,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), "v".into())
            ]
        );
    }

    #[test]
    fn yaml_errors_have_a_location_and_merge_keys_apply() {
        let f = Path::new("c.yml");
        let e = yaml_documents(f, "a: [1\nb: 2\n").unwrap_err().to_string();
        assert!(e.starts_with("c.yml:"), "{e}");
        let docs =
            yaml_documents(f, "x: &d {a: 1}\ny:\n  <<: *d\n  b: 2\n---\n---\nz: 1\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["y"]["a"], 1);
    }
}
