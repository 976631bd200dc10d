//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
//! 2018) on the request path, over a Ketama ring: the same video goes to the
//! same origin while it is usable and not overloaded, which keeps origin
//! (and, later, edge) caches warm; an origin holding more than
//! `consistent_load_factor` times its capacity share of the requests in
//! flight passes the key on to the next origin on the ring, so one hot video
//! cannot pin one origin.

use super::{Pick, Policy};
use crate::origins::Origin;
use pingora_ketama::{Bucket, Continuum};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A Ketama ring over the origins, weighted by capacity.
pub struct Consistent {
    ring: Continuum,
    index: HashMap<SocketAddr, usize>,
}

impl Consistent {
    /// Builds the ring for these origins.
    pub fn new(origins: &[Arc<Origin>]) -> Self {
        let buckets: Vec<Bucket> = origins
            .iter()
            .map(|o| Bucket::new(o.addr, ((o.capacity() * 10.0).round() as u32).max(1)))
            .collect();
        let index = origins
            .iter()
            .enumerate()
            .map(|(i, o)| (o.addr, i))
            .collect();
        Consistent {
            ring: Continuum::new(&buckets),
            index,
        }
    }
}

impl Policy for Consistent {
    fn seed(&self, key: &[u8]) -> u64 {
        self.ring.node_idx(key) as u64
    }

    fn pick(&self, p: &mut Pick<'_>) -> Option<usize> {
        // The bound counts this request too: with c > 1 some origin is
        // always under it, so the walk ends.
        let (mut inflight, mut capacity) = (1.0, 0.0);
        for (i, o) in p.origins.iter().enumerate() {
            if (p.usable)(i) {
                inflight += o.inflight() as f64;
                capacity += o.capacity();
            }
        }
        let factor = p.cfg.consistent_load_factor.max(1.0);
        let under_bound = |o: &Origin| {
            let bound = (factor * inflight * o.capacity() / capacity.max(1e-9)).ceil();
            (o.inflight() as f64) < bound
        };
        // Walk the ring from the key's point to the first usable origin
        // under its bound; if none is (every origin loaded alike), the first usable.
        let mut idx = p.seed as usize;
        let mut first_usable = None;
        for _ in 0..p.origins.len() * 200 {
            let addr = self.ring.get_addr(&mut idx)?;
            if let Some(&i) = self.index.get(addr) {
                if (p.usable)(i) {
                    if under_bound(&p.origins[i]) {
                        return Some(i);
                    }
                    first_usable.get_or_insert(i);
                }
            }
        }
        first_usable
    }
}
