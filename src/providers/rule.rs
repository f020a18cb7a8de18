//! Traefik router rules: `Host(`a`) || Host(`b`)`, `Host(`a`, `b`)` (v2),
//! `HostRegexp(...)`, `PathPrefix(...)`, `Header(...)`, `&&`, `||`, `!` and
//! parentheses.
//!
//! Two readings:
//! - [`hosts`]: the hosts of a rule that is a disjunction of host matchers
//!   (optionally `&& PathPrefix(`/`)`, which matches everything); Docker
//!   discovery routes by host only and reports anything narrower.
//! - [`routes`]: the rule as alternatives, each a host with the path,
//!   method, header and query conditions a `[[routes]]` entry can carry
//!   (`switchyard import traefik`); the alternatives it cannot carry come
//!   with the reason.

use std::fmt;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Or(Vec<Rule>),
    And(Vec<Rule>),
    Not(Box<Rule>),
    Matcher { name: String, args: Vec<String> },
}

/// A host a rule matches: an exact name or a `*.suffix` wildcard approximated
/// from a `HostRegexp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHost {
    pub host: String,
    /// Set when the host was approximated from a regular expression.
    pub approximated_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s}"),
            Token::Str(s) => write!(f, "`{s}`"),
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::Comma => f.write_str(","),
            Token::And => f.write_str("&&"),
            Token::Or => f.write_str("||"),
            Token::Not => f.write_str("!"),
        }
    }
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::LParen),
            ')' => out.push(Token::RParen),
            ',' => out.push(Token::Comma),
            '!' => out.push(Token::Not),
            '&' | '|' => {
                if chars.next_if(|&(_, n)| n == c).is_none() {
                    return Err(format!("single {c:?} at offset {i}: use {c}{c}"));
                }
                out.push(if c == '&' { Token::And } else { Token::Or });
            }
            '`' | '"' | '\'' => {
                let mut text = String::new();
                let mut closed = false;
                for (_, n) in chars.by_ref() {
                    if n == c {
                        closed = true;
                        break;
                    }
                    text.push(n);
                }
                if !closed {
                    return Err(format!("unclosed {c} string at offset {i}"));
                }
                out.push(Token::Str(text));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut name = c.to_string();
                while let Some((_, n)) =
                    chars.next_if(|&(_, n)| n.is_ascii_alphanumeric() || n == '_')
                {
                    name.push(n);
                }
                out.push(Token::Ident(name));
            }
            other => return Err(format!("unexpected {other:?} at offset {i}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Token) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            Some(t) => Err(format!("expected {want}, found {t}")),
            None => Err(format!("expected {want}, found the end of the rule")),
        }
    }

    fn or(&mut self) -> Result<Rule, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Rule, String> {
        let mut terms = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Rule, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("the rule nests too deeply".into());
        }
        let r = match self.next() {
            Some(Token::Not) => Rule::Not(Box::new(self.unary()?)),
            Some(Token::LParen) => {
                let inner = self.or()?;
                self.expect(&Token::RParen)?;
                inner
            }
            Some(Token::Ident(name)) => {
                self.expect(&Token::LParen)?;
                let mut args = Vec::new();
                if self.peek() == Some(&Token::RParen) {
                    self.pos += 1;
                } else {
                    loop {
                        match self.next() {
                            Some(Token::Str(s)) => args.push(s),
                            Some(t) => {
                                return Err(format!("{name}: expected a quoted value, found {t}"))
                            }
                            None => return Err(format!("{name}: unclosed argument list")),
                        }
                        match self.next() {
                            Some(Token::Comma) => continue,
                            Some(Token::RParen) => break,
                            Some(t) => return Err(format!("{name}: expected , or ), found {t}")),
                            None => return Err(format!("{name}: unclosed argument list")),
                        }
                    }
                }
                Rule::Matcher { name, args }
            }
            Some(t) => return Err(format!("expected a matcher such as Host(`...`), found {t}")),
            None => return Err("the rule ends too early".into()),
        };
        self.depth -= 1;
        Ok(r)
    }
}

/// Parses a rule; the error says what is wrong and where.
pub fn parse(s: &str) -> Result<Rule, String> {
    let tokens = tokenize(s)?;
    if tokens.is_empty() {
        return Err("the rule is empty".into());
    }
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let r = p.or()?;
    if let Some(t) = p.peek() {
        return Err(format!("unexpected {t} after a complete rule"));
    }
    Ok(r)
}

/// The hosts a rule routes, or why it cannot be carried over.
pub fn hosts(rule: &Rule) -> Result<Vec<RuleHost>, String> {
    match rule {
        Rule::Matcher { name, args } if name.eq_ignore_ascii_case("Host") => {
            if args.is_empty() {
                return Err("Host() names no host".into());
            }
            Ok(args
                .iter()
                .map(|a| RuleHost {
                    host: a.trim().to_ascii_lowercase(),
                    approximated_from: None,
                })
                .collect())
        }
        Rule::Matcher { name, args } if name.eq_ignore_ascii_case("HostRegexp") => args
            .iter()
            .map(|a| {
                regexp_wildcard(a)
                    .map(|host| RuleHost {
                        host,
                        approximated_from: Some(a.clone()),
                    })
                    .ok_or_else(|| format!("HostRegexp(`{a}`) is not a simple *.domain pattern"))
            })
            .collect(),
        Rule::Or(terms) => {
            let mut out = Vec::new();
            for t in terms {
                for h in hosts(t)? {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
            Ok(out)
        }
        Rule::And(terms) => {
            let (catch_all, narrowing): (Vec<&Rule>, Vec<&Rule>) =
                terms.iter().partition(|t| matches_everything(t));
            match narrowing.as_slice() {
                [one] if !catch_all.is_empty() => hosts(one),
                _ => Err(format!(
                    "{} matches more than the host: switchyard routes by host only",
                    show(rule)
                )),
            }
        }
        Rule::Not(_) => Err(format!("{} negates a matcher", show(rule))),
        Rule::Matcher { .. } => Err(format!(
            "{} is not a host matcher: switchyard routes by host only",
            show(rule)
        )),
    }
}

// ---------------------------------------------------------------------------
// Rules as routes: host, path, methods, headers and query.

/// A header or query value a route condition asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleValue {
    /// Present, whatever its value.
    Any,
    Exact(String),
    /// A regular expression (Go's flavour, as written) found in the value.
    Regex(String),
}

/// A route's path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulePath {
    Exact(String),
    Prefix(String),
    /// Found anywhere in the path unless anchored.
    Regex(String),
}

/// One alternative of a rule as a route can carry it: a host, and
/// conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRoute {
    pub host: RuleHost,
    pub path: Option<RulePath>,
    /// Any of these methods (upper case); empty: any method.
    pub methods: Vec<String>,
    /// Header names in lower case, each once.
    pub headers: Vec<(String, RuleValue)>,
    pub query: Vec<(String, RuleValue)>,
}

/// A rule as routes: the alternatives a route can carry, and why each of
/// the others cannot be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleRoutes {
    pub routes: Vec<RuleRoute>,
    pub dropped: Vec<String>,
}

/// Most alternatives (`||` spread over `&&`) a rule may come to.
pub const MAX_ALTERNATIVES: usize = 64;
/// Most matchers all the alternatives of a rule may hold together.
const MAX_MATCHERS: usize = 4096;

/// One matcher of an alternative, maybe negated.
#[derive(Debug, Clone)]
struct Lit {
    not: bool,
    name: String,
    args: Vec<String>,
}

impl Lit {
    fn show(&self) -> String {
        let m = show(&Rule::Matcher {
            name: self.name.clone(),
            args: self.args.clone(),
        });
        if self.not {
            format!("!{m}")
        } else {
            m
        }
    }
}

/// The routes a rule comes to: the rule as alternatives (`a && (b || c)`
/// is `a && b` or `a && c`), each a host and conditions a route can carry,
/// with Traefik's meaning for v3 and v2 matchers alike (`Host(`a`, `b`)`,
/// `Headers`, `Query(`k=v`)`). An error when the rule spreads to more than
/// [`MAX_ALTERNATIVES`]; alternatives a route cannot carry (negations,
/// `ClientIP`, no host, two paths) are in `dropped` with the reason.
pub fn routes(rule: &Rule) -> Result<RuleRoutes, String> {
    let alternatives = dnf(rule)?;
    let mut out = RuleRoutes::default();
    for lits in &alternatives {
        match to_route(lits) {
            Ok(r) => add_route(&mut out.routes, r),
            Err(why) => {
                let shown = lits.iter().map(Lit::show).collect::<Vec<_>>().join(" && ");
                let line = format!("{shown}: {why}");
                if !out.dropped.contains(&line) {
                    out.dropped.push(line);
                }
            }
        }
    }
    Ok(out)
}

/// Adds a route, merging it with one that differs only by its methods.
fn add_route(routes: &mut Vec<RuleRoute>, r: RuleRoute) {
    let same_but_methods = |a: &RuleRoute| {
        a.host == r.host && a.path == r.path && a.headers == r.headers && a.query == r.query
    };
    match routes.iter_mut().find(|a| same_but_methods(a)) {
        Some(a) if a.methods.is_empty() || r.methods.is_empty() => a.methods.clear(),
        Some(a) => {
            for m in r.methods {
                if !a.methods.contains(&m) {
                    a.methods.push(m);
                }
            }
        }
        None => routes.push(r),
    }
}

/// Matchers that take several values as alternatives (v2's `Host(`a`, `b`)`)
/// or as pairs that must all hold (v2's `Headers` and `Query`).
fn expand(name: &str, args: &[String]) -> Vec<Vec<Lit>> {
    let lit = |args: Vec<String>| Lit {
        not: false,
        name: name.to_string(),
        args,
    };
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "host" | "hostheader" | "hostregexp" | "path" | "pathprefix" if args.len() > 1 => {
            args.iter().map(|a| vec![lit(vec![a.clone()])]).collect()
        }
        "headers" | "headersregexp" if args.len() > 2 && args.len().is_multiple_of(2) => {
            vec![args.chunks(2).map(|p| lit(p.to_vec())).collect()]
        }
        "query" if args.len() > 1 && args.iter().all(|a| a.contains('=')) => {
            vec![args.iter().map(|a| lit(vec![a.clone()])).collect()]
        }
        _ => vec![vec![lit(args.to_vec())]],
    }
}

/// The rule as alternatives of matchers that must all hold.
fn dnf(rule: &Rule) -> Result<Vec<Vec<Lit>>, String> {
    let too_many = || {
        format!(
            "the rule comes to more than {MAX_ALTERNATIVES} alternatives, or {MAX_MATCHERS} matchers in them; not carried over"
        )
    };
    let size = |alts: &[Vec<Lit>]| alts.iter().map(Vec::len).sum::<usize>();
    match rule {
        Rule::Matcher { name, args } => Ok(expand(name, args)),
        Rule::Not(inner) => {
            let lit = match &**inner {
                Rule::Matcher { name, args } => Lit {
                    not: true,
                    name: name.clone(),
                    args: args.clone(),
                },
                other => Lit {
                    not: true,
                    name: show(other),
                    args: Vec::new(),
                },
            };
            Ok(vec![vec![lit]])
        }
        Rule::Or(terms) => {
            let mut out = Vec::new();
            for t in terms {
                out.extend(dnf(t)?);
                if out.len() > MAX_ALTERNATIVES || size(&out) > MAX_MATCHERS {
                    return Err(too_many());
                }
            }
            Ok(out)
        }
        Rule::And(terms) => {
            let mut acc: Vec<Vec<Lit>> = vec![Vec::new()];
            for t in terms {
                let d = dnf(t)?;
                let grown = size(&acc)
                    .saturating_mul(d.len())
                    .saturating_add(size(&d).saturating_mul(acc.len()));
                if acc.len().saturating_mul(d.len()) > MAX_ALTERNATIVES || grown > MAX_MATCHERS {
                    return Err(too_many());
                }
                let mut next = Vec::with_capacity(acc.len() * d.len());
                for a in &acc {
                    for b in &d {
                        let mut both = a.clone();
                        both.extend(b.iter().cloned());
                        next.push(both);
                    }
                }
                acc = next;
            }
            Ok(acc)
        }
    }
}

/// The conditions of one alternative, gathered matcher by matcher.
#[derive(Default)]
struct Gathered {
    host: Option<RuleHost>,
    path: Option<RulePath>,
    methods: Option<Vec<String>>,
    headers: Vec<(String, RuleValue)>,
    query: Vec<(String, RuleValue)>,
}

/// One alternative as a route, or why a route cannot carry it.
fn to_route(lits: &[Lit]) -> Result<RuleRoute, String> {
    let mut g = Gathered::default();
    for l in lits {
        g.add(l)?;
    }
    let host = g
        .host
        .ok_or("it names no host, and a switchyard route needs one")?;
    Ok(RuleRoute {
        host,
        path: g.path,
        methods: g.methods.unwrap_or_default(),
        headers: g.headers,
        query: g.query,
    })
}

impl Gathered {
    /// Adds one matcher, or says why the alternative cannot be a route.
    fn add(&mut self, l: &Lit) -> Result<(), String> {
        if l.not {
            return Err(format!(
                "{} negates a matcher, which a switchyard route cannot",
                l.show()
            ));
        }
        let one = |what: &str| -> Result<&str, String> {
            match l.args.as_slice() {
                [a] => Ok(a.as_str()),
                _ => Err(format!("{} takes one {what}", l.show())),
            }
        };
        match l.name.to_ascii_lowercase().as_str() {
            "host" | "hostheader" => {
                let h = one("host")?.trim().to_ascii_lowercase();
                set_host(
                    &mut self.host,
                    RuleHost {
                        host: h,
                        approximated_from: None,
                    },
                )
            }
            "hostregexp" => {
                let re = one("regular expression")?;
                let h = regexp_wildcard(re).ok_or_else(|| {
                    format!("HostRegexp(`{re}`) is not a simple *.domain pattern")
                })?;
                set_host(
                    &mut self.host,
                    RuleHost {
                        host: h,
                        approximated_from: Some(re.to_string()),
                    },
                )
            }
            "path" => set_path(&mut self.path, RulePath::Exact(plain_path(one("path")?)?)),
            "pathprefix" => match plain_path(one("path")?)? {
                // `PathPrefix(`/`)` matches every request: no condition.
                p if p == "/" => Ok(()),
                p => set_path(&mut self.path, RulePath::Prefix(p)),
            },
            "pathregexp" => set_path(
                &mut self.path,
                RulePath::Regex(one("regular expression")?.into()),
            ),
            "method" => self.methods(l),
            "header" | "headers" | "headerregexp" | "headersregexp" => {
                let regex = l.name.to_ascii_lowercase().contains("regexp");
                let [name, value] = l.args.as_slice() else {
                    return Err(format!("{} takes a header name and a value", l.show()));
                };
                let want = match (value.as_str(), regex) {
                    ("", _) => RuleValue::Any,
                    (v, false) => RuleValue::Exact(v.to_string()),
                    (v, true) => RuleValue::Regex(v.to_string()),
                };
                let name = name.trim().to_ascii_lowercase();
                set_value(&mut self.headers, name, want, "header")
            }
            "query" => {
                for (k, want) in query_args(l)? {
                    set_value(&mut self.query, k, want, "query parameter")?;
                }
                Ok(())
            }
            "queryregexp" => {
                let (k, want) = match l.args.as_slice() {
                    [k] => (k.clone(), RuleValue::Exact(String::new())),
                    [k, re] => (k.clone(), RuleValue::Regex(re.clone())),
                    _ => return Err(format!("{} takes a name and a regular expression", l.show())),
                };
                set_value(&mut self.query, k, want, "query parameter")
            }
            "clientip" => Err(format!(
                "{} matches the client's address, which a switchyard route does not (an ip_allow middleware answers 403 instead of trying the next router)",
                l.show()
            )),
            _ => Err(format!("{} is not a matcher switchyard knows", l.show())),
        }
    }

    /// `Method(...)`: any of its methods; two of them, the ones in both.
    fn methods(&mut self, l: &Lit) -> Result<(), String> {
        if l.args.is_empty() {
            return Err(format!("{} names no method", l.show()));
        }
        let these: Vec<String> = l
            .args
            .iter()
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        let kept: Vec<String> = match self.methods.take() {
            None => these,
            Some(before) => before.into_iter().filter(|m| these.contains(m)).collect(),
        };
        if kept.is_empty() {
            return Err("no method meets every Method() of it: it never matches".into());
        }
        self.methods = Some(kept);
        Ok(())
    }
}

fn set_host(slot: &mut Option<RuleHost>, h: RuleHost) -> Result<(), String> {
    match slot {
        Some(old) if old.host != h.host => Err(format!(
            "it asks for two hosts at once ({} and {}), which never match",
            old.host, h.host
        )),
        Some(_) => Ok(()),
        None => {
            *slot = Some(h);
            Ok(())
        }
    }
}

fn set_path(slot: &mut Option<RulePath>, p: RulePath) -> Result<(), String> {
    match slot {
        Some(old) if *old != p => {
            Err("it has two path conditions at once; a switchyard route takes one".into())
        }
        Some(_) => Ok(()),
        None => {
            *slot = Some(p);
            Ok(())
        }
    }
}

fn set_value(
    list: &mut Vec<(String, RuleValue)>,
    name: String,
    want: RuleValue,
    what: &str,
) -> Result<(), String> {
    match list.iter().find(|(n, _)| *n == name) {
        Some((_, old)) if *old != want => Err(format!(
            "it has two conditions on {what} {name}; a switchyard route takes one"
        )),
        Some(_) => Ok(()),
        None => {
            list.push((name, want));
            Ok(())
        }
    }
}

/// A path for `Path`/`PathPrefix`: Traefik v2's templates (`/user/{id}`)
/// are not carried over.
fn plain_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("the path {p:?} does not start with '/'"));
    }
    if p.contains('{') {
        return Err(format!(
            "the path {p:?} is a Traefik v2 template, which switchyard does not read (write the rule with PathRegexp)"
        ));
    }
    Ok(p.to_string())
}

/// `Query(`k`, `v`)` (v3: the value exactly; `Query(`k`)`: the parameter
/// with an empty value) or `Query(`k=v`)` (v2: `k=` or `k` alone means
/// present with any value).
fn query_args(l: &Lit) -> Result<Vec<(String, RuleValue)>, String> {
    match l.args.as_slice() {
        [k, v] if !k.contains('=') => Ok(vec![(k.clone(), RuleValue::Exact(v.clone()))]),
        [k] if !k.contains('=') => Ok(vec![(k.clone(), RuleValue::Exact(String::new()))]),
        args if !args.is_empty() && args.iter().all(|a| a.contains('=')) => args
            .iter()
            .map(|a| {
                let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
                if v.contains('{') {
                    return Err(format!(
                        "{} uses a Traefik v2 template, which switchyard does not read",
                        l.show()
                    ));
                }
                let want = if v.is_empty() {
                    RuleValue::Any
                } else {
                    RuleValue::Exact(v.to_string())
                };
                Ok((k.to_string(), want))
            })
            .collect(),
        _ => Err(format!("{} takes a name and a value", l.show())),
    }
}

/// `PathPrefix(`/`)` and `Path(`/*`)`-like matchers that match every request.
fn matches_everything(r: &Rule) -> bool {
    matches!(r, Rule::Matcher { name, args }
        if name.eq_ignore_ascii_case("PathPrefix") && args.iter().all(|a| a == "/"))
}

/// `{sub:[a-z]+}.example.com` (v2) or `^[a-z0-9-]+\.example\.com$` (v3) ->
/// `*.example.com`; `None` for anything else.
fn regexp_wildcard(re: &str) -> Option<String> {
    let literal = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    // v2: a {name:regexp} variable for the first label, then a literal suffix.
    if let Some(rest) = re.strip_prefix('{') {
        let close = rest.find("}.")?;
        let suffix = &rest[close + 2..];
        return literal(suffix).then(|| format!("*.{}", suffix.to_ascii_lowercase()));
    }
    // v3: an anchored regexp whose first label is a class, then an escaped suffix.
    let body = re.strip_prefix('^')?.strip_suffix('$')?;
    let dot = body.find("\\.")?;
    let (first, suffix) = (&body[..dot], &body[dot + 2..]);
    let first_ok = matches!(
        first,
        ".+" | "[^.]+"
            | "[a-z0-9-]+"
            | "[a-z0-9]+"
            | "[a-z]+"
            | "[a-zA-Z0-9-]+"
            | "\\w+"
            | "[\\w-]+"
    );
    let suffix = suffix.replace("\\.", ".");
    (first_ok && literal(&suffix)).then(|| format!("*.{}", suffix.to_ascii_lowercase()))
}

fn show(r: &Rule) -> String {
    match r {
        Rule::Matcher { name, args } => format!(
            "{name}({})",
            args.iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Rule::Not(inner) => format!("!{}", show(inner)),
        Rule::And(ts) => format!("({})", ts.iter().map(show).collect::<Vec<_>>().join(" && ")),
        Rule::Or(ts) => format!("({})", ts.iter().map(show).collect::<Vec<_>>().join(" || ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(rule: &str) -> Result<Vec<String>, String> {
        hosts(&parse(rule)?).map(|v| v.into_iter().map(|h| h.host).collect())
    }

    #[test]
    fn host_rules() {
        assert_eq!(h("Host(`a.example.com`)").unwrap(), ["a.example.com"]);
        assert_eq!(
            h("Host(`A.example.com`) || Host(`b.example.com`)").unwrap(),
            ["a.example.com", "b.example.com"]
        );
        assert_eq!(h("Host(`a`, `b`)").unwrap(), ["a", "b"]);
        assert_eq!(h("(Host(\"a\") || (Host('b')))").unwrap(), ["a", "b"]);
        assert_eq!(h("Host(`a`) || Host(`a`)").unwrap(), ["a"]);
        assert_eq!(h("Host(`a`) && PathPrefix(`/`)").unwrap(), ["a"]);
        assert_eq!(
            h("HostRegexp(`{sub:[a-z]+}.example.com`)").unwrap(),
            ["*.example.com"]
        );
        assert_eq!(
            h("HostRegexp(`^[a-z0-9-]+\\.example\\.com$`)").unwrap(),
            ["*.example.com"]
        );
    }

    #[test]
    fn narrower_rules_are_refused_with_a_reason() {
        let e = h("Host(`a`) && PathPrefix(`/api`)").unwrap_err();
        assert!(
            e.contains("PathPrefix(`/api`)") && e.contains("host only"),
            "{e}"
        );
        assert!(h("PathPrefix(`/`)")
            .unwrap_err()
            .contains("not a host matcher"));
        assert!(h("!Host(`a`)").unwrap_err().contains("negates"));
        assert!(h("HostRegexp(`.*`)").unwrap_err().contains("HostRegexp"));
    }

    fn r(rule: &str) -> RuleRoutes {
        routes(&parse(rule).unwrap()).unwrap()
    }

    #[test]
    fn rules_become_routes_with_conditions() {
        let got = r("Host(`A.test`) && PathPrefix(`/api`) && Method(`GET`, `post`) && Header(`X-Beta`, `1`) && Query(`v`, `2`)");
        assert_eq!(got.dropped, Vec::<String>::new());
        assert_eq!(
            got.routes,
            [RuleRoute {
                host: RuleHost {
                    host: "a.test".into(),
                    approximated_from: None
                },
                path: Some(RulePath::Prefix("/api".into())),
                methods: vec!["GET".into(), "POST".into()],
                headers: vec![("x-beta".into(), RuleValue::Exact("1".into()))],
                query: vec![("v".into(), RuleValue::Exact("2".into()))],
            }]
        );
        // || of hosts spreads over the &&; PathPrefix(`/`) is no condition.
        let got = r("(Host(`a`) || Host(`b`)) && Path(`/x`) || Host(`c`) && PathPrefix(`/`)");
        let hosts: Vec<(&str, Option<&RulePath>)> = got
            .routes
            .iter()
            .map(|x| (x.host.host.as_str(), x.path.as_ref()))
            .collect();
        let x = RulePath::Exact("/x".into());
        assert_eq!(hosts, [("a", Some(&x)), ("b", Some(&x)), ("c", None)]);
        // v2 forms: Host with several names, Headers, HeadersRegexp, Query k=v.
        let got = r("Host(`a`, `b`) && Headers(`X-A`, `1`) && HeadersRegexp(`X-B`, `^v`) && Query(`k=v`, `p=`)");
        assert_eq!(got.routes.len(), 2);
        assert_eq!(
            got.routes[0].headers,
            [
                ("x-a".into(), RuleValue::Exact("1".into())),
                ("x-b".into(), RuleValue::Regex("^v".into()))
            ]
        );
        assert_eq!(
            got.routes[0].query,
            [
                ("k".into(), RuleValue::Exact("v".into())),
                ("p".into(), RuleValue::Any)
            ]
        );
        // Alternatives that differ by method only are one route.
        let got = r("Host(`a`) && (Method(`GET`) || Method(`HEAD`))");
        assert_eq!(got.routes.len(), 1);
        assert_eq!(got.routes[0].methods, ["GET", "HEAD"]);
        let got = r("Host(`a`) && PathRegexp(`\\.png$`) && HeaderRegexp(`X`, ``)");
        assert_eq!(got.routes[0].path, Some(RulePath::Regex("\\.png$".into())));
        assert_eq!(got.routes[0].headers[0].1, RuleValue::Any);
    }

    #[test]
    fn alternatives_a_route_cannot_carry_are_dropped_with_a_reason() {
        for (rule, why) in [
            ("Host(`a`) && !Path(`/x`)", "negates"),
            ("Host(`a`) && ClientIP(`10.0.0.0/8`)", "client's address"),
            ("PathPrefix(`/api`)", "names no host"),
            ("Host(`a`) && Host(`b`)", "two hosts"),
            (
                "Host(`a`) && Path(`/x`) && PathPrefix(`/y`)",
                "two path conditions",
            ),
            (
                "Host(`a`) && Method(`GET`) && Method(`POST`)",
                "never matches",
            ),
            (
                "Host(`a`) && Header(`X`, `1`) && Header(`x`, `2`)",
                "two conditions on header x",
            ),
            ("Host(`a`) && Path(`/u/{id}`)", "v2 template"),
            ("Host(`a`) && Path(`x`)", "does not start with '/'"),
            ("Host(`a`) && Nope(`x`)", "not a matcher"),
            ("Host(`a`) && Header(`X`)", "a header name and a value"),
            ("HostRegexp(`.*`)", "not a simple"),
        ] {
            let got = r(rule);
            assert!(got.routes.is_empty(), "{rule}: {got:?}");
            assert!(
                got.dropped.len() == 1 && got.dropped[0].contains(why),
                "{rule}: {:?}",
                got.dropped
            );
        }
        // One alternative kept, the other dropped.
        let got = r("Host(`a`) || Host(`b`) && ClientIP(`1.2.3.4`)");
        assert_eq!(got.routes.len(), 1);
        assert_eq!(got.dropped.len(), 1);
        // A rule that spreads too far is refused whole.
        let wide = (0..8)
            .map(|i| format!("(Host(`a{i}`) || Host(`b{i}`))"))
            .collect::<Vec<_>>()
            .join(" && ");
        assert!(routes(&parse(&wide).unwrap())
            .unwrap_err()
            .contains("alternatives"));
        // So is one that is too long to spread.
        let long = format!(
            "({}) && (Path(`/a`) || Path(`/b`))",
            vec!["Host(`a`)"; 3000].join(" && ")
        );
        assert!(routes(&parse(&long).unwrap())
            .unwrap_err()
            .contains("matchers"));
    }

    #[test]
    fn syntax_errors() {
        for (rule, want) in [
            ("Host(`a`", "unclosed"),
            ("Host(`a) ", "unclosed"),
            ("Host(`a`) | Host(`b`)", "single '|'"),
            ("Host(`a`) Host(`b`)", "after a complete rule"),
            ("", "empty"),
            ("Host(a)", "quoted value"),
            ("&& Host(`a`)", "expected a matcher"),
            ("Host(`a`) ||", "ends too early"),
        ] {
            let e = parse(rule).unwrap_err();
            assert!(e.contains(want), "{rule:?}: {e}");
        }
        let deep = format!("{}Host(`a`){}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().contains("deeply"));
    }
}
