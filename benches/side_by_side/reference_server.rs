//! The side-by-side harness's reference: a minimal hyper 1 server answering every request with
//! the same status line, headers and body from memory (what a cache hit would ideally cost).
//! Nothing of the gateway is used, so it stays a fair "bare hyper" baseline.
//!
//! ```text
//! cargo run --release --example reference_server -- 127.0.0.1:18201 BODY_FILE [HEADERS_FILE]
//! ```
//!
//! `HEADERS_FILE` holds `name: value` lines (a captured response head; the status line and
//! `content-length`, `date`, `connection`, `transfer-encoding` lines are skipped: hyper writes
//! those itself). Runs until killed. Plain HTTP/1.1, keep-alive, the tokio multi-thread runtime
//! with its default worker count (like the gateway).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: reference_server ADDR BODY_FILE [HEADERS_FILE]";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let body = Bytes::from(std::fs::read(args.next().ok_or(usage)?)?);
    let headers = match args.next() {
        Some(path) => parse_head(&std::fs::read_to_string(path)?)?,
        None => HeaderMap::new(),
    };
    let listener = TcpListener::bind(addr).await?;
    eprintln!("reference server on http://{}", listener.local_addr()?);
    // `REFERENCE_LISTENER=gateway`: the same answer through the gateway's own listener
    // (`zoho_gateway::server::serve`: hyper-util's auto builder, the sweeper, drain), to tell
    // the listener's cost from the request path's.
    if std::env::var("REFERENCE_LISTENER").as_deref() == Ok("gateway") {
        let settings = zoho_gateway::server::ListenerSettings {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            drain_timeout: std::time::Duration::from_secs(1),
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
            http2_max_concurrent_streams: 100,
            max_headers: 100,
        };
        let handler = move |_req: Request<Incoming>, _peer: SocketAddr| {
            let mut resp = Response::new(Full::new(body.clone()));
            *resp.headers_mut() = headers.clone();
            async move { resp }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        zoho_gateway::server::serve(listener, handler, settings, stop).await;
        return Ok(());
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (body, headers) = (body.clone(), headers.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                *resp.headers_mut() = headers.clone();
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// `name: value` lines into a header map, minus what hyper writes itself.
fn parse_head(text: &str) -> Result<HeaderMap, BoxError> {
    let mut map = HeaderMap::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue; // the status line
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())?;
        if matches!(
            name.as_str(),
            "content-length" | "date" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            continue;
        }
        map.append(name, HeaderValue::from_str(value.trim())?);
    }
    Ok(map)
}
