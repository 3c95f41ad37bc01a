//! The miss path (issue 14): a storm on one cold key, and the miss overhead against calling the
//! simulator directly.
//!
//! `cargo bench --bench storm` (a plain binary, not criterion: each figure is one distribution).
//!
//! 1. **Storm**: the simulator answers after 50 ms; 10 000 callers released together by a
//!    barrier ask the gateway (in process: `Gateway::handle`, so 10 000 sockets are not needed)
//!    for one cold key. Reports the simulator's call count (must be 1) and each caller's
//!    latency from its own start: p50, p99, max, against the target p99 ≤ 50 ms + 2 ms.
//!    `max_waiters` (default 2048 per tenant, 4096 in all) is raised to 20 000 so that every
//!    caller waits on the flight instead of getting the gateway's 503.
//! 2. **Miss overhead**: simulator latency 0; N serial rounds over loopback, each a cold key
//!    through the gateway (`fwd=miss`) and the same query straight to the simulator with a
//!    token, interleaved; reports the median and p90 of each and their difference.
//!
//! Exits non-zero when the storm made more than one upstream call. `STORM_ONLY=1` skips part 2
//! (for profiling the storm alone); `STORM_CALLERS=N` changes the number of callers.

#[path = "support/config.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zoho_crm_simulator::{SimConfig, Simulator};
use zoho_gateway::App;

/// Callers in the storm (`STORM_CALLERS` overrides, e.g. fewer to see the flight's wake-up
/// alone when every caller joins before the answer).
const CALLERS: usize = 10_000;
const UPSTREAM_LATENCY: Duration = Duration::from_millis(50);
const MISS_ROUNDS: usize = 2_000;
const ROUTE: &str = "/crm/v7/settings/user_groups/actions/associated_users_count";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(run());
    if !ok {
        std::process::exit(1);
    }
}

/// A filter only this `i` asks for (a distinct cache key).
fn query(tag: &str, i: usize) -> String {
    let filters = format!(
        r#"{{"field":{{"api_name":"name"}},"comparator":"starts_with","value":"{tag}{i}"}}"#
    );
    form_urlencoded::Serializer::new(String::new())
        .append_pair("filters", &filters)
        .finish()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn run() -> bool {
    let sim = Simulator::spawn(SimConfig::default())
        .await
        .expect("simulator");
    let (id, secret, refresh) = SimConfig::demo_credentials();
    let url = sim.base_url();
    let cfg = support::config(&url, "max_waiters = 20000", "max_waiters = 20000");
    let app = App::spawn(cfg).await.expect("gateway");
    let gw = app.gateway().clone();
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let request = |q: &str| {
        Request::get(format!("{ROUTE}?{q}"))
            .header("host", "gw")
            .header("x-gateway-key", "bench-key")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    // Warm the token and the upstream pool outside the measurement.
    let warm = gw.clone().handle(request(&query("warm", 0)), peer).await;
    assert_eq!(warm.status().as_u16() / 100, 2, "warm-up: {warm:?}");

    // 1. The storm.
    let sim_handle = sim.handle();
    sim_handle.set_latency(UPSTREAM_LATENCY);
    sim_handle.reset_counters();
    let q = query("storm", 0);
    let callers = std::env::var("STORM_CALLERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CALLERS);
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let (gw, barrier, req) = (gw.clone(), barrier.clone(), request(&q));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let resp = gw.handle(req, peer).await;
            let waited = resp
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("fwd=miss"));
            (started, Instant::now(), resp.status(), waited)
        }));
    }
    // Waiters: the leader and the callers that joined its flight (`fwd=miss`); the others
    // arrived after it had stored the answer (hits).
    let (mut took, mut hits) = (Vec::with_capacity(callers), Vec::new());
    let mut failed = 0;
    // (start, end) of each waiter, for the timeline below.
    let mut spans = Vec::with_capacity(callers);
    let mut first_start: Option<Instant> = None;
    let mut last_start: Option<Instant> = None;
    for t in tasks {
        let (started, ended, status, waited) = t.await.expect("caller");
        failed += usize::from(status != StatusCode::OK && status != StatusCode::NO_CONTENT);
        first_start = Some(first_start.map_or(started, |f| f.min(started)));
        last_start = Some(last_start.map_or(started, |l| l.max(started)));
        let d = ended - started;
        if waited {
            took.push(d);
            spans.push((started, ended));
        } else {
            hits.push(d)
        }
    }
    took.sort();
    hits.sort();
    let calls = sim_handle.total_api_calls();
    let p99 = percentile(&took, 0.99);
    let target = UPSTREAM_LATENCY + Duration::from_millis(2);
    println!(
        "storm: {callers} callers, one cold key, upstream latency {} ms",
        UPSTREAM_LATENCY.as_millis()
    );
    println!("  upstream calls      {calls} (target 1)");
    println!("  non-2xx answers     {failed}");
    println!(
        "  {} callers waited on the flight; {} arrived after it and were hits (p99 {:.1} ms)",
        took.len(),
        hits.len(),
        hits.get(hits.len().saturating_sub(1) * 99 / 100)
            .map_or(0.0, |d| ms(*d))
    );
    println!(
        "  waiters' latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= {:.0} ms): {}",
        ms(percentile(&took, 0.5)),
        ms(p99),
        ms(took[took.len() - 1]),
        ms(target),
        if p99 <= target { "met" } else { "MISSED" }
    );

    // Where the time went: when callers started (after the barrier) and when waiters were
    // answered, from the first caller's start; and how many of the slowest 1 % of waiters were
    // among the first 10 % to start (early callers answered late).
    let t0 = first_start.expect("callers");
    let since = |i: Instant| ms(i - t0);
    spans.sort_by_key(|s| s.0);
    let answered_first = spans.iter().map(|s| s.1).min().expect("waiters");
    let answered_last = spans.iter().map(|s| s.1).max().expect("waiters");
    let joined_last = spans.last().expect("waiters").0;
    let mut by_latency: Vec<usize> = (0..spans.len()).collect();
    by_latency.sort_by_key(|&i| std::cmp::Reverse(spans[i].1 - spans[i].0));
    let slowest = (spans.len() / 100).max(1);
    let early = by_latency[..slowest]
        .iter()
        .filter(|&&i| i < spans.len() / 10)
        .count();
    println!(
        "  timeline (ms from the first start): callers started until {:.1} (waiters until {:.1}); \
         waiters answered from {:.1} to {:.1}; of the slowest 1 % ({slowest}), {early} were in \
         the first 10 % to start",
        since(last_start.expect("callers")),
        since(joined_last),
        since(answered_first),
        since(answered_last),
    );

    if std::env::var_os("STORM_ONLY").is_some() {
        app.shutdown().await;
        sim.shutdown().await;
        return calls == 1;
    }
    // 2. Miss overhead over loopback: gateway miss vs the simulator directly.
    sim_handle.set_latency(Duration::ZERO);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let token = token(&url, &id, &secret, &refresh).await;
    let gw_base = format!("http://{}", app.proxy_addr());
    let (mut via_gw, mut direct) = (Vec::new(), Vec::new());
    for i in 0..MISS_ROUNDS {
        let q = query("miss", i);
        let started = Instant::now();
        let status = get(
            &client,
            &format!("{gw_base}{ROUTE}?{q}"),
            "x-gateway-key",
            "bench-key",
        )
        .await;
        via_gw.push(started.elapsed());
        assert!(status.is_success(), "gateway miss: {status}");
        let started = Instant::now();
        let auth = format!("Zoho-oauthtoken {token}");
        let status = get(
            &client,
            &format!("{url}{ROUTE}?{q}"),
            "authorization",
            &auth,
        )
        .await;
        direct.push(started.elapsed());
        assert!(status.is_success(), "direct: {status}");
    }
    via_gw.sort();
    direct.sort();
    let (g50, d50) = (percentile(&via_gw, 0.5), percentile(&direct, 0.5));
    println!("miss overhead: {MISS_ROUNDS} serial rounds over loopback, interleaved");
    println!(
        "  through the gateway (fwd=miss)  p50 {:.0} us, p90 {:.0} us",
        g50.as_secs_f64() * 1e6,
        percentile(&via_gw, 0.9).as_secs_f64() * 1e6
    );
    println!(
        "  simulator directly              p50 {:.0} us, p90 {:.0} us",
        d50.as_secs_f64() * 1e6,
        percentile(&direct, 0.9).as_secs_f64() * 1e6
    );
    println!(
        "  overhead p50 {:.0} us ({:.2}x)",
        (g50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
        g50.as_secs_f64() / d50.as_secs_f64()
    );
    app.shutdown().await;
    sim.shutdown().await;
    calls == 1
}

async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    name: &str,
    value: &str,
) -> StatusCode {
    let req = Request::get(url)
        .header(name, value)
        .body(Empty::new())
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

/// An access token from the simulator's token endpoint (refresh-token grant).
async fn token(base: &str, id: &str, secret: &str, refresh: &str) -> String {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("client_id", id)
        .append_pair("client_secret", secret)
        .append_pair("refresh_token", refresh)
        .finish();
    let req = Request::post(format!("{base}/oauth/v2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .expect("request");
    let resp = client.request(req).await.expect("token response");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("token body")
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("token json");
    v["access_token"].as_str().expect("access_token").to_owned()
}
