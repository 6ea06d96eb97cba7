//! A write-ahead-log segment as a collector finds it after a crash or on a
//! damaged disk: opened and replayed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("00000000.wal"), data).is_ok() {
        let _ = vigil_store::wal::Wal::open(dir.path(), 0);
    }
});
