//! An origin's response to a slice fetch, read through one small buffer.
//!
//! Pingora's HTTP/1 client reads a body through a 64 KiB buffer that lives
//! as long as the response (its size is not settable), and a slow viewer
//! holds its fetch open for a whole slice: that buffer alone would be the
//! per-viewer budget. So the media path reads the response itself: the
//! header is found in a small buffer and handed to Pingora's parser
//! (rewound into the connection, so its checks apply), and a plainly sized
//! body is then read from the connection through a buffer sized to the
//! client's pace (`pace.rs`): small while the client is slow, up to 64 KiB
//! while it keeps up. The connection goes back to the pool once the body is whole.
//! Responses that are not plainly sized (chunked, close-delimited, 1xx
//! first) are rewound whole and read by Pingora.

use super::pace::{READ_MAX, READ_MIN};
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, OrErr, Result};
use prometheus::IntGauge;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest response header read (Pingora's own limit is larger; origins
/// answering a Range GET send a few hundred bytes).
const MAX_HEADER: usize = 64 * 1024;

/// Most header lines looked at to find a header's end.
const MAX_HEADERS: usize = 96;

/// Where the next body bytes come from.
enum Source {
    /// The connection itself: `buf[start..end]` first, then `left` more
    /// bytes, read `read_size` at a time.
    Direct {
        stream: Stream,
        buf: Vec<u8>,
        read_size: usize,
        start: usize,
        end: usize,
        left: u64,
        /// The origin keeps the connection open after this response.
        keepalive: bool,
    },
    /// Pingora's session, for bodies whose length is not known up front.
    Session(Box<HttpSession>),
}

/// An origin's response: its header, and its body still to be read.
pub struct OriginResponse {
    header: Box<ResponseHeader>,
    source: Source,
    /// The read buffer's size, in `cdn_media_buffered_bytes`.
    counted: Counted,
    /// How long one read of the body may wait.
    read_timeout: Duration,
}

/// A buffer's size, counted in a gauge while it lives.
struct Counted {
    gauge: IntGauge,
    bytes: i64,
}

impl Counted {
    fn set(&mut self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.gauge.add(bytes - self.bytes);
        self.bytes = bytes;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

impl OriginResponse {
    /// Reads the response to the request just written on `stream`. Each
    /// read is bounded by `read_timeout`; the caller bounds the whole
    /// header. The read buffer is counted in `buffered` while it lives.
    pub async fn read(
        mut stream: Stream,
        peer: &HttpPeer,
        read_timeout: Duration,
        buffered: IntGauge,
    ) -> Result<OriginResponse> {
        let mut buf = vec![0; READ_MIN];
        let mut counted = Counted {
            gauge: buffered,
            bytes: 0,
        };
        counted.set(buf.len());
        let mut end = 0;
        let head = loop {
            if end == buf.len() {
                if buf.len() >= MAX_HEADER {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("origin response header larger than {MAX_HEADER} bytes"),
                    );
                }
                buf.resize(buf.len() * 2, 0);
                counted.set(buf.len());
            }
            let n = timed_read(&mut stream, &mut buf[end..], read_timeout).await?;
            if n == 0 {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    format!("origin closed the connection {end} bytes into the response header"),
                );
            }
            end += n;
            if let Some(head) = measure(&buf[..end]) {
                break head;
            }
        };
        // Pingora parses the header (its checks apply); a sized body stays here.
        let rewound = if head.size.is_some() { head.len } else { end };
        let mut tcp = stream
            .into_any()
            .downcast::<TcpStream>()
            .map_err(|_| Error::explain(ErrorType::InternalError, "origin stream is not TCP"))?;
        tcp.rewind(&buf[..rewound]);
        let mut session = HttpSession::new_with_options(tcp, peer);
        session.read_timeout = Some(read_timeout);
        loop {
            session.read_response().await?;
            if session.get_status().is_none_or(|s| !s.is_informational()) {
                break;
            }
        }
        let header = Box::new(
            session
                .resp_header()
                .ok_or_else(|| Error::explain(ErrorType::InternalError, "no response header"))?
                .clone(),
        );
        let source = match head.size {
            Some(size) => {
                let start = head.len;
                // Bytes past the body: the connection is out of step.
                let overread = (end - start) as u64 > size;
                Source::Direct {
                    keepalive: keeps_alive(&header) && !overread,
                    stream: session.into_inner(),
                    left: size.saturating_sub((end - start) as u64),
                    end: end.min(start + usize::try_from(size).unwrap_or(usize::MAX)),
                    start,
                    read_size: buf.len(),
                    buf,
                }
            }
            None => {
                // Pingora's reader holds its own 64 KiB buffer.
                counted.set(READ_MAX);
                Source::Session(Box::new(session))
            }
        };
        Ok(OriginResponse {
            header,
            source,
            counted,
            read_timeout,
        })
    }

    /// The origin's response header.
    pub fn header(&self) -> &ResponseHeader {
        &self.header
    }

    /// The next bytes of the body; `None` at its end. Each read waits at
    /// most the `read_timeout` given to [`Self::read`].
    pub async fn next(&mut self) -> Result<Option<&[u8]>> {
        match &mut self.source {
            Source::Direct {
                stream,
                buf,
                read_size,
                start,
                end,
                left,
                ..
            } => {
                if *start == *end {
                    if *left == 0 {
                        return Ok(None);
                    }
                    if buf.len() != *read_size {
                        // A new buffer rather than a resized one: a shrunk
                        // Vec would keep its memory.
                        *buf = vec![0; *read_size];
                        self.counted.set(buf.len());
                    }
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = timed_read(stream, &mut buf[..want], self.read_timeout).await?;
                    if n == 0 {
                        return Error::e_explain(
                            ErrorType::ConnectionClosed,
                            format!("origin closed the connection with {left} body bytes to go"),
                        );
                    }
                    *left -= n as u64;
                    (*start, *end) = (0, n);
                }
                let chunk = &buf[*start..*end];
                *start = *end;
                Ok(Some(chunk))
            }
            Source::Session(s) => s.read_body_ref().await,
        }
    }

    /// Reads at most `size` bytes at a time from now on (see `pace.rs`).
    pub fn set_read_size(&mut self, size: usize) {
        if let Source::Direct { read_size, .. } = &mut self.source {
            *read_size = size.clamp(READ_MIN, READ_MAX);
        }
    }

    /// The connection, when the body was read to its end and the origin
    /// keeps it open: it may serve another request.
    pub async fn into_reusable(self) -> Option<Stream> {
        match self.source {
            Source::Direct {
                stream,
                start,
                end,
                left: 0,
                keepalive: true,
                ..
            } if start == end => Some(stream),
            Source::Direct { .. } => None,
            Source::Session(mut s) => {
                if !s.is_body_done() {
                    return None;
                }
                s.respect_keepalive();
                s.reuse().await
            }
        }
    }
}

/// Where a response header ends, and its body's size when it is plainly
/// sized (one `Content-Length`, no `Transfer-Encoding`, not 1xx/204/304).
#[derive(Debug, PartialEq, Eq)]
struct Head {
    len: usize,
    size: Option<u64>,
}

/// `None` while the header is incomplete. A header that does not parse is
/// measured as not sized: Pingora reads it and reports what is wrong.
fn measure(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Head { len: 0, size: None }),
    };
    let bodiless = matches!(resp.code, Some(100..=199 | 204 | 304));
    let mut lengths = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let chunked = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let size = match (lengths.next(), lengths.next()) {
        (Some(h), None) if !chunked && !bodiless && !h.value.is_empty() => {
            std::str::from_utf8(h.value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
        }
        _ => None,
    };
    Some(Head { len, size })
}

/// Does the origin keep the connection open after this response (RFC 9112 §9.3)?
fn keeps_alive(header: &ResponseHeader) -> bool {
    let has = |token: &str| {
        header
            .headers
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match header.version {
        http::Version::HTTP_11 => !has("close"),
        http::Version::HTTP_10 => has("keep-alive"),
        _ => false,
    }
}

/// One read, within `limit`.
async fn timed_read(stream: &mut Stream, buf: &mut [u8], limit: Duration) -> Result<usize> {
    pingora::prelude::timeout(limit, stream.read(buf))
        .await
        .or_err(ErrorType::ReadTimedout, "reading from an origin")?
        .or_err(ErrorType::ReadError, "reading from an origin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_response_is_measured_to_its_header_end() {
        let r = b"HTTP/1.1 206 Partial Content\r\ncontent-length: 10\r\n\r\n0123";
        assert_eq!(
            measure(r),
            Some(Head {
                len: r.len() - 4,
                size: Some(10)
            })
        );
        assert_eq!(
            measure(b"HTTP/1.1 206 Partial Content\r\ncontent-len"),
            None
        );
    }

    #[test]
    fn anything_not_plainly_sized_is_left_to_pingora() {
        for r in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 3\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
            b"not http at all\r\n\r\n",
        ] {
            assert_eq!(
                measure(r).and_then(|h| h.size),
                None,
                "{}",
                r.escape_ascii()
            );
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let h = |v: http::Version, c: Option<&str>| {
            let mut h = ResponseHeader::build(200, None).unwrap();
            h.set_version(v);
            if let Some(c) = c {
                h.insert_header("connection", c).unwrap();
            }
            keeps_alive(&h)
        };
        assert!(h(http::Version::HTTP_11, None));
        assert!(!h(http::Version::HTTP_11, Some("Close")));
        assert!(!h(http::Version::HTTP_10, None));
        assert!(h(http::Version::HTTP_10, Some("keep-alive")));
    }
}
