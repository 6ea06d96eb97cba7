//! Vigil's Grafana dashboards (`dashboards/*.json`): well-formed for
//! Grafana's import screen and for file provisioning, the same as what
//! `dashboards/generate.py` writes, and every panel and variable query
//! returns data from a collector fed by a real agent, and the same label
//! sets (values within tolerance) through Prometheus 2.42 scraping that
//! collector.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use vigil_tests::{
    Collector, Prometheus, WebhookReceiver, get_json, require_peer, start_agent, url_encode,
    wait_for,
};

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn dashboards() -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        out.len() == 4,
        "expected host, fleet, alerts and vigil dashboards, found {:?}",
        out.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    Ok(out)
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// `${NAME}` or `$NAME` → NAME.
fn reference(uid: &str) -> Option<&str> {
    uid.strip_prefix("${")
        .and_then(|u| u.strip_suffix('}'))
        .or_else(|| uid.strip_prefix('$'))
}

#[test]
fn dashboards_are_well_formed_for_import_and_provisioning() -> Result<()> {
    for (name, d) in dashboards()? {
        let schema = d["schemaVersion"].as_i64().unwrap_or(0);
        ensure!(
            (38..=41).contains(&schema),
            "{name}: schemaVersion {schema} is not Grafana 10 or 11's"
        );
        ensure!(
            d["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u.len() <= 40),
            "{name}: uid"
        );
        let inputs: BTreeSet<String> = d["__inputs"]
            .as_array()
            .context("no __inputs")?
            .iter()
            .filter(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus")
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        ensure!(
            !inputs.is_empty(),
            "{name}: no Prometheus data source input"
        );
        let datasource_vars: BTreeSet<String> = variables(&d)
            .iter()
            .filter(|v| v["type"] == "datasource")
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        // The data source variable starts at the imported input.
        for v in variables(&d).iter().filter(|v| v["type"] == "datasource") {
            let current = v["current"]["value"].as_str().unwrap_or("");
            ensure!(
                reference(current).is_some_and(|r| inputs.contains(r)),
                "{name}: data source variable starts at {current:?}, not an __inputs entry"
            );
        }
        let resolvable = |ds: &Value, what: &str| -> Result<()> {
            let uid = ds["uid"].as_str().unwrap_or("");
            let name_ok =
                reference(uid).is_some_and(|r| inputs.contains(r) || datasource_vars.contains(r));
            ensure!(
                ds["type"] == "prometheus" && name_ok,
                "{name}: {what}: data source {ds} is neither an __inputs entry nor a data source variable"
            );
            Ok(())
        };
        for v in variables(&d).iter().filter(|v| v["type"] == "query") {
            resolvable(&v["datasource"], &format!("variable {}", v["name"]))?;
            let q = v["query"]["query"].as_str().unwrap_or("");
            ensure!(
                q.starts_with("label_values("),
                "{name}: variable {} query {q}",
                v["name"]
            );
        }
        let mut ids = BTreeSet::new();
        let mut cells: BTreeMap<(i64, i64), String> = BTreeMap::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("");
            let id = p["id"].as_i64().context("panel without id")?;
            ensure!(ids.insert(id), "{name}: panel id {id} twice");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap_or(-1),
                g["y"].as_i64().unwrap_or(-1),
                g["w"].as_i64().unwrap_or(0),
                g["h"].as_i64().unwrap_or(0),
            );
            ensure!(
                x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24,
                "{name}: panel {title:?} has gridPos {g}"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    if let Some(other) = cells.insert((cx, cy), title.to_string()) {
                        bail!("{name}: panels {other:?} and {title:?} overlap at ({cx}, {cy})");
                    }
                }
            }
            if p["type"] == "row" {
                continue;
            }
            resolvable(&p["datasource"], &format!("panel {title:?}"))?;
            let targets = p["targets"].as_array().context("panel without targets")?;
            ensure!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for t in targets {
                resolvable(&t["datasource"], &format!("panel {title:?} query"))?;
                let expr = t["expr"].as_str().unwrap_or("");
                let concrete = substitute(expr, &BTreeMap::new());
                promql_parser::parser::parse(&concrete).map_err(|e| {
                    anyhow::anyhow!("{name}: panel {title:?}: {expr} does not parse: {e}")
                })?;
            }
        }
    }
    // The provisioning file names the folder the dashboards are copied to.
    let provisioning = std::fs::read_to_string(dashboards_dir().join("provisioning.yml"))?;
    ensure!(provisioning.contains("apiVersion: 1") && provisioning.contains("type: file"));
    Ok(())
}

#[test]
fn committed_dashboards_are_what_the_generator_writes() -> Result<()> {
    let python = require_peer("python3", "python3")?;
    let out = tempfile::tempdir()?;
    let status = std::process::Command::new(python)
        .arg(dashboards_dir().join("generate.py"))
        .arg(out.path())
        .status()?;
    ensure!(status.success(), "generate.py failed");
    for (name, committed) in dashboards()? {
        let generated: Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(&name))?)?;
        ensure!(
            generated == committed,
            "dashboards/{name} differs from what dashboards/generate.py writes: run python3 dashboards/generate.py"
        );
    }
    Ok(())
}

/// Replaces Grafana's variables: `$__rate_interval` and `$__interval` by
/// 10 s (Grafana's `$__rate_interval` for a 1 s scrape interval is 4 s; 10 s
/// windows lie wholly after both data sources started), `$name` and `${name}` by the chosen values (unknown ones
/// by `.+`, for parsing only).
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = expr
        .replace("$__rate_interval", "10s")
        .replace("$__interval", "10s")
        .replace("$__range", "1h");
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        out = out
            .replace(&format!("${{{n}}}"), &values[n])
            .replace(&format!("${n}"), &values[n]);
    }
    // Any variable left: a regex that matches anything.
    let re = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").expect("valid regex");
    re.replace_all(&out, ".+").to_string()
}

/// Values of a `label_values(selector, label)` variable, through the
/// label-values call Grafana makes.
fn label_values(addr: SocketAddr, query: &str) -> Result<Vec<String>> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .context("not label_values(...)")?;
    let (selector, label) = match inner.rsplit_once(',') {
        Some((s, l)) => (Some(s.trim()), l.trim()),
        None => (None, inner.trim()),
    };
    let mut path = format!("/api/v1/label/{label}/values");
    if let Some(s) = selector {
        path.push_str(&format!("?match[]={}", url_encode(s)));
    }
    let (status, json) = get_json(addr, &path)?;
    ensure!(status == 200, "{path}: {status} {json}");
    Ok(json["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// One panel query's result over the last minute: series label sets
/// (without `instance` and `job` when `own` names the collector's own
/// families) and each series' last value.
fn run_range(addr: SocketAddr, expr: &str, own: bool) -> Result<BTreeMap<String, f64>> {
    let (status, json) = vigil_tests::query_range_recent(addr, expr, 60.0)?;
    ensure!(status == 200, "{status} {json}");
    let mut out = BTreeMap::new();
    for s in json["data"]["result"].as_array().into_iter().flatten() {
        let mut metric = s["metric"].clone();
        if own && let Some(m) = metric.as_object_mut() {
            m.remove("instance");
            m.remove("job");
        }
        let last = s["values"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(|p| p[1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        out.insert(metric.to_string(), last);
    }
    Ok(out)
}

const RULES: &str = r#"groups:
  - name: dashboards
    interval: 1s
    rules:
      - alert: LoadReported
        expr: node_load1 >= 0
        labels:
          severity: info
      - alert: LoadReportedLong
        expr: node_load1 >= 0
        for: 1h
"#;

/// The dashboards' variables, resolved against one data source: each
/// variable's chosen value (all values, `.+`, for multi-value variables with
/// "All"; the first value otherwise). A variable with no value fails.
fn resolve_variables(
    name: &str,
    dashboard: &Value,
    addr: SocketAddr,
    source: &str,
) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for v in variables(dashboard).iter().filter(|v| v["type"] == "query") {
        let var = v["name"].as_str().unwrap_or("");
        let query = substitute(v["query"]["query"].as_str().unwrap_or(""), &values);
        let found = label_values(addr, &query)?;
        ensure!(
            !found.is_empty(),
            "{name}: variable {var} ({query}) has no value in {source}"
        );
        let chosen = if v["includeAll"] == true {
            v["allValue"].as_str().unwrap_or(".+").to_string()
        } else {
            found[0].clone()
        };
        values.insert(var.to_string(), chosen);
    }
    Ok(values)
}

#[test]
fn every_panel_has_data_from_the_collector_and_through_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hook = WebhookReceiver::start(|_| 200)?;
    std::fs::write(dir.path().join("rules.yml"), RULES)?;
    std::fs::write(
        dir.path().join("routing.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n",
            hook.url()
        ),
    )?;
    let collector = Collector::start_with_store(
        dir.path(),
        "collector",
        vigil_tests::free_port()?,
        vigil_tests::free_port()?,
        "",
        &format!(
            "[rules]\nfiles = [\"{}\"]\nheartbeat = true\n[notify]\nalertmanager_config = \"{}\"\n",
            dir.path().join("rules.yml").display(),
            dir.path().join("routing.yml").display()
        ),
        "self_metrics_interval = \"1s\"\n",
    )?;
    let _agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"dash-host\"\njob = \"node\"\nsample_interval = \"1s\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n",
            collector.ingest
        ),
    )?;
    let prometheus = Prometheus::start(
        dir.path(),
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    honor_labels: true\n    static_configs:\n      - targets: [\"{}\"]\n",
            collector.http
        ),
    )?;
    wait_for("a notification", Duration::from_secs(30), || {
        (!hook.requests().is_empty()).then_some(())
    })?;
    // Rates over a minute need a few samples in both.
    std::thread::sleep(Duration::from_secs(15));

    let mut report = Vec::new();
    let mut failures = Vec::new();
    let (mut queries, mut close, mut compared) = (0, 0, 0);
    for (name, d) in dashboards()? {
        let ours_vars = resolve_variables(&name, &d, collector.http, "the collector")?;
        let theirs_vars = resolve_variables(&name, &d, prometheus.http, "Prometheus")?;
        for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
            let title = p["title"].as_str().unwrap_or("");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or("");
                let own = expr.contains("vigil_collector_");
                queries += 1;
                let ours = run_range(collector.http, &substitute(expr, &ours_vars), own)
                    .with_context(|| format!("{name}: panel {title:?}: {expr}"))?;
                if ours.is_empty() {
                    failures.push(format!(
                        "{name}: panel {title:?}: no data from the collector for {}",
                        substitute(expr, &ours_vars)
                    ));
                    continue;
                }
                let theirs = run_range(prometheus.http, &substitute(expr, &theirs_vars), own)?;
                let (a, b): (BTreeSet<&String>, BTreeSet<&String>) =
                    (ours.keys().collect(), theirs.keys().collect());
                if a != b {
                    failures.push(format!(
                        "{name}: panel {title:?}: {expr}: label sets differ; only the collector {:?}, only Prometheus {:?}",
                        a.difference(&b).collect::<Vec<_>>(),
                        b.difference(&a).collect::<Vec<_>>()
                    ));
                    continue;
                }
                for (labels, v) in &ours {
                    let w = theirs[labels];
                    compared += 1;
                    let tolerance = 0.25 * v.abs().max(w.abs()) + 0.01;
                    if (v - w).abs() <= tolerance || (v.is_nan() && w.is_nan()) {
                        close += 1;
                    } else {
                        report.push(format!(
                            "{name}: {title:?} {labels}: collector {v}, Prometheus {w}"
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{queries} panel queries; {compared} series compared, {close} within 25 % (+0.01) of Prometheus's value"
    );
    for line in &report {
        println!("  differs: {line}");
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    // Rates from once-a-second agent samples and from once-a-second
    // scrapes of the latest state differ a little; most series agree.
    ensure!(
        close * 10 >= compared * 9,
        "only {close} of {compared} series agree within tolerance"
    );
    Ok(())
}
