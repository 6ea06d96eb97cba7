//! Limits on an expression's size and nesting, checked on its text before
//! it is parsed. Parsing and evaluation recurse over the expression tree,
//! and drops of that tree recurse too; an unauthenticated query such as
//! `1+1+…` with thousands of terms, or thousands of nested parentheses,
//! would otherwise overflow a thread's stack and abort the collector. The
//! check is linear in the text and allocates nothing.
//!
//! The nesting estimate is an upper bound on the depth of the parsed tree:
//! the deepest bracket nesting plus the number of binary operators (a chain
//! `a + b + c` nests one level per operator).

use thiserror::Error;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 64 * 1024;

/// Deepest nesting accepted (brackets plus binary operators).
pub const MAX_EXPRESSION_DEPTH: usize = 256;

/// Why an expression is refused before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    /// The text is too long.
    #[error("expression is {0} bytes, more than the limit of {MAX_EXPRESSION_BYTES}")]
    TooLong(usize),
    /// The text nests too deeply.
    #[error(
        "expression nests {0} levels deep (brackets plus binary operators), more than the limit of {MAX_EXPRESSION_DEPTH}"
    )]
    TooDeep(usize),
    /// A number used as a duration (in a range, a subquery or after
    /// `offset`) is not finite or longer than [`MAX_DURATION_SECONDS`].
    #[error(
        "duration {0} is out of range: a number of seconds in a range, subquery or offset must be finite and at most {MAX_DURATION_SECONDS:e}"
    )]
    BadDuration(String),
}

/// Longest duration written as a number of seconds (`x[300]`, `offset
/// 1e6`): about 300,000 years. The parser turns such numbers into a
/// `Duration` and would abort the process on a larger, negative-infinite
/// or NaN one.
pub const MAX_DURATION_SECONDS: f64 = 1e13;

/// Checks `query` against [`MAX_EXPRESSION_BYTES`] and
/// [`MAX_EXPRESSION_DEPTH`].
pub fn check(query: &str) -> Result<(), ShapeError> {
    if query.len() > MAX_EXPRESSION_BYTES {
        return Err(ShapeError::TooLong(query.len()));
    }
    let depth = nesting(query);
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(ShapeError::TooDeep(depth));
    }
    numeric_durations(query)
}

/// Checks every number written where the parser reads a duration: inside
/// `[…]` and after `offset`.
fn numeric_durations(query: &str) -> Result<(), ShapeError> {
    let bytes = query.as_bytes();
    let mut brackets = 0usize;
    let mut after_offset = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                after_offset = false;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'[' => brackets += 1,
            b']' => brackets = brackets.saturating_sub(1),
            b' ' | b'\t' | b'\n' | b'\r' | b'+' | b'-' => {}
            _ if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' => {
                let start = i;
                while i + 1 < bytes.len() {
                    let n = bytes[i + 1];
                    let sign_of_exponent = (n == b'+' || n == b'-')
                        && matches!(bytes[i], b'e' | b'E')
                        && bytes[start].is_ascii_digit()
                        && !bytes[start..=i].starts_with(b"0x");
                    if n.is_ascii_alphanumeric() || n == b'.' || n == b'_' || sign_of_exponent {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let token = &query[start..=i];
                let numeric = c.is_ascii_digit() || c == b'.';
                let special =
                    token.eq_ignore_ascii_case("inf") || token.eq_ignore_ascii_case("nan");
                if (brackets > 0 || after_offset) && (numeric || (after_offset && special)) {
                    let value = match token
                        .strip_prefix("0x")
                        .or_else(|| token.strip_prefix("0X"))
                    {
                        Some(hex) => i64::from_str_radix(hex, 16).map(|v| v as f64).ok(),
                        None if special => Some(f64::NAN),
                        // `5m`, `1h30m`: Prometheus durations, checked by the parser.
                        None => token.parse::<f64>().ok().or(Some(0.0)),
                    };
                    if value.is_some_and(|v| !v.is_finite() || v.abs() > MAX_DURATION_SECONDS) {
                        return Err(ShapeError::BadDuration(token.to_string()));
                    }
                }
                after_offset = token.eq_ignore_ascii_case("offset");
            }
            _ => after_offset = false,
        }
        i += 1;
    }
    Ok(())
}

/// An upper bound on the depth of `query`'s tree: the deepest bracket
/// nesting plus the number of binary operators outside label matchers.
pub fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    // Inside `{…}`, `=`, `!=`, `=~` are matchers, not operators.
    let mut braces = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if bytes[i] == b'{' {
                    braces += 1;
                }
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => {
                if bytes[i] == b'}' {
                    braces = braces.saturating_sub(1);
                }
                depth = depth.saturating_sub(1);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' if braces == 0 => {
                operators += 1;
            }
            // `==` and `!=` count once; `<=` and `>=` were counted at `<`/`>`.
            b'=' | b'!' if braces == 0 && bytes.get(i + 1) == Some(&b'=') => {
                operators += 1;
                i += 1;
            }
            c if c.is_ascii_alphabetic() && braces == 0 => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &query[start..i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    deepest.saturating_add(operators)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_and_operators_not_strings_or_matchers() {
        assert_eq!(nesting("up"), 0);
        assert_eq!(nesting("sum(rate(x[5m]))"), 3);
        assert_eq!(nesting("a + b * c"), 2);
        assert_eq!(nesting("a and b or c unless d"), 3);
        assert_eq!(nesting("x{a=\"(((+\",b!=\"1\",c=~\"a|b\"}"), 1);
        assert_eq!(nesting("x >= 1 == bool 2"), 2);
        assert_eq!(nesting("# ((((\nup"), 0);
    }

    #[test]
    fn long_chains_and_deep_parentheses_are_refused() {
        let chain = vec!["1"; 5000].join("+");
        assert_eq!(check(&chain), Err(ShapeError::TooDeep(4999)));
        let parens = format!("{}1{}", "(".repeat(1500), ")".repeat(1500));
        assert_eq!(check(&parens), Err(ShapeError::TooDeep(1500)));
        let big = format!("up{{a=\"{}\"}}", "x".repeat(70_000));
        assert!(matches!(check(&big), Err(ShapeError::TooLong(_))));
        let fine = vec!["1"; 200].join("+");
        assert!(check(&fine).is_ok());
    }

    /// Found by the `promql` fuzz target: the parser turns a number of
    /// seconds into a `Duration` and aborts the process on a huge one.
    #[test]
    fn huge_numeric_durations_are_refused_before_the_parser_sees_them() {
        for bad in [
            "x[15e73777]",
            "x[1e300]",
            "x[5m:1e300]",
            "x[1e300:1m]",
            "x offset 1e300",
            "x offset -1e300",
            "x OFFSET 1e+300",
            "x offset Inf",
            "rate(x[5m] offset 1.5e300)",
        ] {
            assert!(
                matches!(check(bad), Err(ShapeError::BadDuration(_))),
                "{bad}: {:?}",
                check(bad)
            );
            assert!(crate::parse(bad).is_err());
        }
        for good in [
            "x[5m]",
            "x[300]",
            "x[1e6]",
            "x[1h:30s]",
            "x offset 1e6",
            "x offset -5m",
            "rate(x[5m] offset 1h)",
            "x > 1e300",
            "x @ 1e12",
            "x{le=\"1e300\"}[5m]",
            "x offset 5m - 1e300",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
            assert!(crate::parse(good).is_ok(), "{good}");
        }
    }
}
