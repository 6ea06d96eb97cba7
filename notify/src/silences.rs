//! Silences, shaped like Alertmanager's API v2: matchers (`name`, `value`,
//! `isRegex`, `isEqual`), `startsAt`, `endsAt`, `createdBy`, `comment`; an
//! alert that every matcher of an active silence accepts is not notified.
//! Kept in `DATA_DIR/notify/silences.json`, so they survive restarts.
//! Expired silences are kept a day, then forgotten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{LabelMatcher, MatchOp};
use super::payload::go_time;

/// A matcher as the API writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    /// Label name.
    pub name: String,
    /// Value or pattern.
    pub value: String,
    /// A regular expression.
    pub is_regex: bool,
    /// `=` / `=~` when true (default), `!=` / `!~` when false.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Id.
    pub id: String,
    /// Matchers.
    pub matchers: Vec<ApiMatcher>,
    /// Start (ms).
    pub starts_at: i64,
    /// End (ms).
    pub ends_at: i64,
    /// Who.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Last change (ms).
    pub updated_at: i64,
}

/// A silence as posted.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostableSilence {
    /// Present to update an existing silence.
    #[serde(default)]
    pub id: Option<String>,
    /// Matchers.
    pub matchers: Vec<ApiMatcher>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Who.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// Parses RFC 3339 (`2026-11-27T10:00:00Z`, `…00.5Z`, `…00+02:00`) to ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time");
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
        d.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?,
    );
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        let oh: i64 = oh.parse().map_err(|_| bad())?;
        let om: i64 = om.parse().map_err(|_| bad())?;
        (c, sign * (oh * 3600 + om * 60) * 1000)
    };
    let mut c = clock.split(':');
    let h: i64 = c.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let mi: i64 = c.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let sec: f64 = c.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec >= 61.0 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(
        ((days * 86_400 + h * 3600 + mi * 60) as f64 * 1000.0 + sec * 1000.0).round() as i64
            - offset_ms,
    )
}

impl Silence {
    /// `active`, `pending` or `expired` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }

    fn matchers(&self) -> Vec<LabelMatcher> {
        self.matchers
            .iter()
            .filter_map(|m| {
                let op = match (m.is_regex, m.is_equal) {
                    (false, true) => MatchOp::Equal,
                    (false, false) => MatchOp::NotEqual,
                    (true, true) => MatchOp::Regex,
                    (true, false) => MatchOp::NotRegex,
                };
                LabelMatcher::new(&m.name, op, &m.value).ok()
            })
            .collect()
    }

    /// True when active at `now` and every matcher accepts `labels`.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.state(now) == "active" && self.matchers().iter().all(|m| m.matches(labels))
    }

    /// The API's view.
    pub fn to_json(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "status": { "state": self.state(now) },
            "updatedAt": go_time(Some(self.updated_at)),
            "matchers": self.matchers,
            "startsAt": go_time(Some(self.starts_at)),
            "endsAt": go_time(Some(self.ends_at)),
            "createdBy": self.created_by,
            "comment": self.comment,
        })
    }
}

/// Every silence, persisted.
#[derive(Debug)]
pub struct Silences {
    path: PathBuf,
    list: BTreeMap<String, Silence>,
}

impl Silences {
    /// Loads `dir/silences.json` (none yet: empty).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join("silences.json");
        let list = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self { path, list })
    }

    fn save(&self) -> Result<(), String> {
        use std::io::Write;
        let fail = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&serde_json::to_vec(&self.list).map_err(|e| e.to_string())?)
            .map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }

    /// Creates or updates a silence; its id.
    pub fn put(&mut self, p: PostableSilence, now: i64) -> Result<String, String> {
        if p.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        for m in &p.matchers {
            if !vigil_shared::labels::is_valid_label_name(&m.name) {
                return Err(format!("invalid label name {:?}", m.name));
            }
            if m.is_regex {
                regex::Regex::new(&m.value).map_err(|e| format!("matcher {}: {e}", m.name))?;
            }
        }
        let starts_at = parse_time(&p.starts_at)?;
        let ends_at = parse_time(&p.ends_at)?;
        if ends_at <= starts_at {
            return Err("endsAt must be after startsAt".into());
        }
        if ends_at <= now {
            return Err("endsAt is in the past".into());
        }
        let id = match p.id {
            Some(id) if self.list.contains_key(&id) => id,
            Some(id) => return Err(format!("silence {id} not found")),
            None => format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                fastrand::u32(..),
                fastrand::u16(..),
                fastrand::u16(..),
                fastrand::u16(..),
                fastrand::u64(..) & 0xffff_ffff_ffff
            ),
        };
        self.list.insert(
            id.clone(),
            Silence {
                id: id.clone(),
                matchers: p.matchers,
                starts_at,
                ends_at,
                created_by: p.created_by,
                comment: p.comment,
                updated_at: now,
            },
        );
        self.save()?;
        Ok(id)
    }

    /// Expires a silence now.
    pub fn expire(&mut self, id: &str, now: i64) -> Result<(), String> {
        let s = self
            .list
            .get_mut(id)
            .ok_or_else(|| format!("silence {id} not found"))?;
        if s.state(now) == "expired" {
            return Err(format!("silence {id} is already expired"));
        }
        s.ends_at = now.max(s.starts_at);
        s.updated_at = now;
        self.save()
    }

    /// Every silence, recently expired ones included.
    pub fn list(&mut self, now: i64) -> Vec<Silence> {
        let before = self.list.len();
        self.list.retain(|_, s| s.ends_at + 86_400_000 > now);
        if self.list.len() != before {
            let _ = self.save();
        }
        self.list.values().cloned().collect()
    }

    /// True when an active silence mutes these labels.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        self.list.values().any(|s| s.mutes(labels, now))
    }

    /// The ids of the active silences that mute these labels.
    pub fn muting(&self, labels: &BTreeMap<String, String>, now: i64) -> Vec<String> {
        self.list
            .values()
            .filter(|s| s.mutes(labels, now))
            .map(|s| s.id.clone())
            .collect()
    }

    /// One silence by id, while it is listed.
    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.list.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("2026-11-27T10:00:00.5Z"), Ok(1_795_773_600_500));
        assert_eq!(
            parse_time("2026-11-27T12:00:00+02:00"),
            Ok(1_795_773_600_000)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn silences_mute_persist_and_expire() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut s = Silences::open(dir.path())?;
        let id = s.put(
            PostableSilence {
                id: None,
                matchers: vec![ApiMatcher {
                    name: "instance".into(),
                    value: "web-.*".into(),
                    is_regex: true,
                    is_equal: true,
                }],
                starts_at: "1970-01-01T00:00:00Z".into(),
                ends_at: "1970-01-01T01:00:00Z".into(),
                created_by: "ops".into(),
                comment: "deploy".into(),
            },
            1_000,
        )?;
        let web: BTreeMap<String, String> = [("instance".to_string(), "web-1".to_string())].into();
        let db: BTreeMap<String, String> = [("instance".to_string(), "db-1".to_string())].into();
        assert!(s.mutes(&web, 2_000));
        assert!(!s.mutes(&db, 2_000));
        let mut back = Silences::open(dir.path())?;
        assert!(back.mutes(&web, 2_000), "persisted");
        back.expire(&id, 3_000)?;
        assert!(!back.mutes(&web, 4_000));
        assert_eq!(back.list(4_000)[0].state(4_000), "expired");
        assert!(
            Silences::open(dir.path())?.list(90_000_000).is_empty(),
            "forgotten after a day"
        );
        Ok(())
    }
}
