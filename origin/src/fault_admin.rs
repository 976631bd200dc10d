//! `/admin/faults`: read (GET) and change (POST, a JSON patch) the fault
//! settings, from loopback only, when `--fault-admin` is on.

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

/// `/admin/faults`: loopback only, GET reads, POST patches.
pub async fn serve(app: &Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
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
