//! The collector's configuration: a raw serde struct read from TOML (every
//! field with its default, unknown keys refused), then [`RawConfig::validate`],
//! which checks every value at once and returns the typed [`CollectorConfig`].
//! Token files are read here; sockets are bound later, by [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_shared::config::{
    ByteSize, ConfigError, ConfigProblem, ConfigSource, HumanDuration, Secret, SecretRef,
};
use vigil_shared::labels::SeriesLimits;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[http]`
    #[serde(default)]
    pub http: RawHttp,
    /// `[ingest]`
    #[serde(default)]
    pub ingest: RawIngest,
    /// `[store]`
    #[serde(default)]
    pub store: RawStore,
    /// `[rules]`
    #[serde(default)]
    pub rules: RawRules,
    /// `[notify]`
    #[serde(default)]
    pub notify: RawNotify,
    /// `[query]`
    #[serde(default)]
    pub query: RawQuery,
    /// `[[remote_write]]`
    #[serde(default)]
    pub remote_write: Vec<crate::remote_write_config::RawRemoteWrite>,
    /// `[remote_write_queue]`
    #[serde(default)]
    pub remote_write_queue: crate::remote_write_config::RawRemoteWriteQueue,
}

/// `[query]`: limits of the query API (`/api/v1/query`, `/api/v1/query_range`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// Queries evaluated at once; more wait for a slot.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Most samples one query may load (subquery points included).
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
    /// Longest a query may take, its wait for a slot included.
    #[serde(default = "default_query_timeout")]
    pub timeout: HumanDuration,
    /// Most series, label names or label values one metadata call
    /// (`/api/v1/series`, `/labels`, `/label/<name>/values`, `/federate`)
    /// may answer with.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

impl Default for RawQuery {
    fn default() -> Self {
        Self {
            max_concurrent: default_max_concurrent(),
            max_samples: default_max_samples(),
            timeout: default_query_timeout(),
            max_series: default_max_series(),
        }
    }
}

fn default_max_series() -> usize {
    500_000
}

fn default_max_concurrent() -> usize {
    4
}

fn default_max_samples() -> usize {
    50_000_000
}

fn default_query_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}

/// The validated `[query]` section.
#[derive(Debug, Clone, Copy)]
pub struct QueryConfig {
    /// Queries evaluated at once.
    pub max_concurrent: usize,
    /// Most series or label values one metadata call answers with.
    pub max_series: usize,
    /// Limits of each query.
    pub limits: vigil_promql::Limits,
}

/// `[notify]`: notifications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Routing and receivers, in Alertmanager's format.
    #[serde(default)]
    pub alertmanager_config: Option<PathBuf>,
    /// First retry delay.
    #[serde(default = "default_notify_retry_initial")]
    pub retry_initial: HumanDuration,
    /// Longest retry delay.
    #[serde(default = "default_notify_retry_max")]
    pub retry_max: HumanDuration,
    /// Undelivered notifications are dropped after this.
    #[serde(default = "default_notify_expire_after")]
    pub expire_after: HumanDuration,
    /// Deadline of one try.
    #[serde(default = "default_notify_timeout")]
    pub timeout: HumanDuration,
    /// HMAC key for `X-Vigil-Signature`, inline.
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// A file holding the HMAC key.
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// An environment variable holding the HMAC key.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Consecutive failures that open a receiver's breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker holds notifications back.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown: HumanDuration,
    /// Most notifications waiting per receiver.
    #[serde(default = "default_max_pending")]
    pub max_pending_per_receiver: usize,
    /// Alertmanager endpoints to forward alerts to.
    #[serde(default)]
    pub forward_to: Vec<String>,
    /// How often firing alerts are sent to them again.
    #[serde(default = "default_forward_resend")]
    pub forward_resend: HumanDuration,
}

fn default_forward_resend() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl Default for RawNotify {
    fn default() -> Self {
        Self {
            alertmanager_config: None,
            retry_initial: default_notify_retry_initial(),
            retry_max: default_notify_retry_max(),
            expire_after: default_notify_expire_after(),
            timeout: default_notify_timeout(),
            signing_secret: None,
            signing_secret_file: None,
            signing_secret_env: None,
            breaker_failures: default_breaker_failures(),
            breaker_cooldown: default_breaker_cooldown(),
            max_pending_per_receiver: default_max_pending(),
            forward_to: Vec::new(),
            forward_resend: default_forward_resend(),
        }
    }
}

fn default_notify_retry_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_notify_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_notify_expire_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_notify_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_pending() -> usize {
    10_000
}

/// `[rules]`: alerting and recording rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Rule files (globs), relative to the config file's folder.
    #[serde(default)]
    pub files: Vec<String>,
    /// How often groups without their own `interval` are evaluated.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: HumanDuration,
    /// `$externalURL` in templates.
    #[serde(default)]
    pub external_url: Option<String>,
    /// `$externalLabels` in templates.
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// The built-in host-down alert.
    #[serde(default = "default_true")]
    pub host_down: bool,
    /// Flush intervals without a push before a host is down.
    #[serde(default = "default_host_down_after")]
    pub host_down_after: u32,
    /// The always-firing heartbeat alert.
    #[serde(default)]
    pub heartbeat: bool,
    /// Evaluate rules when a batch arrives, not only at intervals.
    #[serde(default = "default_true")]
    pub evaluate_on_push: bool,
    /// Least time between two evaluations a push starts.
    #[serde(default = "default_min_evaluation_gap")]
    pub min_evaluation_gap: HumanDuration,
    /// Largest rule file read.
    #[serde(default = "default_max_rule_file_size")]
    pub max_file_size: ByteSize,
    /// Most rules loaded, over every file.
    #[serde(default = "default_max_rules")]
    pub max_rules: usize,
}

fn default_max_rule_file_size() -> ByteSize {
    ByteSize(vigil_rules::file::MAX_RULE_FILE_BYTES)
}

fn default_max_rules() -> usize {
    vigil_rules::file::MAX_RULES
}

fn default_min_evaluation_gap() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

impl Default for RawRules {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            evaluation_interval: default_evaluation_interval(),
            external_url: None,
            external_labels: Default::default(),
            host_down: true,
            host_down_after: default_host_down_after(),
            heartbeat: false,
            evaluate_on_push: true,
            min_evaluation_gap: default_min_evaluation_gap(),
            max_file_size: default_max_rule_file_size(),
            max_rules: default_max_rules(),
        }
    }
}

fn default_evaluation_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_true() -> bool {
    true
}
fn default_host_down_after() -> u32 {
    3
}

/// `[http]`: /metrics, health.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Address of the HTTP server.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Token for admin endpoints (`POST /-/reload`), inline.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A file holding the admin token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// An environment variable holding the admin token.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// Prometheus's web configuration file (TLS, basic auth, headers).
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            admin_token: None,
            admin_token_file: None,
            admin_token_env: None,
            web_config_file: None,
        }
    }
}

fn default_http_listen() -> String {
    "0.0.0.0:9470".into()
}

/// `[ingest]`: the gRPC port agents push to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Address of the gRPC server.
    #[serde(default = "default_ingest_listen")]
    pub listen: String,
    /// Largest push accepted (after decompression).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Most series in one push.
    #[serde(default = "default_max_series_per_push")]
    pub max_series_per_push: usize,
    /// Most labels on one series.
    #[serde(default = "default_max_labels")]
    pub max_labels_per_series: usize,
    /// Longest label value, in bytes.
    #[serde(default = "default_max_label_value")]
    pub max_label_value_bytes: usize,
    /// Who may push without a token when no `[[ingest.agents]]` are set:
    /// `"loopback"` (agents on this host) or `"none"`.
    #[serde(default = "default_unauthenticated")]
    pub unauthenticated: String,
    /// Agents and their tokens.
    #[serde(default)]
    pub agents: Vec<RawAgentToken>,
    /// TLS for the gRPC port.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// Most series in one agent's push (the agent's own `max_series`).
    #[serde(default = "default_max_series_per_agent")]
    pub max_series_per_agent: usize,
    /// New series one agent may create per minute (a minute's worth at once).
    #[serde(default = "default_max_new_series_per_minute")]
    pub max_new_series_per_minute: u32,
    /// Pushes per second per agent.
    #[serde(default = "default_max_pushes_per_second")]
    pub max_pushes_per_second: u32,
    /// How far ahead of the collector's clock a sample may be.
    #[serde(default = "default_max_future")]
    pub max_future: HumanDuration,
}

fn default_max_series_per_agent() -> usize {
    10_000
}
fn default_max_new_series_per_minute() -> u32 {
    10_000
}
fn default_max_pushes_per_second() -> u32 {
    50
}
fn default_max_future() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

impl Default for RawIngest {
    fn default() -> Self {
        Self {
            listen: default_ingest_listen(),
            max_message_size: default_max_message_size(),
            max_series_per_push: default_max_series_per_push(),
            max_labels_per_series: default_max_labels(),
            max_label_value_bytes: default_max_label_value(),
            unauthenticated: default_unauthenticated(),
            agents: Vec::new(),
            tls: None,
            max_series_per_agent: default_max_series_per_agent(),
            max_new_series_per_minute: default_max_new_series_per_minute(),
            max_pushes_per_second: default_max_pushes_per_second(),
            max_future: default_max_future(),
        }
    }
}

fn default_ingest_listen() -> String {
    "0.0.0.0:9471".into()
}
fn default_max_message_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_max_series_per_push() -> usize {
    50_000
}
fn default_max_labels() -> usize {
    SeriesLimits::default().max_labels
}
fn default_max_label_value() -> usize {
    SeriesLimits::default().max_label_value_bytes
}
fn default_unauthenticated() -> String {
    "loopback".into()
}

/// `[[ingest.agents]]`: one agent (or `"*"`, any agent) and its token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentToken {
    /// The agent's `instance`, or `"*"` for a token any agent may use.
    pub instance: String,
    /// The token, written inline.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The token's SHA-256, in hex, instead of the token itself.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// `[ingest.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA (PEM) that client certificates must chain to; set for mutual TLS.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// A series not updated for this long is no longer exposed, then forgotten.
    #[serde(default = "default_stale_after")]
    pub stale_after: HumanDuration,
    /// Where the write-ahead log lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How long history is kept.
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// How often the whole store is written to a checkpoint.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
    /// When the write-ahead log is synced: `always` (before each
    /// acknowledgement, shared by concurrent pushes) or `interval`.
    #[serde(default)]
    pub wal_fsync: RawFsync,
    /// With `wal_fsync = "interval"`: how often.
    #[serde(default = "default_wal_fsync_interval")]
    pub wal_fsync_interval: HumanDuration,
    /// How often the collector records its own metrics into its history
    /// (`0s`: never).
    #[serde(default = "default_self_metrics_interval")]
    pub self_metrics_interval: HumanDuration,
}

fn default_self_metrics_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `store.wal_fsync`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawFsync {
    /// Sync before acknowledging.
    #[default]
    Always,
    /// Sync every `wal_fsync_interval`.
    Interval,
}

fn default_wal_fsync_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            stale_after: default_stale_after(),
            data_dir: default_data_dir(),
            retention: default_retention(),
            checkpoint_interval: default_checkpoint_interval(),
            wal_fsync: RawFsync::default(),
            wal_fsync_interval: default_wal_fsync_interval(),
            self_metrics_interval: default_self_metrics_interval(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil/collector")
}
fn default_checkpoint_interval() -> HumanDuration {
    // Bounds a restart: the log replayed after the checkpoint holds at most
    // this much (see BENCHMARKS.md).
    HumanDuration(Duration::from_secs(5 * 60))
}
fn default_retention() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

fn default_stale_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// Who may push without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Agents connecting from a loopback address, when no tokens are configured.
    Loopback,
    /// Nobody.
    None,
}

/// One agent's token, read.
#[derive(Debug, Clone)]
pub struct AgentToken {
    /// The agent's `instance`, or `"*"`.
    pub instance: String,
    /// The token, or its hash.
    pub token: TokenCheck,
}

/// How a presented token is checked.
#[derive(Debug, Clone)]
pub enum TokenCheck {
    /// Against the token itself.
    Plain(Secret),
    /// Against its SHA-256, so the config need not hold the token.
    Sha256([u8; 32]),
}

impl TokenCheck {
    /// True when `presented` is this token; constant time.
    pub fn accepts(&self, presented: &str) -> bool {
        use sha2::Digest as _;
        match self {
            TokenCheck::Plain(secret) => crate::ingest::auth::constant_time_eq(
                secret.expose().as_bytes(),
                presented.as_bytes(),
            ),
            TokenCheck::Sha256(hash) => {
                let digest = sha2::Sha256::digest(presented.as_bytes());
                crate::ingest::auth::constant_time_eq(hash, digest.as_slice())
            }
        }
    }
}

/// Parses 64 hex digits.
fn sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// TLS files for the gRPC port.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain file.
    pub cert_file: PathBuf,
    /// Key file.
    pub key_file: PathBuf,
    /// Client CA, for mutual TLS.
    pub client_ca_file: Option<PathBuf>,
}

/// The ingest settings, checked.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Largest push.
    pub max_message_size: usize,
    /// Most series per push.
    pub max_series_per_push: usize,
    /// Limits on each series.
    pub limits: SeriesLimits,
    /// Who may push without a token.
    pub unauthenticated: Unauthenticated,
    /// Tokens.
    pub agents: Vec<AgentToken>,
    /// TLS.
    pub tls: Option<ServerTls>,
    /// Per-agent limits.
    pub agent_limits: crate::ingest::limits::LimitsConfig,
}

/// The collector's validated configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// HTTP address.
    pub http_listen: SocketAddr,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// When series go stale.
    pub stale_after: Duration,
    /// Where the write-ahead log lives.
    pub data_dir: PathBuf,
    /// How long history is kept.
    pub retention: Duration,
    /// How often the store is checkpointed.
    pub checkpoint_interval: Duration,
    /// When the write-ahead log is synced.
    pub wal_fsync: vigil_store::wal::FsyncPolicy,
    /// How often the collector records its own metrics (None: never).
    pub self_metrics_interval: Option<Duration>,
    /// Token for admin endpoints; without one they answer loopback callers only.
    pub admin_token: Option<Secret>,
    /// Rules.
    pub rules: vigil_rules::manager::RulesConfig,
    /// Notifications.
    pub notify: vigil_notify::manager::NotifySettings,
    /// Query API limits.
    pub query: QueryConfig,
    /// The HTTP port's web configuration (TLS, basic auth, headers).
    pub web: crate::http::web::WebConfig,
    /// `[[remote_write]]` destinations.
    pub remote_write: Vec<vigil_remote_write::sender::Destination>,
    /// Most bytes of the remote_write queue on disk.
    pub remote_write_max_bytes: u64,
}

/// Reads and validates a config file, or the embedded defaults when `path` is `None`.
pub fn load(path: Option<&std::path::Path>) -> Result<CollectorConfig, ConfigError> {
    let source = ConfigSource::read(path)?;
    let mut raw: RawConfig = source.parse()?;
    // The web config file, like the routing file, is relative to the config's folder.
    if let (Some(dir), Some(file)) = (
        path.and_then(std::path::Path::parent),
        raw.http.web_config_file.as_mut(),
    ) && file.is_relative()
        && !dir.as_os_str().is_empty()
    {
        *file = dir.join(&*file);
    }
    let mut config = raw
        .validate()
        .map_err(|problems| source.invalid(problems))?;
    if let Some(dir) = path.and_then(std::path::Path::parent)
        && !dir.as_os_str().is_empty()
    {
        config.rules.base_dir = dir.to_path_buf();
        if let Some(f) = &config.notify.config_file
            && f.is_relative()
        {
            config.notify.config_file = Some(dir.join(f));
        }
    }
    Ok(config)
}

fn address(key: &str, text: &str, problems: &mut Vec<ConfigProblem>) -> SocketAddr {
    match text.parse() {
        Ok(a) => a,
        Err(_) => {
            problems.push(ConfigProblem::new(
                key,
                format!("{text:?} is not an address like \"0.0.0.0:9470\" or \"127.0.0.1:9470\""),
            ));
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    }
}

impl RawConfig {
    /// Checks every value; returns every problem found.
    pub fn validate(self) -> Result<CollectorConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let http_listen = address("http.listen", &self.http.listen, &mut problems);
        let web = match &self.http.web_config_file {
            None => crate::http::web::WebConfig::default(),
            Some(file) => match crate::http::web::WebConfig::load(file) {
                Ok(w) => w,
                Err(e) => {
                    problems.push(ConfigProblem::new("http.web_config_file", e.to_string()));
                    crate::http::web::WebConfig::default()
                }
            },
        };
        let q = &self.query;
        if q.max_concurrent == 0 || q.max_concurrent > 1024 {
            problems.push(ConfigProblem::new(
                "query.max_concurrent",
                "must be between 1 and 1024",
            ));
        }
        if q.max_samples == 0 {
            problems.push(ConfigProblem::new(
                "query.max_samples",
                "must be at least 1",
            ));
        }
        if q.timeout.0.is_zero() {
            problems.push(ConfigProblem::new("query.timeout", "must be more than 0"));
        }
        if q.max_series == 0 {
            problems.push(ConfigProblem::new("query.max_series", "must be at least 1"));
        }
        let query = QueryConfig {
            max_concurrent: q.max_concurrent,
            max_series: q.max_series,
            limits: vigil_promql::Limits {
                max_samples: q.max_samples,
                timeout: q.timeout.0,
                ..vigil_promql::Limits::default()
            },
        };
        let admin = SecretRef {
            token: self.http.admin_token,
            token_file: self.http.admin_token_file,
            token_env: self.http.admin_token_env,
        };
        let admin_token = match admin.resolve() {
            Ok(Some(t)) if t.expose().len() < 16 => {
                problems.push(ConfigProblem::new(
                    "http.admin_token",
                    "must be at least 16 characters",
                ));
                None
            }
            Ok(t) => t,
            Err(e) => {
                problems.push(ConfigProblem::new("http.admin_token", e));
                None
            }
        };
        let n = self.notify;
        let signing = SecretRef {
            token: n.signing_secret,
            token_file: n.signing_secret_file,
            token_env: n.signing_secret_env,
        };
        let signing_secret = match signing.resolve() {
            Ok(t) => t,
            Err(e) => {
                problems.push(ConfigProblem::new("notify.signing_secret", e));
                None
            }
        };
        if n.retry_initial.0 < Duration::from_millis(10) || n.retry_max.0 < n.retry_initial.0 {
            problems.push(ConfigProblem::new(
                "notify.retry_max",
                "retry_initial must be at least 10ms and retry_max at least retry_initial",
            ));
        }
        if n.breaker_failures == 0 || n.max_pending_per_receiver == 0 {
            problems.push(ConfigProblem::new(
                "notify.breaker_failures",
                "breaker_failures and max_pending_per_receiver must be at least 1",
            ));
        }
        let notify = vigil_notify::manager::NotifySettings {
            config_file: n.alertmanager_config,
            retry_initial: n.retry_initial.0,
            retry_max: n.retry_max.0,
            expire_after: n.expire_after.0,
            timeout: n.timeout.0,
            signing_secret,
            breaker_failures: n.breaker_failures,
            breaker_cooldown: n.breaker_cooldown.0,
            max_pending_per_receiver: n.max_pending_per_receiver,
            forward_to: n.forward_to.clone(),
            forward_resend: n.forward_resend.0,
        };
        for (i, url) in n.forward_to.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(ConfigProblem::new(
                    format!("notify.forward_to[{i}]"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let r = self.rules;
        if r.evaluation_interval.0 < Duration::from_millis(100) {
            problems.push(ConfigProblem::new(
                "rules.evaluation_interval",
                "must be at least 100ms",
            ));
        }
        if r.host_down_after == 0 {
            problems.push(ConfigProblem::new(
                "rules.host_down_after",
                "must be at least 1 (flush intervals)",
            ));
        }
        for name in r.external_labels.keys() {
            if !vigil_shared::labels::is_valid_label_name(name) {
                problems.push(ConfigProblem::new(
                    format!("rules.external_labels.{name}"),
                    "is not a valid label name",
                ));
            }
        }
        let external_url = r.external_url.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("http://{host}:{}", http_listen.port())
        });
        let rules = vigil_rules::manager::RulesConfig {
            files: r.files,
            base_dir: std::env::current_dir().unwrap_or_default(),
            evaluation_interval: r.evaluation_interval.0,
            external_url,
            external_labels: r.external_labels,
            host_down: r.host_down,
            host_down_after: r.host_down_after,
            heartbeat: r.heartbeat,
            evaluate_on_push: r.evaluate_on_push,
            min_evaluation_gap: r.min_evaluation_gap.0,
            max_file_bytes: r.max_file_size.0,
            max_rules: r.max_rules,
        };
        let i = self.ingest;
        let ingest_listen = address("ingest.listen", &i.listen, &mut problems);
        if i.max_message_size.0 < 64 * 1024 || i.max_message_size.0 > 1 << 30 {
            problems.push(ConfigProblem::new(
                "ingest.max_message_size",
                "must be between 64KiB and 1GiB",
            ));
        }
        for (key, value) in [
            ("ingest.max_series_per_agent", i.max_series_per_agent as u64),
            (
                "ingest.max_new_series_per_minute",
                u64::from(i.max_new_series_per_minute),
            ),
            (
                "ingest.max_pushes_per_second",
                u64::from(i.max_pushes_per_second),
            ),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::new(key, "must be at least 1"));
            }
        }
        if i.max_series_per_push == 0 {
            problems.push(ConfigProblem::new(
                "ingest.max_series_per_push",
                "must be at least 1",
            ));
        }
        if i.max_labels_per_series < 2 {
            problems.push(ConfigProblem::new(
                "ingest.max_labels_per_series",
                "must be at least 2 (instance and job)",
            ));
        }
        if i.max_label_value_bytes == 0 {
            problems.push(ConfigProblem::new(
                "ingest.max_label_value_bytes",
                "must be at least 1",
            ));
        }
        let unauthenticated = match i.unauthenticated.as_str() {
            "loopback" => Unauthenticated::Loopback,
            "none" => Unauthenticated::None,
            other => {
                problems.push(ConfigProblem::new(
                    "ingest.unauthenticated",
                    format!("{other:?}: use \"loopback\" or \"none\""),
                ));
                Unauthenticated::None
            }
        };
        let mut agents = Vec::with_capacity(i.agents.len());
        for (n, a) in i.agents.into_iter().enumerate() {
            let key = format!("ingest.agents[{n}]");
            if a.instance.is_empty() {
                problems.push(ConfigProblem::new(
                    format!("{key}.instance"),
                    "must not be empty (use \"*\" for any agent)",
                ));
            }
            let secret = SecretRef {
                token: a.token,
                token_file: a.token_file,
                token_env: a.token_env,
            };
            if let Some(hash) = a.token_sha256 {
                if !secret.is_empty() {
                    problems.push(ConfigProblem::new(
                        format!("{key}.token_sha256"),
                        "set either the token (token, token_file, token_env) or its hash, not both",
                    ));
                }
                match sha256_hex(&hash) {
                    Some(hash) => agents.push(AgentToken {
                        instance: a.instance,
                        token: TokenCheck::Sha256(hash),
                    }),
                    None => problems.push(ConfigProblem::new(
                        format!("{key}.token_sha256"),
                        "must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    )),
                }
                continue;
            }
            match secret.resolve() {
                Ok(Some(token)) => {
                    if token.expose().len() < 16 {
                        problems.push(ConfigProblem::new(
                            format!("{key}.token"),
                            "must be at least 16 characters",
                        ));
                    }
                    agents.push(AgentToken {
                        instance: a.instance,
                        token: TokenCheck::Plain(token),
                    });
                }
                Ok(None) => problems.push(ConfigProblem::new(
                    format!("{key}.token"),
                    "set one of token, token_file, token_env or token_sha256",
                )),
                Err(e) => problems.push(ConfigProblem::new(format!("{key}.token"), e)),
            }
        }
        let tls = i.tls.map(|t| ServerTls {
            cert_file: t.cert_file,
            key_file: t.key_file,
            client_ca_file: t.client_ca_file,
        });
        if let Some(t) = &tls {
            for (key, path) in [
                ("ingest.tls.cert_file", Some(&t.cert_file)),
                ("ingest.tls.key_file", Some(&t.key_file)),
                ("ingest.tls.client_ca_file", t.client_ca_file.as_ref()),
            ] {
                if let Some(p) = path
                    && !p.is_file()
                {
                    problems.push(ConfigProblem::new(
                        key,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        let stale_after = self.store.stale_after.0;
        if stale_after < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                "store.stale_after",
                "must be at least 1s",
            ));
        }
        let retention = self.store.retention.0;
        if retention < Duration::from_secs(60) {
            problems.push(ConfigProblem::new("store.retention", "must be at least 1m"));
        }
        if self.store.checkpoint_interval.0 < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                "store.checkpoint_interval",
                "must be at least 1s",
            ));
        }
        let fsync_interval = self.store.wal_fsync_interval.0;
        if fsync_interval < Duration::from_millis(10) || fsync_interval > Duration::from_secs(60) {
            problems.push(ConfigProblem::new(
                "store.wal_fsync_interval",
                "must be between 10ms and 1m",
            ));
        }
        let self_metrics = self.store.self_metrics_interval.0;
        if !self_metrics.is_zero() && self_metrics < Duration::from_secs(1) {
            problems.push(ConfigProblem::new(
                "store.self_metrics_interval",
                "must be 0s (off) or at least 1s",
            ));
        }
        if self.store.data_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem::new("store.data_dir", "must not be empty"));
        }
        let remote_write = crate::remote_write_config::validate(self.remote_write, &mut problems);
        if self.remote_write_queue.max_bytes.0 < (64 << 20) {
            problems.push(ConfigProblem::new(
                "remote_write_queue.max_bytes",
                "must be at least 64MiB (one segment)",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CollectorConfig {
            remote_write,
            remote_write_max_bytes: self.remote_write_queue.max_bytes.0,
            http_listen,
            ingest: IngestConfig {
                listen: ingest_listen,
                max_message_size: i.max_message_size.0 as usize,
                max_series_per_push: i.max_series_per_push,
                limits: SeriesLimits {
                    max_labels: i.max_labels_per_series,
                    max_label_value_bytes: i.max_label_value_bytes,
                    ..SeriesLimits::default()
                },
                unauthenticated,
                agents,
                tls,
                agent_limits: crate::ingest::limits::LimitsConfig {
                    max_series_per_agent: i.max_series_per_agent,
                    max_new_series_per_minute: i.max_new_series_per_minute,
                    max_pushes_per_second: i.max_pushes_per_second,
                    max_future: i.max_future.0,
                    max_age: retention,
                },
            },
            stale_after,
            data_dir: self.store.data_dir,
            retention,
            checkpoint_interval: self.store.checkpoint_interval.0,
            wal_fsync: match self.store.wal_fsync {
                RawFsync::Always => vigil_store::wal::FsyncPolicy::Always,
                RawFsync::Interval => vigil_store::wal::FsyncPolicy::Interval(fsync_interval),
            },
            self_metrics_interval: (!self_metrics.is_zero()).then_some(self_metrics),
            admin_token,
            rules,
            notify,
            query,
            web,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<CollectorConfig, String> {
        let source = ConfigSource::from_text("collector.toml", text);
        let raw: RawConfig = source.parse().map_err(|e| e.to_string())?;
        raw.validate().map_err(|p| source.invalid(p).to_string())
    }

    #[test]
    fn embedded_defaults_are_valid() -> Result<(), String> {
        let c = check("")?;
        assert_eq!(c.http_listen.port(), 9470);
        assert_eq!(c.ingest.listen.port(), 9471);
        assert_eq!(c.ingest.unauthenticated, Unauthenticated::Loopback);
        assert!(c.ingest.agents.is_empty());
        assert_eq!(c.stale_after, Duration::from_secs(300));
        assert_eq!(c.retention, Duration::from_secs(86_400));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/vigil/collector"));
        Ok(())
    }

    #[test]
    fn tokens_are_read_and_checked() {
        let ok = check("[[ingest.agents]]\ninstance = \"web-1\"\ntoken = \"0123456789abcdef0\"\n");
        assert!(ok.is_ok_and(|c| c.ingest.agents.len() == 1));
        let err = check("[[ingest.agents]]\ninstance = \"web-1\"\ntoken = \"short\"\n")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("ingest.agents[0].token") && err.contains("16 characters"),
            "{err}"
        );
        let err = check("[[ingest.agents]]\ninstance = \"web-1\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("set one of token"), "{err}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let err = check("[http]\nlisten = \"nowhere\"\n[ingest]\nunauthenticated = \"all\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("line 2: key `http.listen`"), "{err}");
        assert!(
            err.contains("line 4: key `ingest.unauthenticated`"),
            "{err}"
        );
        let err = check("[store]\nstale = \"1m\"\n").err().unwrap_or_default();
        assert!(
            err.contains("collector.toml:2:1") && err.contains("unknown field `stale`"),
            "{err}"
        );
    }
}
