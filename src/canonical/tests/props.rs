//! Property tests: idempotence, equivalent spellings share a key, small changes of meaning change
//! it.

use proptest::prelude::*;

use super::*;

/// A generated filter tree. Leaf values are made unique (suffix `#<index>`), so the tree is a
/// read-once formula: its semantic canonical form is unique, and any change below changes it.
#[derive(Clone, Debug)]
enum T {
    C {
        name: bool,
        equal: bool,
        value: String,
    },
    G {
        and: bool,
        members: Vec<T>,
    },
}

fn tree() -> impl Strategy<Value = T> {
    let leaf = (
        any::<bool>(),
        any::<bool>(),
        "[a-zA-Z0-9 +&=%\"\\\\/_Üé😀\u{7f}\u{1}-]{0,6}",
    )
        .prop_map(|(name, equal, value)| T::C { name, equal, value });
    leaf.prop_recursive(3, 24, 4, |inner| {
        (any::<bool>(), prop::collection::vec(inner, 1..4))
            .prop_map(|(and, members)| T::G { and, members })
    })
    .prop_map(|mut t| {
        let mut i = 0;
        uniquify(&mut t, &mut i);
        t
    })
}

fn uniquify(t: &mut T, i: &mut usize) {
    match t {
        T::C { value, .. } => {
            value.push_str(&format!("#{i}"));
            *i += 1;
        }
        T::G { members, .. } => members.iter_mut().for_each(|m| uniquify(m, i)),
    }
}

/// SplitMix64: spelling choices from one proptest-chosen seed.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(super) fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub(super) fn shuffle<X>(&mut self, v: &mut [X]) {
        for i in (1..v.len()).rev() {
            let j = self.pick(i + 1);
            v.swap(i, j);
        }
    }
}

fn ws(r: &mut Rng) -> &'static str {
    ["", "", " ", "\n", "\t", " \r\n "][r.pick(6)]
}

/// A JSON string literal spelled randomly: raw or `\u` escapes (either hex case), `\/`.
fn jstr(s: &str, r: &mut Rng) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let escape = r.pick(3) == 0;
        match c {
            '"' if !escape => out.push_str("\\\""),
            '\\' if !escape => out.push_str("\\\\"),
            '/' if escape => out.push_str("\\/"),
            c if escape || (c as u32) < 0x20 => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    if r.coin() {
                        out.push_str(&format!("\\u{:04x}", unit));
                    } else {
                        out.push_str(&format!("\\u{:04X}", unit));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn op_spelling(and: bool, r: &mut Rng) -> String {
    let op = if and { "and" } else { "or" };
    op.chars()
        .map(|c| if r.coin() { c.to_ascii_uppercase() } else { c })
        .collect()
}

fn object(mut members: Vec<(String, String)>, r: &mut Rng) -> String {
    r.shuffle(&mut members);
    let body: Vec<String> = members
        .into_iter()
        .map(|(k, v)| format!("{}{}{}:{}{}{}", ws(r), jstr(&k, r), ws(r), ws(r), v, ws(r)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Renders `t` as JSON with random key order, whitespace, escapes and operator case; with
/// `semantic`, also shuffles, duplicates and wraps members in ways semantic mode ignores.
fn spell(t: &T, r: &mut Rng, semantic: bool) -> String {
    match t {
        T::C { name, equal, value } => {
            let field = object(
                vec![(
                    "api_name".into(),
                    jstr(if *name { "name" } else { "description" }, r),
                )],
                r,
            );
            let cmp = jstr(if *equal { "equal" } else { "starts_with" }, r);
            let node = object(
                vec![
                    ("field".into(), field),
                    ("comparator".into(), cmp),
                    ("value".into(), jstr(value, r)),
                ],
                r,
            );
            if semantic && r.pick(6) == 0 {
                // A one-member group of either operator equals its member.
                let op = op_spelling(r.coin(), r);
                object(
                    vec![
                        ("group_operator".into(), jstr(&op, r)),
                        ("group".into(), format!("[{node}]")),
                    ],
                    r,
                )
            } else {
                node
            }
        }
        T::G { and, members } => {
            let mut parts: Vec<String> = members.iter().map(|m| spell(m, r, semantic)).collect();
            if semantic {
                if r.pick(4) == 0 {
                    let i = r.pick(members.len());
                    let dup = spell(&members[i], r, semantic);
                    parts.push(dup);
                }
                r.shuffle(&mut parts);
                if parts.len() >= 3 && r.coin() {
                    // Nest a same-operator group around the last two members.
                    let b = parts.pop().unwrap_or_default();
                    let a = parts.pop().unwrap_or_default();
                    let op = op_spelling(*and, r);
                    parts.push(object(
                        vec![
                            ("group_operator".into(), jstr(&op, r)),
                            ("group".into(), format!("[{a},{}{b}]", ws(r))),
                        ],
                        r,
                    ));
                }
            }
            let op = op_spelling(*and, r);
            object(
                vec![
                    ("group_operator".into(), jstr(&op, r)),
                    ("group".into(), format!("[{}{}]", ws(r), parts.join(","))),
                ],
                r,
            )
        }
    }
}

/// Percent-encodes `s` for a query value: all-percent (`%20`), form (`+`), or minimal (RFC 3986
/// sub-delims left raw), with random hex case; adds empty segments and default page params.
fn encode_query(json: &str, r: &mut Rng) -> String {
    let value = match r.pick(3) {
        0 => pct(json),
        1 => form("filters", json)["filters=".len()..].to_owned(),
        _ => {
            let mut out = String::new();
            for &b in json.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~!$'()*,;:@/?=".contains(&b) {
                    out.push(b as char);
                } else if r.coin() {
                    out.push_str(&format!("%{b:02x}"));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    };
    let mut params = vec![format!("filters={value}")];
    if r.coin() {
        params.push("page=1".into());
    }
    if r.coin() {
        params.push("per_page=200".into());
    }
    r.shuffle(&mut params);
    let sep = if r.coin() { "&" } else { "&&" };
    let mut q = params.join(sep);
    if r.coin() {
        q.push('&');
    }
    q
}

fn rules(semantic: bool) -> CanonicalRules {
    CanonicalRules {
        mode: if semantic {
            FilterMode::Semantic
        } else {
            FilterMode::Strict
        },
        ..CanonicalRules::default()
    }
}

fn leaves(t: &T) -> usize {
    match t {
        T::C { .. } => 1,
        T::G { members, .. } => members.iter().map(leaves).sum(),
    }
}

/// Applies one small change of meaning: `kind` 0 value edit, 1 value case flip, 2 field,
/// 3 comparator, 4 operator of a group with ≥ 2 members (falls back to 0 when there is none).
fn mutate(t: &mut T, kind: usize, pick: usize) {
    if kind == 4 {
        let eligible = eligible_groups(t);
        if eligible > 0 {
            assert!(flip_nth(t, &mut (pick % eligible)));
            return;
        }
    }
    let mut target = pick % leaves(t);
    assert!(mutate_leaf(
        t,
        if kind == 4 { 0 } else { kind },
        &mut target
    ));
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

fn mutate_leaf(t: &mut T, kind: usize, target: &mut usize) -> bool {
    match t {
        T::C { name, equal, value } => {
            if *target > 0 {
                *target -= 1;
                return false;
            }
            match kind {
                1 if value.chars().any(|c| c.is_ascii_alphabetic()) => {
                    let i = value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                    let c = value.as_bytes()[i] as char;
                    let flipped = if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    };
                    value.replace_range(i..i + 1, &flipped.to_string());
                }
                2 => *name = !*name,
                3 => *equal = !*equal,
                _ => value.push('!'),
            }
            true
        }
        T::G { members, .. } => members.iter_mut().any(|m| mutate_leaf(m, kind, target)),
    }
}

proptest! {

    #[test]
    fn canonicalising_is_idempotent(t in tree(), seed in any::<u64>(), semantic in any::<bool>()) {
        let rules = rules(semantic);
        let mut r = Rng(seed);
        let q = encode_query(&spell(&t, &mut r, semantic), &mut r);
        let Canonical::Key(c1) = canonicalize(&q, &rules) else {
            panic!("not a key: {q}");
        };
        let json = c1.canonical_filters_json().unwrap();
        let Canonical::Key(c2) = canonicalize(&fq(&json), &rules) else {
            panic!("canonical JSON is not a key: {json}");
        };
        prop_assert_eq!(c2.canonical_filters_json().unwrap(), json);
        prop_assert_eq!(cache_key(&SCOPE, &c1), cache_key(&SCOPE, &c2));
    }

    #[test]
    fn respellings_keep_the_key(t in tree(), s1 in any::<u64>(), s2 in any::<u64>(), semantic in any::<bool>()) {
        let rules = rules(semantic);
        let (mut r1, mut r2) = (Rng(s1), Rng(s2));
        let q1 = encode_query(&spell(&t, &mut r1, semantic), &mut r1);
        let q2 = encode_query(&spell(&t, &mut r2, semantic), &mut r2);
        prop_assert_eq!(key_with(&q1, &rules), key_with(&q2, &rules), "{} vs {}", q1, q2);
    }

    #[test]
    fn small_changes_of_meaning_change_the_key(
        t in tree(), kind in 0usize..5, pick in any::<usize>(), s1 in any::<u64>(), s2 in any::<u64>(),
        semantic in any::<bool>(),
    ) {
        let rules = rules(semantic);
        let mut m = t.clone();
        mutate(&mut m, kind, pick);
        let q1 = encode_query(&spell(&t, &mut Rng(s1), semantic), &mut Rng(s1 ^ 1));
        let q2 = encode_query(&spell(&m, &mut Rng(s2), semantic), &mut Rng(s2 ^ 1));
        prop_assert_ne!(key_with(&q1, &rules), key_with(&q2, &rules), "{:?} vs {:?}", t, m);
    }

    /// The schema's memo never changes an outcome: one schema (and its memo) shared by every
    /// case, each query asked twice, always what canonicalising and hashing afresh gives.
    #[test]
    fn memoised_keys_equal_fresh_ones(t in tree(), seed in any::<u64>(), raw in "[a-z_=&%+0-9A-F{}\":,\\[\\] ]{0,40}") {
        static SCHEMA: std::sync::LazyLock<ParamSchema> =
            std::sync::LazyLock::new(|| ParamSchema::associated_users_count(rules(true)));
        let mut r = Rng(seed);
        let spelled = encode_query(&spell(&t, &mut r, true), &mut r);
        for q in [spelled.as_str(), raw.as_str()] {
            let fresh = match SCHEMA.canonicalize(q) {
                Canonical::Key(c) => KeyOutcome::Key(cache_key(&SCOPE, &c)),
                Canonical::Uncacheable(why) => KeyOutcome::Uncacheable(why),
                Canonical::Invalid(bad) => KeyOutcome::Invalid(bad),
            };
            prop_assert_eq!(SCHEMA.key(&SCOPE, q), fresh.clone());
            prop_assert_eq!(SCHEMA.key(&SCOPE, q), fresh);
        }
    }

    /// Stable-toolchain companion of the cargo-fuzz target: arbitrary strings never panic, and
    /// canonical forms are idempotent.
    #[test]
    fn arbitrary_queries_never_panic(raw in "[a-z_=&%+0-9A-F{}\":,\\[\\] ]{0,80}", json in ".{0,60}") {
        for q in [raw, fq(&json)] {
            if let Canonical::Key(c) = canonicalize(&q, &CanonicalRules::default())
                && let Some(j) = c.canonical_filters_json()
            {
                let again = canonicalize(&fq(&j), &CanonicalRules::default());
                prop_assert!(matches!(again, Canonical::Key(_)));
            }
        }
    }
}
