//! Agents' batches of gauges, as the push benchmarks send them.

use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};

/// Batch `sequence` of agent `agent`: `series` gauges `bench_value{n}`,
/// stamped `back_ms` before now plus `step_ms` per sequence number.
pub fn batch(
    agent: usize,
    sequence: u64,
    series: usize,
    back_ms: i64,
    step_ms: i64,
) -> PushRequest {
    let instance = format!("bench-{agent:03}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    PushRequest {
        agent_id: instance.clone(),
        epoch: 1,
        sequence,
        timestamp_ms: now,
        flush_interval_ms: 10_000,
        families: vec![Family {
            name: "bench_value".into(),
            help: "A benchmark gauge.".into(),
            kind: Kind::Gauge as i32,
            bucket_bounds: vec![],
            series: (0..series)
                .map(|i| Series {
                    labels: vec![
                        label("instance", instance.clone()),
                        label("job", "bench".into()),
                        label("n", i.to_string()),
                    ],
                    value: (sequence as f64) * (i as f64),
                    timestamp_ms: now - back_ms + sequence as i64 * step_ms,
                    window: None,
                })
                .collect(),
        }],
        last: false,
        ..Default::default()
    }
}
