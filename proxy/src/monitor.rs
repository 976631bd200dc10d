//! The background service that keeps every origin's health and load fresh:
//! an HTTP check of each origin's health path every `health.interval` (the
//! answer also carries the origin's load report, which keeps idle origins'
//! figures current), rise/fall thresholds, the return of ejected origins,
//! and discovery refreshes every `discovery.interval` or on reload.

use crate::config::Config;
use crate::origins::{Origin, Registry};
use crate::select::Balancer;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use cdn_types::{LoadReport, LOAD_HEADER};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Set once the first discovery and health-check round is done ("warm"):
/// until then every origin is unchecked, and picking would answer 503.
#[derive(Default)]
pub struct Warmup {
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Warmup {
    /// Waits (at most `limit`) for the first round; returns at once after it.
    pub async fn wait(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering::Acquire;
        if self.done.load(Acquire) {
            return;
        }
        let notified = self.notify.notified();
        if !self.done.load(Acquire) {
            let _ = tokio::time::timeout(limit, notified).await;
        }
    }

    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Health checks and discovery refreshes.
pub struct Monitor {
    /// Discovery and the selector it rebuilds.
    pub balancer: Arc<Balancer>,
    /// Every origin.
    pub registry: Arc<Registry>,
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// Notified on reload: rediscover now.
    pub rediscover: Arc<Notify>,
    /// Marked after the first round.
    pub warmup: Arc<Warmup>,
}

impl Monitor {
    async fn check(client: &reqwest::Client, o: &Origin, cfg: &Config) {
        let url = format!("http://{}{}", o.addr, cfg.health.path);
        let result = match client.get(&url).timeout(cfg.health.timeout).send().await {
            Ok(resp) => {
                if let Some(report) = resp
                    .headers()
                    .get(LOAD_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| LoadReport::parse_orca_text(v).ok())
                {
                    o.set_load(&report);
                }
                match resp.status().as_u16() {
                    200..=299 => Some(true),
                    503 => Some(false),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        o.health
            .record_check(result, cfg.health.rise, cfg.health.fall);
    }
}

#[async_trait]
impl BackgroundService for Monitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("an HTTP client with default settings");
        let mut last_discovery: Option<Instant> = None;
        loop {
            let cfg = self.config.load_full();
            if last_discovery.is_none_or(|t| t.elapsed() >= cfg.discovery.interval) {
                if let Err(e) = self.balancer.update().await {
                    tracing::warn!("discovery failed: {e}");
                }
                last_discovery = Some(Instant::now());
            }
            let origins = self.registry.all();
            let checks = origins.iter().map(|o| Self::check(&client, o, &cfg));
            futures_util::future::join_all(checks).await;
            self.warmup.finish();
            tokio::select! {
                () = tokio::time::sleep(cfg.health.interval) => {}
                () = self.rediscover.notified() => last_discovery = None,
                _ = shutdown.changed() => return,
            }
        }
    }
}
