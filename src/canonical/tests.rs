//! Table tests and property tests of the canonical key.

use super::*;

mod criteria;
mod golden;
mod props;
mod schema;
mod table;

/// The seed's sample filter, as Zoho's curl sample sends it (`%20` after `:` and `,`).
pub(super) const SEED_CURL: &str = "filters=%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D";

/// The sample as `json.dumps` (default separators) writes it.
pub(super) const SEED_JSON_PY: &str = r#"{"group_operator": "or", "group": [{"field": {"api_name": "name"}, "comparator": "equal", "value": "Tier1"}, {"field": {"api_name": "name"}, "comparator": "equal", "value": "Tier2"}]}"#;

/// The sample as `JSON.stringify` writes it.
pub(super) const SEED_JSON_COMPACT: &str = r#"{"group_operator":"or","group":[{"field":{"api_name":"name"},"comparator":"equal","value":"Tier1"},{"field":{"api_name":"name"},"comparator":"equal","value":"Tier2"}]}"#;

/// Form encoding as Python `requests` does it (space as `+`).
pub(super) fn form(name: &str, value: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish()
}

/// JavaScript `encodeURI`: leaves `A-Z a-z 0-9 - _ . ! ~ * ' ( )` and `; , / ? : @ & = + $ #`
/// raw, percent-encodes every other UTF-8 byte.
pub(super) fn encode_uri(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'();,/?:@&=+$#".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes every byte except unreserved ones (spaces as `%20`).
pub(super) fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(super) const SCOPE: KeyScope<'static> = KeyScope {
    tenant: "acme",
    credential: None,
    method: "GET",
    version: "v7",
    route: "/settings/user_groups/actions/associated_users_count",
    external: None,
};

/// Canonicalises with the default rules and panics unless it is a key.
pub(super) fn key(q: &str) -> CacheKey {
    key_with(q, &CanonicalRules::default())
}

pub(super) fn key_with(q: &str, rules: &CanonicalRules) -> CacheKey {
    match canonicalize(q, rules) {
        Canonical::Key(c) => cache_key(&SCOPE, &c),
        other => panic!("expected a key for {q:?}, got {other:?}"),
    }
}

/// `filters=<pct-encoded json>`.
pub(super) fn fq(json: &str) -> String {
    format!("filters={}", pct(json))
}
