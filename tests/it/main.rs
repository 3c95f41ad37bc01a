//! The gateway's integration tests, one binary: each module proves one area of behaviour
//! in-process against the bundled simulator (`zoho-crm-simulator`), with the shared harness,
//! query builders, metrics reader and raw-TCP helpers in [`support`].

mod caching;
mod canonical_meaning;
mod count_endpoint;
mod demo;
mod hardening;
mod lifecycle;
mod metrics;
mod routes;
mod secrets;
mod support;
mod tokens;
