//! Random: an origin drawn with probability proportional to its capacity.

use super::{Pick, Policy};

/// Capacity-weighted random choice.
pub struct Random;

impl Policy for Random {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        p.candidates(|_| true).draw(p.rng, None)
    }
}
