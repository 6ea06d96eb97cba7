//! End to end at the collector's door, with a hand-made gRPC client: a
//! replayed batch is acknowledged and applied once, an invalid series is
//! refused with a message naming it, and bad configs are refused with the
//! file, line and key.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tonic::Code;
use vigil_shared::histogram::{RATIO, WindowEncoder};
use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};
use vigil_tests::{Collector, binary};

fn labels(instance: &str, extra: &[(&str, &str)]) -> Vec<Label> {
    let mut l: Vec<Label> = extra
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    l.push(Label {
        name: "instance".into(),
        value: instance.into(),
    });
    l.push(Label {
        name: "job".into(),
        value: "node".into(),
    });
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

/// A fixed base time so that every batch's samples are one second apart.
fn base_ms() -> i64 {
    use std::sync::OnceLock;
    static BASE: OnceLock<i64> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now - 120_000
    })
}

fn batch(sequence: u64, extra_label: Option<(&str, &str)>) -> Result<PushRequest> {
    let t = base_ms() + sequence as i64 * 1000;
    let mut encoder = WindowEncoder::new()?;
    let window = encoder.encode(&[0.25, 0.5, 0.75], &RATIO, 1_000, 4_000)?;
    let gauge_labels = labels("door", extra_label.as_slice());
    Ok(PushRequest {
        agent_id: "door".into(),
        epoch: 42,
        sequence,
        timestamp_ms: t,
        flush_interval_ms: 1_000,
        last: false,
        families: vec![
            Family {
                name: "door_gauge".into(),
                help: "A gauge.".into(),
                kind: Kind::Gauge as i32,
                bucket_bounds: vec![],
                series: vec![Series {
                    labels: gauge_labels,
                    value: sequence as f64,
                    timestamp_ms: t,
                    window: None,
                }],
            },
            Family {
                name: "door_busy_ratio".into(),
                help: "A window.".into(),
                kind: Kind::Histogram as i32,
                bucket_bounds: RATIO.bounds.to_vec(),
                series: vec![Series {
                    labels: labels("door", &[]),
                    value: 0.75,
                    timestamp_ms: t,
                    window: Some(window),
                }],
            },
        ],
        ..Default::default()
    })
}

#[test]
fn replayed_batch_is_applied_once_and_invalid_series_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
        let first = client.push(batch(1, None)?).await?.into_inner();
        ensure!(
            !first.duplicate && first.accepted_series == 2 && first.acknowledged_sequence == 1,
            "{first:?}"
        );
        let replay = client.push(batch(1, None)?).await?.into_inner();
        ensure!(
            replay.duplicate && replay.accepted_series == 0,
            "{replay:?}"
        );
        let second = client.push(batch(2, None)?).await?.into_inner();
        ensure!(!second.duplicate);

        let bad = client
            .push(batch(3, Some(("bad-label", "x")))?)
            .await
            .err()
            .context("an invalid label was accepted")?;
        ensure!(bad.code() == Code::InvalidArgument, "{bad:?}");
        ensure!(
            bad.message()
                .contains("door_gauge{bad-label=\"x\",instance=\"door\",job=\"node\"}")
                && bad.message().contains("invalid label name"),
            "{}",
            bad.message()
        );
        anyhow::Ok(())
    })?;
    let scrape = collector.scrape()?;
    // Two batches applied, one replay ignored: three samples each, six in all.
    ensure!(scrape.value("door_busy_ratio_count", &[("instance", "door")]) == Some(6.0));
    ensure!(
        scrape.value(
            "door_busy_ratio_bucket",
            &[("instance", "door"), ("le", "0.5")]
        ) == Some(4.0)
    );
    ensure!(scrape.value("door_gauge", &[("instance", "door")]) == Some(2.0));
    ensure!(scrape.value("vigil_collector_pushes_total", &[("result", "duplicate")]) == Some(1.0));
    ensure!(scrape.value("vigil_collector_pushes_total", &[("result", "applied")]) == Some(2.0));
    ensure!(
        scrape.value(
            "vigil_collector_pushes_rejected_total",
            &[("reason", "invalid_argument")]
        ) == Some(1.0)
    );
    Ok(())
}

#[test]
fn check_config_names_file_line_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("agent.toml");
    std::fs::write(
        &bad,
        "instance = \"x\"\n[collector]\nendpiont = \"http://c:9471\"\n",
    )?;
    let out = Command::new(binary("vigil-agent")?)
        .args(["--check-config", "--config", &bad.to_string_lossy()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    ensure!(
        stderr.contains(&format!("{}:3:1: key `collector.endpiont`", bad.display())),
        "{stderr}"
    );

    let bad = dir.path().join("collector.toml");
    std::fs::write(
        &bad,
        "[ingest]\nlisten = \"0.0.0.0:9471\"\nmax_series_per_push = 0\n",
    )?;
    let out = Command::new(binary("vigil-collector")?)
        .args(["--check-config", "--config", &bad.to_string_lossy()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    ensure!(
        stderr.contains("line 3: key `ingest.max_series_per_push`: must be at least 1"),
        "{stderr}"
    );

    for bin in ["vigil-agent", "vigil-collector"] {
        let out = Command::new(binary(bin)?).arg("--check-config").output()?;
        ensure!(
            out.status.success(),
            "{bin} defaults: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(String::from_utf8_lossy(&out.stdout).contains("<embedded defaults> is valid"));
    }
    Ok(())
}

#[test]
fn json_logs_are_one_object_per_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "instance = \"json\"\ndata_dir = \"{}\"\n[collector]\nendpoint = \"http://127.0.0.1:9\"\n",
            dir.path().join("data").display()
        ),
    )?;
    let log = dir.path().join("agent.log");
    let mut child = Command::new(binary("vigil-agent")?)
        .args([
            "--log-format",
            "json",
            "--config",
            &config.to_string_lossy(),
        ])
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let seen = vigil_tests::wait_for("the start line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("agent started"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = seen?;
    for line in text.lines() {
        ensure!(line.starts_with('{') && line.ends_with('}'), "{line}");
    }
    ensure!(
        text.lines()
            .any(|l| l.contains("\"message\":\"agent started\"")
                && l.contains("\"instance\":\"json\"")),
        "{text}"
    );
    Ok(())
}

#[test]
fn acknowledged_batches_survive_sigkill() -> Result<()> {
    survive_sigkill("")
}

#[test]
fn acknowledged_batches_survive_sigkill_with_interval_fsync() -> Result<()> {
    survive_sigkill("wal_fsync = \"interval\"\nwal_fsync_interval = \"200ms\"")
}

/// Pushes 25 batches, SIGKILLs the collector, and checks every acknowledged
/// one is back after the restart; `store` is extra TOML for `[store]`.
fn survive_sigkill(store: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (vigil_tests::free_port()?, vigil_tests::free_port()?);
    let start = || Collector::start_store(dir.path(), "collector", http_port, ingest_port, store);
    let collector = start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let acknowledged = runtime.block_on(async {
        let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
        let mut acknowledged = 0u64;
        for sequence in 1..=25 {
            let answer = client.push(batch(sequence, None)?).await?.into_inner();
            ensure!(answer.acknowledged_sequence == sequence && !answer.duplicate);
            acknowledged += 1;
        }
        anyhow::Ok(acknowledged)
    })?;
    let before = collector.scrape()?;
    let appends = before.value("vigil_collector_wal_appends_total", &[]);
    let syncs = before.value("vigil_collector_wal_syncs_total", &[]);
    ensure!(appends == Some(25.0), "appends {appends:?}");
    if store.is_empty() {
        // One push at a time: each waits for its own sync.
        ensure!(syncs == Some(25.0), "syncs {syncs:?}");
    }
    // SIGKILL: no chance to flush anything.
    drop(collector);
    let collector = start()?;
    collector
        .process
        .wait_for_log("write-ahead log replayed", Duration::from_secs(10))?;
    // A start that replayed the log checkpoints at once, so that a collector
    // killed again and again does not replay an ever longer log.
    collector
        .process
        .wait_for_log("checkpoint written", Duration::from_secs(10))?;
    let scrape = collector.scrape()?;
    let count = scrape.value("door_busy_ratio_count", &[("instance", "door")]);
    ensure!(
        count == Some(3.0 * acknowledged as f64),
        "after restart: count {count:?}, acknowledged {acknowledged} batches of 3 samples"
    );
    ensure!(scrape.value("door_gauge", &[("instance", "door")]) == Some(acknowledged as f64));
    // The history came back too: every acknowledged sample, read through the query API.
    let at = (base_ms() as f64 + 60_000.0) / 1000.0;
    let answer = collector.query("door_gauge{instance=\"door\"}[2m]", at)?;
    let values = &answer["data"]["result"][0]["values"];
    let got: Vec<f64> = values
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p[1].as_str().and_then(|v| v.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<f64> = (1..=acknowledged).map(|s| s as f64).collect();
    ensure!(
        got == want,
        "history after restart: {got:?}, want {want:?} ({answer})"
    );
    let rate = collector.query(
        "increase(door_busy_ratio_count{instance=\"door\"}[10m])",
        at,
    )?;
    ensure!(rate["data"]["resultType"] == "vector", "{rate}");
    // The collector still knows what it applied: a replayed batch is a duplicate.
    let replay = runtime.block_on(async {
        let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
        anyhow::Ok(client.push(batch(acknowledged, None)?).await?.into_inner())
    })?;
    ensure!(replay.duplicate, "{replay:?}");
    Ok(())
}

#[test]
fn restart_after_a_checkpoint_replays_only_the_newer_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (vigil_tests::free_port()?, vigil_tests::free_port()?);
    let every_second = "checkpoint_interval = \"1s\"";
    let start = || {
        Collector::start_store(
            dir.path(),
            "collector",
            http_port,
            ingest_port,
            every_second,
        )
    };
    let collector = start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let push = |collector: &Collector, sequences: std::ops::RangeInclusive<u64>| {
        runtime.block_on(async {
            let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
            for sequence in sequences {
                let answer = client.push(batch(sequence, None)?).await?.into_inner();
                ensure!(answer.acknowledged_sequence == sequence && !answer.duplicate);
            }
            anyhow::Ok(())
        })
    };
    push(&collector, 1..=20)?;
    collector
        .process
        .wait_for_log("checkpoint written", Duration::from_secs(15))?;
    push(&collector, 21..=30)?;
    drop(collector); // SIGKILL
    let collector = start()?;
    collector
        .process
        .wait_for_log("write-ahead log replayed", Duration::from_secs(10))?;
    let log = collector.process.log();
    ensure!(log.contains("checkpoint loaded"), "{log}");
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value("door_busy_ratio_count", &[("instance", "door")]) == Some(90.0),
        "{}",
        scrape.text
    );
    ensure!(scrape.value("door_gauge", &[("instance", "door")]) == Some(30.0));
    let at = (base_ms() as f64 + 60_000.0) / 1000.0;
    let answer = collector.query("door_gauge{instance=\"door\"}[2m]", at)?;
    let n = answer["data"]["result"][0]["values"]
        .as_array()
        .map(Vec::len);
    ensure!(
        n == Some(30),
        "history after checkpoint and restart: {n:?} samples: {answer}"
    );
    Ok(())
}

/// Whether stderr shows a stack trace or Rust's debug rendering of an error.
fn shows_a_backtrace(stderr: &str) -> bool {
    [
        "Stack backtrace",
        "<unknown>",
        "Error: ",
        "panicked",
        "RUST_BACKTRACE",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

#[test]
fn config_and_startup_errors_are_one_clean_message_even_with_backtraces_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("collector.toml");
    std::fs::write(&bad, "[ingest]\nmax_series_per_push = 0\n")?;
    for args in [vec!["--check-config"], vec![]] {
        let out = Command::new(binary("vigil-collector")?)
            .args(&args)
            .args(["--config", &bad.to_string_lossy()])
            .env("RUST_BACKTRACE", "1")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "{args:?}: exit {:?}",
            out.status
        );
        ensure!(
            stderr.starts_with("error: ") && stderr.contains("ingest.max_series_per_push"),
            "{stderr}"
        );
        ensure!(!shows_a_backtrace(&stderr), "{stderr}");
    }

    // A start-up error: the HTTP port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let config = dir.path().join("taken.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = \"{}\"\n",
            taken.local_addr()?,
            dir.path().join("data").display()
        ),
    )?;
    let out = Command::new(binary("vigil-collector")?)
        .args(["--config", &config.to_string_lossy()])
        .env("RUST_BACKTRACE", "full")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    ensure!(
        stderr.contains("error: cannot listen on HTTP") && stderr.contains("http.listen"),
        "{stderr}"
    );
    ensure!(!shows_a_backtrace(&stderr), "{stderr}");

    let bad = dir.path().join("agent.toml");
    std::fs::write(&bad, "sample_interval = \"forever\"\n")?;
    let out = Command::new(binary("vigil-agent")?)
        .args(["--config", &bad.to_string_lossy()])
        .env("RUST_BACKTRACE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "exit {:?}", out.status);
    ensure!(
        stderr.starts_with("error: ") && stderr.contains("sample_interval"),
        "{stderr}"
    );
    ensure!(!shows_a_backtrace(&stderr), "{stderr}");
    Ok(())
}

#[test]
fn check_config_accepts_a_routing_file_with_a_webhook() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: team\nreceivers:\n  - name: team\n    webhook_configs:\n      - url: https://hooks.example.net/alerts\n",
    )?;
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        "[notify]\nalertmanager_config = \"alertmanager.yml\"\n",
    )?;
    let out = Command::new(binary("vigil-collector")?)
        .args(["--check-config", "--config", &config.to_string_lossy()])
        .env("RUST_BACKTRACE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "exit {:?}: {stderr}", out.status);
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("alertmanager.yml is valid"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}
