//! The proxy's origin chooser: Pingora's [`Backends`] runs our discovery
//! and tells us when membership changes; we build a [`Selector`] for each
//! generation and pick from it directly.
//!
//! Pingora's `LoadBalancer` would wrap every pick in a per-request hash set
//! (to skip repeats) and a look-up in its own health registry; our policies
//! never repeat an origin and our health lives in the origins, so the
//! proxy calls the selector itself. [`Selector`] is still a Pingora
//! `BackendSelection` and works under `LoadBalancer` unchanged.

use super::Selection;
use super::{Selector, Shared};
use crate::origins::Origin;
use arc_swap::ArcSwap;
use pingora::lb::selection::BackendSelection;
use pingora::lb::Backends;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Discovery, the current selector, and picks from it.
pub struct Balancer {
    backends: Backends,
    selector: ArcSwap<Selector>,
    shared: Shared,
}

impl Balancer {
    /// A balancer over `backends` (Pingora's view of our discovery), with
    /// no origins until the first [`Balancer::update`].
    pub fn new(backends: Backends, shared: Shared) -> Self {
        let selector = Selector::build_with_config(&BTreeSet::new(), &shared);
        Balancer {
            backends,
            selector: ArcSwap::from_pointee(selector),
            shared,
        }
    }

    /// Runs discovery; builds a new selector when the set of origins changed.
    pub async fn update(&self) -> pingora::Result<()> {
        self.backends
            .update(|backends| {
                let selector = Selector::build_with_config(&backends, &self.shared);
                self.selector.store(Arc::new(selector));
            })
            .await
    }

    /// The selector of the current generation.
    pub fn selector(&self) -> Arc<Selector> {
        self.selector.load_full()
    }

    /// An origin for a request with path `key`, by the policy `cfg` names:
    /// one that is up, in one of the pools of `pools`, and not in `tried`.
    pub fn pick(
        &self,
        cfg: &Selection,
        key: &[u8],
        tried: &[SocketAddr],
        pools: u64,
    ) -> Option<Arc<Origin>> {
        let selector = self.selector.load();
        let origins = selector.origins();
        let usable = |i: usize| {
            let o = &origins[i];
            o.eligible() && o.in_pools(pools) && !tried.contains(&o.addr)
        };
        let i = selector.pick(cfg, key, &usable, &mut fastrand::Rng::new())?;
        Some(origins[i].clone())
    }
}
