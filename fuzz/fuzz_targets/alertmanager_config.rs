//! An Alertmanager routing file, as the collector loads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vigil_notify::config::parse(std::path::Path::new("fuzz.yml"), text);
    }
});
