//! The repository's shape: the collector's stages depend on each other one
//! way only (store ← engine ← rules → alerts → notifications, templates
//! shared by rules and notifications, the binary above all), and the
//! third-party test corpora come only through `scripts/fetch-compat.sh`,
//! which refuses a file whose checksum differs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use vigil_tests::compat_path;

/// Which Vigil crates each Vigil crate may depend on (any kind: normal,
/// build or dev).
const ALLOWED: &[(&str, &[&str])] = &[
    ("vigil-shared", &[]),
    // Only the binaries' crates: it changes with every commit.
    ("vigil-build-info", &[]),
    ("vigil-store", &["vigil-shared"]),
    ("vigil-promql", &["vigil-shared", "vigil-store"]),
    ("vigil-template", &["vigil-shared"]),
    (
        "vigil-rules",
        &[
            "vigil-shared",
            "vigil-store",
            "vigil-promql",
            "vigil-template",
        ],
    ),
    ("vigil-notify", &["vigil-shared", "vigil-template"]),
    ("vigil-remote-write", &["vigil-shared", "vigil-store"]),
    ("vigil-agent", &["vigil-shared", "vigil-build-info"]),
    (
        "vigil-collector",
        &[
            "vigil-shared",
            "vigil-store",
            "vigil-promql",
            "vigil-template",
            "vigil-rules",
            "vigil-notify",
            "vigil-remote-write",
            "vigil-build-info",
        ],
    ),
    ("vigil-tests", &["vigil-shared"]),
];

/// Each workspace crate and the Vigil crates it depends on, from `cargo metadata`.
fn workspace_graph() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .context("running cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut graph = BTreeMap::new();
    for package in meta["packages"].as_array().context("no packages")? {
        let name = package["name"]
            .as_str()
            .context("package name")?
            .to_string();
        let deps = package["dependencies"]
            .as_array()
            .context("dependencies")?
            .iter()
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("vigil-"))
            .map(String::from)
            .collect();
        graph.insert(name, deps);
    }
    Ok(graph)
}

#[test]
fn stage_crates_depend_one_way_only() -> Result<()> {
    let graph = workspace_graph()?;
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for (name, deps) in &graph {
        let Some(ok) = allowed.get(name.as_str()) else {
            wrong.push(format!(
                "{name} is not in ALLOWED: say which Vigil crates it may use"
            ));
            continue;
        };
        for d in deps {
            if !ok.contains(d.as_str()) {
                wrong.push(format!("{name} depends on {d}"));
            }
        }
    }
    ensure!(wrong.is_empty(), "the crate graph is broken: {wrong:#?}");
    // The check is not vacuous: the stages are all there.
    for stage in ["vigil-store", "vigil-promql", "vigil-rules", "vigil-notify"] {
        ensure!(graph.contains_key(stage), "{stage} is missing");
    }
    ensure!(graph["vigil-rules"].contains("vigil-promql"));
    Ok(())
}

fn fetch_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-compat.sh")
}

/// Copies `from` into `to`, folder by folder.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn fetch_script_fills_the_corpus_and_refuses_a_file_with_a_wrong_checksum() -> Result<()> {
    let corpus = compat_path("")?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    copy_tree(&corpus, &source)?;

    // From a good source, every file arrives.
    let good = dir.path().join("good");
    let out = Command::new("bash")
        .arg(fetch_script())
        .env("VIGIL_COMPAT_SOURCE", &source)
        .env("VIGIL_COMPAT_DEST", &good)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(good.join("promql/functions.test").is_file());
    ensure!(good.join("dashboards/node-exporter-full.json").is_file());

    // One byte changed in the source: that file is refused and named, the
    // script fails, and nothing unchecked is left behind.
    let tampered = source.join("rules/node-exporter.yml");
    let mut text = std::fs::read(&tampered)?;
    text.push(b'\n');
    std::fs::write(&tampered, text)?;
    let bad = dir.path().join("bad");
    let out = Command::new("bash")
        .arg(fetch_script())
        .env("VIGIL_COMPAT_SOURCE", &source)
        .env("VIGIL_COMPAT_DEST", &bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a tampered file was accepted");
    ensure!(
        stderr.contains("rules/node-exporter.yml") && stderr.contains("refused"),
        "{stderr}"
    );
    ensure!(!bad.join("rules/node-exporter.yml").exists());
    ensure!(bad.join("rules/blackbox-exporter.yml").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(bad.join("rules"))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".yml"))
        .collect();
    ensure!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}
