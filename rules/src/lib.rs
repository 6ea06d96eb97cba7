//! Alerting and recording rules, evaluated as Prometheus 2.42 does.
//!
//! - [`file`]: Prometheus rule files (plus Vigil's `vigil:` keys), checked
//!   when loaded, with file, line, group and rule in every error.
//! - Go templates for labels and annotations come from `vigil-template`.
//! - this module: groups and the alert state machine (inactive → pending →
//!   firing → resolved, `for`, `keep_firing_for`, Vigil's `clear_expr` /
//!   `clear_for`), `ALERTS` / `ALERTS_FOR_STATE`, stale markers for series a
//!   rule stops producing.
//! - [`unittest`]: `promtool test rules`' unit-test format.
//! - [`manager`]: the collector's rule loop, hot reload and alert-state
//!   persistence.
//!
//! Evaluation writes through [`RuleTarget`], so the same code runs over the
//! collector's store and over a unit test's in-memory history.
//!
//! Rules hand alerts out ([`manager::RuleManager::alerts_with_expr`]); they
//! must never know how alerts are routed or delivered: notifications are
//! another crate, which the collector wires to this one.

pub mod file;
pub mod manager;
pub mod unittest;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use file::{GroupDef, RuleDef, RuleKind};
use vigil_promql::{Labels, Limits, METRIC_NAME, Queryable, Value, eval::Evaluator};
use vigil_store::chunk::stale_marker;
use vigil_template::{QuerySample, TemplateData};

/// Label and annotation templates that failed to expand (an error, or a
/// budget of [`vigil_template`] ran out), for
/// `vigil_collector_template_failures_total`.
pub static TEMPLATE_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where rules read from and write their output to.
pub trait RuleTarget: Queryable {
    /// Writes samples produced by a rule (recorded series, `ALERTS`, stale
    /// markers) at their times.
    fn write(&mut self, samples: Vec<(Labels, i64, f64)>);
}

/// What every rule of a collector shares.
#[derive(Debug, Clone, Default)]
pub struct EvalContext {
    /// `$externalLabels`, also added to alerts sent out.
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL`.
    pub external_url: String,
    /// Query limits.
    pub limits: Limits,
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, `for` has not passed yet.
    Pending,
    /// Firing.
    Firing,
    /// Was firing, now resolved (kept a while so notifiers see it).
    Inactive,
}

impl AlertState {
    /// The `alertstate` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Inactive => "inactive",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Labels, `alertname` included, sorted.
    pub labels: Labels,
    /// Expanded annotations, sorted.
    pub annotations: Vec<(String, String)>,
    /// State.
    pub state: AlertState,
    /// When the condition first held (ms).
    pub active_at: i64,
    /// When it started firing (ms).
    pub fired_at: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at: Option<i64>,
    /// When `keep_firing_for` started counting (ms).
    pub keep_firing_since: Option<i64>,
    /// When `vigil.clear_expr` started holding (ms).
    pub clear_since: Option<i64>,
    /// The value of the sample that made it active, at the last evaluation.
    #[serde(with = "float_text")]
    pub value: f64,
    /// The expression's labels, before rule labels were added; the key that
    /// `clear_expr` results are matched on.
    pub source: Labels,
    /// The time of the samples that made it fire (the agent's batch), ms,
    /// when known: where notification latency is counted from.
    #[serde(default)]
    pub fired_sample_ms: Option<i64>,
}

/// Floats as text in saved state, so that NaN and ±Inf survive JSON.
mod float_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Resolved alerts are kept this long so that notifiers get the resolution
/// (Prometheus's `resolvedRetention`).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// A rule and what it remembers between evaluations.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The checked definition.
    pub def: RuleDef,
    /// Active alerts, by labels.
    pub active: BTreeMap<Labels, Alert>,
    /// Series written at the last evaluation (for stale markers).
    previous: HashSet<Labels>,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// How long the last evaluation took, seconds.
    pub last_duration: f64,
}

impl Rule {
    /// Takes over the series an older copy of this rule wrote, so that a
    /// reload still ends them with stale markers.
    pub fn carry_previous(&mut self, old: &Rule) {
        self.previous = old.previous.clone();
    }
}

/// A group of rules evaluated in order at one interval.
#[derive(Debug, Clone)]
pub struct Group {
    /// The checked definition (rules moved into [`Group::rules`]).
    pub name: String,
    /// The file.
    pub file: std::path::PathBuf,
    /// Interval, milliseconds.
    pub interval_ms: i64,
    /// Limit on alerts / series per rule (0: none).
    pub limit: usize,
    /// Rules.
    pub rules: Vec<Rule>,
    /// When the group was last evaluated (ms).
    pub last_eval: Option<i64>,
}

impl Group {
    /// A group from its definition; `default_interval_ms` when it sets none.
    pub fn new(def: GroupDef, default_interval_ms: i64) -> Self {
        Self {
            name: def.name,
            file: def.file,
            interval_ms: def.interval_ms.unwrap_or(default_interval_ms),
            limit: def.limit,
            rules: def
                .rules
                .into_iter()
                .map(|def| Rule {
                    def,
                    active: BTreeMap::new(),
                    previous: HashSet::new(),
                    last_error: None,
                    last_duration: 0.0,
                })
                .collect(),
            last_eval: None,
        }
    }

    /// Evaluates every rule at `ts` (ms), in order, each seeing what the ones
    /// before it wrote. Errors are kept on each rule ([`Rule::last_error`]).
    pub fn eval(&mut self, ts: i64, target: &mut dyn RuleTarget, ctx: &EvalContext) {
        let limit = self.limit;
        for rule in &mut self.rules {
            let started = std::time::Instant::now();
            let result = match &rule.def.kind {
                RuleKind::Record => eval_record(rule, ts, &*target, ctx, limit),
                RuleKind::Alert(_) => eval_alert(rule, ts, &*target, ctx, limit),
            };
            let mut out = match result {
                Ok(out) => {
                    rule.last_error = None;
                    out
                }
                Err(e) => {
                    rule.last_error = Some(e);
                    Vec::new()
                }
            };
            // Series this rule wrote last time and not now end with a stale marker.
            let now: HashSet<Labels> = out.iter().map(|(l, _, _)| l.clone()).collect();
            for gone in rule.previous.difference(&now) {
                out.push((gone.clone(), ts, stale_marker()));
            }
            rule.previous = now;
            target.write(out);
            rule.last_duration = started.elapsed().as_secs_f64();
        }
        self.last_eval = Some(ts);
    }
}

/// Runs `expr` at `ts` and gives an instant vector (a scalar becomes one
/// sample without labels, as Prometheus's rule query does).
fn query_vector(
    expr: &promql_parser::parser::Expr,
    ts: i64,
    target: &dyn Queryable,
    ctx: &EvalContext,
) -> Result<Vec<(Labels, f64)>, String> {
    let value = Evaluator::new(target, ts, ts, ctx.limits)
        .eval(expr, ts)
        .map_err(|e| e.to_string())?;
    match value {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.labels, s.v)).collect()),
        Value::Scalar(v) => Ok(vec![(Vec::new(), v)]),
        Value::String(_) | Value::Matrix(_) => {
            Err("rule result is not a vector or scalar".to_string())
        }
    }
}

fn set_label(labels: &mut Labels, name: &str, value: String) {
    labels.retain(|(k, _)| k != name);
    if !value.is_empty() {
        labels.push((name.to_string(), value));
    }
    labels.sort();
}

fn eval_record(
    rule: &mut Rule,
    ts: i64,
    target: &dyn Queryable,
    ctx: &EvalContext,
    limit: usize,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let vector = query_vector(&rule.def.parsed, ts, target, ctx)?;
    let mut out = Vec::with_capacity(vector.len());
    let mut seen = HashSet::new();
    for (mut labels, v) in vector {
        set_label(&mut labels, METRIC_NAME, rule.def.name.clone());
        for (k, text, _) in &rule.def.labels {
            set_label(&mut labels, k, text.clone());
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push((labels, ts, v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

fn query_fn<'a>(
    ts: i64,
    target: &'a dyn Queryable,
    ctx: &'a EvalContext,
) -> impl Fn(&str) -> Result<Vec<QuerySample>, String> + 'a {
    move |q: &str| {
        let expr = vigil_promql::parse(q).map_err(|e| e.to_string())?;
        Ok(query_vector(&expr, ts, target, ctx)?
            .into_iter()
            .map(|(labels, value)| QuerySample {
                labels: labels.into_iter().collect(),
                value,
            })
            .collect())
    }
}

fn eval_alert(
    rule: &mut Rule,
    ts: i64,
    target: &dyn Queryable,
    ctx: &EvalContext,
    limit: usize,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let RuleKind::Alert(def) = &rule.def.kind else {
        return Ok(Vec::new());
    };
    let vector = query_vector(&rule.def.parsed, ts, target, ctx)?;
    let query = query_fn(ts, target, ctx);
    let expand = |template: &vigil_template::Template, data: &TemplateData| -> String {
        template.render(data, Some(&query)).unwrap_or_else(|e| {
            TEMPLATE_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("<error expanding template: {e}>")
        })
    };
    // Alert labels → (the expression's labels, annotations, value).
    type Found = (Labels, Vec<(String, String)>, f64);
    let mut current: HashMap<Labels, Found> = HashMap::new();
    for (source, v) in vector {
        let data = TemplateData {
            labels: source.iter().cloned().collect(),
            external_labels: ctx.external_labels.clone(),
            external_url: ctx.external_url.clone(),
            value: v,
        };
        let mut labels: Labels = source
            .iter()
            .filter(|(k, _)| k != METRIC_NAME)
            .cloned()
            .collect();
        for (k, _, template) in &rule.def.labels {
            let value = match template {
                Some(t) => expand(t, &data),
                None => String::new(),
            };
            set_label(&mut labels, k, value);
        }
        set_label(&mut labels, "alertname", rule.def.name.clone());
        let annotations: Vec<(String, String)> = def
            .annotations
            .iter()
            .map(|(k, _, t)| (k.clone(), expand(t, &data)))
            .collect();
        let mut key_source = source;
        key_source.retain(|(k, _)| k != METRIC_NAME);
        if current
            .insert(labels.clone(), (key_source, annotations, v))
            .is_some()
        {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
    }

    // Vigil's clear condition: the source label sets it returns.
    let cleared: Option<HashSet<Labels>> = match &def.clear {
        Some(clear) => Some(
            query_vector(&clear.parsed, ts, target, ctx)?
                .into_iter()
                .map(|(mut l, _)| {
                    l.retain(|(k, _)| k != METRIC_NAME);
                    l
                })
                .collect(),
        ),
        None => None,
    };

    for (labels, (source, annotations, v)) in &current {
        match rule.active.get_mut(labels) {
            Some(a) if a.state != AlertState::Inactive => {
                a.value = *v;
                a.annotations = annotations.clone();
                a.keep_firing_since = None;
                a.clear_since = None;
            }
            _ => {
                rule.active.insert(
                    labels.clone(),
                    Alert {
                        labels: labels.clone(),
                        annotations: annotations.clone(),
                        state: AlertState::Pending,
                        active_at: ts,
                        fired_at: None,
                        resolved_at: None,
                        keep_firing_since: None,
                        clear_since: None,
                        value: *v,
                        source: source.clone(),
                        fired_sample_ms: None,
                    },
                );
            }
        }
    }

    let mut remove = Vec::new();
    let mut active_count = 0usize;
    for (labels, a) in rule.active.iter_mut() {
        if !current.contains_key(labels) {
            let mut keep = false;
            if a.state == AlertState::Firing {
                if def.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    if ts - since < def.keep_firing_for_ms {
                        keep = true;
                    }
                }
                if let (Some(clear), Some(cleared)) = (&def.clear, &cleared) {
                    // Hysteresis: a firing alert stays until the clear
                    // condition has held for clear_for. When the series is in
                    // neither result, it is gone, and the alert resolves.
                    if cleared.contains(&a.source) {
                        let since = *a.clear_since.get_or_insert(ts);
                        if ts - since < clear.for_ms {
                            keep = true;
                        }
                    } else if series_present(&a.source, &rule.def.parsed, ts, target, ctx)? {
                        a.clear_since = None;
                        keep = true;
                    }
                }
            }
            if a.state == AlertState::Pending
                || a.resolved_at
                    .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
            {
                remove.push(labels.clone());
            }
            if a.state != AlertState::Inactive && !keep {
                a.state = AlertState::Inactive;
                a.resolved_at = Some(ts);
            }
            if !keep {
                continue;
            }
        }
        active_count += 1;
        if a.state == AlertState::Pending && ts - a.active_at >= def.for_ms {
            a.state = AlertState::Firing;
            a.fired_at = Some(ts);
        }
    }
    for labels in remove {
        rule.active.remove(&labels);
    }
    if limit > 0 && active_count > limit {
        rule.active.clear();
        return Err(format!(
            "exceeded limit of {limit} with {active_count} alerts"
        ));
    }

    let mut out = Vec::new();
    for a in rule.active.values() {
        if a.state == AlertState::Inactive {
            continue;
        }
        let mut alerts = a.labels.clone();
        set_label(&mut alerts, METRIC_NAME, "ALERTS".into());
        let mut for_state = alerts.clone();
        set_label(&mut alerts, "alertstate", a.state.as_str().into());
        out.push((alerts, ts, 1.0));
        set_label(&mut for_state, METRIC_NAME, "ALERTS_FOR_STATE".into());
        out.push((for_state, ts, (a.active_at / 1000) as f64));
    }
    Ok(out)
}

/// True when the rule's expression, without its final comparison, still
/// returns a series with these labels: the alert's data is there, only the
/// condition is off. Used for hysteresis; a bare selector stands for itself.
fn series_present(
    source: &Labels,
    expr: &promql_parser::parser::Expr,
    ts: i64,
    target: &dyn Queryable,
    ctx: &EvalContext,
) -> Result<bool, String> {
    use promql_parser::parser::Expr;
    let operand = match expr {
        Expr::Binary(b) if b.op.is_comparison_operator() => {
            if matches!(*b.lhs, Expr::NumberLiteral(_)) {
                &*b.rhs
            } else {
                &*b.lhs
            }
        }
        Expr::Paren(p) => return series_present(source, &p.expr, ts, target, ctx),
        other => other,
    };
    Ok(query_vector(operand, ts, target, ctx)?
        .into_iter()
        .any(|(mut l, _)| {
            l.retain(|(k, _)| k != METRIC_NAME);
            &l == source
        }))
}

/// Restores alerts saved before a restart into the rules they belong to.
/// Pending alerts keep their `active_at` (so `for` counts the time before the
/// restart), firing ones stay firing.
pub fn restore_alerts(groups: &mut [Group], saved: &[SavedAlert]) -> usize {
    let mut restored = 0;
    for s in saved {
        for g in groups.iter_mut().filter(|g| g.name == s.group) {
            for r in g.rules.iter_mut().filter(|r| r.def.name == s.rule) {
                if matches!(r.def.kind, RuleKind::Alert(_)) {
                    r.active.insert(s.alert.labels.clone(), s.alert.clone());
                    restored += 1;
                }
            }
        }
    }
    restored
}

/// An alert as saved across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAlert {
    /// Group name.
    pub group: String,
    /// Rule (alert) name.
    pub rule: String,
    /// The alert.
    pub alert: Alert,
}

/// Every alert of every group, to save.
pub fn saved_alerts(groups: &[Group]) -> Vec<SavedAlert> {
    let mut out = Vec::new();
    for g in groups {
        for r in &g.rules {
            for a in r.active.values() {
                out.push(SavedAlert {
                    group: g.name.clone(),
                    rule: r.def.name.clone(),
                    alert: a.clone(),
                });
            }
        }
    }
    out
}

/// The value of label `name`, if the labels have it.
pub fn label_value<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
