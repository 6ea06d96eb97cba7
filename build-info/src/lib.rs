//! What a Vigil binary was built from, set at build time by `build.rs`:
//! shown by `--version` and carried by the `vigil_agent_build_info` and
//! `vigil_collector_build_info` gauges, so an operator sees which build
//! runs where, and a fleet mid-upgrade.

/// The release version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit built, 12 hex digits, or `unknown`.
pub const REVISION: &str = env!("VIGIL_REVISION");
/// The build date, `YYYY-MM-DD` UTC (`SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("VIGIL_BUILD_DATE");
/// The compiler, as `rustc --version` gives it.
pub const RUSTC: &str = env!("VIGIL_RUSTC");

/// `--version`'s long text.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nrevision: ",
    env!("VIGIL_REVISION"),
    "\nbuild date: ",
    env!("VIGIL_BUILD_DATE"),
    "\n",
    env!("VIGIL_RUSTC"),
);

/// The build's labels, sorted by name: `build_date`, `revision`, `rustc`,
/// `version`.
pub const LABELS: [(&str, &str); 4] = [
    ("build_date", BUILD_DATE),
    ("revision", REVISION),
    ("rustc", RUSTC),
    ("version", VERSION),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_filled() {
        assert!(!VERSION.is_empty());
        assert!(REVISION == "unknown" || REVISION.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert!(BUILD_DATE.starts_with("20"), "{BUILD_DATE}");
        assert!(RUSTC.starts_with("rustc "), "{RUSTC}");
        assert!(LONG_VERSION.contains(REVISION));
    }
}
