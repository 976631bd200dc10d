//! A plain HTTP/1 client's socket, written past Pingora's session: cache
//! hits go from their slice files to the client with `sendfile`, the
//! kernel copying page cache to socket, as nginx serves its cache. Read
//! with `pread` and written through Pingora, every byte is copied twice
//! through user memory (a third of the proxy's CPU on hits, by `perf`).
//!
//! The socket is a duplicate of the connection's descriptor, registered
//! with tokio's reactor on its own to wait for room to write; Pingora's
//! stream keeps the original. The duplicate is ours to close, so nothing
//! here touches a descriptor number Pingora has closed and the system has
//! reused.

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::proxy::Session;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Most bytes one `sendfile` is asked for: one client gets at most this
/// much before others are served (nginx's `sendfile_max_chunk`).
pub const SENDFILE_MAX: usize = 2 * 1024 * 1024;

/// The client's socket, writable past Pingora.
#[derive(Debug)]
pub struct DirectSocket {
    fd: AsyncFd<OwnedFd>,
}

/// Which side of a `sendfile` failed.
#[derive(Debug)]
pub enum SendFileError {
    /// The file could not be read: its bytes are to come from elsewhere.
    File(io::Error),
    /// The client's socket failed: the client is gone.
    Client(io::Error),
}

impl DirectSocket {
    /// The client socket of `session`, when it is plain TCP (or a Unix
    /// socket) under HTTP/1: TLS and HTTP/2 frame their bytes, so they go
    /// through Pingora. `None` too when the descriptor cannot be
    /// duplicated or registered (out of descriptors): Pingora writes then.
    pub fn of(session: &Session) -> Option<DirectSocket> {
        let stream = session.as_downstream().stream()?;
        let tcp = (**stream).as_any().downcast_ref::<TcpStream>()?;
        // SAFETY: the stream is borrowed for this call, so its descriptor
        // is open while it is duplicated.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
        let owned = borrowed.try_clone_to_owned().ok()?;
        // SAFETY: an `OwnedFd` stays open, and the same descriptor, for as
        // long as the `AsyncFd` that owns it.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::WRITABLE) };
        match registered {
            Ok(fd) => Some(DirectSocket { fd }),
            Err(e) => {
                let (_, e) = e.into_parts();
                tracing::debug!("client socket not registered, writing through Pingora: {e}");
                None
            }
        }
    }

    /// Sends up to `len` bytes of `file` from `offset` (at most
    /// `SENDFILE_MAX`), waiting for room in the socket. `Ok(0)`: the file
    /// ends before `offset`.
    pub async fn send_file(
        &self,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Result<usize, SendFileError> {
        let len = len.min(SENDFILE_MAX);
        self.writing(|socket| {
            let mut at = offset;
            rustix::fs::sendfile(socket, file, Some(&mut at), len).map_err(io::Error::from)
        })
        .await
        .map_err(classify)
    }

    /// Writes all of `bytes`, waiting for room in the socket.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self
                .writing(|socket| rustix::io::write(socket, bytes).map_err(io::Error::from))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Runs `write` on the socket until it does not find the socket full.
    /// It is tried at once: a socket usually has room, and a new
    /// registration reads as not ready until the reactor has polled it.
    async fn writing<R>(&self, mut write: impl FnMut(&OwnedFd) -> io::Result<R>) -> io::Result<R> {
        match write(self.fd.get_ref()) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        loop {
            let mut ready = self.fd.writable().await?;
            // `EAGAIN` clears the readiness, and the loop waits for room.
            match ready.try_io(|fd| write(fd.get_ref())) {
                Ok(done) => return done,
                Err(_would_block) => {}
            }
        }
    }
}

/// Which side an error of `sendfile` is from: reading the file (`EIO`, a
/// file that cannot be mapped) or the socket (everything else: reset,
/// broken pipe).
fn classify(e: io::Error) -> SendFileError {
    use rustix::io::Errno;
    match Errno::from_io_error(&e) {
        Some(Errno::IO | Errno::INVAL | Errno::OVERFLOW | Errno::SPIPE | Errno::NOMEM) => {
            SendFileError::File(e)
        }
        _ => SendFileError::Client(e),
    }
}
