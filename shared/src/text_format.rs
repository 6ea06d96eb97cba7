//! A parser for the Prometheus text exposition format (0.0.4): what the
//! agent's textfile source reads, and later its scrape source.
//!
//! It is strict where a lenient parser would hide mistakes (a second `TYPE`
//! for a family, a duplicate series, a bad escape) and every error names the
//! 1-based line it found. It never panics on any input.

use std::collections::HashSet;

use thiserror::Error;

use crate::labels::{is_valid_label_name, is_valid_metric_name};

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `untyped`, or no `TYPE` line.
    Untyped,
    /// `histogram`: `_bucket`, `_sum`, `_count` samples.
    Histogram,
    /// `summary`: quantile samples, `_sum`, `_count`.
    Summary,
}

/// One family: its name, help, kind and samples in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct TextFamily {
    /// The family name.
    pub name: String,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The `# TYPE`.
    pub kind: TextKind,
    /// Its samples.
    pub samples: Vec<TextSample>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    /// The sample's metric name (for histograms, with its `_bucket`/`_sum`/`_count` suffix).
    pub name: String,
    /// Labels in the order written, unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// The optional timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// The 1-based line it was read from.
    pub line: usize,
}

/// A line that does not parse, with its number and what is wrong.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct TextError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, TextError> {
    Err(TextError {
        line,
        message: message.into(),
    })
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Vec<TextFamily>, TextError> {
    let mut families: Vec<TextFamily> = Vec::new();
    let mut seen_families: HashSet<String> = HashSet::new();
    let mut seen_series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut typed: HashSet<String> = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (keyword, rest) = split_word(comment);
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let (name, rest) = split_word(rest.trim_start());
            if !is_valid_metric_name(name) {
                return err(
                    line_no,
                    format!("invalid metric name {name:?} in {keyword} line"),
                );
            }
            let family = family_for_metadata(&mut families, &mut seen_families, name, line_no)?;
            if keyword == "HELP" {
                if family.help.is_some() {
                    return err(line_no, format!("second HELP line for {name}"));
                }
                family.help = Some(unescape_help(rest.trim_start()));
            } else {
                if !family.samples.is_empty() {
                    return err(line_no, format!("TYPE line for {name} after its samples"));
                }
                if !typed.insert(name.to_string()) {
                    return err(line_no, format!("second TYPE line for {name}"));
                }
                family.kind = match rest.trim() {
                    "counter" => TextKind::Counter,
                    "gauge" => TextKind::Gauge,
                    "untyped" => TextKind::Untyped,
                    "histogram" => TextKind::Histogram,
                    "summary" => TextKind::Summary,
                    other => return err(line_no, format!("unknown TYPE {other:?} for {name}")),
                };
            }
            continue;
        }
        let sample = parse_sample(line, line_no)?;
        let key = (sample.name.clone(), sorted(&sample.labels));
        if !seen_series.insert(key) {
            return err(line_no, format!("duplicate series {}", sample.name));
        }
        let belongs = families.last().is_some_and(|f| belongs_to(f, &sample.name));
        if !belongs {
            if seen_families.contains(&sample.name) {
                return err(
                    line_no,
                    format!("samples of {} are not together in one group", sample.name),
                );
            }
            seen_families.insert(sample.name.clone());
            families.push(TextFamily {
                name: sample.name.clone(),
                help: None,
                kind: TextKind::Untyped,
                samples: Vec::new(),
            });
        }
        if let Some(family) = families.last_mut() {
            family.samples.push(sample);
        }
    }
    Ok(families)
}

fn family_for_metadata<'a>(
    families: &'a mut Vec<TextFamily>,
    seen: &mut HashSet<String>,
    name: &str,
    line: usize,
) -> Result<&'a mut TextFamily, TextError> {
    let current = families.last().is_some_and(|f| f.name == name);
    if !current {
        if seen.contains(name) {
            return err(line, format!("metadata for {name} after its group ended"));
        }
        seen.insert(name.to_string());
        families.push(TextFamily {
            name: name.to_string(),
            help: None,
            kind: TextKind::Untyped,
            samples: Vec::new(),
        });
    }
    match families.last_mut() {
        Some(f) => Ok(f),
        None => err(line, "internal: no family"),
    }
}

fn belongs_to(family: &TextFamily, sample: &str) -> bool {
    if sample == family.name {
        return true;
    }
    let suffixes: &[&str] = match family.kind {
        TextKind::Histogram => &["_bucket", "_sum", "_count"],
        TextKind::Summary => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .any(|s| sample.strip_suffix(s) == Some(family.name.as_str()))
}

fn sorted(labels: &[(String, String)]) -> Vec<(String, String)> {
    let mut v = labels.to_vec();
    v.sort();
    v
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_sample(line: &str, line_no: usize) -> Result<TextSample, TextError> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_valid_metric_name(name) {
        return err(line_no, format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after, line_no)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value_text = match fields.next() {
        Some(v) => v,
        None => return err(line_no, format!("{name}: missing value")),
    };
    let value = parse_value(value_text).ok_or_else(|| TextError {
        line: line_no,
        message: format!("{name}: invalid value {value_text:?}"),
    })?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| TextError {
            line: line_no,
            message: format!("{name}: invalid timestamp {t:?}"),
        })?),
    };
    if let Some(extra) = fields.next() {
        return err(
            line_no,
            format!("{name}: unexpected text {extra:?} after the timestamp"),
        );
    }
    Ok(TextSample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
        line: line_no,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t if t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE_xXabcdefABCDEF".contains(&b)) =>
        {
            t.parse::<f64>().ok()
        }
        _ => None,
    }
}

type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str, line_no: usize) -> Result<(Labels, &str), TextError> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let name_end = s.find(['=', ' ', '\t']).ok_or_else(|| TextError {
            line: line_no,
            message: "unterminated label set".into(),
        })?;
        let name = &s[..name_end];
        if !is_valid_label_name(name) {
            return err(line_no, format!("invalid label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return err(line_no, format!("label {name:?} appears twice"));
        }
        s = s[name_end..].trim_start();
        s = s.strip_prefix('=').ok_or_else(|| TextError {
            line: line_no,
            message: format!("label {name:?}: expected '='"),
        })?;
        s = s.trim_start();
        s = s.strip_prefix('"').ok_or_else(|| TextError {
            line: line_no,
            message: format!("label {name:?}: value must be in double quotes"),
        })?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        return err(line_no, format!("label {name:?}: invalid escape \\{other}"));
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| TextError {
            line: line_no,
            message: format!("label {name:?}: unterminated value"),
        })?;
        labels.push((name.to_string(), value));
        s = s[end..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return err(
                line_no,
                format!("after label {name:?}: expected ',' or '}}'"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_families_help_type_labels_and_timestamps() -> Result<(), TextError> {
        let text = "# HELP jobs_done_total Jobs done.\\nSecond line.\n# TYPE jobs_done_total counter\njobs_done_total{queue=\"a \\\"b\\\"\",x=\"1\"} 12 1700000000000\njobs_done_total{queue=\"c\"} 3e2\n\n# a comment\nup NaN\nneg -Inf\n";
        let f = parse(text)?;
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "jobs_done_total");
        assert_eq!(f[0].kind, TextKind::Counter);
        assert_eq!(f[0].help.as_deref(), Some("Jobs done.\nSecond line."));
        assert_eq!(
            f[0].samples[0].labels[0],
            ("queue".into(), "a \"b\"".into())
        );
        assert_eq!(f[0].samples[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(f[0].samples[1].value, 300.0);
        assert!(f[1].samples[0].value.is_nan());
        assert_eq!(f[2].samples[0].value, f64::NEG_INFINITY);
        assert_eq!(f[1].help, None);
        Ok(())
    }

    #[test]
    fn type_without_help_has_no_help() -> Result<(), TextError> {
        let f = parse("# TYPE a gauge\na 1\n")?;
        assert_eq!(f[0].help, None);
        assert_eq!(f[0].kind, TextKind::Gauge);
        Ok(())
    }

    #[test]
    fn histogram_samples_join_their_family() -> Result<(), TextError> {
        let f = parse(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
        )?;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].samples.len(), 4);
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("a 1\nb{x=\"1\" 2\n", 2, "expected ','"),
            ("a 1\na 2\n", 2, "duplicate series"),
            ("# TYPE a gauge\n# TYPE a counter\na 1\n", 2, "second TYPE"),
            ("a one\n", 1, "invalid value"),
            ("1a 1\n", 1, "invalid metric name"),
            ("a{__x=\"1\"} 1\n", 1, "invalid label name"),
            ("a{x=\"\\q\"} 1\n", 1, "invalid escape"),
            ("a 1\nb 1\na{x=\"y\"} 1\n", 3, "not together"),
            ("# TYPE a strange\n", 1, "unknown TYPE"),
            ("a 1 12 13\n", 1, "unexpected text"),
            ("a{x=\"1\"\n", 1, "expected ','"),
            ("a{x=\"1} 1\n", 1, "unterminated value"),
        ];
        for (text, line, what) in cases {
            match parse(text) {
                Ok(f) => panic!("{text:?} parsed as {f:?}"),
                Err(e) => {
                    assert_eq!(e.line, line, "{text:?}: {e}");
                    assert!(e.message.contains(what), "{text:?}: {e}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_near_valid(text in "(# (HELP|TYPE) [a-z_]{1,5} [a-z ]{0,8}\n|[a-z_]{1,4}(\\{([a-z]{1,3}=\"[a-z\\\\\"]{0,4}\",?){0,3}\\})? [0-9.eNaInf+-]{1,6}( [0-9]{1,4})?\n){0,8}") {
            let _ = parse(&text);
        }
    }
}
