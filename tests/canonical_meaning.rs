//! No merged meanings: whenever two `filters` get the same cache key, the simulator's
//! independent evaluator (it plays Zoho) selects the same groups with them, over random data.
//!
//! Filters are drawn from a deliberately tiny alphabet so that distinct trees often share a key
//! (reorderings, duplicates, nesting), which is where a wrong normalisation would show.

use proptest::prelude::*;
use zoho_gateway::canonical::{Canonical, CanonicalRules, KeyScope, cache_key, canonicalize};
use zoho_gateway::simulator::filters;

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn same_key_same_selection(a in tree(), b in tree(), data in groups()) {
        if let (Some(ka), Some(kb)) = (key_of(&a), key_of(&b))
            && ka == kb
        {
            prop_assert_eq!(selects(&a, &data), selects(&b, &data), "{} vs {}", json(&a), json(&b));
        }
    }

    #[test]
    fn rewrites_keep_key_and_meaning(a in tree(), data in groups(), seed in any::<u64>()) {
        // Semantic rewrites: wrap in a one-member group, duplicate, reverse members.
        let wrapped = Tree::Group { op: "or", members: vec![a.clone()] };
        let rewritten = match &a {
            Tree::Group { op, members } => {
                let mut m = members.clone();
                m.reverse();
                if seed % 2 == 0 { m.push(m[0].clone()); }
                Tree::Group { op, members: m }
            }
            leaf => leaf.clone(),
        };
        for other in [&wrapped, &rewritten] {
            prop_assert_eq!(key_of(&a), key_of(other));
            prop_assert_eq!(selects(&a, &data), selects(other, &data));
        }
    }
}
