//! StatsD lines parsed and folded per second on one core, in process
//! (`cargo bench -p vigil-agent --bench statsd`): datagrams of 20 lines
//! (counters, gauges, timers and histograms with tags, over 1,000 series),
//! folded into the aggregator, moved into the windows and the windows
//! closed every 2,500,000 lines: half a second's worth at the target rate
//! (the sampler moves them each second, and closes them every 10).
//! Process CPU time, not wall time.

use vigil_agent::sources::statsd::Aggregator;
use vigil_agent::window::Windows;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    vigil_agent::sources::self_process::parse_cpu_seconds(&stat).unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let kinds = ["c", "g", "ms", "h"];
    let datagrams: Vec<Vec<u8>> = (0..500)
        .map(|d| {
            (0..20)
                .map(|i| {
                    let n = d * 20 + i;
                    format!(
                        "app.{}_metric{}:{}|{}|#route:/r{},code:200",
                        kinds[n % 4],
                        n % 250,
                        n % 97,
                        kinds[n % 4],
                        n % 4
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect();
    let mut agg = Aggregator::new("", 10_000, 10_000_000);
    let mut windows = Windows::new("bench", "node", 100_000)?;
    let rounds = 2_000;
    let start = cpu_seconds();
    let mut lines = 0u64;
    for round in 0..rounds {
        for d in &datagrams {
            agg.datagram(d);
        }
        lines += datagrams.len() as u64 * 20;
        if round % 250 == 249 {
            windows.begin_sample(round as i64 * 1000);
            agg.record(&mut windows);
            windows.close()?;
            agg.flushed();
        }
    }
    let cpu = cpu_seconds() - start;
    let invalid: u64 = agg.counts().invalid.iter().sum();
    anyhow::ensure!(invalid == 0, "{invalid} lines refused");
    println!(
        "{lines} lines ({} series) in {cpu:.2} s of CPU: {:.0} lines/s on one core",
        agg.series(),
        lines as f64 / cpu
    );
    Ok(())
}
