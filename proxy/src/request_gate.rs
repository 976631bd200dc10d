//! The public listeners' HTTP/1 connection loop (plain and TLS), in front
//! of Pingora's: it reads each request header itself, with a total deadline
//! and a size limit, before Pingora sees it, and keeps pipelined requests
//! for their turn. HTTP/2 connections go to Pingora's own loop.
//!
//! Pingora reads a request header with a per-read timeout only (a client
//! trickling a byte a second holds its connection forever), accepts headers
//! up to 1 MiB, and closes a connection that sent a second request before
//! the first was answered (RFC 9112 §9.3 asks for answers, in order). Here a
//! header must be complete within `client_header_timeout` of its first byte
//! (else `408`) and within `client_max_header` bytes (else `431`); the bytes
//! of one request are handed to Pingora (rewound into the connection) and any
//! bytes after them wait until that request is answered.

use crate::config::Config;
use crate::replayed_stream::Replayed;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a keep-alive connection may wait for its next request (Pingora's
/// own figure); HTTP/2 connections are closed after as long without a stream.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// What an HTTP/2 client with prior knowledge (h2c) sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most header lines parsed to find a header's end; a request with more is
/// handed to Pingora with everything after it (no pipelining for it).
const MAX_HEADERS: usize = 96;

/// The connection loop around `app` (Pingora's proxy).
pub struct RequestGate<A> {
    /// What answers each request.
    pub app: Arc<A>,
    /// The live config (limits are read per connection).
    pub config: Arc<ArcSwap<Config>>,
}

/// What reading one request header gave.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A request whose first `n` bytes of the buffer are to go to Pingora
    /// now (the header, or everything when the request has a body or
    /// upgrades the connection).
    Ready(usize),
    /// The client closed, or stayed idle past the keep-alive time, or the
    /// server is shutting down: close quietly.
    Gone,
    /// Larger than the limit: `431`.
    TooLarge,
    /// Not complete within the deadline: `408`.
    TooSlow,
    /// The HTTP/2 preface on a listener that takes h2c: Pingora's HTTP/2
    /// server takes the connection from here.
    H2c,
}

#[async_trait]
impl<A> ServerApp for RequestGate<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Plain TCP takes bytes back itself; TLS through `Replayed`. HTTP/2
        // (ALPN) and other kinds of stream go to Pingora's own loop.
        let tcp = stream.as_any().is::<TcpStream>();
        let tls_h1 = stream.get_ssl_digest().is_some()
            && !matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if !tcp && !tls_h1 {
            return self.app.process_new(stream, shutdown).await;
        }
        let cfg = self.config.load_full();
        let mut stream = stream;
        let mut held: Vec<u8> = Vec::new();
        let mut settings = None;
        let mut first = true;
        loop {
            let n = match read_head(&mut stream, &mut held, &cfg, tcp && cfg.h2c, shutdown).await {
                Head::Ready(n) => n,
                Head::Gone => return None,
                Head::TooLarge => {
                    return refuse(stream, 431, "Request Header Fields Too Large").await
                }
                Head::TooSlow => return refuse(stream, 408, "Request Timeout").await,
                Head::H2c => {
                    let mut tcp = stream
                        .into_any()
                        .downcast::<TcpStream>()
                        .expect("checked above");
                    tcp.rewind(&held);
                    return self.app.process_new(tcp, shutdown).await;
                }
            };
            let request: Stream = if tcp {
                let mut tcp = stream
                    .into_any()
                    .downcast::<TcpStream>()
                    .expect("checked above");
                tcp.rewind(&held[..n]);
                tcp
            } else {
                Box::new(Replayed::new(stream, held[..n].to_vec()))
            };
            held.drain(..n);
            if held.is_empty() {
                held = Vec::new(); // an idle connection holds no buffer
            }
            let mut session = ServerSession::new_http1(request);
            if first {
                session.set_keepalive(if *shutdown.borrow() {
                    None
                } else {
                    Some(KEEPALIVE.as_secs())
                });
                let limit = self
                    .app
                    .server_options()
                    .and_then(|o| o.keepalive_request_limit);
                session.set_keepalive_reuses_remaining(limit);
                first = false;
            }
            if let Some(s) = settings.take() {
                pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session);
            }
            let reused = self.app.process_new_http(session, shutdown).await?;
            let (next, next_settings) = reused.consume();
            settings = next_settings;
            stream = if tcp {
                if !next.as_any().is::<TcpStream>() {
                    return None;
                }
                next
            } else {
                let Ok(replayed) = next.into_any().downcast::<Replayed>() else {
                    return None;
                };
                // Bytes Pingora left unread come before those still held.
                let (inner, mut left) = replayed.into_parts();
                if !left.is_empty() {
                    left.append(&mut held);
                    held = left;
                }
                inner
            };
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

/// Reads until `held` starts with a whole request header, within the limits.
async fn read_head(
    stream: &mut Stream,
    held: &mut Vec<u8>,
    cfg: &Config,
    h2c: bool,
    shutdown: &ShutdownWatch,
) -> Head {
    let max = cfg.client_max_header;
    let mut deadline = None;
    loop {
        if held.is_empty() {
            // Shutting down: an idle connection is closed rather than kept.
            if *shutdown.borrow() {
                return Head::Gone;
            }
        } else if h2c && H2_PREFACE.starts_with(&held[..held.len().min(H2_PREFACE.len())]) {
            if held.len() >= H2_PREFACE.len() {
                return Head::H2c;
            }
            deadline.get_or_insert_with(|| Instant::now() + cfg.client_header_timeout);
        } else {
            match measure(held) {
                Some(n) => return Head::Ready(n),
                None if held.len() >= max => return Head::TooLarge,
                None => {}
            }
            deadline.get_or_insert_with(|| Instant::now() + cfg.client_header_timeout);
        }
        // Before a request's first byte: the keep-alive wait; after it: what
        // is left of the header deadline. Pingora's timer (cheaper than tokio's).
        let wait = deadline.map_or(KEEPALIVE, |d| d.saturating_duration_since(Instant::now()));
        held.reserve((max + 1 - held.len()).min(16 * 1024));
        match pingora::prelude::timeout(wait, stream.read_buf(held)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Gone,
            Ok(Ok(_)) => {}
            Err(_) if deadline.is_some() => return Head::TooSlow,
            Err(_) => return Head::Gone,
        }
    }
}

/// How many bytes of `buf` go to Pingora for its first request: the
/// header, or all of it when the request carries a body or upgrades the
/// connection (those bytes are the request's own). `None`: incomplete.
/// A header that does not parse goes to Pingora whole, which answers it.
fn measure(buf: &[u8]) -> Option<usize> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => {
            let owns_rest = req.headers.iter().any(|h| {
                let name = h.name;
                name.eq_ignore_ascii_case("transfer-encoding")
                    || name.eq_ignore_ascii_case("upgrade")
                    || (name.eq_ignore_ascii_case("content-length")
                        && h.value.iter().any(|b| *b != b'0'))
            });
            Some(if owns_rest { buf.len() } else { n })
        }
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(buf.len()),
    }
}

/// Answers `status` and closes the connection.
async fn refuse(mut stream: Stream, status: u16, reason: &str) -> Option<Stream> {
    let body = format!("{}\n", reason.to_ascii_lowercase());
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The client may be gone already; nothing to do then.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(resp.as_bytes()).await?;
        stream.flush().await
    })
    .await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_measured_to_its_end_and_no_further() {
        let two = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n";
        assert_eq!(measure(two), Some(28));
        assert_eq!(measure(b"GET /a HTTP/1.1\r\nhost: x\r\n"), None);
    }

    #[test]
    fn a_request_with_a_body_or_an_upgrade_keeps_its_bytes() {
        let post = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(measure(post), Some(post.len()));
        let chunked = b"GET /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(measure(chunked), Some(chunked.len()));
        let ws = b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\n\r\nframe";
        assert_eq!(measure(ws), Some(ws.len()));
        let empty = b"GET /a HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /b";
        assert_eq!(measure(empty), Some(empty.len() - 6));
    }

    #[test]
    fn garbage_goes_to_pingora_whole() {
        let tls_hello = b"\x16\x03\x01 not http\r\n\r\n";
        assert_eq!(measure(tls_hello), Some(tls_hello.len()));
    }
}
