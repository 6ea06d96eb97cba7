//! The collector's rule loop: loads the rule files named in `[rules]`, adds
//! the built-in groups (host down, heartbeat), evaluates each group at its
//! interval on its own thread, writes what rules produce into the store,
//! keeps alert states in `DATA_DIR/alerts.json` so that a restart resumes
//! them, and reloads the files on SIGHUP or `POST /-/reload`: a bad file is
//! refused with its error and the rules already running keep running.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::file::{GroupDef, expand_globs, load_rule_file_limited, parse_rule_file};
use super::{AlertState, EvalContext, Group, RuleTarget, SavedAlert, restore_alerts, saved_alerts};
use vigil_promql::{Labels, Queryable};
use vigil_shared::exposition::ExpositionWriter;
use vigil_shared::exposition::MetricKind;
use vigil_store::chunk::stale_marker;
use vigil_store::history::{Matcher, SeriesSamples};
use vigil_store::{Store, now_ms};

/// The validated `[rules]` section.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// Rule file globs, as written.
    pub files: Vec<String>,
    /// Folder that relative globs start from.
    pub base_dir: PathBuf,
    /// Default group interval.
    pub evaluation_interval: Duration,
    /// `$externalURL`.
    pub external_url: String,
    /// `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// Built-in host-down alert on.
    pub host_down: bool,
    /// Flush intervals before a host is down.
    pub host_down_after: u32,
    /// Heartbeat alert on.
    pub heartbeat: bool,
    /// Evaluate when a batch arrives.
    pub evaluate_on_push: bool,
    /// Least time between push-started evaluations.
    pub min_evaluation_gap: Duration,
    /// Largest rule file read, in bytes.
    pub max_file_bytes: u64,
    /// Most rules loaded, over every file.
    pub max_rules: usize,
}

/// Name of the built-in host-down group.
pub const HOST_DOWN_GROUP: &str = "vigil-host-down";
/// Name of the built-in heartbeat group.
pub const HEARTBEAT_GROUP: &str = "vigil-heartbeat";
/// The series the collector writes for every registered agent: its last
/// push time, seconds.
pub const LAST_PUSH_SERIES: &str = "vigil_agent_last_push_timestamp_seconds";
/// The series the collector writes for every registered agent: its flush
/// interval, seconds.
pub const FLUSH_INTERVAL_SERIES: &str = "vigil_agent_flush_interval_seconds";

const STATE_FILE: &str = "alerts.json";

/// The built-in rules, as a rule file, so that they pass the same checks as
/// a user's.
fn builtin_rules(config: &RulesConfig) -> String {
    if !config.host_down && !config.heartbeat {
        return "groups: []\n".into();
    }
    let mut text = String::from("groups:\n");
    if config.host_down {
        let n = config.host_down_after;
        text.push_str(&format!(
            r#"  - name: {HOST_DOWN_GROUP}
    rules:
      - alert: HostDown
        expr: {LAST_PUSH_SERIES} < time() - {n} * {FLUSH_INTERVAL_SERIES}
        labels:
          severity: critical
        annotations:
          summary: "Host {{{{ $labels.instance }}}} is down"
          description: "The Vigil agent on {{{{ $labels.instance }}}} has not pushed for {n} flush intervals; last seen {{{{ $value | humanizeTimestamp }}}}."
          last_seen: "{{{{ $value | humanizeTimestamp }}}}"
"#
        ));
    }
    if config.heartbeat {
        text.push_str(&format!(
            r#"  - name: {HEARTBEAT_GROUP}
    rules:
      - alert: VigilHeartbeat
        expr: vector(1)
        labels:
          severity: none
        annotations:
          summary: "The Vigil collector is evaluating rules. This alert always fires; alert when it stops arriving."
"#
        ));
    }
    text
}

/// Counters of the rule loop.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    evaluations: AtomicU64,
    failures: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    last_reload_ok: AtomicBool,
    state_write_failures: AtomicU64,
    samples_skipped: AtomicU64,
}

struct State {
    groups: Vec<Group>,
    files: Vec<PathBuf>,
    saved: Vec<SavedAlert>,
    /// Agents whose liveness series were written at the last round.
    live_agents: HashSet<String>,
}

/// What readers see of the rules: published at the end of every evaluation
/// round and reload, so that `/metrics`, the alerts API and notifications
/// read it at once and never wait for an evaluation in progress (a rule
/// whose query or template is slow holds the state lock, not them).
#[derive(Debug, Default)]
struct Published {
    /// (group, rule expression, alert) of every active alert.
    alerts: Vec<(String, String, super::Alert)>,
    groups: usize,
    rules: usize,
    /// Every group and rule with its health, for `/api/v1/rules`.
    status: Vec<GroupStatus>,
}

/// A group as `/api/v1/rules` shows it.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    /// Name.
    pub name: String,
    /// The file it came from (empty for built-in groups).
    pub file: String,
    /// Interval, milliseconds.
    pub interval_ms: i64,
    /// Limit on alerts or series per rule (0: none).
    pub limit: usize,
    /// When it was last evaluated, ms.
    pub last_eval: Option<i64>,
    /// How long its last evaluation took, seconds.
    pub eval_seconds: f64,
    /// Its rules, in order.
    pub rules: Vec<RuleStatus>,
}

/// A rule as `/api/v1/rules` shows it.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    /// Alert or record name.
    pub name: String,
    /// True for alerting rules.
    pub alerting: bool,
    /// The expression as written.
    pub query: String,
    /// `for` and `keep_firing_for`, milliseconds (alerting rules).
    pub for_ms: i64,
    /// `keep_firing_for`, milliseconds.
    pub keep_firing_for_ms: i64,
    /// Labels as written.
    pub labels: Vec<(String, String)>,
    /// Annotations as written.
    pub annotations: Vec<(String, String)>,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// How long the last evaluation took, seconds.
    pub eval_seconds: f64,
    /// Active alerts (alerting rules).
    pub alerts: Vec<super::Alert>,
}

fn group_status(g: &Group) -> GroupStatus {
    GroupStatus {
        name: g.name.clone(),
        file: g.file.display().to_string(),
        interval_ms: g.interval_ms,
        limit: g.limit,
        last_eval: g.last_eval,
        eval_seconds: g.rules.iter().map(|r| r.last_duration).sum(),
        rules: g
            .rules
            .iter()
            .map(|r| {
                let (for_ms, keep_firing_for_ms, annotations) = match &r.def.kind {
                    super::file::RuleKind::Alert(a) => (
                        a.for_ms,
                        a.keep_firing_for_ms,
                        a.annotations
                            .iter()
                            .map(|(k, v, _)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    super::file::RuleKind::Record => (0, 0, Vec::new()),
                };
                RuleStatus {
                    name: r.def.name.clone(),
                    alerting: matches!(r.def.kind, super::file::RuleKind::Alert(_)),
                    query: r.def.expr.clone(),
                    for_ms,
                    keep_firing_for_ms,
                    labels: r
                        .def
                        .labels
                        .iter()
                        .map(|(k, v, _)| (k.clone(), v.clone()))
                        .collect(),
                    annotations,
                    last_error: r.last_error.clone(),
                    eval_seconds: r.last_duration,
                    alerts: r.active.values().cloned().collect(),
                }
            })
            .collect(),
    }
}

/// Rules running in a collector.
pub struct RuleManager {
    config: RulesConfig,
    store: Arc<Store>,
    state_path: PathBuf,
    state: Mutex<State>,
    published: Mutex<Arc<Published>>,
    ctx: EvalContext,
    /// Counters.
    pub metrics: RuleMetrics,
    /// Signalled after every evaluation round (notifications wait on it).
    pub evaluated: Arc<tokio::sync::Notify>,
}

/// The store as a rule target.
struct StoreTarget<'a> {
    store: &'a Store,
    skipped: u64,
}

impl Queryable for StoreTarget<'_> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesSamples> {
        self.store.select(matchers, mint, maxt)
    }
}

impl RuleTarget for StoreTarget<'_> {
    fn write(&mut self, samples: Vec<(Labels, i64, f64)>) {
        if !samples.is_empty() {
            self.skipped += self.store.write_rule_samples(samples);
        }
    }
}

/// Loads the configured rule files and the built-in groups.
fn load_groups(config: &RulesConfig) -> Result<(Vec<GroupDef>, Vec<PathBuf>), Vec<String>> {
    let files = expand_globs(&config.files, &config.base_dir).map_err(|e| vec![e])?;
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    for f in &files {
        match load_rule_file_limited(f, config.max_file_bytes) {
            Ok(groups) => {
                for g in groups {
                    if !names.insert(g.name.clone()) {
                        errors.push(format!(
                            "{}: group name {:?} is already used by another rule file",
                            f.display(),
                            g.name
                        ));
                    }
                    defs.push(g);
                }
            }
            Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
        }
    }
    match parse_rule_file(Path::new("<built-in rules>"), &builtin_rules(config)) {
        Ok(groups) => defs.extend(groups),
        Err(errs) => errors.extend(errs.iter().map(ToString::to_string)),
    }
    let rules: usize = defs.iter().map(|g| g.rules.len()).sum();
    if rules > config.max_rules {
        errors.push(format!(
            "{rules} rules in all, more than rules.max_rules ({})",
            config.max_rules
        ));
    }
    if errors.is_empty() {
        Ok((defs, files))
    } else {
        Err(errors)
    }
}

/// Checks the configured rule files and the built-in rules without running
/// them: `(groups, rules)`, or every error.
pub fn check(config: &RulesConfig) -> Result<(usize, usize), Vec<String>> {
    let (defs, _) = load_groups(config)?;
    Ok((defs.len(), defs.iter().map(|g| g.rules.len()).sum()))
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RuleManager {
    /// Loads the rules and the alert states saved in `data_dir`. Rule file
    /// errors are returned, each naming file, line, group and rule.
    pub fn new(
        config: RulesConfig,
        store: Arc<Store>,
        data_dir: &Path,
    ) -> Result<Self, Vec<String>> {
        let (defs, files) = load_groups(&config)?;
        let interval = config.evaluation_interval.as_millis() as i64;
        let mut groups: Vec<Group> = defs.into_iter().map(|d| Group::new(d, interval)).collect();
        let state_path = data_dir.join(STATE_FILE);
        let saved: Vec<SavedAlert> = match std::fs::read(&state_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(e) => {
                    warn!(file = %state_path.display(), error = %e, "saved alert states do not parse; starting without them");
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        let restored = restore_alerts(&mut groups, &saved);
        if restored > 0 {
            info!(alerts = restored, "alert states restored");
        }
        let ctx = EvalContext {
            external_labels: config.external_labels.clone(),
            external_url: config.external_url.clone(),
            limits: vigil_promql::Limits::default(),
        };
        let metrics = RuleMetrics::default();
        metrics.last_reload_ok.store(true, Ordering::Relaxed);
        Ok(Self {
            config,
            store,
            state_path,
            state: Mutex::new(State {
                groups,
                files,
                saved,
                live_agents: HashSet::new(),
            }),
            published: Mutex::new(Arc::default()),
            ctx,
            metrics,
            evaluated: Arc::new(tokio::sync::Notify::new()),
        })
        .inspect(|manager| manager.publish(&lock(&manager.state)))
    }

    /// Publishes what readers see of `state` (see [`Published`]).
    fn publish(&self, state: &State) {
        let mut alerts = Vec::new();
        for g in &state.groups {
            for r in &g.rules {
                for a in r.active.values() {
                    alerts.push((g.name.clone(), r.def.expr.clone(), a.clone()));
                }
            }
        }
        let published = Published {
            alerts,
            groups: state.groups.len(),
            rules: state.groups.iter().map(|g| g.rules.len()).sum(),
            status: state.groups.iter().map(group_status).collect(),
        };
        *self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(published);
    }

    fn published(&self) -> Arc<Published> {
        Arc::clone(
            &self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Number of groups and rules running.
    pub fn counts(&self) -> (usize, usize) {
        let published = self.published();
        (published.groups, published.rules)
    }

    /// Re-reads the rule files. On any error the running rules stay and the
    /// errors are returned. Alerts of rules that keep their group and name
    /// keep their state.
    pub fn reload(&self) -> Result<(usize, usize), Vec<String>> {
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        let defs = match load_groups(&self.config) {
            Ok(d) => d,
            Err(errors) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.last_reload_ok.store(false, Ordering::Relaxed);
                for e in &errors {
                    error!(error = %e, "rule reload refused; the previous rules keep running");
                }
                return Err(errors);
            }
        };
        let interval = self.config.evaluation_interval.as_millis() as i64;
        let mut state = lock(&self.state);
        let mut groups: Vec<Group> = defs
            .0
            .into_iter()
            .map(|d| Group::new(d, interval))
            .collect();
        for g in &mut groups {
            let Some(old) = state.groups.iter().find(|o| o.name == g.name) else {
                continue;
            };
            g.last_eval = old.last_eval;
            for r in &mut g.rules {
                if let Some(o) = old.rules.iter().find(|o| o.def.name == r.def.name) {
                    r.active = o.active.clone();
                    r.carry_previous(o);
                }
            }
        }
        state.groups = groups;
        state.files = defs.1;
        self.publish(&state);
        self.metrics.last_reload_ok.store(true, Ordering::Relaxed);
        let counts = (
            state.groups.len(),
            state.groups.iter().map(|g| g.rules.len()).sum(),
        );
        info!(groups = counts.0, rules = counts.1, "rules reloaded");
        Ok(counts)
    }

    /// Writes every registered agent's liveness series (and stale markers
    /// for agents that stopped cleanly), for the host-down rule.
    fn write_liveness(&self, state: &mut State, ts: i64) {
        let agents = self.store.agent_liveness();
        let mut samples = Vec::with_capacity(agents.len() * 2);
        let mut live = HashSet::with_capacity(agents.len());
        let series = |name: &str, instance: &str| -> Labels {
            vec![
                ("__name__".to_string(), name.to_string()),
                ("instance".to_string(), instance.to_string()),
            ]
        };
        for (instance, last_push, interval) in agents {
            samples.push((
                series(LAST_PUSH_SERIES, &instance),
                ts,
                last_push as f64 / 1000.0,
            ));
            samples.push((
                series(FLUSH_INTERVAL_SERIES, &instance),
                ts,
                interval as f64 / 1000.0,
            ));
            live.insert(instance);
        }
        for gone in state.live_agents.difference(&live) {
            samples.push((series(LAST_PUSH_SERIES, gone), ts, stale_marker()));
            samples.push((series(FLUSH_INTERVAL_SERIES, gone), ts, stale_marker()));
        }
        state.live_agents = live;
        self.store.write_rule_samples(samples);
    }

    /// Evaluates the groups that are due at `now` (every group but the
    /// time-based host-down one when `pushed`: a batch just arrived); returns
    /// when the next one is due.
    pub fn eval_due(&self, now: i64, pushed: bool) -> i64 {
        let mut state = lock(&self.state);
        let mut next = now + 1000;
        let mut evaluated = false;
        let host_down_due = state.groups.iter().any(|g| {
            g.name == HOST_DOWN_GROUP && g.last_eval.is_none_or(|t| now >= t + g.interval_ms)
        });
        if host_down_due {
            self.write_liveness(&mut state, now);
        }
        let mut target = StoreTarget {
            store: &self.store,
            skipped: 0,
        };
        for g in state.groups.iter_mut() {
            let due = if pushed && g.name != HOST_DOWN_GROUP {
                now
            } else {
                g.last_eval.map_or(now, |t| t + g.interval_ms)
            };
            if now >= due {
                g.eval(now, &mut target, &self.ctx);
                // Alerts that fired now: note when their samples were taken.
                for r in g.rules.iter_mut() {
                    for a in r.active.values_mut() {
                        if a.fired_at == Some(now) && a.fired_sample_ms.is_none() {
                            a.fired_sample_ms = super::label_value(&a.labels, "instance")
                                .and_then(|i| self.store.last_batch_time(i))
                                .filter(|t| *t <= now);
                        }
                    }
                }
                evaluated = true;
                self.metrics.evaluations.fetch_add(1, Ordering::Relaxed);
                for r in &g.rules {
                    if let Some(e) = &r.last_error {
                        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                        warn!(group = %g.name, rule = %r.def.name, error = %e, "rule evaluation failed");
                    }
                }
                next = next.min(now + g.interval_ms);
            } else {
                next = next.min(due);
            }
        }
        self.metrics
            .samples_skipped
            .fetch_add(target.skipped, Ordering::Relaxed);
        if evaluated {
            self.publish(&state);
            let saved = saved_alerts(&state.groups);
            if saved != state.saved {
                match write_state(&self.state_path, &saved) {
                    Ok(()) => state.saved = saved,
                    Err(e) => {
                        self.metrics
                            .state_write_failures
                            .fetch_add(1, Ordering::Relaxed);
                        error!(file = %self.state_path.display(), error = %e, "cannot save alert states");
                    }
                }
            }
        }
        next
    }

    /// Runs the rule loop on its own thread until `shutdown`.
    pub fn spawn(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("vigil-rules".into())
            .spawn(move || {
                let mut seen = self.store.push_count();
                let mut last_push_round = 0i64;
                let gap = self.config.min_evaluation_gap.as_millis() as i64;
                while !shutdown.is_cancelled() {
                    let now = now_ms();
                    let next = self.eval_due(now, false);
                    self.evaluated.notify_one();
                    let wait = (next - now_ms()).clamp(10, 250);
                    if !self.config.evaluate_on_push {
                        std::thread::sleep(Duration::from_millis(wait as u64));
                        continue;
                    }
                    // Within the gap after an evaluation on arrival, pushes
                    // are not waited for one by one (each would wake this
                    // thread for nothing): the gap is slept, and a push that
                    // came meanwhile is seen at once after it.
                    let until_gap = last_push_round + gap - now_ms();
                    if until_gap > 0 {
                        std::thread::sleep(Duration::from_millis(until_gap.min(wait) as u64));
                        if until_gap > wait {
                            continue;
                        }
                    }
                    // A batch arrived: evaluate now, at most every min_evaluation_gap.
                    let count = self
                        .store
                        .wait_for_push(seen, Duration::from_millis(wait as u64));
                    if count != seen {
                        seen = count;
                        let now = now_ms();
                        if now - last_push_round >= gap {
                            last_push_round = now;
                            self.eval_due(now, true);
                            self.evaluated.notify_one();
                        }
                    }
                }
            })
    }

    /// Active alerts with their group, for the API and notifiers.
    pub fn alerts(&self) -> Vec<(String, super::Alert)> {
        self.alerts_with_expr()
            .into_iter()
            .map(|(g, _, a)| (g, a))
            .collect()
    }

    /// Every group and rule with its health, as of the last evaluation.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.published().status.clone()
    }

    /// Active alerts with their group and their rule's expression.
    pub fn alerts_with_expr(&self) -> Vec<(String, String, super::Alert)> {
        self.published().alerts.clone()
    }

    /// `$externalLabels` and `$externalURL`.
    pub fn external(&self) -> (std::collections::BTreeMap<String, String>, String) {
        (
            self.config.external_labels.clone(),
            self.config.external_url.clone(),
        )
    }

    /// `ALERTS`, `ALERTS_FOR_STATE` and the rule loop's own metrics.
    pub fn write_metrics(&self, w: &mut ExpositionWriter) {
        let published = self.published();
        let render = |labels: &[(String, String)]| {
            let mut out = String::new();
            for (k, v) in labels {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                vigil_shared::labels::escape_label_value_into(&mut out, v);
                out.push('"');
            }
            out
        };
        // (ALERTS labels, ALERTS_FOR_STATE labels, active since)
        let mut alerts: Vec<(String, String, f64)> = Vec::new();
        for (_, _, a) in &published.alerts {
            if a.state == AlertState::Inactive {
                continue;
            }
            let mut with_state = a.labels.clone();
            with_state.push(("alertstate".into(), a.state.as_str().into()));
            with_state.sort();
            alerts.push((
                render(&with_state),
                render(&a.labels),
                (a.active_at / 1000) as f64,
            ));
        }
        alerts.sort_by(|a, b| a.0.cmp(&b.0));
        w.header(
            "ALERTS",
            "Alerts pending or firing (alertstate), value 1.",
            MetricKind::Gauge,
        );
        for (labels, _, _) in &alerts {
            w.sample("ALERTS", "", labels, None, 1.0);
        }
        w.header(
            "ALERTS_FOR_STATE",
            "When each pending or firing alert became active, Unix seconds.",
            MetricKind::Gauge,
        );
        for (_, labels, since) in &alerts {
            w.sample("ALERTS_FOR_STATE", "", labels, None, *since);
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        for (name, help, kind, value) in [
            (
                "vigil_collector_rule_group_evaluations_total",
                "Rule group evaluations.",
                MetricKind::Counter,
                load(&self.metrics.evaluations),
            ),
            (
                "vigil_collector_rule_evaluation_failures_total",
                "Rule evaluations that failed (the rule's error is logged).",
                MetricKind::Counter,
                load(&self.metrics.failures),
            ),
            (
                "vigil_collector_rule_reloads_total",
                "Rule reloads asked for (SIGHUP or POST /-/reload).",
                MetricKind::Counter,
                load(&self.metrics.reloads),
            ),
            (
                "vigil_collector_rule_reload_failures_total",
                "Rule reloads refused because a file had an error.",
                MetricKind::Counter,
                load(&self.metrics.reload_failures),
            ),
            (
                "vigil_collector_rule_last_reload_successful",
                "1 when the last rule reload (or start-up) loaded every file.",
                MetricKind::Gauge,
                f64::from(u8::from(
                    self.metrics.last_reload_ok.load(Ordering::Relaxed),
                )),
            ),
            (
                "vigil_collector_alert_state_write_failures_total",
                "Times the alert states could not be saved to the data directory.",
                MetricKind::Counter,
                load(&self.metrics.state_write_failures),
            ),
            (
                "vigil_collector_template_failures_total",
                "Label and annotation templates that failed to expand (an error, or a step, output, query or time budget ran out).",
                MetricKind::Counter,
                load(&super::TEMPLATE_FAILURES),
            ),
            (
                "vigil_collector_rule_samples_skipped_total",
                "Rule output samples not written because their series already had a newer sample.",
                MetricKind::Counter,
                load(&self.metrics.samples_skipped),
            ),
            (
                "vigil_collector_rule_groups",
                "Rule groups loaded, built-in ones included.",
                MetricKind::Gauge,
                published.groups as f64,
            ),
            (
                "vigil_collector_rules",
                "Rules loaded, built-in ones included.",
                MetricKind::Gauge,
                published.rules as f64,
            ),
        ] {
            w.header(name, help, kind);
            w.sample(name, "", "", None, value);
        }
    }
}

fn write_state(path: &Path, saved: &[SavedAlert]) -> std::io::Result<()> {
    let body = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host_down: bool, heartbeat: bool) -> RulesConfig {
        RulesConfig {
            files: Vec::new(),
            base_dir: PathBuf::from("."),
            evaluation_interval: Duration::from_secs(10),
            external_url: "http://vigil:9470".into(),
            external_labels: Default::default(),
            host_down,
            host_down_after: 3,
            heartbeat,
            evaluate_on_push: true,
            min_evaluation_gap: Duration::from_millis(200),
            max_file_bytes: crate::file::MAX_RULE_FILE_BYTES,
            max_rules: crate::file::MAX_RULES,
        }
    }

    #[test]
    fn built_in_groups_follow_the_config() -> Result<(), Vec<String>> {
        assert_eq!(check(&config(false, false))?, (0, 0));
        assert_eq!(check(&config(true, false))?, (1, 1));
        assert_eq!(check(&config(true, true))?, (2, 2));
        Ok(())
    }

    /// A gauge batch from agent `a` with `value`.
    fn gauge(sequence: u64, value: f64) -> vigil_shared::proto::PushRequest {
        use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};
        let t = vigil_store::now_ms();
        PushRequest {
            agent_id: "a".into(),
            epoch: 1,
            sequence,
            timestamp_ms: t,
            flush_interval_ms: 10_000,
            families: vec![Family {
                name: "door_gauge".into(),
                kind: Kind::Gauge as i32,
                series: vec![Series {
                    labels: vec![Label {
                        name: "instance".into(),
                        value: "a".into(),
                    }],
                    value,
                    timestamp_ms: t,
                    window: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The newest value of the recorded series, if any.
    fn recorded(store: &Store) -> Option<f64> {
        let matcher =
            vigil_store::history::Matcher::Equal("__name__".into(), "door:doubled".into());
        store
            .select(&[matcher], 0, i64::MAX)
            .first()
            .and_then(|s| s.samples.last())
            .map(|(_, v)| *v)
    }

    #[test]
    fn a_push_within_the_gap_is_evaluated_when_the_gap_ends() -> Result<(), Vec<String>> {
        let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
        let file = dir.path().join("r.rules.yml");
        std::fs::write(
            &file,
            "groups:\n  - name: r\n    rules:\n      - record: door:doubled\n        expr: door_gauge * 2\n",
        )
        .map_err(|e| vec![e.to_string()])?;
        let mut c = config(false, false);
        c.files = vec![file.display().to_string()];
        // No scheduled round during the test: only pushes start evaluations.
        c.evaluation_interval = Duration::from_secs(3600);
        c.min_evaluation_gap = Duration::from_millis(300);
        let store = Arc::new(Store::new(
            Duration::from_secs(300),
            Duration::from_secs(3600),
        ));
        let m = Arc::new(RuleManager::new(c, Arc::clone(&store), dir.path())?);
        let shutdown = CancellationToken::new();
        let thread = Arc::clone(&m)
            .spawn(shutdown.clone())
            .map_err(|e| vec![e.to_string()])?;
        let wait_for = |want: f64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if recorded(&store) == Some(want) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        let evaluations = || m.metrics.evaluations.load(Ordering::Relaxed);
        let settle = |at_least: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while evaluations() < at_least && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            evaluations() >= at_least
        };
        // The first scheduled round, at start, with nothing to record.
        assert!(settle(1), "no first round");
        store.apply(&gauge(1, 1.0), vigil_store::now_ms());
        assert!(
            wait_for(2.0),
            "the first push was not evaluated: {:?}",
            recorded(&store)
        );
        assert!(settle(2), "the first push started no evaluation");
        // Within the gap after that evaluation: evaluated when it ends, not
        // at the next scheduled round an hour away.
        std::thread::sleep(Duration::from_millis(5));
        store.apply(&gauge(2, 5.0), vigil_store::now_ms());
        assert!(
            wait_for(10.0),
            "the second push was not evaluated: {:?}",
            recorded(&store)
        );
        shutdown.cancel();
        let _ = thread.join();
        Ok(())
    }

    #[test]
    fn the_heartbeat_always_fires() -> Result<(), Vec<String>> {
        let dir = std::env::temp_dir().join(format!("vigil-heartbeat-{}", std::process::id()));
        let store = Arc::new(Store::new(
            Duration::from_secs(300),
            Duration::from_secs(3600),
        ));
        let m = RuleManager::new(config(false, true), store, &dir)?;
        m.eval_due(1_000_000, false);
        let alerts = m.alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].0, HEARTBEAT_GROUP);
        assert_eq!(alerts[0].1.state, AlertState::Firing);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
