//! Parsers for the kernel files behind node_exporter's netstat, sockstat,
//! softnet, arp, udp_queues, conntrack, vmstat, filefd, entropy, pressure,
//! schedstat, os and time collectors. Each takes a file's text (or bytes)
//! and returns plain values; names, labels and units are the caller's
//! ([`super::collect`]). Malformed lines are skipped and counted where a
//! file has many, since kernels add fields over time.

use std::collections::BTreeMap;

/// node_exporter 1.5's default `--collector.netstat.fields`, matched
/// against `Protocol_Name`.
pub const NETSTAT_FIELDS: &str = r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// node_exporter 1.5's default `--collector.vmstat.fields`.
pub const VMSTAT_FIELDS: &str = r"^(oom_kill|pgpg|pswp|pg.*fault).*";

/// One statistic: (protocol, name, value), as node_exporter names
/// `node_netstat_{protocol}_{name}`.
pub type Stat = (String, String, f64);

/// /proc/net/netstat and /proc/net/snmp: pairs of lines, a header
/// (`Tcp: RtoAlgorithm RtoMin …`) then its values (`Tcp: 1 200 …`).
/// Returns the statistics and the lines that did not pair up.
pub fn parse_netstat(text: &str) -> (Vec<Stat>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let Some(values) = lines.next() else {
            bad += 1;
            break;
        };
        let (Some((proto, names)), Some((proto2, values))) =
            (header.split_once(':'), values.split_once(':'))
        else {
            bad += 2;
            continue;
        };
        if proto != proto2 {
            bad += 2;
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<f64>() {
                out.push((proto.to_string(), name.to_string(), v));
            }
        }
    }
    (out, bad)
}

/// /proc/net/snmp6: `Ip6InReceives  123` per line; the protocol is the name
/// up to its first `6` (`Icmp6`, `UdpLite6`), as node_exporter splits it.
pub fn parse_snmp6(text: &str) -> (Vec<Stat>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            bad += 1;
            continue;
        };
        let Some(six) = key.find('6') else { continue };
        match value.parse::<f64>() {
            Ok(v) => out.push((key[..=six].to_string(), key[six + 1..].to_string(), v)),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

/// /proc/net/sockstat and sockstat6: `TCP: inuse 4 orphan 0 …` per line,
/// returned as (protocol, field, value); `sockets: used 14` gives
/// `("sockets", "used", 14)`.
pub fn parse_sockstat(text: &str) -> (Vec<Stat>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((proto, rest)) = line.split_once(':') else {
            bad += 1;
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if !fields.len().is_multiple_of(2) {
            bad += 1;
            continue;
        }
        for pair in fields.chunks(2) {
            match pair[1].parse::<f64>() {
                Ok(v) => out.push((proto.trim().to_string(), pair[0].to_string(), v)),
                Err(_) => bad += 1,
            }
        }
    }
    (out, bad)
}

/// /proc/net/softnet_stat: one line per CPU, hexadecimal columns; returns
/// (processed, dropped, time_squeezed) per CPU, in line order.
pub fn parse_softnet(text: &str) -> (Vec<[f64; 3]>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<Option<u64>> = line
            .split_whitespace()
            .take(3)
            .map(|c| u64::from_str_radix(c, 16).ok())
            .collect();
        match cols.as_slice() {
            [Some(p), Some(d), Some(s)] => out.push([*p as f64, *d as f64, *s as f64]),
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// /proc/net/arp: entries per device (the last column), sorted by device.
pub fn parse_arp(text: &str) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().skip(1) {
        if let Some(device) = line.split_whitespace().nth(5) {
            *counts.entry(device.to_string()).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

/// /proc/net/udp or udp6: the summed `tx_queue` and `rx_queue` of every
/// socket (the fifth column, `tx:rx` in hexadecimal).
pub fn parse_udp_queues(text: &str) -> Option<(f64, f64)> {
    let mut tx = 0u64;
    let mut rx = 0u64;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let queues = line.split_whitespace().nth(4)?;
        let (t, r) = queues.split_once(':')?;
        tx = tx.saturating_add(u64::from_str_radix(t, 16).ok()?);
        rx = rx.saturating_add(u64::from_str_radix(r, 16).ok()?);
    }
    Some((tx as f64, rx as f64))
}

/// /proc/net/stat/nf_conntrack: a header of column names, then one line of
/// hexadecimal values per CPU; returns each column's sum over the CPUs.
pub fn parse_conntrack_stat(text: &str) -> Option<BTreeMap<String, f64>> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        for (name, value) in names.iter().zip(line.split_whitespace()) {
            let v = u64::from_str_radix(value, 16).ok()?;
            *sums.entry((*name).to_string()).or_default() += v as f64;
        }
    }
    Some(sums)
}

/// /proc/vmstat: `name value` per line.
pub fn parse_vmstat(text: &str) -> (Vec<(String, f64)>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<f64>)) {
            (Some(name), Some(Ok(v))) => out.push((name.to_string(), v)),
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// /proc/sys/fs/file-nr: (allocated, maximum).
pub fn parse_file_nr(text: &str) -> Option<(f64, f64)> {
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match fields.as_slice() {
        [allocated, _, maximum] => Some((*allocated, *maximum)),
        _ => None,
    }
}

/// A single number (entropy_avail, poolsize, nf_conntrack_count…).
pub fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

/// /proc/pressure/{cpu,io,memory}: the `total=` of the `some` and `full`
/// lines, in microseconds.
pub fn parse_pressure(text: &str) -> (Option<f64>, Option<f64>) {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let which = fields.next();
        let total = fields
            .find_map(|f| f.strip_prefix("total="))
            .and_then(|t| t.parse::<f64>().ok());
        match which {
            Some("some") => some = total,
            Some("full") => full = total,
            _ => {}
        }
    }
    (some, full)
}

/// /proc/schedstat `cpuN` lines: (cpu, running ns, waiting ns, timeslices).
pub fn parse_schedstat(text: &str) -> (Vec<(String, [f64; 3])>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        let values: Vec<f64> = fields.filter_map(|f| f.parse().ok()).collect();
        match values.get(6..9) {
            Some(&[running, waiting, slices]) if cpu.parse::<u32>().is_ok() => {
                out.push((cpu.to_string(), [running, waiting, slices]));
            }
            _ => bad += 1,
        }
    }
    (out, bad)
}

/// /etc/os-release: `KEY=value` lines, values unquoted.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            out.insert(key.trim().to_string(), unquoted.replace("\\\"", "\""));
        }
    }
    out
}

/// The leading `major[.minor]` of a VERSION_ID, as node_exporter turns it
/// into `node_os_version`'s value.
pub fn os_version_number(version_id: &str) -> Option<f64> {
    let end = version_id
        .char_indices()
        .scan(false, |seen_dot, (i, c)| {
            if c.is_ascii_digit() {
                Some(i + 1)
            } else if c == '.' && !*seen_dot {
                *seen_dot = true;
                Some(i)
            } else {
                None
            }
        })
        .last()?;
    version_id[..end].trim_end_matches('.').parse().ok()
}

/// The zone abbreviation and UTC offset (seconds) in force at `now` (Unix
/// seconds) from a TZif file (/etc/localtime): the local-time type of the
/// last transition at or before `now`, or the first type when there is
/// none. Zones whose rules continue past their last listed transition are
/// read as of that transition.
pub fn parse_tzif(bytes: &[u8], now: i64) -> Option<(String, i64)> {
    fn be32(b: &[u8], at: usize) -> Option<i64> {
        Some(i64::from(i32::from_be_bytes(
            b.get(at..at + 4)?.try_into().ok()?,
        )))
    }
    fn be64(b: &[u8], at: usize) -> Option<i64> {
        Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }
    struct Header {
        isut: usize,
        isstd: usize,
        leap: usize,
        time: usize,
        types: usize,
        chars: usize,
    }
    fn header(b: &[u8], at: usize) -> Option<Header> {
        if b.get(at..at + 4)? != b"TZif" {
            return None;
        }
        let count = |i: usize| be32(b, at + 20 + 4 * i).and_then(|v| usize::try_from(v).ok());
        Some(Header {
            isut: count(0)?,
            isstd: count(1)?,
            leap: count(2)?,
            time: count(3)?,
            types: count(4)?,
            chars: count(5)?,
        })
    }
    let v1 = header(bytes, 0)?;
    let version = *bytes.get(4)?;
    let (h, start, time_size) = if version >= b'2' {
        let v1_len = v1.time * 5 + v1.types * 6 + v1.chars + v1.leap * 8 + v1.isstd + v1.isut;
        let at = 44 + v1_len;
        (header(bytes, at)?, at + 44, 8)
    } else {
        (v1, 44, 4)
    };
    let times_at = start;
    let index_at = times_at + h.time * time_size;
    let types_at = index_at + h.time;
    let chars_at = types_at + h.types * 6;
    let mut type_index = 0usize;
    for i in 0..h.time {
        let t = if time_size == 8 {
            be64(bytes, times_at + 8 * i)?
        } else {
            be32(bytes, times_at + 4 * i)?
        };
        if t > now {
            break;
        }
        type_index = usize::from(*bytes.get(index_at + i)?);
    }
    if type_index >= h.types {
        return None;
    }
    let ttinfo = types_at + type_index * 6;
    let offset = be32(bytes, ttinfo)?;
    let abbr_at = chars_at + usize::from(*bytes.get(ttinfo + 5)?);
    let abbr_bytes = bytes.get(abbr_at..chars_at + h.chars)?;
    let end = abbr_bytes.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8_lossy(&abbr_bytes[..end]).into_owned(),
        offset,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/testdata/proc/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_default()
    }

    #[test]
    fn netstat_and_snmp_pair_headers_with_values() {
        let (stats, bad) = parse_netstat(&fixture("net/netstat"));
        assert_eq!(bad, 0);
        assert!(
            stats
                .iter()
                .any(|(p, n, _)| p == "TcpExt" && n == "ListenDrops")
        );
        let (snmp, bad) = parse_netstat(&fixture("net/snmp"));
        assert_eq!(bad, 0);
        let estab = snmp
            .iter()
            .find(|(p, n, _)| p == "Tcp" && n == "CurrEstab")
            .map(|s| s.2);
        assert!(estab.is_some());
        let (six, bad) = parse_snmp6(&fixture("net/snmp6"));
        assert_eq!(bad, 0);
        assert!(six.iter().any(|(p, n, _)| p == "Icmp6" && n == "InMsgs"));
        assert!(
            six.iter()
                .any(|(p, n, _)| p == "UdpLite6" && n == "InErrors")
        );
        let (_, bad) = parse_netstat("Tcp: A B\nUdp: 1 2\n");
        assert_eq!(bad, 2);
    }

    #[test]
    fn sockstat_softnet_arp_and_udp() {
        let (stats, bad) = parse_sockstat(&fixture("net/sockstat"));
        assert_eq!(bad, 0);
        assert!(stats.iter().any(|(p, f, _)| p == "sockets" && f == "used"));
        assert!(stats.iter().any(|(p, f, _)| p == "TCP" && f == "mem"));
        let (cpus, bad) =
            parse_softnet("0007c63a 00000000 00000002 0\n00069fd7 00000001 00000000 0\n");
        assert_eq!(bad, 0);
        assert_eq!(cpus, vec![[509498.0, 0.0, 2.0], [434135.0, 1.0, 0.0]]);
        let arp = parse_arp(
            "IP address       HW type     Flags       HW address            Mask     Device\n10.0.0.1 0x1 0x2 52:54:00:12:34:56 * eth0\n10.0.0.2 0x1 0x2 52:54:00:12:34:57 * eth0\n10.1.0.1 0x1 0x2 52:54:00:12:34:58 * eth1\n",
        );
        assert_eq!(arp, vec![("eth0".into(), 2), ("eth1".into(), 1)]);
        let udp = parse_udp_queues(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0044 00000000:0000 07 00000010:00000200 00:00000000 00000000     0        0 1 2\n   1: 00000000:0045 00000000:0000 07 00000001:00000000 00:00000000 00000000     0        0 1 2\n",
        );
        assert_eq!(udp, Some((17.0, 512.0)));
    }

    #[test]
    fn conntrack_vmstat_filefd_pressure() {
        let sums = parse_conntrack_stat(
            "entries  clashres found new invalid\n00000002  00000000 00000003 00000000 00000001\n00000002  00000000 00000004 00000000 00000000\n",
        );
        let sums = sums.unwrap_or_default();
        assert_eq!(sums.get("found"), Some(&7.0));
        assert_eq!(sums.get("invalid"), Some(&1.0));
        let (vm, bad) = parse_vmstat(&fixture("vmstat"));
        assert_eq!(bad, 0);
        assert!(vm.iter().any(|(n, _)| n == "pgfault"));
        assert_eq!(parse_file_nr("526\t0\t2466177\n"), Some((526.0, 2466177.0)));
        assert_eq!(parse_file_nr("526\n"), None);
        assert_eq!(
            parse_pressure(&fixture("pressure/io")),
            (Some(69820044.0), Some(37276874.0))
        );
        assert_eq!(
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=12\n"),
            (Some(12.0), None)
        );
    }

    #[test]
    fn schedstat_and_os_release() {
        let (cpus, bad) = parse_schedstat(&fixture("schedstat"));
        assert_eq!(bad, 0);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].0, "0");
        assert_eq!(
            cpus[0].1,
            [2045936778163039.0, 343796328169361.0, 4767485306.0]
        );
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n# comment\n",
        );
        assert_eq!(os.get("ID").map(String::as_str), Some("debian"));
        assert_eq!(
            os.get("PRETTY_NAME").map(String::as_str),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_version_number("12"), Some(12.0));
        assert_eq!(os_version_number("22.04"), Some(22.04));
        assert_eq!(os_version_number("3.18.4"), Some(3.18));
        assert_eq!(os_version_number("rolling"), None);
    }

    #[test]
    fn tzif_gives_the_zone_in_force() {
        let utc = std::fs::read(format!(
            "{}/testdata/rootfs/etc/localtime",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_default();
        assert_eq!(parse_tzif(&utc, 1_700_000_000), Some(("UTC".into(), 0)));
        let berlin = std::fs::read(format!(
            "{}/testdata/rootfs/usr/share/zoneinfo/Europe/Berlin",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_default();
        // 2023-07-01: summer time; 2023-12-01: winter time.
        assert_eq!(
            parse_tzif(&berlin, 1_688_169_600),
            Some(("CEST".into(), 7200))
        );
        assert_eq!(
            parse_tzif(&berlin, 1_701_388_800),
            Some(("CET".into(), 3600))
        );
        assert_eq!(parse_tzif(b"not a zone", 0), None);
        assert_eq!(parse_tzif(&berlin[..60], 0), None);
    }
}
