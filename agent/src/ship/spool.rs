//! The spool: every closed batch is written here before it is sent, and
//! forgotten only when every collector it goes to has acknowledged it as
//! durable.
//!
//! On disk, in `data_dir/spool/`:
//! - segments `<first sequence, 20 digits>.spool`, each a run of records
//!   `[body length u32 LE][crc32 of body u32 LE][body]`, the body being the
//!   sequence (u64 LE), the batch's close time (i64 ms LE) and the batch's
//!   protobuf encoding; every record is synced before the batch is sent;
//! - `state`: the agent's epoch and a floor for the next sequence number, so
//!   that sequence numbers keep increasing across restarts;
//! - `cursor-<destination>`: the highest sequence that destination has
//!   acknowledged (or that was dropped), one file per collector in fan-out
//!   mode, one in fail-over mode.
//!
//! A record whose checksum does not match is skipped and counted; a torn
//! tail (a length that runs past the end of the file, as a crash mid-write
//! leaves) ends that segment's replay and is counted. Neither is fatal.
//!
//! When the folder cannot be written (disk full, read-only, missing
//! permissions), batches are kept in memory within `max_memory_bytes`, the
//! failure is logged and counted, and the disk is tried again later. Both
//! budgets drop the oldest batches first, counted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::Notify;
use tracing::{error, info, warn};
use vigil_shared::proto::PushRequest;

/// Largest record body accepted when reading a segment back.
const MAX_RECORD_BYTES: u32 = 256 << 20;
/// Bytes before a record's body: length and checksum.
const HEADER_BYTES: u64 = 8;
/// Bytes of a body before the batch: sequence and close time.
const BODY_PREFIX: usize = 16;
/// How long after a disk failure the spool tries the disk again.
const DISK_RETRY: Duration = Duration::from_secs(30);

/// How the spool is set up.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool folder; `None` keeps batches in memory only.
    pub dir: Option<PathBuf>,
    /// Most bytes of batches kept on disk.
    pub max_bytes: u64,
    /// Most bytes of batches kept in memory while the disk cannot be written.
    pub max_memory_bytes: u64,
    /// One name per destination (collector), for its cursor file.
    pub destinations: Vec<String>,
}

impl SpoolConfig {
    /// Segment size: an eighth of the cap, between 4 KiB and 16 MiB, so that
    /// space comes back in steps small beside the cap.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(4 << 10, 16 << 20)
    }
}

/// The spool's counters, since start.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Batches dropped, oldest first, to stay within a budget.
    pub dropped: AtomicU64,
    /// Records skipped on start because their checksum or length was wrong.
    pub corrupt: AtomicU64,
    /// Writes to the spool folder that failed (the batch was kept in memory).
    pub write_errors: AtomicU64,
    /// Batches found in the spool on start.
    pub recovered: AtomicU64,
}

/// A batch ready to send.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Its sequence number.
    pub sequence: u64,
    /// What is sent.
    pub request: PushRequest,
}

#[derive(Debug, Clone)]
enum Location {
    /// In segment `segment` (its first sequence), at `offset`, `len` body bytes.
    Disk {
        segment: u64,
        offset: u64,
        len: u32,
    },
    Memory(Arc<PushRequest>),
}

#[derive(Debug, Clone)]
struct Entry {
    sequence: u64,
    closed_ms: i64,
    bytes: u64,
    location: Location,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
}

struct Inner {
    config: SpoolConfig,
    epoch: u64,
    next_sequence: u64,
    entries: VecDeque<Entry>,
    cursors: Vec<u64>,
    segments: VecDeque<Segment>,
    /// The segment new records go to, with its size; a new one per run.
    active: Option<(File, u64)>,
    disk_bytes: u64,
    memory_bytes: u64,
    /// When the disk last failed; the disk is not tried again before [`DISK_RETRY`].
    disk_failed: Option<Instant>,
}

/// The agent's spool; see the module documentation.
pub struct Spool {
    inner: Mutex<Inner>,
    notify: Notify,
    /// Counters for the agent's own metrics.
    pub counters: SpoolCounters,
}

/// The spool folder could not be read at all (it is then not used).
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.spool"))
}

fn cursor_path(dir: &Path, destination: &str) -> PathBuf {
    let name: String = destination
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("cursor-{name}"))
}

/// Writes `text` to `path` through a temporary file and a rename.
fn replace_file(path: &Path, text: &str, sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn read_number(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.trim().parse().ok())
}

/// What reading one segment found.
struct SegmentRead {
    records: Vec<(u64, i64, u64, u32)>,
    corrupt: u64,
    problems: Vec<String>,
}

/// Reads a segment's records: (sequence, close time, body offset, body length).
fn read_segment(path: &Path) -> io::Result<SegmentRead> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut out = SegmentRead {
        records: Vec::new(),
        corrupt: 0,
        problems: Vec::new(),
    };
    let mut offset = 0usize;
    while offset < data.len() {
        let Some(header) = data.get(offset..offset + HEADER_BYTES as usize) else {
            out.corrupt += 1;
            out.problems
                .push(format!("torn record header at byte {offset}"));
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = offset + HEADER_BYTES as usize;
        let end = start.saturating_add(len as usize);
        if len > MAX_RECORD_BYTES || (len as usize) < BODY_PREFIX || end > data.len() {
            out.corrupt += 1;
            out.problems.push(format!(
                "torn or impossible record (length {len}) at byte {offset}; the rest of the segment is skipped"
            ));
            break;
        }
        let body = &data[start..end];
        if crc32fast::hash(body) != crc {
            out.corrupt += 1;
            out.problems.push(format!(
                "checksum mismatch in the record at byte {offset}; skipped"
            ));
        } else {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&body[..8]);
            let mut closed = [0u8; 8];
            closed.copy_from_slice(&body[8..16]);
            out.records.push((
                u64::from_le_bytes(seq),
                i64::from_le_bytes(closed),
                start as u64,
                len,
            ));
        }
        offset = end;
    }
    Ok(out)
}

impl Spool {
    /// Opens the spool: reads the epoch, the cursors and every segment.
    /// A folder that cannot be used leaves a memory-only spool, logged.
    pub fn open(config: SpoolConfig) -> Self {
        let counters = SpoolCounters::default();
        let destinations = config.destinations.len().max(1);
        let mut inner = Inner {
            config,
            epoch: fastrand::u64(1..),
            next_sequence: 1,
            entries: VecDeque::new(),
            cursors: vec![0; destinations],
            segments: VecDeque::new(),
            active: None,
            disk_bytes: 0,
            memory_bytes: 0,
            disk_failed: None,
        };
        if let Some(dir) = inner.config.dir.clone()
            && let Err(e) = inner.load(&dir, &counters)
        {
            error!(error = %e, "the spool folder cannot be used; batches are kept in memory only (vigil_agent_spool_write_errors_total)");
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
            inner.entries.clear();
            inner.segments.clear();
            inner.disk_bytes = 0;
            inner.disk_failed = Some(Instant::now());
        }
        Self {
            inner: Mutex::new(inner),
            notify: Notify::new(),
            counters,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent's epoch (kept in the spool's state, so stable across restarts).
    pub fn epoch(&self) -> u64 {
        self.inner().epoch
    }

    /// The sequence number the next batch will get.
    pub fn next_sequence(&self) -> u64 {
        self.inner().next_sequence
    }

    /// Gives `request` the next sequence number and the epoch, writes it to
    /// disk (or memory when the disk fails), and wakes the senders. Drops the
    /// oldest batches first when a budget is full. Returns the sequence.
    pub fn enqueue(&self, mut request: PushRequest) -> u64 {
        let mut inner = self.inner();
        let sequence = inner.next_sequence;
        inner.next_sequence += 1;
        request.sequence = sequence;
        request.epoch = inner.epoch;
        inner.append(request, &self.counters);
        drop(inner);
        self.notify.notify_waiters();
        sequence
    }

    /// The oldest batch `destination` has not acknowledged, read back from
    /// disk when it is there. A record that cannot be read back is dropped,
    /// counted as corrupt, and the next one is tried.
    pub fn peek(&self, destination: usize) -> Option<Spooled> {
        loop {
            let mut inner = self.inner();
            let cursor = inner.cursors.get(destination).copied().unwrap_or(0);
            let i = inner.entries.partition_point(|e| e.sequence <= cursor);
            let entry = inner.entries.get(i)?.clone();
            match inner.load_entry(&entry) {
                Ok(request) => {
                    return Some(Spooled {
                        sequence: entry.sequence,
                        request,
                    });
                }
                Err(problem) => {
                    error!(sequence = entry.sequence, %problem, "a spooled batch cannot be read back; it is skipped");
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    inner.remove(entry.sequence);
                }
            }
        }
    }

    /// `destination` has made `sequence` durable (or refused it for good):
    /// it will not be sent there again. Forgotten when every destination is past it.
    pub fn acknowledge(&self, destination: usize, sequence: u64) {
        let mut inner = self.inner();
        if let Some(c) = inner.cursors.get_mut(destination) {
            *c = (*c).max(sequence);
        }
        inner.save_cursor(destination);
        inner.collect();
    }

    /// Batches `destination` has not acknowledged.
    pub fn waiting(&self, destination: usize) -> usize {
        let inner = self.inner();
        let cursor = inner.cursors.get(destination).copied().unwrap_or(0);
        inner.entries.len() - inner.entries.partition_point(|e| e.sequence <= cursor)
    }

    /// Batches held for at least one destination.
    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held on disk and in memory.
    pub fn bytes(&self) -> (u64, u64) {
        let inner = self.inner();
        (inner.disk_bytes, inner.memory_bytes)
    }

    /// Close time of the oldest batch not yet acknowledged everywhere.
    pub fn oldest_closed_ms(&self) -> Option<i64> {
        self.inner().entries.front().map(|e| e.closed_ms)
    }

    /// True when the disk is in use (not failed, not memory-only).
    pub fn on_disk(&self) -> bool {
        let inner = self.inner();
        inner.config.dir.is_some() && inner.disk_failed.is_none()
    }

    /// Resolves after the next [`Spool::enqueue`]; create it before looking.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Inner {
    /// Reads the state, the cursors and the segments of `dir`.
    fn load(&mut self, dir: &Path, counters: &SpoolCounters) -> Result<(), SpoolError> {
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let state = dir.join("state");
        let mut floor = 1;
        match (
            read_number(&state, "epoch"),
            read_number(&state, "sequence"),
        ) {
            (Some(epoch), Some(sequence)) if epoch > 0 => {
                self.epoch = epoch;
                floor = sequence.max(1);
            }
            _ => {
                // A new spool (or an unreadable state): a new epoch.
                replace_file(&state, &format!("epoch={}\nsequence=1\n", self.epoch), true)
                    .map_err(at(&state))?;
            }
        }
        for (i, name) in self.config.destinations.iter().enumerate() {
            if let Some(c) = read_number(&cursor_path(dir, name), "acknowledged") {
                self.cursors[i] = c;
            }
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(at(dir))? {
            let entry = entry.map_err(at(dir))?;
            let name = entry.file_name();
            if let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                found.push(first);
            }
        }
        found.sort_unstable();
        let done = self.cursors.iter().copied().min().unwrap_or(0);
        let mut highest = floor
            .saturating_sub(1)
            .max(self.cursors.iter().copied().max().unwrap_or(0));
        let mut skipped = 0;
        for first in found {
            let path = segment_path(dir, first);
            if !std::fs::metadata(&path).map_err(at(&path))?.is_file() {
                warn!(segment = %path.display(), "spool: not a regular file; skipped");
                continue;
            }
            let read = read_segment(&path).map_err(at(&path))?;
            for problem in &read.problems {
                warn!(segment = %path.display(), %problem, "spool: a damaged record was skipped (vigil_agent_spool_corrupt_records_total)");
            }
            counters.corrupt.fetch_add(read.corrupt, Ordering::Relaxed);
            skipped += read.corrupt;
            highest = highest.max(first.saturating_sub(1));
            for (sequence, closed_ms, offset, len) in read.records {
                highest = highest.max(sequence);
                if sequence <= done || self.entries.back().is_some_and(|e| e.sequence >= sequence) {
                    continue;
                }
                let bytes = HEADER_BYTES + len as u64;
                self.disk_bytes += bytes;
                self.entries.push_back(Entry {
                    sequence,
                    closed_ms,
                    bytes,
                    location: Location::Disk {
                        segment: first,
                        offset,
                        len,
                    },
                });
            }
            self.segments.push_back(Segment { first, path });
        }
        // A record that could not be read may have carried the next number:
        // never hand out a number that a collector may already have seen.
        self.next_sequence = highest + 1 + skipped;
        counters
            .recovered
            .fetch_add(self.entries.len() as u64, Ordering::Relaxed);
        if !self.entries.is_empty() || skipped > 0 {
            info!(
                dir = %dir.display(),
                batches = self.entries.len(),
                bytes = self.disk_bytes,
                damaged_records = skipped,
                next_sequence = self.next_sequence,
                "spool: batches from the last run will be sent first"
            );
        }
        self.collect();
        Ok(())
    }

    /// Adds a batch, on disk when possible.
    fn append(&mut self, request: PushRequest, counters: &SpoolCounters) {
        let sequence = request.sequence;
        let closed_ms = request.timestamp_ms;
        let encoded = request.encoded_len();
        let disk_usable =
            self.config.dir.is_some() && self.disk_failed.is_none_or(|t| t.elapsed() >= DISK_RETRY);
        if disk_usable {
            let len = (encoded + BODY_PREFIX) as u64 + HEADER_BYTES;
            while self.disk_bytes + len > self.config.max_bytes && self.drop_oldest(true, counters)
            {
            }
            match self.write_record(&request, encoded) {
                Ok(location) => {
                    if self.disk_failed.take().is_some() {
                        info!("spool: the disk can be written again");
                    }
                    self.disk_bytes += len;
                    self.entries.push_back(Entry {
                        sequence,
                        closed_ms,
                        bytes: len,
                        location,
                    });
                    return;
                }
                Err(e) => {
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    if self.disk_failed.is_none() {
                        error!(error = %e, max_memory_bytes = self.config.max_memory_bytes, "spool: cannot write to disk; batches are kept in memory until it can (vigil_agent_spool_write_errors_total)");
                    }
                    self.disk_failed = Some(Instant::now());
                    self.active = None;
                }
            }
        }
        let bytes = encoded as u64;
        while self.memory_bytes + bytes > self.config.max_memory_bytes
            && self.drop_oldest(false, counters)
        {}
        self.memory_bytes += bytes;
        self.entries.push_back(Entry {
            sequence,
            closed_ms,
            bytes,
            location: Location::Memory(Arc::new(request)),
        });
    }

    /// Writes one record (`encoded` bytes of batch) to the active segment,
    /// starting one when needed, and syncs it.
    fn write_record(&mut self, request: &PushRequest, encoded: usize) -> Result<Location, String> {
        let dir = self.config.dir.clone().ok_or("no spool folder")?;
        let segment_bytes = self.config.segment_bytes();
        if self
            .active
            .as_ref()
            .is_none_or(|(_, size)| *size >= segment_bytes)
        {
            self.start_segment(&dir, request.sequence)?;
        }
        // The header (length, checksum) is filled in once the body is encoded.
        let mut record = Vec::with_capacity(HEADER_BYTES as usize + BODY_PREFIX + encoded);
        record.extend_from_slice(&[0; HEADER_BYTES as usize]);
        record.extend_from_slice(&request.sequence.to_le_bytes());
        record.extend_from_slice(&request.timestamp_ms.to_le_bytes());
        request.encode(&mut record).map_err(|e| e.to_string())?;
        let body_len = record.len() - HEADER_BYTES as usize;
        let crc = crc32fast::hash(&record[HEADER_BYTES as usize..]);
        record[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let segment = self.segments.back().ok_or("no active segment")?;
        let path = segment.path.clone();
        let first = segment.first;
        let (file, size) = self.active.as_mut().ok_or("no active segment")?;
        let offset = *size + HEADER_BYTES;
        let written = file.write_all(&record).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The caller starts a new segment for the next record; cut what
            // may have been half written here, so a restart reads no torn tail.
            if let Err(cut) = file.set_len(*size) {
                warn!(segment = %path.display(), error = %cut, "spool: cannot cut a failed write; a restart will skip it as damaged");
            }
            return Err(format!("{}: {e}", path.display()));
        }
        *size += record.len() as u64;
        Ok(Location::Disk {
            segment: first,
            offset,
            len: body_len as u32,
        })
    }

    fn start_segment(&mut self, dir: &Path, first: u64) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let state = dir.join("state");
        replace_file(
            &state,
            &format!("epoch={}\nsequence={first}\n", self.epoch),
            true,
        )
        .map_err(|e| format!("{}: {e}", state.display()))?;
        let path = segment_path(dir, first);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        self.active = Some((file, 0));
        self.segments.push_back(Segment { first, path });
        Ok(())
    }

    /// Drops the oldest batch held on disk (`disk`) or in memory; false when none is.
    fn drop_oldest(&mut self, disk: bool, counters: &SpoolCounters) -> bool {
        let Some(i) = self
            .entries
            .iter()
            .position(|e| matches!(e.location, Location::Disk { .. }) == disk)
        else {
            return false;
        };
        let sequence = self.entries[i].sequence;
        let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(100) {
            warn!(
                sequence,
                dropped_total = dropped,
                max_bytes = if disk {
                    self.config.max_bytes
                } else {
                    self.config.max_memory_bytes
                },
                where_ = if disk { "disk" } else { "memory" },
                "spool full: dropped the oldest batch (vigil_agent_spool_dropped_batches_total)"
            );
        }
        self.remove(sequence);
        if i == 0 {
            // Everything up to here is gone for every destination.
            for d in 0..self.cursors.len() {
                if self.cursors[d] < sequence {
                    self.cursors[d] = sequence;
                    self.save_cursor(d);
                }
            }
        }
        self.collect();
        true
    }

    fn remove(&mut self, sequence: u64) {
        if let Some(i) = self.entries.iter().position(|e| e.sequence == sequence)
            && let Some(e) = self.entries.remove(i)
        {
            match e.location {
                Location::Disk { .. } => self.disk_bytes -= e.bytes,
                Location::Memory(_) => self.memory_bytes -= e.bytes,
            }
        }
    }

    /// Forgets batches every destination has, and deletes segments no batch needs.
    fn collect(&mut self) {
        let done = self.cursors.iter().copied().min().unwrap_or(0);
        while self.entries.front().is_some_and(|e| e.sequence <= done) {
            if let Some(e) = self.entries.pop_front() {
                match e.location {
                    Location::Disk { .. } => self.disk_bytes -= e.bytes,
                    Location::Memory(_) => self.memory_bytes -= e.bytes,
                }
            }
        }
        let first_needed = self
            .entries
            .iter()
            .find_map(|e| match e.location {
                Location::Disk { segment, .. } => Some(segment),
                Location::Memory(_) => None,
            })
            .unwrap_or(u64::MAX);
        // Keep the segment being written (always the last); delete older
        // ones that no batch points into.
        while let Some(s) = self.segments.front() {
            let writing = self.active.is_some() && self.segments.len() == 1;
            if writing || s.first >= first_needed {
                break;
            }
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(segment = %s.path.display(), error = %e, "spool: cannot delete a delivered segment");
                    break;
                }
            }
            self.segments.pop_front();
        }
    }

    fn save_cursor(&self, destination: usize) {
        let (Some(dir), Some(name)) = (
            self.config.dir.as_deref(),
            self.config.destinations.get(destination),
        ) else {
            return;
        };
        if self.disk_failed.is_some() {
            return;
        }
        // Not synced: a cursor lost in a power cut only means batches are
        // sent again, and the collector acknowledges them as duplicates.
        let path = cursor_path(dir, name);
        if let Err(e) = replace_file(
            &path,
            &format!("acknowledged={}\n", self.cursors[destination]),
            false,
        ) {
            warn!(file = %path.display(), error = %e, "spool: cannot save a cursor");
        }
    }

    fn load_entry(&self, entry: &Entry) -> Result<PushRequest, String> {
        match &entry.location {
            Location::Memory(request) => Ok(PushRequest::clone(request)),
            Location::Disk {
                segment,
                offset,
                len,
            } => {
                let path = self
                    .segments
                    .iter()
                    .find(|s| s.first == *segment)
                    .map(|s| s.path.clone())
                    .ok_or("its segment is gone")?;
                let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut body = vec![0u8; *len as usize];
                file.read_exact_at(&mut body, *offset)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut request = PushRequest::decode(&body[BODY_PREFIX..])
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                request.sequence = entry.sequence;
                Ok(request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn segment_file(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "spool") {
                return Ok(p);
            }
        }
        Err("no segment".into())
    }

    fn config(dir: &Path, max_bytes: u64, destinations: usize) -> SpoolConfig {
        SpoolConfig {
            dir: Some(dir.to_path_buf()),
            max_bytes,
            max_memory_bytes: 1 << 20,
            destinations: (0..destinations).map(|d| format!("c{d}")).collect(),
        }
    }

    fn batch(payload: usize) -> PushRequest {
        PushRequest {
            agent_id: "x".repeat(payload),
            timestamp_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    fn drain(spool: &Spool, destination: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(b) = spool.peek(destination) {
            out.push(b.sequence);
            spool.acknowledge(destination, b.sequence);
        }
        out
    }

    #[test]
    fn sequences_and_epoch_survive_a_restart() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        let epoch = spool.epoch();
        for _ in 0..5 {
            spool.enqueue(batch(10));
        }
        spool.acknowledge(0, 2);
        drop(spool);
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        assert_eq!(spool.epoch(), epoch);
        assert_eq!(spool.next_sequence(), 6);
        let b = spool.peek(0).ok_or("nothing to send")?;
        assert_eq!(
            (b.sequence, b.request.epoch, b.request.agent_id.len()),
            (3, epoch, 10)
        );
        assert_eq!(drain(&spool, 0), vec![3, 4, 5]);
        drop(spool);
        // Everything delivered: the numbers still go on.
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        assert_eq!(spool.next_sequence(), 6);
        assert!(spool.peek(0).is_none());
        Ok(())
    }

    #[test]
    fn a_corrupt_last_record_is_skipped_and_counted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        for _ in 0..4 {
            spool.enqueue(batch(100));
        }
        drop(spool);
        let segment = segment_file(dir.path())?;
        let mut data = std::fs::read(&segment)?;
        let n = data.len();
        data[n - 3] ^= 0xff;
        std::fs::write(&segment, &data)?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        assert_eq!(spool.counters.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(drain(&spool, 0), vec![1, 2, 3]);
        // The damaged record's number (4) is never handed out again.
        assert_eq!(spool.next_sequence(), 5);
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        for _ in 0..3 {
            spool.enqueue(batch(100));
        }
        drop(spool);
        let segment = segment_file(dir.path())?;
        let data = std::fs::read(&segment)?;
        std::fs::write(&segment, &data[..data.len() - 40])?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        assert_eq!(spool.counters.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(drain(&spool, 0), vec![1, 2]);
        spool.enqueue(batch(100));
        assert_eq!(drain(&spool, 0), vec![4]);
        Ok(())
    }

    #[test]
    fn the_cap_drops_exactly_the_oldest_batches() -> TestResult {
        let dir = tempfile::tempdir()?;
        // One record, with room for the sequence and epoch fields.
        let one = (batch(1000).encoded_len() + BODY_PREFIX) as u64 + HEADER_BYTES + 32;
        let spool = Spool::open(config(dir.path(), one * 10, 1));
        for _ in 0..25 {
            spool.enqueue(batch(1000));
        }
        assert_eq!(spool.counters.dropped.load(Ordering::Relaxed), 15);
        assert!(spool.bytes().0 <= one * 10);
        drop(spool);
        // The drops are remembered across a restart.
        let spool = Spool::open(config(dir.path(), one * 10, 1));
        assert_eq!(drain(&spool, 0), (16..=25).collect::<Vec<_>>());
        let mut on_disk = 0;
        for e in std::fs::read_dir(dir.path())? {
            let e = e?;
            if e.path().extension().is_some_and(|x| x == "spool") {
                on_disk += e.metadata()?.len();
            }
        }
        assert!(on_disk <= one * 10 + (4 << 10), "{on_disk}");
        Ok(())
    }

    #[test]
    fn fanout_destinations_have_their_own_cursors() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 2));
        for _ in 0..3 {
            spool.enqueue(batch(10));
        }
        assert_eq!(drain(&spool, 0), vec![1, 2, 3]);
        assert_eq!(spool.len(), 3, "kept for the second collector");
        assert_eq!(spool.waiting(1), 3);
        spool.acknowledge(1, 1);
        drop(spool);
        let spool = Spool::open(config(dir.path(), 1 << 20, 2));
        assert!(spool.peek(0).is_none());
        assert_eq!(drain(&spool, 1), vec![2, 3]);
        assert!(spool.is_empty());
        Ok(())
    }

    #[test]
    fn a_full_disk_keeps_batches_in_memory() -> TestResult {
        let dir = tempfile::tempdir()?;
        // The first segment's writes fail as on a full disk.
        std::os::unix::fs::symlink("/dev/full", dir.path().join(format!("{:020}.spool", 1)))?;
        let spool = Spool::open(config(dir.path(), 1 << 20, 1));
        assert!(spool.on_disk());
        for _ in 0..3 {
            spool.enqueue(batch(100));
        }
        assert!(!spool.on_disk());
        assert_eq!(spool.counters.write_errors.load(Ordering::Relaxed), 1);
        assert_eq!(spool.bytes().0, 0);
        assert_eq!(drain(&spool, 0), vec![1, 2, 3]);
        Ok(())
    }

    #[test]
    fn an_unwritable_folder_keeps_batches_in_memory() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"x")?;
        let mut c = config(&file, 1 << 20, 1);
        // Room for three batches (sequence and epoch add at most 22 bytes each).
        c.max_memory_bytes = ((batch(1000).encoded_len() + 22) * 3) as u64;
        let spool = Spool::open(c);
        assert!(!spool.on_disk());
        for _ in 0..5 {
            spool.enqueue(batch(1000));
        }
        assert!(spool.counters.write_errors.load(Ordering::Relaxed) >= 1);
        assert_eq!(spool.counters.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(drain(&spool, 0), vec![3, 4, 5]);
        Ok(())
    }
}
