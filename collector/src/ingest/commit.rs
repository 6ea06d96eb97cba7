//! Group commit for `wal_fsync = "always"` without a thread per waiting
//! push: a push that has logged its batch asks for the log to be synced up
//! to its record and awaits the answer; one thread (`vigil-wal-sync`) syncs
//! for every push waiting at the time, then publishes how far the log is on
//! disk. Pushes that arrive during a sync share the next one, and the
//! thread waits a little for more while they keep coming ([`GATHER_MAX`]).
//!
//! Before this, each push waited on a blocking-pool thread, and every wait
//! was a thread hand-off; a profile of 100 agents pushing showed a quarter
//! of the collector's CPU in the scheduler (BENCHMARKS.md, "Ingest per
//! core").

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vigil_store::wal::{GroupCommit, Wal};

use super::IngestMetrics;

/// How far the log is synced, and whether a sync failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Synced {
    position: u64,
    broken: bool,
}

struct Shared {
    wal: Arc<Mutex<Wal>>,
    commit: Arc<GroupCommit>,
    metrics: Arc<IngestMetrics>,
    /// The highest log position a push waits for.
    requested: Mutex<u64>,
    wake: Condvar,
    synced: watch::Sender<Synced>,
}

/// Syncs the log for pushes that wait for it.
pub struct Syncer {
    shared: Arc<Shared>,
}

/// A sync failed: the log may have lost what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncFailed;

impl Syncer {
    /// Starts the sync thread; it ends within a second of the last
    /// [`Syncer`] being dropped.
    pub fn start(
        wal: Arc<Mutex<Wal>>,
        commit: Arc<GroupCommit>,
        metrics: Arc<IngestMetrics>,
    ) -> std::io::Result<Self> {
        let (synced, _) = watch::channel(Synced::default());
        let shared = Arc::new(Shared {
            wal,
            commit,
            metrics,
            requested: Mutex::new(0),
            wake: Condvar::new(),
            synced,
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("vigil-wal-sync".into())
            .spawn(move || run(&worker))?;
        Ok(Self { shared })
    }

    /// Returns once the log is on disk up to `position`.
    pub async fn wait(&self, position: u64) -> Result<(), SyncFailed> {
        let mut synced = self.shared.synced.subscribe();
        if synced.borrow().position >= position {
            return Ok(());
        }
        {
            let mut requested = self
                .shared
                .requested
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *requested = (*requested).max(position);
        }
        self.shared.wake.notify_one();
        match synced
            .wait_for(|s| s.position >= position || s.broken)
            .await
        {
            Ok(s) if s.position >= position => Ok(()),
            _ => Err(SyncFailed),
        }
    }
}

/// How long the sync thread waits for more pushes before a sync, in steps.
const GATHER_STEP: Duration = Duration::from_micros(500);
/// At most this long in all.
const GATHER_MAX: Duration = Duration::from_millis(5);

/// Lets concurrent pushes join the coming sync: waits while pushes keep
/// asking for one, a step at a time, up to [`GATHER_MAX`]. A lone push
/// waits one step; 100 agents pushing at once share each sync about 20 at
/// a time instead of 2, and each sync costs the collector CPU
/// (BENCHMARKS.md, "Ingest per core").
fn gather(shared: &Shared, mut seen: u64) {
    let started = std::time::Instant::now();
    while started.elapsed() < GATHER_MAX {
        std::thread::sleep(GATHER_STEP);
        let now = *shared
            .requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now == seen {
            return;
        }
        seen = now;
    }
}

fn run(shared: &Arc<Shared>) {
    let mut done = 0u64;
    loop {
        let target = {
            let mut requested = shared
                .requested
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if *requested > done {
                    break *requested;
                }
                // Nobody else holds the syncer: the collector stopped.
                if Arc::strong_count(shared) == 1 {
                    return;
                }
                requested = shared
                    .wake
                    .wait_timeout(requested, Duration::from_secs(1))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        };
        gather(shared, target);
        match shared.commit.sync_through(&shared.wal, target) {
            Ok(did) => {
                shared.metrics.wal_appended_sync_only(did);
                done = shared.commit.synced_position().max(target);
                shared.synced.send_replace(Synced {
                    position: done,
                    broken: false,
                });
            }
            Err(e) => {
                // Each push refused for it is counted where it is refused.
                tracing::error!(error = %e, "cannot sync the write-ahead log; pushes are refused until the collector is restarted");
                shared.synced.send_replace(Synced {
                    position: done,
                    broken: true,
                });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_share_syncs_and_end_when_synced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (wal, _) = Wal::open(dir.path(), 0).expect("log opens");
        let wal = Arc::new(Mutex::new(wal));
        let commit = Arc::new(GroupCommit::default());
        let metrics = Arc::new(IngestMetrics::default());
        let syncer = Arc::new(
            Syncer::start(Arc::clone(&wal), Arc::clone(&commit), Arc::clone(&metrics))
                .expect("thread starts"),
        );
        let mut positions = Vec::new();
        for i in 0..20 {
            let batch = vigil_shared::proto::PushRequest {
                agent_id: format!("a{i}"),
                ..Default::default()
            };
            let position = wal
                .lock()
                .expect("log lock")
                .append(&batch, 1)
                .expect("append");
            positions.push(position);
        }
        let mut waits = tokio::task::JoinSet::new();
        for p in positions.clone() {
            let syncer = Arc::clone(&syncer);
            waits.spawn(async move { syncer.wait(p).await });
        }
        while let Some(done) = waits.join_next().await {
            assert_eq!(done.expect("task"), Ok(()));
        }
        assert!(commit.synced_position() >= *positions.last().expect("positions"));
        let syncs = metrics.wal_syncs.load(std::sync::atomic::Ordering::Relaxed);
        assert!((1..=20).contains(&syncs), "{syncs} syncs for 20 waits");
        // Already synced: no new sync.
        assert_eq!(syncer.wait(positions[0]).await, Ok(()));
        assert_eq!(
            metrics.wal_syncs.load(std::sync::atomic::Ordering::Relaxed),
            syncs
        );
    }
}
