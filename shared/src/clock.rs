//! The wall clock as every stage reads it: milliseconds since the Unix
//! epoch, the unit of sample times in the store, the query engine, rules
//! and notifications.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
