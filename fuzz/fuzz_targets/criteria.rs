//! Fuzzes the Zoho search `criteria` canonicaliser (the decoded value → canonical tree → key).
//!
//! Checks, for any input: no panic; the outcome is deterministic; a canonical form renders to
//! Zoho syntax that parses again to an equal tree with the same key bytes, and renders the same
//! (idempotence); the count stays within Zoho's limit; invalid-criteria messages stay short and
//! never echo the input. And, as a spelling-independence check: one more pair of parentheses
//! around the whole input, or spaces around it, never changes a key (or turns a key into anything
//! but the depth bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zoho_gateway::canonical::{
    Criteria, CriteriaLimits, CriteriaOutcome, NoCacheReason, canonicalize_criteria,
};

fn key_bytes(c: &Criteria) -> Vec<u8> {
    let mut out = Vec::new();
    c.write_key(&mut |b: &[u8]| out.extend_from_slice(b));
    out
}

fn check(raw: &str, limits: &CriteriaLimits) {
    let out = canonicalize_criteria(raw, limits);
    assert_eq!(out, canonicalize_criteria(raw, limits), "deterministic");
    match &out {
        CriteriaOutcome::Key(c) => {
            assert!(c.criteria_count() <= limits.max_criteria);
            let rendered = c.render();
            let big = CriteriaLimits {
                max_bytes: usize::MAX,
                ..limits.clone()
            };
            match canonicalize_criteria(&rendered, &big) {
                CriteriaOutcome::Key(again) => {
                    assert_eq!(&again, c, "{raw:?} rendered {rendered:?}");
                    assert_eq!(key_bytes(&again), key_bytes(c));
                    assert_eq!(again.render(), rendered);
                }
                other => panic!("{raw:?} rendered {rendered:?}, which gives {other:?}"),
            }
            let k = key_bytes(c);
            match canonicalize_criteria(&format!("({raw})"), &big) {
                CriteriaOutcome::Key(w) => assert_eq!(key_bytes(&w), k, "wrapped {raw:?}"),
                CriteriaOutcome::Uncacheable(NoCacheReason::CriteriaTooComplex) => {}
                other => panic!("wrapping {raw:?} in parentheses gives {other:?}"),
            }
            match canonicalize_criteria(&format!("  {raw} "), &big) {
                CriteriaOutcome::Key(w) => assert_eq!(key_bytes(&w), k, "spaced {raw:?}"),
                other => panic!("spaces around {raw:?} give {other:?}"),
            }
        }
        CriteriaOutcome::Invalid(i) => {
            assert_eq!(i.param, "criteria");
            assert!(i.message.len() <= 200, "short message");
            if raw.len() >= 8 {
                assert!(!i.message.contains(raw), "message echoes the input");
            }
        }
        CriteriaOutcome::Uncacheable(r) => assert!(!r.as_str().is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    check(raw, &CriteriaLimits::default());
    // Tight bounds reach the limit paths more often.
    check(
        raw,
        &CriteriaLimits {
            max_bytes: 64,
            max_depth: 3,
            max_criteria: 2,
            max_in_values: 2,
        },
    );
});
