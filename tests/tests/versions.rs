//! Versions: `--version` on both binaries gives the release, git revision,
//! build date and rustc; the build gauges carry them; the collector shows
//! each agent's build (`vigil_agent_info`), so a fleet mid-upgrade is seen.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, binary, start_agent, wait_for};

/// The revision this checkout is at, as the build script reads it.
fn git_revision() -> Result<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .context("git")?;
    ensure!(out.status.success(), "not a git checkout");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

#[test]
fn version_flags_and_build_gauges_name_the_build() -> Result<()> {
    let revision = git_revision()?;
    for name in ["vigil-agent", "vigil-collector"] {
        let out = Command::new(binary(name)?).arg("--version").output()?;
        ensure!(out.status.success(), "{name} --version failed");
        let text = String::from_utf8(out.stdout)?;
        ensure!(
            text.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION")))
                && text.contains(&format!("revision: {revision}"))
                && text.contains("build date: 20")
                && text.contains("rustc 1."),
            "{name} --version: {text}"
        );
        // -V stays one line, as scripts expect.
        let short = Command::new(binary(name)?).arg("-V").output()?;
        ensure!(
            String::from_utf8(short.stdout)?.trim()
                == format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{name} -V is not one line"
        );
    }

    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let _agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"versions\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://{}\"\n[sources.statsd]\nudp = \"\"\n[sources.otlp]\nenabled = false\n",
            collector.ingest
        ),
    )?;
    // The collector's own build, on its /metrics.
    let scrape = collector.scrape()?;
    let build = scrape
        .value(
            "vigil_collector_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", &revision),
            ],
        )
        .context("vigil_collector_build_info with this version and revision")?;
    ensure!(build == 1.0, "vigil_collector_build_info {build}");
    // Each agent's build, by name, once it has pushed.
    wait_for("vigil_agent_info", Duration::from_secs(30), || {
        collector.scrape().ok()?.value(
            "vigil_agent_info",
            &[
                ("agent", "versions"),
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", &revision),
            ],
        )
    })?;
    // The agent's own gauge, as shipped.
    let query = format!("vigil_agent_build_info{{instance=\"versions\",revision=\"{revision}\"}}");
    wait_for(&query, Duration::from_secs(30), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        let answer = collector.query(&query, now).ok()?;
        let labels = answer["data"]["result"][0]["metric"].clone();
        (labels["build_date"].as_str()?.len() == 10
            && labels["rustc"].as_str()?.starts_with("rustc "))
        .then_some(())
    })?;
    Ok(())
}

/// Waits up to 20 s for `child` to exit; its status and log.
fn exit_of(mut child: std::process::Child, log: &std::path::Path) -> Result<(bool, String)> {
    let status = wait_for("the refusal", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    })?;
    Ok((
        status.success(),
        std::fs::read_to_string(log).unwrap_or_default(),
    ))
}

#[test]
fn data_folders_carry_their_format_and_a_newer_one_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http, ingest) = (vigil_tests::free_port()?, vigil_tests::free_port()?);
    let collector = Collector::start(dir.path(), "collector", http, ingest, "", "")?;
    let agent_config = format!(
        "instance = \"formats\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
         [collector]\nendpoint = \"http://{}\"\n[sources.statsd]\nudp = \"\"\n[sources.otlp]\nenabled = false\n",
        collector.ingest
    );
    let mut agent = start_agent(dir.path(), "agent", &agent_config)?;
    let query = "vigil_agent_build_info{instance=\"formats\"}";
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    wait_for(query, Duration::from_secs(30), || {
        let answer = collector.query(query, now()).ok()?;
        (!answer["data"]["result"].as_array()?.is_empty()).then_some(())
    })?;
    agent.terminate(Duration::from_secs(20))?;
    let (collector_data, agent_data) = (
        dir.path().join("collector-data"),
        dir.path().join("agent-data"),
    );
    ensure!(
        std::fs::read_to_string(collector_data.join("FORMAT"))?
            == "vigil-collector data format 1\n",
        "the collector's folder is not marked"
    );
    ensure!(
        std::fs::read_to_string(agent_data.join("FORMAT"))? == "vigil-agent data format 1\n",
        "the agent's folder is not marked"
    );
    drop(collector);

    // As a newer build would leave them: this build refuses both, clearly.
    std::fs::write(
        collector_data.join("FORMAT"),
        "vigil-collector data format 2\n",
    )?;
    std::fs::write(agent_data.join("FORMAT"), "vigil-agent data format 2\n")?;
    let config = dir.path().join("collector.toml");
    let log = dir.path().join("refused-collector.log");
    let child = Command::new(binary("vigil-collector")?)
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log)?)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let (ok, text) = exit_of(child, &log)?;
    ensure!(
        !ok && text.contains("format 2, written by a newer build")
            && text.contains("format 1 at most"),
        "the collector took a newer folder: {text}"
    );
    let log = dir.path().join("refused-agent.log");
    let child = Command::new(binary("vigil-agent")?)
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .arg("--data-dir")
        .arg(&agent_data)
        .stderr(std::fs::File::create(&log)?)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let (ok, text) = exit_of(child, &log)?;
    ensure!(
        !ok && text.contains("written by a newer build"),
        "the agent took a newer folder: {text}"
    );

    // A folder from before the FORMAT file (an older build): read as it is,
    // with its history, and marked.
    std::fs::remove_file(collector_data.join("FORMAT"))?;
    let collector = Collector::start(dir.path(), "collector", http, ingest, "", "")?;
    let answer = collector.query(&format!("count_over_time({query}[10m])"), now())?;
    ensure!(
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0),
        "the history did not come back: {answer}"
    );
    ensure!(
        std::fs::read_to_string(collector_data.join("FORMAT"))?
            == "vigil-collector data format 1\n",
        "the older folder was not marked"
    );
    Ok(())
}
