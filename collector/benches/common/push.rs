//! Agents' batches of gauges, as the push benchmarks send them.

use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};

/// Pushes each agent's batches in order, all agents at once, to the
/// collector's gRPC ingest at `ingest`; returns when every push is
/// acknowledged.
#[allow(dead_code)]
pub async fn push_all(
    ingest: std::net::SocketAddr,
    work: Vec<Vec<PushRequest>>,
) -> anyhow::Result<()> {
    push_all_with(ingest, work, false).await
}

/// [`push_all`], each push gzip-compressed (as agents send them) when `gzip`.
#[allow(dead_code)]
pub async fn push_all_with(
    ingest: std::net::SocketAddr,
    work: Vec<Vec<PushRequest>>,
    gzip: bool,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for pushes in work {
        let url = format!("http://{ingest}");
        tasks.spawn(async move {
            let mut client = IngestClient::connect(url).await?;
            if gzip {
                client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            for p in pushes {
                client.push(p).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

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
