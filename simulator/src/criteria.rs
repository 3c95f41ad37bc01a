//! The simulator's own parser and evaluator for the `criteria` parameter of
//! `GET /crm/{version}/{module}/search`.
//!
//! This is "Zoho's" reading of a criteria expression. It shares no code with the gateway's
//! canonicaliser (`canonical::criteria`), so property tests can use it as an oracle: whenever
//! the gateway gives two criteria one cache key, this evaluator must select the same records.
//!
//! # Grammar (Zoho's search-records docs, v2–v8)
//!
//! ```text
//! expr      = term *( ("and" | "or") term )
//! term      = "(" expr ")" | "(" field ":" operator ":" value ")"
//! ```
//!
//! `value` runs to the first unescaped `)`; it may contain `:` (date-times). A backslash makes
//! the next character literal (Zoho documents `\(`, `\)`, `\,`). `in`/`not_in` take a
//! comma-separated list, `between` two values, the others one value (an unescaped comma is part
//! of it).
//!
//! # Matching (choices for what Zoho does not document are marked)
//!
//! - `equals`, `not_equal`, `starts_with`, `in`, `not_in` compare text ASCII-case-insensitively
//!   (**choice**: Zoho's search ignores case in practice).
//! - Zoho documents that `equals` in a search with **more than one** condition also matches
//!   values that continue after a word (`Company:equals:ABC` finds "ABC Inc"); with a single
//!   condition it is exact. Implemented as: several conditions → equal, or the value followed
//!   by a space starts the field.
//! - `greater_than`, `greater_equal`, `less_than`, `less_equal`, `between` (inclusive) compare
//!   numerically when both sides parse as numbers, otherwise as strings (ISO-8601 dates order
//!   correctly as strings).
//! - A field that is missing or `null` matches nothing, not even `not_equal` (Zoho: "if a
//!   column contains null values, searchRecords does not report them"). A lookup
//!   (`{"name":..,"id":..}`) compares by `name`; numbers and booleans by their JSON text.
//! - **Choices**: `and` binds tighter than `or` when both appear in one level; spaces around
//!   tokens and around field names are ignored; operator names and `and`/`or` are
//!   case-insensitive. An unknown operator, a malformed expression, an unescaped `(` in a value,
//!   more than 15 conditions or more than 100 `in` values are errors (400 `INVALID_QUERY`, the
//!   limit `CRITERIA_LIMIT_EXCEEDED`, per Zoho's v8 OpenAPI spec).

use serde_json::{Map, Value};

/// Zoho's limit on conditions in one criteria (v8 OpenAPI spec).
pub const MAX_CONDITIONS: usize = 15;
/// Zoho's limit on values in one `in` condition (v8 OpenAPI spec).
pub const MAX_IN_VALUES: usize = 100;
/// The simulator's own nesting bound (keeps the recursive parser on the stack).
const MAX_DEPTH: usize = 64;

/// A comparison operator of the search API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `equals`.
    Equals,
    /// `not_equal`.
    NotEqual,
    /// `starts_with`.
    StartsWith,
    /// `in`.
    In,
    /// `not_in`.
    NotIn,
    /// `greater_than`.
    GreaterThan,
    /// `greater_equal`.
    GreaterEqual,
    /// `less_than`.
    LessThan,
    /// `less_equal`.
    LessEqual,
    /// `between` (inclusive).
    Between,
}

impl Comparator {
    fn from_name(name: &str) -> Option<Comparator> {
        Some(match name.to_ascii_lowercase().as_str() {
            "equals" => Comparator::Equals,
            "not_equal" => Comparator::NotEqual,
            "starts_with" => Comparator::StartsWith,
            "in" => Comparator::In,
            "not_in" => Comparator::NotIn,
            "greater_than" => Comparator::GreaterThan,
            "greater_equal" => Comparator::GreaterEqual,
            "less_than" => Comparator::LessThan,
            "less_equal" => Comparator::LessEqual,
            "between" => Comparator::Between,
            _ => return None,
        })
    }
}

/// A parsed criteria expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `(field:operator:value)`.
    Condition {
        /// Field API name, trimmed.
        field: String,
        /// The operator.
        op: Comparator,
        /// The values, unescaped (one, two for `between`, a list for `in`/`not_in`).
        values: Vec<String>,
    },
    /// All members match.
    And(Vec<Expr>),
    /// Any member matches.
    Or(Vec<Expr>),
}

/// Why a criteria expression is rejected (400 at the HTTP level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriteriaError {
    /// Not well formed: 400 `INVALID_QUERY` "Invalid query formed".
    #[error("invalid query formed")]
    Malformed,
    /// Operator not in the search API's list: 400 `INVALID_QUERY`.
    #[error("invalid operator")]
    UnknownOperator {
        /// The field the operator was used with.
        api_name: String,
    },
    /// A field the module does not have: 400 `INVALID_QUERY`.
    #[error("invalid field")]
    UnknownField {
        /// The field as written.
        api_name: String,
    },
    /// More than [`MAX_CONDITIONS`]: 400 `CRITERIA_LIMIT_EXCEEDED`.
    #[error("no of criterium that can be given exceed the limit {MAX_CONDITIONS}")]
    TooManyConditions,
    /// More than [`MAX_IN_VALUES`] values in an `in`: 400 `INVALID_QUERY`.
    #[error("Only {MAX_IN_VALUES} values are allowed in \"IN\" criteria")]
    TooManyValues {
        /// The field of the `in`.
        api_name: String,
    },
}

impl CriteriaError {
    /// Zoho's error `code` for this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            CriteriaError::TooManyConditions => "CRITERIA_LIMIT_EXCEEDED",
            CriteriaError::Malformed
            | CriteriaError::UnknownOperator { .. }
            | CriteriaError::UnknownField { .. }
            | CriteriaError::TooManyValues { .. } => "INVALID_QUERY",
        }
    }
}

/// A parsed criteria, ready to match records.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    expr: Expr,
    conditions: usize,
}

impl Criteria {
    /// Parses a decoded `criteria` value.
    ///
    /// # Errors
    /// [`CriteriaError`] as described in the module doc.
    pub fn parse(text: &str) -> Result<Criteria, CriteriaError> {
        let chars: Vec<char> = text.chars().collect();
        let mut r = Reader {
            chars: &chars,
            at: 0,
            depth: 0,
            conditions: 0,
        };
        let expr = r.expr()?;
        r.skip_spaces();
        if r.at != chars.len() {
            return Err(CriteriaError::Malformed);
        }
        if r.conditions > MAX_CONDITIONS {
            return Err(CriteriaError::TooManyConditions);
        }
        Ok(Criteria {
            expr,
            conditions: r.conditions,
        })
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Checks every field against `known` (the module's field API names, compared exactly).
    ///
    /// # Errors
    /// [`CriteriaError::UnknownField`] for the first unknown field.
    pub fn check_fields(&self, known: &dyn Fn(&str) -> bool) -> Result<(), CriteriaError> {
        fn walk(e: &Expr, known: &dyn Fn(&str) -> bool) -> Result<(), CriteriaError> {
            match e {
                Expr::Condition { field, .. } if !known(field) => {
                    Err(CriteriaError::UnknownField {
                        api_name: field.clone(),
                    })
                }
                Expr::Condition { .. } => Ok(()),
                Expr::And(ms) | Expr::Or(ms) => ms.iter().try_for_each(|m| walk(m, known)),
            }
        }
        walk(&self.expr, known)
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        eval(&self.expr, record, self.conditions > 1)
    }
}

fn eval(e: &Expr, record: &Map<String, Value>, several: bool) -> bool {
    match e {
        Expr::And(ms) => ms.iter().all(|m| eval(m, record, several)),
        Expr::Or(ms) => ms.iter().any(|m| eval(m, record, several)),
        Expr::Condition { field, op, values } => {
            let Some(actual) = record.get(field.as_str()).and_then(field_text) else {
                return false;
            };
            let first = values.first().map(String::as_str).unwrap_or("");
            let same = |v: &str| actual.eq_ignore_ascii_case(v);
            match op {
                Comparator::Equals => {
                    same(first)
                        || (several && {
                            let prefix = format!("{} ", first.to_ascii_lowercase());
                            actual.to_ascii_lowercase().starts_with(&prefix)
                        })
                }
                Comparator::NotEqual => !same(first),
                Comparator::StartsWith => actual
                    .to_ascii_lowercase()
                    .starts_with(&first.to_ascii_lowercase()),
                Comparator::In => values.iter().any(|v| same(v)),
                Comparator::NotIn => !values.iter().any(|v| same(v)),
                Comparator::GreaterThan => order(&actual, first).is_gt(),
                Comparator::GreaterEqual => order(&actual, first).is_ge(),
                Comparator::LessThan => order(&actual, first).is_lt(),
                Comparator::LessEqual => order(&actual, first).is_le(),
                Comparator::Between => {
                    let hi = values.get(1).map(String::as_str).unwrap_or("");
                    order(&actual, first).is_ge() && order(&actual, hi).is_le()
                }
            }
        }
    }
}

/// A record field as text: strings as they are, lookups by `name`, numbers and booleans as
/// JSON text; `None` for null, missing, arrays and other objects.
fn field_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
        Value::Null | Value::Array(_) => None,
    }
}

fn order(actual: &str, bound: &str) -> std::cmp::Ordering {
    match (actual.trim().parse::<f64>(), bound.trim().parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
        _ => actual.cmp(bound),
    }
}

struct Reader<'a> {
    chars: &'a [char],
    at: usize,
    depth: usize,
    conditions: usize,
}

impl Reader<'_> {
    fn skip_spaces(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    /// `term (join term)*`, `and` before `or`.
    fn expr(&mut self) -> Result<Expr, CriteriaError> {
        let mut ors: Vec<Expr> = Vec::new();
        let mut ands: Vec<Expr> = vec![self.term()?];
        loop {
            self.skip_spaces();
            let rest: String = self.chars[self.at..]
                .iter()
                .take(3)
                .collect::<String>()
                .to_ascii_lowercase();
            if rest.starts_with("and") {
                self.at += 3;
                ands.push(self.term()?);
            } else if rest.starts_with("or") {
                self.at += 2;
                ors.push(collapse(std::mem::take(&mut ands), Expr::And));
                ands.push(self.term()?);
            } else {
                break;
            }
        }
        ors.push(collapse(ands, Expr::And));
        Ok(collapse(ors, Expr::Or))
    }

    fn term(&mut self) -> Result<Expr, CriteriaError> {
        self.skip_spaces();
        if self.chars.get(self.at) != Some(&'(') {
            return Err(CriteriaError::Malformed);
        }
        self.at += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CriteriaError::Malformed);
        }
        self.skip_spaces();
        let e = if self.chars.get(self.at) == Some(&'(') {
            self.expr()?
        } else {
            self.condition()?
        };
        self.skip_spaces();
        if self.chars.get(self.at) != Some(&')') {
            return Err(CriteriaError::Malformed);
        }
        self.at += 1;
        self.depth -= 1;
        Ok(e)
    }

    /// `field:operator:value` up to (not including) the closing `)`.
    fn condition(&mut self) -> Result<Expr, CriteriaError> {
        // Pieces split at unescaped `:` (first two) and, in the value, unescaped `,`.
        let mut head: Vec<String> = vec![String::new()];
        let mut values: Vec<String> = vec![String::new()];
        let mut in_value = false;
        loop {
            let Some(&c) = self.chars.get(self.at) else {
                return Err(CriteriaError::Malformed);
            };
            match c {
                ')' => break,
                '(' => return Err(CriteriaError::Malformed),
                '\\' => {
                    let Some(&next) = self.chars.get(self.at + 1) else {
                        return Err(CriteriaError::Malformed);
                    };
                    let target = if in_value {
                        values.last_mut()
                    } else {
                        head.last_mut()
                    };
                    if let Some(t) = target {
                        t.push(next);
                    }
                    self.at += 2;
                    continue;
                }
                ':' if !in_value => {
                    if head.len() == 2 {
                        in_value = true;
                    } else {
                        head.push(String::new());
                    }
                }
                ',' if in_value => values.push(String::new()),
                c => {
                    let target = if in_value {
                        values.last_mut()
                    } else {
                        head.last_mut()
                    };
                    if let Some(t) = target {
                        t.push(c);
                    }
                }
            }
            self.at += 1;
        }
        if !in_value {
            return Err(CriteriaError::Malformed);
        }
        let field = head[0].trim().to_owned();
        if field.is_empty() {
            return Err(CriteriaError::Malformed);
        }
        let op = Comparator::from_name(head[1].trim()).ok_or_else(|| {
            CriteriaError::UnknownOperator {
                api_name: field.clone(),
            }
        })?;
        let values = match op {
            Comparator::In | Comparator::NotIn => values,
            Comparator::Between if values.len() == 2 => values,
            Comparator::Between => return Err(CriteriaError::Malformed),
            _ => vec![values.join(",")],
        };
        if op == Comparator::In && values.len() > MAX_IN_VALUES {
            return Err(CriteriaError::TooManyValues { api_name: field });
        }
        self.conditions += 1;
        Ok(Expr::Condition { field, op, values })
    }
}

/// One member stays itself; several become `make(members)`.
fn collapse(mut members: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if members.len() == 1 {
        members.remove(0)
    } else {
        make(members)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn hits(c: &str, records: &[Map<String, Value>]) -> Vec<usize> {
        let crit = Criteria::parse(c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        (0..records.len())
            .filter(|&i| crit.matches(&records[i]))
            .collect()
    }

    fn people() -> Vec<Map<String, Value>> {
        vec![
            rec(
                json!({"Last_Name":"Boyle","Company":"ABC","Amount":10,"Created_Time":"2024-01-02T10:00:00+00:00"}),
            ),
            rec(
                json!({"Last_Name":"Patricia(Boyle)","Company":"ABC Inc","Amount":200,"Created_Time":"2024-03-01T10:00:00+00:00"}),
            ),
            rec(
                json!({"Last_Name":"smith","Company":"ABCD","Amount":null,"Owner":{"name":"Ann","id":"1"}}),
            ),
        ]
    }

    #[test]
    fn operators_match_as_documented() {
        let p = people();
        assert_eq!(hits("(Last_Name:equals:boyle)", &p), [0]);
        assert_eq!(hits(r"(Last_Name:equals:Patricia\(Boyle\))", &p), [1]);
        assert_eq!(hits("(Last_Name:not_equal:Boyle)", &p), [1, 2]);
        assert_eq!(hits("(Company:starts_with:abc)", &p), [0, 1, 2]);
        assert_eq!(hits("(Company:in:ABCD,abc)", &p), [0, 2]);
        assert_eq!(hits(r"(Company:in:ABC Inc\,x,ABCD)", &p), [2]);
        assert_eq!(hits("(Company:not_in:ABCD)", &p), [0, 1]);
        assert_eq!(hits("(Amount:greater_than:20)", &p), [1]);
        assert_eq!(hits("(Amount:less_equal:10)", &p), [0]);
        assert_eq!(hits("(Amount:between:10,200)", &p), [0, 1]);
        assert_eq!(
            hits("(Created_Time:greater_equal:2024-02-01T00:00:00+00:00)", &p),
            [1]
        );
        assert_eq!(hits("(Owner:equals:ann)", &p), [2]);
        // Null never matches, not even not_equal.
        assert_eq!(hits("(Amount:not_equal:5)", &p), [0, 1]);
    }

    #[test]
    fn equals_widens_with_several_conditions() {
        let p = people();
        assert_eq!(hits("(Company:equals:ABC)", &p), [0]);
        assert_eq!(
            hits("((Company:equals:ABC)or(Company:equals:ABC))", &p),
            [0, 1]
        );
        assert_eq!(
            hits("((Company:equals:ABC)and(Last_Name:starts_with:P))", &p),
            [1]
        );
    }

    #[test]
    fn grouping_and_precedence() {
        let p = people();
        assert_eq!(
            hits(
                "((Company:equals:ABCD)or(Amount:equals:10)and(Last_Name:equals:x))",
                &p
            ),
            [2],
            "and binds tighter"
        );
        assert_eq!(
            hits(
                "(((Company:starts_with:ABCD)or(Amount:equals:10))and(Last_Name:equals:smith))",
                &p
            ),
            [2]
        );
        assert_eq!(
            hits(
                " ( (Last_Name:EQUALS:Boyle)  OR (Company:equals:ABCD) ) ",
                &p
            ),
            [0, 2]
        );
    }

    #[test]
    fn rejections() {
        for (c, code) in [
            ("", "INVALID_QUERY"),
            ("(Last_Name:equals:x", "INVALID_QUERY"),
            ("(Last_Name:equals)", "INVALID_QUERY"),
            ("(Last_Name:equals:a(b))", "INVALID_QUERY"),
            ("(Last_Name:like:x)", "INVALID_QUERY"),
            ("(A:between:1)", "INVALID_QUERY"),
            ("(A:equals:1)(B:equals:2)", "INVALID_QUERY"),
            ("(A:equals:1)xor(B:equals:2)", "INVALID_QUERY"),
        ] {
            assert_eq!(
                Criteria::parse(c).map(|_| ()).unwrap_err().code(),
                code,
                "{c}"
            );
        }
        let many = format!("({})", vec!["(A:equals:1)"; 16].join("and"));
        assert_eq!(
            Criteria::parse(&many).unwrap_err(),
            CriteriaError::TooManyConditions
        );
        let list = (0..101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(
            Criteria::parse(&format!("(A:in:{list})")),
            Err(CriteriaError::TooManyValues { .. })
        ));
        let c = Criteria::parse("((A:equals:1)or(B:equals:2))").unwrap();
        assert_eq!(
            c.check_fields(&|f| f == "A"),
            Err(CriteriaError::UnknownField {
                api_name: "B".into()
            })
        );
    }
}
