//! Parsers for the /proc files the system source reads. Each takes the file's
//! text and returns plain numbers, with node_exporter's units (seconds, bytes)
//! applied by the caller. A malformed line is skipped and counted, never fatal:
//! kernels add fields and columns over time.

/// USER_HZ: /proc/stat counts CPU time in 1/100 s on every Linux architecture
/// node_exporter supports (it hard-codes the same value).
pub const USER_HZ: f64 = 100.0;

/// Linux sectors in /proc/diskstats are always 512 bytes.
pub const SECTOR_BYTES: f64 = 512.0;

/// One `cpuN` line of /proc/stat, in ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTicks {
    /// `None` for the aggregate `cpu` line, `Some(n)` for `cpuN`.
    pub cpu: Option<u32>,
    /// user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice
    pub ticks: [f64; 10],
}

/// The mode names of the first eight `CpuTicks::ticks`, as node_exporter labels them.
pub const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl CpuTicks {
    /// Ticks spent in any mode (guest time is already inside user and nice).
    pub fn total(&self) -> f64 {
        self.ticks[..8].iter().sum()
    }

    /// Ticks spent idle or waiting for I/O.
    pub fn idle(&self) -> f64 {
        self.ticks[3] + self.ticks[4]
    }
}

/// What /proc/stat holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    /// The aggregate `cpu` line and every `cpuN` line.
    pub cpus: Vec<CpuTicks>,
    /// `intr` first field: interrupts since boot.
    pub interrupts: Option<f64>,
    /// `ctxt`: context switches since boot.
    pub context_switches: Option<f64>,
    /// `btime`: boot time, seconds since the Unix epoch.
    pub boot_time: Option<f64>,
    /// `processes`: forks since boot.
    pub forks: Option<f64>,
    /// `procs_running`.
    pub procs_running: Option<f64>,
    /// `procs_blocked`.
    pub procs_blocked: Option<f64>,
    /// Lines that did not parse.
    pub bad_lines: usize,
}

/// Parses /proc/stat.
pub fn parse_stat(text: &str) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(n) = key.strip_prefix("cpu") {
            let cpu = if n.is_empty() {
                None
            } else if let Ok(n) = n.parse::<u32>() {
                Some(n)
            } else {
                stat.bad_lines += 1;
                continue;
            };
            let mut ticks = [0.0; 10];
            let mut got = 0;
            for (slot, field) in ticks.iter_mut().zip(fields.by_ref()) {
                match field.parse::<f64>() {
                    Ok(v) => {
                        *slot = v;
                        got += 1;
                    }
                    Err(_) => break,
                }
            }
            // Kernels before 2.6.11 had fewer columns; four is the least that makes sense.
            if got < 4 {
                stat.bad_lines += 1;
                continue;
            }
            stat.cpus.push(CpuTicks { cpu, ticks });
            continue;
        }
        let value = fields.next().and_then(|v| v.parse::<f64>().ok());
        let slot = match key {
            "intr" => &mut stat.interrupts,
            "ctxt" => &mut stat.context_switches,
            "btime" => &mut stat.boot_time,
            "processes" => &mut stat.forks,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => continue,
        };
        match value {
            Some(v) => *slot = Some(v),
            None => stat.bad_lines += 1,
        }
    }
    stat
}

/// One /proc/meminfo field, already named and scaled as node_exporter does:
/// `Active(anon):  123 kB` becomes (`Active_anon_bytes`, 125952).
#[derive(Debug, Clone, PartialEq)]
pub struct MemField {
    /// The metric name after `node_memory_`.
    pub name: String,
    /// The value in bytes (or a plain count for fields without a unit).
    pub value: f64,
}

/// Parses /proc/meminfo; returns the fields and how many lines did not parse.
pub fn parse_meminfo(text: &str) -> (Vec<MemField>, usize) {
    let mut out = Vec::with_capacity(64);
    let mut bad = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            bad += 1;
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(Ok(mut value)) = parts.next().map(str::parse::<f64>) else {
            bad += 1;
            continue;
        };
        let mut name = String::with_capacity(key.len() + 6);
        for c in key.trim().chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                _ => name.push('_'),
            }
        }
        match parts.next() {
            Some("kB") => {
                value *= 1024.0;
                name.push_str("_bytes");
            }
            Some(_) => {
                bad += 1;
                continue;
            }
            None => {}
        }
        out.push(MemField { name, value });
    }
    (out, bad)
}

/// Parses /proc/loadavg into the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some([a, b, c]),
        _ => None,
    }
}

/// One device line of /proc/diskstats: the name and up to 17 counters.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskStats {
    /// The device name, such as `vda` or `nvme0n1`.
    pub device: String,
    /// Major device number.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// The counters in kernel order; kernels before 4.18 give 11, before 5.5 give 15.
    pub fields: Vec<f64>,
}

/// Parses /proc/diskstats; returns the devices and how many lines did not parse.
pub fn parse_diskstats(text: &str) -> (Vec<DiskStats>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(major), Some(minor), Some(device)) = (parts.next(), parts.next(), parts.next())
        else {
            if !line.trim().is_empty() {
                bad += 1;
            }
            continue;
        };
        let fields: Result<Vec<f64>, _> = parts.map(str::parse::<f64>).collect();
        match fields {
            Ok(f) if f.len() >= 11 => out.push(DiskStats {
                device: device.to_string(),
                major: major.parse().unwrap_or(0),
                minor: minor.parse().unwrap_or(0),
                fields: f,
            }),
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// One interface line of /proc/net/dev: 8 receive and 8 transmit counters.
#[derive(Debug, Clone, PartialEq)]
pub struct NetDev {
    /// The interface name.
    pub device: String,
    /// bytes packets errs drop fifo frame compressed multicast
    pub receive: [f64; 8],
    /// bytes packets errs drop fifo colls carrier compressed
    pub transmit: [f64; 8],
}

/// node_exporter's names for the receive columns of /proc/net/dev.
pub const NET_RECEIVE: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
/// node_exporter's names for the transmit columns of /proc/net/dev.
pub const NET_TRANSMIT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

/// Parses /proc/net/dev; returns the interfaces and how many lines did not parse.
pub fn parse_net_dev(text: &str) -> (Vec<NetDev>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(2) {
        let Some((device, rest)) = line.split_once(':') else {
            if !line.trim().is_empty() {
                bad += 1;
            }
            continue;
        };
        let values: Result<Vec<f64>, _> = rest.split_ascii_whitespace().map(str::parse).collect();
        match values {
            Ok(v) if v.len() == 16 => {
                let mut receive = [0.0; 8];
                let mut transmit = [0.0; 8];
                receive.copy_from_slice(&v[..8]);
                transmit.copy_from_slice(&v[8..]);
                out.push(NetDev {
                    device: device.trim().to_string(),
                    receive,
                    transmit,
                });
            }
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// One line of /proc/self/mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The device (first field), unescaped.
    pub device: String,
    /// The mount point, unescaped (`\040` is a space).
    pub mount_point: String,
    /// The filesystem type.
    pub fs_type: String,
    /// True when mounted read-only.
    pub read_only: bool,
}

/// Parses /proc/self/mounts; returns the mounts and how many lines did not parse.
pub fn parse_mounts(text: &str) -> (Vec<Mount>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        // The kernel always writes six fields, the last two numbers.
        let well_formed = parts.len() == 6 && parts[4..].iter().all(|p| p.parse::<u32>().is_ok());
        if !well_formed {
            if !line.trim().is_empty() {
                bad += 1;
            }
            continue;
        }
        out.push(Mount {
            device: unescape_octal(parts[0]),
            mount_point: unescape_octal(parts[1]),
            fs_type: parts[2].to_string(),
            read_only: parts[3].split(',').any(|o| o == "ro"),
        });
    }
    (out, bad)
}

/// Undoes the kernel's octal escapes in mount fields (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash).
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = (digits[0] - b'0') as u32 * 64
                    + (digits[1] - b'0') as u32 * 8
                    + (digits[2] - b'0') as u32;
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let full = format!("{}/testdata/proc/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
    }

    #[test]
    fn stat_fixture_gives_every_cpu_and_counters() {
        let s = parse_stat(&fixture("stat"));
        assert_eq!(s.bad_lines, 0);
        assert_eq!(s.cpus.len(), 3);
        assert_eq!(s.cpus[0].cpu, None);
        assert_eq!(s.cpus[1].cpu, Some(0));
        assert_eq!(s.cpus[1].ticks[0], 5685.0);
        assert_eq!(s.cpus[2].ticks[3], 60896.0);
        assert!(s.boot_time.is_some_and(|b| b > 1.5e9));
        assert!(s.context_switches.is_some());
        assert!(s.forks.is_some());
        assert!(s.procs_running.is_some() && s.procs_blocked.is_some());
        assert!(s.interrupts.is_some());
    }

    #[test]
    fn stat_odd_lines_are_counted_not_fatal() {
        let s = parse_stat(
            "cpu 1 2 3 4 5 6 7 8 9 10\ncpuX 1 2\ncpu0 1 2\ncpu1 1 2 3 4\nctxt abc\nbtime 1700000000\nsoftirq 1 2 3\n",
        );
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[1].ticks[3], 4.0);
        assert_eq!(s.bad_lines, 3);
        assert_eq!(s.boot_time, Some(1.7e9));
        assert_eq!(s.context_switches, None);
    }

    #[test]
    fn meminfo_names_and_units_follow_node_exporter() {
        let (fields, bad) = parse_meminfo(&fixture("meminfo"));
        assert_eq!(bad, 0);
        let get = |n: &str| fields.iter().find(|f| f.name == n).map(|f| f.value);
        assert!(get("MemTotal_bytes").is_some_and(|v| v > 1e9));
        assert!(get("MemAvailable_bytes").is_some());
        assert!(get("Active_anon_bytes").is_some());
        assert!(get("HugePages_Total").is_some());
        let (odd, bad) =
            parse_meminfo("MemTotal:  10 kB\nBroken line\nX: 5 MB\nHugePages_Free: 3\n");
        assert_eq!(bad, 2);
        assert_eq!(odd[0].value, 10240.0);
        assert_eq!(odd[1].name, "HugePages_Free");
        assert_eq!(odd[1].value, 3.0);
    }

    #[test]
    fn loadavg_parses_three_averages() {
        assert_eq!(parse_loadavg(&fixture("loadavg")), Some([0.71, 0.38, 0.14]));
        assert_eq!(parse_loadavg("0.1 0.2"), None);
    }

    #[test]
    fn diskstats_keeps_devices_with_enough_fields() {
        let (disks, bad) = parse_diskstats(&fixture("diskstats"));
        assert_eq!(bad, 0);
        let vda = disks.iter().find(|d| d.device == "vda");
        assert_eq!(vda.map(|d| d.fields[0]), Some(28762.0));
        assert_eq!(vda.map(|d| d.fields.len()), Some(17));
        let (disks, bad) = parse_diskstats("   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n 8 1 sda1 1 2\n\n");
        assert_eq!(disks.len(), 1);
        assert_eq!(bad, 1);
    }

    #[test]
    fn net_dev_splits_receive_and_transmit() {
        let (devs, bad) = parse_net_dev(&fixture("net/dev"));
        assert_eq!(bad, 0);
        let eth0 = devs.iter().find(|d| d.device == "eth0");
        assert_eq!(eth0.map(|d| d.receive[0]), Some(89302756.0));
        assert_eq!(eth0.map(|d| d.transmit[1]), Some(1646.0));
        let (devs, bad) = parse_net_dev("h1\nh2\n  x: 1 2 3\n");
        assert!(devs.is_empty());
        assert_eq!(bad, 1);
    }

    #[test]
    fn mounts_unescape_and_flag_read_only() {
        let (mounts, bad) = parse_mounts(&fixture("self/mounts"));
        assert_eq!(bad, 1);
        let backup = mounts.iter().find(|m| m.device == "/dev/vdb1");
        assert_eq!(
            backup.map(|m| m.mount_point.as_str()),
            Some("/srv/backup disk")
        );
        assert_eq!(backup.map(|m| m.read_only), Some(true));
        assert!(mounts.iter().any(|m| m.mount_point == "/" && !m.read_only));
        assert_eq!(unescape_octal("a\\134b\\0"), "a\\b\\0");
    }
}
