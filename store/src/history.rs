//! History: every series' samples over the retention period, in compressed
//! [`Chunk`]s, found through an inverted index on label pairs.
//!
//! A series is its full label set, `__name__` included. Each series has a head
//! chunk that takes appends and is sealed after [`SAMPLES_PER_CHUNK`] samples;
//! retention drops whole sealed chunks. The index maps each `name=value` pair
//! to the sorted ids of the series that carry it, so a selector intersects
//! short lists instead of scanning every series.

use std::collections::BTreeSet;

/// The history's maps are read on every append and every selector: hashed
/// with foldhash (seeded per process), not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use regex::Regex;

use super::chunk::{AppendError, Chunk, SealedChunk};

/// Samples per chunk before it is sealed (as Prometheus).
pub const SAMPLES_PER_CHUNK: usize = 120;

/// A sample this close to when its series' next sample was due is stored
/// at the due time: a sender's clock jitters by a millisecond or two, and a
/// regular timestamp costs 1 bit where a jittered one costs 9. Prometheus
/// does the same for scrapes (`--scrape.timestamp-tolerance`, 2 ms).
pub const TIMESTAMP_TOLERANCE_MS: i64 = 2;

/// A series' labels, sorted by name, `__name__` included.
pub type Labels = Arc<[(String, String)]>;

/// One label matcher of a selector.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `name="value"`
    Equal(String, String),
    /// `name!="value"`
    NotEqual(String, String),
    /// `name=~"regex"`, anchored at both ends.
    Regex(String, Regex),
    /// `name!~"regex"`, anchored at both ends.
    NotRegex(String, Regex),
}

impl Matcher {
    /// An anchored regular-expression matcher, as PromQL means it.
    pub fn regex(name: &str, pattern: &str, negate: bool) -> Result<Self, regex::Error> {
        let re = Regex::new(&format!("^(?s:{pattern})$"))?;
        Ok(if negate {
            Matcher::NotRegex(name.to_string(), re)
        } else {
            Matcher::Regex(name.to_string(), re)
        })
    }

    /// The label this matcher looks at.
    pub fn name(&self) -> &str {
        match self {
            Matcher::Equal(n, _)
            | Matcher::NotEqual(n, _)
            | Matcher::Regex(n, _)
            | Matcher::NotRegex(n, _) => n,
        }
    }

    /// True when a label value (empty when the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equal(_, v) => value == v,
            Matcher::NotEqual(_, v) => value != v,
            Matcher::Regex(_, re) => re.is_match(value),
            Matcher::NotRegex(_, re) => !re.is_match(value),
        }
    }
}

/// Label strings, each held once however many series carry it, and named by
/// a number. A string is counted per use and forgotten with its last series.
#[derive(Debug, Default)]
struct Symbols {
    strings: Vec<Arc<str>>,
    lookup: HashMap<Arc<str>, u32>,
    uses: Vec<u32>,
    free: Vec<u32>,
}

impl Symbols {
    fn get(&self, s: &str) -> Option<u32> {
        self.lookup.get(s).copied()
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.lookup.get(s) {
            self.uses[id as usize] += 1;
            return id;
        }
        let string: Arc<str> = s.into();
        let id = match self.free.pop() {
            Some(id) => {
                self.strings[id as usize] = Arc::clone(&string);
                self.uses[id as usize] = 1;
                id
            }
            None => {
                self.strings.push(Arc::clone(&string));
                self.uses.push(1);
                (self.strings.len() - 1) as u32
            }
        };
        self.lookup.insert(string, id);
        id
    }

    fn release(&mut self, id: u32) {
        let Some(uses) = self.uses.get_mut(id as usize) else {
            return;
        };
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            let string = std::mem::replace(&mut self.strings[id as usize], Arc::from(""));
            self.lookup.remove(&string);
            self.free.push(id);
        }
    }

    fn str(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }
}

#[derive(Debug)]
struct SeriesHistory {
    /// `(name, value)` symbols, sorted by name.
    labels: Box<[(u32, u32)]>,
    sealed: Vec<SealedChunk>,
    head: Chunk,
}

impl SeriesHistory {
    /// Late samples (an agent delivering what it queued while the network or
    /// the collector was down) may arrive after the collector ended the
    /// series with a stale marker. When the marker is the series' last
    /// sample and `t` falls after the sample before it, the marker goes: the
    /// series did not end, its data was on the way. True when removed.
    fn lift_stale_marker(&mut self, t: i64) -> bool {
        let mut samples: Vec<(i64, f64)> = if self.head.is_empty() {
            match self.sealed.last() {
                Some(c) => c.iter().collect(),
                None => return false,
            }
        } else {
            self.head.iter().collect()
        };
        match samples.last() {
            Some((_, v)) if super::chunk::is_stale_marker(*v) => {}
            _ => return false,
        }
        samples.pop();
        let before = samples.last().map(|s| s.0).or_else(|| {
            let sealed_before = if self.head.is_empty() {
                self.sealed.len().checked_sub(2)
            } else {
                self.sealed.len().checked_sub(1)
            };
            sealed_before.map(|i| self.sealed[i].max_time())
        });
        if before.is_some_and(|b| t <= b) {
            return false;
        }
        if self.head.is_empty() {
            self.sealed.pop();
        }
        let mut head = Chunk::new();
        for (st, sv) in samples {
            // Re-appending samples that were in order cannot fail.
            let _ = head.append(st, sv);
        }
        self.head = head;
        true
    }
}

/// The history of every series.
///
/// Memory per series is kept small: label strings are interned, a series'
/// labels are a few symbol numbers, series are found by a hash of their labels
/// (compared in full on a hit), and sealed chunks keep only their bytes.
#[derive(Debug, Default)]
pub struct History {
    series: Vec<Option<SeriesHistory>>,
    hasher: std::hash::RandomState,
    /// Label hash → series id.
    ids: HashMap<u64, u32>,
    /// Further series whose labels hash the same as the one in `ids`.
    collisions: HashMap<u64, Vec<u32>>,
    symbols: Symbols,
    /// `(name, value)` symbols → ascending ids of the series that carry it.
    postings: HashMap<(u32, u32), Vec<u32>>,
    /// Label name symbol → the value symbols it takes.
    values: HashMap<u32, BTreeSet<u32>>,
    samples: u64,
    /// Series removed so far (their ids are never reused, but a holder of
    /// an id learns from this that it may be gone).
    removals: u64,
    /// Bumped whenever the index or the retained data changes in a way
    /// that voids [`History::value_lists`] (a series added or removed,
    /// chunks dropped for retention).
    index_generation: u64,
    /// Per label name, its values sorted as text, each with one series that
    /// carries it and that series' last sample time when last looked at:
    /// `label/<name>/values` without selectors (Grafana's variables) reads
    /// this list instead of four scattered memory reads per value.
    value_lists: std::sync::Mutex<HashMap<u32, ValueList>>,
    /// Samples appended since the last [`History::take_appended`], kept
    /// only while a tap is on (remote_write): series id, time as stored,
    /// value.
    appended: Option<Vec<(u32, i64, f64)>>,
    /// Tests set it to make every label set hash alike.
    #[cfg(test)]
    constant_hash: bool,
}

/// The values of one label name, for [`History::label_index`].
#[derive(Debug, Default)]
struct ValueList {
    generation: u64,
    /// `(value symbol, a series carrying it, that series' last time)`,
    /// sorted by the value's text.
    entries: Vec<(u32, u32, i64)>,
}

/// One series' samples in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series' labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(milliseconds, value)` in time order.
    pub samples: Vec<(i64, f64)>,
}

/// What memory the history takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryStats {
    /// Series held.
    pub series: usize,
    /// Samples held.
    pub samples: u64,
    /// Bytes of encoded chunk data.
    pub chunk_bytes: usize,
}

impl History {
    /// Empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn hash<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        for (name, value) in pairs {
            // 0xff never occurs in UTF-8, so it separates strings unambiguously.
            h.write(name.as_bytes());
            h.write_u8(0xff);
            h.write(value.as_bytes());
            h.write_u8(0xff);
        }
        #[cfg(test)]
        if self.constant_hash {
            return 7;
        }
        h.finish()
    }

    fn same_labels(&self, id: u32, labels: &[(String, String)]) -> bool {
        self.series
            .get(id as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| {
                s.labels.len() == labels.len()
                    && s.labels.iter().zip(labels).all(|((n, v), (name, value))| {
                        self.symbols.str(*n) == name && self.symbols.str(*v) == value
                    })
            })
    }

    fn find(&self, hash: u64, labels: &[(String, String)]) -> Option<u32> {
        let first = self.ids.get(&hash).copied();
        first
            .into_iter()
            .chain(self.collisions.get(&hash).into_iter().flatten().copied())
            .find(|id| self.same_labels(*id, labels))
    }

    /// The id of the series with these labels (sorted by name), creating it
    /// if new.
    pub fn series_id(&mut self, labels: &[(String, String)]) -> u32 {
        let hash = self.hash(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if let Some(id) = self.find(hash, labels) {
            return id;
        }
        let id = self.series.len() as u32;
        self.insert(id, hash, labels, Vec::new(), Chunk::new());
        id
    }

    fn insert(
        &mut self,
        id: u32,
        hash: u64,
        labels: &[(String, String)],
        sealed: Vec<SealedChunk>,
        head: Chunk,
    ) {
        self.index_generation += 1;
        let symbols: Box<[(u32, u32)]> = labels
            .iter()
            .map(|(name, value)| (self.symbols.intern(name), self.symbols.intern(value)))
            .collect();
        for &(name, value) in symbols.iter() {
            let list = self.postings.entry((name, value)).or_default();
            // New series take the highest id; only a restore inserts in between.
            match list.last() {
                Some(&last) if last > id => {
                    if let Err(at) = list.binary_search(&id) {
                        list.insert(at, id);
                    }
                }
                _ => list.push(id),
            }
            self.values.entry(name).or_default().insert(value);
        }
        while self.series.len() <= id as usize {
            self.series.push(None);
        }
        self.series[id as usize] = Some(SeriesHistory {
            labels: symbols,
            sealed,
            head,
        });
        match self.ids.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(hash).or_default().push(id);
            }
        }
    }

    fn remove(&mut self, id: u32) {
        let Some(series) = self.series.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.removals += 1;
        self.index_generation += 1;
        let hash = self.hash(
            series
                .labels
                .iter()
                .map(|(n, v)| (self.symbols.str(*n), self.symbols.str(*v))),
        );
        if self.ids.get(&hash) == Some(&id) {
            self.ids.remove(&hash);
            if let Some(list) = self.collisions.get_mut(&hash) {
                if let Some(next) = list.pop() {
                    self.ids.insert(hash, next);
                }
                if list.is_empty() {
                    self.collisions.remove(&hash);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&hash) {
            list.retain(|x| *x != id);
            if list.is_empty() {
                self.collisions.remove(&hash);
            }
        }
        for &(name, value) in series.labels.iter() {
            if let Some(list) = self.postings.get_mut(&(name, value)) {
                if let Ok(at) = list.binary_search(&id) {
                    list.remove(at);
                }
                if list.is_empty() {
                    self.postings.remove(&(name, value));
                    if let Some(values) = self.values.get_mut(&name) {
                        values.remove(&value);
                        if values.is_empty() {
                            self.values.remove(&name);
                        }
                    }
                }
            }
            self.symbols.release(name);
            self.symbols.release(value);
        }
    }

    /// Appends a sample to a series, after its last one.
    pub fn append(&mut self, id: u32, t: i64, v: f64) -> Result<(), AppendError> {
        let Some(Some(series)) = self.series.get_mut(id as usize) else {
            return Ok(());
        };
        if let Some(last) = series
            .head
            .max_time()
            .or_else(|| series.sealed.last().map(SealedChunk::max_time))
            && t <= last
            && !series.lift_stale_marker(t)
        {
            return Err(AppendError::OutOfOrder { timestamp: t, last });
        }
        if series.head.len() >= SAMPLES_PER_CHUNK {
            let full = std::mem::take(&mut series.head);
            if let Some(sealed) = full.seal() {
                // The next chunk will most likely take about as many bytes.
                let size = sealed.encoded_bytes();
                series.head = Chunk::with_capacity(size + size / 8 + 8);
                // Exact growth: a Vec doubling to 4 would waste 120 bytes a series.
                series.sealed.reserve_exact(1);
                series.sealed.push(sealed.compact());
            }
        }
        let t = match series.head.expected_next() {
            Some(due) if t != due && (t - due).abs() <= TIMESTAMP_TOLERANCE_MS => due,
            _ => t,
        };
        series.head.append(t, v)?;
        self.samples += 1;
        if let Some(out) = &mut self.appended {
            out.push((id, t, v));
        }
        Ok(())
    }

    /// Loads the byte that each of `ids`' head chunk writes next. Appends
    /// to many series touch one scattered chunk each, and a cache miss per
    /// sample was most of a push's cost; loaded first, in a loop with
    /// nothing else to do, the misses overlap instead of coming one by one.
    pub fn warm(&self, ids: impl Iterator<Item = u32>) {
        for id in ids {
            if let Some(Some(series)) = self.series.get(id as usize) {
                std::hint::black_box(series.head.last_byte());
            }
        }
    }

    /// Starts keeping what is appended, for [`History::take_appended`].
    pub fn keep_appended(&mut self) {
        self.appended.get_or_insert_with(Vec::new);
    }

    /// What was appended since the last call (when kept), each sample with
    /// its series' labels, sorted by name.
    pub fn take_appended(&mut self) -> Vec<crate::WrittenSample> {
        let Some(appended) = self.appended.as_mut() else {
            return Vec::new();
        };
        let taken = std::mem::take(appended);
        taken
            .into_iter()
            .filter_map(|(id, t, v)| {
                let series = self.series.get(id as usize)?.as_ref()?;
                Some((self.labels_of(series), t, v))
            })
            .collect()
    }

    /// The value of the label named by symbol `name` (`None`: no series has
    /// that label) in a series, empty when absent.
    fn value_of(&self, series: &SeriesHistory, name: Option<u32>) -> &str {
        name.and_then(|name| series.labels.iter().find(|(n, _)| *n == name))
            .map_or("", |(_, v)| self.symbols.str(*v))
    }

    /// Ids of the series every matcher accepts, ascending.
    pub fn select_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        let names: Vec<Option<u32>> = matchers
            .iter()
            .map(|m| self.symbols.get(m.name()))
            .collect();
        // Start from the narrowest equality posting list, if any.
        let mut candidates: Option<Vec<u32>> = None;
        for (m, name) in matchers.iter().zip(&names) {
            if let Matcher::Equal(_, value) = m
                && !value.is_empty()
            {
                let list = name
                    .zip(self.symbols.get(value))
                    .and_then(|key| self.postings.get(&key))
                    .cloned()
                    .unwrap_or_default();
                candidates = Some(match candidates {
                    None => list,
                    Some(c) => intersect(&c, &list),
                });
            }
        }
        // Regex matchers that cannot match the empty string need the label:
        // union the postings of the values they accept.
        for (m, name) in matchers.iter().zip(&names) {
            if let Matcher::Regex(_, re) = m
                && !re.is_match("")
            {
                let mut list: Vec<u32> = name
                    .and_then(|name| self.values.get(&name).map(|values| (name, values)))
                    .into_iter()
                    .flat_map(|(name, values)| {
                        values
                            .iter()
                            .filter(|v| re.is_match(self.symbols.str(**v)))
                            .flat_map(move |v| self.postings.get(&(name, *v)))
                            .flatten()
                            .copied()
                    })
                    .collect();
                list.sort_unstable();
                list.dedup();
                candidates = Some(match candidates {
                    None => list,
                    Some(c) => intersect(&c, &list),
                });
            }
        }
        let candidates: Box<dyn Iterator<Item = u32>> = match candidates {
            Some(c) => Box::new(c.into_iter()),
            None => Box::new(0..self.series.len() as u32),
        };
        candidates
            .filter(|id| {
                self.series
                    .get(*id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| {
                        matchers
                            .iter()
                            .zip(&names)
                            .all(|(m, name)| m.matches(self.value_of(s, *name)))
                    })
            })
            .collect()
    }

    /// A series' labels as stored, empty values included (its identity).
    fn stored_labels(&self, series: &SeriesHistory) -> Vec<(String, String)> {
        series
            .labels
            .iter()
            .map(|(n, v)| {
                (
                    self.symbols.str(*n).to_string(),
                    self.symbols.str(*v).to_string(),
                )
            })
            .collect()
    }

    /// A series' labels as queries see them: an empty value is an absent
    /// label, as in Prometheus.
    fn labels_of(&self, series: &SeriesHistory) -> Vec<(String, String)> {
        series
            .labels
            .iter()
            .filter(|(_, v)| !self.symbols.str(*v).is_empty())
            .map(|(n, v)| {
                (
                    self.symbols.str(*n).to_string(),
                    self.symbols.str(*v).to_string(),
                )
            })
            .collect()
    }

    /// Samples of the matching series with `mint <= t <= maxt`; series with
    /// no sample in the range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.select_ids(matchers)
            .into_iter()
            .filter_map(|id| self.series_samples(id, mint, maxt))
            .collect()
    }

    /// Samples of one series (by [`History::select_ids`]'s id) with
    /// `mint <= t <= maxt`; `None` when it has none or is gone.
    pub fn series_samples(&self, id: u32, mint: i64, maxt: i64) -> Option<SeriesSamples> {
        let series = self.series.get(id as usize)?.as_ref()?;
        let mut samples = Vec::new();
        for chunk in &series.sealed {
            if chunk.max_time() >= mint && chunk.min_time() <= maxt {
                samples.extend(chunk.iter().filter(|(t, _)| *t >= mint && *t <= maxt));
            }
        }
        if let (Some(lo), Some(hi)) = (series.head.min_time(), series.head.max_time())
            && hi >= mint
            && lo <= maxt
        {
            samples.extend(series.head.iter().filter(|(t, _)| *t >= mint && *t <= maxt));
        }
        (!samples.is_empty()).then(|| SeriesSamples {
            labels: self.labels_of(series),
            samples,
        })
    }

    /// True when the series has a sample in `[mint, maxt]`, judged by its
    /// chunks' first and last times (no sample is decoded).
    fn overlaps(series: &SeriesHistory, mint: i64, maxt: i64) -> bool {
        // The head first, then the sealed chunks newest first: ranges asked
        // for are mostly recent, and the head is inline in the series (the
        // sealed chunks are one more memory read away).
        matches!(
            (series.head.min_time(), series.head.max_time()),
            (Some(lo), Some(hi)) if hi >= mint && lo <= maxt
        ) || series
            .sealed
            .iter()
            .rev()
            .any(|c| c.max_time() >= mint && c.min_time() <= maxt)
    }

    /// Ids of the series that any of `selectors` accepts (every series when
    /// there is none) and that have a sample in `[mint, maxt]`, ascending.
    fn ids_in_range(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<u32> {
        let mut ids: Vec<u32> = if selectors.is_empty() {
            (0..self.series.len() as u32).collect()
        } else {
            let mut ids: Vec<u32> = selectors.iter().flat_map(|m| self.select_ids(m)).collect();
            if selectors.len() > 1 {
                ids.sort_unstable();
                ids.dedup();
            }
            ids
        };
        ids.retain(|id| {
            self.series
                .get(*id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| Self::overlaps(s, mint, maxt))
        });
        ids
    }

    /// Label sets of the series that any of `selectors` accepts (every
    /// series when there is none) with a sample in `[mint, maxt]`, sorted;
    /// at most `limit`, and whether more were left out. Prometheus's
    /// `/api/v1/series`.
    pub fn series_labels(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> (Vec<Vec<(String, String)>>, bool) {
        let ids = self.ids_in_range(selectors, mint, maxt);
        let mut out: Vec<Vec<(String, String)>> = ids
            .iter()
            .filter_map(|id| self.series.get(*id as usize).and_then(Option::as_ref))
            .map(|s| self.labels_of(s))
            .collect();
        out.sort_unstable();
        let truncated = out.len() > limit;
        out.truncate(limit);
        (out, truncated)
    }

    /// Label names (`name == None`) or the values of label `name` over the
    /// series that any of `selectors` accepts (every series when there is
    /// none) with a sample in `[mint, maxt]`: sorted, distinct, at most
    /// `limit`, and whether more were left out. Prometheus's `/api/v1/labels`
    /// and `/api/v1/label/<name>/values`.
    pub fn label_index(
        &self,
        name: Option<&str>,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let name = match name {
            Some(n) => match self.symbols.get(n) {
                Some(symbol) => Some(symbol),
                None => return (Vec::new(), false),
            },
            None => None,
        };
        if selectors.is_empty()
            && let Some(n) = name
        {
            return self.label_values(n, mint, maxt, limit);
        }
        let mut symbols: std::collections::HashSet<u32, foldhash::fast::RandomState> =
            Default::default();
        if selectors.is_empty() {
            // Without selectors, walk the index instead of every series: a
            // value (or a name) is in when one series of its postings has a
            // sample in the range, and the walk stops at that series.
            let live = |ids: &Vec<u32>| {
                ids.iter().any(|id| {
                    self.series
                        .get(*id as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|s| Self::overlaps(s, mint, maxt))
                })
            };
            let names: Vec<u32> = match name {
                Some(n) => vec![n],
                None => self.values.keys().copied().collect(),
            };
            for n in names {
                for v in self.values.get(&n).into_iter().flatten() {
                    if self.symbols.str(*v).is_empty()
                        || !self.postings.get(&(n, *v)).is_some_and(live)
                    {
                        continue;
                    }
                    if name.is_some() {
                        symbols.insert(*v);
                    } else {
                        symbols.insert(n);
                        break;
                    }
                }
            }
        }
        let by_series = if selectors.is_empty() {
            Vec::new()
        } else {
            self.ids_in_range(selectors, mint, maxt)
        };
        for id in by_series {
            let Some(Some(series)) = self.series.get(id as usize) else {
                continue;
            };
            match name {
                Some(name) => {
                    if let Some((_, v)) = series.labels.iter().find(|(n, _)| *n == name) {
                        symbols.insert(*v);
                    }
                }
                None => symbols.extend(
                    series
                        .labels
                        .iter()
                        .filter(|(_, v)| !self.symbols.str(*v).is_empty())
                        .map(|(n, _)| *n),
                ),
            }
        }
        // Sorted and cut as borrowed text; only what is given back is copied.
        let mut texts: Vec<&str> = symbols
            .into_iter()
            .map(|s| self.symbols.str(s))
            .filter(|s| !s.is_empty())
            .collect();
        texts.sort_unstable();
        let truncated = texts.len() > limit;
        texts.truncate(limit);
        (texts.into_iter().map(str::to_string).collect(), truncated)
    }

    /// The values of label `name` that a series with a sample in
    /// `[mint, maxt]` carries, sorted, at most `limit` (and whether more
    /// were left out). A value whose remembered series' last sample falls
    /// in the range is in without looking further (that sample exists:
    /// removals and retention void the list); any other is checked against
    /// every series carrying it, and the list remembers what it found.
    fn label_values(&self, name: u32, mint: i64, maxt: i64, limit: usize) -> (Vec<String>, bool) {
        let mut lists = self
            .value_lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = lists.entry(name).or_default();
        if list.generation != self.index_generation || list.entries.is_empty() {
            list.entries = self
                .values
                .get(&name)
                .into_iter()
                .flatten()
                .filter(|v| !self.symbols.str(**v).is_empty())
                .map(|v| (*v, u32::MAX, i64::MIN))
                .collect();
            list.entries
                .sort_unstable_by(|a, b| self.symbols.str(a.0).cmp(self.symbols.str(b.0)));
            list.generation = self.index_generation;
        }
        let mut out = Vec::new();
        let mut truncated = false;
        for entry in list.entries.iter_mut() {
            let (value, _, last) = *entry;
            let live = (mint..=maxt).contains(&last)
                || self
                    .postings
                    .get(&(name, value))
                    .into_iter()
                    .flatten()
                    .find_map(|id| {
                        let series = self.series.get(*id as usize)?.as_ref()?;
                        Self::overlaps(series, mint, maxt).then(|| {
                            let last = series
                                .head
                                .max_time()
                                .or_else(|| series.sealed.last().map(SealedChunk::max_time))
                                .unwrap_or(i64::MIN);
                            (*id, last)
                        })
                    })
                    .map(|(id, last)| *entry = (value, id, last))
                    .is_some();
            if !live {
                continue;
            }
            if out.len() == limit {
                truncated = true;
                break;
            }
            out.push(self.symbols.str(value).to_string());
        }
        (out, truncated)
    }

    /// Drops sealed chunks whose last sample is before `cutoff`, and series
    /// left with no sample at all. Returns the samples dropped.
    pub fn drop_before(&mut self, cutoff: i64) -> u64 {
        let mut dropped = 0u64;
        let mut emptied = Vec::new();
        for (id, slot) in self.series.iter_mut().enumerate() {
            let Some(series) = slot else { continue };
            let before = series.sealed.len();
            series.sealed.retain(|c| {
                let keep = c.max_time() >= cutoff;
                if !keep {
                    dropped += c.len() as u64;
                }
                keep
            });
            if series.sealed.len() < before {
                series.sealed.shrink_to_fit();
            }
            let head_old = series.head.max_time().is_none_or(|t| t < cutoff);
            if series.sealed.is_empty() && head_old {
                dropped += series.head.len() as u64;
                emptied.push(id as u32);
            }
        }
        for id in emptied {
            self.remove(id);
        }
        if dropped > 0 {
            self.index_generation += 1;
        }
        self.samples -= dropped.min(self.samples);
        dropped
    }

    /// Series removed so far.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Memory the history takes.
    pub fn stats(&self) -> HistoryStats {
        let mut chunk_bytes = 0;
        let mut series = 0;
        for s in self.series.iter().flatten() {
            series += 1;
            chunk_bytes += s.head.encoded_bytes()
                + s.sealed
                    .iter()
                    .map(SealedChunk::encoded_bytes)
                    .sum::<usize>();
        }
        HistoryStats {
            series,
            samples: self.samples,
            chunk_bytes,
        }
    }
}

impl History {
    /// Every series with its id and chunks, for a checkpoint.
    pub fn snapshot(&self) -> Vec<super::checkpoint::CpHistorySeries> {
        use super::checkpoint::{CpChunk, CpHistorySeries, CpLabel};
        self.series
            .iter()
            .enumerate()
            .filter_map(|(id, s)| s.as_ref().map(|s| (id, s)))
            .map(|(id, s)| CpHistorySeries {
                id: id as u32,
                labels: self
                    .stored_labels(s)
                    .into_iter()
                    .map(|(name, value)| CpLabel { name, value })
                    .collect(),
                chunks: s
                    .sealed
                    .iter()
                    .map(SealedChunk::raw)
                    .chain(std::iter::once({
                        let (bytes, count) = s.head.raw();
                        (bytes, count, 0)
                    }))
                    .map(|(bytes, count, encoding)| CpChunk {
                        bytes: bytes.to_vec(),
                        count,
                        encoding,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Rebuilds a history from a checkpoint, keeping every series' id.
    pub fn restore(series: Vec<super::checkpoint::CpHistorySeries>) -> Result<Self, String> {
        let mut h = History::new();
        for cp in series {
            let labels: Vec<(String, String)> =
                cp.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let last = cp.chunks.len().saturating_sub(1);
            let mut sealed = Vec::with_capacity(last);
            let mut head = Chunk::new();
            for (i, c) in cp.chunks.into_iter().enumerate() {
                let count = c.count;
                h.samples += u64::from(count);
                let bad = || format!("checkpoint: a chunk of series {labels:?} does not decode");
                if i == last {
                    head = Chunk::from_raw(c.bytes, count).ok_or_else(bad)?;
                } else {
                    sealed.push(SealedChunk::from_raw(c.bytes, count, c.encoding).ok_or_else(bad)?);
                }
            }
            let hash = h.hash(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            if h.find(hash, &labels).is_some() {
                return Err(format!("checkpoint: series {labels:?} is held twice"));
            }
            h.insert(cp.id, hash, &labels, sealed, head);
        }
        Ok(h)
    }
}

/// The value of `name` in sorted `labels`, empty when absent.
pub fn label_value<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .map(|i| labels[i].1.as_str())
        .unwrap_or("")
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    }

    fn eq(n: &str, v: &str) -> Matcher {
        Matcher::Equal(n.into(), v.into())
    }

    #[test]
    fn label_calls_without_selectors_agree_with_a_selector_of_everything()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut h = History::new();
        let early = h.series_id(&labels(&[("__name__", "a"), ("x", "1"), ("e", "")]));
        let late = h.series_id(&labels(&[("__name__", "b"), ("x", "2"), ("y", "3")]));
        for t in 0..10 {
            h.append(early, t * 1000, 1.0)?;
            h.append(late, 100_000 + t * 1000, 2.0)?;
        }
        let all = vec![vec![Matcher::regex("__name__", ".+", false)?]];
        for (name, mint, maxt) in [
            (Some("x"), 0, 50_000),
            (Some("x"), 0, 200_000),
            (Some("x"), 60_000, 90_000),
            (Some("y"), 0, 50_000),
            (Some("e"), 0, 200_000),
            (Some("nope"), 0, 200_000),
            (None, 0, 50_000),
            (None, 100_000, 200_000),
            (None, 0, 200_000),
        ] {
            assert_eq!(
                h.label_index(name, &[], mint, maxt, 100),
                h.label_index(name, &all, mint, maxt, 100),
                "{name:?} {mint} {maxt}"
            );
        }
        assert_eq!(h.label_index(Some("x"), &[], 0, 50_000, 100).0, ["1"]);
        assert_eq!(
            h.label_index(None, &[], 100_000, 200_000, 100).0,
            ["__name__", "x", "y"]
        );
        assert!(h.label_index(Some("e"), &[], 0, 200_000, 100).0.is_empty());
        Ok(())
    }

    proptest::proptest! {
        /// The remembered value lists answer as a walk of every series
        /// does, across appends after a first answer, new series and
        /// retention, for any range and limit.
        #[test]
        fn label_values_agree_with_a_walk_of_every_series(
            rounds in proptest::collection::vec(
                (
                    proptest::collection::vec((0..5u8, 0..3u8, 0..20i64), 1..6),
                    proptest::collection::vec((0..31i64, 0..31i64, 1..4usize), 1..4),
                    proptest::option::of(0..400i64),
                    proptest::option::of((0..5u8, 0..3u8)),
                ),
                1..5,
            )
        ) {
            let mut h = History::new();
            let all = vec![vec![Matcher::regex("__name__", ".+", false)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?]];
            let mut clock = 0i64;
            for (appends, queries, cutoff, burst) in rounds {
                // Enough samples to seal a chunk, which retention can drop
                // while the series lives on.
                if let Some((x, y)) = burst {
                    let id = h.series_id(&labels(&[
                        ("__name__", "m"),
                        ("x", &x.to_string()),
                        ("y", &y.to_string()),
                    ]));
                    for _ in 0..(SAMPLES_PER_CHUNK + 10) {
                        clock += 1;
                        let _ = h.append(id, clock * 1000, 1.0);
                    }
                }
                for (x, y, gap) in appends {
                    let id = h.series_id(&labels(&[
                        ("__name__", "m"),
                        ("x", &x.to_string()),
                        ("y", &y.to_string()),
                    ]));
                    clock += 1 + gap;
                    let _ = h.append(id, clock * 1000, 1.0);
                }
                if let Some(c) = cutoff {
                    h.drop_before(c * 1000);
                }
                for (a, b, limit) in queries {
                    let (a, b) = (a * clock / 30, b * clock / 30);
                    let (mint, maxt) = (a.min(b) * 1000, a.max(b) * 1000 + 500);
                    for name in ["x", "y"] {
                        proptest::prop_assert_eq!(
                            h.label_index(Some(name), &[], mint, maxt, limit),
                            h.label_index(Some(name), &all, mint, maxt, limit),
                            "{} {} {} {}", name, mint, maxt, limit
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_remembered_sample_dropped_for_retention_is_not_counted() -> Result<(), AppendError> {
        let mut h = History::new();
        let id = h.series_id(&labels(&[("__name__", "m"), ("x", "1")]));
        for t in 1..=130 {
            h.append(id, t * 1000, 1.0)?;
        }
        // Remembers sample 130 s as the series' last.
        assert_eq!(h.label_index(Some("x"), &[], 125_000, 130_000, 10).0, ["1"]);
        for t in 131..=250 {
            h.append(id, t * 1000, 1.0)?;
        }
        h.drop_before(241_000);
        assert!(
            h.label_index(Some("x"), &[], 125_000, 135_000, 10)
                .0
                .is_empty(),
            "the samples of that range are gone"
        );
        assert_eq!(h.label_index(Some("x"), &[], 245_000, 250_000, 10).0, ["1"]);
        Ok(())
    }

    fn fill() -> Result<History, AppendError> {
        let mut h = History::new();
        for (i, instance) in ["a", "b", "c"].iter().enumerate() {
            for mode in ["idle", "user"] {
                let id = h.series_id(&labels(&[
                    ("__name__", "cpu"),
                    ("instance", instance),
                    ("mode", mode),
                ]));
                for t in 0..300 {
                    h.append(id, t * 1000, (t as f64) * (i as f64 + 1.0))?;
                }
            }
        }
        let id = h.series_id(&labels(&[("__name__", "up"), ("instance", "a")]));
        h.append(id, 0, 1.0)?;
        Ok(h)
    }

    #[test]
    fn selectors_use_every_matcher_kind() -> Result<(), Box<dyn std::error::Error>> {
        let h = fill()?;
        assert_eq!(h.select_ids(&[eq("__name__", "cpu")]).len(), 6);
        assert_eq!(
            h.select_ids(&[eq("__name__", "cpu"), eq("mode", "idle")])
                .len(),
            3
        );
        assert_eq!(
            h.select_ids(&[
                eq("__name__", "cpu"),
                Matcher::NotEqual("instance".into(), "a".into())
            ])
            .len(),
            4
        );
        assert_eq!(
            h.select_ids(&[Matcher::regex("instance", "a|b", false)?])
                .len(),
            5
        );
        assert_eq!(
            h.select_ids(&[
                eq("__name__", "cpu"),
                Matcher::regex("instance", "a|b", true)?
            ])
            .len(),
            2
        );
        // A label that is absent matches the empty string.
        assert_eq!(h.select_ids(&[eq("mode", "")]).len(), 1);
        assert_eq!(
            h.select_ids(&[Matcher::regex("mode", ".*", false)?]).len(),
            7
        );
        assert!(h.select_ids(&[eq("__name__", "nope")]).is_empty());
        Ok(())
    }

    #[test]
    fn ranges_span_sealed_and_head_chunks() -> Result<(), AppendError> {
        let h = fill()?;
        let got = h.select(
            &[
                eq("__name__", "cpu"),
                eq("instance", "b"),
                eq("mode", "user"),
            ],
            100_000,
            250_000,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 151);
        assert_eq!(got[0].samples[0], (100_000, 200.0));
        assert_eq!(got[0].samples[150], (250_000, 500.0));
        Ok(())
    }

    #[test]
    fn a_checkpoint_restores_every_series_and_takes_more_samples()
    -> Result<(), Box<dyn std::error::Error>> {
        let h = fill()?;
        let mut back = History::restore(h.snapshot())?;
        assert_eq!(back.stats(), h.stats());
        let m = [
            eq("__name__", "cpu"),
            eq("instance", "b"),
            eq("mode", "user"),
        ];
        assert_eq!(back.select(&m, 0, i64::MAX), h.select(&m, 0, i64::MAX));
        let id = back.series_id(&labels(&[
            ("__name__", "cpu"),
            ("instance", "b"),
            ("mode", "user"),
        ]));
        back.append(id, 300_000, 1.0)?;
        assert_eq!(
            back.select(&m, 300_000, 300_000)[0].samples,
            vec![(300_000, 1.0)]
        );
        Ok(())
    }

    #[test]
    fn series_whose_labels_hash_alike_stay_apart() -> Result<(), AppendError> {
        let mut h = History {
            constant_hash: true,
            ..History::default()
        };
        let names = ["a", "b", "c"];
        let ids: Vec<u32> = names
            .iter()
            .map(|n| h.series_id(&labels(&[("__name__", n)])))
            .collect();
        assert_eq!(ids, vec![0, 1, 2]);
        for (i, id) in ids.iter().enumerate() {
            h.append(*id, 1000 * (i as i64 + 1), i as f64)?;
            assert_eq!(h.series_id(&labels(&[("__name__", names[i])])), *id);
        }
        // Retention drops "a" (the one in the first map) and "b" (a collision).
        h.append(ids[2], 5000, 9.0)?;
        h.drop_before(4000);
        assert!(h.select_ids(&[eq("__name__", "a")]).is_empty());
        let c = h.series_id(&labels(&[("__name__", "c")]));
        assert_eq!(c, 2, "c kept its id");
        let a = h.series_id(&labels(&[("__name__", "a")]));
        assert_eq!(a, 3, "a comes back as a new series");
        assert_eq!(h.select_ids(&[eq("__name__", "a")]), vec![3]);
        Ok(())
    }

    #[test]
    fn label_strings_are_forgotten_with_their_last_series() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut h = History::new();
        let keep = h.series_id(&labels(&[("__name__", "up"), ("pod", "p1")]));
        let gone = h.series_id(&labels(&[("__name__", "up"), ("pod", "p2")]));
        h.append(keep, 10_000, 1.0)?;
        h.append(gone, 1_000, 1.0)?;
        h.drop_before(5_000);
        assert!(h.symbols.get("p2").is_none());
        assert!(h.symbols.get("p1").is_some());
        assert_eq!(
            h.select_ids(&[Matcher::regex("pod", "p.*", false)?]),
            vec![keep]
        );
        // The freed symbol is reused by the next new string.
        let again = h.series_id(&labels(&[("__name__", "up"), ("pod", "p3")]));
        assert_eq!(h.select_ids(&[eq("pod", "p3")]), vec![again]);
        assert_eq!(h.select_ids(&[eq("pod", "p1")]), vec![keep]);
        Ok(())
    }

    #[test]
    fn late_samples_lift_a_trailing_stale_marker() -> Result<(), AppendError> {
        let mut h = History::new();
        let id = h.series_id(&labels(&[("__name__", "x")]));
        for t in 1..=3 {
            h.append(id, t * 10_000, t as f64)?;
        }
        // The agent went quiet; the collector ended the series at 60 s.
        h.append(id, 60_000, crate::chunk::stale_marker())?;
        // Its queued samples arrive: they replace the marker.
        for t in 4..=8 {
            h.append(id, t * 10_000, t as f64)?;
        }
        let got = h.select(&[eq("__name__", "x")], 0, i64::MAX);
        let times: Vec<i64> = got[0].samples.iter().map(|s| s.0).collect();
        assert_eq!(times, (1..=8).map(|t| t * 10_000).collect::<Vec<_>>());
        assert!(got[0].samples.iter().all(|s| !s.1.is_nan()));
        // A sample older than the last real one is still refused.
        assert!(h.append(id, 75_000, 0.0).is_err());
        // Once real data follows the marker, the marker stays.
        let id = h.series_id(&labels(&[("__name__", "y")]));
        h.append(id, 1_000, 1.0)?;
        h.append(id, 5_000, crate::chunk::stale_marker())?;
        h.append(id, 6_000, 1.0)?;
        assert!(
            h.append(id, 2_000, 2.0).is_err(),
            "the marker is no longer last"
        );
        Ok(())
    }

    #[test]
    fn out_of_order_appends_are_refused() -> Result<(), AppendError> {
        let mut h = History::new();
        let id = h.series_id(&labels(&[("__name__", "x")]));
        h.append(id, 10, 1.0)?;
        assert!(h.append(id, 10, 2.0).is_err());
        assert!(h.append(id, 5, 2.0).is_err());
        Ok(())
    }

    #[test]
    fn retention_drops_whole_chunks_and_empty_series() -> Result<(), AppendError> {
        let mut h = fill()?;
        let before = h.stats();
        assert_eq!(before.samples, 6 * 300 + 1);
        // Chunks hold 120 samples: [0,119], [120,239], head [240,299] seconds.
        let dropped = h.drop_before(130_000);
        assert_eq!(dropped, 6 * 120 + 1);
        assert!(h.select_ids(&[eq("__name__", "up")]).is_empty());
        let got = h.select(
            &[
                eq("__name__", "cpu"),
                eq("instance", "a"),
                eq("mode", "idle"),
            ],
            0,
            i64::MAX,
        );
        assert_eq!(got[0].samples[0].0, 120_000);
        Ok(())
    }
}
