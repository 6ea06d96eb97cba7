//! An agent's spool segment as an agent finds it after a crash: opened,
//! and every batch it yields read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::ship::spool::{Spool, SpoolConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(dir.path().join("00000000000000000001.spool"), data).is_err() {
        return;
    }
    let spool = Spool::open(SpoolConfig {
        dir: Some(dir.path().to_path_buf()),
        max_bytes: 1 << 20,
        max_memory_bytes: 1 << 20,
        destinations: vec!["fuzz".into()],
    });
    let mut n = 0;
    while let Some(batch) = spool.peek(0) {
        spool.acknowledge(0, batch.sequence);
        n += 1;
        if n > 10_000 {
            break;
        }
    }
});
