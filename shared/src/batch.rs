//! A pushed batch read in place: the collector's ingest path decodes an
//! agent's `PushRequest` bytes into views that borrow every string from the
//! received buffer, so a sample costs no allocation between the socket and
//! the store.
//!
//! Hand-written on purpose: prost (and every protobuf crate on crates.io
//! that tonic works with) decodes `string` fields into owned `String`s, which
//! for a batch of 400 gauges with three labels is about 2,800 allocations and
//! as many frees; they were a third of the collector's CPU per sample in the
//! ingest profile (BENCHMARKS.md, "Ingest"). Only the hot message is read
//! here: `PushRequest`, `Family`, `Series` and `Label`. A `Window` (one per
//! histogram series) is handed to prost.
//!
//! Decoding follows proto3's rules as prost applies them: fields in any
//! order, the last value of a scalar wins, repeated fields append (packed or
//! not), a message field given twice is merged, unknown fields are skipped.
//! Every string is checked to be UTF-8 once, here. Nesting is fixed (four
//! levels), so nothing recurses on input.

use prost::Message;

use crate::proto::{Family, Label, PushRequest, Series, Window};

/// Why a push's bytes are not a `PushRequest`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot decode the push: {what} at byte {at}")]
pub struct DecodeError {
    /// What was wrong (a field's name where known).
    pub what: String,
    /// Offset in the message being read.
    pub at: usize,
}

/// A `PushRequest` whose strings borrow from the received bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch<'a> {
    /// `agent_id`
    pub agent_id: &'a str,
    /// `epoch`
    pub epoch: u64,
    /// `sequence`
    pub sequence: u64,
    /// `timestamp_ms`
    pub timestamp_ms: i64,
    /// `flush_interval_ms`
    pub flush_interval_ms: u64,
    /// `families`
    pub families: Vec<FamilyView<'a>>,
    /// `last`
    pub last: bool,
    /// `agent_version`
    pub agent_version: &'a str,
    /// `agent_revision`
    pub agent_revision: &'a str,
}

/// A `Family` in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FamilyView<'a> {
    /// `name`
    pub name: &'a str,
    /// `help`
    pub help: &'a str,
    /// `kind`, as sent (see [`crate::proto::Kind`]).
    pub kind: i32,
    /// `bucket_bounds`
    pub bucket_bounds: Vec<f64>,
    /// `series`
    pub series: Vec<SeriesView<'a>>,
}

/// A `Series` in place; its labels are read from the bytes on each walk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesView<'a> {
    /// `value`
    pub value: f64,
    /// `timestamp_ms`
    pub timestamp_ms: i64,
    /// `window`, decoded (histogram series only); boxed, so that the
    /// gauges' views stay small (a push holds hundreds of them).
    pub window: Option<Box<Window>>,
    /// The bytes the labels are in: their own run when they come first and
    /// together (as every encoder writes them), else the whole series.
    labels: &'a [u8],
    /// True when `labels` holds the label fields and nothing else.
    contiguous: bool,
    label_count: u32,
}

impl<'a> SeriesView<'a> {
    /// The labels, `(name, value)`, in the order sent. For a series that
    /// passed [`SeriesView::try_labels`] in full (every batch the collector
    /// accepted); on a malformed label the walk ends early.
    pub fn labels(&self) -> Labels<'a> {
        Labels { rest: self.labels }
    }

    /// The labels, each read and checked: a label that is not a well-formed
    /// `Label` message with UTF-8 strings is an error, and the walk ends.
    pub fn try_labels(&self) -> TryLabels<'a> {
        TryLabels { rest: self.labels }
    }

    /// How many labels.
    pub fn label_count(&self) -> usize {
        self.label_count as usize
    }

    /// The encoded labels when they are one run of bytes: two series with the
    /// same run have the same labels in the same order, which lets the store
    /// recognise a series by a hash of these bytes.
    pub fn label_bytes(&self) -> Option<&'a [u8]> {
        self.contiguous.then_some(self.labels)
    }
}

/// The labels of a [`SeriesView`].
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let mut walk = TryLabels { rest: self.rest };
        let next = walk.next().and_then(Result::ok);
        self.rest = if next.is_some() { walk.rest } else { &[] };
        next
    }
}

/// The labels of a [`SeriesView`], each checked.
#[derive(Debug, Clone)]
pub struct TryLabels<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TryLabels<'a> {
    type Item = Result<(&'a str, &'a str), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The framing was checked by `decode`; the label itself is read here.
        // The usual case first: a label field shorter than 128 bytes.
        if let [0x0a, n, rest @ ..] = self.rest
            && *n < 0x80
            && let Some((body, rest)) = rest.split_at_checked(usize::from(*n))
        {
            self.rest = rest;
            let read = read_label(body);
            if read.is_err() {
                self.rest = &[];
            }
            return Some(read);
        }
        let mut r = Reader::new(self.rest);
        let read = loop {
            if r.done() {
                self.rest = &[];
                return None;
            }
            let (field, wire) = match r.key() {
                Ok(k) => k,
                Err(e) => break Err(e),
            };
            if field == 1 && wire == LEN {
                break r.bytes().and_then(read_label);
            }
            if let Err(e) = r.skip(wire) {
                break Err(e);
            }
        };
        self.rest = if read.is_ok() { r.rest() } else { &[] };
        Some(read)
    }
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.at..]
    }

    fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError {
            what: what.into(),
            at: self.at,
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Most varints here (keys, lengths under 128) are one byte.
        if let Some(&byte) = self.buf.get(self.at)
            && byte < 0x80
        {
            self.at += 1;
            return Ok(u64::from(byte));
        }
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.at) else {
                return Err(self.error("truncated varint"));
            };
            self.at += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.error(format!("invalid field number {field}")));
        }
        Ok((field as u32, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.error("field runs past the end"))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
        self.take(len)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, field: &str) -> Result<&'a str, DecodeError> {
        let b = self.bytes()?;
        // Where the string's own bytes start.
        let at = self.at - b.len();
        std::str::from_utf8(b).map_err(|_| DecodeError {
            what: format!("{field} is not UTF-8"),
            at,
        })
    }

    fn skip(&mut self, wire: u8) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            other => Err(self.error(format!("unsupported wire type {other}"))),
        }
    }

    /// Checks the wire type of a known field.
    fn expect(&self, wire: u8, want: u8, field: &str) -> Result<(), DecodeError> {
        if wire == want {
            Ok(())
        } else {
            Err(self.error(format!("{field} has wire type {wire}, not {want}")))
        }
    }
}

fn read_label(body: &[u8]) -> Result<(&str, &str), DecodeError> {
    // As every encoder writes a label: name (field 1) then value (field 2),
    // each shorter than 128 bytes.
    if let [0x0a, n, rest @ ..] = body
        && let Some((name, rest)) = rest.split_at_checked(usize::from(*n))
        && *n < 0x80
        && let [0x12, m, value @ ..] = rest
        && *m < 0x80
        && value.len() == usize::from(*m)
        && let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value))
    {
        return Ok((name, value));
    }
    let mut r = Reader::new(body);
    let (mut name, mut value) = ("", "");
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, LEN, "label name")?;
                name = r.string("label name")?;
            }
            2 => {
                r.expect(wire, LEN, "label value")?;
                value = r.string("label value")?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((name, value))
}

fn read_series(body: &[u8]) -> Result<SeriesView<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let mut series = SeriesView::default();
    // Where the run of label fields starts and ends, while it is one run.
    let mut run: Option<(usize, usize)> = None;
    let mut broken = false;
    while !r.done() {
        let start = r.at;
        let (field, wire) = r.key()?;
        match field {
            1 => {
                // Only framed here: the labels are read (and checked to be
                // UTF-8) by the one walk that validates them.
                r.expect(wire, LEN, "series labels")?;
                r.bytes()?;
                series.label_count += 1;
                run = match run {
                    None => Some((start, r.at)),
                    Some((from, end)) if end == start => Some((from, r.at)),
                    other => {
                        broken = true;
                        other
                    }
                };
            }
            2 => {
                r.expect(wire, I64, "series value")?;
                series.value = f64::from_bits(r.fixed64()?);
            }
            3 => {
                r.expect(wire, VARINT, "series timestamp_ms")?;
                series.timestamp_ms = r.varint()? as i64;
            }
            4 => {
                r.expect(wire, LEN, "series window")?;
                let at = r.at;
                let bytes = r.bytes()?;
                let window = series.window.get_or_insert_with(Box::default);
                window.merge(bytes).map_err(|e| DecodeError {
                    what: format!("series window: {e}"),
                    at,
                })?;
            }
            _ => r.skip(wire)?,
        }
    }
    match run {
        Some((from, end)) if !broken => {
            series.labels = &body[from..end];
            series.contiguous = true;
        }
        Some(_) => series.labels = body,
        None => series.contiguous = true,
    }
    Ok(series)
}

fn read_family(body: &[u8]) -> Result<FamilyView<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let mut family = FamilyView::default();
    while !r.done() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                r.expect(wire, LEN, "family name")?;
                family.name = r.string("family name")?;
            }
            2 => {
                r.expect(wire, LEN, "family help")?;
                family.help = r.string("family help")?;
            }
            3 => {
                r.expect(wire, VARINT, "family kind")?;
                family.kind = r.varint()? as i32;
            }
            4 => match wire {
                LEN => {
                    let packed = r.bytes()?;
                    if packed.len() % 8 != 0 {
                        return Err(r.error("bucket_bounds: packed length not a multiple of 8"));
                    }
                    family.bucket_bounds.extend(packed.chunks_exact(8).map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        f64::from_le_bytes(a)
                    }));
                }
                I64 => family.bucket_bounds.push(f64::from_bits(r.fixed64()?)),
                _ => return Err(r.error(format!("bucket_bounds has wire type {wire}"))),
            },
            5 => {
                r.expect(wire, LEN, "family series")?;
                let at = r.at;
                let series = read_series(r.bytes()?).map_err(|mut e| {
                    e.at += at;
                    e
                })?;
                if family.series.is_empty() {
                    // Series are about the same size: room for as many as
                    // the rest of the family would hold at this one's size
                    // (capped: a sender's sizes are not trusted).
                    let each = (r.at - at).max(1) + 2;
                    let guess = (body.len() - r.at) / each + 1;
                    family.series.reserve(guess.min(16_384));
                }
                family.series.push(series);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(family)
}

impl<'a> Batch<'a> {
    /// Reads a `PushRequest` from its protobuf bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let mut batch = Batch::default();
        while !r.done() {
            let (field, wire) = r.key()?;
            match field {
                1 => {
                    r.expect(wire, LEN, "agent_id")?;
                    batch.agent_id = r.string("agent_id")?;
                }
                2 => {
                    r.expect(wire, VARINT, "epoch")?;
                    batch.epoch = r.varint()?;
                }
                3 => {
                    r.expect(wire, VARINT, "sequence")?;
                    batch.sequence = r.varint()?;
                }
                4 => {
                    r.expect(wire, VARINT, "timestamp_ms")?;
                    batch.timestamp_ms = r.varint()? as i64;
                }
                5 => {
                    r.expect(wire, VARINT, "flush_interval_ms")?;
                    batch.flush_interval_ms = r.varint()?;
                }
                6 => {
                    r.expect(wire, LEN, "families")?;
                    let at = r.at;
                    let family = read_family(r.bytes()?).map_err(|mut e| {
                        e.at += at;
                        e
                    })?;
                    batch.families.push(family);
                }
                7 => {
                    r.expect(wire, VARINT, "last")?;
                    batch.last = r.varint()? != 0;
                }
                8 => {
                    r.expect(wire, LEN, "agent_version")?;
                    batch.agent_version = r.string("agent_version")?;
                }
                9 => {
                    r.expect(wire, LEN, "agent_revision")?;
                    batch.agent_revision = r.string("agent_revision")?;
                }
                _ => r.skip(wire)?,
            }
        }
        Ok(batch)
    }

    /// Series in the batch, over every family.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }

    /// The same batch as an owned message (for re-encoding after a change).
    pub fn to_request(&self) -> PushRequest {
        PushRequest {
            agent_id: self.agent_id.to_string(),
            epoch: self.epoch,
            sequence: self.sequence,
            timestamp_ms: self.timestamp_ms,
            flush_interval_ms: self.flush_interval_ms,
            families: self
                .families
                .iter()
                .map(|f| Family {
                    name: f.name.to_string(),
                    help: f.help.to_string(),
                    kind: f.kind,
                    bucket_bounds: f.bucket_bounds.clone(),
                    series: f
                        .series
                        .iter()
                        .map(|s| Series {
                            labels: s
                                .labels()
                                .map(|(name, value)| Label {
                                    name: name.to_string(),
                                    value: value.to_string(),
                                })
                                .collect(),
                            value: s.value,
                            timestamp_ms: s.timestamp_ms,
                            window: s.window.as_deref().cloned(),
                        })
                        .collect(),
                })
                .collect(),
            last: self.last,
            agent_version: self.agent_version.to_string(),
            agent_revision: self.agent_revision.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;
    use proptest::prelude::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn sample() -> PushRequest {
        PushRequest {
            agent_id: "web-1".into(),
            epoch: 7,
            sequence: 42,
            timestamp_ms: -5,
            flush_interval_ms: 10_000,
            families: vec![
                Family {
                    name: "node_load1".into(),
                    help: "Load.".into(),
                    kind: Kind::Gauge as i32,
                    bucket_bounds: vec![],
                    series: vec![Series {
                        labels: vec![label("instance", "web-1"), label("job", "node")],
                        value: 0.25,
                        timestamp_ms: 1_700_000_000_000,
                        window: None,
                    }],
                },
                Family {
                    name: "req_seconds".into(),
                    help: String::new(),
                    kind: Kind::Histogram as i32,
                    bucket_bounds: vec![0.1, 1.0],
                    series: vec![Series {
                        labels: vec![label("instance", "web-1"), label("job", "app")],
                        value: 0.0,
                        timestamp_ms: 3,
                        window: Some(Window {
                            count: 3,
                            sum: 1.5,
                            bucket_counts: vec![1, 1, 1],
                            ..Default::default()
                        }),
                    }],
                },
            ],
            last: true,
            agent_version: "0.1.0".into(),
            agent_revision: "abc".into(),
        }
    }

    #[test]
    fn reads_what_prost_writes() {
        let request = sample();
        let bytes = request.encode_to_vec();
        let batch = Batch::decode(&bytes).expect("decodes");
        assert_eq!(batch.to_request(), request);
        assert_eq!(batch.series_count(), 2);
        let series = &batch.families[0].series[0];
        assert_eq!(
            series.labels().collect::<Vec<_>>(),
            [("instance", "web-1"), ("job", "node")]
        );
        assert_eq!(series.label_count(), 2);
        assert!(series.label_bytes().is_some());
    }

    #[test]
    fn fields_out_of_order_and_unknown_fields() {
        // Series: value, a label, an unknown varint field 9, then a label.
        let label_a = label("a", "1").encode_to_vec();
        let label_b = label("b", "2").encode_to_vec();
        let mut series = Vec::new();
        series.push(0x11); // field 2, fixed64
        series.extend_from_slice(&2.5f64.to_le_bytes());
        series.push(0x0a);
        series.push(label_a.len() as u8);
        series.extend_from_slice(&label_a);
        series.extend_from_slice(&[0x48, 0x05]); // field 9, varint 5
        series.push(0x0a);
        series.push(label_b.len() as u8);
        series.extend_from_slice(&label_b);
        let mut family = vec![0x2a, series.len() as u8];
        family.extend_from_slice(&series);
        family.extend_from_slice(&[0x0a, 1, b'x']);
        // Bounds unpacked, one by one.
        family.push(0x21);
        family.extend_from_slice(&1.0f64.to_le_bytes());
        let mut request = vec![0x32, family.len() as u8];
        request.extend_from_slice(&family);
        let batch = Batch::decode(&request).expect("decodes");
        let f = &batch.families[0];
        assert_eq!(f.name, "x");
        assert_eq!(f.bucket_bounds, [1.0]);
        let s = &f.series[0];
        assert_eq!(s.value, 2.5);
        assert_eq!(s.labels().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        // Labels not in one run: not usable as a key.
        assert_eq!(s.label_bytes(), None);
        let owned = PushRequest::decode(request.as_slice()).expect("prost decodes too");
        assert_eq!(batch.to_request(), owned);
    }

    #[test]
    fn refuses_bad_input_with_where() {
        let bytes = sample().encode_to_vec();
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            let err = Batch::decode(&bytes[..cut]);
            assert!(
                PushRequest::decode(&bytes[..cut]).is_err() == err.is_err(),
                "cut at {cut}: prost and the view disagree"
            );
        }
        // agent_id with invalid UTF-8.
        let err = Batch::decode(&[0x0a, 1, 0xff]).expect_err("not UTF-8");
        assert_eq!(
            err.to_string(),
            "cannot decode the push: agent_id is not UTF-8 at byte 2"
        );
        // A known field with the wrong wire type.
        let err = Batch::decode(&[0x10, 0x01, 0x0d, 0, 0, 0, 0]).expect_err("wire type");
        assert!(err.what.contains("wire type"), "{err}");
        // A length past the end.
        let err = Batch::decode(&[0x32, 0x7f]).expect_err("length");
        assert_eq!(err.what, "field runs past the end");
        // Groups are not taken.
        assert!(Batch::decode(&[0x1b]).is_err());
        // A label value that is not UTF-8 is framed by decode and refused
        // by the walk that reads the labels.
        let mut request = sample();
        request.families[0].series[0].labels[1].value = "qqqq".into();
        let mut bytes = request.encode_to_vec();
        let at = bytes
            .windows(4)
            .position(|w| w == b"qqqq")
            .expect("the value is in the bytes");
        bytes[at] = 0xff;
        let batch = Batch::decode(&bytes).expect("framing is fine");
        let series = &batch.families[0].series[0];
        let walked: Vec<_> = series.try_labels().collect();
        assert_eq!(walked.len(), 2);
        assert!(walked[0].is_ok());
        assert_eq!(
            walked[1].as_ref().err().map(|e| e.what.as_str()),
            Some("label value is not UTF-8")
        );
        assert_eq!(series.labels().count(), 1, "the plain walk stops there");
    }

    proptest! {
        #[test]
        fn agrees_with_prost_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever prost takes, the view takes the same way (prost also
            // takes groups, which no Vigil agent writes).
            if let (Ok(view), Ok(owned)) = (Batch::decode(&bytes), PushRequest::decode(bytes.as_slice())) {
                prop_assert_eq!(view.to_request(), owned);
            }
        }

        #[test]
        fn round_trips_any_request(
            agent in "[a-z0-9-]{0,12}",
            names in proptest::collection::vec("[a-z_]{1,8}", 0..4),
            values in proptest::collection::vec(any::<f64>().prop_filter("not NaN", |v| !v.is_nan()), 0..4),
            seq in any::<u64>(),
            ts in any::<i64>(),
        ) {
            let request = PushRequest {
                agent_id: agent,
                sequence: seq,
                timestamp_ms: ts,
                families: names.iter().map(|n| Family {
                    name: n.clone(),
                    kind: 2,
                    series: values.iter().map(|v| Series {
                        labels: vec![label("instance", n), label("z", "é")],
                        value: *v,
                        timestamp_ms: ts,
                        window: None,
                    }).collect(),
                    ..Default::default()
                }).collect(),
                ..Default::default()
            };
            let bytes = request.encode_to_vec();
            let view = Batch::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(view.to_request(), request);
        }
    }
}
