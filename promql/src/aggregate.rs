//! Aggregations: `sum avg min max count group stddev stdvar topk bottomk
//! quantile count_values`, grouped `by` or `without` labels, with Prometheus
//! 2.42's arithmetic (incremental mean, Welford's variance, NaN rules).

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::eval::{Evaluator, drop_name};
use super::{EvalError, Labels, METRIC_NAME, Sample, Value};

/// Rank-interpolated quantile of `values`, as Prometheus computes it.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_nan_first(values);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn sort_nan_first(values: &mut [f64]) {
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
}

/// The labels an element is grouped by.
fn group_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Vec::new(),
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k != METRIC_NAME && !without.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
    }
}

#[derive(Default)]
struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    values: Vec<f64>,
    samples: Vec<Sample>,
}

/// Evaluates an aggregation at `ts`.
pub fn eval(ev: &Evaluator<'_>, a: &AggregateExpr, ts: i64) -> Result<Value, EvalError> {
    let op = a.op.to_string().to_lowercase();
    let input = match ev.eval(&a.expr, ts)? {
        Value::Vector(v) => v,
        _ => return Err(EvalError::Invalid(format!("{op} needs an instant vector"))),
    };
    let param = match &a.param {
        Some(p) => Some(ev.eval(p, ts)?),
        None => None,
    };
    let number = |what: &str| -> Result<f64, EvalError> {
        match &param {
            Some(Value::Scalar(v)) => Ok(*v),
            _ => Err(EvalError::Invalid(format!(
                "{op} needs a number as its {what}"
            ))),
        }
    };
    let mut count_label = String::new();
    if op == "count_values" {
        count_label = match &param {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(EvalError::Invalid(
                    "count_values needs a label name as a string".into(),
                ));
            }
        };
        if !vigil_shared::labels::is_valid_label_name(&count_label) {
            return Err(EvalError::Invalid(format!(
                "invalid label name {count_label:?}"
            )));
        }
    }
    let k = if op == "topk" || op == "bottomk" {
        let k = number("k")?;
        if k.is_nan() {
            return Err(EvalError::Invalid(format!("parameter k of {op} is NaN")));
        }
        let k = if k >= i64::MAX as f64 {
            i64::MAX
        } else {
            k as i64
        };
        if k < 1 {
            return Ok(Value::Vector(Vec::new()));
        }
        k as usize
    } else {
        0
    };
    let q = if op == "quantile" {
        number("quantile")?
    } else {
        0.0
    };

    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, Group> = HashMap::new();
    for s in input {
        let mut key = group_labels(&s.labels, &a.modifier);
        if op == "count_values" {
            let value = format_value(s.v);
            key.retain(|(k, _)| *k != count_label);
            key.push((count_label.clone(), value));
            key.sort();
        }
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Group {
                labels: key,
                value: s.v,
                mean: s.v,
                ..Group::default()
            }
        });
        let first = group.count == 0.0;
        group.count += 1.0;
        if first {
            group.values.push(s.v);
            if op == "stddev" || op == "stdvar" {
                group.mean = s.v;
                group.value = 0.0;
            }
            group.samples.push(s);
            continue;
        }
        match op.as_str() {
            "sum" => group.value += s.v,
            "avg" => {
                if group.mean.is_infinite() {
                    if s.v.is_infinite() && (group.mean > 0.0) == (s.v > 0.0) {
                        continue;
                    }
                    if !s.v.is_infinite() && !s.v.is_nan() {
                        continue;
                    }
                }
                group.mean += s.v / group.count - group.mean / group.count;
            }
            "max" if group.value < s.v || group.value.is_nan() => group.value = s.v,
            "min" if group.value > s.v || group.value.is_nan() => group.value = s.v,
            "stddev" | "stdvar" => {
                let delta = s.v - group.mean;
                group.mean += delta / group.count;
                group.value += delta * (s.v - group.mean);
            }
            "quantile" => group.values.push(s.v),
            "topk" | "bottomk" => group.samples.push(s),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        let Some(mut group) = groups.remove(&key) else {
            continue;
        };
        let value = match op.as_str() {
            "sum" | "min" | "max" => group.value,
            "avg" => group.mean,
            "count" | "count_values" => group.count,
            "group" => 1.0,
            "stdvar" => group.value / group.count,
            "stddev" => (group.value / group.count).sqrt(),
            "quantile" => quantile(q, &mut group.values),
            "topk" | "bottomk" => {
                let top = op == "topk";
                group.samples.sort_by(|a, b| {
                    use std::cmp::Ordering;
                    match (a.v.is_nan(), b.v.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        _ if top => b.v.partial_cmp(&a.v).unwrap_or(Ordering::Equal),
                        _ => a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal),
                    }
                });
                for mut s in group.samples.into_iter().take(k) {
                    s.t = ts;
                    out.push(s);
                }
                continue;
            }
            other => {
                return Err(EvalError::Invalid(format!(
                    "aggregation {other} is not supported"
                )));
            }
        };
        let mut labels = group.labels;
        drop_name(&mut labels);
        out.push(Sample {
            labels,
            t: ts,
            v: value,
        });
    }
    Ok(Value::Vector(out))
}

/// Formats a value the way Go's `strconv.FormatFloat(v, 'f', -1, 64)` does.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_between_ranks() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [3.0, 1.0]), 1.0);
        assert_eq!(quantile(1.5, &mut [3.0, 1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }
}
