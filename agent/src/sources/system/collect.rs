//! The rest of node_exporter 1.5's default Linux collectors, under their
//! names, labels, types and units: netstat, sockstat, softnet, arp,
//! udp_queues, conntrack, vmstat, filefd, entropy, pressure, schedstat,
//! timex, time (zone and clocksources), netclass, thermal_zone, cpufreq,
//! hwmon, os, selinux and disk info. Parsers are in [`super::kernel`] and
//! [`super::sysfs`]; this file turns their values into families.
//!
//! A file or folder the host does not have (no /proc/pressure on an old
//! kernel, no conntrack module, no hwmon in a VM) is an absent family, not
//! an error. Slow-changing facts (time zone, os, selinux, clocksources, disk
//! info) are read every [`SLOW_EVERY`] (60 s), and files that grow with the
//! host's interfaces and sockets (network classes, ARP, UDP queues) every
//! [`MEDIUM_EVERY`] (10 s); both are repeated from memory in between, so
//! every flush carries them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use regex_lite::Regex;

use super::{SystemSource, kernel, sysfs};
use crate::sources::SourceError;
use crate::window::{FamilyKind, Windows};

/// How often slow-changing facts are read again.
pub const SLOW_EVERY: Duration = Duration::from_secs(60);

/// How often network interface classes, ARP entries and UDP queues are
/// read again (their files grow with the host's interfaces and sockets).
pub const MEDIUM_EVERY: Duration = Duration::from_secs(10);

/// A reading remembered between reads: (family, help, kind, labels, value).
pub(super) type Remembered = (String, String, FamilyKind, Vec<(String, String)>, f64);

/// Readings of one tier, and when they were taken.
#[derive(Default)]
pub(super) struct Tier {
    entries: Vec<Remembered>,
    read_at: Option<Instant>,
}

impl Tier {
    /// True when the readings are older than `every` (or were never taken).
    pub(super) fn stale(&self, now: Instant, every: Duration) -> bool {
        self.read_at
            .is_none_or(|at| now.duration_since(at) >= every)
    }

    /// Readings from a closed window of their own (its `instance` and
    /// `job` left out), taken `now`.
    pub(super) fn from_families(families: Vec<vigil_shared::proto::Family>, now: Instant) -> Self {
        use vigil_shared::proto::Kind;
        let mut entries = Vec::new();
        for f in families {
            let kind = match Kind::try_from(f.kind) {
                Ok(Kind::Counter) => FamilyKind::Counter,
                Ok(Kind::Gauge) => FamilyKind::Gauge,
                _ => FamilyKind::Untyped,
            };
            for series in f.series {
                let labels = series
                    .labels
                    .into_iter()
                    .filter(|l| l.name != "instance" && l.name != "job")
                    .map(|l| (l.name, l.value))
                    .collect();
                entries.push((f.name.clone(), f.help.clone(), kind, labels, series.value));
            }
        }
        Self {
            entries,
            read_at: Some(now),
        }
    }

    /// Records the readings into this sample's window.
    pub(super) fn emit(&self, out: &mut Windows) -> Result<(), SourceError> {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(8);
        for (name, help, kind, labels, v) in &self.entries {
            pairs.clear();
            pairs.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let f = out.family(name, help, *kind)?;
            out.set(f, &pairs, *v)?;
        }
        Ok(())
    }
}

fn remember(
    list: &mut Vec<Remembered>,
    name: impl Into<String>,
    help: impl Into<String>,
    kind: FamilyKind,
    labels: &[(&str, &str)],
    v: f64,
) {
    list.push((
        name.into(),
        help.into(),
        kind,
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        v,
    ));
}

/// The default field filters of netstat and vmstat, with each field's
/// verdict remembered: a kernel has a few hundred fields, and matching them
/// all every second would cost more than reading the files.
pub(super) struct Filters {
    netstat: Regex,
    vmstat: Regex,
    netstat_seen: std::collections::HashMap<String, bool>,
    vmstat_seen: std::collections::HashMap<String, bool>,
}

/// Most field names remembered per filter (a kernel has a few hundred).
const MAX_REMEMBERED: usize = 4096;

fn remembered(seen: &mut std::collections::HashMap<String, bool>, re: &Regex, key: &str) -> bool {
    if let Some(v) = seen.get(key) {
        return *v;
    }
    let v = re.is_match(key);
    if seen.len() < MAX_REMEMBERED {
        seen.insert(key.to_string(), v);
    }
    v
}

impl Filters {
    pub(super) fn new() -> Result<Self, SourceError> {
        Ok(Self {
            netstat: Regex::new(kernel::NETSTAT_FIELDS)
                .map_err(|e| SourceError(format!("netstat filter: {e}")))?,
            vmstat: Regex::new(kernel::VMSTAT_FIELDS)
                .map_err(|e| SourceError(format!("vmstat filter: {e}")))?,
            netstat_seen: std::collections::HashMap::new(),
            vmstat_seen: std::collections::HashMap::new(),
        })
    }

    fn netstat(&mut self, key: &str) -> bool {
        remembered(&mut self.netstat_seen, &self.netstat, key)
    }

    fn vmstat(&mut self, key: &str) -> bool {
        remembered(&mut self.vmstat_seen, &self.vmstat, key)
    }
}

fn set(
    out: &mut Windows,
    name: &str,
    help: &str,
    kind: FamilyKind,
    labels: &[(&str, &str)],
    v: f64,
) -> Result<(), SourceError> {
    let f = out.family(name, help, kind)?;
    out.set(f, labels, v)?;
    Ok(())
}

impl SystemSource {
    /// Reads `proc_path/relative` into the buffer: `Ok(false)` when the file
    /// does not exist (an absent family), an error noted otherwise.
    pub(super) fn read_optional(&mut self, relative: &str) -> bool {
        let path = self.proc_path.join(relative);
        self.read_path_optional(&path)
    }

    fn read_path_optional(&mut self, path: &Path) -> bool {
        use std::io::Read;
        self.buffer.clear();
        match std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut self.buffer)) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                self.problems.push(format!("{}: {e}", path.display()));
                false
            }
        }
    }

    pub(super) fn sample_netstat(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        let mut stats = Vec::new();
        for file in ["net/netstat", "net/snmp"] {
            if self.read_optional(file) {
                let (s, bad) = kernel::parse_netstat(&self.buffer);
                self.note_bad_lines(file, bad);
                stats.extend(s);
            }
        }
        if self.read_optional("net/snmp6") {
            let (s, bad) = kernel::parse_snmp6(&self.buffer);
            self.note_bad_lines("net/snmp6", bad);
            stats.extend(s);
        }
        let mut key = String::with_capacity(64);
        for (proto, name, v) in stats {
            key.clear();
            key.push_str(&proto);
            key.push('_');
            key.push_str(&name);
            if !self.filters.netstat(&key) {
                continue;
            }
            set(
                out,
                &format!("node_netstat_{key}"),
                &format!("Statistic {proto}{name}."),
                FamilyKind::Untyped,
                &[],
                v,
            )?;
        }
        Ok(())
    }

    pub(super) fn sample_sockstat(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        let page = self.page_size;
        for file in ["net/sockstat", "net/sockstat6"] {
            if !self.read_optional(file) {
                continue;
            }
            let (stats, bad) = kernel::parse_sockstat(&self.buffer);
            self.note_bad_lines(file, bad);
            for (proto, field, v) in stats {
                if proto == "sockets" {
                    set(
                        out,
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                        FamilyKind::Gauge,
                        &[],
                        v,
                    )?;
                    continue;
                }
                set(
                    out,
                    &format!("node_sockstat_{proto}_{field}"),
                    &format!("Number of {proto} sockets in state {field}."),
                    FamilyKind::Gauge,
                    &[],
                    v,
                )?;
                if field == "mem" {
                    set(
                        out,
                        &format!("node_sockstat_{proto}_mem_bytes"),
                        &format!("Number of {proto} sockets in state mem_bytes."),
                        FamilyKind::Gauge,
                        &[],
                        v * page,
                    )?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn sample_softnet(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read_optional("net/softnet_stat") {
            return Ok(());
        }
        let (cpus, bad) = kernel::parse_softnet(&self.buffer);
        self.note_bad_lines("net/softnet_stat", bad);
        let processed = out.family(
            "node_softnet_processed_total",
            "Number of processed packets",
            FamilyKind::Counter,
        )?;
        let dropped = out.family(
            "node_softnet_dropped_total",
            "Number of dropped packets",
            FamilyKind::Counter,
        )?;
        let squeezed = out.family(
            "node_softnet_times_squeezed_total",
            "Number of times processing packets ran out of quota",
            FamilyKind::Counter,
        )?;
        for (i, [p, d, s]) in cpus.into_iter().enumerate() {
            let cpu = self.cpu_label(i as u32);
            let labels = [("cpu", cpu.as_str())];
            out.set(processed, &labels, p)?;
            out.set(dropped, &labels, d)?;
            out.set(squeezed, &labels, s)?;
        }
        Ok(())
    }

    /// ARP entries, UDP queues and interface classes, read every
    /// [`MEDIUM_EVERY`] and repeated from memory in between.
    pub(super) fn sample_medium(
        &mut self,
        out: &mut Windows,
        now: Instant,
    ) -> Result<(), SourceError> {
        if self.medium.stale(now, MEDIUM_EVERY) {
            let mut list = Vec::new();
            self.read_arp_udp(&mut list);
            self.read_netclass(&mut list);
            self.medium = Tier {
                entries: list,
                read_at: Some(now),
            };
        }
        self.medium.emit(out)
    }

    fn read_arp_udp(&mut self, list: &mut Vec<Remembered>) {
        if self.read_optional("net/arp") {
            for (device, n) in kernel::parse_arp(&self.buffer) {
                remember(
                    list,
                    "node_arp_entries",
                    "ARP entries by device",
                    FamilyKind::Gauge,
                    &[("device", &device)],
                    n as f64,
                );
            }
        }
        for (file, ip) in [("net/udp", "v4"), ("net/udp6", "v6")] {
            if !self.read_optional(file) {
                continue;
            }
            match kernel::parse_udp_queues(&self.buffer) {
                Some((tx, rx)) => {
                    let help =
                        "Number of allocated memory in the kernel for UDP datagrams in bytes.";
                    remember(
                        list,
                        "node_udp_queues",
                        help,
                        FamilyKind::Gauge,
                        &[("ip", ip), ("queue", "tx")],
                        tx,
                    );
                    remember(
                        list,
                        "node_udp_queues",
                        help,
                        FamilyKind::Gauge,
                        &[("ip", ip), ("queue", "rx")],
                        rx,
                    );
                }
                None => self.problems.push(format!("{file}: does not parse")),
            }
        }
    }

    pub(super) fn sample_conntrack(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        for (file, name, help) in [
            (
                "sys/net/netfilter/nf_conntrack_count",
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            ),
            (
                "sys/net/netfilter/nf_conntrack_max",
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
            ),
        ] {
            if self.read_optional(file) {
                match kernel::parse_number(&self.buffer) {
                    Some(v) => set(out, name, help, FamilyKind::Gauge, &[], v)?,
                    None => self.problems.push(format!("{file}: not a number")),
                }
            }
        }
        if self.read_optional("net/stat/nf_conntrack") {
            let Some(sums) = kernel::parse_conntrack_stat(&self.buffer) else {
                self.problems
                    .push("net/stat/nf_conntrack: does not parse".into());
                return Ok(());
            };
            for field in [
                "found",
                "invalid",
                "ignore",
                "insert",
                "insert_failed",
                "drop",
                "early_drop",
                "search_restart",
            ] {
                if let Some(v) = sums.get(field) {
                    set(
                        out,
                        &format!("node_nf_conntrack_stat_{field}"),
                        &format!("Number of conntrack {field} events."),
                        FamilyKind::Gauge,
                        &[],
                        *v,
                    )?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn sample_vmstat(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read_optional("vmstat") {
            return Ok(());
        }
        let (fields, bad) = kernel::parse_vmstat(&self.buffer);
        self.note_bad_lines("vmstat", bad);
        for (name, v) in fields {
            if self.filters.vmstat(&name) {
                set(
                    out,
                    &format!("node_vmstat_{name}"),
                    &format!("/proc/vmstat information field {name}."),
                    FamilyKind::Untyped,
                    &[],
                    v,
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn sample_filefd_entropy(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if self.read_optional("sys/fs/file-nr") {
            match kernel::parse_file_nr(&self.buffer) {
                Some((allocated, maximum)) => {
                    set(
                        out,
                        "node_filefd_allocated",
                        "File descriptor statistics: allocated.",
                        FamilyKind::Gauge,
                        &[],
                        allocated,
                    )?;
                    set(
                        out,
                        "node_filefd_maximum",
                        "File descriptor statistics: maximum.",
                        FamilyKind::Gauge,
                        &[],
                        maximum,
                    )?;
                }
                None => self.problems.push("sys/fs/file-nr: does not parse".into()),
            }
        }
        for (file, name, help) in [
            (
                "sys/kernel/random/entropy_avail",
                "node_entropy_available_bits",
                "Bits of available entropy.",
            ),
            (
                "sys/kernel/random/poolsize",
                "node_entropy_pool_size_bits",
                "Bits of entropy pool.",
            ),
        ] {
            if self.read_optional(file) {
                match kernel::parse_number(&self.buffer) {
                    Some(v) => set(out, name, help, FamilyKind::Gauge, &[], v)?,
                    None => self.problems.push(format!("{file}: not a number")),
                }
            }
        }
        Ok(())
    }

    pub(super) fn sample_pressure(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        for resource in ["cpu", "io", "memory"] {
            if !self.read_optional(&format!("pressure/{resource}")) {
                continue;
            }
            let (some, full) = kernel::parse_pressure(&self.buffer);
            if let Some(us) = some {
                set(
                    out,
                    &format!("node_pressure_{resource}_waiting_seconds_total"),
                    &format!("Total time in seconds that processes have waited for {resource}"),
                    FamilyKind::Counter,
                    &[],
                    us / 1e6,
                )?;
            }
            // node_exporter 1.5 gives `full` for io and memory only.
            if let Some(us) = full.filter(|_| resource != "cpu") {
                set(
                    out,
                    &format!("node_pressure_{resource}_stalled_seconds_total"),
                    &format!(
                        "Total time in seconds no process could make progress due to {resource} congestion"
                    ),
                    FamilyKind::Counter,
                    &[],
                    us / 1e6,
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn sample_schedstat(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        if !self.read_optional("schedstat") {
            return Ok(());
        }
        let (cpus, bad) = kernel::parse_schedstat(&self.buffer);
        self.note_bad_lines("schedstat", bad);
        let running = out.family(
            "node_schedstat_running_seconds_total",
            "Number of seconds CPU spent running a process.",
            FamilyKind::Counter,
        )?;
        let waiting = out.family(
            "node_schedstat_waiting_seconds_total",
            "Number of seconds spent by processing waiting for this CPU.",
            FamilyKind::Counter,
        )?;
        let slices = out.family(
            "node_schedstat_timeslices_total",
            "Number of timeslices executed by CPU.",
            FamilyKind::Counter,
        )?;
        for (cpu, [r, w, s]) in cpus {
            let labels = [("cpu", cpu.as_str())];
            out.set(running, &labels, r / 1e9)?;
            out.set(waiting, &labels, w / 1e9)?;
            out.set(slices, &labels, s)?;
        }
        Ok(())
    }

    pub(super) fn sample_timex(&mut self, out: &mut Windows) -> Result<(), SourceError> {
        match super::timex::read() {
            Ok(values) => {
                for (name, counter, v) in values {
                    let kind = if counter {
                        FamilyKind::Counter
                    } else {
                        FamilyKind::Gauge
                    };
                    set(out, name, &format!("{name} (adjtimex)."), kind, &[], v)?;
                }
            }
            Err(e) => self.problems.push(format!("adjtimex: {e}")),
        }
        Ok(())
    }

    fn read_netclass(&mut self, list: &mut Vec<Remembered>) {
        for dev in sysfs::net_class(&self.sys_path) {
            if self.net_excluded(&dev.device) {
                continue;
            }
            let labels = [("device", dev.device.as_str())];
            for (suffix, v) in &dev.values {
                let kind = if suffix.ends_with("_total") {
                    FamilyKind::Counter
                } else {
                    FamilyKind::Gauge
                };
                remember(
                    list,
                    format!("node_network_{suffix}"),
                    format!("Network device property: {suffix}"),
                    kind,
                    &labels,
                    *v,
                );
            }
            if let Some(speed) = dev.speed_bytes {
                remember(
                    list,
                    "node_network_speed_bytes",
                    "Network device property: speed_bytes",
                    FamilyKind::Gauge,
                    &labels,
                    speed,
                );
            }
            remember(
                list,
                "node_network_up",
                "Value is 1 if operstate is 'up', 0 otherwise.",
                FamilyKind::Gauge,
                &labels,
                if dev.operstate == "up" { 1.0 } else { 0.0 },
            );
            remember(
                list,
                "node_network_info",
                "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
                FamilyKind::Gauge,
                &[
                    ("address", &dev.address),
                    ("broadcast", &dev.broadcast),
                    ("device", &dev.device),
                    ("duplex", &dev.duplex),
                    ("ifalias", &dev.ifalias),
                    ("operstate", &dev.operstate),
                ],
                1.0,
            );
            if let Some(v) = dev.rx_nohandler {
                remember(
                    list,
                    "node_network_receive_nohandler_total",
                    "Network device statistic receive_nohandler.",
                    FamilyKind::Counter,
                    &labels,
                    v,
                );
            }
        }
    }

    pub(super) fn sample_thermal_cpufreq_hwmon(
        &mut self,
        out: &mut Windows,
    ) -> Result<(), SourceError> {
        let (zones, cooling) = sysfs::thermal(&self.sys_path);
        for (zone, kind, celsius) in zones {
            set(
                out,
                "node_thermal_zone_temp",
                "Zone temperature in Celsius",
                FamilyKind::Gauge,
                &[("type", &kind), ("zone", &zone)],
                celsius,
            )?;
        }
        for (name, kind, cur, max) in cooling {
            let labels = [("name", name.as_str()), ("type", kind.as_str())];
            set(
                out,
                "node_cooling_device_cur_state",
                "Current throttle state of the cooling device",
                FamilyKind::Gauge,
                &labels,
                cur,
            )?;
            set(
                out,
                "node_cooling_device_max_state",
                "Maximum throttle state of the cooling device",
                FamilyKind::Gauge,
                &labels,
                max,
            )?;
        }
        for (cpu, values) in sysfs::cpufreq(&self.sys_path) {
            for (suffix, hz) in values {
                set(
                    out,
                    &format!("node_cpu_{suffix}"),
                    &format!("CPU {suffix} from cpufreq."),
                    FamilyKind::Gauge,
                    &[("cpu", &cpu)],
                    hz,
                )?;
            }
        }
        for chip in sysfs::hwmon(&self.sys_path) {
            if let Some(name) = &chip.name {
                set(
                    out,
                    "node_hwmon_chip_names",
                    "Annotation metric for human-readable chip names",
                    FamilyKind::Gauge,
                    &[("chip", &chip.chip), ("chip_name", name)],
                    1.0,
                )?;
            }
            for (sensor, label) in &chip.labels {
                set(
                    out,
                    "node_hwmon_sensor_label",
                    "Label for given chip and sensor",
                    FamilyKind::Gauge,
                    &[("chip", &chip.chip), ("label", label), ("sensor", sensor)],
                    1.0,
                )?;
            }
            for (suffix, sensor, v) in &chip.values {
                set(
                    out,
                    &format!("node_hwmon_{suffix}"),
                    &format!("Hardware monitor {suffix}"),
                    FamilyKind::Gauge,
                    &[("chip", &chip.chip), ("sensor", sensor)],
                    *v,
                )?;
            }
        }
        Ok(())
    }

    /// Time zone, os, selinux, clocksources and disk info: read every
    /// [`SLOW_EVERY`], repeated from memory in between.
    pub(super) fn sample_slow(
        &mut self,
        out: &mut Windows,
        now: Instant,
        wall: i64,
        disks: &[(String, u32, u32)],
    ) -> Result<(), SourceError> {
        if self.slow.stale(now, SLOW_EVERY) {
            self.slow = Tier {
                entries: self.read_slow(disks, wall),
                read_at: Some(now),
            };
        }
        self.slow.emit(out)
    }

    fn read_slow(&mut self, disks: &[(String, u32, u32)], wall: i64) -> Vec<Remembered> {
        let mut out: Vec<Remembered> = Vec::new();
        let gauge = FamilyKind::Gauge;
        let zone = std::fs::read(self.rootfs_path.join("etc/localtime"))
            .ok()
            .and_then(|bytes| kernel::parse_tzif(&bytes, wall))
            .unwrap_or_else(|| ("UTC".to_string(), 0));
        remember(
            &mut out,
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            gauge,
            &[("time_zone", &zone.0)],
            zone.1 as f64,
        );
        let os_text = ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(self.rootfs_path.join(p)).ok());
        if let Some(text) = os_text {
            let os = kernel::parse_os_release(&text);
            let get = |k: &str| os.get(k).cloned().unwrap_or_default();
            let info: Vec<(&str, String)> = [
                ("build_id", "BUILD_ID"),
                ("id", "ID"),
                ("id_like", "ID_LIKE"),
                ("image_id", "IMAGE_ID"),
                ("image_version", "IMAGE_VERSION"),
                ("name", "NAME"),
                ("pretty_name", "PRETTY_NAME"),
                ("variant", "VARIANT"),
                ("variant_id", "VARIANT_ID"),
                ("version", "VERSION"),
                ("version_codename", "VERSION_CODENAME"),
                ("version_id", "VERSION_ID"),
            ]
            .iter()
            .map(|(label, key)| (*label, get(key)))
            .collect();
            let labels: Vec<(&str, &str)> = info.iter().map(|(k, v)| (*k, v.as_str())).collect();
            remember(
                &mut out,
                "node_os_info",
                "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
                gauge,
                &labels,
                1.0,
            );
            if let Some(v) = kernel::os_version_number(&get("VERSION_ID")) {
                remember(
                    &mut out,
                    "node_os_version",
                    "Metric containing the major.minor part of the OS version.",
                    gauge,
                    &[
                        ("id", &get("ID")),
                        ("id_like", &get("ID_LIKE")),
                        ("name", &get("NAME")),
                    ],
                    v,
                );
            }
        }
        let enabled = "SELinux is enabled, 1 is true, 0 is false";
        match sysfs::selinux(&self.sys_path) {
            None => remember(&mut out, "node_selinux_enabled", enabled, gauge, &[], 0.0),
            Some((config, current)) => {
                remember(&mut out, "node_selinux_enabled", enabled, gauge, &[], 1.0);
                remember(
                    &mut out,
                    "node_selinux_config_mode",
                    "Configured SELinux enforcement mode",
                    gauge,
                    &[],
                    config,
                );
                remember(
                    &mut out,
                    "node_selinux_current_mode",
                    "Current SELinux enforcement mode",
                    gauge,
                    &[],
                    current,
                );
            }
        }
        for (device, available, current) in sysfs::clocksources(&self.sys_path) {
            for source in available {
                remember(
                    &mut out,
                    "node_time_clocksource_available_info",
                    "Available clocksources read from '/sys/devices/system/clocksource'.",
                    gauge,
                    &[("clocksource", &source), ("device", &device)],
                    1.0,
                );
            }
            remember(
                &mut out,
                "node_time_clocksource_current_info",
                "Current clocksource read from '/sys/devices/system/clocksource'.",
                gauge,
                &[("clocksource", &current), ("device", &device)],
                1.0,
            );
        }
        // Disk info: udev's properties of each block device, when udev runs.
        for (device, major, minor) in disks {
            let udev = std::fs::read_to_string(
                self.rootfs_path
                    .join(format!("run/udev/data/b{major}:{minor}")),
            )
            .unwrap_or_default();
            let props: BTreeMap<&str, &str> = udev
                .lines()
                .filter_map(|l| l.strip_prefix("E:"))
                .filter_map(|l| l.split_once('='))
                .collect();
            let prop = |k: &str| props.get(k).copied().unwrap_or("");
            let (major, minor) = (major.to_string(), minor.to_string());
            remember(
                &mut out,
                "node_disk_info",
                "Info of /sys/block/<block_device>.",
                gauge,
                &[
                    ("device", device),
                    ("major", &major),
                    ("minor", &minor),
                    ("model", prop("ID_MODEL")),
                    ("path", prop("ID_PATH")),
                    ("revision", prop("ID_REVISION")),
                    ("serial", prop("ID_SERIAL_SHORT")),
                    ("wwn", prop("ID_WWN")),
                ],
                1.0,
            );
        }
        out
    }
}
