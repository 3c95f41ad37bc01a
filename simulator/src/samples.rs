//! How Zoho's clients spell requests: the count route's path, the seed's sample `filters` as
//! Zoho's curl sample, the Python SDK and the Node SDK send it, and the encoders those clients
//! use. Client-side facts, kept beside the simulator (which plays Zoho) so that the gateway's
//! tests, benches and fuzz targets share one copy; neither the simulator nor the gateway decides
//! anything with them.
//!
//! The seed's sample filter is "name equals Tier1 OR name equals Tier2"
//! (`shared/seeds/`, Zoho's associated-users-count page).

/// The count route for API version v7, as clients call it (no query).
pub const COUNT_PATH: &str = "/crm/v7/settings/user_groups/actions/associated_users_count";

/// The seed's `filters` value as Zoho's curl sample spells it: `": "` and `","` separators,
/// percent-encoded with `%20` for spaces.
pub const SEED_CURL: &str = "%7B%22group_operator%22%3A%20%22or%22%2C%22group%22%3A%20%5B%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier1%22%7D%2C%7B%22field%22%3A%20%7B%22api_name%22%3A%20%22name%22%7D%2C%22comparator%22%3A%20%22equal%22%2C%22value%22%3A%20%22Tier2%22%7D%5D%7D";

/// The seed's filter as Python's `json.dumps` writes it (`", "` and `": "` separators).
pub const SEED_JSON_PYTHON: &str = r#"{"group_operator": "or", "group": [{"field": {"api_name": "name"}, "comparator": "equal", "value": "Tier1"}, {"field": {"api_name": "name"}, "comparator": "equal", "value": "Tier2"}]}"#;

/// The seed's filter as JavaScript's `JSON.stringify` writes it (no spaces).
pub const SEED_JSON_COMPACT: &str = r#"{"group_operator":"or","group":[{"field":{"api_name":"name"},"comparator":"equal","value":"Tier1"},{"field":{"api_name":"name"},"comparator":"equal","value":"Tier2"}]}"#;

/// The `filters` value as the Python SDK sends it: [`SEED_JSON_PYTHON`] form-encoded
/// ([`form_encode`], `+` for spaces).
pub const SEED_PYTHON: &str = "%7B%22group_operator%22%3A+%22or%22%2C+%22group%22%3A+%5B%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier1%22%7D%2C+%7B%22field%22%3A+%7B%22api_name%22%3A+%22name%22%7D%2C+%22comparator%22%3A+%22equal%22%2C+%22value%22%3A+%22Tier2%22%7D%5D%7D";

/// The `filters` value as the Node SDK sends it: [`SEED_JSON_COMPACT`] through
/// [`encode_uri`] (raw `:` and `,`), followed by the `&` the SDK leaves at the end of its query.
pub const SEED_NODE: &str = "%7B%22group_operator%22:%22or%22,%22group%22:%5B%7B%22field%22:%7B%22api_name%22:%22name%22%7D,%22comparator%22:%22equal%22,%22value%22:%22Tier1%22%7D,%7B%22field%22:%7B%22api_name%22:%22name%22%7D,%22comparator%22:%22equal%22,%22value%22:%22Tier2%22%7D%5D%7D&";

/// `application/x-www-form-urlencoded` encoding of `s`, as Python's `urlencode` and most form
/// encoders write it: `+` for spaces, `%XX` for every byte outside `A-Za-z0-9*-._`.
pub fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// JavaScript's `encodeURI(s)`: keeps letters, digits and `-_.!~*'();,/?:@&=+$#`; every other
/// UTF-8 byte becomes `%XX` (upper-case hex).
pub fn encode_uri(s: &str) -> String {
    encode_except(s, b"-_.!~*'();,/?:@&=+$#")
}

/// Percent-encodes every byte of `s` outside RFC 3986's unreserved set (`A-Za-z0-9-._~`), with
/// `%20` for spaces: the strictest spelling a client may send.
pub fn percent_encode(s: &str) -> String {
    encode_except(s, b"-._~")
}

/// `%XX` for every byte that is neither ASCII alphanumeric nor in `keep`.
fn encode_except(s: &str, keep: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spellings_are_what_the_encoders_write() {
        assert_eq!(form_encode(SEED_JSON_PYTHON), SEED_PYTHON);
        assert_eq!(format!("{}&", encode_uri(SEED_JSON_COMPACT)), SEED_NODE);
        assert_eq!(percent_encode("a b+c/ü~"), "a%20b%2Bc%2F%C3%BC~");
        assert_eq!(encode_uri("a b:ü"), "a%20b:%C3%BC");
    }

    #[test]
    fn every_spelling_decodes_to_the_same_filter() {
        let decoded = |v: &str| -> serde_json::Value {
            let query = format!("filters={v}");
            let (_, text) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let seed: serde_json::Value = serde_json::from_str(SEED_JSON_COMPACT).unwrap();
        assert_eq!(decoded(SEED_CURL), seed);
        assert_eq!(decoded(SEED_PYTHON), seed);
        assert_eq!(decoded(SEED_NODE.trim_end_matches('&')), seed);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(SEED_JSON_PYTHON).unwrap(),
            seed
        );
    }
}
