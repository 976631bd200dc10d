//! Random: an origin drawn with probability proportional to its capacity.

use super::{weighted_random, Policy};
use crate::config::Selection;
use crate::origins::Origin;
use std::sync::Arc;

/// Capacity-weighted random choice.
pub struct Random;

impl Policy for Random {
    fn pick(
        &self,
        origins: &[Arc<Origin>],
        _cfg: &Selection,
        _seed: u64,
        usable: &dyn Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        weighted_random(origins, usable, rng)
    }
}
