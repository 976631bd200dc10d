//! The weighted four-tier policy of the original system, made safe under load.
//!
//! Every usable origin is scored 0–100 (`origins::Origin::score`, the
//! original formula on fresh inputs) and placed in a tier with hysteresis;
//! traffic goes to the lowest tier. Inside that tier the pick is a power of
//! two choices on a live cost, never argmin and never uniform: two
//! capacity-weighted candidates, and the one with the lower
//! `(in_flight + 1) × ttfb_ewma / capacity` wins. Scores built on once-a-second
//! load reports would otherwise send every request of that second to the
//! same "best" origin (herding); the live in-flight count breaks the tie
//! request by request.

use super::{weighted_random, Policy};
use crate::config::Selection;
use crate::origins::Origin;
use std::sync::Arc;

/// The tier policy (the default).
pub struct Tier;

/// The live cost compared inside a tier.
pub(crate) fn live_cost(o: &Origin) -> f64 {
    let latency = o.ttfb_ewma().max(0.001);
    (o.inflight() as f64 + 1.0) * latency / o.capacity().max(1e-9)
}

impl Policy for Tier {
    fn pick(
        &self,
        origins: &[Arc<Origin>],
        cfg: &Selection,
        _seed: u64,
        usable: &dyn Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let best = (0..origins.len())
            .filter(|&i| usable(i))
            .map(|i| origins[i].rate_tier(cfg))
            .min()?;
        let in_tier = |i: usize| usable(i) && origins[i].score_and_tier().1 == best;
        let a = weighted_random(origins, &in_tier, rng)?;
        let b = weighted_random(origins, &|i| i != a && in_tier(i), rng);
        Some(match b {
            Some(b) if live_cost(&origins[b]) < live_cost(&origins[a]) => b,
            _ => a,
        })
    }
}
