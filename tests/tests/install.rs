//! `install.sh` and the systemd units: a binary is installed into a
//! temporary root only when its SHA-256 matches and it accepts the
//! installed config; the previous binary is kept and `--rollback` puts it
//! back; an edited config is never overwritten; both units pass
//! `systemd-analyze verify` and score "OK" (4.0 or lower) in
//! `systemd-analyze security`.

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
