//! Filesystem statistics (statvfs) for every mount that is not excluded.
//!
//! statvfs on a dead NFS server can hang for minutes. The call runs on a
//! helper thread and is waited for at most `filesystem_timeout`; a mount that
//! times out is marked stuck and skipped until its call returns, and a new
//! helper thread serves the other mounts — node_exporter's stuck-mount rule.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What statvfs says of one filesystem, in node_exporter's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    /// Total size in bytes.
    pub size_bytes: f64,
    /// Free bytes (root included).
    pub free_bytes: f64,
    /// Bytes available to non-root users.
    pub avail_bytes: f64,
    /// Total inodes.
    pub files: f64,
    /// Free inodes.
    pub files_free: f64,
}

/// Why a filesystem has no statistics this sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    /// statvfs failed (permission, gone).
    Failed(String),
    /// statvfs did not answer in time; the mount is skipped until it does.
    Stuck,
}

struct Helper {
    requests: SyncSender<PathBuf>,
    replies: Receiver<Result<FsStats, String>>,
}

/// Takes filesystem statistics with a deadline per mount.
pub struct FsStatter {
    helper: Option<Helper>,
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
    timeout: Duration,
}

impl FsStatter {
    /// A statter that waits at most `timeout` per mount.
    pub fn new(timeout: Duration) -> Self {
        Self {
            helper: None,
            stuck: Arc::new(Mutex::new(HashSet::new())),
            timeout,
        }
    }

    /// True when `path` is still stuck in an earlier call.
    pub fn is_stuck(&self, path: &Path) -> bool {
        self.stuck.lock().map(|s| s.contains(path)).unwrap_or(false)
    }

    /// Statistics for the filesystem mounted at `path`.
    pub fn stat(&mut self, path: &Path) -> Result<FsStats, FsError> {
        if self.is_stuck(path) {
            return Err(FsError::Stuck);
        }
        let helper = match self.helper.take() {
            Some(h) => h,
            None => self.spawn_helper().map_err(FsError::Failed)?,
        };
        if helper.requests.send(path.to_path_buf()).is_err() {
            return Err(FsError::Failed("statfs helper thread is gone".into()));
        }
        match helper.replies.recv_timeout(self.timeout) {
            Ok(result) => {
                self.helper = Some(helper);
                result.map_err(FsError::Failed)
            }
            Err(RecvTimeoutError::Timeout) => {
                // Leave the helper to finish on its own; it clears the mark when it does.
                if let Ok(mut s) = self.stuck.lock() {
                    s.insert(path.to_path_buf());
                }
                Err(FsError::Stuck)
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(FsError::Failed("statfs helper thread is gone".into()))
            }
        }
    }

    fn spawn_helper(&self) -> Result<Helper, String> {
        let (requests, request_rx) = sync_channel::<PathBuf>(1);
        let (reply_tx, replies) = sync_channel(1);
        let stuck = Arc::clone(&self.stuck);
        std::thread::Builder::new()
            .name("vigil-statfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while let Ok(path) = request_rx.recv() {
                    let result = statvfs(&path);
                    if reply_tx.send(result).is_err() {
                        // Abandoned after a timeout: the call has returned, so
                        // the mount is no longer stuck.
                        if let Ok(mut s) = stuck.lock() {
                            s.remove(&path);
                        }
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start statfs helper thread: {e}"))?;
        Ok(Helper { requests, replies })
    }
}

fn statvfs(path: &Path) -> Result<FsStats, String> {
    let s = rustix::fs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let unit = s.f_frsize as f64;
    Ok(FsStats {
        size_bytes: s.f_blocks as f64 * unit,
        free_bytes: s.f_bfree as f64 * unit,
        avail_bytes: s.f_bavail as f64 * unit,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_filesystem_has_a_size() {
        let mut statter = FsStatter::new(Duration::from_secs(5));
        let s = statter.stat(Path::new("/"));
        assert!(
            matches!(s, Ok(FsStats { size_bytes, .. }) if size_bytes > 0.0),
            "{s:?}"
        );
        // The helper is reused for the next mount.
        assert!(statter.stat(Path::new("/")).is_ok());
        assert!(matches!(
            statter.stat(Path::new("/no/such/mount")),
            Err(FsError::Failed(_))
        ));
    }
}
