//! No merged meanings: whenever two `filters` get the same cache key, the simulator's
//! independent evaluator (it plays Zoho) selects the same groups with them, over random data.
//!
//! Filters are drawn from a deliberately tiny alphabet, and most pairs are a tree and a random
//! variant of it (reordered, duplicated, nested, re-cased operators, and near misses: another
//! value, comparator, field or operator), so that distinct trees often share a key, which is
//! where a wrong normalisation would show. Independent random pairs almost never share a key
//! (0 to 2 in 512 cases), so each property also asserts a floor on the cases it compared.

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use zoho_crm_simulator::filters;
use zoho_gateway::canonical::{Canonical, CanonicalRules, KeyScope, cache_key, canonicalize};

/// Percent of cases in which two distinct generated trees share a key (measured: 23 to 27).
const FLOOR_SHARED_KEY: u32 = 10;
/// Percent of cases whose tree gets a key at all (measured: 100).
const FLOOR_KEYED: u32 = 90;

#[derive(Clone, Debug)]
enum Tree {
    Leaf {
        field: &'static str,
        cmp: &'static str,
        value: &'static str,
    },
    Group {
        op: &'static str,
        members: Vec<Tree>,
    },
}

fn leaf() -> impl Strategy<Value = Tree> {
    (
        prop::sample::select(vec!["name", "description"]),
        prop::sample::select(vec!["equal", "starts_with"]),
        prop::sample::select(vec!["A", "Ab", "a", "B", "Ab ", ""]),
    )
        .prop_map(|(field, cmp, value)| Tree::Leaf { field, cmp, value })
}

fn tree() -> impl Strategy<Value = Tree> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        (
            prop::sample::select(vec!["and", "or", "AND", "Or"]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(op, members)| Tree::Group { op, members })
    })
}

/// xorshift64 over a proptest-drawn seed: cheap, and deterministic per seed (the seed shrinks).
struct Rolls(u64);

impl Rolls {
    /// A number in `0..n`.
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A variant of `t` chosen by `seed`: the same meaning spelled differently (members reordered,
/// duplicated or nested in a group of the same operator, operator re-cased, a one-member group
/// around a leaf) or a near miss (another value, comparator, field or operator).
fn variant(t: &Tree, rng: &mut Rolls) -> Tree {
    let mut roll = |n: u64| rng.roll(n);
    const VALUES: [&str; 6] = ["A", "Ab", "a", "B", "Ab ", ""];
    match t {
        Tree::Leaf { field, cmp, value } => match roll(10) {
            0..=3 => t.clone(),
            4 => Tree::Leaf {
                field,
                cmp,
                value: VALUES[roll(6) as usize],
            },
            5 => Tree::Leaf {
                field,
                cmp: if *cmp == "equal" {
                    "starts_with"
                } else {
                    "equal"
                },
                value,
            },
            6 => Tree::Leaf {
                field: if *field == "name" {
                    "description"
                } else {
                    "name"
                },
                cmp,
                value,
            },
            _ => Tree::Group {
                op: ["and", "or", "AND", "Or"][roll(4) as usize],
                members: vec![t.clone()],
            },
        },
        Tree::Group { op, members } => {
            let is_and = op.eq_ignore_ascii_case("and");
            let op = match roll(10) {
                0..=6 => *op,
                7 | 8 => {
                    if is_and {
                        ["and", "AND", "And"][roll(3) as usize]
                    } else {
                        ["or", "OR", "Or"][roll(3) as usize]
                    }
                }
                _ => {
                    if is_and {
                        "or"
                    } else {
                        "and"
                    }
                }
            };
            let mut m: Vec<Tree> = members.iter().map(|c| variant(c, rng)).collect();
            let len = m.len() as u64;
            match rng.roll(5) {
                0 => m.reverse(),
                1 => {
                    let i = rng.roll(len) as usize;
                    m.push(m[i].clone());
                }
                2 => m.rotate_left(rng.roll(len) as usize),
                3 if m.len() > 1 => {
                    let inner = m.split_off(1);
                    m.push(Tree::Group { op, members: inner });
                }
                _ => {}
            }
            Tree::Group { op, members: m }
        }
    }
}

/// A pair of trees: mostly a tree and a [`variant`] of it, sometimes two independent trees.
fn pair() -> impl Strategy<Value = (Tree, Tree)> {
    prop_oneof![
        1 => (tree(), tree()),
        3 => (tree(), any::<u64>()).prop_map(|(a, seed)| {
            // xorshift needs a non-zero state.
            let b = variant(&a, &mut Rolls(seed | 1));
            (a, b)
        }),
    ]
}

fn json(t: &Tree) -> String {
    match t {
        Tree::Leaf { field, cmp, value } => format!(
            r#"{{"field":{{"api_name":"{field}"}},"comparator":"{cmp}","value":"{value}"}}"#
        ),
        Tree::Group { op, members } => format!(
            r#"{{"group_operator":"{op}","group":[{}]}}"#,
            members.iter().map(json).collect::<Vec<_>>().join(",")
        ),
    }
}

fn key_of(t: &Tree) -> Option<[u8; 32]> {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("filters", &json(t))
        .finish();
    match canonicalize(&q, &CanonicalRules::default()) {
        Canonical::Key(c) => Some(
            cache_key(
                &KeyScope {
                    tenant: "t",
                    credential: None,
                    method: "GET",
                    version: "v7",
                    route: "count",
                    external: None,
                },
                &c,
            )
            .0,
        ),
        _ => None,
    }
}

type Groups = Vec<(String, String)>;

fn groups() -> impl Strategy<Value = Groups> {
    let text = prop::sample::select(vec!["A", "Ab", "a", "ab", "B", "Ab ", "", "Abc", "b"]);
    prop::collection::vec(
        (text.clone(), text).prop_map(|(n, d)| (n.to_owned(), d.to_owned())),
        0..12,
    )
}

fn selects(t: &Tree, data: &Groups) -> Vec<bool> {
    let f = filters::parse(&json(t)).expect("the simulator parses what the gateway keys");
    data.iter().map(|(n, d)| f.matches(n, d, true)).collect()
}

/// Generated cases per property (`PROPTEST_CASES`, default 512).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Runs `property` over `strategy` for [`cases`] cases and returns how many of them
/// `property` reported as compared (`Ok(true)`); a failure panics with proptest's minimal case.
fn run_counting<S: Strategy>(
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let compared = AtomicU32::new(0);
    TestRunner::new(ProptestConfig::with_cases(cases()))
        .run(&strategy, |v| {
            if property(v)? {
                compared.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    compared.into_inner()
}

/// The share of cases that must have been compared, so that a canonicaliser that keyed almost
/// nothing cannot pass vacuously.
#[track_caller]
fn assert_floor(what: &str, compared: u32, at_least_percent: u32) {
    let floor = cases() * at_least_percent / 100;
    eprintln!("{what}: {compared} of {} cases compared", cases());
    assert!(
        compared >= floor,
        "{what}: only {compared} of {} generated cases were compared (floor {floor})",
        cases()
    );
}

/// Two distinct filters that get the same key select the same groups.
#[test]
fn same_key_same_selection() {
    let compared = run_counting((pair(), groups()), |((a, b), data)| {
        let (Some(ka), Some(kb)) = (key_of(&a), key_of(&b)) else {
            return Ok(false);
        };
        if ka != kb {
            return Ok(false);
        }
        prop_assert_eq!(
            selects(&a, &data),
            selects(&b, &data),
            "{} vs {}",
            json(&a),
            json(&b)
        );
        Ok(json(&a) != json(&b))
    });
    assert_floor("distinct trees sharing a key", compared, FLOOR_SHARED_KEY);
}

/// Semantic rewrites (wrap in a one-member group, duplicate, reverse members) keep the key and
/// the meaning.
#[test]
fn rewrites_keep_key_and_meaning() {
    let compared = run_counting((tree(), groups(), any::<u64>()), |(a, data, seed)| {
        let wrapped = Tree::Group {
            op: "or",
            members: vec![a.clone()],
        };
        let rewritten = match &a {
            Tree::Group { op, members } => {
                let mut m = members.clone();
                m.reverse();
                if seed % 2 == 0 {
                    m.push(m[0].clone());
                }
                Tree::Group { op, members: m }
            }
            leaf => leaf.clone(),
        };
        for other in [&wrapped, &rewritten] {
            prop_assert_eq!(key_of(&a), key_of(other));
            prop_assert_eq!(selects(&a, &data), selects(other, &data));
        }
        Ok(key_of(&a).is_some())
    });
    assert_floor("keyed trees", compared, FLOOR_KEYED);
}
