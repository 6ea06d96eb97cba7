//! End to end: how batches get from a real agent to a real collector when
//! things are not fine: wrong tokens, a collector that is down, TLS, shutdown.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, Scrape, free_port, start_agent, wait_for};

fn samples_total(scrape: &Scrape, instance: &str) -> Option<f64> {
    scrape.value("vigil_agent_samples_total", &[("instance", instance)])
}

/// Every sample the agent took has reached the collector: the memory
/// histogram (one observation per sample) counts exactly the samples taken.
fn all_samples_arrived(scrape: &Scrape, instance: &str) -> Result<f64> {
    let samples = samples_total(scrape, instance).context("no vigil_agent_samples_total")?;
    let count = scrape.value("vigil_memory_used_ratio_count", &[("instance", instance)]);
    ensure!(
        count == Some(samples),
        "vigil_memory_used_ratio_count {count:?} != samples taken {samples}"
    );
    Ok(samples)
}

#[test]
fn agent_with_wrong_token_is_refused_and_says_why() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = "[[ingest.agents]]\ninstance = \"good\"\ntoken = \"good-token-0123456789\"\n\
                  [[ingest.agents]]\ninstance = \"other\"\ntoken = \"other-token-0123456789\"\n";
    let collector = Collector::start(
        dir.path(),
        "collector",
        free_port()?,
        free_port()?,
        tokens,
        "",
    )?;
    let agent = |name: &str, token: &str| {
        let token_file = dir.path().join(format!("{name}.token"));
        std::fs::write(&token_file, format!("{token}\n"))?;
        start_agent(
            dir.path(),
            name,
            &format!(
                "instance = \"{name}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\ntoken_file = \"{}\"\n",
                collector.ingest,
                token_file.display()
            ),
        )
    };
    let good = agent("good", "good-token-0123456789")?;
    let wrong = agent("wrong", "not-the-token-0123456789")?;
    let borrowed = agent("borrower", "other-token-0123456789")?;

    wrong.wait_for_log("collector refused the batch", Duration::from_secs(30))?;
    let log = wrong.log();
    ensure!(
        log.contains("reason=\"unauthenticated\"")
            && log.contains("a token this collector does not know"),
        "{log}"
    );
    ensure!(
        !log.contains("not-the-token"),
        "the token leaked into the log:\n{log}"
    );
    borrowed.wait_for_log("collector refused the batch", Duration::from_secs(30))?;
    let log = borrowed.log();
    ensure!(
        log.contains("reason=\"permission_denied\"") && log.contains("belongs to agent \"other\""),
        "{log}"
    );

    let scrape = wait_for(
        "the good agent's data and both refusals counted",
        Duration::from_secs(30),
        || {
            collector.scrape().ok().filter(|s| {
                samples_total(s, "good").is_some()
                    && s.value(
                        "vigil_collector_pushes_rejected_total",
                        &[("reason", "unauthenticated")],
                    )
                    .is_some_and(|v| v >= 1.0)
                    && s.value(
                        "vigil_collector_pushes_rejected_total",
                        &[("reason", "permission_denied")],
                    )
                    .is_some_and(|v| v >= 1.0)
            })
        },
    )?;
    ensure!(
        samples_total(&scrape, "wrong").is_none() && samples_total(&scrape, "borrower").is_none()
    );
    ensure!(
        scrape
            .samples("node_load1", &[("instance", "wrong")])
            .is_empty()
    );
    // The good agent's own counters say its batches were not refused.
    ensure!(
        scrape.value(
            "vigil_agent_batches_dropped_total",
            &[("instance", "good"), ("reason", "unauthenticated")]
        ) == Some(0.0)
    );
    drop(good);
    Ok(())
}

#[test]
fn agent_keeps_sampling_while_collector_is_down_and_delivers_later() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (free_port()?, free_port()?);
    let instance = "e2e-down";
    let mut agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"{instance}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://127.0.0.1:{ingest_port}\"\ntimeout = \"1s\"\n\
             [shipper]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n"
        ),
    )?;
    agent.wait_for_log("collector unreachable", Duration::from_secs(30))?;
    // The collector stays down for three flush intervals while the agent samples.
    std::thread::sleep(Duration::from_secs(3));
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    let scrape = wait_for(
        "the agent's queued batches",
        Duration::from_secs(30),
        || {
            collector
                .scrape()
                .ok()
                .filter(|s| samples_total(s, instance).is_some_and(|n| n >= 16.0))
        },
    )?;
    let samples = all_samples_arrived(&scrape, instance)?;
    ensure!(samples >= 16.0, "only {samples} samples arrived");
    ensure!(
        scrape
            .value("vigil_agent_send_retries_total", &[("instance", instance)])
            .is_some_and(|r| r >= 1.0),
        "no retries recorded"
    );
    ensure!(
        scrape.value(
            "vigil_agent_batches_dropped_total",
            &[("instance", instance), ("reason", "spool_full")]
        ) == Some(0.0)
    );
    agent.wait_for_log("collector reachable again", Duration::from_secs(10))?;

    // The collector is killed and comes back 3 s (three flushes) later: what
    // the agent queued meanwhile lands in the history too, none of it refused
    // as older than a stale marker.
    drop(collector);
    std::thread::sleep(Duration::from_secs(3));
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    let scrape = wait_for(
        "the batches queued during the restart",
        Duration::from_secs(30),
        || {
            collector
                .scrape()
                .ok()
                .filter(|s| samples_total(s, instance).is_some_and(|n| n >= samples + 16.0))
        },
    )?;
    all_samples_arrived(&scrape, instance)?;
    ensure!(
        scrape.value("vigil_collector_samples_out_of_order_total", &[]) == Some(0.0),
        "queued samples were refused by the history: {:?}",
        scrape.value("vigil_collector_samples_out_of_order_total", &[])
    );

    // SIGTERM: the agent closes its last window and ships it before exiting.
    let status = agent.terminate(Duration::from_secs(15))?;
    ensure!(status.success(), "agent exited with {status}");
    ensure!(
        agent.log().contains("every batch delivered"),
        "{}",
        agent.log()
    );
    let last = collector.scrape()?;
    let final_samples = all_samples_arrived(&last, instance)?;
    ensure!(final_samples >= samples);
    Ok(())
}

#[test]
fn agent_ships_over_mutual_tls_and_a_client_without_certificate_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    vigil_tests::make_certificates(d)?;
    let tls = format!(
        "[ingest.tls]\ncert_file = \"{0}/server.pem\"\nkey_file = \"{0}/server.pk8\"\nclient_ca_file = \"{0}/ca.pem\"\n",
        d.display()
    );
    let collector = Collector::start(d, "collector", free_port()?, free_port()?, "", &tls)?;
    let base = |instance: &str| {
        format!(
            "instance = \"{instance}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"https://localhost:{}\"\nca_file = \"{}/ca.pem\"\ntimeout = \"2s\"\n",
            collector.ingest.port(),
            d.display()
        )
    };
    let _with_cert = start_agent(
        d,
        "tls-agent",
        &format!(
            "{}cert_file = \"{1}/client.pem\"\nkey_file = \"{1}/client.pk8\"\n",
            base("tls-agent"),
            d.display()
        ),
    )?;
    let without_cert = start_agent(d, "no-cert-agent", &base("no-cert-agent"))?;
    let scrape = wait_for("data over TLS", Duration::from_secs(30), || {
        collector
            .scrape()
            .ok()
            .filter(|s| samples_total(s, "tls-agent").is_some())
    })?;
    all_samples_arrived(&scrape, "tls-agent")?;
    without_cert.wait_for_log("collector unreachable", Duration::from_secs(30))?;
    ensure!(samples_total(&collector.scrape()?, "no-cert-agent").is_none());
    Ok(())
}
