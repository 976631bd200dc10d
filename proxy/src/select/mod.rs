//! Origin selection: one [`Policy`] per file behind one trait, and
//! [`Selector`], our Pingora [`BackendSelection`], which asks the policy
//! named in the live config on every pick (so a reload can switch policy).
//!
//! A pick reads only atomics and allocates nothing; a `usable` predicate
//! says which origins it may take (eligible and not yet tried). The tier
//! policy's scores and tiers are computed off the request path by the
//! [`Rater`] (`score.rs`, `rating.rs`, `rater.rs`), which also indexes them
//! for the pick (`tier_view.rs`); `select/` reads origins and writes nothing
//! but ratings.

mod balancer;
mod consistent;
mod latency_window;
mod least_conn;
mod p2c_ewma;
mod random;
mod rater;
mod rating;
mod round_robin;
mod score;
mod settings;
mod tier;
mod tier_view;

pub use balancer::Balancer;
pub use consistent::Consistent;
pub use least_conn::LeastConn;
pub use p2c_ewma::P2cEwma;
pub use random::Random;
pub use rater::Rater;
pub use rating::{Rating, Ratings};
pub use round_robin::RoundRobin;
pub use score::INPUTS;
pub use settings::{Policy as PolicyName, Selection};
pub use tier::Tier;
pub use tier_view::TierView;

use crate::origins::Origin;
use arc_swap::ArcSwapOption;
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use smallvec::SmallVec;
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
    /// The rater's tier index of these origins, once it has rated them.
    pub view: Option<&'a TierView>,
    /// Per-request state from [`Policy::seed`].
    pub seed: u64,
    /// Which origins may be picked (eligible and not yet tried for this request).
    pub usable: &'a dyn Fn(usize) -> bool,
    /// Randomness (seeded in tests).
    pub rng: &'a mut fastrand::Rng,
}

impl Pick<'_> {
    /// The usable origins that also pass `only`, with their capacities:
    /// one scan, so each origin's state is read once per pick.
    pub fn candidates(&self, only: impl Fn(usize) -> bool) -> Candidates {
        let mut found = SmallVec::new();
        for (i, o) in self.origins.iter().enumerate() {
            if (self.usable)(i) && only(i) {
                found.push((i, o.capacity()));
            }
        }
        Candidates(found)
    }
}

/// Origins a policy may choose from, with their capacity weights (inline up
/// to eight, so a pick does not allocate).
pub struct Candidates(SmallVec<[(usize, f64); 8]>);

impl Candidates {
    /// Keeps the candidates passing `keep`.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        self.0.retain(|c| keep(c.0));
    }

    /// The indices of the candidates.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().map(|c| c.0)
    }

    /// One candidate other than `except`, drawn with probability
    /// proportional to its capacity.
    pub fn draw(&self, rng: &mut fastrand::Rng, except: Option<usize>) -> Option<usize> {
        let eligible = || self.0.iter().filter(|c| Some(c.0) != except);
        let total: f64 = eligible().map(|c| c.1).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = rng.f64() * total;
        let mut last = None;
        for &(i, capacity) in eligible() {
            last = Some(i);
            r -= capacity;
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

/// The selection settings in force, read when they are needed (the live
/// config's, swapped on reload).
pub type SettingsSource = Arc<dyn Fn() -> Arc<Selection> + Send + Sync>;

/// What every selector shares: where the settings come from, and the ratings.
pub struct Shared {
    /// The selection settings in force.
    pub settings: SettingsSource,
    /// Every origin's rating.
    pub ratings: Arc<Ratings>,
}

/// The backends of one discovery generation and every policy over them.
pub struct Selector {
    backends: Vec<Backend>,
    origins: Vec<Arc<Origin>>,
    ratings: Vec<Arc<Rating>>,
    view: ArcSwapOption<TierView>,
    settings: SettingsSource,
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
            view: ArcSwapOption::empty(),
            settings: shared.settings.clone(),
            tier: Tier::default(),
            round_robin: RoundRobin::default(),
            random: Random,
            least_conn: LeastConn,
            p2c_ewma: P2cEwma,
            consistent,
        }
    }

    /// Picks a usable origin by the policy `cfg` names; `key` is the
    /// request path (for consistent hashing).
    pub fn pick(
        &self,
        cfg: &Selection,
        key: &[u8],
        usable: &dyn Fn(usize) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let policy = self.policy(cfg.policy);
        let view = self.view.load();
        policy.pick(&mut Pick {
            origins: &self.origins,
            ratings: &self.ratings,
            view: view.as_deref(),
            cfg,
            seed: policy.seed(key),
            usable,
            rng,
        })
    }

    /// The origins of this generation.
    pub fn origins(&self) -> &[Arc<Origin>] {
        &self.origins
    }

    /// Rebuilds the tier index from the ratings as they are now; `probe`
    /// chooses, among the origins above the lowest tier, one to send a
    /// request to (its index in [`Selector::origins`]).
    pub fn publish_tiers(&self, probe: impl FnOnce(&TierView) -> Option<usize>) {
        let view = TierView::build(&self.origins, &self.ratings);
        if let Some(i) = probe(&view) {
            view.set_probe(i);
        }
        self.view.store(Some(Arc::new(view)));
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
        Picks {
            selector: self.clone(),
            settings: (self.settings)(),
            key: key.to_vec(),
            tried: 0,
            rng: fastrand::Rng::new(),
        }
    }
}

/// The origin discovery attached to a backend.
pub fn origin_of(backend: &Backend) -> Option<&Arc<Origin>> {
    backend.ext.get::<Arc<Origin>>()
}

/// The picks for one request through Pingora's `LoadBalancer`: the
/// policy's choice first, then its choice among the rest, and so on.
/// Indices past 128 are never marked as tried (Pingora's iterator
/// de-duplicates them anyway). The proxy itself picks through
/// [`Balancer`], which needs none of this.
pub struct Picks {
    selector: Arc<Selector>,
    /// The settings of this request's picks, read once.
    settings: Arc<Selection>,
    key: Vec<u8>,
    tried: u128,
    rng: fastrand::Rng,
}

impl BackendIter for Picks {
    fn next(&mut self) -> Option<&Backend> {
        let sel = &self.selector;
        let tried = self.tried;
        let usable =
            |i: usize| (i >= 128 || tried & (1u128 << i) == 0) && sel.origins[i].eligible();
        let i = sel.pick(&self.settings, &self.key, &usable, &mut self.rng)?;
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
