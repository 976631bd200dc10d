//! The process's allocator: jemalloc, with its background thread on, so
//! memory freed when streams and connections close goes back to the system.
//!
//! A video edge's load comes in waves (a live event's 1,000 viewers leave
//! together); an allocator that keeps every page it ever touched (mimalloc,
//! which this replaced, held the peak for good) leaves the edge at its peak
//! footprint. jemalloc's background thread purges pages left unused for its
//! decay time (10 s by default), so RSS follows the load back down.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background purging. A service, so that it runs
/// after Pingora has daemonized (threads do not survive a fork).
pub struct Purging;

#[async_trait]
impl BackgroundService for Purging {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
            tracing::warn!("freed memory will not be returned to the system: {e}");
        }
    }
}
