//! History: every series' samples over the retention period, in compressed
//! [`Chunk`]s, found through an inverted index on label pairs.
//!
//! A series is its full label set, `__name__` included. Each series has a head
//! chunk that takes appends and is sealed after [`SAMPLES_PER_CHUNK`] samples;
//! retention drops whole sealed chunks. The index maps each `name=value` pair
//! to the sorted ids of the series that carry it, so a selector intersects
//! short lists instead of scanning every series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::chunk::{AppendError, Chunk};

/// Samples per chunk before it is sealed (as Prometheus).
pub const SAMPLES_PER_CHUNK: usize = 120;

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

#[derive(Debug)]
struct SeriesHistory {
    labels: Labels,
    sealed: Vec<Chunk>,
    head: Chunk,
}

/// The history of every series.
#[derive(Debug, Default)]
pub struct History {
    series: Vec<Option<SeriesHistory>>,
    ids: HashMap<Labels, u32>,
    postings: HashMap<(String, String), Vec<u32>>,
    values: BTreeMap<String, BTreeSet<String>>,
    samples: u64,
}

/// One series' samples in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series' labels.
    pub labels: Labels,
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

    /// The id of the series with these labels, creating it if new.
    pub fn series_id(&mut self, labels: &[(String, String)]) -> u32 {
        if let Some(&id) = self.ids.get(labels) {
            return id;
        }
        let labels: Labels = labels.into();
        let id = self.series.len() as u32;
        for (name, value) in labels.iter() {
            self.postings
                .entry((name.clone(), value.clone()))
                .or_default()
                .push(id);
            self.values
                .entry(name.clone())
                .or_default()
                .insert(value.clone());
        }
        self.series.push(Some(SeriesHistory {
            labels: Arc::clone(&labels),
            sealed: Vec::new(),
            head: Chunk::new(),
        }));
        self.ids.insert(labels, id);
        id
    }

    /// Appends a sample to a series, after its last one.
    pub fn append(&mut self, id: u32, t: i64, v: f64) -> Result<(), AppendError> {
        let Some(Some(series)) = self.series.get_mut(id as usize) else {
            return Ok(());
        };
        if let Some(last) = series
            .head
            .max_time()
            .or_else(|| series.sealed.last().and_then(Chunk::max_time))
            && t <= last
        {
            return Err(AppendError::OutOfOrder { timestamp: t, last });
        }
        if series.head.len() >= SAMPLES_PER_CHUNK {
            let mut full = std::mem::take(&mut series.head);
            full.shrink_to_fit();
            series.sealed.push(full);
        }
        series.head.append(t, v)?;
        self.samples += 1;
        Ok(())
    }

    /// Ids of the series every matcher accepts, ascending.
    pub fn select_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        // Start from the narrowest equality posting list, if any.
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers {
            if let Matcher::Equal(name, value) = m
                && !value.is_empty()
            {
                let list = self
                    .postings
                    .get(&(name.clone(), value.clone()))
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
        for m in matchers {
            if let Matcher::Regex(name, re) = m
                && !re.is_match("")
            {
                let mut list: Vec<u32> = self
                    .values
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|v| re.is_match(v))
                    .flat_map(|v| {
                        self.postings
                            .get(&(name.clone(), v.clone()))
                            .into_iter()
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
                            .all(|m| m.matches(label_value(&s.labels, m.name())))
                    })
            })
            .collect()
    }

    /// Samples of the matching series with `mint <= t <= maxt`; series with
    /// no sample in the range are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let mut out = Vec::new();
        for id in self.select_ids(matchers) {
            let Some(Some(series)) = self.series.get(id as usize) else {
                continue;
            };
            let mut samples = Vec::new();
            for chunk in series.sealed.iter().chain(std::iter::once(&series.head)) {
                match (chunk.min_time(), chunk.max_time()) {
                    (Some(lo), Some(hi)) if hi >= mint && lo <= maxt => {
                        samples.extend(chunk.iter().filter(|(t, _)| *t >= mint && *t <= maxt));
                    }
                    _ => {}
                }
            }
            if !samples.is_empty() {
                out.push(SeriesSamples {
                    labels: Arc::clone(&series.labels),
                    samples,
                });
            }
        }
        out
    }

    /// Drops sealed chunks whose last sample is before `cutoff`, and series
    /// left with no sample at all. Returns the samples dropped.
    pub fn drop_before(&mut self, cutoff: i64) -> u64 {
        let mut dropped = 0u64;
        let mut emptied = Vec::new();
        for (id, slot) in self.series.iter_mut().enumerate() {
            let Some(series) = slot else { continue };
            series.sealed.retain(|c| {
                let keep = c.max_time().is_some_and(|t| t >= cutoff);
                if !keep {
                    dropped += c.len() as u64;
                }
                keep
            });
            let head_old = series.head.max_time().is_none_or(|t| t < cutoff);
            if series.sealed.is_empty() && head_old {
                dropped += series.head.len() as u64;
                emptied.push(id as u32);
            }
        }
        for id in emptied {
            if let Some(series) = self.series[id as usize].take() {
                self.ids.remove(&series.labels);
                for (name, value) in series.labels.iter() {
                    let key = (name.clone(), value.clone());
                    if let Some(list) = self.postings.get_mut(&key) {
                        list.retain(|x| *x != id);
                        if list.is_empty() {
                            self.postings.remove(&key);
                            if let Some(values) = self.values.get_mut(name) {
                                values.remove(value);
                            }
                        }
                    }
                }
            }
        }
        self.samples -= dropped.min(self.samples);
        dropped
    }

    /// Memory the history takes.
    pub fn stats(&self) -> HistoryStats {
        let mut chunk_bytes = 0;
        let mut series = 0;
        for s in self.series.iter().flatten() {
            series += 1;
            chunk_bytes +=
                s.head.encoded_bytes() + s.sealed.iter().map(Chunk::encoded_bytes).sum::<usize>();
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
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| CpLabel {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                chunks: s
                    .sealed
                    .iter()
                    .chain(std::iter::once(&s.head))
                    .map(|c| {
                        let (bytes, count) = c.raw();
                        CpChunk {
                            bytes: bytes.to_vec(),
                            count,
                        }
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
            let mut chunks = Vec::with_capacity(cp.chunks.len());
            for c in cp.chunks {
                let samples = c.count;
                h.samples += u64::from(samples);
                chunks.push(Chunk::from_raw(c.bytes, samples).ok_or_else(|| {
                    format!("checkpoint: a chunk of series {labels:?} does not decode")
                })?);
            }
            let head = chunks.pop().unwrap_or_default();
            let labels: Labels = labels.into();
            let id = cp.id;
            while h.series.len() <= id as usize {
                h.series.push(None);
            }
            for (name, value) in labels.iter() {
                let list = h.postings.entry((name.clone(), value.clone())).or_default();
                if let Err(at) = list.binary_search(&id) {
                    list.insert(at, id);
                }
                h.values
                    .entry(name.clone())
                    .or_default()
                    .insert(value.clone());
            }
            h.ids.insert(Arc::clone(&labels), id);
            h.series[id as usize] = Some(SeriesHistory {
                labels,
                sealed: chunks,
                head,
            });
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
