//! node_exporter's timex collector: the kernel's NTP state from
//! `adjtimex(2)` called read-only (`modes = 0`).
//!
//! The one `unsafe` block of the agent: rustix, which the agent uses for
//! every other system call, has no wrapper for `adjtimex`, and no other
//! interface (/proc, /sys) exposes these values. The call only reads into
//! a zeroed `struct timex` the process owns.

/// `STA_NANO`: `offset` and `jitter` are in nanoseconds, not microseconds.
const STA_NANO: i32 = 0x2000;
/// `TIME_ERROR`: the clock is not synchronised.
const TIME_ERROR: i32 = 5;

/// What `adjtimex` reports, in node_exporter's families and units:
/// (family, kind is counter, value).
pub fn read() -> std::io::Result<Vec<(&'static str, bool, f64)>> {
    #[allow(unsafe_code)]
    // SAFETY: `timex` is plain data, valid when zeroed; `adjtimex` with
    // `modes == 0` only writes into the struct we pass, which lives for
    // the whole call.
    let (state, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut t);
        (state, t)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fine = if i64::from(t.status) & i64::from(STA_NANO) != 0 {
        1e-9
    } else {
        1e-6
    };
    let ppm = 65536.0 * 1e6;
    Ok(vec![
        ("node_timex_offset_seconds", false, t.offset as f64 * fine),
        (
            "node_timex_frequency_adjustment_ratio",
            false,
            1.0 + t.freq as f64 / ppm,
        ),
        (
            "node_timex_maxerror_seconds",
            false,
            t.maxerror as f64 / 1e6,
        ),
        (
            "node_timex_estimated_error_seconds",
            false,
            t.esterror as f64 / 1e6,
        ),
        ("node_timex_status", false, f64::from(t.status)),
        ("node_timex_loop_time_constant", false, t.constant as f64),
        ("node_timex_tick_seconds", false, t.tick as f64 / 1e6),
        (
            "node_timex_pps_frequency_hertz",
            false,
            t.ppsfreq as f64 / ppm,
        ),
        (
            "node_timex_pps_jitter_seconds",
            false,
            t.jitter as f64 * fine,
        ),
        ("node_timex_pps_shift_seconds", false, f64::from(t.shift)),
        (
            "node_timex_pps_stability_hertz",
            false,
            t.stabil as f64 / ppm,
        ),
        ("node_timex_pps_jitter_total", true, t.jitcnt as f64),
        ("node_timex_pps_calibration_total", true, t.calcnt as f64),
        ("node_timex_pps_error_total", true, t.errcnt as f64),
        (
            "node_timex_pps_stability_exceeded_total",
            true,
            t.stbcnt as f64,
        ),
        ("node_timex_tai_offset_seconds", false, f64::from(t.tai)),
        (
            "node_timex_sync_status",
            false,
            if state == TIME_ERROR { 0.0 } else { 1.0 },
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_answers_with_every_family() -> std::io::Result<()> {
        let values = super::read()?;
        assert_eq!(values.len(), 17);
        let tick = values
            .iter()
            .find(|(n, _, _)| *n == "node_timex_tick_seconds")
            .map(|v| v.2);
        // USER_HZ ticks: 100 or 1000 a second.
        assert!(tick.is_some_and(|t| t > 0.0 && t <= 0.01), "{tick:?}");
        Ok(())
    }
}
