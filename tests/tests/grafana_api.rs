//! Grafana's Prometheus data source pointed straight at the collector: every
//! call it makes (connect, metric browser, `label_values` variables, panel
//! queries, exemplars, data-source managed rules) is answered as Debian's
//! Prometheus 2.42 answers it over the same data, Prometheus scraping the
//! collector with `honor_labels: true`: same envelope, same fields, same
//! label sets, same status codes and error types.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use vigil_tests::{
    Collector, Prometheus, get_json, post_form_json, start_agent, url_encode, wait_for,
};

const RULES: &str = r#"groups:
  - name: grafana-api
    interval: 1s
    rules:
      - record: instance:node_load1:copy
        expr: node_load1{job="node"}
      - alert: LoadReported
        expr: node_load1{job="node"} >= 0
        labels:
          severity: info
        annotations:
          summary: "load on {{ $labels.instance }}"
"#;

struct Pair {
    collector: Collector,
    prometheus: Prometheus,
    _agent: vigil_tests::Process,
    _dir: tempfile::TempDir,
}

fn start() -> Result<Pair> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES)?;
    let collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nhost_down = false\n",
            rules.display()
        ),
    )?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"grafana-host\"\njob = \"node\"\nsample_interval = \"1s\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n",
            collector.ingest
        ),
    )?;
    let prometheus = Prometheus::start(
        dir.path(),
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: vigil\n    honor_labels: true\n    static_configs:\n      - targets: [\"{}\"]\n",
            rules.display(),
            collector.http
        ),
    )?;
    // Both hold the agent's data, and the alert is active in both.
    for (what, addr) in [
        ("the collector", collector.http),
        ("Prometheus", prometheus.http),
    ] {
        wait_for(
            &format!("{what} to hold node_load1 and the alert"),
            Duration::from_secs(40),
            || {
                let (_, load) = get_json(addr, "/api/v1/query?query=node_load1").ok()?;
                let (_, alerts) = get_json(addr, "/api/v1/alerts").ok()?;
                (load["data"]["result"].as_array()?.len() == 1
                    && !alerts["data"]["alerts"].as_array()?.is_empty())
                .then_some(())
            },
        )?;
    }
    // A few more scrapes, so that every family has been seen by both.
    std::thread::sleep(Duration::from_secs(3));
    Ok(Pair {
        collector,
        prometheus,
        _agent: agent,
        _dir: dir,
    })
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The same GET to both: (collector's, Prometheus's) answers.
fn both(pair: &Pair, path: &str) -> Result<((u16, Value), (u16, Value))> {
    Ok((
        get_json(pair.collector.http, path)?,
        get_json(pair.prometheus.http, path)?,
    ))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every field Prometheus gives, the collector gives too.
fn same_fields(what: &str, ours: &Value, theirs: &Value) -> Result<()> {
    let missing: Vec<String> = keys(theirs).difference(&keys(ours)).cloned().collect();
    ensure!(
        missing.is_empty(),
        "{what}: fields Prometheus gives and the collector does not: {missing:?}\ncollector: {ours}\nprometheus: {theirs}"
    );
    Ok(())
}

fn strings(v: &Value) -> Result<BTreeSet<String>> {
    v.as_array()
        .context("not a list")?
        .iter()
        .map(|s| s.as_str().map(str::to_string).context("not a string"))
        .collect()
}

fn label_sets(v: &Value) -> Result<BTreeSet<String>> {
    Ok(v.as_array()
        .context("not a list")?
        .iter()
        .map(|m| m.to_string())
        .collect())
}

fn success<'a>(what: &str, answer: &'a (u16, Value)) -> Result<&'a Value> {
    ensure!(
        answer.0 == 200 && answer.1["status"] == "success",
        "{what}: {} {}",
        answer.0,
        answer.1
    );
    Ok(&answer.1["data"])
}

fn equal_sets(what: &str, ours: &BTreeSet<String>, theirs: &BTreeSet<String>) -> Result<()> {
    if ours != theirs {
        bail!(
            "{what} differ\nonly the collector: {:?}\nonly Prometheus: {:?}",
            ours.difference(theirs).collect::<Vec<_>>(),
            theirs.difference(ours).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// Label names, label values, series and metadata, as Grafana's metric
/// browser and `label_values()` variables ask for them, by GET and POST.
#[test]
fn metadata_calls_answer_as_prometheus_does() -> Result<()> {
    let pair = start()?;
    let end = now();
    let range = format!("start={}&end={end}", end - 10.0);
    let node = url_encode("{job=\"node\"}");

    let build = both(&pair, "/api/v1/status/buildinfo")?;
    same_fields(
        "buildinfo",
        success("buildinfo", &build.0)?,
        success("buildinfo", &build.1)?,
    )?;

    for path in [
        format!("/api/v1/labels?match[]={node}&{range}"),
        format!("/api/v1/label/instance/values?match[]={node}&{range}"),
        format!("/api/v1/label/job/values?match[]={node}&{range}"),
        format!(
            "/api/v1/label/mode/values?match[]={}&{range}",
            url_encode("node_cpu_seconds_total{job=\"node\"}")
        ),
        format!(
            "/api/v1/label/mountpoint/values?match[]={}&{range}",
            url_encode("node_filesystem_size_bytes{job=\"node\"}")
        ),
    ] {
        let (ours, theirs) = both(&pair, &path)?;
        equal_sets(
            &path,
            &strings(success(&path, &ours)?)?,
            &strings(success(&path, &theirs)?)?,
        )?;
    }

    // Metric names of the agent: the same families, by GET and by POST.
    let path = format!("/api/v1/label/__name__/values?match[]={node}&{range}");
    let (ours, theirs) = both(&pair, &path)?;
    let names = strings(success(&path, &ours)?)?;
    equal_sets(&path, &names, &strings(success(&path, &theirs)?)?)?;
    ensure!(names.len() > 50, "only {} metric names", names.len());

    for selector in [
        "node_cpu_seconds_total{job=\"node\"}",
        "node_network_receive_bytes_total{job=\"node\"}",
        "{__name__=~\"node_load.*\",job=\"node\"}",
    ] {
        let path = format!("/api/v1/series?match[]={}&{range}", url_encode(selector));
        let (ours, theirs) = both(&pair, &path)?;
        let ours = label_sets(success(&path, &ours)?)?;
        ensure!(!ours.is_empty(), "{path}: no series");
        equal_sets(&path, &ours, &label_sets(success(&path, &theirs)?)?)?;
        let form = format!("match[]={}&{range}", url_encode(selector));
        let posted = post_form_json(pair.collector.http, "/api/v1/series", &form)?;
        equal_sets(
            "POST /api/v1/series",
            &label_sets(success("POST /api/v1/series", &posted)?)?,
            &ours,
        )?;
    }
    let form = format!("match[]={node}&{range}");
    let (ours, theirs) = (
        post_form_json(pair.collector.http, "/api/v1/labels", &form)?,
        post_form_json(pair.prometheus.http, "/api/v1/labels", &form)?,
    );
    equal_sets(
        "POST /api/v1/labels",
        &strings(success("labels", &ours)?)?,
        &strings(success("labels", &theirs)?)?,
    )?;

    // Federation: the same series, each with a timestamp.
    let federate = |addr| -> Result<BTreeSet<String>> {
        let (status, _, body) = vigil_tests::http_get(
            addr,
            &format!(
                "/federate?match[]={}",
                url_encode("{__name__=~\"node_(load|memory|cpu).*\",job=\"node\"}")
            ),
            None,
        )?;
        ensure!(status == 200, "/federate: {status} {body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let mut fields = l.rsplitn(3, ' ');
                let (t, _v, series) = (fields.next(), fields.next(), fields.next());
                ensure!(
                    t.is_some_and(|t| t.parse::<i64>().is_ok()),
                    "/federate line without a timestamp: {l}"
                );
                series.map(str::to_string).context("short line")
            })
            .collect()
    };
    let ours = federate(pair.collector.http)?;
    ensure!(ours.len() > 20, "/federate gave {} series", ours.len());
    equal_sets("/federate", &ours, &federate(pair.prometheus.http)?)?;

    // Metadata: the same type and help for every family of the agent.
    let (ours, theirs) = both(&pair, "/api/v1/metadata")?;
    let (ours, theirs) = (success("metadata", &ours)?, success("metadata", &theirs)?);
    let mut compared = 0;
    for name in names.iter().filter(|n| n.starts_with("node_")) {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        // Prometheus scrapes the collector in OpenMetrics, whose counter
        // families drop `_total`; scraping node_exporter (text format) it
        // keeps it, as the collector does.
        let theirs_family = theirs
            .get(family)
            .or_else(|| theirs.get(family.trim_end_matches("_total")));
        let (Some(o), Some(t)) = (ours.get(family), theirs_family) else {
            bail!(
                "metadata of {family}: collector {:?}, prometheus {:?}",
                ours.get(family),
                theirs.get(family)
            );
        };
        ensure!(
            o[0]["type"] == t[0]["type"] && o[0]["help"] == t[0]["help"],
            "metadata of {family}: collector {o}, prometheus {t}"
        );
        same_fields(&format!("metadata of {family}"), &o[0], &t[0])?;
        compared += 1;
    }
    ensure!(compared > 50, "only {compared} families compared");
    let (ours, theirs) = both(&pair, "/api/v1/metadata?metric=node_load1")?;
    ensure!(
        success("metadata", &ours)?.as_object().map(|o| o.len()) == Some(1)
            && success("metadata", &ours)? == success("metadata", &theirs)?,
        "metadata?metric=node_load1: collector {}, prometheus {}",
        ours.1,
        theirs.1
    );
    Ok(())
}

/// Panel queries (instant and range, GET and POST), exemplars and
/// format_query: the same result types and label sets.
#[test]
fn queries_answer_as_prometheus_does() -> Result<()> {
    let pair = start()?;
    let end = now().floor();
    for query in [
        "1+1",
        "node_memory_MemTotal_bytes{job=\"node\"}",
        "sum by (mode) (rate(node_cpu_seconds_total{job=\"node\"}[30s]))",
        "node_filesystem_avail_bytes{job=\"node\"} / node_filesystem_size_bytes{job=\"node\"}",
        "count(count by (cpu) (node_cpu_seconds_total{job=\"node\"}))",
    ] {
        let instant = format!("/api/v1/query?query={}&time={end}", url_encode(query));
        let (ours, theirs) = both(&pair, &instant)?;
        let (o, t) = (success(query, &ours)?, success(query, &theirs)?);
        ensure!(
            o["resultType"] == t["resultType"],
            "{query}: result types {} and {}",
            o["resultType"],
            t["resultType"]
        );
        if o["resultType"] == "vector" {
            let labels = |v: &Value| -> Result<BTreeSet<String>> {
                Ok(v["result"]
                    .as_array()
                    .context("no result")?
                    .iter()
                    .map(|s| s["metric"].to_string())
                    .collect())
            };
            ensure!(!labels(o)?.is_empty(), "{query}: no data in the collector");
            equal_sets(query, &labels(o)?, &labels(t)?)?;
        }
        // The range form Grafana posts.
        let form = format!(
            "query={}&start={}&end={end}&step=1",
            url_encode(query),
            end - 5.0
        );
        let (ours, theirs) = (
            post_form_json(pair.collector.http, "/api/v1/query_range", &form)?,
            post_form_json(pair.prometheus.http, "/api/v1/query_range", &form)?,
        );
        let (o, t) = (success(query, &ours)?, success(query, &theirs)?);
        ensure!(o["resultType"] == "matrix" && t["resultType"] == "matrix");
        let labels = |v: &Value| -> Result<BTreeSet<String>> {
            Ok(v["result"]
                .as_array()
                .context("no result")?
                .iter()
                .map(|s| s["metric"].to_string())
                .collect())
        };
        equal_sets(&format!("range {query}"), &labels(o)?, &labels(t)?)?;
    }
    // A constant gauge agrees exactly.
    let q = format!(
        "/api/v1/query?query={}&time={end}",
        url_encode("node_memory_MemTotal_bytes{job=\"node\"}")
    );
    let (ours, theirs) = both(&pair, &q)?;
    ensure!(
        success("MemTotal", &ours)?["result"][0]["value"][1]
            == success("MemTotal", &theirs)?["result"][0]["value"][1],
        "MemTotal: collector {}, prometheus {}",
        ours.1,
        theirs.1
    );

    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={end}",
        url_encode("node_load1"),
        end - 60.0
    );
    let (ours, theirs) = both(&pair, &path)?;
    ensure!(
        success("exemplars", &ours)? == success("exemplars", &theirs)?,
        "exemplars: collector {}, prometheus {}",
        ours.1,
        theirs.1
    );

    for query in [
        "sum(rate(node_cpu_seconds_total{mode!=\"idle\"}[5m]))by(instance)",
        "node_load1>1 and on(instance) up",
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))",
        "holt_winters(node_load1[10m], 0.5, 0.5)",
    ] {
        let path = format!("/api/v1/format_query?query={}", url_encode(query));
        let (ours, theirs) = both(&pair, &path)?;
        ensure!(
            success(query, &ours)? == success(query, &theirs)?,
            "format_query {query}: collector {}, prometheus {}",
            ours.1,
            theirs.1
        );
    }
    Ok(())
}

/// Data-source managed rules and alerts: the same groups, rules, states
/// and alert labels, and every field Prometheus gives.
#[test]
fn rules_and_alerts_answer_as_prometheus_does() -> Result<()> {
    let pair = start()?;
    let (ours, theirs) = both(&pair, "/api/v1/alerts")?;
    let (o, t) = (success("alerts", &ours)?, success("alerts", &theirs)?);
    let alert_labels = |v: &Value| -> Result<BTreeSet<String>> {
        Ok(v["alerts"]
            .as_array()
            .context("no alerts")?
            .iter()
            .map(|a| a["labels"].to_string())
            .collect())
    };
    equal_sets("alerts", &alert_labels(o)?, &alert_labels(t)?)?;
    same_fields("alert", &o["alerts"][0], &t["alerts"][0])?;

    let (ours, theirs) = both(&pair, "/api/v1/rules")?;
    let (o, t) = (success("rules", &ours)?, success("rules", &theirs)?);
    let find = |v: &Value| -> Result<Value> {
        v["groups"]
            .as_array()
            .context("no groups")?
            .iter()
            .find(|g| g["name"] == "grafana-api")
            .cloned()
            .context("no group grafana-api")
    };
    let (og, tg) = (find(o)?, find(t)?);
    same_fields("group", &og, &tg)?;
    ensure!(og["interval"] == tg["interval"], "intervals {og} / {tg}");
    let (orules, trules) = (
        og["rules"].as_array().context("rules")?,
        tg["rules"].as_array().context("rules")?,
    );
    ensure!(orules.len() == trules.len(), "rule counts differ");
    for (or, tr) in orules.iter().zip(trules) {
        same_fields(&format!("rule {}", tr["name"]), or, tr)?;
        for field in [
            "name", "query", "type", "labels", "health", "state", "duration",
        ] {
            ensure!(
                or[field] == tr[field],
                "rule {}: {field} is {} in the collector, {} in Prometheus",
                tr["name"],
                or[field],
                tr[field]
            );
        }
        if tr["type"] == "alerting" {
            ensure!(or["annotations"] == tr["annotations"]);
            same_fields("rule alert", &or["alerts"][0], &tr["alerts"][0])?;
        }
    }
    for filter in ["alert", "record"] {
        let path = format!("/api/v1/rules?type={filter}");
        let (ours, theirs) = both(&pair, &path)?;
        let names = |v: &Value| -> BTreeSet<String> {
            v["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["name"] == "grafana-api")
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .map(|r| r["name"].to_string())
                .collect()
        };
        equal_sets(
            &path,
            &names(success(&path, &ours)?),
            &names(success(&path, &theirs)?),
        )?;
    }
    Ok(())
}

/// Bad calls get the same status code and error type.
#[test]
fn bad_calls_fail_as_prometheus_does() -> Result<()> {
    let pair = start()?;
    let calls = [
        "/api/v1/label/0bad/values".to_string(),
        "/api/v1/series".to_string(),
        format!("/api/v1/series?match[]={}", url_encode("rate(x[5m])")),
        format!("/api/v1/series?match[]={}", url_encode("{job=~\".*\"}")),
        "/api/v1/labels?start=yesterday".to_string(),
        format!("/api/v1/query?query={}", url_encode("sum(")),
        "/api/v1/query_range?query=up&start=100&end=50&step=1".to_string(),
        "/api/v1/query_range?query=up&start=0&end=100000&step=1".to_string(),
        "/api/v1/query_range?query=up&start=0&end=100&step=0".to_string(),
        "/api/v1/rules?type=neither".to_string(),
        "/api/v1/query_exemplars?query=sum(".to_string(),
        "/api/v1/format_query?query=sum(".to_string(),
    ];
    for path in calls {
        let (ours, theirs) = both(&pair, &path)?;
        ensure!(
            ours.0 == theirs.0 && ours.1["errorType"] == theirs.1["errorType"],
            "{path}: the collector answers {} {}, Prometheus {} {}",
            ours.0,
            ours.1,
            theirs.0,
            theirs.1
        );
        same_fields(&path, &ours.1, &theirs.1)?;
    }
    Ok(())
}
