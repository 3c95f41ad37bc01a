//! Keys pinned byte for byte. Keys are stored (the fleet tier keeps answers in Redis under
//! `l2:{hex of the key}`), so the key of a query must never change: a faster canonicalisation
//! must give these exact bytes. Changing the encoding on purpose means bumping the key's
//! domain tag (`zoho-gateway/cache-key/v3`) and updating these.

use super::*;

/// A schema with every kind of value: set, enum, opaque string, criteria, an integer without
/// default (absent), filters in strict mode; other parameters enter the key.
fn every_kind() -> ParamSchema {
    ParamSchema::new(
        vec![
            ParamSpec::new(
                "fields",
                ParamKind::Set {
                    max_items: 5,
                    over_max: SetOverflow::Bypass,
                },
            ),
            ParamSpec::new(
                "sort_order",
                ParamKind::Enum {
                    values: vec!["asc".into(), "desc".into()],
                    default: Some("asc".into()),
                },
            ),
            ParamSpec::new("page_token", ParamKind::Opaque),
            ParamSpec::new("criteria", ParamKind::Criteria(CriteriaLimits::default())),
            ParamSpec::new(
                "limit",
                ParamKind::Integer {
                    default: None,
                    min: 1,
                    max: 10,
                },
            ),
            ParamSpec::new(
                "filters",
                ParamKind::Filters(CanonicalRules {
                    mode: FilterMode::Strict,
                    ..CanonicalRules::default()
                }),
            ),
        ],
        UnknownParams::Key,
    )
    .unwrap()
}

fn hex_key(schema: &ParamSchema, scope: &KeyScope<'_>, q: &str) -> String {
    match schema.canonicalize(q) {
        Canonical::Key(c) => cache_key(scope, &c).to_hex(),
        other => panic!("expected a key for {q:?}, got {other:?}"),
    }
}

#[test]
fn keys_are_pinned() {
    let count = ParamSchema::associated_users_count(CanonicalRules::default());
    let strict = ParamSchema::associated_users_count(CanonicalRules {
        mode: FilterMode::Strict,
        ..CanonicalRules::default()
    });
    let nested = fq(
        r#"{"group_operator":"AND","group":[{"group_operator":"or","group":[{"field":{"api_name":"description"},"comparator":"starts_with","value":"\u00dcber \"x\""},{"field":{"api_name":"name"},"comparator":"equal","value":"b"}]},{"group_operator":"and","group":[{"field":{"api_name":"name"},"comparator":"equal","value":"a"},{"field":{"api_name":"name"},"comparator":"equal","value":"a"}]},{"field":{"api_name":"name"},"comparator":"equal","value":""}]}"#,
    );
    let with_others = format!("{SEED_CURL}&page=3&per_page=50&zeta=1&alpha&alpha=2&%C3%BC=%2B+");
    let user = KeyScope {
        tenant: "globex:9f2c",
        credential: Some(&[7; 32]),
        method: "GET",
        version: "v8",
        route: "/Leads/4150868000001",
        external: Some(b"Leads.External_Id"),
    };
    let everything = "fields=Email,Last_Name,Email&sort_order=desc&page_token=abc%3D%3D\
                      &criteria=((Last_Name:equals:Burns)and(First_Name:in:b,a))&x=1&filters=";
    let everything = format!("{everything}{}", pct(SEED_JSON_PY));
    let cases: [(&str, String); 8] = [
        ("seed", hex_key(&count, &SCOPE, SEED_CURL)),
        ("no query", hex_key(&count, &SCOPE, "")),
        ("seed strict", hex_key(&strict, &SCOPE, SEED_CURL)),
        ("nested", hex_key(&count, &SCOPE, &nested)),
        ("nested strict", hex_key(&strict, &SCOPE, &nested)),
        ("others", hex_key(&count, &SCOPE, &with_others)),
        ("user scope", hex_key(&count, &user, SEED_CURL)),
        ("every kind", hex_key(&every_kind(), &user, &everything)),
    ];
    let expected = [
        (
            "seed",
            "ea3149dcf0d23f0abdfca27958daea17b0865136b057f523300da46141a82ea7",
        ),
        (
            "no query",
            "9d3000cc61924b8712bfc0d4c957f20872a9b73920d31d821a9f3fa88ecb1876",
        ),
        (
            "seed strict",
            "f5bf9a44072cd24bb228972e828584af4b2cec14af6a36d62edde6f936290e49",
        ),
        (
            "nested",
            "3ff323a17704bf136872ea17b09905f0b586d392eb9850652a2735c1578bc2cd",
        ),
        (
            "nested strict",
            "94bd82448425261af6a50d1593450328d7e719ef7321e02adc0bee281fab10a8",
        ),
        (
            "others",
            "c2b3acd7e69793aeeb9762b4b59b3de11bc1df7d1ff956bd7b168ba29f87bb88",
        ),
        (
            "user scope",
            "d917e9029f66dcb8abcd150b108bf195e7542c6a527c592e1c2b4f97aecc567a",
        ),
        (
            "every kind",
            "356e2a0fe28cc18cd077a5dcea757101d927c8f41c75d95b4cdf471577d04470",
        ),
    ];
    for ((name, got), (_, want)) in cases.iter().zip(expected) {
        assert_eq!(got, want, "{name}");
    }
}
