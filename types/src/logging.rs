//! Process logging for both binaries: `tracing` events to stderr, filtered
//! by `RUST_LOG` (default `info`).

/// Installs the global `tracing` subscriber. Call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
