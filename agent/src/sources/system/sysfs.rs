//! Readers of /sys (under `sys_path`, so tests point them at fixtures) for
//! node_exporter's netclass, time (clocksources), thermal_zone, cpufreq,
//! hwmon and selinux collectors. A missing folder is an absent family, not
//! an error; an attribute the kernel refuses to read (`carrier` of a
//! device that is down answers EINVAL) is left out, as node_exporter does.

use std::path::{Path, PathBuf};

/// Reads a small attribute file, trimmed; `None` when absent or unreadable.
pub fn attr(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// An attribute as a number (decimal, or hexadecimal with `0x`).
pub fn attr_number(dir: &Path, name: &str) -> Option<f64> {
    let text = attr(dir, name)?;
    match text.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => text.parse().ok(),
    }
}

/// Entries of a folder whose names start with `prefix`, sorted; empty when
/// the folder is absent.
pub fn entries(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| (name, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// One network interface's /sys/class/net attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetClass {
    /// Interface name.
    pub device: String,
    /// Numeric attributes, as node_exporter names their families
    /// (`address_assign_type`, `carrier`, `mtu_bytes`…), in a fixed order.
    pub values: Vec<(&'static str, f64)>,
    /// MAC address.
    pub address: String,
    /// Broadcast address.
    pub broadcast: String,
    /// `full`, `half` or empty.
    pub duplex: String,
    /// Alias.
    pub ifalias: String,
    /// `up`, `down`, `unknown`…
    pub operstate: String,
    /// Bytes per second, when the driver knows (-1 Mb/s gives -125000).
    pub speed_bytes: Option<f64>,
    /// `statistics/rx_nohandler`.
    pub rx_nohandler: Option<f64>,
}

/// (attribute file, family suffix) of netclass's numeric gauges and
/// counters, in node_exporter's naming.
pub const NETCLASS_ATTRIBUTES: [(&str, &str); 15] = [
    ("addr_assign_type", "address_assign_type"),
    ("carrier", "carrier"),
    ("carrier_changes", "carrier_changes_total"),
    ("carrier_up_count", "carrier_up_changes_total"),
    ("carrier_down_count", "carrier_down_changes_total"),
    ("dev_id", "device_id"),
    ("dormant", "dormant"),
    ("flags", "flags"),
    ("ifindex", "iface_id"),
    ("iflink", "iface_link"),
    ("link_mode", "iface_link_mode"),
    ("mtu", "mtu_bytes"),
    ("name_assign_type", "name_assign_type"),
    ("netdev_group", "net_dev_group"),
    ("type", "protocol_type"),
];

/// Every interface under `sys/class/net`.
pub fn net_class(sys: &Path) -> Vec<NetClass> {
    entries(&sys.join("class/net"), "")
        .into_iter()
        .filter(|(_, path)| path.is_dir())
        .map(|(device, dir)| {
            let mut values = Vec::with_capacity(NETCLASS_ATTRIBUTES.len() + 1);
            for (file, family) in NETCLASS_ATTRIBUTES {
                if let Some(v) = attr_number(&dir, file) {
                    values.push((family, v));
                }
            }
            if let Some(v) = attr_number(&dir, "tx_queue_len") {
                values.push(("transmit_queue_length", v));
            }
            NetClass {
                device,
                values,
                address: attr(&dir, "address").unwrap_or_default(),
                broadcast: attr(&dir, "broadcast").unwrap_or_default(),
                duplex: attr(&dir, "duplex").unwrap_or_default(),
                ifalias: attr(&dir, "ifalias").unwrap_or_default(),
                operstate: attr(&dir, "operstate").unwrap_or_default(),
                speed_bytes: attr_number(&dir, "speed").map(|mbps| mbps * 125_000.0),
                rx_nohandler: attr_number(&dir, "statistics/rx_nohandler"),
            }
        })
        .collect()
}

/// Clocksources: (device number, available, current).
pub fn clocksources(sys: &Path) -> Vec<(String, Vec<String>, String)> {
    entries(&sys.join("devices/system/clocksource"), "clocksource")
        .into_iter()
        .filter_map(|(name, dir)| {
            let device = name.strip_prefix("clocksource")?.to_string();
            let available = attr(&dir, "available_clocksource")?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let current = attr(&dir, "current_clocksource")?;
            Some((device, available, current))
        })
        .collect()
}

/// A thermal zone: (zone number, type, °C).
pub type Zone = (String, String, f64);

/// A cooling device: (number, type, current state, max state).
pub type Cooling = (String, String, f64, f64);

/// Thermal zones and cooling devices.
pub fn thermal(sys: &Path) -> (Vec<Zone>, Vec<Cooling>) {
    let base = sys.join("class/thermal");
    let zones = entries(&base, "thermal_zone")
        .into_iter()
        .filter_map(|(name, dir)| {
            Some((
                name.strip_prefix("thermal_zone")?.to_string(),
                attr(&dir, "type")?,
                attr_number(&dir, "temp")? / 1000.0,
            ))
        })
        .collect();
    let cooling = entries(&base, "cooling_device")
        .into_iter()
        .filter_map(|(name, dir)| {
            Some((
                name.strip_prefix("cooling_device")?.to_string(),
                attr(&dir, "type")?,
                attr_number(&dir, "cur_state")?,
                attr_number(&dir, "max_state")?,
            ))
        })
        .collect();
    (zones, cooling)
}

/// Per CPU: (cpu number, [(family suffix, hertz)]) from cpufreq, kHz
/// turned into Hz.
pub fn cpufreq(sys: &Path) -> Vec<(String, Vec<(&'static str, f64)>)> {
    const FILES: [(&str, &str); 6] = [
        ("cpuinfo_cur_freq", "frequency_hertz"),
        ("cpuinfo_max_freq", "frequency_max_hertz"),
        ("cpuinfo_min_freq", "frequency_min_hertz"),
        ("scaling_cur_freq", "scaling_frequency_hertz"),
        ("scaling_max_freq", "scaling_frequency_max_hertz"),
        ("scaling_min_freq", "scaling_frequency_min_hertz"),
    ];
    entries(&sys.join("devices/system/cpu"), "cpu")
        .into_iter()
        .filter_map(|(name, dir)| {
            let cpu = name.strip_prefix("cpu")?;
            cpu.parse::<u32>().ok()?;
            let freq = dir.join("cpufreq");
            let values: Vec<(&'static str, f64)> = FILES
                .iter()
                .filter_map(|(file, family)| Some((*family, attr_number(&freq, file)? * 1000.0)))
                .collect();
            (!values.is_empty()).then(|| (cpu.to_string(), values))
        })
        .collect()
}

/// One hwmon chip: its label (`platform_coretemp_0`, as node_exporter
/// derives it from the device and its subsystem), its `name`, and its
/// sensors as (family suffix, sensor, value in the family's unit) plus
/// labels (sensor, label).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HwmonChip {
    /// node_exporter's chip label.
    pub chip: String,
    /// The `name` attribute.
    pub name: Option<String>,
    /// (family suffix, sensor, value).
    pub values: Vec<(String, String, f64)>,
    /// (sensor, label) from `*_label` files.
    pub labels: Vec<(String, String)>,
}

fn clean(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .to_lowercase()
}

/// Every chip under `sys/class/hwmon`.
pub fn hwmon(sys: &Path) -> Vec<HwmonChip> {
    entries(&sys.join("class/hwmon"), "hwmon")
        .into_iter()
        .map(|(name, dir)| {
            let chip = std::fs::canonicalize(dir.join("device"))
                .ok()
                .and_then(|device| {
                    let dev_name = device.file_name()?.to_string_lossy().into_owned();
                    let subsystem = std::fs::canonicalize(device.join("subsystem")).ok();
                    Some(
                        match subsystem
                            .and_then(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()))
                        {
                            Some(kind) => format!("{}_{}", clean(&kind), clean(&dev_name)),
                            None => clean(&dev_name),
                        },
                    )
                })
                .unwrap_or_else(|| clean(&name));
            let mut values = Vec::new();
            let mut labels = Vec::new();
            for (file, _) in entries(&dir, "") {
                let Some((sensor, item)) = file.split_once('_') else {
                    continue;
                };
                if item == "label" {
                    if let Some(l) = attr(&dir, &file) {
                        labels.push((sensor.to_string(), l));
                    }
                    continue;
                }
                let kind: String = sensor
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                let (family, scale) = match (kind.as_str(), item) {
                    ("temp", "input") => ("temp_celsius", 0.001),
                    ("temp", "max") => ("temp_max_celsius", 0.001),
                    ("temp", "crit") => ("temp_crit_celsius", 0.001),
                    ("temp", "crit_alarm") => ("temp_crit_alarm_celsius", 1.0),
                    ("fan", "input") => ("fan_rpm", 1.0),
                    ("fan", "min") => ("fan_min_rpm", 1.0),
                    ("in", "input") => ("in_volts", 0.001),
                    ("in", "min") => ("in_min_volts", 0.001),
                    ("in", "max") => ("in_max_volts", 0.001),
                    ("power", "input") | ("power", "average") => ("power_average_watt", 0.000_001),
                    ("curr", "input") => ("curr_amps", 0.001),
                    _ => continue,
                };
                if let Some(v) = attr_number(&dir, &file) {
                    values.push((family.to_string(), sensor.to_string(), v * scale));
                }
            }
            HwmonChip {
                chip,
                name: attr(&dir, "name"),
                values,
                labels,
            }
        })
        .collect()
}

/// SELinux: `None` when not enabled (no selinuxfs); else (config mode,
/// current mode) as node_exporter reads them: enforce 1, permissive 0.
pub fn selinux(sys: &Path) -> Option<(f64, f64)> {
    let fs = sys.join("fs/selinux");
    let current = attr_number(&fs, "enforce")?;
    Some((current, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/sys"))
    }

    #[test]
    fn net_class_reads_each_interface() {
        let devices = net_class(&sys());
        let eth0 = devices.iter().find(|d| d.device == "eth0");
        let Some(eth0) = eth0 else {
            panic!("no eth0 in {devices:?}")
        };
        assert_eq!(eth0.operstate, "up");
        assert_eq!(eth0.speed_bytes, Some(-125000.0));
        assert!(eth0.values.contains(&("mtu_bytes", 1400.0)));
        assert!(eth0.values.contains(&("flags", 4099.0)));
        assert_eq!(eth0.rx_nohandler, Some(0.0));
        let lo = devices.iter().find(|d| d.device == "lo");
        assert_eq!(lo.map(|l| l.speed_bytes), Some(None));
    }

    #[test]
    fn clocksources_thermal_cpufreq_and_hwmon() {
        assert_eq!(
            clocksources(&sys()),
            vec![(
                "0".to_string(),
                vec!["tsc".to_string(), "kvm-clock".to_string()],
                "tsc".to_string()
            )]
        );
        let (zones, cooling) = thermal(&sys());
        assert_eq!(zones, vec![("0".into(), "x86_pkg_temp".into(), 45.0)]);
        assert_eq!(cooling, vec![("0".into(), "Processor".into(), 0.0, 3.0)]);
        let freq = cpufreq(&sys());
        assert_eq!(freq.len(), 1);
        assert!(
            freq[0]
                .1
                .contains(&("scaling_frequency_hertz", 2_400_000_000.0))
        );
        let chips = hwmon(&sys());
        assert_eq!(chips.len(), 1);
        assert_eq!(chips[0].chip, "platform_coretemp_0");
        assert_eq!(chips[0].name.as_deref(), Some("coretemp"));
        assert!(
            chips[0]
                .values
                .contains(&("temp_celsius".into(), "temp1".into(), 52.0))
        );
        assert!(
            chips[0]
                .values
                .contains(&("fan_rpm".into(), "fan1".into(), 1200.0))
        );
        assert_eq!(
            chips[0].labels,
            vec![("temp1".into(), "Package id 0".into())]
        );
    }

    #[test]
    fn a_host_without_the_folders_has_no_families() {
        let empty = PathBuf::from("/nonexistent-sys");
        assert!(net_class(&empty).is_empty());
        assert!(clocksources(&empty).is_empty());
        assert_eq!(thermal(&empty), (vec![], vec![]));
        assert!(cpufreq(&empty).is_empty());
        assert!(hwmon(&empty).is_empty());
        assert_eq!(selinux(&empty), None);
    }
}
