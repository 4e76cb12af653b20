//! The `expect` of a `[[drill.check]]`: `> 0`, `= 42`, `!= 0`, `<= 3.5`, or a literal string.
//!
//! A comparison operator followed by a number compares numerically (so `1.0` equals `1`); anything else is a
//! literal compared with the query's text result exactly (`t`, `ok`, a date). `= text` compares as text too.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    Compare(Operator, f64),
    Equals(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Operator {
    fn symbol(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
        }
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Operator::Eq => left == right,
            Operator::Ne => left != right,
            Operator::Gt => left > right,
            Operator::Ge => left >= right,
            Operator::Lt => left < right,
            Operator::Le => left <= right,
        }
    }
}

/// An `expect` that says nothing, or compares with something that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadExpectation {
    #[error("expect is empty; write e.g. \"> 0\", \"= 42\" or a literal such as \"t\"")]
    Empty,
    #[error("expect {text:?}: {symbol} needs a number after it (e.g. \"{symbol} 0\")")]
    NotANumber { text: String, symbol: &'static str },
}

impl Expectation {
    pub fn parse(text: &str) -> Result<Expectation, BadExpectation> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(BadExpectation::Empty);
        }
        // Longest symbols first, so ">=" is not read as ">" followed by "=5".
        let operators = [
            ("!=", Operator::Ne),
            (">=", Operator::Ge),
            ("<=", Operator::Le),
            ("=", Operator::Eq),
            (">", Operator::Gt),
            ("<", Operator::Lt),
        ];
        for (symbol, operator) in operators {
            if let Some(rest) = trimmed.strip_prefix(symbol) {
                let operand = rest.trim();
                return match operand.parse::<f64>() {
                    Ok(number) if number.is_finite() => Ok(Expectation::Compare(operator, number)),
                    _ if operator == Operator::Eq && !operand.is_empty() => Ok(Expectation::Equals(operand.into())),
                    _ => Err(BadExpectation::NotANumber { text: text.to_string(), symbol }),
                };
            }
        }
        Ok(Expectation::Equals(trimmed.to_string()))
    }

    /// Whether the query's answer (`None`: SQL NULL or no row) satisfies the expectation.
    pub fn accepts(&self, answer: Option<&str>) -> bool {
        let Some(answer) = answer else {
            return false;
        };
        match self {
            Expectation::Compare(operator, expected) => {
                answer.trim().parse::<f64>().is_ok_and(|value| operator.holds(value, *expected))
            }
            Expectation::Equals(expected) => answer == expected,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Compare(operator, number) => write!(f, "{} {number}", operator.symbol()),
            Expectation::Equals(text) => write!(f, "= {text:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_with_numbers_and_literals() {
        let e = |t: &str| Expectation::parse(t).unwrap();
        assert!(e("> 0").accepts(Some("3")));
        assert!(!e("> 0").accepts(Some("0")));
        assert!(e(">=2").accepts(Some("2")));
        assert!(e("= 1").accepts(Some("1.0")));
        assert!(e("!= 0").accepts(Some("7")));
        assert!(e("< 2.5").accepts(Some("2")));
        assert!(!e("<= 1").accepts(Some("1.5")));
        assert!(!e("> 0").accepts(Some("lots")), "a non-number never satisfies a comparison");
        assert!(!e("> 0").accepts(None), "NULL or no row fails");
        assert!(e("t").accepts(Some("t")));
        assert!(!e("t").accepts(Some("f")));
        assert!(e("= ok").accepts(Some("ok")));
        assert_eq!(e(">= 10").to_string(), ">= 10");
        assert_eq!(e("t").to_string(), "= \"t\"");
    }

    #[test]
    fn a_comparison_without_a_number_is_refused() {
        assert!(Expectation::parse("> many").unwrap_err().to_string().contains("needs a number"));
        assert!(Expectation::parse("<=").is_err());
        assert!(Expectation::parse("  ").is_err());
    }
}
