//! One fetch of (part of) a slice: pick an origin, ask it with `Range` (and
//! `If-Range` on the object's validator), read its response header within a
//! deadline. A failed origin is left for the next one the balancer picks,
//! within the retry attempts and budget; every attempt is counted in the
//! origin's live state as the plain proxy path counts its own.

use super::origin_response::OriginResponse;
use super::HOP_BY_HOP;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::origins::Origin;
use crate::respond::failure_status;
use crate::retry_budget::RetryBudget;
use crate::select::Balancer;
use http::HeaderValue;
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::upstreams::peer::Peer;
use pingora::OrErr;
use pingora::{Error, ErrorType};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// Preconditions the origin evaluates on the first fetch (RFC 9110 §13.2.2
/// steps 1–4); later fetches carry only `If-Range`.
const PRECONDITIONS: [&str; 4] = [
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// An origin request in progress, counted as in flight until dropped; the
/// passive-health outcome is recorded then.
pub struct Attempt {
    /// The origin asked.
    pub origin: Arc<Origin>,
    config: Arc<Config>,
    failed: bool,
}

impl Attempt {
    fn start(origin: Arc<Origin>, config: Arc<Config>) -> Attempt {
        origin.start_request();
        Attempt {
            origin,
            config,
            failed: false,
        }
    }

    /// The origin failed this request (for ejection and the error ratio).
    pub fn fail(&mut self) {
        self.failed = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.origin.end_request();
        if self
            .origin
            .record_outcome(!self.failed, &self.config.ejection)
        {
            tracing::warn!(origin = %self.origin.label, "ejected after consecutive failures");
        }
    }
}

/// An origin's answer to a slice fetch, header read, body not yet.
pub struct OpenSlice {
    /// The response: its header, and its body to be read.
    pub body: OriginResponse,
    /// The connection's key in the pool, where it goes back once the body is read.
    pub pool_key: u64,
    /// The attempt, counted until this is dropped.
    pub attempt: Attempt,
}

impl OpenSlice {
    /// The origin's response header.
    pub fn resp(&self) -> &ResponseHeader {
        self.body.header()
    }
}

/// What one slice fetch asks for.
pub struct Ask<'a> {
    /// The client's request (path, query and end-to-end headers are passed on).
    pub client: &'a RequestHeader,
    /// The `Range` value.
    pub range: String,
    /// The object's validator for `If-Range`, on every fetch but the first.
    pub if_range: Option<&'a HeaderValue>,
    /// The pools whose origins may answer (`routes[].pool`).
    pub pool: u64,
}

/// Why no origin could answer a fetch.
#[derive(Debug)]
pub struct NoAnswer {
    /// The last origin's error; `None` when no origin could be picked at all.
    pub last: Option<Box<Error>>,
}

impl NoAnswer {
    /// The status a client gets when this happens before its response
    /// started: 503 when nothing could even be connected to (retry
    /// shortly), 504 on a timeout, 502 otherwise.
    pub fn status(&self) -> u16 {
        let failed = self.last.as_ref().map(|e| failure_status(e.etype()));
        failed.map_or(503, |s| s.unwrap_or(502))
    }
}

/// Fetches slices from the origins the balancer picks.
pub struct Fetcher {
    /// Origin selection, shared with the plain proxy path.
    pub balancer: Arc<Balancer>,
    /// The retry budget, shared with the plain proxy path.
    pub budget: Arc<RetryBudget>,
    /// Whole-proxy counters.
    pub metrics: Arc<Metrics>,
    /// Pooled connections to origins, the media path's own (HTTP/1: the
    /// body is read from the connection itself, see `origin_response.rs`).
    pub connector: TransportConnector,
}

impl Fetcher {
    /// Asks origins in turn, skipping those in `tried` (which this extends),
    /// until one answers with a response that is not a 502/503, within
    /// `retry.attempts` and the retry budget.
    pub async fn open_any(
        &self,
        cfg: &Arc<Config>,
        ask: &Ask<'_>,
        tried: &mut SmallVec<[SocketAddr; 4]>,
    ) -> Result<OpenSlice, NoAnswer> {
        self.budget.deposit(&cfg.retry);
        let mut last = None;
        let mut attempts = 0;
        loop {
            if attempts > 0
                && !(attempts < cfg.retry.attempts && self.budget.try_withdraw(&cfg.retry))
            {
                return Err(NoAnswer { last });
            }
            let key = ask.client.uri.path().as_bytes();
            let Some(origin) = self.balancer.pick(&cfg.selection, key, tried, ask.pool) else {
                return Err(NoAnswer { last });
            };
            if attempts > 0 {
                self.metrics.retries.inc();
            }
            attempts += 1;
            tried.push(origin.addr);
            match self.open(cfg, ask, origin).await {
                Ok(open) => return Ok(open),
                Err(e) => last = Some(e),
            }
        }
    }

    /// One attempt on `origin`. A 502/503 is an error (another origin may do better).
    async fn open(
        &self,
        cfg: &Arc<Config>,
        ask: &Ask<'_>,
        origin: Arc<Origin>,
    ) -> pingora::Result<OpenSlice> {
        let mut attempt = Attempt::start(origin, cfg.clone());
        let result = self.exchange(cfg, ask, &attempt.origin).await;
        match result {
            Ok((body, pool_key)) => {
                let status = body.header().status.as_u16();
                attempt.origin.count_response(status);
                // A 5xx is the origin's failure (ejection, error ratio)
                // whether or not it is retried.
                if status >= 500 {
                    attempt.fail();
                }
                if status == 502 || status == 503 {
                    return Error::e_explain(
                        ErrorType::HTTPStatus(status),
                        format!("origin {} answered {status}", attempt.origin.label),
                    );
                }
                Ok(OpenSlice {
                    body,
                    pool_key,
                    attempt,
                })
            }
            Err(e) => {
                attempt.fail();
                attempt.origin.count_response(0);
                Err(e.more_context(format!("origin {}", attempt.origin.label)))
            }
        }
    }

    /// Connects, sends the request and reads the response header, whose
    /// timing and load report go to the origin's live state.
    async fn exchange(
        &self,
        cfg: &Config,
        ask: &Ask<'_>,
        origin: &Origin,
    ) -> pingora::Result<(OriginResponse, u64)> {
        let peer = crate::peer::origin_peer(origin.addr, &cfg.timeouts);
        let (mut stream, _reused) = self.connector.get_stream(&peer).await?;
        let req = request(ask)?;
        let wire = http_req_header_to_wire(&req)
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "request not writable"))?;
        let sent = Instant::now();
        // Per read and per write, as the plain proxy path sets them.
        pingora::prelude::timeout(cfg.timeouts.read, async {
            stream.write_all(&wire).await?;
            stream.flush().await
        })
        .await
        .or_err(ErrorType::WriteTimedout, "writing a request to an origin")?
        .or_err(ErrorType::WriteError, "writing a request to an origin")?;
        let limit = cfg.timeouts.response_header;
        let buffered = self.metrics.media_buffered.clone();
        let read = OriginResponse::read(stream, &peer, cfg.timeouts.read, buffered);
        let resp = match pingora::prelude::timeout(limit, read).await {
            Ok(read) => read?,
            Err(_) => {
                return Error::e_explain(
                    ErrorType::ReadTimedout,
                    format!("no whole response header within {limit:?}"),
                )
            }
        };
        let now = Instant::now();
        let now_ms = crate::clock::ms_at(now);
        origin.observe_ttfb(now - sent, now_ms, cfg.selection.ewma_decay);
        if let Some(report) = resp.header().headers.get(cdn_types::LOAD_HEADER) {
            origin.set_load_text(report.as_bytes(), now_ms);
        }
        Ok((resp, peer.reuse_hash()))
    }
}

/// The origin request for `ask`: the client's method-less GET with its
/// end-to-end headers, the slice's `Range`, and `If-Range` or (first fetch)
/// the client's preconditions.
fn request(ask: &Ask<'_>) -> pingora::Result<RequestHeader> {
    let client = ask.client;
    let path = client.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = RequestHeader::build("GET", path.as_bytes(), Some(client.headers.len() + 2))?;
    for (name, value) in &client.headers {
        let n = name.as_str();
        // Later fetches drop the preconditions: the origin judged them on the first.
        let judged = PRECONDITIONS.contains(&n) && ask.if_range.is_some();
        if !(HOP_BY_HOP.contains(&n) || matches!(n, "range" | "if-range") || judged) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header("range", ask.range.as_str())?;
    if let Some(v) = ask.if_range {
        req.insert_header("if-range", v.clone())?;
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> RequestHeader {
        let mut c = RequestHeader::build("GET", b"/videos/a.mp4?t=1", None).unwrap();
        for (k, v) in [
            ("host", "edge"),
            ("range", "bytes=5-"),
            ("if-range", "\"old\""),
            ("if-none-match", "\"x\""),
            ("connection", "keep-alive"),
            ("user-agent", "player"),
        ] {
            c.append_header(k, v).unwrap();
        }
        c
    }

    #[test]
    fn the_first_fetch_carries_the_preconditions_later_ones_if_range() {
        let c = client();
        let first = request(&Ask {
            client: &c,
            range: "bytes=5-9".into(),
            if_range: None,
            pool: 1,
        })
        .unwrap();
        assert_eq!(first.uri, "/videos/a.mp4?t=1");
        assert_eq!(first.headers["range"], "bytes=5-9");
        assert_eq!(first.headers["if-none-match"], "\"x\"");
        assert_eq!(first.headers["user-agent"], "player");
        assert_eq!(first.headers["host"], "edge");
        assert!(first.headers.get("if-range").is_none());
        assert!(first.headers.get("connection").is_none());

        let tag = HeaderValue::from_static("\"v1\"");
        let later = request(&Ask {
            client: &c,
            range: "bytes=10-19".into(),
            if_range: Some(&tag),
            pool: 1,
        })
        .unwrap();
        assert_eq!(later.headers["if-range"], "\"v1\"");
        assert_eq!(later.headers["range"], "bytes=10-19");
        assert!(later.headers.get("if-none-match").is_none());
    }

    #[test]
    fn no_answer_maps_to_the_status_a_client_gets() {
        let e = |t| NoAnswer {
            last: Some(Error::new(t)),
        };
        assert_eq!(NoAnswer { last: None }.status(), 503);
        assert_eq!(e(ErrorType::ConnectRefused).status(), 503);
        assert_eq!(e(ErrorType::ReadTimedout).status(), 504);
        assert_eq!(e(ErrorType::ReadError).status(), 502);
        assert_eq!(e(ErrorType::HTTPStatus(503)).status(), 503);
        assert_eq!(e(ErrorType::HTTPStatus(502)).status(), 502);
    }
}
