//! Origin selection: one [`Policy`] per file behind one trait, and
//! [`Selector`], our Pingora [`BackendSelection`], which asks the policy
//! named in the live config on every pick (so a reload can switch policy).
//!
//! A pick reads only atomics and allocates nothing: policies scan the
//! origin slice with a `usable` predicate (eligible and not yet tried).
//! The tier policy's scores and tiers are computed off the request path by
//! the [`Rater`] (`rating.rs`, `rater.rs`); `select/` reads origins and
//! writes nothing but ratings.

mod consistent;
mod least_conn;
mod p2c_ewma;
mod random;
mod rater;
mod rating;
mod round_robin;
mod tier;

pub use consistent::Consistent;
pub use least_conn::LeastConn;
pub use p2c_ewma::P2cEwma;
pub use random::Random;
pub use rater::Rater;
pub use rating::{Rating, Ratings};
pub use round_robin::RoundRobin;
pub use tier::Tier;

use crate::config::{Config, Policy as PolicyName, Selection};
use crate::origins::Origin;
use arc_swap::{ArcSwap, Guard};
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What one pick works with.
pub struct Pick<'a> {
    /// The origins of this discovery generation.
    pub origins: &'a [Arc<Origin>],
    /// Their ratings, in the same order.
    pub ratings: &'a [Arc<Rating>],
    /// The selection settings in force.
    pub cfg: &'a Selection,
    /// Per-request state from [`Policy::seed`].
    pub seed: u64,
    /// Which origins may be picked (eligible and not yet tried for this request).
    pub usable: &'a dyn Fn(usize) -> bool,
    /// Randomness (seeded in tests).
    pub rng: &'a mut fastrand::Rng,
}

impl Pick<'_> {
    /// A usable origin that also passes `only`, drawn with probability
    /// proportional to its capacity.
    pub fn weighted_random(&mut self, only: impl Fn(usize) -> bool) -> Option<usize> {
        let (origins, usable) = (self.origins, self.usable);
        let candidates = || (0..origins.len()).filter(|&i| usable(i) && only(i));
        let total: f64 = candidates().map(|i| origins[i].capacity()).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = self.rng.f64() * total;
        let mut last = None;
        for i in candidates() {
            last = Some(i);
            r -= origins[i].capacity();
            if r < 0.0 {
                return Some(i);
            }
        }
        last
    }
}

/// A way of picking one origin among those that are usable.
pub trait Policy: Send + Sync {
    /// Per-request state derived from the request key (a hash for consistent hashing).
    fn seed(&self, _key: &[u8]) -> u64 {
        0
    }

    /// Picks the index of a usable origin, or `None` if there is none.
    fn pick(&self, p: &mut Pick<'_>) -> Option<usize>;
}

/// What every selector shares: the live config and the ratings.
pub struct Shared {
    /// The configuration in force (swapped on reload).
    pub config: Arc<ArcSwap<Config>>,
    /// Every origin's rating.
    pub ratings: Arc<Ratings>,
}

/// The backends of one discovery generation and every policy over them.
pub struct Selector {
    backends: Vec<Backend>,
    origins: Vec<Arc<Origin>>,
    ratings: Vec<Arc<Rating>>,
    config: Arc<ArcSwap<Config>>,
    tier: Tier,
    round_robin: RoundRobin,
    random: Random,
    least_conn: LeastConn,
    p2c_ewma: P2cEwma,
    consistent: Consistent,
}

impl Selector {
    /// Builds a selector over `origins` (in the same order as `backends`).
    pub fn new(backends: Vec<Backend>, origins: Vec<Arc<Origin>>, shared: &Shared) -> Self {
        let consistent = Consistent::new(&origins);
        let ratings = origins.iter().map(|o| shared.ratings.of(o.addr)).collect();
        Selector {
            backends,
            origins,
            ratings,
            config: shared.config.clone(),
            tier: Tier,
            round_robin: RoundRobin::default(),
            random: Random,
            least_conn: LeastConn,
            p2c_ewma: P2cEwma,
            consistent,
        }
    }

    fn policy(&self, name: PolicyName) -> &dyn Policy {
        match name {
            PolicyName::Tier => &self.tier,
            PolicyName::RoundRobin => &self.round_robin,
            PolicyName::Random => &self.random,
            PolicyName::LeastConn => &self.least_conn,
            PolicyName::P2cEwma => &self.p2c_ewma,
            PolicyName::Consistent => &self.consistent,
        }
    }
}

impl BackendSelection for Selector {
    type Iter = Picks;
    type Config = Shared;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &Shared) -> Self {
        // Discovery attaches each backend's origin (`Backend::ext`); it makes no other kind.
        let (backends, origins) = backends
            .iter()
            .filter_map(|b| Some((b.clone(), origin_of(b)?.clone())))
            .unzip();
        Selector::new(backends, origins, shared)
    }

    fn build(_backends: &BTreeSet<Backend>) -> Self {
        unreachable!("the selector is always built with its shared state (LoadBalancer::from_backends_with_config)")
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> Picks {
        let config = self.config.load();
        let policy = config.selection.policy;
        Picks {
            seed: self.policy(policy).seed(key),
            selector: self.clone(),
            config,
            policy,
            tried: 0,
            rng: fastrand::Rng::new(),
        }
    }
}

/// The origin discovery attached to a backend.
pub fn origin_of(backend: &Backend) -> Option<&Arc<Origin>> {
    backend.ext.get::<Arc<Origin>>()
}

/// The picks for one request: the policy's choice first, then its choice
/// among the rest, and so on. Indices past 128 are never marked as tried
/// (Pingora's iterator de-duplicates them anyway).
pub struct Picks {
    selector: Arc<Selector>,
    /// The config of this request's picks, loaded once.
    config: Guard<Arc<Config>>,
    policy: PolicyName,
    seed: u64,
    tried: u128,
    rng: fastrand::Rng,
}

impl BackendIter for Picks {
    fn next(&mut self) -> Option<&Backend> {
        let sel = &self.selector;
        let tried = self.tried;
        let usable =
            |i: usize| (i >= 128 || tried & (1u128 << i) == 0) && sel.origins[i].eligible();
        let mut pick = Pick {
            origins: &sel.origins,
            ratings: &sel.ratings,
            cfg: &self.config.selection,
            seed: self.seed,
            usable: &usable,
            rng: &mut self.rng,
        };
        let i = sel.policy(self.policy).pick(&mut pick)?;
        if i < 128 {
            self.tried |= 1u128 << i;
        }
        sel.backends.get(i)
    }
}

#[cfg(test)]
mod policies_test;
#[cfg(test)]
mod sim;
