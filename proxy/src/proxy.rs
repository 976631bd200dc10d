//! The `ProxyHttp` implementation: routing on the public listener, picking
//! an origin, retrying on a different one, header rules, and the per-origin
//! accounting of every request.

use crate::config::Config;
use crate::metrics::{status_class, Metrics, OriginSeries, Snapshot};
use crate::origins::{Origin, Registry};
use crate::retry_budget::RetryBudget;
use crate::select::Selector;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use cdn_types::LOAD_HEADER;
use pingora::http::ResponseHeader;
use pingora::lb::LoadBalancer;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The edge: everything a request needs.
pub struct Edge {
    /// Origin selection over the discovered backends.
    pub lb: Arc<LoadBalancer<Selector>>,
    /// Every origin's live state.
    pub registry: Arc<Registry>,
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// Counters and series.
    pub metrics: Arc<Metrics>,
    /// The latest `/metrics` snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Limits retries to a fraction of traffic.
    pub budget: Arc<RetryBudget>,
    /// The first health-check round (requests arriving before it wait for it).
    pub warmup: Arc<crate::monitor::Warmup>,
    /// The dashboard's hub, when the dashboard is enabled at start.
    pub dashboard: Option<Arc<cdn_dashboard::Hub>>,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    /// The origin of the current attempt (cleared when the attempt ends).
    origin: Option<Arc<Origin>>,
    /// The origin of the last attempt, for counting the request once it is over.
    last: Option<Arc<Origin>>,
    /// Origins already tried for this request.
    tried: Vec<SocketAddr>,
    /// When the current attempt's connection was ready (its request about to be sent).
    sent_at: Option<Instant>,
    /// The current attempt ended with a 502/503 we chose to retry.
    retry_status: bool,
    /// No origin could be picked.
    no_origin: bool,
    /// Bound for the dashboard sidecar (`/dashboard`, `/ws`), not an origin.
    to_dashboard: bool,
}

impl Edge {
    /// The origin's Prometheus series, resolved on its first request.
    fn series<'a>(&self, o: &'a Origin) -> &'a OriginSeries {
        o.series
            .get_or_init(|| self.metrics.origin_series(&o.label))
    }

    /// Ends the current attempt: in-flight count and the passive-health outcome.
    fn end_attempt(&self, ctx: &mut Ctx, ok: bool) {
        if let Some(o) = ctx.origin.take() {
            o.end_request();
            if o.record_outcome(ok, &self.config.load().ejection) {
                tracing::warn!(origin = %o.label, "ejected after consecutive failures");
                self.metrics.ejections.with_label_values(&[&o.label]).inc();
            }
        }
    }

    /// May this request be tried on another origin now?
    fn may_retry(&self, session: &Session, ctx: &Ctx) -> bool {
        let cfg = self.config.load();
        !ctx.to_dashboard
            && session.req_header().method.is_idempotent()
            && session.response_written().is_none()
            && ctx.tried.len() < cfg.retry.attempts as usize
            && self.budget.try_withdraw(&cfg.retry)
    }

    async fn respond(
        &self,
        session: &mut Session,
        status: u16,
        content_type: &str,
        body: Bytes,
    ) -> Result<bool> {
        let mut h = ResponseHeader::build(status, Some(4))?;
        h.insert_header("content-type", content_type)?;
        h.insert_header("content-length", body.len().to_string())?;
        h.insert_header("cache-control", "no-store")?;
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if !head {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// Local endpoints are answered here; `/` and `/videos...` go on to an origin.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.metrics.total_requests.fetch_add(1, Relaxed);
        let path = session.req_header().uri.path();
        if path == "/" || path == "/videos" || path.starts_with("/videos/") {
            self.budget.deposit(&self.config.load().retry);
            return Ok(false);
        }
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let mut h = ResponseHeader::build(405, Some(2))?;
            h.insert_header("allow", "GET, HEAD")?;
            h.insert_header("content-length", "0")?;
            session.write_response_header(Box::new(h), true).await?;
            return Ok(true);
        }
        // The dashboard's WebSocket is answered here, not proxied (see crate::websocket).
        if let Some(hub) = self.dashboard.as_ref().filter(|_| path == "/ws") {
            if self.config.load().dashboard.enabled {
                return match crate::websocket::admit(session, hub) {
                    Ok(admission) => {
                        let downstream = session.as_downstream_mut();
                        crate::websocket::serve(downstream, hub.clone(), admission).await?;
                        Ok(true)
                    }
                    Err((status, message)) => {
                        let body = Bytes::from_static(message.as_bytes());
                        self.respond(session, status, "text/plain", body).await
                    }
                };
            }
        }
        match path {
            "/healthz" => {
                self.respond(session, 200, "text/plain", Bytes::from_static(b"ok\n"))
                    .await
            }
            "/metrics" => {
                let json = serde_json::to_vec(&**self.snapshot.load()).unwrap_or_default();
                self.respond(session, 200, "application/json", json.into())
                    .await
            }
            "/prometheus" => {
                let text = self.metrics.prometheus_text(&self.registry);
                self.respond(session, 200, "text/plain; version=0.0.4", text.into())
                    .await
            }
            p if p == "/ws" || p == "/dashboard" || p.starts_with("/dashboard/") => {
                if self.config.load().dashboard.enabled {
                    ctx.to_dashboard = true;
                    return Ok(false);
                }
                let body = Bytes::from_static(b"the dashboard is disabled\n");
                self.respond(session, 404, "text/plain", body).await
            }
            _ => {
                self.respond(
                    session,
                    404,
                    "text/plain",
                    Bytes::from_static(b"not found\n"),
                )
                .await
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.to_dashboard {
            let addr = self.config.load().dashboard.listen;
            return Ok(Box::new(HttpPeer::new(addr, false, String::new())));
        }
        // Just started (or upgraded): no origin is checked yet, so wait for the first round.
        let cfg = self.config.load_full();
        self.warmup
            .wait(cfg.health.timeout + Duration::from_millis(500))
            .await;
        let key = session.req_header().uri.path().as_bytes();
        let tried = &ctx.tried;
        let picked = self.lb.select_with(key, 256, |b, _| {
            b.as_inet().is_some_and(|a| !tried.contains(a))
        });
        let Some(addr) = picked.as_ref().and_then(|b| b.as_inet().copied()) else {
            ctx.no_origin = true;
            return Error::e_explain(ErrorType::HTTPStatus(503), "no origin available");
        };
        let origin = self.registry.get_or_insert(addr, "unknown", 1.0);
        origin.start_request();
        if !ctx.tried.is_empty() {
            self.metrics.retries.inc();
        }
        ctx.tried.push(addr);
        ctx.last = Some(origin.clone());
        ctx.origin = Some(origin);
        ctx.sent_at = None;

        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(cfg.timeouts.connect);
        peer.options.total_connection_timeout = Some(cfg.timeouts.connect);
        peer.options.read_timeout = Some(cfg.timeouts.read);
        peer.options.idle_timeout = Some(cfg.timeouts.idle);
        Ok(Box::new(peer))
    }

    /// Time to first byte is the origin's time: the clock starts once connected.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.sent_at = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let cfg = self.config.load();
        if let (Some(o), Some(sent)) = (&ctx.origin, ctx.sent_at) {
            let ttfb = sent.elapsed();
            o.observe_ttfb(ttfb, cfg.selection.ewma_decay);
            self.series(o).ttfb.observe(ttfb.as_secs_f64());
            self.metrics.record_response_time(ttfb);
            if let Some(report) = resp.headers.get(LOAD_HEADER) {
                o.set_load_text(report.as_bytes());
            }
        }
        resp.remove_header(LOAD_HEADER);
        let status = resp.status.as_u16();
        if (status == 502 || status == 503) && self.may_retry(session, ctx) {
            // Turned into a retry on another origin by error_while_proxy; nothing reached the client.
            ctx.retry_status = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "origin answered with a retryable status",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let cfg = self.config.load();
        if let (Some(o), false) = (&ctx.origin, cfg.served_by_header.is_empty()) {
            resp.insert_header(cfg.served_by_header.clone(), o.label.as_str())?;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(b), Some(o)) = (body, &ctx.origin) {
            let n = b.len() as u64;
            o.add_bytes(n);
            self.metrics.total_bytes.fetch_add(n, Relaxed);
            self.series(o).bytes.inc_by(n);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.end_attempt(ctx, false);
        let retry = self.may_retry(session, ctx);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("origin {peer}"));
        if std::mem::take(&mut ctx.retry_status) {
            self.end_attempt(ctx, false);
            e.set_retry(true);
            return e;
        }
        // A client that went away is not the origin's fault.
        let origin_fault = e.esource() == &ErrorSource::Upstream;
        self.end_attempt(ctx, !origin_fault);
        let retry = origin_fault && self.may_retry(session, ctx);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => 0,
                _ => 500,
            },
        };
        if ctx.no_origin {
            self.metrics.no_origin.inc();
        }
        if code > 0 && session.response_written().is_none() {
            let written = async {
                let body = match code {
                    503 => "no origin available, retry shortly\n",
                    504 => "origin timed out\n",
                    _ => "origin failed\n",
                };
                let mut h = ResponseHeader::build(code, Some(4))?;
                h.insert_header("content-type", "text/plain")?;
                h.insert_header("content-length", body.len().to_string())?;
                if code == 503 {
                    h.insert_header("retry-after", "1")?;
                }
                session.write_response_header(Box::new(h), false).await?;
                session
                    .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
                    .await
            };
            if let Err(we) = written.await {
                tracing::debug!("could not send the error response: {we}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Clients hanging up (players cancel requests on every seek) are normal, not errors.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if ctx.no_origin {
            self.metrics
                .requests
                .with_label_values(&["none", status_class(status)])
                .inc();
        }
        if let Some(o) = &ctx.last {
            self.series(o).requests(status).inc();
        }
        // Still open only if the last attempt ended without an error callback.
        let origin_fault = e.is_some_and(|e| e.esource() == &ErrorSource::Upstream);
        self.end_attempt(ctx, status < 500 && !origin_fault);
    }
}
