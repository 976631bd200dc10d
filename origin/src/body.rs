//! Response bodies: small in-memory ones, and file streams.
//!
//! A file stream reads one bounded chunk at a time and only reads the next
//! when hyper asks for it, i.e. when the client has taken the previous one:
//! memory per stream is one chunk, and a slow client slows the reads down
//! instead of growing a buffer.
//!
//! Each chunk is as large as the connection's socket can take now
//! (`crate::send_room`), up to the configured chunk size: a slow client's
//! stream holds a small chunk, a fast client's moves many bytes per read.
//!
//! Reads try the page cache first without blocking (`preadv2` with
//! `RWF_NOWAIT`, on the runtime thread); only data that would have to come
//! from disk goes to the blocking pool. Hot video then costs no thread
//! hand-off per chunk, and a cold disk never stalls the runtime.

use crate::send_room::SendRoom;
use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The body type of every response.
pub type Body = BoxBody<Bytes, io::Error>;

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// One piece of a file response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal bytes (multipart boundaries and part headers).
    Literal(Bytes),
    /// `len` bytes of the file starting at `start`.
    File { start: u64, len: u64 },
}

impl Part {
    /// Number of bytes this part contributes to the body.
    pub fn len(&self) -> u64 {
        match self {
            Part::Literal(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// How a file stream is paced.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Largest read, and so the most memory one stream holds (smaller while
    /// the client's socket has less room).
    pub chunk_size: usize,
    /// Bytes per second this stream may send; 0 means unlimited.
    pub bytes_per_sec: u64,
    /// A fault: the stream fails after this many bytes (0: never).
    pub cut_after: u64,
}

struct State<G> {
    file: Arc<File>,
    parts: VecDeque<Part>,
    pacing: Pacing,
    started: Instant,
    sent: u64,
    room: Option<Arc<SendRoom>>,
    /// Dropped with the stream: ends the stream's accounting however it ends.
    guard: G,
}

/// Something told about every chunk a stream sends; dropped when the stream ends.
pub trait StreamGuard: Send + Sync + 'static {
    /// Called with the size of each chunk as it is handed to the connection.
    fn sent(&self, bytes: u64);

    /// Makes a chunk read from the file into the bytes handed to the
    /// connection (which drops them once written): the place to account
    /// for memory held.
    fn hold(&self, chunk: Vec<u8>) -> Bytes {
        Bytes::from(chunk)
    }
}

/// Streams `parts` of `file`, paced by `pacing`, reporting to `guard`; each
/// chunk sized to `room` (the connection's socket) when known.
pub fn file_stream<G: StreamGuard>(
    file: File,
    parts: Vec<Part>,
    pacing: Pacing,
    room: Option<Arc<SendRoom>>,
    guard: G,
) -> Body {
    let state = State {
        file: Arc::new(file),
        parts: parts.into(),
        pacing,
        started: Instant::now(),
        sent: 0,
        room,
        guard,
    };
    let s = stream::unfold(state, |mut st| async move {
        match next_chunk(&mut st).await {
            Ok(Some(bytes)) => Some((Ok(Frame::data(bytes)), st)),
            Ok(None) => None,
            Err(e) => {
                // End the stream after the error: hyper aborts the connection,
                // which is the only honest signal once headers are out.
                st.parts.clear();
                Some((Err(e), st))
            }
        }
    });
    BodyExt::boxed(StreamBody::new(s))
}

async fn next_chunk<G: StreamGuard>(st: &mut State<G>) -> io::Result<Option<Bytes>> {
    let bytes = loop {
        let Some(part) = st.parts.front_mut() else {
            return Ok(None);
        };
        match part {
            Part::Literal(b) => {
                let b = std::mem::take(b);
                st.parts.pop_front();
                if !b.is_empty() {
                    break b;
                }
            }
            Part::File { len: 0, .. } => {
                st.parts.pop_front();
            }
            Part::File { start, len } => {
                let chunk = match &st.room {
                    Some(room) => room.chunk(st.pacing.chunk_size),
                    None => st.pacing.chunk_size,
                };
                let mut want = (*len).min(chunk as u64);
                if st.pacing.cut_after > 0 {
                    let left = st.pacing.cut_after.saturating_sub(st.sent);
                    if left == 0 {
                        return Err(io::Error::other("injected fault: body cut"));
                    }
                    want = want.min(left);
                }
                if st.pacing.bytes_per_sec > 0 {
                    // Small reads keep a throttled stream smooth.
                    want = want.min(st.pacing.bytes_per_sec.div_ceil(10).max(1));
                }
                let bytes = st
                    .guard
                    .hold(read_at(&st.file, *start, want as usize).await?);
                *start += bytes.len() as u64;
                *len -= bytes.len() as u64;
                break bytes;
            }
        }
    };
    st.sent += bytes.len() as u64;
    if st.pacing.bytes_per_sec > 0 {
        // A chunk leaves when the cap has allowed all of it, so a body of
        // one chunk takes its full time too (not just the gaps between chunks).
        let due = Duration::from_secs_f64(st.sent as f64 / st.pacing.bytes_per_sec as f64);
        tokio::time::sleep_until(st.started + due).await;
    }
    st.guard.sent(bytes.len() as u64);
    Ok(Some(bytes))
}

/// Reads up to `want` bytes at `offset`: from the page cache without
/// blocking when it can, else on the blocking pool.
async fn read_at(file: &Arc<File>, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    if read_cached(file, offset, &mut buf).unwrap_or(0) == 0 {
        let f = file.clone();
        // The buffer comes from this runtime thread: a blocking-pool thread
        // that allocated it would keep the freed memory in its own allocator
        // heap while it idles.
        buf = tokio::task::spawn_blocking(move || {
            buf.resize(want, 0);
            let n = f.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok::<_, io::Error>(buf)
        })
        .await
        .map_err(io::Error::other)??;
    }
    if buf.is_empty() {
        // The file shrank under us; the promised Content-Length cannot be met.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file truncated while streaming",
        ));
    }
    Ok(buf)
}

/// Reads into `buf`'s spare capacity only what is already in the page cache.
/// `Err` (`EAGAIN`, or `EOPNOTSUPP` on file systems without `RWF_NOWAIT`)
/// means "ask the blocking pool".
// preadv2 with RWF_NOWAIT has no safe wrapper in std or libc.
#[allow(unsafe_code)]
fn read_cached(file: &File, offset: u64, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: the iovec covers `buf`'s spare capacity, which lives for the
    // call; the kernel writes at most `iov_len` bytes into it.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicU64>);
    impl StreamGuard for Count {
        fn sent(&self, bytes: u64) {
            self.0.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn streams_parts_in_bounded_chunks() {
        let mut tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let counted = Arc::new(AtomicU64::new(0));
        let parts = vec![
            Part::Literal(Bytes::from_static(b"<")),
            Part::File {
                start: 100,
                len: 5000,
            },
            Part::Literal(Bytes::from_static(b">")),
            Part::File {
                start: 9000,
                len: 1000,
            },
        ];
        let pacing = Pacing {
            chunk_size: 1024,
            bytes_per_sec: 0,
            cut_after: 0,
        };
        let mut body = file_stream(tmp, parts, pacing, None, Count(counted.clone()));
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(
                chunk.len() <= 1024,
                "chunk of {} bytes exceeds the bound",
                chunk.len()
            );
            out.extend_from_slice(&chunk);
        }
        let mut want = b"<".to_vec();
        want.extend_from_slice(&data[100..5100]);
        want.push(b'>');
        want.extend_from_slice(&data[9000..10000]);
        assert_eq!(out, want);
        assert_eq!(counted.load(Ordering::Relaxed), want.len() as u64);
    }

    #[tokio::test]
    async fn truncated_file_is_an_error_not_a_short_body() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&[1u8; 100]).unwrap();
        let parts = vec![Part::File { start: 0, len: 200 }];
        let pacing = Pacing {
            chunk_size: 64,
            bytes_per_sec: 0,
            cut_after: 0,
        };
        let mut body = file_stream(tmp, parts, pacing, None, Count(Arc::default()));
        let mut saw_error = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                saw_error = true;
            }
        }
        assert!(saw_error);
    }
}
