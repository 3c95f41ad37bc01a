//! Memory per cached entry and RSS under a hit/miss soak (issue 14). A plain binary (not
//! criterion): RSS is read from `/proc/self/statm`, so run it alone.
//!
//! ```text
//! cargo bench --bench memory -- entries [N]        # default N = 20000
//! cargo bench --bench memory -- soak [SECS]        # default 60 s
//! ```
//!
//! - **entries**: an in-process gateway (cache bound 1 GiB, so nothing is
//!   evicted); after a warm-up of 1 000 misses, N cold keys are fetched (8 at a time). Reports
//!   (RSS growth − body bytes) / N: the real cost of an entry beyond its body (key, headers,
//!   moka's node, `Arc`, allocator slack, and any buffer the body pins). Target ≤ 1 KiB.
//! - **soak**: cache bound 4 MiB; 8 callers for SECS seconds at full speed over a key space whose
//!   answers weigh 10× the bound (about half hits, half misses), RSS sampled every 5 s after a
//!   10 s warm-up. Target: every sample within ±10 % of the first.
//!
//! The simulator runs in a child process (this binary with the argument `simulator`), so only
//! the gateway's memory is measured.

#[path = "support/config.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use zoho_crm_simulator::{SimConfig, Simulator};
use zoho_gateway::App;
use zoho_gateway::proxy::Gateway;

const ROUTE: &str = "/crm/v7/settings/user_groups/actions/associated_users_count";
const CONCURRENCY: usize = 8;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = args.next().unwrap_or_else(|| "entries".into());
    let n: Option<u64> = args.next().and_then(|a| a.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match mode.as_str() {
        "entries" => rt.block_on(entries(n.unwrap_or(20_000) as usize)),
        "soak" => rt.block_on(soak(Duration::from_secs(n.unwrap_or(60)))),
        // The simulator runs in a child process (this binary again), so its own memory (it
        // keeps a call counter per distinct query) does not count as the gateway's.
        "simulator" => rt.block_on(async {
            let sim = Simulator::spawn(SimConfig::default())
                .await
                .expect("simulator");
            println!("{}", sim.base_url());
            std::future::pending::<()>().await;
        }),
        other => {
            eprintln!("unknown mode {other:?}: entries [N] | soak [SECS]");
            std::process::exit(2);
        }
    }
}

/// Resident set size, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// A query only `i` asks for (a distinct cache key) whose answer is a 200 with a count body:
/// groups named `Tier…`, or named exactly `x<i>` (none are).
fn query(i: usize) -> String {
    let filters = format!(
        r#"{{"group_operator":"or","group":[{{"field":{{"api_name":"name"}},"comparator":"starts_with","value":"Tier"}},{{"field":{{"api_name":"name"}},"comparator":"equal","value":"x{i}"}}]}}"#
    );
    form_urlencoded::Serializer::new(String::new())
        .append_pair("filters", &filters)
        .finish()
}

/// The simulator child process; killed on drop.
struct SimChild(std::process::Child);

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(max_bytes: u64) -> (SimChild, zoho_gateway::Running) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("simulator")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("simulator process");
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("simulator address");
    let url = url.trim().to_owned();
    let sim = SimChild(child);
    let cfg = support::config(&url, &format!("max_bytes = {max_bytes}"), "");
    let app = App::spawn(cfg).await.expect("gateway");
    (sim, app)
}

/// Asks for `query(i)` in process; returns the body length.
async fn ask(gw: &Arc<Gateway>, i: usize) -> usize {
    let req = Request::get(format!("{ROUTE}?{}", query(i)))
        .header("host", "gw")
        .header("x-gateway-key", "bench-key")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let resp = gw.clone().handle(req, peer).await;
    assert!(resp.status().is_success(), "{:?}", resp.status());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    body.len()
}

/// Asks for every `i` in `range`, `CONCURRENCY` at a time; returns the body bytes seen.
async fn ask_all(gw: &Arc<Gateway>, range: std::ops::Range<usize>) -> u64 {
    let next = Arc::new(AtomicUsize::new(range.start));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (gw, next, bytes, end) = (gw.clone(), next.clone(), bytes.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                bytes.fetch_add(ask(&gw, i).await as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    bytes.load(Ordering::Relaxed)
}

async fn entries(n: usize) {
    let (sim, app) = start(1 << 30).await;
    let gw = app.gateway().clone();
    ask_all(&gw, 0..1_000).await;
    gw.cache().run_pending_tasks().await;
    let (before, entries_before) = (rss(), gw.cache().entry_count());
    let body_bytes = ask_all(&gw, 1_000..1_000 + n).await;
    gw.cache().run_pending_tasks().await;
    let (after, entries_after) = (rss(), gw.cache().entry_count());
    let stored = entries_after - entries_before;
    let grown = after.saturating_sub(before);
    let per_entry = (grown as f64 - body_bytes as f64) / stored.max(1) as f64;
    println!("entries: {stored} new cache entries (asked {n}), bodies {body_bytes} B in all");
    println!(
        "  RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    println!(
        "  per entry beyond its body: {per_entry:.0} B (target <= 1024 B); the weigher charges {} B",
        gw.cache().weighted_size() / entries_after.max(1)
    );
    app.shutdown().await;
    drop(sim);
}

async fn soak(secs: Duration) {
    const MAX_BYTES: u64 = 4 << 20;
    let (sim, app) = start(MAX_BYTES).await;
    let gw = app.gateway().clone();
    // Size the key space so the distinct answers weigh 10x the bound.
    ask_all(&gw, 0..200).await;
    gw.cache().run_pending_tasks().await;
    let weight = gw.cache().weighted_size() / gw.cache().entry_count().max(1);
    let keys = (10 * MAX_BYTES / weight.max(1)) as usize;
    println!(
        "soak: cache bound {} MiB, ~{weight} B per entry, {keys} distinct answers (10x the bound), {} s",
        MAX_BYTES >> 20,
        secs.as_secs()
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let (gw, stop, done) = (gw.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            // Half the requests go to a hot tenth of the keys (hits), half anywhere (misses).
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = if x & 1 == 0 {
                    (x >> 1) as usize % (keys / 10).max(1)
                } else {
                    (x >> 1) as usize % keys
                };
                ask(&gw, i).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10).min(secs / 4)).await;
    let first = rss();
    let mut samples = vec![first];
    while started.elapsed() < secs {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(rss());
        println!(
            "  t={:>3.0}s RSS {:.1} MiB ({:+.1} %), cache {:.1} MiB in {} entries, {} requests",
            started.elapsed().as_secs_f64(),
            *samples.last().unwrap() as f64 / 1048576.0,
            (*samples.last().unwrap() as f64 / first as f64 - 1.0) * 100.0,
            gw.cache().weighted_size() as f64 / 1048576.0,
            gw.cache().entry_count(),
            done.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (lo, hi) = (
        *samples.iter().min().unwrap() as f64 / first as f64,
        *samples.iter().max().unwrap() as f64 / first as f64,
    );
    println!(
        "  RSS relative to the first sample: {:+.1} % .. {:+.1} % (target within ±10 %): {}",
        (lo - 1.0) * 100.0,
        (hi - 1.0) * 100.0,
        if lo >= 0.9 && hi <= 1.1 {
            "met"
        } else {
            "MISSED"
        }
    );
    app.shutdown().await;
    drop(sim);
}
