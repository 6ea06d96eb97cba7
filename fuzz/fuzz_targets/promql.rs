//! A PromQL query, parsed and evaluated over a small history.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vigil_promql::{Limits, instant_query, range_query};
use vigil_store::history::History;

fn history() -> History {
    let mut h = History::new();
    for i in 0..4 {
        let id = h.series_id(&[
            ("__name__".to_string(), "x".to_string()),
            ("i".to_string(), i.to_string()),
        ]);
        for t in 0..60 {
            let _ = h.append(id, t * 1000, (t * i) as f64);
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let h = history();
    let limits = Limits {
        max_samples: 100_000,
        timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let _ = instant_query(&h, query, 59_000, limits);
    let _ = range_query(&h, query, 0, 59_000, 15_000, limits);
});
