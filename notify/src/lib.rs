//! Notifications: alerts routed, grouped, silenced, inhibited and
//! delivered as Alertmanager does it, through a durable outbox.
//!
//! Alerts come in through [`AlertSource`]: this crate knows nothing of the
//! rule engine that produces them, nor of PromQL or the store. The
//! collector wires its rules to it; a test can hand it alerts directly.
//!
//! - [`manager`]: the notification loop, the outbox and its metrics.
//! - [`config`]: Alertmanager's configuration file (route, receivers,
//!   inhibition, time intervals), refused key by key when it asks for more.
//! - [`api`]: Alertmanager's API v2 views (alerts, status) for `amtool`.
//! - [`payload`]: the webhook body, as Alertmanager 0.25 sends it.
//! - [`forward`]: forwarding to Alertmanager API v2 endpoints, as Prometheus sends.
//! - [`silences`]: silences, shaped like Alertmanager's API v2, kept on disk.
//! - [`timeinterval`]: `time_intervals` for muting and activating routes.

pub mod api;
pub mod config;
pub mod dispatch;
pub mod forward;
pub mod manager;
pub mod outbox;
pub mod payload;
pub mod sender;
pub mod silences;
pub mod timeinterval;

use std::sync::Arc;

pub use payload::NotifyAlert;

/// Where notifications take their alerts from.
pub trait AlertSource: Send + Sync {
    /// The alerts to notify of now: firing ones, and resolved ones while
    /// they are kept; never pending ones. Labels include external labels.
    fn alerts(&self) -> Vec<NotifyAlert>;
    /// `$externalURL`: the base of links in payloads.
    fn external_url(&self) -> String;
    /// Signalled after every evaluation round, so that new alerts are
    /// dispatched at once rather than at the next poll.
    fn evaluated(&self) -> Arc<tokio::sync::Notify>;
}
