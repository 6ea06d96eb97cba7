//! The connection to a collector: one lazily connected gRPC channel with a
//! deadline on every push, gzip, the bearer token, and TLS when configured.
//!
//! Every failure is sorted into [`PushError::Retry`] (the batch is kept and
//! sent again after a backoff) or [`PushError::Reject`] (the collector will
//! never take it: the batch is dropped and counted by reason), as a type,
//! so that one bad batch can never wedge the outbox.

use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{PushRequest, PushResponse};

use crate::config::CollectorConfig;

pub use vigil_shared::proto::RETRY_AFTER_METADATA;

/// Why the collector will never accept a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Bad or missing token.
    Unauthenticated,
    /// The token is not allowed to push as this agent.
    PermissionDenied,
    /// A series breaks a rule or a limit.
    InvalidArgument,
}

impl RejectReason {
    /// The `reason` label of `vigil_agent_batches_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::PermissionDenied => "permission_denied",
            RejectReason::InvalidArgument => "invalid_argument",
        }
    }
}

/// A push that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Worth trying again: the collector is unreachable, slow or busy.
    #[error("{message}")]
    Retry {
        /// What went wrong.
        message: String,
        /// A delay the collector asked for.
        after: Option<Duration>,
    },
    /// Never worth trying again.
    #[error("{reason:?}: {message}")]
    Reject {
        /// Why.
        reason: RejectReason,
        /// The collector's message.
        message: String,
    },
}

impl PushError {
    /// Sorts a gRPC status into retry or reject.
    pub fn from_status(status: &Status) -> Self {
        let message = format!("{:?}: {}", status.code(), status.message());
        let reason = match status.code() {
            Code::Unauthenticated => Some(RejectReason::Unauthenticated),
            Code::PermissionDenied => Some(RejectReason::PermissionDenied),
            Code::InvalidArgument => Some(RejectReason::InvalidArgument),
            // Unavailable, DeadlineExceeded, ResourceExhausted, Aborted, and
            // anything unexpected: keep the batch and try again.
            _ => None,
        };
        match reason {
            Some(reason) => PushError::Reject { reason, message },
            None => PushError::Retry {
                message,
                after: status
                    .metadata()
                    .get(RETRY_AFTER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis),
            },
        }
    }
}

/// A collector connection.
pub struct CollectorClient {
    client: IngestClient<Channel>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
    endpoint: String,
}

/// The connection could not be set up (bad TLS files, bad URI).
#[derive(Debug, thiserror::Error)]
#[error("collector {endpoint}: {message}")]
pub struct ConnectError {
    endpoint: String,
    message: String,
}

impl CollectorClient {
    /// Prepares a connection; nothing is dialled until the first push.
    pub fn new(config: &CollectorConfig) -> Result<Self, ConnectError> {
        let fail = |message: String| ConnectError {
            endpoint: config.endpoint.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(config.timeout);
        if let Some(tls) = &config.tls {
            let ca = std::fs::read(&tls.ca_file)
                .map_err(|e| fail(format!("ca_file {}: {e}", tls.ca_file.display())))?;
            let mut tls_config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &tls.identity {
                let cert_pem = std::fs::read(cert)
                    .map_err(|e| fail(format!("cert_file {}: {e}", cert.display())))?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| fail(format!("key_file {}: {e}", key.display())))?;
                tls_config = tls_config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            if let Some(name) = &tls.server_name {
                tls_config = tls_config.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|e| fail(format!("TLS: {e}")))?;
        }
        let token = match &config.token {
            Some(t) => Some(
                format!("Bearer {}", t.expose())
                    .parse()
                    .map_err(|_| fail("the token is not valid in an HTTP header".into()))?,
            ),
            None => None,
        };
        let client = IngestClient::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_encoding_message_size(64 << 20);
        Ok(Self {
            client,
            token,
            timeout: config.timeout,
            endpoint: config.endpoint.clone(),
        })
    }

    /// The endpoint, for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one batch with a deadline.
    pub async fn push(&mut self, batch: PushRequest) -> Result<PushResponse, PushError> {
        let mut request = Request::new(batch);
        request.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        match self.client.push(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(PushError::from_status(&status)),
        }
    }

    /// Sends one batch, giving up (as a retryable failure) after `limit`,
    /// connecting included: for probing a collector that may be blackholed.
    pub async fn push_within(
        &mut self,
        batch: PushRequest,
        limit: Duration,
    ) -> Result<PushResponse, PushError> {
        match tokio::time::timeout(limit, self.push(batch)).await {
            Ok(result) => result,
            Err(_) => Err(PushError::Retry {
                message: format!("no answer within {limit:?}"),
                after: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_retry_and_reject() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::Internal,
        ] {
            assert!(
                matches!(
                    PushError::from_status(&Status::new(code, "x")),
                    PushError::Retry { .. }
                ),
                "{code:?}"
            );
        }
        for (code, reason) in [
            (Code::Unauthenticated, RejectReason::Unauthenticated),
            (Code::PermissionDenied, RejectReason::PermissionDenied),
            (Code::InvalidArgument, RejectReason::InvalidArgument),
        ] {
            assert!(
                matches!(PushError::from_status(&Status::new(code, "x")), PushError::Reject { reason: r, .. } if r == reason)
            );
        }
    }

    #[test]
    fn retry_delay_from_the_collector_is_honoured() {
        let mut status = Status::new(Code::ResourceExhausted, "slow down");
        status
            .metadata_mut()
            .insert(RETRY_AFTER_METADATA, MetadataValue::from_static("1500"));
        assert!(matches!(
            PushError::from_status(&status),
            PushError::Retry { after: Some(d), .. } if d == Duration::from_millis(1500)
        ));
    }
}
