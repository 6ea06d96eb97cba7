//! `vigil-shared`: what the agent and the collector must agree on.
//!
//! - [`proto`]: the gRPC wire protocol (`vigil.v1`), generated from `proto/`.
//! - [`batch`]: a pushed batch read in place, for the collector's ingest path.
//! - [`raw_ingest`]: the collector's gRPC server, taking pushes as bytes.
//! - [`labels`]: Prometheus naming rules and the limits both sides enforce.
//! - [`histogram`]: the HDR window codec and the exposition bucket ladders.
//! - [`text_format`]: a parser for the Prometheus text exposition format.
//! - [`lock`]: one process per data folder (`flock`).
//! - [`logging`]: log set-up and shutdown signals for both binaries.
//! - [`exposition`]: the Prometheus text and OpenMetrics writer, and metric kinds.
//! - [`clock`]: wall-clock milliseconds, as every stage stamps samples.
//! - [`config`]: durations, sizes, secrets and TOML loading with precise errors.

pub mod batch;
pub mod clock;
pub mod config;
pub mod exposition;
pub mod format;
pub mod histogram;
pub mod labels;
pub mod lock;
pub mod logging;
#[allow(missing_docs, clippy::all)]
pub mod raw_ingest;
pub mod text_format;

/// The generated wire protocol, `vigil.v1`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("vigil.v1");

    /// Metadata key of a retryable error: the delay, in milliseconds, the
    /// collector asks the agent to wait before it tries again.
    pub const RETRY_AFTER_METADATA: &str = "vigil-retry-after-ms";
}
