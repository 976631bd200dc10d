//! One client's media response, written by the proxy itself: the first
//! slice fixes the object, the client's range is cut into slice fetches, and
//! each fetch's body is copied to the client a read at a time (no buffering
//! beyond one read). An origin failing mid-fetch is replaced by another for
//! the rest of that slice, its bytes checked to be the same object's.

use super::client_body::ClientBody;
use super::fetch::{Ask, NoAnswer, OpenSlice};
use super::object::{Mismatch, Object};
use super::pace::Pace;
use super::slicing::{next_fetch, Asked, FirstAsk};
use super::{MediaPath, HOP_BY_HOP};
use crate::config::Config;
use bytes::Bytes;
use cdn_types::range::{range_outcome, Outcome};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OrErr};
use smallvec::SmallVec;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// How a request left the media path.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The response was written (completely, or cut and counted).
    Done,
    /// Not for the media path after all: the plain proxy path answers it.
    Proxy,
}

/// What the media path tells the access log about a request.
#[derive(Default)]
pub struct Report {
    /// When the client's response header was written.
    pub header_at: Option<std::time::Instant>,
    /// The origin of the first slice (named in `X-Served-By`).
    pub origin: Option<Arc<crate::origins::Origin>>,
    /// Origins asked before the first slice answered.
    pub attempts: u32,
    /// What the cache did, when there is one.
    pub cache: Option<crate::cache::CacheStatus>,
    /// Body bytes sent past Pingora's session (`sendfile`), which it does
    /// not count.
    pub direct_bytes: u64,
}

/// Why the media path could not answer.
#[derive(Debug)]
pub enum Failed {
    /// No origin answered before the client's response started: answer this status.
    NoAnswer(NoAnswer),
    /// The response had started and could not be finished, or the client left.
    Cut(Box<Error>),
}

/// How copying one fetch's body ended short.
enum CopyError {
    /// The origin failed (reset, timeout, short body): resume elsewhere.
    Origin(Box<Error>),
    /// The client went away or could not be written to.
    Client(Box<Error>),
}

impl MediaPath {
    /// Answers a media GET from slices. `Ok(Served::Proxy)` hands it to the
    /// plain proxy path unanswered (not media, several ranges, or an origin
    /// whose first answer is not a 206 of the asked range).
    /// The caller has checked [`Self::takes`].
    /// `route`: whether the cache may answer, and the pool of origins.
    pub async fn serve(
        &self,
        session: &mut Session,
        cfg: &Arc<Config>,
        report: &mut Report,
        route: super::RouteUse,
    ) -> Result<Served, Failed> {
        if let Some(cache) = &self.cache {
            let req = session.req_header();
            // A shared cache leaves authorized requests alone (RFC 9111 §3.5).
            if route.cache && !req.headers.contains_key(http::header::AUTHORIZATION) {
                return Box::pin(self.serve_cached(cache, session, cfg, report, route.pool)).await;
            }
            report.cache = Some(crate::cache::CacheStatus::Bypass);
        }
        if session.req_header().method != http::Method::GET {
            return Ok(Served::Proxy);
        }
        self.serve_fetched(session, cfg, report, route.pool).await
    }

    /// Answers a media GET from slices fetched for it alone (no cache).
    pub(super) async fn serve_fetched(
        &self,
        session: &mut Session,
        cfg: &Arc<Config>,
        report: &mut Report,
        pool: u64,
    ) -> Result<Served, Failed> {
        let req = session.req_header();
        let range = req.headers.get("range").and_then(|v| v.to_str().ok());
        let asked = Asked::of(range);
        if asked == Asked::Several {
            return Ok(Served::Proxy);
        }
        self.warmup
            .wait(cfg.health.timeout + std::time::Duration::from_millis(500))
            .await;
        let slice = cfg.media.slice_size;
        let first_ask = FirstAsk::for_asked(asked, slice);
        let mut tried = SmallVec::new();
        let ask = Ask {
            client: req,
            range: first_ask.header(),
            if_range: None,
            pool,
        };
        // Boxed, as the other fetches: a stream's future then stays small
        // while it spends its life copying.
        let first = Box::pin(self.fetcher.open_any(cfg, &ask, &mut tried))
            .await
            .map_err(Failed::NoAnswer)?;
        report.origin = Some(first.attempt.origin.clone());
        report.attempts = tried.len() as u32;
        let status = first.resp().status.as_u16();
        match status {
            206 => {}
            // The first fetch was a range of ours, not the client's: let the
            // origin answer the client's own request.
            200 | 416 => return Ok(Served::Proxy),
            // Anything else (404, 304 or 412 to the client's preconditions,
            // ...) answers the client as it is.
            _ => {
                return Box::pin(self.relay(session, cfg, first, report))
                    .await
                    .map(|()| Served::Done)
            }
        }
        let Some((object, got)) = Object::from_first(first.resp()) else {
            return Ok(Served::Proxy);
        };
        if first_ask.expected(object.size) != Some(got.clone()) {
            tracing::warn!(
                origin = %first.attempt.origin.label,
                "asked for {}, got {:?} of {} bytes: proxied instead",
                first_ask.header(),
                got,
                object.size
            );
            return Ok(Served::Proxy);
        }
        let (status, want) =
            match range_outcome(&session.req_header().headers, &object.validators()) {
                Outcome::Full => (200, 0..=object.size - 1),
                Outcome::Partial(r) if r.len() == 1 => (206, r[0].clone()),
                // Several ranges, or none satisfiable after all: the origin decides.
                _ => return Ok(Served::Proxy),
            };
        // Without a validator, bytes from two fetches could be two versions.
        if object.if_range().is_none() && !(got.start() == want.start() && got.end() >= want.end())
        {
            return Ok(Served::Proxy);
        }
        let mut header = object
            .client_header(status, &want)
            .or_err(ErrorType::InternalError, "response header")
            .map_err(Failed::Cut)?;
        if let Some(name) = &cfg.served_by_name {
            let label = first.attempt.origin.label_header.clone();
            let _ = header.insert_header(name.clone(), label);
        }
        if let Some(name) = &cfg.request_id_name {
            crate::request_id::echo(&mut header, session.req_header(), name);
        }
        crate::cors::decorate(&mut header, session.req_header(), &cfg.cors);
        mark_cache(&mut header, cfg, report);
        let mut body = ClientBody::start(session, header, false)
            .await
            .map_err(Failed::Cut)?;
        report.header_at = Some(std::time::Instant::now());
        let pending = (got.start() == want.start()).then_some(first);
        self.metrics.media_streams.inc();
        let result = self
            .deliver(session, &mut body, cfg, &object, want, pending, pool)
            .await;
        self.metrics.media_streams.dec();
        result?;
        Box::pin(body.finish(session)).await.map_err(Failed::Cut)?;
        Ok(Served::Done)
    }

    /// Is this request for the media path: a GET without a body, of a path
    /// with a media extension? A HEAD too, when the cache answers it
    /// (`cache_route`, and there is a cache).
    pub fn takes(&self, session: &Session, cfg: &Config, cache_route: bool) -> bool {
        let req = session.req_header();
        let head = req.method == http::Method::HEAD && cache_route && self.cache.is_some();
        if !cfg.media.enabled || !(req.method == http::Method::GET || head) {
            return false;
        }
        let has_body = req.headers.contains_key("content-length")
            || req.headers.contains_key("transfer-encoding");
        if has_body {
            return false;
        }
        let exts = &cfg.media.extensions;
        exts.is_empty() || {
            let path = req.uri.path();
            let name = path.rsplit('/').next().unwrap_or("");
            name.rsplit_once('.')
                .is_some_and(|(_, ext)| exts.iter().any(|e| e.eq_ignore_ascii_case(ext)))
        }
    }

    /// Writes `want` to the client, slice by slice, starting with `pending`
    /// (the first fetch, when it starts where the client's range does).
    /// The caller ends the body.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver(
        &self,
        session: &mut Session,
        body: &mut ClientBody,
        cfg: &Arc<Config>,
        object: &Object,
        want: RangeInclusive<u64>,
        mut pending: Option<OpenSlice>,
        pool: u64,
    ) -> Result<(), Failed> {
        let slice = cfg.media.slice_size;
        let (mut pos, last) = (*want.start(), *want.end());
        let client = session.req_header().clone();
        // Origins that failed the slice being fetched (cleared at each new slice).
        let mut failed: SmallVec<[std::net::SocketAddr; 4]> = SmallVec::new();
        let mut resuming = false;
        // The client's pace, carried from fetch to fetch.
        let mut pace = Pace::new(std::time::Instant::now());
        while pos <= last {
            let fetch = next_fetch(pos, last, slice);
            let mut open = match pending.take() {
                Some(open) => open,
                None => {
                    let ask = Ask {
                        client: &client,
                        range: format!("bytes={}-{}", fetch.start(), fetch.end()),
                        if_range: object.if_range(),
                        pool,
                    };
                    let mut tried = failed.clone();
                    let open = Box::pin(self.fetcher.open_any(cfg, &ask, &mut tried))
                        .await
                        .map_err(|e| {
                            self.metrics.media_broken.inc();
                            Failed::Cut(e.last.unwrap_or_else(|| {
                                Error::explain(
                                    ErrorType::HTTPStatus(503),
                                    "no origin left to resume the stream",
                                )
                            }))
                        })?;
                    if let Err(m) = object.check(open.resp(), &fetch) {
                        self.metrics.media_aborts.inc();
                        return Err(Failed::Cut(mismatch(m, &open)));
                    }
                    open
                }
            };
            if resuming {
                self.metrics.media_resumes.inc();
                resuming = false;
            }
            self.metrics.media_slices.inc();
            open.attempt.origin.count_slice();
            let until = last.min(*fetch.end());
            let copied = copy(
                session,
                body,
                &mut open,
                &mut pos,
                until,
                &mut pace,
                &self.metrics,
            );
            match copied.await {
                Ok(()) => {
                    failed.clear();
                    let OpenSlice {
                        body: origin_body,
                        pool_key,
                        ..
                    } = open;
                    // Only a connection whose response was read to its end goes back to the pool.
                    if until == *fetch.end() {
                        // Boxed: a short step that would otherwise widen every stream's future.
                        if let Some(stream) = Box::pin(origin_body.into_reusable()).await {
                            let idle = Some(cfg.timeouts.idle);
                            self.fetcher
                                .connector
                                .release_stream(stream, pool_key, idle);
                        }
                    }
                }
                Err(CopyError::Client(e)) => return Err(Failed::Cut(e)),
                Err(CopyError::Origin(e)) => {
                    open.attempt.fail();
                    tracing::info!(origin = %open.attempt.origin.label, at = pos, "origin failed mid-slice, resuming elsewhere: {e}");
                    failed.push(open.attempt.origin.addr);
                    resuming = true;
                }
            }
        }
        Ok(())
    }

    /// Passes a non-206 first answer (404, 304, 412, ...) on as it is.
    async fn relay(
        &self,
        session: &mut Session,
        cfg: &Config,
        mut open: OpenSlice,
        report: &mut Report,
    ) -> Result<(), Failed> {
        let resp = open.resp();
        let mut header =
            ResponseHeader::build(resp.status, Some(resp.headers.len())).map_err(Failed::Cut)?;
        for (name, value) in &resp.headers {
            let n = name.as_str();
            if !HOP_BY_HOP.contains(&n) && n != cdn_types::LOAD_HEADER {
                let _ = header.append_header(name.clone(), value.clone());
            }
        }
        if let Some(name) = &cfg.request_id_name {
            crate::request_id::echo(&mut header, session.req_header(), name);
        }
        crate::cors::decorate(&mut header, session.req_header(), &cfg.cors);
        mark_cache(&mut header, cfg, report);
        let no_body = matches!(resp.status.as_u16(), 204 | 304)
            || resp.headers.get("content-length").is_some_and(|v| v == "0");
        if header.headers.get("content-length").is_none() && !no_body {
            let _ = header.insert_header("transfer-encoding", "chunked");
        }
        session
            .write_response_header(Box::new(header), no_body)
            .await
            .map_err(Failed::Cut)?;
        report.header_at = Some(std::time::Instant::now());
        if no_body {
            return Ok(());
        }
        loop {
            match open.body.next().await {
                Ok(Some(b)) => session
                    .write_response_body(Some(Bytes::copy_from_slice(b)), false)
                    .await
                    .map_err(Failed::Cut)?,
                Ok(None) => break,
                Err(e) => {
                    open.attempt.fail();
                    return Err(Failed::Cut(e));
                }
            }
        }
        session
            .write_response_body(None, true)
            .await
            .map_err(Failed::Cut)
    }
}

/// Copies `open`'s body to the client from `pos` through `until`, a read at
/// a time; `pos` advances with every byte the client was given.
async fn copy(
    session: &mut Session,
    body: &mut ClientBody,
    open: &mut OpenSlice,
    pos: &mut u64,
    until: u64,
    pace: &mut Pace,
    metrics: &crate::metrics::Metrics,
) -> Result<(), CopyError> {
    let origin = open.attempt.origin.clone();
    while *pos <= until {
        let need = (until - *pos + 1) as usize;
        open.body.set_read_size(pace.read_size());
        // Borrowed from the origin connection's read buffer and written
        // straight to the client: no copy in between on HTTP/1.
        let bytes = match open.body.next().await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(CopyError::Origin(Error::explain(
                    ErrorType::ConnectionClosed,
                    format!("origin body ended {} bytes short", until - *pos + 1),
                )))
            }
            Err(e) => return Err(CopyError::Origin(e)),
        };
        let take = bytes.len().min(need);
        if take == 0 {
            continue;
        }
        body.write(session, &bytes[..take])
            .await
            .map_err(CopyError::Client)?;
        pace.wrote(take, std::time::Instant::now());
        *pos += take as u64;
        origin.add_bytes(take as u64);
        metrics.total_bytes.inc_by(take as u64);
    }
    Ok(())
}

/// Adds the cache's status header (`cache.status_header`), if the cache
/// had a say.
pub(super) fn mark_cache(header: &mut ResponseHeader, cfg: &Config, report: &Report) {
    if let (Some(name), Some(status)) = (&cfg.cache_status_name, report.cache) {
        let _ = header.insert_header(name.clone(), status.as_str());
    }
}

/// The error that cuts a stream whose next slice is not the same object.
fn mismatch(m: Mismatch, open: &OpenSlice) -> Box<Error> {
    tracing::warn!(origin = %open.attempt.origin.label, "stream aborted, not splicing another version: {m}");
    Error::explain(
        ErrorType::HTTPStatus(502),
        format!("slice mismatch from {}: {m}", open.attempt.origin.label),
    )
}
