//! Power of two choices on peak-EWMA cost, as Finagle and Linkerd do.

use super::{Pick, Policy};
use crate::origins::Origin;

/// Two capacity-weighted random candidates; the one with the lower
/// `peak_ewma_latency × (in_flight + 1) / capacity` wins.
pub struct P2cEwma;

/// The cost p2c_ewma compares.
pub(crate) fn peak_cost(o: &Origin) -> f64 {
    // An origin with no sample yet costs as if it answered in 1 ms, so it gets tried.
    let peak = o.ttfb.peak();
    let latency = if peak > 0.0 { peak } else { 0.001 };
    latency * (o.inflight() as f64 + 1.0) / o.capacity().max(1e-9)
}

impl Policy for P2cEwma {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        let candidates = p.candidates(|_| true);
        let a = candidates.draw(p.rng, None)?;
        let b = candidates.draw(p.rng, Some(a));
        Some(match b {
            Some(b) if peak_cost(&p.origins[b]) < peak_cost(&p.origins[a]) => b,
            _ => a,
        })
    }
}
