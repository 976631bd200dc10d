//! The proxy's monotonic clock, in milliseconds since the process started:
//! cheap to read and small enough to keep in an atomic next to a figure.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started (monotonic).
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `at` in [`now_ms`]'s terms, for a caller that has read the clock already.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_millis() as u64
}
