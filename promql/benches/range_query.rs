//! The range evaluator alone, in process (`cargo bench -p vigil-promql
//! --bench range_query`; env `HOSTS=` hosts, default 1 and 100): the Host
//! dashboard's "CPU by mode" panel over 24 h at a 15 s step, on
//! node_cpu_seconds_total of 2 CPUs × 8 modes per host every 15 s. Each
//! query runs 5 times after a warm-up; the median is printed.

use std::time::Instant;

use vigil_promql::{Limits, range_query};
use vigil_store::history::History;

const STEP_MS: i64 = 15_000;
const STEPS: i64 = 24 * 3600 * 1000 / STEP_MS;
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

fn history(hosts: usize) -> Result<History, Box<dyn std::error::Error>> {
    let mut h = History::new();
    for host in 0..hosts {
        for cpu in 0..2 {
            for (m, mode) in MODES.iter().enumerate() {
                let id = h.series_id(&[
                    ("__name__".into(), "node_cpu_seconds_total".into()),
                    ("cpu".into(), cpu.to_string()),
                    ("instance".into(), format!("host-{host:04}:9100")),
                    ("job".into(), "node".into()),
                    ("mode".into(), (*mode).into()),
                ]);
                let mut v = 0.0;
                for i in 0..=STEPS {
                    v += (m + 1) as f64 * 0.37 + (i % 7) as f64 * 0.01;
                    h.append(id, i * STEP_MS, v)?;
                }
            }
        }
    }
    Ok(h)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hosts: Vec<usize> = match std::env::var("HOSTS") {
        Ok(v) => vec![v.parse()?],
        Err(_) => vec![1, 100],
    };
    for n in hosts {
        let h = history(n)?;
        let query = if n == 1 {
            r#"sum by (mode) (rate(node_cpu_seconds_total{instance="host-0000:9100"}[1m]))"#
        } else {
            r#"sum by (mode) (rate(node_cpu_seconds_total{instance=~".+"}[1m]))"#
        };
        let end = STEPS * STEP_MS;
        let run = || range_query(&h, query, 0, end, STEP_MS, Limits::default());
        let first = run()?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let out = run()?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(out.len(), first.len());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "hosts {n:>4}: {} series, {} steps: median {:.1} ms (min {:.1}, max {:.1})",
            n * 16,
            STEPS + 1,
            times[2],
            times[0],
            times[4]
        );
    }
    Ok(())
}
