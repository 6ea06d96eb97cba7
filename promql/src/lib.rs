//! PromQL over the store, with Prometheus 2.42's semantics. Parsing is the
//! `promql-parser` crate's; this module evaluates the parsed expression.
//!
//! - [`eval`]: the evaluator (selectors with lookback and staleness, offset
//!   and `@`, subqueries, operators with vector matching).
//! - [`aggregate`]: `sum`, `avg`, `topk`, … with `by` / `without`.
//! - [`functions`]: the function library.
//! - [`testfile`]: Prometheus's `.test` format, to run its conformance tests.
//! - [`shape`]: size and nesting limits, checked before parsing.
//! - [`steps`]: range queries evaluated series by series over all steps.
//!
//! Evaluation never panics on any input: errors are values ([`EvalError`]),
//! and the samples a query may load are limited ([`Limits`]).
//!
//! The engine reads samples only through [`Queryable`], so it runs over the
//! collector's store, a unit test's history or another store alike; it must
//! never know rules, alerts or notifications.

pub mod aggregate;
pub mod eval;
pub mod functions;
pub mod gomath;
pub mod shape;
pub mod steps;
pub mod testfile;

use std::time::Duration;

use thiserror::Error;

use vigil_store::history::{Matcher, SeriesSamples};

/// A label set: sorted by name, `__name__` included when present.
pub type Labels = Vec<(String, String)>;

/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels.
    pub labels: Labels,
    /// Milliseconds: the sample's own time for a selector, else the evaluation time.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One series of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// Labels.
    pub labels: Labels,
    /// `(milliseconds, value)` in time order.
    pub points: Vec<(i64, f64)>,
}

/// What an expression evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector.
    Matrix(Vec<RangeSeries>),
}

/// Why a query failed.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum EvalError {
    /// The expression does not parse.
    #[error("parse error: {0}")]
    Parse(String),
    /// The expression is valid but cannot be evaluated as written.
    #[error("{0}")]
    Invalid(String),
    /// More samples than [`Limits::max_samples`] would be loaded.
    #[error("query would load more than {0} samples (limit max_samples)")]
    TooManySamples(usize),
    /// The evaluation took longer than [`Limits::timeout`].
    #[error("query took longer than {0:?} (limit timeout)")]
    Timeout(Duration),
}

/// Limits on one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most samples loaded from the store in one query.
    pub max_samples: usize,
    /// Longest evaluation.
    pub timeout: Duration,
    /// How far back an instant selector looks for a sample.
    pub lookback: Duration,
    /// Step of subqueries written without one (`x[5m:]`).
    pub default_subquery_step: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            lookback: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
        }
    }
}

/// Where a query reads samples from.
pub trait Queryable {
    /// Samples of the series the matchers select with `mint <= t <= maxt`.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples>;

    /// The same series as [`Queryable::select`], given to `each` one at a
    /// time, so that a range query over many series never holds all their
    /// samples at once. Stops at `each`'s first error.
    fn select_each(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        each: &mut dyn FnMut(SeriesSamples) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        for s in self.select(matchers, mint, maxt) {
            each(s)?;
        }
        Ok(())
    }
}

/// The store and a bare history answer alike: both have `select`,
/// `select_ids` and `series_samples` of their own.
macro_rules! queryable {
    ($store:ty) => {
        impl Queryable for $store {
            fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
                <$store>::select(self, matchers, mint, maxt)
            }

            fn select_each(
                &self,
                matchers: &[Matcher],
                mint: i64,
                maxt: i64,
                each: &mut dyn FnMut(SeriesSamples) -> Result<(), EvalError>,
            ) -> Result<(), EvalError> {
                for id in self.select_ids(matchers) {
                    if let Some(s) = self.series_samples(id, mint, maxt) {
                        each(s)?;
                    }
                }
                Ok(())
            }
        }
    };
}

queryable!(vigil_store::Store);
queryable!(vigil_store::history::History);

/// Parses a PromQL expression. `holt_winters`, Prometheus 2's name, is
/// accepted as well as `double_exponential_smoothing`, Prometheus 3's. An
/// expression longer or deeper than [`shape`]'s limits is refused before
/// it is parsed.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, EvalError> {
    shape::check(query).map_err(|e| EvalError::Parse(e.to_string()))?;
    let query = query.replace("holt_winters(", "double_exponential_smoothing(");
    promql_parser::parser::parse(&query).map_err(EvalError::Parse)
}

/// Most samples a range query keeps from its first reads (16 bytes each).
pub const RANGE_CACHE_SAMPLES: usize = 4_000_000;

/// What a range query read of one selector: the time span read and the
/// series, or `None` when it was too large to keep.
type Cached = Option<(i64, i64, Vec<SeriesSamples>)>;

/// A range query evaluates its expression at every step, and each step
/// selects the same series over a window shifted by one step. Reading and
/// decoding the chunks again at every step made a 24-hour panel at a 15 s
/// step (5,761 steps) twenty times slower than Prometheus, which reads each
/// series once. This reads each selector once, over every step's window
/// (its first window widened by the query's span), and serves the steps
/// from memory by binary search; at most [`RANGE_CACHE_SAMPLES`] samples
/// are kept, and selections beyond that (or outside the span read, as a
/// subquery's may be) go to the store as before.
struct RangeCache<'a> {
    inner: &'a dyn Queryable,
    span: i64,
    budget: usize,
    kept: std::cell::Cell<usize>,
    cache: std::cell::RefCell<std::collections::HashMap<String, Cached>>,
}

impl Queryable for RangeCache<'_> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        let key = format!("{matchers:?}");
        let mut cache = self.cache.borrow_mut();
        let entry = cache.entry(key).or_insert_with(|| {
            let hi = maxt.saturating_add(self.span);
            let all = self.inner.select(matchers, mint, hi);
            let n: usize = all.iter().map(|s| s.samples.len()).sum();
            let kept = self.kept.get().saturating_add(n);
            (kept <= self.budget).then(|| {
                self.kept.set(kept);
                (mint, hi, all)
            })
        });
        match entry {
            Some((lo, hi, all)) if mint >= *lo && maxt <= *hi => all
                .iter()
                .filter_map(|s| {
                    let from = s.samples.partition_point(|(t, _)| *t < mint);
                    let to = s.samples.partition_point(|(t, _)| *t <= maxt);
                    (from < to).then(|| SeriesSamples {
                        labels: s.labels.clone(),
                        samples: s.samples[from..to].to_vec(),
                    })
                })
                .collect(),
            _ => {
                drop(cache);
                self.inner.select(matchers, mint, maxt)
            }
        }
    }
}

/// Most steps a range query may have (as Prometheus).
pub const MAX_STEPS: i64 = 11_000;

/// Evaluates `query` at every `step` from `start` to `end` (milliseconds),
/// giving one series per label set.
pub fn range_query(
    store: &dyn Queryable,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
    limits: Limits,
) -> Result<Vec<RangeSeries>, EvalError> {
    range_query_with(store, query, (start, end, step), limits, true)
}

/// [`range_query`], series by series ([`steps`]) where the expression
/// allows and `by_series` is set, else step by step.
fn range_query_with(
    store: &dyn Queryable,
    query: &str,
    (start, end, step): (i64, i64, i64),
    limits: Limits,
    by_series: bool,
) -> Result<Vec<RangeSeries>, EvalError> {
    if step <= 0 {
        return Err(EvalError::Invalid("step must be more than 0".into()));
    }
    if end < start {
        return Err(EvalError::Invalid("end is before start".into()));
    }
    let span = end
        .checked_sub(start)
        .ok_or_else(|| EvalError::Invalid("start and end are too far apart".into()))?;
    if span / step >= MAX_STEPS {
        return Err(EvalError::Invalid(format!(
            "exceeded maximum resolution of {MAX_STEPS} points per timeseries; try a larger step"
        )));
    }
    let expr = parse(query)?;
    if by_series && steps::supported(&expr) {
        let count = usize::try_from(span / step).unwrap_or(0).saturating_add(1);
        let ev = eval::Evaluator::new(store, start, end, limits);
        match steps::range(&ev, &expr, steps::Steps { start, step, count }) {
            Ok(series) => return Ok(series),
            Err(steps::Outcome::Eval(e)) => return Err(e),
            Err(steps::Outcome::PerStep) => {}
        }
    }
    let cache = RangeCache {
        inner: store,
        span,
        budget: RANGE_CACHE_SAMPLES.min(limits.max_samples),
        kept: std::cell::Cell::new(0),
        cache: std::cell::RefCell::new(std::collections::HashMap::new()),
    };
    let ev = eval::Evaluator::new(&cache, start, end, limits);
    let mut series: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> =
        std::collections::BTreeMap::new();
    let mut t = start;
    while t <= end {
        match ev.eval(&expr, t)? {
            Value::Scalar(v) => series.entry(Vec::new()).or_default().push((t, v)),
            Value::Vector(v) => {
                for s in v {
                    series.entry(s.labels).or_default().push((t, s.v));
                }
            }
            _ => {
                return Err(EvalError::Invalid(
                    "a range query needs an expression that gives a number or an instant vector"
                        .into(),
                ));
            }
        }
        let Some(next) = t.checked_add(step) else {
            break;
        };
        t = next;
    }
    Ok(series
        .into_iter()
        .map(|(labels, points)| RangeSeries { labels, points })
        .collect())
}

/// Evaluates `query` at `t` (milliseconds since the Unix epoch).
pub fn instant_query(
    store: &dyn Queryable,
    query: &str,
    t: i64,
    limits: Limits,
) -> Result<Value, EvalError> {
    let expr = parse(query)?;
    eval::Evaluator::new(store, t, t, limits).eval(&expr, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_store::history::History;

    fn history() -> Result<History, vigil_store::chunk::AppendError> {
        let mut h = History::new();
        for i in 0..10 {
            let id = h.series_id(&[
                ("__name__".to_string(), "x".to_string()),
                ("i".to_string(), i.to_string()),
            ]);
            for t in 0..100 {
                h.append(id, t * 1000, t as f64)?;
            }
        }
        Ok(h)
    }

    #[test]
    fn sample_limit_stops_a_query_with_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        let limits = Limits {
            max_samples: 500,
            ..Limits::default()
        };
        let err = instant_query(&h, "sum(rate(x[100s]))", 99_000, limits).err();
        assert_eq!(
            err.as_ref().map(ToString::to_string),
            Some("query would load more than 500 samples (limit max_samples)".to_string())
        );
        assert!(instant_query(&h, "sum(rate(x[10s]))", 99_000, limits).is_ok());
        Ok(())
    }

    #[test]
    fn subquery_points_count_against_the_sample_limit() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        let limits = Limits {
            max_samples: 10_000,
            ..Limits::default()
        };
        // A year at one point a millisecond: refused after 10,000 points,
        // long before it is built.
        let err = instant_query(&h, "count_over_time(vector(1)[1y:1ms])", 99_000, limits).err();
        assert_eq!(err, Some(EvalError::TooManySamples(10_000)));
        let ok = instant_query(&h, "count_over_time(vector(1)[5s:1s])", 99_000, limits)?;
        assert!(matches!(ok, Value::Vector(v) if v.len() == 1 && v[0].v == 6.0));
        Ok(())
    }

    #[test]
    fn huge_ranges_offsets_and_times_never_overflow() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        for q in [
            "x[1000000000y]",
            "rate(x[1000000000y])",
            "x offset 1000000000y",
            "x offset -1000000000y",
            "max_over_time(x[1000000000y:1000000000y])",
            "x @ 100000000000",
        ] {
            // An answer or an error; never a panic.
            let _ = instant_query(&h, q, 99_000, Limits::default());
        }
        assert!(range_query(&h, "x", i64::MIN, i64::MAX, 1_000, Limits::default()).is_err());
        Ok(())
    }

    #[test]
    fn the_deepest_expression_allowed_evaluates_on_a_small_stack()
    -> Result<(), Box<dyn std::error::Error>> {
        // Half brackets, half operators: the limit, evaluated on a 2 MiB
        // thread (tokio's blocking threads have that much) in a debug build.
        let half = shape::MAX_EXPRESSION_DEPTH / 2;
        let query = format!(
            "{}{}{}",
            "(".repeat(half),
            vec!["x"; half + 1].join(" + "),
            ")".repeat(half)
        );
        assert!(shape::check(&query).is_ok());
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let h = history().map_err(|e| e.to_string())?;
                instant_query(&h, &query, 99_000, Limits::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
        let outcome = handle
            .join()
            .map_err(|_| "the evaluation thread panicked")?;
        assert_eq!(outcome, Ok(()));
        let too_deep = vec!["x"; shape::MAX_EXPRESSION_DEPTH + 2].join(" + ");
        assert!(matches!(
            instant_query(&h_empty(), &too_deep, 0, Limits::default()),
            Err(EvalError::Parse(m)) if m.contains("nests")
        ));
        Ok(())
    }

    fn h_empty() -> History {
        History::new()
    }

    #[test]
    fn timeout_stops_a_query() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        let limits = Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(matches!(
            instant_query(&h, "x", 99_000, limits),
            Err(EvalError::Timeout(_))
        ));
        Ok(())
    }

    /// A history with what the series-by-series path must get right: a
    /// counter reset, a gap longer than the lookback, a stale marker, NaN
    /// and infinite values, two metric names with the same other labels.
    fn awkward_history() -> Result<History, Box<dyn std::error::Error>> {
        let mut h = History::new();
        let stale = f64::from_bits(vigil_store::chunk::STALE_NAN_BITS);
        for (name, i) in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)] {
            let id = h.series_id(&[
                ("__name__".to_string(), name.to_string()),
                ("i".to_string(), i.to_string()),
                (
                    "mode".to_string(),
                    if i == 2 { "x" } else { "y" }.to_string(),
                ),
            ]);
            for k in 0..400i64 {
                let t = k * 7_000 + i * 1_000;
                if (150..200).contains(&k) && i == 1 {
                    continue;
                }
                let v = match (name, i, k) {
                    (_, 0, 300) => stale,
                    (_, 2, 50) => f64::NAN,
                    (_, 2, 60) => f64::INFINITY,
                    (_, _, k) if k > 250 => (k - 250) as f64 * 3.0,
                    (_, i, k) => (k * (i + 1)) as f64 + 0.25,
                };
                h.append(id, t, v)?;
            }
        }
        Ok(h)
    }

    #[test]
    fn series_by_series_gives_what_step_by_step_gives() -> Result<(), Box<dyn std::error::Error>> {
        let h = awkward_history()?;
        let queries = [
            "a",
            "a offset 1m",
            "rate(a[1m])",
            "increase(a[2m] offset 30s)",
            "delta(a[1m])",
            "irate(a[1m])",
            "idelta(a[1m])",
            "deriv(a[2m])",
            "resets(a[5m])",
            "changes(a[5m])",
            "avg_over_time(a[1m])",
            "sum_over_time(a[1m])",
            "count_over_time(a[1m])",
            "min_over_time(a[1m])",
            "max_over_time(a[1m])",
            "stddev_over_time(a[1m])",
            "stdvar_over_time(a[1m])",
            "last_over_time(a[1m])",
            "present_over_time(a[1m])",
            "sum by (mode) (rate(a[1m]))",
            "avg without (i) (a)",
            "min(a)",
            "max by (i) (a)",
            "count(a)",
            "group by (mode) (a)",
            "stddev(a)",
            "stdvar by (mode) (a)",
            "sum(rate({i=\"0\"}[1m]))",
            "rate(a[1m]) * 100",
            "100 - a",
            "a > 100",
            "100 < a",
            "a > bool 100",
            "(sum by (mode) (a)) / 2",
            // Name-dropping leaves a and b with the same labels: the
            // per-step evaluator fails, and so must this.
            "rate({i=\"0\"}[1m])",
            "{i=\"1\"} * 2",
        ];
        for q in queries {
            for (start, end, step) in [(0, 2_800_000, 15_000), (30_000, 1_000_000, 7_000)] {
                let by_series =
                    range_query_with(&h, q, (start, end, step), Limits::default(), true);
                let by_step = range_query_with(&h, q, (start, end, step), Limits::default(), false);
                // NaN == NaN for this comparison.
                let show = |r: &Result<Vec<RangeSeries>, EvalError>| format!("{r:?}");
                assert_eq!(show(&by_series), show(&by_step), "{q} {start} {end} {step}");
            }
        }
        assert!(steps::supported(&parse("sum by (mode) (rate(a[1m]))")?));
        assert!(!steps::supported(&parse("a / on (i) b")?));
        Ok(())
    }

    #[test]
    fn series_by_series_keeps_the_sample_limit() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        let limits = Limits {
            max_samples: 500,
            ..Limits::default()
        };
        assert_eq!(
            range_query(&h, "sum(rate(x[10s]))", 0, 99_000, 1_000, limits).err(),
            Some(EvalError::TooManySamples(500))
        );
        Ok(())
    }

    #[test]
    fn range_queries_evaluate_every_step() -> Result<(), Box<dyn std::error::Error>> {
        let h = history()?;
        let m = range_query(&h, "sum(x)", 0, 60_000, 30_000, Limits::default())?;
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].points,
            vec![(0, 0.0), (30_000, 300.0), (60_000, 600.0)]
        );
        assert!(range_query(&h, "x", 0, 100_000_000, 1, Limits::default()).is_err());
        Ok(())
    }
}
