//! Table tests: spellings that must share a key, near-misses that must not, every rejection.

use super::*;

fn crit(field: &str, cmp: &str, value: &str) -> String {
    format!(
        r#"{{"field":{{"api_name":{}}},"comparator":{},"value":{}}}"#,
        serde_json::to_string(field).unwrap(),
        serde_json::to_string(cmp).unwrap(),
        serde_json::to_string(value).unwrap()
    )
}

fn group(op: &str, members: &[String]) -> String {
    format!(
        r#"{{"group_operator":"{op}","group":[{}]}}"#,
        members.join(",")
    )
}

fn invalid(q: &str) -> InvalidQuery {
    invalid_with(q, &CanonicalRules::default())
}

fn invalid_with(q: &str, rules: &CanonicalRules) -> InvalidQuery {
    match canonicalize(q, rules) {
        Canonical::Invalid(i) => i,
        other => panic!("expected invalid for {q:?}, got {other:?}"),
    }
}

fn uncacheable(q: &str) -> NoCacheReason {
    match canonicalize(q, &CanonicalRules::default()) {
        Canonical::Uncacheable(r) => r,
        other => panic!("expected uncacheable for {q:?}, got {other:?}"),
    }
}

#[test]
fn seed_three_client_spellings_share_one_key() {
    let curl = key(SEED_CURL);
    let python = form("filters", SEED_JSON_PY);
    assert!(
        python.contains('+'),
        "python spelling uses '+' for spaces: {python}"
    );
    let node = format!("filters={}&", encode_uri(SEED_JSON_COMPACT));
    assert!(
        node.contains(':') && node.contains(',') && node.ends_with('&'),
        "{node}"
    );
    assert_eq!(key(&python), curl);
    assert_eq!(key(&node), curl);
    // And the defaults spelled out.
    assert_eq!(key(&format!("{SEED_CURL}&page=1&per_page=200")), curl);
    assert_eq!(key(&format!("per_page=0200&{SEED_CURL}&page=01")), curl);
}

#[test]
fn absent_query_equals_defaults() {
    assert_eq!(key(""), key("page=1&per_page=200"));
    assert_eq!(key("&&"), key(""));
    assert_ne!(key(""), key(SEED_CURL));
}

#[test]
fn plus_and_pct2b_differ() {
    let a = fq(&crit("name", "equal", "a+b"));
    // `+` inside a form value is a space; %2B is a plus.
    let plus_raw = a.replace("%2B", "+");
    assert_ne!(key(&a), key(&plus_raw));
    assert_eq!(key(&plus_raw), key(&fq(&crit("name", "equal", "a b"))));
}

#[test]
fn encoded_separators_stay_inside_values() {
    let amp = key(&fq(&crit("name", "equal", "a&b=c")));
    let q = fq(&crit("name", "equal", "a&b=c"));
    assert!(q.contains("%26") && q.contains("%3D"));
    // Unknown params: %26 / %3D are data; real & and = are separators.
    assert_ne!(key("x=a%26y%3Db"), key("x=a&y=b"));
    assert_eq!(key("x=a=b"), key("x=a%3Db"), "only the first '=' separates");
    assert_ne!(amp, key(&fq(&crit("name", "equal", "a"))));
}

#[test]
fn unicode_escapes_equal_raw_unicode() {
    let raw = key(&fq(&crit("name", "equal", "Über")));
    let esc = key(&fq(
        r#"{"field":{"api_name":"name"},"comparator":"equal","value":"\u00dcber"}"#,
    ));
    let esc_upper = key(&fq(
        r#"{"field":{"api_name":"n\u0061me"},"comparator":"equal","value":"\u00DCber"}"#,
    ));
    assert_eq!(raw, esc);
    assert_eq!(raw, esc_upper);
    // Surrogate pair vs raw astral character.
    assert_eq!(
        key(&fq(&crit("name", "equal", "😀"))),
        key(&fq(
            r#"{"field":{"api_name":"name"},"comparator":"equal","value":"\ud83d\ude00"}"#
        ))
    );
    // No Unicode normalisation: NFC Ü vs U + combining diaeresis differ.
    assert_ne!(raw, key(&fq(&crit("name", "equal", "U\u{308}ber"))));
}

#[test]
fn one_member_group_equals_bare_criterion() {
    let c = crit("name", "equal", "Tier1");
    assert_eq!(
        key(&fq(&group("or", std::slice::from_ref(&c)))),
        key(&fq(&c))
    );
    assert_eq!(
        key(&fq(&group("AND", std::slice::from_ref(&c)))),
        key(&fq(&c))
    );
}

#[test]
fn member_order_and_duplicates_do_not_matter_in_semantic_mode() {
    let a = crit("name", "equal", "Tier1");
    let b = crit("description", "starts_with", "x");
    let base = key(&fq(&group("or", &[a.clone(), b.clone()])));
    assert_eq!(key(&fq(&group("or", &[b.clone(), a.clone()]))), base);
    assert_eq!(
        key(&fq(&group("Or", &[b.clone(), a.clone(), b.clone()]))),
        base
    );
    // Duplicates collapsing to one member equal the bare criterion.
    assert_eq!(
        key(&fq(&group("and", &[a.clone(), a.clone()]))),
        key(&fq(&a))
    );
}

#[test]
fn nested_same_operator_groups_flatten() {
    let a = crit("name", "equal", "A");
    let b = crit("name", "equal", "B");
    let c = crit("name", "equal", "C");
    let flat = key(&fq(&group("and", &[a.clone(), b.clone(), c.clone()])));
    let nested = key(&fq(&group(
        "and",
        &[a.clone(), group("AND", &[c.clone(), b.clone()])],
    )));
    assert_eq!(flat, nested);
    // Different operator does not flatten.
    let mixed = key(&fq(&group(
        "and",
        &[a.clone(), group("or", &[b.clone(), c.clone()])],
    )));
    assert_ne!(flat, mixed);
    // A one-member inner group of the other operator unwraps, then flattens.
    let unwrapped = key(&fq(&group(
        "and",
        &[
            a.clone(),
            group("or", &[group("and", &[b.clone(), c.clone()])]),
        ],
    )));
    assert_eq!(flat, unwrapped);
}

#[test]
fn near_misses_differ() {
    let base = key(SEED_CURL);
    let swap = |from: &str, to: &str| {
        let j = SEED_JSON_COMPACT.replacen(from, to, 1);
        assert_ne!(j, SEED_JSON_COMPACT);
        key(&fq(&j))
    };
    assert_ne!(swap("Tier1", "tier1"), base, "value case");
    assert_ne!(swap("\"equal\"", "\"starts_with\""), base, "comparator");
    assert_ne!(swap("\"or\"", "\"and\""), base, "operator");
    assert_ne!(swap("\"name\"", "\"description\""), base, "field");
    assert_ne!(swap("Tier1", "Tier1 "), base, "no trimming");
    assert_ne!(key(&format!("{SEED_CURL}&page=2")), base, "page");
    // Single criteria, so member ordering cannot mask a value that is folded in the key.
    assert_ne!(
        key(&fq(&crit("name", "equal", "Tier1"))),
        key(&fq(&crit("name", "equal", "tier1"))),
        "value case, single criterion"
    );
    assert_ne!(
        key(&fq(&crit("name", "equal", "Tier1"))),
        key(&fq(&crit("description", "equal", "Tier1"))),
        "field, single criterion"
    );
    assert_ne!(key(&format!("{SEED_CURL}&per_page=100")), base, "per_page");
    // String "1" is cacheable; number 1 is uncacheable, so it never shares the key.
    let s1 = canonicalize(&fq(&crit("name", "equal", "1")), &CanonicalRules::default());
    assert!(matches!(s1, Canonical::Key(_)));
    let n1 = fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":1}"#);
    assert_eq!(uncacheable(&n1), NoCacheReason::UnsupportedValueType);
}

#[test]
fn scope_changes_the_key() {
    let Canonical::Key(q) = canonicalize(SEED_CURL, &CanonicalRules::default()) else {
        panic!()
    };
    let base = cache_key(&SCOPE, &q);
    let cred = [7u8; 32];
    let other_cred = [8u8; 32];
    let variants = [
        KeyScope {
            tenant: "other",
            ..SCOPE
        },
        KeyScope {
            version: "v8",
            ..SCOPE
        },
        KeyScope {
            method: "HEAD",
            ..SCOPE
        },
        KeyScope {
            route: "/settings/user_groups",
            ..SCOPE
        },
        KeyScope {
            credential: Some(&cred),
            ..SCOPE
        },
        KeyScope {
            external: Some(b"Leads.External_Id"),
            ..SCOPE
        },
        KeyScope {
            external: Some(b""),
            ..SCOPE
        },
    ];
    let mut keys = vec![base];
    for v in &variants {
        keys.push(cache_key(v, &q));
    }
    keys.push(cache_key(
        &KeyScope {
            credential: Some(&other_cred),
            ..SCOPE
        },
        &q,
    ));
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "every scope variant has its own key");
    // Field boundaries are length-prefixed: moving bytes between fields changes the key.
    let a = cache_key(
        &KeyScope {
            tenant: "ab",
            version: "c",
            ..SCOPE
        },
        &q,
    );
    let b = cache_key(
        &KeyScope {
            tenant: "a",
            version: "bc",
            ..SCOPE
        },
        &q,
    );
    assert_ne!(a, b);
}

#[test]
fn strict_mode_keeps_order_and_structure() {
    let strict = CanonicalRules {
        mode: FilterMode::Strict,
        ..CanonicalRules::default()
    };
    let a = crit("name", "equal", "A");
    let b = crit("name", "equal", "B");
    let ab = key_with(&fq(&group("or", &[a.clone(), b.clone()])), &strict);
    let ba = key_with(&fq(&group("or", &[b.clone(), a.clone()])), &strict);
    assert_ne!(ab, ba);
    assert_ne!(
        key_with(&fq(&group("or", std::slice::from_ref(&a))), &strict),
        key_with(&fq(&a), &strict)
    );
    // Syntactic normalisations still apply.
    let ab_spelled = key_with(
        &fq(
            r#" { "group" : [ {"value":"A","comparator":"equal","field":{"api_name":"name"}},
            {"field":{"api_name":"name"},"comparator":"equal","value":"\u0042"} ], "group_operator":"OR" } "#,
        ),
        &strict,
    );
    assert_eq!(ab, ab_spelled);
    // Strict and semantic keys never collide, even for an already-canonical filter.
    assert_ne!(key_with(&fq(&a), &strict), key(&fq(&a)));
}

#[test]
fn unknown_params_sorted_repeats_kept_in_order() {
    assert_ne!(key("a=1,2"), key("a=1&a=2"));
    assert_ne!(key("a=1&a=2"), key("a=2&a=1"));
    assert_eq!(key("b=1&a=2&a=3"), key("a=2&b=1&a=3"));
    assert_ne!(key("a"), key("a="));
    assert_ne!(key("Page=2"), key("page=2"));
    assert_eq!(key("a%20b=c+d"), key("a+b=c%20d"));
    assert_eq!(key("p%61ge=2"), key("page=2"));
}

#[test]
fn validation_rejections() {
    let cases: Vec<(String, &str, InvalidKind)> = vec![
        ("filters=%zz".into(), "query", InvalidKind::BadEncoding),
        ("filters=%4".into(), "query", InvalidKind::BadEncoding),
        ("x=%FF".into(), "query", InvalidKind::BadEncoding),
        (
            fq("{\"group_operator\":\"or\""),
            "filters",
            InvalidKind::InvalidJson,
        ),
        ("filters=".into(), "filters", InvalidKind::InvalidJson),
        (
            fq(&(crit("name", "equal", "a") + "x")),
            "filters",
            InvalidKind::InvalidJson,
        ),
        (
            fq(r#"{"value":"a\x"}"#),
            "filters",
            InvalidKind::InvalidJson,
        ),
        (fq("[]"), "filters", InvalidKind::BadShape),
        (fq("{}"), "filters", InvalidKind::BadShape),
        (fq(r#"{"foo":1}"#), "filters", InvalidKind::BadShape),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal"}"#),
            "filters",
            InvalidKind::BadShape,
        ),
        (
            fq(r#"{"field":"name","comparator":"equal","value":"a"}"#),
            "filters",
            InvalidKind::BadShape,
        ),
        (
            fq(r#"{"group_operator":"or","group":{}}"#),
            "filters",
            InvalidKind::BadShape,
        ),
        (
            fq(&group("or", &["1".into()])),
            "filters",
            InvalidKind::BadShape,
        ),
        (fq(&group("or", &[])), "filters", InvalidKind::EmptyGroup),
        (
            fq(&group("xor", &[crit("name", "equal", "a")])),
            "filters",
            InvalidKind::UnknownOperator,
        ),
        (
            fq(&crit("email", "equal", "a")),
            "filters",
            InvalidKind::FieldNotAllowed,
        ),
        (
            fq(&crit("name", "contains", "a")),
            "filters",
            InvalidKind::ComparatorNotAllowed,
        ),
        (
            fq(&crit("name", "EQUAL", "a")),
            "filters",
            InvalidKind::ComparatorNotAllowed,
        ),
        ("per_page=0".into(), "per_page", InvalidKind::OutOfRange),
        ("per_page=201".into(), "per_page", InvalidKind::OutOfRange),
        ("page=0".into(), "page", InvalidKind::OutOfRange),
        ("page=99999999999".into(), "page", InvalidKind::OutOfRange),
        ("page=-1".into(), "page", InvalidKind::NotANumber),
        ("page=two".into(), "page", InvalidKind::NotANumber),
        ("page=".into(), "page", InvalidKind::NotANumber),
        ("page".into(), "page", InvalidKind::NotANumber),
        ("page=+1".into(), "page", InvalidKind::NotANumber),
        ("per_page=1.5".into(), "per_page", InvalidKind::NotANumber),
    ];
    for (q, param, kind) in cases {
        let inv = invalid(&q);
        assert_eq!(
            (inv.param.as_ref(), inv.kind),
            (param, kind),
            "{q}: {inv:?}"
        );
        assert!(inv.message.len() < 120, "short message: {}", inv.message);
    }
}

#[test]
fn limits_are_enforced() {
    let rules = CanonicalRules {
        limits: FilterLimits {
            max_bytes: 64,
            max_depth: 4,
            max_criteria: 2,
        },
        ..CanonicalRules::default()
    };
    let a = crit("name", "equal", "A");
    let long = fq(&crit("name", "equal", &"x".repeat(64)));
    assert_eq!(invalid_with(&long, &rules).kind, InvalidKind::TooLarge);
    let deep = fq(&group("or", &[group("and", &[a.clone(), a.clone()])]));
    let roomy = CanonicalRules {
        limits: FilterLimits {
            max_bytes: 4096,
            ..rules.limits.clone()
        },
        ..rules.clone()
    };
    assert_eq!(invalid_with(&deep, &roomy).kind, InvalidKind::TooDeep);
    let many = fq(&group("or", &[a.clone(), a.clone(), a.clone()]));
    assert_eq!(
        invalid_with(&many, &roomy).kind,
        InvalidKind::TooManyCriteria
    );
    // Defaults: a huge nesting is rejected without a stack overflow.
    let bomb = format!("filters={}{}", "%5B".repeat(100_000), "%5D".repeat(100_000));
    let rules = CanonicalRules {
        limits: FilterLimits {
            max_bytes: 1 << 20,
            ..FilterLimits::default()
        },
        ..CanonicalRules::default()
    };
    assert_eq!(invalid_with(&bomb, &rules).kind, InvalidKind::TooDeep);
    // The seed fits the defaults comfortably.
    key(SEED_CURL);
}

#[test]
fn uncacheable_reasons() {
    let a = crit("name", "equal", "A");
    let cases: Vec<(String, NoCacheReason)> = vec![
        (
            format!("{SEED_CURL}&{SEED_CURL}"),
            NoCacheReason::RepeatedParam,
        ),
        ("page=1&page=1".into(), NoCacheReason::RepeatedParam),
        ("per_page=5&per_page=6".into(), NoCacheReason::RepeatedParam),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":"a","value":"a"}"#),
            NoCacheReason::DuplicateJsonKey,
        ),
        (
            fq(
                r#"{"field":{"api_name":"name","api_name":"name"},"comparator":"equal","value":"a"}"#,
            ),
            NoCacheReason::DuplicateJsonKey,
        ),
        (
            fq(&format!(
                r#"{{"group_operator":"or","group_operator":"or","group":[{a}]}}"#
            )),
            NoCacheReason::DuplicateJsonKey,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":1}"#),
            NoCacheReason::UnsupportedValueType,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":true}"#),
            NoCacheReason::UnsupportedValueType,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":null}"#),
            NoCacheReason::UnsupportedValueType,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":["a"]}"#),
            NoCacheReason::UnsupportedValueType,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":{"a":"b"}}"#),
            NoCacheReason::UnsupportedValueType,
        ),
        (
            fq(r#"{"field":{"id":"123"},"comparator":"equal","value":"a"}"#),
            NoCacheReason::UnsupportedFieldSelector,
        ),
        (
            fq(r#"{"field":{"api_name":"name","id":"123"},"comparator":"equal","value":"a"}"#),
            NoCacheReason::UnsupportedFieldSelector,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":"a","type":"x"}"#),
            NoCacheReason::UnknownJsonMember,
        ),
        (
            fq(r#"{"field":{"api_name":"name","module":"x"},"comparator":"equal","value":"a"}"#),
            NoCacheReason::UnknownJsonMember,
        ),
        (
            fq(&format!(r#"{{"group_operator":"or","group":[{a}],"x":1}}"#)),
            NoCacheReason::UnknownJsonMember,
        ),
        (
            fq(
                r#"{"field":{"api_name":"name"},"comparator":"equal","value":"a","group_operator":"or"}"#,
            ),
            NoCacheReason::UnknownJsonMember,
        ),
        (
            fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":"\ud800"}"#),
            NoCacheReason::LoneSurrogate,
        ),
        (
            format!("filters={SEED_JSON_COMPACT}"),
            NoCacheReason::UnencodedCharacter,
        ),
        ("x=a b".into(), NoCacheReason::UnencodedCharacter),
        ("x=é".into(), NoCacheReason::UnencodedCharacter),
    ];
    for (q, reason) in cases {
        assert_eq!(uncacheable(&q), reason, "{q}");
    }
    // Uncacheable beats a validation failure elsewhere in the tree, not a syntax error.
    let bad_field_and_number = fq(&group(
        "or",
        &[
            crit("email", "equal", "a"),
            r#"{"field":{"api_name":"name"},"comparator":"equal","value":1}"#.into(),
        ],
    ));
    assert_eq!(
        uncacheable(&bad_field_and_number),
        NoCacheReason::UnsupportedValueType
    );
    let syntax = fq(r#"{"field":{"api_name":"name"},"comparator":"equal","value":1"#);
    assert_eq!(invalid(&syntax).kind, InvalidKind::InvalidJson);
}

#[test]
fn labels_are_stable() {
    assert_eq!(NoCacheReason::RepeatedParam.as_str(), "repeated_param");
    assert_eq!(InvalidKind::EmptyGroup.as_str(), "empty_group");
    assert_eq!(FilterMode::Strict.as_str(), "strict");
    let k = key(SEED_CURL);
    assert_eq!(k.to_string().len(), 16);
    assert_eq!(k.to_hex().len(), 64);
    assert!(k.to_hex().starts_with(&k.to_string()));
}

#[test]
fn rules_deserialise_with_defaults() {
    let l: FilterLimits = serde_json::from_str(r#"{"max_depth":3}"#).unwrap();
    assert_eq!(
        l,
        FilterLimits {
            max_depth: 3,
            ..FilterLimits::default()
        }
    );
    let m: FilterMode = serde_json::from_str(r#""strict""#).unwrap();
    assert_eq!(m, FilterMode::Strict);
}

#[test]
fn canonical_json_round_trips() {
    let Canonical::Key(q) = canonicalize(SEED_CURL, &CanonicalRules::default()) else {
        panic!()
    };
    let json = q.canonical_filters_json().unwrap();
    assert_eq!(
        json,
        r#"{"group":[{"comparator":"equal","field":{"api_name":"name"},"value":"Tier1"},{"comparator":"equal","field":{"api_name":"name"},"value":"Tier2"}],"group_operator":"or"}"#
    );
    assert_eq!(key(&fq(&json)), key(SEED_CURL));
    assert_eq!((q.page(), q.per_page()), (1, 200));
}

#[test]
fn hex_case_and_encoding_choice_do_not_matter() {
    let upper = key(&fq(&crit("name", "equal", "a+b c")));
    // Lower-case hex digits, raw sub-delimiters, `+` for the space, `%2b` for the plus.
    let manual = "filters=%7b%22field%22:%7b%22api_name%22:%22name%22%7d,%22comparator%22:%22equal%22,%22value%22:%22a%2bb+c%22%7d";
    assert_eq!(key(manual), upper);
    assert_ne!(key(manual), key(&fq(&crit("name", "equal", "a b c"))));
}

#[test]
fn messages_never_echo_client_input() {
    let evil = "<img src=x onerror=zzmarker>";
    for q in [
        fq(&crit(evil, "equal", "a")),
        fq(&crit("name", evil, "a")),
        fq(&group(evil, &[crit("name", "equal", "a")])),
        format!("page={}", pct(evil)),
        fq(&format!("{{\"{evil}\"")),
    ] {
        let inv = invalid(&q);
        assert!(!inv.message.contains("zzmarker"), "{}", inv.message);
        assert!(!inv.to_string().contains("zzmarker"));
    }
}

#[test]
fn outcome_precedence() {
    // Bad encoding anywhere beats everything.
    assert_eq!(invalid("x=%zz&y={&page=0").kind, InvalidKind::BadEncoding);
    // Unencoded characters and repeats beat page / filters validation.
    assert_eq!(uncacheable("page=0&y={"), NoCacheReason::UnencodedCharacter);
    assert_eq!(
        uncacheable(&format!("page=0&{}&{}", fq("[]"), fq("[]"))),
        NoCacheReason::RepeatedParam
    );
    // page / per_page are checked before filters.
    assert_eq!(
        invalid(&format!("per_page=0&{}", fq("[]"))).param,
        "per_page"
    );
    // A repeated unknown parameter is fine.
    key("x=1&x=1");
}
