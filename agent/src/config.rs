//! The agent's configuration: a raw serde struct read from TOML (every field
//! with its default, unknown keys refused), then [`RawConfig::validate`],
//! which checks every value at once and returns the typed [`AgentConfig`].
//! No I/O happens here beyond reading the token file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_shared::config::{
    ByteSize, ConfigError, ConfigProblem, ConfigSource, HumanDuration, Secret, SecretRef,
};

/// Default sample interval.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default flush interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The `instance` label and the agent's identity; empty means the host name.
    #[serde(default)]
    pub instance: String,
    /// The `job` label.
    #[serde(default = "default_job")]
    pub job: String,
    /// How often the host is sampled.
    #[serde(default = "default_sample_interval")]
    pub sample_interval: HumanDuration,
    /// How often windows close and a batch is shipped.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: HumanDuration,
    /// Most series the agent keeps; new series beyond it are refused and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Where the spool (batches not yet acknowledged) is kept.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where batches go.
    #[serde(default)]
    pub collector: RawCollector,
    /// How batches wait and are retried.
    #[serde(default)]
    pub shipper: RawShipper,
    /// What is sampled.
    #[serde(default)]
    pub sources: RawSources,
}

fn default_job() -> String {
    "node".into()
}
fn default_sample_interval() -> HumanDuration {
    HumanDuration(DEFAULT_SAMPLE_INTERVAL)
}
fn default_flush_interval() -> HumanDuration {
    HumanDuration(DEFAULT_FLUSH_INTERVAL)
}
fn default_max_series() -> usize {
    10_000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil/agent")
}

/// `[collector]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    /// `http://host:9471`, or `https://` with TLS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Several collectors, in order of preference; instead of `endpoint`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// With several endpoints: `failover` (the first healthy one) or `fanout` (all).
    #[serde(default)]
    pub mode: CollectorMode,
    /// Bearer token, written inline.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Deadline of one push.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// CA certificate (PEM) that signed the collector's certificate; needed for `https://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name expected in the collector's certificate, when not the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl Default for RawCollector {
    fn default() -> Self {
        Self {
            endpoint: None,
            endpoints: Vec::new(),
            mode: CollectorMode::default(),
            token: None,
            token_file: None,
            token_env: None,
            timeout: default_timeout(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }
}

fn default_endpoint() -> String {
    "http://127.0.0.1:9471".into()
}

/// How batches are spread over several collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorMode {
    /// Every batch goes to the first collector that answers; the agent
    /// switches to the next one when it fails and back when it recovers.
    #[default]
    Failover,
    /// Every collector receives every batch (an HA pair), each at its own pace.
    Fanout,
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// `[shipper]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShipper {
    /// Most bytes of batches kept in the disk spool; the oldest are dropped beyond it.
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: ByteSize,
    /// Most bytes of batches kept in memory while the spool folder cannot be written.
    #[serde(default = "default_max_memory_bytes")]
    pub max_memory_bytes: ByteSize,
    /// Most batches sent per second, per collector, while a backlog is replayed.
    #[serde(default = "default_replay_max_per_second")]
    pub replay_max_per_second: f64,
    /// First retry delay.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: HumanDuration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// How long a clean shutdown keeps trying to ship what is queued.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
}

impl Default for RawShipper {
    fn default() -> Self {
        Self {
            max_spool_bytes: default_max_spool_bytes(),
            max_memory_bytes: default_max_memory_bytes(),
            replay_max_per_second: default_replay_max_per_second(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_max_spool_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_max_memory_bytes() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_replay_max_per_second() -> f64 {
    20.0
}
fn default_retry_initial() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// `[sources]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    /// `[sources.system]`
    #[serde(default)]
    pub system: SystemConfig,
    /// `[sources.textfile]`
    #[serde(default)]
    pub textfile: TextfileConfig,
    /// `[sources.statsd]`
    #[serde(default)]
    pub statsd: RawStatsd,
    /// `[sources.otlp]`
    #[serde(default)]
    pub otlp: RawOtlp,
}

/// `[sources.otlp]`: OpenTelemetry metrics (OTLP) from applications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// Whether the OTLP receiver runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// gRPC address; empty turns gRPC off.
    #[serde(default = "default_otlp_grpc")]
    pub grpc: String,
    /// HTTP address (`POST /v1/metrics`); empty turns HTTP off.
    #[serde(default = "default_otlp_http")]
    pub http: String,
    /// Largest request body, after decompression.
    #[serde(default = "default_otlp_max_request_size")]
    pub max_request_size: ByteSize,
    /// Most OTLP series; below `max_series`.
    #[serde(default = "default_otlp_max_series")]
    pub max_series: usize,
    /// Take `instance` from the resource's `service.instance.id` instead of
    /// the agent's own.
    #[serde(default)]
    pub instance_from_service: bool,
    /// A series no request has updated for this long is forgotten.
    #[serde(default = "default_otlp_stale_after")]
    pub stale_after: HumanDuration,
}

impl Default for RawOtlp {
    fn default() -> Self {
        Self {
            enabled: true,
            grpc: default_otlp_grpc(),
            http: default_otlp_http(),
            max_request_size: default_otlp_max_request_size(),
            max_series: default_otlp_max_series(),
            instance_from_service: false,
            stale_after: default_otlp_stale_after(),
        }
    }
}

fn default_otlp_grpc() -> String {
    "127.0.0.1:4317".into()
}
fn default_otlp_http() -> String {
    "127.0.0.1:4318".into()
}
fn default_otlp_max_request_size() -> ByteSize {
    ByteSize(4 << 20)
}
fn default_otlp_max_series() -> usize {
    3_000
}
fn default_otlp_stale_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// The OTLP receiver, validated.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// Whether it runs.
    pub enabled: bool,
    /// gRPC address, if gRPC is on.
    pub grpc: Option<std::net::SocketAddr>,
    /// HTTP address, if HTTP is on.
    pub http: Option<std::net::SocketAddr>,
    /// Largest request body, after decompression.
    pub max_request_size: usize,
    /// Most OTLP series.
    pub max_series: usize,
    /// `instance` from `service.instance.id`.
    pub instance_from_service: bool,
    /// When an unused series is forgotten.
    pub stale_after: Duration,
}

/// `[sources.statsd]`: StatsD and DogStatsD datagrams from applications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatsd {
    /// Whether the StatsD server runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// UDP address to listen on; empty turns UDP off.
    #[serde(default = "default_statsd_udp")]
    pub udp: String,
    /// Unix datagram socket to listen on; none by default.
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// TCP address to listen on (newline-separated lines); off by default.
    #[serde(default)]
    pub tcp: String,
    /// Put in front of every StatsD name.
    #[serde(default)]
    pub prefix: String,
    /// The UDP socket's receive buffer (the kernel caps it at `net.core.rmem_max`).
    #[serde(default = "default_statsd_receive_buffer")]
    pub receive_buffer: ByteSize,
    /// Most StatsD series; below `max_series`, so that StatsD cannot starve
    /// the system and self metrics.
    #[serde(default = "default_statsd_max_series")]
    pub max_series: usize,
    /// Most timer and histogram samples and set members held between two
    /// flushes (8 bytes each).
    #[serde(default = "default_statsd_max_window_samples")]
    pub max_window_samples: usize,
}

impl Default for RawStatsd {
    fn default() -> Self {
        Self {
            enabled: true,
            udp: default_statsd_udp(),
            unix: None,
            tcp: String::new(),
            prefix: String::new(),
            receive_buffer: default_statsd_receive_buffer(),
            max_series: default_statsd_max_series(),
            max_window_samples: default_statsd_max_window_samples(),
        }
    }
}

fn default_statsd_udp() -> String {
    "127.0.0.1:8125".into()
}
fn default_statsd_receive_buffer() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_statsd_max_series() -> usize {
    5_000
}
fn default_statsd_max_window_samples() -> usize {
    1_000_000
}

/// The StatsD server, validated.
#[derive(Debug, Clone)]
pub struct StatsdConfig {
    /// Whether it runs.
    pub enabled: bool,
    /// UDP address, if UDP is on.
    pub udp: Option<std::net::SocketAddr>,
    /// Unix datagram socket, if configured.
    pub unix: Option<PathBuf>,
    /// TCP address, if configured.
    pub tcp: Option<std::net::SocketAddr>,
    /// Name prefix.
    pub prefix: String,
    /// Receive buffer.
    pub receive_buffer: ByteSize,
    /// Most StatsD series.
    pub max_series: usize,
    /// Most samples held between flushes.
    pub max_window_samples: usize,
}

/// `[sources.system]`: the host's CPU, memory, load, filesystems, disks and network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Whether the system source runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where procfs is mounted (another path when the agent runs in a container).
    #[serde(default = "default_proc_path")]
    pub proc_path: PathBuf,
    /// Where sysfs is mounted.
    #[serde(default = "default_sys_path")]
    pub sys_path: PathBuf,
    /// Prefix for mount points when taking filesystem statistics, and for
    /// /etc/os-release, /etc/localtime and /run/udev.
    #[serde(default = "default_rootfs_path")]
    pub rootfs_path: PathBuf,
    /// Mount points to leave out (regular expression).
    #[serde(default = "default_mount_points_exclude")]
    pub filesystem_mount_points_exclude: String,
    /// Filesystem types to leave out (regular expression).
    #[serde(default = "default_fs_types_exclude")]
    pub filesystem_fs_types_exclude: String,
    /// How long one filesystem's statistics may take before its mount is
    /// reported stuck and skipped until the call returns.
    #[serde(default = "default_filesystem_timeout")]
    pub filesystem_timeout: HumanDuration,
    /// Block devices to leave out (regular expression); partitions by default.
    #[serde(default = "default_disk_devices_exclude")]
    pub disk_devices_exclude: String,
    /// Network interfaces to leave out (regular expression); none by default.
    #[serde(default)]
    pub network_devices_exclude: String,
    /// node_exporter collectors not to run (`netstat`, `timex`, …), as
    /// node_exporter's `--no-collector.NAME`; none by default.
    #[serde(default)]
    pub collectors_disabled: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            proc_path: default_proc_path(),
            sys_path: default_sys_path(),
            rootfs_path: default_rootfs_path(),
            filesystem_mount_points_exclude: default_mount_points_exclude(),
            filesystem_fs_types_exclude: default_fs_types_exclude(),
            filesystem_timeout: default_filesystem_timeout(),
            disk_devices_exclude: default_disk_devices_exclude(),
            network_devices_exclude: String::new(),
            collectors_disabled: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_proc_path() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_sys_path() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_rootfs_path() -> PathBuf {
    PathBuf::from("/")
}
/// node_exporter 1.5's default.
fn default_mount_points_exclude() -> String {
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
        .into()
}
/// node_exporter 1.5's default.
fn default_fs_types_exclude() -> String {
    "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$".into()
}
fn default_filesystem_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
/// node_exporter 1.5's default: partitions, RAM disks, loop and floppy devices.
fn default_disk_devices_exclude() -> String {
    "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$".into()
}

/// `[sources.textfile]`: `*.prom` files in the Prometheus text format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextfileConfig {
    /// The folder to read; empty turns the source off.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Largest file read; a larger one is skipped and reported.
    #[serde(default = "default_textfile_max_file_size")]
    pub max_file_size: ByteSize,
    /// Most series all textfiles together may add, so that they can never
    /// use up `max_series` and starve the system and self metrics.
    #[serde(default = "default_textfile_max_series")]
    pub max_series: usize,
}

impl Default for TextfileConfig {
    fn default() -> Self {
        Self {
            directory: None,
            max_file_size: default_textfile_max_file_size(),
            max_series: default_textfile_max_series(),
        }
    }
}

fn default_textfile_max_file_size() -> ByteSize {
    ByteSize(4 << 20)
}

fn default_textfile_max_series() -> usize {
    1_000
}

/// Where batches go, checked.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The endpoint URI.
    pub endpoint: String,
    /// The bearer token, if any.
    pub token: Option<Secret>,
    /// Deadline of one push.
    pub timeout: Duration,
    /// TLS settings, when the endpoint is `https://`.
    pub tls: Option<ClientTls>,
}

/// TLS files for the connection to the collector.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA certificate file.
    pub ca_file: PathBuf,
    /// Client certificate and key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify, when not the endpoint's host.
    pub server_name: Option<String>,
}

/// How batches wait and are retried, checked.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Most bytes of batches kept on disk.
    pub max_spool_bytes: u64,
    /// Most bytes of batches held in memory when the disk fails.
    pub max_memory_bytes: u64,
    /// Most batches per second and collector while replaying a backlog.
    pub replay_max_per_second: f64,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a clean shutdown keeps shipping.
    pub shutdown_timeout: Duration,
}

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The `instance` label and identity.
    pub instance: String,
    /// The `job` label.
    pub job: String,
    /// Sample interval.
    pub sample_interval: Duration,
    /// Flush interval.
    pub flush_interval: Duration,
    /// Most series kept.
    pub max_series: usize,
    /// Where the spool is kept.
    pub data_dir: PathBuf,
    /// Where batches go: one or more collectors, in order of preference.
    pub collectors: Vec<CollectorConfig>,
    /// How batches are spread over several collectors.
    pub mode: CollectorMode,
    /// Spool and retries.
    pub shipper: ShipperConfig,
    /// The system source.
    pub system: SystemConfig,
    /// The textfile source.
    pub textfile: TextfileConfig,
    /// The StatsD server.
    pub statsd: StatsdConfig,
    /// The OTLP receiver.
    pub otlp: OtlpConfig,
}

/// Reads and validates a config file, or the embedded defaults when `path` is `None`.
pub fn load(path: Option<&std::path::Path>) -> Result<AgentConfig, ConfigError> {
    let source = ConfigSource::read(path)?;
    let raw: RawConfig = source.parse()?;
    raw.validate().map_err(|problems| source.invalid(problems))
}

/// A listener's address: `None` for `""` (off); a problem for `key` when
/// it does not parse.
fn optional_address(
    problems: &mut Vec<ConfigProblem>,
    key: &str,
    text: &str,
) -> Option<std::net::SocketAddr> {
    if text.is_empty() {
        return None;
    }
    match text.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(e) => {
            problems.push(ConfigProblem::new(
                key,
                format!("{text:?} is not an address like 127.0.0.1:8125 (\"\" turns it off): {e}"),
            ));
            None
        }
    }
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl RawConfig {
    /// Checks every value; returns every problem found.
    pub fn validate(self) -> Result<AgentConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let instance = if self.instance.is_empty() {
            host_name()
        } else {
            self.instance
        };
        if instance.is_empty() {
            problems.push(ConfigProblem::new(
                "instance",
                "the host has no name; set instance",
            ));
        }
        if self.job.is_empty() {
            problems.push(ConfigProblem::new("job", "must not be empty"));
        }
        let sample = self.sample_interval.0;
        let flush = self.flush_interval.0;
        if sample < Duration::from_millis(100) {
            problems.push(ConfigProblem::new(
                "sample_interval",
                "must be at least 100ms",
            ));
        }
        if flush > Duration::from_secs(3600) {
            problems.push(ConfigProblem::new("flush_interval", "must be at most 1h"));
        }
        if flush < sample {
            problems.push(ConfigProblem::new(
                "flush_interval",
                format!(
                    "must be at least sample_interval ({})",
                    self.sample_interval
                ),
            ));
        }
        if self.max_series == 0 {
            problems.push(ConfigProblem::new("max_series", "must be at least 1"));
        }
        let c = self.collector;
        let endpoints = match (c.endpoint, c.endpoints.is_empty()) {
            (Some(_), false) => {
                problems.push(ConfigProblem::new(
                    "collector.endpoints",
                    "set endpoint or endpoints, not both",
                ));
                c.endpoints
            }
            (Some(one), true) => vec![one],
            (None, false) => c.endpoints,
            (None, true) => vec![default_endpoint()],
        };
        let mut https = false;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let key = if endpoints.len() == 1 {
                "collector.endpoint".to_string()
            } else {
                format!("collector.endpoints[{i}]")
            };
            https |= endpoint.starts_with("https://");
            if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                problems.push(ConfigProblem::new(
                    &key,
                    format!("{endpoint:?} must start with http:// or https://"),
                ));
            } else if endpoint.parse::<tonic::transport::Uri>().is_err() {
                problems.push(ConfigProblem::new(
                    &key,
                    format!("{endpoint:?} is not a valid URI"),
                ));
            } else if endpoints[..i].contains(endpoint) {
                problems.push(ConfigProblem::new(
                    &key,
                    format!("{endpoint:?} is listed twice"),
                ));
            }
        }
        if https && endpoints.iter().any(|e| e.starts_with("http://")) {
            problems.push(ConfigProblem::new(
                "collector.endpoints",
                "mixes http:// and https:// endpoints; they share one TLS setting",
            ));
        }
        let secret = SecretRef {
            token: c.token,
            token_file: c.token_file,
            token_env: c.token_env,
        };
        let token = match secret.resolve() {
            Ok(t) => t,
            Err(e) => {
                problems.push(ConfigProblem::new("collector.token", e));
                None
            }
        };
        if c.timeout.0.is_zero() {
            problems.push(ConfigProblem::new(
                "collector.timeout",
                "must be more than 0s",
            ));
        }
        let identity = match (c.cert_file, c.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push(ConfigProblem::new(
                    "collector.cert_file",
                    "cert_file and key_file go together",
                ));
                None
            }
        };
        let tls = match (https, c.ca_file) {
            (true, Some(ca_file)) => Some(ClientTls {
                ca_file,
                identity,
                server_name: c.server_name,
            }),
            (true, None) => {
                problems.push(ConfigProblem::new(
                    "collector.ca_file",
                    "an https:// endpoint needs ca_file, the CA that signed the collector's certificate",
                ));
                None
            }
            (false, Some(_)) => {
                problems.push(ConfigProblem::new(
                    "collector.ca_file",
                    "TLS files are set but the endpoint is http://; use https://",
                ));
                None
            }
            (false, None) => None,
        };
        let s = self.shipper;
        if s.max_memory_bytes.0 < 64 * 1024 {
            problems.push(ConfigProblem::new(
                "shipper.max_memory_bytes",
                "must be at least 64KiB",
            ));
        }
        if s.max_spool_bytes.0 < 64 * 1024 {
            problems.push(ConfigProblem::new(
                "shipper.max_spool_bytes",
                "must be at least 64KiB",
            ));
        }
        if !(s.replay_max_per_second.is_finite() && s.replay_max_per_second > 0.0) {
            problems.push(ConfigProblem::new(
                "shipper.replay_max_per_second",
                "must be a number above 0",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem::new("data_dir", "must not be empty"));
        }
        if s.retry_initial.0.is_zero() || s.retry_max.0 < s.retry_initial.0 {
            problems.push(ConfigProblem::new(
                "shipper.retry_max",
                "retry_initial must be more than 0s and retry_max at least retry_initial",
            ));
        }
        for (key, pattern) in [
            (
                "sources.system.filesystem_mount_points_exclude",
                &self.sources.system.filesystem_mount_points_exclude,
            ),
            (
                "sources.system.filesystem_fs_types_exclude",
                &self.sources.system.filesystem_fs_types_exclude,
            ),
            (
                "sources.system.disk_devices_exclude",
                &self.sources.system.disk_devices_exclude,
            ),
            (
                "sources.system.network_devices_exclude",
                &self.sources.system.network_devices_exclude,
            ),
        ] {
            if let Err(e) = regex_lite::Regex::new(pattern) {
                problems.push(ConfigProblem::new(
                    key,
                    format!("invalid regular expression: {e}"),
                ));
            }
        }
        for name in &self.sources.system.collectors_disabled {
            if let Some((_, reader)) = crate::sources::system::SHARED
                .iter()
                .find(|(n, _)| n == name)
            {
                problems.push(ConfigProblem::new(
                    "sources.system.collectors_disabled",
                    format!("{name:?} is read with {reader:?}: disable {reader:?} instead"),
                ));
            } else if !crate::sources::system::COLLECTORS.contains(&name.as_str()) {
                problems.push(ConfigProblem::new(
                    "sources.system.collectors_disabled",
                    format!(
                        "unknown collector {name:?}; the collectors are {}",
                        crate::sources::system::COLLECTORS.join(", ")
                    ),
                ));
            }
        }
        if self.sources.textfile.max_series >= self.max_series {
            problems.push(ConfigProblem::new(
                "sources.textfile.max_series",
                format!(
                    "must be less than max_series ({}), so that textfiles cannot starve the other sources",
                    self.max_series
                ),
            ));
        }
        if let Some(dir) = &self.sources.textfile.directory
            && dir.as_os_str().is_empty()
        {
            problems.push(ConfigProblem::new(
                "sources.textfile.directory",
                "is empty; leave it out to turn the textfile source off",
            ));
        }
        let st = &self.sources.statsd;
        let statsd_udp = optional_address(&mut problems, "sources.statsd.udp", &st.udp);
        if st.max_series >= self.max_series {
            problems.push(ConfigProblem::new(
                "sources.statsd.max_series",
                format!(
                    "must be less than max_series ({}), so that StatsD cannot starve the other sources",
                    self.max_series
                ),
            ));
        }
        if !st.prefix.is_empty() && !vigil_shared::labels::is_valid_metric_name(&st.prefix) {
            problems.push(ConfigProblem::new(
                "sources.statsd.prefix",
                format!("{:?} is not the start of a valid metric name", st.prefix),
            ));
        }
        if st.max_window_samples == 0 || st.max_window_samples > 10_000_000 {
            problems.push(ConfigProblem::new(
                "sources.statsd.max_window_samples",
                "must be between 1 and 10,000,000 (8 bytes each)",
            ));
        }
        let statsd_tcp = optional_address(&mut problems, "sources.statsd.tcp", &st.tcp);
        let statsd = StatsdConfig {
            enabled: st.enabled,
            udp: statsd_udp,
            unix: st.unix.clone(),
            tcp: statsd_tcp,
            prefix: st.prefix.clone(),
            receive_buffer: st.receive_buffer,
            max_series: st.max_series,
            max_window_samples: st.max_window_samples,
        };
        let o = &self.sources.otlp;
        let otlp_grpc = optional_address(&mut problems, "sources.otlp.grpc", &o.grpc);
        let otlp_http = optional_address(&mut problems, "sources.otlp.http", &o.http);
        if o.max_series == 0 || o.max_series >= self.max_series {
            problems.push(ConfigProblem::new(
                "sources.otlp.max_series",
                format!(
                    "must be between 1 and max_series ({}), so that OTLP cannot starve the other sources",
                    self.max_series
                ),
            ));
        }
        if o.max_request_size.0 < 1024 || o.max_request_size.0 > 64 << 20 {
            problems.push(ConfigProblem::new(
                "sources.otlp.max_request_size",
                "must be between 1KiB and 64MiB",
            ));
        }
        if o.stale_after.0 < flush {
            problems.push(ConfigProblem::new(
                "sources.otlp.stale_after",
                format!("must be at least flush_interval ({})", self.flush_interval),
            ));
        }
        let otlp = OtlpConfig {
            enabled: o.enabled,
            grpc: otlp_grpc,
            http: otlp_http,
            max_request_size: o.max_request_size.0 as usize,
            max_series: o.max_series,
            instance_from_service: o.instance_from_service,
            stale_after: o.stale_after.0,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(AgentConfig {
            instance,
            job: self.job,
            sample_interval: sample,
            flush_interval: flush,
            max_series: self.max_series,
            data_dir: self.data_dir,
            collectors: endpoints
                .into_iter()
                .map(|endpoint| CollectorConfig {
                    endpoint,
                    token: token.clone(),
                    timeout: c.timeout.0,
                    tls: tls.clone(),
                })
                .collect(),
            mode: c.mode,
            shipper: ShipperConfig {
                max_spool_bytes: s.max_spool_bytes.0,
                max_memory_bytes: s.max_memory_bytes.0,
                replay_max_per_second: s.replay_max_per_second,
                retry_initial: s.retry_initial.0,
                retry_max: s.retry_max.0,
                shutdown_timeout: s.shutdown_timeout.0,
            },
            system: self.sources.system,
            textfile: self.sources.textfile,
            statsd,
            otlp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<AgentConfig, String> {
        let source = ConfigSource::from_text("agent.toml", text);
        let raw: RawConfig = source.parse().map_err(|e| e.to_string())?;
        raw.validate().map_err(|p| source.invalid(p).to_string())
    }

    #[test]
    fn embedded_defaults_are_valid() -> Result<(), String> {
        let c = check("")?;
        assert_eq!(c.sample_interval, Duration::from_secs(1));
        assert_eq!(c.flush_interval, Duration::from_secs(10));
        assert_eq!(c.job, "node");
        assert!(!c.instance.is_empty());
        assert_eq!(c.collectors.len(), 1);
        assert_eq!(c.collectors[0].endpoint, "http://127.0.0.1:9471");
        assert_eq!(c.mode, CollectorMode::Failover);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/vigil/agent"));
        assert_eq!(c.shipper.max_spool_bytes, 256 << 20);
        assert!(c.system.enabled);
        assert!(c.textfile.directory.is_none());
        Ok(())
    }

    #[test]
    fn otlp_and_statsd_listeners_are_checked_and_can_be_turned_off() -> Result<(), String> {
        let c = check("")?;
        assert_eq!(c.otlp.grpc.map(|a| a.port()), Some(4317));
        assert_eq!(c.otlp.http.map(|a| a.port()), Some(4318));
        assert_eq!(c.otlp.max_request_size, 4 << 20);
        assert_eq!(c.statsd.tcp, None);
        let c = check("[sources.otlp]\ngrpc = \"\"\nhttp = \"127.0.0.1:14318\"\n")?;
        assert_eq!(
            (c.otlp.grpc, c.otlp.http.map(|a| a.port())),
            (None, Some(14318))
        );
        let err = check(
            "[sources.statsd]\ntcp = \"nope\"\n[sources.otlp]\ngrpc = \"localhost\"\nmax_series = 20000\nmax_request_size = \"1GiB\"\nstale_after = \"1s\"\n",
        )
        .err()
        .unwrap_or_default();
        for key in [
            "line 2: key `sources.statsd.tcp`",
            "line 4: key `sources.otlp.grpc`",
            "line 5: key `sources.otlp.max_series`",
            "line 6: key `sources.otlp.max_request_size`",
            "line 7: key `sources.otlp.stale_after`",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        Ok(())
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let err = check("sample_interval = \"2s\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"ftp://x\"\n[sources.system]\ndisk_devices_exclude = \"(\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("line 2: key `flush_interval`"), "{err}");
        assert!(err.contains("line 4: key `collector.endpoint`"), "{err}");
        assert!(
            err.contains("line 6: key `sources.system.disk_devices_exclude`"),
            "{err}"
        );
    }

    #[test]
    fn collectors_can_be_disabled_by_their_node_exporter_names() {
        let c = check("[sources.system]\ncollectors_disabled = [\"netstat\", \"timex\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.system.collectors_disabled, ["netstat", "timex"]);
        let err = check("[sources.system]\ncollectors_disabled = [\"netstats\", \"cpu\"]\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("unknown collector \"netstats\""), "{err}");
        assert!(err.contains("\"cpu\" is read with \"stat\""), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = check("[collector]\nendpiont = \"x\"\n")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("agent.toml:2:1") && err.contains("endpiont"),
            "{err}"
        );
    }

    #[test]
    fn several_collectors() {
        let c = check(
            "[collector]\nendpoints = [\"http://a:9471\", \"http://b:9471\"]\nmode = \"fanout\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.collectors.len(), 2);
        assert_eq!(c.mode, CollectorMode::Fanout);
        let err = check("[collector]\nendpoint = \"http://a:9471\"\nendpoints = [\"http://b:9471\", \"http://b:9471\"]\n")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("not both") && err.contains("listed twice"),
            "{err}"
        );
        let err = check("[collector]\nmode = \"roundrobin\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("roundrobin"), "{err}");
    }

    #[test]
    fn https_needs_a_ca() {
        let err = check("[collector]\nendpoint = \"https://c:9471\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("collector.ca_file"), "{err}");
    }
}
