//! A deadline for an origin's whole response header on the plain proxy
//! path (`timeouts.response_header`).
//!
//! Pingora's read timeout is per read, so an origin that trickles its
//! header a byte at a time is never timed out, and Pingora has no hook for
//! a whole-header deadline. So when a request's connection to its origin
//! is ready, a timer is armed on a duplicate of the connection's
//! descriptor; if the header has not arrived when it fires, it shuts the
//! socket down. Pingora's read then fails, and the request is retried or
//! answered 504 like any read timeout. The duplicate is ours to close, so
//! the timer never touches a descriptor number that Pingora has closed and
//! the system has reused.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// An armed deadline; dropping it (the header arrived, or the attempt
/// ended) disarms it.
#[derive(Debug)]
pub struct HeaderDeadline {
    timer: JoinHandle<()>,
    fired: Arc<AtomicBool>,
}

impl HeaderDeadline {
    /// Arms a deadline of `after` on the connection whose descriptor is
    /// `fd` (borrowed from Pingora for this call only). `None` when the
    /// descriptor cannot be duplicated (out of descriptors); the request
    /// then has only the per-read timeout.
    pub fn arm(fd: RawFd, after: Duration) -> Option<HeaderDeadline> {
        // SAFETY: Pingora passes the connection's open descriptor, valid for
        // the duration of the callback this is called from.
        #[allow(unsafe_code)]
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket: OwnedFd = match borrowed.try_clone_to_owned() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("no response-header deadline for this request: {e}");
                return None;
            }
        };
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            flag.store(true, Relaxed);
            let _ = socket2::SockRef::from(&socket).shutdown(std::net::Shutdown::Both);
        });
        Some(HeaderDeadline { timer, fired })
    }

    /// Did the deadline pass before the header arrived?
    pub fn fired(&self) -> bool {
        self.fired.load(Relaxed)
    }
}

impl Drop for HeaderDeadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read};
    use std::os::fd::AsRawFd;

    /// A connected socket whose peer never writes, read without blocking.
    fn quiet_socket() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, listener.accept().unwrap().0)
    }

    fn read_now(s: &std::net::TcpStream) -> std::io::Result<usize> {
        (&*s).read(&mut [0u8; 1])
    }

    // The clock is paused: sleeps advance it at once.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_shuts_the_socket_down_and_a_dropped_one_does_not() {
        let (fired_on, _peer) = quiet_socket();
        let d = HeaderDeadline::arm(fired_on.as_raw_fd(), Duration::from_secs(10)).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            read_now(&fired_on).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert!(!d.fired());
        tokio::time::sleep(Duration::from_secs(6)).await;
        while !d.fired() {
            tokio::task::yield_now().await;
        }
        // End of stream: the socket was shut down.
        assert_eq!(read_now(&fired_on).unwrap(), 0);

        let (kept, _peer) = quiet_socket();
        drop(HeaderDeadline::arm(kept.as_raw_fd(), Duration::from_secs(10)).unwrap());
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(read_now(&kept).unwrap_err().kind(), ErrorKind::WouldBlock);
    }
}
