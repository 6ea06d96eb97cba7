//! OTLP names, units and attributes in Prometheus's terms, as OpenTelemetry's
//! "Prometheus and OpenMetrics compatibility" specification gives them:
//!
//! - a metric name's characters outside `[A-Za-z0-9_:]` become `_`, runs of
//!   `_` become one, and a leading digit gets a `_` in front;
//! - the unit, without its `{annotations}`, is added as a suffix in words
//!   (`s` → `_seconds`, `By` → `_bytes`, `m/s` → `_meters_per_second`)
//!   unless the name already ends with it; a gauge of unit `1` gets `_ratio`;
//! - a monotonic sum ends in `_total`;
//! - attribute keys become label names the same way; a non-string value is
//!   written as JSON (`true`, `42`, `["a","b"]`).
//!
//! Written by hand: the rules are a few tables, and the crates that carry
//! them (Prometheus's Go translator) are not Rust.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

/// Units as Prometheus writes them.
const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("%", "percent"),
];

/// The denominators of `X/Y` units.
const PER_UNITS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

/// How deep an array or key-value list attribute is written; deeper
/// values are written as `"..."`.
const MAX_VALUE_DEPTH: usize = 4;

/// Longest label value written from an attribute, in bytes.
const MAX_VALUE_BYTES: usize = 2048;

/// What a metric is in Prometheus's terms, for its name's suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A monotonic sum: `_total`.
    Counter,
    /// A gauge or a non-monotonic sum: `_ratio` for unit `1`.
    Gauge,
    /// A histogram or summary: the unit only.
    Distribution,
}

/// Writes `text` with every run of characters outside `[A-Za-z0-9_]` (and
/// `:` when `colons`) as one `_`, into `out`.
fn sanitize(text: &str, colons: bool, out: &mut String) {
    let mut last_underscore = out.ends_with('_');
    for c in text.chars() {
        let keep = c.is_ascii_alphanumeric() || (colons && c == ':');
        if keep {
            out.push(c);
            last_underscore = false;
        } else if !last_underscore {
            out.push('_');
            last_underscore = true;
        }
    }
}

/// The unit's words (`seconds`, `meters_per_second`), or `None` for no unit.
pub fn unit_words(unit: &str) -> Option<String> {
    // Annotations (`{request}`) say what is counted, not a unit.
    let mut bare = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let bare = bare.trim();
    if bare.is_empty() || bare == "1" {
        return None;
    }
    let word = |u: &str, table: &[(&str, &str)]| -> String {
        match table.iter().find(|(k, _)| *k == u) {
            Some((_, w)) => (*w).to_string(),
            None => {
                let mut s = String::new();
                sanitize(u, false, &mut s);
                s.trim_matches('_').to_string()
            }
        }
    };
    let words = match bare.split_once('/') {
        Some((main, per)) => {
            let main = word(main.trim(), UNITS);
            let per = word(per.trim(), PER_UNITS);
            match (main.is_empty(), per.is_empty()) {
                (_, true) => main,
                (true, false) => format!("per_{per}"),
                (false, false) => format!("{main}_per_{per}"),
            }
        }
        None => word(bare, UNITS),
    };
    (!words.is_empty()).then_some(words)
}

/// The Prometheus name of an OTLP metric, or `None` when nothing of the
/// name is left.
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> Option<String> {
    let mut out = String::with_capacity(name.len() + 16);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    sanitize(name, true, &mut out);
    while out.ends_with('_') && out.len() > 1 {
        out.pop();
    }
    if out.is_empty() || out.bytes().all(|b| b == b'_') {
        return None;
    }
    if kind == NameKind::Counter
        && let Some(stem) = out.strip_suffix("_total")
    {
        out.truncate(stem.len());
    }
    let suffix = match unit_words(unit) {
        Some(words) => Some(words),
        None if kind == NameKind::Gauge && unit.trim() == "1" => Some("ratio".to_string()),
        None => None,
    };
    if let Some(words) = suffix
        && !out.ends_with(&format!("_{words}"))
        && out != words
    {
        out.push('_');
        out.push_str(&words);
    }
    if kind == NameKind::Counter {
        out.push_str("_total");
    }
    Some(out)
}

/// The label name of an attribute key, or `None` when nothing is left.
/// Runs of `_` become one, so no reserved `__` name comes out.
pub fn label_name(key: &str) -> Option<String> {
    let mut out = String::with_capacity(key.len() + 4);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push_str("key_");
    }
    sanitize(key, false, &mut out);
    if out.is_empty() || out.bytes().all(|b| b == b'_') {
        return None;
    }
    Some(out)
}

/// An attribute value as a label value: strings as they are, the rest as
/// JSON; cut at 2 KiB.
pub fn label_value(value: Option<&AnyValue>) -> String {
    let mut out = String::new();
    if let Some(any_value::Value::StringValue(s)) = value.and_then(|v| v.value.as_ref()) {
        out.push_str(s);
    } else {
        write_json(value, 0, &mut out);
    }
    if out.len() > MAX_VALUE_BYTES {
        let mut cut = MAX_VALUE_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn write_json(value: Option<&AnyValue>, depth: usize, out: &mut String) {
    use std::fmt::Write as _;
    if out.len() > MAX_VALUE_BYTES {
        return;
    }
    let Some(v) = value.and_then(|v| v.value.as_ref()) else {
        out.push_str("null");
        return;
    };
    if depth >= MAX_VALUE_DEPTH {
        out.push_str("\"...\"");
        return;
    }
    match v {
        any_value::Value::StringValue(s) => {
            out.push_str(&serde_json::Value::String(s.clone()).to_string());
        }
        any_value::Value::BoolValue(b) => {
            let _ = write!(out, "{b}");
        }
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        any_value::Value::BytesValue(b) => {
            out.push('"');
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('"');
        }
        any_value::Value::ArrayValue(a) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(Some(item), depth + 1, out);
            }
            out.push(']');
        }
        // An index into a profiles dictionary: nothing to look it up in.
        any_value::Value::StringValueStrindex(_) => out.push_str("null"),
        any_value::Value::KvlistValue(l) => {
            out.push('{');
            for (i, kv) in l.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(kv.key.clone()).to_string());
                out.push(':');
                write_json(kv.value.as_ref(), depth + 1, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;

    #[test]
    fn names_take_units_and_suffixes_as_the_specification_says() {
        let cases = [
            (
                "http.server.duration",
                "s",
                NameKind::Distribution,
                "http_server_duration_seconds",
            ),
            (
                "http.server.requests",
                "{request}",
                NameKind::Counter,
                "http_server_requests_total",
            ),
            (
                "process.cpu.time",
                "s",
                NameKind::Counter,
                "process_cpu_time_seconds_total",
            ),
            ("requests_total", "", NameKind::Counter, "requests_total"),
            ("memory.usage", "By", NameKind::Gauge, "memory_usage_bytes"),
            (
                "memory_usage_bytes",
                "By",
                NameKind::Gauge,
                "memory_usage_bytes",
            ),
            (
                "cpu.utilization",
                "1",
                NameKind::Gauge,
                "cpu_utilization_ratio",
            ),
            (
                "cpu.utilization",
                "1",
                NameKind::Counter,
                "cpu_utilization_total",
            ),
            ("speed", "m/s", NameKind::Gauge, "speed_meters_per_second"),
            ("rate", "{packet}/s", NameKind::Gauge, "rate_per_second"),
            ("2xx..count", "", NameKind::Gauge, "_2xx_count"),
            ("temp", "Cel", NameKind::Gauge, "temp_celsius"),
            ("odd", "widgets", NameKind::Gauge, "odd_widgets"),
            ("a:b", "", NameKind::Gauge, "a:b"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind).as_deref(),
                Some(want),
                "{name} {unit}"
            );
        }
        assert_eq!(metric_name("...", "", NameKind::Gauge), None);
        assert_eq!(metric_name("", "s", NameKind::Gauge), None);
    }

    #[test]
    fn keys_and_values_become_labels() {
        assert_eq!(label_name("http.route").as_deref(), Some("http_route"));
        assert_eq!(label_name("1st").as_deref(), Some("key_1st"));
        // Runs of `_` become one, so no reserved `__` name comes out.
        assert_eq!(label_name("__name__").as_deref(), Some("_name_"));
        assert_eq!(label_name("..."), None);
        let s = |x: &str| AnyValue {
            value: Some(any_value::Value::StringValue(x.into())),
        };
        assert_eq!(label_value(Some(&s("GET"))), "GET");
        let int = AnyValue {
            value: Some(any_value::Value::IntValue(200)),
        };
        assert_eq!(label_value(Some(&int)), "200");
        let arr = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![s("a"), s("b\"")],
            })),
        };
        assert_eq!(label_value(Some(&arr)), r#"["a","b\""]"#);
        assert_eq!(label_value(None), "null");
    }

    #[test]
    fn deep_and_long_values_are_cut() {
        let mut v = AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(10_000))),
        };
        assert_eq!(label_value(Some(&v)).len(), MAX_VALUE_BYTES);
        // Decoding stops at 100 levels (prost's and serde_json's limits); 90
        // nested arrays are written to a bounded depth.
        for _ in 0..90 {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let text = label_value(Some(&v));
        assert!(text.starts_with("[[[["), "{text}");
        assert!(text.contains("\"...\""), "{text}");
        assert!(text.len() < 64, "{text}");
    }
}
