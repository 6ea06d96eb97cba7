//! A Prometheus rule file, as `rules check` and a reload read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vigil_rules::file::parse_rule_file(std::path::Path::new("fuzz.rules.yml"), text);
    }
});
