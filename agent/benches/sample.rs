//! CPU cost of one sample of this host and of closing one window, in the
//! agent's own code path (`cargo bench -p vigil-agent`). Measures process CPU
//! time, not wall time, so another busy process does not inflate it.

use std::time::SystemTime;

use vigil_agent::config::SystemConfig;
use vigil_agent::sources::Source;
use vigil_agent::sources::system::SystemSource;
use vigil_agent::window::Windows;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    vigil_agent::sources::self_process::parse_cpu_seconds(&stat).unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let mut source = SystemSource::new(&SystemConfig::default())?;
    let mut windows = Windows::new("bench", "node", 100_000)?;
    let samples = 2_000;
    let flush_every = 10;
    let start = cpu_seconds();
    let wall = std::time::Instant::now();
    let mut bytes = 0usize;
    for i in 0..samples {
        windows.begin_sample(1_000 * i as i64);
        let _ = source.sample(&mut windows, SystemTime::now());
        if (i + 1) % flush_every == 0 {
            let families = windows.close()?;
            bytes += families
                .iter()
                .map(prost::Message::encoded_len)
                .sum::<usize>();
        }
    }
    let cpu = cpu_seconds() - start;
    let per_sample = cpu / samples as f64;
    println!(
        "system source: {samples} samples, closing a window every {flush_every}: {:.1} µs CPU per sample \
         ({:.1} µs wall), {:.3} % of one core at 1 sample/s; {} bytes per batch",
        per_sample * 1e6,
        wall.elapsed().as_secs_f64() / samples as f64 * 1e6,
        per_sample * 100.0,
        bytes / (samples / flush_every)
    );
    Ok(())
}
