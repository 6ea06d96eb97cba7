//! The Prometheus text format, as textfiles (and later scrapes) are read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vigil_shared::text_format::parse(text);
    }
});
