//! Least connections: fewest requests in flight per unit of capacity.

use super::{Pick, Policy};

/// Fewest in flight per unit of capacity; ties go to a random one of them
/// (scanning from a random start), so equal origins share the load.
pub struct LeastConn;

impl Policy for LeastConn {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        let n = p.origins.len();
        if n == 0 {
            return None;
        }
        let start = p.rng.usize(..n);
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| (p.usable)(i))
            .map(|i| {
                (
                    i,
                    p.origins[i].inflight() as f64 / p.origins[i].capacity().max(1e-9),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }
}
