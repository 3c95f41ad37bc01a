//! No merged meanings for search `criteria`: whenever two criteria get the same cache key, the
//! simulator's independent evaluator (it plays Zoho) selects the same records with them.
//!
//! Criteria come from a deliberately tiny alphabet (two fields, a few values) so that distinct
//! trees often share a key, and each tree is also compared with a random re-spelling (member
//! and `in`-value order, redundant parentheses, same-operator nesting, spaces): the rewrites
//! the canonicaliser merges, and with a near miss (a repeated member, reversed values, a flipped
//! join word) that it must not merge unless the meaning is the same.
//! A floor on the number of equal-key pairs compared keeps the test
//! from passing vacuously.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use zoho_crm_simulator::criteria::Criteria;
use zoho_gateway::canonical::{CriteriaLimits, CriteriaOutcome, canonicalize_criteria};

#[derive(Clone, Debug)]
enum Tree {
    Leaf {
        field: &'static str,
        op: &'static str,
        values: Vec<&'static str>,
    },
    Group {
        and: bool,
        members: Vec<Tree>,
    },
}

const VALUES: [&str; 7] = ["x", "X", "x y", "xy", "1", "10", "2"];

fn leaf() -> impl Strategy<Value = Tree> {
    (
        prop::sample::select(vec!["A", "B"]),
        prop::sample::select(vec![
            "equals",
            "not_equal",
            "starts_with",
            "in",
            "not_in",
            "greater_than",
            "less_equal",
            "between",
        ]),
        prop::collection::vec(prop::sample::select(VALUES.to_vec()), 1..4),
    )
        .prop_map(|(field, op, mut values)| {
            match op {
                "in" | "not_in" => {}
                "between" => {
                    values.truncate(2);
                    if values.len() < 2 {
                        values.push("2");
                    }
                }
                _ => values.truncate(1),
            }
            Tree::Leaf { field, op, values }
        })
}

fn tree() -> impl Strategy<Value = Tree> {
    leaf()
        .prop_recursive(3, 12, 3, |inner| {
            (any::<bool>(), prop::collection::vec(inner, 1..4))
                .prop_map(|(and, members)| Tree::Group { and, members })
        })
        .prop_filter("Zoho's 15-criteria limit", |t| leaves(t) <= 15)
}

fn leaves(t: &Tree) -> usize {
    match t {
        Tree::Leaf { .. } => 1,
        Tree::Group { members, .. } => members.iter().map(leaves).sum(),
    }
}

/// SplitMix64 for spelling choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<X>(&mut self, v: &mut [X]) {
        for i in (1..v.len()).rev() {
            let j = self.pick(i + 1);
            v.swap(i, j);
        }
    }
}

/// The plain spelling: members and values in tree order, every group in parentheses.
fn plain(t: &Tree) -> String {
    match t {
        Tree::Leaf { field, op, values } => format!("({field}:{op}:{})", values.join(",")),
        Tree::Group { and, members } => {
            let word = if *and { "and" } else { "or" };
            let parts: Vec<String> = members.iter().map(plain).collect();
            format!("({})", parts.join(word))
        }
    }
}

/// A random re-spelling with the same meaning under Zoho's documented grammar.
fn respell(t: &Tree, r: &mut Rng) -> String {
    let sp = |r: &mut Rng| ["", "", " "][r.pick(3)];
    let s = match t {
        Tree::Leaf { field, op, values } => {
            let mut vs = values.clone();
            if matches!(*op, "in" | "not_in") {
                r.shuffle(&mut vs);
            }
            format!("({field}:{op}:{})", vs.join(","))
        }
        Tree::Group { and, members } => {
            let word = if *and { "and" } else { "or" };
            let mut parts: Vec<String> = members.iter().map(|m| respell(m, r)).collect();
            r.shuffle(&mut parts);
            if parts.len() >= 3 && r.pick(2) == 0 {
                let b = parts.pop().unwrap_or_default();
                let a = parts.pop().unwrap_or_default();
                parts.push(format!("({a}{word}{b})"));
            }
            let joiner = format!("{}{word}{}", sp(r), sp(r));
            format!("({})", parts.join(&joiner))
        }
    };
    if r.pick(4) == 0 { format!("({s})") } else { s }
}

/// A near miss of `t`, which the canonicaliser must not merge unless it means the same: one
/// member repeated (a leaf becomes a two-member group of itself; Zoho's `equals` depends on the
/// number of conditions), a leaf's values reversed (`between` is a range), or a group's join
/// word flipped.
fn near_miss(t: &Tree, r: &mut Rng) -> Tree {
    match t {
        Tree::Leaf { field, op, values } => {
            if r.pick(2) == 0 {
                let mut values = values.clone();
                values.reverse();
                Tree::Leaf { field, op, values }
            } else {
                Tree::Group {
                    and: r.pick(2) == 0,
                    members: vec![t.clone(), t.clone()],
                }
            }
        }
        Tree::Group { and, members } => {
            let mut members = members.clone();
            let i = r.pick(members.len());
            match r.pick(3) {
                0 => {
                    let copy = members[i].clone();
                    members.push(copy);
                }
                1 => members[i] = near_miss(&members[i], r),
                _ => {
                    return Tree::Group {
                        and: !*and,
                        members,
                    };
                }
            }
            Tree::Group { and: *and, members }
        }
    }
}

fn key(c: &str) -> Option<Vec<u8>> {
    match canonicalize_criteria(c, &CriteriaLimits::default()) {
        CriteriaOutcome::Key(k) => {
            let mut out = Vec::new();
            k.write_key(&mut |b: &[u8]| out.extend_from_slice(b));
            Some(out)
        }
        CriteriaOutcome::Uncacheable(_) | CriteriaOutcome::Invalid(_) => None,
    }
}

fn records() -> impl Strategy<Value = Vec<Map<String, Value>>> {
    let text = prop::sample::select(vec![
        Some("x"),
        Some("X"),
        Some("x y"),
        Some("xy"),
        Some("x yz"),
        Some("1"),
        Some("10"),
        Some("2"),
        Some("3"),
        None,
    ]);
    prop::collection::vec((text.clone(), text), 0..12).prop_map(|rows| {
        rows.into_iter()
            .map(|(a, b)| {
                let mut m = Map::new();
                m.insert("A".into(), a.map_or(Value::Null, |v| json!(v)));
                if let Some(b) = b {
                    m.insert("B".into(), json!(b));
                }
                m
            })
            .collect()
    })
}

fn selects(c: &str, data: &[Map<String, Value>]) -> Vec<bool> {
    let crit = Criteria::parse(c)
        .unwrap_or_else(|e| panic!("the simulator parses what the gateway keys: {c:?}: {e}"));
    data.iter().map(|r| crit.matches(r)).collect()
}

#[test]
fn same_key_same_records() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512u32);
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let compared = std::cell::Cell::new(0usize);
    runner
        .run(
            &(tree(), tree(), records(), any::<u64>()),
            |(a, b, data, seed)| {
                let pa = plain(&a);
                let pb = plain(&b);
                let ra = respell(&a, &mut Rng(seed));
                let na = plain(&near_miss(&a, &mut Rng(seed ^ 1)));
                for (x, y) in [(&pa, &ra), (&pa, &pb), (&ra, &pb), (&pa, &na)] {
                    if let (Some(kx), Some(ky)) = (key(x), key(y))
                        && kx == ky
                    {
                        prop_assert_eq!(selects(x, &data), selects(y, &data), "{} vs {}", x, y);
                        if x != y {
                            compared.set(compared.get() + 1);
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // Floor: most cases compare a re-spelling with a different text (independently drawn
    // trees share a key only now and then, e.g. equal leaves or permuted `in` lists).
    let floor = cases as usize / 4;
    eprintln!(
        "{} equal-key pairs of different spellings compared",
        compared.get()
    );
    assert!(
        compared.get() >= floor,
        "only {} equal-key pairs of different spellings compared (floor {floor})",
        compared.get()
    );
}

#[test]
fn documented_spellings_select_alike() {
    let data: Vec<Map<String, Value>> = [("x", "1"), ("x y", "10"), ("xy", "2")]
        .iter()
        .map(|(a, b)| {
            let mut m = Map::new();
            m.insert("A".into(), json!(a));
            m.insert("B".into(), json!(b));
            m
        })
        .collect();
    let base = "((A:equals:x)and(B:in:1,10))";
    for other in [
        "((B:in:10,1) and (A:equals:x))",
        "(A:equals:x)and(B:in:1,10)",
        "(((A:equals:x))and((B:in:10,1)))",
    ] {
        assert_eq!(key(base), key(other), "{other}");
        assert_eq!(selects(base, &data), selects(other, &data), "{other}");
    }
    // The documented `equals` quirk is why duplicates are never collapsed.
    assert_ne!(key("((A:equals:x)or(A:equals:x))"), key("(A:equals:x)"));
    assert_ne!(
        selects("((A:equals:x)or(A:equals:x))", &data),
        selects("(A:equals:x)", &data)
    );
}
