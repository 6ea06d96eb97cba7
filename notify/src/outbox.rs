//! The durable outbox: every notification is written to
//! `DATA_DIR/notify/outbox/` (written to a temporary file, synced, renamed,
//! the folder synced) before it is sent, and removed only when its receiver
//! has answered 2xx, refused it for good, or it expired. A SIGKILL at any
//! moment loses none: after a restart the collector sends what is there,
//! with the same idempotency key, so a receiver that already got it can
//! drop the copy.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dispatch::Notification;

/// A notification waiting in the outbox, with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The notification.
    pub notification: Notification,
    /// Tries so far.
    pub attempts: u32,
    /// Not before this time (ms).
    pub next_attempt_ms: i64,
    /// The last failure, for the log and the status page.
    pub last_error: Option<String>,
    /// When the first try failed (ms).
    #[serde(default)]
    pub first_failure_ms: Option<i64>,
    /// True once handed to the route's fallback receiver.
    #[serde(default)]
    pub fell_back: bool,
}

/// The outbox folder and what it holds.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    pending: BTreeMap<String, Pending>,
}

fn file_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` and reads what a previous run
    /// left. Files that do not parse (a torn write cannot happen, since
    /// files are renamed into place, but a disk can fail) are moved aside
    /// to `*.bad` and reported.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<String>)> {
        std::fs::create_dir_all(dir)?;
        let mut pending = BTreeMap::new();
        let mut problems = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Pending>(&b).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    pending.insert(p.notification.id.clone(), p);
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                pending,
            },
            problems,
        ))
    }

    /// Writes a pending notification durably (new, or with a new state).
    pub fn put(&mut self, p: Pending) -> std::io::Result<()> {
        let name = file_name(&p.notification.id);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&p).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(&name))?;
        sync_dir(&self.dir)?;
        self.pending.insert(p.notification.id.clone(), p);
        Ok(())
    }

    /// Removes a notification that is done with.
    pub fn remove(&mut self, id: &str) -> std::io::Result<()> {
        self.pending.remove(id);
        match std::fs::remove_file(self.dir.join(file_name(id))) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One notification's current state.
    pub fn get(&self, id: &str) -> Option<Pending> {
        self.pending.get(id).cloned()
    }

    /// Notifications due at `now`, oldest first.
    pub fn due(&self, now: i64) -> Vec<Pending> {
        let mut due: Vec<Pending> = self
            .pending
            .values()
            .filter(|p| p.next_attempt_ms <= now)
            .cloned()
            .collect();
        due.sort_by_key(|p| (p.notification.created_ms, p.notification.id.clone()));
        due
    }

    /// When the next one is due.
    pub fn next_due(&self) -> Option<i64> {
        self.pending.values().map(|p| p.next_attempt_ms).min()
    }

    /// Notifications held, per receiver.
    pub fn depth(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in self.pending.values() {
            *out.entry(p.notification.receiver.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Notifications held.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(id: &str, created: i64) -> Notification {
        Notification {
            id: id.into(),
            receiver: "hook".into(),
            webhook: 0,
            group_key: "{}:{}".into(),
            body: "{}".into(),
            created_ms: created,
            fired_at: vec![],
            fallback: None,
            alerts: vec![],
            group_labels: Default::default(),
        }
    }

    #[test]
    fn what_is_put_survives_a_reopen_until_removed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (mut o, problems) = Outbox::open(dir.path())?;
        assert!(problems.is_empty());
        for (id, t) in [("b", 2), ("a", 1)] {
            o.put(Pending {
                notification: notification(id, t),
                attempts: 0,
                next_attempt_ms: 0,
                last_error: None,
                first_failure_ms: None,
                fell_back: false,
            })?;
        }
        std::fs::write(dir.path().join("broken.json"), b"{")?;
        drop(o);
        let (mut o, problems) = Outbox::open(dir.path())?;
        assert_eq!(problems.len(), 1, "the broken file is reported");
        assert!(dir.path().join("broken.bad").exists());
        let ids: Vec<String> = o.due(0).into_iter().map(|p| p.notification.id).collect();
        assert_eq!(ids, ["a", "b"], "oldest first");
        o.remove("a")?;
        let (o, _) = Outbox::open(dir.path())?;
        assert_eq!(o.len(), 1);
        Ok(())
    }
}
