//! The per-second distributions behind every windowed (`vigil_*`) series:
//! each window's HDR histogram, kept for the retention so that the exact
//! quantile of all per-second samples over any time range and any set of
//! series can be computed by merging histograms (3 significant digits, so
//! within 0.1 % of the true value), where `histogram_quantile` over buckets
//! can only interpolate inside a bucket.
//!
//! Windows that close in the same minute are merged on arrival (merging HDR
//! histograms loses nothing), so a series keeps at most one histogram per
//! minute: 1,440 a day.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use vigil_shared::proto::Window;

use super::history::{Labels, Matcher, label_value};

/// Windows are merged into slots of this many milliseconds.
pub const SLOT_MS: i64 = 60_000;

#[derive(Debug, Clone)]
struct StoredWindow {
    end_ms: i64,
    scale: f64,
    count: u64,
    hdr: Vec<u8>,
}

/// What a quantile query found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileResult {
    /// The value at the quantile, in the family's unit.
    pub value: f64,
    /// Samples merged.
    pub count: u64,
    /// Smallest and largest sample (to HDR precision).
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

/// Why a quantile could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantileError {
    /// The quantile is outside [0, 1].
    #[error("quantile must be between 0 and 1, got {0}")]
    OutOfRange(f64),
    /// The series mix scales (different families).
    #[error("the selected series have different units (scales {0} and {1}); select one family")]
    MixedScales(f64, f64),
    /// A stored histogram did not decode (a bug).
    #[error("stored histogram does not decode: {0}")]
    Decode(String),
}

/// Every windowed series' histograms.
#[derive(Debug, Default)]
pub struct WindowStore {
    series: HashMap<Labels, Vec<StoredWindow>>,
}

fn decode(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("{e:?}"))
}

/// An empty histogram that grows to hold whatever is added to it: decoded
/// histograms only cover their own range, so merging into one of them fails
/// when a later one holds larger values.
fn growing() -> Result<Histogram<u64>, QuantileError> {
    let mut h = Histogram::<u64>::new(vigil_shared::histogram::SIGNIFICANT_DIGITS)
        .map_err(|e| QuantileError::Decode(e.to_string()))?;
    h.auto(true);
    Ok(h)
}

fn encode(h: &Histogram<u64>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

impl WindowStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps a window of the series `labels` (with `__name__`), merging it
    /// into the last one when both closed in the same minute.
    pub fn add(&mut self, labels: &Labels, window: &Window) -> Result<(), String> {
        let windows = self.series.entry(labels.clone()).or_default();
        if let Some(last) = windows.last_mut()
            && last.end_ms.div_euclid(SLOT_MS) == window.end_ms.div_euclid(SLOT_MS)
            && last.scale == window.scale
            && window.end_ms >= last.end_ms
        {
            let mut merged = growing().map_err(|e| e.to_string())?;
            merged
                .add(&decode(&last.hdr)?)
                .map_err(|e| format!("{e:?}"))?;
            merged
                .add(&decode(&window.hdr)?)
                .map_err(|e| format!("{e:?}"))?;
            last.hdr = encode(&merged)?;
            last.end_ms = window.end_ms;
            last.count += window.count;
            return Ok(());
        }
        windows.push(StoredWindow {
            end_ms: window.end_ms,
            scale: window.scale,
            count: window.count,
            hdr: window.hdr.clone(),
        });
        Ok(())
    }

    /// The `q` quantile of every sample of the matching series whose window
    /// ended within `[start, end]`; `None` when there is no sample.
    pub fn quantile(
        &self,
        matchers: &[Matcher],
        q: f64,
        start: i64,
        end: i64,
    ) -> Result<Option<QuantileResult>, QuantileError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(QuantileError::OutOfRange(q));
        }
        let mut merged: Option<Histogram<u64>> = None;
        let mut scale: Option<f64> = None;
        for (labels, windows) in &self.series {
            let selected = matchers
                .iter()
                .all(|m| m.matches(label_value(labels, m.name())));
            if !selected {
                continue;
            }
            for w in windows
                .iter()
                .filter(|w| w.end_ms >= start && w.end_ms <= end && w.count > 0)
            {
                match scale {
                    Some(s) if s != w.scale => return Err(QuantileError::MixedScales(s, w.scale)),
                    _ => scale = Some(w.scale),
                }
                let h = decode(&w.hdr).map_err(QuantileError::Decode)?;
                let m = match &mut merged {
                    Some(m) => m,
                    None => merged.insert(growing()?),
                };
                m.add(&h)
                    .map_err(|e| QuantileError::Decode(format!("{e:?}")))?;
            }
        }
        let (Some(h), Some(scale)) = (merged, scale) else {
            return Ok(None);
        };
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(QuantileResult {
            value: h.value_at_quantile(q) as f64 / scale,
            count: h.len(),
            min: h.min() as f64 / scale,
            max: h.max() as f64 / scale,
        }))
    }

    /// Drops windows that ended before `cutoff`; returns how many.
    pub fn drop_before(&mut self, cutoff: i64) -> usize {
        let mut dropped = 0;
        for windows in self.series.values_mut() {
            let before = windows.len();
            windows.retain(|w| w.end_ms >= cutoff);
            dropped += before - windows.len();
        }
        self.series.retain(|_, w| !w.is_empty());
        dropped
    }

    /// Every series' windows, for a checkpoint.
    pub fn snapshot(&self) -> Vec<super::checkpoint::CpWindowSeries> {
        use super::checkpoint::{CpLabel, CpWindow, CpWindowSeries};
        self.series
            .iter()
            .map(|(labels, windows)| CpWindowSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| CpLabel {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                windows: windows
                    .iter()
                    .map(|w| CpWindow {
                        end_ms: w.end_ms,
                        scale: w.scale,
                        count: w.count,
                        hdr: w.hdr.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Rebuilds the store from a checkpoint.
    pub fn restore(series: Vec<super::checkpoint::CpWindowSeries>) -> Self {
        let mut store = Self::new();
        for s in series {
            let labels: Vec<(String, String)> =
                s.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let windows = s
                .windows
                .into_iter()
                .map(|w| StoredWindow {
                    end_ms: w.end_ms,
                    scale: w.scale,
                    count: w.count,
                    hdr: w.hdr,
                })
                .collect();
            store.series.insert(labels.into(), windows);
        }
        store
    }

    /// Windows held, and their encoded bytes.
    pub fn stats(&self) -> (usize, usize) {
        self.series
            .values()
            .flatten()
            .fold((0, 0), |(n, b), w| (n + 1, b + w.hdr.len()))
    }

    /// When a series' first and last stored windows ended, for tests.
    #[cfg(test)]
    fn span(&self, labels: &Labels) -> Option<(i64, i64)> {
        let w = self.series.get(labels)?;
        Some((w.first()?.end_ms, w.last()?.end_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vigil_shared::histogram::{BYTES_PER_SECOND, RATIO, WindowEncoder};

    fn labels(instance: &str) -> Labels {
        let v = vec![
            ("__name__".to_string(), "vigil_x_ratio".to_string()),
            ("instance".to_string(), instance.to_string()),
            ("job".to_string(), "node".to_string()),
        ];
        Arc::from(v)
    }

    /// The exact quantile of the raw samples: the value at rank ceil(q·n).
    fn brute_force(samples: &mut [f64], q: f64) -> f64 {
        samples.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    }

    #[test]
    fn quantiles_across_hosts_and_time_match_a_brute_force_sort()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut encoder = WindowEncoder::new()?;
        let mut store = WindowStore::new();
        let mut all = Vec::new();
        let mut rng = fastrand_like(42);
        for host in ["a", "b", "c"] {
            for window in 0..30i64 {
                // Ten one-second samples per window, with a rare spike.
                let samples: Vec<f64> = (0..10)
                    .map(|i| {
                        if (window + i) % 37 == 0 {
                            0.999
                        } else {
                            (rng() % 600) as f64 / 1000.0
                        }
                    })
                    .collect();
                all.extend_from_slice(&samples);
                let w =
                    encoder.encode(&samples, &RATIO, window * 10_000, window * 10_000 + 10_000)?;
                store.add(&labels(host), &w)?;
            }
        }
        // 30 windows of 10 s merge into 5 one-minute slots per host.
        assert_eq!(store.stats().0, 3 * 6);
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let got = store
                .quantile(
                    &[Matcher::Equal("__name__".into(), "vigil_x_ratio".into())],
                    q,
                    0,
                    i64::MAX,
                )?
                .ok_or("no result")?;
            let want = brute_force(&mut all.clone(), q);
            assert_eq!(got.count as usize, all.len());
            // HDR keeps 3 significant digits of the value scaled to parts per million.
            let tolerance = want.abs() * 1e-3 + 1e-6;
            assert!(
                (got.value - want).abs() <= tolerance,
                "q={q}: got {} want {want}",
                got.value
            );
        }
        Ok(())
    }

    #[test]
    fn selection_and_time_range_narrow_the_samples() -> Result<(), Box<dyn std::error::Error>> {
        let mut encoder = WindowEncoder::new()?;
        let mut store = WindowStore::new();
        store.add(
            &labels("a"),
            &encoder.encode(&[0.1, 0.2], &RATIO, 0, 10_000)?,
        )?;
        store.add(
            &labels("b"),
            &encoder.encode(&[0.9, 0.8], &RATIO, 0, 10_000)?,
        )?;
        store.add(
            &labels("a"),
            &encoder.encode(&[0.5], &RATIO, 120_000, 130_000)?,
        )?;
        let only_a = [Matcher::Equal("instance".into(), "a".into())];
        let r = store.quantile(&only_a, 1.0, 0, 60_000)?.ok_or("none")?;
        assert_eq!(r.count, 2);
        assert!((r.max - 0.2).abs() < 1e-3);
        assert_eq!(store.quantile(&only_a, 0.5, 200_000, 300_000)?, None);
        assert!(store.quantile(&only_a, 1.5, 0, 1).is_err());
        assert_eq!(store.span(&labels("a")), Some((10_000, 130_000)));
        // A family in other units cannot be merged with ratios.
        let mut bytes = labels("a").to_vec();
        bytes[0].1 = "vigil_y_bytes_per_second".into();
        store.add(
            &Arc::from(bytes),
            &encoder.encode(&[1e6], &BYTES_PER_SECOND, 0, 10_000)?,
        )?;
        let mixed = store.quantile(&[], 0.5, 0, i64::MAX);
        assert!(
            matches!(mixed, Err(QuantileError::MixedScales(..))),
            "{mixed:?}"
        );
        assert_eq!(store.drop_before(20_000), 3);
        Ok(())
    }

    #[test]
    fn small_then_large_values_merge() -> Result<(), Box<dyn std::error::Error>> {
        // A decoded histogram only covers its own range: merging must grow.
        let mut encoder = WindowEncoder::new()?;
        let mut store = WindowStore::new();
        store.add(
            &labels("a"),
            &encoder.encode(&[1.0], &BYTES_PER_SECOND, 0, 10_000)?,
        )?;
        store.add(
            &labels("a"),
            &encoder.encode(&[4e9], &BYTES_PER_SECOND, 0, 20_000)?,
        )?;
        store.add(
            &labels("a"),
            &encoder.encode(&[2.0], &BYTES_PER_SECOND, 60_000, 70_000)?,
        )?;
        store.add(
            &labels("a"),
            &encoder.encode(&[8e9], &BYTES_PER_SECOND, 120_000, 130_000)?,
        )?;
        let r = store.quantile(&[], 1.0, 0, i64::MAX)?.ok_or("none")?;
        assert_eq!(r.count, 4);
        assert!((r.max - 8e9).abs() / 8e9 < 1e-3, "{r:?}");
        Ok(())
    }

    /// A small deterministic generator, so the test is repeatable.
    fn fastrand_like(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }
}
