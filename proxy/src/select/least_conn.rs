//! Least connections: fewest requests in flight per unit of capacity.

use super::{Pick, Policy};

/// Fewest in flight per unit of capacity; ties go to one of the tied
/// origins chosen uniformly (reservoir sampling over the scan), so equal
/// origins share the load evenly. Taking the first minimum from a random
/// start would favour the origin after a busy one.
pub struct LeastConn;

impl Policy for LeastConn {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0u32;
        for (i, o) in p.origins.iter().enumerate() {
            if !(p.usable)(i) {
                continue;
            }
            let load = o.inflight() as f64 / o.capacity().max(1e-9);
            match best {
                Some((_, b)) if load > b => {}
                Some((_, b)) if load == b => {
                    ties += 1;
                    if p.rng.u32(..ties) == 0 {
                        best = Some((i, load));
                    }
                }
                _ => {
                    best = Some((i, load));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }
}
