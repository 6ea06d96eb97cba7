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
pub fn group_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
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

/// The aggregations that keep one running value per group and step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simple {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `count`
    Count,
    /// `group`
    Group,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
}

impl Simple {
    /// The aggregation an operator names (lower case), if it is one of these.
    pub fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "count" => Self::Count,
            "group" => Self::Group,
            "stddev" => Self::Stddev,
            "stdvar" => Self::Stdvar,
            _ => return None,
        })
    }
}

/// The running state of one group at one step, as Prometheus 2.42 keeps
/// it (its incremental mean and variance, its NaN rules for min and max).
#[derive(Debug, Clone, Copy, Default)]
pub struct Acc {
    value: f64,
    mean: f64,
    /// Elements seen; 0 for a step without any.
    pub count: f64,
}

impl Acc {
    /// Adds one element's value.
    pub fn add(&mut self, op: Simple, v: f64) {
        self.count += 1.0;
        if self.count == 1.0 {
            self.mean = v;
            self.value = if matches!(op, Simple::Stddev | Simple::Stdvar) {
                0.0
            } else {
                v
            };
            return;
        }
        match op {
            Simple::Sum => self.value += v,
            Simple::Avg => {
                if self.mean.is_infinite() {
                    if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                self.mean += v / self.count - self.mean / self.count;
            }
            Simple::Max if self.value < v || self.value.is_nan() => self.value = v,
            Simple::Min if self.value > v || self.value.is_nan() => self.value = v,
            Simple::Stddev | Simple::Stdvar => {
                let delta = v - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (v - self.mean);
            }
            _ => {}
        }
    }

    /// The aggregated value.
    pub fn result(&self, op: Simple) -> f64 {
        match op {
            Simple::Sum | Simple::Min | Simple::Max => self.value,
            Simple::Avg => self.mean,
            Simple::Count => self.count,
            Simple::Group => 1.0,
            Simple::Stdvar => self.value / self.count,
            Simple::Stddev => (self.value / self.count).sqrt(),
        }
    }
}

#[derive(Default)]
struct Group {
    labels: Labels,
    acc: Acc,
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

    let simple = Simple::parse(&op);
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
                ..Group::default()
            }
        });
        group.acc.add(simple.unwrap_or(Simple::Count), s.v);
        match op.as_str() {
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
            "count_values" => group.acc.count,
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
            other => match simple {
                Some(simple) => group.acc.result(simple),
                None => {
                    return Err(EvalError::Invalid(format!(
                        "aggregation {other} is not supported"
                    )));
                }
            },
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
