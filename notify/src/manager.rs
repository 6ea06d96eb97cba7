//! The collector's notification loop: takes alerts from an [`AlertSource`], routes and
//! groups them ([`super::dispatch`]), puts every notification in the durable
//! outbox ([`super::outbox`]) and delivers it ([`super::sender`]) with
//! retries, a circuit breaker per receiver, and expiry. The notification
//! log is kept in `DATA_DIR/notify/log.json`, so a restart does not repeat
//! what was already sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vigil_shared::config::Secret;

use super::AlertSource;
use super::config::{NotifyConfig, parse};
use super::dispatch::{Dispatcher, NotificationLog};
use super::outbox::{Outbox, Pending};
use super::payload::NotifyAlert;
use super::sender::{Outcome, client, deliver};
use vigil_shared::clock::now_ms;
use vigil_shared::exposition::ExpositionWriter;
use vigil_shared::exposition::MetricKind;

/// `[notify]` settings.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The Alertmanager-format routing file; `None`: notifications off.
    pub config_file: Option<PathBuf>,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// A notification not delivered by then is dropped and counted.
    pub expire_after: Duration,
    /// Deadline of one try.
    pub timeout: Duration,
    /// HMAC key of `X-Vigil-Signature`.
    pub signing_secret: Option<Secret>,
    /// Consecutive failures that open a receiver's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker holds a receiver's notifications back.
    pub breaker_cooldown: Duration,
    /// Most notifications held per receiver; the oldest go first.
    pub max_pending_per_receiver: usize,
    /// Alertmanager endpoints alerts are forwarded to.
    pub forward_to: Vec<String>,
    /// How often firing alerts are sent to them again.
    pub forward_resend: Duration,
}

/// Latency buckets (seconds) of `vigil_collector_notification_latency_seconds`.
const LATENCY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Debug, Default, Clone)]
struct ReceiverCounters {
    sent: u64,
    failed: u64,
    retried: u64,
    expired: u64,
    dropped: u64,
    fallbacks: u64,
    consecutive_failures: u32,
    open_until: i64,
}

#[derive(Debug, Default, Clone)]
struct Latency {
    buckets: [u64; 12],
    count: u64,
    sum: f64,
}

struct State {
    config: Option<Arc<NotifyConfig>>,
    clients: BTreeMap<(String, usize), reqwest::Client>,
    dispatcher: Dispatcher,
    log: NotificationLog,
    saved_log: NotificationLog,
    outbox: Outbox,
    receivers: BTreeMap<String, ReceiverCounters>,
    latency: BTreeMap<String, Latency>,
}

/// Notifications in a collector.
pub struct NotifyManager {
    settings: NotifySettings,
    dir: PathBuf,
    state: Mutex<State>,
    source: Arc<dyn AlertSource>,
    reloads_failed: AtomicU64,
    started_ms: i64,
    forward_client: reqwest::Client,
    forward_state: Mutex<super::forward::ForwardState>,
    forwarded: Vec<(String, super::forward::ForwardCounters)>,
    /// Silences.
    pub silences: Mutex<super::silences::Silences>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads and checks the routing file and builds a client per webhook.
#[allow(clippy::type_complexity)]
fn load(
    settings: &NotifySettings,
) -> Result<
    (
        Option<Arc<NotifyConfig>>,
        BTreeMap<(String, usize), reqwest::Client>,
    ),
    String,
> {
    // reqwest is built without a default TLS provider: use ring, as tonic
    // does. Here, so that `--check-config` builds clients as a start does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(path) = &settings.config_file else {
        return Ok((None, BTreeMap::new()));
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = parse(path, &text).map_err(|e| e.to_string())?;
    let mut clients = BTreeMap::new();
    for r in config.receivers.values() {
        for (i, w) in r.webhooks.iter().enumerate() {
            let c = client(w, settings.timeout).map_err(|e| {
                format!(
                    "{}: receiver {:?}, webhook {i}: {e}",
                    path.display(),
                    r.name
                )
            })?;
            clients.insert((r.name.clone(), i), c);
        }
    }
    Ok((Some(Arc::new(config)), clients))
}

/// Checks a routing file without running it.
pub fn check(settings: &NotifySettings) -> Result<(), String> {
    load(settings).map(|_| ())
}

impl NotifyManager {
    /// Loads the routing file and what the last run left in `data_dir/notify`.
    pub fn new(
        settings: NotifySettings,
        source: Arc<dyn AlertSource>,
        data_dir: &Path,
    ) -> Result<Self, String> {
        let (config, clients) = load(&settings)?;
        let (settings_timeout, forward_to) = (settings.timeout, settings.forward_to.clone());
        let dir = data_dir.join("notify");
        let silences = super::silences::Silences::open(&dir)?;
        let (outbox, problems) = Outbox::open(&dir.join("outbox"))
            .map_err(|e| format!("{}: {e}", dir.join("outbox").display()))?;
        for p in problems {
            error!(problem = %p, "a notification in the outbox cannot be read; it was set aside");
        }
        if !outbox.is_empty() {
            info!(
                notifications = outbox.len(),
                "undelivered notifications found; delivering them"
            );
        }
        let log: NotificationLog = std::fs::read(dir.join("log.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            settings,
            dir,
            state: Mutex::new(State {
                config,
                clients,
                dispatcher: Dispatcher::new(),
                saved_log: log.clone(),
                log,
                outbox,
                receivers: BTreeMap::new(),
                latency: BTreeMap::new(),
            }),
            source,
            reloads_failed: AtomicU64::new(0),
            started_ms: now_ms(),
            forward_client: reqwest::Client::builder()
                .timeout(settings_timeout)
                .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            forward_state: Mutex::new(Default::default()),
            silences: Mutex::new(silences),
            forwarded: forward_to
                .into_iter()
                .map(|a| (a, Default::default()))
                .collect(),
        })
    }

    /// Re-reads the routing file; on error the running one stays.
    pub fn reload(&self) -> Result<(), String> {
        match load(&self.settings) {
            Ok((config, clients)) => {
                let mut s = lock(&self.state);
                s.config = config;
                s.clients = clients;
                info!("notification routing reloaded");
                Ok(())
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "notification routing reload refused; the previous one keeps running");
                Err(e)
            }
        }
    }

    /// Alertmanager's `GET /api/v2/alerts`: the alerts held now (not
    /// resolved ones), with their receivers, silences and inhibitors, as
    /// `filter` chooses them.
    pub fn api_alerts(&self, filter: &super::api::AlertFilter, now: i64) -> Vec<serde_json::Value> {
        let alerts: Vec<NotifyAlert> = self
            .source
            .alerts()
            .into_iter()
            .filter(|a| !a.resolved())
            .collect();
        let refs: Vec<&NotifyAlert> = alerts.iter().collect();
        let config = lock(&self.state).config.clone();
        let silences = self
            .silences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        alerts
            .iter()
            .map(|alert| {
                let mut receivers: Vec<String> = config
                    .as_ref()
                    .map(|c| {
                        c.route
                            .find(&alert.labels)
                            .into_iter()
                            .map(|r| r.receiver.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                receivers.dedup();
                let inhibited_by = config
                    .as_ref()
                    .map(|c| {
                        super::dispatch::inhibitors(&c.inhibit_rules, alert, &refs)
                            .into_iter()
                            .map(NotifyAlert::fingerprint)
                            .collect()
                    })
                    .unwrap_or_default();
                super::api::AlertView {
                    alert,
                    receivers,
                    silenced_by: silences.muting(&alert.labels, now),
                    inhibited_by,
                }
            })
            .filter(|view| view.listed(filter))
            .map(|view| view.to_json(now))
            .collect()
    }

    /// Alertmanager's `GET /api/v2/status`.
    pub fn api_status(&self) -> serde_json::Value {
        let file = self
            .settings
            .config_file
            .as_ref()
            .map(|p| p.display().to_string());
        super::api::status_json(self.started_ms, file.as_deref())
    }

    /// Routes, groups and queues what is due; returns when to look again.
    fn dispatch(&self, now: i64) -> i64 {
        let alerts = self.source.alerts();
        let (external_url, mut s) = (self.source.external_url(), lock(&self.state));
        let Some(config) = s.config.clone() else {
            return now + 1000;
        };
        let state = &mut *s;
        state.dispatcher.update(&config, &alerts, now);
        let silences = self
            .silences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let notifications =
            state
                .dispatcher
                .flush_due(&config, &mut state.log, now, &external_url, &|a| {
                    silences.mutes(&a.labels, now)
                });
        drop(silences);
        for n in notifications {
            // The cap per receiver: the oldest of its notifications go first.
            let depth = state.outbox.depth().get(&n.receiver).copied().unwrap_or(0);
            if depth >= self.settings.max_pending_per_receiver
                && let Some(oldest) = state
                    .outbox
                    .due(i64::MAX)
                    .into_iter()
                    .find(|p| p.notification.receiver == n.receiver)
            {
                remove_logged(&mut state.outbox, &oldest.notification.id);
                state
                    .receivers
                    .entry(n.receiver.clone())
                    .or_default()
                    .dropped += 1;
                warn!(receiver = %n.receiver, "outbox full for this receiver: dropped its oldest notification");
            }
            let receiver = n.receiver.clone();
            if let Err(e) = state.outbox.put(Pending {
                notification: n,
                attempts: 0,
                next_attempt_ms: now,
                last_error: None,
                first_failure_ms: None,
                fell_back: false,
            }) {
                // The log still says sent: a notification that cannot be
                // made durable is counted and logged, not silently lost.
                state.receivers.entry(receiver.clone()).or_default().failed += 1;
                error!(receiver = %receiver, error = %e, "cannot write a notification to the outbox");
            }
        }
        if state.log != state.saved_log {
            match write_json(&self.dir.join("log.json"), &state.log) {
                Ok(()) => state.saved_log = state.log.clone(),
                Err(e) => error!(error = %e, "cannot save the notification log"),
            }
        }
        state
            .dispatcher
            .next_due()
            .unwrap_or(now + 1000)
            .min(now + 1000)
    }

    /// Tries every notification that is due, one receiver's in order.
    async fn send_due(self: &Arc<Self>, now: i64) {
        let (due, config, clients) = {
            let s = lock(&self.state);
            (s.outbox.due(now), s.config.clone(), s.clients.clone())
        };
        let Some(config) = config else { return };
        // Fallbacks first: a receiver whose breaker is open is not tried, but
        // its notifications still move to the fallback receiver on time.
        {
            let mut s = lock(&self.state);
            let waiting = s.outbox.due(i64::MAX);
            for mut p in waiting {
                let n = p.notification.clone();
                if let (Some((fallback, after_ms)), Some(first), false) =
                    (&n.fallback, p.first_failure_ms, p.fell_back)
                    && now - first >= *after_ms
                {
                    self.fall_back(&mut s, &config, &n, fallback, now);
                    p.fell_back = true;
                    if let Err(e) = s.outbox.put(p) {
                        error!(error = %e, "cannot update the outbox");
                    }
                }
            }
        }
        let due: Vec<Pending> = {
            let s = lock(&self.state);
            due.into_iter()
                .filter_map(|p| s.outbox.get(&p.notification.id))
                .collect()
        };
        // Each receiver on its own task: a dead or slow one cannot hold the
        // others' notifications back.
        let mut by_receiver: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in due {
            by_receiver
                .entry(p.notification.receiver.clone())
                .or_default()
                .push(p);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, items) in by_receiver {
            let (me, config, clients) = (Arc::clone(self), Arc::clone(&config), clients.clone());
            tasks.spawn(async move { me.send_receiver(items, &config, &clients, now).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Tries one receiver's due notifications in order, stopping at the
    /// first that must be retried.
    async fn send_receiver(
        &self,
        due: Vec<Pending>,
        config: &NotifyConfig,
        clients: &BTreeMap<(String, usize), reqwest::Client>,
        now: i64,
    ) {
        for p in due {
            let n = &p.notification;
            let open_until = lock(&self.state)
                .receivers
                .get(&n.receiver)
                .map_or(0, |c| c.open_until);
            if open_until > now {
                continue;
            }
            let expire_at = n.created_ms + self.settings.expire_after.as_millis() as i64;
            let webhook = config
                .receivers
                .get(&n.receiver)
                .and_then(|r| r.webhooks.get(n.webhook));
            let (Some(webhook), Some(client), true) = (
                webhook,
                clients.get(&(n.receiver.clone(), n.webhook)),
                now < expire_at,
            ) else {
                let mut s = lock(&self.state);
                remove_logged(&mut s.outbox, &n.id);
                s.receivers.entry(n.receiver.clone()).or_default().expired += 1;
                warn!(receiver = %n.receiver, id = %n.id, attempts = p.attempts, last_error = ?p.last_error, "notification expired or its receiver is gone; dropped");
                continue;
            };
            let outcome = deliver(
                client,
                webhook,
                n,
                self.settings.signing_secret.as_ref(),
                now / 1000,
            )
            .await;
            let done_at = now_ms();
            let mut s = lock(&self.state);
            let counters = s.receivers.entry(n.receiver.clone()).or_default();
            match outcome {
                Outcome::Delivered => {
                    counters.sent += 1;
                    counters.consecutive_failures = 0;
                    remove_logged(&mut s.outbox, &n.id);
                    for (rule, fired_at) in &n.fired_at {
                        let seconds = ((done_at - fired_at) as f64 / 1000.0).max(0.0);
                        let l = s.latency.entry(rule.clone()).or_default();
                        l.count += 1;
                        l.sum += seconds;
                        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                            if seconds <= *bound {
                                l.buckets[i] += 1;
                            }
                        }
                    }
                }
                Outcome::Retry { after, error } => {
                    counters.retried += 1;
                    counters.consecutive_failures += 1;
                    if counters.consecutive_failures >= self.settings.breaker_failures {
                        counters.open_until =
                            done_at + self.settings.breaker_cooldown.as_millis() as i64;
                        warn!(receiver = %n.receiver, cooldown = ?self.settings.breaker_cooldown, "receiver keeps failing: holding its notifications back (circuit breaker open)");
                    }
                    let attempts = p.attempts + 1;
                    let first_failure = p.first_failure_ms.unwrap_or(done_at);
                    let delay = after.unwrap_or_else(|| backoff(&self.settings, attempts));
                    warn!(receiver = %n.receiver, id = %n.id, attempts, retry_in = ?delay, error = %error, "notification not delivered; will retry");
                    let mut next = p.clone();
                    next.attempts = attempts;
                    next.next_attempt_ms = done_at + delay.as_millis() as i64;
                    next.last_error = Some(error);
                    next.first_failure_ms = Some(first_failure);
                    if let Err(e) = s.outbox.put(next) {
                        error!(error = %e, "cannot update the outbox");
                    }
                    break;
                }
                Outcome::Refused { status, body } => {
                    counters.failed += 1;
                    counters.consecutive_failures = 0;
                    remove_logged(&mut s.outbox, &n.id);
                    error!(receiver = %n.receiver, id = %n.id, status, answer = %body, "receiver refused the notification; not retried");
                }
            }
        }
    }

    /// Hands a notification its receiver keeps failing to the route's
    /// fallback receiver (the primary keeps being tried as well).
    fn fall_back(
        &self,
        s: &mut State,
        config: &NotifyConfig,
        n: &super::dispatch::Notification,
        fallback: &str,
        now: i64,
    ) {
        let Some(receiver) = config.receivers.get(fallback) else {
            return;
        };
        let external_url = self.source.external_url();
        for (i, webhook) in receiver.webhooks.iter().enumerate() {
            let body = super::dispatch::render_body(
                webhook,
                fallback,
                &n.group_key,
                &n.group_labels,
                &n.alerts,
                &external_url,
            );
            let copy = super::dispatch::Notification {
                id: format!("{}-fallback-{i}", n.id),
                receiver: fallback.to_string(),
                webhook: i,
                body: String::from_utf8_lossy(&body).into_owned(),
                created_ms: now,
                fallback: None,
                ..n.clone()
            };
            warn!(receiver = %n.receiver, fallback, id = %n.id, "receiver has failed too long: the route's fallback receiver gets the notification");
            if let Err(e) = s.outbox.put(Pending {
                notification: copy,
                attempts: 0,
                next_attempt_ms: now,
                last_error: None,
                first_failure_ms: None,
                fell_back: false,
            }) {
                error!(error = %e, "cannot queue the fallback notification");
            }
            s.receivers.entry(n.receiver.clone()).or_default().fallbacks += 1;
        }
    }

    /// Sends the alerts to the Alertmanagers in `notify.forward_to`, when due.
    async fn forward(&self, now: i64) {
        if self.forwarded.is_empty() {
            return;
        }
        let alerts = self.source.alerts();
        let due = self
            .forward_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .due(&alerts, now, self.settings.forward_resend);
        let Some(alerts) = due else { return };
        let body = super::forward::postable(&alerts, now, self.settings.forward_resend);
        for (base, counters) in &self.forwarded {
            super::forward::post(
                &self.forward_client,
                base,
                body.clone(),
                counters,
                alerts.len(),
            )
            .await;
        }
    }

    /// Runs the loop until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = now_ms();
            let me = Arc::clone(&self);
            let next = tokio::task::spawn_blocking(move || me.dispatch(now))
                .await
                .unwrap_or(now + 1000);
            self.send_due(now_ms()).await;
            self.forward(now_ms()).await;
            let outbox_next = lock(&self.state).outbox.next_due().unwrap_or(i64::MAX);
            let wait = (next.min(outbox_next) - now_ms()).clamp(20, 250);
            let evaluated = self.source.evaluated();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = evaluated.notified() => {}
            }
        }
    }

    /// Metrics of notifications.
    pub fn write_metrics(&self, w: &mut ExpositionWriter) {
        let s = lock(&self.state);
        let depth = s.outbox.depth();
        let mut receivers: Vec<String> = s.receivers.keys().cloned().collect();
        if let Some(c) = &s.config {
            receivers.extend(c.receivers.keys().cloned());
        }
        receivers.sort();
        receivers.dedup();
        for (name, help, pick) in [
            (
                "vigil_collector_notifications_sent_total",
                "Notifications a receiver answered 2xx.",
                0usize,
            ),
            (
                "vigil_collector_notifications_failed_total",
                "Notifications a receiver refused for good (4xx other than 429), or that could not be queued.",
                1,
            ),
            (
                "vigil_collector_notifications_retried_total",
                "Tries that failed and will be retried (connection error, timeout, 5xx, 429).",
                2,
            ),
            (
                "vigil_collector_notifications_expired_total",
                "Notifications dropped undelivered after notify.expire_after.",
                3,
            ),
            (
                "vigil_collector_notifications_dropped_total",
                "Notifications dropped because the receiver had notify.max_pending_per_receiver waiting.",
                4,
            ),
            (
                "vigil_collector_notifications_fallback_total",
                "Notifications handed to the route's fallback receiver after this receiver failed for vigil.fallback_after.",
                5,
            ),
        ] {
            w.header(name, help, MetricKind::Counter);
            for r in &receivers {
                let c = s.receivers.get(r).cloned().unwrap_or_default();
                let v = [
                    c.sent,
                    c.failed,
                    c.retried,
                    c.expired,
                    c.dropped,
                    c.fallbacks,
                ][pick];
                w.sample(
                    name,
                    "",
                    &format!("receiver=\"{}\"", escape(r)),
                    None,
                    v as f64,
                );
            }
        }
        w.header(
            "vigil_collector_notification_outbox",
            "Notifications waiting in the outbox, by receiver.",
            MetricKind::Gauge,
        );
        for r in &receivers {
            w.sample(
                "vigil_collector_notification_outbox",
                "",
                &format!("receiver=\"{}\"", escape(r)),
                None,
                depth.get(r).copied().unwrap_or(0) as f64,
            );
        }
        w.header(
            "vigil_collector_notification_breaker_open",
            "1 while a receiver's circuit breaker holds its notifications back.",
            MetricKind::Gauge,
        );
        let now = now_ms();
        for r in &receivers {
            let open = s.receivers.get(r).is_some_and(|c| c.open_until > now);
            w.sample(
                "vigil_collector_notification_breaker_open",
                "",
                &format!("receiver=\"{}\"", escape(r)),
                None,
                f64::from(u8::from(open)),
            );
        }
        w.header(
            "vigil_collector_notification_latency_seconds",
            "From the samples that made an alert fire (their agent's batch time) to its receiver's 2xx, by rule.",
            MetricKind::Histogram,
        );
        for (rule, l) in &s.latency {
            let labels = format!("rule=\"{}\"", escape(rule));
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                w.sample(
                    "vigil_collector_notification_latency_seconds",
                    "_bucket",
                    &labels,
                    Some(("le", *bound)),
                    l.buckets[i] as f64,
                );
            }
            w.sample(
                "vigil_collector_notification_latency_seconds",
                "_bucket",
                &labels,
                Some(("le", f64::INFINITY)),
                l.count as f64,
            );
            w.sample(
                "vigil_collector_notification_latency_seconds",
                "_sum",
                &labels,
                None,
                l.sum,
            );
            w.sample(
                "vigil_collector_notification_latency_seconds",
                "_count",
                &labels,
                None,
                l.count as f64,
            );
        }
        for (name, help, errors) in [
            (
                "vigil_collector_forwarded_alerts_total",
                "Alerts an Alertmanager of notify.forward_to accepted (each resend counts).",
                false,
            ),
            (
                "vigil_collector_forward_errors_total",
                "Sends to an Alertmanager of notify.forward_to that failed.",
                true,
            ),
        ] {
            w.header(name, help, MetricKind::Counter);
            for (base, c) in &self.forwarded {
                let v = if errors { &c.errors } else { &c.sent };
                w.sample(
                    name,
                    "",
                    &format!("alertmanager=\"{}\"", escape(base)),
                    None,
                    v.load(Ordering::Relaxed) as f64,
                );
            }
        }
        w.header(
            "vigil_collector_notify_reload_failures_total",
            "Reloads of the notification routing file refused for an error.",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_notify_reload_failures_total",
            "",
            "",
            None,
            self.reloads_failed.load(Ordering::Relaxed) as f64,
        );
    }
}

/// Removes a finished notification; a failure is logged (the file stays, so
/// the notification is sent again after a restart, with the same
/// idempotency key).
fn remove_logged(outbox: &mut Outbox, id: &str) {
    if let Err(e) = outbox.remove(id) {
        error!(id, error = %e, "cannot remove a finished notification from the outbox; it may be sent again after a restart");
    }
}

fn escape(v: &str) -> String {
    let mut out = String::new();
    vigil_shared::labels::escape_label_value_into(&mut out, v);
    out
}

fn backoff(settings: &NotifySettings, attempts: u32) -> Duration {
    let base = settings.retry_initial.as_millis() as u64;
    let max = settings.retry_max.as_millis() as u64;
    let exp = base
        .saturating_mul(1u64 << attempts.min(20).saturating_sub(1))
        .min(max);
    // Drawn from the upper half, so that many notifications do not retry in step.
    Duration::from_millis(exp / 2 + fastrand::u64(0..=exp / 2))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// `vigil-collector notify test --receiver NAME`: renders a sample
/// notification (one firing alert, `VigilTest`) for every webhook of the
/// receiver, as the routing file says, and sends it once. One line per
/// webhook: its URL and what happened; true when every one answered 2xx.
pub async fn send_test(
    settings: &NotifySettings,
    receiver: &str,
    external_url: &str,
) -> Result<(bool, Vec<String>), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (config, clients) = load(settings)?;
    let config = config.ok_or("notify.alertmanager_config is not set")?;
    let r = config.receivers.get(receiver).ok_or_else(|| {
        format!(
            "no receiver {receiver:?} (receivers: {})",
            config
                .receivers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let now = now_ms();
    let alert = NotifyAlert {
        labels: [
            ("alertname", "VigilTest"),
            ("instance", "vigil-notify-test"),
            ("severity", "none"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: [(
            "summary".to_string(),
            "A test notification from vigil-collector notify test.".to_string(),
        )]
        .into(),
        starts_at: now,
        ends_at: None,
        generator_url: format!("{external_url}/graph"),
        fired_sample_ms: None,
    };
    let group_labels: BTreeMap<String, String> =
        [("alertname".to_string(), "VigilTest".to_string())].into();
    let mut ok = true;
    let mut lines = Vec::new();
    for (i, webhook) in r.webhooks.iter().enumerate() {
        let body = super::dispatch::render_body(
            webhook,
            receiver,
            "{}:{alertname=\"VigilTest\"}",
            &group_labels,
            std::slice::from_ref(&alert),
            external_url,
        );
        let n = super::dispatch::Notification {
            id: format!("test-{now:x}-{i}"),
            receiver: receiver.to_string(),
            webhook: i,
            group_key: "{}:{alertname=\"VigilTest\"}".into(),
            body: String::from_utf8_lossy(&body).into_owned(),
            created_ms: now,
            fired_at: Vec::new(),
            fallback: None,
            alerts: Vec::new(),
            group_labels: group_labels.clone(),
        };
        let Some(client) = clients.get(&(receiver.to_string(), i)) else {
            continue;
        };
        let outcome = deliver(
            client,
            webhook,
            &n,
            settings.signing_secret.as_ref(),
            now / 1000,
        )
        .await;
        let text = match outcome {
            Outcome::Delivered => "delivered (2xx)".to_string(),
            Outcome::Retry { error, .. } => {
                ok = false;
                format!("not delivered, would be retried: {error}")
            }
            Outcome::Refused { status, body } => {
                ok = false;
                format!("refused with HTTP {status}: {body}")
            }
        };
        lines.push(format!(
            "{}: {text}\nbody: {}",
            webhook.url,
            n.body.trim_end()
        ));
    }
    Ok((ok, lines))
}
