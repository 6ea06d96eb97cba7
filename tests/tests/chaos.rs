//! Delivery under faults: 20 real agents send through a fault-injecting
//! proxy to a collector that is SIGKILLed and restarted again and again; in
//! the end nothing acknowledged is lost and nothing is applied twice. Also:
//! a corrupt spool record, a spool over its cap, and fail-over between two
//! collectors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use vigil_tests::proxy::{FaultProxy, Mode};
use vigil_tests::{Collector, Process, free_port, start_agent, wait_for};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Every raw sample of `metric` for `instance` the collector holds, oldest first.
fn history(collector: &Collector, metric: &str, instance: &str) -> Result<Vec<(f64, f64)>> {
    let json = collector.query(&format!("{metric}{{instance=\"{instance}\"}}[2h]"), now())?;
    let mut out = Vec::new();
    for series in json["data"]["result"].as_array().into_iter().flatten() {
        for point in series["values"].as_array().into_iter().flatten() {
            let t = point[0].as_f64().unwrap_or_default();
            let v: f64 = point[1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            if !v.is_nan() {
                out.push((t, v));
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// The last value of `metric` for `instance`.
fn last(collector: &Collector, metric: &str, instance: &str) -> Result<f64> {
    history(collector, metric, instance)?
        .last()
        .map(|p| p.1)
        .with_context(|| format!("no {metric} for {instance}"))
}

/// Sequence numbers that arrived, how often each.
fn sequences(collector: &Collector, instance: &str) -> Result<BTreeMap<u64, usize>> {
    let mut seen = BTreeMap::new();
    for (_, v) in history(collector, "vigil_agent_batch_sequence", instance)? {
        *seen.entry(v as u64).or_insert(0) += 1;
    }
    Ok(seen)
}

/// The sample count an agent logged when it stopped cleanly.
fn samples_taken(agent: &Process) -> Result<u64> {
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("every batch delivered"))
        .with_context(|| format!("the agent did not deliver everything:\n{log}"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("samples=")?.parse().ok())
        .with_context(|| format!("no samples= in {line}"))
}

/// Sequence numbers from 1 to `highest` that did not arrive.
fn missing(seen: &BTreeMap<u64, usize>, highest: u64) -> Vec<u64> {
    (1..=highest).filter(|s| !seen.contains_key(s)).collect()
}

/// The highest sequence number that arrived.
fn highest(seen: &BTreeMap<u64, usize>) -> u64 {
    seen.keys().next_back().copied().unwrap_or(0)
}

/// `[collector]` lines for one collector.
fn endpoint(addr: impl std::fmt::Display) -> String {
    format!("endpoint = \"http://{addr}\"")
}

/// `[collector]` lines for two collectors on 127.0.0.1 in `mode`.
fn endpoints(ingest_ports: [u16; 2], mode: &str) -> String {
    let [a, b] = ingest_ports;
    format!("endpoints = [\"http://127.0.0.1:{a}\", \"http://127.0.0.1:{b}\"]\nmode = \"{mode}\"")
}

/// (HTTP, ingest) ports of two collectors.
type PortPairs = [(u16, u16); 2];

/// Two collectors on free ports; returns them with their ports.
fn two_collectors(dir: &Path, names: [&str; 2]) -> Result<(PortPairs, Collector, Collector)> {
    let ports = [(free_port()?, free_port()?), (free_port()?, free_port()?)];
    let a = Collector::start(dir, names[0], ports[0].0, ports[0].1, "", "")?;
    let b = Collector::start(dir, names[1], ports[1].0, ports[1].1, "", "")?;
    Ok((ports, a, b))
}

/// An agent sampling and flushing every `interval`, only its own metrics;
/// `collector` holds the `[collector]` lines that say where to send, `top`
/// and `shipper` extra lines for the top level and `[shipper]`.
fn agent_config(
    instance: &str,
    collector: &str,
    interval: &str,
    top: &str,
    shipper: &str,
) -> String {
    format!(
        "instance = \"{instance}\"\nsample_interval = \"{interval}\"\nflush_interval = \"{interval}\"\n{top}\n\
         [collector]\n{collector}\ntimeout = \"2s\"\n\
         [shipper]\nretry_initial = \"100ms\"\nretry_max = \"1s\"\nshutdown_timeout = \"60s\"\n{shipper}\n\
         [sources.system]\nenabled = false\n"
    )
}

#[test]
fn chaos_loses_nothing_and_applies_nothing_twice() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (free_port()?, free_port()?);
    let proxy = FaultProxy::start(([127, 0, 0, 1], ingest_port).into())?;
    // Checkpoints every 2 s (and after every replay): kills land before,
    // during and after them, and the log a restart replays stays short.
    let start_collector = || {
        Collector::start_store(
            dir.path(),
            "collector",
            http_port,
            ingest_port,
            "checkpoint_interval = \"2s\"",
        )
    };
    let mut collector = Some(start_collector()?);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("chaos seed {seed} (CHAOS_SEED={seed} repeats this run)");

    const AGENTS: usize = 20;
    let to_proxy = endpoint(proxy.addr());
    let config = |i: usize| {
        agent_config(
            &format!("chaos-{i:02}"),
            &to_proxy,
            "1s",
            &format!(
                "data_dir = \"{}\"",
                dir.path().join(format!("spool-{i:02}")).display()
            ),
            "",
        )
        // The system source on: its per-sample memory histogram is summed
        // by the collector, so a batch applied twice or lost shows in the
        // count. Only meminfo: the other collectors would triple every
        // batch, which twenty agents at 1 s send to a debug-build collector
        // killed every few seconds.
        .replace(
            "[sources.system]\nenabled = false\n",
            "[sources.system]\ncollectors_disabled = [\"stat\", \"loadavg\", \"diskstats\", \"netdev\", \"filesystem\", \"uname\", \"netstat\", \"sockstat\", \"softnet\", \"arp\", \"conntrack\", \"vmstat\", \"filefd\", \"pressure\", \"schedstat\", \"timex\", \"thermal_zone\", \"os\"]\n",
        )
    };
    let mut agents: Vec<Process> = (0..AGENTS)
        .map(|i| start_agent(dir.path(), &format!("agent-{i:02}"), &config(i)))
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let run_for = Duration::from_secs(100);
    let (mut kills, mut cuts, mut blackholes, mut agent_kills) = (0, 0, 0, 0);
    let mut next_kill = Duration::from_secs(4);
    let mut restarted_agent = None;
    while started.elapsed() < run_for || kills < 10 {
        let t = started.elapsed();
        if t >= next_kill {
            // SIGKILL the collector, keep it down a moment, start it again.
            drop(collector.take());
            kills += 1;
            std::thread::sleep(Duration::from_millis(rng.u64(200..2500)));
            collector = Some(start_collector()?);
            next_kill = started.elapsed() + Duration::from_millis(rng.u64(5000..9000));
            continue;
        }
        if agent_kills == 0 && t >= Duration::from_secs(40) {
            // One agent is SIGKILLed and started again on its spool: killed
            // (and reaped) first, since the spool folder is locked by the
            // agent that holds it.
            let victim = rng.usize(..AGENTS);
            drop(agents.remove(victim));
            agents.insert(
                victim,
                start_agent(
                    dir.path(),
                    &format!("agent-{victim:02}-again"),
                    &config(victim),
                )?,
            );
            agent_kills += 1;
            restarted_agent = Some(victim);
            continue;
        }
        match rng.u8(..4) {
            0 => {
                proxy.cut_next_message();
            }
            1 => {
                cuts += proxy.cut_all();
            }
            2 => {
                proxy.set_mode(Mode::Blackhole);
                blackholes += 1;
                std::thread::sleep(Duration::from_millis(rng.u64(500..3000)));
                proxy.set_mode(Mode::Pass);
            }
            _ => {
                proxy.set_mode(Mode::Delay(Duration::from_millis(rng.u64(50..400))));
                std::thread::sleep(Duration::from_millis(rng.u64(500..2000)));
                proxy.set_mode(Mode::Pass);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
    }
    proxy.set_mode(Mode::Pass);
    let collector = match collector {
        Some(c) => c,
        None => start_collector()?,
    };
    // Let every agent catch up, then stop them cleanly: each ships its last window.
    std::thread::sleep(Duration::from_secs(3));
    let mut taken = Vec::new();
    for agent in &mut agents {
        let status = agent.terminate(Duration::from_secs(90))?;
        ensure!(
            status.success(),
            "agent exited with {status}:\n{}",
            agent.log()
        );
        taken.push(samples_taken(agent)?);
    }

    let (mut lost, mut duplicated, mut replayed, mut acked_twice, mut batches) =
        (0u64, 0u64, 0.0, 0.0, 0);
    for (i, samples) in taken.iter().enumerate() {
        let instance = format!("chaos-{i:02}");
        let seen = sequences(&collector, &instance)?;
        let highest = highest(&seen);
        let missing = missing(&seen, highest);
        let twice: Vec<u64> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        if !missing.is_empty() || !twice.is_empty() {
            println!("{instance}: missing sequences {missing:?}, seen twice {twice:?}");
        }
        lost += missing.len() as u64;
        duplicated += twice.len() as u64;
        batches += seen.len();
        // The counter that grows by one every sample ends where the agent's count does.
        let counted = last(&collector, "vigil_agent_samples_total", &instance)?;
        if counted != *samples as f64 {
            println!(
                "{instance}: took {samples} samples, the collector's counter ends at {counted}"
            );
            lost += samples.saturating_sub(counted as u64).max(1);
        }
        // The collector adds up every batch's window: one observation per sample.
        let observed = collector
            .scrape()?
            .value("vigil_memory_used_ratio_count", &[("instance", &instance)])
            .unwrap_or(-1.0);
        if Some(i) == restarted_agent {
            println!(
                "{instance} (killed and restarted): {observed} memory observations summed by the collector"
            );
        } else if observed != *samples as f64 {
            println!(
                "{instance}: took {samples} samples, the collector summed {observed} observations"
            );
            if observed > *samples as f64 {
                duplicated += 1;
            } else {
                lost += 1;
            }
        }
        replayed += last(
            &collector,
            "vigil_agent_spool_replayed_batches_total",
            &instance,
        )?;
        acked_twice += last(&collector, "vigil_agent_batches_duplicate_total", &instance)?;
    }
    let counts = proxy.counts();
    cuts += counts
        .mid_message_cuts
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    println!(
        "lost={lost} duplicated={duplicated} agents={AGENTS} batches={batches} collector_kills={kills} \
         agent_kills={agent_kills} (agent {restarted_agent:?}) proxy_cuts={cuts} blackholes={blackholes} \
         replayed_batches={replayed} duplicates_acknowledged_not_applied={acked_twice} seed={seed}"
    );
    ensure!(kills >= 10, "only {kills} collector kills");
    ensure!(
        lost == 0 && duplicated == 0,
        "lost={lost} duplicated={duplicated}"
    );
    ensure!(batches >= AGENTS * 90, "only {batches} batches arrived");
    Ok(())
}

/// Writes the agent's spool while no collector answers, then stops it hard.
fn spool_while_down(dir: &Path, name: &str, config: &str, batches: u64) -> Result<()> {
    let agent = start_agent(dir, name, config)?;
    wait_for(
        &format!("{batches} spooled batches"),
        Duration::from_secs(60),
        || {
            spooled_records(&dir.join(format!("{name}-data")).join("spool"))
                .ok()
                .filter(|n| *n >= batches)
        },
    )?;
    drop(agent);
    Ok(())
}

/// Bytes of all spool segments in `spool`.
fn segments(spool: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = std::fs::read_dir(spool)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    out.sort();
    Ok(out)
}

/// Records in the spool's segments (counted by walking their frames).
fn spooled_records(spool: &Path) -> Result<u64> {
    let mut n = 0;
    for path in segments(spool)? {
        let data = std::fs::read(&path)?;
        let mut at = 0usize;
        while at + 8 <= data.len() {
            let len =
                u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            if at + 8 + len > data.len() {
                break;
            }
            n += 1;
            at += 8 + len;
        }
    }
    Ok(n)
}

#[test]
fn a_corrupt_spool_record_is_skipped_counted_and_the_rest_delivered() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (free_port()?, free_port()?);
    let config = agent_config(
        "corrupt",
        &endpoint(format!("127.0.0.1:{ingest_port}")),
        "200ms",
        "",
        "",
    );
    spool_while_down(dir.path(), "agent", &config, 6)?;
    // A crash in mid-write: the last record of the newest segment is damaged.
    let spool = dir.path().join("agent-data").join("spool");
    let newest = segments(&spool)?.pop().context("no segment")?;
    let records = spooled_records(&spool)?;
    let mut data = std::fs::read(&newest)?;
    let n = data.len();
    data[n - 5] ^= 0x5a;
    std::fs::write(&newest, &data)?;

    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    let mut agent = start_agent(dir.path(), "agent", &config)?;
    agent.wait_for_log("damaged record was skipped", Duration::from_secs(20))?;
    wait_for("the spooled batches", Duration::from_secs(30), || {
        sequences(&collector, "corrupt")
            .ok()
            .filter(|s| s.keys().next_back().is_some_and(|h| *h > records + 3))
    })?;
    ensure!(agent.terminate(Duration::from_secs(30))?.success());
    let seen = sequences(&collector, "corrupt")?;
    let highest = highest(&seen);
    let missing = missing(&seen, highest);
    // Exactly the damaged record (the last one written) is missing; its
    // number is not handed out again.
    ensure!(
        missing == vec![records],
        "missing {missing:?}, expected [{records}]"
    );
    ensure!(
        last(
            &collector,
            "vigil_agent_spool_corrupt_records_total",
            "corrupt"
        )? == 1.0,
        "the damaged record was not counted"
    );
    ensure!(
        last(
            &collector,
            "vigil_agent_spool_recovered_batches_total",
            "corrupt"
        )? == (records - 1) as f64
    );
    Ok(())
}

#[test]
fn a_full_spool_drops_exactly_the_oldest_batches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (free_port()?, free_port()?);
    let config = agent_config(
        "capped",
        &endpoint(format!("127.0.0.1:{ingest_port}")),
        "200ms",
        "",
        "max_spool_bytes = \"64KiB\"",
    );
    let mut agent = start_agent(dir.path(), "agent", &config)?;
    // Far more batches than the cap holds: wait for the first drop, then more.
    agent.wait_for_log(
        "spool full: dropped the oldest batch",
        Duration::from_secs(90),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    wait_for("the backlog", Duration::from_secs(60), || {
        history(&collector, "vigil_agent_spool_batches", "capped")
            .ok()
            .and_then(|h| h.last().copied())
            .filter(|(_, waiting)| *waiting <= 1.0)
    })?;
    ensure!(agent.terminate(Duration::from_secs(30))?.success());
    let seen = sequences(&collector, "capped")?;
    let dropped = last(
        &collector,
        "vigil_agent_spool_dropped_batches_total",
        "capped",
    )? as u64;
    let highest = highest(&seen);
    ensure!(dropped >= 1, "nothing dropped");
    // Everything after the dropped ones arrived, once; nothing before them
    // did, except the one batch that may have been on the wire when it was
    // dropped from the spool.
    let got: Vec<u64> = seen.keys().copied().collect();
    let first = got.first().copied().unwrap_or(0);
    let expected: Vec<u64> = (first..=highest).collect();
    ensure!(
        got == expected && (first == dropped + 1 || first == dropped),
        "dropped {dropped}; arrived {got:?}"
    );
    ensure!(seen.values().all(|n| *n == 1));
    println!(
        "spool cap: {dropped} oldest batches dropped, {} delivered",
        got.len()
    );
    Ok(())
}

#[test]
fn failover_switches_within_a_flush_and_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ([(http_a, ingest_a), (_, ingest_b)], primary, secondary) =
        two_collectors(dir.path(), ["primary", "secondary"])?;
    let config = agent_config(
        "failover",
        &endpoints([ingest_a, ingest_b], "failover"),
        "1s",
        "",
        "",
    );
    let mut agent = start_agent(dir.path(), "agent", &config)?;
    wait_for("batches at the primary", Duration::from_secs(30), || {
        sequences(&primary, "failover")
            .ok()
            .filter(|s| s.len() >= 4)
    })?;
    ensure!(sequences(&secondary, "failover")?.is_empty());
    let killed = Instant::now();
    drop(primary);
    let (flowed, seen_at, first) =
        wait_for("data at the secondary", Duration::from_secs(30), || {
            history(&secondary, "vigil_agent_batch_sequence", "failover")
                .ok()
                .and_then(|h| h.first().copied())
                .map(|(t, _)| (killed.elapsed(), now(), t))
        })?;
    println!(
        "failover: data reached the secondary {} ms after the primary was killed; its first batch there \
         was seen {} ms after its sample (flush interval 1000 ms)",
        flowed.as_millis(),
        ((seen_at - first) * 1000.0).round()
    );
    // The primary comes back: the agent switches back to it.
    std::thread::sleep(Duration::from_secs(3));
    let primary = Collector::start(dir.path(), "primary", http_a, ingest_a, "", "")?;
    agent.wait_for_log("switched back to it", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(agent.terminate(Duration::from_secs(30))?.success());
    let mut all = sequences(&primary, "failover")?;
    for (s, n) in sequences(&secondary, "failover")? {
        *all.entry(s).or_insert(0) += n;
    }
    let highest = highest(&all);
    let missing = missing(&all, highest);
    ensure!(missing.is_empty(), "missing {missing:?}");
    ensure!(last(&primary, "vigil_agent_collector_switches_total", "failover")? >= 2.0);
    Ok(())
}

#[test]
fn fanout_delivers_everything_to_both_collectors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ([(_, ingest_a), (http_b, ingest_b)], a, b) = two_collectors(dir.path(), ["a", "b"])?;
    let config = agent_config(
        "fanout",
        &endpoints([ingest_a, ingest_b], "fanout"),
        "500ms",
        "",
        "",
    );
    let mut agent = start_agent(dir.path(), "agent", &config)?;
    wait_for("batches at both", Duration::from_secs(30), || {
        let both =
            sequences(&a, "fanout").ok()?.len() >= 3 && sequences(&b, "fanout").ok()?.len() >= 3;
        both.then_some(())
    })?;
    // B is down for a while: A keeps receiving; B catches up from the spool.
    drop(b);
    let before = sequences(&a, "fanout")?.len();
    wait_for(
        "A receiving while B is down",
        Duration::from_secs(30),
        || (sequences(&a, "fanout").ok()?.len() >= before + 6).then_some(()),
    )?;
    let b = Collector::start(dir.path(), "b", http_b, ingest_b, "", "")?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        agent.terminate(Duration::from_secs(30))?.success(),
        "{}",
        agent.log()
    );
    let (on_a, on_b) = (sequences(&a, "fanout")?, sequences(&b, "fanout")?);
    let highest = highest(&on_a);
    for (name, seen) in [("A", &on_a), ("B", &on_b)] {
        let missing = missing(seen, highest);
        ensure!(missing.is_empty(), "{name} is missing {missing:?}");
        ensure!(
            seen.keys().next_back() == Some(&highest),
            "{name} ends at {:?}",
            seen.keys().next_back()
        );
    }
    println!("fanout: both collectors hold all {highest} batches; B was down for part of them");
    Ok(())
}

#[test]
fn an_unusable_spool_folder_keeps_batches_in_memory_and_says_so() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (free_port()?, free_port()?);
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    // The spool folder would be inside a regular file: it cannot be created.
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x")?;
    let config = agent_config(
        "no-disk",
        &endpoint(format!("127.0.0.1:{ingest_port}")),
        "200ms",
        &format!("data_dir = \"{}\"", file.join("agent").display()),
        "",
    );
    let mut agent = start_agent(dir.path(), "agent", &config)?;
    agent.wait_for_log("batches are kept in memory", Duration::from_secs(10))?;
    wait_for("batches from the agent", Duration::from_secs(30), || {
        sequences(&collector, "no-disk")
            .ok()
            .filter(|s| s.len() >= 5)
    })?;
    ensure!(
        agent.terminate(Duration::from_secs(30))?.success(),
        "{}",
        agent.log()
    );
    let seen = sequences(&collector, "no-disk")?;
    ensure!(missing(&seen, highest(&seen)).is_empty(), "{seen:?}");
    ensure!(last(&collector, "vigil_agent_spool_on_disk", "no-disk")? == 0.0);
    ensure!(
        last(
            &collector,
            "vigil_agent_spool_write_errors_total",
            "no-disk"
        )? >= 1.0
    );
    Ok(())
}
