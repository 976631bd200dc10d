//! The origin's access log (`--access-log`): one line per request when its
//! response body ends (streams are logged with the bytes they really sent),
//! written off the request path by `cdn_types::access_log`.

use crate::body::Body;
use cdn_types::access_log::{AccessLog, Entry};
use http::header::{HeaderName, REFERER, USER_AGENT};
use http::Request;
use http_body_util::BodyExt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request id header the edge sends.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The client chain the edge sends.
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the request said, kept until its body ends.
pub struct Asked {
    client: IpAddr,
    method: String,
    target: String,
    protocol: &'static str,
    referer: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    forwarded_for: Option<String>,
    started: Instant,
}

impl Asked {
    /// Copies what the line needs from `req` (only when the log is on).
    pub fn of<B>(req: &Request<B>, client: IpAddr, started: Instant) -> Asked {
        let header = |n: &HeaderName| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Asked {
            client,
            method: req.method().as_str().to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            protocol: match req.version() {
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            referer: header(&REFERER),
            user_agent: header(&USER_AGENT),
            request_id: header(&REQUEST_ID),
            forwarded_for: header(&FORWARDED_FOR),
            started,
        }
    }
}

/// Logs the request when `body` has been sent or dropped, with its size.
pub fn log_when_done(log: Arc<AccessLog>, asked: Asked, status: u16, body: Body) -> Body {
    let mut pending = Pending {
        log,
        asked,
        status,
        ttfb: Instant::now(),
        bytes: 0,
    };
    body.map_frame(move |frame| {
        // The whole record moves into the closure (not just its counter),
        // so it is dropped, and logged, with the body.
        let pending = &mut pending;
        if let Some(data) = frame.data_ref() {
            pending.bytes += data.len() as u64;
        }
        frame
    })
    .boxed()
}

/// One request's line, written when dropped (with the body).
struct Pending {
    log: Arc<AccessLog>,
    asked: Asked,
    status: u16,
    ttfb: Instant,
    bytes: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let a = &self.asked;
        let since = |t: Instant| -> Duration { t.saturating_duration_since(a.started) };
        self.log.log(&Entry {
            client: Some(a.client),
            method: &a.method,
            target: &a.target,
            protocol: a.protocol,
            status: self.status,
            bytes: self.bytes,
            duration: since(Instant::now()),
            ttfb: Some(since(self.ttfb)),
            referer: a.referer.as_deref(),
            user_agent: a.user_agent.as_deref(),
            request_id: a.request_id.as_deref(),
            forwarded_for: a.forwarded_for.as_deref(),
            ..Entry::default()
        });
    }
}
