//! Routing: one request in, one response out, with the headers every
//! response carries (the origin's name and its in-band load report).
//! Media goes to `media.rs`, the fault admin to `fault_admin.rs`.

use crate::body::{self, Body};
use crate::faults::Faults;
use crate::files::{self, Media};
use crate::metrics::Metrics;
use crate::reply::{json, text, with_type};
use crate::{fault_admin, media};
use cdn_types::LOAD_HEADER;
use http::header::{ALLOW, CONTENT_LENGTH};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    /// `Cache-Control` of media files.
    pub media_cache_control: HeaderValue,
    /// `Cache-Control` of playlists and manifests (`.m3u8`, `.mpd`).
    pub manifest_cache_control: HeaderValue,
    /// The access log, when on.
    pub access_log: Option<Arc<cdn_types::access_log::AccessLog>>,
    /// The bearer token `/admin/faults` wants, when given.
    pub fault_admin_token: Option<String>,
}

/// The load report this origin gives, with the `cpu_report_floor` fault.
fn load_report(app: &App) -> cdn_types::LoadReport {
    let mut report = app.metrics.load_report();
    let floor = app.faults.current().settings.cpu_report_floor;
    report.cpu_utilization = report.cpu_utilization.max(floor);
    report
}

/// Marks a response whose body accounts for itself (a file stream).
#[derive(Clone, Copy)]
pub struct Streamed;

/// Handles one request. Never fails: every error is a response.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let head = req.method() == Method::HEAD;
    let asked =
        (app.access_log.as_ref()).map(|_| crate::access::Asked::of(&req, peer.ip(), started));
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
    if let Ok(v) = HeaderValue::from_str(&load_report(&app).to_orca_text()) {
        h.insert(LOAD_HEADER, v);
    }
    if let (Some(log), Some(asked)) = (&app.access_log, asked) {
        let status = resp.status().as_u16();
        resp = resp.map(|b| crate::access::log_when_done(log.clone(), asked, status, b));
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
        return fault_admin::serve(app, peer, req).await;
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
                    report: load_report(app),
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
            media::serve(app, req, rel, started).await
        }
        // `/videos/a.mp4` and `/a.mp4` are the same file; other paths
        // (`/hls/a.m3u8`) are files under the media folder too, so an
        // edge can route any prefix here.
        _ => {
            let rest = path.strip_prefix("/videos/").unwrap_or(&path[1..]);
            let rel = files::decode_request_path(rest);
            media::serve(app, req, rel, started).await
        }
    }
}

/// GET or HEAD.
pub fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Runs `f` for GET/HEAD, else 405.
fn read_only(req: &Request<Incoming>, f: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if !is_read(req.method()) {
        return method_not_allowed("GET, HEAD");
    }
    f()
}

/// 405 with the methods this path allows.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
