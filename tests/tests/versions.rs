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
