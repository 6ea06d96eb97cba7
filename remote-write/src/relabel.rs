//! `write_relabel_configs` as Prometheus writes them, for the two actions
//! that choose what is sent: `keep` and `drop`. The source labels' values
//! are joined with `separator` and matched against `regex`, anchored at
//! both ends, as Prometheus does.

use regex::Regex;

use crate::prompb::Label;

/// What a rule does with a series that matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send only series that match.
    Keep,
    /// Send only series that do not match.
    Drop,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// Labels whose values are joined.
    pub source_labels: Vec<String>,
    /// The join.
    pub separator: String,
    /// Anchored regex.
    pub regex: Regex,
}

impl Rule {
    /// A rule from config text; the error names what is wrong.
    pub fn new(
        action: &str,
        source_labels: Vec<String>,
        separator: Option<String>,
        regex: Option<&str>,
    ) -> Result<Self, String> {
        let action = match action {
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            other => {
                return Err(format!(
                    "action {other:?} is not supported here: use \"keep\" or \"drop\""
                ));
            }
        };
        if source_labels.is_empty() {
            return Err("source_labels must name at least one label".into());
        }
        let pattern = regex.unwrap_or("(.*)");
        if pattern.len() > 4096 {
            return Err(format!("regex is {} bytes; at most 4096", pattern.len()));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("regex {pattern:?}: {e}"))?;
        Ok(Self {
            action,
            source_labels,
            separator: separator.unwrap_or_else(|| ";".into()),
            regex,
        })
    }

    fn matches(&self, labels: &[Label]) -> bool {
        let mut joined = String::new();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                joined.push_str(&self.separator);
            }
            if let Some(l) = labels.iter().find(|l| &l.name == name) {
                joined.push_str(&l.value);
            }
        }
        self.regex.is_match(&joined)
    }
}

/// True when every rule lets the series through.
pub fn keep(rules: &[Rule], labels: &[Label]) -> bool {
    rules.iter().all(|r| match r.action {
        Action::Keep => r.matches(labels),
        Action::Drop => !r.matches(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, job: &str) -> Vec<Label> {
        vec![
            Label {
                name: "__name__".into(),
                value: name.into(),
            },
            Label {
                name: "job".into(),
                value: job.into(),
            },
        ]
    }

    #[test]
    fn keep_and_drop_match_anchored_joined_values() -> Result<(), String> {
        let keep_node = Rule::new("keep", vec!["__name__".into()], None, Some("node_.*"))?;
        let drop_job = Rule::new(
            "drop",
            vec!["__name__".into(), "job".into()],
            Some("@".into()),
            Some("node_load1@test"),
        )?;
        let rules = [keep_node, drop_job];
        assert!(keep(&rules, &labels("node_load1", "node")));
        assert!(!keep(&rules, &labels("node_load1", "test")));
        assert!(!keep(&rules, &labels("xnode_load1", "node")), "anchored");
        assert!(keep(&[], &labels("anything", "x")));
        assert!(Rule::new("replace", vec!["a".into()], None, None).is_err());
        assert!(Rule::new("keep", vec![], None, None).is_err());
        assert!(Rule::new("keep", vec!["a".into()], None, Some("(")).is_err());
        Ok(())
    }
}
