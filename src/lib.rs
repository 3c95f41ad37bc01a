//! Zoho CRM caching gateway.
#![forbid(unsafe_code)]
pub mod canonical;
pub mod simulator;
