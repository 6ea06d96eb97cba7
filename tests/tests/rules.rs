//! Rule files and rule unit tests: `vigil-collector rules test` gives the
//! same verdict as `promtool test rules` (Prometheus 2.42) on every file of
//! the corpus in `rules/testdata/rules/`, files named `fail-*` fail in
//! both, and `rules check` accepts every real rule file users bring.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use vigil_tests::{binary, compat_path, require_peer};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/testdata/rules")
}

fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    Ok(out)
}

/// Exit code and output of a command run in `dir`.
fn run(program: &Path, args: &[&str], dir: &Path) -> Result<(i32, String)> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

#[test]
fn unit_test_verdicts_match_promtool() -> Result<()> {
    let promtool = require_peer("promtool", "prometheus")?;
    let vigil = binary("vigil-collector")?;
    let dir = corpus();
    let tests = files(&dir, ".test.yml")?;
    ensure!(tests.len() >= 40, "only {} rule test files", tests.len());
    let mut failing = 0;
    let mut mismatches = Vec::new();
    for test in &tests {
        let name = test
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (theirs, their_out) = run(&promtool, &["test", "rules", &name], &dir)?;
        let (ours, our_out) = run(&vigil, &["rules", "test", &name], &dir)?;
        let must_fail = name.starts_with("fail-");
        if must_fail {
            failing += 1;
        }
        let expected = i32::from(must_fail);
        if theirs != expected || ours != expected {
            mismatches.push(format!(
                "{name}: expected exit {expected}, promtool {theirs}, vigil {ours}\n--- promtool:\n{their_out}\n--- vigil:\n{our_out}"
            ));
        }
    }
    ensure!(failing >= 5, "only {failing} files that must fail");
    ensure!(
        mismatches.is_empty(),
        "{} of {} files differ:\n{}",
        mismatches.len(),
        tests.len(),
        mismatches.join("\n")
    );
    Ok(())
}

#[test]
fn failure_reports_read_as_promtools() -> Result<()> {
    let promtool = require_peer("promtool", "prometheus")?;
    let vigil = binary("vigil-collector")?;
    let dir = corpus();
    for name in [
        "fail-annotation-mismatch.test.yml",
        "fail-missing-alert.test.yml",
        "fail-wrong-value.test.yml",
        "fail-limit.test.yml",
    ] {
        let theirs = Command::new(&promtool)
            .args(["test", "rules", name])
            .current_dir(&dir)
            .output()?;
        let ours = Command::new(&vigil)
            .args(["rules", "test", name])
            .current_dir(&dir)
            .output()?;
        ensure!(
            theirs.stdout == ours.stdout && theirs.stderr == ours.stderr,
            "{name}: reports differ\n--- promtool:\n{}\n--- vigil:\n{}",
            String::from_utf8_lossy(&theirs.stderr),
            String::from_utf8_lossy(&ours.stderr)
        );
    }
    Ok(())
}

#[test]
fn vigil_only_flap_tests_pass_and_promtool_refuses_their_rules() -> Result<()> {
    let promtool = require_peer("promtool", "prometheus")?;
    let vigil = binary("vigil-collector")?;
    let dir = corpus().join("vigil-only");
    let tests = files(&dir, ".test.yml")?;
    ensure!(tests.len() >= 3, "only {} flap test files", tests.len());
    for test in &tests {
        let name = test
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (code, out) = run(&vigil, &["rules", "test", &name], &dir)?;
        let expected = i32::from(name.starts_with("fail-"));
        ensure!(
            code == expected,
            "{name}: exit {code}, expected {expected}\n{out}"
        );
    }
    let (code, out) = run(&promtool, &["check", "rules", "flap.rules.yml"], &dir)?;
    ensure!(
        code == 1 && out.contains("field vigil not found"),
        "promtool should refuse the vigil: key: exit {code}\n{out}"
    );
    let (code, out) = run(&vigil, &["rules", "check", "flap.rules.yml"], &dir)?;
    ensure!(code == 0, "vigil refuses its own keys: {out}");
    Ok(())
}

#[test]
fn every_shared_rule_file_checks_and_broken_ones_fail_in_both() -> Result<()> {
    let promtool = require_peer("promtool", "prometheus")?;
    let vigil = binary("vigil-collector")?;
    let shared = compat_path("rules")?;
    let rule_files = files(&shared, ".yml")?;
    ensure!(
        rule_files.len() >= 3,
        "no rule files in {}",
        shared.display()
    );
    for f in &rule_files {
        let path = f.to_string_lossy();
        let (code, out) = run(&vigil, &["rules", "check", &path], &shared)?;
        ensure!(code == 0 && out.contains("SUCCESS"), "{path}: {out}");
    }
    let dir = corpus();
    for f in files(&dir, ".rules.yml")? {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (theirs, their_out) = run(&promtool, &["check", "rules", &name], &dir)?;
        let (ours, our_out) = run(&vigil, &["rules", "check", &name], &dir)?;
        ensure!(
            theirs == ours,
            "{name}: promtool {theirs}, vigil {ours}\n{their_out}\n{our_out}"
        );
    }
    let (code, out) = run(&vigil, &["rules", "check", "broken.rules.yml"], &dir)?;
    ensure!(
        code == 1 && out.contains("broken.rules.yml: 7:15: group \"broken\", rule 1, \"Broken\": could not parse expression"),
        "{out}"
    );
    Ok(())
}
