//! `/metrics` after real traffic through the simulator: the values match the simulator's own
//! counters, and `promtool check metrics` finds no problem (when promtool is installed; CI
//! installs it and sets `CI_REQUIRE_PROMTOOL=1`).

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::*;
use zoho_gateway::simulator::{SimConfig, SimRoute};

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn sum(samples: &HashMap<String, f64>, prefix: &str, must_contain: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && must_contain.iter().all(|m| k.contains(m)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_match_the_simulator_and_pass_promtool() {
    let h = Harness::start_with(SimConfig::default(), "").await;
    let names = [
        "Tier1", "Tier2", "Sales", "Tier1", "Tier1", "Sales", "Über", "Tier2",
    ];
    let mut sent = 0;
    for n in names {
        let json = format!(
            r#"{{"field":{{"api_name":"name"}},"comparator":"starts_with","value":"{n}"}}"#
        );
        let enc: String = form_urlencoded::byte_serialize(json.as_bytes()).collect();
        let r = h.get(&format!("{COUNT}?filters={enc}")).await;
        assert!(r.status.is_success());
        sent += 1;
    }
    // Local rejections.
    for q in ["per_page=0", "filters=%7B"] {
        assert_eq!(h.get(&format!("{COUNT}?{q}")).await.status, 400);
    }
    let text = h.metrics().await;
    let s = samples(&text);
    let route = "route=\"/crm/{version}/settings/user_groups/actions/associated_users_count\"";
    let served = ["hit", "miss", "collapsed", "stale"]
        .iter()
        .map(|o| {
            sum(
                &s,
                "zoho_gateway_requests_total",
                &[route, &format!("outcome=\"{o}\"")],
            )
        })
        .sum::<f64>();
    assert_eq!(served, f64::from(sent), "hits + misses = requests\n{text}");
    let hits = sum(
        &s,
        "zoho_gateway_requests_total",
        &[route, "outcome=\"hit\""],
    );
    assert_eq!(hits, 4.0);
    let rejected = sum(
        &s,
        "zoho_gateway_requests_total",
        &[route, "outcome=\"rejected\""],
    );
    assert_eq!(rejected, 2.0);
    let upstream = sum(
        &s,
        "zoho_gateway_upstream_requests_total",
        &[route, "tenant=\"a\""],
    );
    assert_eq!(
        upstream,
        h.sim().calls(SimRoute::AssociatedUsersCount) as f64,
        "upstream calls = simulator calls"
    );
    let saved = sum(&s, "zoho_gateway_credits_saved_total", &["tenant=\"a\""]);
    assert_eq!(saved, hits + rejected);
    assert_eq!(
        sum(
            &s,
            "zoho_gateway_token_refreshes_total",
            &["outcome=\"success\""]
        ),
        h.sim().token_grants() as f64
    );
    assert!(s.contains_key("zoho_gateway_build_info{version=\"0.1.0\"}"));

    promtool_check(&text);
}

fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI_REQUIRE_PROMTOOL").is_none(),
                "promtool required but not runnable: {e}"
            );
            eprintln!("promtool not installed: skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

/// Zoho's 429s get their own counter, labelled with Zoho's code, one per upstream answer
/// (retries included), counted against the simulator; a 500 or a 400 is not throttling.
#[tokio::test]
async fn zoho_throttling_is_counted_by_code() {
    let h = Harness::start_with_extra(
        SimConfig::default(),
        Extra {
            rest: "[upstream]\nmax_retries = 1\nretry_base_delay = \"1ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let throttled = |text: &str, code: &str| {
        sum(
            &samples(text),
            "zoho_gateway_upstream_throttled_total",
            &["tenant=\"a\"", &format!("code=\"{code}\"")],
        )
    };
    // Created at 0 for every code, so the first 429 is an increase.
    let text = h.metrics().await;
    for code in ["TOO_MANY_REQUESTS", "LIMIT_EXCEEDED", "other"] {
        assert!(
            text.contains(&format!(
                "zoho_gateway_upstream_throttled_total{{code=\"{code}\",tenant=\"a\"}} 0"
            )),
            "{code} not pre-created:\n{text}"
        );
    }
    // One request, two 429 answers (the call and its retry).
    h.sim().fail_next(2, 429);
    let r = h.get(&name_filter("equal", "Tier1")).await;
    assert_eq!(r.status, 429);
    let calls = h.sim().calls(SimRoute::AssociatedUsersCount);
    assert_eq!(calls, 2);
    // Not throttling: a 500 and its retry.
    h.sim().fail_next(2, 500);
    let r = h.get(&name_filter("equal", "Tier2")).await;
    assert_eq!(r.status, 500);
    let text = h.metrics().await;
    assert_eq!(
        throttled(&text, "TOO_MANY_REQUESTS"),
        calls as f64,
        "{text}"
    );
    assert_eq!(throttled(&text, "LIMIT_EXCEEDED"), 0.0);
    assert_eq!(throttled(&text, "other"), 0.0);
    h.shutdown().await;
}
