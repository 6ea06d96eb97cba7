//! Alertmanager's time intervals (`time_intervals`, used by a route's
//! `mute_time_intervals` and `active_time_intervals`): `times` (`HH:MM`
//! ranges), `weekdays`, `days_of_month` (negative counts from the month's
//! end), `months`, `years`, each a list of values or `a:b` ranges; an interval
//! holds when every field given holds. `location` may be `UTC` or `Local`
//! (the collector's time zone offset is not read: `Local` is UTC on servers
//! that run in UTC, as most do); other zones are refused when the file loads.

use vigil_template::civil_from_days;

/// One `time_intervals` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeInterval {
    /// Minute-of-day ranges, start inclusive, end exclusive.
    times: Vec<(u32, u32)>,
    /// Weekday ranges, 0 = Sunday.
    weekdays: Vec<(u32, u32)>,
    /// Day-of-month ranges; negative from the end (-1 is the last day).
    days_of_month: Vec<(i32, i32)>,
    /// Month ranges, 1 = January.
    months: Vec<(u32, u32)>,
    /// Year ranges.
    years: Vec<(i64, i64)>,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn split_range(text: &str) -> (&str, &str) {
    // A leading minus belongs to the number (days_of_month: "-3:-1").
    match text.get(1..).and_then(|rest| rest.find(':')) {
        Some(i) => (&text[..i + 1], &text[i + 2..]),
        None => (text, text),
    }
}

fn minutes(text: &str) -> Result<u32, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("time {text:?} is not HH:MM"))?;
    let h: u32 = h
        .parse()
        .map_err(|_| format!("time {text:?} is not HH:MM"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("time {text:?} is not HH:MM"))?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("time {text:?} is out of range"));
    }
    Ok(h * 60 + m)
}

fn named(text: &str, names: &[&str], first: u32, what: &str) -> Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + first);
    }
    let n: u32 = lower
        .parse()
        .map_err(|_| format!("{what} {text:?} is not a {what} name or number"))?;
    if n < first || n >= first + names.len() as u32 {
        return Err(format!("{what} {text:?} is out of range"));
    }
    Ok(n)
}

impl TimeInterval {
    /// Builds an interval from the fields as written.
    pub fn parse(
        times: &[(String, String)],
        weekdays: &[String],
        days_of_month: &[String],
        months: &[String],
        years: &[String],
        location: Option<&str>,
    ) -> Result<Self, String> {
        match location {
            None | Some("UTC") | Some("Local") => {}
            Some(other) => {
                return Err(format!(
                    "location {other:?} is not supported: use UTC (or Local on a collector running in UTC) and write times in UTC"
                ));
            }
        }
        let mut out = TimeInterval::default();
        for (start, end) in times {
            let (s, e) = (minutes(start)?, minutes(end)?);
            if s >= e {
                return Err(format!("start time {start} must be before end time {end}"));
            }
            out.times.push((s, e));
        }
        for w in weekdays {
            let (a, b) = split_range(w);
            let (a, b) = (
                named(a, &WEEKDAYS, 0, "weekday")?,
                named(b, &WEEKDAYS, 0, "weekday")?,
            );
            if a > b {
                return Err(format!("weekday range {w:?} is backwards"));
            }
            out.weekdays.push((a, b));
        }
        for d in days_of_month {
            let (a, b) = split_range(d);
            let parse = |t: &str| -> Result<i32, String> {
                let n: i32 = t
                    .trim()
                    .parse()
                    .map_err(|_| format!("day of month {t:?} is not a number"))?;
                if n == 0 || !(-31..=31).contains(&n) {
                    return Err(format!("day of month {n} is out of range"));
                }
                Ok(n)
            };
            out.days_of_month.push((parse(a)?, parse(b)?));
        }
        for m in months {
            let (a, b) = split_range(m);
            let (a, b) = (
                named(a, &MONTHS, 1, "month")?,
                named(b, &MONTHS, 1, "month")?,
            );
            if a > b {
                return Err(format!("month range {m:?} is backwards"));
            }
            out.months.push((a, b));
        }
        for y in years {
            let (a, b) = split_range(y);
            let parse = |t: &str| -> Result<i64, String> {
                t.trim()
                    .parse()
                    .map_err(|_| format!("year {t:?} is not a number"))
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("year range {y:?} is backwards"));
            }
            out.years.push((a, b));
        }
        Ok(out)
    }

    /// True when `ms` (Unix milliseconds, UTC) is inside the interval.
    pub fn contains(&self, ms: i64) -> bool {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let minute = (secs.rem_euclid(86_400) / 60) as u32;
        let (year, month, day) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let in_times =
            self.times.is_empty() || self.times.iter().any(|(s, e)| minute >= *s && minute < *e);
        let in_weekdays = self.weekdays.is_empty()
            || self
                .weekdays
                .iter()
                .any(|(a, b)| weekday >= *a && weekday <= *b);
        let in_months =
            self.months.is_empty() || self.months.iter().any(|(a, b)| month >= *a && month <= *b);
        let in_years =
            self.years.is_empty() || self.years.iter().any(|(a, b)| year >= *a && year <= *b);
        let in_days = self.days_of_month.is_empty() || {
            let days_in_month = days_in_month(year, month) as i32;
            let resolve = |d: i32| if d < 0 { days_in_month + d + 1 } else { d };
            self.days_of_month
                .iter()
                .any(|(a, b)| (day as i32) >= resolve(*a) && (day as i32) <= resolve(*b))
        };
        in_times && in_weekdays && in_months && in_years && in_days
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn business_hours_and_month_ends() -> Result<(), String> {
        let business = TimeInterval::parse(
            &[("09:00".into(), "17:00".into())],
            &s(&["monday:friday"]),
            &[],
            &[],
            &[],
            Some("UTC"),
        )?;
        // 2026-11-27 is a Friday.
        let friday_10 = 1_795_773_600_000; // 2026-11-27 10:00 UTC
        assert!(business.contains(friday_10));
        assert!(!business.contains(friday_10 + 8 * 3_600_000)); // 18:00
        assert!(!business.contains(friday_10 + 24 * 3_600_000)); // Saturday
        let last_days = TimeInterval::parse(
            &[],
            &[],
            &s(&["-2:-1"]),
            &s(&["november"]),
            &s(&["2026"]),
            None,
        )?;
        assert!(last_days.contains(1_796_032_800_000)); // 2026-11-30 10:00
        assert!(!last_days.contains(friday_10)); // 27th
        assert!(TimeInterval::parse(&[], &[], &[], &[], &[], Some("Europe/Paris")).is_err());
        assert!(
            TimeInterval::parse(
                &[("17:00".into(), "09:00".into())],
                &[],
                &[],
                &[],
                &[],
                None
            )
            .is_err()
        );
        Ok(())
    }
}
