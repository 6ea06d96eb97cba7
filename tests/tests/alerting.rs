//! End to end: rules in a running collector fed by real agents: the built-in
//! host-down alert, alert states across a SIGKILL restart, the real
//! node-exporter rules over a real agent's data, and hot reload.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, Scrape, compat_path, free_port, http_request, start_agent, wait_for};

/// `ALERTS` samples on `/metrics`: (labels, value).
fn alerts(scrape: &Scrape, alertname: &str) -> Vec<BTreeMap<String, String>> {
    scrape
        .samples("ALERTS", &[("alertname", alertname)])
        .into_iter()
        .map(|(l, _)| l)
        .collect()
}

fn agent_config(name: &str, ingest: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "instance = \"{name}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n{extra}\n[collector]\nendpoint = \"http://{ingest}\"\n"
    )
}

#[test]
fn host_down_fires_for_a_killed_agent_and_not_for_one_stopped_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector =
        Collector::start_with(dir.path(), "[rules]\nevaluation_interval = \"500ms\"\n")?;
    let killed = start_agent(
        dir.path(),
        "killed",
        &agent_config("killed", collector.ingest, ""),
    )?;
    let mut stopped = start_agent(
        dir.path(),
        "stopped",
        &agent_config("stopped", collector.ingest, ""),
    )?;
    wait_for("both agents to push", Duration::from_secs(20), || {
        let s = collector.scrape().ok()?;
        (s.value("vigil_agent_samples_total", &[("instance", "killed")])
            .is_some()
            && s.value("vigil_agent_samples_total", &[("instance", "stopped")])
                .is_some())
        .then_some(())
    })?;
    ensure!(
        alerts(&collector.scrape()?, "HostDown").is_empty(),
        "HostDown fired while both agents push"
    );
    let status = stopped.terminate(Duration::from_secs(10))?;
    ensure!(status.success(), "agent did not stop cleanly: {status}");
    drop(killed); // SIGKILL
    let down = wait_for(
        "HostDown for the killed agent",
        Duration::from_secs(20),
        || {
            let a = alerts(&collector.scrape().ok()?, "HostDown");
            (!a.is_empty()).then_some(a)
        },
    )
    .with_context(|| collector.process.log())?;
    ensure!(down.len() == 1, "expected one HostDown alert: {down:?}");
    let alert = &down[0];
    ensure!(
        alert.get("instance").map(String::as_str) == Some("killed"),
        "{alert:?}"
    );
    ensure!(
        alert.get("alertstate").map(String::as_str) == Some("firing"),
        "{alert:?}"
    );
    // Three more flush intervals: the cleanly stopped agent is still not down.
    std::thread::sleep(Duration::from_secs(4));
    let s = collector.scrape()?;
    let down = alerts(&s, "HostDown");
    ensure!(
        down.len() == 1 && down[0].get("instance").map(String::as_str) == Some("killed"),
        "only the killed agent may be down: {down:?}"
    );
    // The last-seen time is in the store as well, for dashboards and queries.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let last = collector.query("vigil_agent_last_push_timestamp_seconds", now)?;
    ensure!(
        last.to_string().contains("\"killed\""),
        "no liveness series for the killed agent: {last}"
    );
    Ok(())
}

#[test]
fn a_pending_alert_survives_a_sigkill_restart_and_fires_on_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("slow.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: slow\n    interval: 500ms\n    rules:\n      - alert: SlowBurn\n        expr: vector(1)\n        for: 8s\n        labels:\n          severity: warning\n",
    )?;
    let (http, ingest) = (free_port()?, free_port()?);
    let rules_section = format!("[rules]\nfiles = [\"{}\"]\n", rules.display());
    let first = Collector::start(dir.path(), "collector", http, ingest, "", &rules_section)?;
    let pending = wait_for("SlowBurn to be pending", Duration::from_secs(10), || {
        let s = first.scrape().ok()?;
        let since = s.value("ALERTS_FOR_STATE", &[("alertname", "SlowBurn")])?;
        (s.value(
            "ALERTS",
            &[("alertname", "SlowBurn"), ("alertstate", "pending")],
        ) == Some(1.0))
        .then_some(since)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    drop(first); // SIGKILL, about 3 s into the 8 s `for`.
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let second = Collector::start(dir.path(), "collector", http, ingest, "", &rules_section)?;
    let s = second.scrape()?;
    ensure!(
        s.value("ALERTS_FOR_STATE", &[("alertname", "SlowBurn")]) == Some(pending),
        "the restart lost how long SlowBurn was pending: {:?} != {pending}\n{}",
        s.value("ALERTS_FOR_STATE", &[("alertname", "SlowBurn")]),
        second.process.log()
    );
    wait_for("SlowBurn to fire", Duration::from_secs(15), || {
        let s = second.scrape().ok()?;
        (s.value(
            "ALERTS",
            &[("alertname", "SlowBurn"), ("alertstate", "firing")],
        ) == Some(1.0))
        .then_some(())
    })?;
    let fired_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    // On time: 8 s after it became active, not 8 s after the restart.
    ensure!(
        fired_at < restarted_at + 7.0,
        "fired {:.1} s after the restart; it was active since {pending}, {:.1} s before it",
        fired_at - restarted_at,
        restarted_at - pending
    );
    // A firing alert stays firing across another restart, with the same start.
    drop(second);
    let third = Collector::start(dir.path(), "collector", http, ingest, "", &rules_section)?;
    for _ in 0..4 {
        let s = third.scrape()?;
        ensure!(
            s.value(
                "ALERTS",
                &[("alertname", "SlowBurn"), ("alertstate", "firing")]
            ) == Some(1.0),
            "SlowBurn is not firing after the second restart"
        );
        ensure!(s.value("ALERTS_FOR_STATE", &[("alertname", "SlowBurn")]) == Some(pending));
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[test]
fn node_exporter_rules_evaluate_without_error_over_a_real_agent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = compat_path("rules/node-exporter.yml")?;
    let collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nevaluation_interval = \"1s\"\n",
            rules.display()
        ),
    )?;
    let _agent = start_agent(
        dir.path(),
        "agent",
        &agent_config("node-1", collector.ingest, ""),
    )?;
    wait_for("the agent's data", Duration::from_secs(20), || {
        collector
            .scrape()
            .ok()?
            .value("vigil_agent_samples_total", &[("instance", "node-1")])
    })?;
    let evaluations = |s: &Scrape| s.value("vigil_collector_rule_group_evaluations_total", &[]);
    let before = evaluations(&collector.scrape()?).unwrap_or(0.0);
    wait_for(
        "three more evaluation rounds",
        Duration::from_secs(20),
        || (evaluations(&collector.scrape().ok()?)? >= before + 3.0).then_some(()),
    )?;
    let s = collector.scrape()?;
    ensure!(
        s.value("vigil_collector_rules", &[]) == Some(36.0),
        "35 rules + HostDown expected"
    );
    ensure!(
        s.value("vigil_collector_rule_evaluation_failures_total", &[]) == Some(0.0),
        "rules failed:\n{}",
        collector.process.log()
    );
    Ok(())
}

#[test]
fn reload_refuses_a_bad_file_keeps_the_old_rules_and_needs_the_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("r.yml");
    let good = "groups:\n  - name: g\n    interval: 200ms\n    rules:\n      - alert: First\n        expr: vector(1)\n";
    std::fs::write(&rules, good)?;
    let token = "admin-token-0123456789";
    let collector = Collector::start_with(
        dir.path(),
        &format!("[rules]\nfiles = [\"{}\"]\n", rules.display()),
    )?;
    // The harness writes [http] itself; the token goes through a second
    // collector config below, so first check the loopback rule: allowed.
    let (status, _, body) = http_request(collector.http, "POST", "/-/reload", &[])?;
    ensure!(
        status == 200,
        "loopback reload without a token set: {status} {body}"
    );

    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    rules:\n      - alert: Second\n        expr: rate(up[5m]\n",
    )?;
    let (status, _, body) = http_request(collector.http, "POST", "/-/reload", &[])?;
    ensure!(status == 400, "a bad file was accepted: {status} {body}");
    ensure!(
        body.contains("r.yml: 5:15: group \"g\", rule 1, \"Second\": could not parse expression"),
        "the error does not say where: {body}"
    );
    let s = collector.scrape()?;
    ensure!(!alerts(&s, "First").is_empty(), "the old rules stopped");
    ensure!(s.value("vigil_collector_rule_reload_failures_total", &[]) == Some(1.0));
    ensure!(s.value("vigil_collector_rule_last_reload_successful", &[]) == Some(0.0));

    // SIGHUP with a fixed file.
    std::fs::write(&rules, good.replace("First", "Third"))?;
    let pid = collector.process.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()?;
    ensure!(kill.success());
    wait_for("the SIGHUP reload", Duration::from_secs(10), || {
        let s = collector.scrape().ok()?;
        (!alerts(&s, "Third").is_empty() && alerts(&s, "First").is_empty()).then_some(())
    })?;
    drop(collector);

    // With an admin token, a request without it is refused.
    let config = dir.path().join("tokened.toml");
    let http = free_port()?;
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nadmin_token = \"{token}\"\n[ingest]\nlisten = \"127.0.0.1:{}\"\n[store]\ndata_dir = \"{}\"\n[rules]\nfiles = [\"{}\"]\n",
            free_port()?,
            dir.path().join("tokened-data").display(),
            rules.display()
        ),
    )?;
    let _tokened = vigil_tests::Process::start(
        "tokened",
        &vigil_tests::binary("vigil-collector")?,
        &["--config", &config.to_string_lossy()],
        dir.path(),
    )?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], http).into();
    wait_for("the tokened collector", Duration::from_secs(20), || {
        vigil_tests::http_get(addr, "/-/ready", None)
            .ok()
            .filter(|r| r.0 == 200)
    })?;
    let (status, _, _) = http_request(addr, "POST", "/-/reload", &[])?;
    ensure!(status == 401, "reload without the token: {status}");
    let (status, _, _) = http_request(
        addr,
        "POST",
        "/-/reload",
        &[("Authorization", "Bearer wrong-token-0123456789")],
    )?;
    ensure!(status == 401, "reload with a wrong token: {status}");
    let bearer = format!("Bearer {token}");
    let (status, _, body) = http_request(addr, "POST", "/-/reload", &[("Authorization", &bearer)])?;
    ensure!(status == 200, "reload with the token: {status} {body}");
    Ok(())
}
