//! Prometheus rule files, read unchanged: `groups` of `alert` and `record`
//! rules with `expr`, `for`, `keep_firing_for`, `labels`, `annotations`,
//! group `interval` and `limit`. Vigil's own keys sit under one `vigil:` map
//! on an alerting rule (`clear_expr`, `clear_for`), so a file without it is
//! still a Prometheus file. Unknown keys are refused, as Prometheus does.
//!
//! Every error names the file, the line, the group and the rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vigil_shared::config::Text;

use serde::Deserialize;
use thiserror::Error;

use vigil_shared::config::parse_duration_ms;
use vigil_template::Template;

/// A rule file that cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{file}: {}{message}", position(*line, *column))]
pub struct RuleFileError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong, with the group and rule when known.
    pub message: String,
}

/// `line:column: ` as promtool prints it, or nothing when unknown.
fn position(line: usize, column: usize) -> String {
    match (line, column) {
        (0, _) => String::new(),
        (l, 0) => format!("{l}: "),
        (l, c) => format!("{l}:{c}: "),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Rule groups.
    #[serde(default)]
    pub groups: Vec<RawGroup>,
}

/// One group as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Unique name in the file.
    #[serde(default)]
    pub name: String,
    /// Evaluation interval (the collector's `rules.evaluation_interval` when absent).
    pub interval: Option<String>,
    /// Most alerts or series a rule may produce (0: no limit).
    #[serde(default)]
    pub limit: usize,
    /// Rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Recording rule: the series name written.
    pub record: Option<Text>,
    /// Alerting rule: the alert name.
    pub alert: Option<Text>,
    /// PromQL.
    #[serde(default)]
    pub expr: Text,
    /// How long the condition must hold before firing.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// How long an alert keeps firing after its condition stops.
    pub keep_firing_for: Option<String>,
    /// Labels added (templates for alerts).
    #[serde(default)]
    pub labels: BTreeMap<String, Text>,
    /// Annotations (templates).
    #[serde(default)]
    pub annotations: BTreeMap<String, Text>,
    /// Vigil's own keys.
    pub vigil: Option<RawVigil>,
}

/// Vigil-only keys of an alerting rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVigil {
    /// Once firing, the alert clears only when this expression returns the
    /// alert's series (hysteresis: fire above 90, clear below 80).
    pub clear_expr: Option<Text>,
    /// How long the clear condition must hold before the alert resolves.
    pub clear_for: Option<String>,
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// Alert or record name.
    pub name: String,
    /// Alerting or recording.
    pub kind: RuleKind,
    /// The expression as written.
    pub expr: String,
    /// Parsed expression.
    pub parsed: promql_parser::parser::Expr,
    /// Labels: (name, text, parsed template for alerts).
    pub labels: Vec<(String, String, Option<Template>)>,
    /// Where the rule starts in its file.
    pub line: usize,
}

/// What kind of rule.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// A recording rule.
    Record,
    /// An alerting rule.
    Alert(Box<AlertDef>),
}

/// The alerting part of a rule.
#[derive(Debug, Clone)]
pub struct AlertDef {
    /// `for`, milliseconds.
    pub for_ms: i64,
    /// `keep_firing_for`, milliseconds.
    pub keep_firing_for_ms: i64,
    /// Annotations: (name, text, parsed).
    pub annotations: Vec<(String, String, Template)>,
    /// Vigil's flap control.
    pub clear: Option<ClearDef>,
}

/// A separate clear condition.
#[derive(Debug, Clone)]
pub struct ClearDef {
    /// The expression as written.
    pub expr: String,
    /// Parsed.
    pub parsed: promql_parser::parser::Expr,
    /// How long it must hold, milliseconds.
    pub for_ms: i64,
}

/// A checked group.
#[derive(Debug, Clone)]
pub struct GroupDef {
    /// The file it came from.
    pub file: PathBuf,
    /// Name.
    pub name: String,
    /// Interval, milliseconds (None: the default).
    pub interval_ms: Option<i64>,
    /// Limit (0: none).
    pub limit: usize,
    /// Rules in order.
    pub rules: Vec<RuleDef>,
}

/// Lines where each rule (`- alert:` / `- record:`) starts, in order.
fn rule_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches('-').trim_start();
            (t.starts_with("alert:") || t.starts_with("record:"))
                && !l.trim_start().starts_with('#')
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// The line and column of the `expr:` value of the rule starting at `from`.
fn expr_position(text: &str, from: usize) -> (usize, usize) {
    for (i, l) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let trimmed = l.trim_start().trim_start_matches('-').trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let value_at = l.len() - rest.trim_start().len();
            return (i + 1, value_at + 1);
        }
    }
    (from, 0)
}

/// Lines where each group's `name:` is written, in order.
fn group_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches('-').trim_start();
            t.starts_with("name:")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn duration(text: &Option<String>) -> Result<i64, String> {
    match text.as_deref() {
        None => Ok(0),
        Some(t) => parse_duration_ms(t.trim()).map_err(|e| e.to_string()),
    }
}

/// A valid metric or label name.
fn valid_name(s: &str, metric: bool) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':'))
}

/// Parses and checks one rule file's text.
pub fn parse_rule_file(path: &Path, text: &str) -> Result<Vec<GroupDef>, Vec<RuleFileError>> {
    let file = path.display().to_string();
    let raw: RawFile = match serde_saphyr::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let message = e.to_string();
            let line = message
                .split("line ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Err(vec![RuleFileError {
                file,
                line,
                column: 0,
                message: format!("yaml: {message}"),
            }]);
        }
    };
    let count: usize = raw.groups.iter().map(|g| g.rules.len()).sum();
    if count > MAX_RULES {
        return Err(vec![RuleFileError {
            file,
            line: 0,
            column: 0,
            message: format!("{count} rules, more than {MAX_RULES} in one file"),
        }]);
    }
    let rule_at = rule_lines(text);
    let group_at = group_lines(text);
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut rule_index = 0usize;
    for (gi, g) in raw.groups.into_iter().enumerate() {
        let gline = group_at.get(gi).copied().unwrap_or(0);
        let mut fail = |(line, column): (usize, usize), message: String| {
            errors.push(RuleFileError {
                file: file.clone(),
                line,
                column,
                message,
            })
        };
        if g.name.is_empty() {
            fail((gline, 0), "group name must not be empty".into());
        } else if !seen.insert(g.name.clone()) {
            fail(
                (gline, 0),
                format!("group name {:?} is repeated in the same file", g.name),
            );
        }
        let interval_ms = match &g.interval {
            None => None,
            Some(t) => match parse_duration_ms(t.trim()) {
                Ok(0) => {
                    fail(
                        (gline, 0),
                        format!("group {:?}: interval must be more than 0", g.name),
                    );
                    None
                }
                Ok(ms) => Some(ms),
                Err(e) => {
                    fail((gline, 0), format!("group {:?}: interval: {e}", g.name));
                    None
                }
            },
        };
        let mut rules = Vec::new();
        for (ri, r) in g.rules.into_iter().enumerate() {
            let line = rule_at.get(rule_index).copied().unwrap_or(gline);
            rule_index += 1;
            let name = r
                .alert
                .as_ref()
                .or(r.record.as_ref())
                .map(|t| t.0.clone())
                .unwrap_or_default();
            let at = format!("group {:?}, rule {}, {name:?}", g.name, ri + 1);
            let mut problems: Vec<String> = Vec::new();
            let mut expr_problem: Option<String> = None;
            match (&r.record, &r.alert) {
                (Some(_), Some(_)) => {
                    problems.push("only one of 'record' and 'alert' must be set".into())
                }
                (None, None) => problems.push("one of 'record' or 'alert' must be set".into()),
                (Some(rec), None) => {
                    if !valid_name(&rec.0, true) {
                        problems.push(format!("invalid recording rule name: {}", rec.0));
                    }
                    if !r.annotations.is_empty() {
                        problems.push("invalid field 'annotations' in recording rule".into());
                    }
                    if r.for_.is_some() {
                        problems.push("invalid field 'for' in recording rule".into());
                    }
                    if r.keep_firing_for.is_some() {
                        problems.push("invalid field 'keep_firing_for' in recording rule".into());
                    }
                    if r.vigil.is_some() {
                        problems.push("invalid field 'vigil' in recording rule".into());
                    }
                }
                (None, Some(alert)) => {
                    if alert.0.is_empty() {
                        problems.push("field 'alert' must not be empty".into());
                    }
                }
            }
            if r.expr.0.trim().is_empty() {
                problems.push("field 'expr' must be set in rule".into());
            }
            let parsed = match vigil_promql::parse(&r.expr.0) {
                Ok(p) => Some(p),
                Err(e) => {
                    if !r.expr.0.trim().is_empty() {
                        expr_problem = Some(format!("could not parse expression: {e}"));
                    }
                    None
                }
            };
            let is_alert = r.alert.is_some();
            let mut labels = Vec::new();
            for (k, v) in &r.labels {
                if !valid_name(k, false) || k == "__name__" {
                    problems.push(format!("invalid label name: {k}"));
                }
                let template = if is_alert {
                    match Template::parse(&v.0) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            problems.push(format!("label {k:?}: {e}"));
                            None
                        }
                    }
                } else {
                    None
                };
                labels.push((k.clone(), v.0.clone(), template));
            }
            let mut annotations = Vec::new();
            for (k, v) in &r.annotations {
                if !valid_name(k, false) {
                    problems.push(format!("invalid annotation name: {k}"));
                }
                match Template::parse(&v.0) {
                    Ok(t) => annotations.push((k.clone(), v.0.clone(), t)),
                    Err(e) => problems.push(format!("annotation {k:?}: {e}")),
                }
            }
            let for_ms = duration(&r.for_).unwrap_or_else(|e| {
                problems.push(format!("for: {e}"));
                0
            });
            let keep_firing_for_ms = duration(&r.keep_firing_for).unwrap_or_else(|e| {
                problems.push(format!("keep_firing_for: {e}"));
                0
            });
            let clear = match &r.vigil {
                Some(v) if is_alert => {
                    let clear_for = duration(&v.clear_for).unwrap_or_else(|e| {
                        problems.push(format!("vigil.clear_for: {e}"));
                        0
                    });
                    match &v.clear_expr {
                        Some(ce) => match vigil_promql::parse(&ce.0) {
                            Ok(p) => Some(ClearDef {
                                expr: ce.0.clone(),
                                parsed: p,
                                for_ms: clear_for,
                            }),
                            Err(e) => {
                                problems.push(format!(
                                    "vigil.clear_expr: could not parse expression: {e}"
                                ));
                                None
                            }
                        },
                        None => {
                            if v.clear_for.is_some() {
                                problems.push("vigil.clear_for needs vigil.clear_expr".to_string());
                            }
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some(p) = &expr_problem {
                fail(expr_position(text, line), format!("{at}: {p}"));
            }
            if !problems.is_empty() || expr_problem.is_some() {
                for p in problems {
                    fail((line, 0), format!("{at}: {p}"));
                }
                continue;
            }
            let Some(parsed) = parsed else { continue };
            rules.push(RuleDef {
                name,
                kind: if is_alert {
                    RuleKind::Alert(Box::new(AlertDef {
                        for_ms,
                        keep_firing_for_ms,
                        annotations,
                        clear,
                    }))
                } else {
                    RuleKind::Record
                },
                expr: r.expr.0.clone(),
                parsed,
                labels,
                line,
            });
        }
        groups.push(GroupDef {
            file: path.to_path_buf(),
            name: g.name,
            interval_ms,
            limit: g.limit,
            rules,
        });
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// Reads and checks one rule file.
pub fn load_rule_file(path: &Path) -> Result<Vec<GroupDef>, Vec<RuleFileError>> {
    load_rule_file_limited(path, MAX_RULE_FILE_BYTES)
}

/// Largest rule file read by default (`rules.max_file_size`), in bytes.
pub const MAX_RULE_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Most rules loaded by default (`rules.max_rules`), over every file; also
/// the most one file may hold.
pub const MAX_RULES: usize = 10_000;

/// As [`load_rule_file`], refusing a file larger than `max_bytes` before
/// reading it whole.
pub fn load_rule_file_limited(
    path: &Path,
    max_bytes: u64,
) -> Result<Vec<GroupDef>, Vec<RuleFileError>> {
    use std::io::Read as _;
    let fail = |message: String| {
        vec![RuleFileError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message,
        }]
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(fail(format!(
            "larger than {max_bytes} bytes (rules.max_file_size); refused without parsing"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8: {e}")))?;
    parse_rule_file(path, &text)
}

/// Expands glob patterns (`*`, `?` in the last path component) into files,
/// sorted; a pattern without wildcards names one file, which must exist. A
/// glob in a folder that does not exist matches nothing, as in Prometheus.
pub fn expand_globs(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base.join(pattern)
        };
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            out.push(full);
            continue;
        }
        let dir = full.parent().unwrap_or(Path::new("."));
        let re = glob_regex(&name)?;
        // As Prometheus: a glob whose folder does not exist matches nothing.
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(format!(
                    "rule files {pattern:?}: cannot read {}: {e}",
                    dir.display()
                ));
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .is_some_and(|n| re.is_match(&n.to_string_lossy()))
            })
            .collect();
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

fn glob_regex(glob: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                re.push('[');
                for c in chars.by_ref() {
                    re.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("bad glob {glob:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compat_rule_file_checks() -> Result<(), String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/compat/rules");
        let mut rules = 0;
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            format!(
                "{}: {e}: run scripts/fetch-compat.sh (the README's test command runs it first)",
                dir.display()
            )
        })?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let groups = load_rule_file(&path).map_err(|e| format!("{e:?}"))?;
            rules += groups.iter().map(|g| g.rules.len()).sum::<usize>();
        }
        assert_eq!(rules, 72);
        Ok(())
    }

    #[test]
    fn errors_name_file_line_group_and_rule() {
        let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up ==\n  - record: 'bad name'\n    expr: up\n";
        let errs = parse_rule_file(Path::new("r.yml"), text)
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (5, 11));
        assert!(
            errs[0]
                .to_string()
                .starts_with("r.yml: 5:11: group \"g\", rule 1, \"A\": could not parse expression"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].line, 6);
        assert!(errs[1].message.contains("invalid recording rule name"));
        let unknown = parse_rule_file(
            Path::new("r.yml"),
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    severity: x\n",
        )
        .err()
        .unwrap_or_default();
        assert!(unknown[0].message.contains("severity"), "{unknown:?}");
        assert_eq!(unknown[0].line, 6, "{unknown:?}");
        let template = parse_rule_file(Path::new("r.yml"), "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      x: '{{ nope }}'\n")
            .err()
            .unwrap_or_default();
        assert!(
            template[0]
                .message
                .contains("function \\\"nope\\\" not defined")
                || template[0]
                    .message
                    .contains("function \"nope\" not defined"),
            "{template:?}"
        );
    }

    #[test]
    fn globs_match_files_and_a_missing_folder_matches_nothing() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("a.yml"), "groups: []\n").map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("b.txt"), "").map_err(|e| e.to_string())?;
        let found = expand_globs(&["*.yml".into(), "missing/*.yml".into()], dir.path())?;
        assert_eq!(found, vec![dir.path().join("a.yml")]);
        // A plain path is kept, to fail when it is read.
        let found = expand_globs(&["missing.yml".into()], dir.path())?;
        assert_eq!(found, vec![dir.path().join("missing.yml")]);
        Ok(())
    }
}
