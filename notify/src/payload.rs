//! The webhook body, as Alertmanager 0.25 sends it (`version: "4"`): the
//! same fields in the same order, the same group key, fingerprints and time
//! formats, so that receivers written for Alertmanager's webhook work as
//! they are.

use std::collections::BTreeMap;

use serde::Serialize;

use vigil_template::gofmt::{labels_string, utc_parts};

/// Labels or annotations.
pub type Kv = BTreeMap<String, String>;

/// An alert as notifications carry it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NotifyAlert {
    /// Labels (external labels included).
    pub labels: Kv,
    /// Annotations.
    pub annotations: Kv,
    /// When it started firing (ms).
    pub starts_at: i64,
    /// When it resolved (ms); `None` while firing.
    pub ends_at: Option<i64>,
    /// Link to the expression.
    pub generator_url: String,
    /// When the samples that made it fire were taken (ms), if known; not
    /// sent, used for latency.
    #[serde(default)]
    pub fired_sample_ms: Option<i64>,
}

impl NotifyAlert {
    /// True once resolved.
    pub fn resolved(&self) -> bool {
        self.ends_at.is_some()
    }

    /// Alertmanager's fingerprint of the labels.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }
}

/// Prometheus's `LabelSet.Fingerprint()`: FNV-1a 64 over the sorted names and
/// values, each followed by the byte 255.
pub fn fingerprint(labels: &Kv) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    if labels.is_empty() {
        return OFFSET;
    }
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[255]);
        add(v.as_bytes());
        add(&[255]);
    }
    h
}

/// Go's `model.LabelSet.String()`: `{a="b", c="d"}`, sorted.
pub fn labelset_string(labels: &Kv) -> String {
    labels_string(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Go's `time.Time` JSON (RFC 3339 with the fractional second trimmed),
/// in UTC; `None` is Go's zero time.
pub fn go_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "0001-01-01T00:00:00Z".into();
    };
    let (y, mo, d, h, mi, sec, frac) = utc_parts(ms);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}");
    if frac != 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertJson<'a> {
    status: &'static str,
    labels: &'a Kv,
    annotations: &'a Kv,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageJson<'a> {
    receiver: &'a str,
    status: &'static str,
    alerts: Vec<AlertJson<'a>>,
    group_labels: &'a Kv,
    common_labels: Kv,
    common_annotations: Kv,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: usize,
}

/// Labels (or annotations) every alert has with the same value.
fn common(maps: &[&Kv]) -> Kv {
    let Some(first) = maps.first() else {
        return Kv::new();
    };
    first
        .iter()
        .filter(|(k, v)| maps.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One notification's body. `alerts` are in Alertmanager's order; at most
/// `max_alerts` go in (0: all), the rest are counted in `truncatedAlerts`.
pub fn webhook_body(
    receiver: &str,
    group_key: &str,
    group_labels: &Kv,
    alerts: &[NotifyAlert],
    external_url: &str,
    max_alerts: usize,
) -> Vec<u8> {
    // Alertmanager truncates first: status and common labels describe the
    // alerts that are sent.
    let kept = if max_alerts > 0 {
        max_alerts.min(alerts.len())
    } else {
        alerts.len()
    };
    let sent = &alerts[..kept];
    let firing = sent.iter().any(|a| !a.resolved());
    let status = if firing { "firing" } else { "resolved" };
    let label_maps: Vec<&Kv> = sent.iter().map(|a| &a.labels).collect();
    let annotation_maps: Vec<&Kv> = sent.iter().map(|a| &a.annotations).collect();
    let message = MessageJson {
        receiver,
        status,
        alerts: alerts[..kept]
            .iter()
            .map(|a| AlertJson {
                status: if a.resolved() { "resolved" } else { "firing" },
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: go_time(Some(a.starts_at)),
                ends_at: go_time(a.ends_at),
                generator_url: &a.generator_url,
                fingerprint: format!("{:016x}", a.fingerprint()),
            })
            .collect(),
        group_labels,
        common_labels: common(&label_maps),
        common_annotations: common(&annotation_maps),
        external_url,
        version: "4",
        group_key,
        truncated_alerts: alerts.len() - kept,
    };
    let mut body = serde_json::to_vec(&message).unwrap_or_default();
    // Alertmanager's encoder ends the body with a newline.
    body.push(b'\n');
    body
}

/// Alertmanager's order of alerts in a notification: by `job`, then
/// `instance`, then the whole label set.
pub fn sort_alerts(alerts: &mut [NotifyAlert]) {
    alerts.sort_by(|a, b| {
        for key in ["job", "instance"] {
            match (a.labels.get(key), b.labels.get(key)) {
                (Some(x), Some(y)) if x != y => return x.cmp(y),
                (Some(_), None) => return std::cmp::Ordering::Less,
                (None, Some(_)) => return std::cmp::Ordering::Greater,
                _ => {}
            }
        }
        a.labels.iter().cmp(b.labels.iter())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Kv {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprints_and_times_are_alertmanagers() {
        // model.LabelSet{"alertname": "X", "instance": "a"}.Fingerprint()
        assert_eq!(
            format!(
                "{:016x}",
                fingerprint(&kv(&[("alertname", "X"), ("instance", "a")]))
            ),
            format!("{:016x}", {
                let mut h: u64 = 14_695_981_039_346_656_037;
                for b in b"alertname\xffX\xffinstance\xffa\xff" {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(1_099_511_628_211);
                }
                h
            })
        );
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(Some(1_795_773_600_120)), "2026-11-27T10:00:00.12Z");
        assert_eq!(
            labelset_string(&kv(&[("b", "x\"y"), ("a", "1")])),
            "{a=\"1\", b=\"x\\\"y\"}"
        );
    }

    #[test]
    fn body_has_alertmanagers_fields_in_order() -> Result<(), serde_json::Error> {
        let alerts = vec![
            NotifyAlert {
                labels: kv(&[
                    ("alertname", "Hot"),
                    ("instance", "a"),
                    ("severity", "page"),
                ]),
                annotations: kv(&[("summary", "hot a")]),
                starts_at: 1_000,
                ends_at: None,
                generator_url: "http://vigil/graph".into(),
                fired_sample_ms: None,
            },
            NotifyAlert {
                labels: kv(&[
                    ("alertname", "Hot"),
                    ("instance", "b"),
                    ("severity", "page"),
                ]),
                annotations: kv(&[("summary", "hot b")]),
                starts_at: 1_000,
                ends_at: Some(5_000),
                generator_url: "http://vigil/graph".into(),
                fired_sample_ms: None,
            },
        ];
        let body = webhook_body(
            "pager",
            "{}:{alertname=\"Hot\"}",
            &kv(&[("alertname", "Hot")]),
            &alerts,
            "http://vigil:9470",
            1,
        );
        let text = String::from_utf8_lossy(&body);
        let order = [
            "\"receiver\"",
            "\"status\"",
            "\"alerts\"",
            "\"groupLabels\"",
            "\"commonLabels\"",
            "\"commonAnnotations\"",
            "\"externalURL\"",
            "\"version\"",
            "\"groupKey\"",
            "\"truncatedAlerts\"",
        ];
        let positions: Vec<usize> = order.iter().filter_map(|k| text.find(k)).collect();
        assert_eq!(positions.len(), order.len(), "{text}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(v["status"], "firing");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["alerts"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        // Common labels of the alerts sent (after max_alerts), as Alertmanager.
        assert_eq!(
            v["commonLabels"],
            serde_json::json!({"alertname": "Hot", "instance": "a", "severity": "page"})
        );
        assert_eq!(
            v["commonAnnotations"],
            serde_json::json!({"summary": "hot a"})
        );
        assert_eq!(v["version"], "4");
        Ok(())
    }
}
