//! End to end: alerts from a real agent's data reach a local webhook
//! receiver through the collector's routing and durable outbox.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{
    Collector, WebhookReceiver, free_port, http_get, require_peer, start_agent, wait_for,
};

/// A rule on `demo_value`, fired as soon as it is above 3.
const RULES: &str = "groups:\n  - name: demo\n    interval: 250ms\n    rules:\n      - alert: DemoHigh\n        expr: demo_value > 3\n        labels:\n          severity: page\n        annotations:\n          summary: 'demo is {{ $value }}'\n";

fn routing(url: &str) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n"
    )
}

/// Files and config for a collector with the demo rule and routing.
fn collector_config(dir: &Path, url: &str, extra_notify: &str) -> Result<String> {
    std::fs::write(dir.join("demo.rules.yml"), RULES)?;
    std::fs::write(dir.join("routing.yml"), routing(url))?;
    Ok(format!(
        "[rules]\nfiles = [\"{}\"]\nevaluation_interval = \"250ms\"\nhost_down = false\n[notify]\nalertmanager_config = \"{}\"\nretry_initial = \"200ms\"\n{extra_notify}\n",
        dir.join("demo.rules.yml").display(),
        dir.join("routing.yml").display()
    ))
}

fn set_value(dir: &Path, v: f64) -> Result<()> {
    let tmp = dir.join("textfile/demo.prom.tmp");
    std::fs::write(&tmp, format!("# TYPE demo_value gauge\ndemo_value {v}\n"))?;
    std::fs::rename(&tmp, dir.join("textfile/demo.prom"))?;
    Ok(())
}

fn start_demo_agent(dir: &Path, collector: &Collector) -> Result<vigil_tests::Process> {
    std::fs::create_dir_all(dir.join("textfile"))?;
    start_agent(
        dir,
        "agent",
        &format!(
            "instance = \"demo-host\"\nsample_interval = \"250ms\"\nflush_interval = \"500ms\"\n[collector]\nendpoint = \"http://{}\"\n[sources.textfile]\ndirectory = \"{}\"\n",
            collector.ingest,
            dir.join("textfile").display()
        ),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_default()
}

#[test]
fn a_threshold_crossed_on_a_host_notifies_firing_then_resolved() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = WebhookReceiver::start(|_| 200)?;
    set_value(dir.path(), 1.0).or_else(|_| {
        std::fs::create_dir_all(dir.path().join("textfile"))?;
        set_value(dir.path(), 1.0)
    })?;
    let secret = "webhook-signing-secret-0123";
    let collector = Collector::start_with(
        dir.path(),
        &collector_config(
            dir.path(),
            &receiver.url(),
            &format!("retry_max = \"1s\"\nsigning_secret = \"{secret}\""),
        )?,
    )?;
    let _agent = start_demo_agent(dir.path(), &collector)?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        receiver.requests().is_empty(),
        "notified before the threshold was crossed"
    );

    set_value(dir.path(), 7.0)?;
    let firing = wait_for("the firing notification", Duration::from_secs(20), || {
        receiver.requests().into_iter().next()
    })
    .with_context(|| collector.process.log())?;
    let body = json(&firing.body);
    ensure!(
        body["version"] == "4" && body["status"] == "firing",
        "{}",
        firing.body
    );
    ensure!(body["receiver"] == "hook");
    ensure!(
        body["groupKey"] == "{}:{alertname=\"DemoHigh\"}",
        "{}",
        body["groupKey"]
    );
    ensure!(body["alerts"][0]["labels"]["instance"] == "demo-host");
    ensure!(body["alerts"][0]["annotations"]["summary"] == "demo is 7");
    ensure!(body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z");

    // The alert's link leads to its expression's current value.
    let link = body["alerts"][0]["generatorURL"]
        .as_str()
        .context("no generatorURL")?;
    let path = &link[link.find("/graph?").context(link.to_string())?..];
    let (status, _, see) = http_get(collector.http, path, None)?;
    ensure!(status == 303, "{path}: {status} {see}");
    let query_path = see
        .trim()
        .strip_prefix("See ")
        .context(see.clone())?
        .to_string();
    ensure!(
        query_path == "/api/v1/query?query=demo_value+%3E+3",
        "{query_path}"
    );
    let (status, _, answer) = http_get(collector.http, &query_path, None)?;
    let answer = json(&answer);
    ensure!(status == 200 && answer["status"] == "success", "{answer}");
    ensure!(answer["data"]["result"][0]["value"][1] == "7", "{answer}");
    let (status, _, _) = http_get(collector.http, "/graph", None)?;
    ensure!(status == 400, "/graph without an expression: {status}");
    ensure!(
        firing.headers.contains_key("idempotency-key"),
        "{:?}",
        firing.headers
    );

    // The signature verifies with the secret, as a receiver would check it.
    let signature = firing
        .headers
        .get("x-vigil-signature")
        .context("no X-Vigil-Signature")?;
    let (t, v1) = signature
        .split_once(",v1=")
        .and_then(|(t, v)| t.strip_prefix("t=").map(|t| (t, v)))
        .context("signature format")?;
    let openssl = require_peer("openssl", "openssl")?;
    let mut child = std::process::Command::new(openssl)
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(format!("{t}.{}", firing.body).as_bytes())?;
    }
    let out = String::from_utf8(child.wait_with_output()?.stdout)?;
    ensure!(
        out.trim().ends_with(v1),
        "signature {v1} does not verify: {out}"
    );

    set_value(dir.path(), 1.0)?;
    let resolved = wait_for("the resolved notification", Duration::from_secs(20), || {
        receiver
            .requests()
            .into_iter()
            .find(|r| json(&r.body)["status"] == "resolved")
    })?;
    let body = json(&resolved.body);
    ensure!(body["alerts"][0]["status"] == "resolved");
    ensure!(body["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z");
    std::thread::sleep(Duration::from_secs(3));
    let all = receiver.requests();
    ensure!(
        all.len() == 2,
        "expected one firing and one resolved notification, got {}: {:?}",
        all.len(),
        all.iter()
            .map(|r| json(&r.body)["status"].clone())
            .collect::<Vec<_>>()
    );
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value(
            "vigil_collector_notifications_sent_total",
            &[("receiver", "hook")]
        ) == Some(2.0)
    );
    ensure!(
        scrape.value(
            "vigil_collector_notification_latency_seconds_count",
            &[("rule", "DemoHigh")]
        ) == Some(1.0)
    );
    Ok(())
}

#[test]
fn a_receiver_failing_for_a_minute_gets_the_notification_once_with_one_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("textfile"))?;
    set_value(dir.path(), 9.0)?;
    let started = std::time::Instant::now();
    let receiver = WebhookReceiver::start(move |_| {
        if started.elapsed() < Duration::from_secs(60) {
            500
        } else {
            200
        }
    })?;
    let collector = Collector::start_with(
        dir.path(),
        &collector_config(dir.path(), &receiver.url(), "retry_max = \"2s\"")?,
    )?;
    let _agent = start_demo_agent(dir.path(), &collector)?;
    let delivered = wait_for(
        "delivery after the receiver recovers",
        Duration::from_secs(90),
        || receiver.requests().into_iter().find(|r| r.status == 200),
    )?;
    std::thread::sleep(Duration::from_secs(4));
    let all = receiver.requests();
    let ok: Vec<_> = all.iter().filter(|r| r.status == 200).collect();
    ensure!(ok.len() == 1, "delivered {} times", ok.len());
    // Retries back off, and after 5 failures in a row the receiver's circuit
    // breaker holds its notifications for 30 s: a handful of tries.
    ensure!(all.len() >= 4, "only {} tries in a minute", all.len());
    let key = delivered
        .headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_default();
    ensure!(!key.is_empty());
    ensure!(
        all.iter()
            .all(|r| r.headers.get("idempotency-key") == Some(&key)),
        "the idempotency key changed between tries"
    );
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value(
            "vigil_collector_notifications_sent_total",
            &[("receiver", "hook")]
        ) == Some(1.0)
    );
    ensure!(
        scrape
            .value(
                "vigil_collector_notifications_retried_total",
                &[("receiver", "hook")]
            )
            .is_some_and(|n| n >= 3.0)
    );
    Ok(())
}

#[test]
fn a_notification_waiting_for_a_retry_survives_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("textfile"))?;
    set_value(dir.path(), 9.0)?;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    let receiver = WebhookReceiver::start(move |_| {
        if flag.load(Ordering::Relaxed) {
            200
        } else {
            503
        }
    })?;
    let (http, ingest) = (free_port()?, free_port()?);
    let config = collector_config(dir.path(), &receiver.url(), "retry_max = \"1s\"")?;
    let collector = Collector::start(dir.path(), "collector", http, ingest, "", &config)?;
    let agent = start_demo_agent(dir.path(), &collector)?;
    wait_for("a first, failed try", Duration::from_secs(20), || {
        (!receiver.requests().is_empty()).then_some(())
    })?;
    // Stop the data so that only the outbox can deliver the alert.
    drop(agent);
    let key = receiver.requests()[0]
        .headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_default();
    drop(collector); // SIGKILL while the notification waits for its retry
    healthy.store(true, Ordering::Relaxed);
    let before = receiver.requests().len();
    let _collector = Collector::start(dir.path(), "collector", http, ingest, "", &config)?;
    let delivered = wait_for(
        "delivery after the restart",
        Duration::from_secs(20),
        || {
            receiver
                .requests()
                .into_iter()
                .skip(before)
                .find(|r| r.status == 200)
        },
    )?;
    ensure!(
        delivered.headers.get("idempotency-key") == Some(&key),
        "a new notification instead of the one in the outbox"
    );
    Ok(())
}

#[test]
fn a_silence_mutes_survives_a_restart_and_expires_on_delete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("textfile"))?;
    set_value(dir.path(), 1.0)?;
    let receiver = WebhookReceiver::start(|_| 200)?;
    let (http, ingest) = (free_port()?, free_port()?);
    let config = collector_config(dir.path(), &receiver.url(), "")?;
    let collector = Collector::start(dir.path(), "collector", http, ingest, "", &config)?;
    let silence = r#"{"matchers":[{"name":"alertname","value":"DemoHigh","isRegex":false,"isEqual":true}],
        "startsAt":"2020-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"ops","comment":"maintenance"}"#;
    let (status, body) = vigil_tests::http_post_json(collector.http, "/api/v2/silences", silence)?;
    ensure!(status == 200, "{status} {body}");
    let id = serde_json::from_str::<serde_json::Value>(&body)?["silenceID"]
        .as_str()
        .context("no silenceID")?
        .to_string();
    let _agent = start_demo_agent(dir.path(), &collector)?;
    set_value(dir.path(), 7.0)?;
    wait_for("the alert to fire", Duration::from_secs(20), || {
        collector.scrape().ok()?.value(
            "ALERTS",
            &[("alertname", "DemoHigh"), ("alertstate", "firing")],
        )
    })?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        receiver.requests().is_empty(),
        "a silenced alert was notified"
    );

    drop(collector); // SIGKILL: the silence is on disk
    let collector = Collector::start(dir.path(), "collector", http, ingest, "", &config)?;
    let (status, list) =
        vigil_tests::http_get(collector.http, "/api/v2/silences", None).map(|(s, _, b)| (s, b))?;
    ensure!(
        status == 200 && list.contains(&id) && list.contains("\"active\""),
        "{list}"
    );
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        receiver.requests().is_empty(),
        "the silence was lost in the restart"
    );

    let (status, _, _) = vigil_tests::http_request(
        collector.http,
        "DELETE",
        &format!("/api/v2/silence/{id}"),
        &[],
    )?;
    ensure!(status == 200, "expire: {status}");
    let (status, _, _) =
        vigil_tests::http_request(collector.http, "DELETE", "/api/v2/silence/nope", &[])?;
    ensure!(status == 404);
    wait_for(
        "the notification once the silence expired",
        Duration::from_secs(20),
        || receiver.requests().into_iter().next(),
    )?;
    Ok(())
}

#[test]
fn a_route_falls_back_when_its_receiver_keeps_failing_with_a_templated_body() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("textfile"))?;
    set_value(dir.path(), 9.0)?;
    let primary = WebhookReceiver::start(|_| 500)?;
    let backup = WebhookReceiver::start(|_| 200)?;
    std::fs::write(dir.path().join("demo.rules.yml"), RULES)?;
    std::fs::write(
        dir.path().join("routing.yml"),
        format!(
            "route:\n  receiver: primary\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  vigil:\n    fallback: backup\n    fallback_after: 2s\nreceivers:\n  - name: primary\n    webhook_configs:\n      - url: {}\n  - name: backup\n    webhook_configs:\n      - url: {}\n        vigil:\n          body: '{{\"text\": \"{{{{ .Status }}}}: {{{{ range .Alerts }}}}{{{{ .Labels.alertname }}}} on {{{{ .Labels.instance }}}} {{{{ end }}}}\"}}'\n",
            primary.url(),
            backup.url()
        ),
    )?;
    let config = format!(
        "[rules]\nfiles = [\"{}\"]\nevaluation_interval = \"250ms\"\nhost_down = false\n[notify]\nalertmanager_config = \"{}\"\nretry_initial = \"200ms\"\nretry_max = \"500ms\"\n",
        dir.path().join("demo.rules.yml").display(),
        dir.path().join("routing.yml").display()
    );
    let collector = Collector::start_with(dir.path(), &config)?;
    let _agent = start_demo_agent(dir.path(), &collector)?;
    let got = wait_for("the fallback receiver", Duration::from_secs(30), || {
        backup.requests().into_iter().next()
    })
    .with_context(|| collector.process.log())?;
    ensure!(
        got.body == "{\"text\": \"firing: DemoHigh on demo-host \"}",
        "body: {}",
        got.body
    );
    ensure!(
        primary.requests().len() >= 2,
        "the primary was not tried first"
    );
    let first_try = primary.requests()[0].at;
    ensure!(
        got.at.duration_since(first_try) >= Duration::from_secs(2),
        "fell back before fallback_after"
    );
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value(
            "vigil_collector_notifications_fallback_total",
            &[("receiver", "primary")]
        ) == Some(1.0)
    );
    Ok(())
}

#[test]
fn notify_test_sends_a_sample_and_says_what_happened() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = WebhookReceiver::start(|_| 200)?;
    let bad = WebhookReceiver::start(|_| 400)?;
    std::fs::write(
        dir.path().join("routing.yml"),
        format!(
            "route:\n  receiver: good\nreceivers:\n  - name: good\n    webhook_configs:\n      - url: {}\n  - name: bad\n    webhook_configs:\n      - url: {}\n",
            good.url(),
            bad.url()
        ),
    )?;
    std::fs::write(
        dir.path().join("collector.toml"),
        "[notify]\nalertmanager_config = \"routing.yml\"\n",
    )?;
    let binary = vigil_tests::binary("vigil-collector")?;
    let run = |receiver: &str| -> Result<(i32, String)> {
        let out = std::process::Command::new(&binary)
            .args([
                "--config",
                "collector.toml",
                "notify",
                "test",
                "--receiver",
                receiver,
            ])
            .current_dir(dir.path())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (code, out) = run("good")?;
    ensure!(code == 0 && out.contains("delivered (2xx)"), "{out}");
    let got = good.requests();
    ensure!(
        got.len() == 1 && json(&got[0].body)["alerts"][0]["labels"]["alertname"] == "VigilTest"
    );
    let (code, out) = run("bad")?;
    ensure!(code == 1 && out.contains("refused with HTTP 400"), "{out}");
    let (code, out) = run("nobody")?;
    ensure!(code != 0 && out.contains("no receiver \"nobody\""), "{out}");
    Ok(())
}

/// Runs Debian's `amtool` against the collector; its stdout, or the error.
fn amtool(collector: &Collector, http_config: &Path, args: &[&str]) -> Result<String> {
    let amtool = require_peer("amtool", "prometheus-alertmanager")?;
    let out = std::process::Command::new(amtool)
        .arg(format!("--alertmanager.url=http://{}", collector.http))
        .arg(format!("--http.config.file={}", http_config.display()))
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "amtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn amtool_adds_updates_lists_and_expires_silences_and_queries_alerts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let receiver = WebhookReceiver::start(|_| 200)?;
    std::fs::write(
        dir.path().join("always.rules.yml"),
        "groups:\n  - name: g\n    interval: 250ms\n    rules:\n      - alert: AlwaysOn\n        expr: vector(1)\n        labels:\n          severity: page\n        annotations:\n          summary: always\n",
    )?;
    std::fs::write(dir.path().join("routing.yml"), routing(&receiver.url()))?;
    let token = "admin-token-for-amtool-0123";
    let collector = Collector::start_with_http(
        dir.path(),
        &format!("admin_token = \"{token}\""),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nevaluation_interval = \"250ms\"\nhost_down = false\nheartbeat = false\n[notify]\nalertmanager_config = \"{}\"\n",
            dir.path().join("always.rules.yml").display(),
            dir.path().join("routing.yml").display()
        ),
    )?;
    let http_config = dir.path().join("amtool-http.yml");
    std::fs::write(
        &http_config,
        format!("authorization:\n  type: Bearer\n  credentials: {token}\n"),
    )?;
    let wrong = dir.path().join("amtool-wrong.yml");
    std::fs::write(
        &wrong,
        "authorization:\n  type: Bearer\n  credentials: not-the-token-at-all\n",
    )?;
    ensure!(
        amtool(&collector, &wrong, &["silence", "query"]).is_err(),
        "a wrong token was accepted"
    );

    // The alert is listed, active, with its receiver.
    let listed = wait_for("AlwaysOn listed", Duration::from_secs(15), || {
        amtool(
            &collector,
            &http_config,
            &["alert", "query", "-o", "extended"],
        )
        .ok()
        .filter(|out| out.contains("AlwaysOn"))
    })?;
    ensure!(listed.contains("active"), "{listed}");

    let id = amtool(
        &collector,
        &http_config,
        &[
            "silence",
            "add",
            "alertname=AlwaysOn",
            "-c",
            "maintenance",
            "-a",
            "ops",
            "-d",
            "1h",
        ],
    )?
    .trim()
    .to_string();
    ensure!(id.len() >= 16, "silence id {id:?}");
    let query = amtool(&collector, &http_config, &["silence", "query"])?;
    ensure!(
        query.contains(&id) && query.contains("maintenance"),
        "{query}"
    );
    // `silence update` reads the silence (GET /api/v2/silence/{id}) first.
    amtool(
        &collector,
        &http_config,
        &["silence", "update", &id, "--comment", "longer maintenance"],
    )?;
    let query = amtool(
        &collector,
        &http_config,
        &["silence", "query", "-o", "json"],
    )?;
    ensure!(query.contains("longer maintenance"), "{query}");

    // Silenced: hidden by default, listed as suppressed with -s.
    let default = amtool(&collector, &http_config, &["alert", "query"])?;
    ensure!(!default.contains("AlwaysOn"), "{default}");
    let silenced = amtool(&collector, &http_config, &["alert", "query", "-s"])?;
    ensure!(
        silenced.contains("AlwaysOn") && silenced.contains("suppressed"),
        "{silenced}"
    );

    amtool(&collector, &http_config, &["silence", "expire", &id])?;
    let after = amtool(&collector, &http_config, &["alert", "query"])?;
    ensure!(
        after.contains("AlwaysOn") && after.contains("active"),
        "{after}"
    );
    let config = amtool(&collector, &http_config, &["config", "show"])?;
    ensure!(config.contains("routing.yml"), "{config}");
    Ok(())
}

#[test]
fn sibling_continue_routes_with_equal_matchers_all_notify_as_alertmanager_routes_them() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let receivers: Vec<WebhookReceiver> = (0..3)
        .map(|_| WebhookReceiver::start(|_| 200))
        .collect::<Result<_>>()?;
    let mut routing =
        String::from("route:\n  receiver: r0\n  group_wait: 0s\n  group_interval: 1s\n  routes:\n");
    for i in 0..3 {
        routing.push_str(&format!(
            "    - receiver: r{i}\n      matchers: ['severity=\"page\"']\n      continue: true\n"
        ));
    }
    routing.push_str("receivers:\n");
    for (i, r) in receivers.iter().enumerate() {
        routing.push_str(&format!(
            "  - name: r{i}\n    webhook_configs:\n      - url: {}\n",
            r.url()
        ));
    }
    let routing_file = dir.path().join("routing.yml");
    std::fs::write(&routing_file, &routing)?;

    // Alertmanager's own answer for this file.
    let amtool = require_peer("amtool", "prometheus-alertmanager")?;
    let out = std::process::Command::new(amtool)
        .args(["config", "routes", "test", "--config.file"])
        .arg(&routing_file)
        .arg("severity=page")
        .output()?;
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        theirs == "r0,r1,r2",
        "amtool: {theirs:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(
        dir.path().join("page.rules.yml"),
        "groups:\n  - name: g\n    interval: 250ms\n    rules:\n      - alert: Paged\n        expr: vector(1)\n        labels:\n          severity: page\n",
    )?;
    let _collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nevaluation_interval = \"250ms\"\nhost_down = false\n[notify]\nalertmanager_config = \"{}\"\n",
            dir.path().join("page.rules.yml").display(),
            routing_file.display()
        ),
    )?;
    let mut ours = Vec::new();
    for (i, r) in receivers.iter().enumerate() {
        wait_for(&format!("receiver r{i}"), Duration::from_secs(15), || {
            r.requests().into_iter().next()
        })?;
        ours.push(format!("r{i}"));
    }
    ensure!(ours.join(",") == theirs);
    Ok(())
}
