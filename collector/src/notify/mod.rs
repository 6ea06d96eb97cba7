//! Notifications: alerts from the rules, routed, grouped and delivered as
//! Alertmanager does it.
//!
//! - [`config`]: Alertmanager's configuration file (route, receivers,
//!   inhibition, time intervals), refused key by key when it asks for more.
//! - [`timeinterval`]: `time_intervals` for muting and activating routes.

pub mod config;
pub mod timeinterval;
