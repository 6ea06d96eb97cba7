//! The collector's and the agent's TOML configs: parsed and validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_shared::config::ConfigSource;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = ConfigSource::from_text("fuzz.toml", text);
    if let Ok(raw) = source.parse::<vigil_collector::config::RawConfig>() {
        let _ = raw.validate();
    }
    if let Ok(raw) = source.parse::<vigil_agent::config::RawConfig>() {
        let _ = raw.validate();
    }
});
