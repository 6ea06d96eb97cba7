//! The store: the latest state of every series of every agent, and each
//! agent's last applied batch, which is what makes applying exactly-once.
//!
//! It must never know a query language, rules or notifications: it depends
//! on no Vigil crate but `vigil-shared`, and readers select samples through
//! [`history::Matcher`]s.
//!
//! Counters, gauges and untyped series keep their last value. Windowed
//! series (histograms) accumulate: every window adds its exact bucket counts,
//! sum and count, so `_count` grows by one per sample the agent took. Series
//! are kept by family, and within a family by their label set already
//! rendered in the exposition format, so that exposition copies text and
//! formats only numbers.
//!
//! Every sample also goes to the [`history::History`] (compressed chunks,
//! kept for `retention`), under Prometheus's names: a histogram becomes
//! `_bucket{le}`, `_sum` and `_count` series.
//!
//! Times are the collector's wall clock when the batch was received (kept in
//! the write-ahead log, so a replay restores the same freshness). The store
//! never blocks for long: one write lock per applied batch, one read lock per
//! scrape.

pub mod checkpoint;
pub mod chunk;
pub mod history;
pub mod wal;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chunk::stale_marker;
use history::{History, HistoryStats, Matcher, SeriesSamples};
use vigil_shared::batch::Batch;
use vigil_shared::exposition::MetricKind;
use vigil_shared::labels::escape_label_value_into;
use vigil_shared::proto;
use windows::{QuantileError, QuantileResult, WindowStore};

/// Cumulative histogram state of one windowed series.
#[derive(Debug, Clone, PartialEq)]
pub struct Cumulative {
    /// Cumulative count per bucket bound, then +Inf (equal to `count`).
    pub buckets: Vec<u64>,
    /// Sum of every sample.
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
}

/// One series' latest state.
#[derive(Debug, Clone)]
pub struct StoredSeries {
    /// The last value.
    pub value: f64,
    /// For histograms.
    pub cumulative: Option<Cumulative>,
    /// When it was last updated, Unix milliseconds.
    pub updated: i64,
    /// Which agent sent it (an index into the store's agents).
    pub agent: u32,
}

/// One family's series.
#[derive(Debug, Clone)]
pub struct StoredFamily {
    /// Help text.
    pub help: String,
    /// Kind.
    pub kind: MetricKind,
    /// Bucket bounds, for histograms.
    pub bounds: Vec<f64>,
    /// Series by rendered label set (`a="1",b="2"`): where each one's latest
    /// state is in the store's slots.
    pub series: BTreeMap<String, u32>,
}

#[derive(Debug, Clone)]
struct AgentState {
    index: u32,
    epoch: u64,
    last_sequence: u64,
    last_push: i64,
    /// The agent's flush interval: when its next batch is due.
    flush_interval_ms: i64,
    /// History series its last batch wrote.
    last_series: Vec<u32>,
    /// True once its series were marked stale for silence.
    silenced: bool,
    /// True after its last batch said it stopped cleanly.
    deregistered: bool,
    /// When the agent closed its last batch (its samples' time), ms.
    last_batch_ms: i64,
    /// The agent's release version and git revision, from its last batch
    /// (not kept in checkpoints: the next batch, or the log, brings it).
    version: String,
    revision: String,
    /// Where each position of its last batch went (not kept in checkpoints).
    cache: SeriesCache,
}

/// Agents send the same series in the same order batch after batch. For
/// each position of an agent's last batch this remembers a hash of the
/// series (family name, kind and label bytes as sent) and where it went: its
/// latest-state slot and history id. A batch whose series hash the same at
/// the same positions is applied without rendering, sorting or looking up
/// labels. The hash is seeded per process; a series that does not match
/// takes the full path, which refreshes the entry.
#[derive(Debug, Clone, Default)]
struct SeriesCache {
    /// The store's removal count when the entries were made: any removal
    /// (a sweep, a family changing type, history past retention) may free
    /// what an entry points to, so a different count voids them all.
    stamp: u64,
    entries: Vec<CacheEntry>,
}

#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    key: u64,
    slot: u32,
    id: u32,
}

/// A position the cache knows nothing of (histograms, labels not in one run).
const NO_ENTRY: CacheEntry = CacheEntry {
    key: 0,
    slot: u32::MAX,
    id: u32::MAX,
};

impl SeriesCache {
    fn hit(&self, position: usize, key: Option<u64>) -> Option<CacheEntry> {
        let key = key?;
        self.entries
            .get(position)
            .copied()
            .filter(|e| e.key == key && e.id != u32::MAX)
    }

    fn set(&mut self, position: usize, entry: CacheEntry) {
        if self.entries.len() <= position {
            self.entries.resize(position + 1, NO_ENTRY);
        }
        self.entries[position] = entry;
    }
}

/// One agent as the collector's own metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSummary {
    /// The agent's `instance` name.
    pub id: String,
    /// When it last pushed, Unix seconds.
    pub last_push_seconds: f64,
    /// Its release version; empty from agents older than the field.
    pub version: String,
    /// Its git revision; empty from agents older than the field.
    pub revision: String,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Series written.
    pub series: u64,
    /// Series skipped because their family exists with another kind or ladder.
    pub conflicts: u64,
    /// True when the batch had been applied before.
    pub duplicate: bool,
    /// Samples refused by the history because they were not newer than the
    /// series' last sample (an agent's clock went back).
    pub out_of_order: u64,
}

/// Each series' cache key in a batch, by position ([`Store::batch_keys`]).
#[derive(Debug, Default, Clone)]
pub struct BatchKeys(Vec<Option<u64>>);

/// What the store knows of a batch before it is applied ([`Store::known`]).
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// By position: the agent's last batch had exactly these bytes here.
    pub positions: Vec<bool>,
    /// Series the store does not hold yet.
    pub fresh: usize,
}

#[derive(Debug, Default)]
struct Inner {
    families: BTreeMap<String, StoredFamily>,
    /// Every series' latest state, by slot; families map labels to slots.
    latest: Vec<Option<StoredSeries>>,
    /// Slots free for reuse.
    free: Vec<u32>,
    /// Latest-state series removed so far (see [`SeriesCache::stamp`]).
    removals: u64,
    agents: HashMap<String, AgentState>,
    history: History,
    windows: WindowStore,
    /// Histogram windows applied since the tap last took them (only when
    /// the tap wants them).
    tapped_windows: Vec<WrittenWindow>,
}

impl Inner {
    fn stamp(&self) -> u64 {
        self.removals.wrapping_add(self.history.removals())
    }
}

/// Applies one sample whose series the agent's cache knew.
#[allow(clippy::too_many_arguments)]
fn apply_hit(
    latest: &mut [Option<StoredSeries>],
    history: &mut History,
    written: &mut Vec<u32>,
    applied: &mut Applied,
    hit: CacheEntry,
    series: &vigil_shared::batch::SeriesView<'_>,
    now: i64,
    agent: u32,
) {
    if let Some(Some(s)) = latest.get_mut(hit.slot as usize) {
        s.value = series.value;
        s.updated = now;
        s.agent = agent;
    }
    applied.series += 1;
    written.push(hit.id);
    if history
        .append(hit.id, series.timestamp_ms, series.value)
        .is_err()
    {
        applied.out_of_order += 1;
    }
}

/// Puts a series' latest state in a free slot; its number.
fn take_slot(latest: &mut Vec<Option<StoredSeries>>, free: &mut Vec<u32>, s: StoredSeries) -> u32 {
    match free.pop() {
        Some(slot) => {
            latest[slot as usize] = Some(s);
            slot
        }
        None => {
            latest.push(Some(s));
            (latest.len() - 1) as u32
        }
    }
}

/// The cache key of a series: its family's name and kind, and its label
/// bytes as sent.
fn series_key(keys: &foldhash::fast::RandomState, family: &str, kind: i32, labels: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = keys.build_hasher();
    h.write(family.as_bytes());
    h.write_u8(0xff);
    h.write_i32(kind);
    h.write(labels);
    h.finish()
}

/// The latest state of every series, and their history.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
    stale_after_ms: i64,
    retention_ms: i64,
    /// When this store started serving: an agent's silence is counted from
    /// here at the earliest, since while the collector was down no agent
    /// could push.
    started_ms: i64,
    /// Counts applied batches; rules wait on it to evaluate on arrival.
    pushes: (std::sync::Mutex<u64>, std::sync::Condvar),
    /// Where written samples go besides the history (remote_write).
    tap: std::sync::OnceLock<Arc<dyn Tap>>,
    /// Seeds the series cache's hashes (random per process, so that a
    /// sender cannot make two label sets share a key).
    keys: foldhash::fast::RandomState,
    /// Tests turn the agents' series caches off to compare.
    #[cfg(test)]
    cache_off: bool,
}

/// One sample as the history stored it: labels sorted by name, time (ms;
/// the history may have aligned it to its series' interval), value.
pub type WrittenSample = (Vec<(String, String)>, i64, f64);

/// Receives every sample written into the history, in the order written,
/// while the store's lock is held (so it must not block: hand the samples
/// on). Used by remote_write.
pub trait Tap: Send + Sync + std::fmt::Debug {
    /// Samples just written, and the histogram windows applied with them
    /// when [`Tap::wants_windows`]. `wal_position` is the write-ahead log
    /// position of the batch they came from ([`wal::Wal::append`]), 0 when
    /// they did not come from the log (rules, stale markers of silent
    /// agents).
    fn written(&self, wal_position: u64, samples: Vec<WrittenSample>, windows: Vec<WrittenWindow>);

    /// True when [`Tap::written`] should get each histogram window as well
    /// (copied while the store's lock is held, so only when needed).
    fn wants_windows(&self) -> bool {
        false
    }
}

/// A histogram window as applied: the series' labels (sorted by name,
/// `__name__` being the family's name), its sample time (ms), the window.
pub type WrittenWindow = (Vec<(String, String)>, i64, proto::Window);

pub use vigil_shared::clock::now_ms;

/// A sample a rule produced: its label set (sorted by name, `__name__`
/// included), its time in milliseconds and its value.
pub type RuleSample = (Vec<(String, String)>, i64, f64);

/// Formats a bucket bound as Prometheus writes `le` values.
pub fn format_bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Renders labels as they appear between braces in the exposition.
pub fn render_labels(labels: &[proto::Label]) -> String {
    render_label_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// [`render_labels`] for `(name, value)` pairs.
pub fn render_label_pairs<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(64);
    for (i, (name, value)) in labels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value_into(&mut out, value);
        out.push('"');
    }
    out
}

impl Store {
    /// An empty store whose series go stale after `stale_after` and whose
    /// history keeps `retention`.
    pub fn new(stale_after: Duration, retention: Duration) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            stale_after_ms: stale_after.as_millis() as i64,
            retention_ms: retention.as_millis() as i64,
            started_ms: now_ms(),
            pushes: (std::sync::Mutex::new(0), std::sync::Condvar::new()),
            tap: std::sync::OnceLock::new(),
            keys: foldhash::fast::RandomState::default(),
            #[cfg(test)]
            cache_off: false,
        }
    }

    /// False only in tests that compare with the cache off.
    fn cache_on(&self) -> bool {
        #[cfg(test)]
        return !self.cache_off;
        #[cfg(not(test))]
        true
    }

    /// Sends every sample written from now on to `tap` too (once; a second
    /// tap is refused and returned).
    pub fn set_tap(&self, tap: Arc<dyn Tap>) -> Result<(), Arc<dyn Tap>> {
        let mut inner = self.write();
        self.tap.set(tap)?;
        inner.history.keep_appended();
        Ok(())
    }

    /// Hands what the history appended to the tap, if there is one.
    fn tap_written(&self, inner: &mut Inner, wal_position: u64) {
        if let Some(tap) = self.tap.get() {
            let samples = inner.history.take_appended();
            let windows = std::mem::take(&mut inner.tapped_windows);
            if !samples.is_empty() || !windows.is_empty() {
                tap.written(wal_position, samples, windows);
            }
        }
    }

    /// Batches applied so far.
    pub fn push_count(&self) -> u64 {
        *self
            .pushes
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a batch beyond `seen` is applied, or `timeout`; the count.
    pub fn wait_for_push(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self
            .pushes
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .pushes
            .1
            .wait_timeout_while(guard, timeout, |n| *n == seen)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }

    /// The same store, counting agents' silence from `ms` at the earliest
    /// (for tests and replays that run on their own clock).
    pub fn started_at(mut self, ms: i64) -> Self {
        self.started_ms = ms;
        self
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        match self.inner.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// True when this (agent, epoch, sequence) was applied before.
    pub fn is_duplicate(&self, batch: &Batch<'_>) -> bool {
        self.read()
            .agents
            .get(batch.agent_id)
            .is_some_and(|a| a.epoch == batch.epoch && batch.sequence <= a.last_sequence)
    }

    /// Each series' cache key in `batch`, by position: computed once per
    /// push, outside the store's lock, and used by [`Store::known`] and
    /// [`Store::apply_keyed`]. Histogram series have none (their
    /// cumulative buckets are written anew each time).
    pub fn batch_keys(&self, batch: &Batch<'_>) -> BatchKeys {
        let mut keys = Vec::with_capacity(batch.series_count());
        for family in &batch.families {
            let keyed = family.kind != proto::Kind::Histogram as i32 && self.cache_on();
            keys.extend(family.series.iter().map(|series| {
                series
                    .label_bytes()
                    .filter(|_| keyed)
                    .map(|b| series_key(&self.keys, family.name, family.kind, b))
            }));
        }
        BatchKeys(keys)
    }

    /// What the store knows of `batch` before it is applied: the positions
    /// whose family, kind and label bytes are exactly those the agent's
    /// last batch had there (so they passed validation then), and how many
    /// series would be new.
    pub fn known(&self, batch: &Batch<'_>, keys: &BatchKeys) -> Known {
        let inner = self.read();
        let stamp = inner.stamp();
        let cache = inner
            .agents
            .get(batch.agent_id)
            .map(|a| &a.cache)
            .filter(|c| c.stamp == stamp);
        let mut known = Known {
            positions: Vec::with_capacity(keys.0.len()),
            fresh: 0,
        };
        let mut position = 0;
        for family in &batch.families {
            let mut stored: Option<Option<&StoredFamily>> = None;
            for series in &family.series {
                let key = keys.0.get(position).copied().flatten();
                let hit = cache.is_some_and(|c| c.hit(position, key).is_some());
                known.positions.push(hit);
                position += 1;
                if hit {
                    continue;
                }
                let stored = *stored.get_or_insert_with(|| inner.families.get(family.name));
                if stored
                    .is_none_or(|f| !f.series.contains_key(&render_label_pairs(series.labels())))
                {
                    known.fresh += 1;
                }
            }
        }
        known
    }

    /// Forgets every agent's series cache, so that each agent's next batch
    /// is validated in full: after a replay of the log, whose batches were
    /// validated under the limits of an earlier run.
    pub fn forget_series_caches(&self) {
        let mut inner = self.write();
        inner.removals = inner.removals.wrapping_add(1);
    }

    /// Applies a validated batch received at `received_ms` once: a batch whose
    /// (agent, epoch, sequence) was applied before is acknowledged as a
    /// duplicate and not applied again.
    pub fn apply(&self, batch: &proto::PushRequest, received_ms: i64) -> Applied {
        self.apply_logged(batch, received_ms, 0)
    }

    /// [`Store::apply`] for a batch at `wal_position` in the write-ahead
    /// log (given to the tap, so that a replay after a crash can tell what
    /// it already had).
    pub fn apply_logged(
        &self,
        batch: &proto::PushRequest,
        received_ms: i64,
        wal_position: u64,
    ) -> Applied {
        use prost::Message;
        let bytes = batch.encode_to_vec();
        match Batch::decode(&bytes) {
            Ok(view) => self.apply_batch(&view, received_ms, wal_position),
            // Bytes prost just wrote always decode.
            Err(e) => {
                tracing::error!(error = %e, "cannot read back an encoded batch");
                Applied::default()
            }
        }
    }

    /// [`Store::apply_logged`] for a batch read in place from the bytes an
    /// agent sent (the ingest path).
    pub fn apply_batch(&self, batch: &Batch<'_>, received_ms: i64, wal_position: u64) -> Applied {
        self.apply_keyed(batch, &self.batch_keys(batch), received_ms, wal_position)
    }

    /// [`Store::apply_batch`] with the keys [`Store::batch_keys`] gave for
    /// this batch.
    pub fn apply_keyed(
        &self,
        batch: &Batch<'_>,
        batch_keys: &BatchKeys,
        received_ms: i64,
        wal_position: u64,
    ) -> Applied {
        let now = received_ms;
        let mut guard = self.write();
        let stamp = guard.stamp();
        let Inner {
            families,
            latest,
            free,
            removals,
            agents,
            history,
            windows,
            tapped_windows,
        } = &mut *guard;
        let tap_windows = self.tap.get().is_some_and(|t| t.wants_windows());
        let mut cache = match agents.get_mut(batch.agent_id) {
            Some(agent) if agent.epoch == batch.epoch && batch.sequence <= agent.last_sequence => {
                agent.last_push = now;
                return Applied {
                    duplicate: true,
                    ..Applied::default()
                };
            }
            Some(agent) => {
                agent.epoch = batch.epoch;
                agent.last_sequence = batch.sequence;
                agent.last_push = now;
                agent.flush_interval_ms = batch.flush_interval_ms as i64;
                agent.silenced = false;
                agent.deregistered = batch.last;
                agent.last_batch_ms = batch.timestamp_ms;
                // Empty from an agent rolled back past the field: shown
                // as unknown, not as the build it replaced.
                if agent.version != batch.agent_version {
                    agent.version = batch.agent_version.to_string();
                }
                if agent.revision != batch.agent_revision {
                    agent.revision = batch.agent_revision.to_string();
                }
                std::mem::take(&mut agent.cache)
            }
            None => {
                let index = agents.len() as u32;
                agents.insert(
                    batch.agent_id.to_string(),
                    AgentState {
                        index,
                        epoch: batch.epoch,
                        last_sequence: batch.sequence,
                        last_push: now,
                        flush_interval_ms: batch.flush_interval_ms as i64,
                        last_series: Vec::new(),
                        silenced: false,
                        deregistered: batch.last,
                        last_batch_ms: batch.timestamp_ms,
                        version: batch.agent_version.to_string(),
                        revision: batch.agent_revision.to_string(),
                        cache: SeriesCache::default(),
                    },
                );
                SeriesCache::default()
            }
        };
        if cache.stamp != stamp {
            cache = SeriesCache {
                stamp,
                entries: Vec::new(),
            };
        }
        let agent = agents
            .get(batch.agent_id)
            .map(|a| a.index)
            .unwrap_or(u32::MAX);
        // The series this agent wrote last time are most likely the ones
        // it writes now: their chunks and latest state are fetched into
        // the cache together first (see [`History::warm`]).
        history.warm(
            cache
                .entries
                .iter()
                .filter(|e| e.id != u32::MAX)
                .map(|e| e.id),
        );
        for e in &cache.entries {
            if let Some(Some(s)) = latest.get(e.slot as usize) {
                std::hint::black_box(s.updated);
            }
        }
        let stale_after = self.stale_after_ms;
        let previous_len = cache.entries.len();
        // True while every series went where the cache said: then the batch
        // wrote exactly the series the last one did.
        let mut all_hit = true;
        let mut retyped = false;
        let mut position = 0usize;
        let mut keys_buf: Vec<Option<u64>> = Vec::new();
        let mut history_labels: Vec<(String, String)> = Vec::with_capacity(16);
        let mut written: Vec<u32> = Vec::with_capacity(batch.series_count());
        let mut applied = Applied::default();
        for family in &batch.families {
            let Some(kind) = MetricKind::from_wire(family.kind) else {
                applied.conflicts += family.series.len() as u64;
                // Every position is set, so that the cache describes this
                // batch and no older one.
                for at in position..position + family.series.len() {
                    cache.set(at, NO_ENTRY);
                }
                position += family.series.len();
                all_hit = false;
                continue;
            };
            // Each series' cache key; when every one hits, the family's
            // state is not even looked up.
            keys_buf.clear();
            keys_buf.extend((position..position + family.series.len()).map(|at| {
                // Histograms have no key (see `batch_keys`).
                batch_keys.0.get(at).copied().flatten().filter(|_| !retyped)
            }));
            let family_hits = keys_buf
                .iter()
                .enumerate()
                .all(|(i, key)| cache.hit(position + i, *key).is_some());
            let first = position;
            position += family.series.len();
            // Looked up only when some series of the family is not known.
            let mut family_state: Option<&mut StoredFamily> = None;
            if !family_hits {
                all_hit = false;
                let state =
                    families
                        .entry(family.name.to_string())
                        .or_insert_with(|| StoredFamily {
                            help: family.help.to_string(),
                            kind,
                            bounds: family.bucket_bounds.clone(),
                            series: BTreeMap::new(),
                        });
                if state.kind != kind || state.bounds != family.bucket_bounds {
                    // The family changed type. If only this agent (or nobody
                    // lately) has series in it, the new definition replaces
                    // the old one; otherwise agents disagree and the
                    // newcomer is skipped.
                    let others = state.series.values().any(|slot| {
                        latest
                            .get(*slot as usize)
                            .and_then(Option::as_ref)
                            .is_some_and(|s| s.agent != agent && now - s.updated < stale_after)
                    });
                    if others {
                        applied.conflicts += family.series.len() as u64;
                        for at in first..position {
                            cache.set(at, NO_ENTRY);
                        }
                        continue;
                    }
                    state.kind = kind;
                    state.help = family.help.to_string();
                    state.bounds = family.bucket_bounds.clone();
                    for slot in std::mem::take(&mut state.series).into_values() {
                        if let Some(s) = latest.get_mut(slot as usize) {
                            *s = None;
                            free.push(slot);
                        }
                    }
                    *removals += 1;
                    // Entries may point at the slots just freed: none is
                    // used for the rest of the batch, and the cache starts
                    // anew.
                    retyped = true;
                    keys_buf.iter_mut().for_each(|k| *k = None);
                }
                family_state = Some(state);
            }
            for (i, series) in family.series.iter().enumerate() {
                let at = first + i;
                let key = keys_buf[i];
                if let Some(hit) = cache.hit(at, key) {
                    apply_hit(
                        latest,
                        history,
                        &mut written,
                        &mut applied,
                        hit,
                        series,
                        now,
                        agent,
                    );
                    continue;
                }
                // Every series hit when the family was not looked up.
                let Some(family_state) = family_state.as_deref_mut() else {
                    continue;
                };
                let labels_text = render_label_pairs(series.labels());
                let slot = match family_state.series.get(&labels_text) {
                    Some(slot) => *slot,
                    None => {
                        let slot = take_slot(
                            latest,
                            free,
                            StoredSeries {
                                value: 0.0,
                                cumulative: None,
                                updated: now,
                                agent,
                            },
                        );
                        family_state.series.insert(labels_text, slot);
                        slot
                    }
                };
                let Some(Some(entry)) = latest.get_mut(slot as usize) else {
                    cache.set(at, NO_ENTRY);
                    continue;
                };
                entry.value = series.value;
                entry.updated = now;
                entry.agent = agent;
                let full_labels =
                    |history_labels: &mut Vec<(String, String)>,
                     name: String,
                     extra: Option<(&str, String)>| {
                        history_labels.clear();
                        history_labels.push(("__name__".to_string(), name));
                        history_labels
                            .extend(series.labels().map(|(n, v)| (n.to_string(), v.to_string())));
                        if let Some((k, val)) = extra {
                            history_labels.push((k.to_string(), val));
                        }
                        history_labels.sort();
                    };
                if let Some(window) = &series.window {
                    full_labels(&mut history_labels, family.name.to_string(), None);
                    if let Err(e) = windows.add(&history_labels.clone().into(), window) {
                        tracing::error!(family = %family.name, error = %e, "cannot keep a window's histogram");
                    }
                    if tap_windows {
                        tapped_windows.push((
                            history_labels.clone(),
                            series.timestamp_ms,
                            (**window).clone(),
                        ));
                    }
                    let c = entry.cumulative.get_or_insert_with(|| Cumulative {
                        buckets: vec![0; family.bucket_bounds.len() + 1],
                        sum: 0.0,
                        count: 0,
                    });
                    let mut running = 0u64;
                    for (total, n) in c.buckets.iter_mut().zip(&window.bucket_counts) {
                        // Saturating: counts grow for as long as the
                        // collector runs, and come from the network.
                        running = running.saturating_add(*n);
                        *total = total.saturating_add(running);
                    }
                    c.sum += window.sum;
                    c.count = c.count.saturating_add(window.count);
                }
                applied.series += 1;
                let t = series.timestamp_ms;
                let mut append = |name: String, extra: Option<(&str, String)>, v: f64| {
                    full_labels(&mut history_labels, name, extra);
                    let id = history.series_id(&history_labels);
                    written.push(id);
                    if history.append(id, t, v).is_err() {
                        applied.out_of_order += 1;
                    }
                    id
                };
                match &entry.cumulative {
                    Some(c) => {
                        for (bound, count) in family
                            .bucket_bounds
                            .iter()
                            .chain(std::iter::once(&f64::INFINITY))
                            .zip(&c.buckets)
                        {
                            append(
                                format!("{}_bucket", family.name),
                                Some(("le", format_bound(*bound))),
                                *count as f64,
                            );
                        }
                        append(format!("{}_sum", family.name), None, c.sum);
                        append(format!("{}_count", family.name), None, c.count as f64);
                        cache.set(at, NO_ENTRY);
                    }
                    None => {
                        let id = append(family.name.to_string(), None, series.value);
                        match key {
                            Some(key) => cache.set(at, CacheEntry { key, slot, id }),
                            None => cache.set(at, NO_ENTRY),
                        }
                    }
                }
            }
        }
        // Series the agent sent last time and not this time are gone:
        // a stale marker ends them now, as Prometheus does after a scrape.
        // When every position hit the cache and the batch is as long as
        // the last one, it wrote the same series: nothing ended.
        let same_series = all_hit && position == previous_len;
        cache.entries.truncate(position);
        if retyped {
            cache = SeriesCache::default();
        }
        cache.stamp = (*removals).wrapping_add(history.removals());
        if let Some(state) = agents.get_mut(batch.agent_id) {
            state.cache = cache;
            if !same_series {
                let batch_time = if batch.timestamp_ms > 0 {
                    batch.timestamp_ms
                } else {
                    now
                };
                written.sort_unstable();
                written.dedup();
                let previous = std::mem::replace(&mut state.last_series, written);
                for id in previous {
                    if state.last_series.binary_search(&id).is_err() {
                        let _ = history.append(id, batch_time, stale_marker());
                    }
                }
            }
        }
        self.tap_written(&mut guard, wal_position);
        drop(guard);
        let mut pushes = self
            .pushes
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *pushes += 1;
        self.pushes.1.notify_all();
        applied
    }

    /// Copies the whole store into a checkpoint that covers the log before
    /// segment `wal_segment`.
    pub fn snapshot(&self, wal_segment: u32) -> checkpoint::Checkpoint {
        use checkpoint::{Checkpoint, CpAgent, CpFamily, CpSeries};
        let inner = self.read();
        let families = inner
            .families
            .iter()
            .map(|(name, f)| CpFamily {
                name: name.clone(),
                help: f.help.clone(),
                kind: match f.kind {
                    MetricKind::Counter => 0,
                    MetricKind::Gauge => 1,
                    MetricKind::Untyped => 2,
                    MetricKind::Histogram => 3,
                },
                bounds: f.bounds.clone(),
                series: f
                    .series
                    .iter()
                    .filter_map(|(text, slot)| {
                        Some((text, inner.latest.get(*slot as usize)?.as_ref()?))
                    })
                    .map(|(text, s)| CpSeries {
                        labels_text: text.clone(),
                        value: s.value,
                        buckets: s
                            .cumulative
                            .as_ref()
                            .map(|c| c.buckets.clone())
                            .unwrap_or_default(),
                        sum: s.cumulative.as_ref().map(|c| c.sum).unwrap_or(0.0),
                        count: s.cumulative.as_ref().map(|c| c.count).unwrap_or(0),
                        cumulative: s.cumulative.is_some(),
                        updated: s.updated,
                        agent: s.agent,
                    })
                    .collect(),
            })
            .collect();
        let agents = inner
            .agents
            .iter()
            .map(|(id, a)| CpAgent {
                id: id.clone(),
                index: a.index,
                epoch: a.epoch,
                last_sequence: a.last_sequence,
                last_push: a.last_push,
                flush_interval_ms: a.flush_interval_ms,
                last_series: a.last_series.clone(),
                silenced: a.silenced,
                deregistered: a.deregistered,
            })
            .collect();
        Checkpoint {
            wal_segment,
            created_ms: now_ms(),
            families,
            agents,
            history: inner.history.snapshot(),
            windows: inner.windows.snapshot(),
        }
    }

    /// Replaces the store's contents with a checkpoint's.
    pub fn restore(&self, cp: checkpoint::Checkpoint) -> Result<(), String> {
        let mut guard = self.write();
        let inner = &mut *guard;
        inner.families.clear();
        inner.latest.clear();
        inner.free.clear();
        inner.removals += 1;
        for f in cp.families {
            let kind = match f.kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Untyped,
                _ => MetricKind::Histogram,
            };
            let series = f
                .series
                .into_iter()
                .map(|s| {
                    let stored = StoredSeries {
                        value: s.value,
                        cumulative: s.cumulative.then_some(Cumulative {
                            buckets: s.buckets,
                            sum: s.sum,
                            count: s.count,
                        }),
                        updated: s.updated,
                        agent: s.agent,
                    };
                    let slot = take_slot(&mut inner.latest, &mut inner.free, stored);
                    (s.labels_text, slot)
                })
                .collect();
            inner.families.insert(
                f.name,
                StoredFamily {
                    help: f.help,
                    kind,
                    bounds: f.bounds,
                    series,
                },
            );
        }
        inner.agents = cp
            .agents
            .into_iter()
            .map(|a| {
                (
                    a.id,
                    AgentState {
                        index: a.index,
                        epoch: a.epoch,
                        last_sequence: a.last_sequence,
                        last_push: a.last_push,
                        flush_interval_ms: a.flush_interval_ms,
                        last_series: a.last_series,
                        silenced: a.silenced,
                        deregistered: a.deregistered,
                        last_batch_ms: a.last_push,
                        version: String::new(),
                        revision: String::new(),
                        cache: SeriesCache::default(),
                    },
                )
            })
            .collect();
        inner.history = History::restore(cp.history)?;
        if self.tap.get().is_some() {
            // What the checkpoint holds was handed on before it was written.
            inner.history.keep_appended();
        }
        inner.windows = WindowStore::restore(cp.windows);
        Ok(())
    }

    /// Ends the series of agents that missed their next push (two flush
    /// intervals without a batch) with a stale marker at `now`, so that
    /// queries stop returning their last values after the lookback. Returns
    /// the agents marked.
    pub fn mark_silent_agents(&self, now: i64) -> Vec<String> {
        let mut guard = self.write();
        let inner = &mut *guard;
        let mut marked = Vec::new();
        for (id, agent) in inner.agents.iter_mut() {
            let interval = if agent.flush_interval_ms > 0 {
                agent.flush_interval_ms
            } else {
                10_000
            };
            let due = agent
                .last_push
                .max(self.started_ms)
                .saturating_add(interval.saturating_mul(2));
            if agent.silenced || now <= due {
                continue;
            }
            for series in &agent.last_series {
                let _ = inner.history.append(*series, now, stale_marker());
            }
            agent.silenced = true;
            marked.push(id.clone());
        }
        self.tap_written(inner, 0);
        marked
    }

    /// Every agent that has not stopped cleanly: `(instance, last push ms,
    /// flush interval ms)`, for the host-down rule. The last push is never
    /// before this store started: agents cannot push to a stopped collector.
    pub fn agent_liveness(&self) -> Vec<(String, i64, i64)> {
        let inner = self.read();
        let mut out: Vec<(String, i64, i64)> = inner
            .agents
            .iter()
            .filter(|(_, a)| !a.deregistered)
            .map(|(id, a)| {
                let interval = if a.flush_interval_ms > 0 {
                    a.flush_interval_ms
                } else {
                    10_000
                };
                (id.clone(), a.last_push.max(self.started_ms), interval)
            })
            .collect();
        out.sort();
        out
    }

    /// When the agent `instance` closed the last batch it sent: the time of
    /// the newest samples it delivered (ms).
    pub fn last_batch_time(&self, instance: &str) -> Option<i64> {
        self.read()
            .agents
            .get(instance)
            .map(|a| a.last_batch_ms)
            .filter(|t| *t > 0)
    }

    /// Writes samples that rules produced (recorded series, `ALERTS`, stale
    /// markers) into the history. A sample not newer than its series' last
    /// one is skipped; returns how many were.
    pub fn write_rule_samples(&self, samples: Vec<RuleSample>) -> u64 {
        let mut inner = self.write();
        let mut skipped = 0;
        for (labels, t, v) in samples {
            let id = inner.history.series_id(&labels);
            if inner.history.append(id, t, v).is_err() {
                skipped += 1;
            }
        }
        self.tap_written(&mut inner, 0);
        skipped
    }

    /// Calls `visit` with every family and its fresh series (rendered
    /// labels, latest state), in name order.
    pub fn visit(
        &self,
        mut visit: impl FnMut(&str, &StoredFamily, &mut dyn Iterator<Item = (&str, &StoredSeries)>),
    ) {
        let inner = self.read();
        let now = now_ms();
        for (name, family) in &inner.families {
            let mut fresh = family
                .series
                .iter()
                .filter_map(|(text, slot)| {
                    Some((text.as_str(), inner.latest.get(*slot as usize)?.as_ref()?))
                })
                .filter(|(_, s)| now - s.updated < self.stale_after_ms)
                .peekable();
            if fresh.peek().is_none() {
                continue;
            }
            visit(name, family, &mut fresh);
        }
    }

    /// Agents that pushed within `stale_after`, by name, with their last
    /// push time and build.
    pub fn agents(&self) -> Vec<AgentSummary> {
        let inner = self.read();
        let now = now_ms();
        let mut out: Vec<AgentSummary> = inner
            .agents
            .iter()
            .filter(|(_, a)| now - a.last_push < self.stale_after_ms)
            .map(|(id, a)| AgentSummary {
                id: id.clone(),
                last_push_seconds: a.last_push as f64 / 1000.0,
                version: a.version.clone(),
                revision: a.revision.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Number of series held.
    pub fn series_count(&self) -> usize {
        self.read().families.values().map(|f| f.series.len()).sum()
    }

    /// What the history holds.
    pub fn history_stats(&self) -> HistoryStats {
        self.read().history.stats()
    }

    /// Window histograms held, and their encoded bytes.
    pub fn window_stats(&self) -> (usize, usize) {
        self.read().windows.stats()
    }

    /// The `q` quantile of every per-second sample of the selected windowed
    /// series whose windows ended within `[start, end]`.
    pub fn window_quantile(
        &self,
        matchers: &[Matcher],
        q: f64,
        start: i64,
        end: i64,
    ) -> Result<Option<QuantileResult>, QuantileError> {
        self.read().windows.quantile(matchers, q, start, end)
    }

    /// Samples of the series the matchers select, `mint <= t <= maxt`.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.read().history.select(matchers, mint, maxt)
    }

    /// Ids of the series the matchers select ([`History::select_ids`]).
    pub fn select_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        self.read().history.select_ids(matchers)
    }

    /// Samples of one series by id ([`History::series_samples`]). The lock
    /// is held for this series only, so a long query that reads series one
    /// by one never holds ingest back for its whole length.
    pub fn series_samples(&self, id: u32, mint: i64, maxt: i64) -> Option<SeriesSamples> {
        self.read().history.series_samples(id, mint, maxt)
    }

    /// Label sets of selected series with a sample in `[mint, maxt]`
    /// ([`History::series_labels`]).
    pub fn series_labels(
        &self,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> (Vec<Vec<(String, String)>>, bool) {
        self.read()
            .history
            .series_labels(selectors, mint, maxt, limit)
    }

    /// Label names or one label's values over selected series
    /// ([`History::label_index`]).
    pub fn label_index(
        &self,
        name: Option<&str>,
        selectors: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
        limit: usize,
    ) -> (Vec<String>, bool) {
        self.read()
            .history
            .label_index(name, selectors, mint, maxt, limit)
    }

    /// Forgets latest-state series that have been stale for a while, and
    /// history older than the retention; returns (series forgotten, samples
    /// dropped). Agents' sequence state is kept, so a late replay is still
    /// recognised.
    pub fn sweep(&self, now: i64) -> (usize, u64) {
        let mut guard = self.write();
        let inner = &mut *guard;
        let mut dropped = 0;
        for family in inner.families.values_mut() {
            family.series.retain(|_, slot| {
                let fresh = inner
                    .latest
                    .get(*slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| now - s.updated < self.stale_after_ms);
                if !fresh {
                    if let Some(s) = inner.latest.get_mut(*slot as usize) {
                        *s = None;
                    }
                    inner.free.push(*slot);
                    dropped += 1;
                }
                fresh
            });
        }
        if dropped > 0 {
            inner.removals += 1;
        }
        inner.families.retain(|_, f| !f.series.is_empty());
        let samples = inner.history.drop_before(now - self.retention_ms);
        inner.windows.drop_before(now - self.retention_ms);
        (dropped, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series, Window};

    fn labels(instance: &str) -> Vec<Label> {
        vec![
            Label {
                name: "instance".into(),
                value: instance.into(),
            },
            Label {
                name: "job".into(),
                value: "node".into(),
            },
        ]
    }

    fn batch(sequence: u64, epoch: u64, value: f64) -> PushRequest {
        PushRequest {
            agent_id: "a".into(),
            epoch,
            sequence,
            families: vec![
                Family {
                    name: "g".into(),
                    help: "G.".into(),
                    kind: Kind::Gauge as i32,
                    bucket_bounds: vec![],
                    series: vec![Series {
                        labels: labels("a"),
                        value,
                        timestamp_ms: 1,
                        window: None,
                    }],
                },
                Family {
                    name: "h".into(),
                    help: "H.".into(),
                    kind: Kind::Histogram as i32,
                    bucket_bounds: vec![0.5, 1.0],
                    series: vec![Series {
                        labels: labels("a"),
                        value,
                        timestamp_ms: 1,
                        window: Some(Window {
                            count: 3,
                            sum: 1.5,
                            bucket_counts: vec![2, 1, 0],
                            ..Default::default()
                        }),
                    }],
                },
            ],
            ..Default::default()
        }
    }

    impl Store {
        fn apply_now(&self, batch: &PushRequest) -> Applied {
            self.apply(batch, now_ms())
        }
    }

    /// One step of an agent's life for the cache property test.
    #[derive(Debug, Clone)]
    enum Step {
        /// Agent (0 or 1) pushes: for each pool series, whether it is in
        /// the batch; the order is reversed when `reverse`; family `k`
        /// is a counter instead of a gauge when `retype`.
        Push {
            agent: usize,
            present: Vec<bool>,
            reverse: bool,
            retype: bool,
            value: f64,
        },
        /// Time passes by this much (ms), then the store sweeps.
        Sweep(i64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..2usize, proptest::collection::vec(any::<bool>(), 6), any::<bool>(),
                  proptest::bool::weighted(0.1), -1e3..1e3f64)
                .prop_map(|(agent, present, reverse, retype, value)| Step::Push {
                    agent, present, reverse, retype, value
                }),
            1 => (1_000..400_000i64).prop_map(Step::Sweep),
        ]
    }

    fn pool_batch(agent: usize, sequence: u64, t: i64, step: &Step) -> Option<PushRequest> {
        let Step::Push {
            present,
            reverse,
            retype,
            value,
            ..
        } = step
        else {
            return None;
        };
        let instance = format!("host-{agent}");
        let mut families: Vec<Family> = Vec::new();
        for (i, on) in present.iter().enumerate() {
            if !on {
                continue;
            }
            let (name, kind) = match i % 3 {
                0 => ("g", Kind::Gauge),
                1 => ("k", if *retype { Kind::Counter } else { Kind::Gauge }),
                _ => ("shared", Kind::Gauge),
            };
            let series = Series {
                labels: vec![
                    Label {
                        name: "instance".into(),
                        value: if name == "shared" {
                            "same".into()
                        } else {
                            instance.clone()
                        },
                    },
                    Label {
                        name: "job".into(),
                        value: format!("j{}", i / 3),
                    },
                ],
                value: value + i as f64,
                timestamp_ms: t,
                window: None,
            };
            match families.iter_mut().find(|f| f.name == name) {
                Some(f) => f.series.push(series),
                None => families.push(Family {
                    name: name.into(),
                    kind: kind as i32,
                    series: vec![series],
                    ..Default::default()
                }),
            }
        }
        if *reverse {
            families.reverse();
            for f in &mut families {
                f.series.reverse();
            }
        }
        Some(PushRequest {
            agent_id: instance,
            epoch: 1,
            sequence,
            timestamp_ms: t,
            flush_interval_ms: 1_000,
            families,
            ..Default::default()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Whatever agents send, in whatever order, with sweeps, retention
        /// and type changes in between, the store holds the same with the
        /// series caches on as with them off.
        #[test]
        fn series_cache_changes_nothing(steps in proptest::collection::vec(step(), 1..40)) {
            let start = now_ms();
            let stores: Vec<Store> = (0..2)
                .map(|i| {
                    let mut s = Store::new(Duration::from_secs(60), Duration::from_secs(300))
                        .started_at(start);
                    s.cache_off = i == 1;
                    s
                })
                .collect();
            let mut now = start;
            let mut sequence = [0u64; 2];
            for step in &steps {
                now += 1_000;
                match step {
                    Step::Sweep(ms) => {
                        now += ms;
                        for s in &stores {
                            s.sweep(now);
                        }
                    }
                    Step::Push { agent, .. } => {
                        sequence[*agent] += 1;
                        if let Some(b) = pool_batch(*agent, sequence[*agent], now, step) {
                            let applied: Vec<Applied> =
                                stores.iter().map(|s| s.apply(&b, now)).collect();
                            proptest::prop_assert_eq!(applied[0], applied[1]);
                        }
                    }
                }
            }
            let everything = [Matcher::regex("__name__", ".+", false).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(e.to_string())
            })?];
            let history: Vec<Vec<SeriesSamples>> = stores
                .iter()
                .map(|s| {
                    let mut all = s.select(&everything, 0, i64::MAX);
                    all.sort_by(|a, b| a.labels.cmp(&b.labels));
                    // NaN (stale markers) compared by bits.
                    all.iter_mut().for_each(|x| {
                        x.samples.iter_mut().for_each(|p| p.1 = f64::from_bits(p.1.to_bits()))
                    });
                    all
                })
                .collect();
            let render = |h: &Vec<SeriesSamples>| format!("{h:?}");
            proptest::prop_assert_eq!(render(&history[0]), render(&history[1]));
            proptest::prop_assert_eq!(
                format!("{:?}", snapshot(&stores[0])),
                format!("{:?}", snapshot(&stores[1]))
            );
        }
    }

    fn snapshot(store: &Store) -> Vec<(String, String, f64, Option<Cumulative>)> {
        let mut out = Vec::new();
        store.visit(|name, _, series| {
            for (text, s) in series {
                out.push((
                    name.to_string(),
                    text.to_string(),
                    s.value,
                    s.cumulative.clone(),
                ));
            }
        });
        out
    }

    #[test]
    fn replayed_batch_is_applied_once() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(store.apply_now(&batch(1, 9, 1.0)).series, 2);
        let replay = store.apply_now(&batch(1, 9, 1.0));
        assert!(replay.duplicate);
        let snap = snapshot(&store);
        assert_eq!(
            snap[1].3.as_ref().map(|c| (c.count, c.buckets.clone())),
            Some((3, vec![2, 3, 3]))
        );
        // The next batch accumulates.
        store.apply_now(&batch(2, 9, 2.0));
        let snap = snapshot(&store);
        assert_eq!(snap[0].2, 2.0);
        assert_eq!(snap[1].3.as_ref().map(|c| (c.count, c.sum)), Some((6, 3.0)));
        assert_eq!(snap[0].1, "instance=\"a\",job=\"node\"");
    }

    #[test]
    fn each_agents_build_is_kept_from_its_last_batch() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        // An agent too old to send its build.
        store.apply_now(&batch(1, 9, 1.0));
        let agents = store.agents();
        assert_eq!(agents.len(), 1);
        assert_eq!(
            (agents[0].version.as_str(), agents[0].id.as_str()),
            ("", "a")
        );
        // Upgraded: the next batch says so.
        let mut b = batch(2, 9, 1.0);
        b.agent_version = "0.2.0".into();
        b.agent_revision = "0123456789ab".into();
        store.apply_now(&b);
        let agents = store.agents();
        assert_eq!(
            (agents[0].version.as_str(), agents[0].revision.as_str()),
            ("0.2.0", "0123456789ab")
        );
        // A replayed batch is not applied again and changes nothing.
        store.apply_now(&batch(2, 9, 1.0));
        assert_eq!(store.agents()[0].version, "0.2.0");
        // Rolled back to a build without the field: unknown again.
        store.apply_now(&batch(3, 9, 1.0));
        assert_eq!(store.agents()[0].version, "");
    }

    #[test]
    fn a_new_epoch_starts_a_new_sequence() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        store.apply_now(&batch(5, 1, 1.0));
        let restarted = store.apply_now(&batch(1, 2, 3.0));
        assert!(!restarted.duplicate);
        assert_eq!(snapshot(&store)[0].2, 3.0);
    }

    #[test]
    fn kind_conflicts_are_skipped_not_fatal() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        store.apply_now(&batch(1, 1, 1.0));
        let mut other = batch(1, 7, 1.0);
        other.agent_id = "b".into();
        other.families[0].kind = Kind::Counter as i32;
        other.families[0].series[0].labels = labels("b");
        let applied = store.apply_now(&other);
        assert_eq!(applied.conflicts, 1);
        assert_eq!(applied.series, 1);
    }

    #[test]
    fn one_agent_may_change_a_family_type() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        store.apply_now(&batch(1, 1, 1.0));
        let mut changed = batch(2, 1, 5.0);
        changed.families[0].kind = Kind::Untyped as i32;
        let applied = store.apply_now(&changed);
        assert_eq!(applied.conflicts, 0);
        let mut kinds = Vec::new();
        store.visit(|name, family, _| kinds.push((name.to_string(), family.kind)));
        assert_eq!(kinds[0], ("g".to_string(), MetricKind::Untyped));
    }

    #[test]
    fn stale_series_are_hidden_then_swept() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        store.apply(&batch(1, 1, 1.0), now_ms() - 61_000);
        assert!(snapshot(&store).is_empty());
        assert_eq!(store.sweep(now_ms()).0, 2);
        assert_eq!(store.series_count(), 0);
    }

    #[test]
    fn series_that_stop_arriving_get_a_stale_marker() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        let mut first = batch(1, 1, 1.0);
        first.timestamp_ms = 1_000;
        for f in &mut first.families {
            for s in &mut f.series {
                s.timestamp_ms = 1_000;
            }
        }
        store.apply_now(&first);
        let mut second = batch(2, 1, 2.0);
        second.timestamp_ms = 2_000;
        second.families.truncate(1); // the histogram is gone
        second.families[0].series[0].timestamp_ms = 2_000;
        store.apply_now(&second);
        let eq = |n: &str, v: &str| Matcher::Equal(n.into(), v.into());
        let count = store.select(&[eq("__name__", "h_count")], 0, i64::MAX);
        assert_eq!(count[0].samples.len(), 2);
        assert!(chunk::is_stale_marker(count[0].samples[1].1));
        assert_eq!(count[0].samples[1].0, 2_000);
        let g = store.select(&[eq("__name__", "g")], 0, i64::MAX);
        assert!(g[0].samples.iter().all(|(_, v)| !v.is_nan()));
    }

    #[test]
    fn silent_agents_series_are_ended() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600)).started_at(0);
        let mut b = batch(1, 1, 1.0);
        b.flush_interval_ms = 1_000;
        b.families.truncate(1);
        b.families[0].series[0].timestamp_ms = 1_000;
        store.apply(&b, 1_000);
        assert!(store.mark_silent_agents(2_500).is_empty());
        assert_eq!(store.mark_silent_agents(3_500), vec!["a".to_string()]);
        assert!(store.mark_silent_agents(9_000).is_empty(), "marked once");
        let g = store.select(
            &[Matcher::Equal("__name__".into(), "g".into())],
            0,
            i64::MAX,
        );
        assert!(
            g[0].samples
                .last()
                .is_some_and(|(t, v)| *t == 3_500 && chunk::is_stale_marker(*v))
        );
        // The agent comes back and delivers what it queued: nothing refused.
        let mut late = batch(2, 1, 2.0);
        late.flush_interval_ms = 1_000;
        late.families.truncate(1);
        late.families[0].series[0].timestamp_ms = 2_000;
        assert_eq!(store.apply(&late, 9_500).out_of_order, 0);
        let g = store.select(
            &[Matcher::Equal("__name__".into(), "g".into())],
            0,
            i64::MAX,
        );
        assert_eq!(g[0].samples, vec![(1_000, 1.0), (2_000, 2.0)]);
    }

    #[test]
    fn a_restarted_collector_gives_agents_time_to_come_back() {
        let store =
            Store::new(Duration::from_secs(60), Duration::from_secs(3600)).started_at(50_000);
        let mut b = batch(1, 1, 1.0);
        b.flush_interval_ms = 1_000;
        store.apply(&b, 1_000);
        assert!(
            store.mark_silent_agents(51_500).is_empty(),
            "silence counts from the start"
        );
        assert_eq!(
            store.agent_liveness(),
            vec![("a".to_string(), 50_000, 1_000)]
        );
        assert_eq!(store.mark_silent_agents(52_500), vec!["a".to_string()]);
    }

    #[test]
    fn history_keeps_prometheus_series_for_every_sample() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(3600));
        for seq in 1..=3 {
            let mut b = batch(seq, 1, seq as f64);
            for f in &mut b.families {
                for s in &mut f.series {
                    s.timestamp_ms = seq as i64 * 1000;
                }
            }
            store.apply_now(&b);
        }
        let eq = |n: &str, v: &str| Matcher::Equal(n.into(), v.into());
        let g = store.select(&[eq("__name__", "g")], 0, i64::MAX);
        assert_eq!(g[0].samples, vec![(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
        let counts = store.select(&[eq("__name__", "h_count")], 0, i64::MAX);
        assert_eq!(
            counts[0].samples,
            vec![(1000, 3.0), (2000, 6.0), (3000, 9.0)]
        );
        let le = store.select(&[eq("__name__", "h_bucket"), eq("le", "0.5")], 0, i64::MAX);
        assert_eq!(le[0].samples.last(), Some(&(3000, 6.0)));
        let inf = store.select(&[eq("__name__", "h_bucket"), eq("le", "+Inf")], 0, i64::MAX);
        assert_eq!(inf[0].samples.last(), Some(&(3000, 9.0)));
        assert_eq!(store.history_stats().series, 6);
        // An agent whose clock went back: the sample is refused, counted.
        let mut late = batch(4, 1, 4.0);
        late.families[0].series[0].timestamp_ms = 500;
        late.families.truncate(1);
        assert_eq!(store.apply_now(&late).out_of_order, 1);
    }
}
