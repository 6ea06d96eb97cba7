//! Rule evaluation over a simulated fleet (`cargo bench -p vigil-collector
//! --bench rules`): every rule of `node-exporter.yml` (35 alerts, from
//! awesome-prometheus-alerts) over HOSTS hosts (default 1,000) replaying a
//! real agent's recorded hour (see `common/fleet.rs`), keeping only the
//! families the rules read (ALL_FAMILIES=1 keeps every one).
//!
//! Reports the time of one evaluation round of all rules (alert state and
//! templates included), and the time of the same 35 expressions as instant
//! queries. With PROM_OPENMETRICS=path it also writes the same samples as
//! OpenMetrics (for `promtool tsdb create-blocks-from openmetrics`); with
//! PROM_URL=http://host:port it runs the same expressions on that Prometheus
//! at the same evaluation time through its query API and sums the engine's
//! own `evalTotalTime` (`stats=all`), so HTTP and JSON are not counted.
//! `bench/rules_vs_prometheus.sh` does all of it.

#[path = "common/fleet.rs"]
mod fleet;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use vigil_promql::{Limits, instant_query};
use vigil_rules::file::{RuleDef, parse_rule_file};
use vigil_rules::{EvalContext, Group, RuleTarget};
use vigil_store::history::History;

use fleet::env;

struct Target(History);

impl vigil_promql::Queryable for Target {
    fn select(
        &self,
        matchers: &[vigil_store::history::Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<vigil_store::history::SeriesSamples> {
        self.0.select(matchers, mint, maxt)
    }
}

impl RuleTarget for Target {
    fn write(&mut self, samples: Vec<(Vec<(String, String)>, i64, f64)>) {
        for (labels, t, v) in samples {
            let id = self.0.series_id(&labels);
            let _ = self.0.append(id, t, v);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A minimal HTTP GET against Prometheus's API; the body.
fn http_get(base: &str, path_and_query: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("PROM_URL must start with http://"))?
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host)?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header end"))?;
    anyhow::ensure!(head.contains(" 200 "), "Prometheus answered {head}: {body}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        return Ok(out);
    }
    Ok(body.to_string())
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let hosts = env("HOSTS", 1000);
    let rounds = env("ROUNDS", 5);
    let fleet = fleet::Fleet::load()?;
    let rules_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/compat/rules/node-exporter.yml");
    let text = std::fs::read_to_string(&rules_path).map_err(|e| {
        anyhow::anyhow!("{}: {e}: run scripts/fetch-compat.sh", rules_path.display())
    })?;
    let defs = parse_rule_file(&rules_path, &text).map_err(|e| anyhow::anyhow!("{}", e[0]))?;
    let rules: Vec<RuleDef> = defs.iter().flat_map(|g| g.rules.clone()).collect();
    let wanted: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| {
            r.expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("node_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let fleet::Fleet::Recorded(recorded) = &fleet else {
        anyhow::bail!("the rule benchmark needs a recording (not SYNTHETIC=1)");
    };
    let keep_all = std::env::var("ALL_FAMILIES").is_ok_and(|v| v == "1");
    let kept: Vec<usize> = (0..recorded.len())
        .filter(|s| {
            keep_all
                || recorded[*s]
                    .labels
                    .iter()
                    .any(|(k, v)| k == "__name__" && wanted.contains(v))
        })
        .collect();

    let started = Instant::now();
    let mut history = History::new();
    let mut state = 0u64;
    let mut samples = 0u64;
    let openmetrics = std::env::var("PROM_OPENMETRICS").ok();
    let mut out = match &openmetrics {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let by_family = fleet.by_family(kept.iter().copied());
    for (name, members) in &by_family {
        if let Some(out) = out.as_mut() {
            use std::io::Write;
            writeln!(out, "# TYPE {name} unknown")?;
        }
        for h in 0..hosts {
            for &s in members {
                let labels = fleet.labels(h, s);
                let id = history.series_id(&labels);
                let rest = fleet::openmetrics_labels(&labels);
                let mut i = 0;
                while let Some((t, v)) = fleet.point(h, s, i, &mut state) {
                    history.append(id, t, v)?;
                    samples += 1;
                    if let Some(out) = out.as_mut() {
                        fleet::write_openmetrics_sample(out, name, &rest, t, v)?;
                    }
                    i += 1;
                }
            }
        }
    }
    if let Some(mut out) = out {
        use std::io::Write;
        writeln!(out, "# EOF")?;
        out.flush()?;
        println!(
            "wrote the same samples as OpenMetrics to {}",
            openmetrics.unwrap_or_default()
        );
    }
    let end = fleet.end(60);
    println!(
        "data: {}; {hosts} hosts x {} series = {} series, {samples} samples, loaded in {:.1} s",
        fleet.describe(),
        kept.len(),
        history.stats().series,
        started.elapsed().as_secs_f64()
    );

    // One evaluation round of every rule, at the data's end and just after.
    let mut target = Target(history);
    let ctx = EvalContext {
        limits: Limits::default(),
        ..EvalContext::default()
    };
    let mut groups: Vec<Group> = defs.into_iter().map(|d| Group::new(d, 15_000)).collect();
    let mut times = Vec::new();
    let mut alerts = 0;
    for r in 0..rounds {
        let ts = end + r as i64 * 1000;
        let t0 = Instant::now();
        for g in &mut groups {
            g.eval(ts, &mut target, &ctx);
        }
        times.push(t0.elapsed().as_secs_f64());
        alerts = groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .map(|r| r.active.len())
            .sum();
        for g in &groups {
            for r in &g.rules {
                anyhow::ensure!(r.last_error.is_none(), "{}: {:?}", r.def.name, r.last_error);
            }
        }
    }
    println!(
        "vigil: one round of {} rules: median {:.1} ms, best {:.1} ms ({rounds} rounds; {alerts} alerts active)",
        rules.len(),
        median(times.clone()) * 1e3,
        times.iter().copied().fold(f64::INFINITY, f64::min) * 1e3
    );
    let mut per_query = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        for r in &rules {
            instant_query(&target, &r.expr, end, Limits::default())?;
        }
        per_query.push(t0.elapsed().as_secs_f64());
    }
    println!(
        "vigil: the {} expressions as instant queries: median {:.1} ms",
        rules.len(),
        median(per_query) * 1e3
    );

    if let Ok(base) = std::env::var("PROM_URL") {
        let mut totals = Vec::new();
        let mut differ = Vec::new();
        for round in 0..rounds {
            let mut total = 0.0;
            for r in &rules {
                let body = http_get(
                    &base,
                    &format!(
                        "/api/v1/query?stats=all&time={}.{:03}&query={}",
                        end / 1000,
                        end % 1000,
                        url_encode(&r.expr)
                    ),
                )?;
                let json: serde_json::Value = serde_json::from_str(&body)?;
                total += json["data"]["stats"]["timings"]["evalTotalTime"]
                    .as_f64()
                    .ok_or_else(|| anyhow::anyhow!("no evalTotalTime in {body}"))?;
                if round == 0 {
                    // Same data, same time: both engines return as many series.
                    let theirs = json["data"]["result"].as_array().map_or(0, Vec::len);
                    let ours = match instant_query(&target, &r.expr, end, Limits::default())? {
                        vigil_promql::Value::Vector(v) => v.len(),
                        _ => 0,
                    };
                    if theirs != ours {
                        differ.push(format!("{}: prometheus {theirs}, vigil {ours}", r.name));
                    }
                }
            }
            totals.push(total);
        }
        println!(
            "prometheus 2.42 ({base}): the {} expressions, engine time (evalTotalTime): median {:.1} ms",
            rules.len(),
            median(totals) * 1e3
        );
        println!(
            "same results: {} of {} expressions return as many series in both engines{}",
            rules.len() - differ.len(),
            rules.len(),
            if differ.is_empty() {
                String::new()
            } else {
                format!(" (differ: {})", differ.join("; "))
            }
        );
    }
    Ok(())
}
