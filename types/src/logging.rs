//! Process logging for both binaries: `tracing` events to stderr, filtered
//! by `RUST_LOG` (default `info`), as text or, with `CDN_LOG_FORMAT=json`,
//! one JSON object per line (for log shippers). Colour codes only when
//! stderr is a terminal: `docker logs` and files get plain text.

use std::io::IsTerminal;

/// The environment variable that picks the format: `text` (default) or `json`.
pub const FORMAT_VAR: &str = "CDN_LOG_FORMAT";

/// Installs the global `tracing` subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match std::env::var(FORMAT_VAR).as_deref() {
        Ok("json") => builder.json().init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            tracing::warn!("{FORMAT_VAR}={other:?} is neither `text` nor `json`; writing text");
        }
    }
}
