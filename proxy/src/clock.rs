//! The proxy's monotonic clock, in milliseconds since the process started:
//! cheap to read and small enough to keep in an atomic next to a figure.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process started (monotonic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
