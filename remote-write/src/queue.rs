//! The remote_write queue on disk: every sample the collector writes into
//! its history is appended here (one record per batch, rule evaluation or
//! sweep), and each `[[remote_write]]` destination reads it in order with
//! its own cursor, kept on disk, so that a restart of the collector or a
//! store outage of hours resumes where it stopped.
//!
//! Layout, in `DATA_DIR/remote_write/`:
//! - segments `<first sequence, 20 digits>.rwq`, each a run of records
//!   `[body length u32 LE][crc32 of body u32 LE][body]`, the body being the
//!   record's sequence number (u64 LE), the write-ahead log position of the
//!   batch it came from (u64 LE, 0 when none), its sample count (u32 LE) and
//!   a `prompb.WriteRequest` (protobuf, snappy-compressed: each sample
//!   carries its labels, which compress several times over);
//! - `cursor-<destination>`: the highest sequence that destination's store
//!   acknowledged (or that was dropped), as decimal text.
//!
//! Records are written without a sync; [`Queue::sync`] syncs them, and the
//! collector calls it before it deletes write-ahead log segments (at a
//! checkpoint). Whatever a crash cuts off the queue's tail is still in the
//! write-ahead log: its replay hands those batches on again, and the queue
//! takes only those past the log position of its last record. So every
//! sample reaches the queue once.
//!
//! A segment is deleted when every destination's cursor is past it. Past
//! `max_bytes`, the oldest segment is deleted anyway, and what destinations
//! had not sent of it is counted as dropped (`queue_full`).
//!
//! Hand-written rather than a crate: no maintained crate offers an
//! append-only log with several persistent readers and this recovery rule.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;
use thiserror::Error;

use crate::prompb::WriteRequest;

/// Size at which a segment is closed and the next one started.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record read back (a larger length is damage).
const MAX_RECORD_BYTES: u32 = 256 << 20;
/// Header and fixed body fields.
const HEADER_BYTES: u64 = 8;
const BODY_PREFIX: usize = 20;

/// The queue could not be read or written.
#[derive(Debug, Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("remote_write queue {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its sequence number.
    pub sequence: u64,
    /// Its samples.
    pub request: WriteRequest,
}

#[derive(Debug)]
struct Writer {
    /// Segments by first sequence: their size in bytes.
    segments: BTreeMap<u64, u64>,
    /// The segment appended to, open.
    file: Option<File>,
    next_sequence: u64,
    last_log_position: u64,
    /// Each destination's acknowledged sequence.
    cursors: HashMap<String, u64>,
    /// Samples dropped at `max_bytes`, per destination.
    dropped: HashMap<String, u64>,
    /// Problems found at open (damaged records), one line each.
    problems: Vec<String>,
}

/// The queue; shared by the tap that appends and the senders that read.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    max_bytes: u64,
    writer: Mutex<Writer>,
    appended: tokio::sync::Notify,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.rwq"))
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

/// Reads the next record from `reader`: `Ok(None)` at a clean end, or at a
/// torn tail (a record cut short), which the caller tells apart by offset.
fn read_record(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER_BYTES as usize];
    if !read_exact_or_end(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES || (len as usize) < BODY_PREFIX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("impossible record length {len}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    if !read_exact_or_end(reader, &mut body)? {
        return Ok(None);
    }
    if crc32fast::hash(&body) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    Ok(Some(body))
}

/// Fills `buf`; false when the input ended first (nothing or part read).
fn read_exact_or_end(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The fixed fields of a record body: sequence, log position, samples.
fn body_fields(body: &[u8]) -> (u64, u64, u32) {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut n = [0u8; 4];
    n.copy_from_slice(&body[16..20]);
    (word(0), word(8), u32::from_le_bytes(n))
}

impl Queue {
    /// Opens (creating) the queue in `dir`, keeping at most `max_bytes`
    /// of segments, with a cursor for each of `destinations` (a new one
    /// starts at the queue's end: it sends what arrives from now on).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        destinations: &[String],
    ) -> Result<Arc<Self>, QueueError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            if let Some(first) = name
                .to_string_lossy()
                .strip_suffix(".rwq")
                .and_then(|n| n.parse::<u64>().ok())
            {
                let len = entry.metadata().map_err(io_error(dir))?.len();
                segments.insert(first, len);
            }
        }
        // A segment created by a run that then wrote nothing.
        while let Some((&first, &len)) = segments.last_key_value() {
            if len > 0 {
                break;
            }
            let path = segment_path(dir, first);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            segments.remove(&first);
        }
        let mut writer = Writer {
            segments,
            file: None,
            next_sequence: 1,
            last_log_position: 0,
            cursors: HashMap::new(),
            dropped: HashMap::new(),
            problems: Vec::new(),
        };
        if let Some((&first, _)) = writer.segments.last_key_value() {
            // The last segment: find its last record, cut a torn tail.
            let path = segment_path(dir, first);
            let mut file = BufReader::new(File::open(&path).map_err(io_error(&path))?);
            let mut good = 0u64;
            writer.next_sequence = first;
            loop {
                match read_record(&mut file) {
                    Ok(Some(body)) => {
                        let (sequence, position, _) = body_fields(&body);
                        writer.next_sequence = sequence + 1;
                        if position > 0 {
                            writer.last_log_position = position;
                        }
                        good += HEADER_BYTES + body.len() as u64;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        writer.problems.push(format!(
                            "{}: {e} at byte {good}; the rest of the segment is cut off",
                            path.display()
                        ));
                        break;
                    }
                }
            }
            let len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            if good < len {
                if writer.problems.is_empty() {
                    writer.problems.push(format!(
                        "{}: torn record at byte {good} cut off",
                        path.display()
                    ));
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                f.set_len(good).map_err(io_error(&path))?;
                writer.segments.insert(first, good);
            }
        }
        for name in destinations {
            let path = cursor_path(dir, name);
            let acked = match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|_| {
                    writer.problems.push(format!(
                        "{}: {text:?} is not a sequence number; the destination starts at the queue's end",
                        path.display()
                    ));
                    writer.next_sequence - 1
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => writer.next_sequence - 1,
                Err(e) => return Err(io_error(&path)(e)),
            };
            writer.cursors.insert(name.clone(), acked);
        }
        // Cursors of destinations no longer configured are forgotten.
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(dest) = name.strip_prefix("cursor-")
                && !writer.cursors.contains_key(dest)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let starts: Vec<(String, u64)> = writer
            .cursors
            .iter()
            .filter(|(name, _)| !cursor_path(dir, name).exists())
            .map(|(n, c)| (n.clone(), *c))
            .collect();
        let queue = Arc::new(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            writer: Mutex::new(writer),
            appended: tokio::sync::Notify::new(),
        });
        // A new destination's starting point is kept at once, so that it
        // does not move to the end again at the next start.
        for (name, cursor) in starts {
            queue.acknowledge(&name, cursor)?;
        }
        queue.collect()?;
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Problems found when the queue was opened.
    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    /// The write-ahead log position of the newest record that came from
    /// the log: a replayed batch at or before it is in the queue already.
    pub fn last_log_position(&self) -> u64 {
        self.lock().last_log_position
    }

    /// The sequence the next record gets.
    pub fn next_sequence(&self) -> u64 {
        self.lock().next_sequence
    }

    /// Bytes of segments on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().segments.values().sum()
    }

    /// Appends one record; returns its sequence. A request without samples
    /// is not written (0).
    pub fn append(&self, log_position: u64, request: &WriteRequest) -> Result<u64, QueueError> {
        let samples = request.sample_count();
        if samples == 0 {
            return Ok(0);
        }
        let mut w = self.lock();
        let sequence = w.next_sequence;
        let compressed = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .map_err(|e| io_error(&self.dir)(io::Error::other(e)))?;
        let mut body = Vec::with_capacity(BODY_PREFIX + compressed.len());
        body.extend_from_slice(&sequence.to_le_bytes());
        body.extend_from_slice(&log_position.to_le_bytes());
        body.extend_from_slice(&(samples.min(u32::MAX as usize) as u32).to_le_bytes());
        body.extend_from_slice(&compressed);
        let mut record = Vec::with_capacity(body.len() + HEADER_BYTES as usize);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        let current = w.segments.last_key_value().map(|(f, l)| (*f, *l));
        let first = match current {
            Some((first, len)) if len < SEGMENT_BYTES && w.file.is_some() => first,
            Some((first, len)) if len < SEGMENT_BYTES => {
                let path = segment_path(&self.dir, first);
                w.file = Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(io_error(&path))?,
                );
                first
            }
            _ => {
                if let Some(f) = w.file.take()
                    && let Err(e) = f.sync_data()
                {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "remote_write queue: cannot sync a full segment; the write-ahead log still holds its batches until the next checkpoint");
                }
                let path = segment_path(&self.dir, sequence);
                w.file = Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(io_error(&path))?,
                );
                w.segments.insert(sequence, 0);
                sequence
            }
        };
        let path = segment_path(&self.dir, first);
        if let Some(file) = w.file.as_mut() {
            file.write_all(&record).map_err(io_error(&path))?;
        }
        if let Some(len) = w.segments.get_mut(&first) {
            *len += record.len() as u64;
        }
        w.next_sequence = sequence + 1;
        if log_position > 0 {
            w.last_log_position = log_position;
        }
        let over = w.segments.values().sum::<u64>() > self.max_bytes;
        drop(w);
        if over {
            self.drop_oldest()?;
        }
        self.appended.notify_waiters();
        Ok(sequence)
    }

    /// Syncs what was appended.
    pub fn sync(&self) -> Result<(), QueueError> {
        let w = self.lock();
        if let Some(file) = &w.file {
            file.sync_data().map_err(io_error(&self.dir))?;
        }
        Ok(())
    }

    /// Waits until a record is appended (or `timeout` passes).
    pub async fn wait_appended(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
    }

    /// Deletes segments past every cursor, never the one appended to.
    fn collect(&self) -> Result<(), QueueError> {
        let mut w = self.lock();
        let Some(low) = w.cursors.values().copied().min() else {
            return Ok(());
        };
        let firsts: Vec<u64> = w.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            // Every record of the segment starting at pair[0] is before pair[1].
            if pair[1] <= low + 1 {
                let path = segment_path(&self.dir, pair[0]);
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                w.segments.remove(&pair[0]);
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Deletes the oldest segment at `max_bytes` (never the one appended
    /// to), counting what each destination had not sent of it.
    fn drop_oldest(&self) -> Result<(), QueueError> {
        let mut w = self.lock();
        if w.segments.len() < 2 {
            return Ok(());
        }
        let Some((&first, _)) = w.segments.first_key_value() else {
            return Ok(());
        };
        let path = segment_path(&self.dir, first);
        let mut per_record = Vec::new();
        match File::open(&path) {
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "remote_write queue: cannot read the segment being dropped; its samples are not counted")
            }
            Ok(file) => {
                let mut reader = BufReader::new(file);
                while let Ok(Some(body)) = read_record(&mut reader) {
                    let (sequence, _, samples) = body_fields(&body);
                    per_record.push((sequence, u64::from(samples)));
                }
            }
        }
        std::fs::remove_file(&path).map_err(io_error(&path))?;
        w.segments.remove(&first);
        let next_first = w.segments.keys().next().copied().unwrap_or(w.next_sequence);
        let names: Vec<String> = w.cursors.keys().cloned().collect();
        for name in names {
            let acked = w.cursors.get(&name).copied().unwrap_or(0);
            let lost: u64 = per_record
                .iter()
                .filter(|(s, _)| *s > acked)
                .map(|(_, n)| *n)
                .sum();
            if lost > 0 {
                *w.dropped.entry(name.clone()).or_default() += lost;
                tracing::warn!(destination = %name, samples = lost, "remote_write queue full (queue.max_bytes): its oldest segment was dropped before it was sent");
            }
            if acked + 1 < next_first {
                w.cursors.insert(name, next_first - 1);
            }
        }
        Ok(())
    }

    /// Samples dropped at `max_bytes` for `destination` so far.
    pub fn dropped(&self, destination: &str) -> u64 {
        self.lock().dropped.get(destination).copied().unwrap_or(0)
    }

    /// The sequence `destination` acknowledged last.
    pub fn acknowledged(&self, destination: &str) -> u64 {
        self.lock().cursors.get(destination).copied().unwrap_or(0)
    }

    /// Records `destination`'s store acknowledged everything up to
    /// `sequence` (written to disk before this returns), and deletes the
    /// segments no destination needs.
    pub fn acknowledge(&self, destination: &str, sequence: u64) -> Result<(), QueueError> {
        let path = cursor_path(&self.dir, destination);
        let tmp = self.dir.join(format!("cursor-{destination}.tmp"));
        {
            let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
            writeln!(file, "{sequence}").map_err(io_error(&tmp))?;
            file.sync_data().map_err(io_error(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
        {
            let mut w = self.lock();
            let entry = w.cursors.entry(destination.to_string()).or_default();
            *entry = (*entry).max(sequence);
        }
        self.collect()
    }

    /// A reader for `destination`, starting after its cursor.
    pub fn reader(self: &Arc<Self>, destination: &str) -> Reader {
        Reader {
            queue: Arc::clone(self),
            next: self.acknowledged(destination) + 1,
            open: None,
        }
    }
}

/// Reads records in order for one destination.
#[derive(Debug)]
pub struct Reader {
    queue: Arc<Queue>,
    /// The next sequence to read.
    next: u64,
    /// The segment being read: its first sequence, the file, the offset.
    open: Option<(u64, BufReader<File>, u64)>,
}

impl Reader {
    /// Reads records in order until `max_samples` is reached (at least one
    /// record when there is one); empty when nothing waits.
    pub fn read(&mut self, max_samples: usize) -> Result<Vec<Record>, QueueError> {
        let mut out = Vec::new();
        let mut samples = 0usize;
        loop {
            if samples >= max_samples {
                return Ok(out);
            }
            let (segments, next_sequence) = {
                let w = self.queue.lock();
                (
                    w.segments.keys().copied().collect::<Vec<u64>>(),
                    w.next_sequence,
                )
            };
            if self.next >= next_sequence {
                return Ok(out);
            }
            // Records dropped at max_bytes: start at the oldest left.
            if let Some(&oldest) = segments.first()
                && self.next < oldest
            {
                self.next = oldest;
                self.open = None;
            }
            let Some(&first) = segments.iter().rev().find(|f| **f <= self.next) else {
                return Ok(out);
            };
            if self.open.as_ref().is_none_or(|(f, _, _)| *f != first) {
                let path = segment_path(&self.queue.dir, first);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    // Deleted at max_bytes meanwhile: look again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.open = None;
                        continue;
                    }
                    Err(e) => return Err(io_error(&path)(e)),
                };
                self.open = Some((first, BufReader::with_capacity(1 << 20, file), 0));
            }
            let Some((first, reader, offset)) = self.open.as_mut() else {
                return Ok(out);
            };
            let path = segment_path(&self.queue.dir, *first);
            match read_record(reader) {
                Ok(Some(body)) => {
                    *offset += HEADER_BYTES + body.len() as u64;
                    let (sequence, _, n) = body_fields(&body);
                    if sequence < self.next {
                        continue;
                    }
                    let decoded = snap::raw::Decoder::new()
                        .decompress_vec(&body[BODY_PREFIX..])
                        .map_err(|e| e.to_string())
                        .and_then(|raw| {
                            WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())
                        });
                    match decoded {
                        Ok(request) => {
                            samples += n as usize;
                            out.push(Record { sequence, request });
                        }
                        Err(e) => {
                            tracing::error!(file = %path.display(), sequence, error = %e, "remote_write queue: a record does not decode; skipped");
                        }
                    }
                    self.next = sequence + 1;
                }
                Ok(None) => {
                    // The end of this segment: a record being written
                    // (wait), or the next segment's turn.
                    let at = *offset;
                    let later = segments.iter().find(|f| **f > *first).copied();
                    match later {
                        Some(next_first) => {
                            self.next = self.next.max(next_first);
                            self.open = None;
                        }
                        None => {
                            reader.seek(SeekFrom::Start(at)).map_err(io_error(&path))?;
                            return Ok(out);
                        }
                    }
                }
                Err(e) => {
                    // Damage: skip to the next segment, if any.
                    tracing::error!(file = %path.display(), error = %e, "remote_write queue damaged; the rest of the segment is skipped");
                    let later = segments.iter().find(|f| **f > *first).copied();
                    self.open = None;
                    match later {
                        Some(next_first) => self.next = next_first,
                        None => return Ok(out),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample, TimeSeries};

    fn request(t: i64, n: usize) -> WriteRequest {
        WriteRequest {
            timeseries: (0..n)
                .map(|i| TimeSeries {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: format!("m{i}"),
                    }],
                    samples: vec![Sample {
                        value: i as f64,
                        timestamp: t,
                    }],
                    histograms: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn records_are_read_in_order_and_cursors_survive_a_reopen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let names = vec!["a".to_string(), "b".to_string()];
        let q = Queue::open(dir.path(), 1 << 30, &names)?;
        for t in 1..=10 {
            q.append(t as u64 * 100, &request(t, 3))?;
        }
        let mut a = q.reader("a");
        let got = a.read(7)?;
        assert_eq!(
            got.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        q.acknowledge("a", 3)?;
        drop(q);
        let q = Queue::open(dir.path(), 1 << 30, &names)?;
        assert_eq!(q.last_log_position(), 1000);
        assert_eq!(q.next_sequence(), 11);
        let mut a = q.reader("a");
        assert_eq!(a.read(1000)?.first().map(|r| r.sequence), Some(4));
        let mut b = q.reader("b");
        let all = b.read(1000)?;
        assert_eq!(all.len(), 10);
        assert_eq!(all[9].request, request(10, 3));
        // A destination added later starts at the end.
        let names = vec!["a".to_string(), "c".to_string()];
        drop((a, b, q));
        let q = Queue::open(dir.path(), 1 << 30, &names)?;
        assert!(q.reader("c").read(1000)?.is_empty());
        assert!(!dir.path().join("cursor-b").exists());
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_queue_goes_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let names = vec!["a".to_string()];
        let q = Queue::open(dir.path(), 1 << 30, &names)?;
        q.append(5, &request(1, 2))?;
        q.append(6, &request(2, 2))?;
        drop(q);
        let segment = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&segment)?.len();
        OpenOptions::new()
            .write(true)
            .open(&segment)?
            .set_len(len - 3)?;
        let q = Queue::open(dir.path(), 1 << 30, &names)?;
        assert_eq!(q.problems().len(), 1, "{:?}", q.problems());
        assert_eq!(q.last_log_position(), 5);
        assert_eq!(q.next_sequence(), 2);
        q.append(7, &request(3, 2))?;
        // The first record, then the one appended after the cut.
        let got = q.reader("a").read(1000)?;
        assert_eq!(
            got.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(got[0].request, request(1, 2));
        assert_eq!(got[1].request, request(3, 2));
        Ok(())
    }

    #[test]
    fn acknowledged_segments_go_and_a_full_queue_drops_the_oldest_counted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let names = vec!["a".to_string()];
        // Segments roll at SEGMENT_BYTES; use big records (of random
        // names, which do not compress) to get several.
        let mut big = request(1, 200_000);
        for ts in &mut big.timeseries {
            ts.labels[0].value = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        }
        let q = Queue::open(dir.path(), 1 << 40, &names)?;
        q.append(0, &big)?;
        let per = q.bytes();
        let needed = SEGMENT_BYTES / per + 2;
        for _ in 1..needed {
            q.append(0, &big)?;
        }
        assert!(q.lock().segments.len() >= 2);
        q.acknowledge("a", needed - 1)?;
        assert_eq!(
            q.lock().segments.len(),
            1,
            "acknowledged segments are deleted"
        );
        drop(q);
        let q = Queue::open(dir.path(), SEGMENT_BYTES, &names)?;
        for _ in 0..needed {
            q.append(0, &big)?;
        }
        assert!(q.dropped("a") > 0);
        assert!(q.bytes() <= SEGMENT_BYTES + per + 64);
        let mut r = q.reader("a");
        let first = r.read(1)?.first().map(|r| r.sequence).unwrap_or(0);
        assert!(
            first > needed,
            "the reader starts at the oldest kept record, {first}"
        );
        Ok(())
    }
}
