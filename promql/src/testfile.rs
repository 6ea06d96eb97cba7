//! Prometheus's PromQL test format (`promql/testdata/*.test` at v2.42), so
//! that Prometheus's own conformance tests run against this engine:
//!
//! ```text
//! load 5m
//!   http_requests{job="api", instance="0"}  0+10x10  _  stale  1x3
//! eval instant at 50m sum(http_requests)
//!   {} 100
//! eval_fail instant at 0m ceil({__name__=~"a|b"})
//! eval_ordered instant at 50m topk(3, http_requests)
//! clear
//! ```
//!
//! Series values use the expanding notation: `a+bxn` is `a, a+b, …, a+n·b`;
//! `axn` is `a` n+1 times; `_` skips a step; `_xn` skips n steps; `stale` is
//! a stale marker. Values are compared with a relative error of 1e-6.

use std::collections::BTreeMap;
use vigil_shared::config::parse_duration_ms;

use super::{Labels, Limits, METRIC_NAME, Value, instant_query};
use vigil_store::chunk::stale_marker;
use vigil_store::history::History;

/// One evaluation that did not give what the file expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// 1-based line of the `eval`.
    pub line: usize,
    /// The expression.
    pub expr: String,
    /// What went wrong.
    pub message: String,
}

/// The outcome of one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileOutcome {
    /// Evaluations that matched.
    pub passed: usize,
    /// Evaluations that did not.
    pub failed: Vec<Failure>,
}

/// Parses a series descriptor `name{a="b"}` or `{__name__="x"}` into sorted labels.
pub fn parse_descriptor(text: &str) -> Result<Labels, String> {
    if text.trim() == "{}" {
        return Ok(Vec::new());
    }
    let expr = promql_parser::parser::parse(text).map_err(|e| format!("series {text:?}: {e}"))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(format!("series {text:?} is not a series descriptor"));
    };
    let mut labels: Labels = Vec::new();
    if let Some(name) = vs.name {
        labels.push((METRIC_NAME.to_string(), name));
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, promql_parser::label::MatchOp::Equal) {
            return Err(format!(
                "series {text:?}: only = is allowed in a descriptor"
            ));
        }
        labels.retain(|(k, _)| *k != m.name);
        labels.push((m.name, m.value));
    }
    labels.sort();
    Ok(labels)
}

/// Splits `desc values…` where `desc` may hold spaces inside `{…}`.
fn split_descriptor(line: &str) -> (&str, &str) {
    let line = line.trim();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut depth = 0;
    for (i, c) in line.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' | '\'' if depth > 0 => in_quotes = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&line[..=i], line[i + 1..].trim());
                }
            }
            c if c.is_whitespace() && depth == 0 => return (&line[..i], line[i..].trim()),
            _ => {}
        }
    }
    (line, "")
}

/// A number as the test files write it; Rust's float parser already reads
/// `Inf`, `+Inf`, `-Inf` and `NaN`.
fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// Expands one value token into values (`None` for a skipped step).
pub fn expand_values(token: &str) -> Result<Vec<Option<f64>>, String> {
    if token == "_" {
        return Ok(vec![None]);
    }
    if token == "stale" {
        return Ok(vec![Some(stale_marker())]);
    }
    if let Some(v) = parse_number(token) {
        return Ok(vec![Some(v)]);
    }
    let (head, times) = token
        .rsplit_once('x')
        .ok_or_else(|| format!("invalid value {token:?}"))?;
    let n: usize = times
        .parse()
        .map_err(|_| format!("invalid repetition in {token:?}"))?;
    if head == "_" {
        return Ok(vec![None; n]);
    }
    if let Some(v) = parse_number(head) {
        return Ok(vec![Some(v); n + 1]);
    }
    // `a+b` or `a-b`: the sign that is neither first nor part of an exponent.
    let bytes = head.as_bytes();
    let split = (1..bytes.len())
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'))
        .ok_or_else(|| format!("invalid value {token:?}"))?;
    let start =
        parse_number(&head[..split]).ok_or_else(|| format!("invalid start in {token:?}"))?;
    let step = parse_number(&head[split..]).ok_or_else(|| format!("invalid step in {token:?}"))?;
    let mut out = Vec::with_capacity(n + 1);
    let mut v = start;
    out.push(Some(v));
    for _ in 0..n {
        v += step;
        out.push(Some(v));
    }
    Ok(out)
}

fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 0.000_001;
    let min_normal = f64::from_bits(0x0010_0000_0000_0000);
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < min_normal {
        return diff < EPSILON * min_normal;
    }
    diff / (a.abs() + b.abs()) < EPSILON
}

enum Expected {
    Samples(Vec<(Labels, f64)>),
    Scalar(f64),
}

fn compare(result: Value, expected: &Expected, ordered: bool) -> Result<(), String> {
    match (result, expected) {
        (Value::Scalar(v), Expected::Scalar(e)) => {
            if almost_equal(v, *e) {
                Ok(())
            } else {
                Err(format!("expected scalar {e}, got {v}"))
            }
        }
        (Value::Scalar(v), Expected::Samples(s)) => {
            Err(format!("expected {} samples, got scalar {v}", s.len()))
        }
        (Value::Vector(v), Expected::Samples(expected)) => {
            if v.len() != expected.len() {
                let got: Vec<String> = v
                    .iter()
                    .map(|s| format!("{:?} {}", s.labels, s.v))
                    .collect();
                return Err(format!(
                    "expected {} samples, got {}: {got:?}",
                    expected.len(),
                    v.len()
                ));
            }
            let index: BTreeMap<&Labels, (usize, f64)> = v
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.labels, (i, s.v)))
                .collect();
            for (position, (labels, value)) in expected.iter().enumerate() {
                match index.get(labels) {
                    None => return Err(format!("expected {labels:?} {value}, not in the result")),
                    Some((i, v)) => {
                        if !almost_equal(*v, *value) {
                            return Err(format!("{labels:?}: expected {value}, got {v}"));
                        }
                        if ordered && *i != position {
                            return Err(format!(
                                "{labels:?}: expected at position {position}, got {i}"
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        (Value::Vector(v), Expected::Scalar(e)) => {
            Err(format!("expected scalar {e}, got a vector of {}", v.len()))
        }
        (other, _) => Err(format!("result {other:?} cannot be compared")),
    }
}

/// Runs every command of a test file; evaluations run against a fresh
/// in-memory history built from the file's `load` commands.
pub fn run(text: &str) -> Result<FileOutcome, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut outcome = FileOutcome::default();
    let mut history = History::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let number = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "clear" {
            history = History::new();
            continue;
        }
        if let Some(step) = line.strip_prefix("load ") {
            let step = parse_duration_ms(step.trim()).map_err(|e| format!("line {number}: {e}"))?;
            // As in Prometheus, a series defined twice in one `load` keeps its last definition.
            let mut defs: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
            while i < lines.len()
                && !lines[i].trim().is_empty()
                && lines[i].starts_with(char::is_whitespace)
            {
                let (desc, values) = split_descriptor(lines[i]);
                let labels = parse_descriptor(desc).map_err(|e| format!("line {}: {e}", i + 1))?;
                let mut samples = Vec::new();
                let mut t = 0i64;
                for token in values.split_whitespace() {
                    for v in expand_values(token).map_err(|e| format!("line {}: {e}", i + 1))? {
                        if let Some(v) = v {
                            samples.push((t, v));
                        }
                        t += step;
                    }
                }
                defs.insert(labels, samples);
                i += 1;
            }
            for (labels, samples) in defs {
                let id = history.series_id(&labels);
                for (t, v) in samples {
                    history
                        .append(id, t, v)
                        .map_err(|e| format!("line {number}: {labels:?}: {e}"))?;
                }
            }
            continue;
        }
        let (fail, ordered, rest) = if let Some(r) = line.strip_prefix("eval_fail instant at ") {
            (true, false, r)
        } else if let Some(r) = line.strip_prefix("eval_ordered instant at ") {
            (false, true, r)
        } else if let Some(r) = line.strip_prefix("eval instant at ") {
            (false, false, r)
        } else {
            return Err(format!("line {number}: unknown command {line:?}"));
        };
        let (at, expr) = rest
            .split_once(' ')
            .ok_or_else(|| format!("line {number}: no expression"))?;
        let at = parse_duration_ms(at).map_err(|e| format!("line {number}: {e}"))?;
        let mut samples = Vec::new();
        let mut scalar = None;
        while i < lines.len()
            && !lines[i].trim().is_empty()
            && lines[i].starts_with(char::is_whitespace)
        {
            let (desc, value) = split_descriptor(lines[i]);
            if value.is_empty() {
                scalar = Some(
                    parse_number(desc)
                        .ok_or_else(|| format!("line {}: invalid value {desc:?}", i + 1))?,
                );
            } else {
                let labels = parse_descriptor(desc).map_err(|e| format!("line {}: {e}", i + 1))?;
                let v = parse_number(value)
                    .ok_or_else(|| format!("line {}: invalid value {value:?}", i + 1))?;
                samples.push((labels, v));
            }
            i += 1;
        }
        let expected = match scalar {
            Some(v) => Expected::Scalar(v),
            None => Expected::Samples(samples),
        };
        let result = instant_query(&history, expr, at, Limits::default());
        let verdict = match (result, fail) {
            (Err(_), true) => Ok(()),
            (Ok(v), true) => Err(format!("expected an error, got {v:?}")),
            (Err(e), false) => Err(format!("error: {e}")),
            (Ok(v), false) => compare(v, &expected, ordered),
        };
        match verdict {
            Ok(()) => outcome.passed += 1,
            Err(message) => outcome.failed.push(Failure {
                line: number,
                expr: expr.to_string(),
                message,
            }),
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expand_as_prometheus_does() -> Result<(), String> {
        assert_eq!(
            expand_values("0+10x3")?,
            vec![Some(0.0), Some(10.0), Some(20.0), Some(30.0)]
        );
        assert_eq!(
            expand_values("-2-1x2")?,
            vec![Some(-2.0), Some(-3.0), Some(-4.0)]
        );
        assert_eq!(expand_values("1x2")?, vec![Some(1.0); 3]);
        assert_eq!(expand_values("_x2")?, vec![None, None]);
        assert_eq!(expand_values("1e+3")?, vec![Some(1000.0)]);
        assert_eq!(
            expand_values("1e3+1e2x1")?,
            vec![Some(1000.0), Some(1100.0)]
        );
        assert!(expand_values("x").is_err());
        Ok(())
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("50m"), Ok(3_000_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("10ms"), Ok(10));
        assert!(parse_duration_ms("5q").is_err());
    }

    #[test]
    fn a_small_file_runs() -> Result<(), String> {
        let file = "load 5m\n  up{job=\"a\", instance=\"1\"} 0+1x10\n  up{job=\"a\", instance=\"2\"} 1x10\n\neval instant at 50m sum(up)\n  {} 11\n\neval instant at 50m up == 1\n  up{job=\"a\", instance=\"2\"} 1\n\neval_fail instant at 50m up{job=\"a\"} + on() up\n\neval instant at 50m sum(up)\n  {} 12\n";
        let outcome = run(file)?;
        assert_eq!(outcome.passed, 3);
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].line, 13);
        Ok(())
    }
}
