//! The Prometheus exposition formats as both binaries write them: the text
//! format 0.0.4 by default, OpenMetrics 1.0 when the scraper asks for it.
//!
//! [`ExpositionWriter`] writes `# HELP`, `# TYPE` and sample lines straight
//! into one buffer; callers pass label sets already rendered, so writing
//! formats only numbers. [`MetricKind`] is a family's kind, as the wire
//! protocol carries it and as every exposition declares it.

use std::fmt::Write as _;

use crate::proto::Kind;

/// A family's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Untyped.
    Untyped,
    /// Histogram (built from windows, or cumulative buckets).
    Histogram,
}

impl MetricKind {
    /// The kind of a wire kind; `None` for an unknown kind.
    pub fn from_wire(kind: i32) -> Option<Self> {
        match Kind::try_from(kind).ok()? {
            Kind::Counter => Some(MetricKind::Counter),
            Kind::Gauge => Some(MetricKind::Gauge),
            Kind::Untyped => Some(MetricKind::Untyped),
            Kind::Histogram => Some(MetricKind::Histogram),
            Kind::Unspecified => None,
        }
    }
}

/// Which format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// Picks the format from an `Accept` header, as Prometheus negotiates it.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Writes one exposition into a buffer.
pub struct ExpositionWriter {
    out: String,
    format: Format,
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(out: &mut String, help: &str, format: Format) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if format == Format::OpenMetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

impl ExpositionWriter {
    /// A writer with room for `capacity` bytes.
    pub fn new(format: Format, capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            format,
        }
    }

    /// Writes `# HELP` and `# TYPE` for a family. In OpenMetrics a counter's
    /// family name drops `_total`; a counter without `_total` is `unknown`.
    pub fn header(&mut self, name: &str, help: &str, kind: MetricKind) {
        let (family, type_name) = match (self.format, kind) {
            (_, MetricKind::Gauge) => (name, "gauge"),
            (_, MetricKind::Histogram) => (name, "histogram"),
            (Format::Text, MetricKind::Counter) => (name, "counter"),
            (Format::Text, MetricKind::Untyped) => (name, "untyped"),
            (Format::OpenMetrics, MetricKind::Counter) => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            },
            (Format::OpenMetrics, MetricKind::Untyped) => (name, "unknown"),
        };
        if !help.is_empty() {
            self.out.push_str("# HELP ");
            self.out.push_str(family);
            self.out.push(' ');
            escape_help(&mut self.out, help, self.format);
            self.out.push('\n');
        }
        self.out.push_str("# TYPE ");
        self.out.push_str(family);
        self.out.push(' ');
        self.out.push_str(type_name);
        self.out.push('\n');
    }

    /// Writes one sample line: `name{labels,extra} value`.
    pub fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &str,
        extra: Option<(&str, f64)>,
        value: f64,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || extra.is_some() {
            self.out.push('{');
            self.out.push_str(labels);
            if let Some((label, bound)) = extra {
                if !labels.is_empty() {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                write_value(&mut self.out, bound);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// Ends the exposition (`# EOF` in OpenMetrics) and returns it.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_negotiates_the_format() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
    }
}
