//! A collector served inside a benchmark's process on free 127.0.0.1 ports.

use std::path::Path;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use vigil_collector::{Bound, CollectorError};

/// A running collector: its addresses, and what stops it.
pub struct Served {
    /// Where it listens.
    pub bound: Bound,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), CollectorError>>,
}

/// Starts a collector with its data in `dir`, `ingest` appended to
/// `[ingest]` and `store` to `[store]`; rules without the host-down alert.
pub async fn start(dir: &Path, ingest: &str, store: &str) -> Result<Served> {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n{ingest}\n\
             [store]\ndata_dir = \"{}\"\n{store}\n[rules]\nhost_down = false\n",
            dir.join("data").display()
        ),
    )?;
    let config = vigil_collector::config::load(Some(&path))?;
    let (http, listener, bound) = vigil_collector::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(vigil_collector::serve(
        config,
        http,
        listener,
        shutdown.clone(),
    ));
    Ok(Served {
        bound,
        shutdown,
        task,
    })
}

impl Served {
    /// Stops it and waits for it, at most a minute.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(60), self.task).await???;
        Ok(())
    }
}
