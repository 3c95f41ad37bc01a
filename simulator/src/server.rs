//! Listener, per-connection serving and graceful shutdown.
//!
//! One accept loop on a `tokio::net::TcpListener`; each connection is served
//! by `hyper_util`'s auto (HTTP/1.1 or h2c) builder and watched by a
//! [`GracefulShutdown`]. Shutdown cancels the shared token (which also ends
//! hung and delayed requests), stops accepting, asks every connection to
//! finish and waits up to [`DRAIN_DEADLINE`] for them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::handle::{SimHandle, State};
use super::response::SimResponse;
use super::route::{Target, classify};
use super::{api, control, oauth};

/// Longest shutdown waits for open connections.
pub(crate) const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A request ended on purpose without a response (reset/hang fault or
/// shutdown); hyper closes the connection.
#[derive(Debug, thiserror::Error)]
#[error("request dropped by the simulator")]
pub(crate) struct Dropped;

/// Why a request body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit.
    TooLarge,
    /// The client broke off or sent garbage framing.
    Broken,
}

/// Collects a body of at most `limit` bytes.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

/// Routes one request to the token endpoint, the control surface or the API.
async fn dispatch(state: Arc<State>, req: Request<Incoming>) -> Result<SimResponse, Dropped> {
    let target = classify(req.method(), req.uri().path());
    state
        .counters
        .arrive(target.route(), req.uri().query().unwrap_or(""));
    match target {
        Target::Token => Ok(oauth::token_endpoint(&state, req).await),
        Target::Control(rest) => Ok(control::handle(SimHandle { state }, &rest, req).await),
        Target::Api(_) | Target::NotFound | Target::WrongMethod => {
            api::handle(state, target, req).await
        }
    }
}

/// Accepts and serves connections until `state.cancel` fires, then drains.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    continue;
                }
            },
            () = state.cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| dispatch(state.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "simulator connection ended with error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("simulator shutdown deadline passed with connections open");
    }
}
