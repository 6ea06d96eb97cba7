//! The documented layout for a fleet of collectors (docs/operations.md,
//! "A fleet of collectors"), as far as one machine allows: two collectors,
//! each with its own agents, remote-write to one shared VictoriaMetrics and
//! forward their alerts to one Alertmanager; a fleet-wide rule that no
//! single collector can evaluate runs in Debian's vmalert over the shared
//! store and notifies the same Alertmanager.

use std::time::Duration;

use anyhow::{Result, bail};
use vigil_tests::{
    Collector, Process, VictoriaMetrics, free_port, http_get, require_peer, start_agent,
    start_alertmanager, wait_for,
};

#[test]
fn two_collectors_one_store_one_alertmanager_and_vmalert_for_the_fleet() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_am, am) = start_alertmanager(
        dir.path(),
        "route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n",
    )?;
    let vm = VictoriaMetrics::start(dir.path(), "vm", 0)?;
    let mut collectors = Vec::new();
    let mut agents = Vec::new();
    for name in ["c1", "c2"] {
        let rules = dir.path().join(format!("{name}.rules.yml"));
        std::fs::write(
            &rules,
            format!(
                "groups:\n  - name: per-collector\n    interval: 1s\n    rules:\n      \
                 - alert: CollectorSeesItsHost\n        expr: count(node_load1) >= 1\n        \
                 labels:\n          collector: {name}\n"
            ),
        )?;
        let (http, ingest) = (free_port()?, free_port()?);
        let collector = Collector::launch(
            dir.path(),
            name,
            http,
            ingest,
            &format!(
                "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\
                 [store]\ndata_dir = \"{}\"\n\
                 [rules]\nfiles = [\"{}\"]\nexternal_labels = {{ collector = \"{name}\" }}\n\
                 [notify]\nforward_to = [\"http://{am}\"]\n\
                 [[remote_write]]\nname = \"shared\"\nurl = \"http://{}/api/v1/write\"\n",
                dir.path().join(format!("{name}-data")).display(),
                rules.display(),
                vm.http
            ),
        )?;
        // Agents are split between collectors by their configuration.
        let host = format!("fleet-{name}");
        agents.push(start_agent(
            dir.path(),
            &host,
            &format!(
                "instance = \"{host}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
                 [collector]\nendpoint = \"http://{}\"\n\
                 [sources.statsd]\nudp = \"\"\n[sources.otlp]\nenabled = false\n",
                collector.ingest
            ),
        )?);
        collectors.push(collector);
    }
    // The fleet-wide rule, over the shared store.
    let vmalert = require_peer("vmalert", "victoria-metrics")?;
    let fleet_rules = dir.path().join("fleet.rules.yml");
    std::fs::write(
        &fleet_rules,
        "groups:\n  - name: fleet\n    rules:\n      - alert: FleetHasBothHosts\n        \
         expr: count(count by (instance) (node_load1{instance=~\"fleet-.*\"})) == 2\n",
    )?;
    let vmalert_port = free_port()?;
    let _vmalert = Process::start(
        "vmalert",
        &vmalert,
        &[
            &format!("-datasource.url=http://{}", vm.http),
            &format!("-notifier.url=http://{am}"),
            &format!("-rule={}", fleet_rules.display()),
            "-evaluationInterval=1s",
            &format!("-httpListenAddr=127.0.0.1:{vmalert_port}"),
        ],
        dir.path(),
    )?;
    let want = [
        ("FleetHasBothHosts", None),
        ("CollectorSeesItsHost", Some("c1")),
        ("CollectorSeesItsHost", Some("c2")),
    ];
    let seen = wait_for(
        "the three alerts at Alertmanager",
        Duration::from_secs(90),
        || {
            let (status, _, body) = http_get(am, "/api/v2/alerts", None).ok()?;
            if status != 200 {
                return None;
            }
            let alerts: serde_json::Value = serde_json::from_str(&body).ok()?;
            let alerts = alerts.as_array()?;
            let has = |name: &str, collector: Option<&str>| {
                alerts.iter().any(|a| {
                    a["labels"]["alertname"] == name
                        && collector.is_none_or(|c| a["labels"]["collector"] == c)
                })
            };
            want.iter().all(|(n, c)| has(n, *c)).then_some(alerts.len())
        },
    );
    if seen.is_err() {
        let (_, _, body) = http_get(am, "/api/v2/alerts", None)?;
        bail!(
            "Alertmanager has {body}\nvmalert log:\n{}",
            std::fs::read_to_string(dir.path().join("vmalert.log")).unwrap_or_default()
        );
    }
    // Both hosts are in the shared store.
    for host in ["fleet-c1", "fleet-c2"] {
        let got = vm.export(&format!("node_load1{{instance=\"{host}\"}}"))?;
        if got.len() != 1 || got[0].1.is_empty() {
            bail!("{host}: not in the shared store: {got:?}");
        }
    }
    for mut agent in agents {
        agent.terminate(Duration::from_secs(20))?;
    }
    Ok(())
}
