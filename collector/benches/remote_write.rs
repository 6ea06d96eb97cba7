//! remote_write out of the collector to Debian's VictoriaMetrics: `AGENTS`
//! agents (default 50) push `BATCHES` batches (default 40) of `SERIES`
//! gauges (default 400) to a collector (in this process) whose store is not
//! up yet, so the whole run waits in the remote_write queue; then
//! VictoriaMetrics starts and the queue drains. Prints the push rate with
//! the queue on, the drain rate (samples/s acknowledged by the store), the
//! CPU the collector's process and VictoriaMetrics spent during the drain
//! (from /proc/PID/schedstat; the load generator is idle then) and the
//! queue's bytes.
//!
//!     cargo bench -p vigil-collector --bench remote_write

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/push.rs"]
mod push;
#[path = "common/serve.rs"]
mod serve;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use vigil_shared::proto::PushRequest;

use fleet::env;
use proc::{cpu_ns, metric, rss_kib};

fn main() -> Result<()> {
    let agents = env("AGENTS", 50);
    let batches = env("BATCHES", 40) as u64;
    let series = env("SERIES", 400);
    let program = "victoria-metrics";
    if Command::new(program).arg("-version").output().is_err() {
        bail!("victoria-metrics is not installed: apt-get install victoria-metrics");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let vm_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // The remote_write entry goes after [rules] in the file serve writes.
        let served = serve::start(
            dir.path(),
            "",
            &format!(
                "wal_fsync = \"always\"\nself_metrics_interval = \"0s\"\n\
                 [[remote_write]]\nname = \"vm\"\nurl = \"http://127.0.0.1:{vm_port}/api/v1/write\"\n\
                 [remote_write.queue_config]\nmax_backoff = \"200ms\"\nmax_shards = 4\n\
                 [remote_write_queue]\nmax_bytes = \"4GiB\""
            ),
        )
        .await?;
        let bound = served.bound;
        let work: Vec<Vec<PushRequest>> = (0..agents)
            .map(|a| (1..=batches).map(|s| push::batch(a, s, series, 600_000, 1000)).collect())
            .collect();
        let me = std::process::id();
        let started = Instant::now();
    push::push_all(bound.ingest, work).await?;
        let took = started.elapsed();
        let total = (agents as u64 * batches * series as u64) as f64;
        println!(
            "{agents} agents x {batches} batches of {series} gauges, remote_write queue on: {:.0} samples/s pushed (wal_fsync always)",
            total / took.as_secs_f64()
        );
        let queue_bytes = metric(bound.http, "vigil_collector_remote_write_queue_bytes").await?;
        println!(
            "queue: {queue_bytes:.0} bytes for {total:.0} samples ({:.1} bytes a sample)",
            queue_bytes / total
        );
        let rss_before = rss_kib(me);
        let vm_data = dir.path().join("vm-data");
        let mut vm = proc::spawn_victoria_metrics(&vm_data, vm_port)?;
        let drain_start = Instant::now();
        let cpu_before = cpu_ns(me);
        let mut rss_peak = rss_before;
        loop {
            let sent = metric(bound.http, "vigil_collector_remote_write_samples_sent_total").await?;
            rss_peak = rss_peak.max(rss_kib(me));
            if sent >= total {
                break;
            }
            if drain_start.elapsed() > Duration::from_secs(600) {
                let _ = vm.kill();
                bail!("only {sent} of {total} samples sent in 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drain = drain_start.elapsed();
        let cpu = (cpu_ns(me) - cpu_before) as f64 / 1e9;
        let vm_cpu = cpu_ns(vm.id()) as f64 / 1e9;
        println!(
            "drain to VictoriaMetrics 1.79: {:.0} samples/s over {:.2} s (VictoriaMetrics startup included); \
             collector process CPU {cpu:.2} s ({:.0} samples per CPU-second); \
             VictoriaMetrics CPU {vm_cpu:.2} s; collector RSS {rss_before} kB before, {rss_peak} kB peak",
            total / drain.as_secs_f64(),
            drain.as_secs_f64(),
            total / cpu.max(1e-9),
        );
        let _ = vm.kill();
        let _ = vm.wait();
        served.stop().await
    })
}
