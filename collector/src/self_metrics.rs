//! The collector records its own metrics (`vigil_collector_*`) into its
//! history every `store.self_metrics_interval` (10 s), labelled
//! `job="vigil-collector"` and `instance` its host name, as a Prometheus
//! server records what it scrapes of itself: so that Grafana pointed
//! straight at the collector (no Prometheus server) can chart ingest,
//! refusals, rule evaluation and notifications, and rules can alert on
//! them.

use vigil_shared::exposition::{ExpositionWriter, Format};
use vigil_store::RuleSample;

use crate::http::HttpState;

/// Prefix of the families recorded.
const PREFIX: &str = "vigil_collector_";

/// The `job` label of the recorded series.
pub const JOB: &str = "vigil-collector";

/// Renders the collector's own families and writes them into the history
/// at `now` (ms); returns the samples written.
pub fn record(state: &HttpState, instance: &str, now: i64) -> usize {
    let mut w = ExpositionWriter::new(Format::Text, 32 * 1024);
    crate::http::render_own(state, &mut w);
    let text = w.finish();
    let families = match vigil_shared::text_format::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e.message, line = e.line, "own metrics did not parse; not recorded");
            return 0;
        }
    };
    let mut samples: Vec<RuleSample> = Vec::new();
    for family in families.into_iter().filter(|f| f.name.starts_with(PREFIX)) {
        for sample in family.samples {
            let mut labels = sample.labels;
            labels.push(("__name__".into(), sample.name));
            labels.push(("job".into(), JOB.into()));
            if !labels.iter().any(|(k, _)| k == "instance") {
                labels.push(("instance".into(), instance.into()));
            }
            labels.sort();
            samples.push((labels, now, sample.value));
        }
    }
    let count = samples.len();
    state.store.write_rule_samples(samples);
    count
}

/// This host's name, the `instance` of the recorded series.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
