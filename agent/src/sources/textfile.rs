//! The textfile source, as node_exporter's: every `*.prom` file in a folder,
//! in the Prometheus text format, read at every sample. Cron jobs write these
//! files (atomically, by rename) to publish values the agent cannot measure.
//!
//! A file that does not parse is reported (log line, `node_textfile_scrape_error`)
//! and skipped whole; the other files still count. `node_textfile_mtime_seconds`
//! tells when each file last changed, so a stale cron job can be alerted on.
//! Labels named `instance` or `job` are renamed `exported_instance` and
//! `exported_job`, as Prometheus does, since the agent sets those two.
//!
//! A file over `max_file_size` is skipped unread, and all files together
//! add at most `max_series` series (a file that would pass it is skipped
//! whole), so a runaway cron job cannot use up the agent's `max_series`
//! and starve the system and self metrics.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use vigil_shared::text_format::{self, TextFamily, TextKind};

use super::{Source, SourceError, unix_seconds};
use crate::window::{FamilyKind, Windows};

/// Reads `*.prom` files from one folder.
pub struct TextfileSource {
    directory: PathBuf,
    max_file_bytes: u64,
    max_series: usize,
}

impl TextfileSource {
    /// A source over `directory`, reading files up to `max_file_bytes` and
    /// adding at most `max_series` series in all.
    pub fn new(directory: PathBuf, max_file_bytes: u64, max_series: usize) -> Self {
        Self {
            directory,
            max_file_bytes,
            max_series,
        }
    }
}

fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<TextFamily>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > max_bytes {
        return Err(format!(
            "larger than {max_bytes} bytes (sources.textfile.max_file_size); skipped"
        ));
    }
    let families = text_format::parse(&text).map_err(|e| e.to_string())?;
    for family in &families {
        if matches!(family.kind, TextKind::Histogram | TextKind::Summary) {
            return Err(format!(
                "{}: histogram and summary families are not supported by the textfile source",
                family.name
            ));
        }
        if let Some(s) = family.samples.iter().find(|s| s.timestamp_ms.is_some()) {
            return Err(format!(
                "line {}: {}: timestamps are not supported in textfiles",
                s.line, s.name
            ));
        }
    }
    Ok(families)
}

/// Records `families`, at most `budget` series; returns how many it used.
fn record(
    out: &mut Windows,
    families: &[TextFamily],
    path: &Path,
    budget: usize,
) -> Result<usize, String> {
    let wanted: usize = families.iter().map(|f| f.samples.len()).sum();
    if wanted > budget {
        return Err(format!(
            "{wanted} series, more than the {budget} left of sources.textfile.max_series; skipped"
        ));
    }
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(8);
    for family in families {
        let kind = match family.kind {
            TextKind::Counter => FamilyKind::Counter,
            TextKind::Gauge => FamilyKind::Gauge,
            _ => FamilyKind::Untyped,
        };
        let help = family
            .help
            .clone()
            .unwrap_or_else(|| format!("Metric read from {}", path.display()));
        let id = out
            .family(&family.name, &help, kind)
            .map_err(|e| e.to_string())?;
        for sample in &family.samples {
            labels.clear();
            for (k, v) in &sample.labels {
                let k = match k.as_str() {
                    "instance" => "exported_instance",
                    "job" => "exported_job",
                    other => other,
                };
                labels.push((k, v.as_str()));
            }
            out.set(id, &labels, sample.value)
                .map_err(|e| format!("line {}: {e}", sample.line))?;
        }
    }
    Ok(wanted)
}

impl Source for TextfileSource {
    fn name(&self) -> &'static str {
        "textfile"
    }

    fn sample(&mut self, out: &mut Windows, _now: SystemTime) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.directory) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "prom"))
                .collect(),
            Err(e) => {
                problems.push(format!("{}: cannot list: {e}", self.directory.display()));
                Vec::new()
            }
        };
        files.sort();
        let mtime = out
            .family(
                "node_textfile_mtime_seconds",
                "Unixtime mtime of textfiles successfully read.",
                FamilyKind::Gauge,
            )
            .map_err(|e| SourceError(e.to_string()))?;
        let mut budget = self.max_series;
        for path in &files {
            let result = read_file(path, self.max_file_bytes)
                .and_then(|families| record(out, &families, path, budget));
            match result {
                Ok(used) => {
                    budget -= used;
                    if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
                        let name = path.display().to_string();
                        out.set(mtime, &[("file", &name)], unix_seconds(modified))
                            .map_err(|e| SourceError(e.to_string()))?;
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        let error = out
            .family(
                "node_textfile_scrape_error",
                "1 if there was an error opening or reading a file, 0 otherwise",
                FamilyKind::Gauge,
            )
            .map_err(|e| SourceError(e.to_string()))?;
        out.set(error, &[], if problems.is_empty() { 0.0 } else { 1.0 })
            .map_err(|e| SourceError(e.to_string()))?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::proto;

    fn values(families: &[proto::Family], name: &str) -> Vec<f64> {
        families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| f.series.iter().map(|s| s.value))
            .collect()
    }

    #[test]
    fn good_files_count_and_bad_files_are_skipped() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("good.prom"),
            "# HELP backup_last_success_timestamp_seconds Last good backup.\n# TYPE backup_last_success_timestamp_seconds gauge\nbackup_last_success_timestamp_seconds{job=\"backup\"} 1.7e9\n",
        )?;
        std::fs::write(dir.path().join("bad.prom"), "broken{ 1\nalso_here 2\n")?;
        std::fs::write(dir.path().join("ignored.txt"), "not read 1\n")?;
        let mut source = TextfileSource::new(dir.path().to_path_buf(), 1 << 20, 100);
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        let err = source
            .sample(&mut w, SystemTime::now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bad.prom: line 1"), "{err}");
        let families = w.close()?;
        assert_eq!(
            values(&families, "backup_last_success_timestamp_seconds"),
            [1.7e9]
        );
        assert_eq!(values(&families, "also_here"), Vec::<f64>::new());
        assert_eq!(values(&families, "node_textfile_scrape_error"), [1.0]);
        assert_eq!(values(&families, "node_textfile_mtime_seconds").len(), 1);
        let renamed = families
            .iter()
            .find(|f| f.name == "backup_last_success_timestamp_seconds")
            .map(|f| {
                f.series[0]
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            renamed,
            Some(vec![
                "exported_job=backup".to_string(),
                "instance=h".into(),
                "job=node".into()
            ])
        );
        Ok(())
    }

    #[test]
    fn timestamps_and_histograms_are_refused_per_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a.prom"), "x 1 1700000000000\n")?;
        std::fs::write(dir.path().join("b.prom"), "# TYPE h histogram\nh_count 1\n")?;
        std::fs::write(dir.path().join("c.prom"), "ok 1\n")?;
        let mut source = TextfileSource::new(dir.path().to_path_buf(), 1 << 20, 100);
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        let err = source
            .sample(&mut w, SystemTime::now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("a.prom: line 1: x: timestamps"), "{err}");
        assert!(err.contains("b.prom: h: histogram"), "{err}");
        let families = w.close()?;
        assert_eq!(values(&families, "ok"), [1.0]);
        Ok(())
    }

    #[test]
    fn missing_folder_is_an_error_not_a_crash() -> anyhow::Result<()> {
        let mut source =
            TextfileSource::new(PathBuf::from("/nonexistent/vigil-textfile"), 1 << 20, 100);
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        assert!(source.sample(&mut w, SystemTime::now()).is_err());
        assert_eq!(values(&w.close()?, "node_textfile_scrape_error"), [1.0]);
        Ok(())
    }

    #[test]
    fn big_files_and_too_many_series_are_skipped_not_starving_others() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a-huge.prom"), "x 1\n".repeat(100_000))?;
        let sixty = |name: &str| -> String {
            (0..60)
                .map(|i| format!("{name}{{i=\"{i}\"}} 1\n"))
                .collect()
        };
        std::fs::write(dir.path().join("b.prom"), sixty("b"))?;
        std::fs::write(dir.path().join("c.prom"), sixty("c"))?;
        let mut source = TextfileSource::new(dir.path().to_path_buf(), 64 * 1024, 100);
        let mut w = Windows::new("h", "node", 200)?;
        w.begin_sample(1);
        let err = source
            .sample(&mut w, SystemTime::now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("a-huge.prom: larger than 65536 bytes"),
            "{err}"
        );
        assert!(
            err.contains("c.prom: 60 series, more than the 40 left"),
            "{err}"
        );
        // Room is left for the other sources.
        let own = w.family("vigil_agent_own", "", FamilyKind::Gauge)?;
        w.set(own, &[], 1.0)?;
        let families = w.close()?;
        assert_eq!(values(&families, "b").len(), 60);
        assert!(values(&families, "c").is_empty());
        assert!(values(&families, "x").is_empty());
        assert_eq!(values(&families, "vigil_agent_own"), [1.0]);
        Ok(())
    }
}
