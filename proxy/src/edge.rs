//! The `ProxyHttp` implementation, the request path: route, pick an origin,
//! retry on another, apply the header rules, and count every attempt in the
//! origin's live state.
//!
//! Each request loads the config once (into its [`Ctx`]) and touches no
//! Prometheus object: per-origin figures are atomics in the origin, read by
//! the metrics at scrape and snapshot time.

use crate::config::Config;
use crate::header_deadline::HeaderDeadline;
use crate::media::{Failed, MediaPath, Served};
use crate::metrics::{Metrics, Snapshot};
use crate::origins::Origin;
use crate::peer::origin_peer;
use crate::respond::{failure_status, is_connect_error, respond, text};
use crate::retry_budget::RetryBudget;
use crate::routes::Route;
use crate::select::Balancer;
use crate::{cors, forwarded, request_id};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The origin's in-band load report header, parsed once (a `&str` name is
/// parsed again on every lookup).
static LOAD_HEADER: HeaderName = HeaderName::from_static(cdn_types::LOAD_HEADER);

/// The edge: everything a request needs.
pub struct Edge {
    /// Origin selection over the discovered origins.
    pub balancer: Arc<Balancer>,
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// Whole-proxy counters.
    pub metrics: Arc<Metrics>,
    /// The latest `/metrics` snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Limits retries to a fraction of traffic.
    pub budget: Arc<RetryBudget>,
    /// The first health-check round (requests arriving before it wait for it).
    pub warmup: Arc<crate::monitor::Warmup>,
    /// The dashboard's hub, when the dashboard is enabled at start.
    pub dashboard: Option<Arc<cdn_dashboard::Hub>>,
    /// The slice path for media GETs.
    pub media: Arc<MediaPath>,
    /// `cdn_client_ttfb_seconds{route}`.
    pub route_latency: crate::metrics::RouteLatency,
    /// The access log, when on.
    pub access_log: Option<Arc<cdn_types::access_log::AccessLog>>,
    /// Set on SIGTERM for the drain period.
    pub draining: Arc<crate::drain::Draining>,
}

/// Per-request state.
pub struct Ctx {
    /// The config this request runs with, loaded once when it arrives.
    config: Arc<Config>,
    /// The origin of the current attempt (cleared when the attempt ends).
    origin: Option<Arc<Origin>>,
    /// The origin of the last attempt, for counting the request once it is over.
    last: Option<Arc<Origin>>,
    /// Origins already tried for this request (inline: no allocation per request).
    tried: SmallVec<[SocketAddr; 4]>,
    /// The pool of the request's route (`routes[].pool`): only its origins serve it.
    pool: u64,
    /// The index of the request's route in `routes`, when it has one.
    route: Option<usize>,
    /// When the current attempt's connection was ready (its request about to be sent).
    sent_at: Option<Instant>,
    /// The current attempt ended with a 502/503 we chose to retry.
    retry_status: bool,
    /// No origin could be picked.
    no_origin: bool,
    /// Bound for the dashboard sidecar (`/dashboard`), not an origin.
    to_dashboard: bool,
    /// The current attempt's deadline for its origin's whole response header.
    header_deadline: Option<HeaderDeadline>,
    /// The proxy's own endpoint that answers this request, for its counter.
    local: Option<&'static str>,
    /// When the request arrived.
    started: Instant,
    /// When the plain path's response header arrived from the origin.
    header_at: Option<Instant>,
    /// What the media path did, for the access log.
    media: crate::media::Report,
    /// What the last failed attempt would have answered (504 for a timeout…):
    /// the answer when a retry finds no other origin.
    last_failure: Option<u16>,
}

/// Whether the client's connection is TLS.
fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Tells the origins who the client is (`forwarded.rs`) and which request
/// this is (`request_id.rs`), in the client's request header, which both
/// the plain path and the media path's fetches send on.
fn tell_origins(session: &mut Session, cfg: &Config) {
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let tls = is_tls(session);
    let req = session.req_header_mut();
    forwarded::add(
        req,
        client,
        if tls { "https" } else { "http" },
        &cfg.forwarded,
    );
    if let Some(name) = &cfg.request_id_name {
        request_id::ensure(req, name);
    }
}

impl Edge {
    /// Ends the current attempt: in-flight count and the passive-health outcome.
    fn end_attempt(&self, ctx: &mut Ctx, ok: bool) {
        if let Some(o) = ctx.origin.take() {
            o.end_request();
            if o.record_outcome(ok, &ctx.config.ejection) {
                tracing::warn!(origin = %o.label, "ejected after consecutive failures");
            }
        }
    }

    /// May this request be tried on another origin now?
    fn may_retry(&self, session: &Session, ctx: &Ctx) -> bool {
        let cfg = &ctx.config;
        !ctx.to_dashboard
            && session.req_header().method.is_idempotent()
            && session.response_written().is_none()
            && ctx.tried.len() < cfg.retry.attempts as usize
            && self.budget.try_withdraw(&cfg.retry)
    }

    /// Answers a request for one of the proxy's own endpoints. Returns
    /// `Ok(false)` only for the dashboard page, which is proxied on.
    async fn local(&self, route: Route, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.local = Some(match route {
            Route::Healthz => "healthz",
            Route::Metrics => "metrics",
            Route::Prometheus => "prometheus",
            Route::Dashboard => "dashboard",
            Route::DashboardSocket => "dashboard_socket",
            Route::Origin { .. } | Route::NotFound => "not_found",
        });
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let allow = [("allow", "GET, HEAD")];
            text(session, 405, "method not allowed\n", &allow).await?;
            return Ok(true);
        }
        let dashboard_on = ctx.config.dashboard.enabled;
        match route {
            Route::Healthz if self.draining.is_on() => {
                text(session, 503, "draining\n", &[]).await?
            }
            Route::Healthz => text(session, 200, "ok\n", &[]).await?,
            Route::Metrics => {
                let json = serde_json::to_vec(&**self.snapshot.load()).unwrap_or_default();
                respond(session, 200, "application/json", json.into(), &[]).await?
            }
            Route::Prometheus => {
                let body = self.metrics.prometheus_text().into();
                respond(session, 200, "text/plain; version=0.0.4", body, &[]).await?
            }
            // The dashboard's WebSocket is answered here, not proxied (see crate::websocket).
            Route::DashboardSocket if dashboard_on && self.dashboard.is_some() => {
                let hub = self.dashboard.as_ref().expect("checked above");
                match crate::websocket::admit(session, hub) {
                    Ok(admission) => {
                        let downstream = session.as_downstream_mut();
                        crate::websocket::serve(downstream, hub.clone(), admission).await?
                    }
                    Err((status, message)) => text(session, status, message, &[]).await?,
                }
            }
            Route::Dashboard if dashboard_on => {
                ctx.to_dashboard = true;
                return Ok(false);
            }
            Route::Dashboard | Route::DashboardSocket => {
                text(session, 404, "the dashboard is disabled\n", &[]).await?
            }
            Route::Origin { .. } | Route::NotFound => {
                text(session, 404, "not found\n", &[]).await?
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            config: self.config.load_full(),
            origin: None,
            last: None,
            tried: SmallVec::new(),
            pool: 0,
            route: None,
            sent_at: None,
            retry_status: false,
            no_origin: false,
            header_deadline: None,
            last_failure: None,
            to_dashboard: false,
            local: None,
            started: Instant::now(),
            header_at: None,
            media: crate::media::Report::default(),
        }
    }

    /// Local endpoints are answered here, media GETs by the media path;
    /// other origin requests go on to the plain proxy path.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.metrics.total_requests.fetch_add(1, Relaxed);
        if self.draining.is_on() {
            // Each answer closes its connection: clients reconnect to another edge.
            session.set_keepalive(None);
        }
        let route = Route::of(session.req_header().uri.path(), &ctx.config);
        if let Route::Origin { pool, index, .. } = route {
            ctx.pool = pool;
            ctx.route = Some(index);
            let cfg = &ctx.config;
            if cfg.redirect_to_https && !is_tls(session) {
                ctx.local = Some("https_redirect");
                let port = cfg.tls.first().map_or(443, |t| t.listen.port());
                return match crate::https_redirect::location(session.req_header(), port) {
                    Some(to) => text(session, 308, "moved to https\n", &[("location", &to)]).await,
                    None => text(session, 400, "a Host header is needed\n", &[]).await,
                }
                .map(|()| true);
            }
            if cors::is_preflight(session.req_header(), &ctx.config.cors) {
                ctx.local = Some("cors_preflight");
                let answer = cors::preflight_answer(session.req_header(), &ctx.config.cors)?;
                session
                    .write_response_header(Box::new(answer), true)
                    .await?;
                return Ok(true);
            }
            tell_origins(session, &ctx.config);
        }
        match route {
            // Boxed, and only for media GETs: the media path's future is
            // large, and every request's filter future would carry (and copy) it.
            Route::Origin {
                media: true,
                cache,
                pool,
                ..
            } if self.media.takes(session, &ctx.config, cache) => {
                let route = crate::media::RouteUse { cache, pool };
                let served = self
                    .media
                    .serve(session, &ctx.config, &mut ctx.media, route);
                match Box::pin(served).await {
                    Ok(Served::Done) => Ok(true),
                    Ok(Served::Proxy) => {
                        // The plain path answers after all: its figures go to the log.
                        ctx.media = crate::media::Report {
                            cache: ctx.media.cache,
                            ..Default::default()
                        };
                        self.budget.deposit(&ctx.config.retry);
                        Ok(false)
                    }
                    Err(Failed::NoAnswer(no)) => {
                        let status = no.status();
                        ctx.no_origin = no.last.is_none();
                        let why = no
                            .last
                            .map_or("no origin available".into(), |e| e.to_string());
                        Error::e_explain(ErrorType::HTTPStatus(status), why)
                    }
                    Err(Failed::Cut(e)) => Err(e),
                }
            }
            Route::Origin { .. } => {
                self.budget.deposit(&ctx.config.retry);
                Ok(false)
            }
            route => self.local(route, session, ctx).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.to_dashboard {
            let addr = ctx.config.dashboard.listen;
            return Ok(Box::new(HttpPeer::new(addr, false, String::new())));
        }
        // Just started (or upgraded): no origin is checked yet, so wait for the first round.
        self.warmup
            .wait(ctx.config.health.timeout + Duration::from_millis(500))
            .await;
        let key = session.req_header().uri.path().as_bytes();
        let picked = (self.balancer).pick(&ctx.config.selection, key, &ctx.tried, ctx.pool);
        let Some(origin) = picked else {
            if let Some(code) = ctx.last_failure {
                // Every origin left has been tried: answer as the last attempt failed.
                return Error::e_explain(
                    ErrorType::HTTPStatus(code),
                    "no other origin to retry on",
                );
            }
            ctx.no_origin = true;
            return Error::e_explain(ErrorType::HTTPStatus(503), "no origin available");
        };
        origin.start_request();
        if !ctx.tried.is_empty() {
            self.metrics.retries.inc();
        }
        ctx.tried.push(origin.addr);
        let peer = origin_peer(origin.addr, &ctx.config.timeouts);
        ctx.last = Some(origin.clone());
        ctx.origin = Some(origin);
        ctx.sent_at = None;
        Ok(Box::new(peer))
    }

    /// The dashboard sidecar serves its page under `/dashboard` and is told
    /// where the proxy put it (`endpoints.dashboard`, `.dashboard_socket`)
    /// to write those paths into the page.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.to_dashboard {
            return Ok(());
        }
        let e = &ctx.config.endpoints;
        if e.dashboard != "/dashboard" {
            let pq = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str());
            let rest = pq.strip_prefix(e.dashboard.as_str()).unwrap_or(pq);
            let uri = format!("/dashboard{rest}");
            upstream_request.set_uri(
                uri.parse()
                    .or_err(ErrorType::InvalidHTTPHeader, "dashboard path")?,
            );
        }
        upstream_request.insert_header(cdn_dashboard::BASE_HEADER, e.dashboard.as_str())?;
        upstream_request
            .insert_header(cdn_dashboard::SOCKET_HEADER, e.dashboard_socket.as_str())?;
        Ok(())
    }

    /// Time to first byte is the origin's time: the clock starts once
    /// connected, and so does the deadline for the whole response header.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.sent_at = Some(Instant::now());
        if !ctx.to_dashboard {
            ctx.header_deadline = HeaderDeadline::arm(fd, ctx.config.timeouts.response_header);
        }
        Ok(())
    }

    /// Reads the origin's timing and load report, strips the report, names
    /// the origin (`X-Served-By`), or turns a 502/503 into a retry.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.header_deadline = None;
        let cfg = &ctx.config;
        let report = resp.remove_header(&LOAD_HEADER);
        if let (Some(o), Some(sent)) = (&ctx.origin, ctx.sent_at) {
            // One clock read for the response's timing and its report's age.
            let now = Instant::now();
            let now_ms = crate::clock::ms_at(now);
            let ttfb = now.saturating_duration_since(sent);
            ctx.header_at = Some(now);
            o.observe_ttfb(ttfb, now_ms, cfg.selection.ewma_decay);
            if let Some(report) = report {
                o.set_load_text(report.as_bytes(), now_ms);
            }
        }
        let status = resp.status.as_u16();
        if (status == 502 || status == 503) && self.may_retry(session, ctx) {
            // Turned into a retry on another origin by error_while_proxy; nothing reached the client.
            ctx.retry_status = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "origin answered with a retryable status",
            );
        }
        if let (Some(o), Some(name)) = (&ctx.origin, &cfg.served_by_name) {
            resp.insert_header(name.clone(), o.label_header.clone())?;
        }
        if let (Some(status), Some(name)) = (ctx.media.cache, &cfg.cache_status_name) {
            resp.insert_header(name.clone(), status.as_str())?;
        }
        if let Some(name) = &cfg.request_id_name {
            request_id::echo(resp, session.req_header(), name);
        }
        cors::decorate(resp, session.req_header(), &cfg.cors);
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
            self.metrics.total_bytes.inc_by(n);
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
        ctx.last_failure = Some(503);
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
        if ctx.header_deadline.take().is_some_and(|d| d.fired()) {
            // Our deadline shut the connection: a timeout, the origin's fault.
            e = Error::because(
                ErrorType::ReadTimedout,
                "response header not complete within timeouts.response_header",
                e,
            )
            .into_up();
        }
        ctx.last_failure = Some(failure_status(e.etype()).unwrap_or(502));
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
        let by_source = || match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 0,
            _ => 500,
        };
        let code = match failure_status(e.etype()) {
            // A connect error with no origin tried (the dashboard sidecar)
            // is not "no origin can serve this now".
            Some(503) if is_connect_error(e.etype()) && ctx.last.is_none() => by_source(),
            Some(code) => code,
            None => by_source(),
        };
        if ctx.no_origin {
            self.metrics.no_origin.inc();
        }
        if code > 0 && session.response_written().is_none() {
            // Pingora closes the connection after a failed proxy attempt
            // (its reuse follows the origin side's); say so, or a client
            // reusing it races the close and sees a reset on its next request.
            session.set_keepalive(None);
            let id = ctx.config.request_id_name.as_ref().and_then(|name| {
                let v = session.req_header().headers.get(name)?.to_str().ok()?;
                Some((name.as_str(), v.to_owned()))
            });
            let id = id.as_ref().map(|(n, v)| (*n, v.as_str()));
            let written = match code {
                503 => {
                    let extra = [Some(("retry-after", "1")), id];
                    text(
                        session,
                        503,
                        "no origin available, retry shortly\n",
                        &extra.into_iter().flatten().collect::<SmallVec<[_; 2]>>(),
                    )
                    .await
                }
                504 => text(session, 504, "origin timed out\n", id.as_slice()).await,
                _ => text(session, code, "origin failed\n", id.as_slice()).await,
            };
            if let Err(we) = written {
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
        if status == 0 {
            // No answer was written: the client left first. Not a 5xx.
            self.metrics.client_closed.inc();
        } else if let Some(endpoint) = ctx.local {
            self.metrics.count_local(endpoint, status);
        } else {
            if ctx.no_origin {
                self.metrics.count_unrouted(status);
            }
            if let Some(o) = &ctx.last {
                o.count_response(status);
            }
        }
        // Still open only if the last attempt ended without an error callback.
        let origin_fault = e.is_some_and(|e| e.esource() == &ErrorSource::Upstream);
        self.end_attempt(ctx, status < 500 && !origin_fault);
        // The media path's header time, else the plain path's.
        let header_at = ctx.media.header_at.or(ctx.header_at);
        if let (Some(route), Some(at), 1..) = (ctx.route, header_at, status) {
            let waited = at.saturating_duration_since(ctx.started);
            self.route_latency.observe(&ctx.config, route, waited);
        }
        if let Some(log) = &self.access_log {
            // Answered by the media path (a cache hit has no origin).
            let media = ctx.media.origin.is_some() || ctx.media.header_at.is_some();
            let facts = crate::access_log::Facts {
                started: ctx.started,
                header_at: if media {
                    ctx.media.header_at
                } else {
                    ctx.header_at
                },
                origin: ctx.media.origin.as_deref().or(ctx.last.as_deref()),
                attempts: if media {
                    ctx.media.attempts
                } else {
                    ctx.tried.len() as u32
                },
                status,
                request_id: ctx.config.request_id_name.as_ref(),
                cache: ctx.media.cache.map(|c| c.as_str()),
                direct_bytes: ctx.media.direct_bytes,
            };
            if !crate::access_log::record(log, session, facts) {
                self.metrics.access_log_dropped.inc();
            }
        }
    }
}
