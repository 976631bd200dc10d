//! A connection with bytes already read put back in front of it, for
//! connections that cannot take bytes back themselves (TLS). The request
//! gate reads a request header whole, then hands Pingora this stream, which
//! reads the header again from here and the rest from the connection.

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `held[pos..]` read first.
#[derive(Debug)]
pub struct Replayed {
    held: Vec<u8>,
    pos: usize,
    inner: Stream,
}

impl Replayed {
    /// `inner` with `held` in front of it.
    pub fn new(inner: Stream, held: Vec<u8>) -> Replayed {
        Replayed {
            held,
            pos: 0,
            inner,
        }
    }

    /// The connection and whatever of the held bytes was not read.
    pub fn into_parts(mut self) -> (Stream, Vec<u8>) {
        self.held.drain(..self.pos);
        (self.inner, self.held)
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.held.len() {
            let n = buf.remaining().min(this.held.len() - this.pos);
            buf.put_slice(&this.held[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.held.len() {
                this.held = Vec::new(); // nothing more to replay: free it
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Replayed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Replayed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Replayed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Replayed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Replayed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Replayed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

// Peeking is not needed once the gate has read the header: the default (unsupported).
impl Peek for Replayed {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn held_bytes_come_first_then_the_connection() {
        let (client, server) = tokio::io::duplex(64);
        let inner: Stream = Box::new(server);
        let mut r = Replayed::new(inner, b"GET / HTTP/1.1\r\n".to_vec());
        let mut client = client;
        client.write_all(b"host: x\r\n\r\n").await.unwrap();
        let mut got = vec![0u8; 27];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let (_inner, left) = r.into_parts();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn unread_held_bytes_are_given_back() {
        let (_client, server) = tokio::io::duplex(64);
        let mut r = Replayed::new(Box::new(server), b"abcdef".to_vec());
        let mut two = [0u8; 2];
        r.read_exact(&mut two).await.unwrap();
        assert_eq!(r.into_parts().1, b"cdef");
    }
}
