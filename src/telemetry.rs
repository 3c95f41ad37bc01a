//! Logging with tracing-subscriber: `RUST_LOG`-style filter (the `RUST_LOG` variable wins over
//! `[logging] filter`), human or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RawLogging};

/// Installs the global subscriber. Safe to call twice (the second call does nothing).
pub fn init(logging: &RawLogging) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
