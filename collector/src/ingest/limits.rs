//! Per-agent limits at the collector, so that one agent (or one client
//! holding an agent's token) cannot starve the others or grow the store
//! without bound: pushes per second, new series per minute, series per
//! push from one agent, timestamps and flush intervals within sane bounds.
//! Rates are GCRA token buckets (`governor`), one per agent; a rate
//! refusal is RESOURCE_EXHAUSTED with the retry delay the agent honours,
//! everything else INVALID_ARGUMENT. Every refusal is counted by limit and
//! agent (`vigil_collector_pushes_limited_total`).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use vigil_shared::exposition::{ExpositionWriter, MetricKind};

/// Longest flush interval a batch may claim: a day (the agent allows an hour).
pub const MAX_FLUSH_INTERVAL_MS: u64 = 86_400_000;

/// The `[ingest]` limits, validated.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Series in one agent's push (`ingest.max_series_per_agent`).
    pub max_series_per_agent: usize,
    /// New series one agent may create per minute (`ingest.max_new_series_per_minute`).
    pub max_new_series_per_minute: u32,
    /// Pushes per second per agent (`ingest.max_pushes_per_second`).
    pub max_pushes_per_second: u32,
    /// How far ahead of the collector's clock a sample may be.
    pub max_future: Duration,
    /// How far behind it a sample may be (the store's retention).
    pub max_age: Duration,
}

/// Which limit refused a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `max_pushes_per_second`.
    PushRate,
    /// `max_new_series_per_minute`.
    NewSeries,
    /// `max_series_per_agent`.
    SeriesPerAgent,
    /// A sample too far in the future or the past.
    Timestamp,
    /// A flush interval over a day.
    FlushInterval,
}

impl Limit {
    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            Limit::PushRate => "push_rate",
            Limit::NewSeries => "new_series",
            Limit::SeriesPerAgent => "series_per_agent",
            Limit::Timestamp => "timestamp",
            Limit::FlushInterval => "flush_interval",
        }
    }
}

/// A push a limit refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Which limit.
    pub limit: Limit,
    /// What to tell the agent.
    pub message: String,
    /// For rate limits: when to try again.
    pub retry_after: Option<Duration>,
}

type Keyed = RateLimiter<
    String,
    governor::state::keyed::HashMapStateStore<String>,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The limits and their per-agent state.
pub struct AgentLimits {
    config: LimitsConfig,
    pushes: Keyed,
    new_series: Keyed,
    refusals: Mutex<BTreeMap<(String, Limit), u64>>,
}

impl AgentLimits {
    /// Limits from `[ingest]`; every rate must be at least 1.
    pub fn new(config: LimitsConfig) -> Self {
        let per = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            config,
            // A burst of one second's pushes, so replay after an outage
            // (paced by the agent) is not refused.
            pushes: RateLimiter::hashmap(Quota::per_second(per(config.max_pushes_per_second))),
            // A burst of a whole minute's worth: an agent's first batch
            // creates all its series at once.
            new_series: RateLimiter::hashmap(
                Quota::per_minute(per(config.max_new_series_per_minute))
                    .allow_burst(per(config.max_new_series_per_minute)),
            ),
            refusals: Mutex::new(BTreeMap::new()),
        }
    }

    fn refuse(
        &self,
        agent: &str,
        limit: Limit,
        message: String,
        retry_after: Option<Duration>,
    ) -> Refused {
        let mut refusals = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *refusals.entry((agent.to_string(), limit)).or_default() += 1;
        Refused {
            limit,
            message,
            retry_after,
        }
    }

    /// Checks the push rate; called before the batch is looked at.
    pub fn check_rate(&self, agent: &str) -> Result<(), Refused> {
        match self.pushes.check_key(&agent.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(self.refuse(
                    agent,
                    Limit::PushRate,
                    format!(
                        "agent {agent:?} pushes more than {} times a second (ingest.max_pushes_per_second)",
                        self.config.max_pushes_per_second
                    ),
                    Some(wait.max(Duration::from_millis(100))),
                ))
            }
        }
    }

    /// Checks a validated batch: its size, flush interval and times, then
    /// the new series it would create (`new_series`, from the store).
    pub fn check_batch(
        &self,
        batch: &vigil_shared::batch::Batch<'_>,
        new_series: impl FnOnce() -> usize,
        now_ms: i64,
    ) -> Result<(), Refused> {
        let agent = batch.agent_id;
        if batch.flush_interval_ms > MAX_FLUSH_INTERVAL_MS {
            return Err(self.refuse(
                agent,
                Limit::FlushInterval,
                format!(
                    "flush_interval_ms {} is more than a day ({MAX_FLUSH_INTERVAL_MS})",
                    batch.flush_interval_ms
                ),
                None,
            ));
        }
        let series = batch.series_count();
        if series > self.config.max_series_per_agent {
            return Err(self.refuse(
                agent,
                Limit::SeriesPerAgent,
                format!(
                    "{series} series from agent {agent:?}, more than ingest.max_series_per_agent ({}); lower the agent's max_series or raise the limit",
                    self.config.max_series_per_agent
                ),
                None,
            ));
        }
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let latest = now_ms.saturating_add(ms(self.config.max_future));
        let earliest = now_ms.saturating_sub(ms(self.config.max_age));
        let times = std::iter::once(batch.timestamp_ms).chain(
            batch
                .families
                .iter()
                .flat_map(|f| f.series.iter().map(|s| s.timestamp_ms)),
        );
        for t in times.filter(|t| *t != 0) {
            if t > latest || t < earliest {
                return Err(self.refuse(
                    agent,
                    Limit::Timestamp,
                    format!(
                        "timestamp {t} ms is more than {:?} ahead of the collector's clock ({now_ms}) or older than the store's retention ({:?}); check the agent's clock",
                        self.config.max_future, self.config.max_age
                    ),
                    None,
                ));
            }
        }
        let fresh = new_series();
        if fresh == 0 {
            return Ok(());
        }
        let n = u32::try_from(fresh)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MAX);
        match self.new_series.check_key_n(&agent.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(self.refuse(
                    agent,
                    Limit::NewSeries,
                    format!(
                        "agent {agent:?} would create {fresh} new series, more than ingest.max_new_series_per_minute ({}) allows now",
                        self.config.max_new_series_per_minute
                    ),
                    Some(wait.max(Duration::from_secs(1))),
                ))
            }
            Err(_) => Err(self.refuse(
                agent,
                Limit::NewSeries,
                format!(
                    "agent {agent:?} would create {fresh} new series in one push, more than ingest.max_new_series_per_minute ({})",
                    self.config.max_new_series_per_minute
                ),
                None,
            )),
        }
    }

    /// `vigil_collector_pushes_limited_total{agent,limit}`.
    pub fn write_metrics(&self, w: &mut ExpositionWriter) {
        let refusals = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.header(
            "vigil_collector_pushes_limited_total",
            "Pushes refused by a per-agent limit, by agent and limit (push_rate, new_series, series_per_agent, timestamp, flush_interval).",
            MetricKind::Counter,
        );
        let mut labels = String::new();
        for ((agent, limit), n) in refusals.iter() {
            labels.clear();
            labels.push_str("agent=\"");
            vigil_shared::labels::escape_label_value_into(&mut labels, agent);
            labels.push_str("\",limit=\"");
            labels.push_str(limit.label());
            labels.push('"');
            w.sample(
                "vigil_collector_pushes_limited_total",
                "",
                &labels,
                None,
                *n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};

    fn config() -> LimitsConfig {
        LimitsConfig {
            max_series_per_agent: 3,
            max_new_series_per_minute: 5,
            max_pushes_per_second: 2,
            max_future: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
        }
    }

    fn batch(series: usize, t: i64) -> PushRequest {
        PushRequest {
            agent_id: "a".into(),
            sequence: 1,
            timestamp_ms: t,
            flush_interval_ms: 10_000,
            families: vec![Family {
                name: "x".into(),
                kind: Kind::Gauge as i32,
                series: (0..series)
                    .map(|i| Series {
                        labels: vec![Label {
                            name: "i".into(),
                            value: i.to_string(),
                        }],
                        timestamp_ms: t,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_limit_refuses_and_counts() {
        let limits = AgentLimits::new(config());
        let now = 10_000_000;
        assert!(limits.check_rate("a").is_ok());
        assert!(limits.check_rate("a").is_ok());
        let r = limits.check_rate("a").err();
        assert_eq!(r.as_ref().map(|r| r.limit), Some(Limit::PushRate));
        assert!(r.and_then(|r| r.retry_after).is_some());
        assert!(limits.check_rate("b").is_ok(), "another agent is untouched");

        let err = |b: &PushRequest, fresh: usize| {
            use prost::Message;
            let bytes = b.encode_to_vec();
            let view = vigil_shared::batch::Batch::decode(&bytes).ok()?;
            limits
                .check_batch(&view, || fresh, now)
                .err()
                .map(|r| r.limit)
        };
        assert_eq!(err(&batch(4, now), 0), Some(Limit::SeriesPerAgent));
        assert_eq!(err(&batch(1, now + 3_600_000), 0), Some(Limit::Timestamp));
        assert_eq!(err(&batch(1, now - 7_200_000), 0), Some(Limit::Timestamp));
        let mut long = batch(1, now);
        long.flush_interval_ms = 1 << 62;
        assert_eq!(err(&long, 0), Some(Limit::FlushInterval));
        assert_eq!(err(&batch(3, now), 3), None);
        assert_eq!(err(&batch(3, now), 3), Some(Limit::NewSeries), "5 a minute");
        assert_eq!(
            err(&batch(3, now), 6),
            Some(Limit::NewSeries),
            "more than a burst"
        );
        let mut w = ExpositionWriter::new(vigil_shared::exposition::Format::Text, 1024);
        limits.write_metrics(&mut w);
        let text = w.finish();
        assert!(
            text.contains(
                "vigil_collector_pushes_limited_total{agent=\"a\",limit=\"new_series\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("limit=\"push_rate\"} 1"), "{text}");
    }
}
