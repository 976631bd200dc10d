//! Round robin: each usable origin in turn.

use super::Policy;
use crate::config::Selection;
use crate::origins::Origin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Round robin over the usable origins (capacity is not considered).
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(
        &self,
        origins: &[Arc<Origin>],
        _cfg: &Selection,
        _seed: u64,
        usable: &dyn Fn(usize) -> bool,
        _rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let n = origins.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
    }
}
