//! One process per data folder. A collector's write-ahead log and an
//! agent's spool are written by exactly one process; a second one on the
//! same folder would interleave records and lose acknowledged data. The
//! first process holds an exclusive `flock` on `DIR/LOCK` (holding its PID,
//! for the error a second one prints) until it exits; the kernel releases
//! the lock when the process dies, however it dies, so a crash never leaves
//! a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use thiserror::Error;

/// The lock file's name inside the data folder.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data folder could not be locked.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{dir} is in use by another process{holder}: one process per data folder (stop it, or give this one another folder)",
        dir = .dir.display(),
        holder = .pid.as_deref().map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Held {
        /// The folder.
        dir: PathBuf,
        /// The holder's PID, as it wrote it.
        pid: Option<String>,
    },
    /// The folder or the lock file could not be created or opened.
    #[error("cannot lock {dir}: {source}", dir = .dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An exclusive lock on a data folder, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: (!pid.is_empty()).then(|| pid.to_string()),
                });
            }
            return Err(io(e.into()));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_naming_the_holder() -> Result<(), LockError> {
        let dir = std::env::temp_dir().join(format!("vigil-lock-test-{}", std::process::id()));
        let first = DirLock::acquire(&dir)?;
        // flock locks belong to the open file: a second open in the same
        // process conflicts just as another process's would.
        let second = DirLock::acquire(&dir).err().map(|e| e.to_string());
        assert_eq!(
            second,
            Some(format!(
                "{} is in use by another process (PID {}): one process per data folder (stop it, or give this one another folder)",
                dir.display(),
                std::process::id()
            ))
        );
        drop(first);
        let again = DirLock::acquire(&dir)?;
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
