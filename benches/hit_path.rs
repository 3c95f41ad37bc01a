#![allow(missing_docs)] // criterion macros generate undocumented items
//! The cache-hit path end to end over loopback, against a baseline measured in the same run: a
//! bare hyper server (the gateway's own `server::serve`) writing the same bytes from memory.
//!
//! `cargo bench --bench hit_path`. Quote the ratio `gateway_hit / baseline_static`, not the
//! absolute times: the machines are shared and noisy.

#[path = "support/config.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use zoho_crm_simulator::{SimConfig, Simulator};
use zoho_gateway::server::{ListenerSettings, serve};
use zoho_gateway::{App, demo};

fn bench_hit_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let (gateway_url, baseline_url, guards) = rt.block_on(async {
        let sim = Simulator::spawn(SimConfig::default()).await.unwrap();
        let url = sim.base_url();
        let cfg = support::config(&url, "", "");
        let gw = App::spawn(cfg).await.unwrap();
        let gateway_url = format!(
            "http://{}/crm/v7/settings/user_groups/actions/associated_users_count?filters={}",
            gw.proxy_addr(),
            demo::SEED_FILTERS
        );
        // Prime the cache and keep the body for the baseline.
        let body = get(&client, &gateway_url).await;
        assert!(body.len() > 50, "primed body: {body:?}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let settings = ListenerSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(1),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            http2_max_concurrent_streams: 100,
        };
        let handler = move |_req: Request<hyper::body::Incoming>, _peer| {
            let body = body.clone();
            async move {
                let mut resp = Response::new(Full::new(body));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json;charset=utf-8"),
                );
                resp
            }
        };
        tokio::spawn(serve(listener, handler, settings, stop.clone()));
        (
            gateway_url,
            format!("http://{addr}/static"),
            (sim, gw, stop),
        )
    });

    let mut group = c.benchmark_group("hit_path");
    group.bench_function("baseline_static", |b| {
        b.to_async(&rt).iter(|| get(&client, &baseline_url))
    });
    group.bench_function("gateway_hit", |b| {
        b.to_async(&rt).iter(|| get(&client, &gateway_url))
    });
    // The gateway's own work on a hit, without sockets: route, key, lookup, response.
    let gw = guards.1.gateway().clone();
    let uri: http::Uri = gateway_url.parse().unwrap();
    let path_and_query = uri.path_and_query().unwrap().as_str().to_owned();
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    // The request is built outside the measurement (hyper hands the gateway a parsed one);
    // the response is dropped inside it (the gateway's allocations are freed per request).
    let request = || {
        Request::get(path_and_query.as_str())
            .header("host", "gw")
            .header("authorization", "Zoho-oauthtoken bench-key")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // `HIT_LOOP=N`: run N in-process hits on this thread and exit, for counting with
    // `perf stat -e instructions:u` (N and 0, subtracted: instructions per hit, a figure the
    // shared machine's noise does not move the way it moves wall time).
    if let Some(n) = std::env::var("HIT_LOOP")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        rt.block_on(async {
            for _ in 0..n {
                let resp = gw.clone().handle(request(), peer).await;
                assert!(resp.status().is_success());
            }
        });
        eprintln!("HIT_LOOP: {n} hits");
        std::process::exit(0);
    }
    group.bench_function("gateway_hit_in_process", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| {
                let gw = gw.clone();
                async move {
                    let resp = gw.handle(req, peer).await;
                    assert!(resp.status().is_success());
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // The same hit from two threads at once on the same key (what two busy workers do under
    // load): per-hit CPU here against `gateway_hit_in_process` shows what shared state (reference
    // counts, metric counters, cache bookkeeping) costs when its cache lines move between cores.
    // The time is wall time per hit with both threads running, so ×2 for CPU per hit.
    for threads in [1usize, 2] {
        let (gw, path_and_query) = (gw.clone(), path_and_query.clone());
        group.bench_function(format!("gateway_hit_threads/{threads}"), move |b| {
            b.iter_custom(|iters| {
                let per_thread = iters / threads as u64 + 1;
                let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        let (gw, pq, barrier) =
                            (gw.clone(), path_and_query.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .unwrap();
                            let uri: http::Uri = pq.parse().unwrap();
                            barrier.wait();
                            rt.block_on(async {
                                for _ in 0..per_thread {
                                    let req = Request::get(uri.clone())
                                        .header("host", "gw")
                                        .header("authorization", "Zoho-oauthtoken bench-key")
                                        .body(Empty::<Bytes>::new())
                                        .unwrap();
                                    let resp = gw.clone().handle(req, peer).await;
                                    assert!(resp.status().is_success());
                                }
                            });
                        })
                    })
                    .collect();
                barrier.wait();
                let started = std::time::Instant::now();
                for w in workers {
                    w.join().unwrap();
                }
                started.elapsed()
            })
        });
    }
    group.finish();
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Bytes {
    let req = Request::get(url)
        .header("authorization", "Zoho-oauthtoken bench-key")
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert!(resp.status().is_success());
    resp.into_body().collect().await.unwrap().to_bytes()
}

criterion_group!(benches, bench_hit_path);
criterion_main!(benches);
