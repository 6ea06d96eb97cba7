//! Filesystem statistics (statvfs) for every mount that is not excluded.
//!
//! statvfs on a dead NFS server can hang for minutes. The calls run on a
//! helper thread, all mounts in one batch, and the batch is waited for at most
//! `filesystem_timeout`; the mount being read when time runs out is marked
//! stuck and skipped until its call returns, and a new helper thread serves
//! the other mounts — node_exporter's stuck-mount rule.

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
    requests: SyncSender<Vec<PathBuf>>,
    done: Receiver<()>,
    results: Arc<Mutex<Vec<Result<FsStats, String>>>>,
}

/// Takes filesystem statistics of every mount in one batch on a helper
/// thread, with one deadline for the batch: two thread wake-ups per sample
/// however many mounts there are.
pub struct FsStatter {
    helper: Option<Helper>,
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
    timeout: Duration,
}

impl FsStatter {
    /// A statter that waits at most `timeout` for all mounts.
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

    /// Statistics for the filesystems mounted at `paths`, in order. Mounts
    /// stuck in an earlier call are skipped; when the batch runs out of time,
    /// the mount being read is marked stuck and the ones after it get no
    /// statistics this time.
    pub fn stat_all(&mut self, paths: &[PathBuf]) -> Vec<Result<FsStats, FsError>> {
        let mut out: Vec<Result<FsStats, FsError>> = Vec::with_capacity(paths.len());
        let todo: Vec<PathBuf> = paths
            .iter()
            .filter(|p| !self.is_stuck(p))
            .cloned()
            .collect();
        let mut results = match self.run_batch(&todo) {
            Ok(results) => results.into_iter(),
            Err(e) => {
                return paths.iter().map(|_| Err(e.clone())).collect();
            }
        };
        for path in paths {
            if self.is_stuck(path) && !todo.contains(path) {
                out.push(Err(FsError::Stuck));
                continue;
            }
            out.push(match results.next() {
                Some(Ok(s)) => Ok(s),
                Some(Err(e)) => Err(FsError::Failed(e)),
                None if self.is_stuck(path) => Err(FsError::Stuck),
                None => Err(FsError::Failed(
                    "not reached: an earlier mount did not answer in time".into(),
                )),
            });
        }
        out
    }

    fn run_batch(&mut self, todo: &[PathBuf]) -> Result<Vec<Result<FsStats, String>>, FsError> {
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let helper = match self.helper.take() {
            Some(h) => h,
            None => self.spawn_helper().map_err(FsError::Failed)?,
        };
        if let Ok(mut r) = helper.results.lock() {
            r.clear();
        }
        if helper.requests.send(todo.to_vec()).is_err() {
            return Err(FsError::Failed("statfs helper thread is gone".into()));
        }
        let finished = helper.done.recv_timeout(self.timeout);
        let results = helper
            .results
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        match finished {
            Ok(()) => {
                self.helper = Some(helper);
            }
            Err(RecvTimeoutError::Timeout) => {
                // Leave the helper to finish on its own; it clears the mark when it does.
                if let (Some(path), Ok(mut s)) = (todo.get(results.len()), self.stuck.lock()) {
                    s.insert(path.clone());
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(FsError::Failed("statfs helper thread is gone".into()));
            }
        }
        Ok(results)
    }

    fn spawn_helper(&self) -> Result<Helper, String> {
        let (requests, request_rx) = sync_channel::<Vec<PathBuf>>(1);
        let (done_tx, done) = sync_channel(1);
        let results = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&results);
        let stuck = Arc::clone(&self.stuck);
        std::thread::Builder::new()
            .name("vigil-statfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while let Ok(paths) = request_rx.recv() {
                    for path in paths {
                        let result = statvfs(&path);
                        // The call returned: if it had been marked stuck, it no longer is.
                        if let Ok(mut s) = stuck.lock()
                            && !s.is_empty()
                        {
                            s.remove(&path);
                        }
                        if let Ok(mut r) = shared.lock() {
                            r.push(result);
                        }
                    }
                    if done_tx.send(()).is_err() {
                        return; // abandoned after a timeout
                    }
                }
            })
            .map_err(|e| format!("cannot start statfs helper thread: {e}"))?;
        Ok(Helper {
            requests,
            done,
            results,
        })
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
    fn mounts_are_read_in_one_batch_and_failures_stay_per_mount() {
        let mut statter = FsStatter::new(Duration::from_secs(5));
        let paths = [
            PathBuf::from("/"),
            PathBuf::from("/no/such/mount"),
            PathBuf::from("/"),
        ];
        let s = statter.stat_all(&paths);
        assert_eq!(s.len(), 3);
        assert!(
            matches!(s[0], Ok(FsStats { size_bytes, .. }) if size_bytes > 0.0),
            "{s:?}"
        );
        assert!(matches!(s[1], Err(FsError::Failed(_))), "{s:?}");
        assert!(s[2].is_ok());
        // The helper is reused for the next sample.
        assert!(statter.stat_all(&paths[..1])[0].is_ok());
    }
}
