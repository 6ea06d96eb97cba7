//! HDR windows as Prometheus native histograms, for the destinations that
//! take them (`native_histograms = true`).
//!
//! Each window's HDR histogram (every per-second sample, 3 significant
//! digits) is read value by value, and each recorded value is counted in
//! the exponential bucket of schema [`SCHEMA`] that holds it. A native
//! histogram's counts are cumulative since the series began, like a
//! counter's, so each series keeps its running buckets here; a restart of
//! the collector starts them again from zero, which the store reads as a
//! counter reset (as it does for a restarted application). Windows the
//! queue holds already (replayed from the write-ahead log after a restart)
//! are not counted again.
//!
//! Hand-written: no crate converts HDR histograms to Prometheus's sparse
//! exponential buckets.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram as Hdr;
use hdrhistogram::serialization::Deserializer;

use crate::prompb::{BucketSpan, Histogram};

/// Bucket resolution: schema 3, 8 buckets per doubling, each about 9 %
/// wide (the resolution Prometheus's client libraries use by default).
pub const SCHEMA: i32 = 3;

/// Series not written for this long are forgotten (a later window starts
/// them again from zero: a counter reset).
const FORGET_AFTER_MS: i64 = 3_600_000;

/// The index of the schema-[`SCHEMA`] bucket that holds `v` (> 0): bucket
/// `i` holds `(2^((i-1)/8), 2^(i/8)]`.
pub fn bucket_index(v: f64) -> i32 {
    let per_doubling = f64::from(1u32 << SCHEMA);
    // Powers of two are exact in log2, so a bound lands in its own bucket.
    let index = (v.log2() * per_doubling).ceil();
    // Clamped to what i32 holds; f64 values reach about ±8,200.
    index.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// One series' counts so far.
#[derive(Debug, Default, Clone)]
struct Running {
    count: u64,
    sum: f64,
    zero: u64,
    buckets: BTreeMap<i32, u64>,
    written_ms: i64,
}

/// Every histogram series' running native buckets.
#[derive(Debug, Default)]
pub struct NativeHistograms {
    series: HashMap<Vec<(String, String)>, Running>,
    last_forget_ms: i64,
}

/// Why a window could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the window's HDR histogram does not decode: {0}")]
pub struct WindowError(String);

impl NativeHistograms {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Series kept.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is kept.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Adds one window of the series `labels` (sorted, with `__name__`) and
    /// gives the series' native histogram at `t`.
    pub fn add(
        &mut self,
        labels: &[(String, String)],
        t: i64,
        window: &vigil_shared::proto::Window,
    ) -> Result<Histogram, WindowError> {
        let hdr: Hdr<u64> = Deserializer::new()
            .deserialize(&mut &window.hdr[..])
            .map_err(|e| WindowError(format!("{e:?}")))?;
        if t.saturating_sub(self.last_forget_ms) > FORGET_AFTER_MS {
            self.series
                .retain(|_, r| t.saturating_sub(r.written_ms) <= FORGET_AFTER_MS);
            self.last_forget_ms = t;
        }
        let running = match self.series.get_mut(labels) {
            Some(r) => r,
            None => self.series.entry(labels.to_vec()).or_default(),
        };
        let scale = if window.scale > 0.0 {
            window.scale
        } else {
            1.0
        };
        for v in hdr.iter_recorded() {
            let n = v.count_at_value();
            // The lowest value the HDR bucket stands for: a round value
            // (1 s, 4 s) is recorded exactly there, and a native bucket's
            // upper bound is inclusive.
            let raw = hdr.lowest_equivalent(v.value_iterated_to());
            running.count = running.count.saturating_add(n);
            if raw == 0 {
                running.zero = running.zero.saturating_add(n);
            } else {
                let bucket = running
                    .buckets
                    .entry(bucket_index(raw as f64 / scale))
                    .or_default();
                *bucket = bucket.saturating_add(n);
            }
        }
        running.sum += window.sum;
        running.written_ms = t;
        Ok(running.to_histogram(t))
    }
}

impl Running {
    /// The integer native histogram: spans of consecutive buckets, and
    /// each bucket's count as the difference from the one before.
    fn to_histogram(&self, t: i64) -> Histogram {
        let mut spans: Vec<BucketSpan> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let (mut next, mut previous) = (None::<i32>, 0i64);
        for (&index, &count) in &self.buckets {
            match next {
                Some(expected) if expected == index => {
                    if let Some(span) = spans.last_mut() {
                        span.length += 1;
                    }
                }
                _ => spans.push(BucketSpan {
                    offset: next.map_or(index, |end| index - end),
                    length: 1,
                }),
            }
            next = Some(index + 1);
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            deltas.push(count.wrapping_sub(previous));
            previous = count;
        }
        Histogram {
            count_int: self.count,
            sum: self.sum,
            schema: SCHEMA,
            zero_threshold: 0.0,
            zero_count_int: self.zero,
            positive_spans: spans,
            positive_deltas: deltas,
            reset_hint: 0,
            timestamp: t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    use vigil_shared::proto::Window;

    fn window(values: &[u64], scale: f64) -> Window {
        let mut h = Hdr::<u64>::new(3).expect("an HDR histogram");
        h.auto(true);
        for v in values {
            h.record(*v).expect("recorded");
        }
        let mut hdr = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&h, &mut hdr)
            .expect("serialized");
        Window {
            count: values.len() as u64,
            sum: values.iter().map(|v| *v as f64 / scale).sum(),
            hdr,
            scale,
            ..Window::default()
        }
    }

    /// The buckets back from spans and deltas: (index, count).
    fn buckets(h: &Histogram) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_deltas.iter());
        for (i, span) in h.positive_spans.iter().enumerate() {
            index = if i == 0 {
                span.offset
            } else {
                index + 1 + span.offset
            };
            for j in 0..span.length {
                if j > 0 {
                    index += 1;
                }
                count += deltas.next().copied().unwrap_or_default();
                out.push((index, count));
            }
        }
        out
    }

    #[test]
    fn bucket_bounds_are_upper_inclusive() {
        assert_eq!(bucket_index(1.0), 0);
        assert_eq!(bucket_index(2.0), 8);
        assert_eq!(bucket_index(0.5), -8);
        assert_eq!(bucket_index(1.05), 1);
        // 2^(1/8) = 1.0905...: just above goes to the next bucket.
        assert_eq!(bucket_index(1.09), 1);
        assert_eq!(bucket_index(1.091), 2);
        assert_eq!(bucket_index(f64::MAX), 8192);
    }

    #[test]
    fn windows_add_up_and_spans_encode_the_buckets() {
        let labels = vec![("__name__".to_string(), "latency_seconds".to_string())];
        let mut native = NativeHistograms::new();
        // Milliseconds at scale 1000: 0 s, 0.001 s, 0.002 s (three), 1 s.
        let first = native
            .add(&labels, 1_000, &window(&[0, 1, 2, 2, 2, 1000], 1000.0))
            .expect("a window");
        assert_eq!(first.count_int, 6);
        assert_eq!(first.zero_count_int, 1);
        assert!((first.sum - 1.007).abs() < 1e-9, "{}", first.sum);
        // 0.001 → ceil(8·log2 0.001) = ceil(-79.7) = -79; 0.002 → -71;
        // 1 → 0.
        assert_eq!(buckets(&first), vec![(-79, 1), (-71, 3), (0, 1)]);
        assert_eq!(first.positive_spans.len(), 3);
        assert_eq!(first.timestamp, 1_000);
        assert_eq!(first.schema, SCHEMA);

        // Cumulative: the second window's counts are added.
        let second = native
            .add(&labels, 2_000, &window(&[1, 1000, 1000], 1000.0))
            .expect("a window");
        assert_eq!(second.count_int, 9);
        assert_eq!(buckets(&second), vec![(-79, 2), (-71, 3), (0, 3)]);
        let zero_and_buckets: i64 =
            second.zero_count_int as i64 + buckets(&second).iter().map(|(_, n)| n).sum::<i64>();
        assert_eq!(zero_and_buckets, 9);
        assert_eq!(native.len(), 1);
    }

    #[test]
    fn adjacent_buckets_share_a_span() {
        let labels = vec![("__name__".to_string(), "x".to_string())];
        let mut native = NativeHistograms::new();
        // 1.0 → 0, 1.05 → 1, 1.15 → 2, 4.0 → 16.
        let h = native
            .add(&labels, 1, &window(&[1000, 1050, 1150, 4000], 1000.0))
            .expect("a window");
        assert_eq!(
            h.positive_spans,
            vec![
                BucketSpan {
                    offset: 0,
                    length: 3
                },
                BucketSpan {
                    offset: 13,
                    length: 1
                }
            ]
        );
        assert_eq!(h.positive_deltas, vec![1, 0, 0, 0]);
    }

    #[test]
    fn a_bad_window_is_an_error_and_quiet_series_are_forgotten() {
        let labels = vec![("__name__".to_string(), "x".to_string())];
        let mut native = NativeHistograms::new();
        let bad = Window {
            hdr: vec![1, 2, 3],
            ..Window::default()
        };
        assert!(native.add(&labels, 1, &bad).is_err());
        native
            .add(&labels, 1, &window(&[5], 1.0))
            .expect("a window");
        let other = vec![("__name__".to_string(), "y".to_string())];
        let h = native
            .add(&other, 2 * FORGET_AFTER_MS, &window(&[5], 1.0))
            .expect("a window");
        assert_eq!(h.count_int, 1);
        assert_eq!(native.len(), 1, "the quiet series is forgotten");
    }
}
