//! How many bytes a connection's socket can take right now: what a stream's
//! next chunk should be, so that a slow client's stream holds a small chunk
//! instead of the whole largest one.
//!
//! A stream holds its chunk until the connection has written most of it. A
//! client that keeps up has room in its receive window and takes a large
//! chunk at once; a slow one has a closed window (or a send queue already
//! backed up), and its next chunk is the smallest. This is `sendfile`'s
//! behaviour (nginx writes what the socket takes and holds nothing) for a
//! server that must read into memory.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

/// The smallest chunk: what a slow viewer's stream holds.
pub const CHUNK_MIN: usize = 16 * 1024;

/// A handle on one connection's socket, shared by the streams it serves.
#[derive(Debug)]
pub struct SendRoom {
    // A duplicate of the connection's descriptor: valid as long as any stream
    // of the connection lives (hyper shuts the connection down explicitly, so
    // the duplicate does not keep it open).
    fd: OwnedFd,
}

impl SendRoom {
    /// A handle on `socket`'s send room.
    pub fn of(socket: &impl AsFd) -> io::Result<Arc<SendRoom>> {
        Ok(Arc::new(SendRoom {
            fd: socket.as_fd().try_clone_to_owned()?,
        }))
    }

    /// The next chunk's size: the bytes the peer's receive window has room
    /// for beyond what is queued, between `CHUNK_MIN` and `max`. `max` when
    /// the kernel does not say.
    pub fn chunk(&self, max: usize) -> usize {
        match tcp_info(&self.fd) {
            Ok(info) => room(&info).clamp(CHUNK_MIN.min(max), max),
            Err(_) => max,
        }
    }
}

/// Window room minus bytes in flight and bytes queued but not sent.
fn room(info: &libc::tcp_info) -> usize {
    let in_flight = u64::from(info.tcpi_unacked) * u64::from(info.tcpi_snd_mss);
    let queued = in_flight + u64::from(info.tcpi_notsent_bytes);
    usize::try_from(u64::from(info.tcpi_snd_wnd).saturating_sub(queued)).unwrap_or(usize::MAX)
}

// getsockopt(TCP_INFO) has no safe wrapper in std, libc or socket2.
#[allow(unsafe_code)]
fn tcp_info(fd: &OwnedFd) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain old data; all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes; the kernel
    // writes at most `len` bytes and stores the length it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_reading_peer_has_room_and_a_stalled_one_gets_the_smallest_chunk() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let room = SendRoom::of(&sender).unwrap();
        let max = 512 * 1024;
        // A fresh connection: the peer's whole receive window is open.
        assert!(room.chunk(max) > CHUNK_MIN, "{}", room.chunk(max));
        // The peer stops reading: fill its window and our send queue.
        sender.set_nonblocking(true).unwrap();
        let block = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match sender.write(&block) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(room.chunk(max), CHUNK_MIN, "after {sent} unread bytes");
        // A socket that is not TCP: no answer from the kernel, the largest chunk.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(SendRoom::of(&a).unwrap().chunk(max), max);
        // The peer drains: room again.
        receiver.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0;
        while read < sent {
            match receiver.read(&mut buf) {
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while room.chunk(max) == CHUNK_MIN {
            assert!(
                std::time::Instant::now() < deadline,
                "the window never reopened"
            );
            std::thread::yield_now();
        }
    }
}
