//! The background service that keeps every origin's health and load fresh:
//! an HTTP check of each origin's health path every `health.interval` (the
//! answer also carries the origin's load report, which keeps idle origins'
//! figures current), rise/fall thresholds, the return of ejected origins,
//! and discovery refreshes every `discovery.interval` or on reload. Checks
//! go through Pingora's HTTP connector, the client the proxy already has.

use crate::config::Config;
use crate::origins::{Origin, Registry};
use crate::select::Balancer;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use cdn_types::{LoadReport, LOAD_HEADER};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
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
    /// One active check of `o`: `GET health.path` over Pingora's own HTTP
    /// connector (pooled, as the proxy's requests are), within
    /// `health.timeout`. Records 2xx as up, 503 as draining, anything else
    /// or no answer as a failure, and stores the load report it carries.
    async fn check(connector: &Connector, o: &Origin, cfg: &Config) {
        let result = tokio::time::timeout(cfg.health.timeout, Self::probe(connector, o, cfg))
            .await
            .ok()
            .and_then(|answer| answer.ok())
            .and_then(|status| match status {
                200..=299 => Some(true),
                503 => Some(false),
                _ => None,
            });
        o.health
            .record_check(result, cfg.health.rise, cfg.health.fall);
    }

    /// Sends the check and returns the status; the body is drained so the
    /// connection can be reused.
    async fn probe(connector: &Connector, o: &Origin, cfg: &Config) -> pingora::Result<u16> {
        let peer = HttpPeer::new(o.addr, false, String::new());
        let (mut session, _reused) = connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build("GET", cfg.health.path.as_bytes(), None)?;
        req.insert_header("host", o.label.as_str())?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let resp = session.response_header().expect("just read");
        let status = resp.status.as_u16();
        let report = resp
            .headers
            .get(LOAD_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| LoadReport::parse_orca_text(v).ok());
        if let Some(report) = report {
            o.set_load(&report);
        }
        while session.read_response_body().await?.is_some() {}
        connector
            .release_http_session(session, &peer, Some(cfg.timeouts.idle))
            .await;
        Ok(status)
    }
}

#[async_trait]
impl BackgroundService for Monitor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Connector::new(None);
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
            let checks = origins.iter().map(|o| Self::check(&connector, o, &cfg));
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
