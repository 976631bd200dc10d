//! The weighted four-tier policy of the original system, made safe under load.
//!
//! Every origin is scored 0–100 (the original formula on fresh inputs) and
//! placed in a tier with hysteresis by the [`Rater`](super::Rater), ten
//! times a second; traffic goes to the lowest tier among usable origins. Inside that tier the pick is a power of
//! two choices on a live cost, never argmin and never uniform: two
//! capacity-weighted candidates, and the one with the clearly lower
//! `(in_flight + 1) / capacity × (1 + ttfb_ewma / response_time_ceiling)`
//! wins. Scores built on once-a-second load reports would otherwise send
//! every request of that second to the same "best" origin (herding); the
//! live in-flight count breaks the tie request by request.
//!
//! "Clearly": costs within [`TIE`] of each other are a tie, and a tie goes
//! to the first (capacity-weighted random) candidate. With two origins in a
//! tier both are always compared, and a strict comparison of two idle
//! origins' sub-millisecond latencies would be argmin on noise, starving one.

use super::Selection;
use super::{Pick, Policy, Rating};
use crate::origins::Origin;

/// The tier policy (the default).
pub struct Tier;

/// Costs closer than this ratio are a tie.
pub const TIE: f64 = 0.05;

/// The live cost compared inside a tier: in-flight count now, latency as
/// of the last rating (an EWMA over seconds: a tenth of a second old is fresh).
pub(crate) fn live_cost(o: &Origin, r: &Rating, cfg: &Selection) -> f64 {
    let latency = 1.0 + r.ttfb() / cfg.ceilings.response_time.as_secs_f64();
    (o.inflight() as f64 + 1.0) / o.capacity().max(1e-9) * latency
}

impl Policy for Tier {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        let (origins, ratings, cfg) = (p.origins, p.ratings, p.cfg);
        let mut candidates = p.candidates(|_| true);
        let best = candidates.indices().map(|i| ratings[i].tier()).min()?;
        candidates.retain(|i| ratings[i].tier() == best);
        let a = candidates.draw(p.rng, None)?;
        let b = candidates.draw(p.rng, Some(a));
        Some(match b {
            Some(b)
                if live_cost(&origins[b], &ratings[b], cfg)
                    < live_cost(&origins[a], &ratings[a], cfg) * (1.0 - TIE) =>
            {
                b
            }
            _ => a,
        })
    }
}
