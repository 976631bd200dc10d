//! The tier policy's view of each origin: its 0–100 load score, broken down
//! by input, its tier (with hysteresis), and what the score was built on.
//! One writer, the [`Rater`](super::Rater), refreshes every rating ten times
//! a second; picks, `/metrics`, `/prometheus` and the dashboard only read.

use super::latency_window::{LatencyWindow, MIN_SAMPLES};
use super::score::{points, tier_with_hysteresis, Fleet, Signals};
use super::Selection;
use crate::atomic_f64::AtomicF64;
use crate::origins::Origin;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The time over which the request rate and error ratio are smoothed, seconds.
const RATE_WINDOW_S: f64 = 1.0;
/// The time over which the in-flight count is smoothed, seconds.
const QUEUE_WINDOW_S: f64 = 0.5;

/// One origin's rating.
#[derive(Default)]
pub struct Rating {
    score: AtomicF64,
    tier: AtomicU8,
    /// Each input's points, in [`INPUTS`](super::INPUTS) order.
    points: [AtomicF64; 5],
    /// Median recent time to first byte, seconds (0 before any response).
    latency: AtomicF64,
    /// That latency over the fleet's (1 when it is the reference or unknown).
    latency_ratio: AtomicF64,
    /// Requests per second, smoothed over about [`RATE_WINDOW_S`].
    rate: AtomicF64,
    /// Failed attempts per second, smoothed like `rate`.
    fail_rate: AtomicF64,
    /// The rater's own bookkeeping.
    tracker: Mutex<Tracker>,
}

/// What the rater keeps between rounds for one origin.
#[derive(Default)]
struct Tracker {
    /// Request and error counts and the time (ms) at the last round.
    last: Option<(u64, u64, u64)>,
    latency: LatencyWindow,
    /// The last latency measured, kept while no new response arrives.
    latency_held: Option<f64>,
    queue: f64,
}

impl Rating {
    /// The tier, 0 (lightest) to 3.
    pub fn tier(&self) -> u8 {
        self.tier.load(Relaxed)
    }
    /// The score, 0–100.
    pub fn score(&self) -> f64 {
        self.score.get()
    }
    /// Each input's points, in [`INPUTS`](super::INPUTS) order.
    pub fn points(&self) -> [f64; 5] {
        std::array::from_fn(|i| self.points[i].get())
    }
    /// The request rate, requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.rate.get()
    }
    /// Median recent time to first byte, seconds.
    pub fn latency(&self) -> f64 {
        self.latency.get()
    }
    /// Recent latency over the fleet's reference (at least 1).
    pub fn latency_ratio(&self) -> f64 {
        self.latency_ratio.get()
    }
    /// Share of recent attempts that failed.
    pub fn error_ratio(&self) -> f64 {
        let rate = self.rate.get();
        if rate > 1e-6 {
            (self.fail_rate.get() / rate).min(1.0)
        } else {
            0.0
        }
    }

    /// Measures the origin at `now_ms`: request rate, error ratio, windowed
    /// latency, smoothed in-flight per unit of capacity, and its reported
    /// CPU and memory. Only the [`Rater`](super::Rater) calls this.
    pub fn measure(&self, o: &Origin, now_ms: u64) -> Signals {
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, errors) = (o.requests(), o.errors());
        if let Some((n, e, at)) = t.last {
            let dt = now_ms.saturating_sub(at) as f64 / 1000.0;
            if dt > 0.0 {
                let sent = requests.saturating_sub(n);
                let failed = errors.saturating_sub(e);
                let w = (-dt / RATE_WINDOW_S).exp();
                self.rate.update(|r| r * w + sent as f64 / dt * (1.0 - w));
                self.fail_rate
                    .update(|r| r * w + failed as f64 / dt * (1.0 - w));
                let wq = (-dt / QUEUE_WINDOW_S).exp();
                let queue = o.inflight() as f64 / o.capacity().max(1e-9);
                t.queue = t.queue * wq + queue * (1.0 - wq);
            }
        }
        t.last = Some((requests, errors, now_ms));
        // A median of a few samples is noise (a cold connection, a page
        // fault): it counts once the window holds enough of them. An origin
        // already avoided gets only probes, and they are the only news of it.
        if let Some((median, samples)) = t.latency.update(o) {
            if samples >= MIN_SAMPLES || self.tier() > 0 {
                t.latency_held = Some(median);
            }
        }
        self.latency.set(t.latency_held.unwrap_or(0.0));
        Signals {
            latency: t.latency_held,
            queue: t.queue,
            error_ratio: self.error_ratio(),
            cpu: o.cpu(),
            memory: o.mem(),
        }
    }

    /// Scores `signals` against the fleet and moves the tier. Only the
    /// [`Rater`](super::Rater) calls this.
    pub fn rate(&self, signals: &Signals, fleet: &Fleet, s: &Selection) {
        let p = points(signals, fleet, s);
        for (slot, v) in self.points.iter().zip(p) {
            slot.set(v);
        }
        let ratio = match (signals.latency, fleet.latency) {
            (Some(own), Some(reference)) => {
                (own / reference.max(s.scales.latency_floor.as_secs_f64())).max(1.0)
            }
            _ => 1.0,
        };
        self.latency_ratio.set(ratio);
        let score = p.iter().sum::<f64>();
        self.score.set(score);
        self.tier
            .store(tier_with_hysteresis(score, self.tier(), s), Relaxed);
    }
}

/// One rating round at `now_ms`: measures every origin, takes the fleet's
/// references from those taking traffic, and rates each against them
/// (`ratings` in the same order as `origins`).
pub fn rate_round(origins: &[Arc<Origin>], ratings: &[Arc<Rating>], s: &Selection, now_ms: u64) {
    let signals: Vec<Signals> = origins
        .iter()
        .zip(ratings)
        .map(|(o, r)| r.measure(o, now_ms))
        .collect();
    let peers: Vec<Signals> = signals
        .iter()
        .zip(origins)
        .filter(|(_, o)| o.eligible())
        .map(|(s, _)| *s)
        .collect();
    let fleet = Fleet::of(&peers);
    for (r, sig) in ratings.iter().zip(&signals) {
        r.rate(sig, &fleet, s);
    }
}

/// Every origin's rating, by address; kept across discovery generations so
/// that a new selector starts from the current tiers.
#[derive(Default)]
pub struct Ratings {
    map: Mutex<HashMap<SocketAddr, Arc<Rating>>>,
}

impl Ratings {
    /// The rating of the origin at `addr`, created (tier 0) if new.
    pub fn of(&self, addr: SocketAddr) -> Arc<Rating> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr).or_default().clone()
    }

    /// The rating of the origin at `addr`, if it has one.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<Rating>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(addr).cloned()
    }

    /// Forgets the ratings of origins not in `known`.
    pub fn retain(&self, known: &[Arc<Origin>]) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|addr, _| known.iter().any(|o| o.addr == *addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origins::Ejection;
    use std::time::Duration;

    fn origin() -> Origin {
        Origin::new("127.0.0.1:1".parse().unwrap(), "static", 1.0)
    }

    #[test]
    fn the_rate_comes_from_the_request_count() {
        let o = origin();
        let r = Rating::default();
        r.measure(&o, 1_000);
        for _ in 0..100 {
            o.start_request();
        }
        // 100 requests in 0.1 s is 1000/s; smoothed over a second it shows about a tenth.
        r.measure(&o, 1_100);
        let first = r.requests_per_sec();
        assert!((90.0..100.0).contains(&first), "{first}");
        for t in 1..=30 {
            for _ in 0..100 {
                o.start_request();
            }
            r.measure(&o, 1_100 + t * 100);
        }
        let steady = r.requests_per_sec();
        assert!((950.0..=1000.0).contains(&steady), "{steady}");
        // A quiet second brings it down.
        r.measure(&o, 1_100 + 31 * 100 + 1000);
        assert!(r.requests_per_sec() < 0.4 * steady);
    }

    #[test]
    fn a_few_slow_first_samples_do_not_count_until_the_window_holds_enough() {
        let o = origin();
        let r = Rating::default();
        let decay = Duration::from_secs(10);
        r.measure(&o, 0);
        for _ in 0..3 {
            o.observe_ttfb(Duration::from_millis(30), 100, decay);
        }
        assert_eq!(r.measure(&o, 100).latency, None, "3 samples are noise");
        for _ in 0..10 {
            o.observe_ttfb(Duration::from_millis(1), 200, decay);
        }
        let l = r.measure(&o, 200).latency.unwrap();
        assert!(l <= 0.001, "13 samples, mostly fast: {l}");
    }

    #[test]
    fn errors_and_latency_follow_the_origin_within_seconds() {
        let o = origin();
        let r = Rating::default();
        let cfg = Ejection::default();
        let mut now = 0;
        let mut signals = Signals::default();
        // Two seconds at 100 requests a second, 10 ms each, one in ten failing.
        for _ in 0..20 {
            now += 100;
            for k in 0..10 {
                o.start_request();
                o.observe_ttfb(Duration::from_millis(10), now, Duration::from_secs(10));
                o.record_outcome(k != 0, &cfg);
                o.end_request();
            }
            signals = r.measure(&o, now);
        }
        let latency = signals.latency.unwrap();
        assert!((0.0075..=0.010).contains(&latency), "{latency}");
        assert!((0.07..=0.13).contains(&signals.error_ratio), "{signals:?}");
    }
}
