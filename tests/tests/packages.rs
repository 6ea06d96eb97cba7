//! The Debian packages, built, checked and installed for real on this
//! machine (CI runs as root on Debian): `packaging/build-debs.sh` (cargo-deb)
//! packages this build; `dpkg-deb -c/-I` show the files, conffiles and
//! maintainer scripts; `lintian` finds no error; `dpkg -i` creates the
//! user, the data folders and the units (which `systemd-analyze verify`
//! accepts); the binaries, started by hand from the unit's `ExecStart` line
//! as its user (no systemd runs as PID 1 in CI), serve with the shipped
//! default configs; an upgrade keeps an edited config and the data; a
//! config that fails `--check-config` is named by `postinst`; `dpkg --purge`
//! leaves nothing behind.
//!
//! It installs system-wide, so it is one test that does everything in
//! order, and puts the machine back as it found it even when it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use vigil_tests::{Process, binary, get_json, require_peer, unix_now, url_encode, wait_for};

const PACKAGES: [&str; 2] = ["vigil-agent", "vigil-collector"];
/// The shipped collector.toml's HTTP port.
const COLLECTOR_HTTP: &str = "127.0.0.1:9470";

fn repo() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("no repository above tests/")
}

fn run(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .with_context(|| format!("cannot run {program}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(program: &str, args: &[&str]) -> Result<String> {
    let out = run(program, args)?;
    ensure!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        text(&out)
    );
    Ok(text(&out))
}

fn installed_version(package: &str) -> Option<String> {
    let out = run(
        "dpkg-query",
        &["-W", "-f=${db:Status-Abbrev} ${Version}", package],
    )
    .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.strip_prefix("ii ").map(|v| v.trim().to_string())
}

/// Purges both packages when the test ends, passed or not.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", PACKAGES[0], PACKAGES[1]]);
    }
}

/// Builds both packages of this build at `version` into `out`.
fn build_packages(out: &Path, version: &str) -> Result<(PathBuf, PathBuf)> {
    let bin_dir = binary("vigil-agent")?
        .parent()
        .context("binary without a folder")?
        .to_path_buf();
    let target = bin_dir.parent().context("binary folder without a parent")?;
    let result = Command::new(repo()?.join("packaging/build-debs.sh"))
        .args([
            "--profile",
            "dev",
            "--no-build",
            "--fast",
            "--deb-version",
            version,
        ])
        .arg("--out")
        .arg(out)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .context("cannot run packaging/build-debs.sh")?;
    ensure!(
        result.status.success(),
        "build-debs.sh: {}\n{}",
        result.status,
        text(&result)
    );
    Ok((
        out.join(format!("vigil-agent_{version}_amd64.deb")),
        out.join(format!("vigil-collector_{version}_amd64.deb")),
    ))
}

/// The unit's `ExecStart=` line, split into words.
fn exec_start(unit: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(unit)?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .with_context(|| format!("{} has no ExecStart=", unit.display()))?;
    Ok(line.split_whitespace().map(str::to_string).collect())
}

/// Starts what `unit` runs, as its `User=`/`Group=`, as systemd would.
fn start_as_unit(name: &str, unit: &Path, dir: &Path) -> Result<Process> {
    let text = std::fs::read_to_string(unit)?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("{} has no {key}", unit.display()))
    };
    let user = field("User=")?;
    let group = field("Group=")?;
    let mut args = vec![
        format!("--reuid={user}"),
        format!("--regid={group}"),
        "--init-groups".to_string(),
        "--".to_string(),
    ];
    args.extend(exec_start(unit)?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::start(name, Path::new("/usr/bin/setpriv"), &args, dir)
}

fn collector_http() -> Result<SocketAddr> {
    Ok(COLLECTOR_HTTP.parse()?)
}

/// The number of elements `query` gives at `time`.
fn result_count(query: &str, time: f64) -> Option<usize> {
    let (status, json) = get_json(
        collector_http().ok()?,
        &format!("/api/v1/query?query={}&time={time}", url_encode(query)),
    )
    .ok()?;
    (status == 200)
        .then(|| json["data"]["result"].as_array().map(Vec::len))
        .flatten()
}

fn stop(process: &mut Process) -> Result<()> {
    let status = process.terminate(Duration::from_secs(30))?;
    ensure!(status.success(), "exit {status}; log:\n{}", process.log());
    Ok(())
}

#[test]
fn debian_packages_install_serve_upgrade_and_purge() -> Result<()> {
    let uid = run_ok("id", &["-u"])?;
    ensure!(
        uid.trim() == "0",
        "this test installs Debian packages: run it as root (CI does)"
    );
    require_peer("dpkg-deb", "dpkg")?;
    require_peer("lintian", "lintian")?;
    require_peer("systemd-analyze", "systemd")?;
    require_peer("setpriv", "util-linux")?;
    ensure!(
        run("cargo", &["deb", "--version"])?.status.success(),
        "cargo-deb is not installed: cargo install cargo-deb --version 3.8.0 --locked (.ci/run does)"
    );
    for package in PACKAGES {
        if installed_version(package).is_some() {
            run_ok("dpkg", &["--purge", package])?;
        }
    }
    for leftover in [
        "/var/lib/vigil/agent",
        "/var/lib/vigil/collector",
        "/etc/vigil",
    ] {
        ensure!(
            !Path::new(leftover).exists(),
            "{leftover} exists without the packages (an install.sh install?): remove it before this test"
        );
    }
    let work = tempfile::tempdir()?;
    let version = env!("CARGO_PKG_VERSION");
    let v1 = format!("{version}-1");
    let v2 = format!("{version}-2");
    let (agent1, collector1) = build_packages(&work.path().join("v1"), &v1)?;
    let (agent2, collector2) = build_packages(&work.path().join("v2"), &v2)?;

    // What the packages hold.
    let agent_files = run_ok("dpkg-deb", &["-c", &agent1.to_string_lossy()])?;
    for file in [
        "./usr/bin/vigil-agent",
        "./etc/vigil/agent.toml",
        "./lib/systemd/system/vigil-agent.service",
        "./usr/share/doc/vigil-agent/copyright",
        "./usr/share/doc/vigil-agent/changelog.Debian.gz",
        "./usr/share/man/man1/vigil-agent.1.gz",
        "./usr/share/doc/vigil-agent/docs/configuration.md",
    ] {
        ensure!(
            agent_files.contains(file),
            "{file} not in the agent package:\n{agent_files}"
        );
    }
    let collector_files = run_ok("dpkg-deb", &["-c", &collector1.to_string_lossy()])?;
    for file in [
        "./usr/bin/vigil-collector",
        "./etc/vigil/collector.toml",
        "./lib/systemd/system/vigil-collector.service",
        "./usr/share/doc/vigil-collector/copyright",
        "./usr/share/man/man1/vigil-collector.1.gz",
        "./usr/share/vigil/dashboards/host.json",
        "./usr/share/vigil/dashboards/fleet.json",
        "./usr/share/vigil/dashboards/alerts.json",
        "./usr/share/vigil/dashboards/vigil.json",
        "./usr/share/vigil/dashboards/provisioning.yml",
        "./usr/share/vigil/rules/host.rules.yml",
    ] {
        ensure!(
            collector_files.contains(file),
            "{file} not in the collector package:\n{collector_files}"
        );
    }
    for (deb, package) in [(&agent1, "vigil-agent"), (&collector1, "vigil-collector")] {
        let info = run_ok("dpkg-deb", &["-I", &deb.to_string_lossy()])?;
        for want in [
            format!("Package: {package}"),
            format!("Version: {v1}"),
            "Depends: adduser, libc6".to_string(),
            "conffiles".to_string(),
            "postinst".to_string(),
            "postrm".to_string(),
        ] {
            ensure!(
                info.contains(&want),
                "{want:?} not in dpkg-deb -I {package}:\n{info}"
            );
        }
        let conffiles = run_ok("dpkg-deb", &["-f", &deb.to_string_lossy(), "Package"])?;
        ensure!(
            conffiles.trim() == package,
            "dpkg-deb -f {package}: {conffiles}"
        );
        // The copyright file names what is linked, with each licence.
        let unpacked = work.path().join(format!("{package}-files"));
        run_ok(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &unpacked.to_string_lossy()],
        )?;
        let copyright =
            std::fs::read_to_string(unpacked.join(format!("usr/share/doc/{package}/copyright")))?;
        for want in ["License: Apache-2.0", "tokio ", "tonic ", "MIT"] {
            ensure!(
                copyright.contains(want),
                "{want:?} not in {package}'s copyright"
            );
        }
    }

    // lintian: no error (warnings are printed).
    let lint = run(
        "lintian",
        &[
            "--tag-display-limit",
            "0",
            &agent1.to_string_lossy(),
            &collector1.to_string_lossy(),
        ],
    )?;
    let lint_text = text(&lint);
    eprintln!("lintian:\n{lint_text}");
    let errors: Vec<&str> = lint_text.lines().filter(|l| l.starts_with("E:")).collect();
    ensure!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    // Install.
    let _purge = Purge;
    let installed_at = Instant::now();
    let out = run_ok(
        "dpkg",
        &[
            "-i",
            &collector1.to_string_lossy(),
            &agent1.to_string_lossy(),
        ],
    )?;
    let dpkg_seconds = installed_at.elapsed().as_secs_f64();
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    if !systemd_runs {
        ensure!(
            out.contains(
                "vigil-agent: systemd is not running; start /usr/bin/vigil-agent yourself"
            ),
            "postinst did not say the agent is not started:\n{out}"
        );
    }
    for package in PACKAGES {
        ensure!(
            installed_version(package).as_deref() == Some(v1.as_str()),
            "{package} not installed at {v1}"
        );
    }
    let user = run_ok("getent", &["passwd", "vigil"])?;
    ensure!(
        user.trim_end()
            .ends_with(":/var/lib/vigil:/usr/sbin/nologin"),
        "vigil user: {user}"
    );
    run_ok("getent", &["group", "vigil"])?;
    for dir in ["/var/lib/vigil/agent", "/var/lib/vigil/collector"] {
        let stat = run_ok("stat", &["-c", "%U:%G %a", dir])?;
        ensure!(stat.trim() == "vigil:vigil 750", "{dir}: {stat}");
    }
    for config in ["/etc/vigil/agent.toml", "/etc/vigil/collector.toml"] {
        let stat = run_ok("stat", &["-c", "%U:%G %a", config])?;
        ensure!(stat.trim() == "root:vigil 640", "{config}: {stat}");
    }
    ensure!(
        Path::new("/etc/vigil/rules").is_dir(),
        "/etc/vigil/rules missing"
    );
    for (package, config) in [
        ("vigil-agent", "/etc/vigil/agent.toml"),
        ("vigil-collector", "/etc/vigil/collector.toml"),
    ] {
        let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", package])?;
        ensure!(
            conffiles.contains(config),
            "{config} is not a conffile of {package}: {conffiles}"
        );
        let unit = format!("/lib/systemd/system/{package}.service");
        let verify = run("systemd-analyze", &["verify", &unit])?;
        ensure!(
            verify.status.success(),
            "systemd-analyze verify {unit}:\n{}",
            text(&verify)
        );
        let check = run_ok(
            &format!("/usr/bin/{package}"),
            &["--config", config, "--check-config"],
        )?;
        ensure!(
            check.contains("is valid"),
            "{package} --check-config: {check}"
        );
    }
    // The example rules load in the collector and in promtool.
    let rules_check = run_ok(
        "/usr/bin/vigil-collector",
        &["rules", "check", "/usr/share/vigil/rules/host.rules.yml"],
    )?;
    eprintln!("vigil-collector rules check: {}", rules_check.trim());
    run_ok(
        &require_peer("promtool", "prometheus")?.to_string_lossy(),
        &["check", "rules", "/usr/share/vigil/rules/host.rules.yml"],
    )?;

    // Started as the units start them, they serve with the shipped configs.
    let logs = tempfile::tempdir()?;
    let collector_unit = Path::new("/lib/systemd/system/vigil-collector.service");
    let agent_unit = Path::new("/lib/systemd/system/vigil-agent.service");
    let mut collector = start_as_unit("collector", collector_unit, logs.path())?;
    let mut agent = start_as_unit("agent", agent_unit, logs.path())?;
    wait_for(
        "the agent's first batch at the collector",
        Duration::from_secs(60),
        || result_count("node_load1", unix_now()).filter(|n| *n == 1),
    )
    .with_context(|| format!("collector:\n{}\nagent:\n{}", collector.log(), agent.log()))?;
    eprintln!(
        "BENCH packages: dpkg -i of both took {dpkg_seconds:.2} s; first batch at the collector {:.2} s after dpkg -i started",
        installed_at.elapsed().as_secs_f64()
    );
    let before_upgrade = unix_now();
    ensure!(
        Path::new("/var/lib/vigil/collector/FORMAT").is_file()
            && Path::new("/var/lib/vigil/agent/FORMAT").is_file(),
        "the data folders were not written"
    );

    // An upgrade keeps an edited config and the data.
    let mut edited = std::fs::read_to_string("/etc/vigil/agent.toml")?;
    edited.push_str("\n# edited by the operator\n");
    std::fs::write("/etc/vigil/agent.toml", &edited)?;
    stop(&mut agent)?;
    stop(&mut collector)?;
    let out = run_ok(
        "dpkg",
        &[
            "-i",
            &collector2.to_string_lossy(),
            &agent2.to_string_lossy(),
        ],
    )?;
    for package in PACKAGES {
        ensure!(
            installed_version(package).as_deref() == Some(v2.as_str()),
            "{package} not upgraded to {v2}:\n{out}"
        );
    }
    ensure!(
        std::fs::read_to_string("/etc/vigil/agent.toml")? == edited,
        "the upgrade replaced the edited /etc/vigil/agent.toml"
    );
    let mut collector = start_as_unit("collector-2", collector_unit, logs.path())?;
    let mut agent = start_as_unit("agent-2", agent_unit, logs.path())?;
    wait_for("batches after the upgrade", Duration::from_secs(60), || {
        result_count("node_load1", unix_now()).filter(|n| *n == 1)
    })
    .with_context(|| format!("collector:\n{}\nagent:\n{}", collector.log(), agent.log()))?;
    ensure!(
        result_count("node_load1", before_upgrade) == Some(1),
        "the history from before the upgrade is gone"
    );
    stop(&mut agent)?;
    stop(&mut collector)?;

    // postinst names a config that fails --check-config, and starts nothing.
    std::fs::write(
        "/etc/vigil/agent.toml",
        "[collector]\nendpiont = \"http://x\"\n",
    )?;
    let out = run("dpkg", &["-i", &agent2.to_string_lossy()])?;
    let said = text(&out);
    ensure!(
        out.status.success(),
        "dpkg -i with a bad config failed:\n{said}"
    );
    ensure!(
        said.contains("vigil-agent: not started: /etc/vigil/agent.toml fails --check-config")
            && said.contains("collector.endpiont"),
        "postinst did not name the bad config:\n{said}"
    );

    // Purge leaves nothing behind (but the vigil user, as Debian's packages do).
    run_ok("dpkg", &["--purge", PACKAGES[0], PACKAGES[1]])?;
    for gone in [
        "/usr/bin/vigil-agent",
        "/usr/bin/vigil-collector",
        "/etc/vigil",
        "/var/lib/vigil",
        "/lib/systemd/system/vigil-agent.service",
        "/lib/systemd/system/vigil-collector.service",
        "/etc/systemd/system/multi-user.target.wants/vigil-agent.service",
        "/usr/share/vigil",
        "/usr/share/doc/vigil-agent",
    ] {
        ensure!(
            !Path::new(gone).exists(),
            "{gone} is left after dpkg --purge"
        );
    }
    for package in PACKAGES {
        let out = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", package])?;
        let status = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && !status.trim().is_empty() && !status.starts_with("un") {
            bail!("{package} is still known to dpkg as {status:?}");
        }
    }
    Ok(())
}
