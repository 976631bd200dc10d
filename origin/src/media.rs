//! Media files: fault injection on the way in (limits, latency, errors),
//! then the file with conditional and Range handling (single ranges and
//! `multipart/byteranges`), and the accounting of each stream while its
//! body is sent.

use crate::body::{self, Body, Pacing, Part, StreamGuard};
use crate::files::{self, OpenFile};
use crate::metrics::Metrics;
use crate::reply::{finish, text};
use crate::routes::{is_read, method_not_allowed, App, Streamed};
use crate::send_room::SendRoom;
use bytes::Bytes;
use cdn_types::range::{self, Outcome, Validators};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// Serves a media file: faults, then the file with conditional and Range handling.
pub async fn serve(
    app: &Arc<App>,
    req: Request<Incoming>,
    rel: Option<String>,
    started: Instant,
) -> Response<Body> {
    if !is_read(req.method()) {
        return method_not_allowed("GET, HEAD");
    }
    let (settings, limiter) = {
        let f = app.faults.current();
        (f.settings, f.limiter.clone())
    };
    // Queue behind the concurrency limit; the permit lives as long as the stream.
    let permit = match limiter {
        Some(l) => {
            app.metrics.queued.inc();
            let permit = l.acquire_owned().await.ok();
            app.metrics.queued.dec();
            permit
        }
        None => None,
    };
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    if settings.error_rate > 0.0 && fastrand::f64() < settings.error_rate {
        let status =
            StatusCode::from_u16(settings.error_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return text(status, "injected fault\n");
    }
    let Some(rel) = rel else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let media = app.media.clone();
    let file = match tokio::task::spawn_blocking(move || media.open(&rel)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return text(StatusCode::NOT_FOUND, "not found\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "opening a media file failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n");
        }
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n"),
    };
    let pacing = Pacing {
        chunk_size: app.chunk_size,
        bytes_per_sec: settings.bandwidth_bytes_per_sec,
        cut_after: settings.cut_after_bytes,
    };
    file_response(app, &req, file, pacing, permit, started)
}

fn file_response(
    app: &Arc<App>,
    req: &Request<Incoming>,
    file: OpenFile,
    pacing: Pacing,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
) -> Response<Body> {
    let size = file.size;
    let etag = files::etag(size, file.modified);
    let v = Validators::new(size, etag, file.modified);
    let content_type = files::content_type(&file.name);
    let cache_control = if files::is_manifest(&file.name) {
        &app.manifest_cache_control
    } else {
        &app.media_cache_control
    };
    let builder = Response::builder()
        .header(ACCEPT_RANGES, "bytes")
        .header(CACHE_CONTROL, cache_control)
        .header(ETAG, v.etag.as_str())
        .header(LAST_MODIFIED, httpdate::fmt_http_date(file.modified));

    let (builder, parts) = match range::evaluate(req.headers(), &v) {
        Outcome::NotModified => {
            return finish(builder.status(StatusCode::NOT_MODIFIED), body::empty())
        }
        Outcome::PreconditionFailed => {
            return finish(
                builder.status(StatusCode::PRECONDITION_FAILED),
                body::empty(),
            );
        }
        Outcome::Unsatisfiable => {
            let b = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{size}"));
            return finish(b, body::empty());
        }
        Outcome::Full => (
            builder
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, content_type),
            vec![Part::File {
                start: 0,
                len: size,
            }],
        ),
        Outcome::Partial(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            (
                builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(CONTENT_TYPE, content_type)
                    .header(
                        CONTENT_RANGE,
                        format!("bytes {}-{}/{size}", r.start(), r.end()),
                    ),
                vec![Part::File {
                    start: *r.start(),
                    len: r.end() - r.start() + 1,
                }],
            )
        }
        Outcome::Partial(ranges) => {
            // Derived from the ETag so HEAD and GET send the same boundary.
            let boundary = format!("CDN{}", v.etag.trim_matches('"').replace('-', ""));
            let parts = multipart_parts(&ranges, size, content_type, &boundary);
            (
                builder.status(StatusCode::PARTIAL_CONTENT).header(
                    CONTENT_TYPE,
                    format!("multipart/byteranges; boundary={boundary}"),
                ),
                parts,
            )
        }
    };
    let len: u64 = parts.iter().map(Part::len).sum();
    let builder = builder.header(CONTENT_LENGTH, len);
    if req.method() == Method::HEAD || len == 0 {
        // `handle` keeps this Content-Length for HEAD.
        return finish(builder, body::empty());
    }
    let guard = ActiveStream::start(app.metrics.clone(), started, permit);
    let room = req.extensions().get::<Arc<SendRoom>>().cloned();
    let mut resp = finish(
        builder,
        body::file_stream(file.file, parts, pacing, room, guard),
    );
    resp.extensions_mut().insert(Streamed);
    resp
}

/// The parts of a `multipart/byteranges` body (RFC 9110 §14.6).
fn multipart_parts(
    ranges: &[std::ops::RangeInclusive<u64>],
    size: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
            r.start(),
            r.end()
        );
        parts.push(Part::Literal(Bytes::from(head)));
        parts.push(Part::File {
            start: *r.start(),
            len: r.end() - r.start() + 1,
        });
    }
    parts.push(Part::Literal(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    parts
}

/// Accounting of one file stream: active while the body lives.
struct ActiveStream {
    metrics: Arc<Metrics>,
    started: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl ActiveStream {
    fn start(
        metrics: Arc<Metrics>,
        started: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        metrics.active_streams.inc();
        ActiveStream {
            metrics,
            started,
            _permit: permit,
        }
    }
}

impl StreamGuard for ActiveStream {
    fn sent(&self, bytes: u64) {
        self.metrics.response_bytes.inc_by(bytes);
    }

    fn hold(&self, chunk: Vec<u8>) -> Bytes {
        Bytes::from_owner(Held::new(chunk, self.metrics.buffered.clone()))
    }
}

/// A chunk counted in `origin_stream_buffered_bytes` until the connection
/// has written it and drops it.
struct Held {
    chunk: Vec<u8>,
    gauge: IntGauge,
}

impl Held {
    fn new(chunk: Vec<u8>, gauge: IntGauge) -> Held {
        gauge.add(chunk.len() as i64);
        Held { chunk, gauge }
    }
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.sub(self.chunk.len() as i64);
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}
