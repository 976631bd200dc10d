//! Small responses the origin makes itself: text, JSON, errors.

use crate::body::{self, Body};
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use serde::Serialize;

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

/// A JSON response (500 if it cannot be serialized).
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => with_type(status, "application/json", v),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "serialization failed\n"),
    }
}

/// A complete response with a content type.
pub fn with_type(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<Body> {
    finish(
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type),
        body::full(bytes),
    )
}

/// Builds a response; the builder only fails on invalid header values, which
/// are all produced here from known-valid parts, so a failure is a 500.
pub fn finish(builder: http::response::Builder, body: Body) -> Response<Body> {
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(body::full(&b"internal error\n"[..]));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
