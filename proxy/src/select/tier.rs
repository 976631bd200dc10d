//! The weighted four-tier policy of the original system, made to win when an
//! origin degrades.
//!
//! Every origin is scored 0–100 on inputs measured against the fleet
//! (`score.rs`) and placed in a tier with hysteresis by the
//! [`Rater`](super::Rater), ten times a second; traffic goes to the lowest
//! tier among usable origins. Inside that tier the pick is a power of two
//! choices on a live cost, never argmin and never uniform: two
//! capacity-weighted candidates, and the one with the clearly lower
//! `(in_flight + 1) / capacity × max(1, latency_ratio / 1.5)` wins
//! (`latency_ratio`: its recent response time over the fleet's). Scores built on
//! once-a-second load reports would otherwise send every request of that
//! second to the same "best" origin (herding); the live in-flight count
//! breaks the tie request by request.
//!
//! "Clearly": costs within [`TIE`] of each other are a tie, and a tie goes
//! to the first (capacity-weighted random) candidate, so two idle origins
//! are not compared on noise.
//!
//! An origin in a higher tier gets no traffic, so nothing would tell the
//! rater when it recovers: every `probe_every` the rater marks one of them,
//! and the next pick sends it one request.
//!
//! The pick reads the rater's [`TierView`](super::TierView) and draws from
//! it by binary search: its cost does not grow with the fleet. Without a
//! view (no round rated yet) it scans. The first candidate is drawn from a
//! low-discrepancy (golden-ratio) sequence rather than at random, so that
//! equal origins take turns instead of sharing by chance.

use super::{Pick, Policy, Rating, TierView};
use crate::origins::Origin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The tier policy (the default).
#[derive(Default)]
pub struct Tier {
    /// Counts picks, for the first candidate's low-discrepancy draw.
    picks: AtomicU64,
}

/// The golden ratio's fractional part: `k × PHI mod 1` spreads any run of
/// consecutive picks evenly over [0, 1).
const PHI: f64 = 0.618_033_988_749_894_9;

/// Costs closer than this ratio are a tie.
pub const TIE: f64 = 0.05;

/// Draws of a candidate that may land on an unusable origin (tried by this
/// request, or gone down since the view was built) before the pick scans.
const DRAWS: usize = 4;

/// Latency ratios up to this are noise inside a tier: healthy origins
/// differ by tens of percent from one second to the next, and with nothing
/// in flight a strict comparison would starve the one that is a little slower.
pub const LATENCY_NOISE: f64 = 1.5;

/// The live cost compared inside a tier: in-flight count now, latency (its
/// ratio to the fleet's, past [`LATENCY_NOISE`]) as of the last rating.
pub(crate) fn live_cost(o: &Origin, r: &Rating) -> f64 {
    let latency = (r.latency_ratio() / LATENCY_NOISE).max(1.0);
    (o.inflight() as f64 + 1.0) / o.capacity().max(1e-9) * latency
}

impl Tier {
    /// The pick from the rater's view; `None` when the view has no usable
    /// candidate (then the caller scans).
    fn pick_from_view(&self, view: &TierView, p: &mut Pick<'_>) -> Option<usize> {
        if let Some(i) = view.take_probe() {
            if (p.usable)(i) {
                return Some(i);
            }
        }
        let tier = view.lowest()?;
        // The first candidate comes from a low-discrepancy sequence, the
        // second at random: equal origins then take turns (their shares move
        // as little from one second to the next as round robin's), and a
        // clearly cheaper second candidate still wins.
        let k = self.picks.fetch_add(1, Relaxed);
        let first = std::iter::once((k as f64 * PHI).fract())
            .chain(std::iter::repeat_with(|| p.rng.f64()))
            .take(DRAWS)
            .filter_map(|u| tier.draw_at(u, None))
            .find(|&(i, _)| (p.usable)(i))?;
        let second = if tier.len() > 1 {
            (0..DRAWS)
                .filter_map(|_| tier.draw(p.rng, Some(first.1)))
                .find(|&(i, _)| (p.usable)(i))
        } else {
            None
        };
        Some(self.better(first.0, second.map(|s| s.0), p))
    }

    /// `b` if its live cost is clearly lower than `a`'s, else `a`.
    fn better(&self, a: usize, b: Option<usize>, p: &Pick<'_>) -> usize {
        let (o, r) = (p.origins, p.ratings);
        match b {
            Some(b) if live_cost(&o[b], &r[b]) < live_cost(&o[a], &r[a]) * (1.0 - TIE) => b,
            _ => a,
        }
    }
}

impl Policy for Tier {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        if let Some(i) = p.view.and_then(|view| self.pick_from_view(view, p)) {
            return Some(i);
        }
        let ratings = p.ratings;
        let mut candidates = p.candidates(|_| true);
        let best = candidates.indices().map(|i| ratings[i].tier()).min()?;
        candidates.retain(|i| ratings[i].tier() == best);
        let a = candidates.draw(p.rng, None)?;
        let b = candidates.draw(p.rng, Some(a));
        Some(self.better(a, b, p))
    }
}
