//! Windows: the samples one series took during one flush interval, closed into
//! exact count/sum/min/max, exact exposition bucket counts, and an HDR histogram
//! (3 significant digits, V2 + deflate) from which the collector can merge
//! windows across time and hosts.
//!
//! The agent keeps a window's raw samples (a handful per flush) and builds the
//! HDR histogram only when the window closes, in one reused scratch histogram:
//! a live 3-digit HDR histogram costs tens of KiB, its encoding under 1 KiB.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use thiserror::Error;

use crate::proto::Window;

/// HDR precision: values are kept to 3 significant decimal digits.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Largest value an HDR window accepts once scaled; larger samples are clamped
/// (count, sum, min, max and buckets still use the exact value).
pub const MAX_SCALED_VALUE: u64 = 1 << 50;

/// How a family's samples become an HDR histogram and exposition buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ladder {
    /// Multiplier applied to a sample before it is recorded as an integer.
    pub scale: f64,
    /// Exposition bucket upper bounds, ascending, `+Inf` implied.
    pub bounds: &'static [f64],
}

/// Ratios in `[0, 1]` (CPU busy, memory used, disk busy): recorded in parts per million.
pub const RATIO: Ladder = Ladder {
    scale: 1e6,
    bounds: &[
        0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0,
    ],
};

/// Byte rates: recorded in bytes per second; buckets are powers of 4 from 1 KiB/s to 4 GiB/s.
pub const BYTES_PER_SECOND: Ladder = Ladder {
    scale: 1.0,
    bounds: &[
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262144.0,
        1048576.0,
        4194304.0,
        16777216.0,
        67108864.0,
        268435456.0,
        1073741824.0,
        4294967296.0,
    ],
};

/// What can go wrong with an encoded window.
#[derive(Debug, Error)]
pub enum HistogramError {
    /// The HDR bytes do not decode.
    #[error("HDR histogram does not decode: {0}")]
    Decode(String),
    /// The HDR histogram could not be encoded (a bug, not an input problem).
    #[error("HDR histogram does not encode: {0}")]
    Encode(String),
    /// The window's own figures disagree with each other.
    #[error("window is inconsistent: {0}")]
    Inconsistent(String),
}

/// A scratch HDR histogram reused for every window an agent closes.
pub struct WindowEncoder {
    scratch: Histogram<u64>,
    serializer: V2DeflateSerializer,
}

impl std::fmt::Debug for WindowEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowEncoder").finish_non_exhaustive()
    }
}

impl WindowEncoder {
    /// A new encoder with an empty, auto-resizing scratch histogram.
    pub fn new() -> Result<Self, HistogramError> {
        let mut scratch = Histogram::<u64>::new(SIGNIFICANT_DIGITS)
            .map_err(|e| HistogramError::Encode(e.to_string()))?;
        scratch.auto(true);
        Ok(Self {
            scratch,
            serializer: V2DeflateSerializer::new(),
        })
    }

    /// Closes a window over `samples` (NaN samples are skipped).
    pub fn encode(
        &mut self,
        samples: &[f64],
        ladder: &Ladder,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Window, HistogramError> {
        self.encode_weighted(samples, &Weighted::default(), ladder, start_ms, end_ms)
    }

    /// Closes a window over `samples` and over `weighted` values that each
    /// stand for several samples (a bucket of an already aggregated
    /// histogram); the weighted values add their given sum, not their own.
    pub fn encode_weighted(
        &mut self,
        samples: &[f64],
        weighted: &Weighted,
        ladder: &Ladder,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Window, HistogramError> {
        self.scratch.reset();
        let mut bucket_counts = vec![0u64; ladder.bounds.len() + 1];
        let mut count = 0u64;
        let mut sum = 0.0;
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        let ones = samples.iter().map(|v| (*v, 1u64));
        for (v, n) in ones.chain(weighted.values.iter().copied()) {
            if v.is_nan() || n == 0 {
                continue;
            }
            count += n;
            min = min.min(v);
            max = max.max(v);
            let bucket = ladder.bounds.partition_point(|&b| b < v);
            bucket_counts[bucket] += n;
            let scaled = (v * ladder.scale).round();
            let scaled = if scaled <= 0.0 {
                0
            } else if scaled >= MAX_SCALED_VALUE as f64 {
                MAX_SCALED_VALUE
            } else {
                scaled as u64
            };
            self.scratch
                .record_n(scaled, n)
                .map_err(|e| HistogramError::Encode(e.to_string()))?;
        }
        sum += samples.iter().filter(|v| !v.is_nan()).sum::<f64>();
        if !weighted.values.is_empty() {
            sum += weighted.sum;
        }
        if count == 0 {
            min = 0.0;
            max = 0.0;
        }
        let mut hdr = Vec::with_capacity(256);
        self.serializer
            .serialize(&self.scratch, &mut hdr)
            .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
        Ok(Window {
            count,
            sum,
            min,
            max,
            bucket_counts,
            hdr,
            scale: ladder.scale,
            start_ms,
            end_ms,
        })
    }
}

/// Values that each stand for several samples, with the exact sum of the
/// samples they stand for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Weighted {
    /// (value, how many samples it stands for).
    pub values: Vec<(f64, u64)>,
    /// The exact sum of those samples.
    pub sum: f64,
}

impl Weighted {
    /// How many samples these values stand for.
    pub fn count(&self) -> u64 {
        self.values.iter().map(|(_, n)| *n).sum()
    }

    /// Merges equal values, so that repeated exports of the same buckets
    /// take no more room.
    pub fn compact(&mut self) {
        self.values.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.values.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 += later.1;
                true
            } else {
                false
            }
        });
    }
}

/// Most samples one window may hold: an hour of flushes at 10 samples a
/// second is 36,000; anything near this is not an agent's window.
pub const MAX_WINDOW_SAMPLES: u64 = 1_000_000;

/// Decodes a window's HDR histogram and checks it against the window's own
/// count and bucket counts.
pub fn decode_window(
    window: &Window,
    bucket_bounds: usize,
) -> Result<Histogram<u64>, HistogramError> {
    if window.bucket_counts.len() != bucket_bounds + 1 {
        return Err(HistogramError::Inconsistent(format!(
            "{} bucket counts for {} bucket bounds (expected one more, for +Inf)",
            window.bucket_counts.len(),
            bucket_bounds
        )));
    }
    if window.count > MAX_WINDOW_SAMPLES {
        return Err(HistogramError::Inconsistent(format!(
            "count {} is more than {MAX_WINDOW_SAMPLES} samples in one window",
            window.count
        )));
    }
    let Some(buckets) = window
        .bucket_counts
        .iter()
        .try_fold(0u64, |total, n| total.checked_add(*n))
    else {
        return Err(HistogramError::Inconsistent(
            "bucket counts add up to more than 2^64".into(),
        ));
    };
    if buckets != window.count {
        return Err(HistogramError::Inconsistent(format!(
            "bucket counts add up to {buckets}, count is {}",
            window.count
        )));
    }
    if !(window.scale.is_finite() && window.scale > 0.0) {
        return Err(HistogramError::Inconsistent(format!(
            "scale {} is not a positive number",
            window.scale
        )));
    }
    let histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut window.hdr.as_slice())
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))?;
    if histogram.len() != window.count {
        return Err(HistogramError::Inconsistent(format!(
            "HDR histogram holds {} samples, count is {}",
            histogram.len(),
            window.count
        )));
    }
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_counts_are_exact_and_hdr_round_trips() -> Result<(), HistogramError> {
        let mut encoder = WindowEncoder::new()?;
        let samples = [0.0, 0.01, 0.5, 0.5000001, 1.0, f64::NAN];
        let w = encoder.encode(&samples, &RATIO, 1000, 2000)?;
        assert_eq!(w.count, 5);
        assert_eq!(w.min, 0.0);
        assert_eq!(w.max, 1.0);
        // 0.0 and 0.01 are <= 0.01; 0.5 is <= 0.5; 0.5000001 is <= 0.6; 1.0 <= 1.0.
        assert_eq!(w.bucket_counts[0], 2);
        assert_eq!(w.bucket_counts[6], 1);
        assert_eq!(w.bucket_counts[7], 1);
        assert_eq!(w.bucket_counts[13], 1);
        assert_eq!(*w.bucket_counts.last().unwrap_or(&9), 0);
        let h = decode_window(&w, RATIO.bounds.len())?;
        assert_eq!(h.len(), 5);
        assert_eq!(h.max(), h.highest_equivalent(1_000_000));
        Ok(())
    }

    #[test]
    fn inconsistent_windows_are_refused() -> Result<(), HistogramError> {
        let mut encoder = WindowEncoder::new()?;
        let mut w = encoder.encode(&[1.0, 2.0], &BYTES_PER_SECOND, 0, 1)?;
        w.count = 3;
        assert!(decode_window(&w, BYTES_PER_SECOND.bounds.len()).is_err());
        w.count = 2;
        w.hdr.truncate(5);
        assert!(decode_window(&w, BYTES_PER_SECOND.bounds.len()).is_err());
        // Counts that wrap around 2^64 to add up to the count.
        let mut w = encoder.encode(&[], &BYTES_PER_SECOND, 0, 1)?;
        w.bucket_counts[0] = u64::MAX;
        w.bucket_counts[1] = 1;
        let e = decode_window(&w, BYTES_PER_SECOND.bounds.len()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("more than 2^64")));
        let mut w = encoder.encode(&[1.0], &BYTES_PER_SECOND, 0, 1)?;
        w.count = MAX_WINDOW_SAMPLES + 1;
        assert!(decode_window(&w, BYTES_PER_SECOND.bounds.len()).is_err());
        Ok(())
    }

    proptest! {
        #[test]
        fn any_samples_encode_and_decode(samples in proptest::collection::vec(0.0f64..1e12, 0..64)) {
            let mut encoder = WindowEncoder::new().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let w = encoder.encode(&samples, &BYTES_PER_SECOND, 0, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(w.count as usize, samples.len());
            let h = decode_window(&w, BYTES_PER_SECOND.bounds.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(h.len() as usize, samples.len());
            let sum: f64 = samples.iter().sum();
            prop_assert!((w.sum - sum).abs() <= 1e-9 * sum.abs().max(1.0));
        }
    }
}
