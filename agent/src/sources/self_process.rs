//! The agent's own footprint, so that "costs almost nothing on the host" can
//! be checked on every host: resident memory and CPU seconds, from
//! /proc/self, as `vigil_agent_*` and under the Prometheus client's
//! standard `process_*` names that exporter dashboards (Node Exporter
//! Full's "Exporter" panels) read. Always on.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{Source, SourceError};
use crate::window::{FamilyKind, Windows};

use super::system::procfs::USER_HZ;

/// Reads /proc/self/status and /proc/self/stat.
pub struct SelfProcessSource {
    proc_path: PathBuf,
    buffer: String,
}

impl SelfProcessSource {
    /// A source reading the agent's own entries under `proc_path`.
    pub fn new(proc_path: PathBuf) -> Self {
        Self {
            proc_path,
            buffer: String::with_capacity(2048),
        }
    }

    fn read(&mut self, file: &str) -> Result<(), SourceError> {
        use std::io::Read;
        self.buffer.clear();
        std::fs::File::open(self.proc_path.join(file))
            .and_then(|mut f| f.read_to_string(&mut self.buffer))
            .map(|_| ())
            .map_err(|e| SourceError(format!("{file}: {e}")))
    }
}

/// `VmRSS` of /proc/self/status, in bytes.
pub fn parse_rss_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// `VmSize` of /proc/self/status, in bytes.
pub fn parse_virtual_bytes(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kb: f64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// The soft limit of a /proc/self/limits line (`Max open files`); -1 for
/// `unlimited`, as the Prometheus client reports it.
pub fn parse_limit(limits: &str, name: &str) -> Option<f64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    match rest.split_ascii_whitespace().next()? {
        "unlimited" => Some(-1.0),
        v => v.parse().ok(),
    }
}

/// utime + stime of /proc/self/stat, in seconds.
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After ')': state is field 3, so utime (14) and stime (15) are the 12th and 13th here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

impl Source for SelfProcessSource {
    fn name(&self) -> &'static str {
        "self"
    }

    fn sample(&mut self, out: &mut Windows, _now: SystemTime) -> Result<(), SourceError> {
        self.read("self/status")?;
        let rss = parse_rss_bytes(&self.buffer);
        let virtual_bytes = parse_virtual_bytes(&self.buffer);
        self.read("self/stat")?;
        let cpu = parse_cpu_seconds(&self.buffer);
        self.read("self/limits")?;
        let max_fds = parse_limit(&self.buffer, "Max open files");
        let max_virtual = parse_limit(&self.buffer, "Max address space");
        let open_fds = std::fs::read_dir(self.proc_path.join("self/fd"))
            .map(|d| d.count() as f64)
            .ok();
        let mut set = |name: &str, help: &str, kind: FamilyKind, v: Option<f64>| {
            if let Some(v) = v {
                let f = out.family(name, help, kind)?;
                out.set(f, &[], v)?;
            }
            Ok::<(), SourceError>(())
        };
        set(
            "vigil_agent_resident_memory_bytes",
            "Resident memory of the agent process.",
            FamilyKind::Gauge,
            rss,
        )?;
        set(
            "vigil_agent_cpu_seconds_total",
            "CPU time (user and system) the agent process has used.",
            FamilyKind::Counter,
            cpu,
        )?;
        set(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            FamilyKind::Counter,
            cpu,
        )?;
        set(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            FamilyKind::Gauge,
            rss,
        )?;
        set(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            FamilyKind::Gauge,
            virtual_bytes,
        )?;
        set(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            FamilyKind::Gauge,
            max_virtual,
        )?;
        set(
            "process_open_fds",
            "Number of open file descriptors.",
            FamilyKind::Gauge,
            open_fds,
        )?;
        set(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            FamilyKind::Gauge,
            max_fds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_cpu_with_odd_command_names() {
        assert_eq!(
            parse_rss_bytes("Name:\tx\nVmRSS:\t    5120 kB\n"),
            Some(5_242_880.0)
        );
        assert_eq!(parse_rss_bytes("Name:\tx\n"), None);
        let stat = "4242 (vigil (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("1 (x) S 1 2"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\nMax address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(parse_limit(limits, "Max address space"), Some(-1.0));
        assert_eq!(
            parse_virtual_bytes("VmSize:\t  2048 kB\n"),
            Some(2_097_152.0)
        );
    }

    #[test]
    fn reads_this_process() -> anyhow::Result<()> {
        let mut s = SelfProcessSource::new(PathBuf::from("/proc"));
        let mut w = Windows::new("h", "node", 100)?;
        w.begin_sample(1);
        s.sample(&mut w, SystemTime::now())?;
        let families = w.close()?;
        let rss = families
            .iter()
            .find(|f| f.name == "vigil_agent_resident_memory_bytes")
            .map(|f| f.series[0].value);
        assert!(rss.is_some_and(|r| r > 100_000.0), "{rss:?}");
        Ok(())
    }
}
