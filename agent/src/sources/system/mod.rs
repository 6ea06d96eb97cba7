//! The system source: this host's CPU, memory, load, filesystems, disks,
//! network interfaces and kernel counters under node_exporter's names, labels
//! and units, so that existing rules and dashboards work unchanged; plus the
//! per-second distributions (`vigil_*`) that a 15-second scrape would miss.
//!
//! It reads /proc and /sys directly (under `proc_path` and `sys_path`, so
//! tests point it at fixtures): a read costs 6–25 µs, where sysinfo's
//! refreshes cost 70–700 µs and give percentages rather than node_exporter's
//! counters. Every family of node_exporter 1.5's default Linux collectors is
//! given (see [`collect`]), with `node_scrape_collector_success` and
//! `node_scrape_collector_duration_seconds` per collector.

pub mod collect;
pub mod filesystem;
pub mod kernel;
pub mod procfs;
pub mod sysfs;
mod timex;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use regex_lite::Regex;
use vigil_shared::histogram::{BYTES_PER_SECOND, RATIO};

use super::{Source, SourceError, unix_seconds};
use crate::config::SystemConfig;
use crate::window::{FamilyKind, Windows};
use filesystem::{FsError, FsStatter};
use procfs::{CPU_MODES, CpuTicks, NET_RECEIVE, NET_TRANSMIT, SECTOR_BYTES, USER_HZ};

/// node_exporter's disk families, in /proc/diskstats column order, with the
/// factor that turns the column into the family's unit.
const DISK_FAMILIES: [(&str, &str, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        SECTOR_BYTES,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        SECTOR_BYTES,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        0.001,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        0.001,
    ),
];

/// Readings kept from the previous sample, to turn counters into rates.
struct Previous<T> {
    at: Instant,
    value: T,
}

/// Reads the host.
pub struct SystemSource {
    proc_path: PathBuf,
    rootfs_path: PathBuf,
    mount_points_exclude: Regex,
    fs_types_exclude: Regex,
    disk_exclude: Regex,
    net_exclude: Option<Regex>,
    statter: FsStatter,
    cpu_labels: Vec<String>,
    previous_cpu: Option<CpuTicks>,
    previous_disk: Vec<(String, Previous<f64>)>,
    previous_net: Vec<(String, Previous<[f64; 2]>)>,
    buffer: String,
    problems: Vec<String>,
    sys_path: PathBuf,
    page_size: f64,
    filters: collect::Filters,
    slow: collect::Tier,
    medium: collect::Tier,
    ten_seconds: collect::Tier,
    scratch: Option<Windows>,
    last_timings: std::collections::HashMap<&'static str, (f64, bool)>,
    /// (major, minor) of each block device, from the last diskstats read.
    disks: Vec<(String, u32, u32)>,
    /// Collectors not run (`sources.system.collectors_disabled`).
    disabled: Vec<String>,
    /// Set when no textfile folder is configured: the source then gives
    /// `node_textfile_scrape_error 0`, as node_exporter does.
    pub textfile_absent: bool,
}

/// Collectors read every ten seconds ([`collect::MEDIUM_EVERY`]) and
/// repeated from memory in between: counters and gauges that node_exporter's
/// users scrape every 15 to 60 s, whose files are larger or more numerous
/// than the per-second ones.
const TEN_SECONDS: [&str; 10] = [
    "netstat",
    "sockstat",
    "softnet",
    "conntrack",
    "vmstat",
    "filefd",
    "pressure",
    "schedstat",
    "timex",
    "thermal_zone",
];

/// Collectors whose files another collector reads: (collector, reader).
/// Disabling the reader disables them.
pub const SHARED: [(&str, &str); 5] = [
    ("cpu", "stat"),
    ("entropy", "filefd"),
    ("udp_queues", "arp"),
    ("netclass", "arp"),
    ("time", "os"),
];

/// node_exporter's collector names, in the order the source runs them.
pub const COLLECTORS: [&str; 24] = [
    "stat",
    "meminfo",
    "loadavg",
    "diskstats",
    "netdev",
    "filesystem",
    "uname",
    "netstat",
    "sockstat",
    "softnet",
    "arp",
    "udp_queues",
    "conntrack",
    "vmstat",
    "filefd",
    "pressure",
    "schedstat",
    "timex",
    "time",
    "netclass",
    "thermal_zone",
    "os",
    "entropy",
    "cpu",
];

fn regex(pattern: &str, key: &str) -> Result<Regex, SourceError> {
    Regex::new(pattern).map_err(|e| SourceError(format!("sources.system.{key}: {e}")))
}

impl SystemSource {
    /// A system source as configured.
    pub fn new(config: &SystemConfig) -> Result<Self, SourceError> {
        Ok(Self {
            proc_path: config.proc_path.clone(),
            rootfs_path: config.rootfs_path.clone(),
            mount_points_exclude: regex(
                &config.filesystem_mount_points_exclude,
                "filesystem_mount_points_exclude",
            )?,
            fs_types_exclude: regex(
                &config.filesystem_fs_types_exclude,
                "filesystem_fs_types_exclude",
            )?,
            disk_exclude: regex(&config.disk_devices_exclude, "disk_devices_exclude")?,
            net_exclude: if config.network_devices_exclude.is_empty() {
                None
            } else {
                Some(regex(
                    &config.network_devices_exclude,
                    "network_devices_exclude",
                )?)
            },
            statter: FsStatter::new(config.filesystem_timeout.0),
            cpu_labels: Vec::new(),
            previous_cpu: None,
            previous_disk: Vec::new(),
            previous_net: Vec::new(),
            buffer: String::with_capacity(16 * 1024),
            problems: Vec::new(),
            sys_path: config.sys_path.clone(),
            page_size: rustix::param::page_size() as f64,
            filters: collect::Filters::new()?,
            slow: collect::Tier::default(),
            medium: collect::Tier::default(),
            ten_seconds: collect::Tier::default(),
            scratch: None,
            last_timings: std::collections::HashMap::new(),
            disks: Vec::new(),
            textfile_absent: false,
            disabled: config.collectors_disabled.clone(),
        })
    }

    /// Reads `proc_path/relative` into the reused buffer.
    fn read(&mut self, relative: &str) -> bool {
        use std::io::Read;
        self.buffer.clear();
        let path = self.proc_path.join(relative);
        let result =
            std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut self.buffer));
        match result {
            Ok(_) => true,
            Err(e) => {
                self.problems.push(format!("{}: {e}", path.display()));
                false
            }
        }
    }

    /// True when `network_devices_exclude` leaves the interface out.
    fn net_excluded(&self, device: &str) -> bool {
        self.net_exclude
            .as_ref()
            .is_some_and(|r| r.is_match(device))
    }

    pub(super) fn note_bad_lines(&mut self, file: &str, bad: usize) {
        if bad > 0 {
            self.problems
                .push(format!("{file}: {bad} lines did not parse"));
        }
    }

    pub(super) fn cpu_label(&mut self, cpu: u32) -> String {
        let i = cpu as usize;
        while self.cpu_labels.len() <= i {
            self.cpu_labels.push(self.cpu_labels.len().to_string());
        }
        self.cpu_labels[i].clone()
    }

    fn sample_stat(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read("stat") {
            return Ok(());
        }
        let stat = procfs::parse_stat(&self.buffer);
        self.note_bad_lines("stat", stat.bad_lines);
        let seconds = out.family(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            FamilyKind::Counter,
        )?;
        let guest = out.family(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            FamilyKind::Counter,
        )?;
        for cpu in &stat.cpus {
            let Some(n) = cpu.cpu else { continue };
            let label = self.cpu_label(n);
            for (mode, ticks) in CPU_MODES.iter().zip(cpu.ticks) {
                out.set(seconds, &[("cpu", &label), ("mode", mode)], ticks / USER_HZ)?;
            }
            out.set(
                guest,
                &[("cpu", &label), ("mode", "user")],
                cpu.ticks[8] / USER_HZ,
            )?;
            out.set(
                guest,
                &[("cpu", &label), ("mode", "nice")],
                cpu.ticks[9] / USER_HZ,
            )?;
        }
        if let Some(all) = stat.cpus.iter().find(|c| c.cpu.is_none()) {
            if let Some(prev) = &self.previous_cpu {
                let total = all.total() - prev.total();
                let idle = all.idle() - prev.idle();
                if total > 0.0 && idle >= 0.0 {
                    let busy = out.family(
                        "vigil_cpu_busy_ratio",
                        "Share of CPU time not idle or waiting for I/O, over all CPUs, one observation per sample.",
                        FamilyKind::Histogram(RATIO),
                    )?;
                    out.observe(busy, &[], (1.0 - idle / total).clamp(0.0, 1.0))?;
                }
            }
            self.previous_cpu = Some(all.clone());
        }
        let scalars: [(&str, &str, FamilyKind, Option<f64>); 6] = [
            (
                "node_intr_total",
                "Total number of interrupts serviced.",
                FamilyKind::Counter,
                stat.interrupts,
            ),
            (
                "node_context_switches_total",
                "Total number of context switches.",
                FamilyKind::Counter,
                stat.context_switches,
            ),
            (
                "node_forks_total",
                "Total number of forks.",
                FamilyKind::Counter,
                stat.forks,
            ),
            (
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                FamilyKind::Gauge,
                stat.boot_time,
            ),
            (
                "node_procs_running",
                "Number of processes in runnable state.",
                FamilyKind::Gauge,
                stat.procs_running,
            ),
            (
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                FamilyKind::Gauge,
                stat.procs_blocked,
            ),
        ];
        for (name, help, kind, value) in scalars {
            if let Some(v) = value {
                let f = out.family(name, help, kind)?;
                out.set(f, &[], v)?;
            }
        }
        Ok(())
    }

    fn sample_meminfo(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read("meminfo") {
            return Ok(());
        }
        let (fields, bad) = procfs::parse_meminfo(&self.buffer);
        self.note_bad_lines("meminfo", bad);
        let mut total = None;
        let mut available = None;
        let mut name = String::with_capacity(64);
        for field in &fields {
            name.clear();
            name.push_str("node_memory_");
            name.push_str(&field.name);
            let help = format!("Memory information field {}.", field.name);
            let f = out.family(&name, &help, FamilyKind::Gauge)?;
            out.set(f, &[], field.value)?;
            match field.name.as_str() {
                "MemTotal_bytes" => total = Some(field.value),
                "MemAvailable_bytes" => available = Some(field.value),
                _ => {}
            }
        }
        if let (Some(total), Some(available)) = (total, available)
            && total > 0.0
        {
            let used = out.family(
                "vigil_memory_used_ratio",
                "Share of memory not available to new work (1 - MemAvailable/MemTotal), one observation per sample.",
                FamilyKind::Histogram(RATIO),
            )?;
            out.observe(used, &[], (1.0 - available / total).clamp(0.0, 1.0))?;
        }
        Ok(())
    }

    fn sample_loadavg(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read("loadavg") {
            return Ok(());
        }
        match procfs::parse_loadavg(&self.buffer) {
            Some([one, five, fifteen]) => {
                for (name, help, v) in [
                    ("node_load1", "1m load average.", one),
                    ("node_load5", "5m load average.", five),
                    ("node_load15", "15m load average.", fifteen),
                ] {
                    let f = out.family(name, help, FamilyKind::Gauge)?;
                    out.set(f, &[], v)?;
                }
            }
            None => self.problems.push("loadavg: does not parse".into()),
        }
        Ok(())
    }

    fn sample_diskstats(&mut self, out: &mut Windows, now: Instant) -> Result<(), SourceError> {
        if !self.read("diskstats") {
            return Ok(());
        }
        let (disks, bad) = procfs::parse_diskstats(&self.buffer);
        self.note_bad_lines("diskstats", bad);
        let mut families = [None; 17];
        for (slot, (name, help, _)) in families.iter_mut().zip(DISK_FAMILIES) {
            let kind = if name.ends_with("_total") {
                FamilyKind::Counter
            } else {
                FamilyKind::Gauge
            };
            *slot = Some(out.family(name, help, kind)?);
        }
        let busy = out.family(
            "vigil_disk_busy_ratio",
            "Share of each second the device was busy with I/O, one observation per sample.",
            FamilyKind::Histogram(RATIO),
        )?;
        let mut previous = std::mem::take(&mut self.previous_disk);
        let mut next = Vec::with_capacity(disks.len());
        self.disks.clear();
        for disk in disks
            .iter()
            .filter(|d| !self.disk_exclude.is_match(&d.device))
        {
            self.disks
                .push((disk.device.clone(), disk.major, disk.minor));
            let labels = [("device", disk.device.as_str())];
            for ((family, (_, _, factor)), value) in
                families.iter().zip(DISK_FAMILIES).zip(&disk.fields)
            {
                if let Some(f) = family {
                    out.set(*f, &labels, value * factor)?;
                }
            }
            let io_ms = disk.fields[9];
            if let Some(i) = previous.iter().position(|(d, _)| *d == disk.device) {
                let (_, prev) = previous.swap_remove(i);
                let elapsed_ms = now.duration_since(prev.at).as_secs_f64() * 1000.0;
                let delta = io_ms - prev.value;
                if elapsed_ms > 0.0 && delta >= 0.0 {
                    out.observe(busy, &labels, (delta / elapsed_ms).clamp(0.0, 1.0))?;
                }
            }
            next.push((
                disk.device.clone(),
                Previous {
                    at: now,
                    value: io_ms,
                },
            ));
        }
        self.previous_disk = next;
        Ok(())
    }

    fn sample_net_dev(&mut self, out: &mut Windows, now: Instant) -> Result<(), SourceError> {
        if !self.read("net/dev") {
            return Ok(());
        }
        let (devices, bad) = procfs::parse_net_dev(&self.buffer);
        self.note_bad_lines("net/dev", bad);
        let mut receive = Vec::with_capacity(8);
        let mut transmit = Vec::with_capacity(8);
        let mut name = String::with_capacity(48);
        for (direction, columns, ids) in [
            ("receive", NET_RECEIVE, &mut receive),
            ("transmit", NET_TRANSMIT, &mut transmit),
        ] {
            for column in columns {
                name.clear();
                name.push_str("node_network_");
                name.push_str(direction);
                name.push('_');
                name.push_str(column);
                name.push_str("_total");
                let help = format!("Network device statistic {direction}_{column}.");
                ids.push(out.family(&name, &help, FamilyKind::Counter)?);
            }
        }
        let receive_rate = out.family(
            "vigil_network_receive_bytes_per_second",
            "Bytes received per second by each interface, one observation per sample.",
            FamilyKind::Histogram(BYTES_PER_SECOND),
        )?;
        let transmit_rate = out.family(
            "vigil_network_transmit_bytes_per_second",
            "Bytes sent per second by each interface, one observation per sample.",
            FamilyKind::Histogram(BYTES_PER_SECOND),
        )?;
        let mut previous = std::mem::take(&mut self.previous_net);
        let mut next = Vec::with_capacity(devices.len());
        for dev in &devices {
            if self.net_excluded(&dev.device) {
                continue;
            }
            let labels = [("device", dev.device.as_str())];
            for (f, v) in receive.iter().zip(dev.receive) {
                out.set(*f, &labels, v)?;
            }
            for (f, v) in transmit.iter().zip(dev.transmit) {
                out.set(*f, &labels, v)?;
            }
            let bytes = [dev.receive[0], dev.transmit[0]];
            if let Some(i) = previous.iter().position(|(d, _)| *d == dev.device) {
                let (_, prev) = previous.swap_remove(i);
                let elapsed = now.duration_since(prev.at).as_secs_f64();
                let (rx, tx) = (bytes[0] - prev.value[0], bytes[1] - prev.value[1]);
                // A negative delta is a counter reset (driver reload): no rate this sample.
                if elapsed > 0.0 && rx >= 0.0 && tx >= 0.0 {
                    out.observe(receive_rate, &labels, rx / elapsed)?;
                    out.observe(transmit_rate, &labels, tx / elapsed)?;
                }
            }
            next.push((
                dev.device.clone(),
                Previous {
                    at: now,
                    value: bytes,
                },
            ));
        }
        self.previous_net = next;
        Ok(())
    }

    fn sample_filesystems(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read("self/mounts") {
            return Ok(());
        }
        let (mounts, bad) = procfs::parse_mounts(&self.buffer);
        self.note_bad_lines("self/mounts", bad);
        let ids = [
            out.family(
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                FamilyKind::Gauge,
            )?,
            out.family(
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                FamilyKind::Gauge,
            )?,
            out.family(
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                FamilyKind::Gauge,
            )?,
            out.family(
                "node_filesystem_files",
                "Filesystem total file nodes.",
                FamilyKind::Gauge,
            )?,
            out.family(
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                FamilyKind::Gauge,
            )?,
        ];
        let readonly = out.family(
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            FamilyKind::Gauge,
        )?;
        let device_error = out.family(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
            FamilyKind::Gauge,
        )?;
        let kept: Vec<&procfs::Mount> = mounts
            .iter()
            .filter(|m| {
                !self.mount_points_exclude.is_match(&m.mount_point)
                    && !self.fs_types_exclude.is_match(&m.fs_type)
            })
            .collect();
        let paths: Vec<PathBuf> = kept
            .iter()
            .map(|m| rooted(&self.rootfs_path, &m.mount_point))
            .collect();
        let stats = self.statter.stat_all(&paths);
        for (mount, stat) in kept.into_iter().zip(stats) {
            let labels = [
                ("device", mount.device.as_str()),
                ("fstype", mount.fs_type.as_str()),
                ("mountpoint", mount.mount_point.as_str()),
            ];
            match stat {
                Ok(s) => {
                    for (f, v) in ids.iter().zip([
                        s.size_bytes,
                        s.free_bytes,
                        s.avail_bytes,
                        s.files,
                        s.files_free,
                    ]) {
                        out.set(*f, &labels, v)?;
                    }
                    out.set(readonly, &labels, if mount.read_only { 1.0 } else { 0.0 })?;
                    out.set(device_error, &labels, 0.0)?;
                }
                Err(FsError::Stuck) => {
                    self.problems.push(format!(
                        "{}: statfs did not answer in time; skipped until it does",
                        mount.mount_point
                    ));
                    out.set(device_error, &labels, 1.0)?;
                }
                Err(FsError::Failed(e)) => {
                    tracing::debug!(mountpoint = %mount.mount_point, error = %e, "no filesystem statistics");
                    out.set(device_error, &labels, 1.0)?;
                }
            }
        }
        Ok(())
    }

    fn sample_uname(&mut self, out: &mut Windows, now: SystemTime) -> Result<(), SourceError> {
        let u = rustix::system::uname();
        let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
        let (sysname, release, version, machine, nodename) = (
            text(u.sysname()),
            text(u.release()),
            text(u.version()),
            text(u.machine()),
            text(u.nodename()),
        );
        let domainname = text(u.domainname());
        let f = out.family(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            FamilyKind::Gauge,
        )?;
        out.set(
            f,
            &[
                ("domainname", &domainname),
                ("machine", &machine),
                ("nodename", &nodename),
                ("release", &release),
                ("sysname", &sysname),
                ("version", &version),
            ],
            1.0,
        )?;
        let t = out.family(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            FamilyKind::Gauge,
        )?;
        out.set(t, &[], unix_seconds(now))?;
        Ok(())
    }
}

fn rooted(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}

impl Source for SystemSource {
    fn name(&self) -> &'static str {
        "system"
    }

    fn sample(&mut self, out: &mut Windows, now: SystemTime) -> Result<(), SourceError> {
        self.problems.clear();
        let mono = Instant::now();
        let now_s = unix_seconds(now) as i64;
        let mut timings: Vec<(&str, f64, bool)> = Vec::with_capacity(COLLECTORS.len());
        // The ten-second collectors write into a window of their own, whose
        // readings are then repeated every sample until the next read.
        let mut scratch = if self.ten_seconds.stale(mono, collect::MEDIUM_EVERY) {
            let mut w = self
                .scratch
                .take()
                .map_or_else(|| Windows::new("scratch", "scratch", 100_000), Ok)
                .map_err(|e| SourceError(format!("ten-second window: {e}")))?;
            w.begin_sample((unix_seconds(now) * 1000.0) as i64);
            Some(w)
        } else {
            None
        };
        for name in COLLECTORS {
            if self.disabled.iter().any(|d| d == name) {
                continue;
            }
            let started = Instant::now();
            let before = self.problems.len();
            if TEN_SECONDS.contains(&name) {
                let Some(scratch) = scratch.as_mut() else {
                    continue;
                };
                match name {
                    "netstat" => self.sample_netstat(scratch)?,
                    "sockstat" => self.sample_sockstat(scratch)?,
                    "softnet" => self.sample_softnet(scratch)?,
                    "conntrack" => self.sample_conntrack(scratch)?,
                    "vmstat" => self.sample_vmstat(scratch)?,
                    "filefd" => self.sample_filefd_entropy(scratch)?,
                    "pressure" => self.sample_pressure(scratch)?,
                    "schedstat" => self.sample_schedstat(scratch)?,
                    "timex" => self.sample_timex(scratch)?,
                    _ => self.sample_thermal_cpufreq_hwmon(scratch)?,
                }
                let ok = self.problems.len() == before;
                timings.push((name, started.elapsed().as_secs_f64(), ok));
                continue;
            }
            match name {
                "stat" => self.sample_stat(out)?,
                "meminfo" => self.sample_meminfo(out)?,
                "loadavg" => self.sample_loadavg(out)?,
                "diskstats" => self.sample_diskstats(out, mono)?,
                "netdev" => self.sample_net_dev(out, mono)?,
                "filesystem" => self.sample_filesystems(out)?,
                "uname" => self.sample_uname(out, now)?,
                "arp" => self.sample_medium(out, mono)?,
                "os" => {
                    let disks = std::mem::take(&mut self.disks);
                    self.sample_slow(out, mono, now_s, &disks)?;
                    self.disks = disks;
                }
                // entropy is read with filefd, cpu with stat, udp_queues and
                // netclass with arp, time with os.
                _ => {}
            }
            let ok = self.problems.len() == before;
            timings.push((name, started.elapsed().as_secs_f64(), ok));
        }
        if let Some(mut w) = scratch {
            let families = w
                .close()
                .map_err(|e| SourceError(format!("ten-second window: {e}")))?;
            self.ten_seconds = collect::Tier::from_families(families, mono);
            self.scratch = Some(w);
        }
        self.ten_seconds.emit(out)?;
        for t in &timings {
            self.last_timings.insert(t.0, (t.1, t.2));
        }
        for name in TEN_SECONDS {
            if !timings.iter().any(|t| t.0 == name)
                && !self.disabled.iter().any(|d| d == name)
                && let Some((seconds, ok)) = self.last_timings.get(name)
            {
                timings.push((name, *seconds, *ok));
            }
        }
        let success = out.family(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            FamilyKind::Gauge,
        )?;
        let duration = out.family(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            FamilyKind::Gauge,
        )?;
        let timing = |name: &str| timings.iter().find(|t| t.0 == name).copied();
        for (name, seconds, ok) in &timings {
            let shared_with = match *name {
                "cpu" => timing("stat"),
                "entropy" => timing("filefd"),
                "udp_queues" | "netclass" => timing("arp"),
                "time" => timing("os"),
                _ => None,
            };
            if SHARED.iter().any(|(n, _)| n == name) && shared_with.is_none() {
                // Its file's reader is disabled.
                continue;
            }
            let (seconds, ok) = shared_with.map_or((*seconds, *ok), |t| (t.1, t.2));
            out.set(success, &[("collector", name)], if ok { 1.0 } else { 0.0 })?;
            out.set(duration, &[("collector", name)], seconds)?;
        }
        if self.textfile_absent {
            let f = out.family(
                "node_textfile_scrape_error",
                "1 if there was an error opening or reading a file, 0 otherwise",
                FamilyKind::Gauge,
            )?;
            out.set(f, &[], 0.0)?;
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError(self.problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SystemConfig;
    use vigil_shared::proto;

    fn fixture_source() -> Result<SystemSource, SourceError> {
        fixture_source_at(&PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/proc"
        )))
    }

    fn fixture_source_at(proc: &Path) -> Result<SystemSource, SourceError> {
        let config = SystemConfig {
            proc_path: proc.to_path_buf(),
            sys_path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sys")),
            rootfs_path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/rootfs")),
            ..SystemConfig::default()
        };
        SystemSource::new(&config)
    }

    #[test]
    fn fixture_host_gives_every_default_node_exporter_collector() -> anyhow::Result<()> {
        let mut source = fixture_source()?;
        let mut w = Windows::new("fixture", "node", 10_000)?;
        w.begin_sample(1_000);
        let _ = source.sample(&mut w, SystemTime::now());
        let families = w.close()?;
        for name in [
            "node_netstat_Tcp_CurrEstab",
            "node_netstat_TcpExt_ListenDrops",
            "node_netstat_Icmp6_InMsgs",
            "node_netstat_IpExt_InOctets",
            "node_sockstat_sockets_used",
            "node_sockstat_TCP_mem_bytes",
            "node_sockstat_FRAG6_inuse",
            "node_softnet_processed_total",
            "node_arp_entries",
            "node_udp_queues",
            "node_nf_conntrack_entries",
            "node_nf_conntrack_stat_found",
            "node_vmstat_pgfault",
            "node_vmstat_oom_kill",
            "node_filefd_allocated",
            "node_entropy_available_bits",
            "node_pressure_cpu_waiting_seconds_total",
            "node_pressure_io_stalled_seconds_total",
            "node_schedstat_running_seconds_total",
            "node_timex_status",
            "node_time_zone_offset_seconds",
            "node_time_clocksource_current_info",
            "node_network_up",
            "node_network_info",
            "node_network_mtu_bytes",
            "node_network_speed_bytes",
            "node_network_receive_nohandler_total",
            "node_thermal_zone_temp",
            "node_cooling_device_cur_state",
            "node_cpu_scaling_frequency_hertz",
            "node_hwmon_temp_celsius",
            "node_hwmon_chip_names",
            "node_os_info",
            "node_os_version",
            "node_selinux_enabled",
            "node_disk_info",
            "node_scrape_collector_success",
            "node_scrape_collector_duration_seconds",
        ] {
            assert!(!series(&families, name).is_empty(), "no {name}");
        }
        // Netstat and vmstat keep node_exporter's default field filters.
        assert!(series(&families, "node_netstat_Tcp_RtoMin").is_empty());
        assert!(series(&families, "node_vmstat_nr_free_pages").is_empty());
        let io_stalled = series(&families, "node_pressure_io_stalled_seconds_total")[0].value;
        assert!((io_stalled - 37.276874).abs() < 1e-9, "{io_stalled}");
        let schedstat = series(&families, "node_schedstat_timeslices_total");
        assert_eq!(schedstat.len(), 2);
        let os = series(&families, "node_os_version");
        assert_eq!(label(os[0], "id"), Some("debian"));
        let zone = series(&families, "node_time_zone_offset_seconds");
        assert_eq!(
            (label(zone[0], "time_zone"), zone[0].value),
            (Some("UTC"), 0.0)
        );
        let disk_info: Vec<_> = series(&families, "node_disk_info")
            .iter()
            .filter_map(|s| Some((label(s, "device")?, label(s, "major")?)))
            .collect();
        assert!(disk_info.contains(&("vda", "254")), "{disk_info:?}");
        let up = series(&families, "node_network_up")
            .into_iter()
            .find(|s| label(s, "device") == Some("eth0"))
            .map(|s| s.value);
        assert_eq!(up, Some(1.0));
        Ok(())
    }

    #[test]
    fn a_host_without_pressure_or_conntrack_has_no_such_families() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let fixtures = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/proc"));
        for file in [
            "stat",
            "meminfo",
            "loadavg",
            "diskstats",
            "net/dev",
            "self/mounts",
        ] {
            let to = dir.path().join(file);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(fixtures.join(file), to)?;
        }
        let mut source = fixture_source_at(dir.path())?;
        let mut w = Windows::new("fixture", "node", 10_000)?;
        w.begin_sample(1_000);
        let _ = source.sample(&mut w, SystemTime::now());
        let families = w.close()?;
        assert!(series(&families, "node_pressure_cpu_waiting_seconds_total").is_empty());
        assert!(series(&families, "node_nf_conntrack_entries").is_empty());
        assert!(series(&families, "node_load1").len() == 1);
        // An absent file is not a failure of its collector.
        let pressure_ok = series(&families, "node_scrape_collector_success")
            .into_iter()
            .find(|s| label(s, "collector") == Some("pressure"))
            .map(|s| s.value);
        assert_eq!(pressure_ok, Some(1.0));
        Ok(())
    }

    fn series<'a>(families: &'a [proto::Family], name: &str) -> Vec<&'a proto::Series> {
        families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| f.series.iter())
            .collect()
    }

    fn label<'a>(s: &'a proto::Series, name: &str) -> Option<&'a str> {
        s.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    #[test]
    fn fixture_host_gives_node_exporter_families() -> anyhow::Result<()> {
        let mut source = fixture_source()?;
        let mut w = Windows::new("fixture", "node", 10_000)?;
        w.begin_sample(1_000);
        // The fixture's mounts do not exist here, so the source reports a partial failure.
        let _ = source.sample(&mut w, SystemTime::now());
        let families = w.close()?;
        let cpu = series(&families, "node_cpu_seconds_total");
        assert_eq!(cpu.len(), 2 * 8);
        let user0 = cpu
            .iter()
            .find(|s| label(s, "cpu") == Some("0") && label(s, "mode") == Some("user"))
            .map(|s| s.value);
        assert_eq!(user0, Some(56.85));
        assert_eq!(series(&families, "node_load1")[0].value, 0.71);
        assert!(series(&families, "node_memory_MemTotal_bytes")[0].value > 1e9);
        // Partitions-style and loop devices are excluded, as in node_exporter.
        let disks: Vec<_> = series(&families, "node_disk_read_bytes_total")
            .iter()
            .filter_map(|s| label(s, "device"))
            .collect();
        assert!(
            disks.contains(&"vda") && !disks.contains(&"loop0"),
            "{disks:?}"
        );
        let vda = series(&families, "node_disk_read_bytes_total")
            .into_iter()
            .find(|s| label(s, "device") == Some("vda"))
            .map(|s| s.value);
        assert_eq!(vda, Some(2968186.0 * 512.0));
        let eth0 = series(&families, "node_network_receive_bytes_total")
            .into_iter()
            .find(|s| label(s, "device") == Some("eth0"))
            .map(|s| s.value);
        assert_eq!(eth0, Some(89302756.0));
        assert_eq!(
            series(&families, "node_network_transmit_colls_total").len(),
            4
        );
        assert_eq!(series(&families, "node_uname_info").len(), 1);
        // Excluded mount points and types: only /, /run, /srv/backup disk, /data remain.
        let mut mounts: Vec<_> = series(&families, "node_filesystem_device_error")
            .iter()
            .filter_map(|s| label(s, "mountpoint"))
            .collect();
        mounts.sort();
        assert_eq!(mounts, ["/", "/data", "/run", "/srv/backup disk"]);
        Ok(())
    }

    #[test]
    fn rates_need_two_samples() -> anyhow::Result<()> {
        let mut source = fixture_source()?;
        let mut w = Windows::new("fixture", "node", 10_000)?;
        w.begin_sample(1_000);
        let _ = source.sample(&mut w, SystemTime::now());
        w.begin_sample(2_000);
        let _ = source.sample(&mut w, SystemTime::now());
        let families = w.close()?;
        // Memory is a ratio of one reading: one observation per sample.
        let mem = series(&families, "vigil_memory_used_ratio");
        assert_eq!(mem[0].window.as_ref().map(|w| w.count), Some(2));
        // CPU busy needs a previous reading: one observation fewer. The fixture
        // does not change, so the delta is zero and nothing is observed.
        assert!(series(&families, "vigil_cpu_busy_ratio").is_empty());
        let rx = series(&families, "vigil_network_receive_bytes_per_second");
        assert_eq!(rx.len(), 4);
        assert_eq!(
            rx[0].window.as_ref().map(|w| (w.count, w.sum)),
            Some((1, 0.0))
        );
        Ok(())
    }
}
