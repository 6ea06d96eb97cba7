//! Per-series state between two flushes: the last value of every series and
//! the raw samples of every windowed series. Sources write into it through
//! [`Windows::family`], [`Windows::set`] and [`Windows::observe`]; every
//! `flush_interval` [`Windows::close`] turns it into the families of one batch.
//!
//! Series are found by a key built in a reused buffer, so a sample of a known
//! series allocates nothing. Each new series is validated once with the same
//! rules the collector applies; what fails, or what exceeds `max_series`, is
//! dropped and counted, never shipped.

use std::collections::HashMap;
use std::fmt::Write as _;

use vigil_shared::histogram::{HistogramError, Ladder, Weighted, WindowEncoder};
use vigil_shared::labels::{self, SeriesLimits};
use vigil_shared::proto;

/// Suffix of the gauge family that carries each window's exact quantiles
/// beside a histogram family (`vigil_cpu_busy_ratio_window`).
pub const WINDOW_SUFFIX: &str = "_window";

/// The quantiles of each window shipped in that family, with their `stat`
/// label (not `quantile`, which Prometheus keeps for summaries).
const WINDOW_QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (1.0, "max")];

/// The nearest-rank quantile of sorted (value, weight) pairs: the smallest
/// value with at least `q` of the weight at or below it.
fn nearest_rank(sorted: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = sorted.iter().map(|(_, n)| *n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (v, n) in sorted {
        seen += n;
        if seen >= rank {
            return Some(*v);
        }
    }
    sorted.last().map(|(v, _)| *v)
}

/// The kind of a family, as sources declare it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FamilyKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Unknown (text-format sources without a TYPE line).
    Untyped,
    /// A per-sample distribution, shipped as a window.
    Histogram(Ladder),
}

/// A registered family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyId(u32);

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: FamilyKind,
}

#[derive(Debug)]
struct SeriesState {
    family: FamilyId,
    labels: Vec<proto::Label>,
    value: f64,
    timestamp_ms: i64,
    samples: Vec<f64>,
    /// Already aggregated samples (OTLP exponential histograms).
    weighted: Weighted,
    touched: bool,
}

/// Why a sample was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The metric name is not a valid Prometheus name, or the family was
    /// registered before with another kind.
    #[error("family {name}: {reason}")]
    Family {
        /// The family name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The series breaks a naming rule or a limit.
    #[error("series {series}: {source}")]
    Invalid {
        /// The series, formatted.
        series: String,
        /// The rule it breaks.
        source: labels::LabelError,
    },
    /// The agent already has `max_series` series.
    #[error("series {series}: the agent already has {limit} series (max_series)")]
    TooManySeries {
        /// The series, formatted.
        series: String,
        /// The limit.
        limit: usize,
    },
}

/// Counts of what [`Windows`] refused, for the agent's own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusals {
    /// Series refused for a naming rule or a limit on labels.
    pub invalid: u64,
    /// New series refused because `max_series` was reached.
    pub over_limit: u64,
}

/// Every series' state since the last flush.
#[derive(Debug)]
pub struct Windows {
    families: Vec<Family>,
    family_index: HashMap<String, FamilyId>,
    series: HashMap<String, SeriesState>,
    instance: String,
    job: String,
    limits: SeriesLimits,
    max_series: usize,
    now_ms: i64,
    window_start_ms: i64,
    key: String,
    scratch: Vec<(String, String)>,
    encoder: WindowEncoder,
    refusals: Refusals,
}

impl Windows {
    /// Empty windows for an agent named `instance` in `job`.
    pub fn new(instance: &str, job: &str, max_series: usize) -> Result<Self, HistogramError> {
        Ok(Self {
            families: Vec::new(),
            family_index: HashMap::new(),
            series: HashMap::new(),
            instance: instance.to_string(),
            job: job.to_string(),
            limits: SeriesLimits::default(),
            max_series,
            now_ms: 0,
            window_start_ms: 0,
            key: String::with_capacity(256),
            scratch: Vec::with_capacity(8),
            encoder: WindowEncoder::new()?,
            refusals: Refusals::default(),
        })
    }

    /// Sets the time of the samples that follow, milliseconds since the Unix epoch.
    pub fn begin_sample(&mut self, now_ms: i64) {
        if self.window_start_ms == 0 {
            self.window_start_ms = now_ms;
        }
        self.now_ms = now_ms;
    }

    /// What has been refused so far.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// How many series are live.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Finds or registers a family. Cheap for a known name.
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: FamilyKind,
    ) -> Result<FamilyId, RecordError> {
        if let Some(&id) = self.family_index.get(name) {
            let family = &self.families[id.0 as usize];
            if std::mem::discriminant(&family.kind) != std::mem::discriminant(&kind) {
                return Err(RecordError::Family {
                    name: name.to_string(),
                    reason: format!("already recorded as {:?}, now as {:?}", family.kind, kind),
                });
            }
            return Ok(id);
        }
        labels::validate_metric_name(name, &self.limits).map_err(|e| RecordError::Family {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        let id = FamilyId(self.families.len() as u32);
        self.families.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
        });
        self.family_index.insert(name.to_string(), id);
        Ok(id)
    }

    /// Records the current value of a counter, gauge or untyped series.
    pub fn set(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), RecordError> {
        let now = self.now_ms;
        let state = self.series_state(family, labels)?;
        state.value = value;
        state.timestamp_ms = now;
        state.touched = true;
        Ok(())
    }

    /// Records one sample of a windowed (histogram) series.
    pub fn observe(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
        value: f64,
    ) -> Result<(), RecordError> {
        let now = self.now_ms;
        let state = self.series_state(family, labels)?;
        state.value = value;
        state.timestamp_ms = now;
        state.samples.push(value);
        state.touched = true;
        Ok(())
    }

    /// Records several samples of one windowed series at once (one lookup);
    /// none keeps the series in the next batch with an empty window.
    pub fn observe_many(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
        values: &[f64],
    ) -> Result<(), RecordError> {
        let now = self.now_ms;
        let state = self.series_state(family, labels)?;
        // No samples still ships the series, as an empty window: an
        // application's histogram does not go stale between its events.
        if let Some(&last) = values.last() {
            state.value = last;
        }
        state.timestamp_ms = now;
        state.samples.extend_from_slice(values);
        state.touched = true;
        Ok(())
    }

    /// Records values of a windowed series that each stand for several
    /// samples, with the exact sum of those samples (one bucket of an
    /// aggregated histogram per value).
    pub fn observe_weighted(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
        values: &[(f64, u64)],
        sum: f64,
    ) -> Result<(), RecordError> {
        let now = self.now_ms;
        let state = self.series_state(family, labels)?;
        if let Some(&(last, _)) = values.last() {
            state.value = last;
        }
        state.timestamp_ms = now;
        if !values.is_empty() {
            state.weighted.values.extend_from_slice(values);
            state.weighted.sum += sum;
            state.weighted.compact();
        }
        state.touched = true;
        Ok(())
    }

    fn series_state(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
    ) -> Result<&mut SeriesState, RecordError> {
        self.key.clear();
        let _ = write!(self.key, "{}", family.0);
        for (k, v) in labels {
            self.key.push('\u{1}');
            self.key.push_str(k);
            self.key.push('\u{2}');
            self.key.push_str(v);
        }
        if !self.series.contains_key(self.key.as_str()) {
            let state = self.new_series(family, labels)?;
            self.series.insert(self.key.clone(), state);
        }
        self.series
            .get_mut(self.key.as_str())
            .ok_or_else(|| RecordError::Family {
                name: String::new(),
                reason: "internal: series vanished".into(),
            })
    }

    fn new_series(
        &mut self,
        family: FamilyId,
        labels: &[(&str, &str)],
    ) -> Result<SeriesState, RecordError> {
        self.scratch.clear();
        self.scratch
            .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // A source may name the series' own `job` or `instance` (OTLP's
        // `service.name`); every other source strips or renames them.
        if !labels.iter().any(|(k, _)| *k == "instance") {
            self.scratch
                .push(("instance".to_string(), self.instance.clone()));
        }
        if !labels.iter().any(|(k, _)| *k == "job") {
            self.scratch.push(("job".to_string(), self.job.clone()));
        }
        self.scratch.sort();
        let name = &self.families[family.0 as usize].name;
        if let Err(source) = labels::validate_labels(
            self.scratch.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.limits,
        ) {
            self.refusals.invalid += 1;
            return Err(RecordError::Invalid {
                series: labels::describe_series(name, labels.iter().copied()),
                source,
            });
        }
        if self.series.len() >= self.max_series {
            self.refusals.over_limit += 1;
            return Err(RecordError::TooManySeries {
                series: labels::describe_series(name, labels.iter().copied()),
                limit: self.max_series,
            });
        }
        Ok(SeriesState {
            family,
            labels: self
                .scratch
                .drain(..)
                .map(|(name, value)| proto::Label { name, value })
                .collect(),
            value: 0.0,
            timestamp_ms: 0,
            samples: Vec::new(),
            weighted: Weighted::default(),
            touched: false,
        })
    }

    /// Closes the window: every series touched since the last close, grouped
    /// by family. Series not touched since the last close are forgotten
    /// (a device or file that went away).
    pub fn close(&mut self) -> Result<Vec<proto::Family>, HistogramError> {
        let end_ms = self.now_ms;
        let start_ms = self.window_start_ms;
        let mut out: Vec<Option<proto::Family>> = (0..self.families.len()).map(|_| None).collect();
        // The windows' exact per-second quantiles, one gauge family beside
        // each histogram family.
        let mut quantiles: Vec<Option<proto::Family>> =
            (0..self.families.len()).map(|_| None).collect();
        let mut sorted: Vec<(f64, u64)> = Vec::new();
        self.series.retain(|_, s| s.touched);
        for state in self.series.values_mut() {
            let family = &self.families[state.family.0 as usize];
            let slot = out[state.family.0 as usize].get_or_insert_with(|| proto::Family {
                name: family.name.clone(),
                help: family.help.clone(),
                kind: match family.kind {
                    FamilyKind::Counter => proto::Kind::Counter,
                    FamilyKind::Gauge => proto::Kind::Gauge,
                    FamilyKind::Untyped => proto::Kind::Untyped,
                    FamilyKind::Histogram(_) => proto::Kind::Histogram,
                } as i32,
                bucket_bounds: match family.kind {
                    FamilyKind::Histogram(l) => l.bounds.to_vec(),
                    _ => Vec::new(),
                },
                series: Vec::new(),
            });
            let window = match family.kind {
                FamilyKind::Histogram(ladder) => {
                    let w = self.encoder.encode_weighted(
                        &state.samples,
                        &state.weighted,
                        &ladder,
                        start_ms,
                        end_ms,
                    )?;
                    if w.count > 0 {
                        let family_out = quantiles[state.family.0 as usize].get_or_insert_with(|| {
                            proto::Family {
                                name: format!("{}{WINDOW_SUFFIX}", family.name),
                                help: format!(
                                    "Exact median (stat p50), 99th percentile (p99) and maximum (max) of {}'s per-second samples over each flush window.",
                                    family.name
                                ),
                                kind: proto::Kind::Gauge as i32,
                                bucket_bounds: Vec::new(),
                                series: Vec::new(),
                            }
                        });
                        sorted.clear();
                        sorted.extend(
                            state
                                .samples
                                .iter()
                                .map(|v| (*v, 1))
                                .chain(state.weighted.values.iter().copied())
                                .filter(|(v, n)| !v.is_nan() && *n > 0),
                        );
                        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                        for (q, text) in WINDOW_QUANTILES {
                            let Some(v) = nearest_rank(&sorted, q) else {
                                continue;
                            };
                            let mut labels = state.labels.clone();
                            labels.push(proto::Label {
                                name: "stat".into(),
                                value: text.into(),
                            });
                            labels.sort_by(|a, b| a.name.cmp(&b.name));
                            family_out.series.push(proto::Series {
                                labels,
                                value: v,
                                timestamp_ms: state.timestamp_ms,
                                window: None,
                            });
                        }
                    }
                    state.samples.clear();
                    state.weighted = Weighted::default();
                    Some(w)
                }
                _ => None,
            };
            slot.series.push(proto::Series {
                labels: state.labels.clone(),
                value: state.value,
                timestamp_ms: state.timestamp_ms,
                window,
            });
            state.touched = false;
        }
        self.window_start_ms = 0;
        self.forget_unused_families();
        Ok(out.into_iter().chain(quantiles).flatten().collect())
    }

    /// Drops families with no series left, so that a family can come back
    /// with another kind (a textfile rewritten with another TYPE).
    fn forget_unused_families(&mut self) {
        let mut used = vec![false; self.families.len()];
        for s in self.series.values() {
            used[s.family.0 as usize] = true;
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![None; self.families.len()];
        let old = std::mem::take(&mut self.families);
        self.family_index.clear();
        for (i, (family, used)) in old.into_iter().zip(used).enumerate() {
            if used {
                let id = FamilyId(self.families.len() as u32);
                self.family_index.insert(family.name.clone(), id);
                self.families.push(family);
                remap[i] = Some(id);
            }
        }
        for s in self.series.values_mut() {
            if let Some(id) = remap[s.family.0 as usize] {
                s.family = id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::histogram::RATIO;

    #[test]
    fn series_carry_instance_and_job_and_close_into_families() -> anyhow::Result<()> {
        let mut w = Windows::new("web-1", "node", 100)?;
        w.begin_sample(1000);
        let load = w.family("node_load1", "1m load average.", FamilyKind::Gauge)?;
        let busy = w.family(
            "vigil_cpu_busy_ratio",
            "CPU busy.",
            FamilyKind::Histogram(RATIO),
        )?;
        w.set(load, &[], 0.5)?;
        w.observe(busy, &[], 0.25)?;
        w.begin_sample(2000);
        w.set(load, &[], 0.7)?;
        w.observe(busy, &[], 0.75)?;
        let families = w.close()?;
        assert_eq!(families.len(), 3);
        let load = families
            .iter()
            .find(|f| f.name == "node_load1")
            .ok_or_else(|| anyhow::anyhow!("no load"))?;
        assert_eq!(load.series[0].value, 0.7);
        assert_eq!(load.series[0].timestamp_ms, 2000);
        let names: Vec<&str> = load.series[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["instance", "job"]);
        let busy = families
            .iter()
            .find(|f| f.name == "vigil_cpu_busy_ratio")
            .ok_or_else(|| anyhow::anyhow!("no busy"))?;
        let window = busy.series[0]
            .window
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no window"))?;
        assert_eq!(window.count, 2);
        assert_eq!(window.sum, 1.0);
        assert_eq!((window.start_ms, window.end_ms), (1000, 2000));
        let quantiles = families
            .iter()
            .find(|f| f.name == "vigil_cpu_busy_ratio_window")
            .ok_or_else(|| anyhow::anyhow!("no window quantiles"))?;
        let by_q: Vec<(String, f64)> = quantiles
            .series
            .iter()
            .map(|s| {
                let q = s.labels.iter().find(|l| l.name == "stat");
                (q.map(|l| l.value.clone()).unwrap_or_default(), s.value)
            })
            .collect();
        assert_eq!(
            by_q,
            [
                ("p50".into(), 0.25),
                ("p99".into(), 0.75),
                ("max".into(), 0.75)
            ]
        );
        Ok(())
    }

    #[test]
    fn a_windowed_series_without_samples_ships_an_empty_window() -> anyhow::Result<()> {
        let mut w = Windows::new("web-1", "node", 100)?;
        w.begin_sample(1000);
        let h = w.family("app_seconds", "A timer.", FamilyKind::Histogram(RATIO))?;
        w.observe_many(h, &[], &[0.5, 0.25])?;
        w.observe_weighted(h, &[("k", "v")], &[(0.5, 3)], 1.25)?;
        let families = w.close()?;
        assert_eq!(families.len(), 2, "the family and its _window quantiles");
        w.begin_sample(2000);
        w.observe_many(h, &[], &[])?;
        w.observe_weighted(h, &[("k", "v")], &[], 0.0)?;
        let families = w.close()?;
        assert_eq!(families.len(), 1, "no quantiles of an empty window");
        let counts: Vec<(u64, f64)> = families[0]
            .series
            .iter()
            .filter_map(|s| s.window.as_ref().map(|w| (w.count, w.sum)))
            .collect();
        assert_eq!(counts, [(0, 0.0), (0, 0.0)]);
        Ok(())
    }

    #[test]
    fn nearest_rank_quantiles_of_a_window() {
        let values: Vec<(f64, u64)> = (1..=100).map(|v| (f64::from(v), 1)).collect();
        assert_eq!(nearest_rank(&values, 0.5), Some(50.0));
        assert_eq!(nearest_rank(&values, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&values, 1.0), Some(100.0));
        assert_eq!(nearest_rank(&[(3.0, 1)], 0.5), Some(3.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
        // Weighted: 98 samples at 1, one at 2, one at 3.
        let weighted = [(1.0, 98), (2.0, 1), (3.0, 1)];
        assert_eq!(nearest_rank(&weighted, 0.5), Some(1.0));
        assert_eq!(nearest_rank(&weighted, 0.99), Some(2.0));
        assert_eq!(nearest_rank(&weighted, 1.0), Some(3.0));
        assert_eq!(nearest_rank(&[(5.0, 0)], 0.5), None);
    }

    #[test]
    fn untouched_series_are_forgotten_at_close() -> anyhow::Result<()> {
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        let f = w.family("x", "", FamilyKind::Gauge)?;
        w.set(f, &[("device", "a")], 1.0)?;
        w.set(f, &[("device", "b")], 1.0)?;
        assert_eq!(w.close()?.len(), 1);
        w.begin_sample(2);
        w.set(f, &[("device", "a")], 2.0)?;
        let families = w.close()?;
        assert_eq!(families[0].series.len(), 1);
        assert_eq!(w.series_count(), 1);
        Ok(())
    }

    #[test]
    fn a_family_without_series_may_return_with_another_kind() -> anyhow::Result<()> {
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        let keep = w.family("keep", "", FamilyKind::Gauge)?;
        let gauge = w.family("x", "", FamilyKind::Gauge)?;
        w.set(gauge, &[], 1.0)?;
        w.set(keep, &[], 1.0)?;
        w.close()?;
        w.begin_sample(2);
        let keep = w.family("keep", "", FamilyKind::Gauge)?;
        w.set(keep, &[], 2.0)?;
        assert!(w.family("x", "", FamilyKind::Untyped).is_err());
        w.close()?;
        w.begin_sample(3);
        let untyped = w.family("x", "", FamilyKind::Untyped)?;
        w.set(untyped, &[], 3.0)?;
        let keep = w.family("keep", "", FamilyKind::Gauge)?;
        w.set(keep, &[], 3.0)?;
        let families = w.close()?;
        assert_eq!(families.len(), 2);
        let x = families
            .iter()
            .find(|f| f.name == "x")
            .map(|f| (f.kind, f.series[0].value));
        assert_eq!(x, Some((proto::Kind::Untyped as i32, 3.0)));
        Ok(())
    }

    #[test]
    fn invalid_and_excess_series_are_refused_and_counted() -> anyhow::Result<()> {
        let mut w = Windows::new("h", "node", 2)?;
        w.begin_sample(1);
        assert!(w.family("bad-name", "", FamilyKind::Gauge).is_err());
        let f = w.family("x", "", FamilyKind::Gauge)?;
        assert!(w.family("x", "", FamilyKind::Counter).is_err());
        assert!(matches!(
            w.set(f, &[("__bad", "1")], 1.0),
            Err(RecordError::Invalid { .. })
        ));
        w.set(f, &[("a", "1")], 1.0)?;
        w.set(f, &[("a", "2")], 1.0)?;
        assert!(matches!(
            w.set(f, &[("a", "3")], 1.0),
            Err(RecordError::TooManySeries { .. })
        ));
        assert_eq!(
            w.refusals(),
            Refusals {
                invalid: 1,
                over_limit: 1
            }
        );
        Ok(())
    }
}
