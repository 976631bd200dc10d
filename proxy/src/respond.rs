//! The one writer of responses the proxy makes itself: its endpoints'
//! answers and its error pages. Never cached; `HEAD` gets the headers only.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Writes a complete response: `status`, `content_type`, `body`, and any
/// `extra` headers (e.g. `allow`, `retry-after`).
pub async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        h.insert_header(*name, *value)?;
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
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let body = Bytes::from_static(body.as_bytes());
    respond(session, status, "text/plain", body, extra).await
}
