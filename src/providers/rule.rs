//! Traefik router rules: `Host(`a`) || Host(`b`)`, `Host(`a`, `b`)` (v2),
//! `HostRegexp(...)`, `PathPrefix(...)`, `&&`, `||`, `!` and parentheses.
//!
//! switchyard routes by host alone, so a rule carries over when it is a
//! disjunction of host matchers (optionally `&& PathPrefix(`/`)`, which
//! matches everything). Anything narrower is reported as not carried over.

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
