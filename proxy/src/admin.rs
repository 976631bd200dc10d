//! The operator listener (loopback by default, separate from the public
//! one): list origins, drain or undrain one, set its capacity weight.
//!
//! - `GET /origins`: JSON list
//! - `POST /origins/{ip:port}/drain`, `POST /origins/{ip:port}/undrain`
//! - `POST /origins/{ip:port}/capacity` with `{"capacity": 2.0}` (`null` returns to the config's)
//! - `GET /cache`: the cache's size; `POST /cache/purge` with `{"url": "/videos/a.mp4"}`
//!   (one object: path and query) or `{"prefix": "/videos/"}` (every object under it)
//!
//! - `GET /metrics` (the JSON snapshot) and `GET /prometheus`: the public
//!   listener's, here too, so they can be switched off there
//!   (`endpoints.metrics: ""`) and scraped only here
//!
//! With `admin_auth` set, every request needs `Authorization: Bearer <token>`
//! (compared in constant time), else `401`.

use crate::origins::{Origin, Registry, State};
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The admin HTTP app.
pub struct Admin {
    /// Every origin.
    pub registry: Arc<Registry>,
    /// The live config (its token).
    pub config: Arc<arc_swap::ArcSwap<crate::config::Config>>,
    /// The slice cache, if there is one.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// The latest `/metrics` snapshot.
    pub snapshot: Arc<arc_swap::ArcSwap<crate::metrics::Snapshot>>,
    /// For `/prometheus`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// `{"url": "/videos/a.mp4"}` or `{"prefix": "/videos/"}`: what to purge.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    prefix: Option<String>,
}

/// What `GET /cache` answers.
#[derive(Serialize)]
struct CacheView {
    size_bytes: u64,
    objects: u64,
    slices: u64,
    evictions_total: u64,
    fills_in_flight: u64,
}

/// Whether `req` carries `token` as its bearer token.
fn authorized(req: &pingora::http::RequestHeader, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Some(given) = (req.headers.get(http::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

#[derive(Serialize)]
struct OriginView<'a> {
    address: &'a str,
    source: &'a str,
    pools: Vec<String>,
    state: State,
    operator_drained: bool,
    capacity: f64,
    in_flight: i64,
    requests_total: u64,
    errors_total: u64,
}

impl<'a> From<&'a Origin> for OriginView<'a> {
    fn from(o: &'a Origin) -> Self {
        OriginView {
            address: &o.label,
            source: &o.source,
            pools: crate::origins::pools::names(o.pools()),
            state: o.state(),
            operator_drained: o.health.operator_drained(),
            capacity: o.capacity(),
            in_flight: o.inflight(),
            requests_total: o.requests(),
            errors_total: o.errors(),
        }
    }
}

/// `{"capacity": 2.0}` sets, `{"capacity": null}` clears; the key is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityBody {
    #[serde(deserialize_with = "required_nullable")]
    capacity: Option<f64>,
}

fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Option::<f64>::deserialize(d)
}

fn reply(status: StatusCode, body: Vec<u8>, content_type: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn text(status: StatusCode, msg: &str) -> Response<Vec<u8>> {
    reply(status, format!("{msg}\n").into_bytes(), "text/plain")
}

fn json(value: &impl Serialize) -> Response<Vec<u8>> {
    reply(
        StatusCode::OK,
        serde_json::to_vec(value).unwrap_or_default(),
        "application/json",
    )
}

impl Admin {
    async fn route(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(token) = &self.config.load().admin_auth.token {
            if !authorized(session.req_header(), token) {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "send Authorization: Bearer <admin token>",
                );
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"cdn-proxy admin\""),
                );
                return r;
            }
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if path == "/cache" || path == "/cache/purge" {
            return self.cache_route(session, &method, &path).await;
        }
        if path == "/metrics" || path == "/prometheus" {
            if method != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            return match path.as_str() {
                "/metrics" => json(&**self.snapshot.load()),
                _ => reply(
                    StatusCode::OK,
                    self.metrics.prometheus_text(),
                    "text/plain; version=0.0.4",
                ),
            };
        }
        if path == "/origins" {
            if method != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            let all = self.registry.all();
            return json(
                &all.iter()
                    .map(|o| OriginView::from(&**o))
                    .collect::<Vec<_>>(),
            );
        }
        let Some((addr, action)) = path
            .strip_prefix("/origins/")
            .and_then(|r| r.split_once('/'))
        else {
            return text(
                StatusCode::NOT_FOUND,
                "endpoints: GET /origins, POST /origins/{ip:port}/drain|undrain|capacity, GET /cache, POST /cache/purge, GET /metrics, GET /prometheus",
            );
        };
        if method != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let Some(origin) = addr
            .parse::<SocketAddr>()
            .ok()
            .and_then(|a| self.registry.get(&a))
        else {
            return text(
                StatusCode::NOT_FOUND,
                &format!("no origin {addr}; GET /origins lists them"),
            );
        };
        match action {
            "drain" => origin.health.set_operator_drain(true),
            "undrain" => origin.health.set_operator_drain(false),
            "capacity" => {
                let body = read_body(session).await;
                match serde_json::from_slice::<CapacityBody>(&body) {
                    Ok(CapacityBody { capacity: Some(c) }) if c.is_finite() && c > 0.0 => {
                        origin.set_capacity_override(Some(c))
                    }
                    Ok(CapacityBody { capacity: None }) => origin.set_capacity_override(None),
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "body must be {\"capacity\": <number above 0>} or {\"capacity\": null}",
                        )
                    }
                }
            }
            _ => return text(StatusCode::NOT_FOUND, "actions: drain, undrain, capacity"),
        }
        tracing::info!(origin = %origin.label, action, "operator change");
        json(&OriginView::from(&*origin))
    }
}

impl Admin {
    /// `GET /cache` and `POST /cache/purge`.
    async fn cache_route(
        &self,
        session: &mut ServerSession,
        method: &Method,
        path: &str,
    ) -> Response<Vec<u8>> {
        let Some(cache) = &self.cache else {
            return text(
                StatusCode::NOT_FOUND,
                "no cache: set cache.dir in cdn.yaml (and restart) to have one",
            );
        };
        if path == "/cache" {
            if method != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            let u = cache.usage();
            return json(&CacheView {
                size_bytes: u.bytes,
                objects: u.objects,
                slices: u.slices,
                evictions_total: u.evictions,
                fills_in_flight: u.fills,
            });
        }
        if method != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let body = read_body(session).await;
        let purged = match serde_json::from_slice::<PurgeBody>(&body) {
            Ok(PurgeBody {
                url: Some(url),
                prefix: None,
            }) if url.starts_with('/') => cache.purge_url(&url),
            Ok(PurgeBody {
                url: None,
                prefix: Some(prefix),
            }) if prefix.starts_with('/') => cache.purge_prefix(&prefix),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"url\": \"/path?query\"} or {\"prefix\": \"/path/\"} (one of them, starting with /)",
                )
            }
        };
        tracing::info!(purged, "cache purge");
        json(&serde_json::json!({ "purged": purged }))
    }
}

async fn read_body(session: &mut ServerSession) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > 16 * 1024 {
            break;
        }
    }
    body
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.route(session).await
    }
}
