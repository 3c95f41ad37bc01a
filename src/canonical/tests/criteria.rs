//! The `criteria` canonicaliser: table tests (spellings that share a key, near-misses that do not,
//! every rejection) and property tests (idempotent; re-spellings keep the key; small changes of
//! meaning change it).

use proptest::prelude::*;

use super::props::Rng;
use super::*;

fn outcome(c: &str) -> CriteriaOutcome {
    canonicalize_criteria(c, &CriteriaLimits::default())
}

/// The key bytes of a criteria that must canonicalise.
fn ck(c: &str) -> Vec<u8> {
    ck_with(c, &CriteriaLimits::default())
}

fn ck_with(c: &str, limits: &CriteriaLimits) -> Vec<u8> {
    match canonicalize_criteria(c, limits) {
        CriteriaOutcome::Key(k) => key_bytes(&k),
        other => panic!("expected a key for {c:?}, got {other:?}"),
    }
}

fn key_bytes(c: &Criteria) -> Vec<u8> {
    let mut out = Vec::new();
    c.write_key(&mut |b: &[u8]| out.extend_from_slice(b));
    out
}

fn render(c: &str) -> String {
    match outcome(c) {
        CriteriaOutcome::Key(k) => k.render(),
        other => panic!("expected a key for {c:?}, got {other:?}"),
    }
}

fn uncacheable(c: &str) -> NoCacheReason {
    match outcome(c) {
        CriteriaOutcome::Uncacheable(r) => r,
        other => panic!("expected uncacheable for {c:?}, got {other:?}"),
    }
}

fn invalid_with(c: &str, limits: &CriteriaLimits) -> InvalidQuery {
    match canonicalize_criteria(c, limits) {
        CriteriaOutcome::Invalid(i) => i,
        other => panic!("expected invalid for {c:?}, got {other:?}"),
    }
}

fn invalid(c: &str) -> InvalidQuery {
    invalid_with(c, &CriteriaLimits::default())
}

#[test]
fn zoho_doc_spellings_share_one_key() {
    let canonical = "((Company:starts_with:Zoho)and(Last_Name:equals:Smith))";
    let k = ck(canonical);
    for spelling in [
        "((Last_Name:equals:Smith)and(Company:starts_with:Zoho))",
        "((Last_Name:equals:Smith) and (Company:starts_with:Zoho))",
        "(Last_Name:equals:Smith)and(Company:starts_with:Zoho)",
        "  ( (Last_Name:equals:Smith)   and   (Company:starts_with:Zoho) )  ",
        "(((Last_Name:equals:Smith))and(((Company:starts_with:Zoho))))",
        "(((Company:starts_with:Zoho)and(Last_Name:equals:Smith)))",
    ] {
        assert_eq!(ck(spelling), k, "{spelling}");
        assert_eq!(render(spelling), canonical, "{spelling}");
    }
    assert_eq!(render("(Email:equals:a@b.c)"), "(Email:equals:a@b.c)");
    assert_eq!(ck("((((Email:equals:a@b.c))))"), ck("(Email:equals:a@b.c)"));
}

#[test]
fn same_operator_groups_flatten_and_others_do_not() {
    let flat = ck("((A:equals:1)and(B:equals:2)and(C:equals:3))");
    assert_eq!(ck("((A:equals:1)and((B:equals:2)and(C:equals:3)))"), flat);
    assert_eq!(ck("(((C:equals:3)and(A:equals:1))and(B:equals:2))"), flat);
    let nested = ck("((A:equals:1)and((B:equals:2)or(C:equals:3)))");
    assert_ne!(nested, flat);
    assert_ne!(nested, ck("(((A:equals:1)and(B:equals:2))or(C:equals:3))"));
    assert_ne!(
        ck("((A:equals:1)and(B:equals:2))"),
        ck("((A:equals:1)or(B:equals:2))")
    );
    assert_eq!(
        render("((B:equals:2)or((C:equals:3)and(A:equals:1)))"),
        "((B:equals:2)or((A:equals:1)and(C:equals:3)))"
    );
}

#[test]
fn duplicates_are_kept() {
    // Zoho: `equals` matches differently in a one-condition search; never merge by count.
    assert_ne!(
        ck("((A:equals:x)or(A:equals:x))"),
        ck("(A:equals:x)"),
        "duplicate members"
    );
    assert_ne!(ck("(A:in:x,x)"), ck("(A:in:x)"), "duplicate list values");
    assert_eq!(ck("(A:in:x,y,x)"), ck("(A:in:x,x,y)"));
}

#[test]
fn in_lists_are_sets_and_between_is_ordered() {
    let k = ck("(Lead_Status:in:Contacted,New,Lost)");
    assert_eq!(ck("(Lead_Status:in:Lost,Contacted,New)"), k);
    assert_eq!(
        render("(Lead_Status:in:Lost,Contacted,New)"),
        "(Lead_Status:in:Contacted,Lost,New)"
    );
    assert_ne!(ck("(Lead_Status:in:Contacted,New)"), k);
    assert_ne!(ck("(Lead_Status:not_in:Contacted,New,Lost)"), k);
    assert_eq!(
        ck("(Lead_Status:not_in:b,a)"),
        ck("(Lead_Status:not_in:a,b)")
    );
    assert_ne!(ck("(Amount:between:1,2)"), ck("(Amount:between:2,1)"));
    assert_eq!(render("(Amount:between:2,1)"), "(Amount:between:2,1)");
}

#[test]
fn escapes_are_decoded_and_re_escaped() {
    // Zoho's sample: Patricia(Boyle) is sent as Patricia\(Boyle\).
    let k = ck(r"(Last_Name:equals:Patricia\(Boyle\))");
    assert_eq!(
        render(r"(Last_Name:equals:Patricia\(Boyle\))"),
        r"(Last_Name:equals:Patricia\(Boyle\))"
    );
    assert_ne!(ck("(Last_Name:equals:PatriciaBoyle)"), k);
    // An escaped comma is data: one value, not a list of two.
    assert_ne!(ck(r"(Name:in:a\,b)"), ck("(Name:in:a,b)"));
    assert_ne!(ck(r"(Name:equals:a\,b)"), ck(r"(Name:equals:ab)"));
    assert_eq!(render(r"(Name:in:b,a\,c)"), r"(Name:in:a\,c,b)");
    assert_eq!(render(r"(Name:equals:\)\(\,)"), r"(Name:equals:\)\(\,)");
}

#[test]
fn values_keep_colons_case_and_spaces() {
    let t = "(Modified_Time:greater_equal:2023-04-19T05:58:06+05:30)";
    assert_eq!(render(t), t);
    assert_ne!(
        ck(t),
        ck("(Modified_Time:greater_equal:2023-04-19T05:58:06+05:31)")
    );
    assert_ne!(ck("(Name:equals:Smith)"), ck("(Name:equals:smith)"));
    assert_ne!(ck("(Name:equals:Smith)"), ck("(Name:equals:Smith )"));
    assert_ne!(ck("(Name:equals:Smith)"), ck("(Name:equals: Smith)"));
    assert_ne!(ck("(Name:in:a,b)"), ck("(Name:in:a, b)"));
    assert_ne!(ck("(Name:equals:x)"), ck("(name:equals:x)"), "field case");
    assert_ne!(ck("(Name:equals:)"), ck("(Name:equals: )"));
    assert_ne!(ck("(Name:equals:x)"), ck("(Name:not_equal:x)"));
    assert_ne!(ck("(Name:equals:x)"), ck("(Name:starts_with:x)"));
    assert_eq!(render("(Name:equals:)"), "(Name:equals:)");
}

#[test]
fn key_stream_separates_fields() {
    // Values are length-prefixed: moving bytes between values or fields changes the stream.
    assert_ne!(ck("(A:in:ab,c)"), ck("(A:in:a,bc)"));
    assert_ne!(ck("(A:equals:b:c)"), ck("(A:equals:bc)"));
    assert_ne!(
        ck("((A:equals:1)and(B:equals:2))"),
        ck("((A:equals:1)and((B:equals:2)or(C:equals:3)))")
    );
}

#[test]
fn uncertain_criteria_are_uncacheable() {
    use NoCacheReason as R;
    for (c, reason) in [
        ("", R::CriteriaEmpty),
        ("   ", R::CriteriaEmpty),
        ("(Name:EQUALS:x)", R::CriteriaOperatorCase),
        ("(Name:Equals:x)", R::CriteriaOperatorCase),
        ("((A:equals:1)AND(B:equals:2))", R::CriteriaOperatorCase),
        ("((A:equals:1)Or(B:equals:2))", R::CriteriaOperatorCase),
        ("(Name:contains:x)", R::CriteriaUnknownOperator),
        ("(Name:equal:x)", R::CriteriaUnknownOperator),
        ("(Name:like:x)", R::CriteriaUnknownOperator),
        ("( Name:equals:x)", R::CriteriaUnusualField),
        ("(Name :equals:x)", R::CriteriaUnusualField),
        ("(Last Name:equals:x)", R::CriteriaUnusualField),
        (
            "((A:equals:1)and(B:equals:2)or(C:equals:3))",
            R::CriteriaMixedOperators,
        ),
        (
            "(Name:equals:Patricia(Boyle))",
            R::CriteriaUnescapedParenthesis,
        ),
        ("(Name:equals:a(b)", R::CriteriaUnescapedParenthesis),
        (r"(Name:equals:a\\b)", R::CriteriaUnknownEscape),
        (r"(Name:equals:a\:b)", R::CriteriaUnknownEscape),
        (r"(Name:equals:a\", R::CriteriaUnknownEscape),
        ("(Name:equals:a,b)", R::CriteriaUnescapedComma),
        ("(Amount:greater_than:1,000)", R::CriteriaUnescapedComma),
        ("(Amount:between:1)", R::CriteriaValueCount),
        ("(Amount:between:1,2,3)", R::CriteriaValueCount),
        (
            "((A:equals:1)\tand(B:equals:2))",
            R::CriteriaUnusualWhitespace,
        ),
        ("\n(A:equals:1)", R::CriteriaUnusualWhitespace),
    ] {
        assert_eq!(uncacheable(c), reason, "{c:?}");
    }
}

#[test]
fn malformed_criteria_are_invalid_query() {
    for c in [
        "(Name:equals:x",
        "(Name:equals:x))",
        "((Name:equals:x)",
        "()",
        "(())",
        "Name:equals:x",
        "(Name:equals)",
        "(Name)",
        "(:equals:x)",
        "(Name::x)",
        "(A:equals:1)(B:equals:2)",
        "(A:equals:1)and",
        "(A:equals:1)and(",
        "(A:equals:1)xor(B:equals:2)",
        "(A:equals:1)andand(B:equals:2)",
        "(A:equals:1) , (B:equals:2)",
        "(A:equals:1)x",
        "((A:equals:1)and(B:equals:2)))",
        r"(Name:equals:a\)",
    ] {
        let i = invalid(c);
        assert_eq!(i.kind, InvalidKind::CriteriaSyntax, "{c:?}");
        assert_eq!(i.param, "criteria");
        assert_eq!(i.kind.zoho_code(), "INVALID_QUERY");
    }
}

#[test]
fn tokenising_problems_win_over_later_syntax_errors() {
    // After an unescaped `(` nothing can be read with certainty: forward, do not answer 400.
    assert_eq!(
        uncacheable("(Name:equals:a(b))))"),
        NoCacheReason::CriteriaUnescapedParenthesis
    );
    // A recorded uncertainty does not hide a syntax error that does not depend on it.
    assert_eq!(
        invalid("(Name:EQUALS:x)(B:equals:1)").kind,
        InvalidKind::CriteriaSyntax
    );
}

#[test]
fn zoho_limits_are_answered_locally() {
    let crit = |n: usize| {
        let members: Vec<String> = (0..n).map(|i| format!("(F{i}:equals:{i})")).collect();
        format!("({})", members.join("or"))
    };
    ck(&crit(15));
    let i = invalid(&crit(16));
    assert_eq!(i.kind, InvalidKind::CriteriaLimitExceeded);
    assert_eq!(i.kind.zoho_code(), "CRITERIA_LIMIT_EXCEEDED");
    // Duplicates count as written.
    let dup = format!("({})", vec!["(A:equals:1)"; 16].join("and"));
    assert_eq!(invalid(&dup).kind, InvalidKind::CriteriaLimitExceeded);

    let values = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    ck(&format!("(Id:in:{})", values(100)));
    let i = invalid(&format!("(Id:in:{})", values(101)));
    assert_eq!(i.kind, InvalidKind::TooManyValues);
    assert_eq!(i.kind.zoho_code(), "INVALID_QUERY");
    // Zoho documents the bound for `in` only.
    ck(&format!("(Id:not_in:{})", values(101)));
    // An uncertainty elsewhere wins: the request is forwarded.
    assert_eq!(
        uncacheable(&format!("((Id:in:{})and(A:EQUALS:1))", values(101))),
        NoCacheReason::CriteriaOperatorCase
    );
}

#[test]
fn gateway_bounds_forward_uncached() {
    let limits = CriteriaLimits {
        max_bytes: 20,
        ..CriteriaLimits::default()
    };
    ck_with("(Name:equals:abcdef)", &limits);
    assert_eq!(
        canonicalize_criteria("(Name:equals:abcdefg)", &limits),
        CriteriaOutcome::Uncacheable(NoCacheReason::CriteriaTooComplex)
    );
    let deep = |n: usize| format!("{}(A:equals:1){}", "(".repeat(n - 1), ")".repeat(n - 1));
    ck(&deep(16));
    assert_eq!(uncacheable(&deep(17)), NoCacheReason::CriteriaTooComplex);
    // Deep and unbalanced: the bound stops the parse first.
    assert_eq!(
        uncacheable(&"(".repeat(10_000)[..8000]),
        NoCacheReason::CriteriaTooComplex
    );
}

#[test]
fn messages_never_echo_input() {
    let secret = "s3cr3t-value";
    for c in [
        format!("(Name:equals:{secret}"),
        format!("(Name:equals:{secret})x"),
        format!("({secret})"),
    ] {
        let i = invalid(&c);
        assert!(!i.message.contains(secret), "{}", i.message);
        assert!(i.message.len() <= 200);
    }
}

#[test]
fn defaults_deserialise_independently() {
    let l: CriteriaLimits = serde_json::from_str(r#"{"max_depth": 4}"#).unwrap();
    assert_eq!(
        l,
        CriteriaLimits {
            max_depth: 4,
            ..CriteriaLimits::default()
        }
    );
    assert_eq!(CriteriaLimits::default().max_criteria, 15);
    assert_eq!(CriteriaLimits::default().max_in_values, 100);
}

// ---- property tests ----

const FIELDS: [&str; 3] = ["Last_Name", "Email", "Company"];
const ONE: [&str; 7] = [
    "equals",
    "not_equal",
    "starts_with",
    "greater_than",
    "greater_equal",
    "less_than",
    "less_equal",
];

/// A generated criteria tree. Every value is made unique (suffix `#<index>`), so the tree is a
/// read-once formula whose canonical form is unique, and any change below changes it.
#[derive(Clone, Debug)]
enum T {
    C {
        field: usize,
        /// `0..7` an index into [`ONE`], 7 `in`, 8 `not_in`, 9 `between`.
        op: usize,
        values: Vec<String>,
    },
    G {
        and: bool,
        members: Vec<T>,
    },
}

fn op_name(op: usize) -> &'static str {
    match op {
        0..7 => ONE[op],
        7 => "in",
        8 => "not_in",
        _ => "between",
    }
}

fn tree() -> impl Strategy<Value = T> {
    let value = "[a-zA-Z0-9 (),:+&=%_Üé😀-]{0,5}";
    let leaf = (
        0..FIELDS.len(),
        0usize..10,
        prop::collection::vec(value, 1..4),
    )
        .prop_map(|(field, op, mut values)| {
            match op {
                0..7 => values.truncate(1),
                9 => {
                    values.truncate(2);
                    if values.len() < 2 {
                        values.push("z".into());
                    }
                }
                _ => {}
            }
            T::C { field, op, values }
        });
    leaf.prop_recursive(3, 15, 4, |inner| {
        (any::<bool>(), prop::collection::vec(inner, 1..4))
            .prop_map(|(and, members)| T::G { and, members })
    })
    .prop_map(|mut t| {
        let mut i = 0;
        uniquify(&mut t, &mut i);
        t
    })
    .prop_filter("Zoho's 15-criteria limit", |t| leaves(t) <= 15)
}

fn uniquify(t: &mut T, i: &mut usize) {
    match t {
        T::C { values, .. } => {
            for v in values {
                v.push_str(&format!("#{i}"));
                *i += 1;
            }
        }
        T::G { members, .. } => members.iter_mut().for_each(|m| uniquify(m, i)),
    }
}

fn leaves(t: &T) -> usize {
    match t {
        T::C { .. } => 1,
        T::G { members, .. } => members.iter().map(leaves).sum(),
    }
}

fn escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if matches!(c, '(' | ')' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn sp(r: &mut Rng) -> &'static str {
    ["", "", "", " ", "  "][r.pick(5)]
}

/// Spells `t` randomly: member order, `in` value order, spaces, redundant parentheses,
/// same-operator nesting, and (at the top) whether the outer group has its parentheses.
fn spell(t: &T, r: &mut Rng, top: bool) -> String {
    let s = match t {
        T::C { field, op, values } => {
            let mut vs: Vec<String> = values.iter().map(|v| escape(v)).collect();
            if matches!(op, 7 | 8) {
                r.shuffle(&mut vs);
            }
            format!("({}:{}:{})", FIELDS[*field], op_name(*op), vs.join(","))
        }
        T::G { and, members } => {
            let mut parts: Vec<String> = members.iter().map(|m| spell(m, r, false)).collect();
            r.shuffle(&mut parts);
            let word = if *and { "and" } else { "or" };
            if parts.len() >= 3 && r.coin() {
                let b = parts.pop().unwrap_or_default();
                let a = parts.pop().unwrap_or_default();
                parts.push(format!("({a}{}{word}{}{b})", sp(r), sp(r)));
            }
            let joined = parts
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(&format!("{}{word}{}", sp(r), sp(r)));
            if top && parts.len() > 1 && r.coin() {
                return format!("{}{joined}{}", sp(r), sp(r));
            }
            format!("({}{joined}{})", sp(r), sp(r))
        }
    };
    if r.pick(5) == 0 {
        format!("({}{s}{})", sp(r), sp(r))
    } else {
        s
    }
}

fn eligible_groups(t: &T) -> usize {
    match t {
        T::C { .. } => 0,
        T::G { members, .. } => {
            usize::from(members.len() >= 2) + members.iter().map(eligible_groups).sum::<usize>()
        }
    }
}

fn flip_nth(t: &mut T, n: &mut usize) -> bool {
    let T::G { and, members } = t else {
        return false;
    };
    if members.len() >= 2 {
        if *n == 0 {
            *and = !*and;
            return true;
        }
        *n -= 1;
    }
    members.iter_mut().any(|m| flip_nth(m, n))
}

/// `kind`: 0 value edit, 1 value case flip, 2 field, 3 operator (same arity), 4 one list value
/// more or less, 5 join word of a group with ≥ 2 members (falls back to 0 when there is none).
fn mutate(t: &mut T, kind: usize, pick: usize) {
    if kind == 5 {
        let eligible = eligible_groups(t);
        if eligible > 0 {
            assert!(flip_nth(t, &mut (pick % eligible)));
            return;
        }
    }
    let mut target = pick % leaves(t);
    assert!(mutate_leaf(
        t,
        if kind == 5 { 0 } else { kind },
        &mut target
    ));
}

fn mutate_leaf(t: &mut T, kind: usize, target: &mut usize) -> bool {
    match t {
        T::C { field, op, values } => {
            if *target > 0 {
                *target -= 1;
                return false;
            }
            let v = &mut values[0];
            match kind {
                1 if v.chars().any(|c| c.is_ascii_alphabetic()) => {
                    let i = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                    let c = v.as_bytes()[i] as char;
                    let flipped = if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    };
                    v.replace_range(i..i + 1, &flipped.to_string());
                }
                2 => *field = (*field + 1) % FIELDS.len(),
                3 if *op < 7 => *op = (*op + 1) % 7,
                3 if *op < 9 => *op = 15 - *op, // in <-> not_in
                4 if matches!(*op, 7 | 8) => {
                    if values.len() > 1 {
                        values.pop();
                    } else {
                        values.push("extra".into());
                    }
                }
                _ => v.push('!'),
            }
            true
        }
        T::G { members, .. } => members.iter_mut().any(|m| mutate_leaf(m, kind, target)),
    }
}

proptest! {
    #[test]
    fn canonicalising_is_idempotent(t in tree(), seed in any::<u64>()) {
        let spelled = spell(&t, &mut Rng(seed), true);
        let CriteriaOutcome::Key(c1) = outcome(&spelled) else {
            panic!("not a key: {spelled} -> {:?}", outcome(&spelled));
        };
        let rendered = c1.render();
        let CriteriaOutcome::Key(c2) = outcome(&rendered) else {
            panic!("rendering is not a key: {rendered}");
        };
        prop_assert_eq!(c2.render(), rendered);
        prop_assert_eq!(key_bytes(&c1), key_bytes(&c2));
        prop_assert_eq!(c1.criteria_count(), leaves(&t));
    }

    #[test]
    fn respellings_keep_the_key(t in tree(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let a = spell(&t, &mut Rng(s1), true);
        let b = spell(&t, &mut Rng(s2), true);
        prop_assert_eq!(ck(&a), ck(&b), "{} vs {}", a, b);
    }

    #[test]
    fn small_changes_of_meaning_change_the_key(
        t in tree(), kind in 0usize..6, pick in any::<usize>(), s1 in any::<u64>(), s2 in any::<u64>(),
    ) {
        let mut m = t.clone();
        mutate(&mut m, kind, pick);
        let a = spell(&t, &mut Rng(s1), true);
        let b = spell(&m, &mut Rng(s2), true);
        prop_assert_ne!(ck(&a), ck(&b), "{} vs {}", a, b);
    }

    /// Stable-toolchain companion of the cargo-fuzz target: arbitrary input never panics, and a
    /// canonical form is a fixed point.
    #[test]
    fn arbitrary_criteria_never_panic(c in "[()a-zA-Z_:,\\\\ \t.$é]{0,60}") {
        if let CriteriaOutcome::Key(k) = outcome(&c) {
            let rendered = k.render();
            let CriteriaOutcome::Key(again) = outcome(&rendered) else {
                panic!("{c:?} rendered {rendered:?}, which is not a key");
            };
            prop_assert_eq!(key_bytes(&again), key_bytes(&k));
        }
    }
}
