//! Ingest throughput under the two write-ahead-log sync policies: `AGENTS`
//! concurrent agents (default 50) each push `BATCHES` batches (default 40) of
//! `SERIES` gauges (default 400) one after another to a collector on
//! 127.0.0.1, as agents replaying a backlog after an outage do. Prints pushes
//! per second and how many syncs the log did for how many appends.
//!
//!     cargo bench -p vigil-collector --bench ingest

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/push.rs"]
mod push;
#[path = "common/serve.rs"]
mod serve;

use std::time::Instant;

use anyhow::Result;
use vigil_shared::proto::PushRequest;

use fleet::env;
use proc::metric;

async fn run(policy: &str, agents: usize, batches: u64, series: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let served = serve::start(dir.path(), "", &format!("wal_fsync = \"{policy}\"")).await?;
    let bound = served.bound;
    // Encode nothing inside the timed part but the pushes themselves.
    let work: Vec<Vec<PushRequest>> = (0..agents)
        .map(|a| {
            (1..=batches)
                .map(|s| push::batch(a, s, series, 10_000, 100))
                .collect()
        })
        .collect();
    let started = Instant::now();
    push::push_all(bound.ingest, work).await?;
    let took = started.elapsed();
    let appends = metric(bound.http, "vigil_collector_wal_appends_total").await?;
    let syncs = metric(bound.http, "vigil_collector_wal_syncs_total").await?;
    let pushes = agents as f64 * batches as f64;
    println!(
        "wal_fsync = {policy:8} {agents} agents x {batches} batches of {series} series: \
         {:.0} pushes/s ({:.0} samples/s), {appends:.0} appends, {syncs:.0} syncs ({:.1} appends per sync)",
        pushes / took.as_secs_f64(),
        pushes * series as f64 / took.as_secs_f64(),
        appends / syncs.max(1.0),
    );
    served.stop().await
}

fn main() -> Result<()> {
    let agents = env("AGENTS", 50);
    let batches = env("BATCHES", 40) as u64;
    let series = env("SERIES", 400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for policy in ["always", "interval", "always", "interval"] {
            run(policy, agents, batches, series).await?;
        }
        anyhow::Ok(())
    })
}
