//! Config helpers both binaries share: human durations (`"10s"`), byte sizes
//! (`"256MiB"`), secrets read from a file or the environment (never logged),
//! and TOML loading whose errors name the file, line, column and key.
//!
//! Loading is two stages, as in STYLE.md: serde fills a raw struct
//! (`deny_unknown_fields`, defaults in one place), then the binary's own
//! `validate()` turns it into a typed config and reports every problem with
//! [`ConfigProblem`], located in the file with [`ConfigSource::locate`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use thiserror::Error;

/// A duration written as a human string: `"500ms"`, `"10s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| {
                D::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write it like \"10s\", \"500ms\" or \"5m\""
                ))
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A size in bytes written as `"64MiB"`, `"512KiB"`, `"1GB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"64MiB"`, `"10 kB"`, `"4096"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}: write it like \"64MiB\" or \"4096\""))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, kB, MB or GB"
                ));
            }
        };
        Ok(ByteSize((number * multiplier as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(D::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// A secret (a token): its Debug and Display never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it (an auth header, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret comes from: written inline, a file (trailing newline trimmed),
/// or an environment variable. At most one may be set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The value itself (discouraged outside tests: config files get copied around).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the value.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the value.
    #[serde(default)]
    pub token_env: Option<String>,
}

impl SecretRef {
    /// True when no source is set.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.token_file.is_none() && self.token_env.is_none()
    }

    /// Reads the secret; `Ok(None)` when no source is set.
    pub fn resolve(&self) -> Result<Option<Secret>, String> {
        let set = [
            self.token.is_some(),
            self.token_file.is_some(),
            self.token_env.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set > 1 {
            return Err("set only one of token, token_file and token_env".into());
        }
        let value = if let Some(t) = &self.token {
            t.clone()
        } else if let Some(path) = &self.token_file {
            // A token is short: read at most 4 KiB, so that a path such as
            // /dev/zero is an error, not a process that fills its memory.
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_string(&mut text))
                .map_err(|e| format!("cannot read token_file {}: {e}", path.display()))?;
            if text.len() as u64 > MAX_SECRET_FILE_BYTES {
                return Err(format!(
                    "token_file {} is longer than {MAX_SECRET_FILE_BYTES} bytes; a token is one short line",
                    path.display()
                ));
            }
            text.trim_end_matches(['\n', '\r']).to_string()
        } else if let Some(var) = &self.token_env {
            std::env::var(var)
                .map_err(|_| format!("environment variable {var} (token_env) is not set"))?
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err("the token is empty".into());
        }
        if value.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the token holds spaces or control characters".into());
        }
        Ok(Some(Secret(value)))
    }
}

/// One problem found in a config: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, such as `collector.endpoint`.
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("config {origin}:{line}:{column}: {key}{message}")]
    Parse {
        /// The file, or `<embedded defaults>`.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// `key `x.y`: ` when known, else empty.
        key: String,
        /// The parser's message.
        message: String,
    },
    /// Values that parse but do not make sense; every problem found.
    #[error("config {origin}: {}", format_problems(.problems))]
    Invalid {
        /// The file, or `<embedded defaults>`.
        origin: String,
        /// Each problem, with its line when the key is written in the file.
        problems: Vec<(Option<usize>, ConfigProblem)>,
    },
}

fn format_problems(problems: &[(Option<usize>, ConfigProblem)]) -> String {
    let mut out = String::new();
    for (i, (line, p)) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        match line {
            Some(l) => out.push_str(&format!("line {l}: key `{}`: {}", p.key, p.message)),
            None => out.push_str(&format!("key `{}`: {}", p.key, p.message)),
        }
    }
    out
}

/// The text of a config and where it came from, kept to locate problems.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    origin: String,
    text: String,
}

impl ConfigSource {
    /// Reads a config file; `None` means no file: the embedded defaults.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Ok(Self::from_text("<embedded defaults>", "")),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Ok(Self::from_text(p.display().to_string(), text))
            }
        }
    }

    /// A config from text already in memory.
    pub fn from_text(origin: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            text: text.into(),
        }
    }

    /// Where the config came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Deserializes the raw config, naming line, column and key on error.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(&self.text, span.start);
                    (line, column, self.key_at(span.start))
                }
                None => (0, 0, None),
            };
            ConfigError::Parse {
                origin: self.origin.clone(),
                line,
                column,
                key: key.map(|k| format!("key `{k}`: ")).unwrap_or_default(),
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Turns validation problems into an error that gives each one's line.
    pub fn invalid(&self, problems: Vec<ConfigProblem>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            problems: problems
                .into_iter()
                .map(|p| (self.locate(&p.key), p))
                .collect(),
        }
    }

    /// The 1-based line where a dotted key such as `collector.endpoint` is set.
    pub fn locate(&self, dotted: &str) -> Option<usize> {
        let (table, leaf) = match dotted.rsplit_once('.') {
            Some((t, l)) => (t, l),
            None => ("", dotted),
        };
        let leaf = leaf.split('[').next().unwrap_or(leaf);
        let mut current = String::new();
        for (i, raw) in self.text.lines().enumerate() {
            let line = raw.trim();
            if let Some(header) = line.strip_prefix('[') {
                current = header
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                continue;
            }
            if let Some((k, _)) = line.split_once('=') {
                let k = k.trim();
                let full = if current.is_empty() {
                    k.to_string()
                } else {
                    format!("{current}.{k}")
                };
                let table_base = table.split('[').next().unwrap_or(table);
                if k == leaf && (current == table_base || full == dotted) {
                    return Some(i + 1);
                }
            }
        }
        None
    }

    /// The dotted key written on the line holding byte offset `at`.
    fn key_at(&self, at: usize) -> Option<String> {
        let before = self.text.get(..at)?;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = self.text[line_start..]
            .find('\n')
            .map(|i| line_start + i)
            .unwrap_or(self.text.len());
        let line = self.text[line_start..line_end].trim();
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let table = before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        Some(match table {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_string(),
        })
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

/// Parses a duration such as `5m`, `8000s`, `1h30m`, `10ms` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let mut total = 0i64;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A scalar read as text: Prometheus takes `expr: 1` as the string "1".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Text(pub String);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Longest secret file read.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// A URL as it may be logged: `user:password@` replaced by `***@`, and
/// nothing after the host (paths and queries often hold tokens).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hidden = if authority.contains('@') { "***@" } else { "" };
    let tail = if authority.len() < rest.len() {
        "/…"
    } else {
        ""
    };
    if scheme.is_empty() {
        format!("{hidden}{host}{tail}")
    } else {
        format!("{scheme}://{hidden}{host}{tail}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_logged_without_credentials_or_paths() {
        assert_eq!(
            super::redact_url("https://user:pass@hooks.example.net/services/T0/B0/secret?x=1"),
            "https://***@hooks.example.net/…"
        );
        assert_eq!(super::redact_url("http://am:9093"), "http://am:9093");
        assert_eq!(super::redact_url("http://am:9093/"), "http://am:9093/…");
    }

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        #[serde(default)]
        interval: Option<HumanDuration>,
        #[serde(default)]
        section: Section,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        #[serde(default)]
        size: Option<ByteSize>,
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let src =
            ConfigSource::from_text("a.toml", "interval = \"1s\"\n[section]\nsise = \"1MiB\"\n");
        let err = src
            .parse::<Raw>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("config a.toml:3:1: key `section.sise`: unknown field `sise`"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_say_how_to_write_them() {
        let src = ConfigSource::from_text("a.toml", "interval = \"ten seconds\"\n");
        let err = src
            .parse::<Raw>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("a.toml:1:") && err.contains("key `interval`") && err.contains("\"10s\""),
            "{err}"
        );
        let src = ConfigSource::from_text("a.toml", "[section]\nsize = \"3 parsecs\"\n");
        let err = src
            .parse::<Raw>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(":2:") && err.contains("section.size"), "{err}");
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("10 kB"), Ok(ByteSize(10_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("4 parsecs").is_err());
    }

    #[test]
    fn locate_finds_keys_in_tables() {
        let src = ConfigSource::from_text("a.toml", "x = 1\n[collector]\nendpoint = \"a\"\n");
        assert_eq!(src.locate("collector.endpoint"), Some(3));
        assert_eq!(src.locate("x"), Some(1));
        assert_eq!(src.locate("nope"), None);
    }

    #[test]
    fn secrets_come_from_one_source_and_never_print() {
        let s = SecretRef {
            token: Some("abc".into()),
            ..Default::default()
        };
        let secret = s.resolve().ok().flatten();
        assert_eq!(secret.as_ref().map(Secret::expose), Some("abc"));
        assert_eq!(format!("{secret:?}"), "Some(Secret(***))");
        let both = SecretRef {
            token: Some("a".into()),
            token_env: Some("X".into()),
            ..Default::default()
        };
        assert!(both.resolve().is_err());
    }
}
