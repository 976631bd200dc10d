//! The tier model: an origin's 0–100 load score from five weighted inputs,
//! each measured against the rest of the fleet, and the tier it puts the
//! origin in.
//!
//! Relative inputs are what make the tiers separate on real loads: on a
//! fleet of healthy origins every input is near zero whatever the traffic,
//! an origin that degrades scores what it is doing worse than its peers, and
//! a stall that slows every origin alike moves no score (so it reshuffles
//! no traffic). The references are the fleet's lower median for latency,
//! CPU and memory (with two origins, the better one; an outlier never drags
//! the reference) and the fleet's mean for in-flight per unit of capacity.
//! Errors are absolute: a failure rate needs no peer to be bad.

use super::settings::{Scales, Selection};

/// The score's inputs, in display order.
pub const INPUTS: [&str; 5] = ["latency", "queue", "errors", "cpu", "memory"];

/// What the rater measured of one origin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Median time to first byte over the recent window, seconds.
    pub latency: Option<f64>,
    /// Requests in flight per unit of capacity, smoothed over about half a second.
    pub queue: f64,
    /// Share of recent attempts that failed.
    pub error_ratio: f64,
    /// Reported CPU utilization, 0–1.
    pub cpu: f64,
    /// Reported memory utilization, 0–1.
    pub memory: f64,
}

/// The fleet's references, over the origins taking traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fleet {
    /// Lower median of the origins' latencies, seconds (`None`: no samples yet).
    pub latency: Option<f64>,
    /// Mean in-flight per unit of capacity.
    pub queue: f64,
    /// Lower median of reported CPU utilization.
    pub cpu: f64,
    /// Lower median of reported memory utilization.
    pub memory: f64,
}

impl Fleet {
    /// The references of these origins' signals.
    pub fn of(signals: &[Signals]) -> Fleet {
        let lower_median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len().saturating_sub(1) / 2).copied()
        };
        let n = signals.len().max(1) as f64;
        Fleet {
            latency: lower_median(signals.iter().filter_map(|s| s.latency).collect()),
            queue: signals.iter().map(|s| s.queue).sum::<f64>() / n,
            cpu: lower_median(signals.iter().map(|s| s.cpu).collect()).unwrap_or(0.0),
            memory: lower_median(signals.iter().map(|s| s.memory).collect()).unwrap_or(0.0),
        }
    }
}

/// Each input normalised to 0–1, in [`INPUTS`] order.
pub fn inputs(s: &Signals, fleet: &Fleet, scales: &Scales) -> [f64; 5] {
    let clamp = |x: f64| {
        if x.is_finite() {
            x.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let latency = match (s.latency, fleet.latency) {
        (Some(own), Some(reference)) => {
            let reference = reference.max(scales.latency_floor.as_secs_f64());
            (own / reference - 1.0) / (scales.latency_ratio - 1.0)
        }
        _ => 0.0,
    };
    let queue = (s.queue - fleet.queue) / (scales.queue_excess * (fleet.queue + 1.0));
    [
        clamp(latency),
        clamp(queue),
        clamp(s.error_ratio / scales.error_ratio),
        clamp((s.cpu - fleet.cpu) / scales.cpu_excess),
        clamp((s.memory - fleet.memory) / scales.memory_excess),
    ]
}

/// Each input's points (weight × input × 100), in [`INPUTS`] order; they
/// sum to the score.
pub fn points(s: &Signals, fleet: &Fleet, cfg: &Selection) -> [f64; 5] {
    let w = cfg.weights.as_array();
    let x = inputs(s, fleet, &cfg.scales);
    std::array::from_fn(|i| 100.0 * w[i] * x[i])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Signals {
        Signals {
            latency: Some(0.002),
            queue: 2.0,
            error_ratio: 0.0,
            cpu: 0.2,
            memory: 0.3,
        }
    }

    fn score(s: &Signals, fleet: &[Signals]) -> f64 {
        points(s, &Fleet::of(fleet), &Selection::default())
            .iter()
            .sum()
    }

    #[test]
    fn a_healthy_fleet_scores_zero_whatever_its_traffic() {
        let mut busy = healthy();
        busy.queue = 40.0;
        busy.cpu = 0.7;
        let fleet = [busy, busy, busy];
        assert_eq!(score(&busy, &fleet), 0.0);
        assert_eq!(score(&healthy(), &[healthy(); 3]), 0.0);
    }

    #[test]
    fn each_input_raises_the_score_of_the_origin_that_degrades() {
        type Degrade = (&'static str, fn(&mut Signals));
        let degrade: [Degrade; 5] = [
            ("latency", |s| s.latency = Some(0.006)),
            ("queue", |s| s.queue = 8.0),
            ("errors", |s| s.error_ratio = 0.05),
            ("cpu", |s| s.cpu = 0.9),
            ("memory", |s| s.memory = 0.8),
        ];
        for (i, (name, f)) in degrade.iter().enumerate() {
            let mut bad = healthy();
            f(&mut bad);
            let fleet = [healthy(), healthy(), bad];
            let p = points(&bad, &Fleet::of(&fleet), &Selection::default());
            assert!(p[i] > 0.0, "{name}: {p:?}");
            assert_eq!(
                p.iter().sum::<f64>(),
                p[i],
                "{name} moves only its own input"
            );
            assert_eq!(score(&healthy(), &fleet), 0.0, "{name}: peers unaffected");
        }
    }

    #[test]
    fn tiers_separate_with_one_slow_origin() {
        let s = Selection::default();
        for extra in [0.004, 0.020] {
            let mut slow = healthy();
            slow.latency = Some(0.002 + extra);
            // Latency queues requests: in flight grows with response time.
            slow.queue = 2.0 * (0.002 + extra) / 0.002;
            let fleet = [healthy(), healthy(), slow];
            assert!(
                tier_with_hysteresis(score(&slow, &fleet), 0, &s) >= 1,
                "+{extra}s"
            );
            assert_eq!(tier_with_hysteresis(score(&healthy(), &fleet), 0, &s), 0);
        }
    }

    #[test]
    fn a_stall_that_hits_every_origin_alike_moves_no_score() {
        let mut stalled = healthy();
        stalled.latency = Some(0.280);
        stalled.queue = 60.0;
        assert_eq!(score(&stalled, &[stalled; 3]), 0.0);
    }

    #[test]
    fn sub_millisecond_differences_are_noise() {
        let mut a = healthy();
        a.latency = Some(0.0003);
        let mut b = healthy();
        b.latency = Some(0.0009);
        assert_eq!(score(&b, &[a, a, b]), 0.0);
    }

    #[test]
    fn full_cpu_alone_lands_an_origin_in_tier_1() {
        let s = Selection::default();
        let mut hot = healthy();
        hot.cpu = 1.0;
        let fleet = [healthy(), healthy(), hot];
        assert_eq!(tier_with_hysteresis(score(&hot, &fleet), 0, &s), 1);
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
}
