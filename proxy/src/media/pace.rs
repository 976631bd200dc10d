//! How much a stream reads from its origin at a time, sized to how fast
//! its client takes the bytes.
//!
//! A slow viewer holds its read buffer while the kernel drains its socket,
//! so its reads should be small; a fast client should move many bytes per
//! system call. The client's rate over the last window decides: reads hold
//! about `HOLD` of it, between `READ_MIN` and `READ_MAX`. Until a first
//! window has passed, reads are `READ_MAX`: a 1 MiB range at loopback speed
//! is over in a millisecond, and a slow client's first writes fill kernel
//! buffers at that speed too (its first window brings its reads down). (Whether a write
//! had to wait is no signal: the kernel wakes a writer only once a third of
//! its send buffer is free, so a slow client's writes mostly do not wait.)

use std::time::{Duration, Instant};

/// The smallest read from an origin: what a slow viewer's stream holds
/// while the kernel drains its socket.
pub const READ_MIN: usize = 4 * 1024;

/// The largest read, for a client that keeps up: as many bytes per system
/// call as Pingora's own proxy path moves.
pub const READ_MAX: usize = 64 * 1024;

/// How much of the client's rate one read holds.
const HOLD: Duration = Duration::from_millis(10);

/// How often the rate is taken.
const WINDOW: Duration = Duration::from_millis(100);

/// A stream's read size, from the rate its client takes bytes at.
#[derive(Debug)]
pub struct Pace {
    read_size: usize,
    since: Instant,
    bytes: u64,
    /// A window has passed: `read_size` is the client's, not a guess.
    measured: bool,
}

impl Pace {
    /// A stream starting at `now`, reading `READ_MAX` until its rate is known.
    pub fn new(now: Instant) -> Pace {
        Pace {
            read_size: READ_MAX,
            since: now,
            bytes: 0,
            measured: false,
        }
    }

    /// The client took `n` more bytes by `now`.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.bytes += n as u64;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= WINDOW {
            let per_read = self.bytes as f64 * HOLD.as_secs_f64() / elapsed.as_secs_f64();
            self.read_size = (per_read as usize)
                .next_power_of_two()
                .clamp(READ_MIN, READ_MAX);
            self.since = now;
            self.bytes = 0;
            self.measured = true;
        }
    }

    /// Bytes to read from the origin next.
    pub fn read_size(&self) -> usize {
        self.read_size
    }

    /// Has the client been seen to take `READ_MAX` reads as fast as they
    /// come? Not before a window has passed: a slow client's first large
    /// write would hold its buffer for seconds.
    pub fn keeps_up(&self) -> bool {
        self.measured && self.read_size == READ_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(rate_per_sec: u64, windows: u32) -> usize {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        for w in 1..=windows {
            p.wrote((rate_per_sec / 10) as usize, t0 + WINDOW * w);
        }
        p.read_size()
    }

    #[test]
    fn a_slow_client_gets_small_reads_and_a_fast_one_large() {
        assert_eq!(Pace::new(Instant::now()).read_size(), READ_MAX);
        assert_eq!(after(16 * 1024, 3), READ_MIN);
        assert_eq!(after(2 << 20, 1), 32 * 1024);
        assert_eq!(after(1 << 30, 1), READ_MAX);
    }

    #[test]
    fn only_a_client_seen_to_keep_up_keeps_up() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        assert!(!p.keeps_up(), "not known yet");
        p.wrote(100 << 20, t0 + WINDOW);
        assert!(p.keeps_up());
        p.wrote(20_000, t0 + WINDOW * 2);
        assert!(!p.keeps_up());
    }

    #[test]
    fn the_size_follows_the_latest_window() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.wrote(100 << 20, t0 + WINDOW);
        assert_eq!(p.read_size(), READ_MAX);
        // The player's buffer is full: it now reads at the video's bitrate.
        p.wrote(20_000, t0 + WINDOW * 2);
        assert_eq!(p.read_size(), READ_MIN);
        // Within a window nothing changes.
        p.wrote(100 << 20, t0 + WINDOW * 2 + WINDOW / 2);
        assert_eq!(p.read_size(), READ_MIN);
    }
}
