//! What the agent's listeners (StatsD, OTLP) share: the
//! `vigil_agent_listener_up` gauge, and finding the process that holds a
//! port another listener could not bind.

use crate::window::{FamilyKind, RecordError, Windows};

/// Records `vigil_agent_listener_up{listener}` for each configured
/// listener: 1 while it holds its socket.
pub fn record_up(out: &mut Windows, listeners: &[(&str, bool)]) -> Result<(), RecordError> {
    let up = out.family(
        "vigil_agent_listener_up",
        "Whether each of the agent's listeners holds its socket (1) or not (0).",
        FamilyKind::Gauge,
    )?;
    for (name, held) in listeners {
        out.set(up, &[("listener", name)], f64::from(u8::from(*held)))?;
    }
    Ok(())
}

/// What holds a local port: the process name and pid found through
/// `/proc/net/{udp,udp6,tcp,tcp6}` and the processes' open sockets, or
/// a note that it is not visible (another user's process, without root).
pub fn holder(port: u16, protocol: &str) -> String {
    let mut inodes = Vec::new();
    for table in [protocol.to_string(), format!("{protocol}6")] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Some(inode) = fields.get(9)
                && *inode != "0"
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return "unknown".into();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "unknown".into();
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                return format!("{} (pid {pid})", comm.trim());
            }
        }
    }
    "a process this user cannot see".into()
}
