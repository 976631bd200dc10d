//! One origin's time to first byte, the one source of every latency figure:
//! a histogram that `/prometheus` exports as `cdn_ttfb_seconds`, from which
//! `/metrics` computes its average and p95 and the tier score its recent
//! median; and the peak EWMA p2c_ewma compares.

use crate::atomic_f64::AtomicF64;
use crate::clock::now_ms;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, seconds (a last bucket takes
/// the rest). Fine below 100 ms, where a healthy origin answers, so a p95
/// read from the buckets is close to the true one.
pub const TTFB_BUCKETS: [f64; 19] = [
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Time to first byte of one origin's responses.
pub struct Ttfb {
    peak: AtomicF64,
    /// When the peak EWMA was last updated (ms on `now_ms`'s clock).
    at: AtomicU64,
    /// The EWMA time constant in ms, from the config of the last sample.
    decay_ms: AtomicU64,
    /// Samples per bucket (not cumulative); the last is past every bound.
    buckets: [AtomicU64; TTFB_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Ttfb {
    fn default() -> Self {
        Ttfb {
            peak: AtomicF64::default(),
            at: AtomicU64::new(0),
            decay_ms: AtomicU64::new(10_000),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Ttfb {
    /// Records one response's time to first byte, seen at `now` (ms on
    /// [`now_ms`]'s clock); `decay` is the EWMA time constant.
    pub fn observe(&self, ttfb: Duration, now: u64, decay: Duration) {
        self.decay_ms
            .store(decay.as_millis().max(1) as u64, Relaxed);
        let sample = ttfb.as_secs_f64();
        let tau = decay.as_secs_f64().max(1e-3);
        let dt = now.saturating_sub(self.at.swap(now, Relaxed)) as f64 / 1000.0;
        let w = (-dt / tau).exp();
        // Peak EWMA (Finagle/Linkerd): jumps up to a slower sample at once, decays slowly.
        self.peak.update(|e| {
            if sample > e {
                sample
            } else {
                e * w + sample * (1.0 - w)
            }
        });
        let bucket = TTFB_BUCKETS.partition_point(|&b| b < sample);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(ttfb.as_micros() as u64, Relaxed);
    }

    /// Peak EWMA, seconds, decayed by the time since the last sample (as
    /// Linkerd's decays on read): an origin that stops being picked looks
    /// cheaper over time and gets tried again, instead of being starved by
    /// one old slow sample.
    pub fn peak(&self) -> f64 {
        let age = now_ms().saturating_sub(self.at.load(Relaxed)) as f64;
        self.peak.get() * (-age / self.decay_ms.load(Relaxed) as f64).exp()
    }

    /// Samples per bucket so far (not cumulative), in [`TTFB_BUCKETS`]
    /// order plus the overflow bucket.
    pub fn bucket_counts(&self) -> [u64; TTFB_BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// Sum of every sample so far, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_bucket_and_the_sum() {
        let t = Ttfb::default();
        let decay = Duration::from_secs(10);
        t.observe(Duration::from_micros(100), now_ms(), decay);
        t.observe(Duration::from_millis(4), now_ms(), decay);
        t.observe(Duration::from_millis(5), now_ms(), decay);
        t.observe(Duration::from_secs(60), now_ms(), decay);
        let b = t.bucket_counts();
        assert_eq!(b[0], 1, "0.1 ms ≤ 0.25 ms");
        assert_eq!(b[5], 2, "4 and 5 ms ≤ 5 ms (bounds are inclusive)");
        assert_eq!(b[TTFB_BUCKETS.len()], 1, "60 s is past every bound");
        assert_eq!(b.iter().sum::<u64>(), 4);
        assert!((t.sum_seconds() - 60.0091).abs() < 1e-9);
        assert!(t.peak() > 50.0, "the peak jumps to the slowest sample");
    }
}
