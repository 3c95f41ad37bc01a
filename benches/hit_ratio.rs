//! Hit ratio of the byte-bounded cache over Zipf-distributed keys (after Pingora's
//! `tinyufo/benches/bench_hit_ratio.rs`): how much of Zoho's traffic the cache absorbs when it
//! holds only a fraction of the distinct answers. Prints a table; no timing.
//!
//! `cargo bench --bench hit_ratio`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use zoho_gateway::cache::{CachedResponse, Lifetimes, ResponseCache};
use zoho_gateway::canonical::CacheKey;
use zoho_gateway::config::TenantId;
use zoho_gateway::route::RouteId;
use zoho_gateway::upstream::UpstreamResponse;

/// Cumulative Zipf(s) distribution over `n` items.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

fn sample(cdf: &[f64]) -> usize {
    let u: f64 = rand::random();
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

fn entry(body: &Bytes) -> Arc<CachedResponse> {
    Arc::new(CachedResponse::from_upstream(
        UpstreamResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.clone(),
        },
        Instant::now(),
        Lifetimes {
            ttl: Duration::from_secs(3600),
            ..Lifetimes::default()
        },
        TenantId(0),
        RouteId(0),
    ))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let distinct = 100_000;
    let requests = 1_000_000;
    let body = Bytes::from(vec![b'x'; 744]); // weight 1 KiB with key and overhead
    let per_entry = u64::from(entry(&body).weight());
    println!("distinct keys {distinct}, requests {requests}, entry weight {per_entry} B");
    println!("{:>6} {:>12} {:>10}", "zipf s", "cache size", "hit ratio");
    for s in [0.9, 1.0, 1.1] {
        let cdf = zipf_cdf(distinct, s);
        for fraction in [0.001, 0.01, 0.05, 0.1] {
            let capacity = (distinct as f64 * fraction) as u64 * per_entry;
            let cache = ResponseCache::new(capacity, None);
            let (mut hits, mut total) = (0u64, 0u64);
            rt.block_on(async {
                for i in 0..requests {
                    let k = sample(&cdf) as u64;
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&k.to_le_bytes());
                    let key = CacheKey(key);
                    total += 1;
                    if cache.get(&key).await.is_some() {
                        hits += 1;
                    } else {
                        cache.insert(key, entry(&body)).await;
                    }
                    if i % 10_000 == 0 {
                        cache.run_pending_tasks().await;
                    }
                }
            });
            println!(
                "{s:>6} {:>11.1}% {:>9.1}%",
                fraction * 100.0,
                100.0 * hits as f64 / total as f64
            );
        }
    }
}
