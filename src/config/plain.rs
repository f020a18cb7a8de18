//! A reader for the plain shape most sections of a config file have, and
//! a serde deserializer over what it reads: the fast path of the pools'
//! and the routes' sections, and of the scans that find where sections
//! start (see [`super::incremental`]).
//!
//! toml's parser reads about 35 MB/s here (`DeTable::parse`: a lexer, an
//! event list, tables with hashed keys and spans, then serde): 10 000 pools
//! of two versions took ~37 ms, half of a reload that changes every one of
//! them. The sections a config is made of are mostly the same few lines:
//!
//! ```toml
//! [pools.shop.versions.blue]
//! weight = 90
//! backends = ["10.0.0.5:8080", "10.0.0.6:8080"]   # a comment
//! health = { path = "/health", interval = "2s" }
//! ```
//!
//! This reads exactly that subset of TOML, into a small tree borrowed from
//! the text, and gives the tree to the same `#[derive(Deserialize)]` types
//! the full parse fills (spans included, through `serde_spanned`'s own
//! deserializer). Anything outside the subset is not an error here but a
//! `None`: the caller then reads the text with toml, which stays the
//! authority (and the only one to report errors). The subset:
//!
//! - `[a.b.c]` and `[[a.b]]` (arrays of tables) headers of bare keys, no
//!   space inside the brackets;
//! - `key = value` with a bare key (no dotted or quoted keys);
//! - values: basic strings without escapes, literal strings (one line
//!   each), decimal integers that fit an `i64` (no `_`, no leading zero),
//!   `true` and `false`, arrays of these (over several lines too, with
//!   comments), inline tables on one line without a trailing comma;
//! - comments, blank lines, spaces and tabs, `\n` or `\r\n` line ends;
//! - at most [`MAX_KEYS`] keys in a header, [`MAX_DEPTH`] levels of arrays
//!   and inline tables, [`MAX_ENTRIES`] keys in a table.
//!
//! No float, date, escape, multi-line string: those fall back. Within the
//! subset every rule of TOML that can fail is checked (a key or table
//! defined twice, a header through a value or an inline table, control
//! characters in strings and comments, a value not followed by a line
//! end), so that whatever is read here is what toml reads. The
//! `config_plain` fuzz target holds the reader to `toml::from_str`, and
//! `config_reparse` and the differential tests hold the reloads that use
//! it to the full parse.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_spanned::de::{is_spanned, SpannedDeserializer};

/// A value of the subset, with its bytes in the text.
#[derive(Debug)]
pub(super) struct Item<'t> {
    val: Val<'t>,
    span: Range<usize>,
}

#[derive(Debug)]
enum Val<'t> {
    Str(&'t str),
    Int(i64),
    Bool(bool),
    Array(Vec<Item<'t>>),
    /// An array of tables (`[[a]]` headers): headers after one go into
    /// its last table.
    Tables(Vec<Item<'t>>),
    Table(Table<'t>),
}

#[derive(Debug)]
pub(super) struct Table<'t> {
    entries: Vec<(Key<'t>, Item<'t>)>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Made by a header on the way to another (`a` of `[a.b]`): a header
    /// of its own may still define it, once.
    Implicit,
    /// Defined by its header.
    Header,
    /// An inline table: closed.
    Inline,
}

#[derive(Debug, Clone)]
struct Key<'t> {
    name: &'t str,
    span: Range<usize>,
}

impl<'t> Table<'t> {
    fn new(kind: Kind) -> Table<'t> {
        Table {
            entries: Vec::new(),
            kind,
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k.name == name)
    }

    /// A new key: `None` when it is there already (or the table is full,
    /// see [`MAX_ENTRIES`]).
    fn insert(&mut self, key: Key<'t>, item: Item<'t>) -> Option<usize> {
        if self.find(key.name).is_some() || self.entries.len() == MAX_ENTRIES {
            return None;
        }
        self.entries.push((key, item));
        Some(self.entries.len() - 1)
    }

    /// The one entry `name` of a table of one entry.
    pub(super) fn only(self, name: &str) -> Option<Item<'t>> {
        let mut entries = self.entries.into_iter();
        let (k, item) = entries.next()?;
        (entries.next().is_none() && k.name == name).then_some(item)
    }
}

impl<'t> Item<'t> {
    /// The table this item is.
    pub(super) fn into_table(self) -> Option<Table<'t>> {
        match self.val {
            Val::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Deserializes `T` from this value, as toml's deserializer would.
    pub(super) fn deserialize<T: Deserialize<'t>>(self) -> Option<T> {
        T::deserialize(ItemDe(self)).ok()
    }
}

/// `text` as the plain reader reads it, given to toml's own `Table` type
/// (what the `config_plain` fuzz target holds to `toml::from_str`); `None`
/// when the text is not in the subset.
pub fn read_as_toml(text: &str) -> Option<toml::Table> {
    read(text)
}

/// `T` from all of `text`, when the text is in the subset and fits `T`.
pub(super) fn read<'t, T: Deserialize<'t>>(text: &'t str) -> Option<T> {
    Item {
        val: Val::Table(parse(text)?),
        span: 0..text.len(),
    }
    .deserialize()
}

/// Reads `text` when all of it is in the subset (see the module doc): its
/// root table.
pub(super) fn parse(text: &str) -> Option<Table<'_>> {
    let mut p = Parser::new(text, true);
    let mut root = Table::new(Kind::Header);
    // The path of the table the keys go to, from the root.
    let mut path: Vec<usize> = Vec::new();
    let mut keys = Vec::new();
    loop {
        match p.line(&mut keys)? {
            Line::End => return Some(root),
            Line::Header { span, array } => path = define(&mut root, &keys, span, array)?,
            Line::KeyValue(key, item) => {
                table_at(&mut root, &path)?.insert(key, item)?;
            }
        }
    }
}

/// What a line of the text is (blank and comment lines are skipped).
enum Line<'t> {
    End,
    /// A header, its keys in the buffer [`Parser::line`] was given.
    Header {
        span: Range<usize>,
        array: bool,
    },
    KeyValue(Key<'t>, Item<'t>),
}

/// A header of a text in the subset: where its `[` is, its first two
/// keys and how many it has, and whether it is an array's (`[[`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header<'t> {
    pub(super) start: usize,
    pub(super) first: &'t str,
    pub(super) second: Option<&'t str>,
    pub(super) keys: usize,
    pub(super) array: bool,
}

/// The headers of `text`, when all of it is in the subset's grammar (only
/// the grammar: a key or table defined twice is not looked for); each
/// key/value line's key is given to `on_key` with the header it is under
/// (`None`: the root). What `incremental`'s scan makes of a text with
/// toml's parser, at a fraction of its cost.
pub(super) fn outline<'t>(
    text: &'t str,
    mut on_key: impl FnMut(Option<&Header<'t>>, &'t str),
) -> Option<Vec<Header<'t>>> {
    let mut p = Parser::new(text, false);
    let mut headers: Vec<Header<'t>> = Vec::new();
    let mut keys = Vec::new();
    loop {
        match p.line(&mut keys)? {
            Line::End => return Some(headers),
            Line::Header { span, array } => headers.push(Header {
                start: span.start,
                first: keys.first()?.name,
                second: keys.get(1).map(|k| k.name),
                keys: keys.len(),
                array,
            }),
            Line::KeyValue(key, _) => on_key(headers.last(), key.name),
        }
    }
}

/// Defines the table of header `keys` (`[a.b.c]`; with `array`, a new
/// table at the end of array `[[a.b.c]]`), making the tables on the way;
/// the path to it. `None` when TOML forbids it: a table defined twice, a
/// way through a value or an inline table, a table where an array of
/// tables is or the other way round.
fn define<'t>(
    root: &mut Table<'t>,
    keys: &[Key<'t>],
    span: Range<usize>,
    array: bool,
) -> Option<Vec<usize>> {
    let (last, way) = keys.split_last()?;
    let mut path = Vec::with_capacity(keys.len());
    let mut table = root;
    for key in way {
        let i = match table.find(key.name) {
            Some(i) => i,
            None => {
                let item = Item {
                    val: Val::Table(Table::new(Kind::Implicit)),
                    span: span.clone(),
                };
                table.insert(key.clone(), item)?
            }
        };
        path.push(i);
        table = match &mut table.entries[i].1.val {
            Val::Table(t) if t.kind != Kind::Inline => t,
            // Through an array of tables: into its last table.
            Val::Tables(ts) => match ts.last_mut()?.val {
                Val::Table(ref mut t) => t,
                _ => return None,
            },
            _ => return None,
        };
    }
    if array {
        let fresh = Item {
            val: Val::Table(Table::new(Kind::Header)),
            span: span.clone(),
        };
        let i = match table.find(last.name) {
            Some(i) => {
                match &mut table.entries[i].1.val {
                    Val::Tables(ts) => ts.push(fresh),
                    _ => return None,
                }
                i
            }
            None => {
                let item = Item {
                    val: Val::Tables(vec![fresh]),
                    span,
                };
                table.insert(last.clone(), item)?
            }
        };
        path.push(i);
        return Some(path);
    }
    let i = match table.find(last.name) {
        Some(i) => {
            match &mut table.entries[i].1.val {
                Val::Table(t) if t.kind == Kind::Implicit => t.kind = Kind::Header,
                _ => return None,
            }
            i
        }
        None => {
            let item = Item {
                val: Val::Table(Table::new(Kind::Header)),
                span,
            };
            table.insert(last.clone(), item)?
        }
    };
    path.push(i);
    Some(path)
}

/// The table at `path` (indices from the root; an array of tables on
/// the way stands for its last table).
fn table_at<'a, 't>(root: &'a mut Table<'t>, path: &[usize]) -> Option<&'a mut Table<'t>> {
    let mut table = root;
    for &i in path {
        let mut val = &mut table.entries.get_mut(i)?.1.val;
        if let Val::Tables(ts) = val {
            val = &mut ts.last_mut()?.val;
        }
        table = match val {
            Val::Table(t) => t,
            _ => return None,
        };
    }
    Some(table)
}

struct Parser<'t> {
    s: &'t [u8],
    text: &'t str,
    at: usize,
    /// Keep what arrays and inline tables hold (else only their grammar
    /// is checked: [`outline`]).
    build: bool,
    /// Arrays and inline tables open around the value being read.
    depth: u32,
}

/// The most keys a header may have here, and the deepest arrays and inline
/// tables may nest: toml refuses texts past its recursion limit (80, which
/// long headers reach too), so the subset stays far below it.
const MAX_KEYS: usize = 16;
const MAX_DEPTH: u32 = 16;
/// The most keys a table may have here: keys are looked up one by one
/// (a pool's or a route's tables have a handful), so a bigger table is
/// left to toml's hashed maps rather than cost quadratic time.
const MAX_ENTRIES: usize = 256;

impl<'t> Parser<'t> {
    fn new(text: &'t str, build: bool) -> Parser<'t> {
        Parser {
            s: text.as_bytes(),
            text,
            at: 0,
            build,
            depth: 0,
        }
    }

    /// The next header or key/value line, whole; `None` when it is not in
    /// the subset.
    fn line(&mut self, keys: &mut Vec<Key<'t>>) -> Option<Line<'t>> {
        loop {
            self.spaces();
            match self.peek() {
                None => return Some(Line::End),
                Some(b'\n' | b'\r' | b'#') => self.line_end()?,
                Some(b'[') => {
                    let start = self.at;
                    self.at += 1;
                    let array = self.eat(b'[').is_some();
                    self.header_keys(keys)?;
                    if array {
                        self.eat(b']')?;
                    }
                    let span = start..self.at;
                    self.line_end()?;
                    return Some(Line::Header { span, array });
                }
                Some(_) => {
                    let key = self.key()?;
                    self.spaces();
                    self.eat(b'=')?;
                    self.spaces();
                    let item = self.value()?;
                    self.line_end()?;
                    return Some(Line::KeyValue(key, item));
                }
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// A comment, if any, then the end of the line (or of the text).
    fn line_end(&mut self) -> Option<()> {
        self.spaces();
        if self.peek() == Some(b'#') {
            self.comment()?;
        }
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.at += 1;
                Some(())
            }
            Some(b'\r') => {
                self.at += 1;
                self.eat(b'\n')
            }
            Some(_) => None,
        }
    }

    /// From `#` to the line end, which is left: TOML allows no control
    /// character in it but the tab.
    fn comment(&mut self) -> Option<()> {
        self.at += 1;
        while let Some(b) = self.peek() {
            if b == b'\n' || b == b'\r' {
                break;
            }
            if is_control(b) {
                return None;
            }
            self.at += 1;
        }
        Some(())
    }

    /// Spaces, line ends and comments, as between an array's values.
    fn blank(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n') => self.at += 1,
                Some(b'\r') => {
                    self.at += 1;
                    self.eat(b'\n')?;
                }
                Some(b'#') => self.comment()?,
                _ => return Some(()),
            }
        }
    }

    fn key(&mut self) -> Option<Key<'t>> {
        let start = self.at;
        while self.peek().is_some_and(is_bare) {
            self.at += 1;
        }
        if self.at == start {
            return None;
        }
        let key = Key {
            name: self.text.get(start..self.at)?,
            span: start..self.at,
        };
        // A dotted key is not in the subset.
        (self.peek() != Some(b'.')).then_some(key)
    }

    /// `a.b.c]` after a header's `[` (or `[[`): bare keys, no spaces,
    /// into `keys` (cleared first: one buffer for every header of a text).
    fn header_keys(&mut self, keys: &mut Vec<Key<'t>>) -> Option<()> {
        keys.clear();
        loop {
            let start = self.at;
            while self.peek().is_some_and(is_bare) {
                self.at += 1;
            }
            if self.at == start || keys.len() == MAX_KEYS {
                return None;
            }
            keys.push(Key {
                name: self.text.get(start..self.at)?,
                span: start..self.at,
            });
            match self.peek()? {
                b'.' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self) -> Option<Item<'t>> {
        let start = self.at;
        let val = match self.peek()? {
            b'"' => Val::Str(self.string(b'"')?),
            b'\'' => Val::Str(self.string(b'\'')?),
            b'[' | b'{' if self.depth == MAX_DEPTH => return None,
            b'[' => {
                self.depth += 1;
                let items = self.array()?;
                self.depth -= 1;
                Val::Array(items)
            }
            b'{' => {
                self.depth += 1;
                let table = self.inline_table()?;
                self.depth -= 1;
                Val::Table(table)
            }
            b't' => {
                self.word(b"true")?;
                Val::Bool(true)
            }
            b'f' => {
                self.word(b"false")?;
                Val::Bool(false)
            }
            b'-' | b'+' | b'0'..=b'9' => Val::Int(self.integer()?),
            _ => return None,
        };
        Some(Item {
            val,
            span: start..self.at,
        })
    }

    /// A one-line string between `q`s: no escape in a basic one, no
    /// control character but the tab in either, not a multi-line one.
    fn string(&mut self, q: u8) -> Option<&'t str> {
        if self.s.get(self.at..self.at + 3) == Some(&[q, q, q][..]) {
            return None;
        }
        self.at += 1;
        let start = self.at;
        loop {
            let b = self.peek()?;
            if b == q {
                let s = self.text.get(start..self.at)?;
                self.at += 1;
                return Some(s);
            }
            if is_control(b) || (q == b'"' && b == b'\\') {
                return None;
            }
            self.at += 1;
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        if self.s.get(self.at..self.at + w.len()) != Some(w) {
            return None;
        }
        self.at += w.len();
        self.ends_value()
    }

    /// `[+-]?(0|[1-9][0-9]*)` within an `i64`, ended where a value ends
    /// (else it is a float, a date, `0x..`, `1_000`: not in the subset).
    fn integer(&mut self) -> Option<i64> {
        let start = self.at;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.at += 1;
        }
        let digits = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let n = self.at - digits;
        if n == 0 || (n > 1 && self.s[digits] == b'0') {
            return None;
        }
        self.ends_value()?;
        self.text.get(start..self.at)?.parse().ok()
    }

    /// What may follow a scalar: a space, a separator, a line end, a
    /// comment, the end.
    fn ends_value(&self) -> Option<()> {
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}' | b'#') => Some(()),
            Some(_) => None,
        }
    }

    fn array(&mut self) -> Option<Vec<Item<'t>>> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.blank()?;
            if self.eat(b']').is_some() {
                return Some(items);
            }
            let item = self.value()?;
            if self.build {
                items.push(item);
            }
            self.blank()?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// `{ a = 1, b = "x" }` on one line, no trailing comma.
    fn inline_table(&mut self) -> Option<Table<'t>> {
        self.at += 1;
        let mut table = Table::new(Kind::Inline);
        self.spaces();
        if self.eat(b'}').is_some() {
            return Some(table);
        }
        loop {
            self.spaces();
            let key = self.key()?;
            self.spaces();
            self.eat(b'=')?;
            self.spaces();
            let item = self.value()?;
            if self.build {
                table.insert(key, item)?;
            }
            self.spaces();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(table);
                }
                _ => return None,
            }
        }
    }
}

/// A bare key's bytes: `A-Za-z0-9_-`.
fn is_bare(b: u8) -> bool {
    BARE[usize::from(b)]
}

static BARE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    t
};

/// What TOML allows in no comment or one-line string: the control
/// characters but the tab, and DEL.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

// ---------------------------------------------------------------------------
// serde

/// Why a value did not fit the type asked for: the caller reads the text
/// with toml instead, which says why.
#[derive(Debug)]
pub(super) struct NotRead;

impl fmt::Display for NotRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not read by the plain reader")
    }
}

impl std::error::Error for NotRead {}

impl de::Error for NotRead {
    fn custom<T: fmt::Display>(_: T) -> NotRead {
        NotRead
    }
}

struct ItemDe<'t>(Item<'t>);

impl<'t> IntoDeserializer<'t, NotRead> for ItemDe<'t> {
    type Deserializer = ItemDe<'t>;

    fn into_deserializer(self) -> ItemDe<'t> {
        self
    }
}

impl<'t> de::Deserializer<'t> for ItemDe<'t> {
    type Error = NotRead;

    fn deserialize_any<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value, NotRead> {
        match self.0.val {
            Val::Str(s) => visitor.visit_borrowed_str(s),
            Val::Int(i) => visitor.visit_i64(i),
            Val::Bool(b) => visitor.visit_bool(b),
            Val::Array(items) | Val::Tables(items) => visitor.visit_seq(Seq(items.into_iter())),
            Val::Table(t) => visitor.visit_map(Map {
                entries: t.entries.into_iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value, NotRead> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'t>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, NotRead> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'t>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NotRead> {
        if is_spanned(name) {
            let span = self.0.span.clone();
            return visitor.visit_map(SpannedDeserializer::new(self, span));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'t>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, NotRead> {
        // Not needed by the sections read here: toml reads them.
        Err(NotRead)
    }

    fn deserialize_ignored_any<V: Visitor<'t>>(self, visitor: V) -> Result<V::Value, NotRead> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'t>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Seq<'t>(std::vec::IntoIter<Item<'t>>);

impl<'t> SeqAccess<'t> for Seq<'t> {
    type Error = NotRead;

    fn next_element_seed<S: DeserializeSeed<'t>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, NotRead> {
        match self.0.next() {
            Some(item) => seed.deserialize(ItemDe(item)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'t> {
    entries: std::vec::IntoIter<(Key<'t>, Item<'t>)>,
    value: Option<Item<'t>>,
}

impl<'t> MapAccess<'t> for Map<'t> {
    type Error = NotRead;

    fn next_key_seed<S: DeserializeSeed<'t>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, NotRead> {
        match self.entries.next() {
            Some((key, item)) => {
                self.value = Some(item);
                // A key reads as a string (a `Spanned` one with its span).
                let key = Item {
                    val: Val::Str(key.name),
                    span: key.span,
                };
                seed.deserialize(ItemDe(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'t>>(&mut self, seed: S) -> Result<S::Value, NotRead> {
        seed.deserialize(ItemDe(self.value.take().ok_or(NotRead)?))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read here, and the same as toml reads it.
    #[track_caller]
    fn agrees(text: &str) {
        let plain = read_as_toml(text).unwrap_or_else(|| panic!("not read: {text:?}"));
        let full: toml::Table = toml::from_str(text).expect("toml reads it");
        assert_eq!(plain, full, "{text:?}");
    }

    /// Left to toml, whatever toml makes of it.
    #[track_caller]
    fn left(text: &str) {
        assert!(read_as_toml(text).is_none(), "read: {text:?}");
    }

    /// Refused by toml, and not read here.
    #[track_caller]
    fn refused(text: &str) {
        assert!(
            toml::from_str::<toml::Table>(text).is_err(),
            "toml reads {text:?}"
        );
        left(text);
    }

    #[test]
    fn the_plain_shape_of_sections_is_read_as_toml_reads_it() {
        agrees("[pools.p0.versions.blue]\nweight = 90\nbackends = [\"127.0.0.1:27033\"]\n\n[pools.p0.versions.green]\nweight = 10\nbackends = [\"127.0.0.1:27033\"]\n");
        agrees(concat!(
            "# a pool\n",
            "[pools.shop]   # its table\n",
            "health = { path = \"/health\", interval = \"2s\", rise = 2, fall = -3 }\n",
            "sticky = {cookie='sy_ver'}\n",
            "version_header = true\r\n",
            "retry = +0\n",
            "empty = {}\n",
            "\t\n",
            "  [pools.shop.versions.blue]\n",
            "weight = 0\n",
            "backends = [\n  \"10.0.0.5:8080\", # first\n\n  '10.0.0.6:8080',\r\n]\n",
            "[pools.shop.versions.green]\n",
            "weight=9223372036854775807\n",
            "backends = []\n",
            "names = [\"é\", \"\t\", \"\", 1, true, false, [], [[1], []], {}]#c\n",
            "[pools]\n",
            "top = -9223372036854775808",
        ));
        // A table made on the way to another, defined after it.
        agrees("[a.b.c]\nx = 1\n[a.b]\ny = 2\n[a]\nz = 3\n[a.d]\n");
        agrees("");
        agrees("[a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p]\nx = [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]\n");
        agrees("x = 1\n[a]\n");
        // Arrays of tables, and headers into their last table.
        agrees("[[routes]]\nhost = \"a.test\"\npool = \"a\"\n[routes.headers]\nx = 1\n\n[[routes]]\nhost = \"b.test\"\n[routes.headers]\nx = 2\n[routes.tls]\n");
        agrees("[[a.b]]\n[[a.b]]\nx = 1\n[[a.b.c]]\n[a]\ny = 2\n");
    }

    /// A pool with the keys pools have, read here: what validation makes of
    /// it is the full parse's pool.
    #[test]
    fn a_pool_read_here_validates_to_the_full_parses_pool() {
        let text = concat!(
            "[pools.shop]\n",
            "health = { path = \"/health\", interval = \"2s\", timeout = \"1s\", rise = 2, fall = 3, status = \"200-299\" }\n",
            "passive = { failures = 5, ejection = \"30s\" }\n",
            "sticky = { cookie = \"sy_ver\" }\n",
            "version_header = true\n",
            "retry = 1\n",
            "on_all_down = \"503\"\n",
            "max_connections_per_backend = 64\n",
            "queue_timeout = \"2s\"\n",
            "[pools.shop.versions.blue]\n",
            "weight = 90\n",
            "backends = [\"10.0.0.5:8080\", \"10.0.0.6:8080\"]\n",
            "[pools.shop.versions.green]\n",
            "weight = 10\n",
            "backends = [\"10.0.0.7:8080\"]\n",
        );
        let pool: toml::Spanned<super::super::file::PoolFile> = parse(text)
            .and_then(|root| root.only("pools"))
            .and_then(Item::into_table)
            .and_then(|pools| pools.only("shop"))
            .and_then(Item::deserialize)
            .expect("read here");
        let mut c = super::super::validate::Checker::new(text);
        let plain = super::super::validate::validate_pool(&mut c, &pool);
        assert!(c.is_clean());
        let full = super::super::Config::from_toml_str(text).expect("valid");
        assert_eq!(&plain, full.pools["shop"].as_ref());
        // A key no pool has: refused here too (toml then says why).
        let odd = text.replace("retry = 1", "retries = 1");
        let refused: Option<toml::Spanned<super::super::file::PoolFile>> = parse(&odd)
            .and_then(|root| root.only("pools"))
            .and_then(Item::into_table)
            .and_then(|pools| pools.only("shop"))
            .and_then(Item::deserialize);
        assert!(refused.is_none());
    }

    #[test]
    fn what_the_subset_leaves_out_is_left_to_toml() {
        for text in [
            "x = 1.5\n",
            "x = 1e5\n",
            "x = inf\n",
            "x = 1_000\n",
            "x = 0x10\n",
            "x = 1979-05-27\n",
            "x = 07:32:00\n",
            "x = \"a\\nb\"\n",
            "x = \"\"\"a\"\"\"\n",
            "x = '''a'''\n",
            "a.b = 1\n",
            "\"a\" = 1\n",
            "[\"a\"]\n",
            "[ a ]\n",
            "[a . b]\n",
            "x = { a = 1, }\n",
            "x = { a.b = 1 }\n",
            "x = {\n a = 1 }\n",
            // Past the subset's limits (far below toml's recursion limit;
            // a table of more keys than are looked up one by one).
            "[a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q]\n",
            "x = [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]\n",
            "\u{feff}x = 1\n",
        ] {
            left(text);
        }
        let keys = |n: usize| -> String { (0..n).map(|i| format!("k{i} = 1\n")).collect() };
        agrees(&keys(MAX_ENTRIES));
        left(&keys(MAX_ENTRIES + 1));
    }

    #[test]
    fn what_toml_refuses_is_not_read() {
        for text in [
            "x = 1\nx = 2\n",
            "[a]\n[a]\n",
            "[a.b]\n[a]\n[a]\n",
            "[a]\nb = 1\n[a.b]\n",
            "[a]\nb = 1\n[a.b.c]\n",
            "[a]\nb = { c = 1 }\n[a.b]\n",
            "[a]\nb = { c = 1 }\n[a.b.d]\n",
            "[a.b]\n[a]\nb = 1\n",
            "x = { a = 1, a = 2 }\n",
            "x = 1 # \u{1}\n",
            "x = 1\ry = 2\n",
            "x = 1 y\n",
            "x = \"a\" \"b\"\n",
            "x = [\"a\" \"b\"]\n",
            "x = [,]\n",
            "x = 01\n",
            "x = -\n",
            "x = 9223372036854775808\n",
            "x = \"a\u{1}\"\n",
            "x = \"a\n",
            "x = truey\n",
            "x =\n",
            "= 1\n",
            "[]\n",
            "[a\n",
            "[a]b\n",
            "x = [1\n",
            "x = {a = 1\n",
            "[a]\n[[a]]\n",
            "[[a]]\n[a]\n",
            "a = [1]\n[[a]]\n",
            "a = [{}]\n[a.b]\n",
            "[[a]]\n[a.b]\n[a.b]\n",
            "[[a]\n",
            "[[a] ]\n",
            "[a]]\n",
        ] {
            refused(text);
        }
    }

    /// Lines drawn from the subset and around it, put together at random:
    /// whatever is read here, toml reads the same.
    #[test]
    fn generated_texts_read_here_are_what_toml_reads() {
        const LINES: &[&str] = &[
            "[a]",
            "[a.b]",
            "[a.b.c]",
            "[b]",
            "[a.c]",
            "[[a]]",
            "[[a.b]]",
            "[[c]]",
            "[c.d]",
            "[a.x]",
            "x = 1",
            "x = 2",
            "y = \"s\"",
            "y = 's'",
            "z = true",
            "b = 1",
            "c = { d = 1 }",
            "c = {}",
            "x = [1, 2]",
            "x = [\n1,\n]",
            "w = [",
            "1,",
            "]",
            "# c",
            "",
            "  ",
            "\t[a]",
            "x = 1.0",
            "x = -0",
            "x = +7",
            "b = { c = 2 }",
            "x = 1 # c",
            "d = [[1], [\"a\"]]",
            "e = { f = [1] }",
        ];
        let mut rand = crate::config::tests::xorshift(0x5eed_b1a1_0000_0001_u64);
        let mut read = 0;
        for _ in 0..20_000 {
            let n = 1 + rand(8);
            let mut text = String::new();
            for _ in 0..n {
                text.push_str(LINES[rand(LINES.len())]);
                text.push_str(if rand(4) == 0 { "\r\n" } else { "\n" });
            }
            if let Some(plain) = read_as_toml(&text) {
                read += 1;
                let full: toml::Table = toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("read here, refused by toml: {text:?}: {e}"));
                assert_eq!(plain, full, "{text:?}");
            }
        }
        // The property is not empty: a good share is in the subset.
        assert!(read > 2_000, "only {read} of 20 000 read");
    }
}
