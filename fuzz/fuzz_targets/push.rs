//! A push as the collector receives it: protobuf decode, the batch's
//! validation, the per-agent limits, then applying it to a store.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_collector::ingest::grpc::validate_batch;
use vigil_collector::ingest::limits::{AgentLimits, LimitsConfig};
use vigil_shared::labels::SeriesLimits;
use vigil_shared::proto::PushRequest;
use vigil_store::Store;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = PushRequest::decode(data) else {
        return;
    };
    if validate_batch(&batch, &SeriesLimits::default(), 50_000).is_err() {
        return;
    }
    let store = Store::new(Duration::from_secs(300), Duration::from_secs(3600));
    let limits = AgentLimits::new(LimitsConfig {
        max_series_per_agent: 10_000,
        max_new_series_per_minute: 10_000,
        max_pushes_per_second: 50,
        max_future: Duration::from_secs(600),
        max_age: Duration::from_secs(3600),
    });
    let now = 1_800_000_000_000;
    if limits.check_batch(&batch, || store.new_series(&batch), now).is_ok() {
        store.apply(&batch, now);
    }
});
