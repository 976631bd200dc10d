//! Least connections: fewest requests in flight per unit of capacity.

use super::Policy;
use crate::config::Selection;
use crate::origins::Origin;
use std::sync::Arc;

/// Fewest in flight per unit of capacity; ties go to a random one of them
/// (scanning from a random start), so equal origins share the load.
pub struct LeastConn;

impl Policy for LeastConn {
    fn pick(
        &self,
        origins: &[Arc<Origin>],
        _cfg: &Selection,
        _seed: u64,
        usable: &dyn Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let n = origins.len();
        if n == 0 {
            return None;
        }
        let start = rng.usize(..n);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| usable(i))
            .map(|i| {
                (
                    i,
                    origins[i].inflight() as f64 / origins[i].capacity().max(1e-9),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}
