//! The count route's queries as the tests spell them, and the seed's client spellings
//! (re-exported from [`zoho_crm_simulator::samples`]).

pub use zoho_crm_simulator::samples::{
    COUNT_PATH as COUNT, SEED_CURL, SEED_NODE, SEED_PYTHON, form_encode,
};

/// The count route with `filters={value}`, `value` already encoded.
pub fn with_filters(value: &str) -> String {
    format!("{COUNT}?filters={value}")
}

/// The count route with the `filters` JSON text `json`, form-encoded.
pub fn filters_json(json: &str) -> String {
    with_filters(&form_encode(json))
}

/// The count route with a one-criterion `filters` on `name` (`comparator` is `equal` or
/// `starts_with`), form-encoded.
pub fn name_filter(comparator: &str, value: &str) -> String {
    filters_json(&format!(
        r#"{{"field":{{"api_name":"name"}},"comparator":"{comparator}","value":"{value}"}}"#
    ))
}

/// A distinct, cacheable count question for each `(value, per_page)`: `name starts_with value`.
pub fn starts_with(value: &str, per_page: u32) -> String {
    format!("{}&per_page={per_page}", name_filter("starts_with", value))
}
