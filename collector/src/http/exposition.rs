//! The Prometheus exposition of everything the store holds, written with
//! [`vigil_shared::exposition::ExpositionWriter`].
//!
//! Label sets were rendered when the series was stored, so a scrape formats
//! only numbers. Windowed series are Prometheus histograms: `_bucket` (with
//! the family's ladder), `_sum` and `_count`, one observation per sample.

use vigil_shared::exposition::{ExpositionWriter, MetricKind};
use vigil_store::StoredSeries;

/// Writes a stored family and its series.
pub fn write_family(
    w: &mut ExpositionWriter,
    name: &str,
    help: &str,
    kind: MetricKind,
    bounds: &[f64],
    series: &mut dyn Iterator<Item = (&str, &StoredSeries)>,
) {
    w.header(name, help, kind);
    for (labels, s) in series {
        match (&s.cumulative, kind) {
            (Some(c), MetricKind::Histogram) => {
                for (bound, count) in bounds.iter().zip(&c.buckets) {
                    w.sample(name, "_bucket", labels, Some(("le", *bound)), *count as f64);
                }
                w.sample(
                    name,
                    "_bucket",
                    labels,
                    Some(("le", f64::INFINITY)),
                    c.count as f64,
                );
                w.sample(name, "_sum", labels, None, c.sum);
                w.sample(name, "_count", labels, None, c.count as f64);
            }
            _ => w.sample(name, "", labels, None, s.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::exposition::Format;
    use vigil_store::Cumulative;

    fn series(labels: &str, value: f64, cumulative: Option<Cumulative>) -> (&str, StoredSeries) {
        let s = StoredSeries {
            value,
            cumulative,
            updated: 0,
            agent: 0,
        };
        (labels, s)
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
        write_family(
            &mut w,
            "vigil_x_ratio",
            "X.\nline",
            MetricKind::Histogram,
            &[0.5, 1.0],
            &mut h.iter().map(|(l, s)| (*l, s)),
        );
        let t = [series("", f64::NAN, None)];
        write_family(
            &mut w,
            "a_total",
            "",
            MetricKind::Counter,
            &[],
            &mut t.iter().map(|(l, s)| (*l, s)),
        );
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
        write_family(
            &mut w,
            "jobs_total",
            "Jobs \"done\".",
            MetricKind::Counter,
            &[],
            &mut s.iter().map(|(l, s)| (*l, s)),
        );
        write_family(
            &mut w,
            "odd_counter",
            "",
            MetricKind::Counter,
            &[],
            &mut s.iter().map(|(l, s)| (*l, s)),
        );
        write_family(
            &mut w,
            "thing",
            "",
            MetricKind::Untyped,
            &[],
            &mut s.iter().map(|(l, s)| (*l, s)),
        );
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
}
