//! Runs the dashboard sidecar (`cdn-dashboard`) inside the proxy process, on
//! its own listener, fed with the same snapshot `/metrics` serves.

use crate::config::Dashboard;
use crate::metrics::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use cdn_dashboard::{Hub, Settings, Source};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// The hub for these settings, shared by the sidecar's listener (the page)
/// and the public listener's `/ws` (see [`crate::websocket`]).
pub fn hub(c: &Dashboard) -> Arc<Hub> {
    Hub::new(Settings {
        interval: c.interval,
        history: c.history,
        max_clients: c.max_clients,
        max_clients_per_ip: c.max_clients_per_ip,
        web_root: c.web_root.clone(),
        chart_js: c.chart_js.clone(),
        ..Settings::default()
    })
}

/// The dashboard background service.
pub struct Sidecar {
    /// Its settings (fixed at start; a reload does not move the listener).
    pub config: Dashboard,
    /// History, fan-out and client slots.
    pub hub: Arc<Hub>,
    /// The latest snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

#[async_trait]
impl BackgroundService for Sidecar {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let c = &self.config;
        // Without its listener the page is gone, but `/ws` on the public
        // listener still needs the ticker.
        let page = async {
            match tokio::net::TcpListener::bind(c.listen).await {
                Ok(listener) => self.hub.clone().serve(listener).await,
                Err(e) => {
                    tracing::error!(listen = %c.listen, "dashboard sidecar cannot bind: {e}");
                    std::future::pending().await
                }
            }
        };
        let snapshot = self.snapshot.clone();
        // Until the snapshotter's first round the snapshot is a zeroed
        // placeholder (timestamp 0): no frame for it.
        let source: Source = Arc::new(move || {
            let s = snapshot.load();
            (s.timestamp_ms != 0).then(|| serde_json::to_string(&**s).unwrap_or_default())
        });
        tokio::select! {
            () = page => {}
            () = self.hub.clone().run_ticker(source) => {}
            _ = shutdown.changed() => {}
        }
    }
}
