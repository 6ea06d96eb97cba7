//! Notifications: alerts from the rules, routed, grouped and delivered as
//! Alertmanager does it.
//!
//! - [`config`]: Alertmanager's configuration file (route, receivers,
//!   inhibition, time intervals), refused key by key when it asks for more.
//! - [`payload`]: the webhook body, as Alertmanager 0.25 sends it.
//! - [`forward`]: forwarding to Alertmanager API v2 endpoints, as Prometheus sends.
//! - [`silences`]: silences, shaped like Alertmanager's API v2, kept on disk.
//! - [`timeinterval`]: `time_intervals` for muting and activating routes.

pub mod config;
pub mod dispatch;
pub mod forward;
pub mod manager;
pub mod outbox;
pub mod payload;
pub mod sender;
pub mod silences;
pub mod timeinterval;
