//! An origin's recent response time for the tier score: the median time to
//! first byte over its last second of responses, read from the same
//! histogram `/prometheus` exports (so the score, `/metrics` and Grafana
//! agree).
//!
//! A median over a window rather than an EWMA: a machine-wide stall ends
//! with a burst of slow samples at every origin, and a time-weighted EWMA
//! gives the first of them a weight that depends on which origin happened to
//! answer first, enough to push one origin a tier up for nothing. A median
//! over a second ignores a burst that is a minority of the window. When an
//! origin gets few requests (it is being avoided and only probed) the window
//! grows, up to [`MAX_TICKS`], until it holds [`MIN_SAMPLES`].

use crate::origins::{Origin, TTFB_BUCKETS};
use std::collections::VecDeque;

/// Buckets of the TTFB histogram, overflow included.
type Counts = [u64; TTFB_BUCKETS.len() + 1];

/// Rater ticks in the normal window (a second at 100 ms a tick).
pub const BASE_TICKS: usize = 10;
/// The most ticks the window grows to when samples are scarce.
pub const MAX_TICKS: usize = 50;
/// Samples the window grows to hold, if it can.
pub const MIN_SAMPLES: u64 = 8;

/// The cumulative histogram at each of the last [`MAX_TICKS`] ticks.
#[derive(Default)]
pub struct LatencyWindow {
    /// The cumulative histogram and its total at each tick.
    ticks: VecDeque<(Counts, u64)>,
}

impl LatencyWindow {
    /// Records the origin's histogram now and returns the median response
    /// time over the window, seconds, and how many samples it holds
    /// (`None` with no sample in it).
    pub fn update(&mut self, o: &Origin) -> Option<(f64, u64)> {
        self.push(o.ttfb.bucket_counts())
    }

    fn push(&mut self, now: Counts) -> Option<(f64, u64)> {
        if self.ticks.len() > MAX_TICKS {
            self.ticks.pop_front();
        }
        let total = now.iter().sum::<u64>();
        self.ticks.push_back((now, total));
        // How far back the window reaches, from the totals alone; then one
        // subtraction of histograms.
        let newest = self.ticks.len() - 1;
        let mut back = newest.min(BASE_TICKS);
        while back < newest && total - self.ticks[newest - back].1 < MIN_SAMPLES {
            back += 1;
        }
        let then = &self.ticks[newest - back].0;
        let delta: Counts = std::array::from_fn(|i| now[i].saturating_sub(then[i]));
        Some((median(&delta)?, delta.iter().sum()))
    }
}

/// The median of a histogram, interpolated inside its bucket (the overflow
/// bucket counts as its lower bound).
pub fn median(counts: &Counts) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let half = total as f64 / 2.0;
    let mut below = 0.0;
    for (i, &n) in counts.iter().enumerate() {
        let n = n as f64;
        if below + n >= half && n > 0.0 {
            let lo = if i == 0 { 0.0 } else { TTFB_BUCKETS[i - 1] };
            let Some(&hi) = TTFB_BUCKETS.get(i) else {
                return Some(lo);
            };
            return Some(lo + (hi - lo) * (half - below) / n);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_at(pairs: &[(usize, u64)]) -> Counts {
        let mut c = [0; TTFB_BUCKETS.len() + 1];
        for &(i, n) in pairs {
            c[i] = n;
        }
        c
    }

    #[test]
    fn the_median_is_interpolated_inside_its_bucket() {
        // 10 samples in (2 ms, 3 ms]: the median is half way.
        let m = median(&counts_at(&[(4, 10)])).unwrap();
        assert!((m - 0.0025).abs() < 1e-9, "{m}");
        // A minority of very slow samples does not move it out of its bucket.
        let m = median(&counts_at(&[(4, 10), (15, 4)])).unwrap();
        assert!((0.002..=0.003).contains(&m), "{m}");
        assert_eq!(median(&counts_at(&[])), None);
        assert_eq!(median(&counts_at(&[(19, 3)])), Some(10.0), "overflow");
    }

    #[test]
    fn the_window_is_a_second_and_grows_when_samples_are_scarce() {
        let mut w = LatencyWindow::default();
        let mut cum = counts_at(&[]);
        // Two seconds of fast responses, then a second of slow ones.
        for _ in 0..20 {
            cum[2] += 10;
            w.push(cum);
        }
        for _ in 0..10 {
            cum[9] += 10;
            w.push(cum);
        }
        let (m, n) = w.push(cum).unwrap();
        assert!(m > 0.015, "the last second was slow: {m}");
        assert_eq!(n, 90, "a second's samples");
        // Then only two samples a second, fast again: the window grows and
        // the fast probes take over within a few seconds.
        let mut m = 1.0;
        for t in 0..40 {
            if t % 5 == 0 {
                cum[2] += 1;
            }
            m = w.push(cum).unwrap().0;
        }
        assert!(m < 0.001, "the probes, not the old slow second: {m}");
    }
}
