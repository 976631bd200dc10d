//! The tier policy's index of one discovery generation: for each tier, the
//! origins taking traffic with their cumulative capacities, rebuilt by the
//! [`Rater`](super::Rater) after each round. A pick reads it and draws two
//! capacity-weighted candidates from the lowest tier by binary search, so
//! its cost does not grow with the fleet.

use super::Rating;
use crate::origins::Origin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Origins by tier, and the one due a probe.
#[derive(Default)]
pub struct TierView {
    /// Per tier: (origin index, capacity of it and every origin before it).
    tiers: [Vec<(usize, f64)>; 4],
    /// The origin (index + 1) due a probe; the first pick to see it takes it.
    probe: AtomicUsize,
}

impl TierView {
    /// Indexes the eligible `origins` by their ratings' tiers.
    pub fn build(origins: &[Arc<Origin>], ratings: &[Arc<Rating>]) -> Self {
        let mut tiers: [Vec<(usize, f64)>; 4] = Default::default();
        for (i, (o, r)) in origins.iter().zip(ratings).enumerate() {
            if o.eligible() {
                let tier = &mut tiers[usize::from(r.tier().min(3))];
                let before = tier.last().map_or(0.0, |t| t.1);
                tier.push((i, before + o.capacity().max(0.0)));
            }
        }
        TierView {
            tiers,
            probe: AtomicUsize::new(0),
        }
    }

    /// Marks origin `i` for one request.
    pub fn set_probe(&self, i: usize) {
        self.probe.store(i + 1, Relaxed);
    }

    /// The lowest tier with an origin in it.
    pub fn lowest(&self) -> Option<Tier<'_>> {
        self.tiers
            .iter()
            .find(|t| !t.is_empty())
            .map(|t| Tier(t.as_slice()))
    }

    /// The origin due a probe, once.
    pub fn take_probe(&self) -> Option<usize> {
        if self.probe.load(Relaxed) == 0 {
            return None;
        }
        self.probe.swap(0, Relaxed).checked_sub(1)
    }

    /// The origins in tiers above the lowest non-empty one.
    pub fn above_lowest(&self) -> impl Iterator<Item = usize> + '_ {
        let first = self.tiers.iter().position(|t| !t.is_empty()).unwrap_or(4);
        self.tiers
            .iter()
            .skip(first + 1)
            .flat_map(|t| t.iter().map(|c| c.0))
    }
}

/// One tier's origins with cumulative capacities.
pub struct Tier<'a>(&'a [(usize, f64)]);

impl Tier<'_> {
    /// An origin drawn with probability proportional to its capacity,
    /// other than the one at position `except` (from an earlier draw).
    /// Returns the origin's index and its position in the tier.
    pub fn draw(&self, rng: &mut fastrand::Rng, except: Option<usize>) -> Option<(usize, usize)> {
        self.draw_at(rng.f64(), except)
    }

    /// As [`Tier::draw`], at the point `u` (0–1) of the capacity line
    /// instead of a random one.
    pub fn draw_at(&self, u: f64, except: Option<usize>) -> Option<(usize, usize)> {
        let total = self.0.last()?.1;
        let (skip_from, skip) = match except {
            Some(pos) => {
                let before = if pos == 0 { 0.0 } else { self.0[pos - 1].1 };
                (before, self.0[pos].1 - before)
            }
            None => (f64::INFINITY, 0.0),
        };
        if total - skip <= 0.0 {
            return None;
        }
        let mut r = u.clamp(0.0, 1.0) * (total - skip);
        if r >= skip_from {
            r += skip;
        }
        let pos = self.0.partition_point(|c| c.1 <= r).min(self.0.len() - 1);
        (Some(pos) != except).then(|| (self.0[pos].0, pos))
    }

    /// How many origins the tier holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_capacity_and_skip_the_first_pick() {
        let tier = Tier(&[(10, 1.0), (11, 3.0), (12, 4.0)]); // capacities 1, 2, 1
        let mut rng = fastrand::Rng::with_seed(1);
        let mut n = [0; 3];
        for _ in 0..40_000 {
            let (i, pos) = tier.draw(&mut rng, None).unwrap();
            n[i - 10] += 1;
            let (j, _) = tier.draw(&mut rng, Some(pos)).unwrap();
            assert_ne!(i, j);
        }
        assert!((9_000..11_000).contains(&n[0]), "{n:?}");
        assert!((19_000..21_000).contains(&n[1]), "{n:?}");
        assert!((9_000..11_000).contains(&n[2]), "{n:?}");
        let one = Tier(&[(5, 2.0)]);
        assert_eq!(one.draw(&mut rng, Some(0)), None);
    }
}
