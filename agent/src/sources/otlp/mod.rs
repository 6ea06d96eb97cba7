//! OpenTelemetry metrics (OTLP) from the applications on this host.
//!
//! Two listeners ([`server`]), gRPC (by default `127.0.0.1:4317`) and HTTP
//! (`127.0.0.1:4318`, `POST /v1/metrics`, protobuf or JSON), hand each
//! export request to the [`Aggregator`] under a short lock. At every sample
//! the source moves what was folded into the agent's [`Windows`], so OTLP
//! series ship in the same batches, through the same spool, as the system's.
//!
//! | OTLP | Prometheus |
//! |---|---|
//! | gauge | gauge |
//! | monotonic sum (cumulative or delta) | counter `_total`; deltas are added up |
//! | non-monotonic sum (up-down counter) | gauge; deltas are added up |
//! | histogram (explicit buckets) | counters `_bucket{le}`, `_sum`, `_count` |
//! | exponential histogram | windowed family: an HDR window per flush |
//! | summary | gauge `{quantile}`, counters `_sum`, `_count` |
//!
//! Explicit-bucket histograms keep their own buckets: the raw values are
//! gone, and spreading a bucket's count over made-up values would claim a
//! precision the application never had. Exponential histograms are kept
//! as HDR windows: each bucket's count is recorded at the bucket's
//! geometric middle, so a quantile is off by at most half a bucket (at the
//! SDK's default scale, under 1 %), with the exact sum; the collector's
//! exact-quantile endpoint and `histogram_quantile` then work on them as on
//! StatsD timers. Negative values in them are recorded as 0.
//!
//! Resources: `service.name` (with `service.namespace/` in front) becomes
//! `job`; the agent's `instance` stays unless `instance_from_service` is
//! set, when `service.instance.id` becomes it; every other resource
//! attribute goes on one `target_info` gauge. Names and units: [`translate`].
//!
//! Limits: at most `max_series` OTLP series; a data point over a limit or
//! malformed is refused and counted by reason, and the request's answer
//! gives the count (OTLP's partial success). A cumulative series seen
//! first with a start time before the agent started is taken as a
//! baseline, so an agent restart does not count an application's
//! distribution twice.

pub mod server;
pub mod translate;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point,
};
use tracing::warn;
use vigil_shared::histogram::{Ladder, MAX_WINDOW_SAMPLES, Weighted};

use super::statsd::{PLAIN, SECONDS};
use super::{Source, SourceError};
use crate::config::OtlpConfig;
use crate::window::{FamilyKind, RecordError, Windows};
use translate::NameKind;

/// Series keys are hashed once per data point: foldhash, not SipHash (the
/// keys come from local applications, and their number is bounded).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Most buckets on one side of an exponential histogram point (the SDKs'
/// default is 160).
const MAX_EXP_BUCKETS: usize = 2_048;

/// Most explicit buckets on one histogram point.
const MAX_EXPLICIT_BUCKETS: usize = 256;

/// Most refused series names logged.
const LOGGED_NAMES: usize = 1_000;

/// Longest description kept as a family's help text.
const MAX_HELP_BYTES: usize = 1_024;

/// Why a data point was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Nothing of the name is left once mapped.
    BadName,
    /// The name is in the agent's own families (`node_`, `vigil_`, or
    /// `process_` without a `service.name`).
    ReservedName,
    /// The family was sent before as another kind.
    TypeConflict,
    /// A new series over `sources.otlp.max_series`.
    MaxSeries,
    /// The series' window already holds 1,000,000 samples.
    WindowFull,
    /// A value, bucket layout or temporality that cannot be taken.
    Invalid,
}

impl Reject {
    /// Every reason, in index order.
    pub const ALL: [Reject; 6] = [
        Reject::BadName,
        Reject::ReservedName,
        Reject::TypeConflict,
        Reject::MaxSeries,
        Reject::WindowFull,
        Reject::Invalid,
    ];

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::BadName => "bad_name",
            Reject::ReservedName => "reserved_name",
            Reject::TypeConflict => "type_conflict",
            Reject::MaxSeries => "max_series",
            Reject::WindowFull => "window_full",
            Reject::Invalid => "invalid",
        }
    }

    /// Its place in [`Reject::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the aggregator counted.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Data points taken.
    pub accepted: u64,
    /// Data points refused, by [`Reject::index`].
    pub rejected: [u64; Reject::ALL.len()],
}

/// What became of one export request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Data points taken.
    pub accepted: u64,
    /// Data points refused.
    pub rejected: u64,
    /// The first refusal, in words, for the partial-success answer.
    pub message: String,
}

/// How an entry goes into the windows.
#[derive(Debug, Clone, Copy)]
enum Class {
    Counter,
    Gauge,
    Window(Ladder),
}

impl Class {
    fn same(&self, other: &Class) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// An exponential histogram point's counts, for the difference between
/// two cumulative points.
#[derive(Debug, Clone, Default, PartialEq)]
struct Exp {
    start: u64,
    scale: i32,
    zero: u64,
    positive: (i64, Vec<u64>),
    negative: (i64, Vec<u64>),
    sum: f64,
    count: u64,
    /// The smallest and largest values recorded, when the point gives them.
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug)]
struct Entry {
    family: String,
    help: String,
    class: Class,
    labels: Vec<(String, String)>,
    value: f64,
    /// Window samples not yet moved into the windows.
    pending: Weighted,
    pending_count: u64,
    /// The last cumulative exponential histogram point.
    previous: Option<Exp>,
    updated: Instant,
}

/// OTLP series folded between two samples of the source.
#[derive(Debug)]
pub struct Aggregator {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    families: HashMap<String, Class>,
    key: String,
    max_series: usize,
    instance_from_service: bool,
    stale_after: Duration,
    /// When the agent started, in Unix nanoseconds.
    started_ns: u64,
    counts: Counts,
    logged: HashSet<String>,
}

/// Nanoseconds since the Unix epoch.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A point's labels: the resource's, then its attributes, mapped.
struct Labels {
    base: Vec<(String, String)>,
    /// Whether the resource named the service (`job` is set).
    has_job: bool,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(config: &OtlpConfig) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::default(),
            families: HashMap::default(),
            key: String::with_capacity(256),
            max_series: config.max_series,
            instance_from_service: config.instance_from_service,
            stale_after: config.stale_after,
            started_ns: unix_nanos(SystemTime::now()),
            counts: Counts::default(),
            logged: HashSet::new(),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Series held.
    pub fn series(&self) -> usize {
        self.entries.len()
    }

    /// Folds one export request in.
    pub fn export(&mut self, request: &ExportMetricsServiceRequest) -> Outcome {
        let now = Instant::now();
        let mut outcome = Outcome::default();
        for rm in &request.resource_metrics {
            let attributes = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let labels = self.resource_labels(attributes, now);
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    self.metric(metric, &labels, now, &mut outcome);
                }
            }
        }
        self.counts.accepted += outcome.accepted;
        outcome
    }

    /// `job` and `instance` from the resource; the rest on `target_info`.
    fn resource_labels(&mut self, attributes: &[KeyValue], now: Instant) -> Labels {
        let text = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| translate::label_value(kv.value.as_ref()))
                .filter(|v| !v.is_empty())
        };
        let mut base = Vec::new();
        let job = match (text("service.namespace"), text("service.name")) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name),
            _ => None,
        };
        let has_job = job.is_some();
        if let Some(job) = job {
            base.push(("job".to_string(), job));
        }
        if self.instance_from_service
            && let Some(id) = text("service.instance.id")
        {
            base.push(("instance".to_string(), id));
        }
        let mut info = base.clone();
        add_attributes(
            &mut info,
            attributes.iter().filter(|kv| {
                !matches!(
                    kv.key.as_str(),
                    "service.name" | "service.namespace" | "service.instance.id"
                )
            }),
        );
        info.sort_unstable();
        if info.len() > base.len() {
            // A target_info over a limit is refused like any series; it is
            // not one of the request's data points.
            let _ = self
                .entry(
                    "target_info",
                    "Resource attributes of each OpenTelemetry service.",
                    Class::Gauge,
                    &info,
                    now,
                )
                .map(|e| e.value = 1.0);
        }
        Labels { base, has_job }
    }

    fn reject(&mut self, outcome: &mut Outcome, reason: Reject, what: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.counts.rejected[reason.index()] += n;
        outcome.rejected += n;
        if outcome.message.is_empty() {
            outcome.message = format!("{what}: {}", reason.reason());
        }
    }

    fn metric(&mut self, metric: &Metric, labels: &Labels, now: Instant, outcome: &mut Outcome) {
        let points = match &metric.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64;
        let kind = match &metric.data {
            Some(Data::Sum(s)) if s.is_monotonic => NameKind::Counter,
            Some(Data::Gauge(_) | Data::Sum(_)) => NameKind::Gauge,
            _ => NameKind::Distribution,
        };
        let Some(name) = translate::metric_name(&metric.name, &metric.unit, kind) else {
            self.reject(outcome, Reject::BadName, &metric.name, points);
            return;
        };
        let own = ["node_", "vigil_"].iter().any(|p| name.starts_with(p))
            || (!labels.has_job && name.starts_with("process_"));
        if own {
            self.reject(outcome, Reject::ReservedName, &name, points);
            return;
        }
        let mut help = metric.description.clone();
        if help.len() > MAX_HELP_BYTES {
            let mut cut = MAX_HELP_BYTES;
            while !help.is_char_boundary(cut) {
                cut -= 1;
            }
            help.truncate(cut);
        }
        let context = Context {
            name: &name,
            help: &help,
            labels,
            now,
        };
        let results: Vec<Result<(), Reject>> = match &metric.data {
            Some(Data::Gauge(g)) => g
                .data_points
                .iter()
                .map(|p| self.number(&context, p, Class::Gauge, false))
                .collect(),
            Some(Data::Sum(s)) => {
                let delta = match temporality(s.aggregation_temporality) {
                    Some(d) => d,
                    None => {
                        self.reject(outcome, Reject::Invalid, &name, points);
                        return;
                    }
                };
                let class = if s.is_monotonic {
                    Class::Counter
                } else {
                    Class::Gauge
                };
                s.data_points
                    .iter()
                    .map(|p| self.number(&context, p, class, delta))
                    .collect()
            }
            Some(Data::Histogram(h)) => {
                let Some(delta) = temporality(h.aggregation_temporality) else {
                    self.reject(outcome, Reject::Invalid, &name, points);
                    return;
                };
                h.data_points
                    .iter()
                    .map(|p| self.histogram(&context, p, delta))
                    .collect()
            }
            Some(Data::ExponentialHistogram(e)) => {
                let Some(delta) = temporality(e.aggregation_temporality) else {
                    self.reject(outcome, Reject::Invalid, &name, points);
                    return;
                };
                let ladder = if name.ends_with("_seconds") {
                    SECONDS
                } else {
                    PLAIN
                };
                e.data_points
                    .iter()
                    .map(|p| self.exponential(&context, p, delta, ladder))
                    .collect()
            }
            Some(Data::Summary(s)) => s
                .data_points
                .iter()
                .map(|p| self.summary(&context, p))
                .collect(),
            None => Vec::new(),
        };
        for result in results {
            match result {
                Ok(()) => outcome.accepted += 1,
                Err(reason) => {
                    if reason == Reject::MaxSeries
                        && self.logged.len() < LOGGED_NAMES
                        && self.logged.insert(name.clone())
                    {
                        warn!(
                            name = %name,
                            limit = self.max_series,
                            "OTLP series dropped: sources.otlp.max_series reached (logged once per name)"
                        );
                    }
                    self.reject(outcome, reason, &name, 1);
                }
            }
        }
    }

    /// Finds or creates the entry of `family` with `labels` (sorted).
    fn entry(
        &mut self,
        family: &str,
        help: &str,
        class: Class,
        labels: &[(String, String)],
        now: Instant,
    ) -> Result<&mut Entry, Reject> {
        series_key(&mut self.key, family, labels);
        let i = match self.index.get(self.key.as_str()) {
            Some(&i) => i,
            None => {
                match self.families.get(family) {
                    Some(c) if !c.same(&class) => return Err(Reject::TypeConflict),
                    _ if self.entries.len() >= self.max_series => {
                        return Err(Reject::MaxSeries);
                    }
                    Some(_) => {}
                    None => {
                        self.families.insert(family.to_string(), class);
                    }
                }
                self.entries.push(Entry {
                    family: family.to_string(),
                    help: help.to_string(),
                    class,
                    labels: labels.to_vec(),
                    value: 0.0,
                    pending: Weighted::default(),
                    pending_count: 0,
                    previous: None,
                    updated: now,
                });
                self.index.insert(self.key.clone(), self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        let entry = self.entries.get_mut(i).ok_or(Reject::Invalid)?;
        if !entry.class.same(&class) {
            return Err(Reject::TypeConflict);
        }
        entry.updated = now;
        Ok(entry)
    }

    fn number(
        &mut self,
        cx: &Context<'_>,
        p: &NumberDataPoint,
        class: Class,
        delta: bool,
    ) -> Result<(), Reject> {
        if no_value(p.flags) {
            return Ok(());
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return Err(Reject::Invalid),
        };
        if matches!(class, Class::Counter) && (value < 0.0 || value.is_nan()) {
            return Err(Reject::Invalid);
        }
        let labels = cx.labels_with(&p.attributes, None);
        let entry = self.entry(cx.name, cx.help, class, &labels, cx.now)?;
        if delta {
            entry.value += value;
        } else {
            entry.value = value;
        }
        Ok(())
    }

    fn histogram(
        &mut self,
        cx: &Context<'_>,
        p: &HistogramDataPoint,
        delta: bool,
    ) -> Result<(), Reject> {
        if no_value(p.flags) {
            return Ok(());
        }
        let bounds = &p.explicit_bounds;
        let counts_ok = p.bucket_counts.is_empty()
            || (p.bucket_counts.len() == bounds.len() + 1
                && p.bucket_counts
                    .iter()
                    .try_fold(0u64, |a, n| a.checked_add(*n))
                    == Some(p.count));
        let shape_ok = counts_ok
            && bounds.len() <= MAX_EXPLICIT_BUCKETS
            && bounds.iter().all(|b| b.is_finite())
            && bounds.windows(2).all(|w| w[0] < w[1]);
        if !shape_ok || p.sum.is_some_and(|s| s.is_nan()) {
            return Err(Reject::Invalid);
        }
        let mut cumulative = 0u64;
        let les = bounds
            .iter()
            .map(|b| format_le(*b))
            .chain(std::iter::once("+Inf".to_string()));
        let bucket = format!("{}_bucket", cx.name);
        if !p.bucket_counts.is_empty() {
            for (le, n) in les.zip(&p.bucket_counts) {
                cumulative += n;
                let labels = cx.labels_with(&p.attributes, Some(("le", &le)));
                let entry = self.entry(&bucket, cx.help, Class::Counter, &labels, cx.now)?;
                set_or_add(entry, cumulative as f64, delta);
            }
        }
        let labels = cx.labels_with(&p.attributes, None);
        let count = format!("{}_count", cx.name);
        let entry = self.entry(&count, cx.help, Class::Counter, &labels, cx.now)?;
        set_or_add(entry, p.count as f64, delta);
        if let Some(sum) = p.sum {
            let name = format!("{}_sum", cx.name);
            let entry = self.entry(&name, cx.help, Class::Counter, &labels, cx.now)?;
            set_or_add(entry, sum, delta);
        }
        Ok(())
    }

    fn summary(&mut self, cx: &Context<'_>, p: &SummaryDataPoint) -> Result<(), Reject> {
        if no_value(p.flags) {
            return Ok(());
        }
        if p.sum.is_nan()
            || p.quantile_values
                .iter()
                .any(|q| !(0.0..=1.0).contains(&q.quantile))
            || p.quantile_values.len() > MAX_EXPLICIT_BUCKETS
        {
            return Err(Reject::Invalid);
        }
        for q in &p.quantile_values {
            let text = format_le(q.quantile);
            let labels = cx.labels_with(&p.attributes, Some(("quantile", &text)));
            let entry = self.entry(cx.name, cx.help, Class::Gauge, &labels, cx.now)?;
            entry.value = q.value;
        }
        let labels = cx.labels_with(&p.attributes, None);
        for (suffix, value) in [("_sum", p.sum), ("_count", p.count as f64)] {
            let name = format!("{}{suffix}", cx.name);
            let entry = self.entry(&name, cx.help, Class::Counter, &labels, cx.now)?;
            entry.value = value;
        }
        Ok(())
    }

    fn exponential(
        &mut self,
        cx: &Context<'_>,
        p: &ExponentialHistogramDataPoint,
        delta: bool,
        ladder: Ladder,
    ) -> Result<(), Reject> {
        if no_value(p.flags) {
            return Ok(());
        }
        let exp = Exp::from_point(p).ok_or(Reject::Invalid)?;
        let labels = cx.labels_with(&p.attributes, None);
        let started = self.started_ns;
        let entry = self.entry(cx.name, cx.help, Class::Window(ladder), &labels, cx.now)?;
        let new = if delta {
            Some(exp)
        } else {
            let new = match &entry.previous {
                Some(previous) => Some(exp.since(previous)),
                // Seen first: what was counted before the agent started
                // may have been shipped by an earlier run.
                None if exp.start != 0 && exp.start < started => None,
                None => Some(exp.clone()),
            };
            entry.previous = Some(exp);
            new
        };
        let Some(new) = new else {
            return Ok(());
        };
        if entry.pending_count.saturating_add(new.count) > MAX_WINDOW_SAMPLES {
            return Err(Reject::WindowFull);
        }
        entry.pending_count += new.count;
        new.weighted(&mut entry.pending);
        entry.pending.compact();
        Ok(())
    }

    /// Moves every series into `out` and forgets series no request has
    /// updated for `stale_after`. Gives how many the windows refused.
    pub fn record(&mut self, out: &mut Windows) -> u64 {
        let now = Instant::now();
        let stale_after = self.stale_after;
        if self
            .entries
            .iter()
            .any(|e| now.duration_since(e.updated) > stale_after)
        {
            self.entries
                .retain(|e| now.duration_since(e.updated) <= stale_after);
            self.index.clear();
            self.families.clear();
            for (i, e) in self.entries.iter().enumerate() {
                series_key(&mut self.key, &e.family, &e.labels);
                self.index.insert(self.key.clone(), i);
                self.families.insert(e.family.clone(), e.class);
            }
        }
        let mut refused = 0;
        let logged = &mut self.logged;
        for entry in &mut self.entries {
            let kind = match entry.class {
                Class::Counter => FamilyKind::Counter,
                Class::Gauge => FamilyKind::Gauge,
                Class::Window(ladder) => FamilyKind::Histogram(ladder),
            };
            let help = if entry.help.is_empty() {
                "Sent by OpenTelemetry (OTLP)."
            } else {
                entry.help.as_str()
            };
            let Ok(family) = out.family(&entry.family, help, kind) else {
                refused += 1;
                entry.pending = Weighted::default();
                entry.pending_count = 0;
                continue;
            };
            let labels: Vec<(&str, &str)> = entry
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let outcome: Result<(), RecordError> = match entry.class {
                // Every sample, with or without new counts: a series with
                // none ships an empty window, so it does not go stale
                // between the application's exports.
                Class::Window(_) => {
                    let pending = std::mem::take(&mut entry.pending);
                    entry.pending_count = 0;
                    out.observe_weighted(family, &labels, &pending.values, pending.sum)
                }
                _ => out.set(family, &labels, entry.value),
            };
            if let Err(e) = outcome {
                refused += 1;
                super::log_refused(logged, LOGGED_NAMES, "OTLP", &entry.family, &e);
            }
        }
        refused
    }
}

/// What every point of one metric shares.
struct Context<'a> {
    name: &'a str,
    help: &'a str,
    labels: &'a Labels,
    now: Instant,
}

impl Context<'_> {
    /// The resource's labels, the point's attributes and `extra`, sorted.
    fn labels_with(
        &self,
        attributes: &[KeyValue],
        extra: Option<(&str, &str)>,
    ) -> Vec<(String, String)> {
        let mut labels = self.labels.base.clone();
        add_attributes(&mut labels, attributes.iter());
        if let Some((k, v)) = extra {
            labels.retain(|(name, _)| name != k);
            labels.push((k.to_string(), v.to_string()));
        }
        labels.sort_unstable();
        labels
    }
}

/// Adds attributes as labels. `instance` and `job` keys become
/// `exported_instance` and `exported_job`; two keys that map to one label
/// name have their values joined with `;`.
fn add_attributes<'a>(
    labels: &mut Vec<(String, String)>,
    attributes: impl Iterator<Item = &'a KeyValue>,
) {
    let fixed = labels.len();
    for kv in attributes {
        let Some(mut name) = translate::label_name(&kv.key) else {
            continue;
        };
        if name == "instance" || name == "job" || name == "le" || name == "quantile" {
            name.insert_str(0, "exported_");
        }
        let value = translate::label_value(kv.value.as_ref());
        if value.is_empty() {
            continue;
        }
        match labels.iter_mut().skip(fixed).find(|(k, _)| *k == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => labels.push((name, value)),
        }
    }
}

/// Writes the key of a series (family and sorted labels) into `key`.
fn series_key(key: &mut String, family: &str, labels: &[(String, String)]) {
    key.clear();
    key.push_str(family);
    for (k, v) in labels {
        key.push('\u{1}');
        key.push_str(k);
        key.push('\u{2}');
        key.push_str(v);
    }
}

/// Whether a point's flags say it has no recorded value.
fn no_value(flags: u32) -> bool {
    flags & 1 == 1
}

/// `Some(true)` for delta, `Some(false)` for cumulative, `None` otherwise.
fn temporality(t: i32) -> Option<bool> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => Some(true),
        Ok(AggregationTemporality::Cumulative) => Some(false),
        _ => None,
    }
}

fn set_or_add(entry: &mut Entry, value: f64, delta: bool) {
    if delta {
        entry.value += value;
    } else {
        entry.value = value;
    }
}

/// A bound or quantile as Prometheus writes it in `le` and `quantile`.
fn format_le(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

impl Exp {
    /// The point's counts, checked: a scale OTLP allows (-10 to 20), at
    /// most 2,048 buckets a side, and counts that add up.
    fn from_point(p: &ExponentialHistogramDataPoint) -> Option<Exp> {
        if !(-10..=20).contains(&p.scale) {
            return None;
        }
        let side = |b: &Option<Buckets>| -> Option<(i64, Vec<u64>)> {
            match b {
                Some(b) if b.bucket_counts.len() > MAX_EXP_BUCKETS => None,
                Some(b) => Some((i64::from(b.offset), b.bucket_counts.clone())),
                None => Some((0, Vec::new())),
            }
        };
        let positive = side(&p.positive)?;
        let negative = side(&p.negative)?;
        let total = positive
            .1
            .iter()
            .chain(&negative.1)
            .try_fold(p.zero_count, |a, n| a.checked_add(*n))?;
        if total != p.count || p.sum.is_some_and(|s| !s.is_finite()) {
            return None;
        }
        Some(Exp {
            start: p.start_time_unix_nano,
            scale: p.scale,
            zero: p.zero_count,
            positive,
            negative,
            sum: p.sum.unwrap_or(0.0),
            count: p.count,
            min: p.min.filter(|v| v.is_finite()),
            max: p.max.filter(|v| v.is_finite()),
        })
    }

    /// The same counts at a coarser scale.
    fn downscale(&self, scale: i32) -> Exp {
        let shift = (self.scale - scale).clamp(0, 63) as u32;
        let side = |(offset, counts): &(i64, Vec<u64>)| -> (i64, Vec<u64>) {
            if counts.is_empty() || shift == 0 {
                return (*offset, counts.clone());
            }
            let first = offset >> shift;
            let last = (offset + counts.len() as i64 - 1) >> shift;
            let mut out = vec![0u64; (last - first + 1) as usize];
            for (i, n) in counts.iter().enumerate() {
                let j = ((offset + i as i64) >> shift) - first;
                if let Some(slot) = out.get_mut(j as usize) {
                    *slot = slot.saturating_add(*n);
                }
            }
            (first, out)
        };
        Exp {
            start: self.start,
            scale,
            zero: self.zero,
            positive: side(&self.positive),
            negative: side(&self.negative),
            sum: self.sum,
            count: self.count,
            min: self.min,
            max: self.max,
        }
    }

    /// What was counted since `previous` (both cumulative); all of `self`
    /// when the series restarted.
    fn since(&self, previous: &Exp) -> Exp {
        if previous.start != self.start
            || previous.count > self.count
            || previous.scale < self.scale
        {
            return self.clone();
        }
        let prev = previous.downscale(self.scale);
        let side = |cur: &(i64, Vec<u64>), old: &(i64, Vec<u64>)| -> Option<(i64, Vec<u64>)> {
            let mut out = cur.1.clone();
            for (i, n) in old.1.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let j = old.0 + i as i64 - cur.0;
                let slot = usize::try_from(j).ok().and_then(|j| out.get_mut(j))?;
                *slot = slot.checked_sub(*n)?;
            }
            Some((cur.0, out))
        };
        match (
            side(&self.positive, &prev.positive),
            side(&self.negative, &prev.negative),
            self.zero.checked_sub(prev.zero),
        ) {
            (Some(positive), Some(negative), Some(zero)) => Exp {
                start: self.start,
                scale: self.scale,
                zero,
                positive,
                negative,
                sum: self.sum - prev.sum,
                count: self.count - prev.count,
                min: self.min,
                max: self.max,
            },
            _ => self.clone(),
        }
    }

    /// Each populated bucket as its geometric middle, with its count; kept
    /// within the point's minimum and maximum when it gives them, so the
    /// extreme buckets come out exact more often.
    fn weighted(&self, out: &mut Weighted) {
        let width = (-f64::from(self.scale)).exp2();
        let (low, high) = (
            self.min.unwrap_or(f64::NEG_INFINITY),
            self.max.unwrap_or(f64::INFINITY),
        );
        let clamp = |v: f64| if low <= high { v.clamp(low, high) } else { v };
        let middle = |index: i64| ((index as f64 + 0.5) * width).exp2().min(f64::MAX);
        if self.zero > 0 {
            out.values.push((clamp(0.0), self.zero));
        }
        for (i, n) in self.positive.1.iter().enumerate() {
            if *n > 0 {
                out.values
                    .push((clamp(middle(self.positive.0 + i as i64)), *n));
            }
        }
        for (i, n) in self.negative.1.iter().enumerate() {
            if *n > 0 {
                out.values
                    .push((clamp(-middle(self.negative.0 + i as i64)), *n));
            }
        }
        out.sum += self.sum;
    }
}

/// Locks the aggregator; a handler that panicked while holding it left
/// nothing half-written that matters, so the lock is taken back.
fn lock(agg: &Mutex<Aggregator>) -> MutexGuard<'_, Aggregator> {
    agg.lock().unwrap_or_else(|e| e.into_inner())
}

/// The OTLP source: its listeners run on the agent's async runtime;
/// sampling moves what they folded into the windows.
pub struct OtlpSource {
    aggregator: Arc<Mutex<Aggregator>>,
    stats: Arc<server::Stats>,
    /// Whether gRPC and HTTP are configured.
    configured: (bool, bool),
    refused: u64,
}

impl OtlpSource {
    /// Starts the listeners the config names, on the current async
    /// runtime. A port that cannot be bound is logged with what holds it
    /// and tried again every 10 s; the agent starts either way.
    pub fn start(config: &OtlpConfig) -> Result<Self, SourceError> {
        let aggregator = Arc::new(Mutex::new(Aggregator::new(config)));
        let stats = Arc::new(server::Stats::default());
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| SourceError(format!("the OTLP receiver needs the async runtime: {e}")))?;
        let shared = server::Shared {
            aggregator: Arc::clone(&aggregator),
            stats: Arc::clone(&stats),
            max_request_size: config.max_request_size,
        };
        if let Some(addr) = config.grpc {
            handle.spawn(server::grpc(addr, shared.clone()));
        }
        if let Some(addr) = config.http {
            handle.spawn(server::http(addr, shared));
        }
        Ok(Self {
            aggregator,
            stats,
            configured: (config.grpc.is_some(), config.http.is_some()),
            refused: 0,
        })
    }
}

impl Source for OtlpSource {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn sample(&mut self, out: &mut Windows, _now: SystemTime) -> Result<(), SourceError> {
        let (counts, series, refused) = {
            let mut agg = lock(&self.aggregator);
            let refused = agg.record(out);
            (agg.counts().clone(), agg.series(), refused)
        };
        self.refused += refused;
        self.stats
            .record(out, self.configured, &counts, series, self.refused)
            .map_err(SourceError::from)
    }
}

#[cfg(test)]
mod tests;
