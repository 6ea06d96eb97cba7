//! PromQL's functions, with Prometheus 2.42's semantics: extrapolation in
//! `rate`/`increase`/`delta`, counter resets, `le` handling and monotonicity
//! fixes in `histogram_quantile`, label dropping (every function drops
//! `__name__` but `last_over_time`, `label_replace`, `label_join`, `sort`,
//! `sort_desc`), and NaN rules.

use promql_parser::parser::{Call, Expr};
use regex::Regex;

use super::aggregate::quantile;
use super::eval::{Evaluator, check_unique, drop_name, label};
use super::{EvalError, Labels, METRIC_NAME, RangeSeries, Sample, Value};

fn invalid<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::Invalid(message.into()))
}

/// A range-vector argument: its series, where its range ends, and its length.
struct RangeArg {
    series: Vec<RangeSeries>,
    end: i64,
    range: i64,
}

fn range_arg(ev: &Evaluator<'_>, expr: &Expr, ts: i64) -> Result<RangeArg, EvalError> {
    match expr {
        Expr::MatrixSelector(ms) => {
            let range = crate::eval::millis(ms.range);
            let (series, end) = ev.matrix_selector(&ms.vs, range, ts)?;
            Ok(RangeArg { series, end, range })
        }
        Expr::Subquery(sq) => {
            let (series, end) = ev.subquery(sq, ts)?;
            Ok(RangeArg {
                series,
                end,
                range: crate::eval::millis(sq.range),
            })
        }
        Expr::Paren(p) => range_arg(ev, &p.expr, ts),
        _ => invalid("expected a range vector"),
    }
}

fn vector_arg(ev: &Evaluator<'_>, expr: &Expr, ts: i64) -> Result<Vec<Sample>, EvalError> {
    match ev.eval(expr, ts)? {
        Value::Vector(v) => Ok(v),
        _ => invalid("expected an instant vector"),
    }
}

fn scalar_arg(ev: &Evaluator<'_>, expr: &Expr, ts: i64) -> Result<f64, EvalError> {
    match ev.eval(expr, ts)? {
        Value::Scalar(v) => Ok(v),
        _ => invalid("expected a number"),
    }
}

fn string_arg(ev: &Evaluator<'_>, expr: &Expr, ts: i64) -> Result<String, EvalError> {
    match ev.eval(expr, ts)? {
        Value::String(s) => Ok(s),
        _ => invalid("expected a string"),
    }
}

/// Applies `f` to every series of a range vector; series for which `f`
/// returns `None` are left out. The metric name is dropped unless `keep_name`.
fn over_range(
    arg: RangeArg,
    ts: i64,
    keep_name: bool,
    mut f: impl FnMut(&[(i64, f64)]) -> Option<f64>,
) -> Result<Value, EvalError> {
    let mut out = Vec::with_capacity(arg.series.len());
    for s in arg.series {
        if let Some(v) = f(&s.points) {
            let mut labels = s.labels;
            if !keep_name {
                drop_name(&mut labels);
            }
            out.push(Sample { labels, t: ts, v });
        }
    }
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// Applies `f` to every element of an instant vector, dropping the name.
fn per_sample(v: Vec<Sample>, ts: i64, f: impl Fn(f64) -> f64) -> Result<Value, EvalError> {
    let out: Vec<Sample> = v
        .into_iter()
        .map(|mut s| {
            s.v = f(s.v);
            s.t = ts;
            drop_name(&mut s.labels);
            s
        })
        .collect();
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

fn extrapolated_rate(
    points: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if counter {
        let mut last = 0.0;
        for &(_, v) in points {
            if v < last {
                result += last;
            }
            last = v;
        }
    }
    let mut to_start = (first_t as f64 - range_start as f64) / 1000.0;
    let to_end = (range_end as f64 - last_t as f64) / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    if counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    // Prometheus 2.42 folds the range into the factor before multiplying;
    // the order changes the last bit, which promtool's exact checks see.
    let mut factor = interval / sampled;
    if rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(points: &[(i64, f64)], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (lt, lv) = points[points.len() - 1];
    let (pt, pv) = points[points.len() - 2];
    let mut result = if rate && lv < pv { lv } else { lv - pv };
    let interval = lt - pt;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept at `intercept_time`, as Prometheus 2.42.
fn linear_regression(points: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut sum_y, mut sum_xy, mut sum_x2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1000.0;
        sum_x += x;
        sum_y += v;
        sum_xy += x * v;
        sum_x2 += x * x;
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn holt_winters(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let trend = |i: usize, s0: f64, s1: f64, b: f64| {
        if i == 0 {
            b
        } else {
            tf * (s1 - s0) + (1.0 - tf) * b
        }
    };
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut b = points[1].1 - points[0].1;
    for (i, &(_, v)) in points.iter().enumerate().skip(1) {
        let x = sf * v;
        b = trend(i - 1, s0, s1, b);
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

#[derive(Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

fn bucket_quantile(q: f64, buckets: &mut [Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    // Make counts monotonic.
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.count < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].upper;
    }
    if b == 0 && merged[0].upper <= 0.0 {
        return merged[0].upper;
    }
    let mut start = 0.0;
    let end = merged[b].upper;
    let mut count = merged[b].count;
    if b > 0 {
        start = merged[b - 1].upper;
        count -= merged[b - 1].count;
        rank -= merged[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// Go's `regexp.Expand` for `$1`, `${1}`, `$name` and `$$`.
fn expand(template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => {
                    out.push('$');
                    continue;
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        let value = match name.parse::<usize>() {
            Ok(n) => caps.get(n),
            Err(_) => caps.name(name),
        };
        if let Some(m) = value {
            out.push_str(m.as_str());
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn set_or_delete(labels: &mut Labels, name: &str, value: String) {
    labels.retain(|(k, _)| k != name);
    if !value.is_empty() {
        labels.push((name.to_string(), value));
        labels.sort();
    }
}

fn date_part(
    ev: &Evaluator<'_>,
    c: &Call,
    ts: i64,
    part: fn(i64) -> f64,
) -> Result<Value, EvalError> {
    let input = match c.args.args.first() {
        Some(arg) => vector_arg(ev, arg, ts)?,
        None => vec![Sample {
            labels: Vec::new(),
            t: ts,
            v: ts as f64 / 1000.0,
        }],
    };
    per_sample(input, ts, |v| {
        if v.is_nan() || v.is_infinite() {
            return f64::NAN;
        }
        part(v.floor() as i64)
    })
}

/// (year, month 1–12, day 1–31, day of week 0–6 from Sunday, day of year 1–366, hour, minute) in UTC.
fn civil(seconds: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut year = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    if month <= 2 {
        year += 1;
    }
    let weekday = (days + 4).rem_euclid(7);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year =
        cumulative[(month - 1) as usize] + day + if leap && month > 2 { 1 } else { 0 };
    (
        year,
        month,
        day,
        weekday,
        day_of_year,
        secs / 3600,
        (secs % 3600) / 60,
    )
}

fn days_in_month(seconds: i64) -> f64 {
    let (year, month, ..) = civil(seconds);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29.0,
        2 => 28.0,
        4 | 6 | 9 | 11 => 30.0,
        _ => 31.0,
    }
}

fn absent_labels(expr: &Expr) -> Labels {
    let vs = match expr {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Vec::new(),
    };
    let mut labels: Labels = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        // Any other matcher on the same name makes its value unknown.
        if !matches!(m.op, promql_parser::label::MatchOp::Equal)
            || labels.iter().any(|(k, _)| *k == m.name)
        {
            repeated.push(m.name.clone());
            continue;
        }
        labels.push((m.name.clone(), m.value.clone()));
    }
    labels.retain(|(k, _)| !repeated.contains(k));
    labels.sort();
    labels
}

/// Where a range function's window lies: `[end - range, end]`, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The window's first millisecond.
    pub start: i64,
    /// The window's last millisecond (the selector's time).
    pub end: i64,
    /// Its length.
    pub range: i64,
}

/// How a range function reduces the non-empty, time-ordered samples of one
/// window to a value (`None`: no value at this step).
pub type WindowFn = fn(&[(i64, f64)], Window) -> Option<f64>;

fn avg_over_time(p: &[(i64, f64)], _: Window) -> Option<f64> {
    let mut mean: f64 = 0.0;
    let mut count = 0.0;
    for &(_, v) in p {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        mean += v / count - mean / count;
    }
    Some(mean)
}

fn variance_over_time(p: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
    for &(_, v) in p {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        aux += delta * (v - mean);
    }
    aux / count
}

/// The range functions whose only argument is a range vector: how each
/// reduces a window, and whether it keeps the metric name. The instant
/// evaluator and the range evaluator ([`crate::steps`]) both use these.
pub fn window_fn(name: &str) -> Option<(WindowFn, bool)> {
    let f: WindowFn = match name {
        "rate" => |p, w| extrapolated_rate(p, w.start, w.end, w.range, true, true),
        "increase" => |p, w| extrapolated_rate(p, w.start, w.end, w.range, true, false),
        "delta" => |p, w| extrapolated_rate(p, w.start, w.end, w.range, false, false),
        "irate" => |p, _| instant_value(p, true),
        "idelta" => |p, _| instant_value(p, false),
        "deriv" => |p, _| (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
        "resets" => |p, _| Some(p.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
        "changes" => |p, _| {
            Some(
                p.windows(2)
                    .filter(|w| !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan())))
                    .count() as f64,
            )
        },
        "avg_over_time" => avg_over_time,
        "sum_over_time" => |p, _| Some(p.iter().map(|(_, v)| v).sum()),
        "count_over_time" => |p, _| Some(p.len() as f64),
        "min_over_time" => |p, _| {
            let first = p.first()?.1;
            Some(
                p.iter()
                    .fold(first, |m, &(_, v)| if v < m || m.is_nan() { v } else { m }),
            )
        },
        "max_over_time" => |p, _| {
            let first = p.first()?.1;
            Some(
                p.iter()
                    .fold(first, |m, &(_, v)| if v > m || m.is_nan() { v } else { m }),
            )
        },
        "stddev_over_time" => |p, _| Some(variance_over_time(p).sqrt()),
        "stdvar_over_time" => |p, _| Some(variance_over_time(p)),
        "last_over_time" => return Some((|p, _| p.last().map(|(_, v)| *v), true)),
        "present_over_time" => |_, _| Some(1.0),
        _ => return None,
    };
    Some((f, false))
}

/// Evaluates a function call at `ts`.
pub fn call(ev: &Evaluator<'_>, c: &Call, ts: i64) -> Result<Value, EvalError> {
    let args = &c.args.args;
    let arg = |i: usize| -> Result<&Expr, EvalError> {
        args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
            EvalError::Invalid(format!("{}: missing argument {}", c.func.name, i + 1))
        })
    };
    let name = c.func.name;
    if let Some((f, keep_name)) = window_fn(name) {
        let r = range_arg(ev, arg(0)?, ts)?;
        let w = Window {
            start: r.end.saturating_sub(r.range),
            end: r.end,
            range: r.range,
        };
        return over_range(r, ts, keep_name, |p| f(p, w));
    }
    match name {
        "time" => Ok(Value::Scalar(ts as f64 / 1000.0)),
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => Ok(Value::Vector(vec![Sample {
            labels: Vec::new(),
            t: ts,
            v: scalar_arg(ev, arg(0)?, ts)?,
        }])),
        "scalar" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
        }
        "predict_linear" => {
            let r = range_arg(ev, arg(0)?, ts)?;
            let duration = scalar_arg(ev, arg(1)?, ts)?;
            over_range(r, ts, false, |p| {
                (p.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(p, ts);
                    slope * duration + intercept
                })
            })
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let r = range_arg(ev, arg(0)?, ts)?;
            let sf = scalar_arg(ev, arg(1)?, ts)?;
            let tf = scalar_arg(ev, arg(2)?, ts)?;
            if sf <= 0.0 || sf >= 1.0 {
                return invalid(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                ));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return invalid(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                ));
            }
            over_range(r, ts, false, |p| holt_winters(p, sf, tf))
        }
        "quantile_over_time" => {
            let q = scalar_arg(ev, arg(0)?, ts)?;
            over_range(range_arg(ev, arg(1)?, ts)?, ts, false, |p| {
                let mut values: Vec<f64> = p.iter().map(|(_, v)| *v).collect();
                Some(quantile(q, &mut values))
            })
        }
        "absent_over_time" => {
            let r = range_arg(ev, arg(0)?, ts)?;
            if r.series.is_empty() {
                Ok(Value::Vector(vec![Sample {
                    labels: absent_labels(arg(0)?),
                    t: ts,
                    v: 1.0,
                }]))
            } else {
                Ok(Value::Vector(Vec::new()))
            }
        }
        "absent" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            if v.is_empty() {
                Ok(Value::Vector(vec![Sample {
                    labels: absent_labels(arg(0)?),
                    t: ts,
                    v: 1.0,
                }]))
            } else {
                Ok(Value::Vector(Vec::new()))
            }
        }
        "timestamp" => {
            // The selector's own sample times, not the evaluation time.
            let mut inner = arg(0)?;
            while let Expr::Paren(p) = inner {
                inner = &p.expr;
            }
            let input = match inner {
                Expr::VectorSelector(vs) => ev.vector_selector(vs, ts)?,
                other => vector_arg(ev, other, ts)?,
            };
            let out: Vec<Sample> = input
                .into_iter()
                .map(|mut s| {
                    s.v = s.t as f64 / 1000.0;
                    s.t = ts;
                    drop_name(&mut s.labels);
                    s
                })
                .collect();
            check_unique(&out)?;
            Ok(Value::Vector(out))
        }
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => super::gomath::exp,
                "ln" => super::gomath::ln,
                "log2" => super::gomath::log2,
                "log10" => super::gomath::log10,
                "sqrt" => f64::sqrt,
                "sgn" => |v: f64| {
                    if v > 0.0 {
                        1.0
                    } else if v < 0.0 {
                        -1.0
                    } else {
                        v
                    }
                },
                "acos" => super::gomath::acos,
                "acosh" => f64::acosh,
                "asin" => super::gomath::asin,
                "asinh" => f64::asinh,
                "atan" => super::gomath::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => super::gomath::cosh,
                "sin" => f64::sin,
                "sinh" => super::gomath::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
                _ => |v: f64| v * std::f64::consts::PI / 180.0,
            };
            per_sample(vector_arg(ev, arg(0)?, ts)?, ts, f)
        }
        "round" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let to = match args.get(1) {
                Some(a) => scalar_arg(ev, a, ts)?,
                None => 1.0,
            };
            let inverse = 1.0 / to;
            per_sample(v, ts, |x| (x * inverse + 0.5).floor() / inverse)
        }
        "clamp" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let (min, max) = (scalar_arg(ev, arg(1)?, ts)?, scalar_arg(ev, arg(2)?, ts)?);
            if max < min {
                return Ok(Value::Vector(Vec::new()));
            }
            per_sample(v, ts, |x| go_max(min, go_min(max, x)))
        }
        "clamp_min" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let min = scalar_arg(ev, arg(1)?, ts)?;
            per_sample(v, ts, |x| go_max(min, x))
        }
        "clamp_max" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let max = scalar_arg(ev, arg(1)?, ts)?;
            per_sample(v, ts, |x| go_min(max, x))
        }
        "sort" | "sort_desc" => {
            let mut v = vector_arg(ev, arg(0)?, ts)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                use std::cmp::Ordering;
                match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    _ if desc => b.v.partial_cmp(&a.v).unwrap_or(Ordering::Equal),
                    _ => a.v.partial_cmp(&b.v).unwrap_or(Ordering::Equal),
                }
            });
            Ok(Value::Vector(v))
        }
        "label_replace" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let dst = string_arg(ev, arg(1)?, ts)?;
            let replacement = string_arg(ev, arg(2)?, ts)?;
            let src = string_arg(ev, arg(3)?, ts)?;
            let pattern = string_arg(ev, arg(4)?, ts)?;
            let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
                EvalError::Invalid(format!(
                    "invalid regular expression in label_replace(): {pattern}: {e}"
                ))
            })?;
            if !vigil_shared::labels::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return invalid(format!(
                    "invalid destination label name in label_replace(): {dst}"
                ));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let value = label(&s.labels, &src).to_string();
                if let Some(caps) = re.captures(&value) {
                    let new = expand(&replacement, &caps);
                    set_or_delete(&mut s.labels, &dst, new);
                }
                s.t = ts;
                out.push(s);
            }
            check_unique(&out)?;
            Ok(Value::Vector(out))
        }
        "label_join" => {
            let v = vector_arg(ev, arg(0)?, ts)?;
            let dst = string_arg(ev, arg(1)?, ts)?;
            let separator = string_arg(ev, arg(2)?, ts)?;
            let mut sources = Vec::new();
            for a in args.iter().skip(3) {
                let src = string_arg(ev, a, ts)?;
                if !vigil_shared::labels::is_valid_label_name(&src) && src != METRIC_NAME {
                    return invalid(format!("invalid source label name in label_join(): {src}"));
                }
                sources.push(src);
            }
            if !vigil_shared::labels::is_valid_label_name(&dst) && dst != METRIC_NAME {
                return invalid(format!(
                    "invalid destination label name in label_join(): {dst}"
                ));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let joined = sources
                    .iter()
                    .map(|n| label(&s.labels, n))
                    .collect::<Vec<_>>()
                    .join(&separator);
                set_or_delete(&mut s.labels, &dst, joined);
                s.t = ts;
                out.push(s);
            }
            check_unique(&out)?;
            Ok(Value::Vector(out))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ev, arg(0)?, ts)?;
            let v = vector_arg(ev, arg(1)?, ts)?;
            let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
            for s in v {
                // Rust's float parser reads `+Inf`, `-Inf` and `NaN` as Go's does.
                let Ok(upper) = label(&s.labels, "le").parse::<f64>() else {
                    continue;
                };
                // Grouped with the name, reported without it: two histograms
                // that differ only by name collide, as in Prometheus.
                let mut key = s.labels.clone();
                key.retain(|(k, _)| k != "le");
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, buckets)) => buckets.push(Bucket { upper, count: s.v }),
                    None => groups.push((key, vec![Bucket { upper, count: s.v }])),
                }
            }
            let out: Vec<Sample> = groups
                .into_iter()
                .map(|(mut labels, mut buckets)| {
                    drop_name(&mut labels);
                    Sample {
                        labels,
                        t: ts,
                        v: bucket_quantile(q, &mut buckets),
                    }
                })
                .collect();
            check_unique(&out)?;
            Ok(Value::Vector(out))
        }
        "day_of_month" => date_part(ev, c, ts, |s| civil(s).2 as f64),
        "day_of_week" => date_part(ev, c, ts, |s| civil(s).3 as f64),
        "day_of_year" => date_part(ev, c, ts, |s| civil(s).4 as f64),
        "days_in_month" => date_part(ev, c, ts, days_in_month),
        "hour" => date_part(ev, c, ts, |s| civil(s).5 as f64),
        "minute" => date_part(ev, c, ts, |s| civil(s).6 as f64),
        "month" => date_part(ev, c, ts, |s| civil(s).1 as f64),
        "year" => date_part(ev, c, ts, |s| civil(s).0 as f64),
        other => invalid(format!("function {other}() is not supported")),
    }
}

/// Go's `math.Max`: NaN when either is NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN when either is NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        // 2006-01-02T22:04:05Z, a Monday, day 2 of the year.
        assert_eq!(civil(1_136_239_445), (2006, 1, 2, 1, 2, 22, 4));
        // 2016-12-31T13:37:00Z, leap year: day 366.
        assert_eq!(civil(1_483_191_420).4, 366);
        assert_eq!(days_in_month(1_454_284_800), 29.0); // 2016-02-01
        assert_eq!(civil(0), (1970, 1, 1, 4, 1, 0, 0));
    }

    #[test]
    fn expand_follows_go_regexp_rules() -> Result<(), regex::Error> {
        let re = Regex::new("^(?P<a>a+)-(b+)$")?;
        let caps = re
            .captures("aa-bbb")
            .ok_or_else(|| regex::Error::Syntax("no match".into()))?;
        assert_eq!(expand("$1|${2}|$a|$$|$9x", &caps), "aa|bbb|aa|$|");
        Ok(())
    }
}
