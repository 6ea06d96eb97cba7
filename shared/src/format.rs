//! The version of what a binary keeps on disk. Each data folder has a
//! `FORMAT` file, one line such as `vigil-collector data format 1`:
//!
//! - a folder without one was written before the file existed, which is
//!   format 1; the file is added;
//! - a folder of an older format is read (and the file updated once the
//!   folder is, by the code that knows the change);
//! - a folder of a newer format than this build reads is refused with a
//!   message naming both, so a rollback past a format change stops at start
//!   instead of misreading data;
//! - a folder of the other binary (an agent pointed at a collector's
//!   folder) is refused.
//!
//! The spool's, log's and checkpoint's own records keep their framing; the
//! folder's number says how to read all of them.
//!
//! Each binary also carries the format it writes as text, a *stamp* such as
//! `vigil-collector data format 00000001`, read back at run time (see
//! [`stamped`]): `strings /usr/bin/vigil-collector | grep 'data format'`
//! tells an operator which format a build writes before it runs, so a
//! rollback past a format change can be seen coming; and the upgrade test
//! makes the next format's build by changing those digits.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The file's name in the data folder.
pub const FORMAT_FILE: &str = "FORMAT";

/// Why a data folder cannot be used.
#[derive(Debug, Error)]
pub enum FormatError {
    /// Written by a newer build.
    #[error(
        "data folder {dir} holds {owner} data format {found}, written by a newer build; this build reads format {supported} at most. Run the newer build again, or move the folder aside to start empty (docs/operations.md, \"Upgrades and rollbacks\")"
    )]
    Newer {
        /// The folder.
        dir: PathBuf,
        /// Whose data it is.
        owner: String,
        /// Its format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// Another binary's folder, or a `FORMAT` file that does not parse.
    #[error(
        "data folder {dir}: {FORMAT_FILE} says {text:?}; expected \"{owner} data format N\" (is this another binary's folder?)"
    )]
    Foreign {
        /// The folder.
        dir: PathBuf,
        /// Whose data was expected.
        owner: String,
        /// What the file says.
        text: String,
    },
    /// The binary's own format stamp does not parse (a damaged binary).
    #[error("this binary's data format stamp {stamp:?} is damaged; reinstall it")]
    Stamp {
        /// What the stamp says.
        stamp: String,
    },
    /// The file could not be read or written.
    #[error("data folder {dir}: {FORMAT_FILE}: {source}")]
    Io {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the folder held when it was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// No `FORMAT` file: a new folder, or one from before the file; now
    /// marked with the current format.
    Unmarked,
    /// This format (at most the current one).
    Format(u32),
}

/// The format number in a stamp `b"OWNER data format NNNNNNNN"` (eight
/// decimal digits at the end). Pass the stamp through
/// [`std::hint::black_box`] so the number is read from the binary at run
/// time, not folded in at build time.
pub fn stamped(stamp: &[u8]) -> Result<u32, FormatError> {
    let damaged = || FormatError::Stamp {
        stamp: String::from_utf8_lossy(stamp).into_owned(),
    };
    let digits = stamp
        .len()
        .checked_sub(8)
        .map(|at| &stamp[at..])
        .ok_or_else(damaged)?;
    let number = std::str::from_utf8(digits)
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(damaged)?;
    Ok(number)
}

/// Checks (and marks) `dir` as `owner`'s data in format `current`.
pub fn check(dir: &Path, owner: &str, current: u32) -> Result<Found, FormatError> {
    let path = dir.join(FORMAT_FILE);
    let io = |source| FormatError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let line = text.trim();
            let found = line
                .strip_prefix(owner)
                .and_then(|rest| rest.strip_prefix(" data format "))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .ok_or_else(|| FormatError::Foreign {
                    dir: dir.to_path_buf(),
                    owner: owner.to_string(),
                    text: line.chars().take(80).collect(),
                })?;
            if found > current {
                return Err(FormatError::Newer {
                    dir: dir.to_path_buf(),
                    owner: owner.to_string(),
                    found,
                    supported: current,
                });
            }
            Ok(Found::Format(found))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            mark(dir, owner, current).map_err(io)?;
            Ok(Found::Unmarked)
        }
        Err(e) => Err(io(e)),
    }
}

/// After a folder of an older format was read without error by a build of
/// format `current`: marks it as `current` and logs the upgrade, so that an
/// older build refuses it from now on.
pub fn upgraded(dir: &Path, owner: &str, found: Found, current: u32) -> Result<(), FormatError> {
    if let Found::Format(old) = found
        && old < current
    {
        mark(dir, owner, current).map_err(|source| FormatError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        tracing::info!(
            dir = %dir.display(),
            from = old,
            to = current,
            "data folder upgraded to this build's format; older builds refuse it from now on"
        );
    }
    Ok(())
}

/// Writes the `FORMAT` file (through a temporary file and a rename, so it is
/// never half written).
pub fn mark(dir: &Path, owner: &str, format: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{owner} data format {format}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FORMAT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_marked_then_read_and_a_newer_or_foreign_one_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(check(dir.path(), "vigil-agent", 1)?, Found::Unmarked);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FORMAT_FILE))?,
            "vigil-agent data format 1\n"
        );
        assert_eq!(check(dir.path(), "vigil-agent", 1)?, Found::Format(1));
        // A newer build reads it.
        assert_eq!(check(dir.path(), "vigil-agent", 2)?, Found::Format(1));
        // An older build refuses a newer folder, naming both formats.
        mark(dir.path(), "vigil-agent", 2)?;
        let err = check(dir.path(), "vigil-agent", 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("format 2") && err.contains("format 1 at most"),
            "{err}"
        );
        // The other binary's folder.
        let err = check(dir.path(), "vigil-collector", 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("another binary's folder"), "{err}");
        std::fs::write(dir.path().join(FORMAT_FILE), "garbage")?;
        assert!(check(dir.path(), "vigil-agent", 1).is_err());
        Ok(())
    }

    #[test]
    fn an_older_folder_read_by_a_newer_build_is_marked_with_its_format() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        mark(dir.path(), "vigil-agent", 1)?;
        let found = check(dir.path(), "vigil-agent", 2)?;
        assert_eq!(found, Found::Format(1));
        upgraded(dir.path(), "vigil-agent", found, 2)?;
        assert_eq!(check(dir.path(), "vigil-agent", 2)?, Found::Format(2));
        assert!(check(dir.path(), "vigil-agent", 1).is_err());
        Ok(())
    }

    #[test]
    fn stamps_give_their_number_and_a_damaged_one_is_refused() {
        assert_eq!(stamped(b"vigil-agent data format 00000001").ok(), Some(1));
        assert_eq!(stamped(b"vigil-agent data format 00000012").ok(), Some(12));
        for bad in [
            &b"vigil-agent data format 0000000x"[..],
            b"0000000",
            b"x 00000000",
        ] {
            assert!(stamped(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
