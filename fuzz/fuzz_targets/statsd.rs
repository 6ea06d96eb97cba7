//! StatsD datagrams as the agent's server takes them: folded into the
//! aggregator (small limits, so they are reached), moved into windows, and
//! the windows closed into a batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::sources::statsd::Aggregator;
use vigil_agent::window::Windows;

fuzz_target!(|data: &[u8]| {
    let mut aggregator = Aggregator::new("", 50, 1_000);
    for datagram in data.split(|b| *b == 0) {
        aggregator.datagram(datagram);
    }
    let Ok(mut windows) = Windows::new("fuzz", "node", 100) else {
        return;
    };
    windows.begin_sample(1_000);
    aggregator.record(&mut windows);
    aggregator.flushed();
    let _ = windows.close();
});
