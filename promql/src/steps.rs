//! Range queries evaluated series by series, over all steps at once.
//!
//! Evaluating the whole expression at each step of a range query selects
//! and copies every series' window again at every step: a 24-hour panel at a
//! 15 s step has 5,761 steps, and over 100 hosts (1,600 series) that took
//! 110 s. For the shapes dashboards use most, this module evaluates each
//! node over every step at once, as Prometheus's engine does:
//!
//! - an instant selector or a range function over a range selector reads
//!   each series once and slides its window along the steps;
//! - `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar`
//!   work out each series' group once and add its points into per-step
//!   cells;
//! - an operator between such a node and a number maps the points.
//!
//! Series stream from the store one at a time ([`Queryable::select_each`]),
//! so an aggregation holds its cells, not every sample it reads. Any other
//! node, or a result the per-step evaluator would judge differently (two
//! series left with the same labels), makes the query go through the
//! per-step evaluator instead ([`Outcome::PerStep`]); both give the same
//! values (the tests compare them).
//!
//! [`Queryable::select_each`]: crate::Queryable::select_each

use std::collections::{BTreeMap, HashMap, HashSet};

use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};

use crate::aggregate::{Acc, Simple, group_labels};
use crate::eval::{
    Evaluator, binop, drop_name, drops_name, is_comparison, millis, offset_ms, selector_matchers,
};
use crate::functions::{Window, window_fn};
use crate::{EvalError, Labels, RangeSeries};
use vigil_store::chunk::is_stale_marker;

/// The steps of a range query: `start + i * step` for `i < count`.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    /// First step, milliseconds.
    pub start: i64,
    /// Milliseconds between steps (more than 0).
    pub step: i64,
    /// How many steps.
    pub count: usize,
}

impl Steps {
    fn at(&self, i: usize) -> i64 {
        self.start.saturating_add(
            self.step
                .saturating_mul(i64::try_from(i).unwrap_or(i64::MAX)),
        )
    }

    fn last(&self) -> i64 {
        self.at(self.count.saturating_sub(1))
    }
}

/// One series over the steps: `(step index, value)` in step order.
struct StepSeries {
    labels: Labels,
    points: Vec<(u32, f64)>,
}

/// Why a series-by-series evaluation stopped.
#[derive(Debug)]
pub enum Outcome {
    /// The query fails, as it would step by step.
    Eval(EvalError),
    /// The query must be evaluated step by step to be judged as Prometheus
    /// judges it.
    PerStep,
}

impl From<EvalError> for Outcome {
    fn from(e: EvalError) -> Self {
        Self::Eval(e)
    }
}

type Sink<'s> = &'s mut dyn FnMut(StepSeries) -> Result<(), Outcome>;

fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

fn matrix_of(expr: &Expr) -> Option<&MatrixSelector> {
    match unparen(expr) {
        Expr::MatrixSelector(ms) => Some(ms),
        _ => None,
    }
}

fn selector_ok(vs: &VectorSelector) -> bool {
    vs.at.is_none() && vs.matchers.or_matchers.is_empty()
}

/// The number and the vector side of `vector op number` or
/// `number op vector`, and whether the number is on the left.
fn number_side(b: &promql_parser::parser::BinaryExpr) -> Option<(f64, &Expr, bool)> {
    match (unparen(&b.lhs), unparen(&b.rhs)) {
        (Expr::NumberLiteral(_), Expr::NumberLiteral(_)) => None,
        (vector, Expr::NumberLiteral(n)) => Some((n.val, vector, false)),
        (Expr::NumberLiteral(n), vector) => Some((n.val, vector, true)),
        _ => None,
    }
}

fn aggregation(a: &promql_parser::parser::AggregateExpr) -> Option<Simple> {
    if a.param.is_some() {
        return None;
    }
    Simple::parse(&a.op.to_string().to_lowercase())
}

/// Whether [`range`] evaluates `expr` itself.
pub fn supported(expr: &Expr) -> bool {
    match unparen(expr) {
        Expr::VectorSelector(vs) => selector_ok(vs),
        Expr::Call(c) => {
            window_fn(c.func.name).is_some()
                && c.args.args.len() == 1
                && matrix_of(&c.args.args[0]).is_some_and(|ms| selector_ok(&ms.vs))
        }
        Expr::Aggregate(a) => aggregation(a).is_some() && supported(&a.expr),
        Expr::Binary(b) => {
            let op = b.op.to_string();
            (drops_name(&op) || is_comparison(&op))
                && number_side(b).is_some_and(|(_, vector, _)| supported(vector))
        }
        _ => false,
    }
}

/// Evaluates `expr` (for which [`supported`] holds) over every step.
pub fn range(ev: &Evaluator<'_>, expr: &Expr, steps: Steps) -> Result<Vec<RangeSeries>, Outcome> {
    let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    run(ev, expr, steps, &mut |s: StepSeries| {
        let points = s.points.iter().map(|&(i, v)| (steps.at(i as usize), v));
        // Two series with the same labels: judged step by step.
        match out.insert(s.labels, points.collect()) {
            Some(_) => Err(Outcome::PerStep),
            None => Ok(()),
        }
    })?;
    Ok(out
        .into_iter()
        .map(|(labels, points)| RangeSeries { labels, points })
        .collect())
}

/// Passes on series whose labels have not been seen; a repeat means the
/// per-step evaluator must judge the query (it fails only where both
/// series have a value at the same step).
struct Unique(HashSet<Labels>);

impl Unique {
    fn check(&mut self, labels: &Labels) -> Result<(), Outcome> {
        if self.0.insert(labels.clone()) {
            Ok(())
        } else {
            Err(Outcome::PerStep)
        }
    }
}

fn run(ev: &Evaluator<'_>, expr: &Expr, steps: Steps, sink: Sink<'_>) -> Result<(), Outcome> {
    match unparen(expr) {
        Expr::VectorSelector(vs) => instant_selector(ev, vs, steps, sink),
        Expr::Call(c) => {
            let (Some((f, keep_name)), Some(ms)) = (
                window_fn(c.func.name),
                c.args.args.first().and_then(|a| matrix_of(a)),
            ) else {
                return Err(Outcome::PerStep);
            };
            range_function(ev, ms, f, keep_name, steps, sink)
        }
        Expr::Aggregate(a) => {
            let Some(op) = aggregation(a) else {
                return Err(Outcome::PerStep);
            };
            let mut index: HashMap<Labels, usize> = HashMap::new();
            let mut groups: Vec<(Labels, Vec<Acc>)> = Vec::new();
            run(ev, &a.expr, steps, &mut |s: StepSeries| {
                let key = group_labels(&s.labels, &a.modifier);
                let g = match index.get(&key) {
                    Some(g) => *g,
                    None => {
                        // A group's cells count like samples held.
                        ev.charge(steps.count)?;
                        index.insert(key.clone(), groups.len());
                        groups.push((key, vec![Acc::default(); steps.count]));
                        groups.len() - 1
                    }
                };
                let cells = &mut groups[g].1;
                for (i, v) in s.points {
                    if let Some(cell) = cells.get_mut(i as usize) {
                        cell.add(op, v);
                    }
                }
                Ok(())
            })?;
            for (mut labels, cells) in groups {
                drop_name(&mut labels);
                let points = cells
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.count > 0.0)
                    .map(|(i, c)| (i as u32, c.result(op)))
                    .collect();
                sink(StepSeries { labels, points })?;
            }
            Ok(())
        }
        Expr::Binary(b) => {
            let Some((n, vector, swap)) = number_side(b) else {
                return Err(Outcome::PerStep);
            };
            let op = b.op.to_string();
            let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
            let comparison = is_comparison(&op);
            let drop = drops_name(&op) || return_bool;
            let mut unique = Unique(HashSet::new());
            run(ev, vector, steps, &mut |mut s: StepSeries| {
                s.points.retain_mut(|(_, v)| {
                    let (l, r) = if swap { (n, *v) } else { (*v, n) };
                    let (mut value, keep) = binop(&op, l, r);
                    if comparison && swap {
                        value = r;
                    }
                    if return_bool {
                        *v = if keep { 1.0 } else { 0.0 };
                        return true;
                    }
                    *v = value;
                    keep
                });
                if s.points.is_empty() {
                    return Ok(());
                }
                if drop {
                    drop_name(&mut s.labels);
                    unique.check(&s.labels)?;
                }
                sink(s)
            })
        }
        _ => Err(Outcome::PerStep),
    }
}

/// `vs` at every step: each series' latest sample within the lookback,
/// none where that sample is a stale marker.
fn instant_selector(
    ev: &Evaluator<'_>,
    vs: &VectorSelector,
    steps: Steps,
    sink: Sink<'_>,
) -> Result<(), Outcome> {
    let offset = offset_ms(&vs.offset);
    let lookback = millis(ev.limits.lookback);
    let first = steps.start.saturating_sub(offset);
    let last = steps.last().saturating_sub(offset);
    walk(
        ev,
        vs,
        first.saturating_sub(lookback),
        last,
        &mut |series| {
            ev.check_deadline()?;
            ev.charge(series.samples.len())?;
            let samples = &series.samples;
            let mut points = Vec::new();
            let mut next = 0;
            for i in 0..steps.count {
                let t = steps.at(i).saturating_sub(offset);
                while next < samples.len() && samples[next].0 <= t {
                    next += 1;
                }
                if let Some(&(st, v)) = next.checked_sub(1).and_then(|j| samples.get(j))
                    && st >= t.saturating_sub(lookback)
                    && !is_stale_marker(v)
                {
                    points.push((i as u32, v));
                }
            }
            if !points.is_empty() {
                sink(StepSeries {
                    labels: series.labels,
                    points,
                })?;
            }
            Ok(())
        },
    )
}

/// `f(ms)` at every step, sliding each series' window along the steps.
fn range_function(
    ev: &Evaluator<'_>,
    ms: &MatrixSelector,
    f: crate::functions::WindowFn,
    keep_name: bool,
    steps: Steps,
    sink: Sink<'_>,
) -> Result<(), Outcome> {
    let vs = &ms.vs;
    let range = millis(ms.range);
    let offset = offset_ms(&vs.offset);
    let first = steps.start.saturating_sub(offset);
    let last = steps.last().saturating_sub(offset);
    let mut unique = Unique(HashSet::new());
    walk(ev, vs, first.saturating_sub(range), last, &mut |series| {
        ev.check_deadline()?;
        ev.charge(series.samples.len())?;
        let samples: Vec<(i64, f64)> = series
            .samples
            .into_iter()
            .filter(|(_, v)| !is_stale_marker(*v))
            .collect();
        let mut points = Vec::new();
        let (mut lo, mut hi) = (0, 0);
        for i in 0..steps.count {
            let end = steps.at(i).saturating_sub(offset);
            let start = end.saturating_sub(range);
            while lo < samples.len() && samples[lo].0 < start {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < samples.len() && samples[hi].0 <= end {
                hi += 1;
            }
            if lo < hi
                && let Some(v) = f(&samples[lo..hi], Window { start, end, range })
            {
                points.push((i as u32, v));
            }
        }
        if points.is_empty() {
            return Ok(());
        }
        let mut labels = series.labels;
        if !keep_name {
            drop_name(&mut labels);
        }
        unique.check(&labels)?;
        sink(StepSeries { labels, points })
    })
}

/// Walks the selected series one at a time. [`Queryable::select_each`]
/// carries [`EvalError`]s only, so an [`Outcome::PerStep`] from `each`
/// stops the walk and is given back here.
///
/// [`Queryable::select_each`]: crate::Queryable::select_each
fn walk(
    ev: &Evaluator<'_>,
    vs: &VectorSelector,
    mint: i64,
    maxt: i64,
    each: &mut dyn FnMut(vigil_store::history::SeriesSamples) -> Result<(), Outcome>,
) -> Result<(), Outcome> {
    let matchers = selector_matchers(vs)?;
    let mut per_step = false;
    let walked = ev
        .store
        .select_each(&matchers, mint, maxt, &mut |series| match each(series) {
            Ok(()) => Ok(()),
            Err(Outcome::Eval(e)) => Err(e),
            Err(Outcome::PerStep) => {
                per_step = true;
                Err(EvalError::Invalid("evaluated step by step".into()))
            }
        });
    if per_step {
        return Err(Outcome::PerStep);
    }
    walked.map_err(Outcome::Eval)
}
