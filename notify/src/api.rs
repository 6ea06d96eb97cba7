//! Alertmanager's API v2 views of the notifier's state, for `amtool` and
//! scripts written for Alertmanager: the alerts it holds (`GET
//! /api/v2/alerts`, with amtool's filters) and its status (`GET
//! /api/v2/status`). Silences have their own module ([`crate::silences`]).
//!
//! Only the JSON is built here; the HTTP server (the collector's) owns the
//! routes and their authentication.

use regex::Regex;
use serde_json::{Value, json};

use crate::config::{LabelMatcher, parse_matcher};
use crate::payload::{NotifyAlert, go_time};

/// The filters of `GET /api/v2/alerts`, as Alertmanager takes them.
#[derive(Debug, Clone)]
pub struct AlertFilter {
    /// `filter`: every matcher must accept the alert's labels.
    pub matchers: Vec<LabelMatcher>,
    /// `active` (default true): list alerts neither silenced nor inhibited.
    pub active: bool,
    /// `silenced` (default true): list silenced alerts.
    pub silenced: bool,
    /// `inhibited` (default true): list inhibited alerts.
    pub inhibited: bool,
    /// `receiver`: an anchored regex one of the alert's receivers must match.
    pub receiver: Option<Regex>,
}

impl AlertFilter {
    /// Reads the query's pairs; an unknown boolean or a bad matcher or
    /// regex is an error naming the parameter.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut filter = AlertFilter {
            matchers: Vec::new(),
            active: true,
            silenced: true,
            inhibited: true,
            receiver: None,
        };
        let boolean = |key: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("{key}: {other:?} is not true or false")),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "filter" => {
                    let text = value.trim().trim_start_matches('{').trim_end_matches('}');
                    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
                        filter
                            .matchers
                            .push(parse_matcher(part).map_err(|e| format!("filter: {e}"))?);
                    }
                }
                "active" => filter.active = boolean(key, value)?,
                "silenced" => filter.silenced = boolean(key, value)?,
                "inhibited" => filter.inhibited = boolean(key, value)?,
                "unprocessed" => {
                    // Every alert is processed at once: there are none to list.
                    boolean(key, value)?;
                }
                "receiver" => {
                    let re = Regex::new(&format!("^(?:{value})$"))
                        .map_err(|e| format!("receiver: {e}"))?;
                    filter.receiver = Some(re);
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(filter)
    }
}

/// One alert as the notifier sees it now.
pub struct AlertView<'a> {
    /// The alert.
    pub alert: &'a NotifyAlert,
    /// Receivers of the routes it matches.
    pub receivers: Vec<String>,
    /// Ids of the active silences that mute it.
    pub silenced_by: Vec<String>,
    /// Fingerprints of the firing alerts that inhibit it.
    pub inhibited_by: Vec<u64>,
}

impl AlertView<'_> {
    /// Whether `filter` lists this alert.
    pub fn listed(&self, filter: &AlertFilter) -> bool {
        let silenced = !self.silenced_by.is_empty();
        let inhibited = !self.inhibited_by.is_empty();
        let shown = match (silenced, inhibited) {
            (false, false) => filter.active,
            (true, false) => filter.silenced,
            (false, true) => filter.inhibited,
            (true, true) => filter.silenced && filter.inhibited,
        };
        shown
            && filter
                .matchers
                .iter()
                .all(|m| m.matches(&self.alert.labels))
            && filter
                .receiver
                .as_ref()
                .is_none_or(|re| self.receivers.iter().any(|r| re.is_match(r)))
    }

    /// Alertmanager's `gettableAlert`.
    pub fn to_json(&self, now: i64) -> Value {
        let suppressed = !self.silenced_by.is_empty() || !self.inhibited_by.is_empty();
        let receivers: Vec<Value> = self
            .receivers
            .iter()
            .map(|name| json!({ "name": name }))
            .collect();
        let inhibited_by: Vec<String> = self
            .inhibited_by
            .iter()
            .map(|fp| format!("{fp:016x}"))
            .collect();
        json!({
            "annotations": self.alert.annotations,
            "endsAt": go_time(self.alert.ends_at),
            "fingerprint": format!("{:016x}", self.alert.fingerprint()),
            "receivers": receivers,
            "startsAt": go_time(Some(self.alert.starts_at)),
            "status": {
                "inhibitedBy": inhibited_by,
                "silencedBy": self.silenced_by,
                "state": if suppressed { "suppressed" } else { "active" },
            },
            "updatedAt": go_time(Some(now)),
            "generatorURL": self.alert.generator_url,
            "labels": self.alert.labels,
        })
    }
}

/// Alertmanager's `alertmanagerStatus`. The routing file itself is not
/// shown (it may hold webhook credentials); `config.original` says where
/// it lives instead.
pub fn status_json(started_ms: i64, config_file: Option<&str>) -> Value {
    let original = match config_file {
        Some(path) => format!(
            "# Vigil does not serve its routing file over HTTP; it is {path} on the collector's host.\n"
        ),
        None => "# No routing file: notifications are off (notify.alertmanager_config).\n".into(),
    };
    json!({
        "cluster": { "status": "disabled", "peers": [] },
        "config": { "original": original },
        "uptime": go_time(Some(started_ms)),
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "branch": "",
            "revision": "",
            "buildUser": "vigil",
            "buildDate": "",
            "goVersion": "none (vigil-collector)",
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alert(pairs: &[(&str, &str)]) -> NotifyAlert {
        NotifyAlert {
            labels: labels(pairs),
            annotations: BTreeMap::new(),
            starts_at: 1_000,
            ends_at: None,
            generator_url: String::new(),
            fired_sample_ms: None,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_choose_alerts_as_alertmanager_does() -> Result<(), String> {
        let a = alert(&[("alertname", "DiskFull"), ("instance", "web-1")]);
        let view = AlertView {
            alert: &a,
            receivers: vec!["team".into()],
            silenced_by: vec!["s1".into()],
            inhibited_by: vec![],
        };
        let all = AlertFilter::from_query(&[])?;
        assert!(view.listed(&all));
        let unsilenced = AlertFilter::from_query(&query(&[("silenced", "false")]))?;
        assert!(!view.listed(&unsilenced));
        let by_name = AlertFilter::from_query(&query(&[("filter", "alertname=\"DiskFull\"")]))?;
        assert!(view.listed(&by_name));
        let other = AlertFilter::from_query(&query(&[("filter", "instance=~\"db-.*\"")]))?;
        assert!(!view.listed(&other));
        let receiver = AlertFilter::from_query(&query(&[("receiver", "te.*")]))?;
        assert!(view.listed(&receiver));
        let json = view.to_json(2_000);
        assert_eq!(json["status"]["state"], "suppressed");
        assert_eq!(json["status"]["silencedBy"][0], "s1");
        assert_eq!(json["receivers"][0]["name"], "team");
        assert!(AlertFilter::from_query(&query(&[("active", "maybe")])).is_err());
        assert!(AlertFilter::from_query(&query(&[("filter", "nope")])).is_err());
        Ok(())
    }
}
