//! Vigil's webhook payload beside Alertmanager 0.25's (Debian's
//! `prometheus-alertmanager`): the same routing and the same alert, sent by
//! both to local receivers, compared field by field (times and URLs aside).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, WebhookReceiver, start_alertmanager, wait_for};

fn routing(url: &str) -> String {
    format!(
        "route:\n  receiver: team\n  group_by: [alertname, severity]\n  group_wait: 1s\n  group_interval: 5m\n  routes:\n    - matchers: ['severity=\"page\"']\n      receiver: pager\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: {url}\n  - name: pager\n    webhook_configs:\n      - url: {url}\n        max_alerts: 1\n"
    )
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[test]
fn vigil_sends_what_alertmanager_sends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ours = WebhookReceiver::start(|_| 200)?;
    let theirs = WebhookReceiver::start(|_| 200)?;

    // Alertmanager with the routing, and the alert posted to it.
    let (_am, am) = start_alertmanager(dir.path(), &routing(&theirs.url()))?;
    let alerts = r#"[
      {"labels": {"alertname": "DiskFull", "severity": "page", "instance": "db-1", "job": "node"},
       "annotations": {"summary": "disk full on db-1"}, "generatorURL": "http://x/graph"},
      {"labels": {"alertname": "DiskFull", "severity": "page", "instance": "db-2", "job": "node"},
       "annotations": {"summary": "disk full on db-2"}, "generatorURL": "http://x/graph"},
      {"labels": {"alertname": "Slow", "severity": "warning", "instance": "web-1", "job": "node"},
       "annotations": {"summary": "slow"}, "generatorURL": "http://x/graph"}
    ]"#;
    ensure!(
        vigil_tests::http_post_json(am, "/api/v2/alerts", alerts)?.0 == 200,
        "alertmanager refused the alerts"
    );

    // Vigil with the same routing and rules that fire the same alerts.
    std::fs::write(dir.path().join("routing.yml"), routing(&ours.url()))?;
    std::fs::write(
        dir.path().join("same.yml"),
        "groups:\n  - name: same\n    interval: 250ms\n    rules:\n      - alert: DiskFull\n        expr: label_replace(vector(1), \"instance\", \"db-1\", \"\", \"\") or label_replace(vector(1), \"instance\", \"db-2\", \"\", \"\")\n        labels: { severity: page, job: node }\n        annotations: { summary: 'disk full on {{ $labels.instance }}' }\n      - alert: Slow\n        expr: label_replace(vector(1), \"instance\", \"web-1\", \"\", \"\")\n        labels: { severity: warning, job: node }\n        annotations: { summary: slow }\n",
    )?;
    let _collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nhost_down = false\n[notify]\nalertmanager_config = \"{}\"\n",
            dir.path().join("same.yml").display(),
            dir.path().join("routing.yml").display()
        ),
    )?;

    let by_receiver = |r: &WebhookReceiver| -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = r
            .requests()
            .iter()
            .map(|q| serde_json::from_str(&q.body).unwrap_or_default())
            .collect();
        v.sort_by_key(|b| b["groupKey"].to_string());
        v
    };
    wait_for(
        "both to notify both groups",
        Duration::from_secs(30),
        || (by_receiver(&ours).len() >= 2 && by_receiver(&theirs).len() >= 2).then_some(()),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (ours, theirs) = (by_receiver(&ours), by_receiver(&theirs));
    ensure!(
        ours.len() == 2 && theirs.len() == 2,
        "notifications: vigil {}, alertmanager {}",
        ours.len(),
        theirs.len()
    );
    for (o, t) in ours.iter().zip(&theirs) {
        ensure!(
            keys(o) == keys(t),
            "top-level fields differ: {:?} vs {:?}",
            keys(o),
            keys(t)
        );
        for field in [
            "receiver",
            "status",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "version",
            "groupKey",
            "truncatedAlerts",
        ] {
            ensure!(
                o[field] == t[field],
                "{field}: vigil {} vs alertmanager {}",
                o[field],
                t[field]
            );
        }
        let (oa, ta) = (
            o["alerts"].as_array().cloned().unwrap_or_default(),
            t["alerts"].as_array().cloned().unwrap_or_default(),
        );
        ensure!(oa.len() == ta.len(), "alerts: {} vs {}", oa.len(), ta.len());
        for (x, y) in oa.iter().zip(&ta) {
            ensure!(
                keys(x) == keys(y),
                "alert fields differ: {:?} vs {:?}",
                keys(x),
                keys(y)
            );
            for field in ["status", "labels", "annotations", "fingerprint", "endsAt"] {
                ensure!(
                    x[field] == y[field],
                    "alert {field}: vigil {} vs alertmanager {}",
                    x[field],
                    y[field]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn forwarded_alerts_reach_the_webhook_behind_a_real_alertmanager() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let behind = WebhookReceiver::start(|_| 200)?;
    let (_am, am) = start_alertmanager(
        dir.path(),
        &format!(
            "route:\n  receiver: hook\n  group_wait: 1s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n",
            behind.url()
        ),
    )?;
    std::fs::write(
        dir.path().join("fwd.yml"),
        "groups:\n  - name: fwd\n    interval: 250ms\n    rules:\n      - alert: Forwarded\n        expr: vector(1)\n        labels: { severity: page }\n        annotations: { summary: 'from vigil' }\n",
    )?;
    let collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nhost_down = false\nexternal_labels = {{ cluster = \"eu-1\" }}\n[notify]\nforward_to = [\"http://{am}\"]\n",
            dir.path().join("fwd.yml").display()
        ),
    )?;
    let got = wait_for(
        "the alert, through alertmanager",
        Duration::from_secs(30),
        || behind.requests().into_iter().next(),
    )
    .with_context(|| collector.process.log())?;
    let body: serde_json::Value = serde_json::from_str(&got.body)?;
    let alert = &body["alerts"][0];
    ensure!(alert["labels"]["alertname"] == "Forwarded", "{}", got.body);
    ensure!(
        alert["labels"]["cluster"] == "eu-1",
        "external labels are added: {}",
        got.body
    );
    ensure!(alert["annotations"]["summary"] == "from vigil");
    ensure!(alert["status"] == "firing");
    let scrape = collector.scrape()?;
    ensure!(
        scrape
            .value(
                "vigil_collector_forwarded_alerts_total",
                &[("alertmanager", &format!("http://{am}"))]
            )
            .is_some_and(|n| n >= 1.0)
    );
    Ok(())
}
