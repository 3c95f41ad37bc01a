//! ns per `canonicalize` + `cache_key` on the hot path: the seed's filter in each client spelling,
//! a 20-criterion nested filter, and malformed input; and the gateway's own call,
//! `ParamSchema::key`, answering a hot query from the schema's memo.
//!
//! Run: `cargo bench --bench canonical`. Measured on the 2-core dev machine (shared, load 5-7),
//! release, schema built once: canonicalize + cache_key, seed %20 1.11 µs, seed `+` 1.18 µs,
//! seed encodeURI 1.17 µs; `ParamSchema::key` memo hit for the seed 0.18 µs (of which the
//! keyed SipHash of scope + query and the slot load are 0.16 µs). Targets: the seed in any
//! spelling ≤ 1 µs without the memo, ≤ 2 µs before it.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use zoho_crm_simulator::samples::{SEED_CURL, SEED_NODE, SEED_PYTHON};
use zoho_gateway::canonical::{
    Canonical, CanonicalRules, CriteriaLimits, CriteriaOutcome, KeyMemo, KeyOutcome, KeyScope,
    ParamSchema, cache_key, canonicalize, canonicalize_criteria,
};

const SCOPE: KeyScope<'static> = KeyScope {
    tenant: "acme",
    credential: None,
    method: "GET",
    version: "v7",
    route: "/settings/user_groups/actions/associated_users_count",
    external: None,
};

fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An `and` of 4 `or` groups of 5 criteria each, in `json.dumps` style.
fn twenty_criteria() -> String {
    let mut groups = Vec::new();
    for g in 0..4 {
        let mut crits = Vec::new();
        for c in 0..5 {
            let field = if c % 2 == 0 { "name" } else { "description" };
            let cmp = if c % 3 == 0 { "starts_with" } else { "equal" };
            crits.push(format!(
                r#"{{"field": {{"api_name": "{field}"}}, "comparator": "{cmp}", "value": "Group {g} tier {c}"}}"#
            ));
        }
        groups.push(format!(
            r#"{{"group_operator": "OR", "group": [{}]}}"#,
            crits.join(", ")
        ));
    }
    format!(
        r#"{{"group_operator": "and", "group": [{}]}}"#,
        groups.join(", ")
    )
}

fn bench(c: &mut Criterion) {
    let rules = CanonicalRules::default();
    // The seed's filter as each client spells it (`zoho_crm_simulator::samples`).
    let curl = format!("filters={SEED_CURL}");
    let python = format!("filters={SEED_PYTHON}");
    let node = format!("filters={SEED_NODE}");
    let twenty = format!("filters={}&page=2&per_page=50", pct(&twenty_criteria()));
    let truncated = &curl[..curl.len() - 6];
    let bad_field = curl.replace("api_name%22%3A%20%22name", "api_name%22%3A%20%22email");
    let cases: [(&str, &str, bool); 6] = [
        ("seed_curl_pct20", &curl, true),
        ("seed_python_plus", &python, true),
        ("seed_node_encodeuri", &node, true),
        ("nested_20_criteria", &twenty, true),
        ("malformed_truncated_json", truncated, false),
        ("invalid_field", &bad_field, false),
    ];
    // Built once, as the gateway does per route (config validation).
    let schema = ParamSchema::associated_users_count(rules.clone());
    // `CANON_LOOP=N`: canonicalise and key the seed (curl spelling) N times on this thread and
    // exit, for counting CPU time with `perf stat -e task-clock` (N and 0, subtracted: CPU per
    // key, a figure the shared machine's load moves much less than it moves wall time).
    if let Some(n) = std::env::var("CANON_LOOP")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        for _ in 0..n {
            let Canonical::Key(cq) = schema.canonicalize(black_box(&curl)) else {
                unreachable!("the seed canonicalises")
            };
            black_box(cache_key(&SCOPE, &cq));
        }
        eprintln!("CANON_LOOP: {n} keys");
        std::process::exit(0);
    }
    let mut group = c.benchmark_group("canonicalize_and_key");
    for (name, q, is_key) in cases {
        assert_eq!(
            matches!(canonicalize(q, &rules), Canonical::Key(_)),
            is_key,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| match schema.canonicalize(black_box(q)) {
                Canonical::Key(cq) => Some(cache_key(&SCOPE, &cq)),
                _ => None,
            })
        });
    }
    group.finish();

    // The gateway's call, `ParamSchema::key`: a memo hit for the hot seed query (scope and raw
    // bytes compared, the key copied), and a query the memo does not hold (looked up, then
    // canonicalised and hashed; never stored, so every iteration misses).
    let KeyOutcome::Key(_) = schema.key(&SCOPE, &curl) else {
        unreachable!("the seed canonicalises")
    };
    let mut group = c.benchmark_group("schema_key");
    group.bench_function("seed_curl_pct20_memo_hit", |b| {
        b.iter(|| schema.key(&SCOPE, black_box(&curl)))
    });
    let memo = KeyMemo::new(16);
    group.bench_function("memo_lookup_miss", |b| {
        b.iter(|| memo.get(&SCOPE, black_box(&curl)))
    });
    group.finish();
}

/// An `and` of 3 `or` groups of 5 criteria (Zoho's limit of 15), spaces around the words.
fn fifteen_criteria() -> String {
    let groups: Vec<String> = (0..3)
        .map(|g| {
            let crits: Vec<String> = (0..5)
                .map(|c| format!("(Field_{c}:starts_with:Group {g} value {c})"))
                .collect();
            format!("({})", crits.join(" or "))
        })
        .collect();
    format!("({})", groups.join(" and "))
}

/// ns per `canonicalize_criteria` + SHA-256 over `Criteria::write_key` (the decoded value; the
/// query split is measured above).
///
/// Run: `cargo bench --bench canonical -- criteria_and_key`. Measured on the 2-core dev machine
/// under heavy shared load (load average 8-14, so read them as upper bounds), release: doc
/// sample 2.2 µs, escaped value 1.2 µs, 20-value `in` list 6.6 µs, 15 nested criteria 17 µs,
/// malformed 1.7 µs.
fn bench_criteria(c: &mut Criterion) {
    let limits = CriteriaLimits::default();
    let in_list = format!(
        "(Lead_Status:in:{})",
        (0..20)
            .rev()
            .map(|i| format!("Status {i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let fifteen = fifteen_criteria();
    let cases: [(&str, &str, bool); 5] = [
        (
            "doc_sample_and",
            "((Last_Name:equals:Burns)and(First_Name:starts_with:Ma))",
            true,
        ),
        (
            "escaped_value",
            r"(Last_Name:equals:Patricia\(Boyle\))",
            true,
        ),
        ("in_list_20_values", &in_list, true),
        ("nested_15_criteria", &fifteen, true),
        (
            "malformed_unbalanced",
            "((Last_Name:equals:Burns)and(First_Name:starts_with:Ma)",
            false,
        ),
    ];
    let mut group = c.benchmark_group("criteria_and_key");
    for (name, q, is_key) in cases {
        assert_eq!(
            matches!(canonicalize_criteria(q, &limits), CriteriaOutcome::Key(_)),
            is_key,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| match canonicalize_criteria(black_box(q), &limits) {
                CriteriaOutcome::Key(k) => {
                    let mut h = Sha256::new();
                    k.write_key(&mut |bytes: &[u8]| h.update(bytes));
                    Some(h.finalize())
                }
                _ => None,
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_criteria);
criterion_main!(benches);
