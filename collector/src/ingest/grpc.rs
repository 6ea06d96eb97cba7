//! The `vigil.v1.Ingest/Push` handler: authenticate, validate the whole batch
//! (names, labels, limits, windows), then apply it to the store once.
//!
//! A batch is applied whole or not at all: an invalid series refuses the
//! batch with INVALID_ARGUMENT naming the series and the rule, so the agent
//! drops it (its own validation makes this rare) rather than retrying forever.
//!
//! The push arrives as bytes ([`RawPush`]) and is read in place
//! ([`Batch`]): no string of it is copied on the way to the store, and the
//! same bytes go to the write-ahead log. A push is handled where it
//! arrives, on the runtime's thread (a few hundred microseconds for an
//! agent's batch); with `wal_fsync = "always"` it then awaits the shared
//! sync ([`super::commit::Syncer`]) without holding a thread.

use std::sync::{Arc, Mutex};

use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};
use vigil_shared::batch::Batch;
use vigil_shared::histogram::decode_window;
use vigil_shared::labels::{self, SeriesLimits};
use vigil_shared::proto::{Kind, PushResponse};
use vigil_shared::raw_ingest::RawPush;
use vigil_shared::raw_ingest::ingest_server::Ingest;

use super::auth::Authenticator;
use super::commit::Syncer;
use super::limits::{AgentLimits, Refused};
use super::{IngestMetrics, RejectReason};
use vigil_store::wal::{FsyncPolicy, GroupCommit, Wal};
use vigil_store::{BatchKeys, Store, now_ms};

/// Family names agents may not use: the collector's own.
pub const RESERVED_PREFIX: &str = "vigil_collector_";

/// The gRPC service.
pub struct IngestService {
    state: Arc<ServiceState>,
}

struct ServiceState {
    store: Arc<Store>,
    wal: Arc<Mutex<Wal>>,
    commit: Arc<GroupCommit>,
    /// Present with `wal_fsync = "always"`.
    syncer: Option<Syncer>,
    fsync: FsyncPolicy,
    metrics: Arc<IngestMetrics>,
    auth: Authenticator,
    limits: SeriesLimits,
    max_series_per_push: usize,
    agent_limits: Arc<AgentLimits>,
}

impl IngestService {
    /// A service writing to `store`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        wal: Arc<Mutex<Wal>>,
        commit: Arc<GroupCommit>,
        fsync: FsyncPolicy,
        metrics: Arc<IngestMetrics>,
        auth: Authenticator,
        limits: SeriesLimits,
        max_series_per_push: usize,
        agent_limits: Arc<AgentLimits>,
    ) -> Self {
        let syncer = match fsync {
            FsyncPolicy::Always => {
                match Syncer::start(Arc::clone(&wal), Arc::clone(&commit), Arc::clone(&metrics)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // Pushes then wait for their sync on the blocking pool.
                        tracing::error!(error = %e, "cannot start the log sync thread");
                        None
                    }
                }
            }
            FsyncPolicy::Interval(_) => None,
        };
        let state = ServiceState {
            store,
            wal,
            commit,
            syncer,
            fsync,
            metrics,
            auth,
            limits,
            max_series_per_push,
            agent_limits,
        };
        Self {
            state: Arc::new(state),
        }
    }
}

impl ServiceState {
    /// The status for a push a per-agent limit refused: RESOURCE_EXHAUSTED
    /// with the retry delay for rates, INVALID_ARGUMENT otherwise.
    fn limited(&self, agent: &str, refused: Refused) -> Status {
        warn!(agent, limit = refused.limit.label(), message = %refused.message, "push refused by a limit");
        match refused.retry_after {
            Some(wait) => {
                self.metrics.rejected(RejectReason::ResourceExhausted);
                let mut status = Status::resource_exhausted(refused.message);
                if let Ok(v) = wait.as_millis().to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(vigil_shared::proto::RETRY_AFTER_METADATA, v);
                }
                status
            }
            None => {
                self.metrics.rejected(RejectReason::InvalidArgument);
                Status::invalid_argument(refused.message)
            }
        }
    }

    fn refuse(&self, reason: RejectReason, agent: &str, message: String) -> Status {
        self.metrics.rejected(reason);
        warn!(agent, reason = reason.label(), %message, "push refused");
        match reason {
            RejectReason::Unauthenticated => Status::unauthenticated(message),
            RejectReason::PermissionDenied => Status::permission_denied(message),
            RejectReason::InvalidArgument => Status::invalid_argument(message),
            RejectReason::ResourceExhausted => Status::resource_exhausted(message),
        }
    }
}

/// Checks a whole batch; the error names the first bad series. A series
/// at a position that `known` marks true has the exact family, kind and
/// label bytes that the agent's last accepted batch had there
/// ([`vigil_store::Store::known`]), so its labels passed these checks
/// then and are not read again (a steady agent's labels are checked once).
pub fn validate_batch(
    batch: &Batch<'_>,
    limits: &SeriesLimits,
    max_series: usize,
    known: &[bool],
) -> Result<(), String> {
    if batch.agent_id.is_empty() {
        return Err("agent_id is empty".into());
    }
    if batch.agent_id.len() > limits.max_label_value_bytes {
        return Err("agent_id is longer than max_label_value_bytes".into());
    }
    let total = batch.series_count();
    if total > max_series {
        return Err(format!(
            "{total} series in one push, more than ingest.max_series_per_push ({max_series})"
        ));
    }
    let mut position = 0usize;
    for family in &batch.families {
        labels::validate_metric_name(family.name, limits)
            .map_err(|e| format!("family {:?}: {e}", family.name))?;
        let kind = Kind::try_from(family.kind).unwrap_or(Kind::Unspecified);
        if kind == Kind::Unspecified {
            return Err(format!(
                "family {}: unknown kind {}",
                family.name, family.kind
            ));
        }
        let histogram = kind == Kind::Histogram;
        if histogram {
            if family.bucket_bounds.is_empty()
                || family.bucket_bounds.windows(2).any(|w| w[0] >= w[1])
                || family.bucket_bounds.iter().any(|b| !b.is_finite())
            {
                return Err(format!(
                    "family {}: bucket bounds must be finite and strictly ascending",
                    family.name
                ));
            }
        } else if !family.bucket_bounds.is_empty() {
            return Err(format!(
                "family {}: bucket bounds on a family that is not a histogram",
                family.name
            ));
        }
        for series in &family.series {
            let at = position;
            position += 1;
            if known.get(at).copied().unwrap_or(false) && series.window.is_none() {
                continue;
            }
            let pairs = || series.labels();
            // The one walk that reads each label and checks it is UTF-8.
            let mut malformed = None;
            let checked = labels::validate_labels(
                series
                    .try_labels()
                    .map_while(|label| label.map_err(|e| malformed = Some(e)).ok()),
                limits,
            );
            if let Some(e) = malformed {
                return Err(format!(
                    "family {}: series {}: {e}",
                    family.name,
                    labels::describe_series(family.name, pairs())
                ));
            }
            checked.map_err(|e| {
                format!(
                    "series {}: {e}",
                    labels::describe_series(family.name, pairs())
                )
            })?;
            if histogram && series.labels().any(|(name, _)| name == "le") {
                return Err(format!(
                    "series {}: a histogram series may not carry an `le` label",
                    labels::describe_series(family.name, pairs())
                ));
            }
            match (&series.window, histogram) {
                (Some(window), true) => {
                    decode_window(window, family.bucket_bounds.len()).map_err(|e| {
                        format!(
                            "series {}: {e}",
                            labels::describe_series(family.name, pairs())
                        )
                    })?;
                }
                (None, true) => {
                    return Err(format!(
                        "series {}: histogram series without a window",
                        labels::describe_series(family.name, pairs())
                    ));
                }
                (Some(_), false) => {
                    return Err(format!(
                        "series {}: a window on a series that is not a histogram",
                        labels::describe_series(family.name, pairs())
                    ));
                }
                (None, false) => {}
            }
        }
    }
    Ok(())
}

/// How long agents are asked to wait while the log cannot be written.
const LOG_RETRY_AFTER_MS: &str = "5000";

/// UNAVAILABLE for a log failure, asking the agent to wait [`LOG_RETRY_AFTER_MS`].
fn log_unavailable(message: &str) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(
        vigil_shared::proto::RETRY_AFTER_METADATA,
        tonic::metadata::MetadataValue::from_static(LOG_RETRY_AFTER_MS),
    );
    status
}

impl ServiceState {
    /// Everything a push goes through, in order; on a blocking-pool thread.
    fn handle(
        &self,
        bytes: Vec<u8>,
        peer: Option<std::net::SocketAddr>,
        authorization: Option<&str>,
    ) -> Result<Logged, Status> {
        let batch = match Batch::decode(&bytes) {
            Ok(batch) => batch,
            Err(e) => {
                // No agent name can be trusted yet: the log names the sender.
                let from = peer.map_or_else(|| "unknown peer".to_string(), |p| p.to_string());
                return Err(self.refuse(RejectReason::InvalidArgument, &from, e.to_string()));
            }
        };
        let binding = match self.auth.check(batch.agent_id, peer, authorization) {
            Ok(binding) => binding,
            Err(refusal) => {
                return Err(self.refuse(refusal.reason, batch.agent_id, refusal.message));
            }
        };
        if let Err(refused) = self.agent_limits.check_rate(batch.agent_id) {
            return Err(self.limited(batch.agent_id, refused));
        }
        // Keys are hashed once, here; validation skips the series the
        // agent's last batch had at the same positions, byte for byte.
        let keys = self.store.batch_keys(&batch);
        let known = self.store.known(&batch, &keys);
        if let Err(message) = validate_batch(
            &batch,
            &self.limits,
            self.max_series_per_push,
            &known.positions,
        ) {
            return Err(self.refuse(RejectReason::InvalidArgument, batch.agent_id, message));
        }
        if let Some(series) = binding.foreign_series(&batch) {
            let message = format!(
                "series {series}: the token of agent {:?} may only write series whose instance is {:?}",
                batch.agent_id, batch.agent_id
            );
            return Err(self.refuse(RejectReason::PermissionDenied, batch.agent_id, message));
        }
        if !self.store.is_duplicate(&batch)
            && let Err(refused) = self
                .agent_limits
                .check_batch(&batch, || known.fresh, now_ms())
        {
            return Err(self.limited(batch.agent_id, refused));
        }
        let reserved: u64 = batch
            .families
            .iter()
            .filter(|f| f.name.starts_with(RESERVED_PREFIX))
            .map(|f| f.series.len() as u64)
            .sum();
        if reserved == 0 {
            return self.log_and_apply(&bytes, &batch, Some(&keys), 0);
        }
        debug!(agent = %batch.agent_id, "skipped families with the reserved vigil_collector_ prefix");
        let mut kept = batch.to_request();
        kept.families
            .retain(|f| !f.name.starts_with(RESERVED_PREFIX));
        let kept = kept.encode_to_vec();
        match Batch::decode(&kept) {
            Ok(batch) => self.log_and_apply(&kept, &batch, None, reserved),
            Err(e) => Err(Status::internal(format!(
                "cannot read back a filtered batch: {e}"
            ))),
        }
    }

    /// Logs the batch (as `bytes`), applies it, and waits for the sync that
    /// the policy asks for before the acknowledgement.
    fn log_and_apply(
        &self,
        bytes: &[u8],
        batch: &Batch<'_>,
        keys: Option<&BatchKeys>,
        reserved: u64,
    ) -> Result<Logged, Status> {
        // Before the duplicate check: after a failed sync, a batch the store
        // holds may not be on disk, so nothing may be acknowledged.
        if self.commit.is_broken() {
            self.metrics.wal_failed();
            return Err(log_unavailable(
                "the collector could not sync its write-ahead log and acknowledges nothing until it is restarted",
            ));
        }
        if self.store.is_duplicate(batch) {
            self.metrics.duplicate();
            debug!(agent = %batch.agent_id, sequence = batch.sequence, "duplicate batch acknowledged, not applied");
            return Ok(Logged {
                response: PushResponse {
                    acknowledged_sequence: batch.sequence,
                    accepted_series: 0,
                    duplicate: true,
                },
                sync_through: None,
            });
        }
        // Log first, then apply, then acknowledge; the log's lock keeps the
        // log's order and the store's order the same. With `always`, the
        // acknowledgement waits for a sync that covers this batch, shared
        // with the pushes that arrived meanwhile.
        let received = now_ms();
        let mut guard = match self.wal.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let position = match guard.append_encoded(bytes, received) {
            Ok(p) => p,
            Err(e) => {
                drop(guard);
                self.metrics.wal_failed();
                tracing::error!(error = %e, "cannot write the write-ahead log; push refused, the agent will retry");
                return Err(log_unavailable(&format!(
                    "the collector cannot write its log: {e}"
                )));
            }
        };
        let applied = match keys {
            Some(keys) => self
                .store
                .apply_keyed(batch, keys, received, guard.log_position()),
            None => self
                .store
                .apply_batch(batch, received, guard.log_position()),
        };
        drop(guard);
        self.metrics.wal_appended(false);
        self.metrics.skipped(applied.conflicts, reserved);
        self.metrics.out_of_order(applied.out_of_order);
        if applied.duplicate {
            self.metrics.duplicate();
            debug!(agent = %batch.agent_id, sequence = batch.sequence, "duplicate batch acknowledged, not applied");
        } else {
            self.metrics.accepted(applied.series);
            debug!(agent = %batch.agent_id, sequence = batch.sequence, series = applied.series, "batch applied");
        }
        Ok(Logged {
            response: PushResponse {
                acknowledged_sequence: batch.sequence,
                accepted_series: applied.series,
                duplicate: applied.duplicate,
            },
            sync_through: (self.fsync == FsyncPolicy::Always).then_some(position),
        })
    }

    /// Waits until the log is on disk up to `position`.
    async fn synced(&self, position: u64) -> Result<(), Status> {
        let result = match &self.syncer {
            Some(syncer) => syncer.wait(position).await.map_err(|_| None),
            None => {
                let (wal, commit) = (Arc::clone(&self.wal), Arc::clone(&self.commit));
                match tokio::task::spawn_blocking(move || commit.sync_through(&wal, position)).await
                {
                    Ok(Ok(did)) => {
                        self.metrics.wal_appended_sync_only(did);
                        Ok(())
                    }
                    Ok(Err(e)) => Err(Some(e.to_string())),
                    Err(join) => Err(Some(join.to_string())),
                }
            }
        };
        result.map_err(|e| {
            self.metrics.wal_failed();
            let e = e.unwrap_or_else(|| "a sync of the log failed".into());
            tracing::error!(error = %e, "cannot sync the write-ahead log; push refused, the agent will retry");
            log_unavailable(&format!("the collector cannot sync its log: {e}"))
        })
    }
}

/// A push logged and applied, and the log position its acknowledgement
/// waits for (with `wal_fsync = "always"`).
struct Logged {
    response: PushResponse,
    sync_through: Option<u64>,
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(&self, request: Request<RawPush>) -> Result<Response<PushResponse>, Status> {
        let peer = request.remote_addr();
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let RawPush(bytes) = request.into_inner();
        let logged = self.state.handle(bytes, peer, authorization.as_deref())?;
        if let Some(position) = logged.sync_through {
            self.state.synced(position).await?;
        }
        Ok(Response::new(logged.response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::proto::{Family, Label, PushRequest, Series, Window};

    fn validate_batch(
        batch: &PushRequest,
        limits: &SeriesLimits,
        max: usize,
    ) -> Result<(), String> {
        let bytes = batch.encode_to_vec();
        let view = Batch::decode(&bytes).map_err(|e| e.to_string())?;
        super::validate_batch(&view, limits, max, &[])
    }

    fn batch(labels: Vec<Label>) -> PushRequest {
        PushRequest {
            agent_id: "a".into(),
            sequence: 1,
            families: vec![Family {
                name: "node_load1".into(),
                help: String::new(),
                kind: Kind::Gauge as i32,
                bucket_bounds: vec![],
                series: vec![Series {
                    labels,
                    value: 1.0,
                    timestamp_ms: 0,
                    window: None,
                }],
            }],
            ..Default::default()
        }
    }

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn invalid_series_are_named_in_the_error() {
        let limits = SeriesLimits::default();
        assert!(
            validate_batch(
                &batch(vec![label("instance", "a"), label("job", "n")]),
                &limits,
                10
            )
            .is_ok()
        );
        let err = validate_batch(
            &batch(vec![
                label("instance", "a"),
                label("job", "n"),
                label("z-z", "1"),
            ]),
            &limits,
            10,
        )
        .err()
        .unwrap_or_default();
        assert!(
            err.contains("node_load1{instance=\"a\",job=\"n\",z-z=\"1\"}")
                && err.contains("invalid label name"),
            "{err}"
        );
        let err = validate_batch(&batch(vec![label("instance", "a")]), &limits, 10)
            .err()
            .unwrap_or_default();
        assert!(err.contains("\"job\" is missing"), "{err}");
        let err = validate_batch(
            &batch(vec![label("instance", "a"), label("job", "n")]),
            &limits,
            0,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("max_series_per_push"), "{err}");
    }

    #[test]
    fn only_byte_identical_series_skip_validation() {
        let store = Store::new(
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(3600),
        );
        let limits = SeriesLimits::default();
        let push = |sequence: u64, labels: Vec<Label>| {
            let mut b = batch(labels);
            b.sequence = sequence;
            b.encode_to_vec()
        };
        let good = || vec![label("instance", "a"), label("job", "n")];
        let first = push(1, good());
        let view = Batch::decode(&first).expect("a push");
        let keys = store.batch_keys(&view);
        assert_eq!(store.known(&view, &keys).positions, vec![false]);
        assert!(super::validate_batch(&view, &limits, 10, &[false]).is_ok());
        store.apply_keyed(&view, &keys, now_ms(), 0);

        // The same bytes again: known, so its labels are not read again.
        let second = push(2, good());
        let view = Batch::decode(&second).expect("a push");
        let known = store.known(&view, &store.batch_keys(&view));
        assert_eq!((known.positions.clone(), known.fresh), (vec![true], 0));

        // One byte differs (a label name that is not valid): not known, and
        // refused.
        let bad = push(3, vec![label("instance", "a"), label("j-b", "n")]);
        let view = Batch::decode(&bad).expect("a push");
        let known = store.known(&view, &store.batch_keys(&view));
        assert_eq!((known.positions.clone(), known.fresh), (vec![false], 1));
        let err = super::validate_batch(&view, &limits, 10, &known.positions)
            .err()
            .unwrap_or_default();
        assert!(err.contains("invalid label name"), "{err}");

        // After a replay, nothing is known until the agent pushes again.
        store.forget_series_caches();
        let view = Batch::decode(&second).expect("a push");
        assert_eq!(
            store.known(&view, &store.batch_keys(&view)).positions,
            vec![false]
        );
    }

    #[test]
    fn a_label_that_is_not_utf8_is_named() {
        let good = batch(vec![label("instance", "a"), label("job", "qqqq")]);
        let mut bytes = good.encode_to_vec();
        let at = bytes
            .windows(4)
            .position(|w| w == b"qqqq")
            .expect("the value is in the bytes");
        bytes[at] = 0xff;
        let view = Batch::decode(&bytes).expect("the framing is whole");
        let err = super::validate_batch(&view, &SeriesLimits::default(), 10, &[])
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("family node_load1") && err.contains("label value is not UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn log_failures_ask_agents_to_wait() {
        let status = log_unavailable("disk full");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(vigil_shared::proto::RETRY_AFTER_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("5000")
        );
    }

    #[test]
    fn windows_must_match_their_family() {
        let limits = SeriesLimits::default();
        let mut b = batch(vec![label("instance", "a"), label("job", "n")]);
        b.families[0].series[0].window = Some(Window::default());
        assert!(validate_batch(&b, &limits, 10).is_err_and(|e| e.contains("not a histogram")));
        b.families[0].kind = Kind::Histogram as i32;
        b.families[0].bucket_bounds = vec![1.0];
        b.families[0].series[0].window = Some(Window {
            count: 1,
            bucket_counts: vec![1, 0],
            scale: 1.0,
            hdr: vec![1, 2, 3],
            ..Default::default()
        });
        assert!(validate_batch(&b, &limits, 10).is_err_and(|e| e.contains("HDR")));
    }
}
