//! Routing, grouping and deduplication, as Alertmanager's dispatcher does
//! them: every alert goes to the routes it matches; alerts of a route with
//! the same `group_by` labels form a group; a group's first notification
//! waits `group_wait`, later ones go at most every `group_interval`, and an
//! unchanged group is repeated every `repeat_interval`. What was last sent
//! for each group and webhook (the notification log) decides whether a flush
//! sends anything. Silenced and inhibited alerts are left out; a route's
//! `mute_time_intervals` / `active_time_intervals` mute it.
//!
//! This module decides; [`super::outbox`] stores and [`super::sender`]
//! delivers. It holds no I/O, so every rule above is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::config::{GroupBy, InhibitRule, NotifyConfig, Route};
use super::payload::{Kv, NotifyAlert, labelset_string, sort_alerts, webhook_body};

/// What was last sent for a group to one webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Fingerprints firing at the last notification.
    pub firing: BTreeSet<u64>,
    /// Fingerprints resolved at the last notification.
    pub resolved: BTreeSet<u64>,
    /// When it was sent (ms).
    pub at: i64,
}

/// The notification log: `group key / receiver / webhook index` → entry.
pub type NotificationLog = BTreeMap<String, LogEntry>;

/// A notification ready to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique; sent as the idempotency key on every try.
    pub id: String,
    /// Receiver name.
    pub receiver: String,
    /// Index of the webhook in the receiver.
    pub webhook: usize,
    /// Group key.
    pub group_key: String,
    /// JSON body.
    pub body: String,
    /// When it was created (ms).
    pub created_ms: i64,
    /// When each firing alert in it started firing (ms), for latency.
    pub fired_at: Vec<(String, i64)>,
    /// The route's fallback receiver and after how long (ms) it takes over.
    #[serde(default)]
    pub fallback: Option<(String, i64)>,
    /// The alerts, for a fallback receiver's body.
    #[serde(default)]
    pub alerts: Vec<NotifyAlert>,
    /// The group's labels.
    #[serde(default)]
    pub group_labels: Kv,
}

#[derive(Debug, Clone)]
struct Group {
    key: String,
    receiver: String,
    fallback: Option<(String, i64)>,
    labels: Kv,
    alerts: BTreeMap<u64, NotifyAlert>,
    group_wait_ms: i64,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
    mute: Vec<String>,
    active: Vec<String>,
    next_flush: i64,
    flushed: bool,
}

/// The dispatcher's state.
#[derive(Debug, Default)]
pub struct Dispatcher {
    groups: BTreeMap<String, Group>,
    sequence: u64,
}

/// Labels of an alert that `group_by` keeps.
fn group_labels(group_by: &GroupBy, labels: &Kv) -> Kv {
    match group_by {
        GroupBy::All => labels.clone(),
        GroupBy::Labels(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    }
}

/// True when an inhibition rule mutes `target` given the firing `alerts`.
pub fn inhibited(rules: &[InhibitRule], target: &NotifyAlert, alerts: &[&NotifyAlert]) -> bool {
    !inhibitors(rules, target, alerts).is_empty()
}

/// The firing `alerts` that mute `target` through an inhibition rule.
pub fn inhibitors<'a>(
    rules: &[InhibitRule],
    target: &NotifyAlert,
    alerts: &[&'a NotifyAlert],
) -> Vec<&'a NotifyAlert> {
    let applies = |r: &InhibitRule| r.target.iter().all(|m| m.matches(&target.labels));
    let inhibits = |r: &InhibitRule, source: &NotifyAlert| {
        !source.resolved()
            && r.source.iter().all(|m| m.matches(&source.labels))
            // An alert that matches both sides does not inhibit itself.
            && source.labels != target.labels
            && r
                .equal
                .iter()
                .all(|l| source.labels.get(l) == target.labels.get(l))
    };
    alerts
        .iter()
        .filter(|source| rules.iter().any(|r| applies(r) && inhibits(r, source)))
        .copied()
        .collect()
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Groups held.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Takes the current alerts (firing, and resolved ones not yet
    /// forgotten) and files them into the groups of the routes they match.
    pub fn update(&mut self, config: &NotifyConfig, alerts: &[NotifyAlert], now: i64) {
        let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
        for alert in alerts {
            let fp = alert.fingerprint();
            for route in config.route.find(&alert.labels) {
                let labels = group_labels(&route.group_by, &alert.labels);
                let key = format!("{}:{}", route.key, labelset_string(&labels));
                // Groups are kept per route (its position), not per key:
                // sibling routes with the same matchers share a key.
                let slot = format!("{}\u{0}{key}", route.id);
                seen.insert((slot.clone(), fp));
                let group = self
                    .groups
                    .entry(slot)
                    .or_insert_with(|| new_group(route, key.clone(), labels, now));
                // A group that has not sent yet and holds an alert older than
                // group_wait flushes at once (as Alertmanager does).
                if !group.flushed && alert.starts_at + group.group_wait_ms < now {
                    group.next_flush = group.next_flush.min(now);
                }
                group.alerts.insert(fp, alert.clone());
            }
        }
        // An alert that vanished while firing (its rule was removed) resolves now.
        for (slot, group) in self.groups.iter_mut() {
            for (fp, a) in group.alerts.iter_mut() {
                if !a.resolved() && !seen.contains(&(slot.clone(), *fp)) {
                    a.ends_at = Some(now);
                }
            }
        }
    }

    /// When the next group is due (ms), if any.
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// Flushes every group due at `now`: the notifications to send, with
    /// `log` updated as if they were sent (the outbox guarantees they will
    /// be). `muted` says whether a named time interval holds now;
    /// `silenced` whether an alert is silenced.
    pub fn flush_due(
        &mut self,
        config: &NotifyConfig,
        log: &mut NotificationLog,
        now: i64,
        external_url: &str,
        silenced: &dyn Fn(&NotifyAlert) -> bool,
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        let all_alerts: Vec<NotifyAlert> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.values().cloned())
            .collect();
        let all_refs: Vec<&NotifyAlert> = all_alerts.iter().collect();
        let mut empty = Vec::new();
        for (slot, group) in self.groups.iter_mut() {
            if group.next_flush > now {
                continue;
            }
            group.next_flush = now + group.group_interval_ms;
            group.flushed = true;
            let muted_by_time = group.mute.iter().any(|n| interval_holds(config, n, now))
                || (!group.active.is_empty()
                    && !group.active.iter().any(|n| interval_holds(config, n, now)));
            let mut alerts: Vec<NotifyAlert> = group
                .alerts
                .values()
                .filter(|a| !silenced(a) && !inhibited(&config.inhibit_rules, a, &all_refs))
                .cloned()
                .collect();
            sort_alerts(&mut alerts);
            let firing: BTreeSet<u64> = alerts
                .iter()
                .filter(|a| !a.resolved())
                .map(NotifyAlert::fingerprint)
                .collect();
            let resolved: BTreeSet<u64> = alerts
                .iter()
                .filter(|a| a.resolved())
                .map(NotifyAlert::fingerprint)
                .collect();
            if !muted_by_time && let Some(receiver) = config.receivers.get(&group.receiver) {
                for (i, webhook) in receiver.webhooks.iter().enumerate() {
                    let log_key = format!("{}/{}/{i}", group.key, receiver.name);
                    let entry = log.get(&log_key);
                    if !needs_update(
                        entry,
                        &firing,
                        &resolved,
                        webhook.send_resolved,
                        group.repeat_interval_ms,
                        now,
                    ) {
                        continue;
                    }
                    let payload: Vec<NotifyAlert> = alerts
                        .iter()
                        .filter(|a| webhook.send_resolved || !a.resolved())
                        .cloned()
                        .collect();
                    log.insert(
                        log_key,
                        LogEntry {
                            firing: firing.clone(),
                            resolved: resolved.clone(),
                            at: now,
                        },
                    );
                    if payload.is_empty() {
                        continue;
                    }
                    self.sequence += 1;
                    let body = render_body(
                        webhook,
                        &receiver.name,
                        &group.key,
                        &group.labels,
                        &payload,
                        external_url,
                    );
                    out.push(Notification {
                        id: format!("{now:x}-{:x}-{i}", self.sequence),
                        receiver: receiver.name.clone(),
                        webhook: i,
                        group_key: group.key.clone(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        created_ms: now,
                        fired_at: payload
                            .iter()
                            .filter(|a| !a.resolved())
                            .map(|a| {
                                (
                                    a.labels.get("alertname").cloned().unwrap_or_default(),
                                    a.fired_sample_ms.unwrap_or(a.starts_at),
                                )
                            })
                            .collect(),
                        fallback: group.fallback.clone(),
                        alerts: payload.clone(),
                        group_labels: group.labels.clone(),
                    });
                }
            }
            // Resolved alerts leave the group once flushed; an empty group goes.
            group.alerts.retain(|_, a| !a.resolved());
            if group.alerts.is_empty() {
                empty.push(slot.clone());
            }
        }
        for key in empty {
            self.groups.remove(&key);
        }
        out
    }
}

/// A webhook's body: its Vigil template when it has one, else
/// Alertmanager's JSON.
pub fn render_body(
    webhook: &super::config::Webhook,
    receiver: &str,
    group_key: &str,
    group_labels: &Kv,
    alerts: &[NotifyAlert],
    external_url: &str,
) -> Vec<u8> {
    let json = webhook_body(
        receiver,
        group_key,
        group_labels,
        alerts,
        external_url,
        webhook.max_alerts,
    );
    match &webhook.body {
        None => json,
        Some((_, template)) => {
            let data: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
            template
                .render_json(&data)
                .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
                .into_bytes()
        }
    }
}

fn new_group(route: &Route, key: String, labels: Kv, now: i64) -> Group {
    Group {
        key,
        receiver: route.receiver.clone(),
        fallback: route.fallback.clone(),
        labels,
        alerts: BTreeMap::new(),
        group_wait_ms: route.group_wait_ms,
        group_interval_ms: route.group_interval_ms,
        repeat_interval_ms: route.repeat_interval_ms,
        mute: route.mute_time_intervals.clone(),
        active: route.active_time_intervals.clone(),
        next_flush: now + route.group_wait_ms,
        flushed: false,
    }
}

fn interval_holds(config: &NotifyConfig, name: &str, now: i64) -> bool {
    config
        .time_intervals
        .get(name)
        .is_some_and(|t| t.intervals.iter().any(|i| i.contains(now)))
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat_ms: i64,
    now: i64,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        // Everything resolved: tell the receiver if it knew of firing alerts.
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    entry.at + repeat_ms <= now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn config(extra_route: &str) -> NotifyConfig {
        let text = format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 10s\n  group_interval: 1m\n  repeat_interval: 1h\n{extra_route}\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:1/\ninhibit_rules:\n  - source_matchers: ['severity=\"page\"']\n    target_matchers: ['severity=\"warn\"']\n    equal: [instance]\n"
        );
        match parse(Path::new("am.yml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn alert(
        name: &str,
        instance: &str,
        severity: &str,
        starts: i64,
        ends: Option<i64>,
    ) -> NotifyAlert {
        NotifyAlert {
            labels: [
                ("alertname", name),
                ("instance", instance),
                ("severity", severity),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: Kv::new(),
            starts_at: starts,
            ends_at: ends,
            generator_url: String::new(),
            fired_sample_ms: None,
        }
    }

    fn flush(
        d: &mut Dispatcher,
        c: &NotifyConfig,
        log: &mut NotificationLog,
        now: i64,
    ) -> Vec<serde_json::Value> {
        d.flush_due(c, log, now, "http://vigil", &|_| false)
            .into_iter()
            .map(|n| serde_json::from_str(&n.body).unwrap_or_default())
            .collect()
    }

    #[test]
    fn group_wait_then_group_interval_then_repeat() {
        let c = config("");
        let mut d = Dispatcher::new();
        let mut log = NotificationLog::new();
        d.update(&c, &[alert("Hot", "a", "warn", 0, None)], 0);
        assert!(flush(&mut d, &c, &mut log, 5_000).is_empty(), "group_wait");
        let sent = flush(&mut d, &c, &mut log, 10_000);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["groupKey"], "{}:{alertname=\"Hot\"}");
        // A second alert joins the group: sent at the next group_interval.
        d.update(
            &c,
            &[
                alert("Hot", "a", "warn", 0, None),
                alert("Hot", "b", "warn", 20_000, None),
            ],
            20_000,
        );
        assert!(flush(&mut d, &c, &mut log, 30_000).is_empty());
        let sent = flush(&mut d, &c, &mut log, 70_000);
        assert_eq!(sent[0]["alerts"].as_array().map(Vec::len), Some(2));
        // Nothing changes: nothing until repeat_interval.
        assert!(flush(&mut d, &c, &mut log, 130_000).is_empty());
        let repeat = 70_000 + 3_600_000;
        d.update(
            &c,
            &[
                alert("Hot", "a", "warn", 0, None),
                alert("Hot", "b", "warn", 20_000, None),
            ],
            repeat,
        );
        let mut t = 130_000;
        let mut repeated = 0;
        while t <= repeat + 60_000 {
            repeated += flush(&mut d, &c, &mut log, t).len();
            t += 60_000;
        }
        assert_eq!(repeated, 1, "one repeat after an hour");
        // Resolution: one resolved notification, then the group is gone.
        d.update(
            &c,
            &[
                alert("Hot", "a", "warn", 0, Some(t)),
                alert("Hot", "b", "warn", 20_000, Some(t)),
            ],
            t,
        );
        let sent = flush(&mut d, &c, &mut log, t + 60_000);
        assert_eq!(sent[0]["status"], "resolved");
        assert_eq!(d.group_count(), 0);
    }

    #[test]
    fn inhibition_and_silences_leave_alerts_out() {
        let c = config("");
        let mut d = Dispatcher::new();
        let mut log = NotificationLog::new();
        let page = alert("Down", "a", "page", 0, None);
        let warn_a = alert("Slow", "a", "warn", 0, None);
        let warn_b = alert("Slow", "b", "warn", 0, None);
        d.update(&c, &[page, warn_a, warn_b], 20_000);
        let sent = d.flush_due(&c, &mut log, 20_000, "", &|a| {
            a.labels.get("alertname").is_some_and(|n| n == "Down")
        });
        assert_eq!(
            sent.len(),
            1,
            "Down is silenced; Slow a is inhibited by Down a"
        );
        let body: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap_or_default();
        assert_eq!(body["alerts"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["alerts"][0]["labels"]["instance"], "b");
    }
}
