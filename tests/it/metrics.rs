//! `/metrics` after real traffic through the simulator: the values match the simulator's own
//! counters, and `promtool check metrics` finds no problem (when promtool is installed; CI
//! installs it and sets `CI_REQUIRE_PROMTOOL=1`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;
use std::time::Duration;

use zoho_crm_simulator::SimConfig;

#[tokio::test]
async fn metrics_match_the_simulator_and_pass_promtool() {
    let h = Harness::start_with(SimConfig::default(), "").await;
    let names = [
        "Tier1", "Tier2", "Sales", "Tier1", "Tier1", "Sales", "Über", "Tier2",
    ];
    let mut sent = 0;
    for n in names {
        let r = h.get(&name_filter("starts_with", n)).await;
        assert!(r.status.is_success());
        sent += 1;
    }
    // Local rejections.
    for q in ["per_page=0", "filters=%7B"] {
        assert_eq!(h.get(&format!("{COUNT}?{q}")).await.status, 400);
    }
    let m = h.metrics().await;
    let route = (
        "route",
        "/crm/{version}/settings/user_groups/actions/associated_users_count",
    );
    let requests = |outcome: &str| {
        m.sum(
            "zoho_gateway_requests_total",
            &[route, ("outcome", outcome)],
        )
    };
    let served: f64 = ["hit", "miss", "collapsed", "stale"]
        .into_iter()
        .map(requests)
        .sum();
    assert_eq!(served, f64::from(sent), "hits + misses = requests\n{m}");
    let hits = requests("hit");
    assert_eq!(hits, 4.0);
    let rejected = requests("rejected");
    assert_eq!(rejected, 2.0);
    let upstream = m.sum(
        "zoho_gateway_upstream_requests_total",
        &[route, ("tenant", "a")],
    );
    assert_eq!(
        upstream,
        h.calls() as f64,
        "upstream calls = simulator calls"
    );
    let saved = m.sum("zoho_gateway_credits_saved_total", &[("tenant", "a")]);
    assert_eq!(saved, hits + rejected);
    assert_eq!(
        m.sum(
            "zoho_gateway_token_refreshes_total",
            &[("outcome", "success")]
        ),
        h.sim().token_grants() as f64
    );
    assert_eq!(
        m.get("zoho_gateway_build_info", &[("version", "0.1.0")]),
        Some(1.0)
    );

    promtool_check(m.text());
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

/// Clients that give up while waiting on a flight leave no waiter counted, and each is
/// recorded once (499).
#[tokio::test]
async fn disconnected_waiters_are_not_leaked_in_metrics() {
    let h = Harness::start().await;
    h.sim().set_latency(Duration::from_millis(800));
    let url = h.url(&name_filter("starts_with", "Tier1"));
    let auth = format!("Zoho-oauthtoken {KEY}");
    for _ in 0..5 {
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            h.client.get(&url, &[("authorization", &auth)]),
        )
        .await;
    }
    wait_until("waiters back to zero", || {
        h.metrics_now().get("zoho_gateway_coalesce_waiters", &[]) == Some(0.0)
    })
    .await;
    wait_until("the abandoned requests recorded", || {
        h.metrics_now()
            .samples("zoho_gateway_requests_total")
            .any(|s| s.has(&[("status_class", "4xx")]) && s.value == 5.0)
    })
    .await;
    h.shutdown().await;
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
    const THROTTLED: &str = "zoho_gateway_upstream_throttled_total";
    // Created at 0 for every code, so the first 429 is an increase.
    let m = h.metrics().await;
    for code in ["TOO_MANY_REQUESTS", "LIMIT_EXCEEDED", "other"] {
        assert_eq!(
            m.get(THROTTLED, &[("code", code), ("tenant", "a")]),
            Some(0.0),
            "{code} not pre-created:\n{m}"
        );
    }
    // One request, two 429 answers (the call and its retry).
    h.sim().fail_next(2, 429);
    let r = h.get(&name_filter("equal", "Tier1")).await;
    assert_eq!(r.status, 429);
    let calls = h.calls();
    assert_eq!(calls, 2);
    // Not throttling: a 500 and its retry.
    h.sim().fail_next(2, 500);
    let r = h.get(&name_filter("equal", "Tier2")).await;
    assert_eq!(r.status, 500);
    let m = h.metrics().await;
    let throttled = |code: &str| m.sum(THROTTLED, &[("tenant", "a"), ("code", code)]);
    assert_eq!(throttled("TOO_MANY_REQUESTS"), calls as f64, "{m}");
    assert_eq!(throttled("LIMIT_EXCEEDED"), 0.0);
    assert_eq!(throttled("other"), 0.0);
    h.shutdown().await;
}
