//! The write-ahead log: every batch the collector accepts is appended here,
//! and synced, before it is applied and acknowledged, so that a crash
//! (SIGKILL, power loss) loses nothing an agent was told is safe. On start the
//! log is replayed into the store.
//!
//! Layout: `DATA_DIR/wal/00000001.wal`, `00000002.wal`, …; a new segment is
//! started when one reaches [`SEGMENT_BYTES`]. A record is the time the batch
//! was received (i64 milliseconds, LE) followed by the batch's protobuf
//! encoding, framed as `[length u32 LE][crc32 u32 LE][bytes]`. A torn
//! or corrupt record at the end of the last segment (a crash mid-write) is
//! reported and cut off; one anywhere else ends the replay of that segment
//! and is reported, never fatal.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use thiserror::Error;
use vigil_shared::proto::PushRequest;

/// Size at which a segment is closed and a new one started.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Largest record accepted on replay (a larger length is corruption).
const MAX_RECORD_BYTES: u32 = 1 << 30;

/// The log could not be opened or written.
#[derive(Debug, Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Batches in the order they were written, with the time each was received.
    pub batches: Vec<(i64, PushRequest)>,
    /// Each batch's position in the log, as [`Wal::log_position`] gave it
    /// when the batch was appended.
    pub positions: Vec<u64>,
    /// Problems found (torn tails, corrupt records), one line each.
    pub problems: Vec<String>,
    /// Segments read.
    pub segments: usize,
    /// Bytes read.
    pub bytes: u64,
}

/// When appended batches are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before the batch is acknowledged; concurrent pushes share one sync
    /// (group commit). Nothing acknowledged is lost, even to a power cut.
    Always,
    /// Every this often, in the background; a batch is acknowledged once it
    /// is written. A process kill loses nothing; a power cut may lose up to
    /// one interval of acknowledged batches.
    Interval(std::time::Duration),
}

/// Syncs the log for many pushes at once: a push waits until the log is
/// synced at least up to its own record; the first waiter syncs for all the
/// records written so far, and the others find their record already synced.
#[derive(Debug, Default)]
pub struct GroupCommit {
    synced: std::sync::Mutex<u64>,
    broken: std::sync::atomic::AtomicBool,
}

impl GroupCommit {
    /// Returns once everything up to log position `position` is on disk;
    /// true when this call did the sync.
    /// After a failed sync the log is marked broken for good: the page cache
    /// may have dropped the data, so nothing can be acknowledged any more
    /// until the collector is restarted and replays what the disk holds.
    pub fn sync_through(
        &self,
        wal: &std::sync::Mutex<Wal>,
        position: u64,
    ) -> Result<bool, WalError> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *synced >= position {
            return Ok(false);
        }
        let (file, end, path) = {
            let w = wal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                std::sync::Arc::clone(&w.file),
                w.position,
                segment_path(&w.dir, w.segment),
            )
        };
        if let Err(e) = file.sync_data() {
            self.broken
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(io_error(&path)(e));
        }
        *synced = end;
        Ok(true)
    }

    /// How far the log is known to be on disk.
    pub fn synced_position(&self) -> u64 {
        *self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True after a sync failed.
    pub fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Writes `head` then `body` to `file`, with as few calls as the kernel
/// allows (one, as a rule).
fn write_both(file: &File, head: &[u8], body: &[u8]) -> io::Result<()> {
    let total = head.len() + body.len();
    let mut done = 0usize;
    while done < total {
        let result = if done < head.len() {
            (&*file).write_vectored(&[io::IoSlice::new(&head[done..]), io::IoSlice::new(body)])
        } else {
            (&*file).write(&body[done - head.len()..])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An open write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment: u32,
    file: std::sync::Arc<File>,
    written: u64,
    /// Bytes appended since the log was opened, across segments.
    position: u64,
    /// Closed segments and the newest receive time each holds.
    closed: Vec<(u32, i64)>,
    /// The newest receive time in the current segment.
    newest: i64,
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.wal"))
}

fn segments(dir: &Path) -> Result<Vec<u32>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A place in the log that stays the same across restarts: the segment
/// number, then the byte offset in it after a record.
fn log_position(segment: u32, offset: u64) -> u64 {
    (u64::from(segment) << 32) | (offset & 0xffff_ffff)
}

/// Reads one segment's records; returns the byte offset after the last good record.
fn read_segment(path: &Path, segment: u32, replay: &mut Replay) -> Result<u64, WalError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut reader, &mut header) {
            Ok(0) => return Ok(offset),
            Ok(8) => {}
            Ok(_) => {
                replay.problems.push(format!(
                    "{}: torn record header at byte {offset}",
                    path.display()
                ));
                return Ok(offset);
            }
            Err(e) => return Err(io_error(path)(e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES {
            replay.problems.push(format!(
                "{}: impossible record length {len} at byte {offset}",
                path.display()
            ));
            return Ok(offset);
        }
        payload.resize(len as usize, 0);
        match read_full(&mut reader, &mut payload) {
            Ok(n) if n == len as usize => {}
            Ok(_) => {
                replay
                    .problems
                    .push(format!("{}: torn record at byte {offset}", path.display()));
                return Ok(offset);
            }
            Err(e) => return Err(io_error(path)(e)),
        }
        if crc32fast::hash(&payload) != crc {
            replay.problems.push(format!(
                "{}: checksum mismatch at byte {offset}",
                path.display()
            ));
            return Ok(offset);
        }
        let decoded = payload
            .split_first_chunk::<8>()
            .ok_or_else(|| "shorter than its timestamp".to_string())
            .and_then(|(t, rest)| {
                PushRequest::decode(rest)
                    .map(|b| (i64::from_le_bytes(*t), b))
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(batch) => {
                replay.batches.push(batch);
                replay
                    .positions
                    .push(log_position(segment, offset + 8 + u64::from(len)));
            }
            Err(e) => {
                replay.problems.push(format!(
                    "{}: record at byte {offset} does not decode: {e}",
                    path.display()
                ));
                return Ok(offset);
            }
        }
        offset += 8 + u64::from(len);
        replay.bytes += 8 + u64::from(len);
    }
}

/// Reads until `buf` is full or the end; returns bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, replays what it holds
    /// from segment `from` on (older ones, covered by a checkpoint, are
    /// deleted), cuts a torn tail off the last segment, and starts a new
    /// segment. Appends are not synced: see [`GroupCommit`].
    pub fn open(dir: &Path, from: u32) -> Result<(Self, Replay), WalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut existing = segments(dir)?;
        for n in existing.iter().filter(|n| **n < from) {
            let path = segment_path(dir, *n);
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        existing.retain(|n| *n >= from);
        let mut replay = Replay::default();
        let mut closed = Vec::new();
        for (i, n) in existing.iter().enumerate() {
            let path = segment_path(dir, *n);
            // A segment started by a run that then wrote nothing.
            if std::fs::metadata(&path).map_err(io_error(&path))?.len() == 0 {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            let before = replay.batches.len();
            let good = read_segment(&path, *n, &mut replay)?;
            replay.segments += 1;
            let newest = replay.batches[before..]
                .iter()
                .map(|(t, _)| *t)
                .max()
                .unwrap_or(i64::MIN);
            closed.push((*n, newest));
            let last = i + 1 == existing.len();
            let size = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            if last && good < size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                f.set_len(good).map_err(io_error(&path))?;
                f.sync_all().map_err(io_error(&path))?;
            }
        }
        let segment = existing.last().map(|n| n + 1).unwrap_or(1).max(from);
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        sync_dir(dir)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                segment,
                file: std::sync::Arc::new(file),
                written: 0,
                position: 0,
                closed,
                newest: i64::MIN,
            },
            replay,
        ))
    }

    /// Appends one batch received at `received_ms`; when this returns, the
    /// batch survives a process kill, and once [`GroupCommit::sync_through`]
    /// has passed the returned position, a power cut too.
    pub fn append(&mut self, batch: &PushRequest, received_ms: i64) -> Result<u64, WalError> {
        self.append_encoded(&batch.encode_to_vec(), received_ms)
    }

    /// [`Wal::append`] for a batch already encoded (`PushRequest` bytes,
    /// as an agent sent them).
    pub fn append_encoded(&mut self, batch: &[u8], received_ms: i64) -> Result<u64, WalError> {
        if self.written >= SEGMENT_BYTES {
            self.roll()?;
        }
        let payload_len = batch.len() + 8;
        let length = u32::try_from(payload_len).map_err(|_| WalError::Io {
            path: self.dir.clone(),
            source: io::Error::other("batch larger than 4 GiB"),
        })?;
        // The header and the batch go in one vectored write: the batch is
        // not copied into a record first.
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&length.to_le_bytes());
        header[8..16].copy_from_slice(&received_ms.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[8..16]);
        crc.update(batch);
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        let path = segment_path(&self.dir, self.segment);
        write_both(&self.file, &header, batch).map_err(io_error(&path))?;
        let record_len = (header.len() + batch.len()) as u64;
        self.written += record_len;
        self.position += record_len;
        self.newest = self.newest.max(received_ms);
        Ok(self.position)
    }

    /// Where the last appended batch ends, as a position that stays the same
    /// across restarts (segment number and offset; [`Replay::positions`]
    /// gives the same for a replayed batch). Positions only grow.
    pub fn log_position(&self) -> u64 {
        log_position(self.segment, self.written)
    }

    /// Deletes the oldest closed segments whose every batch was received
    /// before `cutoff_ms` (older than the retention), in order, stopping at the
    /// first newer one; returns how many.
    pub fn remove_before(&mut self, cutoff_ms: i64) -> Result<usize, WalError> {
        self.remove_oldest_while(|_, newest| newest < cutoff_ms)
    }

    /// Closes the current segment and starts a new one; returns the new
    /// segment's number. Everything appended before is in older segments.
    pub fn start_segment(&mut self) -> Result<u32, WalError> {
        self.roll()?;
        Ok(self.segment)
    }

    /// Deletes every closed segment numbered below `segment` (covered by a
    /// checkpoint); returns how many.
    pub fn remove_below(&mut self, segment: u32) -> Result<usize, WalError> {
        self.remove_oldest_while(|n, _| n < segment)
    }

    /// Deletes closed segments, oldest first, while `remove(number, newest)` says so.
    fn remove_oldest_while(
        &mut self,
        remove: impl Fn(u32, i64) -> bool,
    ) -> Result<usize, WalError> {
        let mut removed = 0;
        while let Some(&(n, newest)) = self.closed.first() {
            if !remove(n, newest) {
                break;
            }
            let path = segment_path(&self.dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
            self.closed.remove(0);
            removed += 1;
        }
        Ok(removed)
    }

    fn roll(&mut self) -> Result<(), WalError> {
        // The closed segment is complete on disk before the next one starts.
        self.file
            .sync_data()
            .map_err(io_error(&segment_path(&self.dir, self.segment)))?;
        self.closed.push((self.segment, self.newest));
        self.newest = i64::MIN;
        self.segment += 1;
        let path = segment_path(&self.dir, self.segment);
        self.file = std::sync::Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?,
        );
        sync_dir(&self.dir)?;
        self.written = 0;
        Ok(())
    }

    /// Bytes written to the current segment.
    pub fn segment_bytes(&self) -> u64 {
        self.written
    }

    /// Bytes appended since the log was opened.
    pub fn position(&self) -> u64 {
        self.position
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64) -> PushRequest {
        PushRequest {
            agent_id: "a".into(),
            epoch: 1,
            sequence,
            ..Default::default()
        }
    }

    #[test]
    fn appended_batches_replay_in_order() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut wal, replay) = Wal::open(dir.path(), 0)?;
            assert!(replay.batches.is_empty());
            for s in 1..=5 {
                wal.append(&batch(s), 7)?;
            }
        }
        let (mut wal, replay) = Wal::open(dir.path(), 0)?;
        let seqs: Vec<u64> = replay.batches.iter().map(|(_, b)| b.sequence).collect();
        assert!(replay.batches.iter().all(|(t, _)| *t == 7));
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert!(replay.problems.is_empty());
        wal.append(&batch(6), 7)?;
        let (_, replay) = Wal::open(dir.path(), 0)?;
        assert_eq!(replay.batches.len(), 6);
        assert_eq!(replay.segments, 2);
        Ok(())
    }

    #[test]
    fn one_sync_covers_every_record_written_before_it() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (wal, _) = Wal::open(dir.path(), 0)?;
        let wal = std::sync::Mutex::new(wal);
        let commit = GroupCommit::default();
        let first = wal.lock().map_err(|_| "poisoned")?.append(&batch(1), 7)?;
        let second = wal.lock().map_err(|_| "poisoned")?.append(&batch(2), 7)?;
        assert!(second > first);
        // The second push syncs; the first, arriving late, finds its record synced.
        assert!(commit.sync_through(&wal, second)?);
        assert!(!commit.sync_through(&wal, first)?);
        assert!(!commit.is_broken());
        Ok(())
    }

    #[test]
    fn segments_past_retention_are_removed() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut wal, _) = Wal::open(dir.path(), 0)?;
            wal.append(&batch(1), 1_000)?;
        }
        {
            let (mut wal, _) = Wal::open(dir.path(), 0)?;
            wal.append(&batch(2), 5_000)?;
        }
        let (mut wal, replay) = Wal::open(dir.path(), 0)?;
        assert_eq!(replay.batches.len(), 2);
        assert_eq!(wal.remove_before(2_000)?, 1);
        assert_eq!(wal.remove_before(2_000)?, 0);
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0)?;
        let seqs: Vec<u64> = replay.batches.iter().map(|(_, b)| b.sequence).collect();
        assert_eq!(seqs, [2]);
        Ok(())
    }

    #[test]
    fn torn_tail_is_cut_and_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut wal, _) = Wal::open(dir.path(), 0)?;
            wal.append(&batch(1), 7)?;
            wal.append(&batch(2), 7)?;
        }
        // A crash in the middle of the second record.
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path)?.len();
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(len - 3)?;
        drop(f);
        let (_, replay) = Wal::open(dir.path(), 0)?;
        assert_eq!(replay.batches.len(), 1);
        assert_eq!(replay.problems.len(), 1, "{:?}", replay.problems);
        assert!(replay.problems[0].contains("torn record"));
        Ok(())
    }

    #[test]
    fn flipped_bit_is_caught_by_the_checksum() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let (mut wal, _) = Wal::open(dir.path(), 0)?;
            wal.append(&batch(1), 7)?;
        }
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes)?;
        let (_, replay) = Wal::open(dir.path(), 0)?;
        assert!(replay.batches.is_empty());
        assert!(
            replay.problems[0].contains("checksum mismatch"),
            "{:?}",
            replay.problems
        );
        Ok(())
    }
}
