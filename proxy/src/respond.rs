//! The one writer of responses the proxy makes itself: its endpoints'
//! answers and its error pages (and which status an origin failure gets).
//! Never cached; `HEAD` gets the headers only.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;

/// Writes a complete response: `status`, `content_type`, `body`, and any
/// `extra` headers (e.g. `allow`, `retry-after`).
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        h.insert_header(name.to_string(), *value)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(h), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A plain-text response.
pub async fn text(
    session: &mut Session,
    status: u16,
    body: &'static str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let body = Bytes::from_static(body.as_bytes());
    respond(session, status, "text/plain", body, extra).await
}

/// The status a client gets when its request failed on the way to or from
/// an origin, when the error's type alone says it: the origin's own
/// retryable status; `503` when the last origin tried could not even be
/// connected to (the others, if any, were tried too or are not usable, so
/// nothing can serve it now: "retry shortly" from the first moment, before
/// the health checks notice, not a bad gateway); `504` on a timeout.
/// `None`: the caller decides by the error's source.
pub fn failure_status(etype: &ErrorType) -> Option<u16> {
    match etype {
        ErrorType::HTTPStatus(c) => Some(*c),
        t if is_connect_error(t) => Some(503),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(504),
        _ => None,
    }
}

/// Could the origin not be connected to at all?
pub fn is_connect_error(etype: &ErrorType) -> bool {
    matches!(
        etype,
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
    )
}
