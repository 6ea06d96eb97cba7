//! node_exporter parity: Debian's `prometheus-node-exporter` (1.5, default
//! collectors) and the agent run side by side on the test host; every
//! `node_*` family node_exporter gives must come from the agent with the
//! same type and label names, but for a short list of deliberate
//! differences, printed with their reasons. And Node Exporter Full
//! (Grafana 1860, fetched by `scripts/fetch-compat.sh`) shows data through
//! the collector on at least 95 % of the panels that show data with
//! node_exporter scraped by Prometheus 2.42.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use vigil_shared::text_format;
use vigil_tests::{
    Collector, Process, Prometheus, compat_path, free_port, get_json, http_get, require_peer,
    start_agent, url_encode, wait_for,
};

/// Families node_exporter gives and the agent does not, on purpose.
const DELIBERATE: [(&str, &str); 1] = [(
    "node_exporter_build_info",
    "the agent's build is vigil_agent_build_info",
)];

fn start_node_exporter(dir: &std::path::Path) -> Result<(Process, SocketAddr)> {
    let program = require_peer("prometheus-node-exporter", "prometheus-node-exporter")?;
    let port = free_port()?;
    let process = Process::start(
        "node_exporter",
        &program,
        &[&format!("--web.listen-address=127.0.0.1:{port}")],
        dir,
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for("node_exporter to answer", Duration::from_secs(20), || {
        http_get(addr, "/metrics", None)
            .ok()
            .filter(|(s, _, _)| *s == 200)
    })
    .with_context(|| format!("node_exporter log:\n{}", process.log()))?;
    Ok((process, addr))
}

fn start_vigil(dir: &std::path::Path, instance: &str) -> Result<(Collector, Process)> {
    let collector = Collector::start_default(dir)?;
    let agent = start_agent(
        dir,
        "agent",
        &format!(
            "instance = \"{instance}\"\njob = \"node\"\nsample_interval = \"1s\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n",
            collector.ingest
        ),
    )?;
    wait_for(
        "the agent's node_netstat_Tcp_InSegs",
        Duration::from_secs(30),
        || {
            collector
                .scrape()
                .ok()?
                .value("node_load1", &[("instance", instance)])
                .and(
                    collector
                        .scrape()
                        .ok()?
                        .families
                        .contains_key("node_scrape_collector_success")
                        .then_some(()),
                )
        },
    )?;
    Ok((collector, agent))
}

/// `node_*` families: type and the label names of their series, `instance`
/// and `job` left out.
fn families(text: &str) -> Result<BTreeMap<String, (String, BTreeSet<String>)>> {
    let parsed =
        text_format::parse(text).map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.message))?;
    Ok(parsed
        .into_iter()
        .filter(|f| f.name.starts_with("node_"))
        .map(|f| {
            let labels = f
                .samples
                .iter()
                .flat_map(|s| s.labels.iter().map(|(k, _)| k.clone()))
                .filter(|k| k != "instance" && k != "job" && k != "le" && k != "quantile")
                .collect();
            (
                f.name.clone(),
                (format!("{:?}", f.kind).to_lowercase(), labels),
            )
        })
        .collect())
}

#[test]
fn the_agent_gives_every_node_exporter_family_with_its_type_and_labels() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_ne, ne_addr) = start_node_exporter(dir.path())?;
    let (collector, _agent) = start_vigil(dir.path(), "side-by-side")?;
    let (_, _, theirs) = http_get(ne_addr, "/metrics", None)?;
    let ours = collector.scrape()?.text;
    let (theirs, ours) = (families(&theirs)?, families(&ours)?);
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &theirs {
        match ours.get(name) {
            None if DELIBERATE.iter().any(|(n, _)| n == name) => {}
            None => problems.push(format!(
                "{name}: node_exporter gives it, the agent does not"
            )),
            Some((our_kind, our_labels)) => {
                if our_kind != kind {
                    problems.push(format!(
                        "{name}: type {our_kind} in the agent, {kind} in node_exporter"
                    ));
                }
                if our_labels != labels {
                    problems.push(format!(
                        "{name}: label names {our_labels:?} in the agent, {labels:?} in node_exporter"
                    ));
                }
            }
        }
    }
    let given = theirs.keys().filter(|n| ours.contains_key(*n)).count();
    println!(
        "node_exporter gives {} node_* families here; the agent gives {given} of them",
        theirs.len()
    );
    for (name, why) in DELIBERATE {
        println!("  deliberate difference: {name}: {why}");
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Every panel of a dashboard, rows' nested panels included, rows left out.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = stack.pop() {
        stack.extend(p["panels"].as_array().into_iter().flatten());
        if p["type"] != "row" {
            out.push(p);
        }
    }
    out
}

fn substitute(expr: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = expr
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "10s")
        .replace("$__range", "1h");
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

fn has_data(addr: SocketAddr, expr: &str) -> Result<bool> {
    let (status, json) = vigil_tests::query_range_recent(addr, expr, 30.0)?;
    Ok(status == 200
        && json["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()))
}

/// The first value of `label` over `selector`, through the label-values call.
fn first_value(addr: SocketAddr, selector: &str, label: &str) -> Result<String> {
    let (status, json) = get_json(
        addr,
        &format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode(selector)
        ),
    )?;
    ensure!(status == 200, "{status} {json}");
    json["data"][0]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no {label} for {selector}"))
}

#[test]
fn node_exporter_full_shows_data_through_the_collector() -> Result<()> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(compat_path(
        "dashboards/node-exporter-full.json",
    )?)?)?;
    let dir = tempfile::tempdir()?;
    let (_ne, ne_addr) = start_node_exporter(dir.path())?;
    let (collector, _agent) = start_vigil(dir.path(), "full-host")?;
    let prometheus = Prometheus::start(
        dir.path(),
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [\"{ne_addr}\"]\n"
        ),
    )?;
    wait_for(
        "Prometheus to scrape node_exporter",
        Duration::from_secs(30),
        || {
            let (_, json) = get_json(prometheus.http, "/api/v1/query?query=node_load1").ok()?;
            (!json["data"]["result"].as_array()?.is_empty()).then_some(())
        },
    )?;
    // Rates over 10 s windows need a few samples in both.
    std::thread::sleep(Duration::from_secs(14));

    // The dashboard's variables: job, then nodename, then node (instance).
    let resolve = |addr: SocketAddr| -> Result<BTreeMap<&str, String>> {
        let job = first_value(addr, "node_uname_info", "job")?;
        let nodename = first_value(
            addr,
            &format!("node_uname_info{{job=\"{job}\"}}"),
            "nodename",
        )?;
        let node = first_value(
            addr,
            &format!("node_uname_info{{job=\"{job}\",nodename=\"{nodename}\"}}"),
            "instance",
        )?;
        Ok(BTreeMap::from([
            ("job", job),
            ("nodename", nodename),
            ("node", node),
        ]))
    };
    let (ours_vars, theirs_vars) = (resolve(collector.http)?, resolve(prometheus.http)?);

    let (mut reference, mut shown) = (0, 0);
    let mut missing = Vec::new();
    let all = panels(&dashboard);
    for p in &all {
        let title = p["title"].as_str().unwrap_or("");
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .filter(|e| !e.is_empty())
            .collect();
        if exprs.is_empty() {
            continue;
        }
        let mut theirs = false;
        for e in &exprs {
            if has_data(prometheus.http, &substitute(e, &theirs_vars))? {
                theirs = true;
                break;
            }
        }
        if !theirs {
            continue;
        }
        reference += 1;
        let mut ours = false;
        for e in &exprs {
            if has_data(collector.http, &substitute(e, &ours_vars))? {
                ours = true;
                break;
            }
        }
        if ours {
            shown += 1;
        } else {
            missing.push(format!("{title:?}: {}", exprs.join(" | ")));
        }
    }
    let share = 100.0 * shown as f64 / reference.max(1) as f64;
    println!(
        "Node Exporter Full: {} panels with queries; {reference} show data with node_exporter scraped by Prometheus 2.42; {shown} of those ({share:.1} %) show data through the collector",
        all.len()
    );
    for m in &missing {
        println!("  no data through the collector: {m}");
    }
    ensure!(
        reference > 50,
        "only {reference} panels show data with node_exporter"
    );
    ensure!(
        shown * 100 >= reference * 95,
        "{shown} of {reference} panels ({share:.1} %) show data, below 95 %"
    );
    Ok(())
}
