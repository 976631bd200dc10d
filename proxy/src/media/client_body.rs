//! Where a media response's body goes: through Pingora's session, or, for
//! answers from the cache to plain HTTP/1 clients, straight to the
//! client's socket (`direct_socket.rs`), slice files sent with `sendfile`.

use crate::direct_socket::DirectSocket;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

/// The body of one media response, as it is written.
#[derive(Debug, Default)]
pub(super) struct ClientBody {
    /// The client's socket, when the body goes past Pingora.
    direct: Option<DirectSocket>,
    /// Body bytes written past Pingora (its session does not count them).
    pub direct_bytes: u64,
}

impl ClientBody {
    /// Writes the response `header`; with `direct` (a body follows, from
    /// the cache), the body goes straight to the client's socket when it
    /// is plain HTTP/1, else through Pingora.
    pub async fn start(
        session: &mut Session,
        header: ResponseHeader,
        direct: bool,
    ) -> pingora::Result<ClientBody> {
        let direct = direct.then(|| DirectSocket::of(session)).flatten();
        if direct.is_none() {
            session
                .write_response_header(Box::new(header), false)
                .await?;
            return Ok(ClientBody::default());
        }
        // Pingora's writer counts the body against its Content-Length and
        // fails a response it did not write every byte of. For a HEAD, it
        // sends the header's length as it is and expects no body: so the
        // header is written as a HEAD's (and flushed, its response
        // complete), and the body follows past it on the same socket.
        let method = session.req_header().method.clone();
        session.req_header_mut().set_method(http::Method::HEAD);
        let written = session.write_response_header(Box::new(header), false).await;
        session.req_header_mut().set_method(method);
        written?;
        Ok(ClientBody {
            direct,
            direct_bytes: 0,
        })
    }

    /// The client's socket, when the body goes past Pingora.
    pub fn direct(&self) -> Option<&DirectSocket> {
        self.direct.as_ref()
    }

    /// Counts `n` bytes sent on `direct()`.
    pub fn sent_direct(&mut self, n: u64) {
        self.direct_bytes += n;
    }

    /// Writes body bytes to the client: straight from the caller's buffer
    /// on HTTP/1.
    pub async fn write(&mut self, session: &mut Session, bytes: &[u8]) -> pingora::Result<()> {
        if let Some(socket) = &self.direct {
            socket.write_all(bytes).await.map_err(|e| {
                Error::because(ErrorType::WriteError, "writing body", e).into_down()
            })?;
            self.direct_bytes += bytes.len() as u64;
            return Ok(());
        }
        match session.as_downstream_mut() {
            ServerSession::H1(s) => s.write_body(bytes).await.map(|_| ()),
            other => {
                other
                    .write_response_body(Bytes::copy_from_slice(bytes), false)
                    .await
            }
        }
        .map_err(Error::into_down)
    }

    /// Ends the body (flushes; the length was announced).
    pub async fn finish(&mut self, session: &mut Session) -> pingora::Result<()> {
        match session.as_downstream_mut() {
            ServerSession::H1(s) => s.finish_body().await.map(|_| ()),
            other => other.finish_body().await,
        }
    }
}
