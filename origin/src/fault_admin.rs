//! `/admin/faults`: read (GET) and change (POST, a JSON patch) the fault
//! settings, when `--fault-admin` is on: with `--fault-admin-token-file`,
//! for requests bearing that token; without, from loopback only.

use crate::body::Body;
use crate::faults::FaultPatch;
use crate::reply::{json, text};
use crate::routes::{method_not_allowed, App};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest JSON body `POST /admin/faults` accepts.
const ADMIN_BODY_LIMIT: usize = 16 * 1024;

/// Whether `req` carries `token` as its bearer token (constant-time).
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    (req.headers().get(http::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

/// `/admin/faults`: with a token, for whoever sends it; else loopback only.
/// GET reads, POST patches.
pub async fn serve(app: &Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if !app.faults.admin_enabled() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match &app.fault_admin_token {
        Some(token) if !authorized(&req, token) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <fault admin token>\n",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"cdn-origin fault admin\""),
            );
            return r;
        }
        Some(_) => {}
        None if !peer.ip().to_canonical().is_loopback() => {
            return text(
                StatusCode::FORBIDDEN,
                "fault admin is loopback only (or give it --fault-admin-token-file)\n",
            );
        }
        None => {}
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
