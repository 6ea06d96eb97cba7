//! One StatsD / DogStatsD line, parsed without allocating: every part
//! borrows the datagram.
//!
//! ```text
//! name:value[:value…]|type[|@rate][|#tag:value,tag…][|c:container][|T1700000000]
//! ```
//!
//! Types: `c` counter, `g` gauge (`+3`/`-3` change it), `ms` timer, `h`
//! histogram, `d` distribution, `s` set. Several values in one line
//! (DogStatsD 1.1) are several samples. The container (`c:`) and timestamp
//! (`T…`) fields and any unknown field are skipped. Events (`_e{…}`) and
//! service checks (`_sc|…`) are refused as unsupported.
//!
//! Written by hand: the crates that parse StatsD allocate per line or take
//! only plain StatsD, and the agent's read path must do neither.

/// What a line measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `c`: a count to add.
    Counter,
    /// `g`: a value to set (or change, with a sign).
    Gauge,
    /// `ms`: a duration in milliseconds.
    Timer,
    /// `h`: a sample of a distribution.
    Histogram,
    /// `d`: DogStatsD's distribution, kept as a histogram.
    Distribution,
    /// `s`: a member of a set.
    Set,
}

impl Kind {
    /// One byte that tells kinds apart in a series key.
    pub fn tag(self) -> char {
        match self {
            Kind::Counter => 'c',
            Kind::Gauge => 'g',
            Kind::Timer => 't',
            Kind::Histogram | Kind::Distribution => 'h',
            Kind::Set => 's',
        }
    }
}

/// Why a line was refused; the `reason` label of
/// `vigil_agent_statsd_invalid_lines_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No `:` between the name and the value.
    NoValue,
    /// No `|` before the type.
    NoType,
    /// A type other than `c g ms h d s`.
    BadType,
    /// A value that is not a finite number.
    BadValue,
    /// A sample rate that is not in `(0, 1]`.
    BadRate,
    /// A name with nothing left once mapped.
    BadName,
    /// A counter that goes down.
    NegativeCounter,
    /// A tag naming `instance` or `job`, which the agent sets.
    ReservedTag,
    /// A tag whose name has nothing left once mapped.
    BadTag,
    /// A DogStatsD event or service check.
    Unsupported,
    /// A kind used before for the same name with another kind.
    TypeConflict,
    /// A name in the agent's own families (`node_`, `process_`, `vigil_`):
    /// a local process must not overwrite the host's metrics.
    ReservedName,
    /// A TCP line longer than 64 KiB (the largest datagram).
    TooLong,
}

impl Invalid {
    /// Every reason, in the order of [`Invalid::index`].
    pub const ALL: [Invalid; 13] = [
        Invalid::NoValue,
        Invalid::NoType,
        Invalid::BadType,
        Invalid::BadValue,
        Invalid::BadRate,
        Invalid::BadName,
        Invalid::NegativeCounter,
        Invalid::ReservedTag,
        Invalid::BadTag,
        Invalid::Unsupported,
        Invalid::TypeConflict,
        Invalid::ReservedName,
        Invalid::TooLong,
    ];

    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::NoValue => "no_value",
            Invalid::NoType => "no_type",
            Invalid::BadType => "bad_type",
            Invalid::BadValue => "bad_value",
            Invalid::BadRate => "bad_rate",
            Invalid::BadName => "bad_name",
            Invalid::NegativeCounter => "negative_counter",
            Invalid::ReservedTag => "reserved_tag",
            Invalid::BadTag => "bad_tag",
            Invalid::Unsupported => "unsupported",
            Invalid::TypeConflict => "type_conflict",
            Invalid::ReservedName => "reserved_name",
            Invalid::TooLong => "too_long",
        }
    }

    /// Position in [`Invalid::ALL`] (declaration order).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// The name as sent.
    pub name: &'a str,
    /// The values as sent (`:`-separated); for a set, its members.
    pub values: &'a str,
    /// The kind.
    pub kind: Kind,
    /// The sample rate, 1 when absent.
    pub rate: f64,
    /// The tags as sent (`k:v,k2`), empty when absent.
    pub tags: &'a str,
    /// The value when the line has one number (not a set), parsed.
    pub single: Option<f64>,
}

/// Splits `text` at the first `byte` (an ASCII byte, so both sides are
/// whole characters).
fn split_at_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    let i = text.bytes().position(|b| b == byte)?;
    Some((text.get(..i)?, text.get(i + 1..)?))
}

/// Parses one line (without its newline). Fields are found byte by byte
/// and the type matched as bytes: this runs millions of times a second.
pub fn line(text: &str) -> Result<Line<'_>, Invalid> {
    if text.as_bytes().first() == Some(&b'_')
        && (text.starts_with("_e{") || text.starts_with("_sc|"))
    {
        return Err(Invalid::Unsupported);
    }
    let (name, rest) = split_at_byte(text, b':').ok_or(Invalid::NoValue)?;
    let (values, rest) = split_at_byte(rest, b'|').ok_or(Invalid::NoType)?;
    if values.is_empty() {
        return Err(Invalid::BadValue);
    }
    let (kind, mut fields) = split_at_byte(rest, b'|').unwrap_or((rest, ""));
    let kind = match kind.as_bytes() {
        [b'c'] => Kind::Counter,
        [b'g'] => Kind::Gauge,
        [b'm', b's'] => Kind::Timer,
        [b'h'] => Kind::Histogram,
        [b'd'] => Kind::Distribution,
        [b's'] => Kind::Set,
        _ => return Err(Invalid::BadType),
    };
    let mut rate = 1.0;
    let mut tags = "";
    while !fields.is_empty() {
        let (field, rest) = split_at_byte(fields, b'|').unwrap_or((fields, ""));
        fields = rest;
        match field.as_bytes().first() {
            Some(b'@') => {
                rate = match field.get(1..).map(str::parse::<f64>) {
                    Some(Ok(r)) if r > 0.0 && r <= 1.0 => r,
                    _ => return Err(Invalid::BadRate),
                };
            }
            Some(b'#') => tags = field.get(1..).unwrap_or_default(),
            // `c:` (container), `T` (timestamp) and unknown fields: skipped.
            _ => {}
        }
    }
    let mut single = None;
    if kind != Kind::Set {
        if values.bytes().any(|b| b == b':') {
            for v in values.split(':') {
                number(v, kind)?;
            }
        } else {
            single = Some(number(values, kind)?);
        }
    }
    Ok(Line {
        name,
        values,
        kind,
        rate,
        tags,
        single,
    })
}

/// A value of a non-set line: finite, and a counter's not negative.
pub fn number(text: &str, kind: Kind) -> Result<f64, Invalid> {
    let v: f64 = text.parse().map_err(|_| Invalid::BadValue)?;
    if !v.is_finite() {
        return Err(Invalid::BadValue);
    }
    if kind == Kind::Counter && v < 0.0 {
        return Err(Invalid::NegativeCounter);
    }
    Ok(v)
}

/// Maps a StatsD name (or tag name) into a Prometheus one, appending to
/// `out`: letters, digits and `_` stay, every other character becomes `_`,
/// and a leading digit gets a `_` before it. Gives false when nothing is
/// left.
pub fn map_name(text: &str, out: &mut String) -> bool {
    let start = out.len();
    if out.is_empty() && text.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut rest = text;
    // Runs of valid bytes are copied whole; each other character is one `_`.
    while !rest.is_empty() {
        let run = rest.bytes().position(|b| !valid(b)).unwrap_or(rest.len());
        out.push_str(&rest[..run]);
        rest = &rest[run..];
        if let Some(c) = rest.chars().next() {
            out.push('_');
            rest = &rest[c.len_utf8()..];
        }
    }
    out.len() > start && out[start..].bytes().any(|b| b != b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_with_rates_and_tags() {
        assert_eq!(
            line("api.hits:3|c|@0.5|#route:/a,canary"),
            Ok(Line {
                name: "api.hits",
                values: "3",
                kind: Kind::Counter,
                rate: 0.5,
                tags: "route:/a,canary",
                single: Some(3.0),
            })
        );
        assert_eq!(line("temp:-2|g").map(|l| l.kind), Ok(Kind::Gauge));
        assert_eq!(line("db.query:12.5|ms").map(|l| l.kind), Ok(Kind::Timer));
        assert_eq!(line("size:1:2:3|h").map(|l| l.values), Ok("1:2:3"));
        assert_eq!(line("lat:7|d").map(|l| l.kind), Ok(Kind::Distribution));
        assert_eq!(line("users:alice|s").map(|l| l.values), Ok("alice"));
        // DogStatsD's container and timestamp fields are skipped.
        assert_eq!(
            line("x:1|c|#a:b|c:83e7f0|T1700000000").map(|l| (l.tags, l.rate)),
            Ok(("a:b", 1.0))
        );
    }

    #[test]
    fn malformed_lines_name_their_reason() {
        for (text, reason) in [
            ("novalue", Invalid::NoValue),
            ("x:1", Invalid::NoType),
            ("x:1|q", Invalid::BadType),
            ("x:|c", Invalid::BadValue),
            ("x:abc|c", Invalid::BadValue),
            ("x:NaN|g", Invalid::BadValue),
            ("x:inf|ms", Invalid::BadValue),
            ("x:1:zz|h", Invalid::BadValue),
            ("x:1|c|@0", Invalid::BadRate),
            ("x:1|c|@1.5", Invalid::BadRate),
            ("x:1|c|@x", Invalid::BadRate),
            ("x:-1|c", Invalid::NegativeCounter),
            ("_e{5,4}:title|text", Invalid::Unsupported),
            ("_sc|check|0", Invalid::Unsupported),
        ] {
            assert_eq!(line(text), Err(reason), "{text}");
        }
    }

    #[test]
    fn every_reason_has_its_own_index() {
        for (i, reason) in Invalid::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{}", reason.reason());
        }
    }

    #[test]
    fn names_map_to_prometheus_names() {
        for (text, mapped) in [
            ("api.hits", "api_hits"),
            ("a-b c/d", "a_b_c_d"),
            ("9lives", "_9lives"),
            ("ok_name", "ok_name"),
            ("é", "_"),
        ] {
            let mut out = String::new();
            map_name(text, &mut out);
            assert_eq!(out, mapped, "{text}");
        }
        let mut out = String::new();
        assert!(!map_name("...", &mut out));
        let mut out = String::from("app_");
        assert!(map_name("9x", &mut out));
        assert_eq!(out, "app_9x");
    }
}
