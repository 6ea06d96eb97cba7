//! The evaluator: one expression at one time, over a [`Queryable`] store.
//!
//! Instant selectors take each series' latest sample within the lookback
//! (5 minutes) at or before the evaluation time, and none when that sample is
//! a stale marker. Range selectors take every sample in `[t - range, t]`,
//! stale markers left out. `offset` moves the time back; `@` pins it
//! (`start()` and `end()` are the query's). A subquery evaluates its inner
//! expression at every step aligned to a multiple of its step.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use promql_parser::label::MatchOp;
use promql_parser::parser::{
    AtModifier, BinaryExpr, Expr, LabelModifier, Offset, SubqueryExpr, VectorMatchCardinality,
    VectorSelector,
};

use super::{
    EvalError, Labels, Limits, METRIC_NAME, Queryable, RangeSeries, Sample, Value, aggregate,
    functions,
};
use vigil_store::chunk::is_stale_marker;
use vigil_store::history::Matcher;

/// Evaluates expressions for one query.
pub struct Evaluator<'a> {
    pub(crate) store: &'a dyn Queryable,
    start: i64,
    end: i64,
    pub(crate) limits: Limits,
    loaded: Cell<usize>,
    deadline: Instant,
}

/// Milliseconds of a duration written in a query, saturating: `[1000000y]`
/// or `offset 1e9y` must never wrap around into a negative range.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch of a `SystemTime` (negative before it).
pub fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => millis(d),
        Err(e) => -millis(e.duration()),
    }
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

/// Removes `__name__`.
pub fn drop_name(labels: &mut Labels) {
    labels.retain(|(k, _)| k != METRIC_NAME);
}

/// The value of a label, empty when absent.
pub fn label<'l>(labels: &'l Labels, name: &str) -> &'l str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Errors when two elements of a vector have the same labels.
pub fn check_unique(samples: &[Sample]) -> Result<(), EvalError> {
    let mut seen = std::collections::HashSet::with_capacity(samples.len());
    for s in samples {
        if !seen.insert(&s.labels) {
            return Err(EvalError::Invalid(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

/// Operators whose result loses the metric name (`atan2` keeps it, as in Prometheus 2.42).
pub(crate) fn drops_name(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^")
}

pub(crate) fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

/// Applies a binary operator to two numbers: the value, and whether a
/// comparison holds (always true for arithmetic).
pub fn binop(op: &str, l: f64, r: f64) -> (f64, bool) {
    match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

struct Matching {
    card: VectorMatchCardinality,
    on: bool,
    labels: Vec<String>,
    include: Vec<String>,
    return_bool: bool,
}

fn matching(e: &BinaryExpr) -> Matching {
    let Some(m) = &e.modifier else {
        let set = matches!(e.op.to_string().as_str(), "and" | "or" | "unless");
        return Matching {
            card: if set {
                VectorMatchCardinality::ManyToMany
            } else {
                VectorMatchCardinality::OneToOne
            },
            on: false,
            labels: Vec::new(),
            include: Vec::new(),
            return_bool: false,
        };
    };
    let (on, labels) = match &m.matching {
        Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
        None => (false, Vec::new()),
    };
    let include = match &m.card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
            l.labels.clone()
        }
        _ => Vec::new(),
    };
    Matching {
        card: m.card.clone(),
        on,
        labels,
        include,
        return_bool: m.return_bool,
    }
}

fn signature(labels: &Labels, on: bool, names: &[String]) -> Vec<(String, String)> {
    labels
        .iter()
        .filter(|(k, _)| {
            if on {
                names.iter().any(|n| n == k)
            } else {
                k != METRIC_NAME && !names.iter().any(|n| n == k)
            }
        })
        .cloned()
        .collect()
}

fn set_label(labels: &mut Labels, name: &str, value: &str) {
    labels.retain(|(k, _)| k != name);
    if !value.is_empty() {
        labels.push((name.to_string(), value.to_string()));
        labels.sort();
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator for a query from `start` to `end` (equal for an instant query).
    pub fn new(store: &'a dyn Queryable, start: i64, end: i64, limits: Limits) -> Self {
        Self {
            store,
            start,
            end,
            limits,
            loaded: Cell::new(0),
            deadline: Instant::now() + limits.timeout,
        }
    }

    pub(crate) fn check_deadline(&self) -> Result<(), EvalError> {
        if Instant::now() > self.deadline {
            return Err(EvalError::Timeout(self.limits.timeout));
        }
        Ok(())
    }

    fn selector_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, ts: i64) -> i64 {
        let base = match at {
            None => ts,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(t)) => system_time_ms(t),
        };
        base.saturating_sub(offset_ms(offset))
    }

    fn load(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<vigil_store::history::SeriesSamples>, EvalError> {
        self.check_deadline()?;
        let series = self.store.select(&selector_matchers(vs)?, mint, maxt);
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        self.charge(n)?;
        Ok(series)
    }

    /// Counts `n` more samples against [`Limits::max_samples`]: samples
    /// loaded from the store and points a subquery produces alike.
    pub(crate) fn charge(&self, n: usize) -> Result<(), EvalError> {
        let total = self.loaded.get().saturating_add(n);
        if total > self.limits.max_samples {
            return Err(EvalError::TooManySamples(self.limits.max_samples));
        }
        self.loaded.set(total);
        Ok(())
    }

    /// The instant vector a selector gives at `ts`.
    pub fn vector_selector(&self, vs: &VectorSelector, ts: i64) -> Result<Vec<Sample>, EvalError> {
        let t = self.selector_time(&vs.at, &vs.offset, ts);
        let lookback = millis(self.limits.lookback);
        let mut out = Vec::new();
        for series in self.load(vs, t.saturating_sub(lookback), t)? {
            if let Some(&(st, v)) = series.samples.last()
                && !is_stale_marker(v)
            {
                out.push(Sample {
                    labels: series.labels,
                    t: st,
                    v,
                });
            }
        }
        Ok(out)
    }

    /// The range vector `vs[range]` gives at `ts`, and the range's end.
    pub fn matrix_selector(
        &self,
        vs: &VectorSelector,
        range_ms: i64,
        ts: i64,
    ) -> Result<(Vec<RangeSeries>, i64), EvalError> {
        let t = self.selector_time(&vs.at, &vs.offset, ts);
        let mut out = Vec::new();
        for series in self.load(vs, t.saturating_sub(range_ms), t)? {
            let points: Vec<(i64, f64)> = series
                .samples
                .into_iter()
                .filter(|(_, v)| !is_stale_marker(*v))
                .collect();
            if !points.is_empty() {
                out.push(RangeSeries {
                    labels: series.labels,
                    points,
                });
            }
        }
        Ok((out, t))
    }

    /// Evaluates a subquery at `ts`: its series, and where its range ends.
    pub fn subquery(
        &self,
        sq: &SubqueryExpr,
        ts: i64,
    ) -> Result<(Vec<RangeSeries>, i64), EvalError> {
        let end = self.selector_time(&sq.at, &sq.offset, ts);
        let range = millis(sq.range);
        let step = millis(sq.step.unwrap_or(self.limits.default_subquery_step));
        if step <= 0 {
            return Err(EvalError::Invalid(
                "subquery step must be more than 0".into(),
            ));
        }
        let from = end.saturating_sub(range);
        let mut start = step.saturating_mul(from / step);
        if start < from {
            start = start.saturating_add(step);
        }
        let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        let mut t = start;
        while t <= end {
            self.check_deadline()?;
            match self.eval(&sq.expr, t)? {
                Value::Vector(v) => {
                    // Every point a subquery keeps counts like a sample
                    // loaded: `x[1y:1ms]` is refused, not built.
                    self.charge(v.len())?;
                    for s in v {
                        series.entry(s.labels).or_default().push((t, s.v));
                    }
                }
                Value::Scalar(v) => {
                    self.charge(1)?;
                    series.entry(Vec::new()).or_default().push((t, v));
                }
                _ => {
                    return Err(EvalError::Invalid(
                        "subquery of something that is not an instant vector".into(),
                    ));
                }
            }
            let Some(next) = t.checked_add(step) else {
                break;
            };
            t = next;
        }
        let series = series
            .into_iter()
            .map(|(labels, points)| RangeSeries { labels, points })
            .collect();
        Ok((series, end))
    }

    /// Evaluates `expr` at `ts`.
    pub fn eval(&self, expr: &Expr, ts: i64) -> Result<Value, EvalError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::VectorSelector(vs) => {
                let mut v = self.vector_selector(vs, ts)?;
                // The result is at the evaluation time; `timestamp()` reads the selector itself.
                for s in &mut v {
                    s.t = ts;
                }
                Ok(Value::Vector(v))
            }
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(
                self.matrix_selector(&ms.vs, millis(ms.range), ts)?.0,
            )),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.subquery(sq, ts)?.0)),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(mut v) => {
                    for s in &mut v {
                        s.v = -s.v;
                        drop_name(&mut s.labels);
                    }
                    check_unique(&v)?;
                    Ok(Value::Vector(v))
                }
                _ => Err(EvalError::Invalid(
                    "unary minus needs a number or an instant vector".into(),
                )),
            },
            Expr::Binary(b) => self.binary(b, ts),
            Expr::Aggregate(a) => aggregate::eval(self, a, ts),
            Expr::Call(c) => functions::call(self, c, ts),
            Expr::Extension(_) => Err(EvalError::Invalid(
                "extension expressions are not supported".into(),
            )),
        }
    }

    fn binary(&self, e: &BinaryExpr, ts: i64) -> Result<Value, EvalError> {
        let op = e.op.to_string();
        let m = matching(e);
        let lhs = self.eval(&e.lhs, ts)?;
        let rhs = self.eval(&e.rhs, ts)?;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = binop(&op, l, r);
                if is_comparison(&op) {
                    Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Value::Scalar(v))
                }
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                self.vector_scalar(&op, v, s, false, m.return_bool, ts)
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                self.vector_scalar(&op, v, s, true, m.return_bool, ts)
            }
            (Value::Vector(l), Value::Vector(r)) => match op.as_str() {
                "and" | "or" | "unless" => Ok(Value::Vector(set_operation(&op, l, r, &m))),
                _ => self.vector_vector(&op, l, r, &m, ts),
            },
            _ => Err(EvalError::Invalid(format!(
                "operator {op} needs numbers or instant vectors"
            ))),
        }
    }

    fn vector_scalar(
        &self,
        op: &str,
        v: Vec<Sample>,
        s: f64,
        swap: bool,
        return_bool: bool,
        ts: i64,
    ) -> Result<Value, EvalError> {
        let mut out = Vec::with_capacity(v.len());
        for mut sample in v {
            let (l, r) = if swap { (s, sample.v) } else { (sample.v, s) };
            let (mut value, mut keep) = binop(op, l, r);
            if is_comparison(op) && swap {
                value = r;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
                keep = true;
            }
            if keep {
                sample.v = value;
                sample.t = ts;
                if drops_name(op) || return_bool {
                    drop_name(&mut sample.labels);
                }
                out.push(sample);
            }
        }
        if drops_name(op) || return_bool {
            check_unique(&out)?;
        }
        Ok(Value::Vector(out))
    }

    fn vector_vector(
        &self,
        op: &str,
        lhs: Vec<Sample>,
        rhs: Vec<Sample>,
        m: &Matching,
        ts: i64,
    ) -> Result<Value, EvalError> {
        let one_to_many = matches!(m.card, VectorMatchCardinality::OneToMany(_));
        let one_to_one = matches!(m.card, VectorMatchCardinality::OneToOne);
        let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
        let mut one_side: HashMap<Vec<(String, String)>, &Sample> =
            HashMap::with_capacity(one.len());
        for s in &one {
            let sig = signature(&s.labels, m.on, &m.labels);
            if one_side.insert(sig, s).is_some() {
                let side = if one_to_many { "left" } else { "right" };
                return Err(EvalError::Invalid(format!(
                    "found duplicate series for the match group on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
                )));
            }
        }
        let mut matched: HashMap<Vec<(String, String)>, std::collections::HashSet<Labels>> =
            HashMap::new();
        let mut out = Vec::new();
        for ls in &many {
            let sig = signature(&ls.labels, m.on, &m.labels);
            let Some(rs) = one_side.get(&sig) else {
                continue;
            };
            let (vl, vr) = if one_to_many {
                (rs.v, ls.v)
            } else {
                (ls.v, rs.v)
            };
            let (mut value, keep) = binop(op, vl, vr);
            if m.return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let mut labels = ls.labels.clone();
            if drops_name(op) {
                drop_name(&mut labels);
            }
            if one_to_one {
                if m.on {
                    labels.retain(|(k, _)| m.labels.iter().any(|n| n == k));
                } else {
                    labels.retain(|(k, _)| !m.labels.iter().any(|n| n == k));
                }
            }
            for name in &m.include {
                let v = label(&rs.labels, name).to_string();
                set_label(&mut labels, name, &v);
            }
            if m.return_bool {
                drop_name(&mut labels);
            }
            let seen = matched.entry(sig).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(EvalError::Invalid(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                seen.insert(Vec::new());
            } else if !seen.insert(labels.clone()) {
                return Err(EvalError::Invalid(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            out.push(Sample {
                labels,
                t: ts,
                v: value,
            });
        }
        Ok(Value::Vector(out))
    }
}

/// The store matchers of a parsed selector, its metric name included.
pub fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, EvalError> {
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::Equal(METRIC_NAME.into(), name.clone()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(EvalError::Invalid(
            "`or` inside a selector is not supported".into(),
        ));
    }
    for m in &vs.matchers.matchers {
        out.push(match &m.op {
            MatchOp::Equal => Matcher::Equal(m.name.clone(), m.value.clone()),
            MatchOp::NotEqual => Matcher::NotEqual(m.name.clone(), m.value.clone()),
            MatchOp::Re(re) => Matcher::Regex(m.name.clone(), re.clone()),
            MatchOp::NotRe(re) => Matcher::NotRegex(m.name.clone(), re.clone()),
        });
    }
    Ok(out)
}

fn set_operation(op: &str, lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    let sig = |s: &Sample| signature(&s.labels, m.on, &m.labels);
    match op {
        "and" => {
            let right: std::collections::HashSet<_> = rhs.iter().map(sig).collect();
            lhs.into_iter()
                .filter(|s| right.contains(&sig(s)))
                .collect()
        }
        "unless" => {
            let right: std::collections::HashSet<_> = rhs.iter().map(sig).collect();
            lhs.into_iter()
                .filter(|s| !right.contains(&sig(s)))
                .collect()
        }
        _ => {
            let left: std::collections::HashSet<_> = lhs.iter().map(sig).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|s| !left.contains(&sig(s))));
            out
        }
    }
}
