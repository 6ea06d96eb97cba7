#![allow(dead_code)] // each benchmark uses part of it
//! The simulated fleet the store and rule benchmarks run over: by default a
//! real agent's recorded hour (`bench/data/agent-1h.tsv.gz`, made by
//! `bench/record_agent.py`) replayed as HOSTS hosts, each with its own
//! `instance`; with SYNTHETIC=1, a generated mix of node_exporter-like values.
//! RECORDING=path replays another recording.

use std::io::{BufRead, BufReader};

/// Labels sorted by name.
pub type Labels = Vec<(String, String)>;

/// One recorded series: labels (without `instance`) and points.
pub struct Recorded {
    /// Labels, `instance` left out.
    pub labels: Labels,
    /// `(ms, value)`.
    pub points: Vec<(i64, f64)>,
}

/// Where values come from.
pub enum Fleet {
    /// Generated values.
    Synthetic,
    /// A recording.
    Recorded(Vec<Recorded>),
}

const BASE: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;

impl Fleet {
    /// The recording, or the synthetic mix when SYNTHETIC=1.
    pub fn load() -> anyhow::Result<Self> {
        if std::env::var("SYNTHETIC").is_ok_and(|v| v == "1") {
            return Ok(Fleet::Synthetic);
        }
        let path = std::env::var("RECORDING").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/data/agent-1h.tsv.gz").to_string()
        });
        let file = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("{path}: {e} (SYNTHETIC=1 runs without a recording)"))?;
        let mut out = Vec::new();
        for line in BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let line = line?;
            let (labels, points) = line
                .split_once('\t')
                .ok_or_else(|| anyhow::anyhow!("{path}: a line without a tab"))?;
            let map: std::collections::BTreeMap<String, String> = serde_json::from_str(labels)?;
            let labels: Labels = map.into_iter().filter(|(k, _)| k != "instance").collect();
            let mut parsed = Vec::new();
            for p in points.split_whitespace() {
                let (t, v) = p
                    .split_once(',')
                    .ok_or_else(|| anyhow::anyhow!("{path}: bad point {p:?}"))?;
                parsed.push((t.parse()?, v.parse()?));
            }
            out.push(Recorded {
                labels,
                points: parsed,
            });
        }
        anyhow::ensure!(!out.is_empty(), "{path}: no series");
        Ok(Fleet::Recorded(out))
    }

    /// What the data is, for the report.
    pub fn describe(&self) -> String {
        match self {
            Fleet::Synthetic => "synthetic node_exporter-like mix".into(),
            Fleet::Recorded(r) => format!(
                "a real agent's recorded hour ({} series, {} samples), replayed per host",
                r.len(),
                r.iter().map(|s| s.points.len()).sum::<usize>()
            ),
        }
    }

    /// Samples per series at most.
    pub fn steps(&self, minutes: usize) -> usize {
        match self {
            Fleet::Synthetic => minutes * 6,
            Fleet::Recorded(r) => r.iter().map(|s| s.points.len()).max().unwrap_or(0),
        }
    }

    /// Labels of series `s` of host `h`. A recording with fewer series than
    /// asked for is cycled, the copies told apart by a `copy` label.
    pub fn labels(&self, h: usize, s: usize) -> Labels {
        let mut l = match self {
            Fleet::Synthetic => vec![
                ("__name__".to_string(), format!("metric_{:03}", s % 100)),
                ("job".to_string(), "node".to_string()),
                ("series".to_string(), format!("{}", s / 100)),
            ],
            Fleet::Recorded(r) => {
                let mut l = r[s % r.len()].labels.clone();
                if s >= r.len() {
                    l.push(("copy".to_string(), format!("{}", s / r.len())));
                }
                l
            }
        };
        l.push(("instance".to_string(), format!("host-{h:04}")));
        l.sort();
        l
    }

    /// Series indices grouped by metric name, as OpenMetrics wants each
    /// family's samples together.
    pub fn by_family(
        &self,
        series: impl IntoIterator<Item = usize>,
    ) -> std::collections::BTreeMap<String, Vec<usize>> {
        let mut out: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
        for s in series {
            let name = self
                .labels(0, s)
                .into_iter()
                .find(|(k, _)| k == "__name__")
                .map(|(_, v)| v)
                .unwrap_or_default();
            out.entry(name).or_default().push(s);
        }
        out
    }

    /// Point `i` of series `s` of host `h`, if it has one.
    pub fn point(&self, h: usize, s: usize, i: usize, state: &mut u64) -> Option<(i64, f64)> {
        match self {
            Fleet::Synthetic => Some((BASE + i as i64 * STEP, synthetic(h, s, i, state))),
            Fleet::Recorded(r) => r[s % r.len()].points.get(i).copied(),
        }
    }

    /// Time of the last point.
    pub fn end(&self, minutes: usize) -> i64 {
        match self {
            Fleet::Synthetic => BASE + (minutes as i64 * 6 - 1) * STEP,
            Fleet::Recorded(r) => r
                .iter()
                .filter_map(|s| s.points.last().map(|p| p.0))
                .max()
                .unwrap_or(0),
        }
    }
}

/// A value for series `s` of host `h` at step `i`, in node_exporter's mix:
/// 40 % constant (sizes, info, error counters that stay 0), 35 % integer
/// counters with irregular increments (bytes, packets, operations), 15 %
/// CPU-seconds counters with two decimals, 10 % byte gauges moving in 4 KiB
/// pages.
fn synthetic(h: usize, s: usize, i: usize, state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let r = *state % 10_000;
    let i = i as f64;
    match s % 20 {
        0..=7 => ((h * 31 + s) * 4096) as f64,
        8..=14 => i * 5_000.0 + (r as f64) * (i.min(1.0)) + (s * 7) as f64,
        15..=17 => {
            ((i * 9.5 + (r % 100) as f64 / 100.0) * 100.0).round() / 100.0 + (h * 1000) as f64
        }
        _ => (1_000_000 + (r % 64) * 4096 + s as u64 * 4096) as f64,
    }
}

/// A whole-number setting from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `labels` without `__name__`, as OpenMetrics label pairs.
pub fn openmetrics_labels(labels: &Labels) -> String {
    labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// One OpenMetrics sample line at `t` milliseconds.
pub fn write_openmetrics_sample(
    out: &mut impl std::io::Write,
    name: &str,
    labels: &str,
    t: i64,
    v: f64,
) -> std::io::Result<()> {
    writeln!(out, "{name}{{{labels}}} {v} {}.{:03}", t / 1000, t % 1000)
}
