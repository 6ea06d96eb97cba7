//! The Prometheus exposition of everything the collector holds: the text
//! format 0.0.4 by default, OpenMetrics 1.0 when the scraper asks for it.
//!
//! Families are written in name order straight into one response buffer;
//! label sets were rendered when the series was stored, so a scrape formats
//! only numbers. Windowed series are Prometheus histograms: `_bucket` (with
//! the family's ladder), `_sum` and `_count`, one observation per sample.

use std::fmt::Write as _;

use crate::store::{StoredKind, StoredSeries};

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
    pub fn header(&mut self, name: &str, help: &str, kind: StoredKind) {
        let (family, type_name) = match (self.format, kind) {
            (_, StoredKind::Gauge) => (name, "gauge"),
            (_, StoredKind::Histogram) => (name, "histogram"),
            (Format::Text, StoredKind::Counter) => (name, "counter"),
            (Format::Text, StoredKind::Untyped) => (name, "untyped"),
            (Format::OpenMetrics, StoredKind::Counter) => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            },
            (Format::OpenMetrics, StoredKind::Untyped) => (name, "unknown"),
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

    /// Writes a stored family and its series.
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: StoredKind,
        bounds: &[f64],
        series: &mut dyn Iterator<Item = &StoredSeries>,
    ) {
        self.header(name, help, kind);
        for s in series {
            match (&s.cumulative, kind) {
                (Some(c), StoredKind::Histogram) => {
                    for (bound, count) in bounds.iter().zip(&c.buckets) {
                        self.sample(
                            name,
                            "_bucket",
                            &s.labels_text,
                            Some(("le", *bound)),
                            *count as f64,
                        );
                    }
                    self.sample(
                        name,
                        "_bucket",
                        &s.labels_text,
                        Some(("le", f64::INFINITY)),
                        c.count as f64,
                    );
                    self.sample(name, "_sum", &s.labels_text, None, c.sum);
                    self.sample(name, "_count", &s.labels_text, None, c.count as f64);
                }
                _ => self.sample(name, "", &s.labels_text, None, s.value),
            }
        }
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
    use crate::store::Cumulative;

    fn series(labels: &str, value: f64, cumulative: Option<Cumulative>) -> StoredSeries {
        StoredSeries {
            labels_text: labels.into(),
            value,
            cumulative,
            updated: 0,
            agent: 0,
        }
    }

    #[test]
    fn text_format_histogram_and_counter() {
        let mut w = ExpositionWriter::new(Format::Text, 1024);
        let c = Cumulative {
            buckets: vec![1, 3],
            sum: 1.25,
            count: 4,
        };
        let h = [series("job=\"n\"", 0.5, Some(c))];
        w.family(
            "vigil_x_ratio",
            "X.\nline",
            StoredKind::Histogram,
            &[0.5, 1.0],
            &mut h.iter(),
        );
        let t = [series("", f64::NAN, None)];
        w.family("a_total", "", StoredKind::Counter, &[], &mut t.iter());
        let text = w.finish();
        assert_eq!(
            text,
            "# HELP vigil_x_ratio X.\\nline\n# TYPE vigil_x_ratio histogram\n\
             vigil_x_ratio_bucket{job=\"n\",le=\"0.5\"} 1\nvigil_x_ratio_bucket{job=\"n\",le=\"1\"} 3\n\
             vigil_x_ratio_bucket{job=\"n\",le=\"+Inf\"} 4\nvigil_x_ratio_sum{job=\"n\"} 1.25\n\
             vigil_x_ratio_count{job=\"n\"} 4\n# TYPE a_total counter\na_total NaN\n"
        );
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let mut w = ExpositionWriter::new(Format::OpenMetrics, 1024);
        let s = [series("a=\"1\"", 3.0, None)];
        w.family(
            "jobs_total",
            "Jobs \"done\".",
            StoredKind::Counter,
            &[],
            &mut s.iter(),
        );
        w.family("odd_counter", "", StoredKind::Counter, &[], &mut s.iter());
        w.family("thing", "", StoredKind::Untyped, &[], &mut s.iter());
        let text = w.finish();
        assert!(
            text.contains(
                "# HELP jobs Jobs \\\"done\\\".\n# TYPE jobs counter\njobs_total{a=\"1\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE odd_counter unknown\n"));
        assert!(text.contains("# TYPE thing unknown\n"));
        assert!(text.ends_with("# EOF\n"));
    }

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
