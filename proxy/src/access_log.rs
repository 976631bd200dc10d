//! The proxy's access log (`access_log:` in cdn.yaml): one line per request
//! from Pingora's `logging` hook, written off the request path by
//! `cdn_types::access_log`, and the file reopened on SIGUSR1.

use crate::origins::Origin;
use async_trait::async_trait;
use cdn_types::access_log::{AccessLog, Entry};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{signal, SignalKind};

/// What the request path knows about a request when it ends.
pub struct Facts<'a> {
    /// When the request arrived.
    pub started: Instant,
    /// When its response header was ready.
    pub header_at: Option<Instant>,
    /// The origin that answered (or was last tried).
    pub origin: Option<&'a Origin>,
    /// Origins tried before the answer started.
    pub attempts: u32,
    /// The status sent; 0: none (the client left first).
    pub status: u16,
    /// The request id header, when on.
    pub request_id: Option<&'a http::HeaderName>,
    /// What the cache did (`HIT`, `MISS`...), when it had a say.
    pub cache: Option<&'static str>,
    /// Body bytes sent past Pingora's session (which counts the rest).
    pub direct_bytes: u64,
}

/// Queues the line for one request; false if the log dropped it.
pub fn record(log: &AccessLog, session: &Session, f: Facts<'_>) -> bool {
    let req = session.req_header();
    let header = |name: &http::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let protocol = match req.version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    };
    let now = Instant::now();
    log.log(&Entry {
        client: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        method: req.method.as_str(),
        target: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol,
        // nginx's code for a client that left before any answer.
        status: if f.status == 0 { 499 } else { f.status },
        bytes: session.body_bytes_sent() as u64 + f.direct_bytes,
        duration: now.saturating_duration_since(f.started),
        ttfb: f.header_at.map(|h| h.saturating_duration_since(f.started)),
        referer: header(&http::header::REFERER),
        user_agent: header(&http::header::USER_AGENT),
        request_id: f.request_id.and_then(header),
        forwarded_for: None,
        origin: f.origin.map(|o| o.label.as_str()),
        attempts: (f.attempts > 0).then_some(f.attempts),
        cache: f.cache,
    })
}

/// Reopens the access log file on SIGUSR1 (after logrotate moved it).
pub struct Reopener {
    /// The log.
    pub log: Arc<AccessLog>,
}

#[async_trait]
impl BackgroundService for Reopener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            tracing::error!("cannot listen for SIGUSR1; the access log will not be reopened");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    self.log.reopen();
                    tracing::info!("access log reopened");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
