//! The tier policy's view of each origin: its 0–100 load score, its tier
//! (with hysteresis) and the request rate the score is built on. One
//! writer, the [`Rater`](super::Rater), refreshes every rating a few times
//! a second; picks, `/metrics`, `/prometheus` and the dashboard only read.

use super::Selection;
use crate::atomic_f64::AtomicF64;
use crate::origins::Origin;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The time over which the request rate is smoothed, seconds.
const RATE_WINDOW_S: f64 = 1.0;

/// One origin's rating.
#[derive(Default)]
pub struct Rating {
    score: AtomicF64,
    tier: AtomicU8,
    /// Requests per second, smoothed over about [`RATE_WINDOW_S`].
    rate: AtomicF64,
    /// The origin's time-to-first-byte EWMA (decayed), seconds. Its time
    /// constant is seconds long, so a value at most one rating old is as
    /// good as a fresh read, and a pick saves a clock read and an `exp`.
    ttfb: AtomicF64,
    /// The origin's request count and the time (ms) at the last update.
    last: Mutex<Option<(u64, u64)>>,
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
    /// The request rate the score used, requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.rate.get()
    }
    /// The time-to-first-byte EWMA the score used, seconds.
    pub fn ttfb(&self) -> f64 {
        self.ttfb.get()
    }

    /// Refreshes the rating from the origin's live figures at `now_ms`:
    /// the request rate from its request count, then the score, then the
    /// tier. Only the [`Rater`](super::Rater) calls this.
    pub fn update(&self, o: &Origin, s: &Selection, now_ms: u64) {
        let requests = o.requests();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, at)) = *last {
            let dt = now_ms.saturating_sub(at) as f64 / 1000.0;
            if dt > 0.0 {
                let sample = requests.saturating_sub(n) as f64 / dt;
                let w = (-dt / RATE_WINDOW_S).exp();
                self.rate.update(|r| r * w + sample * (1.0 - w));
            }
        }
        *last = Some((requests, now_ms));
        drop(last);
        let ttfb = o.ttfb.ewma();
        self.ttfb.set(ttfb);
        let score = score(o, self.rate.get(), ttfb, s);
        self.score.set(score);
        self.tier
            .store(tier_with_hysteresis(score, self.tier(), s), Relaxed);
    }
}

/// The 0–100 load score of the original system, on fresh inputs (`rate`
/// in requests per second, `ttfb` in seconds):
/// `w.cpu·cpu + w.memory·mem + w.requests·rate + w.streams·in_flight + w.response_time·ttfb`,
/// each input normalised to 0–1 by its ceiling (rate and streams ceilings scale with capacity).
pub fn score(o: &Origin, rate: f64, ttfb: f64, s: &Selection) -> f64 {
    let (w, c) = (s.weights, s.ceilings);
    let cap = o.capacity().max(1e-9);
    let req = rate / (c.requests_per_sec * cap);
    let streams = o.inflight() as f64 / (c.streams * cap);
    let resp = ttfb / c.response_time.as_secs_f64();
    let clamp = |x: f64| x.clamp(0.0, 1.0);
    100.0
        * (w.cpu * clamp(o.cpu())
            + w.memory * clamp(o.mem())
            + w.requests * clamp(req)
            + w.streams * clamp(streams)
            + w.response_time * clamp(resp))
}

/// The tier of `score` for an origin now in tier `prev`: it leaves its tier
/// only once the score is `hysteresis` points past the tier's bounds, so an
/// origin near a bound does not flap.
pub fn tier_with_hysteresis(score: f64, prev: u8, s: &Selection) -> u8 {
    let b = s.tier_bounds;
    let raw = b.iter().position(|bound| score < *bound).unwrap_or(3) as u8;
    if raw == prev {
        return prev;
    }
    let lower = if prev == 0 {
        f64::NEG_INFINITY
    } else {
        b[prev as usize - 1]
    };
    let upper = if prev >= 3 {
        f64::INFINITY
    } else {
        b[prev as usize]
    };
    if score >= lower - s.hysteresis && score < upper + s.hysteresis {
        prev
    } else {
        raw
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
    use cdn_types::LoadReport;

    fn origin() -> Origin {
        Origin::new("127.0.0.1:1".parse().unwrap(), "static", 1.0)
    }

    #[test]
    fn score_follows_the_original_formula() {
        let o = origin();
        let s = Selection::default();
        o.set_load(&LoadReport {
            cpu_utilization: 0.5,
            mem_utilization: 1.0,
            ..Default::default()
        });
        // 100 * (0.30*0.5 + 0.25*1.0) = 40
        assert!((score(&o, 0.0, 0.0, &s) - 40.0).abs() < 1e-9);
        for _ in 0..50 {
            o.start_request();
        }
        // + 100 * 0.15 * 50/100 = 7.5
        assert!((score(&o, 0.0, 0.0, &s) - 47.5).abs() < 1e-9);
        // + 100 * 0.20 * 250/500 = 10
        assert!((score(&o, 250.0, 0.0, &s) - 57.5).abs() < 1e-9);
    }

    #[test]
    fn tiers_have_hysteresis() {
        let s = Selection::default(); // bounds 25/50/75, hysteresis 5
        assert_eq!(tier_with_hysteresis(27.0, 0, &s), 0, "inside 25+5");
        assert_eq!(tier_with_hysteresis(30.0, 0, &s), 1, "past the band");
        assert_eq!(tier_with_hysteresis(24.0, 1, &s), 1, "inside 25-5");
        assert_eq!(tier_with_hysteresis(18.0, 1, &s), 0, "moves down");
        assert_eq!(tier_with_hysteresis(90.0, 0, &s), 3, "jumps tiers");
    }

    #[test]
    fn the_rate_comes_from_the_request_count() {
        let o = origin();
        let r = Rating::default();
        let s = Selection::default();
        r.update(&o, &s, 1_000);
        for _ in 0..100 {
            o.start_request();
        }
        // 100 requests in 0.1 s is 1000/s; smoothed over a second it shows about a tenth.
        r.update(&o, &s, 1_100);
        let first = r.requests_per_sec();
        assert!((90.0..100.0).contains(&first), "{first}");
        for t in 1..=30 {
            for _ in 0..100 {
                o.start_request();
            }
            r.update(&o, &s, 1_100 + t * 100);
        }
        let steady = r.requests_per_sec();
        assert!((950.0..=1000.0).contains(&steady), "{steady}");
        // A quiet second brings it down.
        r.update(&o, &s, 1_100 + 31 * 100 + 1000);
        assert!(r.requests_per_sec() < 0.4 * steady);
    }
}
