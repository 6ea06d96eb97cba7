//! Prometheus naming rules for metric and label names, and the validation both
//! the agent (before it ships) and the collector (at its door) apply to a series.
//!
//! Validation never allocates on success; an error names the series and says
//! what is wrong, so that a person can find the source that produced it.

use thiserror::Error;

/// Limits applied to every series. The collector reads them from its config;
/// the agent uses the defaults so that it never ships what a default collector refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Most labels on one series, `instance` and `job` included.
    pub max_labels: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Longest metric or label name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_labels: 32,
            max_label_value_bytes: 2048,
            max_name_bytes: 256,
        }
    }
}

/// What is wrong with a series.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LabelError {
    /// The metric name breaks `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    MetricName(String),
    /// A label name breaks `[a-zA-Z_][a-zA-Z0-9_]*` or is reserved (`__` prefix).
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")]
    LabelName(String),
    /// The same label name appears twice.
    #[error("label {0:?} appears more than once")]
    DuplicateLabel(String),
    /// Labels must be sorted by name on the wire.
    #[error("labels are not sorted by name at {0:?}")]
    Unsorted(String),
    /// More labels than the limit.
    #[error("{count} labels, more than the limit of {limit}")]
    TooManyLabels {
        /// Labels on the series.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A label value longer than the limit.
    #[error("label {name:?} has a value of {len} bytes, more than the limit of {limit}")]
    ValueTooLong {
        /// The label.
        name: String,
        /// Its value's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A name longer than the limit.
    #[error("name {name:?} is {len} bytes, more than the limit of {limit}")]
    NameTooLong {
        /// The name (cut to the limit).
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// `instance` or `job` is missing or empty.
    #[error("required label {0:?} is missing or empty")]
    MissingRequired(&'static str),
}

/// True when `name` is a valid Prometheus metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// True when `name` is a valid Prometheus label name (reserved `__` names excluded).
pub fn is_valid_label_name(name: &str) -> bool {
    if name.starts_with("__") {
        return false;
    }
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_name_len(name: &str, limits: &SeriesLimits) -> Result<(), LabelError> {
    if name.len() > limits.max_name_bytes {
        let mut cut = limits.max_name_bytes;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(LabelError::NameTooLong {
            name: name[..cut].to_string(),
            len: name.len(),
            limit: limits.max_name_bytes,
        });
    }
    Ok(())
}

/// Checks a metric name against the naming rule and the name length limit.
pub fn validate_metric_name(name: &str, limits: &SeriesLimits) -> Result<(), LabelError> {
    check_name_len(name, limits)?;
    if !is_valid_metric_name(name) {
        return Err(LabelError::MetricName(name.to_string()));
    }
    Ok(())
}

/// Checks one series' labels, given as `(name, value)` pairs sorted by name:
/// naming rules, no duplicates, sorted order, limits, and `instance` and `job` present.
pub fn validate_labels<'a, I>(labels: I, limits: &SeriesLimits) -> Result<(), LabelError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut previous: Option<&str> = None;
    let mut count = 0usize;
    let mut has_instance = false;
    let mut has_job = false;
    for (name, value) in labels {
        count += 1;
        check_name_len(name, limits)?;
        if !is_valid_label_name(name) {
            return Err(LabelError::LabelName(name.to_string()));
        }
        if let Some(prev) = previous {
            if prev == name {
                return Err(LabelError::DuplicateLabel(name.to_string()));
            }
            if prev > name {
                return Err(LabelError::Unsorted(name.to_string()));
            }
        }
        if value.len() > limits.max_label_value_bytes {
            return Err(LabelError::ValueTooLong {
                name: name.to_string(),
                len: value.len(),
                limit: limits.max_label_value_bytes,
            });
        }
        has_instance |= name == "instance" && !value.is_empty();
        has_job |= name == "job" && !value.is_empty();
        previous = Some(name);
    }
    if count > limits.max_labels {
        return Err(LabelError::TooManyLabels {
            count,
            limit: limits.max_labels,
        });
    }
    if !has_instance {
        return Err(LabelError::MissingRequired("instance"));
    }
    if !has_job {
        return Err(LabelError::MissingRequired("job"));
    }
    Ok(())
}

/// Formats a series as `name{a="1",b="2"}` for error messages and logs.
pub fn describe_series<'a, I>(name: &str, labels: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::from(name);
    out.push('{');
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value_into(&mut out, v);
        out.push('"');
    }
    out.push('}');
    out
}

/// Appends `value` escaped as a label value of the Prometheus text format
/// (backslash, double quote and newline).
pub fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(labels: &[(&str, &str)]) -> Result<(), LabelError> {
        validate_labels(labels.iter().copied(), &SeriesLimits::default())
    }

    #[test]
    fn metric_names_follow_prometheus_rules() {
        assert!(is_valid_metric_name("node_cpu_seconds_total"));
        assert!(is_valid_metric_name("job:rate:sum"));
        assert!(is_valid_metric_name("_x"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name("a-b"));
        assert!(!is_valid_metric_name("é"));
    }

    #[test]
    fn label_names_refuse_reserved_and_colons() {
        assert!(is_valid_label_name("mountpoint"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("0a"));
    }

    #[test]
    fn labels_need_instance_and_job() {
        assert_eq!(ok(&[("instance", "a"), ("job", "node")]), Ok(()));
        assert_eq!(
            ok(&[("instance", "a")]),
            Err(LabelError::MissingRequired("job"))
        );
        assert_eq!(
            ok(&[("instance", ""), ("job", "x")]),
            Err(LabelError::MissingRequired("instance"))
        );
    }

    #[test]
    fn labels_must_be_sorted_and_unique() {
        assert_eq!(
            ok(&[("job", "a"), ("instance", "b")]),
            Err(LabelError::Unsorted("instance".into()))
        );
        assert_eq!(
            ok(&[("instance", "a"), ("instance", "b"), ("job", "x")]),
            Err(LabelError::DuplicateLabel("instance".into()))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(3000);
        assert!(matches!(
            ok(&[("instance", &long), ("job", "x")]),
            Err(LabelError::ValueTooLong { .. })
        ));
        let names: Vec<String> = (0..40).map(|i| format!("l{i:02}")).collect();
        let mut labels: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        labels.push(("instance", "a"));
        labels.push(("job", "b"));
        labels.sort();
        assert!(matches!(ok(&labels), Err(LabelError::TooManyLabels { .. })));
    }

    #[test]
    fn describe_escapes_values() {
        assert_eq!(
            describe_series("m", [("a", "x\"y\n")]),
            "m{a=\"x\\\"y\\n\"}"
        );
    }
}
