//! Consistent hashing (Ketama) on the request path: the same video goes to
//! the same origin while it is usable, which keeps origin page caches warm.

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
        // Walk the ring from the key's point to the first usable origin.
        let mut idx = p.seed as usize;
        for _ in 0..p.origins.len() * 200 {
            let addr = self.ring.get_addr(&mut idx)?;
            if let Some(&i) = self.index.get(addr) {
                if (p.usable)(i) {
                    return Some(i);
                }
            }
        }
        None
    }
}
