//! Sources: what the agent samples. Each source is one file behind the
//! [`Source`] trait and one line in [`build`], the registry. A source only
//! samples into the [`Windows`] it is handed; the [`Sampler`] owns the
//! interval, times every source and records its duration and success, the
//! way node_exporter's `node_scrape_collector_*` does.

pub mod listener;
pub mod otlp;
pub mod self_process;
pub mod statsd;
pub mod system;
pub mod textfile;

use std::time::{Instant, SystemTime};

use thiserror::Error;
use tracing::warn;

use crate::config::AgentConfig;
use crate::window::{FamilyKind, RecordError, Windows};

/// A source failed, wholly or in part; what it could read is still recorded.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct SourceError(pub String);

impl From<RecordError> for SourceError {
    fn from(e: RecordError) -> Self {
        SourceError(e.to_string())
    }
}

/// One kind of thing the agent samples.
pub trait Source: Send {
    /// A short name, used as the `source` label of the agent's own metrics.
    fn name(&self) -> &'static str;
    /// Reads once and records into `out`. Never blocks on the network, never sleeps.
    fn sample(&mut self, out: &mut Windows, now: SystemTime) -> Result<(), SourceError>;
    /// The windows were closed into a batch.
    fn flushed(&mut self) {}
}

/// Builds the sources the config turns on. Adding a source is one line here.
pub fn build(config: &AgentConfig) -> Result<Vec<Box<dyn Source>>, SourceError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if config.system.enabled {
        let mut system = system::SystemSource::new(&config.system)?;
        // node_exporter gives `node_textfile_scrape_error 0` without a folder too.
        system.textfile_absent = config.textfile.directory.is_none();
        sources.push(Box::new(system));
    }
    if let Some(dir) = &config.textfile.directory {
        sources.push(Box::new(textfile::TextfileSource::new(
            dir.clone(),
            config.textfile.max_file_size.0,
            config.textfile.max_series,
        )));
    }
    if config.statsd.enabled {
        sources.push(Box::new(statsd::StatsdSource::start(
            &config.statsd,
            config.statsd.max_series,
        )?));
    }
    if config.otlp.enabled && (config.otlp.grpc.is_some() || config.otlp.http.is_some()) {
        sources.push(Box::new(otlp::OtlpSource::start(&config.otlp)?));
    }
    sources.push(Box::new(self_process::SelfProcessSource::new(
        config.system.proc_path.clone(),
    )));
    Ok(sources)
}

struct SourceStats {
    duration_seconds: f64,
    success: bool,
    errors: u64,
    last_error: Option<String>,
}

/// Runs every source once per sample and keeps their statistics.
pub struct Sampler {
    sources: Vec<Box<dyn Source>>,
    stats: Vec<SourceStats>,
    samples: u64,
}

impl Sampler {
    /// A sampler over these sources.
    pub fn new(sources: Vec<Box<dyn Source>>) -> Self {
        let stats = sources
            .iter()
            .map(|_| SourceStats {
                duration_seconds: 0.0,
                success: true,
                errors: 0,
                last_error: None,
            })
            .collect();
        Self {
            sources,
            stats,
            samples: 0,
        }
    }

    /// Samples every source once. A failing source is logged when its error
    /// changes (not every second) and counted; the others still run.
    pub fn sample(&mut self, out: &mut Windows, now: SystemTime) {
        out.begin_sample(unix_millis(now));
        self.samples += 1;
        for (source, stats) in self.sources.iter_mut().zip(self.stats.iter_mut()) {
            let started = Instant::now();
            let result = source.sample(out, now);
            stats.duration_seconds = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    stats.success = true;
                    stats.last_error = None;
                }
                Err(e) => {
                    stats.success = false;
                    stats.errors += 1;
                    let message = e.to_string();
                    if stats.last_error.as_deref() != Some(message.as_str()) {
                        warn!(source = source.name(), error = %message, "source failed");
                        stats.last_error = Some(message);
                    }
                }
            }
        }
    }

    /// Tells every source that the windows were closed into a batch.
    pub fn flushed(&mut self) {
        for source in &mut self.sources {
            source.flushed();
        }
    }

    /// How many samples have been taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Records the sources' own statistics as `vigil_agent_*` series.
    pub fn record_stats(&self, out: &mut Windows) -> Result<(), RecordError> {
        let samples = out.family(
            "vigil_agent_samples_total",
            "Samples the agent has taken of its sources.",
            FamilyKind::Counter,
        )?;
        out.set(samples, &[], self.samples as f64)?;
        let duration = out.family(
            "vigil_agent_source_duration_seconds",
            "How long the last sample of each source took.",
            FamilyKind::Gauge,
        )?;
        let success = out.family(
            "vigil_agent_source_success",
            "Whether the last sample of each source succeeded (1) or not (0).",
            FamilyKind::Gauge,
        )?;
        let errors = out.family(
            "vigil_agent_source_errors_total",
            "Samples of each source that failed, wholly or in part.",
            FamilyKind::Counter,
        )?;
        for (source, stats) in self.sources.iter().zip(&self.stats) {
            let labels = [("source", source.name())];
            out.set(duration, &labels, stats.duration_seconds)?;
            out.set(success, &labels, if stats.success { 1.0 } else { 0.0 })?;
            out.set(errors, &labels, stats.errors as f64)?;
        }
        Ok(())
    }
}

/// Logs a series the agent's own `max_series` refused, once per family
/// name (at most `max` names), for the application sources.
pub(crate) fn log_refused(
    logged: &mut std::collections::HashSet<String>,
    max: usize,
    source: &str,
    family: &str,
    error: &RecordError,
) {
    if matches!(error, RecordError::TooManySeries { .. })
        && logged.len() < max
        && logged.insert(family.to_string())
    {
        warn!(
            source,
            name = %family,
            error = %error,
            "series dropped: the agent's max_series reached (logged once per name)"
        );
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, with fractions.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
