//! Parameter schemas beyond the count route: enums, sets, opaque strings, required parameters,
//! exclusive pairs and the unknown-parameter policy.

use super::*;

fn records() -> ParamSchema {
    let int = |default, max| ParamKind::Integer {
        default: Some(default),
        min: 1,
        max,
    };
    let mut fields = ParamSpec::new(
        "fields",
        ParamKind::Set {
            max_items: 3,
            over_max: SetOverflow::Bypass,
        },
    );
    fields.required = true;
    ParamSchema::new(
        vec![
            fields,
            ParamSpec::new(
                "sort_order",
                ParamKind::Enum {
                    values: vec!["asc".into(), "desc".into()],
                    default: None,
                },
            ),
            ParamSpec::new("page", int(1, u32::MAX)),
            ParamSpec::new("per_page", int(200, 200)),
            ParamSpec::new("page_token", ParamKind::Opaque),
        ],
        UnknownParams::Bypass,
    )
    .unwrap()
    .with_exclusive("page", "page_token")
    .unwrap()
}

fn key_of(schema: &ParamSchema, q: &str) -> CacheKey {
    match schema.canonicalize(q) {
        Canonical::Key(c) => cache_key(&SCOPE, &c),
        other => panic!("expected a key for {q:?}, got {other:?}"),
    }
}

fn invalid_of(schema: &ParamSchema, q: &str) -> InvalidQuery {
    match schema.canonicalize(q) {
        Canonical::Invalid(i) => i,
        other => panic!("expected invalid for {q:?}, got {other:?}"),
    }
}

#[test]
fn set_order_and_duplicates_do_not_matter() {
    let s = records();
    let k = key_of(&s, "fields=Last_Name,Email");
    assert_eq!(k, key_of(&s, "fields=Email,Last_Name"));
    assert_eq!(k, key_of(&s, "fields=Email,Last_Name,Email"));
    assert_eq!(
        k,
        key_of(&s, "fields=Email%2CLast_Name&page=1&per_page=200")
    );
    // Items stay byte-exact: case and spaces are different fields.
    assert_ne!(k, key_of(&s, "fields=email,Last_Name"));
    assert_ne!(k, key_of(&s, "fields=Email,+Last_Name"));
    // A different set is a different key; `a,b` is not the two-item set `a` + `b` elsewhere.
    assert_ne!(k, key_of(&s, "fields=Email"));
}

#[test]
fn odd_sets_bypass() {
    let s = records();
    for q in ["fields=", "fields=a,,b", "fields=a,", "fields=a,b,c,d"] {
        assert_eq!(
            s.canonicalize(q),
            Canonical::Uncacheable(NoCacheReason::UnsupportedSet),
            "{q}"
        );
    }
}

/// A set whose `max_items` is Zoho's limit: more items (repeats count, empty or all-space
/// items do not, as Zoho counts) are Zoho's `LIMIT_EXCEEDED`, answered locally; up to the
/// limit, the set is keyed as usual, and odd sets within it still bypass.
#[test]
fn sets_over_zohos_limit_are_limit_exceeded() {
    let mut spec = ParamSpec::new(
        "fields",
        ParamKind::Set {
            max_items: 3,
            over_max: SetOverflow::Reject,
        },
    );
    spec.required = true;
    let s = ParamSchema::new(vec![spec], UnknownParams::Bypass).unwrap();
    for q in ["fields=a,b,c,d", "fields=a,a,a,a", "fields=a,b,,c,d"] {
        let bad = invalid_of(&s, q);
        assert_eq!(
            (bad.param.as_ref(), bad.kind, bad.limit),
            ("fields", InvalidKind::LimitExceeded, Some(3)),
            "{q}"
        );
        assert_eq!(bad.kind.zoho_code(), "LIMIT_EXCEEDED");
    }
    assert_eq!(key_of(&s, "fields=c,b,a"), key_of(&s, "fields=a,b,c"));
    assert_eq!(key_of(&s, "fields=b,a,b"), key_of(&s, "fields=a,b"));
    for q in ["fields=a,,b", "fields=a,+,b"] {
        assert!(
            !matches!(s.canonicalize(q), Canonical::Invalid(_)),
            "{q}: within the limit"
        );
    }
}

#[test]
fn enums_required_and_exclusive_pairs_are_checked_locally() {
    let s = records();
    assert_ne!(
        key_of(&s, "fields=a&sort_order=asc"),
        key_of(&s, "fields=a&sort_order=desc")
    );
    assert_ne!(
        key_of(&s, "fields=a"),
        key_of(&s, "fields=a&sort_order=asc")
    );
    let bad = invalid_of(&s, "fields=a&sort_order=ASC");
    assert_eq!(
        (bad.param.as_ref(), bad.kind),
        ("sort_order", InvalidKind::NotInEnum)
    );
    let missing = invalid_of(&s, "page=2");
    assert_eq!(missing.kind, InvalidKind::RequiredParamMissing);
    assert_eq!(missing.kind.zoho_code(), "REQUIRED_PARAM_MISSING");
    // The default `page` does not conflict with a sent `page_token`; a sent one does.
    key_of(&s, "fields=a&page_token=abc");
    let both = invalid_of(&s, "fields=a&page=2&page_token=abc");
    assert_eq!(both.kind, InvalidKind::Conflict);
    assert_eq!(both.kind.zoho_code(), "AMBIGUITY_DURING_PROCESSING");
    // Opaque strings are byte-exact after decoding.
    assert_eq!(
        key_of(&s, "fields=a&page_token=a%2Bb"),
        key_of(&s, "fields=a&page_token=a%2bb")
    );
    assert_ne!(
        key_of(&s, "fields=a&page_token=a+b"),
        key_of(&s, "fields=a&page_token=a%2Bb")
    );
}

#[test]
fn unknown_parameters_follow_the_schema_policy() {
    assert_eq!(
        records().canonicalize("fields=a&x=1"),
        Canonical::Uncacheable(NoCacheReason::UnknownParam)
    );
    let reject = ParamSchema::new(vec![], UnknownParams::Reject).unwrap();
    assert_eq!(
        reject.canonicalize("x").unwrap_invalid().kind,
        InvalidKind::UnknownParam
    );
    let keyed = ParamSchema::new(vec![], UnknownParams::Key).unwrap();
    assert_ne!(key_of(&keyed, "x=1"), key_of(&keyed, "x=2"));
    assert_eq!(key_of(&keyed, "a=1&b=2"), key_of(&keyed, "b=2&a=1"));
}

#[test]
fn schemas_with_other_rules_never_share_keys() {
    // Same query, same scope, different schema (e.g. after a reload): different keys.
    let a = ParamSchema::new(vec![], UnknownParams::Key).unwrap();
    let b = ParamSchema::new(
        vec![ParamSpec::new("x", ParamKind::Opaque)],
        UnknownParams::Key,
    )
    .unwrap();
    assert_ne!(key_of(&a, "x=1"), key_of(&b, "x=1"));
    assert!(
        ParamSchema::new(
            vec![
                ParamSpec::new("x", ParamKind::Opaque),
                ParamSpec::new("x", ParamKind::Opaque)
            ],
            UnknownParams::Key
        )
        .is_err()
    );
    assert!(records().with_exclusive("page", "nope").is_err());
}

trait UnwrapInvalid {
    fn unwrap_invalid(self) -> InvalidQuery;
}

impl UnwrapInvalid for Canonical {
    fn unwrap_invalid(self) -> InvalidQuery {
        match self {
            Canonical::Invalid(i) => i,
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}

#[test]
fn memoised_keys_are_the_computed_keys_and_clones_start_empty() {
    let schema = records();
    let q = "fields=b,a&page=2";
    let fresh = key_of(&schema, q);
    // First call computes and memoises, the second answers from the memo: same key.
    assert_eq!(schema.key(&SCOPE, q), KeyOutcome::Key(fresh));
    assert_eq!(
        schema.memo.get().get(&SCOPE, q).map(|(k, _)| k),
        Some(fresh)
    );
    assert_eq!(schema.key(&SCOPE, q), KeyOutcome::Key(fresh));
    // Another scope is another key, never the memoised one.
    let other = KeyScope {
        tenant: "other",
        ..SCOPE
    };
    let KeyOutcome::Key(k) = schema.key(&other, q) else {
        panic!("a key")
    };
    assert_ne!(k, fresh);
    // Uncacheable and invalid queries are not memoised and keep their outcome.
    assert!(matches!(
        schema.key(&SCOPE, "fields=a&page=1&page_token=x"),
        KeyOutcome::Invalid(_)
    ));
    assert_eq!(
        schema
            .memo
            .get()
            .get(&SCOPE, "fields=a&page=1&page_token=x"),
        None
    );
    // A clone (which may be changed afterwards) does not inherit the memo.
    let clone = schema.clone();
    assert_eq!(clone.memo.get().get(&SCOPE, q), None);
    assert_eq!(clone, schema);
}

#[test]
fn criteria_parameters_share_keys_by_meaning() {
    let s = ParamSchema::new(
        vec![ParamSpec::new(
            "criteria",
            ParamKind::Criteria(CriteriaLimits::default()),
        )],
        UnknownParams::Bypass,
    )
    .unwrap();
    let k = key_of(
        &s,
        "criteria=((Last_Name:equals:Smith)and(Email:equals:a%40b.c))",
    );
    assert_eq!(
        k,
        key_of(
            &s,
            "criteria=(Email:equals:a%40b.c)and(Last_Name:equals:Smith)"
        )
    );
    assert_ne!(
        k,
        key_of(
            &s,
            "criteria=(Email:equals:a%40b.c)or(Last_Name:equals:Smith)"
        )
    );
    let bad = invalid_of(&s, "criteria=(Last_Name:equals");
    assert_eq!(bad.kind.zoho_code(), "INVALID_QUERY");
}

/// Which parameters a query sent: the same from the canonical form, the memo and the name-only
/// scan of a query without a key; defaults filled in do not count.
#[test]
fn sent_params_come_with_the_key() {
    let s = records();
    let at = |name: &str| s.params().iter().position(|p| p.name == name).unwrap();
    let (outcome, sent) = s.key_and_sent(&SCOPE, "fields=a&page_token=t");
    assert!(matches!(outcome, KeyOutcome::Key(_)));
    assert!(sent.contains(at("fields")) && sent.contains(at("page_token")));
    assert!(!sent.contains(at("page")), "a default is not sent");
    // Memoised: the same answer without canonicalising again.
    assert_eq!(
        s.key_and_sent(&SCOPE, "fields=a&page_token=t"),
        (outcome, sent)
    );
    // Uncacheable (a set over max_items) and invalid queries still say what they sent.
    let (outcome, sent) = s.key_and_sent(&SCOPE, "fields=a,b,c,d&page%5Ftoken=t");
    assert!(matches!(outcome, KeyOutcome::Uncacheable(_)));
    assert!(sent.contains(at("page_token")) && !sent.contains(at("sort_order")));
    let (outcome, sent) = s.key_and_sent(&SCOPE, "sort_order=ASC&fields=a");
    assert!(matches!(outcome, KeyOutcome::Invalid(_)));
    assert!(sent.contains(at("sort_order")) && sent.contains(at("fields")));
}
