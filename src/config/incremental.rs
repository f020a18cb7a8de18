//! Reloads that re-read only what an edit touched.
//!
//! A reload of a 10 000-route file that changes one pool used to parse and
//! validate the whole file again: toml's document, the file model and the
//! validation of every pool and route, ~70 ms of work and a ~70 MB transient
//! for one changed weight. [`ConfigSource`] keeps the text the running config
//! was read from, where each table section of it starts (`[...]` or `[[...]]`
//! up to the next header), and what each one is: part of a pool
//! (`[pools.NAME...]`), one route (`[[routes]]`), or anything else. A new
//! text is then compared with the old one:
//!
//! ```text
//! old  |  same prefix  |  edit  |  same suffix  |
//!      |<- sections ->|<-region->|<- sections ->|     region: the sections the edit touches
//! ```
//!
//! When the region, before and after the edit, holds at most [`MAX_REGION`]
//! sections and no route sub-table (`[routes.x]`), and reads on its own, it
//! is the one hunk of the edit. Edits in place inside pools' sections only
//! (a weight changed in every pool, say) are then walked ([`walk_from`]):
//! the new text is taken section by section from the top, each compared
//! with its old text, and only a section that differs is scanned (it must
//! hold the same pool's one header and read on its own); each run of
//! changed sections is a hunk. When the walk stops short, at a section
//! that is neither (a pool added after a weight changed in every pool, a
//! route's sub-table, say), the rest of the new text from there is indexed
//! on its own and its sections matched with the old ones left by their
//! text: each with the one at its place when the edit is in place (as many
//! sections, and no other match could leave fewer unmatched: a weight
//! changed in every pool, say), otherwise by a Myers diff over sections.
//! The runs that differ are the hunks, grown over matched sections until
//! each route (its `[[routes]]` and the sub-tables
//! after it, wherever they are) is either all matched or all in one hunk,
//! on both sides; those of a diff must hold at most [`MAX_DIFF`] sections.
//! Then each pool with a section in a hunk, before or after the edit, is
//! read again from all its sections (a small document of
//! `[pools.NAME...]` sections, validated like the file's; a pool with no
//! section left is removed, a new name added); the routes of the hunks'
//! `[[routes]]` sections are read, validated and put in the place of the
//! old ones; and when a hunk holds any other section (`[server]`,
//! `[middlewares.x]`, the root, ...) all of those are read again together,
//! as a document of their own, and every route is checked against them
//! again (its middlewares declared, `[acme]` and `server.https` there if
//! it needs them). The running config is taken with those parts replaced.
//! Anything else (a text that does not parse, a file whose pools or routes
//! are not all in their own sections, too many sections changed by a diff) gets the
//! full parse, which also reports the
//! errors: this path never reports one, it just gives up.
//!
//! Why the result is what the full parse would give, given that the old text
//! was valid and parsed to the running config:
//! - Outside the hunks, the new text splits into the same sections as the
//!   old one, in the same order. For a region: it starts at a header of
//!   the old text and ends where the next one starts, both in bytes the
//!   edit left alone, and it reads on its own without error, ending on a
//!   line break. For the walk: see [`walk_from`]; for the rest after it, see
//!   [`walk_and_match`]. For the section match: both texts are split by
//!   the same parse, and the sections it matches have the same text.
//! - Pools come only from `[pools.NAME...]` sections and routes only from
//!   `[[routes]]` sections (checked when a text is indexed: no `pools` or
//!   `routes` key at the root, no keys under a bare `[pools]`). A route
//!   sub-table section, `[routes.x]`, belongs to the last `[[routes]]`
//!   before it, wherever it is: a region holds none, and the section
//!   match keeps each route whole in one hunk or wholly matched, so the
//!   routes a hunk reads are whole and a matched route is the same one in
//!   both texts (checked again when a hunk's routes are read: the first
//!   route section after it is not a sub-table). A pool's
//!   sections define paths under `pools.NAME` only, so whether they
//!   conflict (a table defined twice, a dotted key over a header) depends
//!   on that pool's sections alone, which the small document holds in file
//!   order; a `[[routes]]` section is one whole route.
//! - Validation reads a pool on its own (and checks a new pool's name); a
//!   route against the pools (the new set), the middleware names, whether
//!   `[acme]` and `server.https` exist, and every other route for a host
//!   routed twice (checked again over the new list). When a pool went or
//!   the other sections were read again, every route is checked for what
//!   it needs of them. The other sections are validated together and look
//!   at nothing else.
//!
//! A whole read (at start, or a reload these cannot take) is the same
//! thing from an empty text: one hunk that is all of the new one
//! ([`ConfigSource::read`]). Many small documents read faster than one
//! big one (35 ms for 10 000 pools one by one, 48-99 ms as one document),
//! and the transient is one pool's. A text that does not split cleanly
//! into sections, or has an error, gets the full parse.
//!
//! The differential tests in `tests.rs` hold the paths to the same
//! result over hand-picked and generated edits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toml_parser::decoder::Encoding;
use toml_parser::parser::{EventReceiver, RecursionGuard};
use toml_parser::{ErrorSink, ParseError, Raw, Source, Span};

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::file::{PoolFile, RoutesFile};
use super::routes::{routed_twice, validate_routes, RouteContext};
use super::validate::{validate_pool, Checker};
use super::Config;

/// What a section is: below [`ROUTE_PART`], the id of the pool it is part of.
/// [`NO_POOL`]: anything else (`[server]`, the root, ...).
const NO_POOL: u32 = u32::MAX;
/// One `[[routes]]`: a whole route.
const ROUTE: u32 = u32::MAX - 1;
/// A route's sub-table (`[routes.x]`, `[[routes.x]]`): part of the route
/// before it.
const ROUTE_PART: u32 = u32::MAX - 2;
/// Most sections a region may have, before or after the edit: an edit that
/// spans more (two edits far apart, say) is cheaper to read whole.
const MAX_REGION: usize = 256;
/// Most bytes a region may have.
const MAX_REGION_BYTES: usize = 256 * 1024;
/// Most sections the runs of a diff may have, old and new together, and
/// most bytes of new text. An edit in place has no such limit: its sections
/// read one by one cost less than the whole text (README, Performance).
const MAX_DIFF: usize = 1024;
const MAX_DIFF_BYTES: usize = 1024 * 1024;
/// How long the section match may search for a short edit script: past
/// it, the script it gives is too long to take.
const MAX_DIFF_TIME: Duration = Duration::from_millis(20);
/// Most times the section match grows its runs to hold whole routes.
const MAX_SETTLE: usize = 64;
/// How deep arrays and inline tables may nest in a region (toml's own limit
/// is of the same order); deeper gets the full parse, which refuses it.
const MAX_DEPTH: u32 = 64;

/// The text a config was read from, indexed for the next reload.
pub struct ConfigSource {
    text: String,
    /// What relative paths in the text resolve against.
    base: PathBuf,
    index: Option<Index>,
    incremental: bool,
    /// Read whole, but section by section ([`ConfigSource::read`]).
    whole_by_sections: bool,
}

struct Index {
    /// In text order; the first is the root (offset 0, maybe empty).
    sections: Vec<Section>,
    /// Pool names, pool ids into `names_end`: name `i` is
    /// `names[names_end[i - 1]..names_end[i]]`.
    names: String,
    names_end: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Section {
    start: u32,
    /// A pool id, [`ROUTE`], [`ROUTE_PART`] or [`NO_POOL`].
    pool: u32,
}

impl Section {
    /// May be part of a region: anything but a route's sub-table.
    fn readable(&self) -> bool {
        self.pool != ROUTE_PART
    }
}

impl Index {
    fn name(&self, id: u32) -> &str {
        name_in(&self.names, &self.names_end, id as usize)
    }

    fn id(&self, name: &str) -> Option<u32> {
        (0..self.names_end.len() as u32).find(|&i| self.name(i) == name)
    }

    /// [`Index::id`] for `lookups` names: a search of the names each time
    /// for a few, a map of them for many (an edit to every pool).
    fn finder(&self, lookups: usize) -> impl FnMut(&str) -> Option<u32> + '_ {
        let map: Option<HashMap<&str, u32, foldhash::fast::RandomState>> =
            (lookups > 16).then(|| {
                (0..self.names_end.len() as u32)
                    .map(|i| (self.name(i), i))
                    .collect()
            });
        move |name| match &map {
            Some(map) => map.get(name).copied(),
            None => self.id(name),
        }
    }
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("bytes", &self.text.len())
            .field("sections", &self.index.as_ref().map(|ix| ix.sections.len()))
            .field("incremental", &self.incremental)
            .finish()
    }
}

impl ConfigSource {
    /// Indexes `text`, which parsed to a valid config with relative paths
    /// resolved against `base`. A text the index cannot split cleanly (pool
    /// or route keys outside their sections) is kept too: a reload of the
    /// same text is still recognized.
    pub fn index(text: String, base: &Path) -> ConfigSource {
        let index = build_index(&text);
        ConfigSource {
            text,
            base: base.to_owned(),
            index,
            incremental: false,
            whole_by_sections: false,
        }
    }

    /// The config `text` gives, read section by section: what the root
    /// and the other sections make, read together; each pool from its own
    /// sections; the routes, validated against them. The same config as
    /// the full parse (the argument is the module's: this is an edit whose
    /// one hunk is the whole text, from an empty one), at less cost: many
    /// small documents read faster than one big one, and the transient is
    /// that of one pool. `Err` gives the text back for the full parse (a
    /// text that does not split cleanly into sections, or with any error:
    /// the full parse reports it).
    pub fn read(text: String, base: &Path) -> Result<(Config, ConfigSource), String> {
        match read_by_sections(&text, base) {
            Some((config, index)) => Ok((
                config,
                ConfigSource {
                    text,
                    base: base.to_owned(),
                    index: Some(index),
                    incremental: false,
                    whole_by_sections: true,
                },
            )),
            None => Err(text),
        }
    }

    /// Read whole, section by section ([`ConfigSource::read`]).
    pub fn whole_by_sections(&self) -> bool {
        self.whole_by_sections
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Made by [`ConfigSource::reparse`], not by a full parse.
    pub fn incremental(&self) -> bool {
        self.incremental
    }

    /// Each section's start and pool name, for tests.
    #[cfg(test)]
    pub(super) fn layout(&self) -> Option<Vec<(u32, Option<String>)>> {
        let ix = self.index.as_ref()?;
        Some(
            ix.sections
                .iter()
                .map(|s| {
                    let what = match s.pool {
                        NO_POOL => None,
                        ROUTE => Some("[[routes]]".to_owned()),
                        ROUTE_PART => Some("[routes.*]".to_owned()),
                        id => Some(ix.name(id).to_owned()),
                    };
                    (s.start, what)
                })
                .collect(),
        )
    }

    /// Copies the index into the calling thread's memory (it is built on
    /// the parse's scratch thread, see [`crate::memory::on_scratch`]).
    pub fn rehome(&mut self) {
        if let Some(ix) = &mut self.index {
            ix.sections = ix.sections.clone();
            ix.names = ix.names.clone();
            ix.names_end = ix.names_end.clone();
        }
    }

    /// The config `new_text` gives, read section by section, and the new
    /// text's source. When it differs from this source's text only inside
    /// sections of pools, whole routes or the other sections: `running`
    /// (the config this source's text gave) with those parts read again
    /// ([`ConfigSource::incremental`]). Otherwise the whole text, when it
    /// splits cleanly into sections ([`ConfigSource::read`]). `Err` gives
    /// the text back: it needs the full parse.
    pub fn reparse(
        &self,
        running: &Config,
        new_text: String,
    ) -> Result<(Config, ConfigSource), String> {
        let (read, incremental) = match self.try_reparse(running, &new_text) {
            Ok(read) => (Some(read), true),
            // The new text's index, when the section match made it.
            Err(nix) => {
                let nix = nix.or_else(|| build_index(&new_text));
                let read = nix.and_then(|nix| {
                    // Routes whose sections are the running ones, text for
                    // text, are the running routes.
                    let same = self
                        .index
                        .as_ref()
                        .is_some_and(|ix| same_routes(ix, &self.text, &nix, &new_text));
                    let kept = same.then_some(&running.routes);
                    read_indexed(&new_text, &self.base, nix, kept)
                });
                (read, false)
            }
        };
        match read {
            Some((config, index)) => Ok((
                config,
                ConfigSource {
                    text: new_text,
                    base: self.base.clone(),
                    index: Some(index),
                    incremental,
                    whole_by_sections: !incremental,
                },
            )),
            None => Err(new_text),
        }
    }

    /// The edit read incrementally, or the new text's index when the
    /// section match made one and could not take the edit.
    fn try_reparse(&self, running: &Config, new: &str) -> Result<(Config, Index), Option<Index>> {
        let Some(ix) = self.index.as_ref() else {
            return Err(None);
        };
        if u32::try_from(new.len()).is_err() || new == self.text {
            return Err(None);
        }
        // One region when the edit makes one; otherwise (or when its
        // routes need a sub-table outside it) the section match.
        let region = Region::find(ix, &self.text, new).and_then(|r| {
            let (nix, hunk) = r.index(ix, self.text.len(), new)?;
            let config = apply(running, &self.base, ix, new, &nix, &[hunk], None)?;
            Some((config, nix))
        });
        if let Some(read) = region {
            return Ok(read);
        }
        // Edits in place inside pools' sections (a weight changed in every
        // pool, say): only the sections that changed are read. When the
        // walk stops short, the rest of the text is indexed and matched.
        let (nix, hunks) = walk_and_match(ix, &self.text, new)?;
        match apply(running, &self.base, ix, new, &nix, &hunks, None) {
            Some(config) => Ok((config, nix)),
            None => Err(Some(nix)),
        }
    }

    /// The edit read section by section: the new text indexed whole
    /// (`nix`), its sections matched with the old ones by their text, and
    /// the runs that differ (several edits far apart, say) read again.
    #[cfg(test)]
    fn by_sections(&self, running: &Config, new: &str, nix: &Index) -> Option<Config> {
        let ix = self.index.as_ref()?;
        let hunks = diff(&ix.sections, &self.text, &nix.sections, new)?;
        if hunks.is_empty() {
            return None;
        }
        apply(running, &self.base, ix, new, nix, &hunks, None)
    }

    /// [`ConfigSource::reparse`] that skips the region and goes straight to
    /// the section match, for tests.
    #[cfg(test)]
    pub(super) fn reparse_by_sections(&self, running: &Config, new: &str) -> Option<Config> {
        self.by_sections(running, new, &build_index(new)?)
    }

    /// [`ConfigSource::reparse`] by the walk alone (edits in place inside
    /// pools' sections), for tests: its config, and whether the index it
    /// made has the sections the new text's own scan gives.
    #[cfg(test)]
    pub(super) fn reparse_by_walk(&self, running: &Config, new: &str) -> Option<(Config, bool)> {
        let ix = self.index.as_ref()?;
        let (nix, hunks) = walk(ix, &self.text, new)?;
        let own = build_index(new).is_some_and(|own| own.sections == nix.sections);
        Some((
            apply(running, &self.base, ix, new, &nix, &hunks, None)?,
            own,
        ))
    }
}

impl ConfigSource {
    /// [`ConfigSource::reparse`] by the walk and the match of the rest
    /// after it, for edits the walk takes only in part: its config, and
    /// whether the index it made has the sections the new text's own scan
    /// gives. For tests.
    #[cfg(test)]
    pub(super) fn reparse_by_walk_and_match(
        &self,
        running: &Config,
        new: &str,
    ) -> Option<(Config, bool)> {
        let ix = self.index.as_ref()?;
        if walk(ix, &self.text, new).is_some() {
            return None;
        }
        let (nix, hunks) = walk_and_match(ix, &self.text, new).ok()?;
        let own = build_index(new).is_some_and(|own| {
            own.sections.len() == nix.sections.len()
                && own.sections.iter().zip(&nix.sections).all(|(a, b)| {
                    a.start == b.start
                        && match (a.pool, b.pool) {
                            (x, y) if x < ROUTE_PART && y < ROUTE_PART => {
                                own.name(x) == nix.name(y)
                            }
                            (x, y) => x == y,
                        }
                })
        });
        Some((
            apply(running, &self.base, ix, new, &nix, &hunks, None)?,
            own,
        ))
    }
}

/// [`ConfigSource::read`]: the text as an edit of an empty one, all of it
/// one hunk.
fn read_by_sections(text: &str, base: &Path) -> Option<(Config, Index)> {
    read_indexed(text, base, build_index(text)?, None)
}

/// [`read_by_sections`] with the text's index, `nix`; with `kept`, the
/// routes are those (see [`apply`]).
fn read_indexed(
    text: &str,
    base: &Path,
    nix: Index,
    kept: Option<&Arc<Vec<super::RouteConfig>>>,
) -> Option<(Config, Index)> {
    u32::try_from(text.len()).ok()?;
    let ix = build_index("")?;
    let empty = Config::from_toml_str_in("", base).ok()?;
    let hunk = Hunk {
        old: 0..ix.sections.len(),
        new: 0..nix.sections.len(),
    };
    let config = apply(&empty, base, &ix, text, &nix, &[hunk], kept)?;
    Some((config, nix))
}

/// Each section's text.
fn texts<'t>(sections: &[Section], text: &'t str) -> Option<Vec<&'t str>> {
    (0..sections.len())
        .map(|i| section_text(text, sections, i))
        .collect()
}

/// A run of sections an edit replaced: old sections `old` by new `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    old: Range<usize>,
    new: Range<usize>,
}

/// The runs of sections that differ between two indexed texts, in order,
/// grown to hold whole routes, when they are few and small.
fn diff(ix: &[Section], old: &str, nix: &[Section], new: &str) -> Option<Vec<Hunk>> {
    let (olds, news) = (texts(ix, old)?, texts(nix, new)?);
    // Sections only one text has: at least that many differ (a diff of an
    // edit to every pool would run to its deadline to find out).
    let mut count: HashMap<&str, i64, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(olds.len(), Default::default());
    for t in &olds {
        *count.entry(t).or_default() += 1;
    }
    for t in &news {
        *count.entry(t).or_default() -= 1;
    }
    let unmatched: u64 = count.values().map(|c| c.unsigned_abs()).sum();
    drop(count);
    // Edits in place (sections changed, none added, removed or moved: a
    // weight changed in every pool, say): each section matched with the
    // one at its place, when no match can leave fewer sections unmatched
    // (those only one text has, counted above).
    let at_place = (olds.len() == news.len())
        .then(|| {
            (0..olds.len())
                .filter(|&i| olds[i] == news[i])
                .map(|i| (i, i))
                .collect::<Vec<_>>()
        })
        .filter(|pairs| 2 * (olds.len() - pairs.len()) as u64 == unmatched);
    let in_place = at_place.is_some();
    // The sections matched, as (old, new) pairs in order.
    let mut pairs = match at_place {
        Some(pairs) => pairs,
        None => myers_pairs(&olds, &news, unmatched)?,
    };
    // Each route read whole: a route (its `[[routes]]` and the sub-tables
    // after it) with a section in a hunk has all of them in that hunk.
    let mut rounds = 0;
    let hunks = loop {
        let hunks = hunks_between(&pairs, olds.len(), news.len());
        let old_split = split_route(ix, &hunks, |h| &h.old)?;
        let new_split = split_route(nix, &hunks, |h| &h.new)?;
        let (old_range, new_range) = match (old_split, new_split) {
            (None, None) => break hunks,
            (Some(r), _) => (r, 0..0),
            (None, Some(r)) => (0..0, r),
        };
        rounds += 1;
        if rounds > MAX_SETTLE {
            return None;
        }
        pairs.retain(|(o, n)| !old_range.contains(o) && !new_range.contains(n));
    };
    let (mut count, mut bytes) = (0, 0);
    for h in &hunks {
        count += h.old.len() + h.new.len();
        bytes += h.new.clone().map(|i| news[i].len()).sum::<usize>();
    }
    (in_place || (count <= MAX_DIFF && bytes <= MAX_DIFF_BYTES)).then_some(hunks)
}

/// The sections a Myers diff matches, as (old, new) pairs in order, when
/// `unmatched` (sections only one side has) is few enough to search for.
fn myers_pairs(olds: &[&str], news: &[&str], unmatched: u64) -> Option<Vec<(usize, usize)>> {
    if unmatched > MAX_DIFF as u64 {
        return None;
    }
    let deadline = Instant::now() + MAX_DIFF_TIME;
    let ops = similar::capture_diff_slices_deadline(
        similar::Algorithm::Myers,
        olds,
        news,
        Some(deadline),
    );
    let mut pairs = Vec::with_capacity(olds.len().min(news.len()));
    for op in &ops {
        if let (similar::DiffTag::Equal, o, n) = op.as_tag_tuple() {
            pairs.extend(o.zip(n));
        }
    }
    Some(pairs)
}

/// The runs of sections between matched pairs: the hunks.
fn hunks_between(pairs: &[(usize, usize)], olds: usize, news: usize) -> Vec<Hunk> {
    let mut hunks = Vec::new();
    let (mut o, mut n) = (0, 0);
    for &(po, pn) in pairs.iter().chain(&[(olds, news)]) {
        if po > o || pn > n {
            hunks.push(Hunk {
                old: o..po,
                new: n..pn,
            });
        }
        (o, n) = (po + 1, pn + 1);
    }
    hunks
}

/// The sections, on one side (`side` picks the hunks' range of it), of the
/// first route that is partly in a hunk and partly elsewhere: from its
/// `[[routes]]` to its last sub-table. `Some(None)`: every route is whole
/// in one place; `None`: a sub-table has no route before it.
fn split_route(
    sections: &[Section],
    hunks: &[Hunk],
    side: impl Fn(&Hunk) -> &Range<usize>,
) -> Option<Option<Range<usize>>> {
    // Where each section is: `None` matched, `Some(k)` in hunk k.
    let mut place = vec![None; sections.len()];
    for (k, h) in hunks.iter().enumerate() {
        for p in &mut place[side(h).clone()] {
            *p = Some(k);
        }
    }
    // The route being walked: its first section, last section, and whether
    // its sections are all in one place so far.
    let mut route: Option<(usize, usize, bool)> = None;
    let split = |(first, last, whole): (usize, usize, bool)| -> Option<Range<usize>> {
        (!whole).then_some(first..last + 1)
    };
    for (i, s) in sections.iter().enumerate() {
        match s.pool {
            ROUTE => {
                if let Some(r) = route.and_then(split) {
                    return Some(Some(r));
                }
                route = Some((i, i, true));
            }
            ROUTE_PART => {
                let (first, _, whole) = route?;
                route = Some((first, i, whole && place[i] == place[first]));
            }
            _ => {}
        }
    }
    Some(route.and_then(split))
}

/// `running` (the config the old text, indexed by `ix`, gave) with what
/// `hunks` replaced read again from `new` (indexed by `nix`): each pool with
/// a section in a hunk, before or after, from all its sections; the routes
/// of the hunks in the place of the old ones; and, when a hunk holds any
/// other section, all of those. `None` when something does not read,
/// validate or fit.
///
/// With `kept`, the routes are not read: they are `kept`, routes whose
/// sections are, text for text, those of the new text's routes (a whole
/// read after an edit that left the routes alone), checked against the
/// new config like routes kept between hunks.
#[allow(clippy::too_many_arguments)] // the edit's two sides, and what is kept
fn apply(
    running: &Config,
    base: &Path,
    ix: &Index,
    new: &str,
    nix: &Index,
    hunks: &[Hunk],
    kept: Option<&Arc<Vec<super::RouteConfig>>>,
) -> Option<Config> {
    let mut config = running.clone();
    let removed = reread_pools(ix, new, nix, hunks, &mut config)?;
    let others = hunks.iter().any(|h| {
        ix.sections[h.old.clone()]
            .iter()
            .chain(&nix.sections[h.new.clone()])
            .any(|s| s.pool == NO_POOL)
    });
    if others {
        read_others(new, &nix.sections, base, &mut config)?;
    }
    match kept {
        Some(routes) => config.routes = routes.clone(),
        None => reread_routes(running, base, ix, new, nix, hunks, &mut config)?,
    }
    // What the routes are checked against may have changed: a pool gone,
    // middlewares, `[acme]`, `server.https`.
    if (removed || others || kept.is_some()) && !config.routes.iter().all(|r| fits(r, &config)) {
        return None;
    }
    Some(config)
}

/// Whether the route sections (`[[routes]]` and their sub-tables) of the
/// two indexed texts are the same, text for text and in the same order:
/// then they read to the same routes, checked against what they name.
fn same_routes(ix: &Index, old: &str, nix: &Index, new: &str) -> bool {
    let routes = |index: &Index| -> Vec<usize> {
        (0..index.sections.len())
            .filter(|&i| matches!(index.sections[i].pool, ROUTE | ROUTE_PART))
            .collect()
    };
    let (olds, news) = (routes(ix), routes(nix));
    olds.len() == news.len()
        && olds.iter().zip(&news).all(|(&a, &b)| {
            match (
                section_text(old, &ix.sections, a),
                section_text(new, &nix.sections, b),
            ) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        })
}

/// A route validated against another config still valid against `config`:
/// its pool and middlewares there, `[acme]` and `server.https` if it needs
/// them.
fn fits(route: &super::RouteConfig, config: &Config) -> bool {
    config.pools.contains_key(route.pool.as_str())
        && route
            .middlewares
            .iter()
            .all(|m| config.middlewares.contains_key(m))
        && (route.tls != super::TlsMode::Acme || config.acme.is_some())
        && (route.tls == super::TlsMode::None || config.server.https.is_some())
}

/// Reads again, into `config`, each pool with a section in a hunk (before
/// or after the edit), from all its sections in `new`. `Some(true)` when a
/// pool was removed.
fn reread_pools(
    ix: &Index,
    new: &str,
    nix: &Index,
    hunks: &[Hunk],
    config: &mut Config,
) -> Option<bool> {
    let pools = |ix: &Index, r: &Range<usize>| -> Vec<u32> {
        ix.sections[r.clone()]
            .iter()
            .map(|s| s.pool)
            .filter(|&p| p < ROUTE_PART)
            .collect()
    };
    // The touched pools, as ids of the new index; those it has no section
    // of went.
    let mut touched: Vec<u32> = Vec::new();
    let mut olds: Vec<&str> = Vec::new();
    for h in hunks {
        touched.extend(pools(nix, &h.new));
        olds.extend(pools(ix, &h.old).into_iter().map(|id| ix.name(id)));
    }
    let mut gone: Vec<&str> = Vec::new();
    let mut find = nix.finder(olds.len());
    for name in olds {
        match find(name) {
            Some(id) => touched.push(id),
            None => gone.push(name),
        }
    }
    touched.sort_unstable();
    touched.dedup();
    // Each touched pool's sections, in file order, found in one pass.
    let mut pieces: Vec<Vec<&str>> = vec![Vec::new(); touched.len()];
    for (i, s) in nix.sections.iter().enumerate() {
        if let Ok(t) = touched.binary_search(&s.pool) {
            pieces[t].push(section_text(new, &nix.sections, i)?);
        }
    }
    for (&id, pieces) in touched.iter().zip(&pieces) {
        let name = nix.name(id);
        if pieces.is_empty() {
            gone.push(name);
            continue;
        }
        if !super::valid_name(name) {
            return None;
        }
        let pool = Arc::new(read_pool(pieces, name)?);
        // The key kept when the pool was there (no copy of the name).
        match config.pools.get_mut(name) {
            Some(slot) => *slot = pool,
            None => {
                config.pools.insert(name.into(), pool);
            }
        }
    }
    gone.sort_unstable();
    gone.dedup();
    for name in &gone {
        config.pools.remove(*name)?;
    }
    Some(!gone.is_empty())
}

/// Puts the routes of the hunks' `[[routes]]` sections in `new`, read and
/// validated against `config`, in the place of those of the old sections.
fn reread_routes(
    running: &Config,
    base: &Path,
    ix: &Index,
    new: &str,
    nix: &Index,
    hunks: &[Hunk],
    config: &mut Config,
) -> Option<()> {
    let is_route = |s: &Section| s.pool == ROUTE;
    // The hunks' routes, sub-tables and all (each route is whole in one
    // hunk, see `diff`).
    let came: Vec<&str> = hunks
        .iter()
        .flat_map(|h| h.new.clone())
        .filter(|&i| matches!(nix.sections[i].pool, ROUTE | ROUTE_PART))
        .map(|i| section_text(new, &nix.sections, i))
        .collect::<Option<_>>()?;
    let count = hunks
        .iter()
        .flat_map(|h| &nix.sections[h.new.clone()])
        .filter(|s| is_route(s))
        .count();
    let any_gone = hunks
        .iter()
        .any(|h| ix.sections[h.old.clone()].iter().any(is_route));
    if came.is_empty() && !any_gone {
        return Some(());
    }
    let mut fresh = read_routes(config, &came, count, base)?.into_iter();
    let mut routes = Vec::with_capacity(running.routes.len() + count);
    // Walk the old sections: the routes between hunks are kept, each
    // hunk's replaced by its own.
    let (mut at, mut kept) = (0, 0);
    for h in hunks {
        let before = ix.sections[at..h.old.start].iter().filter(|s| is_route(s));
        let n = before.count();
        routes.extend_from_slice(running.routes.get(kept..kept + n)?);
        let gone = ix.sections[h.old.clone()].iter().filter(|s| is_route(s));
        let gone = gone.count();
        kept += n + gone;
        let came = nix.sections[h.new.clone()].iter().filter(|s| is_route(s));
        let came = came.count();
        if came > 0 || gone > 0 {
            // A `[routes.x]` is part of the last route before it, wherever
            // it is: the first one after the hunk must have a route of its
            // own in between.
            let next = ix.sections[h.old.end..]
                .iter()
                .find(|s| s.pool == ROUTE || s.pool == ROUTE_PART);
            if next.is_some_and(|s| s.pool == ROUTE_PART) {
                return None;
            }
        }
        routes.extend(fresh.by_ref().take(came));
        at = h.old.end;
    }
    routes.extend_from_slice(running.routes.get(kept..)?);
    if routed_twice(&routes) {
        return None;
    }
    config.routes = Arc::new(routes);
    Some(())
}

/// The `count` routes of `[[routes]]` sections and their sub-tables
/// `texts`, read and validated against `config` (its pools, middlewares,
/// `[acme]` and `server.https`), when they give no diagnostic.
fn read_routes(
    config: &Config,
    texts: &[&str],
    count: usize,
    base: &Path,
) -> Option<Vec<super::RouteConfig>> {
    if texts.is_empty() {
        return Some(Vec::new());
    }
    let doc = document(texts);
    let file: RoutesFile = match super::plain::read(&doc) {
        Some(file) => file,
        None => toml::from_str(&doc).ok()?,
    };
    if file.routes.len() != count {
        return None;
    }
    let has_pool = |name: &str| config.pools.contains_key(name);
    let mut c = Checker::new(&doc);
    let routes = validate_routes(
        &mut c,
        &file.routes,
        &RouteContext {
            has_pool: &has_pool,
            middlewares: &config.middlewares,
            acme: config.acme.is_some(),
            https: config.server.https.is_some(),
            base,
        },
    );
    c.is_clean().then_some(routes)
}

/// The new text's index and its hunks, when [`walk_from`] takes all of it
/// (edits in place inside pools' sections only), for tests.
#[cfg(test)]
fn walk(ix: &Index, old: &str, new: &str) -> Option<(Index, Vec<Hunk>)> {
    walk_from(ix, old, new)?.whole(ix, new)
}

/// How far [`walk_from`] got: old sections `..k` were taken (at the starts
/// `sections[..k]` of the new text, the changed ones in `hunks`), and old
/// section `k` was not; it would start at `at`, which is `sections[k]`
/// when there is such a section.
struct Walked {
    sections: Vec<Section>,
    hunks: Vec<Hunk>,
    k: usize,
    at: usize,
}

impl Walked {
    /// The new text's index and the hunks, when the walk took every old
    /// section and the whole new text, and something changed.
    fn whole(self, ix: &Index, new: &str) -> Option<(Index, Vec<Hunk>)> {
        if self.k != ix.sections.len() || self.at != new.len() || self.hunks.is_empty() {
            return None;
        }
        let index = Index {
            sections: self.sections,
            names: ix.names.clone(),
            names_end: ix.names_end.clone(),
        };
        Some((index, self.hunks))
    }

    /// Back to where old section `k` (at most the one it stopped at)
    /// starts: the sections and hunks from there on dropped.
    fn back_to(&mut self, k: usize) {
        if let Some(s) = self.sections.get(k) {
            self.at = s.start as usize;
        }
        self.k = k;
        self.sections.truncate(k);
        self.hunks.retain_mut(|h| {
            h.old.end = h.old.end.min(k);
            h.new.end = h.new.end.min(k);
            !h.old.is_empty()
        });
    }
}

/// The walk: the new text taken section by section from the top, as far
/// as it has the old text's sections at their places, each either the same
/// text or a pool's section with the same header that reads on its own
/// (edits in place inside pools' sections: a weight changed in every
/// pool, say). Only the sections that changed are scanned; each other one
/// is compared with its old text. It stops at the first old section that
/// is neither; [`Walked::whole`] when it took them all. `None` only for a
/// text too long to index.
///
/// Why each section it took, and the place it stopped at, start where the
/// new text's own scan would have a section start: the
/// sections are taken in order from the top of the new text, and each
/// starts at a line start with nothing open (the top of the text, or the
/// end of the section before it, which ends a line). A section with its old
/// text lexes as it did in the old text, from the same state, and ends
/// where its old text did. A changed one runs up to the next old section's
/// header line (found at a line start), reads on its own without error
/// (nothing left open), ends a line, and holds one header only, of the same
/// pool, at its start. The last ends the text.
fn walk_from(ix: &Index, old: &str, new: &str) -> Option<Walked> {
    u32::try_from(new.len()).ok()?;
    let count = ix.sections.len();
    let mut w = Walked {
        sections: Vec::with_capacity(count),
        hunks: Vec::new(),
        k: 0,
        at: 0,
    };
    while w.k < count {
        let (k, at) = (w.k, w.at);
        let was = section_text(old, &ix.sections, k)?;
        let pool = ix.sections[k].pool;
        w.sections.push(Section {
            start: u32::try_from(at).ok()?,
            pool,
        });
        let rest = new.get(at..)?;
        let same = if k + 1 == count {
            rest == was
        } else {
            rest.starts_with(was)
        };
        if same {
            w.at += was.len();
            w.k += 1;
            continue;
        }
        match changed_in_place(ix, old, k, rest) {
            Some(len) => {
                match w.hunks.last_mut() {
                    Some(h) if h.old.end == k => {
                        h.old.end = k + 1;
                        h.new.end = k + 1;
                    }
                    _ => w.hunks.push(Hunk {
                        old: k..k + 1,
                        new: k..k + 1,
                    }),
                }
                w.at += len;
                w.k += 1;
            }
            None => return Some(w),
        }
    }
    Some(w)
}

/// The length of old section `k`'s place in `rest` (the new text from
/// where that section starts), when it is the same pool's section changed
/// in place: it runs up to the next old section's header line (found at a
/// line start), ends a line, reads on its own and holds one header only,
/// of the same pool, at its start. The last one runs to the end.
fn changed_in_place(ix: &Index, old: &str, k: usize, rest: &str) -> Option<usize> {
    let pool = ix.sections[k].pool;
    if pool >= ROUTE_PART {
        return None;
    }
    let end = match ix.sections.get(k + 1) {
        Some(next) => next_header(rest, old.get(next.start as usize..)?)?,
        None => rest.len(),
    };
    let changed = rest.get(..end)?;
    let tail = changed.trim_end_matches([' ', '\t']);
    if end < rest.len() && !tail.ends_with('\n') {
        return None;
    }
    // Its one header must name the same pool (no lookup).
    let read = scan(changed, &mut |name| (ix.name(pool) == name).then_some(pool))?;
    let one = [
        Section {
            start: 0,
            pool: NO_POOL,
        },
        Section { start: 0, pool },
    ];
    (read.pools_clean && read.sections == one).then_some(end)
}

/// The new text's index and its hunks, for an edit the walk takes only in
/// part: the sections it took, then the rest of the new text indexed on
/// its own and its sections matched with the old ones left, as
/// [`diff`] does (a pool added after a weight changed in every pool, say).
/// `Err` gives the new text's index when the match cannot take the rest
/// (for a whole read), or `None` when there is no index to give.
///
/// Why the index is the new text's own: the walk's sections are (see
/// [`walk_from`]), and the rest starts at one of the places the walk
/// reached, where the new text's own scan has nothing open; there its scan
/// alone is the new text's own from that place on, and a section starts
/// there when the rest's root is empty (a header first; otherwise the rest
/// starts a section earlier, down to the whole text, whose own root is
/// its own). The rest also starts before any route whose sub-tables would
/// be split from it: when the first route section from there on, in the
/// old text or in the rest, is a sub-table, the rest starts at the last
/// `[[routes]]` before (the walk took that route's sections as they were:
/// it takes nothing but pools' sections changed). So every route is whole
/// on each side of the place, and the match keeps routes whole as
/// [`diff`] does.
fn walk_and_match(ix: &Index, old: &str, new: &str) -> Result<(Index, Vec<Hunk>), Option<Index>> {
    let Some(mut w) = walk_from(ix, old, new) else {
        return Err(None);
    };
    if w.k == ix.sections.len() {
        return w.whole(ix, new).ok_or(None);
    }
    // Where the rest starts, and its index: before the route of a first
    // sub-table (on either side), and at a header (a rest whose root is
    // not empty starts a section earlier), unless it is the whole text.
    // Each turn starts earlier; the whole text ends it.
    let first_route = |sections: &[Section]| {
        let routes = |s: &&Section| s.pool == ROUTE || s.pool == ROUTE_PART;
        sections.iter().find(routes).map(|s| s.pool)
    };
    let route_before = |k: usize| ix.sections[..k].iter().rposition(|s| s.pool == ROUTE);
    let (rest, tix) = loop {
        if first_route(&ix.sections[w.k..]) == Some(ROUTE_PART) {
            w.back_to(route_before(w.k).ok_or(None)?);
        }
        let rest = new.get(w.at..).ok_or(None)?;
        let tix = build_index(rest).ok_or(None)?;
        if w.k == 0 {
            break (rest, tix);
        }
        if first_route(&tix.sections) == Some(ROUTE_PART) {
            w.back_to(route_before(w.k).unwrap_or(0));
            continue;
        }
        if section_text(rest, &tix.sections, 0).is_some_and(str::is_empty) {
            break (rest, tix);
        }
        w.back_to(w.k - 1);
    };
    w.sections.truncate(w.k);
    let (k, at) = (w.k, w.at);
    // The new index: the walk's sections, then the rest's (after its root
    // when there is a walked one), its pools named by the old ids and new
    // ones after them.
    let mut names = ix.names.clone();
    let mut names_end = ix.names_end.clone();
    let mut find = ix.finder(tix.names_end.len());
    let mut ids = Vec::with_capacity(tix.names_end.len());
    for i in 0..tix.names_end.len() {
        let name = tix.name(i as u32);
        let id = match find(name) {
            Some(id) => id,
            None => {
                names.push_str(name);
                names_end.push(u32::try_from(names.len()).map_err(|_| None)?);
                u32::try_from(names_end.len() - 1).map_err(|_| None)?
            }
        };
        ids.push(id);
    }
    drop(find);
    let offset = u32::try_from(at).map_err(|_| None)?;
    // With a walked root, the rest's own (empty) one stands for it.
    let skip = usize::from(k > 0);
    let mut sections = w.sections;
    for s in &tix.sections[skip..] {
        let pool = match s.pool {
            id if id < ROUTE_PART => ids[id as usize],
            other => other,
        };
        sections.push(Section {
            start: s.start + offset,
            pool,
        });
    }
    let nix = Index {
        sections,
        names,
        names_end,
    };
    // The old sections left, after an empty root like the rest's.
    let base = ix.sections.get(k).ok_or(None)?.start;
    let root = Section {
        start: base,
        pool: NO_POOL,
    };
    let olds: Vec<Section> = std::iter::repeat_n(root, skip)
        .chain(ix.sections[k..].iter().copied())
        .map(|s| Section {
            start: s.start - base,
            pool: s.pool,
        })
        .collect();
    let old_rest = old.get(base as usize..).ok_or(None)?;
    let Some(tail) = diff(&olds, old_rest, &tix.sections, rest) else {
        return Err(Some(nix));
    };
    let at_root = |h: &Hunk| skip > 0 && (h.old.start == 0 || h.new.start == 0);
    if tail.iter().any(at_root) || (tail.is_empty() && w.hunks.is_empty()) {
        return Err(Some(nix));
    }
    let mut hunks = w.hunks;
    let shift = k - skip;
    hunks.extend(tail.into_iter().map(|h| Hunk {
        old: h.old.start + shift..h.old.end + shift,
        new: h.new.start + shift..h.new.end + shift,
    }));
    Ok((nix, hunks))
}

/// Where, in `rest` (a changed section and what follows it), the header
/// line that starts `next` (the next old section onward) is: the first
/// place past the start it is found with only spaces or tabs before it on
/// its line, within [`MAX_REGION_BYTES`]. Each line start is tried in turn
/// (a section is a few lines: cheaper than a substring search).
fn next_header(rest: &str, next: &str) -> Option<usize> {
    let line = next.split_inclusive('\n').next()?;
    let bytes = rest.as_bytes();
    let mut from = 0;
    while let Some(nl) = bytes.get(from..)?.iter().position(|&b| b == b'\n') {
        let mut q = from + nl + 1;
        while matches!(bytes.get(q), Some(b' ' | b'\t')) {
            q += 1;
        }
        if q > MAX_REGION_BYTES {
            return None;
        }
        if bytes[q..].starts_with(line.as_bytes()) {
            return Some(q);
        }
        from = q;
    }
    None
}

/// The sections an edit touches: old sections `k1..=k2`, which start at
/// `start` in both texts; in the new text, `scan`, read on its own.
struct Region {
    k1: usize,
    k2: usize,
    start: usize,
    scan: Scan,
    /// Pool names the region brings, in the order of their ids (after the
    /// old index's).
    added: Vec<String>,
}

impl Region {
    /// The region of the edit from `old` to `new`, when it holds pool
    /// sections and whole routes only, reads on its own, and is small.
    fn find(ix: &Index, old: &str, new: &str) -> Option<Region> {
        u32::try_from(new.len()).ok()?;
        let (a, old_end) = edit(old.as_bytes(), new.as_bytes())?;
        // The sections the edit touches: an edit that starts right at a
        // header also touches the section before it (text added at its end).
        let containing = |pos: usize| ix.sections.partition_point(|s| s.start as usize <= pos) - 1;
        let first = containing(a.saturating_sub(1));
        let k2 = if old_end > a {
            containing(old_end - 1)
        } else {
            first
        };
        // From the top of the file: the root (maybe empty) too.
        let k1 = if ix.sections[first].start == 0 {
            0
        } else {
            first
        };
        let old_region = &ix.sections[k1..=k2];
        if old_region.len() > MAX_REGION || !old_region.iter().all(Section::readable) {
            return None;
        }
        let start = ix.sections[k1].start as usize;
        let old_stop = ix
            .sections
            .get(k2 + 1)
            .map_or(old.len(), |s| s.start as usize);
        let new_stop = (old_stop + new.len()).checked_sub(old.len())?;
        let region = new.get(start..new_stop)?;
        // The next section must still start a line: the region ends with a
        // line break, or is empty at the top of the file.
        let tail = region.trim_end_matches([' ', '\t']);
        if region.len() > MAX_REGION_BYTES
            || (new_stop < new.len() && !tail.ends_with('\n') && !(start == 0 && tail.is_empty()))
        {
            return None;
        }
        // The region on its own: headers only, of pools (new names get new
        // ids) and of whole routes.
        let known = ix.names_end.len();
        let mut added: Vec<String> = Vec::new();
        let scan = scan(region, &mut |name| {
            if let Some(id) = ix.id(name) {
                return Some(id);
            }
            if let Some(i) = added.iter().position(|n| n == name) {
                return u32::try_from(known + i).ok();
            }
            added.push(name.to_owned());
            u32::try_from(known + added.len() - 1)
                .ok()
                .filter(|&id| id < ROUTE_PART)
        })?;
        // A region from the top of the file holds the root; any other starts
        // with a header (its root is empty).
        let new_region = if k1 == 0 {
            &scan.sections[..]
        } else {
            &scan.sections[1..]
        };
        if (k1 > 0 && new_region.first().map(|s| s.start) != Some(0))
            || new_region.len() > MAX_REGION
            || !new_region.iter().all(Section::readable)
            || !scan.pools_clean
        {
            return None;
        }
        Some(Region {
            k1,
            k2,
            start,
            scan,
            added,
        })
    }

    /// The region's sections in the new text (offsets from `start`).
    fn sections(&self) -> &[Section] {
        if self.k1 == 0 {
            &self.scan.sections
        } else {
            &self.scan.sections[1..]
        }
    }

    /// The new text's index (the old one with the region's sections in
    /// place and the pools it brings named) and the hunk.
    fn index(&self, ix: &Index, old_len: usize, new: &str) -> Option<(Index, Hunk)> {
        let new_region = self.sections();
        let shift = |s: &Section| Section {
            start: (s.start as usize + new.len() - old_len) as u32,
            pool: s.pool,
        };
        let mut sections = Vec::with_capacity(ix.sections.len() + new_region.len());
        sections.extend_from_slice(&ix.sections[..self.k1]);
        sections.extend(new_region.iter().map(|s| Section {
            start: s.start + self.start as u32,
            pool: s.pool,
        }));
        sections.extend(ix.sections[self.k2 + 1..].iter().map(shift));
        let mut names = ix.names.clone();
        let mut names_end = ix.names_end.clone();
        for name in &self.added {
            names.push_str(name);
            names_end.push(u32::try_from(names.len()).ok()?);
        }
        let hunk = Hunk {
            old: self.k1..self.k2 + 1,
            new: self.k1..self.k1 + new_region.len(),
        };
        Some((
            Index {
                sections,
                names,
                names_end,
            },
            hunk,
        ))
    }
}

/// Everything but the pools and routes (`[server]`, `[middlewares.*]`, the
/// root, ...) read again from those sections of `text` alone, into
/// `config`, when they validate (the routes are checked against them
/// after).
fn read_others(text: &str, sections: &[Section], base: &Path, config: &mut Config) -> Option<()> {
    let pieces = (0..sections.len())
        .filter(|&i| sections[i].pool == NO_POOL)
        .map(|i| section_text(text, sections, i))
        .collect::<Option<Vec<&str>>>()?;
    let doc = document(&pieces);
    let others = Config::from_toml_str_in(&doc, base).ok()?;
    // Everything from the other sections; the pools and routes kept.
    *config = Config {
        routes: std::mem::take(&mut config.routes),
        pools: std::mem::take(&mut config.pools),
        ..others
    };
    Some(())
}

/// Section `i` of `text` (indexed by `sections`): up to the next one's start.
fn section_text<'t>(text: &'t str, sections: &[Section], i: usize) -> Option<&'t str> {
    let stop = sections.get(i + 1).map_or(text.len(), |n| n.start as usize);
    text.get(sections.get(i)?.start as usize..stop)
}

/// Sections read on their own, as one document: each ends a line.
fn document(pieces: &[&str]) -> String {
    let mut doc = String::with_capacity(pieces.iter().map(|p| p.len() + 1).sum());
    for piece in pieces {
        doc.push_str(piece);
        if !piece.ends_with('\n') {
            doc.push('\n');
        }
    }
    doc
}

/// Pool `name` read from its sections alone (`pieces`, in file order), when
/// they parse and validate without a diagnostic. The pool is deserialized
/// straight from toml's table of the document (what `toml::from_str` of a
/// `pools` map does for each entry), not through a map of one.
fn read_pool(pieces: &[&str], name: &str) -> Option<super::PoolConfig> {
    let doc = document(pieces);
    let pool = match read_plain_pool(&doc, name) {
        Some(pool) => pool,
        None => read_toml_pool(&doc, name)?,
    };
    let mut c = Checker::new(&doc);
    let pool = validate_pool(&mut c, &pool);
    c.is_clean().then_some(pool)
}

/// Pool `name` of `doc` by the plain reader ([`super::plain`]), when the
/// document is in its subset.
fn read_plain_pool(doc: &str, name: &str) -> Option<Spanned<PoolFile>> {
    let pools = super::plain::parse(doc)?.only("pools")?.into_table()?;
    pools.only(name)?.deserialize()
}

/// Pool `name` of `doc` by toml.
fn read_toml_pool(doc: &str, name: &str) -> Option<Spanned<PoolFile>> {
    let mut root = DeTable::parse(doc).ok()?.into_inner().into_iter();
    // The document's one key, `pools`, a table of the one pool.
    let (key, pools) = root.next()?;
    if root.next().is_some() || key.get_ref() != "pools" {
        return None;
    }
    let DeValue::Table(pools) = pools.into_inner() else {
        return None;
    };
    let mut pools = pools.into_iter();
    let (found, pool) = pools.next()?;
    if pools.next().is_some() || found.get_ref() != name {
        return None;
    }
    Spanned::<PoolFile>::deserialize(pool.into_deserializer()).ok()
}

/// Where `old` and `new` differ: `(a, old_end)`, the edit replacing
/// `old[a..old_end]`; `None` when they are equal.
fn edit(old: &[u8], new: &[u8]) -> Option<(usize, usize)> {
    if old == new {
        return None;
    }
    let a = common_prefix(old, new);
    let b = common_suffix(&old[a..], &new[a..]);
    Some((a, old.len() - b))
}

fn common_prefix(x: &[u8], y: &[u8]) -> usize {
    const STEP: usize = 128;
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + STEP <= n && x[i..i + STEP] == y[i..i + STEP] {
        i += STEP;
    }
    while i < n && x[i] == y[i] {
        i += 1;
    }
    i
}

fn common_suffix(x: &[u8], y: &[u8]) -> usize {
    const STEP: usize = 128;
    let n = x.len().min(y.len());
    let (xl, yl) = (x.len(), y.len());
    let mut i = 0;
    while i + STEP <= n && x[xl - i - STEP..xl - i] == y[yl - i - STEP..yl - i] {
        i += STEP;
    }
    while i < n && x[xl - i - 1] == y[yl - i - 1] {
        i += 1;
    }
    i
}

/// The index of a text that parsed: every section, with its pool.
fn build_index(text: &str) -> Option<Index> {
    u32::try_from(text.len()).ok()?;
    let mut ids: HashMap<Box<str>, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut names = String::new();
    let mut names_end: Vec<u32> = Vec::new();
    let scan = scan(text, &mut |name| {
        // A pool's sections usually follow each other: the last name
        // first, then the map.
        if let Some(last) = names_end.len().checked_sub(1) {
            if name_in(&names, &names_end, last) == name {
                return u32::try_from(last).ok();
            }
        }
        if let Some(&id) = ids.get(name) {
            return Some(id);
        }
        let id = u32::try_from(names_end.len()).ok()?;
        names.push_str(name);
        names_end.push(u32::try_from(names.len()).ok()?);
        ids.insert(name.into(), id);
        Some(id)
    })?;
    scan.pools_clean.then_some(Index {
        sections: scan.sections,
        names,
        names_end,
    })
}

/// Name `i` of `names`, the names one after the other, each ending at its
/// entry of `ends`.
fn name_in<'n>(names: &'n str, ends: &[u32], i: usize) -> &'n str {
    let start = i.checked_sub(1).map_or(0, |j| ends[j] as usize);
    &names[start..ends[i] as usize]
}

struct Scan {
    sections: Vec<Section>,
    /// No pool or route key outside their own sections.
    pools_clean: bool,
}

/// Splits `text` into sections (the root first), naming each pool section's
/// pool through `pool_id` (`None`: give up). `None` when the text does not
/// parse.
fn scan(text: &str, pool_id: &mut dyn FnMut(&str) -> Option<u32>) -> Option<Scan> {
    match plain_outline(text) {
        Some((headers, pools_clean)) => scan_headers(&headers, pools_clean, pool_id),
        None => scan_toml(text, pool_id),
    }
}

/// A text in the plain reader's grammar ([`super::plain::outline`]): its
/// headers, and whether no pool or route key is outside their sections
/// (the [`Scanner`]'s rules: a root key `pools` or `routes`, any key under
/// a bare `[pools]`).
fn plain_outline(text: &str) -> Option<(Vec<super::plain::Header<'_>>, bool)> {
    let mut clean = true;
    let headers = super::plain::outline(text, |header, key| match header {
        None => clean &= key != "pools" && key != "routes",
        Some(h) => clean &= header_kind(h.first, h.keys) != HeaderKind::Pools,
    })?;
    Some((headers, clean))
}

/// [`scan`] of a text in the plain grammar, from its headers.
fn scan_headers(
    headers: &[super::plain::Header<'_>],
    pools_clean: bool,
    pool_id: &mut dyn FnMut(&str) -> Option<u32>,
) -> Option<Scan> {
    let mut sections = Vec::with_capacity(headers.len() + 1);
    sections.push(Section {
        start: 0,
        pool: NO_POOL,
    });
    for h in headers {
        let pool = match header_kind(h.first, h.keys) {
            HeaderKind::Pools | HeaderKind::Other => NO_POOL,
            HeaderKind::Pool => match (pool_id)(h.second?) {
                Some(id) if id < ROUTE_PART => id,
                _ => return None,
            },
            HeaderKind::Routes if h.array && h.keys == 1 => ROUTE,
            HeaderKind::Routes => ROUTE_PART,
        };
        sections.push(Section {
            start: u32::try_from(h.start).ok()?,
            pool,
        });
    }
    Some(Scan {
        sections,
        pools_clean,
    })
}

/// What a header is, by its first key and how many keys it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderKind {
    /// `[pools]` (or `[[pools]]`).
    Pools,
    /// `[pools.NAME...]`.
    Pool,
    /// `[[routes]]` is a route (when an array's), any other `routes...`
    /// header a part of one.
    Routes,
    Other,
}

fn header_kind(first: &str, keys: usize) -> HeaderKind {
    match (first, keys) {
        ("pools", 1) => HeaderKind::Pools,
        ("pools", _) => HeaderKind::Pool,
        ("routes", _) => HeaderKind::Routes,
        _ => HeaderKind::Other,
    }
}

/// [`scan`] with toml's parser.
fn scan_toml(text: &str, pool_id: &mut dyn FnMut(&str) -> Option<u32>) -> Option<Scan> {
    let source = Source::new(text);
    let tokens = source.lex().into_vec();
    let mut scanner = Scanner {
        text,
        pool_id,
        sections: vec![Section {
            start: 0,
            pool: NO_POOL,
        }],
        pools_clean: true,
        failed: false,
        depth: 0,
        header: None,
        keys: Vec::new(),
        kind: Kind::Root,
        statement_start: true,
    };
    let mut errors = Failed(false);
    {
        let mut guard = RecursionGuard::new(&mut scanner, MAX_DEPTH);
        toml_parser::parser::parse_document(&tokens, &mut guard, &mut errors);
    }
    if errors.0 || scanner.failed {
        return None;
    }
    Some(Scan {
        sections: scanner.sections,
        pools_clean: scanner.pools_clean,
    })
}

/// A key's name: borrowed from `text`, or decoded (escapes) into a copy.
fn decode_key(text: &str, (span, encoding): (Span, Option<Encoding>)) -> Option<Cow<'_, str>> {
    let raw = text.get(span.start()..span.end())?;
    let mut out = Cow::Borrowed("");
    let mut failed = Failed(false);
    Raw::new_unchecked(raw, encoding, span).decode_key(&mut out, &mut failed);
    (!failed.0).then_some(out)
}

struct Failed(bool);

impl ErrorSink for Failed {
    fn report_error(&mut self, _error: ParseError) {
        self.0 = true;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Root,
    /// A bare `[pools]`.
    Pools,
    Other,
}

struct Scanner<'t, 'f> {
    text: &'t str,
    pool_id: &'f mut dyn FnMut(&str) -> Option<u32>,
    sections: Vec<Section>,
    pools_clean: bool,
    failed: bool,
    /// Inside arrays and inline tables.
    depth: u32,
    /// The open header's start, and whether it is an array's (`[[`).
    header: Option<(usize, bool)>,
    /// The open header's keys.
    keys: Vec<(Span, Option<Encoding>)>,
    kind: Kind,
    /// The next key at depth 0 begins a key/value line.
    statement_start: bool,
}

impl Scanner<'_, '_> {
    fn open(&mut self, span: Span, array: bool) {
        self.header = Some((span.start(), array));
        self.keys.clear();
    }

    fn close(&mut self) {
        let Some((start, array)) = self.header.take() else {
            self.failed = true;
            return;
        };
        let keys = std::mem::take(&mut self.keys);
        // Keys borrow the text (a quoted key with escapes is decoded into
        // a copy); the scanner's other fields stay free to change.
        let text = self.text;
        let first = keys.first().and_then(|&k| decode_key(text, k));
        let (kind, pool) = match (first.as_deref(), keys.len()) {
            (None, _) => {
                self.failed = true;
                (Kind::Other, NO_POOL)
            }
            (Some("pools"), 1) => (Kind::Pools, NO_POOL),
            (Some("pools"), _) => {
                let id = match decode_key(text, keys[1]) {
                    Some(name) => (self.pool_id)(&name),
                    None => None,
                };
                match id {
                    Some(id) if id < ROUTE_PART => (Kind::Other, id),
                    _ => {
                        self.failed = true;
                        (Kind::Other, NO_POOL)
                    }
                }
            }
            (Some("routes"), 1) if array => (Kind::Other, ROUTE),
            (Some("routes"), _) => (Kind::Other, ROUTE_PART),
            (Some(_), _) => (Kind::Other, NO_POOL),
        };
        self.keys = keys;
        self.kind = kind;
        self.statement_start = true;
        match u32::try_from(start) {
            Ok(start) => self.sections.push(Section { start, pool }),
            Err(_) => self.failed = true,
        }
    }
}

impl EventReceiver for Scanner<'_, '_> {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, false);
    }
    fn std_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }
    fn array_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, true);
    }
    fn array_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }
    fn inline_table_open(&mut self, _span: Span, _error: &mut dyn ErrorSink) -> bool {
        self.depth += 1;
        true
    }
    fn inline_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.depth = self.depth.saturating_sub(1);
    }
    fn array_open(&mut self, _span: Span, _error: &mut dyn ErrorSink) -> bool {
        self.depth += 1;
        true
    }
    fn array_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.depth = self.depth.saturating_sub(1);
    }
    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, _error: &mut dyn ErrorSink) {
        if self.header.is_some() {
            self.keys.push((span, encoding));
            return;
        }
        if self.depth > 0 || !self.statement_start {
            return;
        }
        self.statement_start = false;
        match self.kind {
            Kind::Root => match decode_key(self.text, (span, encoding)) {
                Some(k) if k != "pools" && k != "routes" => {}
                Some(_) => self.pools_clean = false,
                None => self.failed = true,
            },
            Kind::Pools => self.pools_clean = false,
            Kind::Other => {}
        }
    }
    fn newline(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        if self.depth == 0 {
            self.statement_start = true;
        }
    }
    fn error(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    /// Pool ids by first sight, as `build_index` gives them.
    fn ids() -> impl FnMut(&str) -> Option<u32> {
        let mut seen: Vec<String> = Vec::new();
        move |name| {
            let id = match seen.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    seen.push(name.to_owned());
                    seen.len() - 1
                }
            };
            u32::try_from(id).ok()
        }
    }

    /// Texts in the plain grammar, put together at random from lines:
    /// their sections and cleanliness from the plain outline are the
    /// toml parser's.
    #[test]
    fn the_plain_outline_scans_as_toml_does() {
        const LINES: &[&str] = &[
            "[pools.a]",
            "[pools.b.versions.blue]",
            "  [pools.a.health]",
            "[pools]",
            "[[pools]]",
            "[[routes]]",
            "[[routes.x]]",
            "[routes.headers]",
            "[routes]",
            "[server]",
            "[[notify]]",
            "pools = 1",
            "routes = { a = 1 }",
            "weight = 90",
            "x = [\n[1],\n]",
            "backends = [\"a:1\", 'b:2'] # c",
            "# [pools.c]",
            "",
        ];
        let mut rand = crate::config::tests::xorshift(0x5eed_0f5c_a700_0001_u64);
        let mut outlined = 0;
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..1 + rand(10) {
                text.push_str(LINES[rand(LINES.len())]);
                text.push('\n');
            }
            let toml = scan_toml(&text, &mut ids()).expect("toml scans it");
            let (headers, clean) = plain_outline(&text).expect("in the plain grammar");
            let plain = scan_headers(&headers, clean, &mut ids()).expect("scanned");
            assert_eq!(plain.sections, toml.sections, "{text:?}");
            assert_eq!(plain.pools_clean, toml.pools_clean, "{text:?}");
            outlined += 1;
        }
        assert_eq!(outlined, 5_000);
        // Outside the grammar: toml's scan.
        assert!(plain_outline("[\"pools\".a]\n").is_none());
        assert!(scan("[\"pools\".a]\n", &mut ids()).is_some());
    }
}
