//! Graceful drain on SIGTERM: for `drain_period` the proxy goes on accepting
//! and serving, but `/healthz` answers `503` and every answer closes its
//! connection, so load balancers (and Kubernetes endpoints) take it out of
//! rotation while nothing is refused; then Pingora stops accepting and gives
//! requests in flight its grace period. SIGINT stops at once; SIGQUIT hands
//! the listeners to a new process (`-u`) without a drain.

use crate::config::Config;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Set once a drain has begun.
#[derive(Default)]
pub struct Draining(AtomicBool);

impl Draining {
    /// Whether the proxy is draining.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pingora's shutdown signal, with the drain before a graceful terminate.
pub struct DrainingSignal {
    /// The live config (`drain_period` is read when SIGTERM arrives).
    pub config: Arc<ArcSwap<Config>>,
    /// Shared with the request path.
    pub draining: Arc<Draining>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for shutdown signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
        }
        let period = self.config.load().drain_period;
        self.draining.0.store(true, Ordering::Relaxed);
        tracing::info!(
            ?period,
            "SIGTERM: draining (/healthz answers 503) before closing the listeners"
        );
        tokio::select! {
            _ = tokio::time::sleep(period) => ShutdownSignal::GracefulTerminate,
            // A second SIGTERM ends the drain early; SIGINT stops at once.
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
