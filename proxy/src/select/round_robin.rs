//! Round robin: each usable origin in turn.

use super::{Pick, Policy};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Round robin over the usable origins (capacity is not considered).
#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        let n = p.origins.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| (p.usable)(i))
    }
}
