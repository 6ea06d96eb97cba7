//! End to end: a real agent samples this host and ships to a real collector;
//! what the collector serves is what Prometheus and promtool expect.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use vigil_tests::{
    Collector, Scrape, cpu_count, http_get, promtool_check_metrics, start_agent, wait_for,
};

const INSTANCE: &str = "e2e-exposition";

fn agent_config(collector: &Collector, instance: &str, extra: &str) -> String {
    format!(
        "instance = \"{instance}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n{extra}\n[collector]\nendpoint = \"http://{}\"\n",
        collector.ingest
    )
}

fn samples_total(scrape: &Scrape, instance: &str) -> Option<f64> {
    scrape.value("vigil_agent_samples_total", &[("instance", instance)])
}

/// The value of the first element of an instant query's answer.
fn first_value(answer: &serde_json::Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[test]
fn collector_serves_this_host_under_node_exporter_names() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let _agent = start_agent(dir.path(), "agent", &agent_config(&collector, INSTANCE, ""))?;

    // Two flushes: the first scrape after data arrives, the second after more does.
    let first = wait_for("the agent's first batch", Duration::from_secs(30), || {
        collector
            .scrape()
            .ok()
            .filter(|s| samples_total(s, INSTANCE).is_some())
    })?;
    let first_samples = samples_total(&first, INSTANCE).unwrap_or_default();
    let second = wait_for("the agent's next batch", Duration::from_secs(30), || {
        collector
            .scrape()
            .ok()
            .filter(|s| samples_total(s, INSTANCE).is_some_and(|n| n > first_samples))
    })?;
    let second_samples = samples_total(&second, INSTANCE).unwrap_or_default();

    // Memory used is observed once per sample: the histogram's count is the
    // number of samples the agent took, in every scrape.
    for (scrape, samples) in [(&first, first_samples), (&second, second_samples)] {
        let count = scrape.value(
            "vigil_memory_used_ratio_count",
            &[("instance", INSTANCE), ("job", "node")],
        );
        ensure!(
            count == Some(samples),
            "vigil_memory_used_ratio_count {count:?} != samples taken {samples}"
        );
        let inf = scrape.value(
            "vigil_memory_used_ratio_bucket",
            &[("instance", INSTANCE), ("le", "+Inf")],
        );
        ensure!(inf == Some(samples), "+Inf bucket {inf:?} != {samples}");
    }
    ensure!(second_samples > first_samples);
    // CPU busy needs two readings: one observation fewer than samples.
    let busy = second.value("vigil_cpu_busy_ratio_count", &[("instance", INSTANCE)]);
    ensure!(
        busy == Some(second_samples - 1.0),
        "vigil_cpu_busy_ratio_count {busy:?}, samples {second_samples}"
    );

    // node_cpu_seconds_total for every CPU and every mode, with the agent's instance.
    let cpus = cpu_count()?;
    let cpu_series = second.samples(
        "node_cpu_seconds_total",
        &[("instance", INSTANCE), ("job", "node")],
    );
    let seen: BTreeSet<(String, String)> = cpu_series
        .iter()
        .map(|(l, _)| (l["cpu"].clone(), l["mode"].clone()))
        .collect();
    for cpu in 0..cpus {
        for mode in [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ] {
            ensure!(
                seen.contains(&(cpu.to_string(), mode.to_string())),
                "no node_cpu_seconds_total for cpu {cpu} mode {mode}"
            );
        }
    }
    ensure!(
        seen.len() == cpus * 8,
        "{} cpu series for {cpus} CPUs",
        seen.len()
    );

    for family in [
        "node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_load5",
        "node_load15",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_files_free",
        "node_filesystem_readonly",
        "node_disk_reads_completed_total",
        "node_disk_io_time_seconds_total",
        "node_network_receive_bytes_total",
        "node_network_transmit_drop_total",
        "node_uname_info",
        "node_boot_time_seconds",
        "node_time_seconds",
        "node_context_switches_total",
        "node_forks_total",
        "node_procs_running",
        "node_procs_blocked",
        "vigil_network_receive_bytes_per_second_count",
        "vigil_disk_busy_ratio_count",
    ] {
        let s = second.samples(family, &[("instance", INSTANCE), ("job", "node")]);
        ensure!(!s.is_empty(), "no {family} for instance {INSTANCE}");
    }
    let root = second.value(
        "node_filesystem_size_bytes",
        &[("instance", INSTANCE), ("mountpoint", "/")],
    );
    ensure!(
        root.is_some_and(|v| v > 0.0),
        "root filesystem size {root:?}"
    );
    let lo = second.value(
        "node_network_receive_bytes_total",
        &[("instance", INSTANCE), ("device", "lo")],
    );
    ensure!(lo.is_some(), "no loopback interface counters");

    // The same data through the Prometheus query API.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let answer = collector.query(
        &format!("count(node_cpu_seconds_total{{instance=\"{INSTANCE}\"}})"),
        now,
    )?;
    let count = first_value(&answer);
    ensure!(
        count == Some((cpus * 8) as f64),
        "count(node_cpu_seconds_total) = {count:?}: {answer}"
    );
    let answer = collector.query(
        &format!("vigil_memory_used_ratio_count{{instance=\"{INSTANCE}\"}}"),
        now,
    )?;
    let count = first_value(&answer);
    ensure!(
        count.is_some_and(|c| c >= second_samples),
        "vigil_memory_used_ratio_count from the query API: {count:?}"
    );

    // The exact quantile of every per-second sample, from the windows' HDR histograms.
    let path = format!(
        "/api/v1/vigil/quantile?q=0.5&query={}",
        vigil_tests::url_encode(&format!(
            "vigil_memory_used_ratio{{instance=\"{INSTANCE}\"}}"
        ))
    );
    let (status, _, body) = http_get(collector.http, &path, None)?;
    ensure!(status == 200, "{status}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let merged = answer["data"]["count"].as_f64();
    ensure!(
        merged.is_some_and(|c| c >= second_samples),
        "quantile merged {merged:?} samples, {second_samples} taken: {body}"
    );
    let median = answer["data"]["value"]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok());
    ensure!(
        median.is_some_and(|m| (0.0..=1.0).contains(&m)),
        "median memory used ratio {median:?}"
    );

    // promtool: no parse error, and no lint problem outside node_exporter's
    // own names (camelCase netstat and memory fields, entropy in bits),
    // which promtool finds in node_exporter's output too.
    let (code, problems) = promtool_check_metrics(&second.text)?;
    let foreign: Vec<&String> = problems
        .iter()
        .filter(|l| {
            !(l.starts_with("node_")
                && (l.contains("camelCase")
                    || (l.starts_with("node_entropy_") && l.contains("base unit"))))
        })
        .collect();
    ensure!(
        foreign.is_empty(),
        "promtool check metrics (exit {code}) found: {foreign:#?}"
    );
    ensure!(
        code == 0 || code == 3,
        "promtool exited {code}: {problems:#?}"
    );
    Ok(())
}

#[test]
fn openmetrics_is_served_when_asked_for() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let _agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(&collector, "e2e-openmetrics", ""),
    )?;
    wait_for("data", Duration::from_secs(30), || {
        collector
            .scrape()
            .ok()
            .filter(|s| samples_total(s, "e2e-openmetrics").is_some())
    })?;
    let (status, content_type, body) = http_get(
        collector.http,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )?;
    ensure!(status == 200);
    ensure!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    ensure!(body.ends_with("# EOF\n"), "no # EOF at the end");
    ensure!(
        body.contains("# TYPE node_cpu_seconds counter\n"),
        "counter family without _total expected"
    );
    ensure!(
        body.contains("\nnode_cpu_seconds_total{"),
        "counter samples keep _total"
    );
    ensure!(body.contains("# TYPE vigil_memory_used_ratio histogram\n"));
    let (_, plain_type, plain) = http_get(collector.http, "/metrics", None)?;
    ensure!(
        plain_type.starts_with("text/plain; version=0.0.4"),
        "{plain_type}"
    );
    ensure!(!plain.contains("# EOF"));
    Ok(())
}

#[test]
fn textfile_values_reach_the_collector_and_bad_files_are_reported() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles)?;
    std::fs::write(
        textfiles.join("backup.prom"),
        "# HELP backup_last_size_bytes Size of the last backup.\n# TYPE backup_last_size_bytes gauge\nbackup_last_size_bytes{target=\"db\"} 42\n",
    )?;
    std::fs::write(textfiles.join("broken.prom"), "this is { not a metric\n")?;
    let collector = Collector::start_default(dir.path())?;
    let instance = "e2e-textfile";
    let extra = format!(
        "[sources.textfile]\ndirectory = \"{}\"\n",
        textfiles.display()
    );
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(&collector, instance, &extra),
    )?;
    let scrape = wait_for("the textfile value", Duration::from_secs(30), || {
        collector.scrape().ok().filter(|s| {
            s.value(
                "backup_last_size_bytes",
                &[("instance", instance), ("target", "db")],
            ) == Some(42.0)
        })
    })?;
    ensure!(scrape.value("node_textfile_scrape_error", &[("instance", instance)]) == Some(1.0));
    let mtimes = scrape.samples("node_textfile_mtime_seconds", &[("instance", instance)]);
    ensure!(
        mtimes.len() == 1 && mtimes[0].0["file"].ends_with("backup.prom"),
        "{mtimes:?}"
    );
    agent.wait_for_log("broken.prom: line 1", Duration::from_secs(10))?;

    // A cron job replaces the file (write then rename) and removes the broken one.
    let tmp = textfiles.join("backup.prom.tmp");
    std::fs::write(&tmp, "backup_last_size_bytes{target=\"db\"} 43\n")?;
    std::fs::rename(&tmp, textfiles.join("backup.prom"))?;
    std::fs::remove_file(textfiles.join("broken.prom"))?;
    wait_for(
        "the new textfile value and no error",
        Duration::from_secs(30),
        || {
            collector.scrape().ok().filter(|s| {
                s.value("backup_last_size_bytes", &[("instance", instance)]) == Some(43.0)
                    && s.value("node_textfile_scrape_error", &[("instance", instance)]) == Some(0.0)
            })
        },
    )?;
    if agent.log().contains("panicked") {
        bail!("agent panicked:\n{}", agent.log());
    }
    Ok(())
}

#[test]
fn a_runaway_textfile_cannot_starve_the_system_and_self_metrics() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles)?;
    // A 5 MB file, and a file of 20,000 series: both beyond the defaults.
    std::fs::write(textfiles.join("huge.prom"), "huge 1\n".repeat(750_000))?;
    let many: String = (0..20_000)
        .map(|i| format!("runaway_series{{i=\"{i}\"}} 1\n"))
        .collect();
    std::fs::write(textfiles.join("many.prom"), many)?;
    std::fs::write(textfiles.join("ok.prom"), "cron_ok 1\n")?;
    let collector = Collector::start_default(dir.path())?;
    let instance = "e2e-runaway";
    let extra = format!(
        "[sources.textfile]\ndirectory = \"{}\"\n",
        textfiles.display()
    );
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(&collector, instance, &extra),
    )?;
    let scrape = wait_for(
        "the agent's own and system metrics",
        Duration::from_secs(30),
        || {
            collector.scrape().ok().filter(|s| {
                samples_total(s, instance).is_some()
                    && s.value("cron_ok", &[("instance", instance)]) == Some(1.0)
                    && !s
                        .samples("vigil_cpu_busy_ratio_count", &[("instance", instance)])
                        .is_empty()
            })
        },
    )?;
    ensure!(
        scrape
            .samples("runaway_series", &[("instance", instance)])
            .is_empty()
    );
    ensure!(scrape.samples("huge", &[("instance", instance)]).is_empty());
    ensure!(scrape.value("node_textfile_scrape_error", &[("instance", instance)]) == Some(1.0));
    agent.wait_for_log("huge.prom: larger than", Duration::from_secs(10))?;
    agent.wait_for_log("many.prom: 20000 series", Duration::from_secs(10))?;
    Ok(())
}
