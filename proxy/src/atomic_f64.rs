//! An `f64` in an atomic: the live figures that are fractions (latencies,
//! utilizations, scores) are read on every pick without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// An `f64` stored as its bits in an [`AtomicU64`].
#[derive(Default, Debug)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// A new value.
    pub fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    /// Reads it.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    /// Writes it.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
    /// Applies `f` atomically (compare-and-swap loop).
    pub fn update(&self, mut f: impl FnMut(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |b| Some(f(f64::from_bits(b)).to_bits()));
    }
}
