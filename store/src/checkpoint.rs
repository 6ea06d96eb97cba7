//! Checkpoints keep restart time bounded: the whole store (latest state,
//! agents' sequence numbers, history chunks as they are compressed, window
//! histograms) written to `DATA_DIR/checkpoint` every
//! `store.checkpoint_interval` and at a clean shutdown. A checkpoint names
//! the first write-ahead-log segment it does not cover; older segments are
//! deleted once it is safely on disk, so a restart reads the checkpoint and
//! replays only the log written since.
//!
//! The file is the checkpoint's protobuf encoding behind a CRC-32 and its
//! length; it is written to `checkpoint.tmp`, synced, and renamed, so a crash
//! while writing leaves the previous checkpoint in place.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use prost::Message;

/// A label pair.
#[derive(Clone, PartialEq, Message)]
pub struct CpLabel {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One latest-state series.
#[derive(Clone, PartialEq, Message)]
pub struct CpSeries {
    /// Rendered labels.
    #[prost(string, tag = "1")]
    pub labels_text: String,
    /// Last value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Cumulative bucket counts (histograms).
    #[prost(uint64, repeated, tag = "3")]
    pub buckets: Vec<u64>,
    /// Cumulative sum.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Cumulative count.
    #[prost(uint64, tag = "5")]
    pub count: u64,
    /// True for a histogram series.
    #[prost(bool, tag = "6")]
    pub cumulative: bool,
    /// Last update, Unix ms.
    #[prost(int64, tag = "7")]
    pub updated: i64,
    /// Agent index.
    #[prost(uint32, tag = "8")]
    pub agent: u32,
}

/// One latest-state family.
#[derive(Clone, PartialEq, Message)]
pub struct CpFamily {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Help.
    #[prost(string, tag = "2")]
    pub help: String,
    /// Kind (0 counter, 1 gauge, 2 untyped, 3 histogram).
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    /// Bucket bounds.
    #[prost(double, repeated, tag = "4")]
    pub bounds: Vec<f64>,
    /// Series.
    #[prost(message, repeated, tag = "5")]
    pub series: Vec<CpSeries>,
}

/// One agent's state.
#[derive(Clone, PartialEq, Message)]
pub struct CpAgent {
    /// Agent id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Index.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// Epoch.
    #[prost(uint64, tag = "3")]
    pub epoch: u64,
    /// Last applied sequence.
    #[prost(uint64, tag = "4")]
    pub last_sequence: u64,
    /// Last push, Unix ms.
    #[prost(int64, tag = "5")]
    pub last_push: i64,
    /// Flush interval.
    #[prost(int64, tag = "6")]
    pub flush_interval_ms: i64,
    /// History series of its last batch.
    #[prost(uint32, repeated, tag = "7")]
    pub last_series: Vec<u32>,
    /// Marked stale for silence.
    #[prost(bool, tag = "8")]
    pub silenced: bool,
    /// Stopped cleanly: not reported as down.
    #[prost(bool, tag = "9")]
    pub deregistered: bool,
}

/// One compressed chunk.
#[derive(Clone, PartialEq, Message)]
pub struct CpChunk {
    /// Encoded bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub bytes: Vec<u8>,
    /// Samples.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Encoding: 0 XOR (Gorilla), 1 + e decimals scaled by 10^e.
    #[prost(uint32, tag = "3")]
    pub encoding: u32,
}

/// One history series, its id kept.
#[derive(Clone, PartialEq, Message)]
pub struct CpHistorySeries {
    /// Series id.
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "2")]
    pub labels: Vec<CpLabel>,
    /// Chunks, oldest first; the last one is the head.
    #[prost(message, repeated, tag = "3")]
    pub chunks: Vec<CpChunk>,
}

/// One stored window histogram.
#[derive(Clone, PartialEq, Message)]
pub struct CpWindow {
    /// When it ended.
    #[prost(int64, tag = "1")]
    pub end_ms: i64,
    /// Scale.
    #[prost(double, tag = "2")]
    pub scale: f64,
    /// Samples.
    #[prost(uint64, tag = "3")]
    pub count: u64,
    /// HDR V2 + deflate.
    #[prost(bytes = "vec", tag = "4")]
    pub hdr: Vec<u8>,
}

/// One windowed series' histograms.
#[derive(Clone, PartialEq, Message)]
pub struct CpWindowSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<CpLabel>,
    /// Windows, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub windows: Vec<CpWindow>,
}

/// A whole checkpoint.
#[derive(Clone, PartialEq, Message)]
pub struct Checkpoint {
    /// The first write-ahead-log segment not covered.
    #[prost(uint32, tag = "1")]
    pub wal_segment: u32,
    /// When it was taken, Unix ms.
    #[prost(int64, tag = "2")]
    pub created_ms: i64,
    /// Latest state.
    #[prost(message, repeated, tag = "3")]
    pub families: Vec<CpFamily>,
    /// Agents.
    #[prost(message, repeated, tag = "4")]
    pub agents: Vec<CpAgent>,
    /// History.
    #[prost(message, repeated, tag = "5")]
    pub history: Vec<CpHistorySeries>,
    /// Window histograms.
    #[prost(message, repeated, tag = "6")]
    pub windows: Vec<CpWindowSeries>,
}

const FILE: &str = "checkpoint";

/// Writes `checkpoint` into `dir` atomically; returns its size in bytes.
pub fn write(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let body = checkpoint.encode_to_vec();
    let tmp = dir.join("checkpoint.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&crc32fast::hash(&body).to_le_bytes())?;
        f.write_all(&(body.len() as u64).to_le_bytes())?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(body.len() as u64 + 12)
}

/// Reads the checkpoint in `dir`, if there is one.
pub fn read(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let (crc, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("{}: too short", path.display()))?;
    let (len, body) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| format!("{}: too short", path.display()))?;
    if u64::from_le_bytes(*len) != body.len() as u64 {
        return Err(format!(
            "{}: length does not match (a torn write)",
            path.display()
        ));
    }
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    Checkpoint::decode(body)
        .map(Some)
        .map_err(|e| format!("{}: does not decode: {e}", path.display()))
}
