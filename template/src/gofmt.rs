//! Go's number formatting, as Prometheus's templates print values: `%v` of a
//! float64 (shortest digits, in exponent form from 1e+06 and below 1e-04),
//! `%g` with a precision (`%.4g`, what `humanize` uses), `%e` and `%f`.
//! Annotations must read exactly as Prometheus writes them, or tests written
//! for `promtool` would fail here.

/// Decimal digits of `v` (no leading or trailing zeros) and the position of
/// the decimal point: `v = 0.d1d2… × 10^dp`. `prec` significant digits when
/// given (rounded half to even on the exact value, as Go), else the shortest
/// digits that read back as `v`.
fn digits(v: f64, prec: Option<usize>) -> (Vec<u8>, i32) {
    let v = v.abs();
    if v == 0.0 {
        return (Vec::new(), 0);
    }
    let text = match prec {
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
        None => format!("{v:e}"),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut d: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while d.last() == Some(&b'0') {
        d.pop();
    }
    (d, exp + 1)
}

/// Go prints `NaN`, `+Inf` and `-Inf` whatever the verb.
fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        None
    }
}

fn sign(v: f64, plus: bool) -> &'static str {
    if v.is_sign_negative() {
        "-"
    } else if plus {
        "+"
    } else {
        ""
    }
}

/// `%e` body: `d.ddde±XX` with `prec` digits after the point.
fn fmt_e(d: &[u8], dp: i32, prec: usize) -> String {
    let mut out = String::new();
    out.push(*d.first().unwrap_or(&b'0') as char);
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(*d.get(i).unwrap_or(&b'0') as char);
        }
    }
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    out.push_str(&exp.to_string());
    out
}

/// `%f` body with `prec` digits after the point.
fn fmt_f(d: &[u8], dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(*d.get(i).unwrap_or(&b'0') as char);
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec as i32 {
            let at = dp + i;
            let c = if at < 0 {
                b'0'
            } else {
                *d.get(at as usize).unwrap_or(&b'0')
            };
            out.push(c as char);
        }
    }
    out
}

/// Go's `%g` (`prec` None: shortest, as `%v` prints a float64).
pub fn format_g(v: f64, prec: Option<usize>) -> String {
    format_g_flags(v, prec, false)
}

fn format_g_flags(v: f64, prec: Option<usize>, plus: bool) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let prec = prec.map(|p| p.max(1));
    let (d, dp) = digits(v, prec);
    let nd = d.len() as i32;
    let shortest = prec.is_none();
    let mut p = prec.map_or(nd, |p| p as i32);
    let mut eprec = p;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    let body = if d.is_empty() {
        "0".to_string()
    } else if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        fmt_e(&d, dp, (p - 1).max(0) as usize)
    } else {
        if p > dp {
            p = nd;
        }
        fmt_f(&d, dp, (p - dp).max(0) as usize)
    };
    format!("{}{body}", sign(v, plus))
}

/// Go's `%e` with a precision (default 6).
pub fn format_e(v: f64, prec: usize, plus: bool) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let (d, dp) = digits(v, Some(prec + 1));
    format!("{}{}", sign(v, plus), fmt_e(&d, dp, prec))
}

/// Go's `%f` with a precision (default 6).
pub fn format_f(v: f64, prec: usize, plus: bool) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    let text = format!("{:.*}", prec, v.abs());
    format!("{}{text}", sign(v, plus))
}

/// Go's `strconv.Quote` for the strings labels hold.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prometheus's label-set text (`labels.Labels.String()`,
/// `model.LabelSet.String()`): `{a="b", c="d"}` in the order given.
pub fn labels_string<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let parts: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A Unix time in milliseconds as UTC calendar parts:
/// `(year, month, day, hour, minute, second, millisecond)`.
pub fn utc_parts(ms: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = crate::civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms.rem_euclid(1000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_matches_go() {
        // Each pair is what Go's fmt.Sprint(float64) prints.
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (100.0, "100"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e100, "1e+100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (33.333333333333336, "33.333333333333336"),
        ] {
            assert_eq!(format_g(v, None), want, "{v}");
        }
    }

    #[test]
    fn precision_g_matches_go() {
        // fmt.Sprintf("%.4g", v) in Go.
        for (v, want) in [
            (0.0, "0"),
            (100.0, "100"),
            (1000.0, "1000"),
            (2.5, "2.5"),
            (12345.0, "1.234e+04"),
            (12355.0, "1.236e+04"),
            (0.001234, "0.001234"),
            (0.00001234, "1.234e-05"),
            (999.99, "1000"),
            (1.0 / 3.0, "0.3333"),
            (42.0, "42"),
        ] {
            assert_eq!(format_g(v, Some(4)), want, "{v}");
        }
    }

    #[test]
    fn e_and_f_match_go() {
        assert_eq!(format_e(1234.5678, 6, false), "1.234568e+03");
        assert_eq!(format_e(0.0, 2, false), "0.00e+00");
        assert_eq!(format_f(1.005, 2, false), "1.00");
        assert_eq!(format_f(2.5, 0, false), "2");
        assert_eq!(format_f(-1.5, 1, true), "-1.5");
        assert_eq!(format_f(1.5, 1, true), "+1.5");
    }
}
