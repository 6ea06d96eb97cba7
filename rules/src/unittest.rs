//! `vigil-collector rules test`: the unit-test format of `promtool test rules`
//! (Prometheus 2.42), with the same verdicts and failure messages.
//!
//! A test file names rule files, an `evaluation_interval` (default 1m) and
//! test groups; each group loads `input_series` in expanding notation
//! (`0+10x100`, `_`, `stale`) at its `interval`, evaluates every rule group
//! from time 0 at each `evaluation_interval`, and compares the firing alerts
//! at each `alert_rule_test`'s `eval_time`, then each `promql_expr_test`'s
//! result, exactly (labels and values).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::file::{expand_globs, load_rule_file};
use super::{AlertState, EvalContext, Group, RuleTarget};
use vigil_promql::testfile::{expand_values, parse_descriptor};
use vigil_promql::{Labels, Queryable};
use vigil_shared::config::Text;
use vigil_shared::config::parse_duration_ms;
use vigil_store::history::{History, Matcher, SeriesSamples};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    evaluation_interval: Option<String>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    interval: Option<String>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    external_url: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    eval_time: Text,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: Text,
    eval_time: Text,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: Text,
}

/// The outcome of one test file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    /// True when every test passed.
    pub passed: bool,
    /// What promtool prints on standard output for the file.
    pub stdout: String,
    /// What promtool prints on standard error (the failures).
    pub stderr: String,
}

/// History as a rule target.
struct TestStorage(History);

impl Queryable for TestStorage {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.0.select(matchers, mint, maxt)
    }
}

impl RuleTarget for TestStorage {
    fn write(&mut self, samples: Vec<(Labels, i64, f64)>) {
        for (labels, t, v) in samples {
            let id = self.0.series_id(&labels);
            // A rule writing a series twice at one time keeps the first.
            let _ = self.0.append(id, t, v);
        }
    }
}

/// Go's `model.Duration` text: `1h30m`, `10s`, `0s`.
fn duration_text(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("y", 31_536_000_000i64),
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    parse_duration_ms(t)
}

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)`.
fn format_e_upper(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let text = format!("{:e}", v.abs());
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!(
        "{}{mantissa}E{}{:02}",
        if v.is_sign_negative() { "-" } else { "" },
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    )
}

/// Prometheus's `labels.Labels.String()`: `{a="b", c="d"}`.
fn labels_text(labels: &[(String, String)]) -> String {
    vigil_template::gofmt::labels_string(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

type LabelsAndAnnotations = Vec<(Labels, Labels)>;

fn alerts_text(list: &LabelsAndAnnotations) -> String {
    if list.is_empty() {
        return "[]".into();
    }
    let one = |(l, a): &(Labels, Labels)| {
        indent(
            &format!(
                "\nLabels:{}\nAnnotations:{}",
                labels_text(l),
                labels_text(a)
            ),
            "  ",
        )
    };
    let mut s = format!("[\n0:{}", one(&list[0]));
    for (i, item) in list.iter().enumerate().skip(1) {
        let _ = write!(s, ",\n{i}:{}", one(item));
    }
    s.push_str("\n]");
    s
}

fn indent(text: &str, prefix: &str) -> String {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                format!("{prefix}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn samples_text(samples: &[(Labels, f64)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| format!("{} {}", labels_text(l), format_e_upper(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a float as YAML writes it (`.inf`, `-.Inf`, `.nan`, numbers).
fn yaml_float(text: &str) -> Option<f64> {
    match text.trim() {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// Runs one unit-test file; the report reads as promtool's, byte for byte
/// where the same tests fail the same way.
pub fn run_file(path: &Path) -> TestOutcome {
    let stdout = format!("Unit Testing:  {}\n", path.display());
    let errors = match run_inner(path) {
        Ok(errors) => errors,
        Err(e) => vec![e],
    };
    if errors.is_empty() {
        TestOutcome {
            passed: true,
            stdout: format!("{stdout}  SUCCESS\n\n"),
            stderr: String::new(),
        }
    } else {
        // promtool writes each failure to standard error and a blank line
        // after it to standard output, then one more blank line.
        let mut stderr = String::from("  FAILED:\n");
        for e in &errors {
            stderr.push_str(e);
            stderr.push('\n');
        }
        TestOutcome {
            passed: false,
            stdout: format!("{stdout}{}\n", "\n".repeat(errors.len())),
            stderr,
        }
    }
}

fn run_inner(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("    {e}"))?;
    let file: TestFile = serde_saphyr::from_str(&text).map_err(|e| format!("    {e}"))?;
    let eval_interval = match &file.evaluation_interval {
        Some(t) => parse_time(t).map_err(|e| format!("    evaluation_interval: {e}"))?,
        None => 60_000,
    };
    if eval_interval <= 0 {
        return Err("    evaluation_interval must be more than 0".into());
    }
    let mut order: BTreeMap<String, usize> = BTreeMap::new();
    for (i, g) in file.group_eval_order.iter().enumerate() {
        if order.insert(g.clone(), i).is_some() {
            return Err(format!("    group name repeated in evaluation order: {g}"));
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_paths = expand_globs(&file.rule_files, base).map_err(|e| format!("    {e}"))?;
    let mut errors = Vec::new();
    for tg in &file.tests {
        // Rule files are loaded afresh for every test group.
        let mut defs = Vec::new();
        for p in &rule_paths {
            match load_rule_file(p) {
                Ok(groups) => defs.extend(groups),
                Err(errs) => {
                    return Ok(errs.iter().map(ToString::to_string).collect());
                }
            }
        }
        errors.extend(run_group(tg, defs, eval_interval, &order)?);
    }
    Ok(errors)
}

fn run_group(
    tg: &TestGroup,
    defs: Vec<super::file::GroupDef>,
    eval_interval: i64,
    order: &BTreeMap<String, usize>,
) -> Result<Vec<String>, String> {
    let interval = match &tg.interval {
        Some(t) => parse_time(t).map_err(|e| format!("    interval: {e}"))?,
        None => eval_interval,
    };
    let mut groups: Vec<Group> = defs.into_iter().map(|d| Group::new(d, interval)).collect();
    if !order.is_empty() {
        let missing: Vec<&str> = groups
            .iter()
            .filter(|g| !order.contains_key(&g.name))
            .map(|g| g.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "    groups not in group_eval_order: {}",
                missing.join(", ")
            ));
        }
        groups.sort_by_key(|g| order.get(&g.name).copied().unwrap_or(usize::MAX));
    }
    let ctx = EvalContext {
        external_labels: tg.external_labels.clone(),
        external_url: tg.external_url.clone().unwrap_or_default(),
        limits: vigil_promql::Limits::default(),
    };

    // Input series.
    let mut storage = TestStorage(History::new());
    for s in &tg.input_series {
        let labels = parse_descriptor(&s.series).map_err(|e| format!("    {e}"))?;
        let id = storage.0.series_id(&labels);
        let mut step = 0i64;
        for token in s.values.0.split_whitespace() {
            let values =
                expand_values(token).map_err(|e| format!("    series {:?}: {e}", s.series))?;
            for v in values {
                if let Some(v) = v {
                    let _ = storage.0.append(id, step * interval, v);
                }
                step += 1;
            }
        }
    }

    let name_prefix = tg
        .name
        .as_ref()
        .map(|n| format!("    name: {n},\n"))
        .unwrap_or_default();
    let mut alert_times: Vec<(i64, &AlertTest)> = Vec::new();
    for t in &tg.alert_rule_test {
        alert_times.push((
            parse_time(&t.eval_time.0).map_err(|e| format!("    eval_time: {e}"))?,
            t,
        ));
    }
    alert_times.sort_by_key(|(t, _)| *t);
    let mut max_t = alert_times.last().map_or(0, |(t, _)| *t);
    let mut expr_times = Vec::new();
    for t in &tg.promql_expr_test {
        let at = parse_time(&t.eval_time.0).map_err(|e| format!("    eval_time: {e}"))?;
        max_t = max_t.max(at);
        expr_times.push(at);
    }

    let mut errors = Vec::new();
    let mut next_alert = 0usize;
    let mut ts = 0i64;
    while ts <= max_t {
        for g in groups.iter_mut() {
            g.eval(ts, &mut storage, &ctx);
            for r in &g.rules {
                if let Some(e) = &r.last_error {
                    errors.push(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.def.name,
                        duration_text(ts)
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Ok(errors);
        }
        while let Some((t, test)) = alert_times.get(next_alert) {
            if !(ts <= *t && *t < ts + eval_interval) {
                break;
            }
            let mut got: LabelsAndAnnotations = Vec::new();
            for g in &groups {
                for r in g.rules.iter().filter(|r| r.def.name == test.alertname) {
                    if !matches!(r.def.kind, super::file::RuleKind::Alert(_)) {
                        continue;
                    }
                    for a in r.active.values() {
                        if a.state == AlertState::Firing {
                            got.push((a.labels.clone(), a.annotations.clone()));
                        }
                    }
                }
            }
            let mut exp: LabelsAndAnnotations = test
                .exp_alerts
                .iter()
                .map(|a| {
                    let mut l = a.exp_labels.clone();
                    l.insert("alertname".into(), test.alertname.clone());
                    (
                        l.into_iter().collect(),
                        a.exp_annotations.clone().into_iter().collect(),
                    )
                })
                .collect();
            got.sort();
            exp.sort();
            if got != exp {
                errors.push(format!(
                    "{name_prefix}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                    test.alertname,
                    duration_text(*t),
                    indent(&alerts_text(&exp), "            "),
                    indent(&alerts_text(&got), "            ")
                ));
            }
            next_alert += 1;
        }
        ts += eval_interval;
    }

    'tests: for (test, at) in tg.promql_expr_test.iter().zip(expr_times) {
        let expr = &test.expr.0;
        let got = match vigil_promql::parse(expr)
            .map_err(|e| e.to_string())
            .and_then(|p| super::query_vector(&p, at, &storage, &ctx))
        {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "    expr: {}, time: {}, err: {e}",
                    vigil_template::gofmt::go_quote(expr),
                    duration_text(at)
                ));
                continue;
            }
        };
        let mut exp = Vec::new();
        for s in &test.exp_samples {
            let labels = match parse_descriptor(&s.labels) {
                Ok(l) => l,
                Err(e) => {
                    errors.push(format!(
                        "    expr: {}, time: {}, err: labels {}: {e}",
                        vigil_template::gofmt::go_quote(expr),
                        duration_text(at),
                        vigil_template::gofmt::go_quote(&s.labels)
                    ));
                    continue 'tests;
                }
            };
            let Some(v) = yaml_float(&s.value.0) else {
                return Err(format!("    exp_samples: invalid value {:?}", s.value.0));
            };
            exp.push((labels, v));
        }
        let mut got = got;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        // Exact comparison, as promtool's reflect.DeepEqual (NaN never equals).
        let same =
            got.len() == exp.len() && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && g.1 == e.1);
        if !same {
            errors.push(format!(
                "    expr: {}, time: {},\n        exp: {}\n        got: {}",
                vigil_template::gofmt::go_quote(expr),
                duration_text(at),
                samples_text(&exp),
                samples_text(&got)
            ));
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(duration_text(90 * 60_000), "1h30m");
        assert_eq!(duration_text(0), "0s");
        assert_eq!(format_e_upper(1.0), "1E+00");
        assert_eq!(format_e_upper(15.5), "1.55E+01");
        assert_eq!(format_e_upper(-0.001), "-1E-03");
        assert_eq!(
            labels_text(&[("a".into(), "x\"y".into())]),
            "{a=\"x\\\"y\"}"
        );
    }
}
