//! The gateway's integration tests, one binary: each module proves one area of behaviour
//! in-process against the bundled simulator (`zoho-crm-simulator`), with the shared harness,
//! query builders, metrics reader, raw-TCP helpers and private `redis-server` in [`support`].

mod caching;
mod canonical_meaning;
mod count_endpoint;
mod credits;
mod criteria_meaning;
mod demo;
mod edges;
mod fleet;
mod fleet_replicas;
mod hardening;
mod hot_reads;
mod lifecycle;
mod metrics;
mod reads;
mod reload;
mod routes;
mod secrets;
mod support;
mod tls;
mod tokens;
