//! Alertmanager's configuration file, the part a webhook user writes:
//! `global` (`resolve_timeout`, `http_config`), `route`, `receivers` with
//! `webhook_configs`, `inhibit_rules`, `time_intervals` (and the older
//! `mute_time_intervals`). A file written for Alertmanager 0.25 that uses only
//! these loads unchanged; any other key (an `email_configs`, `templates`, …)
//! is refused with its name, because ignoring it would silently drop alerts.
//!
//! Vigil's own keys on a webhook (`fallback`, `signing_secret…`, `body`) and
//! on a route (`fallback`, `fallback_after`) are documented in
//! `docs/notifications.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use thiserror::Error;

use vigil_shared::config::Text;
use vigil_shared::config::parse_duration_ms;

/// An Alertmanager file that cannot be used.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{file}: {message}")]
pub struct NotifyConfigError {
    /// The file.
    pub file: String,
    /// What is wrong and where.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    global: RawGlobal,
    route: Option<RawRoute>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibit>,
    #[serde(default)]
    time_intervals: Vec<RawTimeIntervals>,
    #[serde(default)]
    mute_time_intervals: Vec<RawTimeIntervals>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    resolve_timeout: Option<String>,
    http_config: Option<RawHttpConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(rename = "continue", default)]
    continue_: bool,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(rename = "match", default)]
    match_: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    /// Vigil's own keys.
    vigil: Option<RawRouteVigil>,
}

/// Vigil-only keys of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteVigil {
    fallback: String,
    fallback_after: Option<String>,
}

/// Vigil-only keys of a webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhookVigil {
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    send_resolved: Option<bool>,
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    max_alerts: usize,
    http_config: Option<RawHttpConfig>,
    vigil: Option<RawWebhookVigil>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpConfig {
    authorization: Option<RawAuthorization>,
    basic_auth: Option<RawBasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    tls_config: Option<RawTls>,
    follow_redirects: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeIntervals {
    name: String,
    #[serde(default)]
    time_intervals: Vec<RawTimeInterval>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeInterval {
    #[serde(default)]
    times: Vec<RawTimeRange>,
    #[serde(default)]
    weekdays: Vec<Text>,
    #[serde(default)]
    days_of_month: Vec<Text>,
    #[serde(default)]
    months: Vec<Text>,
    #[serde(default)]
    years: Vec<Text>,
    location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    start_time: String,
    end_time: String,
}

/// One label matcher (`name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`).
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    /// Label name.
    pub name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: MatchOp,
    /// The value or pattern as written.
    pub value: String,
    /// Anchored regex for `=~` / `!~`.
    regex: Option<Regex>,
}

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl LabelMatcher {
    /// A matcher; regexes are anchored as Alertmanager anchors them.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// True when the labels satisfy the matcher (an absent label is "").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// As Alertmanager prints it in a group key: `name="value"`.
    pub fn render(&self) -> String {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        format!("{}{op}{:?}", self.name, self.value)
    }
}

/// Parses one matcher as Alertmanager writes them: `name = "value"`,
/// `name=~value`, `name!="v"`, the value quoted or not.
pub fn parse_matcher(text: &str) -> Result<LabelMatcher, String> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| format!("{text:?}: no operator (=, !=, =~, !~)"))?;
    let name = &text[..name_end];
    if name.is_empty() {
        return Err(format!("{text:?}: no label name"));
    }
    let rest = text[name_end..].trim_start();
    let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
        (MatchOp::Regex, v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (MatchOp::NotRegex, v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (MatchOp::NotEqual, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (MatchOp::Equal, v)
    } else {
        return Err(format!("{text:?}: no operator (=, !=, =~, !~)"));
    };
    let value = value.trim();
    let value = if let Some(q) = value.strip_prefix('"') {
        let inner = q
            .strip_suffix('"')
            .ok_or_else(|| format!("{text:?}: unterminated quoted value"))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(c) => out.push(c),
                    None => return Err(format!("{text:?}: trailing backslash")),
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        value.to_string()
    };
    LabelMatcher::new(name, op, &value).map_err(|e| format!("{text:?}: {e}"))
}

/// `group_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// Group by these labels.
    Labels(Vec<String>),
    /// `['...']`: every label, one group per alert.
    All,
}

/// A routing node, with its parent's settings inherited.
#[derive(Debug, Clone)]
pub struct Route {
    /// Receiver name.
    pub receiver: String,
    /// Grouping.
    pub group_by: GroupBy,
    /// Keep matching siblings after a match.
    pub continue_: bool,
    /// Matchers (`matchers`, `match`, `match_re` together).
    pub matchers: Vec<LabelMatcher>,
    /// Milliseconds.
    pub group_wait_ms: i64,
    /// Milliseconds.
    pub group_interval_ms: i64,
    /// Milliseconds.
    pub repeat_interval_ms: i64,
    /// Named intervals during which notifications are muted.
    pub mute_time_intervals: Vec<String>,
    /// Named intervals outside which notifications are muted.
    pub active_time_intervals: Vec<String>,
    /// Child routes.
    pub routes: Vec<Route>,
    /// The route's key as Alertmanager builds it (`{}/{severity="page"}`…).
    /// Siblings with the same matchers share it, as in Alertmanager.
    pub key: String,
    /// Where the route stands in the file (`route.routes[1]`): unique, so
    /// that siblings with the same key still group apart, as Alertmanager's
    /// dispatcher keeps groups per route.
    pub id: String,
    /// Vigil: the receiver that gets a notification the route's receiver has
    /// failed to take for `fallback_after_ms`.
    pub fallback: Option<(String, i64)>,
}

impl Route {
    /// The routes an alert goes to: the deepest matching ones, following
    /// `continue`, or this route when no child matches.
    pub fn find<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
        if !self.matchers.iter().all(|m| m.matches(labels)) {
            return Vec::new();
        }
        let mut found = Vec::new();
        for child in &self.routes {
            let hits = child.find(labels);
            if !hits.is_empty() {
                found.extend(hits);
                if !child.continue_ {
                    break;
                }
            }
        }
        if found.is_empty() {
            found.push(self);
        }
        found
    }
}

/// HTTP settings of a webhook.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// `Authorization` header value.
    pub authorization: Option<String>,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// TLS server name.
    pub server_name: Option<String>,
    /// Skip certificate checks (never in production).
    pub insecure_skip_verify: bool,
    /// Follow redirects (default true).
    pub follow_redirects: bool,
}

/// One webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// URL (read from `url_file` at load).
    pub url: String,
    /// Send resolved notifications (default true).
    pub send_resolved: bool,
    /// Most alerts in one message (0: all); the rest are counted in
    /// `truncatedAlerts`.
    pub max_alerts: usize,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Vigil: a Go template for the body instead of Alertmanager's JSON.
    pub body: Option<(String, vigil_template::Template)>,
}

/// A receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Name.
    pub name: String,
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
}

/// An inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// Alerts that inhibit.
    pub source: Vec<LabelMatcher>,
    /// Alerts that are inhibited.
    pub target: Vec<LabelMatcher>,
    /// Labels that must be equal in both.
    pub equal: Vec<String>,
}

/// A named set of time intervals.
#[derive(Debug, Clone)]
pub struct TimeIntervals {
    /// Name.
    pub name: String,
    /// Intervals (any of them).
    pub intervals: Vec<super::timeinterval::TimeInterval>,
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `global.resolve_timeout`, milliseconds.
    pub resolve_timeout_ms: i64,
    /// The routing tree.
    pub route: Route,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Receiver>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Time intervals by name.
    pub time_intervals: BTreeMap<String, TimeIntervals>,
}

fn duration(key: &str, text: &Option<String>, default_ms: i64) -> Result<i64, String> {
    match text {
        None => Ok(default_ms),
        Some(t) if t.trim() == "0" => Ok(0),
        Some(t) => parse_duration_ms(t.trim()).map_err(|e| format!("{key}: {e}")),
    }
}

fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
}

fn http_settings(raw: &RawHttpConfig, at: &str) -> Result<HttpSettings, String> {
    let mut out = HttpSettings {
        follow_redirects: raw.follow_redirects.unwrap_or(true),
        ..HttpSettings::default()
    };
    let mut ways = 0;
    if let Some(a) = &raw.authorization {
        ways += 1;
        let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
        let credentials = match (&a.credentials, &a.credentials_file) {
            (Some(c), None) => c.clone(),
            (None, Some(f)) => read_secret(f, &format!("{at}.authorization.credentials_file"))?,
            (None, None) => {
                return Err(format!(
                    "{at}.authorization: set credentials or credentials_file"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}.authorization: set only one of credentials and credentials_file"
                ));
            }
        };
        out.authorization = Some(format!("{kind} {credentials}"));
    }
    if let Some(b) = &raw.basic_auth {
        ways += 1;
        let password = match (&b.password, &b.password_file) {
            (Some(p), None) => p.clone(),
            (None, Some(f)) => read_secret(f, &format!("{at}.basic_auth.password_file"))?,
            (None, None) => String::new(),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}.basic_auth: set only one of password and password_file"
                ));
            }
        };
        use base64_encode as b64;
        out.authorization = Some(format!(
            "Basic {}",
            b64(&format!("{}:{password}", b.username))
        ));
    }
    if raw.bearer_token.is_some() || raw.bearer_token_file.is_some() {
        ways += 1;
        let token = match (&raw.bearer_token, &raw.bearer_token_file) {
            (Some(t), None) => t.clone(),
            (None, Some(f)) => read_secret(f, &format!("{at}.bearer_token_file"))?,
            _ => {
                return Err(format!(
                    "{at}: set only one of bearer_token and bearer_token_file"
                ));
            }
        };
        out.authorization = Some(format!("Bearer {token}"));
    }
    if ways > 1 {
        return Err(format!(
            "{at}: set at most one of authorization, basic_auth and bearer_token"
        ));
    }
    if let Some(t) = &raw.tls_config {
        out.ca_file = t.ca_file.clone();
        out.server_name = t.server_name.clone();
        out.insecure_skip_verify = t.insecure_skip_verify;
        out.client_cert = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{at}.tls_config: set both cert_file and key_file, or neither"
                ));
            }
        };
    }
    Ok(out)
}

/// Standard base64 with padding (for basic auth).
pub fn base64_encode(text: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn matchers(
    new: &[String],
    equal: &BTreeMap<String, String>,
    regex: &BTreeMap<String, String>,
    at: &str,
) -> Result<Vec<LabelMatcher>, String> {
    let mut out = Vec::new();
    for (i, m) in new.iter().enumerate() {
        out.push(parse_matcher(m).map_err(|e| format!("{at}.matchers[{i}]: {e}"))?);
    }
    for (k, v) in equal {
        out.push(
            LabelMatcher::new(k, MatchOp::Equal, v).map_err(|e| format!("{at}.match.{k}: {e}"))?,
        );
    }
    for (k, v) in regex {
        out.push(
            LabelMatcher::new(k, MatchOp::Regex, v)
                .map_err(|e| format!("{at}.match_re.{k}: {e}"))?,
        );
    }
    Ok(out)
}

struct Inherited {
    receiver: Option<String>,
    group_by: GroupBy,
    group_wait_ms: i64,
    group_interval_ms: i64,
    repeat_interval_ms: i64,
}

fn build_route(
    raw: RawRoute,
    parent: &Inherited,
    at: &str,
    parent_key: Option<&str>,
) -> Result<Route, String> {
    let mut matchers = matchers(&raw.matchers, &raw.match_, &raw.match_re, at)?;
    matchers.sort_by_key(LabelMatcher::render);
    let receiver = raw
        .receiver
        .or_else(|| parent.receiver.clone())
        .ok_or_else(|| format!("{at}: root route must specify a default receiver"))?;
    let group_by = match raw.group_by {
        None => parent.group_by.clone(),
        Some(g) if g.iter().any(|l| l == "...") => {
            if g.len() > 1 {
                return Err(format!(
                    "{at}.group_by: cannot have wildcard group_by (`...`) and other labels at the same time"
                ));
            }
            GroupBy::All
        }
        Some(g) => {
            for l in &g {
                if !vigil_shared::labels::is_valid_label_name(l) {
                    return Err(format!("{at}.group_by: invalid label name {l:?}"));
                }
            }
            GroupBy::Labels(g)
        }
    };
    let group_wait_ms = duration(
        &format!("{at}.group_wait"),
        &raw.group_wait,
        parent.group_wait_ms,
    )?;
    let group_interval_ms = duration(
        &format!("{at}.group_interval"),
        &raw.group_interval,
        parent.group_interval_ms,
    )?;
    let repeat_interval_ms = duration(
        &format!("{at}.repeat_interval"),
        &raw.repeat_interval,
        parent.repeat_interval_ms,
    )?;
    if group_interval_ms <= 0 {
        return Err(format!("{at}.group_interval cannot be zero"));
    }
    if repeat_interval_ms <= 0 {
        return Err(format!("{at}.repeat_interval cannot be zero"));
    }
    // Alertmanager's route key: the parent's key / this route's matchers.
    let own = format!(
        "{{{}}}",
        matchers
            .iter()
            .map(LabelMatcher::render)
            .collect::<Vec<_>>()
            .join(",")
    );
    let key = match parent_key {
        None => own,
        Some(p) => format!("{p}/{own}"),
    };
    let inherited = Inherited {
        receiver: Some(receiver.clone()),
        group_by: group_by.clone(),
        group_wait_ms,
        group_interval_ms,
        repeat_interval_ms,
    };
    let fallback = match raw.vigil {
        Some(v) => Some((
            v.fallback,
            duration(
                &format!("{at}.vigil.fallback_after"),
                &v.fallback_after,
                5 * 60_000,
            )?,
        )),
        None => None,
    };
    let mut routes = Vec::new();
    for (i, child) in raw.routes.into_iter().enumerate() {
        routes.push(build_route(
            child,
            &inherited,
            &format!("{at}.routes[{i}]"),
            Some(&key),
        )?);
    }
    Ok(Route {
        receiver,
        group_by,
        continue_: raw.continue_,
        matchers,
        group_wait_ms,
        group_interval_ms,
        repeat_interval_ms,
        mute_time_intervals: raw.mute_time_intervals,
        active_time_intervals: raw.active_time_intervals,
        routes,
        key,
        id: at.to_string(),
        fallback,
    })
}

fn check_route_refs(
    route: &Route,
    receivers: &BTreeMap<String, Receiver>,
    intervals: &BTreeMap<String, TimeIntervals>,
    at: &str,
) -> Result<(), String> {
    if !receivers.contains_key(&route.receiver) {
        return Err(format!(
            "{at}: undefined receiver {:?} used in route",
            route.receiver
        ));
    }
    if let Some((fallback, _)) = &route.fallback
        && !receivers.contains_key(fallback)
    {
        return Err(format!(
            "{at}.vigil.fallback: undefined receiver {fallback:?}"
        ));
    }
    for name in route
        .mute_time_intervals
        .iter()
        .chain(&route.active_time_intervals)
    {
        if !intervals.contains_key(name) {
            return Err(format!(
                "{at}: undefined time interval {name:?} used in route"
            ));
        }
    }
    for (i, child) in route.routes.iter().enumerate() {
        check_route_refs(child, receivers, intervals, &format!("{at}.routes[{i}]"))?;
    }
    Ok(())
}

/// Parses and checks an Alertmanager configuration.
pub fn parse(path: &Path, text: &str) -> Result<NotifyConfig, NotifyConfigError> {
    let fail = |message: String| NotifyConfigError {
        file: path.display().to_string(),
        message,
    };
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| fail(format!("yaml: {e}")))?;
    let resolve_timeout_ms = duration(
        "global.resolve_timeout",
        &raw.global.resolve_timeout,
        5 * 60_000,
    )
    .map_err(fail)?;
    let global_http = raw.global.http_config.clone().unwrap_or_default();

    let mut time_intervals = BTreeMap::new();
    for (list, key) in [
        (raw.time_intervals, "time_intervals"),
        (raw.mute_time_intervals, "mute_time_intervals"),
    ] {
        for (i, t) in list.into_iter().enumerate() {
            let at = format!("{key}[{i}]");
            let mut intervals = Vec::new();
            for (j, ti) in t.time_intervals.into_iter().enumerate() {
                intervals.push(
                    super::timeinterval::TimeInterval::parse(
                        &ti.times
                            .iter()
                            .map(|r| (r.start_time.clone(), r.end_time.clone()))
                            .collect::<Vec<_>>(),
                        &ti.weekdays.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                        &ti.days_of_month
                            .iter()
                            .map(|w| w.0.clone())
                            .collect::<Vec<_>>(),
                        &ti.months.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                        &ti.years.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                        ti.location.as_deref(),
                    )
                    .map_err(|e| fail(format!("{at}.time_intervals[{j}]: {e}")))?,
                );
            }
            if time_intervals
                .insert(
                    t.name.clone(),
                    TimeIntervals {
                        name: t.name.clone(),
                        intervals,
                    },
                )
                .is_some()
            {
                return Err(fail(format!(
                    "{at}: time interval {:?} is defined twice",
                    t.name
                )));
            }
        }
    }

    let mut receivers = BTreeMap::new();
    for (i, r) in raw.receivers.into_iter().enumerate() {
        let at = format!("receivers[{i}]");
        if r.name.is_empty() {
            return Err(fail(format!("{at}: missing name in receiver")));
        }
        let mut webhooks = Vec::new();
        for (j, w) in r.webhook_configs.into_iter().enumerate() {
            let wat = format!("{at}.webhook_configs[{j}]");
            let url = match (w.url, w.url_file) {
                (Some(u), None) => u,
                (None, Some(f)) => read_secret(&f, &format!("{wat}.url_file")).map_err(fail)?,
                (None, None) => {
                    return Err(fail(format!(
                        "{wat}: one of url or url_file must be configured"
                    )));
                }
                (Some(_), Some(_)) => {
                    return Err(fail(format!(
                        "{wat}: at most one of url & url_file must be configured"
                    )));
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(fail(format!(
                    "{wat}.url: unsupported scheme in {url:?} (http or https)"
                )));
            }
            let http = http_settings(
                w.http_config.as_ref().unwrap_or(&global_http),
                &format!("{wat}.http_config"),
            )
            .map_err(fail)?;
            let body = match w.vigil.and_then(|v| v.body) {
                Some(text) => {
                    let t = vigil_template::Template::parse(&text)
                        .map_err(|e| fail(format!("{wat}.vigil.body: {e}")))?;
                    Some((text, t))
                }
                None => None,
            };
            webhooks.push(Webhook {
                url,
                send_resolved: w.send_resolved.unwrap_or(true),
                max_alerts: w.max_alerts,
                http,
                body,
            });
        }
        if receivers
            .insert(
                r.name.clone(),
                Receiver {
                    name: r.name.clone(),
                    webhooks,
                },
            )
            .is_some()
        {
            return Err(fail(format!(
                "{at}: notification config name {:?} is not unique",
                r.name
            )));
        }
    }

    let raw_route = raw.route.ok_or_else(|| fail("no routes provided".into()))?;
    if !raw_route.matchers.is_empty()
        || !raw_route.match_.is_empty()
        || !raw_route.match_re.is_empty()
    {
        return Err(fail("route: root route must not have any matchers".into()));
    }
    if !raw_route.mute_time_intervals.is_empty() || !raw_route.active_time_intervals.is_empty() {
        return Err(fail(
            "route: root route must not have any mute or active time intervals".into(),
        ));
    }
    let root_defaults = Inherited {
        receiver: None,
        group_by: GroupBy::Labels(Vec::new()),
        group_wait_ms: 30_000,
        group_interval_ms: 5 * 60_000,
        repeat_interval_ms: 4 * 3_600_000,
    };
    let route = build_route(raw_route, &root_defaults, "route", None).map_err(fail)?;
    check_route_refs(&route, &receivers, &time_intervals, "route").map_err(fail)?;

    let mut inhibit_rules = Vec::new();
    for (i, r) in raw.inhibit_rules.into_iter().enumerate() {
        let at = format!("inhibit_rules[{i}]");
        inhibit_rules.push(InhibitRule {
            source: matchers(
                &r.source_matchers,
                &r.source_match,
                &r.source_match_re,
                &format!("{at}.source"),
            )
            .map_err(fail)?,
            target: matchers(
                &r.target_matchers,
                &r.target_match,
                &r.target_match_re,
                &format!("{at}.target"),
            )
            .map_err(fail)?,
            equal: r.equal,
        });
    }
    Ok(NotifyConfig {
        resolve_timeout_ms,
        route,
        receivers,
        inhibit_rules,
        time_intervals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AM: &str = r#"
global:
  resolve_timeout: 1m
route:
  receiver: default
  group_by: ['alertname', 'cluster']
  group_wait: 10s
  routes:
    - matchers: ['severity = "page"', 'team=~"db|web"']
      receiver: pager
      continue: true
      group_wait: 0s
    - match: { severity: page }
      receiver: audit
    - match_re: { service: "^(api|cdn)$" }
      receiver: default
      group_by: ['...']
      mute_time_intervals: [weekends]
receivers:
  - name: default
    webhook_configs:
      - url: http://127.0.0.1:9/hook
        send_resolved: false
  - name: pager
    webhook_configs:
      - url: https://pager.example/hook
        max_alerts: 10
        http_config:
          basic_auth: { username: vigil, password: s3cret }
  - name: audit
    webhook_configs:
      - url: http://audit.example/
        http_config:
          authorization: { credentials: tok }
inhibit_rules:
  - source_matchers: ['severity="page"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
time_intervals:
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_alertmanager_file_loads_and_routes_as_alertmanager() -> Result<(), NotifyConfigError> {
        let c = parse(Path::new("am.yml"), AM)?;
        assert_eq!(c.resolve_timeout_ms, 60_000);
        let page = labels(&[("alertname", "X"), ("severity", "page"), ("team", "db")]);
        let hits: Vec<&str> = c
            .route
            .find(&page)
            .iter()
            .map(|r| r.receiver.as_str())
            .collect();
        assert_eq!(
            hits,
            ["pager", "audit"],
            "continue: true goes on to the next sibling"
        );
        let hit = &c.route.find(&page)[0];
        assert_eq!(hit.group_wait_ms, 0);
        assert_eq!(hit.group_interval_ms, 300_000, "inherited default");
        assert_eq!(hit.key, r#"{}/{severity="page",team=~"db|web"}"#);
        let other = labels(&[("alertname", "Y")]);
        assert_eq!(c.route.find(&other)[0].receiver, "default");
        assert_eq!(c.route.find(&other)[0].key, "{}");
        let api = labels(&[("service", "api")]);
        assert_eq!(c.route.find(&api)[0].group_by, GroupBy::All);
        assert_eq!(
            c.receivers["pager"].webhooks[0]
                .http
                .authorization
                .as_deref(),
            Some("Basic dmlnaWw6czNjcmV0")
        );
        assert_eq!(
            c.receivers["audit"].webhooks[0]
                .http
                .authorization
                .as_deref(),
            Some("Bearer tok")
        );
        assert!(!c.receivers["default"].webhooks[0].send_resolved);
        assert_eq!(c.inhibit_rules[0].equal, ["cluster"]);
        Ok(())
    }

    #[test]
    fn keys_vigil_does_not_implement_are_refused_by_name() {
        for (text, needle) in [
            (AM.replace("webhook_configs:\n      - url: http://audit.example/", "email_configs:\n      - to: x@example\n    webhook_configs:\n      - url: http://audit.example/"), "email_configs"),
            (format!("templates: ['/etc/am/*.tmpl']\n{AM}"), "templates"),
            (AM.replace("receiver: audit", "receiver: nobody"), "undefined receiver \"nobody\""),
            (AM.replace("[weekends]", "[holidays]"), "undefined time interval \"holidays\""),
            (AM.replace("team=~\"db|web\"", "team=~\"(\""), "invalid regular expression"),
        ] {
            let err = parse(Path::new("am.yml"), &text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn matchers_parse_as_alertmanager_writes_them() -> Result<(), String> {
        let m = parse_matcher(r#"severity != "info""#)?;
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("severity", MatchOp::NotEqual, "info")
        );
        let m = parse_matcher("job=~node.*")?;
        assert!(m.matches(&labels(&[("job", "node-exporter")])));
        assert!(!m.matches(&labels(&[("job", "xnode")])), "anchored");
        assert!(parse_matcher("noop").is_err());
        assert_eq!(base64_encode("ab"), "YWI=");
        Ok(())
    }
}
