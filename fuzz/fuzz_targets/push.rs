//! A push as the collector receives it: read in place (and checked against
//! prost's reading of the same bytes), the batch's validation, the
//! per-agent limits, then applying it to a store twice, the second time
//! through the agent's series cache.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_collector::ingest::grpc::validate_batch;
use vigil_collector::ingest::limits::{AgentLimits, LimitsConfig};
use vigil_shared::batch::Batch;
use vigil_shared::labels::SeriesLimits;
use vigil_shared::proto::PushRequest;
use vigil_store::Store;

fuzz_target!(|data: &[u8]| {
    let view = Batch::decode(data);
    if let (Ok(view), Ok(owned)) = (&view, PushRequest::decode(data)) {
        // Compared as bytes: NaN values are not equal to themselves.
        assert_eq!(view.to_request().encode_to_vec(), owned.encode_to_vec());
    }
    let Ok(batch) = view else {
        return;
    };
    if validate_batch(&batch, &SeriesLimits::default(), 50_000, &[]).is_err() {
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
    let fresh = store.known(&batch, &store.batch_keys(&batch)).fresh;
    if limits.check_batch(&batch, || fresh, now).is_ok() {
        store.apply_batch(&batch, now, 0);
        let mut again = batch.clone();
        again.sequence = again.sequence.wrapping_add(1);
        // The second time through the keys and the agent's cache, as pushes go.
        let keys = store.batch_keys(&again);
        let known = store.known(&again, &keys);
        assert!(validate_batch(&again, &SeriesLimits::default(), 50_000, &known.positions).is_ok());
        store.apply_keyed(&again, &keys, now + 1_000, 0);
    }
});
