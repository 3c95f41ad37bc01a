//! The simulator's own evaluator for the `filters` query parameter of
//! `GET /crm/{version}/settings/user_groups/actions/associated_users_count`.
//!
//! This is "Zoho's" parser: it is deliberately independent of the gateway's
//! canonicalisation code so property tests can compare the two.
//!
//! # Grammar (API-NOTES.md §2)
//!
//! ```text
//! filter    = criterion | group
//! criterion = {"field":{"api_name":<field>}, "comparator":<comparator>, "value":<string>}
//! group     = {"group_operator":"and"|"or", "group":[filter, ...]}
//! ```
//!
//! - `field.api_name` is `name` or `description` (exact, case-sensitive).
//!   `field` may also carry an `id` (any JSON value, ignored), as Zoho's OpenAPI
//!   schema allows.
//! - `comparator` is `equal` or `starts_with` (exact, case-sensitive).
//! - `group_operator` is matched case-insensitively (`or`, `OR`, `Or` …) because
//!   Zoho's docs send lowercase and its SDKs uppercase to the same endpoint \[doc, sdk\].
//! - Groups nest to any depth (bounded by `serde_json`'s recursion limit of 128)
//!   and nested groups are evaluated. **Choice** (\[unverified\] in API-NOTES.md §7).
//!
//! # Choices for \[unverified\] behaviour
//!
//! - A non-string `value` (number, `null`, array …) is rejected with
//!   [`FilterError::ValueNotString`] (400 `INVALID_DATA` at the HTTP level).
//! - An empty `group` array is rejected ([`FilterError::EmptyGroup`]).
//! - Unknown keys in a criterion or group object are rejected
//!   ([`FilterError::UnknownKey`]); an object with both `field` and `group` is
//!   ambiguous and rejected the same way.
//! - An empty string `value` is allowed: `equal ""` matches an empty field and
//!   `starts_with ""` matches everything.
//! - Case sensitivity of `equal` (and, by the same switch, `starts_with`) is a
//!   caller-supplied flag (`SimConfig::equal_case_sensitive`, default `true`).
//!   Case-insensitive comparison lowercases character by character
//!   ([`char::to_lowercase`], full Unicode mappings, no final-sigma context
//!   rule); no Unicode normalisation is applied, so NFC and NFD spellings of
//!   the same text never compare equal.

use serde_json::{Map, Value};

/// A parsed `filters` expression: one criterion or a (possibly nested) group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// A single comparison against one field.
    Criterion(Criterion),
    /// A group of filters joined by one operator.
    Group {
        /// How the members combine.
        operator: GroupOperator,
        /// The members, in request order (never empty).
        filters: Vec<Filter>,
    },
}

/// One `{"field":{"api_name":..},"comparator":..,"value":..}` criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    /// The user-group field compared.
    pub field: Field,
    /// How the field is compared with [`Criterion::value`].
    pub comparator: Comparator,
    /// The value to compare with, exactly as sent (no trimming or normalisation).
    pub value: String,
}

/// The user-group fields a filter may name (`field.api_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `name`: the user group's name.
    Name,
    /// `description`: the user group's description (empty string when unset).
    Description,
}

impl Field {
    /// The `api_name` Zoho uses for this field.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Description => "description",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "name" => Some(Field::Name),
            "description" => Some(Field::Description),
            _ => None,
        }
    }
}

/// The comparators this endpoint allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparator {
    /// `equal`: the whole field equals the value.
    Equal,
    /// `starts_with`: the field begins with the value.
    StartsWith,
}

impl Comparator {
    /// The comparator's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Equal => "equal",
            Comparator::StartsWith => "starts_with",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "equal" => Some(Comparator::Equal),
            "starts_with" => Some(Comparator::StartsWith),
            _ => None,
        }
    }
}

/// How the members of a group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupOperator {
    /// Every member must match.
    And,
    /// At least one member must match.
    Or,
}

impl GroupOperator {
    /// The operator's wire name (lowercase, as in Zoho's docs).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupOperator::And => "and",
            GroupOperator::Or => "or",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("and") {
            Some(GroupOperator::And)
        } else if s.eq_ignore_ascii_case("or") {
            Some(GroupOperator::Or)
        } else {
            None
        }
    }
}

/// Why a `filters` value was rejected. Every variant becomes HTTP 400
/// `INVALID_DATA`; the `Display` text goes into `details.reason` and
/// [`FilterError::json_path`] into `details.json_path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The text is not JSON at all.
    #[error("filters is not valid json: {0}")]
    InvalidJson(String),
    /// A filter (top level or group member) is not a JSON object.
    #[error("expected a json object at {path}")]
    NotAnObject {
        /// Where in the document, e.g. `$.group[1]`.
        path: String,
    },
    /// An object is neither a criterion nor a group.
    #[error("expected a criterion or a group at {path}")]
    NeitherCriterionNorGroup {
        /// Where in the document.
        path: String,
    },
    /// A key that is not part of the grammar (or `field` and `group` together).
    #[error("unexpected key {key:?} at {path}")]
    UnknownKey {
        /// The offending key.
        key: String,
        /// Where in the document.
        path: String,
    },
    /// A required key is missing.
    #[error("missing key {key:?} at {path}")]
    MissingKey {
        /// The missing key.
        key: &'static str,
        /// Where in the document.
        path: String,
    },
    /// `field.api_name` is not `name` or `description`.
    #[error("unsupported field {0:?}")]
    UnknownField(String),
    /// `comparator` is not `equal` or `starts_with`.
    #[error("unsupported comparator {0:?}")]
    UnknownComparator(String),
    /// `group_operator` is not `and`/`or` (any case).
    #[error("unsupported group_operator {0:?}")]
    UnknownOperator(String),
    /// `value` is not a JSON string (choice, see module doc).
    #[error("value must be a string at {path}")]
    ValueNotString {
        /// Where in the document.
        path: String,
    },
    /// A key has the wrong JSON type (e.g. `group` is not an array).
    #[error("{key:?} has the wrong type at {path}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// Where in the document.
        path: String,
    },
    /// `group` is an empty array (choice, see module doc).
    #[error("group is empty at {path}")]
    EmptyGroup {
        /// Where in the document.
        path: String,
    },
}

impl FilterError {
    /// Where in the JSON document the problem is (`$` is the root), if known.
    pub fn json_path(&self) -> Option<&str> {
        match self {
            FilterError::NotAnObject { path }
            | FilterError::NeitherCriterionNorGroup { path }
            | FilterError::UnknownKey { path, .. }
            | FilterError::MissingKey { path, .. }
            | FilterError::ValueNotString { path }
            | FilterError::WrongType { path, .. }
            | FilterError::EmptyGroup { path } => Some(path),
            FilterError::InvalidJson(_)
            | FilterError::UnknownField(_)
            | FilterError::UnknownComparator(_)
            | FilterError::UnknownOperator(_) => None,
        }
    }
}

/// Parses the (already percent-decoded) JSON text of a `filters` parameter.
///
/// # Errors
///
/// Any [`FilterError`]; see the module doc for the grammar and the choices made
/// for \[unverified\] cases.
pub fn parse(json: &str) -> Result<Filter, FilterError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| FilterError::InvalidJson(e.to_string()))?;
    parse_value(&value, "$")
}

fn parse_value(value: &Value, path: &str) -> Result<Filter, FilterError> {
    let Value::Object(obj) = value else {
        return Err(FilterError::NotAnObject { path: path.into() });
    };
    let is_group = obj.contains_key("group") || obj.contains_key("group_operator");
    let is_criterion =
        obj.contains_key("field") || obj.contains_key("comparator") || obj.contains_key("value");
    match (is_group, is_criterion) {
        (true, false) => parse_group(obj, path),
        (false, true) => parse_criterion(obj, path).map(Filter::Criterion),
        (true, true) => Err(FilterError::UnknownKey {
            key: "group".into(),
            path: path.into(),
        }),
        (false, false) => Err(FilterError::NeitherCriterionNorGroup { path: path.into() }),
    }
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), FilterError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(FilterError::UnknownKey {
            key: key.clone(),
            path: path.into(),
        }),
        None => Ok(()),
    }
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
    path: &str,
) -> Result<&'a Value, FilterError> {
    obj.get(key).ok_or(FilterError::MissingKey {
        key,
        path: path.into(),
    })
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
    path: &str,
) -> Result<&'a str, FilterError> {
    required(obj, key, path)?
        .as_str()
        .ok_or(FilterError::WrongType {
            key,
            path: path.into(),
        })
}

fn parse_group(obj: &Map<String, Value>, path: &str) -> Result<Filter, FilterError> {
    check_keys(obj, &["group_operator", "group"], path)?;
    let op = required_str(obj, "group_operator", path)?;
    let operator =
        GroupOperator::parse(op).ok_or_else(|| FilterError::UnknownOperator(op.into()))?;
    let Value::Array(members) = required(obj, "group", path)? else {
        return Err(FilterError::WrongType {
            key: "group",
            path: path.into(),
        });
    };
    if members.is_empty() {
        return Err(FilterError::EmptyGroup { path: path.into() });
    }
    let filters = members
        .iter()
        .enumerate()
        .map(|(i, m)| parse_value(m, &format!("{path}.group[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter::Group { operator, filters })
}

fn parse_criterion(obj: &Map<String, Value>, path: &str) -> Result<Criterion, FilterError> {
    check_keys(obj, &["field", "comparator", "value"], path)?;
    let field_path = format!("{path}.field");
    let Value::Object(field) = required(obj, "field", path)? else {
        return Err(FilterError::WrongType {
            key: "field",
            path: path.into(),
        });
    };
    check_keys(field, &["api_name", "id"], &field_path)?;
    let api_name = required_str(field, "api_name", &field_path)?;
    let field = Field::parse(api_name).ok_or_else(|| FilterError::UnknownField(api_name.into()))?;
    let comp = required_str(obj, "comparator", path)?;
    let comparator =
        Comparator::parse(comp).ok_or_else(|| FilterError::UnknownComparator(comp.into()))?;
    let value = match required(obj, "value", path)? {
        Value::String(s) => s.clone(),
        _ => return Err(FilterError::ValueNotString { path: path.into() }),
    };
    Ok(Criterion {
        field,
        comparator,
        value,
    })
}

impl Filter {
    /// Whether a user group with this `name` and `description` matches.
    ///
    /// `equal_case_sensitive` selects byte-exact comparison (`true`) or
    /// comparison after per-character Unicode lowercasing (`false`); it
    /// applies to both comparators.
    pub fn matches(&self, name: &str, description: &str, equal_case_sensitive: bool) -> bool {
        match self {
            Filter::Criterion(c) => {
                let field = match c.field {
                    Field::Name => name,
                    Field::Description => description,
                };
                c.comparator.compare(field, &c.value, equal_case_sensitive)
            }
            Filter::Group {
                operator: GroupOperator::And,
                filters,
            } => filters
                .iter()
                .all(|f| f.matches(name, description, equal_case_sensitive)),
            Filter::Group {
                operator: GroupOperator::Or,
                filters,
            } => filters
                .iter()
                .any(|f| f.matches(name, description, equal_case_sensitive)),
        }
    }

    /// Number of criteria (leaves) in the expression.
    pub fn criteria_count(&self) -> usize {
        match self {
            Filter::Criterion(_) => 1,
            Filter::Group { filters, .. } => filters.iter().map(Filter::criteria_count).sum(),
        }
    }
}

impl Comparator {
    fn compare(self, field: &str, value: &str, case_sensitive: bool) -> bool {
        if case_sensitive {
            match self {
                Comparator::Equal => field == value,
                Comparator::StartsWith => field.starts_with(value),
            }
        } else {
            // Per-character lowercasing (no final-sigma context rule), so a
            // case-sensitive match always implies a case-insensitive one.
            let mut field = field.chars().flat_map(char::to_lowercase);
            let mut value = value.chars().flat_map(char::to_lowercase);
            loop {
                match (field.next(), value.next()) {
                    (_, None) => {
                        return self == Comparator::StartsWith || field.next().is_none();
                    }
                    (Some(f), Some(v)) if f == v => {}
                    _ => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crit(field: &str, comp: &str, value: &str) -> String {
        serde_json::json!({"field":{"api_name":field},"comparator":comp,"value":value}).to_string()
    }

    #[test]
    fn equal_and_starts_with() {
        let f = parse(&crit("name", "equal", "Tier1")).unwrap();
        assert!(f.matches("Tier1", "", true));
        assert!(!f.matches("Tier10", "", true));
        assert!(!f.matches("tier1", "", true));
        assert!(f.matches("tier1", "", false));
        let f = parse(&crit("name", "starts_with", "Tier1")).unwrap();
        assert!(f.matches("Tier1", "", true));
        assert!(f.matches("Tier10", "", true));
        assert!(!f.matches("Tier2", "", true));
        let f = parse(&crit("description", "starts_with", "Sales")).unwrap();
        assert!(f.matches("x", "Sales team", true));
        assert!(!f.matches("Sales", "team", true));
    }

    #[test]
    fn operators_any_case_and_nesting() {
        for op in ["or", "OR", "Or", "oR"] {
            let json = format!(
                r#"{{"group_operator":"{op}","group":[{},{}]}}"#,
                crit("name", "equal", "Tier1"),
                crit("name", "equal", "Tier2")
            );
            let f = parse(&json).unwrap();
            assert!(f.matches("Tier1", "", true));
            assert!(f.matches("Tier2", "", true));
            assert!(!f.matches("Tier3", "", true));
        }
        let json = format!(
            r#"{{"group_operator":"AND","group":[{},{{"group_operator":"or","group":[{},{}]}}]}}"#,
            crit("name", "starts_with", "Sales"),
            crit("description", "equal", "EU"),
            crit("name", "equal", "Sales - US"),
        );
        let f = parse(&json).unwrap();
        assert_eq!(f.criteria_count(), 3);
        assert!(f.matches("Sales - EU", "EU", true));
        assert!(f.matches("Sales - US", "whatever", true));
        assert!(!f.matches("Marketing", "EU", true));
        assert!(!f.matches("Sales - APAC", "APAC", true));
    }

    #[test]
    fn unicode_and_case_folding() {
        let f = parse(&crit("name", "equal", "über team")).unwrap();
        assert!(!f.matches("Über Team", "", true));
        assert!(f.matches("Über Team", "", false));
        let f = parse(&crit("name", "starts_with", "Üb")).unwrap();
        assert!(f.matches("Über Team", "", true));
        // Per-character folding: no final-sigma surprise.
        let f = parse(&crit("name", "starts_with", "ΑΣ")).unwrap();
        assert!(f.matches("ΑΣΑ", "", true));
        assert!(f.matches("ασα", "", false));
        assert!(!f.matches("ασα", "", true));
        // NFD "U + combining diaeresis" is a different string.
        assert!(!f.matches("U\u{308}ber Team", "", true));
    }

    #[test]
    fn one_element_group_equals_bare_criterion() {
        let bare = parse(&crit("name", "equal", "A")).unwrap();
        let group = parse(&format!(
            r#"{{"group_operator":"and","group":[{}]}}"#,
            crit("name", "equal", "A")
        ))
        .unwrap();
        for n in ["A", "a", "B", ""] {
            assert_eq!(bare.matches(n, "", true), group.matches(n, "", true));
        }
    }

    #[test]
    fn rejects_bad_input() {
        type Check = fn(&FilterError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{", |e| matches!(e, FilterError::InvalidJson(_))),
            ("[]", |e| matches!(e, FilterError::NotAnObject { .. })),
            ("{}", |e| {
                matches!(e, FilterError::NeitherCriterionNorGroup { .. })
            }),
            (
                r#"{"field":{"api_name":"email"},"comparator":"equal","value":"x"}"#,
                |e| matches!(e, FilterError::UnknownField(_)),
            ),
            (
                r#"{"field":{"api_name":"name"},"comparator":"contains","value":"x"}"#,
                |e| matches!(e, FilterError::UnknownComparator(_)),
            ),
            (
                r#"{"field":{"api_name":"name"},"comparator":"equal","value":1}"#,
                |e| matches!(e, FilterError::ValueNotString { .. }),
            ),
            (
                r#"{"field":{"api_name":"name"},"comparator":"equal"}"#,
                |e| matches!(e, FilterError::MissingKey { key: "value", .. }),
            ),
            (r#"{"group_operator":"or","group":[]}"#, |e| {
                matches!(e, FilterError::EmptyGroup { .. })
            }),
            (r#"{"group_operator":"xor","group":[]}"#, |e| {
                matches!(e, FilterError::UnknownOperator(_))
            }),
            (r#"{"group_operator":"or","group":{}}"#, |e| {
                matches!(e, FilterError::WrongType { key: "group", .. })
            }),
            (
                r#"{"group_operator":"or","group":[1]}"#,
                |e| matches!(e, FilterError::NotAnObject { path } if path == "$.group[0]"),
            ),
            (
                r#"{"field":{"api_name":"name"},"comparator":"equal","value":"x","extra":1}"#,
                |e| matches!(e, FilterError::UnknownKey { .. }),
            ),
        ];
        for (input, check) in cases {
            let err = parse(input).expect_err(input);
            assert!(check(&err), "{input}: {err:?}");
        }
    }

    #[test]
    fn field_id_is_accepted() {
        let f = parse(r#"{"field":{"api_name":"name","id":"1"},"comparator":"equal","value":"A"}"#)
            .unwrap();
        assert!(f.matches("A", "", true));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::json;

        fn arb_value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("Tier1".to_string()),
                Just("tier".to_string()),
                Just("Über".to_string()),
                Just("ΑΣ".to_string()),
                Just("ΑΣΑ".to_string()),
                Just("İ".to_string()),
                "[a-zA-Z+&=% ]{0,6}",
            ]
        }

        fn arb_filter() -> impl Strategy<Value = Filter> {
            let leaf = (any::<bool>(), any::<bool>(), arb_value()).prop_map(|(name, eq, value)| {
                Filter::Criterion(Criterion {
                    field: if name {
                        Field::Name
                    } else {
                        Field::Description
                    },
                    comparator: if eq {
                        Comparator::Equal
                    } else {
                        Comparator::StartsWith
                    },
                    value,
                })
            });
            leaf.prop_recursive(4, 24, 4, |inner| {
                (any::<bool>(), prop::collection::vec(inner, 1..4)).prop_map(|(and, filters)| {
                    Filter::Group {
                        operator: if and {
                            GroupOperator::And
                        } else {
                            GroupOperator::Or
                        },
                        filters,
                    }
                })
            })
        }

        /// Serializes a filter; `upper` sends operators upper-case, as the SDKs do.
        fn to_json(f: &Filter, upper: bool) -> Value {
            match f {
                Filter::Criterion(c) => json!({
                    "field": {"api_name": c.field.as_str()},
                    "comparator": c.comparator.as_str(),
                    "value": c.value,
                }),
                Filter::Group { operator, filters } => {
                    let op = if upper {
                        operator.as_str().to_uppercase()
                    } else {
                        operator.as_str().to_string()
                    };
                    json!({
                        "group_operator": op,
                        "group": filters.iter().map(|f| to_json(f, upper)).collect::<Vec<_>>(),
                    })
                }
            }
        }

        /// Reference semantics, written independently of `Filter::matches`.
        fn reference(f: &Value, name: &str, description: &str) -> bool {
            if let Some(group) = f.get("group").and_then(Value::as_array) {
                let results = group.iter().map(|m| reference(m, name, description));
                let op = f["group_operator"].as_str().unwrap().to_lowercase();
                return if op == "and" {
                    results.fold(true, |a, b| a & b)
                } else {
                    results.fold(false, |a, b| a | b)
                };
            }
            let field = if f["field"]["api_name"] == "name" {
                name
            } else {
                description
            };
            let value = f["value"].as_str().unwrap();
            if f["comparator"] == "equal" {
                field == value
            } else {
                field.get(..value.len()) == Some(value)
            }
        }

        proptest! {
            #[test]
            fn round_trips_and_matches_reference(
                f in arb_filter(),
                upper in any::<bool>(),
                name in arb_value(),
                description in arb_value(),
            ) {
                let json = to_json(&f, upper);
                let parsed = parse(&json.to_string()).unwrap();
                prop_assert_eq!(&parsed, &f);
                prop_assert_eq!(
                    parsed.matches(&name, &description, true),
                    reference(&json, &name, &description)
                );
                // Case-insensitive matching is implied by case-sensitive matching
                // for monotone (negation-free) filters.
                if parsed.matches(&name, &description, true) {
                    prop_assert!(parsed.matches(&name, &description, false));
                }
            }

            #[test]
            fn parse_never_panics(s in "\\PC{0,64}") {
                let _ = parse(&s);
            }
        }
    }
}
