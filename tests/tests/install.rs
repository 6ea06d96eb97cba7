//! `install.sh` and the systemd units: a binary is installed into a
//! temporary root only when its SHA-256 matches and it accepts the
//! installed config; the previous binary is kept and `--rollback` puts it
//! back; an edited config is never overwritten; both units pass
//! `systemd-analyze verify` and score "OK" (4.0 or lower) in
//! `systemd-analyze security`; an upgrade through `install.sh` to builds of
//! the next data format, with traffic flowing, loses and doubles nothing,
//! keeps the silences and alert states, and marks the folders with the new
//! format, which the previous builds then refuse after `--rollback`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use vigil_tests::{binary, require_peer};

fn repo() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("no repository above tests/")
}

/// `sha256sum`'s answer (the test binaries are debug builds of 100 MB and
/// more, which sha2 unoptimised hashes slowly).
fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

fn install(root: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(repo()?.join("install.sh"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn install_checks_the_checksum_keeps_the_previous_build_and_rolls_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    let agent = binary("vigil-agent")?;
    // A second build: the same program with a byte more, so another checksum.
    let second = dir.path().join("vigil-agent-2");
    let mut bytes = std::fs::read(&agent)?;
    bytes.push(0);
    std::fs::write(&second, &bytes)?;
    let (first_sum, second_sum) = (sha256(&agent)?, sha256(&second)?);
    let installed = root.join("usr/bin/vigil-agent");
    let previous = root.join("usr/lib/vigil/vigil-agent.previous");
    let config = root.join("etc/vigil/agent.toml");

    let out = install(&root, &["agent", &agent.display().to_string(), &first_sum])?;
    ensure!(out.status.success(), "first install: {}", text(&out));
    ensure!(sha256(&installed)? == first_sum, "installed binary differs");
    for file in [
        "etc/systemd/system/vigil-agent.service",
        "etc/vigil/agent.toml",
    ] {
        ensure!(root.join(file).is_file(), "{file} was not installed");
    }
    ensure!(root.join("var/lib/vigil/agent").is_dir(), "no data folder");

    // The operator edits the config; an upgrade keeps the edit.
    let mut edited = std::fs::read_to_string(&config)?;
    edited.push_str("\n# edited by the operator\n");
    std::fs::write(&config, &edited)?;
    let out = install(
        &root,
        &["agent", &second.display().to_string(), &second_sum],
    )?;
    ensure!(out.status.success(), "upgrade: {}", text(&out));
    ensure!(
        sha256(&installed)? == second_sum,
        "the upgrade did not replace the binary"
    );
    ensure!(
        sha256(&previous)? == first_sum,
        "the previous build was not kept"
    );
    ensure!(
        std::fs::read_to_string(&config)? == edited,
        "the edited config was overwritten"
    );

    // A checksum that does not match: refused before anything changes.
    let out = install(
        &root,
        &["agent", &agent.display().to_string(), &"0".repeat(64)],
    )?;
    ensure!(!out.status.success(), "a wrong checksum was taken");
    ensure!(
        text(&out).contains("refused, nothing changed"),
        "{}",
        text(&out)
    );
    ensure!(
        sha256(&installed)? == second_sum,
        "a refused install changed the binary"
    );
    ensure!(
        sha256(&previous)? == first_sum,
        "a refused install changed the previous build"
    );

    // A config the new binary refuses: the installed binary stays.
    std::fs::write(&config, "flush_interval = \"1ms\"\n")?;
    let out = install(&root, &["agent", &agent.display().to_string(), &first_sum])?;
    ensure!(
        !out.status.success(),
        "a binary that refuses the config was installed"
    );
    ensure!(
        sha256(&installed)? == second_sum,
        "the binary changed although the check failed"
    );
    std::fs::write(&config, &edited)?;

    // Rollback: the first build again.
    let out = install(&root, &["--rollback", "agent"])?;
    ensure!(out.status.success(), "rollback: {}", text(&out));
    ensure!(
        sha256(&installed)? == first_sum,
        "rollback did not restore the previous build"
    );
    ensure!(
        !previous.exists(),
        "the previous build is still kept after the rollback"
    );
    let out = install(&root, &["--rollback", "agent"])?;
    ensure!(
        !out.status.success() && text(&out).contains("no previous"),
        "a second rollback: {}",
        text(&out)
    );

    // The collector installs the same way.
    let collector = binary("vigil-collector")?;
    let out = install(
        &root,
        &[
            "collector",
            &collector.display().to_string(),
            &sha256(&collector)?,
        ],
    )?;
    ensure!(out.status.success(), "collector: {}", text(&out));
    ensure!(
        root.join("etc/vigil/collector.toml").is_file(),
        "no collector config"
    );
    Ok(())
}

#[test]
fn the_units_verify_and_their_exposure_is_ok() -> Result<()> {
    let analyze = require_peer("systemd-analyze", "systemd")?;
    let dir = tempfile::tempdir()?;
    for name in ["vigil-agent", "vigil-collector"] {
        let unit =
            std::fs::read_to_string(repo()?.join(format!("packaging/systemd/{name}.service")))?;
        // The unit names /usr/bin; the test checks it against this build.
        let path = dir.path().join(format!("{name}.service"));
        let here = binary(name)?.display().to_string();
        std::fs::write(&path, unit.replace(&format!("/usr/bin/{name}"), &here))?;
        let out = Command::new(&analyze).arg("verify").arg(&path).output()?;
        ensure!(
            out.status.success() && text(&out).trim().is_empty(),
            "verify {name}: {}",
            text(&out)
        );
        let out = Command::new(&analyze)
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()?;
        let report = text(&out);
        let score: f64 = report
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no exposure level for {name}: {report}"))?;
        ensure!(
            score <= 4.0,
            "{name}: exposure {score}, over 4.0:\n{report}"
        );
        // The shipped config passes the binary's own check.
        let config = repo()?.join(format!(
            "packaging/config/{}.toml",
            name.trim_start_matches("vigil-")
        ));
        let out = Command::new(binary(name)?)
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()?;
        ensure!(
            out.status.success(),
            "{name} --check-config on the shipped config: {}",
            text(&out)
        );
    }
    Ok(())
}

/// The next data format's build of `from` (`vigil-NAME`): the same code
/// with the format stamped in the binary raised from 1 to 2 (see
/// `vigil_shared::format`), written to `to`; its checksum.
fn next_format_build(name: &str, from: &Path, to: &Path) -> Result<String> {
    let mut bytes = std::fs::read(from)?;
    let stamp = format!("vigil-{name} data format 00000001");
    let at = memchr::memmem::find(&bytes, stamp.as_bytes())
        .with_context(|| format!("{stamp:?} is not in {}", from.display()))?;
    ensure!(
        memchr::memmem::find(&bytes[at + 1..], stamp.as_bytes()).is_none(),
        "{stamp:?} is in {} twice",
        from.display()
    );
    let last = at + stamp.len() - 1;
    bytes[last] = b'2';
    std::fs::write(to, &bytes)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    sha256(to)
}

/// The alerts the collector reports, as (name, state, activeAt).
fn alert_states(collector: &vigil_tests::Collector) -> Result<Vec<(String, String, String)>> {
    let (status, json) = vigil_tests::get_json(collector.http, "/api/v1/alerts")?;
    ensure!(status == 200, "/api/v1/alerts: {status}");
    let mut out: Vec<(String, String, String)> = json["data"]["alerts"]
        .as_array()
        .context("no alerts array")?
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
                a["activeAt"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[test]
fn an_upgrade_to_the_next_data_format_loses_and_doubles_nothing_and_a_rollback_is_refused()
-> Result<()> {
    use std::net::UdpSocket;
    use std::time::Duration;
    use vigil_tests::{Collector, Process, expect_value, free_port};

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    for name in ["agent", "collector"] {
        let built = binary(&format!("vigil-{name}"))?;
        let out = install(
            &root,
            &[name, &built.display().to_string(), &sha256(&built)?],
        )?;
        ensure!(out.status.success(), "install {name}: {}", text(&out));
    }
    let (http, ingest) = (free_port()?, free_port()?);
    let statsd = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let rules = dir.path().join("upgrade.rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: upgrade\n    rules:\n      - alert: UpgradeFiring\n        expr: vector(1)\n      \
         - alert: UpgradePending\n        expr: vector(1)\n        for: 1h\n",
    )?;
    let collector_toml = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n[store]\ndata_dir = \"{}\"\n\
         [rules]\nfiles = [\"{}\"]\nevaluation_interval = \"1s\"\n",
        root.join("var/lib/vigil/collector").display(),
        rules.display()
    );
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "instance = \"upgrade\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://127.0.0.1:{ingest}\"\n\
             [sources.statsd]\nudp = \"127.0.0.1:{statsd}\"\n[sources.otlp]\nenabled = false\n"
        ),
    )?;
    let agent_data = root.join("var/lib/vigil/agent");
    let runs = std::cell::Cell::new(0);
    let start_agent = || -> Result<Process> {
        runs.set(runs.get() + 1);
        let agent = Process::start(
            &format!("agent-{}", runs.get()),
            &root.join("usr/bin/vigil-agent"),
            &[
                "--config",
                &agent_toml.to_string_lossy(),
                "--data-dir",
                &agent_data.to_string_lossy(),
            ],
            dir.path(),
        )?;
        agent.wait_for_log("StatsD listening", Duration::from_secs(20))?;
        Ok(agent)
    };
    let installed_collector = root.join("usr/bin/vigil-collector");
    let collector = Collector::launch_binary(
        &installed_collector,
        dir.path(),
        "collector",
        http,
        ingest,
        &collector_toml,
    )?;
    let mut agent = start_agent()?;
    let silence = r#"{"matchers":[{"name":"alertname","value":"Upgrade","isRegex":false,"isEqual":true}],
        "startsAt":"2020-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"ops","comment":"upgrade window"}"#;
    let (status, body) = vigil_tests::http_post_json(collector.http, "/api/v2/silences", silence)?;
    ensure!(status == 200, "silence: {status} {body}");

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0u32;
    let mut send = |n: u32| -> Result<()> {
        for _ in 0..n {
            socket.send_to(b"upgrade.hits:1|c\nupgrade.lat:5|ms", ("127.0.0.1", statsd))?;
            sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    send(100)?;
    expect_value(
        &collector,
        "upgrade_hits_total{instance=\"upgrade\"}",
        100.0,
    )?;

    let alerts_before =
        vigil_tests::wait_for("both alerts active", Duration::from_secs(30), || {
            alert_states(&collector).ok().filter(|a| a.len() == 2)
        })?;
    ensure!(
        alerts_before[0].1 == "firing" && alerts_before[1].1 == "pending",
        "{alerts_before:?}"
    );

    // The next format's builds, installed while the old ones run; then each
    // is restarted on its data, the collector first.
    for name in ["agent", "collector"] {
        let next = dir.path().join(format!("vigil-{name}-next"));
        let sum = next_format_build(name, &binary(&format!("vigil-{name}"))?, &next)?;
        let out = install(&root, &[name, &next.display().to_string(), &sum])?;
        ensure!(out.status.success(), "upgrade {name}: {}", text(&out));
        ensure!(
            sha256(&root.join(format!("usr/bin/vigil-{name}")))? == sum,
            "{name} not replaced"
        );
    }
    drop(collector);
    send(50)?; // the agent spools while the collector restarts
    let collector = Collector::launch_binary(
        &installed_collector,
        dir.path(),
        "collector",
        http,
        ingest,
        &collector_toml,
    )?;
    agent.terminate(Duration::from_secs(20))?;
    let mut agent = start_agent()?;
    send(30)?;
    // A StatsD counter is the agent's own running total, so it starts
    // again with the agent: 30 now, and 150 before the restart, once.
    expect_value(&collector, "upgrade_hits_total{instance=\"upgrade\"}", 30.0)?;
    expect_value(
        &collector,
        "max_over_time(upgrade_hits_total{instance=\"upgrade\"}[10m])",
        150.0,
    )?;
    // The timer's windows add up at the collector across both restarts:
    // a lost or twice-applied batch would show here.
    expect_value(
        &collector,
        "upgrade_lat_seconds_count{instance=\"upgrade\"}",
        180.0,
    )?;
    // The silence came through the collector's upgrade.
    let (status, list) =
        vigil_tests::http_get(collector.http, "/api/v2/silences", None).map(|(s, _, b)| (s, b))?;
    ensure!(
        status == 200 && list.contains("upgrade window") && list.contains("\"active\""),
        "{list}"
    );
    for (process, what) in [(&collector.process, "collector"), (&agent, "agent")] {
        ensure!(
            process
                .log()
                .contains("data folder upgraded to this build's format"),
            "the {what} did not upgrade its folder:\n{}",
            process.log()
        );
    }
    // Alert states came through: the same alerts, states and activeAt.
    ensure!(
        alert_states(&collector)? == alerts_before,
        "alerts before the upgrade {alerts_before:?}, after {:?}",
        alert_states(&collector)?
    );
    agent.terminate(Duration::from_secs(20))?;
    ensure!(sent == 180, "sent {sent}");
    drop(collector);
    // Both folders now carry the new format…
    for name in ["agent", "collector"] {
        let format = std::fs::read_to_string(root.join(format!("var/lib/vigil/{name}/FORMAT")))?;
        ensure!(
            format == format!("vigil-{name} data format 2\n"),
            "{name}'s folder: {format:?}"
        );
    }
    // …so a rollback to the previous build stops at start, saying why.
    for name in ["agent", "collector"] {
        let out = install(&root, &["--rollback", name])?;
        ensure!(out.status.success(), "rollback {name}: {}", text(&out));
        let (config, data) = if name == "agent" {
            (agent_toml.clone(), agent_data.clone())
        } else {
            let path = dir.path().join("collector.toml");
            std::fs::write(&path, &collector_toml)?;
            (path, root.join("var/lib/vigil/collector"))
        };
        let out = std::process::Command::new(root.join(format!("usr/bin/vigil-{name}")))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()?;
        let said = text(&out);
        ensure!(
            !out.status.success(),
            "the previous {name} started on the new format:\n{said}"
        );
        ensure!(
            said.contains(&format!(
                "holds vigil-{name} data format 2, written by a newer build; this build reads format 1 at most"
            )),
            "the previous {name} did not name the format:\n{said}"
        );
    }
    Ok(())
}
