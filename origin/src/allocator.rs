//! The process's allocator: jemalloc, with its background thread on, so
//! memory freed when streams close goes back to the system.
//!
//! Stream chunks are large, short-lived buffers of varying size (each is
//! what the client's socket takes, `send_room.rs`). glibc's malloc returns
//! and refaults such buffers at a high cost; mimalloc, used before, kept
//! the pages of a wave of viewers for good. jemalloc reuses them while
//! streams run and purges pages left unused for its decay time (10 s by
//! default) once they end.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background purging (a thread that returns unused
/// pages to the system).
pub fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("freed memory will not be returned to the system: {e}");
    }
}
