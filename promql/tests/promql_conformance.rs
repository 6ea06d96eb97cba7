//! Prometheus's own PromQL conformance tests (v2.42.0, `testdata/compat/promql/*.test`,
//! filled by `scripts/fetch-compat.sh`)
//! run against Vigil's engine. Every evaluation must pass, or be listed in
//! `testdata/promql-exceptions.txt` with a reason; an exception that starts
//! passing must be removed from the list, so that the list only shrinks.
//!
//! It runs without the test harness so that its per-file results are always
//! printed, as `file: N passed, M failed`, then the total.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vigil_promql::testfile;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/compat/promql")
}

/// `file.test:LINE` → reason.
fn exceptions() -> BTreeMap<String, String> {
    let text = include_str!("../testdata/promql-exceptions.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once(char::is_whitespace)
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

fn main() {
    let dir = compat_dir();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "test"))
            .collect(),
        Err(e) => panic!(
            "cannot read Prometheus's conformance tests in {}: {e}: run scripts/fetch-compat.sh (the README's test command runs it first)",
            dir.display()
        ),
    };
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let known = exceptions();
    let mut unexpected = Vec::new();
    let mut now_passing: Vec<String> = known.keys().cloned().collect();
    let (mut total_passed, mut total_failed) = (0, 0);
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = testfile::run(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{name}: {} passed, {} failed",
            outcome.passed,
            outcome.failed.len()
        );
        total_passed += outcome.passed;
        total_failed += outcome.failed.len();
        for f in &outcome.failed {
            let key = format!("{name}:{}", f.line);
            now_passing.retain(|k| *k != key);
            if !known.contains_key(&key) {
                unexpected.push(format!("{key}: {} — {}", f.expr, f.message));
            }
        }
    }
    println!(
        "promql conformance: {total_passed} passed, {total_failed} failed ({} listed as known exceptions)",
        known.len()
    );
    for u in &unexpected {
        println!("UNEXPECTED FAILURE {u}");
    }
    if !unexpected.is_empty() {
        eprintln!(
            "{} evaluations failed that are not in testdata/promql-exceptions.txt",
            unexpected.len()
        );
        std::process::exit(1);
    }
    if !now_passing.is_empty() {
        eprintln!(
            "these exceptions pass now; remove them from testdata/promql-exceptions.txt: {now_passing:?}"
        );
        std::process::exit(1);
    }
}
