//! Routing: one request in, one response out, with the headers every
//! response carries (the origin's name and its in-band load report).

use crate::body::{self, Body, Pacing, Part, StreamGuard};
use crate::faults::{FaultPatch, Faults};
use crate::files::{self, Media, OpenFile};
use crate::metrics::Metrics;
use crate::range::{self, Outcome, Validators};
use bytes::Bytes;
use cdn_types::LOAD_HEADER;
use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// Largest JSON body `POST /admin/faults` accepts.
const ADMIN_BODY_LIMIT: usize = 16 * 1024;
/// Header naming the origin that answered.
pub const NAME_HEADER: &str = "x-origin-name";

/// Everything a request handler needs, shared by all connections.
pub struct App {
    /// The media folder.
    pub media: Media,
    /// What `/` serves, relative to the media folder.
    pub default_file: String,
    /// This origin's name, as a header value.
    pub name: HeaderValue,
    /// Metrics, and through them the load report.
    pub metrics: Arc<Metrics>,
    /// Fault injection.
    pub faults: Faults,
    /// Set on SIGTERM/SIGINT: `/healthz` answers 503.
    pub draining: AtomicBool,
    /// Largest read per stream chunk.
    pub chunk_size: usize,
}

/// Marks a response whose body accounts for itself (a file stream).
#[derive(Clone, Copy)]
struct Streamed;

/// Handles one request. Never fails: every error is a response.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let head = req.method() == Method::HEAD;
    let mut resp = route(&app, peer, req, started).await;
    let m = &app.metrics;
    m.count_request(resp.status().as_u16());
    if resp.extensions().get::<Streamed>().is_none() {
        let len = resp.body().size_hint().exact().unwrap_or(0);
        if head {
            // HEAD: exactly GET's headers, no body.
            let bodiless = matches!(
                resp.status(),
                StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT
            );
            if !bodiless && !resp.headers().contains_key(CONTENT_LENGTH) {
                resp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
            *resp.body_mut() = body::empty();
        } else {
            m.response_bytes.inc_by(len);
        }
        m.duration.observe(started.elapsed().as_secs_f64());
    }
    let h = resp.headers_mut();
    h.insert(NAME_HEADER, app.name.clone());
    if let Ok(v) = HeaderValue::from_str(&m.load_report().to_orca_text()) {
        h.insert(LOAD_HEADER, v);
    }
    Ok(resp)
}

async fn route(
    app: &Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/admin/faults" {
        return admin(app, peer, req).await;
    }
    if app.faults.current().settings.hang {
        // Accept, read the request, never answer: what a wedged origin does.
        return std::future::pending().await;
    }
    match path {
        "/healthz" => read_only(&req, || {
            if app.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }),
        "/metrics" => read_only(&req, || {
            with_type(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                app.metrics.render(),
            )
        }),
        "/load" => read_only(&req, || {
            #[derive(Serialize)]
            struct LoadJson<'a> {
                name: &'a str,
                #[serde(flatten)]
                report: cdn_types::LoadReport,
            }
            let name = app.name.to_str().unwrap_or_default();
            json(
                StatusCode::OK,
                &LoadJson {
                    name,
                    report: app.metrics.load_report(),
                },
            )
        }),
        "/videos" | "/videos/" => {
            if !is_read(req.method()) {
                return method_not_allowed("GET, HEAD");
            }
            let media = app.media.clone();
            match tokio::task::spawn_blocking(move || media.catalog()).await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "catalog failed\n"),
            }
        }
        "/" => {
            let rel = Some(app.default_file.clone());
            media(app, req, rel, started).await
        }
        _ => match path.strip_prefix("/videos/") {
            Some(rest) => {
                let rel = files::decode_request_path(rest);
                media(app, req, rel, started).await
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// Serves a media file: faults, then the file with conditional and Range handling.
async fn media(
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
        Some(l) => l.acquire_owned().await.ok(),
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
    let builder = Response::builder()
        .header(ACCEPT_RANGES, "bytes")
        .header(ETAG, v.etag.as_str())
        .header(LAST_MODIFIED, httpdate::fmt_http_date(v.last_modified));

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
    let mut resp = finish(builder, body::file_stream(file.file, parts, pacing, guard));
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
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// `/admin/faults`: loopback only, GET reads, POST patches.
async fn admin(app: &Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if !app.faults.admin_enabled() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !peer.ip().to_canonical().is_loopback() {
        return text(StatusCode::FORBIDDEN, "fault admin is loopback only\n");
    }
    match *req.method() {
        Method::GET => json(StatusCode::OK, &app.faults.current().settings),
        Method::POST => {
            let bytes = match Limited::new(req.into_body(), ADMIN_BODY_LIMIT)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body too large or unreadable\n",
                    )
                }
            };
            let patch: FaultPatch = match serde_json::from_slice(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid fault JSON: {e}\n"),
                    )
                }
            };
            match app.faults.patch(&patch) {
                Ok(s) => {
                    tracing::info!(?s, "faults changed");
                    json(StatusCode::OK, &s)
                }
                Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{e}\n")),
            }
        }
        _ => method_not_allowed("GET, POST"),
    }
}

fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Runs `f` for GET/HEAD, else 405.
fn read_only(req: &Request<Incoming>, f: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if !is_read(req.method()) {
        return method_not_allowed("GET, HEAD");
    }
    f()
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => with_type(status, "application/json", v),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed\n"),
    }
}

fn with_type(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<Body> {
    finish(
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type),
        body::full(bytes),
    )
}

/// Builds a response; the builder only fails on invalid header values, which
/// are all produced here from known-valid parts, so a failure is a 500.
fn finish(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(body::full(&b"internal error\n"[..]));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
