//! Compressed chunks of one series' samples: Gorilla's encoding (Facebook's
//! in-memory TSDB, as Prometheus's XOR chunks use it). Timestamps are stored
//! as delta-of-delta in variable-width buckets, values as the XOR with the
//! previous value, keeping only its meaningful bits. Regular 10 s samples of
//! slowly moving values take one to two bytes each.
//!
//! Values are kept bit for bit, so NaN payloads, and Prometheus's stale
//! marker (a NaN with a distinct bit pattern), come back exactly. Samples must
//! be appended in strictly increasing time order; the chunk refuses others.

/// Prometheus's stale marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the stale marker (not just any NaN).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The stale marker as a value.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Appends bits to a byte vector, most significant bit first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn bits(&mut self, value: u64, count: u8) {
        for i in (0..count).rev() {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// LEB128: seven bits a byte, low groups first, high bit set on all but
    /// the last byte (a 10 s delta takes 2 bytes, not 8).
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bits((value & 0x7f) | 0x80, 8);
            value >>= 7;
        }
        self.bits(value, 8);
    }
}

/// Reads bits back.
struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<bool> {
        let byte = *self.bytes.get(self.position / 8)?;
        let bit = byte & (0x80 >> (self.position % 8)) != 0;
        self.position += 1;
        Some(bit)
    }

    fn bits(&mut self, count: u8) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..count {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.bits(8)?;
            v |= (byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Delta-of-delta buckets: (prefix bits, prefix length, value bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

fn fits(v: i64, bits: u8) -> bool {
    let half = 1i64 << (bits - 1);
    v >= -half && v < half
}

/// Why a sample was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The timestamp is not after the chunk's last one.
    #[error("sample at {timestamp} ms is not after the last one at {last} ms")]
    OutOfOrder {
        /// The refused timestamp.
        timestamp: i64,
        /// The chunk's last timestamp.
        last: i64,
    },
}

/// One compressed run of samples.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    writer: BitWriter,
    count: u32,
    first_t: i64,
    last_t: i64,
    last_delta: i64,
    last_v: u64,
    leading: u8,
    trailing: u8,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty chunk with room for `bytes` of encoded data, so that a
    /// series whose last chunk took N bytes does not grow the next one by
    /// doubling (and leave up to half of it unused).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            writer: BitWriter {
                bytes: Vec::with_capacity(bytes),
                used: 0,
            },
            ..Self::default()
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Gives back spare capacity once the chunk takes no more samples.
    pub fn shrink_to_fit(&mut self) {
        self.writer.bytes.shrink_to_fit();
    }

    /// Bytes of encoded data.
    pub fn encoded_bytes(&self) -> usize {
        self.writer.bytes.len()
    }

    /// The first sample's time, if any.
    pub fn min_time(&self) -> Option<i64> {
        (self.count > 0).then_some(self.first_t)
    }

    /// The last sample's time, if any.
    pub fn max_time(&self) -> Option<i64> {
        (self.count > 0).then_some(self.last_t)
    }

    /// The encoded bytes and sample count, for a checkpoint.
    pub fn raw(&self) -> (&[u8], u32) {
        (&self.writer.bytes, self.count)
    }

    /// Appends a sample after the last one.
    pub fn append(&mut self, t: i64, v: f64) -> Result<(), AppendError> {
        let bits = v.to_bits();
        match self.count {
            0 => {
                self.writer.varint(zigzag(t));
                self.writer.bits(bits, 64);
                self.first_t = t;
                self.leading = 0xff;
            }
            _ if t <= self.last_t => {
                return Err(AppendError::OutOfOrder {
                    timestamp: t,
                    last: self.last_t,
                });
            }
            1 => {
                let delta = t.wrapping_sub(self.last_t);
                self.writer.varint(delta as u64);
                self.write_value(bits);
                self.last_delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.last_t);
                let dod = delta.wrapping_sub(self.last_delta);
                if dod == 0 {
                    self.writer.bit(false);
                } else if let Some((prefix, len, width)) =
                    DOD_BUCKETS.iter().copied().find(|(_, _, w)| fits(dod, *w))
                {
                    self.writer.bits(prefix, len);
                    self.writer.bits(dod as u64 & ((1u64 << width) - 1), width);
                } else {
                    self.writer.bits(0b1111, 4);
                    self.writer.bits(dod as u64, 64);
                }
                self.last_delta = delta;
                self.write_value(bits);
            }
        }
        self.last_t = t;
        self.last_v = bits;
        self.count += 1;
        Ok(())
    }

    fn write_value(&mut self, bits: u64) {
        let xor = bits ^ self.last_v;
        if xor == 0 {
            self.writer.bit(false);
            return;
        }
        self.writer.bit(true);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.writer.bit(false);
            let significant = 64 - self.leading - self.trailing;
            self.writer.bits(xor >> self.trailing, significant);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.writer.bit(true);
            self.writer.bits(u64::from(leading), 5);
            let significant = 64 - leading - trailing;
            // 64 significant bits are written as 0 in six bits.
            self.writer.bits(u64::from(significant) & 0x3f, 6);
            self.writer.bits(xor >> trailing, significant);
        }
    }

    /// Rebuilds a chunk from its encoded bytes and sample count (as
    /// [`Chunk::raw`] gives them), ready to take more samples. `None` when the
    /// bytes do not hold `count` samples.
    pub fn from_raw(bytes: Vec<u8>, count: u32) -> Option<Self> {
        if count == 0 {
            return bytes.is_empty().then(Chunk::new);
        }
        let mut it = ChunkIter::new(&bytes, count);
        let mut first_t = 0;
        let mut n = 0;
        for (t, _) in it.by_ref() {
            if n == 0 {
                first_t = t;
            }
            n += 1;
        }
        if n != count {
            return None;
        }
        let (last_t, last_delta, last_v, leading, trailing, window_seen, position) = (
            it.t,
            it.delta,
            it.v,
            it.leading,
            it.trailing,
            it.window_seen,
            it.reader.position,
        );
        if position.div_ceil(8) != bytes.len() {
            return None;
        }
        Some(Self {
            writer: BitWriter {
                bytes,
                used: (position % 8) as u8,
            },
            count,
            first_t,
            last_t,
            last_delta,
            last_v,
            leading: if window_seen { leading } else { 0xff },
            trailing,
        })
    }

    /// The samples, in time order.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.writer.bytes, self.count)
    }

    /// Turns a full chunk into its compact sealed form; `None` when empty.
    pub fn seal(self) -> Option<SealedChunk> {
        (self.count > 0).then(|| SealedChunk {
            bytes: self.writer.bytes.into_boxed_slice(),
            count: self.count,
            min_t: self.first_t,
            max_t: self.last_t,
        })
    }
}

/// A chunk that takes no more samples: only its bytes and time bounds, so a
/// sealed chunk costs 40 bytes beside its data instead of a head chunk's
/// encoder state.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    bytes: Box<[u8]>,
    count: u32,
    min_t: i64,
    max_t: i64,
}

impl SealedChunk {
    /// Rebuilds a sealed chunk from its bytes and sample count; `None` when
    /// the bytes do not hold `count` (at least one) samples.
    pub fn from_raw(bytes: Vec<u8>, count: u32) -> Option<Self> {
        Chunk::from_raw(bytes, count)?.seal()
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Always false: an empty chunk is never sealed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of encoded data.
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The first sample's time.
    pub fn min_time(&self) -> i64 {
        self.min_t
    }

    /// The last sample's time.
    pub fn max_time(&self) -> i64 {
        self.max_t
    }

    /// The encoded bytes and sample count, for a checkpoint.
    pub fn raw(&self) -> (&[u8], u32) {
        (&self.bytes, self.count)
    }

    /// The samples, in time order.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.bytes, self.count)
    }
}

/// Decodes a chunk's samples.
pub struct ChunkIter<'a> {
    reader: BitReader<'a>,
    remaining: u32,
    read: u32,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    window_seen: bool,
}

impl<'a> ChunkIter<'a> {
    /// Decodes `count` samples from `bytes` (as given by [`Chunk::raw`]).
    pub fn new(bytes: &'a [u8], count: u32) -> Self {
        Self {
            reader: BitReader { bytes, position: 0 },
            remaining: count,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            window_seen: false,
        }
    }

    fn read_value(&mut self) -> Option<()> {
        if !self.reader.bit()? {
            return Some(());
        }
        if self.reader.bit()? {
            self.window_seen = true;
            self.leading = self.reader.bits(5)? as u8;
            let mut significant = self.reader.bits(6)? as u8;
            if significant == 0 {
                significant = 64;
            }
            self.trailing = 64u8.checked_sub(self.leading + significant)?;
        }
        let significant = 64 - self.leading - self.trailing;
        let xor = self.reader.bits(significant)? << self.trailing;
        self.v ^= xor;
        Some(())
    }

    fn next_sample(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = unzigzag(self.reader.varint()?);
                self.v = self.reader.bits(64)?;
            }
            1 => {
                self.delta = self.reader.varint()? as i64;
                self.t = self.t.wrapping_add(self.delta);
                self.read_value()?;
            }
            _ => {
                let dod = if !self.reader.bit()? {
                    0
                } else {
                    // After the first 1: each further 1 moves to a wider bucket.
                    let mut found = None;
                    for (_, _, width) in DOD_BUCKETS {
                        if !self.reader.bit()? {
                            found = Some(width);
                            break;
                        }
                    }
                    match found {
                        Some(width) => {
                            let raw = self.reader.bits(width)?;
                            // Sign-extend from `width` bits.
                            let shift = 64 - u32::from(width);
                            ((raw << shift) as i64) >> shift
                        }
                        None => self.reader.bits(64)? as i64,
                    }
                };
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.read_value()?;
            }
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v)))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        match self.next_sample() {
            Some(s) => Some(s),
            None => {
                self.remaining = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        let mut c = Chunk::new();
        for (t, v) in samples {
            if c.append(*t, *v).is_err() {
                panic!("append refused {t}");
            }
        }
        c.iter().map(|(t, v)| (t, v.to_bits())).collect()
    }

    #[test]
    fn regular_samples_compress_well() {
        let mut c = Chunk::new();
        let mut counter = 1_000_000.0;
        for i in 0..120 {
            counter += 1234.0 + f64::from(i % 7);
            if c.append(1_700_000_000_000 + i64::from(i) * 10_000, counter)
                .is_err()
            {
                panic!("refused");
            }
        }
        let per_sample = c.encoded_bytes() as f64 / 120.0;
        assert!(per_sample < 3.5, "{per_sample} bytes per sample");
        let mut gauge = Chunk::new();
        for i in 0..120 {
            let _ = gauge.append(i64::from(i) * 10_000, 0.5);
        }
        assert!(
            gauge.encoded_bytes() <= 42, // 11 bytes for the first two samples, then two bits each
            "{} bytes for a constant",
            gauge.encoded_bytes()
        );
    }

    #[test]
    fn stale_markers_and_nans_keep_their_bits() {
        let samples = [
            (0, 1.0),
            (1000, stale_marker()),
            (2000, f64::NAN),
            (3000, -0.0),
            (4000, f64::INFINITY),
        ];
        let back = round_trip(&samples);
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
        assert_eq!(back, want);
        assert!(is_stale_marker(f64::from_bits(back[1].1)));
        assert!(!is_stale_marker(f64::NAN));
    }

    #[test]
    fn a_rebuilt_chunk_takes_more_samples() {
        for split in [0usize, 1, 2, 3, 50] {
            let samples: Vec<(i64, f64)> = (0..100)
                .map(|i| (i * 1000 + (i % 3), (i * i) as f64 * 0.5))
                .collect();
            let mut c = Chunk::new();
            for (t, v) in &samples[..split] {
                assert!(c.append(*t, *v).is_ok());
            }
            let (bytes, count) = c.raw();
            let mut rebuilt = Chunk::from_raw(bytes.to_vec(), count).unwrap_or_default();
            assert_eq!(rebuilt.len(), split);
            for (t, v) in &samples[split..] {
                assert!(rebuilt.append(*t, *v).is_ok());
            }
            let back: Vec<(i64, f64)> = rebuilt.iter().collect();
            assert_eq!(back, samples, "split at {split}");
        }
        assert!(Chunk::from_raw(vec![1, 2, 3], 5).is_none());
    }

    #[test]
    fn out_of_order_samples_are_refused() {
        let mut c = Chunk::new();
        assert!(c.append(10, 1.0).is_ok());
        assert_eq!(
            c.append(10, 2.0),
            Err(AppendError::OutOfOrder {
                timestamp: 10,
                last: 10
            })
        );
        assert_eq!(c.len(), 1);
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(stale_marker()),
            Just(f64::NAN),
            (0u32..1000).prop_map(f64::from),
            -1e6f64..1e6,
        ]
    }

    proptest! {
        #[test]
        fn any_samples_round_trip(
            start in -1_000_000_000_000i64..4_000_000_000_000,
            steps in proptest::collection::vec(prop_oneof![1i64..2_000_000, Just(10_000i64), 1i64..i64::from(u32::MAX)], 0..300),
            values in proptest::collection::vec(value(), 300),
        ) {
            let mut t = start;
            let mut samples = vec![(t, values[0])];
            for (i, step) in steps.iter().enumerate() {
                t += step;
                samples.push((t, values[(i + 1) % values.len()]));
            }
            let back = round_trip(&samples);
            let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(back, want);
        }
    }
}
