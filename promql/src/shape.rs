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
}

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
}
