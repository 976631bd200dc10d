//! The dashboard's WebSocket (`/ws`), served on the client's own connection.
//!
//! The page itself is proxied to the sidecar's listener, but the WebSocket is
//! not: Pingora 0.9.1 tears an HTTP/1 upgrade down right after the `101`
//! whenever the upstream answers before the proxy has consumed the upgrade
//! request's empty body (cloudflare/pingora#946), and with the sidecar on
//! loopback that closed about 1 in 70 fresh dashboard connections. Here the
//! proxy answers the handshake itself and pipes the upgraded connection to
//! the in-process hub through an in-memory duplex, so no HTTP/1 upgrade is
//! proxied at all.

use bytes::BytesMut;
use cdn_dashboard::{Admission, Hub};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// In-memory buffer between the client's connection and the hub, each way.
const DUPLEX_BUFFER: usize = 64 * 1024;

/// Checks a `/ws` request and takes a client slot for it, or says what to
/// answer instead: `400` not a WebSocket upgrade (or not HTTP/1.1), `503`
/// too many clients, `429` too many from the client's address.
pub fn admit(session: &Session, hub: &Hub) -> Result<Admission, (u16, &'static str)> {
    if session.as_downstream().is_http2() {
        // RFC 8441 (WebSocket over HTTP/2) is not offered.
        return Err((400, "the WebSocket needs HTTP/1.1\n"));
    }
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    hub.admit(&session.req_header().headers, client)
        .map_err(|r| (r.status().as_u16(), r.message()))
}

/// Answers an admitted `/ws` request with `101` and the hub's frames.
/// Returns when the client or the hub ends the connection.
pub async fn serve(session: &mut ServerSession, hub: Arc<Hub>, admission: Admission) -> Result<()> {
    let mut h = ResponseHeader::build(101, Some(3))?;
    h.insert_header("upgrade", "websocket")?;
    h.insert_header("connection", "Upgrade")?;
    h.insert_header("sec-websocket-accept", admission.accept_key())?;
    session.write_response_header(Box::new(h)).await?;
    // The page never sends data, so an idle read is normal; a client that
    // stops reading is bounded by the write timeout and the hub's own.
    session.set_read_timeout(None);
    session.set_write_timeout(Some(hub.settings().send_timeout));
    let (ours, hubs) = tokio::io::duplex(DUPLEX_BUFFER);
    let client = tokio::spawn(hub.serve_client(hubs, admission));
    pipe(session, ours).await;
    // Whichever side ended, the other goes too (and the client slot is freed).
    client.abort();
    Ok(())
}

/// Copies bytes both ways between the client's upgraded connection and the
/// hub's end of the duplex until either side closes or fails.
async fn pipe(session: &mut ServerSession, hub_side: DuplexStream) {
    let (mut from_hub, mut to_hub) = tokio::io::split(hub_side);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            read = from_hub.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    if session.write_response_body(buf.split().freeze(), false).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            body = session.read_request_body() => match body {
                Ok(Some(bytes)) => {
                    if to_hub.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}
