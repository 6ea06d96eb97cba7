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

    /// The low `count` (at most 64) bits of `value`, highest first. The bits
    /// are placed in a 128-bit window that starts at the last byte's first
    /// free bit, and the window's bytes are copied at once: this is the
    /// store's hottest loop (a push's values), and a byte at a time cost
    /// an eighth of the collector's ingest CPU.
    fn bits(&mut self, value: u64, count: u8) {
        let count = u32::from(count.min(64));
        if count == 0 {
            return;
        }
        let value = if count == 64 {
            value
        } else {
            value & ((1u64 << count) - 1)
        };
        let used = u32::from(self.used);
        // used <= 7 and count <= 64, so the shift is at least 57.
        let window = (u128::from(value) << (128 - used - count)).to_be_bytes();
        let span = (used + count).div_ceil(8) as usize;
        let fresh = if used == 0 {
            &window[..span]
        } else {
            if let Some(last) = self.bytes.last_mut() {
                *last |= window[0];
            }
            &window[1..span]
        };
        // At most 9 bytes: pushed one by one rather than through a call to
        // memmove, which cost more than the bits themselves.
        self.bytes.reserve(fresh.len());
        for &byte in fresh {
            self.bytes.push(byte);
        }
        self.used = ((used + count) % 8) as u8;
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

    /// The next `count` (at most 64) bits, a byte's worth at a time:
    /// reading them one by one made decoding most of a range query's time.
    fn bits(&mut self, count: u8) -> Option<u64> {
        let mut need = u32::from(count.min(64));
        if self.position.checked_add(need as usize)? > self.bytes.len().saturating_mul(8) {
            return None;
        }
        let mut v = 0u64;
        while need > 0 {
            let byte = u32::from(*self.bytes.get(self.position / 8)?);
            let avail = 8 - (self.position % 8) as u32;
            let take = avail.min(need);
            let part = (byte >> (avail - take)) & ((1 << take) - 1);
            v = (v << take) | u64::from(part);
            self.position += take as usize;
            need -= take;
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
/// The first bucket takes the millisecond jitter of a regular sender's
/// clock (±64 ms in 9 bits, where Prometheus spends 16); the next ones a
/// changed interval.
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 7), (0b110, 3, 14), (0b1110, 4, 20)];

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

    /// The last byte written, where the next sample's bits begin.
    pub fn last_byte(&self) -> Option<u8> {
        self.writer.bytes.last().copied()
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

    /// When the next sample is due if the interval stays the same (after at
    /// least two samples).
    pub fn expected_next(&self) -> Option<i64> {
        (self.count >= 2).then(|| self.last_t.wrapping_add(self.last_delta))
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

    /// Turns a full chunk into its sealed form; `None` when empty.
    pub fn seal(self) -> Option<SealedChunk> {
        (self.count > 0).then(|| SealedChunk {
            bytes: self.writer.bytes.into_boxed_slice(),
            count: self.count,
            min_t: self.first_t,
            max_t: self.last_t,
            decimals: None,
        })
    }
}

/// A chunk that takes no more samples: only its bytes and time bounds, so a
/// sealed chunk costs 40 bytes beside its data instead of a head chunk's
/// encoder state.
///
/// A sealed chunk is kept in the smaller of two encodings: Gorilla's XOR of
/// float bits, or, when every value is a decimal with at most 6 digits after
/// the point (counters, byte gauges, histogram bucket counts, CPU seconds),
/// the delta-of-delta of those values scaled to integers, where a counter
/// that grows by a steady amount costs one bit a sample.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    bytes: Box<[u8]>,
    count: u32,
    min_t: i64,
    max_t: i64,
    /// `None`: XOR encoding; `Some(e)`: values are integers × 10^-e.
    decimals: Option<u8>,
}

/// Encoding numbers as checkpoints record them: 0 is XOR, 1 + e decimal.
fn encoding_code(decimals: Option<u8>) -> u32 {
    decimals.map_or(0, |e| 1 + u32::from(e))
}

impl SealedChunk {
    /// Rebuilds a sealed chunk from its bytes, sample count and encoding (as
    /// [`SealedChunk::raw`] gives them); `None` when the bytes do not hold
    /// `count` (at least one) samples.
    pub fn from_raw(bytes: Vec<u8>, count: u32, encoding: u32) -> Option<Self> {
        if encoding == 0 {
            return Chunk::from_raw(bytes, count)?.seal();
        }
        let decimals = u8::try_from(encoding - 1)
            .ok()
            .filter(|e| *e <= MAX_DECIMALS)?;
        let mut it = DecimalIter::new(&bytes, count, decimals);
        let mut bounds: Option<(i64, i64)> = None;
        let mut n = 0;
        for (t, _) in it.by_ref() {
            bounds = Some((bounds.map_or(t, |b| b.0), t));
            n += 1;
        }
        if n != count || it.reader.position.div_ceil(8) != bytes.len() {
            return None;
        }
        let (min_t, max_t) = bounds?;
        Some(Self {
            bytes: bytes.into_boxed_slice(),
            count,
            min_t,
            max_t,
            decimals: Some(decimals),
        })
    }

    /// The same samples in the decimal encoding, when every value allows it
    /// and it takes fewer bytes.
    pub fn compact(self) -> Self {
        if self.decimals.is_some() {
            return self;
        }
        let samples: Vec<(i64, f64)> = self.iter().collect();
        match encode_decimal(&samples) {
            Some((bytes, e)) if bytes.len() < self.bytes.len() => Self {
                bytes: bytes.into_boxed_slice(),
                decimals: Some(e),
                ..self
            },
            _ => self,
        }
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

    /// The encoded bytes, sample count and encoding, for a checkpoint.
    pub fn raw(&self) -> (&[u8], u32, u32) {
        (&self.bytes, self.count, encoding_code(self.decimals))
    }

    /// The samples, in time order.
    pub fn iter(&self) -> SealedIter<'_> {
        match self.decimals {
            None => SealedIter::Xor(ChunkIter::new(&self.bytes, self.count)),
            Some(e) => SealedIter::Decimal(DecimalIter::new(&self.bytes, self.count, e)),
        }
    }
}

/// Decodes a sealed chunk in either encoding.
pub enum SealedIter<'a> {
    /// Gorilla XOR.
    Xor(ChunkIter<'a>),
    /// Scaled decimals.
    Decimal(DecimalIter<'a>),
}

impl Iterator for SealedIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        match self {
            SealedIter::Xor(i) => i.next(),
            SealedIter::Decimal(i) => i.next(),
        }
    }
}

/// Most digits after the point the decimal encoding takes.
const MAX_DECIMALS: u8 = 6;

/// Largest integer an f64 holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn pow10(e: u8) -> f64 {
    10f64.powi(i32::from(e))
}

/// The scale `e` (fewest decimals) at which every value is an integer that
/// reads back bit for bit, if there is one.
fn decimal_scale(samples: &[(i64, f64)]) -> Option<u8> {
    'scales: for e in 0..=MAX_DECIMALS {
        let scale = pow10(e);
        for &(_, v) in samples {
            if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
                return None;
            }
            let x = (v * scale).round();
            if x.abs() > MAX_EXACT || (x / scale).to_bits() != v.to_bits() {
                continue 'scales;
            }
        }
        return Some(e);
    }
    None
}

/// Value delta-of-delta buckets: (prefix, prefix length, value bits).
const VALUE_BUCKETS: [(u64, u8, u8); 4] = [
    (0b10, 2, 7),
    (0b110, 3, 14),
    (0b1110, 4, 24),
    (0b11110, 5, 40),
];

fn write_dod(w: &mut BitWriter, dod: i64, buckets: &[(u64, u8, u8)], escape: (u64, u8)) {
    if dod == 0 {
        w.bit(false);
    } else if let Some((prefix, len, width)) =
        buckets.iter().copied().find(|(_, _, w)| fits(dod, *w))
    {
        w.bits(prefix, len);
        w.bits(dod as u64 & ((1u64 << width) - 1), width);
    } else {
        w.bits(escape.0, escape.1);
        w.bits(dod as u64, 64);
    }
}

fn read_dod(r: &mut BitReader<'_>, buckets: &[(u64, u8, u8)]) -> Option<i64> {
    if !r.bit()? {
        return Some(0);
    }
    for (_, _, width) in buckets {
        if !r.bit()? {
            let raw = r.bits(*width)?;
            let shift = 64 - u32::from(*width);
            return Some(((raw << shift) as i64) >> shift);
        }
    }
    Some(r.bits(64)? as i64)
}

/// Encodes samples whose values are decimals: times as in the XOR chunk,
/// values as delta-of-delta of `value × 10^e`.
fn encode_decimal(samples: &[(i64, f64)]) -> Option<(Vec<u8>, u8)> {
    let e = decimal_scale(samples)?;
    let scale = pow10(e);
    let mut w = BitWriter::default();
    let (mut last_t, mut last_dt, mut last_x, mut last_dx) = (0i64, 0i64, 0i64, 0i64);
    for (i, &(t, v)) in samples.iter().enumerate() {
        let x = (v * scale).round() as i64;
        match i {
            0 => {
                w.varint(zigzag(t));
                w.varint(zigzag(x));
            }
            1 => {
                last_dt = t.wrapping_sub(last_t);
                w.varint(last_dt as u64);
                last_dx = x.wrapping_sub(last_x);
                w.varint(zigzag(last_dx));
            }
            _ => {
                let dt = t.wrapping_sub(last_t);
                write_dod(&mut w, dt.wrapping_sub(last_dt), &DOD_BUCKETS, (0b1111, 4));
                last_dt = dt;
                let dx = x.wrapping_sub(last_x);
                write_dod(
                    &mut w,
                    dx.wrapping_sub(last_dx),
                    &VALUE_BUCKETS,
                    (0b11111, 5),
                );
                last_dx = dx;
            }
        }
        last_t = t;
        last_x = x;
    }
    Some((w.bytes, e))
}

/// Decodes the decimal encoding.
pub struct DecimalIter<'a> {
    reader: BitReader<'a>,
    remaining: u32,
    read: u32,
    scale: f64,
    t: i64,
    dt: i64,
    x: i64,
    dx: i64,
}

impl<'a> DecimalIter<'a> {
    fn new(bytes: &'a [u8], count: u32, decimals: u8) -> Self {
        Self {
            reader: BitReader { bytes, position: 0 },
            remaining: count,
            read: 0,
            scale: pow10(decimals),
            t: 0,
            dt: 0,
            x: 0,
            dx: 0,
        }
    }

    fn next_sample(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = unzigzag(self.reader.varint()?);
                self.x = unzigzag(self.reader.varint()?);
            }
            1 => {
                self.dt = self.reader.varint()? as i64;
                self.t = self.t.wrapping_add(self.dt);
                self.dx = unzigzag(self.reader.varint()?);
                self.x = self.x.wrapping_add(self.dx);
            }
            _ => {
                self.dt = self
                    .dt
                    .wrapping_add(read_dod(&mut self.reader, &DOD_BUCKETS)?);
                self.t = self.t.wrapping_add(self.dt);
                self.dx = self
                    .dx
                    .wrapping_add(read_dod(&mut self.reader, &VALUE_BUCKETS)?);
                self.x = self.x.wrapping_add(self.dx);
            }
        }
        self.read += 1;
        Some((self.t, self.x as f64 / self.scale))
    }
}

impl Iterator for DecimalIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let s = self.next_sample();
        if s.is_none() {
            self.remaining = 0;
        }
        s
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

    fn sealed(samples: &[(i64, f64)]) -> SealedChunk {
        let mut c = Chunk::new();
        for (t, v) in samples {
            if c.append(*t, *v).is_err() {
                panic!("append refused {t}");
            }
        }
        match c.seal() {
            Some(s) => s,
            None => panic!("empty"),
        }
    }

    #[test]
    fn steady_counters_take_a_bit_a_sample_in_the_decimal_encoding() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 10_000, 1000.0 + 10.0 * i as f64))
            .collect();
        let xor = sealed(&samples);
        let xor_bytes = xor.encoded_bytes();
        let compact = xor.compact();
        assert_eq!(compact.raw().2, 1, "decimal, 0 digits");
        assert!(
            compact.encoded_bytes() * 3 < xor_bytes,
            "{} vs {xor_bytes}",
            compact.encoded_bytes()
        );
        // 11 bytes for the first two samples, then 2 bits each.
        assert!(compact.encoded_bytes() <= 42, "{}", compact.encoded_bytes());
        let back: Vec<(i64, f64)> = compact.iter().collect();
        assert_eq!(back, samples);
        // CPU seconds with two decimals.
        let cpu: Vec<(i64, f64)> = (0..120)
            .map(|i| {
                (
                    i * 10_000,
                    2439.27 + (i * 3 % 7) as f64 * 0.01 + i as f64 * 5.0,
                )
            })
            .map(|(t, v): (i64, f64)| (t, (v * 100.0).round() / 100.0))
            .collect();
        let compact = sealed(&cpu).compact();
        assert_eq!(compact.raw().2, 3, "2 digits");
        assert_eq!(compact.iter().collect::<Vec<_>>(), cpu);
        // NaN and stale markers stay in the XOR encoding.
        let mut with_nan = samples.clone();
        with_nan[5].1 = stale_marker();
        assert_eq!(sealed(&with_nan).compact().raw().2, 0);
    }

    /// One bit at a time, the plainest way to write the same stream.
    fn bits_one_by_one(w: &mut BitWriter, value: u64, count: u8) {
        for i in (0..u32::from(count.min(64))).rev() {
            w.bit((value >> i) & 1 == 1);
        }
    }

    proptest! {
        #[test]
        fn bits_match_writing_one_bit_at_a_time(
            writes in proptest::collection::vec((any::<u64>(), 0u8..=70, any::<bool>()), 0..200),
        ) {
            let (mut fast, mut plain) = (BitWriter::default(), BitWriter::default());
            for (value, count, single) in writes {
                if single {
                    fast.bit(value & 1 == 1);
                    plain.bit(value & 1 == 1);
                } else {
                    fast.bits(value, count);
                    bits_one_by_one(&mut plain, value, count);
                }
                prop_assert_eq!(&fast.bytes, &plain.bytes);
                prop_assert_eq!(fast.used, plain.used);
            }
        }
    }

    proptest! {
        #[test]
        fn decimal_encoding_round_trips(
            start in -1_000_000_000_000i64..2_000_000_000_000,
            steps in proptest::collection::vec((1i64..100_000, -1_000_000_000i64..1_000_000_000, 0u8..=6), 1..150),
        ) {
            let mut t = start;
            let mut samples = Vec::new();
            for (dt, x, e) in steps {
                t += dt;
                samples.push((t, x as f64 / 10f64.powi(i32::from(e))));
            }
            let compact = sealed(&samples).compact();
            let back: Vec<(i64, u64)> = compact.iter().map(|(t, v)| (t, v.to_bits())).collect();
            let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
            prop_assert_eq!(&back, &want);
            let (bytes, count, encoding) = compact.raw();
            let rebuilt = SealedChunk::from_raw(bytes.to_vec(), count, encoding);
            prop_assert!(rebuilt.is_some());
            let rebuilt: Vec<(i64, u64)> = rebuilt.map(|r| r.iter().map(|(t, v)| (t, v.to_bits())).collect()).unwrap_or_default();
            prop_assert_eq!(rebuilt, want);
        }
    }

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
