//! Power of two choices on peak-EWMA cost, as Finagle and Linkerd do.

use super::{weighted_random, Policy};
use crate::config::Selection;
use crate::origins::Origin;
use std::sync::Arc;

/// Two capacity-weighted random candidates; the one with the lower
/// `peak_ewma_latency × (in_flight + 1) / capacity` wins.
pub struct P2cEwma;

/// The cost p2c_ewma compares.
pub(crate) fn peak_cost(o: &Origin) -> f64 {
    // An origin with no sample yet costs as if it answered in 1 ms, so it gets tried.
    let latency = if o.peak_ewma() > 0.0 {
        o.peak_ewma()
    } else {
        0.001
    };
    latency * (o.inflight() as f64 + 1.0) / o.capacity().max(1e-9)
}

impl Policy for P2cEwma {
    fn pick(
        &self,
        origins: &[Arc<Origin>],
        _cfg: &Selection,
        _seed: u64,
        usable: &dyn Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let a = weighted_random(origins, usable, rng)?;
        let b = weighted_random(origins, &|i| i != a && usable(i), rng);
        Some(match b {
            Some(b) if peak_cost(&origins[b]) < peak_cost(&origins[a]) => b,
            _ => a,
        })
    }
}
