//! Forwarding to Alertmanager: for users who run an Alertmanager cluster and
//! want its deduplication, the collector sends its alerts to one or more
//! Alertmanager API v2 endpoints (`POST /api/v2/alerts`) the way Prometheus
//! does: every firing alert again at least every `resend` (so an
//! Alertmanager that restarts or missed one gets it back), with `endsAt`
//! four resends ahead so that it resolves by itself if the collector dies,
//! and each resolution with its real `endsAt`. Every endpoint gets every
//! alert; a failure is counted and retried at the next send.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::payload::{NotifyAlert, go_time};

/// One endpoint's counters.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Alerts accepted (2xx).
    pub sent: AtomicU64,
    /// Sends that failed.
    pub errors: AtomicU64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

/// The body of `POST /api/v2/alerts` for `alerts` at `now`: firing alerts end
/// `4 × resend` ahead, as Prometheus sets them.
pub fn postable(alerts: &[NotifyAlert], now: i64, resend: Duration) -> String {
    let valid_until = now + 4 * resend.as_millis() as i64;
    let list: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: go_time(Some(a.starts_at)),
            ends_at: go_time(Some(a.ends_at.unwrap_or(valid_until))),
            generator_url: &a.generator_url,
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

/// Which alerts to send now: everything that changed since the last send,
/// and everything once `resend` has passed.
#[derive(Debug, Default)]
pub struct ForwardState {
    last_sent: Option<i64>,
    last: BTreeMap<u64, Option<i64>>,
}

impl ForwardState {
    /// The alerts to send at `now`, if it is time.
    pub fn due(
        &mut self,
        alerts: &[NotifyAlert],
        now: i64,
        resend: Duration,
    ) -> Option<Vec<NotifyAlert>> {
        let current: BTreeMap<u64, Option<i64>> = alerts
            .iter()
            .map(|a| (a.fingerprint(), a.ends_at))
            .collect();
        let changed = current != self.last;
        let stale = self
            .last_sent
            .is_none_or(|t| now >= t + resend.as_millis() as i64);
        if !(changed || (stale && !alerts.is_empty())) {
            return None;
        }
        self.last = current;
        self.last_sent = Some(now);
        Some(alerts.to_vec())
    }
}

/// Posts the alerts to one Alertmanager; true when it answered 2xx.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    body: String,
    counters: &ForwardCounters,
    count: usize,
) -> bool {
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    match client
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            counters.sent.fetch_add(count as u64, Ordering::Relaxed);
            true
        }
        Ok(r) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alertmanager = %vigil_shared::config::redact_url(base), status = r.status().as_u16(), "alertmanager refused the alerts; they are sent again at the next round");
            false
        }
        Err(e) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alertmanager = %vigil_shared::config::redact_url(base), error = %e.without_url(), "cannot reach alertmanager; the alerts are sent again at the next round");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, ends: Option<i64>) -> NotifyAlert {
        NotifyAlert {
            labels: [("alertname".to_string(), name.to_string())]
                .into_iter()
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: 1_000,
            ends_at: ends,
            generator_url: "http://vigil/graph".into(),
            fired_sample_ms: None,
        }
    }

    #[test]
    fn sends_on_change_and_at_every_resend() {
        let resend = Duration::from_secs(60);
        let mut s = ForwardState::default();
        let a = vec![alert("A", None)];
        assert!(s.due(&a, 0, resend).is_some(), "first time");
        assert!(s.due(&a, 10_000, resend).is_none(), "unchanged");
        assert!(s.due(&a, 60_000, resend).is_some(), "resend");
        let resolved = vec![alert("A", Some(70_000))];
        assert!(
            s.due(&resolved, 70_000, resend).is_some(),
            "resolution at once"
        );
        let body = postable(&a, 0, resend);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v[0]["endsAt"], "1970-01-01T00:04:00Z", "four resends ahead");
        assert_eq!(v[0]["labels"]["alertname"], "A");
    }
}
