//! `[[remote_write]]` entries and `[remote_write_queue]`, as written in the
//! collector's config, validated into [`vigil_remote_write`]'s types.
//! Every problem names its key (`remote_write[1].url`), which the config
//! loader turns into a line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vigil_remote_write::relabel::Rule;
use vigil_remote_write::sender::{Auth, Destination, QueueSettings};
use vigil_shared::config::{ByteSize, ConfigProblem, HumanDuration};

/// One `[[remote_write]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// Its name in metrics and its cursor file; default from the URL.
    #[serde(default)]
    pub name: Option<String>,
    /// Deadline of one request.
    #[serde(default = "default_timeout")]
    pub remote_timeout: HumanDuration,
    /// `Authorization: Bearer` from this file.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// `Authorization: Basic`.
    #[serde(default)]
    pub basic_auth: Option<RawBasicAuth>,
    /// TLS to the store.
    #[serde(default)]
    pub tls_config: RawTls,
    /// Which series go, by Prometheus's keep/drop relabelling.
    #[serde(default)]
    pub write_relabel_configs: Vec<RawRelabel>,
    /// Sending and retries.
    #[serde(default)]
    pub queue_config: RawQueue,
    /// Histogram windows go as native histograms too (as Prometheus's own
    /// `send_native_histograms`).
    #[serde(default)]
    pub send_native_histograms: bool,
}

/// `basic_auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// User.
    pub username: String,
    /// File holding the password.
    pub password_file: PathBuf,
}

/// `tls_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA certificate (PEM) to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One `write_relabel_configs` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelabel {
    /// `keep` or `drop`.
    pub action: String,
    /// Labels joined.
    pub source_labels: Vec<String>,
    /// Join.
    #[serde(default)]
    pub separator: Option<String>,
    /// Regex, anchored.
    #[serde(default)]
    pub regex: Option<String>,
}

/// `queue_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Most samples per request.
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// Shards at least.
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    /// Shards at most.
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    /// First retry delay.
    #[serde(default = "default_min_backoff")]
    pub min_backoff: HumanDuration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Retry 429 answers.
    #[serde(default = "default_true")]
    pub retry_on_http_429: bool,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            max_samples_per_send: default_max_samples_per_send(),
            min_shards: default_min_shards(),
            max_shards: default_max_shards(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            retry_on_http_429: true,
        }
    }
}

/// `[remote_write_queue]`: the queue all destinations read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWriteQueue {
    /// Most bytes on disk; past it the oldest unsent samples are dropped.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for RawRemoteWriteQueue {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_samples_per_send() -> usize {
    2000
}
fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    8
}
fn default_min_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(30))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_true() -> bool {
    true
}
fn default_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}

/// A name fit for a file name and a label, from the URL.
fn name_from_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut name: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(100);
    name
}

/// Validates every entry; problems name `remote_write[i].key`.
pub fn validate(raw: Vec<RawRemoteWrite>, problems: &mut Vec<ConfigProblem>) -> Vec<Destination> {
    let mut out: Vec<Destination> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("remote_write[{i}].{k}");
        let before = problems.len();
        match reqwest::Url::parse(&r.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(_) => problems.push(ConfigProblem::new(
                key("url"),
                format!("{:?} is not an http:// or https:// URL with a host", r.url),
            )),
            Err(e) => problems.push(ConfigProblem::new(
                key("url"),
                format!("{:?} is not a URL: {e}", r.url),
            )),
        }
        let name = r.name.clone().unwrap_or_else(|| name_from_url(&r.url));
        if name.is_empty()
            || name.len() > 100
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push(ConfigProblem::new(
                key("name"),
                format!("{name:?}: 1 to 100 letters, digits, '-', '_' or '.'"),
            ));
        } else if out.iter().any(|d| d.name == name) {
            problems.push(ConfigProblem::new(
                key("name"),
                format!("{name:?} is used by another entry: give each a name"),
            ));
        }
        let read = |file: &PathBuf, what: &str, problems: &mut Vec<ConfigProblem>| {
            match std::fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
                Ok(_) => {
                    problems.push(ConfigProblem::new(
                        key(what),
                        format!("{} is empty", file.display()),
                    ));
                    None
                }
                Err(e) => {
                    problems.push(ConfigProblem::new(
                        key(what),
                        format!("cannot read {}: {e}", file.display()),
                    ));
                    None
                }
            }
        };
        let auth = match (&r.bearer_token_file, &r.basic_auth) {
            (Some(_), Some(_)) => {
                problems.push(ConfigProblem::new(
                    key("bearer_token_file"),
                    "set bearer_token_file or basic_auth, not both",
                ));
                Auth::None
            }
            (Some(file), None) => read(file, "bearer_token_file", problems)
                .map(Auth::Bearer)
                .unwrap_or_default(),
            (None, Some(b)) => read(&b.password_file, "basic_auth.password_file", problems)
                .map(|password| Auth::Basic {
                    username: b.username.clone(),
                    password,
                })
                .unwrap_or_default(),
            (None, None) => Auth::None,
        };
        let ca_pem = r
            .tls_config
            .ca_file
            .as_ref()
            .and_then(|f| match std::fs::read(f) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    problems.push(ConfigProblem::new(
                        key("tls_config.ca_file"),
                        format!("cannot read {}: {e}", f.display()),
                    ));
                    None
                }
            });
        let mut relabel = Vec::new();
        for (j, rule) in r.write_relabel_configs.into_iter().enumerate() {
            match Rule::new(
                &rule.action,
                rule.source_labels,
                rule.separator,
                rule.regex.as_deref(),
            ) {
                Ok(rule) => relabel.push(rule),
                Err(e) => problems.push(ConfigProblem::new(
                    key(&format!("write_relabel_configs[{j}].action")),
                    e,
                )),
            }
        }
        let q = r.queue_config;
        if q.max_samples_per_send == 0 || q.max_samples_per_send > 1_000_000 {
            problems.push(ConfigProblem::new(
                key("queue_config.max_samples_per_send"),
                "must be between 1 and 1000000",
            ));
        }
        if q.min_shards == 0 || q.max_shards < q.min_shards || q.max_shards > 256 {
            problems.push(ConfigProblem::new(
                key("queue_config.max_shards"),
                "min_shards must be at least 1, and max_shards between min_shards and 256",
            ));
        }
        if q.min_backoff.0 < Duration::from_millis(1) || q.max_backoff.0 < q.min_backoff.0 {
            problems.push(ConfigProblem::new(
                key("queue_config.max_backoff"),
                "min_backoff must be at least 1ms and max_backoff at least min_backoff",
            ));
        }
        if r.remote_timeout.0 < Duration::from_millis(100) {
            problems.push(ConfigProblem::new(
                key("remote_timeout"),
                "must be at least 100ms",
            ));
        }
        if problems.len() > before {
            continue;
        }
        out.push(Destination {
            name,
            url: r.url,
            auth,
            ca_pem,
            insecure_skip_verify: r.tls_config.insecure_skip_verify,
            timeout: r.remote_timeout.0,
            relabel,
            native_histograms: r.send_native_histograms,
            queue: QueueSettings {
                max_samples_per_send: q.max_samples_per_send,
                min_shards: q.min_shards,
                max_shards: q.max_shards,
                min_backoff: q.min_backoff.0,
                max_backoff: q.max_backoff.0,
                retry_on_http_429: q.retry_on_http_429,
            },
        });
    }
    out
}
